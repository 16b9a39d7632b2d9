// Strict TypeScript against the published declarations.
import { BsrMatrix } from "@blocksparse/format";
import { saveBsrMatrices } from "@blocksparse/format/node";
import { encodeScipyNpz } from "@blocksparse/format/npz";
import { BlockSparseLinear, type DType, type Tensor, tensor, tidy } from "@blocksparse/nn";
import { load } from "@blocksparse/nn/node";
import { BlockSparseModelPatcher, type PatchReport } from "@blocksparse/patcher";
import { cudaAvailability } from "@blocksparse/backend-cuda";
import { backward } from "@blocksparse/autograd";
import { type Backend, DuplicateCoreError } from "@blocksparse/core";

const dtype: DType = "float32";
const layer = new BlockSparseLinear(64, 32, { density: 0.5 });
const y: Tensor = tidy(() => layer.forward(tensor(new Float32Array(64), [1, 64], dtype)));
const m: BsrMatrix = BsrMatrix.random([64, 64], { blockShape: [32, 32], density: 0.5, seed: 1 });
const npz: Uint8Array = encodeScipyNpz(m);
const report: PatchReport = new BlockSparseModelPatcher().addPattern(/fc/, { density: 0.5 }).patchModel(layer, { dryRun: true, allowNoMatch: true });
const steps: [typeof saveBsrMatrices, typeof load, typeof backward, typeof cudaAvailability] = [saveBsrMatrices, load, backward, cudaAvailability];
const backendName: Backend["name"] | undefined = undefined;
export { backendName, DuplicateCoreError, m, npz, report, steps, y };
