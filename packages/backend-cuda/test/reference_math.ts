// The block-sparse products in float64 from a pattern and its values: what the cuda kernels are checked against.
import type { BsrPattern } from "@blocksparse/core";

/** Dense W [rows, cols] (float64) from a pattern and its values. */
export function denseWeight(pattern: BsrPattern, values: Float64Array): Float64Array {
  const [rows, cols] = pattern.shape;
  const [R, C] = pattern.blockShape;
  const { blockRow, blockCol } = pattern.coordinates;
  const w = new Float64Array(rows * cols);
  for (let p = 0; p < pattern.nnzBlocks; p++)
    for (let r = 0; r < R; r++)
      for (let c = 0; c < C; c++) w[(blockRow[p] * R + r) * cols + blockCol[p] * C + c] = values[(p * R + r) * C + c];
  return w;
}

/** The columns of data [m, width] as rows: [width, m]. */
export function transposed(data: ArrayLike<number>, m: number, width: number): Float64Array {
  const out = new Float64Array(m * width);
  for (let i = 0; i < m; i++) for (let c = 0; c < width; c++) out[c * m + i] = data[i * width + c];
  return out;
}

/** One output of dW = dY^T X in float64 over m tokens, and the sum of its terms' magnitudes (for a rounding bound). */
export function sampledOutput(dy: ArrayLike<number>, x: ArrayLike<number>, m: number, rows: number, cols: number, row: number, col: number): { ref: number; magnitude: number } {
  let ref = 0;
  let magnitude = 0;
  for (let t = 0; t < m; t++) {
    const term = dy[t * rows + row] * x[t * cols + col];
    ref += term;
    magnitude += Math.abs(term);
  }
  return { ref, magnitude };
}

/** dW = dY^T X on the pattern's blocks, in float64: [nnzBlocks, R, C] (each a dot product of two contiguous columns). */
export function sampledReference(pattern: BsrPattern, dy: ArrayLike<number>, x: ArrayLike<number>, m: number): Float64Array {
  const [rows, cols] = pattern.shape;
  const [R, C] = pattern.blockShape;
  const { blockRow, blockCol } = pattern.coordinates;
  const dyT = transposed(dy, m, rows);
  const xT = transposed(x, m, cols);
  const dw = new Float64Array(pattern.nnzBlocks * R * C);
  for (let p = 0; p < pattern.nnzBlocks; p++)
    for (let r = 0; r < R; r++) {
      const a = (blockRow[p] * R + r) * m;
      for (let c = 0; c < C; c++) {
        const b = (blockCol[p] * C + c) * m;
        let sum = 0;
        for (let i = 0; i < m; i++) sum += dyT[a + i] * xT[b + i];
        dw[(p * R + r) * C + c] = sum;
      }
    }
  return dw;
}

/** Y = X W^T (+ bias) in float64 for m rows of X [m, cols] and dense W [rows, cols]. */
export function linearReference(x: ArrayLike<number>, w: Float64Array, m: number, rows: number, cols: number, bias?: ArrayLike<number>): Float64Array {
  const y = new Float64Array(m * rows);
  for (let i = 0; i < m; i++)
    for (let o = 0; o < rows; o++) {
      let sum = bias ? bias[o] : 0;
      for (let j = 0; j < cols; j++) sum += x[i * cols + j] * w[o * cols + j];
      y[i * rows + o] = sum;
    }
  return y;
}

/** dX = dY W in float64 for m rows of dY [m, rows] and dense W [rows, cols] (each output summed over o in order, W's rows read contiguously). */
export function matmulReference(dy: ArrayLike<number>, w: Float64Array, m: number, rows: number, cols: number): Float64Array {
  const dx = new Float64Array(m * cols);
  for (let i = 0; i < m; i++) {
    const out = dx.subarray(i * cols, (i + 1) * cols);
    for (let o = 0; o < rows; o++) {
      const a = dy[i * rows + o];
      const row = w.subarray(o * cols, (o + 1) * cols);
      for (let j = 0; j < cols; j++) out[j] += a * row[j];
    }
  }
  return dx;
}
