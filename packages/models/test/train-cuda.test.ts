/**
 * A user's training step on cuda against the same step on the js backend: block-sparse feed-forward blocks
 * (BlockSparseLinear -> GELU -> BlockSparseLinear, nn's fused paths) drawn at random (widths, block shapes, densities,
 * token counts, leading dims, float32 or bfloat16 / float16 mixed precision), each through one step of forward, MSE
 * loss, backward and AdamW. The loss, every gradient (a stored block's at a time) and every parameter's update must
 * agree. A fresh seed each run, printed; BLOCKSPARSE_TEST_SEED repeats one. Without CUDA the file skips with the
 * loader's reason, unless BLOCKSPARSE_REQUIRE_CUDA=1, where it fails instead.
 */
import { backward } from "@blocksparse/autograd";
import { cudaAvailability } from "@blocksparse/backend-cuda";
import { cast, type FloatDType, randn, reshape, setBackend, type Tensor, tidy } from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/format";
import { AdamW, BlockSparseLinear, GELU, mseLoss, Sequential } from "@blocksparse/nn";
import { afterAll, describe, expect, it } from "vitest";

const availability = cudaAvailability();
const required = process.env.BLOCKSPARSE_REQUIRE_CUDA === "1";
if (!availability.available && !required) console.log(`[train-cuda.test.ts] CUDA tests skipped: ${availability.reason}`);

const SEED = process.env.BLOCKSPARSE_TEST_SEED === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(process.env.BLOCKSPARSE_TEST_SEED);
const BLOCKS: [number, number][] = [[32, 32], [32, 32], [64, 64], [64, 64], [128, 128], [16, 16], [32, 64], [64, 32], [64, 128], [8, 32]];
const TOKENS = [1, 3, 8, 16, 17, 33, 64, 65, 100, 127, 128, 129, 256, 300, 640, 1000];
const DTYPES: FloatDType[] = ["float32", "bfloat16", "bfloat16", "float16"];
// Multiply-adds of one dense product at most (the js backend runs each step's five products on the host).
const BUDGET = 2.5e7;
// Relative error norms allowed per dtype: float32 differs only in the order of its sums; float16 / bfloat16 round
// every activation and gradient, so a unit in the last place of a few elements moves a group's norm.
const TOLERANCE: Record<string, number> = { float32: 1e-4, float16: 1e-2, bfloat16: 4e-2 };


type Case = { width: number; hidden: number; block: [number, number]; density: number; tokens: number; lead: number[]; dtype: FloatDType; seed: number };

function drawCase(next: () => number): Case {
  for (;;) {
    const block = BLOCKS[Math.floor(next() * BLOCKS.length)];
    const side = Math.max(...block);
    const width = side * (1 + Math.floor(next() * 6));
    const hidden = side * (1 + Math.floor(next() * 12));
    const tokens = TOKENS[Math.floor(next() * TOKENS.length)];
    if (tokens * width * hidden > BUDGET) continue;
    const lead = tokens % 2 === 0 && next() < 0.3 ? [2, tokens / 2] : [tokens];
    const density = next() < 0.1 ? 1 : 0.05 + 0.95 * next();
    return { width, hidden, block, density, tokens, lead, dtype: DTYPES[Math.floor(next() * DTYPES.length)], seed: Math.floor(next() * 1e9) };
  }
}

function feedForward(c: Case): Sequential {
  return new Sequential(
    new BlockSparseLinear(c.width, c.hidden, { density: c.density, blockShape: c.block, seed: c.seed }),
    new GELU(),
    new BlockSparseLinear(c.hidden, c.width, { density: c.density, blockShape: c.block, seed: c.seed + 1 }),
  );
}

/**
 * ||got - want|| / ||want|| over each group of `groupSize` consecutive elements, the norm at least a tenth of the
 * whole tensor's root mean square per element (so a group that sums to nearly nothing is not held to its own tiny
 * norm); the largest over the groups.
 */
function worstGroupError(got: ArrayLike<number>, want: ArrayLike<number>, groupSize: number): number {
  let total = 0;
  for (let i = 0; i < want.length; i++) total += want[i] ** 2;
  const meanSquare = want.length === 0 ? 0 : total / want.length;
  let worst = 0;
  for (let start = 0; start < want.length; start += groupSize) {
    let diff = 0;
    let norm = 0;
    const end = Math.min(want.length, start + groupSize);
    for (let i = start; i < end; i++) {
      if (!Number.isFinite(got[i])) return Number.POSITIVE_INFINITY;
      diff += (got[i] - want[i]) ** 2;
      norm += want[i] ** 2;
    }
    const scale = Math.max(norm, 0.01 * (end - start) * meanSquare);
    worst = Math.max(worst, scale === 0 ? Math.sqrt(diff) : Math.sqrt(diff / scale));
  }
  return worst;
}

/** One training step of `model` on `backend`: the loss, then each parameter's gradient and update (after - before). */
function trainStep(model: Sequential, backend: string, c: Case, x: Tensor, target: Tensor): { loss: number; grads: Float64Array[]; updates: Float64Array[] } {
  setBackend(backend);
  const optimizer = new AdamW(model.parameters(), { lr: 1e-2, weightDecay: 0.01 });
  try {
    const before = model.parameters().map((p) => Float64Array.from(tidy(() => cast(p.value, "float32")).dataSync()));
    const loss = tidy(() => {
      const input = reshape(cast(x.to(backend), c.dtype), [...c.lead, c.width]);
      const l = mseLoss(model.forward(input), reshape(cast(target.to(backend), c.dtype), [...c.lead, c.width]));
      backward(l);
      return l.item();
    });
    const grads = model.parameters().map((p) => {
      if (p.grad === null) throw new Error("a parameter has no gradient");
      const grad = p.grad;
      return Float64Array.from(tidy(() => cast(grad, "float32")).dataSync());
    });
    optimizer.step();
    const updates = model.parameters().map((p, i) => {
      const after = tidy(() => cast(p.value, "float32")).dataSync();
      return Float64Array.from(after, (v, k) => v - before[i][k]);
    });
    return { loss, grads, updates };
  } finally {
    optimizer.dispose();
  }
}

describe.skipIf(!availability.available && !required)("block-sparse feed-forward training steps on cuda against the js backend", () => {
  afterAll(() => setBackend("js"));
  console.log(`train-cuda.test.ts: seed ${SEED} (BLOCKSPARSE_TEST_SEED=${SEED} repeats these cases)`);
  const random = new SeededRandom(SEED);
  const next = () => random.next();
  const cases = Array.from({ length: 16 }, () => drawCase(next));
  cases.forEach((c, index) => {
    const name = `case ${index}: ${c.width} <-> ${c.hidden} in ${c.block.join("x")} blocks, density ${c.density.toFixed(3)}, ${c.tokens} tokens as [${c.lead.join(", ")}], ${c.dtype}`;
    it(name, () => {
      if (!availability.available) throw new Error(`CUDA is required but unavailable: ${availability.reason}`);
      setBackend("js");
      const x = randn([c.tokens, c.width], { seed: c.seed + 2 });
      const target = randn([c.tokens, c.width], { seed: c.seed + 3 });
      const onJs = feedForward(c).to({ backend: "js", dtype: c.dtype });
      const onCuda = feedForward(c).to({ backend: "cuda", dtype: c.dtype });
      try {
        const want = trainStep(onJs, "js", c, x, target);
        const got = trainStep(onCuda, "cuda", c, x, target);
        const tolerance = TOLERANCE[c.dtype];
        expect(Math.abs(got.loss - want.loss) / Math.abs(want.loss), "loss").toBeLessThanOrEqual(tolerance);
        onJs.namedParameters().forEach(([name, p], i) => {
          // A stored block at a time for the values ([nnz, R, C]); the whole vector for a bias.
          const group = p.shape.length === 3 ? p.shape[1] * p.shape[2] : p.shape[0];
          expect(worstGroupError(got.grads[i], want.grads[i], group), `gradient of ${name}`).toBeLessThanOrEqual(tolerance);
          // AdamW's first step moves each element by about lr x sign(gradient): a gradient within rounding of zero may
          // take either sign on either backend, so the updates are compared as a whole.
          expect(worstGroupError(got.updates[i], want.updates[i], want.updates[i].length), `update of ${name}`).toBeLessThanOrEqual(5e-2);
        });
      } finally {
        setBackend("js");
        for (const p of [...onJs.parameters(), ...onCuda.parameters()]) p.dispose();
        x.dispose();
        target.dispose();
      }
    }, 120_000);
  });
});
