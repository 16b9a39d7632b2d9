// Run in an app installed from the tarballs on a GPU machine: the cuda backend must start from the
// prebuilt platform package (no build from source) and train as the js backend does.
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
console.log("gpu-prebuilt-check: OK, the prebuilt binary runs on the GPU and matches the js backend");
