import { noGrad } from "@blocksparse/autograd";
import { abs, assertBoolean, cast, concat, formatArg, max, maximum, min, minimum, mul, notEqual, optionsArg, pow, reshape, square, sum, type Tensor, tidy, ValueError } from "@blocksparse/core";
import { NnError } from "./errors";
import { disposedParameterError, Parameter } from "./parameter";

export interface ClipGradNormOptions {
  /**
   * The norm's order p (default 2), any number as torch's norm_type (torch.linalg.vector_norm's ord): Infinity for the
   * largest |gradient|, -Infinity for the smallest, 0 for the number of parameters with a non-zero gradient (torch
   * takes the norm of the parameters' norms: each counts its non-zeros, then the counts that are not 0 are counted).
   */
  normType?: number;
  /** Throw an NnError, scaling nothing, when the norm is inf or NaN (default false), as torch's error_if_nonfinite. */
  errorIfNonfinite?: boolean;
}

/**
 * Scales the gradients of `parameters` in place so that their joint norm is at most
 * `maxNorm`, as torch.nn.utils.clip_grad_norm_; returns the norm before clipping.
 * The third argument is torch's norm_type (default 2; Infinity, -Infinity and 0 as torch's, see
 * {@link ClipGradNormOptions.normType}) or
 * `{ normType, errorIfNonfinite }`, the fourth torch's error_if_nonfinite.
 * Parameters without a gradient are skipped; a block-sparse weight counts its stored blocks. `maxNorm` Infinity
 * clips nothing (the norm alone). A NaN norm scales every gradient by NaN, as torch's (error_if_nonfinite=False); an
 * infinite one by 0 (by NaN where maxNorm is Infinity too, as torch's inf / inf). Where it differs from torch: a
 * parameter listed twice counts and is scaled once (torch's list counts it twice); a single Parameter is refused
 * (pass [p]); float16/bfloat16 gradients' norm is taken in float32 (torch's is in their dtype, inf past 65504 in
 * float16); an empty gradient adds nothing at every order (torch refuses Infinity and negative orders of one); a
 * negative or NaN maxNorm is a ValueError, and a disposed parameter (one an optimizer made before patching holds) a
 * DisposedTensorError.
 */
export function clipGradNorm(parameters: Iterable<Parameter>, maxNorm: number, options: number | ClipGradNormOptions = 2, errorIfNonfinite = false): number {
  // Infinity clips nothing and returns the norm, as torch's clip_grad_norm_(parameters, float("inf")).
  if (typeof maxNorm !== "number" || !(maxNorm >= 0)) throw new ValueError(`clipGradNorm: maxNorm must be a number >= 0, got ${formatArg(maxNorm)}`);
  // torch's positional norm_type, or the options; a norm type or flag ignored would clip by another norm than asked.
  const given = typeof options === "number" ? { normType: options } : optionsArg("clipGradNorm", options, ["normType", "errorIfNonfinite"]);
  const { normType = 2, errorIfNonfinite: strict = errorIfNonfinite } = given;
  if (typeof normType !== "number" || Number.isNaN(normType)) {
    throw new ValueError(`clipGradNorm: normType must be a number (2, 1, Infinity, -Infinity, 0, ...), got ${formatArg(normType)}`);
  }
  assertBoolean("clipGradNorm", "errorIfNonfinite", strict);
  // A parameter listed twice (a weight tied between two modules) counts once in the norm and is scaled once.
  const grads = distinctParameters("clipGradNorm", parameters).map((p) => p.grad);
  return noGrad(() => {
    // An empty gradient adds nothing (and max has nothing to reduce).
    const present = grads.filter((grad): grad is Tensor => grad !== null && grad.size > 0);
    const largest = normType === Number.POSITIVE_INFINITY;
    const smallest = normType === Number.NEGATIVE_INFINITY;
    // One read for all parameters: each one's sum of |g|^p in float32 (max |g| for Infinity, min |g| for -Infinity,
    // 1 where any g is not 0 for 0, NaN included), gathered before the download.
    const part = (grad: Tensor) => {
      const g = cast(grad, "float32");
      if (largest || smallest) return reshape((largest ? max : min)(abs(g)), [1]);
      if (normType === 0) return reshape(max(cast(notEqual(g, 0), "float32")), [1]);
      return reshape(sum(normType === 2 ? square(g) : pow(abs(g), normType)), [1]);
    };
    // No gradient: norm 0, as torch's (a negative order's 0^(1/p) would be Infinity).
    const parts = present.length === 0 ? 0 : tidy(() => (largest ? max : smallest ? min : sum)(concat(present.map(part), 0)).item());
    const total = present.length === 0 || largest || smallest || normType === 0 ? parts : normType === 2 ? Math.sqrt(parts) : parts ** (1 / normType);
    if (strict && !Number.isFinite(total)) {
      throw new NnError(`clipGradNorm: the gradients' norm is ${total}, not clipped (errorIfNonfinite)`);
    }
    const coefficient = maxNorm / (total + 1e-6);
    // Not `< 1`: a NaN norm gives a NaN coefficient, which torch's clamp keeps and multiplies every gradient by.
    if (!(coefficient >= 1)) {
      for (const grad of grads) if (grad) tidy(() => grad.assign(mul(grad, coefficient)));
    }
    return total;
  });
}

/**
 * Clamps every gradient of `parameters` to [-clipValue, clipValue] in place, as torch.nn.utils.clip_grad_value_.
 * Parameters without a gradient are skipped, a NaN gradient stays NaN (as torch's clamp) and Infinity clips nothing.
 * As in clipGradNorm, a single Parameter is refused (pass [p]) and a negative or NaN clipValue is a ValueError (torch's
 * clamp would set every gradient to -|clipValue|).
 */
export function clipGradValue(parameters: Iterable<Parameter>, clipValue: number): void {
  if (typeof clipValue !== "number" || !(clipValue >= 0)) throw new ValueError(`clipGradValue: clipValue must be a number >= 0, got ${formatArg(clipValue)}`);
  const list = distinctParameters("clipGradValue", parameters);
  if (clipValue === Number.POSITIVE_INFINITY) return;
  noGrad(() => {
    for (const { grad } of list) if (grad) tidy(() => grad.assign(minimum(maximum(grad, -clipValue), clipValue)));
  });
}

/** `parameters` checked to be an iterable of Parameters, each once. */
function distinctParameters(where: string, parameters: Iterable<Parameter>): Parameter[] {
  if (typeof (parameters as Partial<Iterable<Parameter>> | null)?.[Symbol.iterator] !== "function") {
    throw new ValueError(`${where}: parameters must be an iterable of Parameters (model.parameters())`);
  }
  const list = [...parameters];
  list.forEach((p, i) => {
    if (!(p instanceof Parameter)) throw new ValueError(`${where}: parameters[${i}] is not a Parameter`);
    // A disposed parameter has no gradient: skipped, it would leave the gradients it stands for unclipped, in silence.
    if (p.value.isDisposed) throw disposedParameterError(where, `parameters[${i}]`, p);
  });
  return [...new Set(list)];
}
