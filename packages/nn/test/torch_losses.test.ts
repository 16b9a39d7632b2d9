import { backward, gradcheck } from "@blocksparse/autograd";
import { cast, DTypeError, IndexError, logSoftmax, rand, randint, randn, ShapeError, sigmoid, softmax, type Tensor, tensor, tidy, ValueError } from "@blocksparse/core";
import {
  binaryCrossEntropy,
  binaryCrossEntropyWithLogits,
  crossEntropy,
  huberLoss,
  klDiv,
  l1Loss,
  mseLoss,
  nllLoss,
  smoothL1Loss,
} from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host } from "./helpers";

type Reduce = "mean" | "sum" | "none";
const REDUCTIONS: readonly Reduce[] = ["mean", "sum", "none"];

/** Each element's float64 term, reduced as torch does. */
function reduceOracle(terms: number[], reduction: Reduce): number[] {
  if (reduction === "none") return terms;
  const total = terms.reduce((a, b) => a + b, 0);
  return [reduction === "sum" ? total : total / terms.length];
}

/** `actual` against float64 values, relatively (1e-5) with an absolute floor. */
function expectClose(actual: Tensor, expected: number[], floor = 1e-6): void {
  const values = host(actual);
  expect(values.length).toBe(expected.length);
  for (const [i, v] of values.entries()) {
    const tolerance = floor + 1e-5 * Math.abs(expected[i]);
    expect(Math.abs(v - expected[i]), `element ${i}: ${v} vs ${expected[i]}`).toBeLessThanOrEqual(tolerance);
  }
}

function expectGradcheck(fn: (...inputs: Tensor[]) => Tensor, inputs: Tensor[], wrt?: number[]): void {
  const result = gradcheck(fn, inputs, { wrt, eps: 1e-3, atol: 2e-3, rtol: 2e-2 });
  expect(result.ok, `abs ${result.maxAbsError} rel ${result.maxRelError}`).toBe(true);
}

const float32 = (values: number[], shape: number[]) => tensor(Float32Array.from(values), shape);

describe("l1Loss, smoothL1Loss and huberLoss", () => {
  const pred = randn([3, 7], { seed: 11, std: 2 });
  const target = randn([3, 7], { seed: 12, std: 2 });
  const differences = () => {
    const p = host(pred);
    const t = host(target);
    return Array.from(p, (v, i) => v - t[i]);
  };
  const smooth = (d: number, beta: number) => (beta === 0 ? Math.abs(d) : Math.abs(d) < beta ? (0.5 * d * d) / beta : Math.abs(d) - 0.5 * beta);
  const huber = (d: number, delta: number) => (Math.abs(d) <= delta ? 0.5 * d * d : delta * (Math.abs(d) - 0.5 * delta));

  it("match torch's formulas in float64 for every reduction, beta and delta", () => {
    const d = differences();
    for (const reduction of REDUCTIONS) {
      const shape = reduction === "none" ? [3, 7] : [];
      const l1 = l1Loss(pred, target, reduction);
      expect(l1.shape).toEqual(shape);
      expectClose(l1, reduceOracle(d.map(Math.abs), reduction));
      expectClose(l1Loss(pred, target, { reduction }), reduceOracle(d.map(Math.abs), reduction));
      expectClose(mseLoss(pred, target, { reduction }), reduceOracle(d.map((v) => v * v), reduction));
      for (const beta of [0, 0.5, 1, 3, Number.POSITIVE_INFINITY]) {
        expectClose(smoothL1Loss(pred, target, { reduction, beta }), reduceOracle(d.map((v) => smooth(v, beta)), reduction));
      }
      for (const delta of [0.25, 1, 2.5, Number.POSITIVE_INFINITY]) {
        expectClose(huberLoss(pred, target, { reduction, delta }), reduceOracle(d.map((v) => huber(v, delta)), reduction));
      }
    }
    // The defaults: mean, beta = delta = 1.
    expectClose(smoothL1Loss(pred, target), reduceOracle(d.map((v) => smooth(v, 1)), "mean"));
    expectClose(huberLoss(pred, target), reduceOracle(d.map((v) => huber(v, 1)), "mean"));
  });

  it("have the gradients of finite differences, and finite ones for differences past float32's square", () => {
    expectGradcheck((p, t) => l1Loss(p, t, "sum"), [pred, target]);
    expectGradcheck((p, t) => smoothL1Loss(p, t, { beta: 0.7 }), [pred, target]);
    expectGradcheck((p, t) => huberLoss(p, t, { delta: 1.3, reduction: "none" }), [pred, target]);
    const far = float32([3e30, -3e30, 0.5], [3]);
    far.requiresGrad = true;
    tidy(() => backward(huberLoss(far, float32([0, 0, 0], [3]), { reduction: "sum", delta: 2 })));
    expect(host(far.grad as Tensor)).toEqual(Float64Array.from([2, -2, 0.5]));
  });

  it("return float32 for float16 inputs", () => {
    const loss = huberLoss(cast(pred, "float16"), cast(target, "float16"));
    expect(loss.dtype).toBe("float32");
    expect(Math.abs(loss.item() - huberLoss(pred, target).item())).toBeLessThan(1e-2);
  });

  it("refuse other shapes, int dtypes, unknown reductions and bad beta or delta, naming them", () => {
    expect(() => l1Loss(pred, randn([7, 3]))).toThrow(ShapeError);
    expect(() => smoothL1Loss(pred, tensor(new Int32Array(21), [3, 7], "int32"))).toThrow(/target has dtype int32/);
    expect(() => huberLoss(pred, target, "batchmean" as never)).toThrow(ValueError);
    expect(() => smoothL1Loss(pred, target, { beta: -1 })).toThrow(/beta must be a number >= 0/);
    expect(() => huberLoss(pred, target, { delta: 0 })).toThrow(/delta must be a number > 0/);
    expect(() => huberLoss(pred, target, { beta: 1 } as never)).toThrow(/unknown option 'beta'/);
  });
});

describe("nllLoss", () => {
  const logProbs = logSoftmax(randn([2, 4, 5], { seed: 21 }), -1);
  const targets = tensor(Int32Array.from([0, 4, -100, 2, 1, -100, 3, 3]), [2, 4], "int32");
  const weight = rand([5], { seed: 22, low: 0.2, high: 2 });

  /** Per row -w[t] lp[t] (0 where ignored), and the summed weights of the rows kept. */
  function oracle(lp: Float64Array, t: ArrayLike<number>, w: Float64Array | null, ignoreIndex = -100): { terms: number[]; weights: number } {
    let weights = 0;
    const terms = Array.from(t, (target, row) => {
      if (target === ignoreIndex) return 0;
      const wt = w ? w[target] : 1;
      weights += wt;
      return -wt * lp[row * 5 + target];
    });
    return { terms, weights };
  }

  it("matches torch's nll_loss in float64 with and without a weight, for every reduction (mean over the kept weights)", () => {
    for (const w of [null, weight]) {
      const { terms, weights } = oracle(host(logProbs), host(targets), w && host(w));
      const options = w ? { weight: w } : {};
      const none = nllLoss(logProbs, targets, { ...options, reduction: "none" });
      expect(none.shape).toEqual([2, 4]);
      expectClose(none, terms);
      expectClose(nllLoss(logProbs, targets, { ...options, reduction: "sum" }), [terms.reduce((a, b) => a + b)]);
      expectClose(nllLoss(logProbs, targets, options), [terms.reduce((a, b) => a + b) / weights]);
    }
    // crossEntropy is nllLoss of logSoftmax.
    const logits = randn([6, 5], { seed: 23 });
    const labels = randint(0, 5, [6], { seed: 24 });
    expect(nllLoss(logSoftmax(logits, -1), labels).item()).toBeCloseTo(crossEntropy(logits, labels).item(), 5);
  });

  it("takes a class as ignoreIndex; with every row ignored, mean is NaN and sum 0, as torch's", () => {
    const { terms, weights } = oracle(host(logProbs), host(targets), null, 3);
    const kept = tensor(Int32Array.from([0, 4, 1, 2, 1, 0, 3, 3]), [2, 4], "int32");
    const keptTerms = oracle(host(logProbs), host(kept), null, 3);
    expect(terms.length).toBe(8);
    expect(weights).toBeGreaterThan(0);
    expectClose(nllLoss(logProbs, kept, { ignoreIndex: 3 }), [keptTerms.terms.reduce((a, b) => a + b) / keptTerms.weights]);
    const allIgnored = tensor(new Int32Array(8).fill(-100), [2, 4], "int32");
    expect(nllLoss(logProbs, allIgnored).item()).toBeNaN();
    expect(nllLoss(logProbs, allIgnored, { reduction: "sum", weight }).item()).toBe(0);
    expect(host(nllLoss(logProbs, allIgnored, "none")).every((v) => v === 0)).toBe(true);
  });

  it("has the gradient of finite differences, none for ignored rows, and a finite one beside a -inf class", () => {
    const lp = randn([4, 5], { seed: 25 });
    const t = tensor(Int32Array.from([1, -100, 4, 0]), [4], "int32");
    expectGradcheck((x, w) => nllLoss(x, t, { weight: w }), [lp, weight]);
    const masked = float32([0, Number.NEGATIVE_INFINITY, -1, -2], [2, 2]);
    masked.requiresGrad = true;
    const loss = nllLoss(masked, tensor(Int32Array.from([0, 1]), [2], "int32"), "sum");
    expect(loss.item()).toBe(2);
    tidy(() => backward(loss));
    expect(host(masked.grad as Tensor)).toEqual(Float64Array.from([-1, 0, 0, -1]));
  });

  it("refuses targets out of range, of another shape or dtype, and a weight of another length, naming them", () => {
    const bad = tensor(Int32Array.from([0, 5, 1, 2, 1, 0, 3, 3]), [2, 4], "int32");
    expect(() => nllLoss(logProbs, bad)).toThrow(IndexError);
    expect(() => nllLoss(logProbs, bad)).toThrow(/nllLoss: a target is outside \[0, 5\)/);
    expect(() => nllLoss(logProbs, tensor(Int32Array.from([-1, 0, 0, 0, 0, 0, 0, 0]), [2, 4], "int32"))).toThrow(IndexError);
    expect(() => nllLoss(logProbs, reshapeTargets(targets))).toThrow(/targets has shape \[8\], expected \[2,4\]/);
    expect(() => nllLoss(logProbs, cast(targets, "float32"))).toThrow(DTypeError);
    expect(() => nllLoss(logProbs, targets, { weight: rand([4]) })).toThrow(/weight has shape \[4\]/);
    expect(() => nllLoss(logProbs, targets, { weight: rand([1]) })).toThrow(ShapeError);
    expect(() => nllLoss(logProbs, targets, { ignoreIndex: 1.5 })).toThrow(/ignoreIndex must be an int32/);
    expect(() => nllLoss(logProbs, targets, "batchmean" as never)).toThrow(/reduction must be/);
    expect(() => nllLoss(randn([2, 0]), tensor(new Int32Array(2), [2], "int32"))).toThrow(/C >= 1/);
  });
});

function reshapeTargets(t: Tensor): Tensor {
  return tensor(Int32Array.from(host(t)), [t.size], "int32");
}

describe("binaryCrossEntropyWithLogits", () => {
  const logits = randn([3, 4], { seed: 31, std: 3 });
  const targets = rand([3, 4], { seed: 32 });
  const posWeight = rand([4], { seed: 33, low: 0.5, high: 3 });
  const weight = rand([3, 1], { seed: 34, low: 0.5, high: 2 });

  /** torch's formula in float64: -w [p y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))]. */
  const term = (x: number, y: number, p = 1, w = 1) => {
    const logSigmoid = -(Math.max(-x, 0) + Math.log1p(Math.exp(-Math.abs(x))));
    const logOneMinus = -(Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x))));
    return -w * (p * y * logSigmoid + (1 - y) * logOneMinus);
  };

  it("matches torch's formula in float64 with weight and posWeight, for every reduction", () => {
    const x = host(logits);
    const y = host(targets);
    const pw = host(posWeight);
    const w = host(weight);
    for (const reduction of REDUCTIONS) {
      expectClose(binaryCrossEntropyWithLogits(logits, targets, reduction), reduceOracle(Array.from(x, (v, i) => term(v, y[i])), reduction));
      const weighted = Array.from(x, (v, i) => term(v, y[i], pw[i % 4], w[Math.floor(i / 4)]));
      expectClose(binaryCrossEntropyWithLogits(logits, targets, { reduction, posWeight, weight }), reduceOracle(weighted, reduction));
    }
  });

  it("stays finite and accurate for large |logits|, where 1 + exp(-|x|) rounds to 1", () => {
    const x = [30, -30, 20, 1e4, -1e4, 88, -88, 0];
    const y = [1, 0, 1, 0, 1, 1, 0, 0.5];
    const expected = x.map((v, i) => term(v, y[i]));
    expectClose(binaryCrossEntropyWithLogits(float32(x, [8]), float32(y, [8]), "none"), expected, 0);
    const pw = [2, 2, 2, 2, 2, 2, 2, 2];
    expectClose(binaryCrossEntropyWithLogits(float32(x, [8]), float32(y, [8]), { reduction: "none", posWeight: float32(pw, [8]) }), x.map((v, i) => term(v, y[i], 2)), 0);
    // The gradient, sigmoid(x) - y, finite everywhere.
    const leaf = float32(x, [8]);
    leaf.requiresGrad = true;
    tidy(() => backward(binaryCrossEntropyWithLogits(leaf, float32(y, [8]), "sum")));
    expectClose(leaf.grad as Tensor, x.map((v, i) => 1 / (1 + Math.exp(-v)) - y[i]), 1e-7);
  });

  it("has the gradient of finite differences in the logits, the targets and posWeight", () => {
    expectGradcheck((x, y, p) => binaryCrossEntropyWithLogits(x, y, { posWeight: p, weight }), [logits, targets, posWeight]);
  });

  it("refuses other shapes, int dtypes and weights that do not broadcast, naming them", () => {
    expect(() => binaryCrossEntropyWithLogits(logits, rand([4, 3]))).toThrow(/logits has shape \[3,4\] but targets has \[4,3\]/);
    expect(() => binaryCrossEntropyWithLogits(logits, tensor(new Int32Array(12), [3, 4], "int32"))).toThrow(DTypeError);
    expect(() => binaryCrossEntropyWithLogits(logits, targets, { posWeight: rand([3]) })).toThrow(/posWeight has shape \[3\]/);
    expect(() => binaryCrossEntropyWithLogits(logits, targets, { weight: rand([2, 3, 4]) })).toThrow(ShapeError);
    expect(() => binaryCrossEntropyWithLogits(logits, targets, { weight: tensor(new Int32Array(4), [4], "int32") })).toThrow(/weight has dtype int32/);
    expect(() => binaryCrossEntropyWithLogits(logits, targets, { pos_weight: posWeight } as never)).toThrow(ValueError);
  });
});

describe("binaryCrossEntropy", () => {
  const probs = sigmoid(randn([2, 5], { seed: 41 }));
  const targets = rand([2, 5], { seed: 42 });
  const weight = rand([5], { seed: 43, low: 0.5, high: 2 });
  const term = (p: number, y: number, w = 1) => -w * (y * Math.max(Math.log(p), -100) + (1 - y) * Math.max(Math.log(1 - p), -100));

  it("matches torch's formula in float64 with and without a weight, for every reduction", () => {
    const p = host(probs);
    const y = host(targets);
    const w = host(weight);
    for (const reduction of REDUCTIONS) {
      expectClose(binaryCrossEntropy(probs, targets, reduction), reduceOracle(Array.from(p, (v, i) => term(v, y[i])), reduction));
      expectClose(binaryCrossEntropy(probs, targets, { reduction, weight }), reduceOracle(Array.from(p, (v, i) => term(v, y[i], w[i % 5])), reduction));
    }
  });

  it("clamps each log to -100 at 0 and 1, and has torch's gradient w (p - y) / max(p (1 - p), 1e-12) there", () => {
    const p = float32([0, 1, 0, 1, 0.25], [5]);
    p.requiresGrad = true;
    const y = float32([1, 0, 0, 1, 0.5], [5]);
    const loss = binaryCrossEntropy(p, y, "none");
    expectClose(loss, [100, 100, 0, 0, term(0.25, 0.5)]);
    tidy(() => backward(binaryCrossEntropy(p, y, "sum")));
    expectClose(p.grad as Tensor, [-1e12, 1e12, 0, 0, (0.25 - 0.5) / (0.25 * 0.75)]);
  });

  it("has the gradient of finite differences in the probabilities, the targets and the weight", () => {
    expectGradcheck((p, y, w) => binaryCrossEntropy(p, y, { weight: w }), [probs, targets, weight]);
  });

  it("refuses other shapes and int dtypes, naming them", () => {
    expect(() => binaryCrossEntropy(probs, rand([5, 2]))).toThrow(/probs has shape \[2,5\] but targets has \[5,2\]/);
    expect(() => binaryCrossEntropy(tensor(new Int32Array(10), [2, 5], "int32"), targets)).toThrow(/probs has dtype int32/);
    expect(() => binaryCrossEntropy(probs, targets, { weight: rand([3]) })).toThrow(ShapeError);
  });
});

describe("klDiv (torch's kl_div)", () => {
  const input = logSoftmax(randn([3, 6], { seed: 51 }), -1);
  const targetLogits = randn([3, 6], { seed: 52 });
  const target = softmax(targetLogits, -1);
  const logTarget = logSoftmax(targetLogits, -1);

  it("matches target (log target - input) in float64, with probabilities or logTarget, for every reduction", () => {
    const x = host(input);
    const t = host(target);
    const terms = Array.from(x, (v, i) => t[i] * (Math.log(t[i]) - v));
    for (const reduction of REDUCTIONS) {
      expectClose(klDiv(input, target, { reduction }), reduceOracle(terms, reduction));
      expectClose(klDiv(input, logTarget, { reduction, logTarget: true }), reduceOracle(terms, reduction));
    }
    const total = terms.reduce((a, b) => a + b);
    expectClose(klDiv(input, target, "batchmean"), [total / 3]);
    expectClose(klDiv(input, logTarget, { reduction: "batchmean", logTarget: true }), [total / 3]);
    expectClose(klDiv(input, target), [total / 18]);
  });

  it("gives 0 with no NaN in value or gradient where the target's probability is 0, the input -inf included", () => {
    const x = float32([Math.log(0.5), Math.log(0.5), Number.NEGATIVE_INFINITY, -1], [2, 2]);
    for (const [t, logTarget] of [
      [float32([1, 0, 0, 1], [2, 2]), false],
      [float32([0, Number.NEGATIVE_INFINITY, Number.NEGATIVE_INFINITY, 0], [2, 2]), true],
    ] as const) {
      const leaf = float32(Array.from(host(x)), [2, 2]);
      leaf.requiresGrad = true;
      const target = float32(Array.from(host(t)), [2, 2]);
      target.requiresGrad = true;
      const loss = klDiv(leaf, target, { reduction: "sum", logTarget });
      expect(loss.item()).toBeCloseTo(-Math.log(0.5) + 1, 6);
      tidy(() => backward(loss));
      expect(host(leaf.grad as Tensor)).toEqual(Float64Array.from([-1, 0, 0, -1]));
      expect(host(target.grad as Tensor).every(Number.isFinite)).toBe(true);
    }
  });

  it("has the gradient of finite differences in the input and the target", () => {
    expectGradcheck((x, t) => klDiv(x, t, "batchmean"), [input, target]);
    expectGradcheck((x, t) => klDiv(x, t, { logTarget: true, reduction: "sum" }), [input, logTarget]);
  });

  it("refuses other shapes, reductions and a non-boolean logTarget, naming them", () => {
    expect(() => klDiv(input, randn([6, 3]))).toThrow(/input has shape \[3,6\] but target has \[6,3\]/);
    expect(() => klDiv(input, target, { reduction: "avg" as never })).toThrow(/reduction must be "mean", "batchmean", "sum", "none"/);
    expect(() => klDiv(input, target, { logTarget: 1 as never })).toThrow(/logTarget must be a boolean/);
    expect(() => klDiv(input, target, { log_target: true } as never)).toThrow(ValueError);
  });
});

describe("the losses on half inputs", () => {
  it("return float32 for float16 inputs, close to the float32 result", () => {
    const logits = randn([4, 3], { seed: 61 });
    const targets = rand([4, 3], { seed: 62 });
    const half = binaryCrossEntropyWithLogits(cast(logits, "float16"), cast(targets, "float16"));
    expect(half.dtype).toBe("float32");
    expect(Math.abs(half.item() - binaryCrossEntropyWithLogits(logits, targets).item())).toBeLessThan(1e-2);
    const lp = logSoftmax(logits, -1);
    const labels = randint(0, 3, [4], { seed: 63 });
    expect(nllLoss(cast(lp, "bfloat16"), labels).dtype).toBe("float32");
    expect(klDiv(cast(lp, "float16"), cast(softmax(logits, -1), "float16")).dtype).toBe("float32");
  });

});

describe("weight and posWeight null (torch's None)", () => {
  it("take null as no weight in nllLoss, binaryCrossEntropy and binaryCrossEntropyWithLogits, as crossEntropy does", () => {
    const logits = randn([3, 4], { seed: 71 });
    const probs = sigmoid(logits);
    const targets = rand([3, 4], { seed: 72 });
    const labels = tensor(Int32Array.from([1, -100, 3]), [3], "int32");
    const lp = logSoftmax(logits, -1);
    expect(nllLoss(lp, labels, { weight: null }).item()).toBe(nllLoss(lp, labels).item());
    expect(binaryCrossEntropy(probs, targets, { weight: null }).item()).toBe(binaryCrossEntropy(probs, targets).item());
    const plain = binaryCrossEntropyWithLogits(logits, targets).item();
    expect(binaryCrossEntropyWithLogits(logits, targets, { weight: null, posWeight: null }).item()).toBe(plain);
    expect(crossEntropy(logits, labels, { weight: null, ignoreIndex: -100 }).item()).toBe(crossEntropy(logits, labels, { ignoreIndex: -100 }).item());
  });
});
