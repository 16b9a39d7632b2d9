import { SeededRandom } from "../src/random.js";

/** Dense row-major values where roughly half the blocks are exactly zero. */
export function denseWithZeroBlocks(
  shape: readonly [number, number],
  blockShape: readonly [number, number],
  seed: number,
): Float32Array {
  const [rows, cols] = shape;
  const [blockHeight, blockWidth] = blockShape;
  const random = new SeededRandom(seed);
  const blockCols = cols / blockWidth;
  const keep = Array.from({ length: (rows / blockHeight) * blockCols }, () => random.next() < 0.5);
  const dense = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const block = Math.floor(r / blockHeight) * blockCols + Math.floor(c / blockWidth);
      if (keep[block]) dense[r * cols + c] = random.normal();
    }
  }
  return dense;
}

/** Every block of the grid, row-major, with its dense values copied out (float64 reference). */
export function referenceBlocks(
  dense: ArrayLike<number>,
  shape: readonly [number, number],
  blockShape: readonly [number, number],
): { row: number; col: number; values: number[]; norm: number }[] {
  const [rows, cols] = shape;
  const [blockHeight, blockWidth] = blockShape;
  const blocks = [];
  for (let row = 0; row < rows / blockHeight; row++) {
    for (let col = 0; col < cols / blockWidth; col++) {
      const values: number[] = [];
      for (let r = 0; r < blockHeight; r++) {
        for (let c = 0; c < blockWidth; c++) values.push(dense[(row * blockHeight + r) * cols + col * blockWidth + c]);
      }
      blocks.push({ row, col, values, norm: Math.sqrt(values.reduce((sum, v) => sum + v * v, 0)) });
    }
  }
  return blocks;
}

/** Runs `action` and returns the error it throws (fails the test if it does not throw). */
export function thrown(action: () => unknown): Error {
  try {
    action();
  } catch (error) {
    return error as Error;
  }
  throw new Error("expected an error, none was thrown");
}
