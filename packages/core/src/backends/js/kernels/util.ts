import { broadcastStrides, sizeOf } from "../../../shape";

/**
 * For each element of `shape` (row-major), the offset `sum(index[d] * strides[d])`: the element it
 * reads (broadcast, permuted or sliced input) or the one it reduces into.
 */
export function stridedOffsets(shape: readonly number[], strides: readonly number[]): Int32Array {
  const size = sizeOf(shape);
  const offsets = new Int32Array(size);
  const rank = shape.length;
  const counter = new Array<number>(rank).fill(0);
  let offset = 0;
  for (let i = 0; i < size; i++) {
    offsets[i] = offset;
    for (let d = rank - 1; d >= 0; d--) {
      counter[d]++;
      offset += strides[d];
      if (counter[d] < shape[d]) break;
      offset -= strides[d] * shape[d];
      counter[d] = 0;
    }
  }
  return offsets;
}

/**
 * For each element of `outShape` (row-major), the offset of the input element it reads
 * when an input of `shape` is broadcast to it.
 */
export function broadcastOffsets(shape: readonly number[], outShape: readonly number[]): Int32Array {
  if (sizeOf(outShape) === 0) return new Int32Array(0);
  return stridedOffsets(outShape, broadcastStrides(shape, outShape));
}

/** erf(x) with about 1e-7 absolute error (float32 precision is all kernels need). */
export function erf(x: number): number {
  const z = Math.abs(x);
  if (z < 0.5) {
    // Maclaurin series: converges in a handful of terms here.
    const z2 = x * x;
    let term = x;
    let sum = x;
    for (let n = 1; n < 12; n++) {
      term *= -z2 / n;
      sum += term / (2 * n + 1);
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  // Chebyshev fit of erfc (fractional error < 1.2e-7).
  const t = 1 / (1 + 0.5 * z);
  const erfc =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t *
          (1.00002368 +
            t *
              (0.37409196 +
                t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? 1 - erfc : erfc - 1;
}
