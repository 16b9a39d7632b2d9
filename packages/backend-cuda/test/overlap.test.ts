/**
 * On sm_90+ the kernels of a training step start while the kernel before them in the stream ends (programmatic
 * dependent launch): each may be scheduled during the last wave of the one before and set itself up, but waits for it
 * to end before it reads or writes memory. These chains feed every kernel the output the kernel just before wrote,
 * with nothing between them, and check that the results are bit for bit those of the same calls with the device
 * synchronized after each one (each kernel alone). The shapes take the tiles a step takes: the persistent and
 * ping-pong 64x64 tiles with the activation and its backward, the 64x64 weight gradient with its token splits and
 * their sum, the X-resident and mma.sync 32x32 tiles, the column sums of a bias gradient and the multi-tensor AdamW
 * update. Allocations are poisoned (NaN), so a kernel that reads its input early reads NaN or another call's data.
 */
import {
  abs,
  BsrPattern,
  bsrLinear,
  bsrLinearActivation,
  bsrMatmul,
  bsrMatmulActivationBackward,
  cast,
  multiTensorAdamUpdate,
  sampledMatmul,
  setBackend,
  sum,
  type Tensor,
  tidy,
} from "@blocksparse/core";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { cudaMissing, random, randomTensor, reportCudaAvailability, useCuda } from "./cuda";
import type { CudaBackend } from "../src/index";

reportCudaAvailability("overlap.test.ts");

const TIMEOUT_MS = 180_000;
const TOKENS = 4096;

/** The chain's results, as bits: `settle` runs after every call (nothing, or a synchronize). */
function chain(seed: number, settle: () => void): Uint32Array[] {
  const next = random(seed);
  const p64a = BsrPattern.random([2048, 1024], { blockShape: [64, 64], density: 0.25, seed: seed + 1 });
  const p64b = BsrPattern.random([2048, 2048], { blockShape: [64, 64], density: 0.25, seed: seed + 2 });
  const p32 = BsrPattern.random([2048, 1024], { blockShape: [32, 32], density: 0.25, seed: seed + 3 });
  return tidy(() => {
    const scale = (p: BsrPattern) => Math.sqrt(3 / (0.25 * p.shape[1]));
    const x = randomTensor(next, [TOKENS, 1024], "bfloat16").t;
    const v64a = randomTensor(next, [p64a.nnzBlocks, 64, 64], "bfloat16", scale(p64a)).t;
    const v64b = randomTensor(next, [p64b.nnzBlocks, 64, 64], "bfloat16", scale(p64b)).t;
    const v32 = randomTensor(next, [p32.nnzBlocks, 32, 32], "bfloat16", scale(p32)).t;
    const bias = randomTensor(next, [2048], "bfloat16", 0.1).t;
    settle();
    const outputs: Tensor[] = [];
    const keep = <T extends Tensor | Tensor[]>(result: T): T => {
      outputs.push(...(Array.isArray(result) ? result : [result]));
      settle();
      return result;
    };
    // The 64x64 forward pair (persistent tiles, the second with the activation's pass), the second layer's dX with the
    // activation's backward in its epilogue (ping-pong tile), both weight gradients, the first layer's dX.
    const h = keep(bsrLinear(x, v64a, p64a, bias));
    const a = keep(bsrLinearActivation(h, v64b, p64b, bias, "gelu_tanh"));
    const [dh, dbias] = keep(bsrMatmulActivationBackward(a, v64b, p64b, h, "gelu_tanh"));
    const dwb = keep(sampledMatmul(dh, h, p64b));
    const dx = keep(bsrMatmul(dh, v64a, p64a));
    const dwa = keep(sampledMatmul(dh, dx, p64a));
    // 32x32: the X-resident forward over the 1024-wide dX, the product back, its weight gradient.
    const y = keep(bsrLinear(dx, v32, p32, bias));
    const z = keep(bsrMatmul(y, v32, p32));
    const dw32 = keep(sampledMatmul(y, z, p32));
    // A bias gradient's column sums, and AdamW over float32 masters with the gradients just written.
    keep(sum(dh, [0]));
    const grads = [dwb, dwa, dw32, dbias];
    const masters = grads.map((g) => keep(cast(g, "float32")));
    const moments = masters.map((m) => keep(abs(m)));
    const state = multiTensorAdamUpdate(masters, grads, moments, moments, {
      lr: 1e-3,
      weightDecay: 0.01,
      decoupledWeightDecay: true,
      steps: grads.map(() => 1),
      copyDType: "bfloat16",
    });
    keep([...state.params, ...state.m, ...state.v, ...(state.copies ?? [])]);
    return outputs.map((t) => new Uint32Array(Float32Array.from(t.dataSync()).buffer));
  });
}

describe.skipIf(cudaMissing)("kernels launched to overlap the one before them", () => {
  let backend: CudaBackend;
  beforeAll(() => {
    backend = useCuda();
  });
  afterAll(() => {
    setBackend("cuda");
  });

  test(
    "a training step's kernels back to back give the bits of the same calls one at a time",
    () => {
      for (const seed of [11, 12]) {
        const alone = chain(seed, () => backend.synchronize());
        for (let run = 0; run < 2; run++) {
          const together = chain(seed, () => {});
          expect(together.length).toBe(alone.length);
          for (let k = 0; k < alone.length; k++) {
            let differ = 0;
            for (let i = 0; i < alone[k].length; i++) if (alone[k][i] !== together[k][i]) differ++;
            expect(differ, `seed ${seed}, run ${run}, output ${k}: elements that differ`).toBe(0);
          }
        }
      }
    },
    TIMEOUT_MS,
  );
});
