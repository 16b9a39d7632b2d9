import { ShapeError } from "../../../errors";
import { matmulFewRows } from "./few_rows";
import { microKernel4x4, packPanels, panelLength, storeTile } from "./micro_kernel";
import { checkDims, checkSpan } from "./validate";

/** Arguments of {@link matmulF32}; offsets and strides count elements, not bytes. */
export interface MatmulArgs {
  /** op(A) is m x k: A is [m, k] row-major, or [k, m] when transposeA. */
  a: Float32Array;
  /** op(B) is k x n: B is [k, n] row-major, or [n, k] when transposeB. */
  b: Float32Array;
  /** C is [m, n] row-major; written fully (or added to when accumulate). */
  c: Float32Array;
  m: number;
  n: number;
  k: number;
  transposeA?: boolean;
  transposeB?: boolean;
  aOffset?: number;
  bOffset?: number;
  cOffset?: number;
  /** Number of products; default 1. */
  batch?: number;
  /** Elements between consecutive A matrices; 0 broadcasts one A to every product. Default m * k. */
  aBatchStride?: number;
  /** Elements between consecutive B matrices; 0 broadcasts one B. Default k * n. */
  bBatchStride?: number;
  /** Elements between consecutive C matrices; default m * n. */
  cBatchStride?: number;
  /** C += op(A) op(B) instead of C = op(A) op(B). */
  accumulate?: boolean;
}

// Cache blocking (GotoBLAS order): a KC x NC slab of B and an MC x KC block of A are
// packed once and swept by the 4x4 kernel; an A block (128 KiB) stays in L2 and a
// B micro-panel (16 KiB) in L1. Long K runs amortize each tile's call and store.
const KC = 512;
const MC = 32;
const NC = 1024;
// Below this many rows of C, packing B costs more than the 4x4 tiles save (measured at k = n = 1024).
const FEW_ROWS = 8;

/** C[i] = op(A[i]) op(B[i]) for each product i of the batch, float32 in and out, float64 sums. */
export function matmulF32(args: MatmulArgs): void {
  const { a, b, c, m, n, k } = args;
  const transposeA = args.transposeA ?? false;
  const transposeB = args.transposeB ?? false;
  const aOffset = args.aOffset ?? 0;
  const bOffset = args.bOffset ?? 0;
  const cOffset = args.cOffset ?? 0;
  const batch = args.batch ?? 1;
  const aBatchStride = args.aBatchStride ?? m * k;
  const bBatchStride = args.bBatchStride ?? k * n;
  const cBatchStride = args.cBatchStride ?? m * n;
  const accumulate = args.accumulate ?? false;
  checkDims("matmulF32", { m, n, k, batch, aOffset, bOffset, cOffset, aBatchStride, bBatchStride, cBatchStride });
  if (batch > 1 && cBatchStride < m * n) throw new ShapeError(`matmulF32: cBatchStride ${cBatchStride} would overlap outputs of ${m * n} elements`);
  if (batch === 0 || m === 0 || n === 0) return;
  checkSpan("matmulF32", "a", a, aOffset, batch, aBatchStride, m * k);
  checkSpan("matmulF32", "b", b, bOffset, batch, bBatchStride, k * n);
  checkSpan("matmulF32", "c", c, cOffset, batch, cBatchStride, m * n);
  if (k === 0) {
    if (!accumulate) for (let i = 0; i < batch; i++) c.fill(0, cOffset + i * cBatchStride, cOffset + i * cBatchStride + m * n);
    return;
  }
  // op(A)(i, p) = a[i * aRowStride + p * aStep]; op(B)(p, j) = b[j * bColStride + p * bStep].
  const aRowStride = transposeA ? 1 : k;
  const aStep = transposeA ? m : 1;
  const bColStride = transposeB ? k : 1;
  const bStep = transposeB ? 1 : n;
  if (m < FEW_ROWS) {
    const aRow = new Float64Array(k);
    const cRow = new Float64Array(n);
    for (let item = 0; item < batch; item++) {
      const aBase = aOffset + item * aBatchStride;
      matmulFewRows(a, aBase, aRowStride, aStep, b, bOffset + item * bBatchStride, transposeB, c, cOffset + item * cBatchStride, m, n, k, accumulate, aRow, cRow);
    }
    return;
  }
  const kc0 = Math.min(KC, k);
  const aPanel = new Float64Array(panelLength(Math.min(MC, m), kc0));
  const bPanel = new Float64Array(panelLength(Math.min(NC, n), kc0));
  const segmentOffsets = new Int32Array(1);
  const tile = new Float64Array(16);
  for (let item = 0; item < batch; item++) {
    const aBase = aOffset + item * aBatchStride;
    const bBase = bOffset + item * bBatchStride;
    const cBase = cOffset + item * cBatchStride;
    for (let jc = 0; jc < n; jc += NC) {
      const nc = Math.min(NC, n - jc);
      for (let pc = 0; pc < k; pc += KC) {
        const kc = Math.min(KC, k - pc);
        const add = accumulate || pc > 0;
        packPanels(b, bBase + jc * bColStride + pc * bStep, bColStride, bStep, nc, kc, bPanel, 0);
        for (let ic = 0; ic < m; ic += MC) {
          const mc = Math.min(MC, m - ic);
          packPanels(a, aBase + ic * aRowStride + pc * aStep, aRowStride, aStep, mc, kc, aPanel, 0);
          for (let jr = 0; jr < nc; jr += 4) {
            const cols = Math.min(4, nc - jr);
            const bPanelOffset = jr * kc;
            for (let ir = 0; ir < mc; ir += 4) {
              microKernel4x4(aPanel, ir * kc, segmentOffsets, 1, kc, bPanel, bPanelOffset, tile);
              storeTile(tile, c, cBase + (ic + ir) * n + jc + jr, n, Math.min(4, mc - ir), cols, add);
            }
          }
        }
      }
    }
  }
}
