import { expect } from "vitest";

/** Deterministic uniform numbers in [0, 1) (mulberry32). */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `length` float32 values uniform in [-1, 1). */
export function randomF32(random: () => number, length: number): Float32Array {
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = 2 * random() - 1;
  return out;
}

/** A float32 array of `length` NaNs: any element a kernel fails to write stays NaN. */
export function poisoned(length: number): Float32Array {
  return new Float32Array(length).fill(Number.NaN);
}

/**
 * Every element within 1e-5 of the reference's largest magnitude, and the whole within
 * 1e-5 of its 2-norm; an all-zero reference must be matched exactly.
 */
export function expectClose(actual: Float32Array, expected: Float64Array, what: string): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  let maxRef = 0;
  let refSq = 0;
  for (let i = 0; i < expected.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(expected[i]));
    refSq += expected[i] * expected[i];
  }
  let errSq = 0;
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    if (!(err <= 1e-5 * maxRef)) {
      throw new Error(`${what}: element ${i} is ${actual[i]}, expected ${expected[i]} (largest |reference| ${maxRef})`);
    }
    errSq += err * err;
  }
  expect(Math.sqrt(errSq), `${what}: error norm`).toBeLessThanOrEqual(1e-5 * Math.sqrt(refSq));
}

/** A block-sparse pattern with its row-wise and column-wise indices, as the kernels take them. */
export interface TestPattern {
  rows: number;
  cols: number;
  blockHeight: number;
  blockWidth: number;
  blockRows: number;
  blockCols: number;
  nnz: number;
  blockRowPtr: Int32Array;
  blockColIdx: Int32Array;
  blockColPtr: Int32Array;
  blockRowIdx: Int32Array;
  valueIndex: Int32Array;
}

/** Keeps each block with probability `density` (0 keeps none, 1 keeps all). */
export function randomPattern(random: () => number, blockRows: number, blockCols: number, blockHeight: number, blockWidth: number, density: number): TestPattern {
  const blockRowPtr = new Int32Array(blockRows + 1);
  const cols: number[] = [];
  for (let br = 0; br < blockRows; br++) {
    for (let bc = 0; bc < blockCols; bc++) if (random() < density) cols.push(bc);
    blockRowPtr[br + 1] = cols.length;
  }
  const blockColIdx = Int32Array.from(cols);
  const nnz = cols.length;
  // Column-wise index: counting sort of the blocks by column, rows ascending within a column.
  const blockColPtr = new Int32Array(blockCols + 1);
  for (const bc of cols) blockColPtr[bc + 1]++;
  for (let bc = 0; bc < blockCols; bc++) blockColPtr[bc + 1] += blockColPtr[bc];
  const next = blockColPtr.slice(0, blockCols);
  const blockRowIdx = new Int32Array(nnz);
  const valueIndex = new Int32Array(nnz);
  for (let br = 0; br < blockRows; br++) {
    for (let k = blockRowPtr[br]; k < blockRowPtr[br + 1]; k++) {
      const slot = next[blockColIdx[k]]++;
      blockRowIdx[slot] = br;
      valueIndex[slot] = k;
    }
  }
  return {
    rows: blockRows * blockHeight,
    cols: blockCols * blockWidth,
    blockHeight,
    blockWidth,
    blockRows,
    blockCols,
    nnz,
    blockRowPtr,
    blockColIdx,
    blockColPtr,
    blockRowIdx,
    valueIndex,
  };
}

/** W [rows, cols] in float64, zero outside its blocks. */
export function densify(pattern: TestPattern, values: Float32Array): Float64Array {
  const { rows, cols, blockHeight: R, blockWidth: C } = pattern;
  const dense = new Float64Array(rows * cols);
  for (let br = 0; br < pattern.blockRows; br++) {
    for (let k = pattern.blockRowPtr[br]; k < pattern.blockRowPtr[br + 1]; k++) {
      const bc = pattern.blockColIdx[k];
      for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) dense[(br * R + r) * cols + bc * C + c] = values[(k * R + r) * C + c];
    }
  }
  return dense;
}
