import { microKernel4x4, packPanels, storeTile } from "./micro_kernel";
import { type BsrSizes, checkBlockGrid, checkCompressedIndex, checkDims, checkSpan } from "./validate";

/** Arguments of {@link sampledMatmulF32}; offsets count elements. */
export interface SampledMatmulArgs extends BsrSizes {
  /** dY [tokens, rows] row-major. */
  dy: Float32Array;
  /** X [tokens, cols] row-major. */
  x: Float32Array;
  /** dW [nnzBlocks, blockHeight, blockWidth] in block-row order; written fully (or added to when accumulate). */
  dw: Float32Array;
  tokens: number;
  /** blockRows + 1 offsets into blockColIdx. */
  blockRowPtr: Int32Array;
  /** Block column of each block. */
  blockColIdx: Int32Array;
  dyOffset?: number;
  xOffset?: number;
  dwOffset?: number;
  /** dW += (dY^T X) on the blocks instead of dW = (dY^T X) on the blocks. */
  accumulate?: boolean;
}

// Tokens (the K dimension) per pass: dY and X are packed for this many tokens at a time and
// the blocks of dW are accumulated over passes.
const TOKEN_CHUNK = 128;

/**
 * dW = (dY^T X) sampled on W's blocks (SDDMM): block (br, bc) gets
 * dY[:, br rows]^T X[:, bc cols], a 4x4-tiled product over the tokens.
 */
export function sampledMatmulF32(args: SampledMatmulArgs): void {
  const fn = "sampledMatmulF32";
  const { dy, x, dw, tokens, rows, cols, blockHeight, blockWidth, blockRowPtr, blockColIdx } = args;
  const dyOffset = args.dyOffset ?? 0;
  const xOffset = args.xOffset ?? 0;
  const dwOffset = args.dwOffset ?? 0;
  const accumulate = args.accumulate ?? false;
  checkDims(fn, { tokens, dyOffset, xOffset, dwOffset });
  const [blockRows, blockCols] = checkBlockGrid(fn, args);
  const nnz = checkCompressedIndex(fn, "blockRowPtr", blockRowPtr, "blockColIdx", blockColIdx, blockRows, blockCols);
  const R = blockHeight;
  const C = blockWidth;
  checkSpan(fn, "dy", dy, dyOffset, 1, 0, tokens * rows);
  checkSpan(fn, "x", x, xOffset, 1, 0, tokens * cols);
  checkSpan(fn, "dw", dw, dwOffset, 1, 0, nnz * R * C);
  if (nnz === 0) return;
  if (tokens === 0) {
    if (!accumulate) dw.fill(0, dwOffset, dwOffset + nnz * R * C);
    return;
  }

  // Panels of 4 rows (of a block row) or 4 columns (of a block column), tc tokens deep.
  const rowStrips = Math.ceil(R / 4);
  const colStrips = Math.ceil(C / 4);
  const chunk = Math.min(TOKEN_CHUNK, tokens);
  const dyPanel = new Float64Array(blockRows * rowStrips * 4 * chunk);
  const xPanel = new Float64Array(blockCols * colStrips * 4 * chunk);
  const usedCols = new Uint8Array(blockCols);
  for (let q = 0; q < nnz; q++) usedCols[blockColIdx[q]] = 1;
  const segmentOffsets = new Int32Array(1);
  const tile = new Float64Array(16);

  for (let t0 = 0; t0 < tokens; t0 += TOKEN_CHUNK) {
    const tc = Math.min(TOKEN_CHUNK, tokens - t0);
    const add = accumulate || t0 > 0;
    const rowPanel = rowStrips * 4 * tc;
    const colPanel = colStrips * 4 * tc;
    for (let br = 0; br < blockRows; br++) {
      if (blockRowPtr[br + 1] > blockRowPtr[br]) packPanels(dy, dyOffset + t0 * rows + br * R, 1, rows, R, tc, dyPanel, br * rowPanel);
    }
    for (let bc = 0; bc < blockCols; bc++) {
      if (usedCols[bc]) packPanels(x, xOffset + t0 * cols + bc * C, 1, cols, C, tc, xPanel, bc * colPanel);
    }
    for (let br = 0; br < blockRows; br++) {
      for (let blk = blockRowPtr[br]; blk < blockRowPtr[br + 1]; blk++) {
        const xBase = blockColIdx[blk] * colPanel;
        const dwBase = dwOffset + blk * R * C;
        for (let r0 = 0; r0 < R; r0 += 4) {
          const dyAt = br * rowPanel + r0 * tc;
          const tileRows = Math.min(4, R - r0);
          for (let c0 = 0; c0 < C; c0 += 4) {
            microKernel4x4(dyPanel, dyAt, segmentOffsets, 1, tc, xPanel, xBase + c0 * tc, tile);
            storeTile(tile, dw, dwBase + r0 * C + c0, C, tileRows, Math.min(4, C - c0), add);
          }
        }
      }
    }
  }
}
