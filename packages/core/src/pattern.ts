/**
 * The part of @blocksparse/format's BsrPattern that kernels read. Kernels receive the
 * pattern object itself as an attribute; backends may cache per-pattern device data in a
 * WeakMap keyed by it (patterns are immutable).
 */
export interface BsrPattern {
  /** [rows, cols] of the dense matrix. */
  readonly shape: readonly [number, number];
  /** [R, C] of each block. */
  readonly blockShape: readonly [number, number];
  readonly blockRows: number;
  readonly blockCols: number;
  readonly nnzBlocks: number;
  /** Int32Array(blockRows + 1): blocks of block-row i are values[blockRowPtr[i] .. blockRowPtr[i+1]). */
  readonly blockRowPtr: Int32Array;
  /** Int32Array(nnzBlocks): block column of each block, sorted within a block row. */
  readonly blockColIdx: Int32Array;
  /** Column-wise index: blocks of block-column j, with their position in values. */
  readonly columnIndex: {
    readonly blockColPtr: Int32Array;
    readonly blockRowIdx: Int32Array;
    readonly valueIndex: Int32Array;
  };
  /** Flat coordinates of each block in values order. */
  readonly coordinates: { readonly blockRow: Int32Array; readonly blockCol: Int32Array };
}
