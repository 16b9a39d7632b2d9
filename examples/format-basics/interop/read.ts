// Reads the files check.py wrote with PyTorch and SciPy and compares them with the dense matrices.
//   tsx interop/read.ts <dir>
import { existsSync } from "node:fs";
import { join } from "node:path";
import { loadBsrMatrices, loadSafetensors, loadScipyNpz } from "@blocksparse/format/node";

const dir = process.argv[2] ?? ".";
// A missing input is a message saying which step writes it, not a stack trace.
for (const file of ["theirs.safetensors", "theirs-dense.safetensors"]) {
  if (!existsSync(join(dir, file))) {
    console.error(`read.ts: ${join(dir, file)} does not exist: check.py writes it (python3 interop/check.py ${dir}, after tsx interop/write.ts ${dir}); interop/run.sh runs all three`);
    process.exit(1);
  }
}
const matrices = await loadBsrMatrices(join(dir, "theirs.safetensors"));
const dense = (await loadSafetensors(join(dir, "theirs-dense.safetensors"))).tensors;
let failures = 0;
function report(what: string, expected: ArrayLike<number>, got: ArrayLike<number>): void {
  let same = expected.length === got.length;
  for (let i = 0; same && i < expected.length; i++) same = expected[i] === got[i];
  console.log(`${same ? "ok  " : "FAIL"} ${what}`);
  if (!same) failures++;
}
for (const [name, reference] of dense) {
  if (reference.dtype !== "F32") throw new Error(`${name}: the dense reference should be F32, not ${reference.dtype}`);
  const matrix = matrices.get(name);
  if (!matrix) throw new Error(`${name} missing from theirs.safetensors`);
  report(`blocksparse reads torch's ${name} (${matrix.dtype}, blocks ${matrix.blockShape.join("x")})`, reference.data, matrix.toDense());
}
for (const [file, name] of [["theirs-a.npz", "a.weight"], ["theirs-c.npz", "c.weight"]] as const) {
  const path = join(dir, file);
  if (!existsSync(path)) {
    console.log(`skip ${file}: not written (no SciPy)`);
    continue;
  }
  const reference = dense.get(name);
  if (reference?.dtype !== "F32") throw new Error(`${name} missing from theirs-dense.safetensors, or not F32`);
  report(`blocksparse reads scipy's ${file}`, reference.data, (await loadScipyNpz(path)).toDense());
}
process.exitCode = failures === 0 ? 0 : 1;
