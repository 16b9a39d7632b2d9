/**
 * Adapters from the kernel layer to the cache-blocked compute functions: every product
 * kernel of the js backend goes through these, on float32 arrays.
 */
import type { BsrPattern } from "@blocksparse/format";

/** C[cOff..] (m x n) = op(A[aOff..]) op(B[bOff..]), row-major; op transposes when the flag is set. */
export function matmulF32(
  a: Float32Array,
  aOffset: number,
  b: Float32Array,
  bOffset: number,
  c: Float32Array,
  cOffset: number,
  m: number,
  n: number,
  k: number,
  transposeA: boolean,
  transposeB: boolean,
): void {
  const row = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    row.fill(0);
    for (let p = 0; p < k; p++) {
      const aip = a[aOffset + (transposeA ? p * m + i : i * k + p)];
      if (transposeB) for (let j = 0; j < n; j++) row[j] += aip * b[bOffset + j * k + p];
      else {
        const base = bOffset + p * n;
        for (let j = 0; j < n; j++) row[j] += aip * b[base + j];
      }
    }
    c.set(row, cOffset + i * n);
  }
}

/** Y [tokens, rows] = X [tokens, cols] W^T + bias. */
export function bsrLinearF32(x: Float32Array, values: Float32Array, bias: Float32Array | null, y: Float32Array, tokens: number, pattern: BsrPattern): void {
  const [rows, cols] = pattern.shape;
  const [R, C] = pattern.blockShape;
  for (let t = 0; t < tokens; t++) {
    for (let i = 0; i < rows; i++) y[t * rows + i] = bias ? bias[i] : 0;
    for (let br = 0; br < pattern.blockRows; br++) {
      for (let k = pattern.blockRowPtr[br]; k < pattern.blockRowPtr[br + 1]; k++) {
        const bc = pattern.blockColIdx[k];
        for (let r = 0; r < R; r++) {
          let acc = 0;
          for (let c = 0; c < C; c++) acc += values[(k * R + r) * C + c] * x[t * cols + bc * C + c];
          y[t * rows + br * R + r] += acc;
        }
      }
    }
  }
}

/** dX [tokens, cols] = dY [tokens, rows] W. */
export function bsrMatmulF32(dy: Float32Array, values: Float32Array, dx: Float32Array, tokens: number, pattern: BsrPattern): void {
  const [rows, cols] = pattern.shape;
  const [R, C] = pattern.blockShape;
  dx.fill(0, 0, tokens * cols);
  for (let t = 0; t < tokens; t++) {
    for (let br = 0; br < pattern.blockRows; br++) {
      for (let k = pattern.blockRowPtr[br]; k < pattern.blockRowPtr[br + 1]; k++) {
        const bc = pattern.blockColIdx[k];
        for (let r = 0; r < R; r++) {
          const g = dy[t * rows + br * R + r];
          for (let c = 0; c < C; c++) dx[t * cols + bc * C + c] += g * values[(k * R + r) * C + c];
        }
      }
    }
  }
}

/** dW [nnz, R, C] = (dY^T X) on the pattern's blocks. */
export function sampledMatmulF32(dy: Float32Array, x: Float32Array, dw: Float32Array, tokens: number, pattern: BsrPattern): void {
  const [rows, cols] = pattern.shape;
  const [R, C] = pattern.blockShape;
  const { blockRow, blockCol } = pattern.coordinates;
  for (let k = 0; k < pattern.nnzBlocks; k++) {
    for (let r = 0; r < R; r++) {
      for (let c = 0; c < C; c++) {
        let acc = 0;
        for (let t = 0; t < tokens; t++) acc += dy[t * rows + blockRow[k] * R + r] * x[t * cols + blockCol[k] * C + c];
        dw[(k * R + r) * C + c] = acc;
      }
    }
  }
}

/** norms[k] = ||values[k]||_2 over each block of `blockSize` elements. */
export function blockNormsF32(values: Float32Array, norms: Float32Array, nnz: number, blockSize: number): void {
  for (let k = 0; k < nnz; k++) {
    let sum = 0;
    for (let i = 0; i < blockSize; i++) sum += values[k * blockSize + i] ** 2;
    norms[k] = Math.sqrt(sum);
  }
}
