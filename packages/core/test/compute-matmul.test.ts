import { describe, expect, it } from "vitest";
import { matmulF32 } from "../src/backends/js/compute";
import { ShapeError } from "../src/errors";
import { expectClose, poisoned, randomF32, seededRandom } from "./compute-helpers";

/** C = op(A) op(B) (+ C0) in float64 by the definition. */
function referenceMatmul(a: Float32Array, b: Float32Array, m: number, n: number, k: number, transposeA: boolean, transposeB: boolean, c0?: Float32Array): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = c0 ? c0[i * n + j] : 0;
      for (let p = 0; p < k; p++) sum += a[transposeA ? p * m + i : i * k + p] * b[transposeB ? j * k + p : p * n + j];
      c[i * n + j] = sum;
    }
  }
  return c;
}

// Odd sizes straddle the 4x4 tiles and the MC = 32, KC = 512 and NC = 1024 cache blocks;
// m < 8 takes the few-row loops.
const shapes: [number, number, number][] = [
  [1, 1, 1],
  [1, 9, 5],
  [2, 70, 7],
  [3, 33, 600],
  [7, 21, 19],
  [1, 1030, 17],
  [7, 1, 3],
  [5, 7, 3],
  [17, 13, 29],
  [37, 66, 130],
  [70, 33, 600],
  [6, 1030, 9],
  [64, 64, 64],
];
const transposes: [boolean, boolean][] = [
  [false, false],
  [true, false],
  [false, true],
  [true, true],
];

describe("matmulF32", () => {
  for (const [m, n, k] of shapes) {
    for (const [transposeA, transposeB] of transposes) {
      it(`${m}x${n}x${k}${transposeA ? " A^T" : ""}${transposeB ? " B^T" : ""} matches float64`, () => {
        const random = seededRandom(m * 1000003 + n * 1009 + k * 7 + (transposeA ? 1 : 0) + (transposeB ? 2 : 0));
        const a = randomF32(random, m * k);
        const b = randomF32(random, k * n);
        const c = poisoned(m * n);
        matmulF32({ a, b, c, m, n, k, transposeA, transposeB });
        expectClose(c, referenceMatmul(a, b, m, n, k, transposeA, transposeB), "C");
      });
    }
  }

  it("writes zeros when k is 0 and nothing when m or n is 0", () => {
    const c = poisoned(12);
    matmulF32({ a: new Float32Array(0), b: new Float32Array(0), c, m: 3, n: 4, k: 0 });
    expect(Array.from(c)).toEqual(new Array(12).fill(0));
    const untouched = poisoned(4);
    matmulF32({ a: new Float32Array(0), b: new Float32Array(8), c: untouched, m: 0, n: 4, k: 2 });
    matmulF32({ a: new Float32Array(6), b: new Float32Array(0), c: untouched, m: 3, n: 0, k: 2 });
    expect(untouched.every(Number.isNaN)).toBe(true);
  });

  for (const m of [2, 9]) it(`accumulates into C when asked, across several K blocks (m = ${m})`, () => {
    const random = seededRandom(11 + m);
    const [n, k] = [10, 1100];
    const a = randomF32(random, m * k);
    const b = randomF32(random, k * n);
    const c0 = randomF32(random, m * n);
    const c = c0.slice();
    matmulF32({ a, b, c, m, n, k, transposeB: true, accumulate: true });
    expectClose(c, referenceMatmul(a, b, m, n, k, false, true, c0), "C");
  });

  for (const m of [6, 10]) it(`runs a batch at offsets, broadcasting an operand with batch stride 0, and writes nothing else (m = ${m})`, () => {
    const random = seededRandom(12 + m);
    const [n, k, batch] = [11, 13, 3];
    const [aOffset, bOffset, cOffset] = [5, 3, 7];
    const a = randomF32(random, aOffset + m * k + 2);
    const b = randomF32(random, bOffset + batch * k * n + 4);
    const cBatchStride = m * n + 2;
    const c = poisoned(cOffset + batch * cBatchStride + 3);
    matmulF32({ a, b, c, m, n, k, batch, aOffset, bOffset, cOffset, aBatchStride: 0, cBatchStride, transposeA: true });
    for (let item = 0; item < batch; item++) {
      const bItem = b.subarray(bOffset + item * k * n, bOffset + (item + 1) * k * n);
      const cItem = c.slice(cOffset + item * cBatchStride, cOffset + item * cBatchStride + m * n);
      expectClose(cItem, referenceMatmul(a.subarray(aOffset, aOffset + m * k), bItem, m, n, k, true, false), `C[${item}]`);
      const gap = c.subarray(cOffset + item * cBatchStride + m * n, cOffset + (item + 1) * cBatchStride);
      expect(gap.every(Number.isNaN), `gap after C[${item}]`).toBe(true);
    }
    expect(c.subarray(0, cOffset).every(Number.isNaN)).toBe(true);
  });

  for (const m of [1, 9]) it(`broadcasts B across the batch (m = ${m})`, () => {
    const random = seededRandom(13 + m);
    const [n, k, batch] = [4, 6, 4];
    const a = randomF32(random, batch * m * k);
    const b = randomF32(random, n * k);
    const c = poisoned(batch * m * n);
    matmulF32({ a, b, c, m, n, k, batch, bBatchStride: 0, transposeB: true });
    for (let item = 0; item < batch; item++) {
      const expected = referenceMatmul(a.subarray(item * m * k, (item + 1) * m * k), b, m, n, k, false, true);
      expectClose(c.slice(item * m * n, (item + 1) * m * n), expected, `C[${item}]`);
    }
  });

  it("rejects arrays too short for the sizes, bad sizes and overlapping outputs", () => {
    const a = new Float32Array(6);
    const b = new Float32Array(6);
    const c = new Float32Array(4);
    expect(() => matmulF32({ a: new Float32Array(5), b, c, m: 2, n: 2, k: 3 })).toThrow(ShapeError);
    expect(() => matmulF32({ a, b, c, m: 2, n: 2, k: 3, cOffset: 1 })).toThrow(/c has 4 elements, needs 5/);
    expect(() => matmulF32({ a, b, c, m: 2, n: 2, k: 3, batch: 2, aBatchStride: 0, bBatchStride: 0, cBatchStride: 0 })).toThrow(/overlap/);
    expect(() => matmulF32({ a, b, c, m: -2, n: 2, k: 3 })).toThrow(/m must be a non-negative integer/);
    expect(() => matmulF32({ a, b, c, m: 2, n: 2.5, k: 3 })).toThrow(ShapeError);
  });
});
