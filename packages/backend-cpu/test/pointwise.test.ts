// The native pointwise kernels (bias + activation and backward, GELU, Adam/AdamW) against the js backend's float64
// kernels on fresh random inputs, past the conformance suite's small shapes: many rows (several work items), the
// GELU tails, thread counts, a fused product's activation, and the addon's own argument checks.
import {
  type Activation,
  type Tensor,
  adamUpdate,
  biasActivation,
  biasActivationBackward,
  bsrLinearActivation,
  layerNormBackward,
  layerNormWithStats,
  cast,
  BsrPattern,
  gelu,
  geluBackward,
  getBackendInstance,
  jsKernels,
  multiTensorAdamUpdate,
  multiTensorAdamUpdateInPlace,
  tensor,
  tensorOn,
  tidy,
} from "@blocksparse/core";
import { describe, expect, it } from "vitest";
import type { CpuBackend } from "../src/index";
import { cpuMissing, reportCpuAvailability, useCpuPoisoned } from "./cpu";

reportCpuAvailability("pointwise.test.ts");

/** `size` values in (-scale, scale) from a small generator of its own (xorshift32). */
function values(seed: number, size: number, scale = 3): number[] {
  let state = (seed * 2654435761) >>> 0 || 1;
  return Array.from({ length: size }, () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return (state / 2 ** 32 - 0.5) * 2 * scale;
  });
}

const onJsBackend = (t: Tensor) => tensorOn(getBackendInstance("js"), t.dataSync(), t.shape, t.dtype);

/** The same op on the js backend, from the cpu tensors' values. */
function onJs(inputs: Tensor[], op: (...moved: Tensor[]) => Tensor | Tensor[]): Float32Array[] {
  const moved = inputs.map(onJsBackend);
  const out = op(...moved);
  return (Array.isArray(out) ? out : [out]).map((t) => t.dataSync() as Float32Array);
}

/** |got - want| <= rtol (|want| + max |want|) elementwise, NaN where want is NaN, infinities exact. */
function expectNear(got: Float32Array, want: Float32Array, what: string, rtol = 2e-6): void {
  expect(got.length, what).toBe(want.length);
  let max = 0;
  for (const w of want) if (Number.isFinite(w)) max = Math.max(max, Math.abs(w));
  for (let i = 0; i < want.length; i++) {
    const [g, w] = [got[i], want[i]];
    if (Number.isNaN(w) || !Number.isFinite(w)) {
      if (!Object.is(g, w) && !(Number.isNaN(g) && Number.isNaN(w))) expect.fail(`${what}: element ${i} is ${g}, expected ${w}`);
      continue;
    }
    if (!(Math.abs(g - w) <= rtol * (Math.abs(w) + max))) expect.fail(`${what}: element ${i} is ${g}, expected ${w} (error ${Math.abs(g - w)})`);
  }
}

describe.skipIf(cpuMissing)("cpu pointwise kernels", () => {
  useCpuPoisoned();

  it("run natively, not the js kernels", () => {
    const { kernels } = getBackendInstance("cpu") as CpuBackend;
    for (const name of ["BiasActivation", "BiasActivationBackward", "Gelu", "GeluBackward", "LayerNorm", "LayerNormBackward", "AdamUpdate", "MultiTensorAdamUpdate"] as const) {
      expect(kernels[name], name).not.toBe(jsKernels[name]);
    }
  });

  for (const activation of ["relu", "gelu", "gelu_tanh"] as const satisfies readonly Activation[]) {
    it(`${activation}: bias + activation and its backward agree with js over many rows, the tails and the infinities`, () => {
      tidy(() => {
        // 700 rows of 257: several work items, and a row length that is no multiple of a vector.
        const [rows, width] = [700, 257];
        const raw = values(1, rows * width, 6);
        // The tails, where GELU's value and derivative fall to 0 (and to x and 1), and the limits.
        raw.splice(0, 12, -40, -12, -9, -5.5, 5.5, 9, 12, 40, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, Number.NaN, -0);
        const x = tensor(raw, [rows, width]);
        const bias = tensor(values(2, width, 0.5), [width]);
        const dy = tensor(values(3, rows * width, 1), [rows, width]);
        for (const b of [bias, null]) {
          const label = `${activation}${b ? " + bias" : ""}`;
          const want = onJs(b ? [x, b] : [x], (xs, bs) => biasActivation(xs, bs ?? null, activation));
          expectNear(biasActivation(x, b, activation).dataSync() as Float32Array, want[0], `${label} forward`);
          const [wantDx, wantDbias] = onJs(b ? [dy, x, b] : [dy, x], (g, xs, bs) => biasActivationBackward(g, xs, bs ?? null, activation));
          const [dx, dbias] = biasActivationBackward(dy, x, b, activation);
          expectNear(dx.dataSync() as Float32Array, wantDx, `${label} dx`);
          // A column holding an infinite input sums to NaN or an infinity on both.
          expectNear(dbias.dataSync() as Float32Array, wantDbias, `${label} dbias`, 1e-5);
        }
        if (activation !== "relu") {
          const approximate = activation === "gelu" ? "none" : "tanh";
          expectNear(gelu(x, approximate).dataSync() as Float32Array, onJs([x], (xs) => gelu(xs, approximate))[0], `gelu ${approximate}`);
          expectNear(geluBackward(dy, x, approximate).dataSync() as Float32Array, onJs([dy, x], (g, xs) => geluBackward(g, xs, approximate))[0], `geluBackward ${approximate}`);
        }
      });
    });
  }

  it("GELU (erf) keeps float32's relative accuracy down its lower tail, value and derivative", () => {
    tidy(() => {
      // Down to -13, where the values are still normal floats (about 1e-37): e^(-x^2 / 2) must not take x^2's rounding.
      const raw = Array.from({ length: 2601 }, (_, i) => -13 + i * 0.005);
      const x = tensor(raw, [raw.length]);
      const dy = tensor(new Array(raw.length).fill(1), [raw.length]);
      const got = [gelu(x).dataSync(), geluBackward(dy, x).dataSync()];
      const want = onJs([dy, x], (g, xs) => [gelu(xs), geluBackward(g, xs)]);
      for (const [k, what] of ["gelu", "geluBackward"].entries()) {
        for (let i = 0; i < raw.length; i++) {
          const [g, w] = [got[k][i], want[k][i]];
          // Above -2 the derivative is a difference of terms near 0.2 (0 at -0.75): an absolute bound there.
          const tolerance = 1e-6 * Math.abs(w) + (k === 1 && raw[i] > -2 ? 1e-7 : 0);
          if (!(Math.abs(g - w) <= tolerance)) expect.fail(`${what}(${raw[i]}) is ${g}, expected ${w}`);
        }
      }
    });
  });

  it("GELU's derivatives have their limits at huge finite inputs, where x^2 overflows float32", () => {
    tidy(() => {
      const raw = [1e20, -1e20, 1e30, -1e30, 3.4e38, -3.4e38];
      const x = tensor(raw, [raw.length]);
      const dy = tensor(new Array(raw.length).fill(1), [raw.length]);
      for (const approximate of ["none", "tanh"] as const) {
        expect(Array.from(geluBackward(dy, x, approximate).dataSync()), approximate).toEqual([1, 0, 1, 0, 1, 0]);
        expect(Array.from(biasActivationBackward(dy, x, null, approximate === "none" ? "gelu" : "gelu_tanh")[0].dataSync()), approximate).toEqual([1, 0, 1, 0, 1, 0]);
        expect(Array.from(onJs([dy, x], (g, xs) => geluBackward(g, xs, approximate))[0]), `js ${approximate}`).toEqual([1, 0, 1, 0, 1, 0]);
      }
    });
  });

  it("an infinite gradient deep in GELU's lower tail is +-inf or NaN as on js, not NaN from float32's derivative of 0", () => {
    tidy(() => {
      // Past about -14.5 the float32 derivative is 0 (inf * 0 = NaN), js's float64 one a tiny negative (-inf) down to
      // -38.6; the tanh form's float64 derivative (its gate a logistic) a tiny negative down to -21.4 (NaN past it),
      // float32's 0 from about -10.
      const raw = [-3, -8, -10, -16, -21.5, -30, -38, -40, 5, 40];
      const x = tensor(raw, [raw.length]);
      const dy = tensor(raw.map((_, i) => (i % 2 === 0 ? Number.POSITIVE_INFINITY : Number.NEGATIVE_INFINITY)), [raw.length]);
      const bias = tensor(new Array(raw.length).fill(0.25), [raw.length]);
      for (const activation of ["gelu", "gelu_tanh"] as const) {
        const approximate = activation === "gelu" ? "none" : "tanh";
        const [want] = onJs([dy, x], (g, xs) => geluBackward(g, xs, approximate));
        expect(want[3], `js ${activation} at -16`).toBe(Number.POSITIVE_INFINITY);
        expect(want[5], `js ${activation} at -30`).toBe(activation === "gelu" ? Number.POSITIVE_INFINITY : Number.NaN);
        expectNear(geluBackward(dy, x, approximate).dataSync() as Float32Array, want, `geluBackward ${approximate}`);
        const [wantDx, wantBias] = onJs([dy, x, bias], (g, xs, b) => biasActivationBackward(g, xs, b, activation));
        const [dx, dbias] = biasActivationBackward(dy, x, bias, activation);
        expectNear(dx.dataSync() as Float32Array, wantDx, `biasActivationBackward ${activation}`);
        expectNear(dbias.dataSync() as Float32Array, wantBias, `biasActivationBackward ${activation} dbias`);
      }
    });
  });

  it("LayerNorm and its backward agree with js: many rows, rows far from zero, no gamma or beta, half inputs, d = 0", () => {
    tidy(() => {
      // 1200 rows of 77 (several work items, no multiple of a vector); a mean of 1e4 against a spread of 1, where a
      // float32 x - mean would lose three digits.
      const [rows, d] = [1200, 77];
      const x = tensor(values(20, rows * d, 1).map((v, i) => (i < 40 * d ? 1e4 + v : v)), [rows, d]);
      const gamma = tensor(values(21, d, 1), [d]);
      const beta = tensor(values(22, d, 1), [d]);
      const dy = tensor(values(23, rows * d, 1), [rows, d]);
      for (const [g, b] of [[gamma, beta], [null, null], [gamma, null]] as const) {
        const label = `${g ? "gamma" : "no gamma"}, ${b ? "beta" : "no beta"}`;
        const got = layerNormWithStats(x, g, b, 1e-5);
        const want = onJs([x, ...(g ? [g] : []), ...(b ? [b] : [])], (xs, ...rest) => {
          const r = layerNormWithStats(xs, g ? rest[0] : null, b ? rest[g ? 1 : 0] : null, 1e-5);
          return [r.y, r.mean, r.rstd];
        });
        expectNear(got.y.dataSync() as Float32Array, want[0], `${label}: y`, 1e-5);
        expectNear(got.mean.dataSync() as Float32Array, want[1], `${label}: mean`, 1e-7);
        expectNear(got.rstd.dataSync() as Float32Array, want[2], `${label}: rstd`, 1e-7);
        const grads = layerNormBackward(dy, x, got.mean, got.rstd, g);
        const wantGrads = onJs([dy, x, got.mean, got.rstd, ...(g ? [g] : [])], (gs, xs, ms, rs, gm) => {
          const r = layerNormBackward(gs, xs, ms, rs, gm ?? null);
          return [r.dx, r.dgamma, r.dbeta];
        });
        expectNear(grads.dx.dataSync() as Float32Array, wantGrads[0], `${label}: dx`, 1e-5);
        expectNear(grads.dgamma.dataSync() as Float32Array, wantGrads[1], `${label}: dgamma`, 1e-5);
        expectNear(grads.dbeta.dataSync() as Float32Array, wantGrads[2], `${label}: dbeta`, 1e-5);
      }
      const [half, halfGamma, halfBeta] = [x, gamma, beta].map((t) => cast(t, "bfloat16"));
      expectNear(
        layerNormWithStats(half, halfGamma, halfBeta).y.dataSync() as Float32Array,
        onJs([half, halfGamma, halfBeta], (xs, g, b) => layerNormWithStats(xs, g, b).y)[0],
        "bfloat16 y",
        1e-2,
      );
      // No features: each row's statistics are still written (mean 0, rstd 1 / sqrt(epsilon)).
      const empty = layerNormWithStats(tensor([], [3, 0]), null, null, 0.25);
      expect(Array.from(empty.mean.dataSync())).toEqual([0, 0, 0]);
      expect(Array.from(empty.rstd.dataSync())).toEqual([2, 2, 2]);
    });
  });


  it("LayerNorm takes epsilon as given, not rounded to float32 (constant rows, epsilon below or above float32's range)", () => {
    tidy(() => {
      // A constant row's variance is 0, so rstd is 1 / sqrt(epsilon): 1e-50 was a float32 0 (rstd inf, y NaN), 1e39 a
      // float32 inf (rstd 0), 1e-40 a subnormal off by 2.6e-6.
      const x = tensor([2, 2, 2, 1, 5, 9], [2, 3]);
      for (const epsilon of [1e-50, 1e-40, 1e39]) {
        const got = layerNormWithStats(x, null, null, epsilon);
        const want = onJs([x], (xs) => {
          const r = layerNormWithStats(xs, null, null, epsilon);
          return [r.y, r.rstd];
        });
        expectNear(got.y.dataSync() as Float32Array, want[0], `epsilon ${epsilon}: y`, 1e-6);
        expectNear(got.rstd.dataSync() as Float32Array, want[1], `epsilon ${epsilon}: rstd`, 1e-7);
      }
    });
  });
  it("sums the bias gradient and LayerNorm's dgamma and dbeta to the same bits on any thread count", async () => {
    const { setCpuThreads } = await import("../src/index");
    tidy(() => {
      const [rows, width] = [5000, 33];
      const x = tensor(values(4, rows * width), [rows, width]);
      const dy = tensor(values(5, rows * width), [rows, width]);
      const sums = [1, 2, 3].map((threads) => {
        setCpuThreads(threads);
        return Array.from(biasActivationBackward(dy, x, null, "gelu")[1].dataSync());
      });
      expect(sums[1]).toEqual(sums[0]);
      expect(sums[2]).toEqual(sums[0]);
      const stats = layerNormWithStats(x, null, null);
      const gammaSums = [1, 2, 3].map((threads) => {
        setCpuThreads(threads);
        const { dgamma, dbeta } = layerNormBackward(dy, x, stats.mean, stats.rstd, null);
        return [...dgamma.dataSync(), ...dbeta.dataSync()];
      });
      expect(gammaSums[1]).toEqual(gammaSums[0]);
      expect(gammaSums[2]).toEqual(gammaSums[0]);
    });
  });

  it("a fused product's activation is the native one, and agrees with js", () => {
    tidy(() => {
      const pattern = BsrPattern.random([96, 64], { blockShape: [32, 32], density: 0.5, seed: 7 });
      const x = tensor(values(6, 40 * 64, 1), [40, 64]);
      const w = tensor(values(7, pattern.nnzBlocks * 32 * 32, 0.3), [pattern.nnzBlocks, 32, 32]);
      const bias = tensor(values(8, 96, 0.3), [96]);
      const y = bsrLinearActivation(x, w, pattern, bias, "gelu");
      const want = onJs([x, w, bias], (xs, ws, bs) => bsrLinearActivation(xs, ws, pattern, bs, "gelu"));
      expectNear(y.dataSync() as Float32Array, want[0], "bsrLinearActivation gelu", 1e-5);
    });
  });

  it("Adam and AdamW agree with js, out of place and in place (with a half gradient, copies, and device step counts)", () => {
    tidy(() => {
      const n = 70_001;
      const make = (seed: number, scale = 1, dtype: "float32" | "bfloat16" = "float32") => tensor(values(seed, n, scale), [n], dtype);
      const v0 = tensor(values(9, n, 1).map(Math.abs), [n]);
      for (const [options, gradDType] of [
        [{ lr: 1e-3, step: 3, weightDecay: 0.1, decoupledWeightDecay: true }, "float32"],
        [{ lr: 3e-2, step: 1, weightDecay: 0.01, decoupledWeightDecay: false, beta1: 0.8, beta2: 0.95, epsilon: 1e-6 }, "float32"],
      ] as const) {
        const [p, g, m] = [make(10), make(11, 1, gradDType), make(12, 0.1)];
        const got = adamUpdate(p, g, m, v0, options);
        const want = onJs([p, g, m, v0], (ps, gs, ms, vs) => {
          const r = adamUpdate(ps, gs, ms, vs, options);
          return [r.param, r.m, r.v];
        });
        expectNear(got.param.dataSync() as Float32Array, want[0], "adamUpdate param");
        expectNear(got.m.dataSync() as Float32Array, want[1], "adamUpdate m");
        expectNear(got.v.dataSync() as Float32Array, want[2], "adamUpdate v");
      }
      // In place over two tensors, with a bfloat16 copy, the step counts and the learning rate as tensors.
      const params = [make(13), tensor(values(14, 999), [9, 111])];
      const grads = [make(15), tensor(values(16, 999), [9, 111], "bfloat16")];
      const ms = [make(17, 0.1), tensor(values(18, 999, 0.1), [9, 111])];
      const vs = [v0.clone(), tensor(values(19, 999).map(Math.abs), [9, 111])];
      const copies = params.map((t) => tensor(new Array(t.size).fill(0), t.shape, "bfloat16"));
      const counts = [tensor([4], [1]), tensor([0], [1])];
      const lrValue = tensor([0.5], [1]);
      const jsInputs = [...params, ...grads, ...ms, ...vs].map(onJsBackend);
      const options = { lr: 2e-3, weightDecay: 0.05, decoupledWeightDecay: true };
      const expected = multiTensorAdamUpdate(jsInputs.slice(0, 2), jsInputs.slice(2, 4), jsInputs.slice(4, 6), jsInputs.slice(6, 8), {
        ...options,
        lr: options.lr * 0.5,
        steps: [5, 1],
        copyDType: "bfloat16",
      });
      multiTensorAdamUpdateInPlace(params, grads, ms, vs, { ...options, steps: counts, lrValue, copyDType: "bfloat16", copies });
      for (let i = 0; i < 2; i++) {
        expectNear(params[i].dataSync() as Float32Array, expected.params[i].dataSync() as Float32Array, `in place param ${i}`);
        expectNear(ms[i].dataSync() as Float32Array, expected.m[i].dataSync() as Float32Array, `in place m ${i}`);
        expectNear(vs[i].dataSync() as Float32Array, expected.v[i].dataSync() as Float32Array, `in place v ${i}`);
        // The copy is the new param rounded once to bfloat16.
        expect(Array.from(copies[i].dataSync())).toEqual(Array.from(cast(params[i], "bfloat16").dataSync()));
      }
      expect(Array.from(counts[0].dataSync())).toEqual([5]);
      expect(Array.from(counts[1].dataSync())).toEqual([1]);
    });
  });

  it("Adam moves a weight whose gradient's square overflows float32, and takes 1 - beta2 unrounded, as js does", () => {
    tidy(() => {
      // 3e19^2 is past float32's range: a float32 step had v = inf and left every weight where it was.
      const grads = [3e19, -1e25, 1e30, 1e19, 5e-30, 0];
      for (const options of [{ lr: 1e-3, step: 1 }, { lr: 1e-3, step: 4, weightDecay: 0.1, decoupledWeightDecay: false }]) {
        const [p, g, m, v] = [[1, -1, 0.5, 2, 3, -3], grads, [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]].map((xs) => tensor(xs, [6]));
        const got = adamUpdate(p, g, m, v, options);
        const want = onJs([p, g, m, v], (ps, gs, ms, vs) => {
          const r = adamUpdate(ps, gs, ms, vs, options);
          return [r.param, r.m, r.v];
        });
        expectNear(got.param.dataSync() as Float32Array, want[0], "param", 1e-7);
        expectNear(got.m.dataSync() as Float32Array, want[1], "m", 1e-7);
        expectNear(got.v.dataSync() as Float32Array, want[2], "v", 1e-7);
      }
    });
  });

  it("AdamW reads an infinite weight's gradient as it is: its m and v stay finite, the weight infinite, as js gives", () => {
    tidy(() => {
      // AdamW adds no L2 term to the gradient: 0 * inf there made NaN of the weight, m and v (weight decay 0 and 0.5).
      for (const weightDecay of [0, 0.5]) {
        const options = { lr: 0.1, weightDecay, decoupledWeightDecay: true, step: 3 };
        const [p, g, m, v] = [[Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY, 2], [0.5, -1, 0.25], [0.1, 0.2, 0.3], [1, 2, 3]].map((xs) => tensor(xs, [3]));
        const got = adamUpdate(p, g, m, v, options);
        const want = onJs([p, g, m, v], (ps, gs, ms, vs) => {
          const r = adamUpdate(ps, gs, ms, vs, options);
          return [r.param, r.m, r.v];
        });
        expect(Array.from(want[0]).slice(0, 2)).toEqual([Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY]);
        expectNear(got.param.dataSync() as Float32Array, want[0], `param, weight decay ${weightDecay}`, 1e-7);
        expectNear(got.m.dataSync() as Float32Array, want[1], `m, weight decay ${weightDecay}`, 1e-7);
        expectNear(got.v.dataSync() as Float32Array, want[2], `v, weight decay ${weightDecay}`, 1e-7);
      }
    });
  });

  it("the addon checks its arguments before it runs", () => {
    const { addon } = getBackendInstance("cpu") as CpuBackend;
    const x = new Float32Array(12);
    const out = new Float32Array(12);
    expect(() => addon.biasActivation(x, 0, null, 0, out, 0, 3, 5, 1)).toThrow(/biasActivation: x has 12 elements, needs 15/);
    expect(() => addon.biasActivation(x, 0, new Float32Array(3), 0, out, 0, 3, 4, 1)).toThrow(/biasActivation: bias has 3 elements, needs 4/);
    expect(() => addon.biasActivation(x, 0, null, 0, x, 0, 3, 4, 1)).toThrow(/out shares memory with x/);
    expect(() => addon.biasActivation(x, 0, null, 0, out, 0, 3, 4, 3)).toThrow(/activation must be 0 \(relu\), 1 \(gelu\) or 2 \(gelu_tanh\), got 3/);
    expect(() => addon.biasActivationBackward(x, 0, x, 0, null, 0, out, 0, new Float64Array(3), 3, 4, 0)).toThrow(/dbias has 3 elements, needs 4/);
    expect(() => addon.biasActivationBackward(x, 0, x, 0, null, 0, out, 0, new Float32Array(4) as never, 3, 4, 0)).toThrow(/dbias must be a Float64Array/);
    const stats = new Float32Array(3);
    expect(() => addon.layerNorm(x, 0, null, 0, null, 0, out, 0, stats, 0, new Float32Array(3), 0, 3, 5, 1e-5)).toThrow(/layerNorm: x has 12 elements, needs 15/);
    expect(() => addon.layerNorm(x, 0, null, 0, null, 0, out, 0, stats, 0, stats, 0, 3, 4, 1e-5)).toThrow(/mean shares memory with rstd/);
    expect(() =>
      addon.layerNormBackward(x, 0, x, 0, stats, 0, stats, 0, null, 0, out, 0, new Float64Array(4), new Float64Array(3), 3, 4),
    ).toThrow(/layerNormBackward: dbeta has 3 elements, needs 4/);
    const [p, g, m, v] = [0, 1, 2, 3].map(() => new Float32Array(8));
    expect(() => addon.adamUpdate(p, 0, g, 0, m, 0, v, 0, 9, 0.1, 0.9, 0.999, 1e-8, 0, false, 0.1, 0.001)).toThrow(/adamUpdate: p has 8 elements, needs 9/);
    expect(() => addon.adamUpdate(p, 0, g, 0, p, 0, v, 0, 8, 0.1, 0.9, 0.999, 1e-8, 0, false, 0.1, 0.001)).toThrow(/p shares memory with m/);
    expect(() => addon.adamUpdate(p, 0, g, 0, m, 0, v, 0, 8, "0.1" as never, 0.9, 0.999, 1e-8, 0, false, 0.1, 0.001)).toThrow(/lr must be a number/);
  });
});
