import { type BsrDType, type BsrValues, checkDType, checkNumbers, decodeValues, encodeValues, isBsrDType } from "./dtype.js";
import { BsrFormatError, checkOptionKeys, parseWith, quoted } from "./errors.js";
import { BsrPattern, checkArrayLike, checkDensity, checkShapes, type Shape2, seededRandom } from "./pattern.js";
import { scipyBsrInputSchema, torchBsrInputSchema } from "./schema.js";

export interface FromDenseOptions {
  blockShape: Shape2;
  /** Keep the blocks this mask names (blockRows * blockCols, row-major, true / false or 1 / 0). */
  mask?: ArrayLike<boolean | number>;
  /** Keep the round(density * blocks) strongest blocks by L2 norm (ties: lower index first). */
  density?: number;
  dtype?: BsrDType;
}

export interface RandomMatrixOptions {
  blockShape: Shape2;
  density: number;
  seed: number;
  dtype?: BsrDType;
  /** Standard deviation of the normal values (default 1). */
  std?: number;
}

/** PyTorch's BSR layout as plain arrays (`torch.sparse_bsr_tensor(crow, col, values, size)`). */
export interface TorchBsrLayout {
  crowIndices: Int32Array;
  colIndices: Int32Array;
  values: BsrValues;
  valuesShape: [number, number, number];
  size: [number, number];
  dtype: BsrDType;
}

/** SciPy's `bsr_matrix((data, indices, indptr), shape=shape)` as plain arrays. */
export interface ScipyBsrLayout {
  indptr: Int32Array;
  indices: Int32Array;
  data: BsrValues;
  dataShape: [number, number, number];
  shape: [number, number];
  dtype: BsrDType;
}

/** Index arrays accepted from outside: int32, int64 or uint64 (as PyTorch and NumPy often use) or numbers. */
export type IndexArrayInput = Int32Array | BigInt64Array | BigUint64Array | ArrayLike<number>;
/** Values accepted from outside: float32 numbers, or raw 16-bit patterns with a 16-bit dtype. */
export type ValuesInput = Float32Array | Uint16Array | ArrayLike<number>;

export interface TorchBsrInput {
  crowIndices: IndexArrayInput;
  colIndices: IndexArrayInput;
  values: ValuesInput;
  valuesShape: readonly [number, number, number];
  size: Shape2;
  dtype?: BsrDType;
}

export interface ScipyBsrInput {
  indptr: IndexArrayInput;
  indices: IndexArrayInput;
  data: ValuesInput;
  dataShape: readonly [number, number, number];
  shape: Shape2;
  dtype?: BsrDType;
}

/**
 * A block-sparse row matrix: a shared, immutable BsrPattern plus its block values
 * (nnzBlocks * R * C, each block row-major, blocks in the pattern's order).
 */
export class BsrMatrix {
  readonly pattern: BsrPattern;
  readonly dtype: BsrDType;
  /** Float32Array for float32; raw IEEE half / bfloat16 bits for the 16-bit dtypes. */
  readonly values: BsrValues;

  private constructor(pattern: BsrPattern, values: BsrValues, dtype: BsrDType) {
    this.pattern = pattern;
    this.values = values;
    this.dtype = dtype;
  }

  get shape(): Shape2 {
    return this.pattern.shape;
  }
  get blockShape(): Shape2 {
    return this.pattern.blockShape;
  }
  get blockRows(): number {
    return this.pattern.blockRows;
  }
  get blockCols(): number {
    return this.pattern.blockCols;
  }
  get blockRowPtr(): Int32Array {
    return this.pattern.blockRowPtr;
  }
  get blockColIdx(): Int32Array {
    return this.pattern.blockColIdx;
  }
  get nnzBlocks(): number {
    return this.pattern.nnzBlocks;
  }
  get density(): number {
    return this.pattern.density;
  }
  /** Elements in one block: R * C. */
  get blockSize(): number {
    return this.pattern.blockShape[0] * this.pattern.blockShape[1];
  }

  /**
   * A matrix over `pattern`. A Float32Array or Uint16Array is kept as is (not copied);
   * float32 numbers given with a 16-bit dtype are rounded to it. Without `dtype`,
   * a Float32Array means float32; a Uint16Array needs its dtype named.
   */
  static fromPattern(pattern: BsrPattern, values: ValuesInput, dtype?: BsrDType): BsrMatrix {
    if (!(pattern instanceof BsrPattern)) throw new BsrFormatError("pattern", "expected a BsrPattern");
    const resolved = dtype ?? (values instanceof Uint16Array ? undefined : "float32");
    if (resolved === undefined) {
      throw new BsrFormatError("dtype", 'Uint16Array values hold 16-bit patterns: name the dtype ("float16" or "bfloat16")');
    }
    checkDType(resolved);
    const stored = toStoredValues(values, resolved);
    const expected = pattern.nnzBlocks * pattern.blockShape[0] * pattern.blockShape[1];
    if (stored.length !== expected) {
      throw new BsrFormatError(
        "values",
        `expected nnzBlocks * R * C = ${pattern.nnzBlocks} * ${pattern.blockShape[0]} * ${pattern.blockShape[1]} = ${expected} elements, got ${stored.length}`,
      );
    }
    return new BsrMatrix(pattern, stored, resolved);
  }

  /**
   * A BSR matrix from a dense row-major array (rows * cols). Keeps the blocks `mask`
   * names, or the strongest blocks to reach `density`, or else every block holding a
   * non-zero. A NaN block counts as the strongest, so it is never silently dropped.
   */
  static fromDense(dense: ArrayLike<number>, shape: Shape2, options: FromDenseOptions): BsrMatrix {
    if (options === null || typeof options !== "object") {
      throw new BsrFormatError("options", "expected { blockShape, mask?, density?, dtype? } after the shape");
    }
    checkOptionKeys(options, ["blockShape", "mask", "density", "dtype"]);
    const { blockShape, mask, density } = options;
    const { blockRows, blockCols } = checkShapes(shape, blockShape);
    checkArrayLike(dense, "dense", "an array of numbers (rows * cols, row-major)");
    checkDenseNumbers(dense);
    const [rows, cols] = shape;
    const [blockHeight, blockWidth] = blockShape;
    if (dense.length !== rows * cols) {
      throw new BsrFormatError("dense", `expected rows * cols = ${rows} * ${cols} = ${rows * cols} elements, got ${dense.length}`);
    }
    if (mask !== undefined && density !== undefined) {
      throw new BsrFormatError("options", "give either mask or density, not both");
    }
    let pattern: BsrPattern;
    if (mask !== undefined) {
      pattern = BsrPattern.fromMask(shape, blockShape, mask);
    } else {
      const norms = denseBlockNorms(dense, shape, blockShape);
      if (density !== undefined) {
        checkDensity(density);
        const total = blockRows * blockCols;
        const order = Array.from({ length: total }, (_, i) => i);
        const strength = (i: number): number => (Number.isNaN(norms[i]) ? Number.POSITIVE_INFINITY : norms[i]);
        order.sort((a, b) => strength(b) - strength(a) || a - b);
        const kept = Int32Array.from(order.slice(0, Math.round(density * total))).sort();
        pattern = BsrPattern.fromFlatBlocks(shape, blockShape, kept);
      } else {
        pattern = BsrPattern.fromMask(shape, blockShape, norms.map((norm) => (norm !== 0 ? 1 : 0)));
      }
    }
    const values = new Float32Array(pattern.nnzBlocks * blockHeight * blockWidth);
    // A Float32Array moves as its bits: read as a number, a signaling NaN would get its quiet bit set.
    const f32 = dense instanceof Float32Array;
    const source: ArrayLike<number> = f32 ? new Uint32Array(dense.buffer, dense.byteOffset, dense.length) : dense;
    const target = f32 ? new Uint32Array(values.buffer) : values;
    const { blockRow, blockCol } = pattern.coordinates;
    for (let k = 0; k < pattern.nnzBlocks; k++) {
      const top = blockRow[k] * blockHeight;
      const left = blockCol[k] * blockWidth;
      for (let r = 0; r < blockHeight; r++) {
        const from = (top + r) * cols + left;
        const to = (k * blockHeight + r) * blockWidth;
        for (let c = 0; c < blockWidth; c++) target[to + c] = source[from + c];
      }
    }
    // fromPattern rounds float32 values to a 16-bit dtype, and takes an undefined one as float32.
    return BsrMatrix.fromPattern(pattern, values, options.dtype);
  }

  /** Random pattern (exact block count) and normal values; the same seed gives the same matrix everywhere. */
  static random(shape: Shape2, options: RandomMatrixOptions): BsrMatrix {
    if (options === null || typeof options !== "object") {
      throw new BsrFormatError("options", "expected { blockShape, density, seed, dtype?, std? } after the shape");
    }
    checkOptionKeys(options, ["blockShape", "density", "seed", "dtype", "std"]);
    const std = options.std ?? 1;
    if (!(Number.isFinite(std) && std >= 0)) {
      throw new BsrFormatError("std", `expected a non-negative finite number, got ${String(std)}`);
    }
    const random = seededRandom(options.seed);
    const pattern = BsrPattern.random(shape, { blockShape: options.blockShape, density: options.density, seed: random });
    const values = zeroValues(pattern, "float32") as Float32Array;
    random.fillNormal(values, 0, std);
    return BsrMatrix.fromPattern(pattern, values, options.dtype);
  }

  /** All-zero values over a pattern, or over every block of a shape. */
  static zeros(pattern: BsrPattern, dtype?: BsrDType): BsrMatrix;
  static zeros(shape: Shape2, options: { blockShape: Shape2; dtype?: BsrDType }, dtype?: BsrDType): BsrMatrix;
  static zeros(
    patternOrShape: BsrPattern | Shape2,
    optionsOrDType?: BsrDType | { blockShape: Shape2; dtype?: BsrDType },
    dtypeArgument?: BsrDType,
  ): BsrMatrix {
    let pattern: BsrPattern;
    let dtype: BsrDType | undefined;
    if (patternOrShape instanceof BsrPattern) {
      // `{ dtype }` is the options of zeros(shape, ...): after a pattern it came out as "got [object Object]".
      if (optionsOrDType instanceof Object) {
        throw new BsrFormatError("dtype", 'zeros(pattern, dtype) takes the dtype itself, not { dtype }');
      }
      pattern = patternOrShape;
      dtype = optionsOrDType;
    } else {
      const options = optionsOrDType as { blockShape: Shape2; dtype?: BsrDType } | undefined;
      if (options === undefined || options === null || typeof options !== "object") {
        throw new BsrFormatError("options", "expected { blockShape: [R, C] } after the shape");
      }
      checkOptionKeys(options, ["blockShape", "dtype"]);
      pattern = BsrPattern.dense(patternOrShape, options.blockShape);
      dtype = options.dtype;
    }
    // One of two dtypes won without a word: the argument over the option, the pattern's second argument over its third.
    if (dtype !== undefined && dtypeArgument !== undefined && dtype !== dtypeArgument) {
      throw new BsrFormatError("dtype", `given twice: ${dtype} and ${dtypeArgument}`);
    }
    dtype = dtype ?? dtypeArgument ?? "float32";
    return BsrMatrix.fromPattern(pattern, zeroValues(pattern, dtype), dtype);
  }

  /** From PyTorch's BSR parts (crow_indices, col_indices, values [nnzb, R, C], size). */
  static fromTorch(input: TorchBsrInput): BsrMatrix {
    // A misspelt key (`dType`) was dropped by the schema and the matrix silently came out float32.
    checkOptionKeys(input, ["crowIndices", "colIndices", "values", "valuesShape", "size", "dtype"], "torch");
    parseWith(torchBsrInputSchema, input, "torch");
    return fromParts(
      input.size,
      input.valuesShape,
      { name: "crowIndices", array: input.crowIndices },
      { name: "colIndices", array: input.colIndices },
      { name: "values", array: input.values },
      input.dtype,
    );
  }

  /** From SciPy's bsr_matrix parts (indptr, indices, data [nnzb, R, C], shape). */
  static fromScipy(input: ScipyBsrInput): BsrMatrix {
    checkOptionKeys(input, ["indptr", "indices", "data", "dataShape", "shape", "dtype"], "scipy");
    parseWith(scipyBsrInputSchema, input, "scipy");
    return fromParts(
      input.shape,
      input.dataShape,
      { name: "indptr", array: input.indptr },
      { name: "indices", array: input.indices },
      { name: "data", array: input.data },
      input.dtype,
    );
  }

  /** PyTorch's BSR parts, as fresh copies. */
  toTorch(): TorchBsrLayout {
    return {
      crowIndices: this.blockRowPtr.slice(),
      colIndices: this.blockColIdx.slice(),
      values: this.values.slice(),
      valuesShape: [this.nnzBlocks, this.blockShape[0], this.blockShape[1]],
      size: [this.shape[0], this.shape[1]],
      dtype: this.dtype,
    };
  }

  /** SciPy's bsr_matrix parts, as fresh copies. */
  toScipy(): ScipyBsrLayout {
    return {
      indptr: this.blockRowPtr.slice(),
      indices: this.blockColIdx.slice(),
      data: this.values.slice(),
      dataShape: [this.nnzBlocks, this.blockShape[0], this.blockShape[1]],
      shape: [this.shape[0], this.shape[1]],
      dtype: this.dtype,
    };
  }

  /** Values as float32 (a new array; 16-bit dtypes are widened exactly). */
  valuesAsFloat32(): Float32Array {
    return decodeValues(this.values, this.dtype);
  }

  /** The same pattern with values stored as `dtype` (rounded to nearest even when narrowing); `dtype` is required. */
  toDType(dtype: BsrDType): BsrMatrix {
    // undefined (a misspelt option upstream) came out float32 without a word, whatever the matrix held.
    checkDType(dtype);
    if (dtype === this.dtype) return new BsrMatrix(this.pattern, this.values.slice(), dtype);
    const widened = this.valuesAsFloat32();
    return BsrMatrix.fromPattern(this.pattern, widened, dtype);
  }

  /** The dense row-major matrix (rows * cols), zeros outside the blocks. */
  toDense(): Float32Array {
    const [rows, cols] = this.shape;
    const [blockHeight, blockWidth] = this.blockShape;
    let dense: Float32Array;
    try {
      dense = new Float32Array(rows * cols);
    } catch {
      throw new BsrFormatError("shape", `the dense ${rows} x ${cols} matrix is too large for one Float32Array`);
    }
    const values = this.valuesAsFloat32();
    const { blockRow, blockCol } = this.pattern.coordinates;
    for (let k = 0; k < this.nnzBlocks; k++) {
      const top = blockRow[k] * blockHeight;
      const left = blockCol[k] * blockWidth;
      for (let r = 0; r < blockHeight; r++) {
        const from = (k * blockHeight + r) * blockWidth;
        dense.set(values.subarray(from, from + blockWidth), (top + r) * cols + left);
      }
    }
    return dense;
  }

  /** L2 norm of each stored block, in values order (summed in float64). */
  blockNorms(): Float32Array {
    const values = this.valuesAsFloat32();
    const size = this.blockSize;
    const norms = new Float32Array(this.nnzBlocks);
    for (let k = 0; k < this.nnzBlocks; k++) {
      let sum = 0;
      for (let i = k * size; i < (k + 1) * size; i++) sum += values[i] * values[i];
      norms[k] = Math.sqrt(sum);
    }
    return norms;
  }

  /** 1 where a block is stored: blockRows * blockCols entries, row-major. */
  blockMask(): Uint8Array {
    return this.pattern.blockMask();
  }

  /** The BSR matrix of the transpose: shape and block shape swapped, values re-laid. */
  transpose(): BsrMatrix {
    const { pattern, valuePermutation } = this.pattern.transpose();
    const [blockHeight, blockWidth] = this.blockShape;
    const size = blockHeight * blockWidth;
    // float32 moves as its bits: read as a number, a signaling NaN would get its quiet bit set.
    const f32 = this.values instanceof Float32Array;
    const source = f32 ? new Uint32Array(this.values.buffer, this.values.byteOffset, this.values.length) : this.values;
    const values = f32 ? new Uint32Array(source.length) : new Uint16Array(source.length);
    for (let k = 0; k < valuePermutation.length; k++) {
      const from = valuePermutation[k] * size;
      const to = k * size;
      // The new block is blockWidth x blockHeight: element (c, r) is old (r, c).
      for (let r = 0; r < blockHeight; r++) {
        for (let c = 0; c < blockWidth; c++) values[to + c * blockHeight + r] = source[from + r * blockWidth + c];
      }
    }
    return new BsrMatrix(pattern, f32 ? new Float32Array(values.buffer) : (values as Uint16Array), this.dtype);
  }

  /** Checks every invariant again (pattern arrays, values type and length); throws BsrFormatError. */
  validate(): void {
    this.pattern.validate();
    if (!isBsrDType(this.dtype)) throw new BsrFormatError("dtype", `unknown dtype ${String(this.dtype)}`);
    const expectedType = this.dtype === "float32" ? Float32Array : Uint16Array;
    if (!(this.values instanceof expectedType)) {
      throw new BsrFormatError("values", `${this.dtype} values must be a ${expectedType.name}`);
    }
    const expected = this.nnzBlocks * this.blockSize;
    if (this.values.length !== expected) {
      throw new BsrFormatError("values", `expected nnzBlocks * R * C = ${expected} elements, got ${this.values.length}`);
    }
  }
}

/** Zeroed values for every block of `pattern`: past what one array holds, a BsrFormatError where allocating threw a bare RangeError. */
function zeroValues(pattern: BsrPattern, dtype: BsrDType): BsrValues {
  const [blockHeight, blockWidth] = pattern.blockShape;
  const length = pattern.nnzBlocks * blockHeight * blockWidth;
  const arrayType = dtype === "float32" ? Float32Array : Uint16Array;
  try {
    return new arrayType(length);
  } catch {
    throw new BsrFormatError(
      "values",
      `nnzBlocks * R * C = ${pattern.nnzBlocks} * ${blockHeight} * ${blockWidth} = ${length} elements are too many for one ${arrayType.name}`,
    );
  }
}

/** Dense entries must be numbers: a hole or undefined would read as NaN and keep its block; typed arrays of numbers need no walk. */
function checkDenseNumbers(dense: ArrayLike<unknown>): asserts dense is ArrayLike<number> {
  if (dense instanceof BigInt64Array || dense instanceof BigUint64Array) {
    throw new BsrFormatError("dense", `expected numbers, got a ${dense.constructor.name}`);
  }
  if (ArrayBuffer.isView(dense)) return;
  for (let i = 0; i < dense.length; i++) {
    if (typeof dense[i] !== "number") throw new BsrFormatError("dense", `expected a number, got ${quoted(dense[i])}`, i);
  }
}

/** L2 norm of every block of a dense matrix, row-major over the block grid (float64 sums). */
function denseBlockNorms(dense: ArrayLike<number>, shape: Shape2, blockShape: Shape2): Float64Array {
  const [rows, cols] = shape;
  const [blockHeight, blockWidth] = blockShape;
  const blockCols = cols / blockWidth;
  const sums = new Float64Array((rows / blockHeight) * blockCols);
  for (let row = 0; row < rows; row++) {
    const gridRow = Math.floor(row / blockHeight) * blockCols;
    for (let col = 0; col < cols; col++) {
      const value = dense[row * cols + col];
      sums[gridRow + Math.floor(col / blockWidth)] += value * value;
    }
  }
  return sums.map(Math.sqrt);
}

function toStoredValues(values: ValuesInput, dtype: BsrDType): BsrValues {
  if (dtype === "float32") {
    if (values instanceof Float32Array) return values;
    if (values instanceof Uint16Array) {
      throw new BsrFormatError("values", "float32 values must be a Float32Array (or numbers), not 16-bit patterns");
    }
    return Float32Array.from(checkNumbers(values));
  }
  if (values instanceof Uint16Array) return values;
  return encodeValues(values, dtype);
}

/** int32 / int64 / uint64 / number indices as numbers, with 64-bit values outside int32 rejected. */
export function indexArrayToInt32(array: IndexArrayInput, field: string): Int32Array | ArrayLike<number> {
  if (array instanceof BigInt64Array || array instanceof BigUint64Array) {
    const out = new Int32Array(array.length);
    for (let i = 0; i < array.length; i++) {
      const value = array[i];
      if (value < -(2n ** 31n) || value >= 2n ** 31n) {
        throw new BsrFormatError(field, `${value} does not fit int32`, i);
      }
      out[i] = Number(value);
    }
    return out;
  }
  // Anything else is checked by the BsrPattern it is for (its errors carry the caller's field names).
  return array;
}

function fromParts(
  shape: Shape2,
  valuesShape: readonly [number, number, number],
  rowPtr: { name: string; array: IndexArrayInput },
  colIdx: { name: string; array: IndexArrayInput },
  values: { name: string; array: ValuesInput },
  dtype: BsrDType | undefined,
): BsrMatrix {
  const blockShape: Shape2 = [valuesShape[1], valuesShape[2]];
  const pattern = renameFields(
    () =>
      new BsrPattern({
        shape,
        blockShape,
        blockRowPtr: indexArrayToInt32(rowPtr.array, rowPtr.name),
        blockColIdx: indexArrayToInt32(colIdx.array, colIdx.name),
      }),
    { blockRowPtr: rowPtr.name, blockColIdx: colIdx.name },
  );
  if (valuesShape[0] !== pattern.nnzBlocks) {
    throw new BsrFormatError(
      `${values.name}Shape`,
      `leading dimension ${valuesShape[0]} differs from the ${pattern.nnzBlocks} blocks the indices name`,
      0,
    );
  }
  return renameFields(() => BsrMatrix.fromPattern(pattern, values.array, dtype), { values: values.name });
}

/** Runs `build`, reporting errors under the caller's field names (crowIndices, indptr...). */
function renameFields<T>(build: () => T, names: Record<string, string>): T {
  try {
    return build();
  } catch (error) {
    if (error instanceof BsrFormatError && names[error.field] !== undefined && names[error.field] !== error.field) {
      throw new BsrFormatError(names[error.field], error.detail, error.position);
    }
    throw error;
  }
}
