import { IndexError, ShapeError } from "../../../errors";

/** Throws ShapeError unless every entry is a non-negative integer. */
export function checkDims(fn: string, dims: Record<string, number>): void {
  for (const name in dims) {
    const value = dims[name];
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new ShapeError(`${fn}: ${name} must be a non-negative integer, got ${value}`);
    }
  }
}

/**
 * Throws ShapeError unless `array` holds `count` runs of `extent` elements starting at
 * `offset`, `stride` apart.
 */
export function checkSpan(fn: string, name: string, array: ArrayLike<number>, offset: number, count: number, stride: number, extent: number): void {
  if (count === 0 || extent === 0) return;
  const end = offset + (count - 1) * stride + extent;
  if (end > array.length) {
    const runs = count === 1 ? `${extent} elements from offset ${offset}` : `${count} runs of ${extent} elements, ${stride} apart, from offset ${offset}`;
    throw new ShapeError(`${fn}: ${name} has ${array.length} elements, needs ${end} (${runs})`);
  }
}

/** The sizes of a block-sparse matrix that the kernels read from its index arrays. */
export interface BsrSizes {
  rows: number;
  cols: number;
  blockHeight: number;
  blockWidth: number;
}

/** Checks the block grid and returns [blockRows, blockCols]. */
export function checkBlockGrid(fn: string, sizes: BsrSizes): [number, number] {
  const { rows, cols, blockHeight, blockWidth } = sizes;
  checkDims(fn, { rows, cols, blockHeight, blockWidth });
  if (blockHeight === 0 || blockWidth === 0) throw new ShapeError(`${fn}: block shape must be positive, got ${blockHeight}x${blockWidth}`);
  if (rows % blockHeight !== 0 || cols % blockWidth !== 0) {
    throw new ShapeError(`${fn}: shape ${rows}x${cols} is not a whole number of ${blockHeight}x${blockWidth} blocks`);
  }
  return [rows / blockHeight, cols / blockWidth];
}

/**
 * Checks a compressed index (CSR of blocks, or its transpose): `ptr` has `outer + 1`
 * non-decreasing offsets from 0, and every entry of `idx` below `ptr[outer]` is in [0, inner).
 * Returns the number of blocks.
 */
export function checkCompressedIndex(fn: string, ptrName: string, ptr: Int32Array, idxName: string, idx: Int32Array, outer: number, inner: number): number {
  if (ptr.length !== outer + 1) throw new ShapeError(`${fn}: ${ptrName} must have ${outer + 1} entries, got ${ptr.length}`);
  if (ptr[0] !== 0) throw new IndexError(`${fn}: ${ptrName}[0] must be 0, got ${ptr[0]}`);
  for (let i = 0; i < outer; i++) {
    if (ptr[i + 1] < ptr[i]) throw new IndexError(`${fn}: ${ptrName} decreases at ${i + 1} (${ptr[i]} then ${ptr[i + 1]})`);
  }
  const nnz = ptr[outer];
  if (idx.length < nnz) throw new ShapeError(`${fn}: ${idxName} has ${idx.length} entries, ${ptrName} says ${nnz}`);
  for (let q = 0; q < nnz; q++) {
    const v = idx[q];
    if (v < 0 || v >= inner) throw new IndexError(`${fn}: ${idxName}[${q}] = ${v} is outside [0, ${inner})`);
  }
  return nnz;
}
