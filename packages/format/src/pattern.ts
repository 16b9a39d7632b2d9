import { BsrFormatError, checkOptionKeys, quoted } from "./errors.js";
import { SeededRandom } from "./random.js";

/** `[rows, cols]` of a matrix, or `[R, C]` of a block. */
export type Shape2 = readonly [number, number];

/** The column-wise index of a pattern: the CSR of the transpose, plus a map back. */
export interface BsrColumnIndex {
  /** blockCols + 1 offsets into blockRowIdx. */
  readonly blockColPtr: Int32Array;
  /** Block row of each block, walking column by column; ascending within a column. */
  readonly blockRowIdx: Int32Array;
  /** valueIndex[k]: the block number (in values order) of the k-th block of that walk. */
  readonly valueIndex: Int32Array;
}

/** Block coordinates in values order: block k sits at (blockRow[k], blockCol[k]). */
export interface BsrCoordinates {
  readonly blockRow: Int32Array;
  readonly blockCol: Int32Array;
}

export interface BsrPatternInit {
  shape: Shape2;
  blockShape: Shape2;
  blockRowPtr: ArrayLike<number>;
  blockColIdx: ArrayLike<number>;
}

/**
 * The sparsity structure of a BSR matrix alone: immutable, validated on construction,
 * shared by every matrix (and every tensor of values) with the same pattern. Backends
 * cache device copies of its arrays keyed by the object, so its arrays are never mutated.
 */
export class BsrPattern {
  readonly shape: Shape2;
  readonly blockShape: Shape2;
  readonly blockRows: number;
  readonly blockCols: number;
  readonly nnzBlocks: number;
  /** blockRows + 1 offsets into blockColIdx: block row i holds blocks [ptr[i], ptr[i+1]). */
  readonly blockRowPtr: Int32Array;
  /** Block column of each block, ascending and unique within its block row. */
  readonly blockColIdx: Int32Array;
  /** nnzBlocks / (blockRows * blockCols). */
  readonly density: number;

  private cachedColumnIndex: BsrColumnIndex | undefined;
  private cachedCoordinates: BsrCoordinates | undefined;
  private cachedTranspose: { pattern: BsrPattern; valuePermutation: Int32Array } | undefined;

  /** Validates and copies the arrays; throws BsrFormatError naming the first violation. */
  constructor(init: BsrPatternInit) {
    if (init === null || typeof init !== "object") {
      throw new BsrFormatError("pattern", "expected { shape, blockShape, blockRowPtr, blockColIdx }");
    }
    const { blockRows, blockCols } = checkShapes(init.shape, init.blockShape);
    this.shape = Object.freeze([init.shape[0], init.shape[1]] as const);
    this.blockShape = Object.freeze([init.blockShape[0], init.blockShape[1]] as const);
    this.blockRows = blockRows;
    this.blockCols = blockCols;
    this.blockRowPtr = toInt32Indices(init.blockRowPtr, "blockRowPtr");
    this.blockColIdx = toInt32Indices(init.blockColIdx, "blockColIdx");
    checkIndices(blockRows, blockCols, this.blockRowPtr, this.blockColIdx);
    this.nnzBlocks = this.blockColIdx.length;
    const total = blockRows * blockCols;
    this.density = this.nnzBlocks / total;
  }

  /** Blocks where `mask` (blockRows * blockCols, row-major) is true or 1; an entry other than true, false, 1 or 0 is refused. */
  static fromMask(shape: Shape2, blockShape: Shape2, mask: ArrayLike<boolean | number>): BsrPattern {
    const { blockRows, blockCols } = checkShapes(shape, blockShape);
    checkArrayLike(mask, "mask", "an array of booleans or 0/1 numbers");
    if (mask.length !== blockRows * blockCols) {
      throw new BsrFormatError(
        "mask",
        `expected ${blockRows * blockCols} entries (${blockRows} block rows x ${blockCols} block columns), got ${mask.length}`,
      );
    }
    const blockRowPtr = new Int32Array(blockRows + 1);
    let nnz = 0;
    for (let i = 0; i < mask.length; i++) {
      const entry = mask[i];
      // Anything else was kept when truthy: block scores (0.2) or the string "0" silently kept their blocks.
      if (entry !== 0 && entry !== 1 && entry !== true && entry !== false) {
        throw new BsrFormatError("mask", `expected true / false or 1 / 0, got ${typeof entry === "string" ? JSON.stringify(entry) : String(entry)}`, i);
      }
      if (entry) nnz++;
    }
    const blockColIdx = new Int32Array(nnz);
    let k = 0;
    for (let row = 0; row < blockRows; row++) {
      for (let col = 0; col < blockCols; col++) if (mask[row * blockCols + col]) blockColIdx[k++] = col;
      blockRowPtr[row + 1] = k;
    }
    return new BsrPattern({ shape, blockShape, blockRowPtr, blockColIdx });
  }

  /** Every block present. */
  static dense(shape: Shape2, blockShape: Shape2): BsrPattern {
    const { blockRows, blockCols } = checkShapes(shape, blockShape);
    // Past int32 the mask or blockColIdx allocation failed with a bare RangeError.
    if (blockRows * blockCols >= 2 ** 31) throw new BsrFormatError("shape", `the block grid ${blockRows} x ${blockCols} does not fit int32 indices`);
    return BsrPattern.fromMask(shape, blockShape, new Uint8Array(blockRows * blockCols).fill(1));
  }

  /**
   * Exactly round(density * blockRows * blockCols) blocks chosen uniformly at random.
   * The same seed gives the same pattern everywhere (see SeededRandom).
   */
  static random(
    shape: Shape2,
    options: { blockShape: Shape2; density: number; seed: number | SeededRandom },
  ): BsrPattern {
    if (options === null || typeof options !== "object") {
      throw new BsrFormatError("options", "expected { blockShape, density, seed } after the shape");
    }
    checkOptionKeys(options, ["blockShape", "density", "seed"]);
    const { blockShape, density } = options;
    const { blockRows, blockCols } = checkShapes(shape, blockShape);
    checkDensity(density);
    const random = seededRandom(options.seed);
    const total = flatBlockCount(blockRows, blockCols);
    const count = Math.round(density * total);
    if (count > 2 ** 31 - 1) {
      throw new BsrFormatError("density", `${density} of ${total} blocks is ${count} blocks, more than int32 offsets can count`);
    }
    return BsrPattern.fromFlatBlocks(shape, blockShape, random.sampleWide(total, count));
  }

  /** Blocks at the given flat positions (row * blockCols + col): integers, strictly ascending. */
  static fromFlatBlocks(shape: Shape2, blockShape: Shape2, flatBlocks: ArrayLike<number>): BsrPattern {
    const { blockRows, blockCols } = checkShapes(shape, blockShape);
    checkArrayLike(flatBlocks, "flatBlocks", "an array of block positions");
    const blockRowPtr = new Int32Array(blockRows + 1);
    const blockColIdx = new Int32Array(flatBlocks.length);
    const total = flatBlockCount(blockRows, blockCols);
    for (let k = 0; k < flatBlocks.length; k++) {
      const flat = flatBlocks[k];
      if (typeof flat !== "number" || !Number.isInteger(flat)) {
        throw new BsrFormatError("flatBlocks", `expected an integer block position, got ${quoted(flat)}`, k);
      }
      if (flat < 0 || flat >= total) {
        throw new BsrFormatError("flatBlocks", `block ${flat} is outside ${blockRows} x ${blockCols} blocks`, k);
      }
      if (k > 0 && flat <= flatBlocks[k - 1]) {
        const why = flat === flatBlocks[k - 1] ? "repeats the previous entry" : `follows ${flatBlocks[k - 1]}`;
        throw new BsrFormatError("flatBlocks", `block ${flat} ${why}: positions must be strictly ascending`, k);
      }
      const row = Math.floor(flat / blockCols);
      blockColIdx[k] = flat - row * blockCols;
      blockRowPtr[row + 1]++;
    }
    for (let row = 0; row < blockRows; row++) blockRowPtr[row + 1] += blockRowPtr[row];
    return new BsrPattern({ shape, blockShape, blockRowPtr, blockColIdx });
  }

  /** Column-wise index (the transpose), built on first use and cached. */
  get columnIndex(): BsrColumnIndex {
    if (this.cachedColumnIndex) return this.cachedColumnIndex;
    const blockColPtr = new Int32Array(this.blockCols + 1);
    for (let k = 0; k < this.nnzBlocks; k++) blockColPtr[this.blockColIdx[k] + 1]++;
    for (let col = 0; col < this.blockCols; col++) blockColPtr[col + 1] += blockColPtr[col];
    const next = blockColPtr.slice(0, this.blockCols);
    const blockRowIdx = new Int32Array(this.nnzBlocks);
    const valueIndex = new Int32Array(this.nnzBlocks);
    // Walking rows in order keeps block rows ascending within each column.
    for (let row = 0; row < this.blockRows; row++) {
      for (let k = this.blockRowPtr[row]; k < this.blockRowPtr[row + 1]; k++) {
        const slot = next[this.blockColIdx[k]]++;
        blockRowIdx[slot] = row;
        valueIndex[slot] = k;
      }
    }
    this.cachedColumnIndex = Object.freeze({ blockColPtr, blockRowIdx, valueIndex });
    return this.cachedColumnIndex;
  }

  /** Flat block coordinates in values order, built on first use and cached. */
  get coordinates(): BsrCoordinates {
    if (this.cachedCoordinates) return this.cachedCoordinates;
    const blockRow = new Int32Array(this.nnzBlocks);
    for (let row = 0; row < this.blockRows; row++) {
      blockRow.fill(row, this.blockRowPtr[row], this.blockRowPtr[row + 1]);
    }
    this.cachedCoordinates = Object.freeze({ blockRow, blockCol: this.blockColIdx.slice() });
    return this.cachedCoordinates;
  }

  /** 1 where a block is present: blockRows * blockCols entries, row-major. */
  blockMask(): Uint8Array {
    let mask: Uint8Array;
    try {
      mask = new Uint8Array(this.blockRows * this.blockCols);
    } catch {
      // A valid grid may hold far more blocks than one array can (2^31 - 2 on a side): that was a bare RangeError.
      throw new BsrFormatError("shape", `the mask of the ${this.blockRows} x ${this.blockCols} block grid is too large for one Uint8Array`);
    }
    for (let row = 0; row < this.blockRows; row++) {
      for (let k = this.blockRowPtr[row]; k < this.blockRowPtr[row + 1]; k++) {
        mask[row * this.blockCols + this.blockColIdx[k]] = 1;
      }
    }
    return mask;
  }

  /**
   * The pattern of the transposed matrix (shape and block shape swapped) and where each
   * of its blocks comes from: valuePermutation[newBlock] = oldBlock. Cached, so every
   * transpose of one pattern is the same object.
   */
  transpose(): { pattern: BsrPattern; valuePermutation: Int32Array } {
    if (this.cachedTranspose) return this.cachedTranspose;
    const { blockColPtr, blockRowIdx, valueIndex } = this.columnIndex;
    const pattern = new BsrPattern({
      shape: [this.shape[1], this.shape[0]],
      blockShape: [this.blockShape[1], this.blockShape[0]],
      blockRowPtr: blockColPtr,
      blockColIdx: blockRowIdx,
    });
    this.cachedTranspose = Object.freeze({ pattern, valuePermutation: valueIndex });
    return this.cachedTranspose;
  }

  /** Same shape, block shape and blocks; false for anything that is not a pattern (null, undefined, a plain object). */
  equals(other: BsrPattern): boolean {
    if (this === other) return true;
    // Compared by its fields, so that a pattern from another copy of this package compares too; anything else is unequal.
    if (!isPatternLike(other)) return false;
    return (
      this.shape[0] === other.shape[0] &&
      this.shape[1] === other.shape[1] &&
      this.blockShape[0] === other.blockShape[0] &&
      this.blockShape[1] === other.blockShape[1] &&
      sameInts(this.blockRowPtr, other.blockRowPtr) &&
      sameInts(this.blockColIdx, other.blockColIdx)
    );
  }

  /**
   * Re-checks every invariant of the arrays (they are shared, so a careless caller could
   * have written into them). Throws BsrFormatError naming the field and position.
   */
  validate(): void {
    checkShapes(this.shape, this.blockShape);
    checkIndices(this.blockRows, this.blockCols, this.blockRowPtr, this.blockColIdx);
  }
}

function isPatternLike(value: unknown): value is BsrPattern {
  if (value === null || typeof value !== "object") return false;
  const { shape, blockShape, blockRowPtr, blockColIdx } = value as Partial<Record<keyof BsrPattern, unknown>>;
  const isPair = (pair: unknown) => Array.isArray(pair) && pair.length === 2;
  return isPair(shape) && isPair(blockShape) && blockRowPtr instanceof Int32Array && blockColIdx instanceof Int32Array;
}

function sameInts(a: Int32Array, b: Int32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The divisors of `n` in increasing order (at most the first 64): the block sizes that tile a dimension of n. */
export function divisors(n: number): number[] {
  // Past 2^53 (or at Infinity) the trial division below runs for hours: such an n is no dimension.
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 1) {
    throw new BsrFormatError("n", `expected a positive integer (at most 2^53 - 1), got ${quoted(n)}`);
  }
  // Trial division up to sqrt(n), pairing each divisor with n / d: a dimension read from a
  // file can be any safe integer, and walking up to n itself would not finish.
  const small: number[] = [];
  const large: number[] = [];
  for (let d = 1; d * d <= n && small.length < 64; d++) {
    if (n % d !== 0) continue;
    small.push(d);
    if (d * d !== n) large.push(n / d);
  }
  return [...small, ...large.reverse()].slice(0, 64);
}

function checkDimension(value: unknown, field: string, position: number): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1) {
    throw new BsrFormatError(field, `expected a positive integer, got ${quoted(value)}`, position);
  }
  return value;
}

/** Checks shape and block shape; returns the block grid. */
export function checkShapes(shape: Shape2, blockShape: Shape2): { blockRows: number; blockCols: number } {
  if (!Array.isArray(shape) || shape.length !== 2) {
    throw new BsrFormatError("shape", `expected [rows, cols], got ${quoted(shape)}`);
  }
  if (!Array.isArray(blockShape) || blockShape.length !== 2) {
    throw new BsrFormatError("blockShape", `expected [R, C], got ${quoted(blockShape)}`);
  }
  const rows = checkDimension(shape[0], "shape", 0);
  const cols = checkDimension(shape[1], "shape", 1);
  const blockHeight = checkDimension(blockShape[0], "blockShape", 0);
  const blockWidth = checkDimension(blockShape[1], "blockShape", 1);
  if (rows % blockHeight !== 0) {
    throw new BsrFormatError(
      "blockShape",
      `block height R=${blockHeight} does not divide rows=${rows}; R values that do: ${divisors(rows).join(", ")}`,
      0,
    );
  }
  if (cols % blockWidth !== 0) {
    throw new BsrFormatError(
      "blockShape",
      `block width C=${blockWidth} does not divide cols=${cols}; C values that do: ${divisors(cols).join(", ")}`,
      1,
    );
  }
  const blockRows = rows / blockHeight;
  const blockCols = cols / blockWidth;
  if (blockRows > 2 ** 31 - 2 || blockCols > 2 ** 31 - 2) {
    throw new BsrFormatError("shape", `the block grid ${blockRows} x ${blockCols} does not fit int32 indices`);
  }
  return { blockRows, blockCols };
}

/** blockRows * blockCols, when every flat position (row * blockCols + col) is an exact double. */
function flatBlockCount(blockRows: number, blockCols: number): number {
  const total = blockRows * blockCols;
  if (total > 2 ** 53) {
    throw new BsrFormatError("shape", `the block grid ${blockRows} x ${blockCols} has more than 2^53 blocks: flat block positions would not be exact`);
  }
  return total;
}

/** `value` must be an array or typed array (null, a number or a string are named in the error). */
export function checkArrayLike(value: unknown, field: string, expected: string): asserts value is ArrayLike<unknown> {
  const isArrayLike = Array.isArray(value) || (ArrayBuffer.isView(value) && !(value instanceof DataView));
  if (!isArrayLike) {
    const got = value === null || value === undefined ? String(value) : typeof value === "object" ? value.constructor?.name : typeof value;
    throw new BsrFormatError(field, `expected ${expected}, got ${got}`);
  }
}

/** The generator behind a seed: required, so that a pattern is always reproducible. */
export function seededRandom(seed: unknown): SeededRandom {
  if (seed instanceof SeededRandom) return seed;
  if (typeof seed !== "number" || !Number.isSafeInteger(seed)) {
    throw new BsrFormatError("seed", `expected a safe integer or a SeededRandom (the same seed gives the same blocks), got ${String(seed)}`);
  }
  return new SeededRandom(seed);
}

export function checkDensity(density: number): void {
  if (typeof density !== "number" || !(density >= 0 && density <= 1)) {
    throw new BsrFormatError("density", `expected a number in [0, 1], got ${String(density)}`);
  }
}

/** A fresh Int32Array of the given integers; rejects non-integers and int32 overflow. */
function toInt32Indices(values: ArrayLike<number>, field: string): Int32Array {
  // A length of NaN made an empty array (a silent empty pattern), -1 a bare RangeError.
  if (typeof values !== "object" || !(values?.length >= 0)) {
    throw new BsrFormatError(field, `expected an array of integers, got ${String(values)}`);
  }
  // An array-like's length past int32 (2^40, Infinity) threw a bare RangeError from the Int32Array: no int32 index has that many entries.
  if (!Number.isInteger(values.length) || values.length >= 2 ** 31) {
    throw new BsrFormatError(field, `expected an array of at most 2^31 - 1 int32 indices, got length ${String(values.length)}`);
  }
  if (values instanceof Int32Array) return values.slice();
  const out = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const value = values[i];
    if (typeof value !== "number" || !Number.isInteger(value) || value < -(2 ** 31) || value >= 2 ** 31) {
      // A bigint prints as the number it holds: say what it is, or "got 0" reads like a refused valid index.
      const got = typeof value === "bigint" ? `the bigint ${value}n (pass numbers, or a BigInt64Array)` : quoted(value);
      throw new BsrFormatError(field, `expected an int32 index, got ${got}`, i);
    }
    out[i] = value;
  }
  return out;
}

/** Every invariant of the row-wise index, with the first violation named. */
function checkIndices(blockRows: number, blockCols: number, blockRowPtr: Int32Array, blockColIdx: Int32Array): void {
  if (blockRowPtr.length !== blockRows + 1) {
    throw new BsrFormatError(
      "blockRowPtr",
      `expected length blockRows + 1 = ${blockRows + 1}, got ${blockRowPtr.length}`,
    );
  }
  if (blockRowPtr[0] !== 0) throw new BsrFormatError("blockRowPtr", `must start at 0, got ${blockRowPtr[0]}`, 0);
  for (let row = 0; row < blockRows; row++) {
    if (blockRowPtr[row + 1] < blockRowPtr[row]) {
      throw new BsrFormatError(
        "blockRowPtr",
        `decreases from ${blockRowPtr[row]} to ${blockRowPtr[row + 1]} (offsets never decrease)`,
        row + 1,
      );
    }
  }
  const nnz = blockColIdx.length;
  if (blockRowPtr[blockRows] !== nnz) {
    throw new BsrFormatError(
      "blockRowPtr",
      `must end at nnzBlocks = blockColIdx.length = ${nnz}, got ${blockRowPtr[blockRows]}`,
      blockRows,
    );
  }
  for (let row = 0; row < blockRows; row++) {
    const end = blockRowPtr[row + 1];
    for (let k = blockRowPtr[row]; k < end; k++) {
      const col = blockColIdx[k];
      if (col < 0 || col >= blockCols) {
        throw new BsrFormatError("blockColIdx", `column ${col} is outside [0, ${blockCols}) (block row ${row})`, k);
      }
      if (k > blockRowPtr[row] && col <= blockColIdx[k - 1]) {
        throw new BsrFormatError(
          "blockColIdx",
          `column ${col} follows ${blockColIdx[k - 1]} in block row ${row}: columns must be strictly increasing (SciPy: sort_indices(), sum_duplicates())`,
          k,
        );
      }
    }
  }
}
