import { noGrad } from "@blocksparse/autograd";
import { cast, concat, formatArg, mul, reshape, square, sum, type Tensor, tidy, ValueError } from "@blocksparse/core";
import { Parameter } from "./parameter";

/**
 * Scales the gradients of `parameters` in place so that their joint L2 norm is at most
 * `maxNorm`, as torch.nn.utils.clip_grad_norm_; returns the norm before clipping.
 * Parameters without a gradient are skipped; a block-sparse weight counts its stored blocks.
 * A NaN norm scales every gradient by NaN, as torch's (error_if_nonfinite=False); an infinite one by 0.
 */
export function clipGradNorm(parameters: Iterable<Parameter>, maxNorm: number): number {
  if (typeof maxNorm !== "number" || !(maxNorm >= 0) || !Number.isFinite(maxNorm)) {
    throw new ValueError(`clipGradNorm: maxNorm must be a finite number >= 0, got ${formatArg(maxNorm)}`);
  }
  if (typeof (parameters as Partial<Iterable<Parameter>> | null)?.[Symbol.iterator] !== "function") {
    throw new ValueError("clipGradNorm: parameters must be an iterable of Parameters (model.parameters())");
  }
  const list = [...parameters];
  list.forEach((p, i) => {
    if (!(p instanceof Parameter)) throw new ValueError(`clipGradNorm: parameters[${i}] is not a Parameter`);
  });
  // A parameter listed twice (a weight tied between two modules) counts once in the norm and is scaled once.
  const grads = [...new Set(list)].map((p) => p.grad);
  return noGrad(() => {
    const present = grads.filter((grad): grad is Tensor => grad !== null);
    // One read for all parameters: each sum of squares in float32, gathered before the download.
    const squares = present.length === 0 ? 0 : tidy(() => sum(concat(present.map((grad) => reshape(sum(square(cast(grad, "float32"))), [1])), 0)).item());
    const total = Math.sqrt(squares);
    const coefficient = maxNorm / (total + 1e-6);
    // Not `< 1`: a NaN norm gives a NaN coefficient, which torch's clamp keeps and multiplies every gradient by.
    if (!(coefficient >= 1)) {
      for (const grad of grads) if (grad) tidy(() => grad.assign(mul(grad, coefficient)));
    }
    return total;
  });
}
