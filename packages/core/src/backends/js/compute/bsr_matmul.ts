import { IndexError } from "../../../errors";
import { bsrMatmulOneToken, FEW_ROWS } from "./few_rows";
import { microKernel4x4, packPanels, panelLength, storeTile } from "./micro_kernel";
import { type BsrSizes, checkBlockGrid, checkCompressedIndex, checkDims, checkSpan } from "./validate";

/** Arguments of {@link bsrMatmulF32}; offsets count elements. */
export interface BsrMatmulArgs extends BsrSizes {
  /** dY [tokens, rows] row-major. */
  dy: Float32Array;
  /** W's blocks [nnzBlocks, blockHeight, blockWidth], each row-major, in block-row order. */
  values: Float32Array;
  /** dX [tokens, cols] row-major; written fully (or added to when accumulate). */
  dx: Float32Array;
  tokens: number;
  /** blockCols + 1 offsets into blockRowIdx: W's column-wise index. */
  blockColPtr: Int32Array;
  /** Block row of each block, walking column by column. */
  blockRowIdx: Int32Array;
  /** Position in values of each block of the column walk. */
  valueIndex: Int32Array;
  dyOffset?: number;
  valuesOffset?: number;
  dxOffset?: number;
  /** dX += dY W instead of dX = dY W. */
  accumulate?: boolean;
}

// Tokens packed at once: dY is packed once per chunk, a block column of W once per chunk.
const TOKEN_CHUNK = 64;

/**
 * dX = dY W with W block-sparse [rows, cols]: for each block column, a 4x4-tiled product
 * whose K dimension runs over the column's blocks, so each output is written once.
 */
export function bsrMatmulF32(args: BsrMatmulArgs): void {
  const fn = "bsrMatmulF32";
  const { dy, values, dx, tokens, rows, cols, blockHeight, blockWidth, blockColPtr, blockRowIdx, valueIndex } = args;
  const dyOffset = args.dyOffset ?? 0;
  const valuesOffset = args.valuesOffset ?? 0;
  const dxOffset = args.dxOffset ?? 0;
  const accumulate = args.accumulate ?? false;
  checkDims(fn, { tokens, dyOffset, valuesOffset, dxOffset });
  const [blockRows, blockCols] = checkBlockGrid(fn, args);
  const nnz = checkCompressedIndex(fn, "blockColPtr", blockColPtr, "blockRowIdx", blockRowIdx, blockCols, blockRows);
  if (valueIndex.length < nnz) throw new IndexError(`${fn}: valueIndex has ${valueIndex.length} entries, expected ${nnz}`);
  // A repeated entry read one block twice and another never: a wrong product, not an error.
  const seen = new Int32Array(nnz).fill(-1);
  for (let q = 0; q < nnz; q++) {
    const block = valueIndex[q];
    if (block < 0 || block >= nnz) throw new IndexError(`${fn}: valueIndex[${q}] = ${block} is outside [0, ${nnz})`);
    if (seen[block] >= 0) throw new IndexError(`${fn}: valueIndex[${q}] = ${block} repeats valueIndex[${seen[block]}] (it must name each block once)`);
    seen[block] = q;
  }
  checkSpan(fn, "dy", dy, dyOffset, 1, 0, tokens * rows);
  checkSpan(fn, "values", values, valuesOffset, 1, 0, nnz * blockHeight * blockWidth);
  checkSpan(fn, "dx", dx, dxOffset, 1, 0, tokens * cols);
  if (tokens === 0 || cols === 0) return;

  const R = blockHeight;
  const C = blockWidth;
  if (tokens < FEW_ROWS) {
    for (let t = 0; t < tokens; t++) {
      bsrMatmulOneToken(dy, dyOffset + t * rows, values, valuesOffset, dx, dxOffset + t * cols, accumulate, blockCols, R, C, blockColPtr, blockRowIdx, valueIndex);
    }
    return;
  }
  let maxColBlocks = 0;
  for (let bc = 0; bc < blockCols; bc++) maxColBlocks = Math.max(maxColBlocks, blockColPtr[bc + 1] - blockColPtr[bc]);
  const dyPanel = new Float64Array(panelLength(Math.min(TOKEN_CHUNK, tokens), rows));
  const wPanel = new Float64Array(panelLength(C, maxColBlocks * R));
  const segmentOffsets = new Int32Array(maxColBlocks);
  const tile = new Float64Array(16);

  for (let t0 = 0; t0 < tokens; t0 += TOKEN_CHUNK) {
    const tc = Math.min(TOKEN_CHUNK, tokens - t0);
    packPanels(dy, dyOffset + t0 * rows, rows, 1, tc, rows, dyPanel, 0);
    for (let bc = 0; bc < blockCols; bc++) {
      const first = blockColPtr[bc];
      const count = blockColPtr[bc + 1] - first;
      const dxBase = dxOffset + t0 * cols + bc * C;
      if (count === 0) {
        if (!accumulate) for (let t = 0; t < tc; t++) dx.fill(0, dxBase + t * cols, dxBase + t * cols + C);
        continue;
      }
      // W's block column as K x 4 panels of output columns: K runs over (block, row in block).
      const colK = count * R;
      for (let c0 = 0, d = 0; c0 < C; c0 += 4) {
        for (let q = 0; q < count; q++) {
          d = packPanels(values, valuesOffset + valueIndex[first + q] * R * C + c0, 1, C, Math.min(4, C - c0), R, wPanel, d);
        }
      }
      for (let q = 0; q < count; q++) segmentOffsets[q] = 4 * R * blockRowIdx[first + q];
      for (let s = 0; s < tc; s += 4) {
        const tokenRows = Math.min(4, tc - s);
        for (let c0 = 0; c0 < C; c0 += 4) {
          microKernel4x4(dyPanel, s * rows, segmentOffsets, count, R, wPanel, c0 * colK, tile);
          storeTile(tile, dx, dxBase + s * cols + c0, cols, tokenRows, Math.min(4, C - c0), accumulate);
        }
      }
    }
  }
}
