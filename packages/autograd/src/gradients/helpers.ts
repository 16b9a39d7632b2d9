import { type DType, type Tensor, cast, greater, less, reshape, shapesEqual, sub, sum } from "@blocksparse/core";

/** Sums `grad` down to `shape`, undoing NumPy broadcasting (extra leading dims, stretched 1s). */
export function reduceToShape(grad: Tensor, shape: readonly number[]): Tensor {
  if (shapesEqual(grad.shape, shape)) return grad;
  const lead = grad.rank - shape.length;
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

/** -1, 0 or 1 per element, in `dtype`. */
export function sign(x: Tensor, dtype: DType = x.dtype): Tensor {
  return sub(cast(greater(x, 0), dtype), cast(less(x, 0), dtype));
}
