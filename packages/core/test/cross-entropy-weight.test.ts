/**
 * crossEntropy's class weights (`weight`) and class-probability targets against torch's formulas
 * (torch.nn.functional.cross_entropy), computed here in float64.
 */
import { describe, expect, it } from "vitest";
import {
  BackendError,
  DTypeError,
  type KernelRecord,
  ShapeError,
  ValueError,
  addKernelObserver,
  cast,
  crossEntropy,
  registerBackend,
  tensor,
  tidy,
  zeros,
} from "../src";
import { ToyBackend } from "./toy_backend";

const logits = [
  [2.0, -1.0, 0.5, 0.0],
  [-0.3, 0.8, 1.7, -2.2],
  [1.0, 1.0, 1.0, 1.0],
  [0.4, -0.9, 2.5, 1.1],
  [-1.5, 0.2, 0.3, 3.0],
];
const C = 4;
const weights = [0.5, 2.0, 1.5, 0.25];
const probs = [
  [0.1, 0.2, 0.3, 0.4],
  [0.7, 0.1, 0.1, 0.1],
  [0.0, 0.0, 1.0, 0.0],
  [0.25, 0.25, 0.25, 0.25],
  [0.5, 0.0, 0.2, 0.3],
];

function logSoftmax(row: number[]): number[] {
  const max = Math.max(...row);
  const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
  return row.map((v) => v - lse);
}

/**
 * torch's class-index loss (LossNLL.cpp): rows (1 - e) w[t] (-log p_t) + (e / C) sum_c w_c (-log p_c), 0 for ignored
 * rows; "mean" = sum / sum of w[t] over the rows kept.
 */
function torchIndices(targets: number[], w: number[] | null, e: number, ignore?: number): { rows: number[]; sum: number; mean: number } {
  const wc = (c: number) => (w === null ? 1 : w[c]);
  let divisor = 0;
  const rows = targets.map((t, i) => {
    if (t === ignore) return 0;
    divisor += wc(t);
    const logp = logSoftmax(logits[i]);
    return (1 - e) * wc(t) * -logp[t] + (e / C) * logp.reduce((s, v, c) => s - wc(c) * v, 0);
  });
  const sum = rows.reduce((s, v) => s + v, 0);
  return { rows, sum, mean: sum / divisor };
}

/** torch's probability loss: rows -sum_c w_c ((1 - e) p_c + e / C) log p_c; "mean" = sum / rows. */
function torchProbabilities(w: number[] | null, e: number): { rows: number[]; sum: number; mean: number } {
  const rows = logits.map((row, i) => logSoftmax(row).reduce((s, v, c) => s - (w === null ? 1 : w[c]) * ((1 - e) * probs[i][c] + e / C) * v, 0));
  const sum = rows.reduce((s, v) => s + v, 0);
  return { rows, sum, mean: sum / rows.length };
}

const x = () => tensor(logits.flat(), [5, C]);
const w = () => tensor(weights, [C]);
const p = () => tensor(probs.flat(), [5, C]);
const values = (t: ReturnType<typeof tensor>) => Array.from(t.dataSync());

function expectClose(got: number[], want: number[], digits = 5): void {
  expect(got).toHaveLength(want.length);
  for (const [i, v] of got.entries()) expect(v, `element ${i}`).toBeCloseTo(want[i], digits);
}

describe("crossEntropy's weight (class indices)", () => {
  const targets = [2, 0, 3, 1, 2];
  const t = (values = targets) => tensor(values, [values.length], "int32");
  it("weights each row by weight[target]; mean divides by the sum of those weights", () => {
    const want = torchIndices(targets, weights, 0);
    expectClose(values(crossEntropy(x(), t(), { weight: w(), reduction: "none" })), want.rows);
    expectClose(values(crossEntropy(x(), t(), { weight: w(), reduction: "sum" })), [want.sum]);
    expectClose(values(crossEntropy(x(), t(), { weight: w() })), [want.mean]);
    // Not the row count: the unweighted mean of the weighted rows differs.
    expect(Math.abs(want.mean - want.sum / 5)).toBeGreaterThan(0.1);
  });
  it("with ignoreIndex (-100 or a class): ignored rows are 0 and add no weight to the mean's divisor", () => {
    for (const [ignore, tv] of [[-100, [2, -100, 3, -100, 2]], [0, [2, 0, 3, 1, 0]]] as const) {
      const want = torchIndices([...tv], weights, 0, ignore);
      const opts = { weight: w(), ignoreIndex: ignore };
      expectClose(values(crossEntropy(x(), t([...tv]), { ...opts, reduction: "none" })), want.rows);
      expectClose(values(crossEntropy(x(), t([...tv]), { ...opts, reduction: "sum" })), [want.sum]);
      expectClose(values(crossEntropy(x(), t([...tv]), opts)), [want.mean]);
    }
    // Every row ignored: NaN, as torch (0 / 0).
    expect(values(crossEntropy(x(), t([-100, -100, -100, -100, -100]), { weight: w(), ignoreIndex: -100 }))[0]).toBeNaN();
  });
  it("with labelSmoothing weights the smoothing term per class (torch's formula), with and without ignoreIndex", () => {
    for (const e of [0.1, 1]) {
      const want = torchIndices(targets, weights, e);
      expectClose(values(crossEntropy(x(), t(), { weight: w(), labelSmoothing: e, reduction: "none" })), want.rows);
      expectClose(values(crossEntropy(x(), t(), { weight: w(), labelSmoothing: e, reduction: "sum" })), [want.sum]);
      expectClose(values(crossEntropy(x(), t(), { weight: w(), labelSmoothing: e })), [want.mean]);
      const tv = [2, -100, 3, 1, -100];
      const wantI = torchIndices(tv, weights, e, -100);
      const opts = { weight: w(), labelSmoothing: e, ignoreIndex: -100 };
      expectClose(values(crossEntropy(x(), t(tv), { ...opts, reduction: "none" })), wantI.rows);
      expectClose(values(crossEntropy(x(), t(tv), { ...opts, reduction: "sum" })), [wantI.sum]);
      expectClose(values(crossEntropy(x(), t(tv), opts)), [wantI.mean]);
    }
  });
  it("keeps the loss float32 for half logits and half weights, and leading dims", () => {
    const want = torchIndices(targets, weights, 0.2);
    for (const dtype of ["float16", "bfloat16"] as const) {
      const loss = crossEntropy(cast(x(), dtype), t(), { weight: cast(w(), dtype), labelSmoothing: 0.2 });
      expect(loss.dtype).toBe("float32");
      expect(values(loss)[0]).toBeCloseTo(want.mean, 1);
    }
    const three = crossEntropy(tensor([...logits.flat(), ...logits[0]], [2, 3, C]), tensor([...targets, 1], [2, 3], "int32"), { weight: w(), reduction: "none" });
    expect(three.shape).toEqual([2, 3]);
    expectClose(values(three).slice(0, 5), torchIndices(targets, weights, 0).rows);
  });
  it("refuses a weight of the wrong shape, dtype, kind or backend with a typed error naming it", () => {
    expect(() => crossEntropy(x(), t(), { weight: tensor([1, 2, 3], [3]) })).toThrow(
      new ShapeError("crossEntropy: weight has shape [3], expected [4] (one per class of logits [5, 4])"),
    );
    expect(() => crossEntropy(x(), t(), { weight: zeros([1, 4]) })).toThrow(ShapeError);
    expect(() => crossEntropy(x(), t(), { weight: zeros([4], "int32") })).toThrow(
      new DTypeError("crossEntropy: weight has dtype int32, expected a float dtype (float32, float16, bfloat16)"),
    );
    expect(() => crossEntropy(x(), t(), { weight: [1, 2, 3, 4] as never })).toThrow(new ValueError("crossEntropy: weight must be a Tensor, got an array"));
    registerBackend("toy-ce", () => new ToyBackend("toy-ce"));
    const onToy = zeros([4]).to("toy-ce");
    try {
      expect(() => crossEntropy(x(), t(), { weight: onToy })).toThrow(BackendError);
      expect(() => crossEntropy(x(), t(), { weight: onToy })).toThrow("crossEntropy: weight is on backend 'toy-ce' but logits is on 'js'");
    } finally {
      onToy.dispose();
    }
    // null is no weight.
    expectClose(values(crossEntropy(x(), t(), { weight: null })), [torchIndices(targets, null, 0).mean]);
  });
  it("runs the kernel alone (no log-softmax, gather) when no option asks for more", () => {
    const names: string[] = [];
    const unsubscribe = addKernelObserver((r: KernelRecord) => names.push(r.kernelName));
    try {
      tidy(() => crossEntropy(x(), t()));
    } finally {
      unsubscribe();
    }
    expect(names.filter((n) => n !== "Reshape" && n !== "Upload" && n !== "Fill")).toEqual(["CrossEntropy", "Mean"]);
  });
});

describe("crossEntropy with class probabilities (float targets of the logits' shape)", () => {
  it("gives torch's loss for each reduction, with and without weight and labelSmoothing", () => {
    for (const [weighted, e] of [[false, 0], [true, 0], [false, 0.25], [true, 0.25], [true, 1]] as const) {
      const want = torchProbabilities(weighted ? weights : null, e);
      const opts = { weight: weighted ? w() : undefined, labelSmoothing: e };
      const label = `weight ${weighted}, labelSmoothing ${e}`;
      const none = crossEntropy(x(), p(), { ...opts, reduction: "none" });
      expect(none.shape, label).toEqual([5]);
      expectClose(values(none), want.rows);
      expectClose(values(crossEntropy(x(), p(), { ...opts, reduction: "sum" })), [want.sum]);
      // "mean" divides by the row count even with weight (torch's rule for probabilities).
      expectClose(values(crossEntropy(x(), p(), opts)), [want.mean]);
    }
  });
  it("one-hot probabilities give the class-index loss; leading dims and half dtypes work; empty mean is NaN", () => {
    const oneHot = tensor([0, 0, 1, 0, 1, 0, 0, 0], [2, C]);
    const twoRows = tensor(logits.slice(0, 2).flat(), [2, C]);
    expectClose(values(crossEntropy(twoRows, oneHot, "none")), values(crossEntropy(twoRows, tensor([2, 0], [2], "int32"), "none")));
    const want = torchProbabilities(weights, 0.1);
    const three = crossEntropy(tensor([...logits.flat(), ...logits[0]], [2, 3, C]), tensor([...probs.flat(), ...probs[0]], [2, 3, C]), {
      weight: w(),
      labelSmoothing: 0.1,
      reduction: "none",
    });
    expect(three.shape).toEqual([2, 3]);
    expectClose(values(three).slice(0, 5), want.rows);
    for (const dtype of ["float16", "bfloat16"] as const) {
      const loss = crossEntropy(cast(x(), dtype), cast(p(), dtype), { weight: w(), labelSmoothing: 0.1 });
      expect(loss.dtype).toBe("float32");
      expect(values(loss)[0]).toBeCloseTo(want.mean, 1);
    }
    expect(values(crossEntropy(zeros([0, C]), zeros([0, C])))[0]).toBeNaN();
    expect(values(crossEntropy(zeros([0, C]), zeros([0, C]), "sum"))[0]).toBe(0);
  });
  it("ignores a negative ignoreIndex and refuses a class, as torch", () => {
    expectClose(values(crossEntropy(x(), p(), { ignoreIndex: -100 })), [torchProbabilities(null, 0).mean]);
    expect(() => crossEntropy(x(), p(), { ignoreIndex: 0 })).toThrow(ValueError);
    expect(() => crossEntropy(x(), p(), { ignoreIndex: 0 })).toThrow("crossEntropy: ignoreIndex 0 names a class");
  });
  it("tells class indices from probabilities by shape, and names what was wrong", () => {
    // int32 targets of the logits' shape: probabilities must be float.
    expect(() => crossEntropy(x(), zeros([5, C], "int32"))).toThrow(
      new DTypeError("crossEntropy: targets has the logits' shape [5, 4] and dtype int32: class probabilities must be a float tensor (class indices are int32 [5])"),
    );
    // float targets of the indices' shape: class indices must be int32.
    expect(() => crossEntropy(x(), zeros([5]))).toThrow(DTypeError);
    expect(() => crossEntropy(x(), zeros([5]))).toThrow(
      "crossEntropy: targets has dtype float32, expected int32 (class indices; class probabilities are a float tensor of the logits' shape [5, 4])",
    );
    // float targets of another shape.
    expect(() => crossEntropy(x(), zeros([5, 3]))).toThrow(DTypeError);
    expect(() => crossEntropy(x(), p(), { weight: tensor([1, 2], [2]) })).toThrow(ShapeError);
  });
});
