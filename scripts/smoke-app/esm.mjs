// An ES module app: every package by its import entry, one training step, a save and a load.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cudaAvailability } from "@blocksparse/backend-cuda";
import { BsrMatrix, decodeSafetensors, encodeSafetensors, getBsrMatrix, bsrMatricesToSafetensors } from "@blocksparse/format";
import { decodeScipyNpz, encodeScipyNpz } from "@blocksparse/format/npz";
import { Adam, BlockSparseLinear, Linear, ReLU, Sequential, backward, crossEntropy, getBackend, randn, tensor, tidy } from "@blocksparse/nn";
import { load, save } from "@blocksparse/nn/node";
import { BlockSparseModelPatcher } from "@blocksparse/patcher";
import * as core from "@blocksparse/core";
import * as jsKernels from "@blocksparse/core/js-kernels";

const w = BsrMatrix.random([64, 128], { blockShape: [16, 32], density: 0.5, seed: 1 });
const content = bsrMatricesToSafetensors({ "fc.weight": w });
const back = getBsrMatrix(decodeSafetensors(encodeSafetensors(content.tensors, content.metadata)), "fc.weight");
assert.deepEqual(back.toDense(), w.toDense());
assert.deepEqual(decodeScipyNpz(encodeScipyNpz(w, { compressed: true })).toDense(), w.toDense());

const model = new Sequential(new Linear(32, 64, { seed: 1 }), new ReLU(), new Linear(64, 4, { seed: 2 }));
const report = new BlockSparseModelPatcher().addPattern(/^0$/, { density: 0.5, blockShape: [16, 16] }).patchModel(model);
assert.equal(report.layers.length, 1);
assert.ok(model.at(0) instanceof BlockSparseLinear);
const optimizer = new Adam(model.parameters(), { lr: 1e-2 });
const x = randn([8, 32], { seed: 3 });
const y = tensor([0, 1, 2, 3, 0, 1, 2, 3], [8], "int32");
const step = () => {
  optimizer.zeroGrad();
  const loss = tidy(() => {
    const value = crossEntropy(model.forward(x), y);
    backward(value);
    return value.item();
  });
  optimizer.step();
  return loss;
};
const first = step();
for (let i = 0; i < 4; i++) step();
assert.ok(step() < first, "the loss falls");

const path = join(mkdtempSync(join(tmpdir(), "smoke-")), "model.safetensors");
await save(model, path);
const again = new Sequential(new BlockSparseLinear(32, 64, { density: 0.25, blockShape: [16, 16], seed: 9 }), new ReLU(), new Linear(64, 4, { seed: 9 }));
await load(again, path);
assert.deepEqual(again.forward(x).toArray(), model.forward(x).toArray());

// The js-kernels subpath shares the main entry's classes: a delegated kernel's or a compute function's error is core's.
assert.equal(jsKernels.JsBackend, core.JsBackend);
assert.equal(jsKernels.jsKernels, core.jsKernels);
assert.throws(() => jsKernels.matmulF32({ a: new Float32Array(1), b: new Float32Array(1), c: new Float32Array(1), m: -1, n: 1, k: 1 }), core.ShapeError);

const cuda = cudaAvailability();
assert.ok(cuda.available || /npm rebuild @blocksparse\/backend-cuda|pnpm approve-builds|GPU|driver|CUDA/.test(cuda.reason ?? ""), cuda.reason);
console.log(`esm: ok on ${getBackend()} (cuda: ${cuda.available ? cuda.device.name : cuda.reason})`);
