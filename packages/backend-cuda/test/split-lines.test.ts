/**
 * bsrLinear and bsrMatmul with too few token tiles to fill the GPU (65 and 300 tokens on layers of 4-8 block rows, and
 * the transposed layers). With 32x32 blocks and lines of 48 blocks or more the cuda backend splits each block row
 * (column) into runs of blocks, one CTA each, and sums the float32 partials in a second pass: here split counts up to
 * 16 on lines of about 64 blocks, with an empty row and a full one (so some runs hold no block). 64x64 and 128x128
 * blocks keep their tiles at these sizes, checked the same way. With and without bias, bfloat16 and float16, against
 * float64 math from the values the tensors hold, on poisoned outputs, so an element no split writes fails.
 */
import { BsrPattern, bsrLinear, bsrMatmul, type DType, setBackend, tidy } from "@blocksparse/core";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { cudaMissing, expectClose, random, randomTensor, reportCudaAvailability, useCuda } from "./cuda";

reportCudaAvailability("split-lines.test.ts");

/** A pattern with each block present with probability `density`, block row 1 empty and block row 2 full. */
function pattern(shape: [number, number], block: number, density: number, next: () => number): BsrPattern {
  const blockRows = shape[0] / block;
  const blockCols = shape[1] / block;
  const mask = new Uint8Array(blockRows * blockCols);
  for (let row = 0; row < blockRows; row++)
    for (let col = 0; col < blockCols; col++) mask[row * blockCols + col] = row === 2 || (row !== 1 && next() < density) ? 1 : 0;
  return BsrPattern.fromMask(shape, [block, block], mask);
}

/** Y = X W^T (m x rows), the same plus the bias, and dX = dY W (m x cols), in float64. */
function references(p: BsrPattern, x: Float64Array, dy: Float64Array, values: Float64Array, bias: Float64Array, m: number) {
  const [rows, cols] = p.shape;
  const [R, C] = p.blockShape;
  const { blockRow, blockCol } = p.coordinates;
  const y = new Float64Array(m * rows);
  const dx = new Float64Array(m * cols);
  for (let b = 0; b < p.nnzBlocks; b++)
    for (let r = 0; r < R; r++) {
      const row = blockRow[b] * R + r;
      for (let c = 0; c < C; c++) {
        const w = values[(b * R + r) * C + c];
        const col = blockCol[b] * C + c;
        for (let i = 0; i < m; i++) {
          y[i * rows + row] += x[i * cols + col] * w;
          dx[i * cols + col] += dy[i * rows + row] * w;
        }
      }
    }
  const yBias = y.map((v, i) => v + bias[i % rows]);
  return { y, yBias, dx };
}

const DTYPES: DType[] = ["bfloat16", "float16"];
const TIMEOUT_MS = 120_000;

describe.skipIf(cudaMissing)("bsrLinear and bsrMatmul with few token tiles (split lines)", () => {
  beforeAll(() => {
    useCuda();
  });
  afterAll(() => {
    setBackend("cuda");
  });

  for (const block of [32, 64, 128]) {
    test(`${block}x${block} blocks, 65-700 tokens`, () => {
      const next = random(block * 7 + 3);
      // Four to eight block rows and wide rows: a few tiles with long lines (about 64 blocks at 32x32, so the rule
      // splits them there).
      const shape: [number, number] = [Math.max(4 * block, 256), (block === 32 ? 128 : block === 64 ? 40 : 24) * block];
      const p = pattern(shape, block, 0.5, next);
      const transposed = pattern([shape[1], shape[0]], block, 0.5, next);
      const [rows, cols] = shape;
      for (const dtype of DTYPES) {
        for (const m of [65, 300]) {
          tidy(() => {
            const x = randomTensor(next, [m, cols], dtype);
            const dy = randomTensor(next, [m, rows], dtype);
            const values = randomTensor(next, [p.nnzBlocks, block, block], dtype);
            const bias = randomTensor(next, [rows], dtype);
            const ref = references(p, x.values, dy.values, values.values, bias.values, m);
            const y = bsrLinear(x.t, values.t, p, bias.t);
            expect(y.shape).toEqual([m, rows]);
            expectClose(y.dataSync(), ref.yBias, dtype, `${dtype} M=${m} bsrLinear with bias`);
            expectClose(bsrLinear(x.t, values.t, p).dataSync(), ref.y, dtype, `${dtype} M=${m} bsrLinear`);
            expectClose(bsrMatmul(dy.t, values.t, p).dataSync(), ref.dx, dtype, `${dtype} M=${m} bsrMatmul`);
            // The transposed shape: many short lines for bsrLinear, few long ones for bsrMatmul.
            const tValues = randomTensor(next, [transposed.nnzBlocks, block, block], dtype);
            const tx = randomTensor(next, [m, rows], dtype);
            const tdy = randomTensor(next, [m, cols], dtype);
            const tBias = randomTensor(next, [cols], dtype);
            const tRef = references(transposed, tx.values, tdy.values, tValues.values, tBias.values, m);
            expectClose(bsrLinear(tx.t, tValues.t, transposed, tBias.t).dataSync(), tRef.yBias, dtype, `${dtype} M=${m} transposed bsrLinear`);
            expectClose(bsrMatmul(tdy.t, tValues.t, transposed).dataSync(), tRef.dx, dtype, `${dtype} M=${m} transposed bsrMatmul`);
          });
        }
      }
    }, TIMEOUT_MS);
  }
});
