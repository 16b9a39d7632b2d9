import { describe, expect, it } from "vitest";
import { blockNormsF32, bsrLinearF32, bsrMatmulF32, sampledMatmulF32 } from "../src/backends/js/compute";
import { IndexError, ShapeError } from "../src/errors";
import { densify, expectClose, poisoned, randomF32, randomPattern, seededRandom, type TestPattern } from "./compute-helpers";

/** Y = X W^T (+ bias) in float64 on the dense W. */
function referenceLinear(x: Float32Array, w: Float64Array, bias: Float32Array | null, tokens: number, rows: number, cols: number): Float64Array {
  const y = new Float64Array(tokens * rows);
  for (let t = 0; t < tokens; t++) {
    for (let i = 0; i < rows; i++) {
      let sum = bias ? bias[i] : 0;
      for (let j = 0; j < cols; j++) sum += x[t * cols + j] * w[i * cols + j];
      y[t * rows + i] = sum;
    }
  }
  return y;
}

/** dX = dY W (+ dX0) in float64 on the dense W. */
function referenceMatmul(dy: Float32Array, w: Float64Array, tokens: number, rows: number, cols: number, dx0?: Float32Array): Float64Array {
  const dx = new Float64Array(tokens * cols);
  for (let t = 0; t < tokens; t++) {
    for (let j = 0; j < cols; j++) {
      let sum = dx0 ? dx0[t * cols + j] : 0;
      for (let i = 0; i < rows; i++) sum += dy[t * rows + i] * w[i * cols + j];
      dx[t * cols + j] = sum;
    }
  }
  return dx;
}

/** dW = (dY^T X) (+ dW0) on the pattern's blocks, in float64, in values order. */
function referenceSampled(dy: Float32Array, x: Float32Array, p: TestPattern, tokens: number, dw0?: Float32Array): Float64Array {
  const { rows, cols, blockHeight: R, blockWidth: C } = p;
  const dw = new Float64Array(p.nnz * R * C);
  for (let br = 0; br < p.blockRows; br++) {
    for (let k = p.blockRowPtr[br]; k < p.blockRowPtr[br + 1]; k++) {
      const bc = p.blockColIdx[k];
      for (let r = 0; r < R; r++) {
        for (let c = 0; c < C; c++) {
          const at = (k * R + r) * C + c;
          let sum = dw0 ? dw0[at] : 0;
          for (let t = 0; t < tokens; t++) sum += dy[t * rows + br * R + r] * x[t * cols + bc * C + c];
          dw[at] = sum;
        }
      }
    }
  }
  return dw;
}

// [blockRows, blockCols, blockHeight, blockWidth]: square and rectangular blocks, a single
// block, and 3x5 and 6x14 blocks that straddle the 4x4 tiles and the 8-wide few-token loops.
const grids: [number, number, number, number][] = [
  [5, 4, 16, 16],
  [3, 3, 32, 32],
  [2, 3, 64, 64],
  [4, 3, 16, 32],
  [3, 5, 32, 8],
  [1, 1, 16, 16],
  [7, 6, 3, 5],
  [3, 4, 6, 14],
];
const densities = [0, 0.1, 0.5, 1];
// 1 and 3 take the few-token loops; 67 and 130 straddle the 64- and 128-token chunks and the 4-token tiles.
const tokenCounts = [1, 3, 67, 130];

function cases(): { name: string; seed: number; pattern: TestPattern; tokens: number }[] {
  const out: { name: string; seed: number; pattern: TestPattern; tokens: number }[] = [];
  let seed = 1;
  for (const [blockRows, blockCols, R, C] of grids) {
    for (const density of densities) {
      for (const tokens of tokenCounts) {
        seed++;
        // Large grids with many tokens are slow in the float64 reference; one token count suffices.
        if (tokens === 130 && R * C >= 1024 && density !== 0.5) continue;
        const pattern = randomPattern(seededRandom(seed), blockRows, blockCols, R, C, density);
        out.push({ name: `${blockRows}x${blockCols} blocks of ${R}x${C}, density ${density} (nnz ${pattern.nnz}), ${tokens} tokens`, seed, pattern, tokens });
      }
    }
  }
  return out;
}

describe("bsrLinearF32", () => {
  for (const { name, seed, pattern: p, tokens } of cases()) {
    it(`${name} matches float64${seed % 2 ? " with bias" : ""}`, () => {
      const random = seededRandom(seed * 31 + 1);
      const x = randomF32(random, tokens * p.cols);
      const values = randomF32(random, p.nnz * p.blockHeight * p.blockWidth);
      const bias = seed % 2 ? randomF32(random, p.rows) : null;
      const y = poisoned(tokens * p.rows);
      bsrLinearF32({ ...p, x, values, bias, y, tokens });
      expectClose(y, referenceLinear(x, densify(p, values), bias, tokens, p.rows, p.cols), "Y");
    });
  }

  for (const tokens of [2, 9]) it(`reads and writes at offsets and leaves the rest alone (${tokens} tokens)`, () => {
    const random = seededRandom(101 + tokens);
    const p = randomPattern(random, 3, 2, 16, 8, 0.6);
    const [xOffset, valuesOffset, biasOffset, yOffset] = [3, 5, 2, 7];
    const x = randomF32(random, xOffset + tokens * p.cols);
    const values = randomF32(random, valuesOffset + p.nnz * 16 * 8);
    const bias = randomF32(random, biasOffset + p.rows);
    const y = poisoned(yOffset + tokens * p.rows + 4);
    bsrLinearF32({ ...p, x, values, bias, y, tokens, xOffset, valuesOffset, biasOffset, yOffset });
    const expected = referenceLinear(
      x.subarray(xOffset),
      densify(p, values.subarray(valuesOffset)),
      bias.subarray(biasOffset),
      tokens,
      p.rows,
      p.cols,
    );
    expectClose(y.slice(yOffset, yOffset + tokens * p.rows), expected, "Y");
    expect(y.subarray(0, yOffset).every(Number.isNaN)).toBe(true);
    expect(y.subarray(yOffset + tokens * p.rows).every(Number.isNaN)).toBe(true);
  });

  it("writes nothing for 0 tokens", () => {
    const p = randomPattern(seededRandom(102), 2, 2, 16, 16, 1);
    const y = poisoned(8);
    bsrLinearF32({ ...p, x: new Float32Array(0), values: new Float32Array(p.nnz * 256), y, tokens: 0 });
    expect(y.every(Number.isNaN)).toBe(true);
  });

  it("rejects short arrays, a grid that does not divide and a bad index", () => {
    const p = randomPattern(seededRandom(103), 2, 2, 4, 4, 1);
    const ok = { ...p, x: new Float32Array(2 * 8), values: new Float32Array(4 * 16), y: new Float32Array(2 * 8), tokens: 2 };
    expect(() => bsrLinearF32(ok)).not.toThrow();
    expect(() => bsrLinearF32({ ...ok, x: new Float32Array(15) })).toThrow(/x has 15 elements, needs 16/);
    expect(() => bsrLinearF32({ ...ok, values: new Float32Array(63) })).toThrow(ShapeError);
    expect(() => bsrLinearF32({ ...ok, bias: new Float32Array(7) })).toThrow(/bias/);
    expect(() => bsrLinearF32({ ...ok, rows: 9 })).toThrow(/not a whole number of 4x4 blocks/);
    expect(() => bsrLinearF32({ ...ok, blockColIdx: Int32Array.of(0, 2, 0, 1) })).toThrow(IndexError);
    expect(() => bsrLinearF32({ ...ok, blockRowPtr: Int32Array.of(0, 3, 2) })).toThrow(/blockRowPtr decreases/);
    expect(() => bsrLinearF32({ ...ok, tokens: -1 })).toThrow(/tokens must be a non-negative integer/);
  });
});

describe("bsrMatmulF32", () => {
  for (const { name, seed, pattern: p, tokens } of cases()) {
    it(`${name} matches float64`, () => {
      const random = seededRandom(seed * 31 + 2);
      const dy = randomF32(random, tokens * p.rows);
      const values = randomF32(random, p.nnz * p.blockHeight * p.blockWidth);
      const dx = poisoned(tokens * p.cols);
      bsrMatmulF32({ ...p, dy, values, dx, tokens });
      expectClose(dx, referenceMatmul(dy, densify(p, values), tokens, p.rows, p.cols), "dX");
    });
  }

  for (const tokens of [2, 11]) it(`accumulates into dX at offsets when asked (${tokens} tokens)`, () => {
    const random = seededRandom(201 + tokens);
    const p = randomPattern(random, 4, 3, 6, 16, 0.5);
    const [dyOffset, valuesOffset, dxOffset] = [1, 6, 3];
    const dy = randomF32(random, dyOffset + tokens * p.rows);
    const values = randomF32(random, valuesOffset + p.nnz * 6 * 16);
    const dx0 = randomF32(random, tokens * p.cols);
    const dx = poisoned(dxOffset + tokens * p.cols + 2);
    dx.set(dx0, dxOffset);
    bsrMatmulF32({ ...p, dy, values, dx, tokens, dyOffset, valuesOffset, dxOffset, accumulate: true });
    const expected = referenceMatmul(dy.subarray(dyOffset), densify(p, values.subarray(valuesOffset)), tokens, p.rows, p.cols, dx0);
    expectClose(dx.slice(dxOffset, dxOffset + tokens * p.cols), expected, "dX");
    expect(dx.subarray(0, dxOffset).every(Number.isNaN)).toBe(true);
    expect(dx.subarray(dxOffset + tokens * p.cols).every(Number.isNaN)).toBe(true);
  });

  it("rejects a value index outside the blocks or repeated, and a short dY", () => {
    const p = randomPattern(seededRandom(202), 2, 2, 4, 4, 1);
    const ok = { ...p, dy: new Float32Array(2 * 8), values: new Float32Array(4 * 16), dx: new Float32Array(2 * 8), tokens: 2 };
    expect(() => bsrMatmulF32(ok)).not.toThrow();
    expect(() => bsrMatmulF32({ ...ok, valueIndex: Int32Array.of(0, 2, 1, 4) })).toThrow(/valueIndex\[3\] = 4 is outside \[0, 4\)/);
    expect(() => bsrMatmulF32({ ...ok, valueIndex: Int32Array.of(0, 2, 1) })).toThrow(IndexError);
    // Every entry in range, but block 0 read twice and block 2 never.
    expect(() => bsrMatmulF32({ ...ok, valueIndex: Int32Array.of(0, 0, 1, 3) })).toThrow(/valueIndex\[1\] = 0 repeats valueIndex\[0\]/);
    expect(() => bsrMatmulF32({ ...ok, dy: new Float32Array(15) })).toThrow(/dy has 15 elements/);
    expect(() => bsrMatmulF32({ ...ok, blockColPtr: Int32Array.of(0, 2) })).toThrow(/blockColPtr must have 3 entries/);
  });
});

describe("sampledMatmulF32", () => {
  for (const { name, seed, pattern: p, tokens } of cases()) {
    it(`${name} matches float64`, () => {
      const random = seededRandom(seed * 31 + 3);
      const dy = randomF32(random, tokens * p.rows);
      const x = randomF32(random, tokens * p.cols);
      const dw = poisoned(p.nnz * p.blockHeight * p.blockWidth);
      sampledMatmulF32({ ...p, dy, x, dw, tokens });
      expectClose(dw, referenceSampled(dy, x, p, tokens), "dW");
    });
  }

  it("accumulates into dW at offsets over several token chunks", () => {
    const random = seededRandom(301);
    const p = randomPattern(random, 3, 4, 8, 4, 0.5);
    const tokens = 300;
    const [dyOffset, xOffset, dwOffset] = [2, 5, 1];
    const dy = randomF32(random, dyOffset + tokens * p.rows);
    const x = randomF32(random, xOffset + tokens * p.cols);
    const dw0 = randomF32(random, p.nnz * 32);
    const dw = poisoned(dwOffset + p.nnz * 32 + 3);
    dw.set(dw0, dwOffset);
    sampledMatmulF32({ ...p, dy, x, dw, tokens, dyOffset, xOffset, dwOffset, accumulate: true });
    expectClose(dw.slice(dwOffset, dwOffset + p.nnz * 32), referenceSampled(dy.subarray(dyOffset), x.subarray(xOffset), p, tokens, dw0), "dW");
    expect(dw.subarray(0, dwOffset).every(Number.isNaN)).toBe(true);
    expect(dw.subarray(dwOffset + p.nnz * 32).every(Number.isNaN)).toBe(true);
  });

  it("writes zeros for 0 tokens", () => {
    const p = randomPattern(seededRandom(302), 2, 2, 4, 4, 1);
    const dw = poisoned(p.nnz * 16);
    sampledMatmulF32({ ...p, dy: new Float32Array(0), x: new Float32Array(0), dw, tokens: 0 });
    expect(Array.from(dw)).toEqual(new Array(p.nnz * 16).fill(0));
  });

  it("rejects a short dW and a block column outside the grid", () => {
    const p = randomPattern(seededRandom(303), 2, 2, 4, 4, 1);
    const ok = { ...p, dy: new Float32Array(2 * 8), x: new Float32Array(2 * 8), dw: new Float32Array(4 * 16), tokens: 2 };
    expect(() => sampledMatmulF32(ok)).not.toThrow();
    expect(() => sampledMatmulF32({ ...ok, dw: new Float32Array(63) })).toThrow(/dw has 63 elements, needs 64/);
    expect(() => sampledMatmulF32({ ...ok, blockColIdx: Int32Array.of(0, 1, -1, 1) })).toThrow(/blockColIdx\[2\] = -1/);
  });
});

describe("empty grids", () => {
  it("a matrix with no block rows gives dX = 0; Y and dW are empty and stay untouched", () => {
    const p = randomPattern(seededRandom(401), 0, 3, 16, 8, 1);
    const tokens = 5;
    const dx = poisoned(tokens * p.cols);
    bsrMatmulF32({ ...p, dy: new Float32Array(0), values: new Float32Array(0), dx, tokens });
    expect(Array.from(dx)).toEqual(new Array(tokens * p.cols).fill(0));
    const y = poisoned(4);
    bsrLinearF32({ ...p, x: new Float32Array(tokens * p.cols), values: new Float32Array(0), y, tokens });
    const dw = poisoned(4);
    sampledMatmulF32({ ...p, dy: new Float32Array(0), x: new Float32Array(tokens * p.cols), dw, tokens });
    expect(y.every(Number.isNaN) && dw.every(Number.isNaN)).toBe(true);
  });

  it("a matrix with no block columns gives Y = bias", () => {
    const p = randomPattern(seededRandom(402), 2, 0, 4, 4, 1);
    const tokens = 3;
    const bias = randomF32(seededRandom(403), p.rows);
    const y = poisoned(tokens * p.rows);
    bsrLinearF32({ ...p, x: new Float32Array(0), values: new Float32Array(0), bias, y, tokens });
    const expected = new Float64Array(tokens * p.rows);
    for (let t = 0; t < tokens; t++) expected.set(bias, t * p.rows);
    expectClose(y, expected, "Y");
  });

  it("0 tokens write nothing to dX", () => {
    const p = randomPattern(seededRandom(404), 2, 2, 4, 4, 1);
    const dx = poisoned(4);
    bsrMatmulF32({ ...p, dy: new Float32Array(0), values: new Float32Array(p.nnz * 16), dx, tokens: 0 });
    expect(dx.every(Number.isNaN)).toBe(true);
  });
});

describe("blockNormsF32", () => {
  for (const [blockCount, blockSize] of [
    [0, 16],
    [1, 1],
    [3, 7],
    [5, 256],
    [4, 32 * 8],
    [2, 64 * 64],
  ]) {
    it(`${blockCount} blocks of ${blockSize} match float64`, () => {
      const random = seededRandom(blockCount * 7919 + blockSize);
      const values = randomF32(random, blockCount * blockSize);
      const norms = poisoned(blockCount);
      blockNormsF32({ values, norms, blockCount, blockSize });
      const expected = new Float64Array(blockCount);
      for (let q = 0; q < blockCount; q++) {
        let sum = 0;
        for (let i = 0; i < blockSize; i++) sum += values[q * blockSize + i] ** 2;
        expected[q] = Math.sqrt(sum);
      }
      expectClose(norms, expected, "norms");
    });
  }

  it("reads and writes at offsets; an all-zero block has norm 0", () => {
    const values = Float32Array.of(9, 3, 4, 0, 0, 9);
    const norms = poisoned(4);
    blockNormsF32({ values, norms, blockCount: 2, blockSize: 2, valuesOffset: 1, normsOffset: 1 });
    expect(Array.from(norms.subarray(1, 3))).toEqual([5, 0]);
    expect(Number.isNaN(norms[0]) && Number.isNaN(norms[3])).toBe(true);
  });

  it("rejects a short norms array", () => {
    expect(() => blockNormsF32({ values: new Float32Array(8), norms: new Float32Array(1), blockCount: 2, blockSize: 4 })).toThrow(/norms has 1 elements, needs 2/);
  });
});
