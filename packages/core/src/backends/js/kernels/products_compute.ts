/**
 * Adapters from the kernel layer to the cache-blocked compute functions: every product
 * kernel of the js backend goes through these, on float32 arrays.
 */
import type { BsrPattern } from "@blocksparse/format";
import * as compute from "../compute";

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
  compute.matmulF32({ a, aOffset, b, bOffset, c, cOffset, m, n, k, transposeA, transposeB });
}

function sizes(pattern: BsrPattern): compute.BsrSizes {
  const [rows, cols] = pattern.shape;
  const [blockHeight, blockWidth] = pattern.blockShape;
  return { rows, cols, blockHeight, blockWidth };
}

/** Y [tokens, rows] = X [tokens, cols] W^T + bias. */
export function bsrLinearF32(x: Float32Array, values: Float32Array, bias: Float32Array | null, y: Float32Array, tokens: number, pattern: BsrPattern): void {
  const { blockRowPtr, blockColIdx } = pattern;
  compute.bsrLinearF32({ ...sizes(pattern), x, values, bias, y, tokens, blockRowPtr, blockColIdx });
}

/** dX [tokens, cols] = dY [tokens, rows] W. */
export function bsrMatmulF32(dy: Float32Array, values: Float32Array, dx: Float32Array, tokens: number, pattern: BsrPattern): void {
  const { blockColPtr, blockRowIdx, valueIndex } = pattern.columnIndex;
  compute.bsrMatmulF32({ ...sizes(pattern), dy, values, dx, tokens, blockColPtr, blockRowIdx, valueIndex });
}

/** dW [nnz, R, C] = (dY^T X) on the pattern's blocks. */
export function sampledMatmulF32(dy: Float32Array, x: Float32Array, dw: Float32Array, tokens: number, pattern: BsrPattern): void {
  const { blockRowPtr, blockColIdx } = pattern;
  compute.sampledMatmulF32({ ...sizes(pattern), dy, x, dw, tokens, blockRowPtr, blockColIdx });
}

/** norms[k] = ||values[k]||_2 over each block of `blockSize` elements. */
export function blockNormsF32(values: Float32Array, norms: Float32Array, nnz: number, blockSize: number): void {
  compute.blockNormsF32({ values, norms, blockCount: nnz, blockSize });
}
