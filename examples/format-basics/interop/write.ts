// Writes BSR matrices the way blocksparse stores them, for check.py to read with PyTorch and SciPy.
//   tsx interop/write.ts <dir>
import { statSync } from "node:fs";
import { join } from "node:path";
import { BsrMatrix } from "@blocksparse/format";
import { saveBsrMatrices, saveSafetensors, saveScipyNpz } from "@blocksparse/format/node";

const dir = process.argv[2] ?? ".";
// A missing folder is a message, not a stack trace from the first write (run.sh makes its folder first).
const folder = statSync(dir, { throwIfNoEntry: false });
if (folder?.isDirectory() !== true) {
  console.error(
    folder === undefined
      ? `write.ts: the folder ${dir} does not exist: make it first (mkdir -p ${dir}), or run interop/run.sh, which makes it`
      : `write.ts: ${dir} is not a folder: give the folder to write the matrices in`,
  );
  process.exit(1);
}
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
