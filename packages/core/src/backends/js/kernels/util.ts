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

/** erf's Maclaurin coefficients 2 (-1)^n / (sqrt(pi) n! (2n + 1)), n < 12: enough below 1/2. */
const ERF_SERIES = /* @__PURE__ */ Float64Array.from({ length: 12 }, (_, n) => {
  let factorial = 1;
  for (let k = 2; k <= n; k++) factorial *= k;
  return ((n % 2 ? -2 : 2) / Math.sqrt(Math.PI)) / (factorial * (2 * n + 1));
});

/** e^(-(n h)^2) for n = 1..12 at h = 1/2: the weights of erfc's trapezoidal sum (the next, e^(-42), is below an ulp). */
const ERFC_WEIGHTS = /* @__PURE__ */ Float64Array.from({ length: 12 }, (_, n) => Math.exp(-(((n + 1) / 2) ** 2)));

/**
 * erfc(x) within 4 float64 ulps, relative, wherever it is normal. |x| < 1/2: 1 - erf by its Maclaurin series. 1/2 <= z =
 * |x| < 6: the trapezoidal rule, step h = 1/2, on erfc(z) = (2z e^(-z^2) / pi) int_0^inf e^(-t^2) / (t^2 + z^2) dt plus
 * its pole term 2 / (1 - e^(2 pi z / h)) (Chiarella and Reichel, Math. Comp. 22, 1968; error ~ e^(-pi^2 / h^2) = 7e-18,
 * until z = 7 where it grows). z >= 6: Laplace's continued fraction, 16 levels. erfc(-z) = 2 - erfc(z).
 */
export function erfc(x: number): number {
  const z = Math.abs(x);
  if (z < 0.5) {
    let sum = 0;
    for (let n = ERF_SERIES.length - 1; n >= 0; n--) sum = sum * x * x + ERF_SERIES[n];
    return 1 - x * sum;
  }
  // erfc(28) < 1e-342 is 0; this also keeps infinity out of r - z below.
  if (z > 28) return x < 0 ? 2 : 0;
  // e^(-z^2) as e^(-r^2) e^((r - z)(r + z)), r = z to 1/16 (r^2 exact): z * z's rounding would cost up to z^2 ulps.
  const r = Math.round(z * 16) / 16;
  const gauss = Math.exp(-r * r) * Math.exp((r - z) * (r + z));
  let tail: number;
  if (z < 6) {
    let sum = 0.5 / (z * z);
    for (let n = 0; n < ERFC_WEIGHTS.length; n++) sum += ERFC_WEIGHTS[n] / ((n + 1) ** 2 / 4 + z * z);
    tail = (z * gauss * sum) / Math.PI + 2 / (1 - Math.exp(4 * Math.PI * z));
  } else {
    // erfc(z) = e^(-z^2) / sqrt(pi) / (z + (1/2) / (z + 1 / (z + (3/2) / (z + ...)))), evaluated from the bottom.
    let fraction = z;
    for (let k = 16; k > 0; k--) fraction = z + k / 2 / fraction;
    tail = gauss / (Math.sqrt(Math.PI) * fraction);
  }
  return x < 0 ? 2 - tail : tail;
}
