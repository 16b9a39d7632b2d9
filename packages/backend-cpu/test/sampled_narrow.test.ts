/**
 * sampledMatmul on blocks narrower than the micro-kernel's register tile (1x1, 1x4, 4x1, 3x5, 8x2, ...): against
 * float64 math on fresh random inputs with poisoned outputs, on every micro-kernel this CPU runs, and with no more
 * packed-operand scratch than 32x32 blocks of the same matrix take. Whole strips of the tile had padded each block
 * to 8 x 32 (AVX-512), so 1x1 blocks took 20 times the inputs' chunk.
 */
import { BsrPattern, sampledMatmul, tensor, tidy } from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/core/testing";
import { describe, expect, it } from "vitest";
import { cpuBackend, cpuThreads, type NativeIsa, type NativeRowIndex, } from "../src/index";
import { cpuMissing, expectClose, reportCpuAvailability, runsOn, useCpuPoisoned } from "./cpu";

reportCpuAvailability("sampled_narrow.test.ts");

const ISAS: NativeIsa[] = ["avx512", "avx2", "scalar"];

function randomValues(rng: SeededRandom, length: number): Float32Array {
  return Float32Array.from({ length }, () => rng.uniform(-1, 1));
}

/** dW [nnz, R, C] = (dY^T X) on the pattern's blocks, in float64. */
function sampledReference(dy: Float32Array, x: Float32Array, pattern: BsrPattern, tokens: number): Float64Array {
  const [rows, cols] = pattern.shape;
  const [R, C] = pattern.blockShape;
  const { blockRow, blockCol } = pattern.coordinates;
  const dw = new Float64Array(pattern.nnzBlocks * R * C);
  for (let q = 0; q < pattern.nnzBlocks; q++) {
    for (let r = 0; r < R; r++) {
      for (let c = 0; c < C; c++) {
        const row = blockRow[q] * R + r;
        const col = blockCol[q] * C + c;
        let sum = 0;
        for (let t = 0; t < tokens; t++) sum += dy[t * rows + row] * x[t * cols + col];
        dw[(q * R + r) * C + c] = sum;
      }
    }
  }
  return dw;
}

describe.skipIf(cpuMissing)("sampledMatmul on narrow blocks", () => {
  useCpuPoisoned();

  // Block shapes under the tile (8x32 with AVX-512, 6x16 with AVX2, 4x16 portable) on either side, odd ones, tall and
  // wide ones; 1, 17 (a partial vector of tokens) and 300 tokens (a second chunk of 44).
  const blocks: [number, number][] = [[1, 1], [1, 4], [4, 1], [3, 5], [8, 2], [2, 8], [5, 3], [4, 4], [7, 9], [1, 40], [64, 1], [12, 4]];
  for (const isa of ISAS) {
    for (const threads of [1, 3]) {
      it(`${isa}, ${threads} thread${threads > 1 ? "s" : ""}: every block against float64`, { timeout: 120_000 }, () => {
        if (!runsOn("sampled_narrow.test.ts", isa, threads)) return;
        const rng = new SeededRandom(101 + threads);
        for (const [R, C] of blocks) {
          const shape: [number, number] = [R * Math.max(3, Math.ceil(48 / R)), C * Math.max(3, Math.ceil(40 / C))];
          // Some block rows empty (density 0.3), and one full block row at least by chance at these sizes.
          const pattern = BsrPattern.random(shape, { blockShape: [R, C], density: 0.3, seed: rng.nextInt(1e6) });
          for (const tokens of [1, 17, 300]) {
            tidy(() => {
              const dy = randomValues(rng, tokens * shape[0]);
              const x = randomValues(rng, tokens * shape[1]);
              const out = sampledMatmul(tensor(dy, [tokens, shape[0]]), tensor(x, [tokens, shape[1]]), pattern).dataSync() as Float32Array;
              expectClose(out, sampledReference(dy, x, pattern, tokens), `${isa} ${shape.join("x")} b${R}x${C} d0.3 tokens ${tokens}`);
            });
          }
        }
      });
    }
  }

  it("narrow blocks take one unpadded chunk of the inputs as scratch, no more than 32x32 blocks of the same matrix", () => {
    const addon = cpuBackend().addon;
    // 960 is a whole number of blocks of every shape here; 300 tokens make a chunk of 256 and one of 44.
    const [rows, cols, tokens] = [960, 960, 300];
    const chunkBytes = (rows + cols) * 256 * 4;
    const rng = new SeededRandom(7);
    const dy = randomValues(rng, tokens * rows);
    const x = randomValues(rng, tokens * cols);
    const run = (R: number, C: number) => {
      const pattern = BsrPattern.random([rows, cols], { blockShape: [R, C], density: 0.2, seed: R * 100 + C });
      const index: NativeRowIndex = { rows, cols, blockHeight: R, blockWidth: C, blockRowPtr: pattern.blockRowPtr, blockColIdx: pattern.blockColIdx };
      addon.sampledMatmul(dy, 0, x, 0, new Float32Array(pattern.nnzBlocks * R * C), 0, tokens, index);
    };
    for (const isa of ISAS) {
      if (!runsOn("sampled_narrow.test.ts", isa, cpuThreads())) continue;
      const before = addon.scratchBytes();
      run(32, 32);
      const square = addon.scratchBytes();
      // 32x32 blocks pack one chunk of dY^T and X, padded to whole tiles at most (AVX2's 6 rows: 36 per 32).
      expect(square - before, `${isa}: 32x32`).toBeLessThanOrEqual(((rows * 36) / 32 + cols) * 256 * 4);
      // Too narrow for the tile on every micro-kernel: whole strips had asked 1x1 blocks for 37.5 MiB here (AVX-512).
      for (const [R, C] of [[1, 1], [1, 8], [8, 1], [4, 4], [3, 5]]) {
        run(R, C);
        expect(addon.scratchBytes(), `${isa}: ${R}x${C} after 32x32`).toBe(square);
      }
      // Half a tile's rows (the portable kernel's 4): strips that at most double the chunk.
      run(2, 32);
      expect(addon.scratchBytes() - before, `${isa}: 2x32`).toBeLessThanOrEqual(2 * chunkBytes);
    }
  });
});
