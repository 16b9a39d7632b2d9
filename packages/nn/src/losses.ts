import { noGrad } from "@blocksparse/autograd";
import {
  abs,
  add,
  assertBoolean,
  BackendError,
  broadcastShapes,
  cast,
  type CrossEntropyOptions,
  crossEntropy as coreCrossEntropy,
  DTypeError,
  div,
  equal,
  exp,
  expandDims,
  formatArg,
  fullOn,
  gather,
  IndexError,
  log,
  logSoftmax,
  maximum,
  mean,
  minimum,
  mul,
  neg,
  oneHot,
  optionsArg,
  type Reduction,
  reshape,
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
 * padding, or a class such as a tokenizer's pad id) are left out of the loss, its mean and the gradient; none is by
 * default (torch's default is -100: here a target -100 without `ignoreIndex` is an IndexError). As in torch,
 * "mean" is NaN when no row is left (an empty batch, or every target ignored) and "sum" is 0. Also torch's
 * `labelSmoothing` and `weight` (float [C] class weights: each row times weight[target], "mean" divided by the sum of
 * weight[target] over the rows kept), and float targets of the logits' shape as class probabilities (core's
 * crossEntropy documents each).
 */
export function crossEntropy(logits: Tensor, targets: Tensor, options: Reduction | CrossEntropyOptions = "mean"): Tensor {
  return coreCrossEntropy(logits, targets, options);
}

const REDUCTIONS: readonly Reduction[] = ["mean", "sum", "none"];

/** A loss's third argument: the reduction alone, or its options object (unknown names refused). */
function lossOptions<T extends { reduction?: string }>(op: string, options: string | T | null | undefined, names: readonly (keyof T & string)[]): T {
  return typeof options === "string" ? ({ reduction: options } as T) : optionsArg(op, options, names);
}

function reductionArg<R extends string>(op: string, reduction: unknown, allowed: readonly R[]): R {
  if (!allowed.includes(reduction as R)) {
    throw new ValueError(`${op}: reduction must be ${allowed.map((r) => `"${r}"`).join(", ")}, got ${formatArg(reduction)}`);
  }
  return reduction as R;
}

function reduced(loss: Tensor, reduction: Reduction): Tensor {
  if (reduction === "none") return loss;
  return reduction === "sum" ? sum(loss) : mean(loss);
}

/** Two float tensors of one shape on one backend, named `names` in the errors. */
function checkPair(op: string, names: readonly [string, string], a: Tensor, b: Tensor): void {
  if (!(a instanceof Tensor) || !(b instanceof Tensor)) throw new ValueError(`${op}: ${names[0]} and ${names[1]} must be Tensors, got ${formatArg(a)} and ${formatArg(b)}`);
  if (!shapesEqual(a.shape, b.shape)) throw new ShapeError(`${op}: ${names[0]} has shape [${a.shape}] but ${names[1]} has [${b.shape}]`);
  for (const [name, t] of [[names[0], a], [names[1], b]] as const) {
    if (!t.isFloat) throw new DTypeError(`${op}: ${name} has dtype ${t.dtype}, expected a float dtype`);
  }
  if (a.backend !== b.backend) throw new BackendError(`${op}: ${names[1]} is on backend '${b.backend.name}' but ${names[0]} is on '${a.backend.name}'`);
}

/** An optional float tensor (a weight) that broadcasts to `shape` on `like`'s backend; null (torch's None) is none. */
function checkWeight(op: string, name: string, weight: Tensor | null | undefined, shape: readonly number[], like: Tensor): void {
  if (weight == null) return;
  if (!(weight instanceof Tensor)) throw new ValueError(`${op}: ${name} must be a Tensor, got ${formatArg(weight)}`);
  if (!weight.isFloat) throw new DTypeError(`${op}: ${name} has dtype ${weight.dtype}, expected a float dtype`);
  if (weight.backend !== like.backend) throw new BackendError(`${op}: ${name} is on backend '${weight.backend.name}' but the input is on '${like.backend.name}'`);
  let broadcast: number[] | undefined;
  try {
    broadcast = broadcastShapes(weight.shape, shape);
  } catch {
    // Reported below with the loss's name.
  }
  if (broadcast === undefined || !shapesEqual(broadcast, shape)) throw new ShapeError(`${op}: ${name} has shape [${weight.shape}], which does not broadcast to the input's [${shape}]`);
}

/** Mean squared error between same-shape tensors, averaged by default; in float32 for float16/bfloat16 inputs. */
export function mseLoss(pred: Tensor, target: Tensor, options: Reduction | { reduction?: Reduction } = "mean"): Tensor {
  const { reduction = "mean" } = lossOptions("mseLoss", options, ["reduction"]);
  checkPair("mseLoss", ["pred", "target"], pred, target);
  reductionArg("mseLoss", reduction, REDUCTIONS);
  return tidy(() => reduced(square(sub(widened(pred), widened(target))), reduction));
}

/** Mean absolute error between same-shape tensors (torch's l1_loss), averaged by default; in float32 for float16/bfloat16 inputs. */
export function l1Loss(pred: Tensor, target: Tensor, options: Reduction | { reduction?: Reduction } = "mean"): Tensor {
  const { reduction = "mean" } = lossOptions("l1Loss", options, ["reduction"]);
  checkPair("l1Loss", ["pred", "target"], pred, target);
  reductionArg("l1Loss", reduction, REDUCTIONS);
  return tidy(() => reduced(abs(sub(widened(pred), widened(target))), reduction));
}

export interface SmoothL1LossOptions {
  reduction?: Reduction;
  /** Where the loss turns from quadratic to linear: a number >= 0 (default 1); 0 is the L1 loss, as torch's. */
  beta?: number;
}

/**
 * torch's smooth_l1_loss: 0.5 d^2 / beta where |d| < beta, |d| - 0.5 beta elsewhere (d = pred - target), averaged
 * by default; in float32 for float16/bfloat16 inputs. beta 0 is the L1 loss.
 */
export function smoothL1Loss(pred: Tensor, target: Tensor, options: Reduction | SmoothL1LossOptions = {}): Tensor {
  const { reduction = "mean", beta = 1 } = lossOptions("smoothL1Loss", options, ["reduction", "beta"]);
  checkPair("smoothL1Loss", ["pred", "target"], pred, target);
  reductionArg("smoothL1Loss", reduction, REDUCTIONS);
  if (typeof beta !== "number" || !(beta >= 0)) throw new ValueError(`smoothL1Loss: beta must be a number >= 0, got ${formatArg(beta)}`);
  return tidy(() => {
    const distance = abs(sub(widened(pred), widened(target)));
    if (beta === 0) return reduced(distance, reduction);
    // 0.5 q^2 / beta + (|d| - q) with q = min(|d|, beta): both pieces without a where, so that neither branch's
    // inf (d^2 past float32's range) meets a zero gradient.
    const inner = minimum(distance, beta);
    return reduced(add(div(mul(square(inner), 0.5), beta), sub(distance, inner)), reduction);
  });
}

export interface HuberLossOptions {
  reduction?: Reduction;
  /** Where the loss turns from quadratic to linear: a number > 0 (default 1). */
  delta?: number;
}

/**
 * torch's huber_loss: 0.5 d^2 where |d| <= delta, delta (|d| - 0.5 delta) elsewhere (d = pred - target), averaged by
 * default; in float32 for float16/bfloat16 inputs. It is delta times smoothL1Loss with beta = delta.
 */
export function huberLoss(pred: Tensor, target: Tensor, options: Reduction | HuberLossOptions = {}): Tensor {
  const { reduction = "mean", delta = 1 } = lossOptions("huberLoss", options, ["reduction", "delta"]);
  checkPair("huberLoss", ["pred", "target"], pred, target);
  reductionArg("huberLoss", reduction, REDUCTIONS);
  if (typeof delta !== "number" || !(delta > 0)) throw new ValueError(`huberLoss: delta must be a number > 0, got ${formatArg(delta)}`);
  return tidy(() => {
    const difference = sub(widened(pred), widened(target));
    if (delta === Number.POSITIVE_INFINITY) return reduced(mul(square(difference), 0.5), reduction);
    const distance = abs(difference);
    // 0.5 q^2 + delta (|d| - q) with q = min(|d|, delta), as in smoothL1Loss.
    const inner = minimum(distance, delta);
    return reduced(add(mul(square(inner), 0.5), mul(sub(distance, inner), delta)), reduction);
  });
}

export interface NllLossOptions {
  reduction?: Reduction;
  /** Rows whose target is this int32 are left out of the loss, its mean and the gradient (default -100, as torch's). */
  ignoreIndex?: number;
  /** A float weight per class [C] (torch's weight): each row's loss is scaled by its target's weight. null: none. */
  weight?: Tensor | null;
}

/**
 * torch's nll_loss with the classes on the last dim: -weight[t] * logProbs[..., t] for each row of logProbs [..., C]
 * and its int32 target t [...]. "mean" divides the sum by the summed weights of the rows kept (their count without a
 * weight): NaN when no row is kept, as torch's; "sum" is then 0. Rows whose target is `ignoreIndex` (default -100, as
 * torch's; crossEntropy ignores no target unless given one) add 0 and get no gradient. A target outside [0, C) that is
 * not ignored is an IndexError. float32 result; float16/bfloat16 inputs are read in float32.
 */
export function nllLoss(logProbs: Tensor, targets: Tensor, options: Reduction | NllLossOptions = {}): Tensor {
  const { reduction = "mean", ignoreIndex = -100, weight } = lossOptions("nllLoss", options, ["reduction", "ignoreIndex", "weight"]);
  if (!(logProbs instanceof Tensor)) throw new ValueError(`nllLoss: logProbs must be a Tensor, got ${formatArg(logProbs)}`);
  if (!(targets instanceof Tensor)) throw new ValueError(`nllLoss: targets must be a Tensor, got ${formatArg(targets)}`);
  if (!logProbs.isFloat) throw new DTypeError(`nllLoss: logProbs has dtype ${logProbs.dtype}, expected a float dtype`);
  if (logProbs.rank === 0 || logProbs.shape[logProbs.rank - 1] === 0) {
    throw new ShapeError(`nllLoss: logProbs has shape [${logProbs.shape}], expected [..., C] with C >= 1 classes`);
  }
  const classes = logProbs.shape[logProbs.rank - 1];
  const rows = logProbs.shape.slice(0, -1);
  if (!shapesEqual(targets.shape, rows)) throw new ShapeError(`nllLoss: targets has shape [${targets.shape}], expected [${rows}] (logProbs' rows)`);
  if (targets.dtype !== "int32") throw new DTypeError(`nllLoss: targets has dtype ${targets.dtype}, expected int32 class indices`);
  if (targets.backend !== logProbs.backend) throw new BackendError(`nllLoss: targets is on backend '${targets.backend.name}' but logProbs is on '${logProbs.backend.name}'`);
  reductionArg("nllLoss", reduction, REDUCTIONS);
  if (typeof ignoreIndex !== "number" || !Number.isInteger(ignoreIndex) || ignoreIndex < -(2 ** 31) || ignoreIndex >= 2 ** 31) {
    throw new ValueError(`nllLoss: ignoreIndex must be an int32 (e.g. -100), got ${formatArg(ignoreIndex)}`);
  }
  checkWeight("nllLoss", "weight", weight, [classes], logProbs);
  if (weight != null && !shapesEqual(weight.shape, [classes])) {
    throw new ShapeError(`nllLoss: weight has shape [${weight.shape}], expected [${classes}] (one per class)`);
  }
  return tidy(() => {
    const flatTargets = reshape(targets, [-1]);
    const ignored = equal(flatTargets, ignoreIndex);
    const classOf = where(ignored, 0, flatTargets);
    // The gather checks each kept target against [0, C) (an ignored one reads class 0 and is zeroed below).
    const classWeights = weight == null ? fullOn(logProbs.backend, [classes], 1) : cast(weight, "float32");
    let rowWeights: Tensor;
    try {
      rowWeights = where(ignored, 0, gather(classWeights, classOf));
    } catch (error) {
      if (!(error instanceof IndexError)) throw error;
      throw new IndexError(`nllLoss: a target is outside [0, ${classes}) and is not ignoreIndex ${ignoreIndex} (${error.message})`);
    }
    // A where, not a product with the one-hot rows: another class's log-probability may be -inf.
    const picked = sum(where(oneHot(classOf, classes, "int32"), reshape(widened(logProbs), [-1, classes]), 0), -1);
    const rowLosses = where(ignored, 0, mul(neg(picked), rowWeights));
    if (reduction === "none") return reshape(rowLosses, rows);
    if (reduction === "sum") return sum(rowLosses);
    return div(sum(rowLosses), sum(rowWeights));
  });
}

export interface BinaryCrossEntropyOptions {
  reduction?: Reduction;
  /** A float weight of each element, broadcast to the input's shape (torch's weight). null: none. */
  weight?: Tensor | null;
}

export interface BinaryCrossEntropyWithLogitsOptions extends BinaryCrossEntropyOptions {
  /** A float weight of the positive term, broadcast to the input's shape: [C] for [..., C] (torch's pos_weight). null: none. */
  posWeight?: Tensor | null;
}

/**
 * log(1 + u) for u in [0, 1], to float32's relative precision also where 1 + u rounds to 1 (torch's log1p). The
 * gradient is log(1 + u)'s own, 1 / (1 + u); the correction is a constant.
 */
function log1p(u: Tensor): Tensor {
  const onePlus = add(u, 1);
  const rounded = log(onePlus);
  // log(w) u / (w - 1) with w = 1 + u rounded: exact where w - 1 is (the rounding cancels), u itself where w is 1.
  const correction = noGrad(() => sub(where(equal(onePlus, 1), u, div(mul(rounded, u), sub(onePlus, 1))), rounded));
  return add(rounded, correction);
}

/**
 * torch's binary_cross_entropy_with_logits: -w [p y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))] for logits x and
 * targets y in [0, 1] of one shape, with p the `posWeight` (1 without). Computed as max(x, 0) - x y + (p - 1) y
 * max(-x, 0) + (1 + (p - 1) y) log1p(exp(-|x|)), finite and accurate for any finite logit. Averaged by default;
 * float32 result, float16/bfloat16 inputs read in float32.
 */
export function binaryCrossEntropyWithLogits(logits: Tensor, targets: Tensor, options: Reduction | BinaryCrossEntropyWithLogitsOptions = {}): Tensor {
  const op = "binaryCrossEntropyWithLogits";
  const { reduction = "mean", weight, posWeight } = lossOptions(op, options, ["reduction", "weight", "posWeight"]);
  checkPair(op, ["logits", "targets"], logits, targets);
  reductionArg(op, reduction, REDUCTIONS);
  checkWeight(op, "weight", weight, logits.shape, logits);
  checkWeight(op, "posWeight", posWeight, logits.shape, logits);
  return tidy(() => {
    const x = widened(logits);
    const y = widened(targets);
    const softTail = log1p(exp(neg(abs(x))));
    let loss = sub(maximum(x, 0), mul(x, y));
    if (posWeight == null) {
      loss = add(loss, softTail);
    } else {
      const extra = mul(sub(cast(posWeight, "float32"), 1), y);
      loss = add(add(loss, mul(extra, maximum(neg(x), 0))), mul(add(extra, 1), softTail));
    }
    if (weight != null) loss = mul(loss, cast(weight, "float32"));
    return reduced(loss, reduction);
  });
}

/**
 * torch's binary_cross_entropy: -w [y log(p) + (1 - y) log(1 - p)] for probabilities p and targets y of one shape,
 * each log clamped to >= -100 as torch's (so p = 0 or 1 gives a finite loss). The gradient in p is torch's,
 * w (p - y) / max(p (1 - p), 1e-12), finite at p = 0 and 1. Averaged by default; float32 result, float16/bfloat16
 * inputs read in float32. Probabilities outside [0, 1] give NaN (torch refuses them, which needs a read of the values).
 */
export function binaryCrossEntropy(probs: Tensor, targets: Tensor, options: Reduction | BinaryCrossEntropyOptions = {}): Tensor {
  const op = "binaryCrossEntropy";
  const { reduction = "mean", weight } = lossOptions(op, options, ["reduction", "weight"]);
  checkPair(op, ["probs", "targets"], probs, targets);
  reductionArg(op, reduction, REDUCTIONS);
  checkWeight(op, "weight", weight, probs.shape, probs);
  return tidy(() => {
    const p = widened(probs);
    const y = widened(targets);
    const w = weight == null ? undefined : cast(weight, "float32");
    const weighted = (t: Tensor) => (w === undefined ? t : mul(t, w));
    // The value, and the gradient of the targets (and weight); p reaches it as a constant.
    const [logP, logNotP, pGrad] = noGrad(() => {
      const clampedLog = (t: Tensor) => maximum(log(t), -100);
      const grad = weighted(div(sub(p, y), maximum(mul(p, sub(1, p)), 1e-12)));
      return [clampedLog(p), clampedLog(sub(1, p)), grad];
    });
    const loss = weighted(neg(add(mul(y, logP), mul(sub(1, y), logNotP))));
    // p's gradient, torch's: a term worth 0 whose derivative in p is pGrad.
    const pTerm = sub(mul(p, pGrad), noGrad(() => mul(p, pGrad)));
    return reduced(add(loss, pTerm), reduction);
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

export interface KlDivOptions {
  /**
   * torch's kl_div reductions: "mean" (default) averages over every element, as torch's (which warns that it is not
   * the KL's mean); "batchmean" is the sum over shape[0] (the KL's mean over a batch of [N, C] rows); "sum"; "none"
   * keeps each element's term.
   */
  reduction?: Reduction | "batchmean";
  /** The target holds log-probabilities rather than probabilities (default false), as torch's log_target. */
  logTarget?: boolean;
}

/**
 * torch's kl_div: the KL divergence of `input`'s distribution from `target`'s, elementwise target (log target -
 * input), where `input` holds log-probabilities and `target` probabilities (log-probabilities with `logTarget`), of
 * one shape. Gradients reach both. Where the target's probability is 0 (a target 0, or -inf with `logTarget`) the term
 * is 0 with no gradient, as 0 log 0 = 0, also where the input is -inf there (torch's gives NaN where the input is -inf,
 * and for every -inf log target). A negative probability gives NaN, as torch's. float32 result, float16/bfloat16
 * inputs read in float32. For two logit tensors at a temperature (distillation), see {@link klDivergence}.
 */
export function klDiv(input: Tensor, target: Tensor, options: Reduction | "batchmean" | KlDivOptions = {}): Tensor {
  const { reduction = "mean", logTarget = false } = lossOptions("klDiv", options, ["reduction", "logTarget"]);
  checkPair("klDiv", ["input", "target"], input, target);
  reductionArg("klDiv", reduction, ["mean", "batchmean", "sum", "none"] as const);
  assertBoolean("klDiv", "logTarget", logTarget);
  return tidy(() => {
    const x = widened(input);
    const t = widened(target);
    const absent = equal(t, logTarget ? Number.NEGATIVE_INFINITY : 0);
    // Where the target's probability is 0, both operands are replaced by finite ones (the term is zeroed below), so
    // that no 0 * inf reaches the value or the gradient.
    const safeTarget = where(absent, logTarget ? 0 : 1, t);
    const safeInput = where(absent, 0, x);
    const terms = logTarget ? mul(exp(safeTarget), sub(safeTarget, safeInput)) : mul(safeTarget, sub(log(safeTarget), safeInput));
    const loss = where(absent, 0, terms);
    if (reduction === "batchmean") return input.rank === 0 ? sum(loss) : div(sum(loss), input.shape[0]);
    return reduced(loss, reduction);
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
