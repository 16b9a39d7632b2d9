import { describe, expect, it } from "vitest";
import { BsrFormatError, BsrMatrix, BsrPattern, divisors, SeededRandom, type Shape2 } from "../src/index.js";
import { thrown } from "./helpers.js";

const shapes: [Shape2, Shape2][] = [
  [[8, 12], [2, 3]],
  [[12, 8], [3, 2]],
  [[16, 16], [4, 4]],
  [[6, 20], [1, 5]],
  [[64, 32], [32, 8]],
  [[7, 7], [7, 7]],
];

function randomMask(blocks: number, seed: number, p = 0.4): Uint8Array {
  const random = new SeededRandom(seed);
  return Uint8Array.from({ length: blocks }, () => (random.next() < p ? 1 : 0));
}

function expectFormatError(action: () => unknown, field: string, position?: number): BsrFormatError {
  const error = thrown(action);
  expect(error).toBeInstanceOf(BsrFormatError);
  const formatError = error as BsrFormatError;
  expect(formatError.field).toBe(field);
  expect(formatError.position).toBe(position);
  expect(formatError.message).toContain(field);
  return formatError;
}

describe("BsrPattern construction", () => {
  it("refuses a mask entry other than true, false, 1 or 0, naming it, where a truthy one kept its block", () => {
    // Block scores passed as a mask, or strings read from a text file, kept every block whose entry was truthy ("0" included).
    const score = expectFormatError(() => BsrPattern.fromMask([4, 4], [2, 2], [0.9, 0, 0.2, 1]), "mask", 0);
    expect(score.message).toContain("expected true / false or 1 / 0, got 0.9");
    expect(expectFormatError(() => BsrPattern.fromMask([4, 4], [2, 2], [1, "0", 0, 1] as never), "mask", 1).message).toContain('got "0"');
    expect(expectFormatError(() => BsrMatrix.fromDense(new Float32Array(16), [4, 4], { blockShape: [2, 2], mask: Uint8Array.from([1, 0, 255, 0]) }), "mask", 2).message).toContain("got 255");
    expect(BsrPattern.fromMask([4, 4], [2, 2], [true, 0, false, 1]).nnzBlocks).toBe(2);
  });

  it("builds the row-wise index from a mask", () => {
    // 3 x 4 block grid:  X . X .  /  . . . .  /  X X . X
    const mask = [1, 0, 1, 0, 0, 0, 0, 0, 1, 1, 0, 1];
    const pattern = BsrPattern.fromMask([6, 8], [2, 2], mask);
    expect(pattern.blockRows).toBe(3);
    expect(pattern.blockCols).toBe(4);
    expect(Array.from(pattern.blockRowPtr)).toEqual([0, 2, 2, 5]);
    expect(Array.from(pattern.blockColIdx)).toEqual([0, 2, 0, 1, 3]);
    expect(pattern.nnzBlocks).toBe(5);
    expect(pattern.density).toBeCloseTo(5 / 12, 15);
    expect(Array.from(pattern.blockMask())).toEqual(mask);
  });

  it.each(shapes)("round-trips a random mask, shape %j block %j", (shape, blockShape) => {
    const blocks = (shape[0] / blockShape[0]) * (shape[1] / blockShape[1]);
    const mask = randomMask(blocks, blocks);
    const pattern = BsrPattern.fromMask(shape, blockShape, mask);
    expect(Array.from(pattern.blockMask())).toEqual(Array.from(mask));
    expect(pattern.nnzBlocks).toBe(mask.reduce((a, b) => a + b, 0));
  });

  it("rejects a missing init object", () => {
    expect(thrown(() => new BsrPattern(null as never))).toBeInstanceOf(BsrFormatError);
  });

  it("copies the arrays it is given, so later writes cannot corrupt it", () => {
    const blockRowPtr = Int32Array.from([0, 1, 2]);
    const blockColIdx = Int32Array.from([1, 0]);
    const pattern = new BsrPattern({ shape: [4, 4], blockShape: [2, 2], blockRowPtr, blockColIdx });
    blockColIdx[0] = 5;
    expect(pattern.blockColIdx[0]).toBe(1);
    expect(pattern.blockRowPtr).not.toBe(blockRowPtr);
  });

  it("has no blocks at density 0 and every block at density 1", () => {
    const empty = BsrPattern.random([32, 64], { blockShape: [8, 16], density: 0, seed: 1 });
    expect(empty.nnzBlocks).toBe(0);
    expect(Array.from(empty.blockRowPtr)).toEqual([0, 0, 0, 0, 0]);
    expect(empty.columnIndex.blockColPtr.length).toBe(5);
    expect(empty.transpose().pattern.nnzBlocks).toBe(0);
    const full = BsrPattern.random([32, 64], { blockShape: [8, 16], density: 1, seed: 1 });
    expect(full.nnzBlocks).toBe(16);
    expect(full.equals(BsrPattern.dense([32, 64], [8, 16]))).toBe(true);
    expect(full.density).toBe(1);
  });

  it("random: exact block count, reproducible, seed-dependent", () => {
    const make = (seed: number) => BsrPattern.random([256, 192], { blockShape: [16, 32], density: 0.3, seed });
    const a = make(11);
    expect(a.nnzBlocks).toBe(Math.round(0.3 * 16 * 6));
    expect(a.equals(make(11))).toBe(true);
    expect(a.equals(make(12))).toBe(false);
    // A seed and a generator in that seed's initial state give the same pattern.
    expect(Array.from(BsrPattern.random([8, 8], { blockShape: [2, 2], density: 0.25, seed: 1 }).blockMask())).toEqual(
      Array.from(BsrPattern.random([8, 8], { blockShape: [2, 2], density: 0.25, seed: new SeededRandom(1) }).blockMask()),
    );
  });
});

describe("BsrPattern validation names the field and position", () => {
  const init = { shape: [6, 8] as Shape2, blockShape: [2, 2] as Shape2 };
  const make = (blockRowPtr: ArrayLike<number>, blockColIdx: ArrayLike<number>) => () =>
    new BsrPattern({ ...init, blockRowPtr, blockColIdx });

  it("accepts a valid pattern", () => {
    expect(make([0, 1, 1, 3], [2, 0, 3])().nnzBlocks).toBe(3);
  });
  it("blockRowPtr of the wrong length", () => {
    expect(expectFormatError(make([0, 1, 3], [2, 0, 3]), "blockRowPtr").message).toMatch(/length.*4.*got 3/);
  });
  it("blockRowPtr not starting at 0", () => {
    expectFormatError(make([1, 1, 1, 3], [2, 0, 3]), "blockRowPtr", 0);
  });
  it("blockRowPtr decreasing", () => {
    expect(expectFormatError(make([0, 2, 1, 3], [2, 3, 0]), "blockRowPtr", 2).message).toMatch(/decreases/);
  });
  it("blockRowPtr not ending at nnzBlocks", () => {
    expectFormatError(make([0, 1, 1, 2], [2, 0, 3]), "blockRowPtr", 3);
  });
  it("blockColIdx out of range (too large and negative)", () => {
    expect(expectFormatError(make([0, 1, 1, 3], [2, 0, 4]), "blockColIdx", 2).message).toMatch(/\[0, 4\)/);
    expectFormatError(make([0, 1, 1, 3], [-1, 0, 3]), "blockColIdx", 0);
  });
  it("blockColIdx unsorted or repeated within a row", () => {
    expectFormatError(make([0, 1, 1, 3], [2, 3, 0]), "blockColIdx", 2);
    expectFormatError(make([0, 1, 1, 3], [2, 1, 1]), "blockColIdx", 2);
  });
  it("allows a column to restart in the next row", () => {
    expect(make([0, 2, 2, 4], [0, 3, 0, 3])().nnzBlocks).toBe(4);
  });
  it("non-integer and non-int32 indices", () => {
    expectFormatError(make([0, 1, 1, 3], [2, 0.5, 3]), "blockColIdx", 1);
    expectFormatError(make([0, 1, 1, 2 ** 31], [2, 0, 3]), "blockRowPtr", 3);
  });
  it("shape and block shape that are not positive integers", () => {
    expectFormatError(() => BsrPattern.dense([0, 8], [2, 2]), "shape", 0);
    expectFormatError(() => BsrPattern.dense([6, 8.5], [2, 2]), "shape", 1);
    expectFormatError(() => BsrPattern.dense([6, 8], [-2, 2]), "blockShape", 0);
    expectFormatError(() => BsrPattern.dense([6, 8] as unknown as Shape2, [2] as unknown as Shape2), "blockShape");
  });
  it("a block shape that does not divide the shape says what would", () => {
    const rows = expectFormatError(() => BsrPattern.dense([6, 8], [4, 2]), "blockShape", 0);
    expect(rows.message).toMatch(/R=4 does not divide rows=6.*1, 2, 3, 6/);
    const cols = expectFormatError(() => BsrPattern.dense([6, 8], [2, 3]), "blockShape", 1);
    expect(cols.message).toMatch(/C=3 does not divide cols=8.*1, 2, 4, 8/);
  });
  it("divisors are the first 64 in order, and come back at once for a huge dimension read from a file", () => {
    for (let n = 1; n <= 400; n++) {
      const brute = Array.from({ length: n }, (_, i) => i + 1).filter((d) => n % d === 0).slice(0, 64);
      expect(divisors(n)).toEqual(brute);
    }
    expect(divisors(720720).length).toBe(64);
    // A prime near 2^32 (a shape a hostile file may declare): walking every integer up to it took seconds.
    const started = performance.now();
    const prime = expectFormatError(() => BsrPattern.dense([4_294_967_291, 32], [32, 32]), "blockShape", 0);
    expect(prime.message).toMatch(/R values that do: 1, 4294967291$/);
    expect(divisors(4_294_967_291 * 3)).toEqual([1, 3, 4_294_967_291, 12_884_901_873]);
    expect(performance.now() - started).toBeLessThan(1000);
  });
  it("divisors refuses what is no dimension, where Infinity or a number past 2^53 never came back", () => {
    for (const n of [0, -6, 1.5, Number.NaN, "12", Number.POSITIVE_INFINITY, 2 ** 80]) {
      expect(expectFormatError(() => divisors(n as number), "n").message).toContain("positive integer");
    }
  });
  it("a mask of the wrong size", () => {
    expect(expectFormatError(() => BsrPattern.fromMask([6, 8], [2, 2], [1, 0]), "mask").message).toMatch(/12/);
  });
  it("a density outside [0, 1]", () => {
    expectFormatError(() => BsrPattern.random([6, 8], { blockShape: [2, 2], density: 1.5, seed: 0 }), "density");
    expectFormatError(() => BsrPattern.random([6, 8], { blockShape: [2, 2], density: Number.NaN, seed: 0 }), "density");
  });
  it("says a string is a string, rather than printing the number it spells as if that number were refused", () => {
    expect(expectFormatError(make(["0", 1, 1, 3] as never, [2, 0, 3]), "blockRowPtr", 0).message).toContain('got "0"');
    expect(expectFormatError(() => BsrPattern.dense(["6", 8] as never, [2, 2]), "shape", 0).message).toContain('got "6"');
    expect(expectFormatError(() => BsrPattern.fromFlatBlocks([4, 4], [2, 2], ["1"] as never), "flatBlocks", 0).message).toContain('got "1"');
  });
  it("refuses an array-like whose length is not a count, where NaN read as an empty pattern and -1 threw a RangeError", () => {
    expectFormatError(make([0, 0, 0, 0], { length: Number.NaN }), "blockColIdx");
    expectFormatError(make([0, 0, 0, 0], { length: -1 }), "blockColIdx");
    // Lengths past int32 threw a bare RangeError from the Int32Array they sized.
    for (const length of [2 ** 40, Number.POSITIVE_INFINITY, 1.5]) expectFormatError(make([0, 0, 0, 0], { length }), "blockColIdx");
    expect(make([0, 1, 1, 1], { length: 1, 0: 2 })().blockColIdx).toEqual(Int32Array.of(2));
  });
  it("validate() finds arrays written into after construction", () => {
    const pattern = make([0, 1, 1, 3], [2, 0, 3])();
    pattern.validate();
    pattern.blockColIdx[1] = 7;
    expectFormatError(() => pattern.validate(), "blockColIdx", 1);
  });
});

describe("BsrPattern indices", () => {
  it("match the worked example in docs/format.md", () => {
    const pattern = BsrPattern.fromMask([6, 8], [2, 2], [1, 0, 1, 0, 0, 0, 0, 0, 1, 1, 0, 1]);
    expect(Array.from(pattern.blockRowPtr)).toEqual([0, 2, 2, 5]);
    expect(Array.from(pattern.blockColIdx)).toEqual([0, 2, 0, 1, 3]);
    const { blockColPtr, blockRowIdx, valueIndex } = pattern.columnIndex;
    expect(Array.from(blockColPtr)).toEqual([0, 2, 3, 4, 5]);
    expect(Array.from(blockRowIdx)).toEqual([0, 2, 2, 0, 2]);
    expect(Array.from(valueIndex)).toEqual([0, 2, 3, 1, 4]);
    expect(Array.from(pattern.coordinates.blockRow)).toEqual([0, 0, 2, 2, 2]);
    expect(Array.from(pattern.coordinates.blockCol)).toEqual([0, 2, 0, 1, 3]);
    expect(Array.from(pattern.transpose().valuePermutation)).toEqual([0, 2, 3, 1, 4]);
  });

  it.each(shapes)("column index and coordinates match a brute-force walk, shape %j block %j", (shape, blockShape) => {
    const blockRows = shape[0] / blockShape[0];
    const blockCols = shape[1] / blockShape[1];
    const mask = randomMask(blockRows * blockCols, 99 + blockRows, 0.5);
    const pattern = BsrPattern.fromMask(shape, blockShape, mask);
    // Reference: block numbers in values order, then the column-major walk over the grid.
    const blockNumber = new Map<string, number>();
    let k = 0;
    for (let r = 0; r < blockRows; r++) for (let c = 0; c < blockCols; c++) if (mask[r * blockCols + c]) blockNumber.set(`${r},${c}`, k++);
    const { blockColPtr, blockRowIdx, valueIndex } = pattern.columnIndex;
    let walk = 0;
    for (let c = 0; c < blockCols; c++) {
      expect(blockColPtr[c]).toBe(walk);
      for (let r = 0; r < blockRows; r++) {
        if (!mask[r * blockCols + c]) continue;
        expect(blockRowIdx[walk]).toBe(r);
        expect(valueIndex[walk]).toBe(blockNumber.get(`${r},${c}`));
        walk++;
      }
    }
    expect(blockColPtr[blockCols]).toBe(walk);
    const { blockRow, blockCol } = pattern.coordinates;
    for (const [key, index] of blockNumber) expect(`${blockRow[index]},${blockCol[index]}`).toBe(key);
    expect(blockRow.length).toBe(pattern.nnzBlocks);
  });

  it("builds each index once", () => {
    const pattern = BsrPattern.random([64, 64], { blockShape: [8, 8], density: 0.5, seed: 2 });
    expect(pattern.columnIndex).toBe(pattern.columnIndex);
    expect(pattern.coordinates).toBe(pattern.coordinates);
    expect(pattern.transpose()).toBe(pattern.transpose());
  });

  it("transpose swaps shapes, maps blocks back, and twice gives the original", () => {
    const pattern = BsrPattern.random([24, 40], { blockShape: [3, 5], density: 0.4, seed: 3 });
    const { pattern: transposed, valuePermutation } = pattern.transpose();
    expect(transposed.shape).toEqual([40, 24]);
    expect(transposed.blockShape).toEqual([5, 3]);
    const before = pattern.coordinates;
    const after = transposed.coordinates;
    for (let k = 0; k < transposed.nnzBlocks; k++) {
      expect(after.blockRow[k]).toBe(before.blockCol[valuePermutation[k]]);
      expect(after.blockCol[k]).toBe(before.blockRow[valuePermutation[k]]);
    }
    expect(new Set(valuePermutation).size).toBe(pattern.nnzBlocks);
    expect(transposed.transpose().pattern.equals(pattern)).toBe(true);
  });

  it("equals compares shape, block shape and blocks", () => {
    const a = BsrPattern.fromMask([4, 4], [2, 2], [1, 0, 0, 1]);
    expect(a.equals(BsrPattern.fromMask([4, 4], [2, 2], [1, 0, 0, 1]))).toBe(true);
    expect(a.equals(BsrPattern.fromMask([4, 4], [2, 2], [1, 0, 1, 0]))).toBe(false);
    expect(a.equals(BsrPattern.fromMask([8, 4], [4, 2], [1, 0, 0, 1]))).toBe(false);
  });

  it("equals is false for anything that is not a pattern, rather than a TypeError", () => {
    const a = BsrPattern.dense([4, 4], [2, 2]);
    for (const other of [undefined, null, 3, "pattern", {}, { shape: [4, 4], blockShape: [2, 2] }, { ...a, blockRowPtr: [0, 2, 4] }]) {
      expect(a.equals(other as never)).toBe(false);
    }
    // A pattern-shaped object (another copy of the package) compares by its fields.
    const { shape, blockShape, blockRowPtr, blockColIdx } = a;
    expect(a.equals({ shape, blockShape, blockRowPtr, blockColIdx } as never)).toBe(true);
  });

  it("random patterns of odd shapes: exact counts, and the three indices, the mask and the transpose agree", () => {
    const grids: [Shape2, Shape2][] = [[[1, 1], [1, 1]], [[3, 7], [1, 7]], [[15, 14], [5, 2]], [[7, 13], [7, 1]], [[12, 9], [2, 3]]];
    for (const [shape, blockShape] of grids) {
      for (const density of [0, 1e-9, 0.1, 0.33, 0.77, 1]) {
        for (const seed of [0, 7, -5]) {
          const p = BsrPattern.random(shape, { blockShape, density, seed });
          expect(p.nnzBlocks).toBe(Math.round(density * p.blockRows * p.blockCols));
          expect(BsrPattern.random(shape, { blockShape, density, seed }).equals(p)).toBe(true);
          const mask = p.blockMask();
          expect(BsrPattern.fromMask(shape, blockShape, mask).equals(p)).toBe(true);
          const { blockRow, blockCol } = p.coordinates;
          for (let k = 0; k < p.nnzBlocks; k++) expect(mask[blockRow[k] * p.blockCols + blockCol[k]]).toBe(1);
          const { blockColPtr, blockRowIdx, valueIndex } = p.columnIndex;
          expect(blockColPtr[p.blockCols]).toBe(p.nnzBlocks);
          for (let col = 0; col < p.blockCols; col++) {
            for (let j = blockColPtr[col]; j < blockColPtr[col + 1]; j++) {
              expect([blockRow[valueIndex[j]], blockCol[valueIndex[j]]]).toEqual([blockRowIdx[j], col]);
              if (j > blockColPtr[col]) expect(blockRowIdx[j]).toBeGreaterThan(blockRowIdx[j - 1]);
            }
          }
          expect(new Set(valueIndex).size).toBe(p.nnzBlocks);
          const { pattern: t, valuePermutation } = p.transpose();
          expect([t.shape, t.blockShape]).toEqual([[shape[1], shape[0]], [blockShape[1], blockShape[0]]]);
          for (let k = 0; k < t.nnzBlocks; k++) {
            expect([t.coordinates.blockRow[k], t.coordinates.blockCol[k]]).toEqual([blockCol[valuePermutation[k]], blockRow[valuePermutation[k]]]);
          }
          expect(t.transpose().pattern.equals(p)).toBe(true);
        }
      }
    }
  });
});

describe("BsrPattern factories refuse what they cannot build exactly", () => {
  it("fromFlatBlocks rejects unsorted, repeated and non-integer positions, naming the entry", () => {
    const unsorted = thrown(() => BsrPattern.fromFlatBlocks([4, 4], [2, 2], [3, 0])) as BsrFormatError;
    expect(unsorted).toBeInstanceOf(BsrFormatError);
    expect([unsorted.field, unsorted.position]).toEqual(["flatBlocks", 1]);
    expect(unsorted.message).toMatch(/strictly ascending/);
    const repeated = thrown(() => BsrPattern.fromFlatBlocks([4, 4], [2, 2], [1, 1])) as BsrFormatError;
    expect([repeated.field, repeated.position]).toEqual(["flatBlocks", 1]);
    expect(repeated.message).toMatch(/repeats/);
    const fraction = thrown(() => BsrPattern.fromFlatBlocks([4, 4], [2, 2], [2.7])) as BsrFormatError;
    expect([fraction.field, fraction.position]).toEqual(["flatBlocks", 0]);
    expect(fraction.message).toMatch(/integer/);
    expect(thrown(() => BsrPattern.fromFlatBlocks([4, 4], [2, 2], [Number.NaN])).message).toMatch(/integer/);
    expect(BsrPattern.fromFlatBlocks([4, 4], [2, 2], [0, 3]).blockMask()).toEqual(Uint8Array.from([1, 0, 0, 1]));
  });

  it("random builds grids of more than 2^31 and 2^32 blocks (flat positions past int32)", () => {
    for (const shape of [[60_000, 60_000], [100_000, 50_000]] as const) {
      const pattern = BsrPattern.random(shape, { blockShape: [1, 1], density: 1e-6, seed: 1 });
      expect(pattern.nnzBlocks).toBe(Math.round(1e-6 * shape[0] * shape[1]));
      pattern.validate();
      // Blocks land in the far rows too, not only in the first 2^31 positions.
      expect(pattern.coordinates.blockRow.at(-1)).toBeGreaterThan(shape[0] / 2);
    }
    expectFormatError(() => BsrPattern.random([2 ** 31 - 2, 2 ** 31 - 2], { blockShape: [1, 1], density: 0, seed: 1 }), "shape");
  });

  it("blockMask of a grid of more blocks than one array holds is a BsrFormatError naming the shape, not a RangeError", () => {
    // 2^23 x (2^31 - 2) blocks, past 2^53: a valid pattern (none stored), whose mask no engine allocates.
    const pattern = new BsrPattern({ shape: [2 ** 23, 2 ** 31 - 2], blockShape: [1, 1], blockRowPtr: new Int32Array(2 ** 23 + 1), blockColIdx: [] });
    expect(expectFormatError(() => pattern.blockMask(), "shape").message).toContain("8388608 x 2147483646 block grid");
    expectFormatError(() => BsrMatrix.zeros(pattern).blockMask(), "shape");
  });

  it("dense and zeros refuse a grid of more blocks than int32 offsets count, where allocating threw a bare RangeError", () => {
    expect(expectFormatError(() => BsrPattern.dense([2 ** 17, 2 ** 17], [1, 1]), "shape").message).toContain("int32");
    expectFormatError(() => BsrMatrix.zeros([2 ** 16, 2 ** 15], { blockShape: [1, 1] }), "shape");
  });

  it("null or missing arguments are BsrFormatErrors naming the argument", () => {
    const field = (action: () => unknown) => {
      const error = thrown(action);
      expect(error).toBeInstanceOf(BsrFormatError);
      return (error as BsrFormatError).field;
    };
    expect(field(() => BsrPattern.fromMask([4, 4], [2, 2], null as never))).toBe("mask");
    expect(field(() => BsrPattern.fromMask(null as never, [2, 2], [1]))).toBe("shape");
    expect(field(() => BsrPattern.fromFlatBlocks([4, 4], [2, 2], null as never))).toBe("flatBlocks");
    expect(field(() => BsrPattern.fromFlatBlocks([4, 4], undefined as never, [0]))).toBe("blockShape");
    expect(field(() => BsrPattern.random([4, 4], undefined as never))).toBe("options");
    expect(field(() => BsrPattern.random([4, 4], { blockShape: [2, 2], density: 0.5 } as never))).toBe("seed");
    expect(field(() => BsrPattern.random([4, 4], { blockShape: [2, 2], density: 0.5, seed: 0.25 }))).toBe("seed");
  });
});
