// Run in an app installed from the tarballs on a GPU machine: the cuda backend must start from the
// prebuilt platform package (nothing compiled at install), compute a block-sparse product as float64
// math does, and train as the js backend does.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { cudaAvailability, cudaBackend } from "@blocksparse/backend-cuda";
import { Adam, BlockSparseLinear, Linear, ReLU, Sequential, backward, crossEntropy, getBackend, randn, setBackend, tensor, tidy } from "@blocksparse/nn";

const availability = cudaAvailability();
assert.ok(availability.available, `CUDA is unavailable: ${availability.reason}`);
assert.equal(getBackend(), "cuda");
const backend = cudaBackend();
const require = createRequire(import.meta.url);
const platformDir = dirname(require.resolve("@blocksparse/backend-cuda-linux-x64/package.json"));
assert.equal(backend.addonPath, join(platformDir, "blocksparse_cuda.node"), "the addon comes from the platform package");
const sourceBuild = join(dirname(require.resolve("@blocksparse/backend-cuda/package.json")), "native", "blocksparse_cuda.node");
assert.ok(!existsSync(sourceBuild), "nothing was compiled at install");
console.log(`device: ${backend.device.name} (compute ${backend.device.computeCapability}), driver ${backend.device.driverVersion}`);
console.log(`addon: ${backend.addonPath}; architectures ${backend.build.architectures}; CUDA ${backend.build.cudaVersion}`);
console.log(`cuBLAS: ${backend.build.cublas ? backend.build.cublasLibrary : `no (${backend.build.cublasLibrary})`}`);

// One product on the GPU: y = x W^T + b for a 25%-dense 512 -> 384 layer of 32 x 32 blocks, 100 rows
// (not a multiple of any tile), against float64 math on the same values.
{
  const layer = new BlockSparseLinear(512, 384, { density: 0.25, blockShape: [32, 32], seed: 7 });
  const x = randn([100, 512], { seed: 8 });
  const y = tidy(() => layer.forward(x));
  assert.equal(y.backend.name, "cuda");
  const [got, xs, w, b] = [y.dataSync(), x.dataSync(), layer.toDense().dataSync(), layer.bias.value.dataSync()];
  let worst = 0;
  for (let row = 0; row < 100; row++) {
    for (let out = 0; out < 384; out++) {
      let sum = b[out];
      let scale = Math.abs(b[out]);
      for (let k = 0; k < 512; k++) {
        sum += xs[row * 512 + k] * w[out * 512 + k];
        scale += Math.abs(xs[row * 512 + k] * w[out * 512 + k]);
      }
      worst = Math.max(worst, Math.abs(got[row * 384 + out] - sum) / (scale + 1e-30));
    }
  }
  console.log(`product on the GPU: worst error ${worst.toExponential(2)} of sum |x w| (float32, limit 1e-5)`);
  assert.ok(worst <= 1e-5, `the block-sparse product differs from float64 math by ${worst} of sum |x w|`);
}

/** Five Adam steps of a small block-sparse MLP on `backendName`; the losses. */
function train(backendName) {
  setBackend(backendName);
  const model = new Sequential(
    new BlockSparseLinear(256, 128, { density: 0.25, blockShape: [32, 32], seed: 1 }),
    new ReLU(),
    new Linear(128, 10, { seed: 2 }),
  );
  const optimizer = new Adam(model.parameters(), { lr: 1e-3 });
  const x = randn([64, 256], { seed: 3 });
  const y = tensor(Array.from({ length: 64 }, (_, i) => i % 10), [64], "int32");
  const losses = [];
  for (let step = 0; step < 5; step++) {
    optimizer.zeroGrad();
    losses.push(
      tidy(() => {
        const loss = crossEntropy(model.forward(x), y);
        backward(loss);
        return loss.item();
      }),
    );
    optimizer.step();
  }
  return losses;
}

const onJs = train("js");
const onCuda = train("cuda");
console.log(`losses js:   ${onJs.map((l) => l.toFixed(6)).join(" ")}`);
console.log(`losses cuda: ${onCuda.map((l) => l.toFixed(6)).join(" ")}`);
for (const [i, loss] of onJs.entries()) {
  assert.ok(Math.abs(loss - onCuda[i]) <= 1e-4 * Math.max(1, Math.abs(loss)), `step ${i}: js ${loss} vs cuda ${onCuda[i]}`);
}
assert.ok(onCuda[4] < onCuda[0], "the loss falls on the GPU");
console.log("check: the prebuilt binary computes on the GPU as float64 math does and trains as the js backend does");
