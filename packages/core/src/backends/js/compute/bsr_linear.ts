import { bsrLinearOneToken, FEW_ROWS } from "./few_rows";
import { microKernel4x4, packPanels, panelLength, storeTile } from "./micro_kernel";
import { type BsrSizes, checkBlockGrid, checkCompressedIndex, checkDims, checkSpan } from "./validate";

/** Arguments of {@link bsrLinearF32}; offsets count elements. */
export interface BsrLinearArgs extends BsrSizes {
  /** X [tokens, cols] row-major. */
  x: Float32Array;
  /** W's blocks [nnzBlocks, blockHeight, blockWidth], each row-major, in block-row order. */
  values: Float32Array;
  /** bias [rows], or null. */
  bias?: Float32Array | null;
  /** Y [tokens, rows] row-major; written fully. */
  y: Float32Array;
  tokens: number;
  /** blockRows + 1 offsets into blockColIdx. */
  blockRowPtr: Int32Array;
  /** Block column of each block. */
  blockColIdx: Int32Array;
  xOffset?: number;
  valuesOffset?: number;
  biasOffset?: number;
  yOffset?: number;
}

// Tokens packed at once (64 x cols float64 = 512 KiB at cols = 1024): X is packed once per
// chunk, a block row of W once per chunk and block row.
const TOKEN_CHUNK = 64;

/**
 * Y = X W^T (+ bias) with W block-sparse [rows, cols]: for each block row, a 4x4-tiled
 * product whose K dimension runs over the row's blocks, gathered from packed X.
 */
export function bsrLinearF32(args: BsrLinearArgs): void {
  const fn = "bsrLinearF32";
  const { x, values, y, tokens, rows, cols, blockHeight, blockWidth, blockRowPtr, blockColIdx } = args;
  const bias = args.bias ?? null;
  const xOffset = args.xOffset ?? 0;
  const valuesOffset = args.valuesOffset ?? 0;
  const biasOffset = args.biasOffset ?? 0;
  const yOffset = args.yOffset ?? 0;
  checkDims(fn, { tokens, xOffset, valuesOffset, biasOffset, yOffset });
  const [blockRows, blockCols] = checkBlockGrid(fn, args);
  const nnz = checkCompressedIndex(fn, "blockRowPtr", blockRowPtr, "blockColIdx", blockColIdx, blockRows, blockCols);
  checkSpan(fn, "x", x, xOffset, 1, 0, tokens * cols);
  checkSpan(fn, "values", values, valuesOffset, 1, 0, nnz * blockHeight * blockWidth);
  if (bias) checkSpan(fn, "bias", bias, biasOffset, 1, 0, rows);
  checkSpan(fn, "y", y, yOffset, 1, 0, tokens * rows);
  if (tokens === 0 || rows === 0) return;

  const R = blockHeight;
  const C = blockWidth;
  if (tokens < FEW_ROWS) {
    for (let t = 0; t < tokens; t++) {
      bsrLinearOneToken(x, xOffset + t * cols, values, valuesOffset, bias, biasOffset, y, yOffset + t * rows, blockRows, R, C, blockRowPtr, blockColIdx);
    }
    return;
  }
  let maxRowBlocks = 0;
  for (let br = 0; br < blockRows; br++) maxRowBlocks = Math.max(maxRowBlocks, blockRowPtr[br + 1] - blockRowPtr[br]);
  const xPanel = new Float64Array(panelLength(Math.min(TOKEN_CHUNK, tokens), cols));
  const wPanel = new Float64Array(panelLength(R, maxRowBlocks * C));
  const segmentOffsets = new Int32Array(maxRowBlocks);
  const tile = new Float64Array(16);

  for (let t0 = 0; t0 < tokens; t0 += TOKEN_CHUNK) {
    const tc = Math.min(TOKEN_CHUNK, tokens - t0);
    packPanels(x, xOffset + t0 * cols, cols, 1, tc, cols, xPanel, 0);
    for (let br = 0; br < blockRows; br++) {
      const first = blockRowPtr[br];
      const count = blockRowPtr[br + 1] - first;
      const yBase = yOffset + t0 * rows + br * R;
      if (bias) {
        const b0 = biasOffset + br * R;
        for (let t = 0, o = yBase; t < tc; t++, o += rows) for (let r = 0; r < R; r++) y[o + r] = bias[b0 + r];
      } else if (count === 0) {
        for (let t = 0; t < tc; t++) y.fill(0, yBase + t * rows, yBase + t * rows + R);
      }
      if (count === 0) continue;
      // W's block row as K x 4 panels of output rows: K runs over (block, column in block).
      const rowK = count * C;
      for (let r0 = 0, d = 0; r0 < R; r0 += 4) {
        for (let q = 0; q < count; q++) {
          d = packPanels(values, valuesOffset + ((first + q) * R + r0) * C, C, 1, Math.min(4, R - r0), C, wPanel, d);
        }
      }
      for (let q = 0; q < count; q++) segmentOffsets[q] = 4 * C * blockColIdx[first + q];
      for (let s = 0; s < tc; s += 4) {
        const tokenRows = Math.min(4, tc - s);
        for (let r0 = 0; r0 < R; r0 += 4) {
          microKernel4x4(xPanel, s * cols, segmentOffsets, count, C, wPanel, r0 * rowK, tile);
          storeTile(tile, y, yBase + s * rows + r0, rows, tokenRows, Math.min(4, R - r0), bias !== null);
        }
      }
    }
  }
}
