import { backward, gradcheck } from "@blocksparse/autograd";
import { cast, DTypeError, randn, reshape, ShapeError, type Tensor, tensor, tidy, ValueError } from "@blocksparse/core";
import { crossEntropy, distillationLoss, klDivergence } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host } from "./helpers";

/** klDivergence of two [2, C] rows against each row's expected KL ("none") and their sum ("sum"); the sum's loss. */
function expectTwoRows(student: Tensor, teacher: Tensor, rows: readonly number[]): Tensor {
  const none = host(klDivergence(student, teacher, { reduction: "none" }));
  expect(none[0]).toBeCloseTo(rows[0], 5);
  expect(none[1]).toBeCloseTo(rows[1], 5);
  const loss = klDivergence(student, teacher, { reduction: "sum" });
  expect(loss.item()).toBeCloseTo(rows[0] + rows[1], 5);
  return loss;
}

/** Float64 KL(softmax(t / T) || softmax(s / T)) per row of [rows, classes]. */
function klRows(student: Float64Array, teacher: Float64Array, classes: number, temperature: number): number[] {
  const logSoftmax = (row: number[]) => {
    const top = Math.max(...row);
    const logSum = Math.log(row.reduce((acc, v) => acc + Math.exp(v - top), 0)) + top;
    return row.map((v) => v - logSum);
  };
  const rows: number[] = [];
  for (let r = 0; r < student.length / classes; r++) {
    const s = logSoftmax(Array.from(student.subarray(r * classes, (r + 1) * classes), (v) => v / temperature));
    const t = logSoftmax(Array.from(teacher.subarray(r * classes, (r + 1) * classes), (v) => v / temperature));
    rows.push(t.reduce((acc, lt, c) => acc + Math.exp(lt) * (lt - s[c]), 0));
  }
  return rows;
}

describe("klDivergence", () => {
  it("matches a float64 oracle for each reduction and temperature, and is 0 for equal logits", () => {
    const student = randn([2, 3, 5], { seed: 1 });
    const teacher = randn([2, 3, 5], { seed: 2 });
    for (const temperature of [1, 2.5]) {
      const rows = klRows(host(student), host(teacher), 5, temperature);
      const none = host(klDivergence(student, teacher, { temperature, reduction: "none" }));
      expect(none.length).toBe(6);
      for (const [i, v] of none.entries()) expect(v).toBeCloseTo(rows[i], 5);
      expect(klDivergence(student, teacher, { temperature, reduction: "sum" }).item()).toBeCloseTo(rows.reduce((a, b) => a + b), 5);
      expect(klDivergence(student, teacher, { temperature }).item()).toBeCloseTo(rows.reduce((a, b) => a + b) / 6, 5);
    }
    expect(Math.abs(klDivergence(student, student).item())).toBeLessThan(1e-6);
  });

  it("has the gradient of finite differences in the student's logits, and none in the teacher's", () => {
    const student = randn([4, 6], { seed: 3 });
    const teacher = randn([4, 6], { seed: 4 });
    const result = gradcheck((s, t) => klDivergence(s, t, { temperature: 2 }), [student, teacher], { wrt: [0] });
    expect(result.ok, `abs ${result.maxAbsError} rel ${result.maxRelError}`).toBe(true);
    const s = tensor(host(student), [4, 6]);
    const t = tensor(host(teacher), [4, 6]);
    s.requiresGrad = true;
    t.requiresGrad = true;
    tidy(() => backward(klDivergence(s, t)));
    expect(s.grad).not.toBeNull();
    expect(t.grad ?? null).toBeNull();
  });

  it("leaves out the classes a teacher rules out with a -inf logit, as torch's kl_div (0 log 0 = 0), in value and gradient", () => {
    const student = tensor(Float32Array.from([1, 2, 3, 0.5, -1, 2]), [2, 3]);
    student.requiresGrad = true;
    const teacher = tensor(Float32Array.from([0, Number.NEGATIVE_INFINITY, 1, Number.NEGATIVE_INFINITY, 2, 0]), [2, 3]);
    // The oracle over the classes each teacher row keeps; the student's softmax still spans all three.
    const studentLogProbs = (row: number[]) => row.map((v) => v - Math.log(row.reduce((acc, w) => acc + Math.exp(w), 0)));
    const s = [studentLogProbs([1, 2, 3]), studentLogProbs([0.5, -1, 2])];
    const t = [studentLogProbs([0, 1]), studentLogProbs([2, 0])];
    const rows = [Math.exp(t[0][0]) * (t[0][0] - s[0][0]) + Math.exp(t[0][1]) * (t[0][1] - s[0][2]), Math.exp(t[1][0]) * (t[1][0] - s[1][1]) + Math.exp(t[1][1]) * (t[1][1] - s[1][2])];
    const loss = expectTwoRows(student, teacher, rows);
    // d/ds = p_student - p_teacher, with p_teacher = 0 where it ruled the class out.
    backward(loss);
    const grad = host(student.grad as NonNullable<typeof student.grad>);
    expect(grad.every(Number.isFinite)).toBe(true);
    expect(grad[1]).toBeCloseTo(Math.exp(s[0][1]), 5);
    expect(grad[3]).toBeCloseTo(Math.exp(s[1][0]), 5);
  });

  it("refuses mismatched shapes and bad temperatures, naming them", () => {
    expect(() => klDivergence(randn([2, 3]), randn([2, 4]))).toThrow(ShapeError);
    expect(() => klDivergence(randn([2, 3]), randn([2, 3]), { temperature: 0 })).toThrow(/temperature must be/);
    expect(() => klDivergence(randn([2, 3]), randn([2, 3]), { reduction: "elementwise" as "mean" })).toThrow(ValueError);
    expect(() => klDivergence(randn([2, 3]), randn([2, 3]), { reduction: "batch_mean" as "mean" })).toThrow(
      'klDivergence: reduction must be "mean", "batchmean", "sum" or "none", got "batch_mean"',
    );
  });

  it('takes torch\'s "batchmean": the sum of the rows\' KL over shape[0] (the mean over rows for [N, C])', () => {
    const student = randn([2, 3, 5], { seed: 7 });
    const teacher = randn([2, 3, 5], { seed: 8 });
    for (const temperature of [1, 3]) {
      const total = klRows(host(student), host(teacher), 5, temperature).reduce((a, b) => a + b);
      // [B, T, C]: torch divides the sum by B; "mean" averages over the B * T rows.
      expect(klDivergence(student, teacher, { temperature, reduction: "batchmean" }).item()).toBeCloseTo(total / 2, 5);
      expect(klDivergence(student, teacher, { temperature }).item()).toBeCloseTo(total / 6, 5);
      const rows = reshape(student, [6, 5]);
      const targets = reshape(teacher, [6, 5]);
      expect(klDivergence(rows, targets, { temperature, reduction: "batchmean" }).item()).toBeCloseTo(
        klDivergence(rows, targets, { temperature, reduction: "mean" }).item(),
        6,
      );
    }
  });

  it("gives 0, not NaN, for a class both the teacher and the student rule out with -inf, in value and gradient", () => {
    const ruledOut = Number.NEGATIVE_INFINITY;
    const student = tensor(Float32Array.from([1, ruledOut, 2, 0.5, -1, ruledOut]), [2, 3]);
    student.requiresGrad = true;
    const teacher = tensor(Float32Array.from([0, ruledOut, 1, 2, 0, ruledOut]), [2, 3]);
    const rows = klRows(Float64Array.from([1, 2, 0.5, -1]), Float64Array.from([0, 1, 2, 0]), 2, 1);
    const loss = expectTwoRows(student, teacher, rows);
    backward(loss);
    // d/ds = p_student - p_teacher: 0 on the classes both rule out.
    const grad = host(student.grad as NonNullable<typeof student.grad>);
    expect([grad[1], grad[5]]).toEqual([0, 0]);
    expect(grad.every(Number.isFinite)).toBe(true);
  });
});

describe("distillationLoss", () => {
  it("is alpha T^2 KL + (1 - alpha) cross-entropy, with finite-difference gradients", () => {
    const student = randn([5, 4], { seed: 5 });
    const teacher = randn([5, 4], { seed: 6 });
    const labels = tensor(Int32Array.from([0, 3, 1, 2, 3]), [5], "int32");
    const expected = 0.7 * 9 * klDivergence(student, teacher, { temperature: 3 }).item() + 0.3 * crossEntropy(student, labels).item();
    expect(distillationLoss(student, teacher, labels, { temperature: 3, alpha: 0.7 }).item()).toBeCloseTo(expected, 5);
    expect(distillationLoss(student, teacher, labels, { alpha: 0 }).item()).toBeCloseTo(crossEntropy(student, labels).item(), 6);
    const result = gradcheck((s) => distillationLoss(s, teacher, labels, { temperature: 2, alpha: 0.5 }), [student]);
    expect(result.ok, `abs ${result.maxAbsError} rel ${result.maxRelError}`).toBe(true);
    expect(() => distillationLoss(student, teacher, labels, { alpha: 1.5 })).toThrow(/alpha must be in \[0, 1\]/);
  });
});

describe("distillationLoss with ignoreIndex", () => {
  it("leaves the ignored rows out of both terms, each averaged over the rows kept, as torch's ignore_index", () => {
    const student = randn([6, 5], { seed: 11 });
    const teacher = randn([6, 5], { seed: 12 });
    // Rows 1 and 4 are padding (-100, as Hugging Face's collators write it).
    const labels = tensor(Int32Array.from([0, -100, 4, 2, -100, 1]), [6], "int32");
    const kept = [0, 2, 3, 5];
    const rows = klRows(host(student), host(teacher), 5, 2);
    const klKept = kept.reduce((acc, r) => acc + rows[r], 0) / kept.length;
    const keptStudent = tensor(kept.flatMap((r) => Array.from(host(student).subarray(r * 5, r * 5 + 5))), [4, 5]);
    const ce = crossEntropy(keptStudent, tensor(Int32Array.from([0, 4, 2, 1]), [4], "int32")).item();
    const loss = distillationLoss(student, teacher, labels, { temperature: 2, alpha: 0.6, ignoreIndex: -100 });
    expect(loss.item()).toBeCloseTo(0.6 * 4 * klKept + 0.4 * ce, 5);
    // Only the soft term: the padded rows still left out.
    expect(distillationLoss(student, teacher, labels, { alpha: 1, ignoreIndex: -100 }).item()).toBeCloseTo(4 * klKept, 5);
    // The padded rows get no gradient.
    const s = student.clone();
    s.requiresGrad = true;
    backward(distillationLoss(s, teacher, labels, { ignoreIndex: -100 }));
    const grad = host(s.grad!);
    for (const r of [1, 4]) expect(Array.from(grad.subarray(r * 5, r * 5 + 5))).toEqual([0, 0, 0, 0, 0]);
    const result = gradcheck((x) => distillationLoss(x, teacher, labels, { temperature: 2, alpha: 0.5, ignoreIndex: -100 }), [student]);
    expect(result.ok, `abs ${result.maxAbsError} rel ${result.maxRelError}`).toBe(true);
  });

  it("ignored rows holding inf or NaN logits reach neither the loss nor the gradient, as in the cross-entropy term", () => {
    const student = randn([3, 4], { seed: 21 });
    const teacher = randn([3, 4], { seed: 22 });
    const labels = tensor(Int32Array.from([1, -100, 3]), [3], "int32");
    const expected = distillationLoss(student, teacher, labels, { ignoreIndex: -100 }).item();
    // Row 1 is padding whose logits overflowed (student) or were never finite (teacher).
    const poisoned = (t: Tensor, values: number[]) => tensor(host(t).map((v, i) => (i >= 4 && i < 8 ? values[i - 4] : v)), [3, 4]);
    const s = poisoned(student, [Number.POSITIVE_INFINITY, 1, Number.NaN, 0]);
    s.requiresGrad = true;
    const loss = distillationLoss(s, poisoned(teacher, [Number.NaN, 0, 0, Number.NEGATIVE_INFINITY]), labels, { ignoreIndex: -100 });
    expect(loss.item()).toBeCloseTo(expected, 6);
    backward(loss);
    const grad = host(s.grad!);
    expect(grad.every(Number.isFinite)).toBe(true);
    expect(Array.from(grad.subarray(4, 8))).toEqual([0, 0, 0, 0]);
  });

  it("refuses an ignoreIndex that is not an int32 and targets that do not match the rows", () => {
    const student = randn([3, 4], { seed: 1 });
    const labels = tensor(Int32Array.from([0, 1, 2]), [3], "int32");
    expect(() => distillationLoss(student, student, labels, { ignoreIndex: 0.5 })).toThrow(ValueError);
    expect(() => distillationLoss(student, student, labels, { ignoreIndex: 0.5 })).toThrow(/ignoreIndex must be an int32/);
    expect(() => distillationLoss(student, student, tensor(Int32Array.from([0, 1]), [2], "int32"), { ignoreIndex: -100 })).toThrow(ShapeError);
  });

  it("refuses int32 logits naming the loss and both dtypes, not an op inside it", () => {
    const logits = randn([2, 3], { seed: 1 });
    const ints = cast(logits, "int32");
    const labels = tensor(Int32Array.from([0, 1]), [2], "int32");
    expect(() => klDivergence(ints, logits)).toThrow(DTypeError);
    expect(() => klDivergence(ints, logits)).toThrow("klDivergence: studentLogits (int32) and teacherLogits (float32) must be float");
    expect(() => distillationLoss(logits, ints, labels)).toThrow("distillationLoss: studentLogits (float32) and teacherLogits (int32) must be float");
  });
});

describe("distillationLoss's targets with alpha = 1", () => {
  // The cross-entropy term is left out at alpha = 1, and with it the only check of the targets: null or a wrong shape gave a loss.
  it("are checked as at any other alpha", () => {
    const logits = randn([2, 3, 4], { seed: 1 });
    const teacher = randn([2, 3, 4], { seed: 2 });
    for (const alpha of [1, 0.5]) {
      expect(() => distillationLoss(logits, teacher, null as never, { alpha })).toThrow(new ValueError("distillationLoss: targets must be a Tensor, got null"));
      expect(() => distillationLoss(logits, teacher, tensor([1, 2], [2], "int32"), { alpha })).toThrow(ShapeError);
      expect(() => distillationLoss(logits, teacher, tensor([1, 2], [2], "int32"), { alpha })).toThrow("targets has shape [2], expected [2,3] (the logits' rows)");
      expect(() => distillationLoss(logits, teacher, randn([2, 3]), { alpha })).toThrow(new DTypeError("distillationLoss: targets has dtype float32, expected int32"));
    }
    const labels = tensor([0, 1, 2, 3, 0, 1], [2, 3], "int32");
    expect(host(distillationLoss(logits, teacher, labels, { alpha: 1 }))[0]).toBeCloseTo(4 * host(klDivergence(logits, teacher, { temperature: 2 }))[0], 6);
  });
});
