import { BsrPattern, SeededRandom } from "@blocksparse/format";
import { describe, expect, it } from "vitest";
import { adamStep, bsrLinearRows, bsrMatmulRows, pickRows, rowsTimes, rowsTimesTransposed, sampledMatmulBlocks, transposedTimesRows } from "../src/reference";
import { checkEqual, compareToReference, spreadIndices } from "../src/validate";

function normals(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  new SeededRandom(seed).fillNormal(out, 0, 1);
  return out;
}

/** Dense [rows, cols] of a BSR matrix: the bridge between the sparse and dense references. */
function toDense(pattern: BsrPattern, values: Float32Array): Float64Array {
  const [rows, cols] = pattern.shape;
  const [R, C] = pattern.blockShape;
  const dense = new Float64Array(rows * cols);
  for (let br = 0; br < pattern.blockRows; br++) {
    for (let k = pattern.blockRowPtr[br]; k < pattern.blockRowPtr[br + 1]; k++) {
      for (let r = 0; r < R; r++) {
        for (let c = 0; c < C; c++) dense[(br * R + r) * cols + pattern.blockColIdx[k] * C + c] = values[(k * R + r) * C + c];
      }
    }
  }
  return dense;
}

describe("float64 references", () => {
  const [M, K, N, B] = [6, 48, 32, 8];
  const pattern = BsrPattern.random([N, K], { blockShape: [B, B], density: 0.4, seed: 4 });
  const values = normals(pattern.nnzBlocks * B * B, 1);
  const w = toDense(pattern, values);
  const x = normals(M * K, 2);
  const dy = normals(M * N, 3);
  const rows = [0, 3, 5];

  it("bsrLinearRows equals the dense X·Wᵀ of the same matrix", () => {
    const check = compareToReference("y", bsrLinearRows(x, pattern, values, rows), rowsTimesTransposed(x, K, w, N, rows), 1e-12);
    expect(check.ok, check.detail).toBe(true);
  });

  it("bsrMatmulRows equals the dense dY·W", () => {
    const check = compareToReference("dx", bsrMatmulRows(dy, pattern, values, rows), rowsTimes(dy, N, w, K, rows), 1e-12);
    expect(check.ok, check.detail).toBe(true);
  });

  it("sampledMatmulBlocks equals dYᵀ·X read at each block's place", () => {
    const full = transposedTimesRows(dy, N, x, K, M, Array.from({ length: N }, (_, i) => i));
    const blocks = [0, pattern.nnzBlocks - 1];
    const { blockRow, blockCol } = pattern.coordinates;
    const expected = new Float64Array(blocks.length * B * B);
    blocks.forEach((block, i) => {
      for (let r = 0; r < B; r++) {
        for (let c = 0; c < B; c++) expected[(i * B + r) * B + c] = full[(blockRow[block] * B + r) * K + blockCol[block] * B + c];
      }
    });
    const check = compareToReference("dW", sampledMatmulBlocks(dy, x, M, pattern, blocks), expected, 1e-12);
    expect(check.ok, check.detail).toBe(true);
  });

  it("adamStep matches a hand-computed step", () => {
    // m' = 0.1, v' = 0.001, m̂ = 0.1/0.1 = 1, v̂ = 0.001/0.001 = 1: p' = 1 - 0.1 * 1 / (1 + 0)
    const out = adamStep([1], [1], [0], [0], { lr: 0.1, beta1: 0.9, beta2: 0.999, epsilon: 0, step: 1 });
    expect(out[0]).toBeCloseTo(0.9, 12);
  });
});

describe("validation helpers", () => {
  it("fails a wrong value, a NaN and a length mismatch, and passes within tolerance", () => {
    expect(compareToReference("a", [1, 2, 3], [1, 2, 3.0001], 1e-3).ok).toBe(true);
    expect(compareToReference("a", [1, 2, 4], [1, 2, 3], 1e-3).detail).toMatch(/relative error/);
    expect(compareToReference("a", [1, Number.NaN], [1, 2], 1).detail).toMatch(/element 1 is NaN/);
    expect(compareToReference("a", [1], [1, 2], 1).ok).toBe(false);
    expect(checkEqual("b", [0, -0], [0, 0]).ok).toBe(false);
  });

  it("spreads indices over the range, first and last included", () => {
    expect(spreadIndices(100, 5)).toEqual([0, 25, 50, 74, 99]);
    expect(spreadIndices(3, 10)).toEqual([0, 1, 2]);
    expect(pickRows([1, 2, 3, 4, 5, 6], 2, [2, 0])).toEqual(Float64Array.of(5, 6, 1, 2));
    expect(() => spreadIndices(0, 1)).toThrow(/positive integer/);
  });
});
