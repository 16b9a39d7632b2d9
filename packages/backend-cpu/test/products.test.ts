/**
 * The native products against float64 math on fresh random inputs, on every micro-kernel this CPU
 * runs and several thread counts, at sizes that reach each path: few rows (decode), edge tiles,
 * several K slices and token chunks, every block shape class, empty block rows and columns.
 * Outputs are poisoned, so an element a path forgets to write fails.
 */
import { BsrPattern, type Tensor, bsrLinear, bsrMatmul, matmul, sampledMatmul, tensor, tidy } from "@blocksparse/core";
import type { NativeIsa } from "../src/index";
import { SeededRandom, reference } from "@blocksparse/core/testing";
import { describe, it } from "vitest";
import { cpuMissing, expectClose, reportCpuAvailability, runsOn, useCpuPoisoned } from "./cpu";

reportCpuAvailability("products.test.ts");

function randomTensor(rng: SeededRandom, shape: number[]): { t: Tensor; values: Float32Array } {
  const values = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.uniform(-1, 1));
  return { t: tensor(values, shape, "float32"), values };
}

/** C = op(A) op(B) in float64; A is [m, k] (or [k, m] when transposed), B is [k, n] (or [n, k]). */
function matmulRef(a: Float32Array, b: Float32Array, m: number, n: number, k: number, transposeA: boolean, transposeB: boolean): Float64Array {
  // Direct index loops: core's general reference (any rank, broadcast) is too slow at these sizes.
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = 0;
      for (let p = 0; p < k; p++) sum += (transposeA ? a[p * m + i] : a[i * k + p]) * (transposeB ? b[j * k + p] : b[p * n + j]);
      c[i * n + j] = sum;
    }
  }
  return c;
}

const ISAS: NativeIsa[] = ["avx512", "avx2", "scalar"];

describe.skipIf(cpuMissing)("native products against float64", () => {
  useCpuPoisoned();

  for (const isa of ISAS) {
    for (const threads of [1, 3]) {
      describe(`${isa}, ${threads} thread${threads > 1 ? "s" : ""}`, () => {
        const runs = (): boolean => runsOn("products.test.ts", isa, threads);

        it("matmul: few rows, edge tiles, several K slices and row chunks, every transpose", { timeout: 120_000 }, () => {
          if (!runs()) return;
          const next = new SeededRandom(11 + threads);
          const shapes: [number, number, number][] = [[1, 1, 1], [3, 70, 5], [8, 600, 300], [9, 33, 47], [130, 257, 70], [2100, 3, 5], [17, 0, 5]];
          tidy(() => {
            for (const [m, k, n] of shapes) {
              for (const transposeA of [false, true]) {
                for (const transposeB of [false, true]) {
                  const a = randomTensor(next, transposeA ? [k, m] : [m, k]);
                  const b = randomTensor(next, transposeB ? [n, k] : [k, n]);
                  const out = matmul(a.t, b.t, { transposeA, transposeB }).dataSync() as Float32Array;
                  expectClose(out, matmulRef(a.values, b.values, m, n, k, transposeA, transposeB), `${m}x${k}x${n} tA=${transposeA} tB=${transposeB}`);
                }
              }
            }
            // Two B panels (K x columns over 4 MiB), a partial K slice, a 2-row last row block, a partial last strip.
            const [m, k, n] = [130, 1100, 1000];
            const a = randomTensor(next, [m, k]);
            const b = randomTensor(next, [k, n]);
            expectClose(matmul(a.t, b.t).dataSync() as Float32Array, matmulRef(a.values, b.values, m, n, k, false, false), `${m}x${k}x${n}`);
          });
        });

        it("bsrLinear, bsrMatmul and sampledMatmul: every block shape class, few and many tokens, several chunks", { timeout: 120_000 }, () => {
          if (!runs()) return;
          const next = new SeededRandom(23 + threads);
          const cases: { shape: [number, number]; block: [number, number]; density: number; tokens: number[] }[] = [
            { shape: [64, 96], block: [32, 32], density: 0.5, tokens: [1, 3, 8, 9, 77] },
            { shape: [48, 64], block: [16, 16], density: 0.4, tokens: [2, 40] },
            { shape: [128, 128], block: [64, 64], density: 0.75, tokens: [5, 33] },
            { shape: [12, 15], block: [2, 3], density: 0.5, tokens: [1, 20] },
            { shape: [40, 80], block: [8, 40], density: 1, tokens: [4, 19] },
            { shape: [32, 48], block: [32, 48], density: 1, tokens: [1, 260] },
            { shape: [64, 2048], block: [32, 32], density: 0.2, tokens: [300] },
            { shape: [96, 64], block: [32, 32], density: 0, tokens: [2, 12] },
            // Non-square 16/32/64 blocks through the decode loops (every token count 1-8) and the tiles.
            { shape: [128, 192], block: [16, 64], density: 0.5, tokens: [1, 2, 4, 5, 6, 7, 8, 70] },
            { shape: [192, 96], block: [64, 32], density: 0.5, tokens: [1, 7, 8, 41] },
            { shape: [96, 160], block: [32, 16], density: 0.6, tokens: [3, 8, 9] },
            // Many block rows, some empty: the decode loop's work items span several block rows.
            { shape: [640, 64], block: [16, 16], density: 0.15, tokens: [1, 3] },
            // 5-8 tokens over many block rows, a width with masked tails (44 = 32 + 12 = 5 x 8 + 4) and one of whole vector groups (96).
            { shape: [320, 220], block: [16, 44], density: 0.3, tokens: [5, 6, 7, 8] },
            { shape: [256, 384], block: [32, 96], density: 0.4, tokens: [2, 4, 8] },
          ];
          for (const { shape, block, density, tokens: tokenCounts } of cases) {
            const [rows, cols] = shape;
            const pattern = BsrPattern.random(shape, { blockShape: block, density, seed: next.nextInt(1e6) });
            tidy(() => {
              const values = randomTensor(next, [pattern.nnzBlocks, block[0], block[1]]);
              const dense32 = Float32Array.from(reference.denseWeight(pattern, { shape: [pattern.nnzBlocks, ...block], data: Float64Array.from(values.values) }).data);
              const bias = randomTensor(next, [rows]);
              for (const tokens of tokenCounts) {
                const what = `${rows}x${cols} b${block.join("x")} d${density} tokens ${tokens}`;
                const x = randomTensor(next, [tokens, cols]);
                const dy = randomTensor(next, [tokens, rows]);
                const y = matmulRef(x.values, dense32, tokens, rows, cols, false, true);
                expectClose(bsrLinear(x.t, values.t, pattern).dataSync() as Float32Array, y, `bsrLinear ${what}`);
                const yBias = y.map((v, i) => v + bias.values[i % rows]);
                expectClose(bsrLinear(x.t, values.t, pattern, bias.t).dataSync() as Float32Array, yBias, `bsrLinear + bias ${what}`);
                expectClose(bsrMatmul(dy.t, values.t, pattern).dataSync() as Float32Array, matmulRef(dy.values, dense32, tokens, cols, rows, false, false), `bsrMatmul ${what}`);
                const dwDense = matmulRef(dy.values, x.values, rows, cols, tokens, true, false);
                const [R, C] = block;
                const dw = new Float64Array(pattern.nnzBlocks * R * C);
                const { blockRow, blockCol } = pattern.coordinates;
                for (let q = 0; q < pattern.nnzBlocks; q++) {
                  for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) dw[(q * R + r) * C + c] = dwDense[(blockRow[q] * R + r) * cols + blockCol[q] * C + c];
                }
                expectClose(sampledMatmul(dy.t, x.t, pattern).dataSync() as Float32Array, dw, `sampledMatmul ${what}`);
              }
            });
          }
        });
      });
    }
  }
});
