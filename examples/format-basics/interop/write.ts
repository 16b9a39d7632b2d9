// Writes BSR matrices the way blocksparse stores them, for check.py to read with PyTorch and SciPy.
//   tsx interop/write.ts <dir>
import { join } from "node:path";
import { BsrMatrix } from "@blocksparse/format";
import { saveBsrMatrices, saveSafetensors, saveScipyNpz } from "@blocksparse/format/node";

const dir = process.argv[2] ?? ".";
const matrices = {
  "fc.weight": BsrMatrix.random([96, 128], { blockShape: [32, 32], density: 0.5, seed: 1 }),
  "proj.weight": BsrMatrix.random([64, 96], { blockShape: [16, 32], density: 0.25, seed: 2, dtype: "bfloat16" }),
  "head.weight": BsrMatrix.random([48, 64], { blockShape: [16, 16], density: 0.4, seed: 3, dtype: "float16" }),
};
await saveBsrMatrices(join(dir, "ours.safetensors"), matrices);
// The dense matrices, exactly as float32, to compare with.
const dense = Object.fromEntries(
  Object.entries(matrices).map(([name, matrix]) => [
    name,
    { dtype: "F32" as const, shape: [...matrix.shape], data: matrix.toDense() },
  ]),
);
await saveSafetensors(join(dir, "ours-dense.safetensors"), dense);
await saveScipyNpz(join(dir, "ours-fc.npz"), matrices["fc.weight"], { compressed: true });
await saveScipyNpz(join(dir, "ours-proj.npz"), matrices["proj.weight"]);
console.log(`wrote ${Object.keys(matrices).join(", ")} to ${dir}`);
