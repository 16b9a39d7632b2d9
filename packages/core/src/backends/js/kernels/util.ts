import type { BackendValues } from "../../../dtypes";
import { sizeOf } from "../../../shape";

/**
 * `shape` with each run of dims that every stride list steps through as one merged into one dim, and size-1 dims
 * dropped: the same row-major walk over fewer, longer dims. A merged dim's stride is its innermost part's.
 */
export function mergeDims(shape: readonly number[], stridesList: readonly (readonly number[])[]): { shape: number[]; strides: number[][] } {
  const dims: number[] = [];
  const strides: number[][] = stridesList.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const last = dims.length - 1;
    // (No dim yet: strides[k][-1] is undefined, so the first dim is pushed; stridesList is never empty.)
    const merge = stridesList.every((s, k) => strides[k][last] === s[d] * shape[d]);
    if (merge) dims[last] *= shape[d];
    else dims.push(shape[d]);
    for (let k = 0; k < stridesList.length; k++) strides[k][merge ? last : dims.length - 1] = stridesList[k][d];
  }
  return { shape: dims, strides };
}

/**
 * Walks `shape` (row-major) a row of its merged innermost dim at a time: row(i, offsets, inner, steps) for the row
 * whose first element is element i, offsets[k] that element's offset `sum(index[d] * strides[k][d])` and steps[k] the
 * innermost stride of list k (an offset per row, not per element).
 */
export function walkRows(
  shape: readonly number[],
  stridesList: readonly (readonly number[])[],
  row: (i: number, offsets: number[], inner: number, steps: number[]) => void,
): void {
  const total = sizeOf(shape);
  if (total === 0) return;
  const { shape: dims, strides } = mergeDims(shape, stridesList);
  const outer = dims.length - 1; // -1: every dim is 1, one row of one element
  const inner = dims[outer] ?? 1;
  const steps = strides.map((s) => s[outer] ?? 0);
  const offsets = stridesList.map(() => 0);
  const counter = dims.map(() => 0);
  for (let i = 0; i < total; i += inner) {
    row(i, offsets, inner, steps);
    for (let d = outer - 1; d >= 0; d--) {
      counter[d]++;
      const done = counter[d] === dims[d];
      for (let k = 0; k < offsets.length; k++) offsets[k] += done ? strides[k][d] * (1 - dims[d]) : strides[k][d];
      if (!done) break;
      counter[d] = 0;
    }
  }
}

/**
 * For each element of `shape` (row-major), the offset `sum(index[d] * strides[d])`: the element it
 * reads (broadcast, permuted or sliced input) or the one it reduces into.
 */
export function stridedOffsets(shape: readonly number[], strides: readonly number[]): Int32Array {
  const offsets = new Int32Array(sizeOf(shape));
  walkRows(shape, [strides], (i, o, inner, step) => {
    for (let j = 0; j < inner; j++) offsets[i + j] = o[0] + j * step[0];
  });
  return offsets;
}

/** out[i] = input[base + stridedOffsets(shape, strides)[i]]: a permuted, sliced or broadcast read of `input`. */
export function stridedCopy<T extends BackendValues>(out: T, input: T, base: number, shape: readonly number[], strides: readonly number[]): void {
  walkRows(shape, [strides], (i, o, inner, step) => {
    const from = base + o[0];
    const s = step[0];
    for (let j = 0; j < inner; j++) out[i + j] = input[from + j * s];
  });
}

const ERF_SERIES = /* @__PURE__ */ Float64Array.from({ length: 12 }, (_, n) => {
  let factorial = 1;
  for (let k = 2; k <= n; k++) factorial *= k;
  return ((n % 2 ? -2 : 2) / Math.sqrt(Math.PI)) / (factorial * (2 * n + 1));
});

/** erf(x) with about 1e-7 absolute error (float32 precision is all kernels need). */
export function erf(x: number): number {
  const z = Math.abs(x);
  if (z < 0.5) {
    // Maclaurin series, 12 terms by Horner in x^2: the coefficients (-1)^n / (n! (2n + 1)) times 2 / sqrt(pi).
    const z2 = x * x;
    let sum = 0;
    for (let n = ERF_SERIES.length - 1; n >= 0; n--) sum = sum * z2 + ERF_SERIES[n];
    return x * sum;
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
