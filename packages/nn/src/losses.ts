import { cast, crossEntropy as coreCrossEntropy, mean, type Reduction, ShapeError, square, sub, sum, Tensor, tidy, ValueError } from "@blocksparse/core";

/** float16/bfloat16 widened to float32 (differentiably), so that losses reduce and return in float32 as under autocast. */
function widened(x: Tensor): Tensor {
  return x instanceof Tensor && (x.dtype === "float16" || x.dtype === "bfloat16") ? cast(x, "float32") : x;
}

/**
 * Cross-entropy of logits [..., C] against int32 class indices [...], averaged by default
 * (torch.nn.functional.cross_entropy with the classes on the last dim). float16/bfloat16
 * logits are widened first: the loss is float32, as under torch.autocast.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, reduction: Reduction = "mean"): Tensor {
  return tidy(() => coreCrossEntropy(widened(logits), targets, reduction));
}

/** Mean squared error between same-shape tensors, averaged by default; in float32 for float16/bfloat16 inputs. */
export function mseLoss(pred: Tensor, target: Tensor, reduction: Reduction = "mean"): Tensor {
  if (pred.shape.length !== target.shape.length || pred.shape.some((d, i) => d !== target.shape[i])) {
    throw new ShapeError(`mseLoss: pred has shape [${pred.shape}] but target has [${target.shape}]`);
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
