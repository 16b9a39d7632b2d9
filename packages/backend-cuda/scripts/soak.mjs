#!/usr/bin/env node
// Soak test: many small training steps of a two-layer block-sparse MLP on the cuda backend
// (bsrLinear forward, bsrMatmul and sampledMatmul backward, fused Adam, every temporary disposed),
// then checks that device memory in use is back at its baseline. Run after `pnpm build`:
//   node scripts/soak.mjs [steps]        (default 10000; exits 1 on a leak or if CUDA is unavailable)
import * as core from "@blocksparse/core";
import { cudaAvailability, cudaBackend } from "../dist/index.js";

const steps = Number(process.argv[2] ?? 10000);
const availability = cudaAvailability();
if (!availability.available) {
  console.error(`soak: CUDA is unavailable: ${availability.reason}`);
  process.exit(1);
}
core.setBackend("cuda");
const backend = cudaBackend();
console.log(`soak: ${availability.device.name} (compute ${availability.device.computeCapability}), ${steps} steps`);

const { BsrPattern, tidy, tensor, randn, zeros } = core;
const batch = 64;
const [inputs, hidden, classes] = [256, 512, 128];
const pattern1 = BsrPattern.random([hidden, inputs], { blockShape: [32, 32], density: 0.25, seed: 1 });
const pattern2 = BsrPattern.random([classes, hidden], { blockShape: [32, 32], density: 0.25, seed: 2 });
// A fixed data set of 8 batches, so the loss falls as the model memorises it.
const data = Array.from({ length: 8 }, (_, i) => ({
  x: randn([batch, inputs], { seed: 100 + i }),
  targets: tensor(Array.from({ length: batch }, (_, j) => (j * 7 + i * 13) % classes), [batch], "int32"),
}));
const scale = tensor(new Array(batch).fill(1 / batch), [batch], "float32");
const layers = [
  { pattern: pattern1, w: randn([pattern1.nnzBlocks, 32, 32], { seed: 3, std: 0.06 }), b: zeros([hidden]) },
  { pattern: pattern2, w: randn([pattern2.nnzBlocks, 32, 32], { seed: 4, std: 0.04 }), b: zeros([classes]) },
];
const state = layers.map((layer) => ({
  mw: zeros(layer.w.shape),
  vw: zeros(layer.w.shape),
  mb: zeros(layer.b.shape),
  vb: zeros(layer.b.shape),
}));
// Upload the patterns' indices before the baseline: they stay on the device while the patterns live.
for (const layer of layers) backend.pattern(layer.pattern);

const figures = () => {
  const m = backend.memory();
  return {
    tensors: m.buffers,
    tensorBytes: m.bytesInUse,
    deviceBytesInUse: m.deviceBytesInUse,
    cachedBytes: m.cachedBytes,
    cudaMallocCalls: m.cudaMallocCalls,
    deviceFreeBytes: m.deviceFreeBytes,
  };
};
const baseline = figures();
console.log("soak: baseline", JSON.stringify(baseline));

const started = performance.now();
let firstLoss = Number.NaN;
let lastLoss = Number.NaN;
for (let step = 1; step <= steps; step++) {
  const { x, targets } = data[step % data.length];
  const [l1, l2] = layers;
  const result = tidy(() => {
    const h = core.relu(core.bsrLinear(x, l1.w, l1.pattern, l1.b));
    const logits = core.bsrLinear(h, l2.w, l2.pattern, l2.b);
    const loss = core.crossEntropy(logits, targets);
    const dlogits = core.crossEntropyBackward(logits, targets, scale);
    const grads2 = { w: core.sampledMatmul(dlogits, h, l2.pattern), b: core.sum(dlogits, [0]) };
    const dh = core.mul(core.bsrMatmul(dlogits, l2.w, l2.pattern), core.cast(core.greater(h, 0), "float32"));
    const grads1 = { w: core.sampledMatmul(dh, x, l1.pattern), b: core.sum(dh, [0]) };
    core.bsrMatmul(dh, l1.w, l1.pattern); // the input gradient, as a full backward pass computes it
    const updates = [grads1, grads2].map((g, i) => {
      const options = { lr: 1e-3, step };
      const s = state[i];
      return {
        w: core.adamUpdate(layers[i].w, g.w, s.mw, s.vw, options),
        b: core.adamUpdate(layers[i].b, g.b, s.mb, s.vb, options),
      };
    });
    return { loss, updates };
  });
  result.updates.forEach((u, i) => {
    core.dispose([layers[i].w, layers[i].b, state[i].mw, state[i].vw, state[i].mb, state[i].vb]);
    layers[i].w = u.w.param;
    layers[i].b = u.b.param;
    state[i] = { mw: u.w.m, vw: u.w.v, mb: u.b.m, vb: u.b.v };
  });
  if (step === 1 || step % 1000 === 0 || step === steps) {
    lastLoss = result.loss.item();
    if (step === 1) firstLoss = lastLoss;
    const f = figures();
    console.log(
      `soak: step ${step} loss ${lastLoss.toFixed(4)} tensors ${f.tensors} deviceBytesInUse ${f.deviceBytesInUse} cachedBytes ${f.cachedBytes} cudaMallocCalls ${f.cudaMallocCalls}`,
    );
  }
  result.loss.dispose();
}
backend.synchronize();
const seconds = (performance.now() - started) / 1000;
const end = figures();
console.log("soak: end     ", JSON.stringify(end));
console.log(`soak: ${steps} steps in ${seconds.toFixed(1)} s (${((seconds / steps) * 1e3).toFixed(2)} ms/step); loss ${firstLoss.toFixed(4)} -> ${lastLoss.toFixed(4)}`);
backend.releaseCache();
console.log("soak: after releaseCache", JSON.stringify(figures()));
const leaked =
  end.tensors !== baseline.tensors || end.tensorBytes !== baseline.tensorBytes || end.deviceBytesInUse !== baseline.deviceBytesInUse;
if (leaked) {
  console.error("soak: FAILED, device memory in use did not return to its baseline");
  process.exit(1);
}
if (!(lastLoss < firstLoss)) {
  console.error("soak: FAILED, the loss did not fall");
  process.exit(1);
}
console.log("soak: OK, device memory in use is back at its baseline");
