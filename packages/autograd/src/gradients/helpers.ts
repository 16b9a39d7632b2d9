import { type DType, ShapeError, Tensor, ValueError, cast, formatShape, greater, less, notEqual, reshape, shapesEqual, sub, sum, where } from "@blocksparse/core";

/** Sums `grad` down to `shape`, undoing NumPy broadcasting (extra leading dims, stretched 1s). */
export function reduceToShape(grad: Tensor, shape: readonly number[]): Tensor {
  if (!(grad instanceof Tensor)) throw new ValueError(`reduceToShape: grad must be a Tensor, got ${grad === null ? "null" : typeof grad}`);
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new ShapeError(`reduceToShape: shape must be an array of non-negative integers, got ${JSON.stringify(shape) ?? String(shape)}`);
  }
  if (shapesEqual(grad.shape, shape)) return grad;
  const lead = grad.rank - shape.length;
  // Checked here: otherwise the reshape at the end reports a shape the caller never passed.
  if (lead < 0 || shape.some((d, i) => d !== 1 && d !== grad.shape[i + lead])) {
    throw new ShapeError(
      `reduceToShape: a gradient of shape ${formatShape(grad.shape)} cannot be reduced to shape ${formatShape(shape)}; the target shape must broadcast to the gradient's (aligned from the right, each dim 1 or equal)`,
    );
  }
  const axes: number[] = [];
  for (let i = 0; i < grad.rank; i++) {
    if (i < lead || (shape[i - lead] === 1 && grad.shape[i] !== 1)) axes.push(i);
  }
  return reshape(axes.length > 0 ? sum(grad, axes, true) : grad, shape);
}

/** `shape` with the reduced axes kept as 1s. */
export function keptShape(shape: readonly number[], axes: readonly number[]): number[] {
  return shape.map((d, i) => (axes.includes(i) ? 1 : d));
}

/** -1, 0 or 1 per element, in `dtype`; NaN where x is NaN, as torch.sign (abs's gradient at NaN is NaN, not 0). */
export function sign(x: Tensor, dtype: DType = x.dtype): Tensor {
  const signs = sub(cast(greater(x, 0), dtype), cast(less(x, 0), dtype));
  return x.dtype === "int32" || dtype === "int32" ? signs : where(notEqual(x, x), cast(x, dtype), signs);
}
