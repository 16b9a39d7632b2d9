import { crossEntropy as coreCrossEntropy, mean, type Reduction, ShapeError, square, sub, sum, type Tensor, tidy, ValueError } from "@blocksparse/core";

/**
 * Cross-entropy of logits [..., C] against int32 class indices [...], averaged by default
 * (torch.nn.functional.cross_entropy with the classes on the last dim).
 */
export function crossEntropy(logits: Tensor, targets: Tensor, reduction: Reduction = "mean"): Tensor {
  return coreCrossEntropy(logits, targets, reduction);
}

/** Mean squared error between same-shape tensors, averaged by default. */
export function mseLoss(pred: Tensor, target: Tensor, reduction: Reduction = "mean"): Tensor {
  if (pred.shape.length !== target.shape.length || pred.shape.some((d, i) => d !== target.shape[i])) {
    throw new ShapeError(`mseLoss: pred has shape [${pred.shape}] but target has [${target.shape}]`);
  }
  if (reduction !== "mean" && reduction !== "sum" && reduction !== "none") {
    throw new ValueError(`mseLoss: reduction must be "mean", "sum" or "none", got ${JSON.stringify(reduction)}`);
  }
  return tidy(() => {
    const errors = square(sub(pred, target));
    if (reduction === "none") return errors;
    return reduction === "sum" ? sum(errors) : mean(errors);
  });
}
