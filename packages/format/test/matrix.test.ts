import { describe, expect, it } from "vitest";
import {
  BsrFormatError,
  BsrMatrix,
  BsrPattern,
  float16BitsToFloat32,
  float32ArrayToBfloat16Bits,
  float32ArrayToFloat16Bits,
  type Shape2,
} from "../src/index.js";
import { denseWithZeroBlocks, referenceBlocks, thrown } from "./helpers.js";

const shapes: [Shape2, Shape2][] = [
  [[8, 12], [2, 3]],
  [[12, 8], [3, 2]],
  [[32, 32], [16, 16]],
  [[6, 20], [1, 5]],
  [[64, 96], [32, 32]],
  [[10, 4], [5, 4]],
];

function expectFormatError(action: () => unknown, field: string, position?: number): BsrFormatError {
  const error = thrown(action);
  expect(error).toBeInstanceOf(BsrFormatError);
  expect((error as BsrFormatError).field).toBe(field);
  if (position !== undefined) expect((error as BsrFormatError).position).toBe(position);
  return error as BsrFormatError;
}

describe("fromDense / toDense", () => {
  it.each(shapes)("round-trips exactly, shape %j block %j", (shape, blockShape) => {
    const dense = denseWithZeroBlocks(shape, blockShape, shape[0] * 31 + shape[1]);
    const matrix = BsrMatrix.fromDense(dense, shape, { blockShape });
    matrix.validate();
    const blocks = referenceBlocks(dense, shape, blockShape);
    const nonzero = blocks.filter((block) => block.values.some((v) => v !== 0));
    expect(matrix.nnzBlocks).toBe(nonzero.length);
    // Stored values are the non-zero blocks, in row-major grid order, each block row-major.
    expect(Array.from(matrix.values)).toEqual(nonzero.flatMap((block) => block.values));
    expect(matrix.toDense()).toEqual(dense);
  });

  it("keeps exactly the blocks a mask names", () => {
    const shape: Shape2 = [8, 12];
    const dense = Float32Array.from({ length: 96 }, (_, i) => i + 1);
    const mask = [0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0];
    const matrix = BsrMatrix.fromDense(dense, shape, { blockShape: [2, 3], mask });
    expect(Array.from(matrix.blockMask())).toEqual(mask);
    const expected = new Float32Array(96);
    for (const block of referenceBlocks(dense, shape, [2, 3])) {
      if (!mask[block.row * 4 + block.col]) continue;
      for (let r = 0; r < 2; r++) for (let c = 0; c < 3; c++) {
        const at = (block.row * 2 + r) * 12 + block.col * 3 + c;
        expected[at] = dense[at];
      }
    }
    expect(matrix.toDense()).toEqual(expected);
  });

  it("keeps the strongest blocks by L2 norm to reach a density, ties to the lower index", () => {
    const shape: Shape2 = [16, 24];
    const blockShape: Shape2 = [4, 4];
    const dense = denseWithZeroBlocks(shape, blockShape, 5).map((v) => v + 0.01);
    for (const density of [0, 0.1, 0.25, 0.5, 0.8, 1]) {
      const matrix = BsrMatrix.fromDense(dense, shape, { blockShape, density });
      const blocks = referenceBlocks(dense, shape, blockShape);
      const order = blocks.map((_, i) => i).sort((a, b) => blocks[b].norm - blocks[a].norm || a - b);
      const kept = new Set(order.slice(0, Math.round(density * blocks.length)));
      expect(Array.from(matrix.blockMask())).toEqual(blocks.map((_, i) => (kept.has(i) ? 1 : 0)));
    }
    // Four equal-norm blocks: the first two (in row-major order) are kept.
    const ties = Float32Array.from({ length: 16 }, (_, i) => (i % 3 === 0 ? -1 : 1));
    const tied = BsrMatrix.fromDense(ties, [4, 4], { blockShape: [2, 2], density: 0.5 });
    expect(tied.nnzBlocks).toBe(2);
    const norms = referenceBlocks(ties, [4, 4], [2, 2]).map((b) => b.norm);
    expect(new Set(norms).size).toBe(1);
    expect(Array.from(tied.blockMask())).toEqual([1, 1, 0, 0]);
  });

  it("never drops a NaN block when keeping the strongest", () => {
    const dense = Float32Array.from([100, 0, 0, Number.NaN]);
    const matrix = BsrMatrix.fromDense(dense, [2, 2], { blockShape: [1, 1], density: 0.25 });
    expect(Array.from(matrix.blockMask())).toEqual([0, 0, 0, 1]);
  });

  it("density 0 gives no blocks and an all-zero dense matrix; density 1 keeps every block", () => {
    const dense = denseWithZeroBlocks([8, 8], [2, 2], 1);
    const empty = BsrMatrix.fromDense(dense, [8, 8], { blockShape: [2, 2], density: 0 });
    expect(empty.nnzBlocks).toBe(0);
    expect(empty.values.length).toBe(0);
    expect(empty.toDense()).toEqual(new Float32Array(64));
    expect(empty.transpose().nnzBlocks).toBe(0);
    const full = BsrMatrix.fromDense(dense, [8, 8], { blockShape: [2, 2], density: 1 });
    expect(full.nnzBlocks).toBe(16);
    expect(full.density).toBe(1);
    expect(full.toDense()).toEqual(dense);
  });

  it("stores 16-bit dtypes as rounded bits", () => {
    const dense = denseWithZeroBlocks([8, 8], [4, 4], 2);
    const reference = BsrMatrix.fromDense(dense, [8, 8], { blockShape: [4, 4] });
    const half = BsrMatrix.fromDense(dense, [8, 8], { blockShape: [4, 4], dtype: "float16" });
    expect(half.dtype).toBe("float16");
    expect(half.values).toBeInstanceOf(Uint16Array);
    expect(half.values).toEqual(float32ArrayToFloat16Bits(reference.values));
    expect(half.toDense()).toEqual(Float32Array.from(dense, (v) => float16BitsToFloat32(float32ArrayToFloat16Bits([v])[0])));
    const brain = reference.toDType("bfloat16");
    expect(brain.values).toEqual(float32ArrayToBfloat16Bits(reference.values));
    expect(brain.pattern).toBe(reference.pattern);
    expect(brain.toDType("float32").values).toEqual(brain.valuesAsFloat32());
  });

  it("keeps a Float32Array's bits, signaling NaN payloads included (read as numbers, their quiet bit was set)", () => {
    const bits = Uint32Array.from([0x7f800001, 0xffa00000, 0x80000000, 0x00000001]);
    const dense = new Float32Array(bits.buffer);
    for (const options of [{ blockShape: [1, 2] as const }, { blockShape: [2, 2] as const, mask: [1] }, { blockShape: [2, 1] as const, density: 1 }]) {
      const matrix = BsrMatrix.fromDense(dense, [2, 2], options);
      expect(Array.from(new Uint32Array(matrix.toDense().buffer))).toEqual(Array.from(bits));
    }
  });

  it("refuses an entry that is not a number, naming its position, where a hole or undefined kept its block as NaN", () => {
    const holes = new Array<number>(16);
    holes[5] = 1;
    const hole = expectFormatError(() => BsrMatrix.fromDense(holes, [4, 4], { blockShape: [2, 2] }), "dense", 0);
    expect(hole.message).toBe("dense[0]: expected a number, got undefined");
    const text = [0, 1, "0.5", 3] as unknown as number[];
    const string = expectFormatError(() => BsrMatrix.fromDense(text, [2, 2], { blockShape: [1, 1], mask: [1, 1, 1, 1] }), "dense", 2);
    expect(string.message).toBe('dense[2]: expected a number, got "0.5"');
    // A BigInt64Array threw a TypeError (Cannot mix BigInt and other types).
    const wide = expectFormatError(() => BsrMatrix.fromDense(new BigInt64Array(4) as never, [2, 2], { blockShape: [1, 1] }), "dense");
    expect(wide.message).toMatch(/BigInt64Array/);
  });

  it("toDense past what one array holds is a BsrFormatError naming the shape, not a RangeError", () => {
    // 2^30 x 2^30 elements in a 1024 x 1024 grid of 2^20 x 2^20 blocks, none stored.
    const pattern = new BsrPattern({ shape: [2 ** 30, 2 ** 30], blockShape: [2 ** 20, 2 ** 20], blockRowPtr: new Int32Array(1025), blockColIdx: [] });
    const dense = expectFormatError(() => BsrMatrix.zeros(pattern).toDense(), "shape");
    expect(dense.message).toMatch(/^shape: the dense 1073741824 x 1073741824 matrix is too large for one Float32Array/);
  });

  it("rejects a dense array of the wrong size, and mask with density", () => {
    expectFormatError(() => BsrMatrix.fromDense(new Float32Array(10), [4, 4], { blockShape: [2, 2] }), "dense");
    expectFormatError(
      () => BsrMatrix.fromDense(new Float32Array(16), [4, 4], { blockShape: [2, 2], mask: [1, 1, 1, 1], density: 1 }),
      "options",
    );
    expectFormatError(() => BsrMatrix.fromDense(new Float32Array(16), [4, 4], { blockShape: [3, 2] }), "blockShape", 0);
  });
});

describe("values", () => {
  it("fromPattern checks the length and keeps typed arrays without copying", () => {
    const pattern = BsrPattern.fromMask([4, 6], [2, 3], [1, 0, 1, 1]);
    const values = new Float32Array(18);
    expect(BsrMatrix.fromPattern(pattern, values).values).toBe(values);
    const error = expectFormatError(() => BsrMatrix.fromPattern(pattern, new Float32Array(17)), "values");
    expect(error.message).toMatch(/3 \* 2 \* 3 = 18.*got 17/);
    expectFormatError(() => BsrMatrix.fromPattern(pattern, new Uint16Array(18)), "dtype");
    expectFormatError(() => BsrMatrix.fromPattern(pattern, new Uint16Array(18), "float32"), "values");
    expectFormatError(() => BsrMatrix.fromPattern(pattern, new Float32Array(18), "float64" as "float32"), "dtype");
    expect(BsrMatrix.fromPattern(pattern, new Uint16Array(18), "bfloat16").dtype).toBe("bfloat16");
  });

  it("blockNorms match float64 norms of each block", () => {
    const matrix = BsrMatrix.random([48, 40], { blockShape: [8, 5], density: 0.5, seed: 4 });
    const norms = matrix.blockNorms();
    const size = 40;
    for (let k = 0; k < matrix.nnzBlocks; k++) {
      let sum = 0;
      for (let i = 0; i < size; i++) sum += matrix.values[k * size + i] ** 2;
      expect(norms[k]).toBe(Math.fround(Math.sqrt(sum)));
    }
  });

  it("zeros over a pattern or over every block of a shape", () => {
    const pattern = BsrPattern.fromMask([4, 4], [2, 2], [0, 1, 1, 0]);
    const zeros = BsrMatrix.zeros(pattern, "float16");
    expect(zeros.pattern).toBe(pattern);
    expect(zeros.values).toEqual(new Uint16Array(8));
    const full = BsrMatrix.zeros([6, 4], { blockShape: [3, 2] });
    expect(full.nnzBlocks).toBe(4);
    expect(full.dtype).toBe("float32");
    expect(full.toDense()).toEqual(new Float32Array(24));
    expect(BsrMatrix.zeros([6, 4], { blockShape: [3, 2] }, "bfloat16").dtype).toBe("bfloat16");
  });

  it("zeros and random past what one array holds are a BsrFormatError naming the values, not a RangeError", () => {
    // One 2^26 x 2^26 block: 2^52 values, more than any engine allocates.
    const shape = [2 ** 26, 2 ** 26] as const;
    const blockShape = [2 ** 26, 2 ** 26] as const;
    for (const dtype of ["float32", "bfloat16"] as const) {
      const error = expectFormatError(() => BsrMatrix.zeros(shape, { blockShape, dtype }), "values");
      expect(error.message).toContain(`1 * 67108864 * 67108864 = ${2 ** 52} elements`);
      expectFormatError(() => BsrMatrix.random(shape, { blockShape, density: 1, seed: 1, dtype }), "values");
    }
  });

  it("zeros refuses two different dtypes rather than taking one of them", () => {
    const inBoth = thrown(() => BsrMatrix.zeros([6, 4], { blockShape: [3, 2], dtype: "float16" }, "bfloat16")) as BsrFormatError;
    expect(inBoth).toBeInstanceOf(BsrFormatError);
    expect(inBoth.message).toBe("dtype: given twice: float16 and bfloat16");
    const pattern = BsrPattern.fromMask([4, 4], [2, 2], [0, 1, 1, 0]);
    const zerosOf = BsrMatrix.zeros as (...args: unknown[]) => BsrMatrix;
    const afterPattern = thrown(() => zerosOf(pattern, "float16", "bfloat16")) as BsrFormatError;
    expect(afterPattern).toBeInstanceOf(BsrFormatError);
    expect(afterPattern.message).toBe("dtype: given twice: float16 and bfloat16");
    // One dtype, or the same one twice, is taken.
    expect(BsrMatrix.zeros([6, 4], { blockShape: [3, 2], dtype: "float16" }, "float16").dtype).toBe("float16");
    expect(zerosOf(pattern, undefined, "bfloat16").dtype).toBe("bfloat16");
  });

  it("zeros after a pattern refuses an options object, saying it takes the dtype itself (was: got [object Object])", () => {
    const pattern = BsrPattern.fromMask([4, 4], [2, 2], [0, 1, 1, 0]);
    const error = expectFormatError(() => BsrMatrix.zeros(pattern, { dtype: "float16" } as never), "dtype");
    expect(error.message).toBe('dtype: zeros(pattern, dtype) takes the dtype itself, not { dtype }');
  });

  it("zeros after a shape refuses null options as a BsrFormatError (a TypeError reading blockShape of null)", () => {
    const error = expectFormatError(() => BsrMatrix.zeros([6, 4], null as never), "options");
    expect(error.message).toBe("options: expected { blockShape: [R, C] } after the shape");
  });

  it("toDType refuses a missing or unknown dtype rather than returning float32", () => {
    const half = BsrMatrix.random([4, 6], { blockShape: [2, 2], density: 0.5, seed: 3, dtype: "float16" });
    for (const dtype of [undefined, null, "float64"]) {
      const error = thrown(() => half.toDType(dtype as never)) as BsrFormatError;
      expect(error).toBeInstanceOf(BsrFormatError);
      expect(error.message).toBe(`dtype: expected "float32", "float16" or "bfloat16", got ${String(dtype)}`);
    }
    expect(half.toDType("float16").values).toEqual(half.values);
  });

  it("validate() finds values replaced by the wrong length", () => {
    const matrix = BsrMatrix.random([8, 8], { blockShape: [2, 2], density: 0.5, seed: 1 });
    matrix.validate();
    (matrix as { values: Float32Array }).values = new Float32Array(3);
    expectFormatError(() => matrix.validate(), "values");
  });
});

describe("random", () => {
  it("is reproducible, seed-dependent, with normal values", () => {
    const make = (seed: number) => BsrMatrix.random([128, 64], { blockShape: [16, 8], density: 0.25, seed });
    const a = make(1);
    const b = make(1);
    expect(a.pattern.equals(b.pattern)).toBe(true);
    expect(a.values).toEqual(b.values);
    expect(a.values).not.toEqual(make(2).values);
    expect(a.nnzBlocks).toBe(16);
    const values = a.valuesAsFloat32();
    const mean = values.reduce((s, v) => s + v, 0) / values.length;
    const variance = values.reduce((s, v) => s + (v - mean) ** 2, 0) / values.length;
    expect(Math.abs(mean)).toBeLessThan(0.1);
    expect(Math.abs(variance - 1)).toBeLessThan(0.1);
  });

  it("gives the same pattern and values on every platform (pinned)", () => {
    const matrix = BsrMatrix.random([8, 8], { blockShape: [2, 2], density: 0.25, seed: 1 });
    expect(Array.from(matrix.blockMask())).toEqual(PINNED_MASK);
    expect(Array.from(matrix.values.subarray(0, 4))).toEqual(PINNED_VALUES);
  });

  it("supports 16-bit dtypes and a scale", () => {
    const base = BsrMatrix.random([16, 16], { blockShape: [4, 4], density: 0.5, seed: 3 });
    const half = BsrMatrix.random([16, 16], { blockShape: [4, 4], density: 0.5, seed: 3, dtype: "float16" });
    expect(half.values).toEqual(float32ArrayToFloat16Bits(base.values));
    const scaled = BsrMatrix.random([16, 16], { blockShape: [4, 4], density: 0.5, seed: 3, std: 0.5 });
    expect(scaled.values).toEqual(base.values.map((v) => Math.fround(v * 0.5)));
  });
});

// Pinned outputs of BsrMatrix.random([8, 8], { blockShape: [2, 2], density: 0.25, seed: 1 }),
// checked against an independent Python implementation of the same algorithms.
const PINNED_MASK = [1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 1, 0];
const PINNED_VALUES = [-0.430600106716156, -2.152186632156372, -2.1137263774871826, 0.04029909893870354];

describe("transpose", () => {
  it.each(shapes)("is the BSR of the dense transpose, shape %j block %j", (shape, blockShape) => {
    const matrix = BsrMatrix.random(shape, { blockShape, density: 0.5, seed: shape[0] + shape[1] });
    const transposed = matrix.transpose();
    transposed.validate();
    expect(transposed.shape).toEqual([shape[1], shape[0]]);
    expect(transposed.blockShape).toEqual([blockShape[1], blockShape[0]]);
    const dense = matrix.toDense();
    const expected = new Float32Array(dense.length);
    for (let r = 0; r < shape[0]; r++) for (let c = 0; c < shape[1]; c++) expected[c * shape[0] + r] = dense[r * shape[1] + c];
    expect(transposed.toDense()).toEqual(expected);
    expect(transposed.transpose().values).toEqual(matrix.values);
    expect(transposed.transpose().pattern.equals(matrix.pattern)).toBe(true);
  });

  it("keeps 16-bit values bit for bit", () => {
    const matrix = BsrMatrix.random([6, 9], { blockShape: [2, 3], density: 0.6, seed: 5, dtype: "bfloat16" });
    const transposed = matrix.transpose();
    expect(transposed.dtype).toBe("bfloat16");
    expect(transposed.values).toBeInstanceOf(Uint16Array);
    expect(transposed.transpose().values).toEqual(matrix.values);
  });

  it("keeps float32 values bit for bit, signaling NaN payloads included (their quiet bit was set)", () => {
    const bits = Uint32Array.from([0x7f800001, 0xffbfffff, 0x80000000, 0x00000001]);
    const matrix = BsrMatrix.fromTorch({ crowIndices: [0, 1], colIndices: [0], values: new Float32Array(bits.buffer), valuesShape: [1, 2, 2], size: [2, 2] });
    const transposed = matrix.transpose();
    expect(transposed.values).toBeInstanceOf(Float32Array);
    expect(Array.from(new Uint32Array(transposed.values.buffer))).toEqual([0x7f800001, 0x80000000, 0xffbfffff, 0x00000001]);
  });
});

describe("PyTorch and SciPy layouts", () => {
  it.each(shapes)("round-trip through both, shape %j block %j", (shape, blockShape) => {
    const matrix = BsrMatrix.random(shape, { blockShape, density: 0.4, seed: 17 });
    const torch = matrix.toTorch();
    expect(torch.valuesShape).toEqual([matrix.nnzBlocks, blockShape[0], blockShape[1]]);
    expect(torch.size).toEqual([shape[0], shape[1]]);
    expect(torch.crowIndices).toEqual(matrix.blockRowPtr);
    expect(torch.crowIndices).not.toBe(matrix.blockRowPtr);
    const fromTorch = BsrMatrix.fromTorch(torch);
    expect(fromTorch.pattern.equals(matrix.pattern)).toBe(true);
    expect(fromTorch.values).toEqual(matrix.values);
    const scipy = matrix.toScipy();
    expect(scipy.dataShape).toEqual(torch.valuesShape);
    const fromScipy = BsrMatrix.fromScipy(scipy);
    expect(fromScipy.toDense()).toEqual(matrix.toDense());
  });

  it("accepts int64 indices and plain arrays", () => {
    const matrix = BsrMatrix.fromTorch({
      crowIndices: BigInt64Array.from([0n, 1n, 2n]),
      colIndices: [1, 0],
      values: [1, 2, 3, 4, 5, 6, 7, 8],
      valuesShape: [2, 2, 2],
      size: [4, 4],
    });
    expect(Array.from(matrix.toDense())).toEqual([0, 0, 1, 2, 0, 0, 3, 4, 5, 6, 0, 0, 7, 8, 0, 0]);
    const half = BsrMatrix.fromScipy({
      indptr: [0, 1],
      indices: [0],
      data: Uint16Array.from([0x3c00, 0x4000]),
      dataShape: [1, 1, 2],
      shape: [1, 2],
      dtype: "float16",
    });
    expect(Array.from(half.toDense())).toEqual([1, 2]);
  });

  it("takes uint64 indices (a BigUint64Array, as NumPy's uint64 arrives) as it takes int64 ones", () => {
    const matrix = BsrMatrix.fromScipy({
      indptr: BigUint64Array.from([0n, 1n, 2n]),
      indices: BigUint64Array.from([1n, 0n]),
      data: [1, 2, 3, 4, 5, 6, 7, 8],
      dataShape: [2, 2, 2],
      shape: [4, 4],
    });
    expect(Array.from(matrix.toDense())).toEqual([0, 0, 1, 2, 0, 0, 3, 4, 5, 6, 0, 0, 7, 8, 0, 0]);
    const error = expectFormatError(
      () => BsrMatrix.fromTorch({ crowIndices: BigUint64Array.from([0n, 2n ** 40n]), colIndices: [0], values: [1], valuesShape: [1, 1, 1], size: [1, 1] }),
      "crowIndices",
      1,
    );
    expect(error.message).toContain("does not fit int32");
  });

  it("says a string among the values is a string, and refuses values whose length is not a count", () => {
    const pattern = BsrPattern.dense([2, 2], [1, 1]);
    expect(expectFormatError(() => BsrMatrix.fromPattern(pattern, ["1", 2, 3, 4] as never), "values", 0).message).toContain('got "1"');
    // A length of NaN read as no values: over an empty pattern, a matrix built from a broken object.
    expectFormatError(() => BsrMatrix.fromPattern(BsrPattern.fromMask([2, 2], [1, 1], [0, 0, 0, 0]), { length: Number.NaN }), "values");
  });

  it("says a bigint in a plain index array is a bigint, rather than refusing a valid index by its value", () => {
    const error = expectFormatError(
      () => BsrMatrix.fromScipy({ indptr: [0n, 1n] as never, indices: [0], data: [1], dataShape: [1, 1, 1], shape: [1, 1] }),
      "indptr",
      0,
    );
    expect(error.message).toContain("got the bigint 0n");
  });

  it("names the caller's fields in errors", () => {
    const good = { crowIndices: [0, 1, 2], colIndices: [1, 0], values: new Float32Array(8), valuesShape: [2, 2, 2] as const, size: [4, 4] as const };
    expectFormatError(() => BsrMatrix.fromTorch({ ...good, crowIndices: [0, 2, 1] }), "crowIndices", 2);
    expectFormatError(() => BsrMatrix.fromTorch({ ...good, colIndices: [2, 0] }), "colIndices", 0);
    expectFormatError(() => BsrMatrix.fromTorch({ ...good, crowIndices: BigInt64Array.from([0n, 1n, 2n ** 40n]) }), "crowIndices", 2);
    expectFormatError(() => BsrMatrix.fromTorch({ ...good, values: new Float32Array(7) }), "values");
    expectFormatError(() => BsrMatrix.fromTorch({ ...good, valuesShape: [3, 2, 2] }), "valuesShape", 0);
    expectFormatError(() => BsrMatrix.fromTorch({ ...good, size: [4, 0] }), "torch.size", 1);
    expectFormatError(() => BsrMatrix.fromTorch({ ...good, valuesShape: [2, 2] } as never), "torch.valuesShape");
    expectFormatError(() => BsrMatrix.fromTorch({ ...good, colIndices: "0,1" } as never), "torch.colIndices");
    expectFormatError(() => BsrMatrix.fromTorch(null as never), "torch");
    expectFormatError(() => BsrMatrix.fromScipy({ indptr: [0, 1], indices: [0], data: [1, 2], dataShape: [1, 1, 2], shape: [1, 2], dtype: "f16" as never }), "scipy.dtype");
    expectFormatError(() => BsrMatrix.fromScipy({ indptr: [0, 1, 1], indices: [0], data: [1, 2], dataShape: [1, 1, 2], shape: [1, 2] }), "indptr");
  });

  it("refuses a misspelt key (dType), which was dropped and left the matrix float32", () => {
    const torch = { crowIndices: [0, 1], colIndices: [0], values: new Float32Array([1.1]), valuesShape: [1, 1, 1] as const, size: [1, 1] as const };
    const error = expectFormatError(() => BsrMatrix.fromTorch({ ...torch, dType: "bfloat16" } as never), "torch");
    expect(error.message).toContain("'dType'");
    const scipy = { indptr: [0, 1], indices: [0], data: [1.1], dataShape: [1, 1, 1] as const, shape: [1, 1] as const };
    expect(expectFormatError(() => BsrMatrix.fromScipy({ ...scipy, dypte: "float16" } as never), "scipy").message).toContain("'dypte'");
    expect(BsrMatrix.fromTorch({ ...torch, dtype: undefined }).dtype).toBe("float32");
  });
});

describe("null or missing arguments", () => {
  it("fromDense and random name the argument", () => {
    const field = (action: () => unknown) => {
      const error = thrown(action);
      expect(error).toBeInstanceOf(BsrFormatError);
      return (error as BsrFormatError).field;
    };
    expect(field(() => BsrMatrix.fromDense(null as never, [2, 2], { blockShape: [1, 1] }))).toBe("dense");
    expect(field(() => BsrMatrix.fromDense([1, 2, 3, 4], [2, 2], null as never))).toBe("options");
    expect(field(() => BsrMatrix.fromDense([1, 2, 3, 4], null as never, { blockShape: [1, 1] }))).toBe("shape");
    expect(field(() => BsrMatrix.random([2, 2], { blockShape: [1, 1], density: 1 } as never))).toBe("seed");
  });

  it("refuses a misspelt option, naming it and the options there are, where it was ignored (fromDense kept every non-zero block)", () => {
    const dense = [1, 2, 3, 4];
    const error = expectFormatError(() => BsrMatrix.fromDense(dense, [2, 2], { blockShape: [1, 1], densty: 0.5 } as never), "options");
    expect(error.message).toBe("options: unknown option 'densty'; the options are blockShape, mask, density, dtype");
    expect(expectFormatError(() => BsrMatrix.random([2, 2], { blockShape: [1, 1], density: 1, seed: 1, dType: "float16", sd: 2 } as never), "options").message).toBe(
      "options: unknown option 'dType', 'sd'; the options are blockShape, density, seed, dtype, std",
    );
    expect(expectFormatError(() => BsrMatrix.zeros([2, 2], { blockShape: [1, 1], dtpye: "float16" } as never), "options").message).toContain("unknown option 'dtpye'");
    expect(expectFormatError(() => BsrPattern.random([2, 2], { blockShape: [1, 1], density: 1, seed: 1, sed: 2 } as never), "options").message).toContain(
      "unknown option 'sed'; the options are blockShape, density, seed",
    );
    // Known options set to undefined are the defaults, as before.
    expect(BsrMatrix.fromDense(dense, [2, 2], { blockShape: [1, 1], density: 0.5, mask: undefined, dtype: undefined }).nnzBlocks).toBe(2);
  });

  it("random refuses a seed that is not a safe integer as a BsrFormatError, not a RangeError", () => {
    for (const seed of [1.5, 2 ** 60, Number.NaN]) {
      const error = thrown(() => BsrMatrix.random([2, 2], { blockShape: [1, 1], density: 1, seed }));
      expect(error).toBeInstanceOf(BsrFormatError);
      expect((error as BsrFormatError).field).toBe("seed");
    }
  });

  it("random refuses a std that would fill the values with NaN, infinities or flipped signs", () => {
    for (const std of [Number.NaN, Number.POSITIVE_INFINITY, -1, "2"]) {
      const error = thrown(() => BsrMatrix.random([2, 2], { blockShape: [1, 1], density: 1, seed: 1, std: std as number }));
      expect(error).toBeInstanceOf(BsrFormatError);
      expect((error as BsrFormatError).field).toBe("std");
      expect(error.message).toContain(`got ${String(std)}`);
    }
    expect(Array.from(BsrMatrix.random([2, 2], { blockShape: [1, 1], density: 1, seed: 1, std: 0 }).values)).toEqual([0, 0, 0, 0]);
  });
});
