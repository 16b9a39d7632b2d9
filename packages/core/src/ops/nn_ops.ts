import { engine } from "../engine";
import { BackendError, DTypeError, IndexError, ShapeError, ValueError } from "../errors";
import {
  AdamUpdate,
  Attention,
  AttentionBackward,
  type AttentionAttrs,
  CachedAttention,
  CrossEntropy,
  type CrossEntropyAttrs,
  CrossEntropyBackward,
  LayerNorm,
  LayerNormBackward,
  LogSoftmax,
  MultiTensorAdamUpdate,
  type MultiTensorAdamUpdateAttrs,
  PackedAttention,
  PackedAttentionBackward,
  Softmax,
  SoftmaxBackward,
} from "../kernel_names";
import { type DType, isDType, isFloatDType } from "../dtypes";
import { checkScalarAxes, formatShape, shapesEqual } from "../shape";
import { Tensor } from "../tensor";
import { add, div, equal, mul, notEqual, where } from "./elementwise";
import { mean, sum } from "./reduce";
import { cast, gather, indexCopy, reshape, transpose } from "./shape_ops";
import {
  assertBoolean,
  assertDType,
  assertFiniteNumber,
  assertFloat,
  assertMinRank,
  assertRank,
  assertSameBackend,
  assertSameDType,
  assertShape,
  assertTensor,
  axisArg,
  formatArg,
  optionsArg,
} from "./validate";

/** Options of softmax and logSoftmax. */
export interface SoftmaxOptions {
  /**
   * Causal masking over x's last two axes [m, n] (m <= n, `axis` the last): row i keeps only the
   * entries j <= i + n - m and gives exactly 0 (logSoftmax: -Infinity) at the others, as if they held
   * -Infinity. With m = n that is attention's causal mask; with m < n the m queries are the last m of
   * n positions (decoding with a cache). One pass: no mask tensor is made or added.
   */
  causal?: boolean;
}

/** Causal masking's shape rule: rank >= 2 and no more rows than columns in the last two axes. */
function checkCausalShape(op: string, name: string, t: Tensor): void {
  assertMinRank(op, name, t, 2);
  const m = t.shape[t.rank - 2];
  const n = t.shape[t.rank - 1];
  if (m > n) {
    throw new ShapeError(`${op}: causal masking needs no more rows than columns in ${name}'s last two axes, got ${name} ${formatShape(t.shape)} (${m} > ${n})`);
  }
}

function alongAxis(kernel: typeof Softmax | typeof LogSoftmax, op: string, x: Tensor, axisGiven: number | null | undefined, options: SoftmaxOptions | null | undefined): Tensor {
  assertTensor(op, "x", x);
  assertFloat(op, "x", x);
  const axis = axisGiven ?? -1;
  // A scalar's axes are those of [1], as torch's: softmax of a scalar is 1, logSoftmax 0 (NaN for a NaN or an infinity).
  if (x.rank === 0) checkScalarAxes(axis, op);
  const ax = axisArg(op, axis, Math.max(x.rank, 1));
  const causal = optionsArg(op, options, ["causal"]).causal ?? false;
  assertBoolean(op, "causal", causal);
  if (causal) {
    if (ax !== Math.max(x.rank, 1) - 1) throw new ValueError(`${op}: causal masking works along the last axis, got axis=${axis} for x ${formatShape(x.shape)}`);
    checkCausalShape(op, "x", x);
  }
  if (x.rank === 0) return engine.tidy(() => reshape(engine.runKernel(kernel, { x: reshape(x, [1]) }, { causal: false }), []));
  if (ax === x.rank - 1) return engine.runKernel(kernel, { x }, { causal });
  // Kernels work on the last axis: move `axis` there and back.
  const perm = x.shape.map((_, i) => i);
  perm[ax] = x.rank - 1;
  perm[x.rank - 1] = ax;
  return engine.tidy(() => transpose(engine.runKernel(kernel, { x: transpose(x, perm) }, { causal: false }), perm));
}

/** softmax along `axis` (default or null: the last), numerically stable; `options.causal` masks causally in the same pass. */
export function softmax(x: Tensor, axis?: number | null, options?: SoftmaxOptions | null): Tensor {
  return alongAxis(Softmax, "softmax", x, axis, options);
}

/** log(softmax(x)) along `axis` (default or null: the last), as x - max - log(sum(exp(x - max))); `options.causal` as softmax's. */
export function logSoftmax(x: Tensor, axis?: number | null, options?: SoftmaxOptions | null): Tensor {
  return alongAxis(LogSoftmax, "logSoftmax", x, axis, options);
}

/**
 * The gradient of softmax (or, with `options.log`, of logSoftmax) along the last axis from its output y and the
 * output's gradient dy, in one kernel: y * (dy - sum(dy * y)) (log: dy - exp(y) * sum(dy)), sums in float32.
 * `options.causal` as the forward's: the masked entries get 0. What autograd runs for softmax's gradient.
 */
export function softmaxBackward(dy: Tensor, y: Tensor, options?: { log?: boolean; causal?: boolean } | null): Tensor {
  const op = "softmaxBackward";
  assertTensor(op, "dy", dy);
  assertTensor(op, "y", y);
  assertFloat(op, "y", y);
  assertMinRank(op, "y", y, 1);
  assertSameBackend(op, [["dy", dy], ["y", y]]);
  assertSameDType(op, ["dy", "y"], dy, y);
  assertShape(op, "dy", dy, y.shape);
  const checked = optionsArg(op, options, ["log", "causal"]);
  const log = checked.log ?? false;
  const causal = checked.causal ?? false;
  assertBoolean(op, "log", log);
  assertBoolean(op, "causal", causal);
  if (causal) checkCausalShape(op, "y", y);
  return engine.runKernel(SoftmaxBackward, { dy, y }, { log, causal });
}

export interface LayerNormResult {
  y: Tensor;
  /** float32, shape x.shape[:-1]. */
  mean: Tensor;
  /** float32 1 / sqrt(var + epsilon), shape x.shape[:-1]. */
  rstd: Tensor;
}

function checkLayerNorm(op: string, x: Tensor, gamma: Tensor | undefined, beta: Tensor | undefined, epsilon: number): void {
  assertTensor(op, "x", x);
  assertFloat(op, "x", x);
  assertMinRank(op, "x", x, 1);
  const features = x.shape[x.rank - 1];
  for (const [name, t] of [["gamma", gamma], ["beta", beta]] as const) {
    if (t === undefined) continue;
    assertTensor(op, name, t);
    assertSameDType(op, ["x", name], x, t);
    if (t.rank !== 1 || t.shape[0] !== features) {
      throw new ShapeError(`${op}: ${name} has shape ${formatShape(t.shape)}, expected [${features}] (x's last dim)`);
    }
  }
  assertSameBackend(op, [["x", x], ["gamma", gamma], ["beta", beta]]);
  assertFiniteNumber(op, "epsilon", epsilon);
  if (epsilon < 0) throw new ValueError(`${op}: epsilon must be >= 0, got ${epsilon}`);
}

/** Layer normalisation over the last axis, with its saved statistics (for the backward). */
export function layerNormWithStats(x: Tensor, gamma?: Tensor | null, beta?: Tensor | null, epsilon = 1e-5): LayerNormResult {
  // null is absent, as torch's None and biasActivation's null bias: the kernel and the gradient rule see no input.
  gamma ??= undefined;
  beta ??= undefined;
  checkLayerNorm("layerNorm", x, gamma, beta, epsilon);
  const [y, m, r] = engine.runKernel(LayerNorm, { x, gamma, beta }, { epsilon });
  return { y, mean: m, rstd: r };
}

/** Layer normalisation over the last axis: (x - mean) / sqrt(var + epsilon) * gamma + beta (each optional: undefined or null). */
export function layerNorm(x: Tensor, gamma?: Tensor | null, beta?: Tensor | null, epsilon = 1e-5): Tensor {
  const { y, mean: m, rstd } = layerNormWithStats(x, gamma, beta, epsilon);
  m.dispose();
  rstd.dispose();
  return y;
}

export interface LayerNormGrads {
  dx: Tensor;
  dgamma: Tensor;
  dbeta: Tensor;
}

/** Gradients of layerNorm from its saved mean/rstd. */
export function layerNormBackward(dy: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, gamma?: Tensor | null): LayerNormGrads {
  const op = "layerNormBackward";
  gamma ??= undefined;
  checkLayerNorm(op, x, gamma, undefined, 0);
  assertTensor(op, "dy", dy);
  assertSameDType(op, ["dy", "x"], dy, x);
  assertShape(op, "dy", dy, x.shape);
  for (const [name, t] of [["mean", mean], ["rstd", rstd]] as const) {
    assertTensor(op, name, t);
    assertDType(op, name, t, "float32");
    assertShape(op, name, t, x.shape.slice(0, -1));
  }
  assertSameBackend(op, [["dy", dy], ["x", x], ["mean", mean], ["rstd", rstd], ["gamma", gamma]]);
  const [dx, dgamma, dbeta] = engine.runKernel(LayerNormBackward, { dy, x, mean, rstd, gamma }, {});
  return { dx, dgamma, dbeta };
}

/**
 * logits [..., C] (float) and int32 class indices [...] as targets; where `probabilities` (crossEntropy), targets of
 * the logits' own shape are torch's class probabilities instead, and must be float (torch tells the two by shape).
 * Returns whether the targets are probabilities.
 */
function checkCrossEntropy(op: string, logits: Tensor, targets: Tensor, probabilities = false): boolean {
  assertTensor(op, "logits", logits);
  assertTensor(op, "targets", targets);
  assertSameBackend(op, [["logits", logits], ["targets", targets]]);
  assertFloat(op, "logits", logits);
  if (probabilities && logits.rank >= 1 && shapesEqual(targets.shape, logits.shape)) {
    if (!isFloatDType(targets.dtype)) {
      throw new DTypeError(
        `${op}: targets has the logits' shape ${formatShape(logits.shape)} and dtype ${targets.dtype}: class probabilities must be a float tensor (class indices are int32 ${formatShape(logits.shape.slice(0, -1))})`,
      );
    }
    if (logits.shape[logits.rank - 1] === 0) throw new ShapeError(`${op}: logits has 0 classes`);
    return true;
  }
  if (targets.dtype !== "int32") {
    const more = probabilities && logits.rank >= 1 ? ` (class indices; class probabilities are a float tensor of the logits' shape ${formatShape(logits.shape)})` : "";
    throw new DTypeError(`${op}: targets has dtype ${targets.dtype}, expected int32${more}`);
  }
  assertMinRank(op, "logits", logits, 1);
  const lead = logits.shape.slice(0, -1);
  if (targets.rank !== lead.length || targets.shape.some((d, i) => d !== lead[i])) {
    throw new ShapeError(
      `${op}: targets has shape ${formatShape(targets.shape)}, expected ${formatShape(lead)} (logits ${formatShape(logits.shape)} without its class dim)`,
    );
  }
  if (logits.shape[logits.rank - 1] === 0) throw new ShapeError(`${op}: logits has 0 classes`);
  return false;
}

/** crossEntropy's `weight`: a float tensor [C] on the logits' backend, or null for none. */
function checkClassWeight(op: string, weight: unknown, logits: Tensor): Tensor | null {
  if (weight === undefined || weight === null) return null;
  assertTensor(op, "weight", weight);
  assertFloat(op, "weight", weight);
  const classes = logits.shape[logits.rank - 1];
  if (weight.rank !== 1 || weight.shape[0] !== classes) {
    throw new ShapeError(`${op}: weight has shape ${formatShape(weight.shape)}, expected [${classes}] (one per class of logits ${formatShape(logits.shape)})`);
  }
  assertSameBackend(op, [["logits", logits], ["weight", weight]]);
  return weight;
}

/** t in float32: itself when it is (no copy), else a cast (differentiable: its gradient comes back in t's dtype). */
function asFloat32(t: Tensor): Tensor {
  return t.dtype === "float32" ? t : cast(t, "float32");
}

export type Reduction = "mean" | "sum" | "none";

/** Options of crossEntropy (and crossEntropyBackward's `ignoreIndex`). */
export interface CrossEntropyOptions {
  /**
   * "mean" (default), "sum" or "none" (the float32 loss of each row). With `weight` and class indices, "mean" divides
   * by the sum of weight[target] over the rows kept, not by their count (torch's rule).
   */
  reduction?: Reduction;
  /**
   * A target value that leaves its row out (torch's `ignore_index`; Hugging Face's labels use -100 for padding, and a
   * tokenizer's pad id is a class, e.g. 0): the row's loss and gradient are 0, and "mean" averages over the other rows
   * (NaN when none is left, as in torch). Any int32; none by default, unlike torch's -100: without ignoreIndex a
   * target -100 is an IndexError, as any other outside [0, C). Class probabilities have no row to leave out:
   * there a negative one (torch's default -100) changes nothing and a class (>= 0) is a ValueError, as in torch.
   */
  ignoreIndex?: number;
  /**
   * torch's `label_smoothing`, in [0, 1] (default 0): the target of each row is (1 - labelSmoothing) on its class
   * plus labelSmoothing spread evenly over the C classes, so each row's loss is (1 - labelSmoothing) times its cross-
   * entropy plus labelSmoothing times the mean over the classes of -log softmax(logits), in float32. Rows left out by
   * ignoreIndex stay 0. With `weight` each class's term of that mean is weighted too (torch's formula: the row's
   * loss is (1 - labelSmoothing) w[t] (-log p_t) + (labelSmoothing / C) sum_c w_c (-log p_c)). Class probabilities p
   * become (1 - labelSmoothing) p + labelSmoothing / C. crossEntropy only (crossEntropyBackward is the plain rule).
   */
  labelSmoothing?: number;
  /**
   * torch's `weight`: a float tensor [C] of class weights on the logits' backend (any float dtype, read in float32),
   * or null/undefined for none. With class indices each row's loss is multiplied by weight[target]; with class
   * probabilities the loss of a row is -sum_c weight_c p_c log softmax(logits)_c. Differentiable (gradients reach
   * weight too).
   */
  weight?: Tensor | null;
}

/** crossEntropy's third argument, a reduction or options, as options (checked). */
function crossEntropyOptions(
  op: string,
  options: Reduction | CrossEntropyOptions | null | undefined,
): { reduction: Reduction; attrs: CrossEntropyAttrs; labelSmoothing: number; weight: unknown } {
  const {
    reduction = "mean",
    ignoreIndex,
    labelSmoothing = 0,
    weight,
  } = typeof options === "string" ? { reduction: options } : optionsArg(op, options, ["reduction", "ignoreIndex", "labelSmoothing", "weight"]);
  if (reduction !== "mean" && reduction !== "sum" && reduction !== "none") {
    throw new ValueError(`${op}: reduction must be "mean", "sum" or "none", got ${formatArg(reduction)}`);
  }
  if (typeof labelSmoothing !== "number" || !(labelSmoothing >= 0 && labelSmoothing <= 1)) {
    throw new ValueError(`${op}: labelSmoothing must be a number in [0, 1], got ${formatArg(labelSmoothing)}`);
  }
  return { reduction, attrs: ignoreIndexAttrs(op, ignoreIndex), labelSmoothing, weight };
}

function ignoreIndexAttrs(op: string, ignoreIndex: number | undefined): CrossEntropyAttrs {
  if (ignoreIndex === undefined) return {};
  if (!Number.isInteger(ignoreIndex) || ignoreIndex >= 2 ** 31 || ignoreIndex < -(2 ** 31)) {
    throw new ValueError(`${op}: ignoreIndex must be an int32 (e.g. -100, or a pad id), got ${formatArg(ignoreIndex)}`);
  }
  return { ignoreIndex };
}

/**
 * The kernels leave out rows whose target is a negative ignoreIndex (a class is never out of range there). A class
 * given as ignoreIndex is moved out of range first: those targets become LEFT_OUT, which the kernels then leave out,
 * and a target of -2^31 itself becomes -2^31 + 1, which they report out of range (it was left out, unnoticed).
 */
const LEFT_OUT = -(2 ** 31);
function kernelTargets(targets: Tensor, attrs: CrossEntropyAttrs): [Tensor, CrossEntropyAttrs] {
  if (attrs.ignoreIndex === undefined || attrs.ignoreIndex < 0) return [targets, attrs];
  return [where(equal(targets, attrs.ignoreIndex), LEFT_OUT, where(equal(targets, LEFT_OUT), LEFT_OUT + 1, targets)), { ignoreIndex: LEFT_OUT }];
}

/**
 * Cross-entropy from logits [..., C] and targets (torch.nn.functional.cross_entropy with the classes on the last
 * dim), averaged ("mean", default), summed, or kept per row ("none"). The targets are either
 * - int32 class indices [...]: per row logsumexp(logits) - logits[target], in one kernel; or
 * - class probabilities, a float tensor of the logits' shape [..., C]: per row -sum_c p_c log softmax(logits)_c,
 *   "mean" dividing by the number of rows (torch's rule for probabilities).
 *
 * The loss is float32 for every float dtype of the logits: float16/bfloat16 logits are read as they are and summed
 * in float32 (what torch.autocast does, without a float32 copy of the logits), and the gradient comes back in the
 * logits' dtype. The third argument is the reduction, or options (CrossEntropyOptions): `ignoreIndex` (rows left
 * out, as torch's ignore_index), `labelSmoothing` (torch's label_smoothing) and `weight` (torch's weight: class
 * weights [C]; with class indices "mean" divides by the sum of weight[target] over the rows kept). Options other
 * than ignoreIndex, and class probabilities, run as log-softmax, products and sums beside the kernel (in float32),
 * so they differentiate on every backend.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, options?: Reduction | CrossEntropyOptions | null): Tensor {
  const op = "crossEntropy";
  const probabilities = checkCrossEntropy(op, logits, targets, true);
  const { reduction, attrs, labelSmoothing, weight: weightOption } = crossEntropyOptions(op, options);
  const weight = checkClassWeight(op, weightOption, logits);
  if (probabilities) {
    // torch: a negative ignore_index (its default -100) changes nothing for probabilities; a class is refused.
    if (attrs.ignoreIndex !== undefined && attrs.ignoreIndex >= 0) {
      throw new ValueError(`${op}: ignoreIndex ${attrs.ignoreIndex} names a class, but class probabilities have no rows to leave out (torch refuses it too)`);
    }
    return probabilityCrossEntropy(logits, targets, reduction, labelSmoothing, weight);
  }
  const classes = logits.shape[logits.rank - 1];
  return engine.tidy(() => {
    const flatTargets = reshape(targets, [-1]);
    const flatLogits = reshape(logits, [-1, classes]);
    const [rowTargets, rowAttrs] = kernelTargets(flatTargets, attrs);
    let rows = engine.runKernel(CrossEntropy, { logits: flatLogits, targets: rowTargets }, rowAttrs);
    // The rows kept (1) and left out (0), made only where something reads them.
    const kept =
      attrs.ignoreIndex !== undefined && (weight !== null || labelSmoothing > 0 || reduction === "mean") ? notEqual(flatTargets, attrs.ignoreIndex) : null;
    // Each row's weight[target], 0 for a row left out (its target may be any int32: it reads class 0 instead).
    let rowWeights: Tensor | null = null;
    const classWeights = weight === null ? null : asFloat32(weight);
    if (classWeights !== null) {
      const picked = gather(classWeights, kept === null ? flatTargets : where(kept, flatTargets, 0));
      rowWeights = kept === null ? picked : where(kept, picked, 0);
      rows = mul(rows, rowWeights);
    }
    if (labelSmoothing > 0) {
      // torch's smoothing term, -mean_c log softmax (weighted: -sum_c w_c log softmax / C), in float32; a row left
      // out keeps 0 (where, not a product: its logits may be infinite).
      const logp = logSoftmax(asFloat32(flatLogits));
      const uniform =
        classWeights === null ? mul(mean(logp, -1), -labelSmoothing) : mul(sum(mul(logp, classWeights), -1), -labelSmoothing / classes);
      const smooth = kept === null ? uniform : where(kept, uniform, 0);
      rows = add(mul(rows, 1 - labelSmoothing), smooth);
    }
    if (reduction === "none") return reshape(rows, targets.shape);
    if (reduction === "sum") return sum(rows);
    // torch: the weighted mean over the rows kept, sum(rows) / sum(weight[target]).
    if (rowWeights !== null) return div(sum(rows), sum(rowWeights));
    if (kept === null) return mean(rows);
    // The mean over the rows kept: rows left out add 0 to the sum and nothing to the count.
    return div(sum(rows), sum(cast(kept, "float32")));
  });
}

/**
 * crossEntropy against class probabilities p (targets of the logits' shape), torch's formula in float32: per row
 * -sum_c w_c p_c log softmax(logits)_c, p first mixed with the uniform distribution by labelSmoothing; "mean" divides
 * by the number of rows (NaN for none).
 */
function probabilityCrossEntropy(logits: Tensor, targets: Tensor, reduction: Reduction, labelSmoothing: number, weight: Tensor | null): Tensor {
  const classes = logits.shape[logits.rank - 1];
  return engine.tidy(() => {
    const logp = logSoftmax(asFloat32(reshape(logits, [-1, classes])));
    let p = asFloat32(reshape(targets, [-1, classes]));
    if (labelSmoothing > 0) p = add(mul(p, 1 - labelSmoothing), labelSmoothing / classes);
    const terms = weight === null ? mul(logp, p) : mul(mul(logp, p), asFloat32(weight));
    const rows = mul(sum(terms, -1), -1);
    if (reduction === "none") return reshape(rows, logits.shape.slice(0, -1));
    if (reduction === "sum") return sum(rows);
    return div(sum(rows), rows.shape[0]);
  });
}

/**
 * Gradient of the per-row cross-entropy: (softmax(logits) - onehot(targets)) * dy, with
 * logits [N, C], targets [N] int32, dy [N] (the upstream gradient of each row's loss: float32, as crossEntropy's
 * rows are, or the logits' dtype, widened first), in the logits' dtype. Rows whose target is `ignoreIndex` get 0.
 */
export function crossEntropyBackward(logits: Tensor, targets: Tensor, dy: Tensor, options?: { ignoreIndex?: number } | null): Tensor {
  const op = "crossEntropyBackward";
  checkCrossEntropy(op, logits, targets);
  if (logits.rank !== 2) throw new ShapeError(`${op}: logits must be [N, C], got ${formatShape(logits.shape)}`);
  assertTensor(op, "dy", dy);
  assertSameBackend(op, [["logits", logits], ["dy", dy]]);
  if (dy.dtype !== "float32") assertSameDType(op, ["dy", "logits"], dy, logits);
  assertShape(op, "dy", dy, targets.shape);
  const attrs = ignoreIndexAttrs(op, optionsArg(op, options, ["ignoreIndex"]).ignoreIndex);
  return engine.tidy(() => {
    const [rowTargets, rowAttrs] = kernelTargets(targets, attrs);
    return engine.runKernel(CrossEntropyBackward, { logits, targets: rowTargets, dy: dy.dtype === "float32" ? dy : cast(dy, "float32") }, rowAttrs);
  });
}

/** Options of scaledDotProductAttention (and attentionWithStats, attentionBackward). */
export interface AttentionOptions {
  /**
   * Causal masking, softmax's rule (M <= N): query i of M keeps only the keys j <= i + N - M. With M = N that is a
   * decoder's mask; with M < N the queries are the last M of N positions (decoding with a cache).
   */
  causal?: boolean;
  /** The factor of the scores q k^T: any finite number, 0 and negative ones too, as PyTorch's (default 1 / sqrt(D)). */
  scale?: number;
}

export interface AttentionResult {
  /** [...batch, M, D], q's dtype. */
  out: Tensor;
  /** float32 [...batch, M]: the natural-log log-sum-exp of each row's kept scores (what the backward reads). */
  lse: Tensor;
}

/** The checks of the attention ops on q, k, v and the options; the kernel's attributes. */
function checkAttention(op: string, q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions | null | undefined): AttentionAttrs {
  assertTensor(op, "q", q);
  assertTensor(op, "k", k);
  assertTensor(op, "v", v);
  assertFloat(op, "q", q);
  assertSameDType(op, ["k", "q"], k, q);
  assertSameDType(op, ["v", "q"], v, q);
  assertSameBackend(op, [["q", q], ["k", k], ["v", v]]);
  assertMinRank(op, "q", q, 2);
  assertMinRank(op, "k", k, 2);
  assertShape(op, "v", v, k.shape);
  const batch = q.shape.slice(0, -2);
  if (!shapesEqual(batch, k.shape.slice(0, -2))) {
    throw new ShapeError(
      `${op}: q ${formatShape(q.shape)} and k ${formatShape(k.shape)} must have identical batch dims (all but the last two; no broadcasting), got ${formatShape(batch)} and ${formatShape(k.shape.slice(0, -2))}`,
    );
  }
  const m = q.shape[q.rank - 2];
  const n = k.shape[k.rank - 2];
  const d = q.shape[q.rank - 1];
  if (k.shape[k.rank - 1] !== d) {
    throw new ShapeError(`${op}: q ${formatShape(q.shape)} and k ${formatShape(k.shape)} must have the same last dim (the head dim D), got ${d} and ${k.shape[k.rank - 1]}`);
  }
  if (n === 0) throw new ShapeError(`${op}: k ${formatShape(k.shape)} has no keys: attention needs N >= 1 (k's second-to-last dim)`);
  if (d === 0) throw new ShapeError(`${op}: q ${formatShape(q.shape)} has head dim 0: attention needs D >= 1 (q's last dim)`);
  const attrs = attentionAttrs(op, d, options);
  if (attrs.causal && m > n) {
    throw new ShapeError(
      `${op}: causal masking needs no more queries than keys (rows than columns of the scores), got q ${formatShape(q.shape)} and k ${formatShape(k.shape)} (${m} > ${n})`,
    );
  }
  return attrs;
}

/** The attention ops' options, checked, for a head dim of d: the kernel's attributes. */
function attentionAttrs(op: string, d: number, options: AttentionOptions | null | undefined): AttentionAttrs {
  const checked = optionsArg(op, options, ["causal", "scale"]);
  const causal = checked.causal ?? false;
  assertBoolean(op, "causal", causal);
  const scale = checked.scale ?? 1 / Math.sqrt(d);
  // Any finite scale, as torch's scaled_dot_product_attention: 0 attends uniformly over the kept keys, a negative one
  // favours the least similar.
  assertFiniteNumber(op, "scale", scale);
  return { causal, scale };
}

/** scaledDotProductAttention with the float32 log-sum-exp of each row's scores (what its gradient reads). */
export function attentionWithStats(q: Tensor, k: Tensor, v: Tensor, options?: AttentionOptions | null): AttentionResult {
  const attrs = checkAttention("scaledDotProductAttention", q, k, v, options);
  const [out, lse] = engine.runKernel(Attention, { q, k, v }, attrs);
  return { out, lse };
}

/**
 * Attention in one kernel: softmax(scale * q k^T) v for q [...batch, M, D], k and v [...batch, N, D] (identical batch
 * dims, rank >= 2) -> [...batch, M, D]. `options.causal` masks as softmax's causal option (query i keeps the keys
 * j <= i + N - M, M <= N); `options.scale` defaults to 1 / sqrt(D). No [M, N] tensor is made: the gradient reads the
 * output and each row's float32 log-sum-exp and recomputes the scores (flash attention).
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, options?: AttentionOptions | null): Tensor {
  const { out, lse } = attentionWithStats(q, k, v, options);
  lse.dispose();
  return out;
}

/** The checks of the packed attention ops on qkv [...batch, T, 3, H, D] and the options; the kernel's attributes. */
function checkPackedAttention(op: string, qkv: Tensor, options: AttentionOptions | null | undefined): AttentionAttrs {
  assertTensor(op, "qkv", qkv);
  assertFloat(op, "qkv", qkv);
  assertMinRank(op, "qkv", qkv, 4);
  const [, parts, heads, d] = qkv.shape.slice(-4);
  if (parts !== 3) {
    throw new ShapeError(
      `${op}: qkv ${formatShape(qkv.shape)} must be [...batch, T, 3, H, D] (each position's queries, keys and values side by side), got ${parts} at dim -3 where 3 belongs`,
    );
  }
  if (heads === 0) throw new ShapeError(`${op}: qkv ${formatShape(qkv.shape)} has no heads: packed attention needs H >= 1 (qkv's dim -2)`);
  if (d === 0) throw new ShapeError(`${op}: qkv ${formatShape(qkv.shape)} has head dim 0: packed attention needs D >= 1 (qkv's last dim)`);
  return attentionAttrs(op, d, options);
}

/** packedAttention with the float32 log-sum-exp of each head's rows, lse [...batch, H, T] (what its gradient reads). */
export function packedAttentionWithStats(qkv: Tensor, options?: AttentionOptions | null): AttentionResult {
  const attrs = checkPackedAttention("packedAttention", qkv, options);
  const [out, lse] = engine.runKernel(PackedAttention, { qkv }, attrs);
  return { out, lse };
}

/**
 * Self-attention from one packed tensor, as flash-attention's `flash_attn_qkvpacked_func`: qkv [...batch, T, 3, H, D]
 * holds each position's queries, keys and values for H heads of D (what a fused projection to 3 H D features writes,
 * reshaped) -> out [...batch, T, H, D] (reshape to [...batch, T, H D] for the output projection). Each head attends as
 * scaledDotProductAttention over its [T, D] queries, keys and values, with the same options (`causal`: position i sees
 * positions <= i), but no [...batch, H, T, D] copies are made: the kernels read the heads from the packed rows and
 * write the output in its rows, and the gradient comes back as one packed tensor the same way.
 */
export function packedAttention(qkv: Tensor, options?: AttentionOptions | null): Tensor {
  const { out, lse } = packedAttentionWithStats(qkv, options);
  lse.dispose();
  return out;
}

/**
 * The gradient of packedAttention, dqkv (qkv's shape), from its output `out`, the float32 lse (packedAttentionWithStats)
 * and the output's gradient `dout`, in one kernel that recomputes the scores. What autograd runs for its gradient.
 */
export function packedAttentionBackward(dout: Tensor, qkv: Tensor, out: Tensor, lse: Tensor, options?: AttentionOptions | null): Tensor {
  const op = "packedAttentionBackward";
  const attrs = checkPackedAttention(op, qkv, options);
  const outShape = [...qkv.shape.slice(0, -3), ...qkv.shape.slice(-2)];
  for (const [name, t] of [["dout", dout], ["out", out]] as const) {
    assertTensor(op, name, t);
    assertSameDType(op, [name, "qkv"], t, qkv);
    assertShape(op, name, t, outShape);
  }
  assertTensor(op, "lse", lse);
  assertDType(op, "lse", lse, "float32");
  assertShape(op, "lse", lse, [...qkv.shape.slice(0, -4), qkv.shape[qkv.rank - 2], qkv.shape[qkv.rank - 4]]);
  assertSameBackend(op, [["qkv", qkv], ["dout", dout], ["out", out], ["lse", lse]]);
  return engine.runKernel(PackedAttentionBackward, { dout, qkv, out, lse }, attrs);
}

/**
 * Attention of new positions over a key/value cache: q [...batch, M, D], k and v [...batch, N, D] (identical batch
 * dims), `positions` int32 [M] on the same backend: query i attends the keys 0 to positions[i] (those past N - 1 are
 * ignored, and a query with positions[i] < 0 gets zeros), softmax(scale q_i k^T) v over them, in one kernel. A cache
 * of fixed length written in place (indexCopy) at the positions, read this way, makes every decoding step the same
 * shapes with its positions on the device, so a step can be captured (captureGraph). For inference: it has no
 * gradient. Outside noGrad autograd still records it (its output, and k and v when it writes them, track their
 * inputs' gradients), so a backward that reaches it throws a GradientNotRegisteredError rather than leaving its
 * share of the gradient out; train with scaledDotProductAttention. `options.scale` defaults to 1 / sqrt(D).
 *
 * `options.newKeys` and `options.newValues` ([...batch, M, D] each, both or neither) are the new positions' keys and
 * values: they are written into k and v at `positions` first (as `indexCopy(k, positions, newKeys, -2)` and the same
 * for v; positions must then lie in [0, N)), and attended with the rest, in one kernel where the backend can write k
 * and v in place (cuda: the cache writes of a decoding step ride in its attention kernel, like flash-attention's
 * `flash_attn_with_kvcache`). Otherwise they run as those two indexCopy calls and the attention.
 */
export function cachedAttention(q: Tensor, k: Tensor, v: Tensor, positions: Tensor, cacheOptions?: CachedAttentionOptions | null): Tensor {
  const op = "cachedAttention";
  const options = optionsArg(op, cacheOptions, ["scale", "newKeys", "newValues"]);
  assertTensor(op, "positions", positions);
  assertDType(op, "positions", positions, "int32");
  assertRank(op, "positions", positions, 1);
  const { scale } = checkAttention(op, q, k, v, { scale: options.scale });
  assertSameBackend(op, [["q", q], ["positions", positions]]);
  const m = q.shape[q.rank - 2];
  if (positions.shape[0] !== m) {
    throw new ShapeError(`${op}: positions has shape ${formatShape(positions.shape)}, expected [${m}] (one per query of q ${formatShape(q.shape)})`);
  }
  const { newKeys, newValues } = options;
  if (newKeys === undefined && newValues === undefined) return engine.runKernel(CachedAttention, { q, k, v, positions }, { scale });
  if (newKeys === undefined || newValues === undefined) {
    throw new ValueError(`${op}: newKeys and newValues go together, got only ${newKeys === undefined ? "newValues" : "newKeys"}`);
  }
  const expected = [...k.shape.slice(0, -2), m, k.shape[k.rank - 1]];
  for (const [name, t] of [["newKeys", newKeys], ["newValues", newValues]] as const) {
    assertTensor(op, name, t);
    assertSameDType(op, [name, "k"], t, k);
    assertShape(op, name, t, expected);
  }
  assertSameBackend(op, [["q", q], ["newKeys", newKeys], ["newValues", newValues]]);
  if (engine.canWriteInPlace([k, v], [q, positions, newKeys, newValues])) {
    return engine.runKernel(CachedAttention, { q, k, v, positions, newKeys, newValues }, { scale, inPlace: true });
  }
  indexCopy(k, positions, newKeys, k.rank - 2);
  indexCopy(v, positions, newValues, v.rank - 2);
  return engine.runKernel(CachedAttention, { q, k, v, positions }, { scale });
}

/** cachedAttention's options: the scores' factor, and the new positions' keys and values to write first. */
export interface CachedAttentionOptions {
  scale?: number;
  newKeys?: Tensor;
  newValues?: Tensor;
}

export interface AttentionGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
}

/**
 * The gradients of scaledDotProductAttention from its output `out`, the float32 log-sum-exp `lse` (attentionWithStats)
 * and the output's gradient `dout`, in one kernel that recomputes the scores. What autograd runs for its gradient.
 */
export function attentionBackward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, options?: AttentionOptions | null): AttentionGrads {
  const op = "attentionBackward";
  const attrs = checkAttention(op, q, k, v, options);
  for (const [name, t] of [["dout", dout], ["out", out]] as const) {
    assertTensor(op, name, t);
    assertSameDType(op, [name, "q"], t, q);
    assertShape(op, name, t, q.shape);
  }
  assertTensor(op, "lse", lse);
  assertDType(op, "lse", lse, "float32");
  assertShape(op, "lse", lse, q.shape.slice(0, -1));
  assertSameBackend(op, [["q", q], ["dout", dout], ["out", out], ["lse", lse]]);
  const [dq, dk, dv] = engine.runKernel(AttentionBackward, { dout, q, k, v, out, lse }, attrs);
  return { dq, dk, dv };
}

export interface AdamOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  epsilon?: number;
  weightDecay?: number;
  /** true: AdamW (decay applied to the weights directly); false (default): L2 added to the gradient. */
  decoupledWeightDecay?: boolean;
  /** The step number, counted from 1 (bias correction). */
  step: number;
}

export interface AdamState {
  param: Tensor;
  m: Tensor;
  v: Tensor;
}

type AdamHyperparameters = Required<Omit<AdamOptions, "step">>;

const ADAM_OPTIONS = ["lr", "beta1", "beta2", "epsilon", "weightDecay", "decoupledWeightDecay"] as const;

/**
 * The hyperparameters with their defaults, checked (finite; lr, epsilon and weightDecay >= 0; betas in [0, 1)); the
 * op's other options are `more`.
 */
function adamHyperparameters<T extends Omit<AdamOptions, "step">>(op: string, options: T, more: readonly (keyof T & string)[]): AdamHyperparameters {
  const { lr, beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8, weightDecay = 0, decoupledWeightDecay: decoupled } = optionsArg(op, options, [...ADAM_OPTIONS, ...more]);
  const decoupledWeightDecay = decoupled ?? false;
  // As torch.optim.Adam: a negative lr climbs the loss, a negative epsilon can divide by zero (-Infinity), a negative
  // weight decay grows the weights.
  for (const [name, value] of [["lr", lr], ["epsilon", epsilon], ["weightDecay", weightDecay]] as const) {
    assertFiniteNumber(op, name, value);
    if (value < 0) throw new ValueError(`${op}: ${name} must be >= 0, got ${value}`);
  }
  assertFiniteNumber(op, "beta1", beta1);
  assertFiniteNumber(op, "beta2", beta2);
  if (beta1 < 0 || beta1 >= 1 || beta2 < 0 || beta2 >= 1) {
    throw new ValueError(`${op}: beta1 and beta2 must be in [0, 1), got ${beta1} and ${beta2}`);
  }
  // A truthy non-boolean ("false", 1) silently turned AdamW's decay on: refused, as the other flags are.
  assertBoolean(op, "decoupledWeightDecay", decoupledWeightDecay);
  return { lr, beta1, beta2, epsilon, weightDecay, decoupledWeightDecay };
}

function assertStep(op: string, name: string, step: number): void {
  if (!Number.isInteger(step) || step < 1) throw new IndexError(`${op}: ${name} must be an integer >= 1, got ${formatArg(step)}`);
}

/** One fused Adam/AdamW step: new param, m and v (the inputs are unchanged; assign them). */
export function adamUpdate(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, options: AdamOptions): AdamState {
  const op = "adamUpdate";
  for (const [name, t] of [["param", param], ["grad", grad], ["m", m], ["v", v]] as const) {
    assertTensor(op, name, t);
    assertFloat(op, name, t);
    assertShape(op, name, t, param.shape);
  }
  assertSameBackend(op, [["param", param], ["grad", grad], ["m", m], ["v", v]]);
  assertSameDType(op, ["grad", "param"], grad, param);
  const hyperparameters = adamHyperparameters(op, options, ["step"]);
  assertStep(op, "step", options.step);
  const [p, mNew, vNew] = engine.runKernel(AdamUpdate, { param, grad, m, v }, { ...hyperparameters, step: options.step });
  return { param: p, m: mNew, v: vNew };
}

export interface MultiTensorAdamOptions extends Omit<AdamOptions, "step"> {
  /**
   * Each tensor's step: numbers counted from 1, or float32 scalar tensors (size 1) holding the steps each has
   * taken so far, which the update raises by one on the device and uses. With tensors nothing of the step lives
   * on the host, so a captured training step (captureGraph) counts its replays.
   */
  steps: readonly number[] | readonly Tensor[];
  /**
   * A float32 scalar (size 1) read by the update when it runs: each tensor's learning rate is then `lr` times its
   * value (`lr` a fixed factor such as a parameter's lr scale). Write a schedule's learning rate into it with
   * `assign` between captured steps.
   */
  lrValue?: Tensor | null;
  /** Also return every new param rounded to this float dtype (the half-precision weights of float32 masters). */
  copyDType?: DType | null;
}

export interface MultiTensorAdamState {
  params: Tensor[];
  m: Tensor[];
  v: Tensor[];
  /** The new params in `copyDType`, or null when none was asked for. */
  copies: Tensor[] | null;
  /** The new step counts when `steps` were tensors, else null. */
  steps: Tensor[] | null;
}

const MULTI_TENSOR_ADAM_LISTS = ["params", "grads", "m", "v", "steps"] as const;

function adamLabel(list: number, index: number): string {
  return `${MULTI_TENSOR_ADAM_LISTS[list]}[${index}]`;
}

/**
 * One Adam/AdamW step on every tensor of a list in one kernel call (one launch on a GPU):
 * tensor i exactly as `adamUpdate(params[i], grads[i], m[i], v[i], { step: steps[i] })`, except
 * that a gradient may have any float dtype (a bfloat16 gradient of a float32 master needs no
 * cast), and with `copyDType` the new params also come back rounded to it. The inputs are
 * unchanged; assign the results.
 */
export function multiTensorAdamUpdate(
  params: readonly Tensor[],
  grads: readonly Tensor[],
  m: readonly Tensor[],
  v: readonly Tensor[],
  options: MultiTensorAdamOptions,
): MultiTensorAdamState {
  const checked = checkMultiTensorAdam("multiTensorAdamUpdate", params, grads, m, v, options, []);
  return runMultiTensorAdam(params, grads, m, v, checked, adamAttrs(checked));
}

/** The kernel's attributes for checked options: step numbers, or none when the step counts are tensors. */
function adamAttrs(checked: CheckedAdam): MultiTensorAdamUpdateAttrs {
  return { ...checked.hyperparameters, steps: checked.stepCounts === null ? [...(checked.steps as readonly number[])] : [], copyDType: checked.copyDType };
}

/** The device-side inputs (step counts, learning rate) of a kernel call, present only when given. */
function scheduleInputs(checked: CheckedAdam): { stepCounts?: Tensor[]; lrValue?: Tensor } {
  const inputs: { stepCounts?: Tensor[]; lrValue?: Tensor } = {};
  if (checked.stepCounts !== null) inputs.stepCounts = [...checked.stepCounts];
  if (checked.lrValue !== null) inputs.lrValue = checked.lrValue;
  return inputs;
}

/** The out-of-place kernel call of multiTensorAdamUpdate, on checked inputs. */
function runMultiTensorAdam(
  params: readonly Tensor[],
  grads: readonly Tensor[],
  m: readonly Tensor[],
  v: readonly Tensor[],
  checked: CheckedAdam,
  attrs: MultiTensorAdamUpdateAttrs,
): MultiTensorAdamState {
  const n = params.length;
  const copyDType = attrs.copyDType;
  const counted = checked.stepCounts !== null;
  if (n === 0) return { params: [], m: [], v: [], copies: copyDType === null ? null : [], steps: counted ? [] : null };
  const inputs = { params: [...params], grads: [...grads], m: [...m], v: [...v], ...scheduleInputs(checked) };
  const outputs = engine.runKernel(MultiTensorAdamUpdate, inputs, attrs);
  const copies = copyDType === null ? null : outputs.slice(3 * n, 4 * n);
  const at = copyDType === null ? 3 * n : 4 * n;
  return { params: outputs.slice(0, n), m: outputs.slice(n, 2 * n), v: outputs.slice(2 * n, 3 * n), copies, steps: counted ? outputs.slice(at, at + n) : null };
}

export interface MultiTensorAdamInPlaceOptions extends MultiTensorAdamOptions {
  /** With copyDType: tensors of that dtype and each param's shape that take every new param rounded to it. */
  copies?: readonly Tensor[] | null;
}

/**
 * multiTensorAdamUpdate that updates its tensors instead of returning new ones: afterwards params, m and v (and,
 * with copyDType, `copies`; with step tensors, those) hold the new values, as if each had been assigned its result.
 * Where no other tensor shares their buffers (the optimizer's own state and parameters) the kernel writes them in
 * place: no new buffers, nothing to assign, one call per step. Where one is shared (a clone, a reshape) the update
 * runs out of place and is assigned, so whatever shares a buffer keeps the old values. A captured
 * graph's reference is not sharing: a buffer a graph reads is written in place, where its next replay reads it.
 */
export function multiTensorAdamUpdateInPlace(
  params: readonly Tensor[],
  grads: readonly Tensor[],
  m: readonly Tensor[],
  v: readonly Tensor[],
  options: MultiTensorAdamInPlaceOptions,
): void {
  const op = "multiTensorAdamUpdateInPlace";
  const checked = checkMultiTensorAdam(op, params, grads, m, v, options, ["copies"]);
  const { n, copyDType, stepCounts } = checked;
  const copies = options.copies ?? null;
  if ((copyDType === null) !== (copies === null)) throw new ValueError(`${op}: copies must be given exactly when copyDType is`);
  if (copies !== null) {
    if (!Array.isArray(copies) || copies.length !== n) throw new ValueError(`${op}: copies must be an array of ${n} tensors (one per param)`);
    for (let i = 0; i < n; i++) {
      const t = copies[i];
      assertTensor(op, `copies[${i}]`, t);
      assertDType(op, `copies[${i}]`, t, copyDType as DType);
      if (!shapesEqual(t.shape, params[i].shape)) assertShape(op, `copies[${i}]`, t, params[i].shape);
      if (t.backend !== params[i].backend) assertSameBackend(op, [["params[0]", params[0]], [`copies[${i}]`, t]]);
    }
  }
  if (n === 0) return;
  const attrs = adamAttrs(checked);
  const written = [...params, ...m, ...v];
  if (copies !== null) written.push(...copies);
  if (stepCounts !== null) written.push(...stepCounts);
  const read = checked.lrValue === null ? grads : [...grads, checked.lrValue];
  if (engine.canWriteInPlace(written, read)) {
    const inputs = { params: [...params], grads: [...grads], m: [...m], v: [...v], copies: copies === null ? undefined : [...copies], ...scheduleInputs(checked) };
    engine.runKernel(MultiTensorAdamUpdate, inputs, { ...attrs, inPlace: true });
    return;
  }
  const next = runMultiTensorAdam(params, grads, m, v, checked, attrs);
  const pairs: [Tensor, Tensor][] = [];
  for (let i = 0; i < n; i++) {
    pairs.push([params[i], next.params[i]], [m[i], next.m[i]], [v[i], next.v[i]]);
    if (copies !== null) pairs.push([copies[i], (next.copies as Tensor[])[i]]);
    if (stepCounts !== null) pairs.push([stepCounts[i], (next.steps as Tensor[])[i]]);
  }
  for (const [target, value] of pairs) {
    target.assign(value);
    value.dispose();
  }
}

interface CheckedAdam {
  n: number;
  hyperparameters: AdamHyperparameters;
  copyDType: DType | null;
  steps: readonly number[] | readonly Tensor[];
  /** The step tensors, or null when the steps are numbers. */
  stepCounts: readonly Tensor[] | null;
  lrValue: Tensor | null;
}

/** The checks of both multi-tensor Adam ops (`more`: the op's own options); the hyperparameters, copy dtype and schedule they run with. */
function checkMultiTensorAdam<T extends MultiTensorAdamOptions>(
  op: string,
  params: readonly Tensor[],
  grads: readonly Tensor[],
  m: readonly Tensor[],
  v: readonly Tensor[],
  options: T,
  more: readonly (keyof T & string)[],
): CheckedAdam {
  const n = Array.isArray(params) ? params.length : -1;
  const lists = [params, grads, m, v, options?.steps] as const;
  for (let k = 0; k < lists.length; k++) {
    const list = lists[k];
    const name = MULTI_TENSOR_ADAM_LISTS[k];
    if (!Array.isArray(list)) throw new ValueError(`${op}: ${name} must be an array`);
    if (list.length !== n) throw new ValueError(`${op}: ${name} has ${list.length} entries, params has ${n}`);
  }
  const hyperparameters = adamHyperparameters(op, options, ["steps", "lrValue", "copyDType", ...more]);
  const copyDType = options.copyDType ?? null;
  if (copyDType !== null && !(isDType(copyDType) && isFloatDType(copyDType))) {
    throw new ValueError(`${op}: copyDType must be a float dtype (float32, float16, bfloat16) or null, got ${formatArg(copyDType)}`);
  }
  const steps = options.steps;
  const counted = n > 0 && typeof steps[0] !== "number";
  // Plain loops with the labels built only for an error: this runs for every parameter of every step.
  let backend: Tensor["backend"] | undefined;
  for (let i = 0; i < n; i++) {
    const shape = (params[i] as Tensor | undefined)?.shape;
    for (let k = 0; k < 4; k++) {
      const t = lists[k][i] as Tensor;
      if (!(t instanceof Tensor) || t.storage.disposed) assertTensor(op, adamLabel(k, i), t);
      if (t.dtype === "int32") assertFloat(op, adamLabel(k, i), t);
      if (!shapesEqual(t.shape, shape as readonly number[])) assertShape(op, adamLabel(k, i), t, shape as readonly number[]);
      if (backend === undefined) backend = t.backend;
      else if (t.backend !== backend) {
        throw new BackendError(`${op}: ${adamLabel(k, i)} is on backend '${t.backend.name}' but params[0] is on '${backend.name}'; move one with tensor.to(name)`);
      }
    }
    const step = steps[i];
    if (!counted) {
      if (!Number.isInteger(step) || (step as number) < 1) assertStep(op, `steps[${i}]`, step as number);
    } else {
      checkScalar(op, `steps[${i}]`, step as Tensor, backend as Tensor["backend"], "a step count (float32, one element)");
    }
  }
  const lrValue = options.lrValue ?? null;
  if (lrValue !== null && n > 0) checkScalar(op, "lrValue", lrValue, backend as Tensor["backend"], "the learning rate (float32, one element)");
  return { n, hyperparameters, copyDType, steps, stepCounts: counted ? (steps as readonly Tensor[]) : null, lrValue };
}

/** A float32 tensor of one element on `backend`. */
function checkScalar(op: string, name: string, t: Tensor, backend: Tensor["backend"], what: string): void {
  if (!(t instanceof Tensor) || t.storage.disposed) assertTensor(op, name, t);
  if (t.dtype !== "float32" || t.size !== 1) {
    throw new ValueError(`${op}: ${name} must be ${what}, got ${t.dtype} ${formatShape(t.shape)}`);
  }
  if (t.backend !== backend) {
    throw new BackendError(`${op}: ${name} is on backend '${t.backend.name}' but params[0] is on '${backend.name}'; move one with tensor.to(name)`);
  }
}
