import { noGrad } from "@blocksparse/autograd";
import {
  add,
  cast,
  type CrossEntropyOptions,
  crossEntropy as coreCrossEntropy,
  DTypeError,
  div,
  equal,
  exp,
  expandDims,
  formatArg,
  logSoftmax,
  mean,
  mul,
  optionsArg,
  type Reduction,
  ShapeError,
  shapesEqual,
  square,
  sub,
  sum,
  Tensor,
  tidy,
  ValueError,
  where,
} from "@blocksparse/core";

/** float16/bfloat16 widened to float32 (differentiably), so that losses reduce and return in float32 as under autocast. */
function widened(x: Tensor): Tensor {
  return x instanceof Tensor && (x.dtype === "float16" || x.dtype === "bfloat16") ? cast(x, "float32") : x;
}

/**
 * Cross-entropy of logits [..., C] against int32 class indices [...], averaged by default
 * (torch.nn.functional.cross_entropy with the classes on the last dim). The loss is float32, as under
 * torch.autocast; float16/bfloat16 logits are read as they are (summed in float32 inside the kernel, never copied
 * to float32) and get their gradient in their own dtype. The third argument is the reduction, or
 * `{ reduction, ignoreIndex }`: rows whose target is `ignoreIndex` (torch's ignore_index: -100 for Hugging Face's
 * padding, or a class such as a tokenizer's pad id) are left out of the loss, its mean and the gradient. As in torch,
 * "mean" is NaN when no row is left (an empty batch, or every target ignored) and "sum" is 0.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, options: Reduction | CrossEntropyOptions = "mean"): Tensor {
  return coreCrossEntropy(logits, targets, options);
}

/** Mean squared error between same-shape tensors, averaged by default; in float32 for float16/bfloat16 inputs. */
export function mseLoss(pred: Tensor, target: Tensor, reduction: Reduction = "mean"): Tensor {
  if (!(pred instanceof Tensor) || !(target instanceof Tensor)) throw new ValueError("mseLoss: pred and target must be Tensors");
  if (pred.shape.length !== target.shape.length || pred.shape.some((d, i) => d !== target.shape[i])) {
    throw new ShapeError(`mseLoss: pred has shape [${pred.shape}] but target has [${target.shape}]`);
  }
  for (const [name, t] of [["pred", pred], ["target", target]] as const) {
    if (!t.isFloat) throw new DTypeError(`mseLoss: ${name} has dtype ${t.dtype}, expected a float dtype`);
  }
  if (reduction !== "mean" && reduction !== "sum" && reduction !== "none") {
    throw new ValueError(`mseLoss: reduction must be "mean", "sum" or "none", got ${JSON.stringify(reduction)}`);
  }
  return tidy(() => {
    const errors = square(sub(widened(pred), widened(target)));
    if (reduction === "none") return errors;
    return reduction === "sum" ? sum(errors) : mean(errors);
  });
}

export interface KlDivergenceOptions {
  /** Softens both distributions: softmax(logits / T) (default 1). */
  temperature?: number;
  /**
   * "mean" (default): the KL of each row (summed over the classes), averaged over the rows of [..., C]; not torch's
   * elementwise "mean" (which also divides by C). "batchmean": torch's kl_div "batchmean", the sum over shape[0]
   * (the same as "mean" for [N, C] logits; for [B, T, C] the sum over B). "sum"; "none": the KL of each row, [...].
   */
  reduction?: Reduction | "batchmean";
}

function checkLogits(where: string, student: Tensor, teacher: Tensor): void {
  if (!(student instanceof Tensor) || !(teacher instanceof Tensor)) throw new ValueError(`${where}: studentLogits and teacherLogits must be Tensors`);
  if (student.rank === 0 || student.shape.length !== teacher.shape.length || student.shape.some((d, i) => d !== teacher.shape[i])) {
    throw new ShapeError(`${where}: studentLogits [${student.shape}] and teacherLogits [${teacher.shape}] must have one shape [..., classes]`);
  }
  if (!student.isFloat || !teacher.isFloat) throw new DTypeError(`${where}: studentLogits (${student.dtype}) and teacherLogits (${teacher.dtype}) must be float`);
}

function checkTemperature(where: string, temperature: number): void {
  if (typeof temperature !== "number" || !(temperature > 0) || !Number.isFinite(temperature)) {
    throw new ValueError(`${where}: temperature must be a finite number > 0, got ${formatArg(temperature)}`);
  }
}

/**
 * KL(teacher || student) between the softmax distributions of two logit tensors [..., C]
 * at a temperature: sum p_t (log p_t - log p_s) over the classes, with p = softmax(logits / T).
 * The gradient reaches `studentLogits` only (the teacher is a target). float32 result. A class the teacher rules out
 * (logit -inf) adds 0, also where the student rules it out too (torch's kl_div gives NaN there). "mean" averages over
 * the rows, "batchmean" divides the sum by shape[0] as torch does (see {@link KlDivergenceOptions.reduction}); NaN for
 * no rows, as torch.
 */
export function klDivergence(studentLogits: Tensor, teacherLogits: Tensor, options: KlDivergenceOptions = {}): Tensor {
  const { temperature = 1, reduction = "mean" } = optionsArg("klDivergence", options, ["temperature", "reduction"]);
  checkLogits("klDivergence", studentLogits, teacherLogits);
  checkTemperature("klDivergence", temperature);
  if (reduction !== "batchmean" && reduction !== "mean" && reduction !== "sum" && reduction !== "none") {
    throw new ValueError(`klDivergence: reduction must be "mean", "batchmean", "sum" or "none", got ${JSON.stringify(reduction)}`);
  }
  return tidy(() => {
    const teacherLogProbs = noGrad(() => logSoftmax(div(widened(teacherLogits), temperature), -1));
    // A class the teacher rules out (logit -inf) adds nothing, as 0 log 0 = 0 in torch's kl_div (it was 0 * -inf = NaN),
    // whatever the student gives it: a class both rule out was 0 * (0 - -inf) = NaN (torch's kl_div gives NaN there too).
    const ruledOut = noGrad(() => equal(teacherLogProbs, Number.NEGATIVE_INFINITY));
    const teacherTerms = noGrad(() => where(ruledOut, 0, teacherLogProbs));
    const studentTerms = where(ruledOut, 0, logSoftmax(div(widened(studentLogits), temperature), -1));
    const perRow = sum(mul(exp(teacherLogProbs), sub(teacherTerms, studentTerms)), -1);
    if (reduction === "none") return perRow;
    if (reduction === "batchmean") return div(sum(perRow), studentLogits.shape[0]);
    return reduction === "sum" ? sum(perRow) : mean(perRow);
  });
}

export interface DistillationOptions {
  /** Softening of both distributions (default 2). */
  temperature?: number;
  /** Weight of the distillation term; the task loss gets 1 - alpha (default 0.5). */
  alpha?: number;
  /**
   * Rows whose target is this int32 (a padded position's label, e.g. -100 as Hugging Face's data collators write it)
   * are left out of both terms: each is averaged over the other rows, as torch's cross_entropy(ignore_index=...) is.
   */
  ignoreIndex?: number;
}

/**
 * Knowledge distillation (Hinton et al.): alpha * T^2 * KL(teacher || student) at
 * temperature T, plus (1 - alpha) * cross-entropy against the labels. T^2 keeps the soft
 * term's gradients at the scale of the hard one's as T grows. `targets` are int32 class
 * indices [...] for logits [..., C]; averaged over rows (NaN when no row is left: an empty batch, or every target
 * `ignoreIndex`, as torch's cross_entropy gives).
 */
export function distillationLoss(studentLogits: Tensor, teacherLogits: Tensor, targets: Tensor, options: DistillationOptions = {}): Tensor {
  const { temperature = 2, alpha = 0.5, ignoreIndex } = optionsArg("distillationLoss", options, ["temperature", "alpha", "ignoreIndex"]);
  checkLogits("distillationLoss", studentLogits, teacherLogits);
  checkTemperature("distillationLoss", temperature);
  if (typeof alpha !== "number" || !(alpha >= 0 && alpha <= 1)) throw new ValueError(`distillationLoss: alpha must be in [0, 1], got ${formatArg(alpha)}`);
  if (ignoreIndex !== undefined && !(Number.isInteger(ignoreIndex) && ignoreIndex >= -(2 ** 31) && ignoreIndex < 2 ** 31)) {
    throw new ValueError(`distillationLoss: ignoreIndex must be an int32 (e.g. -100), got ${formatArg(ignoreIndex)}`);
  }
  // Checked whatever alpha is: with alpha = 1 (and no ignoreIndex) the targets are not read, and null or a wrong shape passed silently.
  if (!(targets instanceof Tensor)) throw new ValueError(`distillationLoss: targets must be a Tensor, got ${formatArg(targets)}`);
  const rows = studentLogits.shape.slice(0, -1);
  if (!shapesEqual(targets.shape, rows)) {
    throw new ShapeError(`distillationLoss: targets has shape [${targets.shape}], expected [${rows}] (the logits' rows)`);
  }
  if (targets.dtype !== "int32") throw new DTypeError(`distillationLoss: targets has dtype ${targets.dtype}, expected int32`);
  return tidy(() => {
    let kl: Tensor;
    if (ignoreIndex === undefined) {
      kl = klDivergence(studentLogits, teacherLogits, { temperature });
    } else {
      // The mean over the rows kept: their per-row KL summed, over their count.
      // Ignored rows are read as zeros (KL 0, no gradient), so that an inf or NaN they hold stays out, as the cross-entropy's does.
      const ignored = equal(targets, ignoreIndex);
      const masked = (logits: Tensor) => where(expandDims(ignored, -1), 0, logits);
      const perRow = klDivergence(masked(studentLogits), noGrad(() => masked(teacherLogits)), { temperature, reduction: "none" });
      kl = div(sum(perRow), sum(where(ignored, 0, 1)));
    }
    const soft = mul(kl, alpha * temperature * temperature);
    if (alpha === 1) return soft;
    const hard = crossEntropy(studentLogits, targets, ignoreIndex === undefined ? "mean" : { ignoreIndex });
    return add(soft, mul(hard, 1 - alpha));
  });
}
