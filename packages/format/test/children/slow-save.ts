import { saveSafetensors } from "../../src/node.js";

/** Saves a checkpoint large enough (256 MiB) that a parent can kill it mid-write. */
const [path] = process.argv.slice(2);
const tensors = new Map(
  Array.from({ length: 64 }, (_, i) => [`layer${i}.weight`, { dtype: "F32" as const, shape: [1024, 1024], data: new Float32Array(1024 * 1024).fill(i) }]),
);
await saveSafetensors(path, tensors);
