/**
 * bsrLinear (Y = X W^T + b) and bsrMatmul (dX = dY W) on blocks narrower than the micro-kernel's register tile (1x1,
 * 1xC, Rx1, 5x5, ...): against float64 math on fresh random inputs with poisoned outputs, on every micro-kernel this
 * CPU runs, beside the blocks that keep the tile (16x16, 32x32); NaN and infinities as the js backend gives them; and
 * a scratch that does not grow with the tile's width. Whole strips of the tile had padded each block row of 1x1 blocks
 * to 32 columns (AVX-512): 32 times the weights in scratch, and as many idle lanes.
 */
import { BsrPattern, type Tensor, bsrLinear, bsrMatmul, setBackend, tensor, tidy } from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/core/testing";
import { describe, expect, it } from "vitest";
import { type NativeColumnIndex, type NativeIsa, type NativeRowIndex, cpuBackend, cpuThreads } from "../src/index";
import { cpuMissing, expectClose, reportCpuAvailability, runsOn, useCpuPoisoned } from "./cpu";

reportCpuAvailability("linear_narrow.test.ts");

const ISAS: NativeIsa[] = ["avx512", "avx2", "scalar"];

function randomValues(rng: SeededRandom, length: number): Float32Array {
  return Float32Array.from({ length }, () => rng.uniform(-1, 1));
}

/** Element (row, col) of W: each block's values at its place, zero elsewhere. */
function denseWeight(values: Float32Array, pattern: BsrPattern): Float64Array {
  const [rows, cols] = pattern.shape;
  const [R, C] = pattern.blockShape;
  const { blockRow, blockCol } = pattern.coordinates;
  const w = new Float64Array(rows * cols);
  for (let q = 0; q < pattern.nnzBlocks; q++) {
    for (let r = 0; r < R; r++) {
      for (let c = 0; c < C; c++) w[(blockRow[q] * R + r) * cols + blockCol[q] * C + c] = values[(q * R + r) * C + c];
    }
  }
  return w;
}

/** Y [tokens, rows] = X W^T (+ bias) in float64. */
function linearReference(x: Float32Array, w: Float64Array, bias: Float32Array | null, rows: number, cols: number, tokens: number): Float64Array {
  const y = new Float64Array(tokens * rows);
  for (let t = 0; t < tokens; t++) {
    for (let r = 0; r < rows; r++) {
      let sum = bias ? bias[r] : 0;
      for (let c = 0; c < cols; c++) sum += x[t * cols + c] * w[r * cols + c];
      y[t * rows + r] = sum;
    }
  }
  return y;
}

/** dX [tokens, cols] = dY W in float64. */
function matmulReference(dy: Float32Array, w: Float64Array, rows: number, cols: number, tokens: number): Float64Array {
  const dx = new Float64Array(tokens * cols);
  for (let t = 0; t < tokens; t++) {
    for (let r = 0; r < rows; r++) {
      const g = dy[t * rows + r];
      for (let c = 0; c < cols; c++) dx[t * cols + c] += g * w[r * cols + c];
    }
  }
  return dx;
}

describe.skipIf(cpuMissing)("bsrLinear and bsrMatmul on narrow blocks", () => {
  useCpuPoisoned();

  // Narrow for the tile in Y (block height), in dX (block width) or both, beside shapes that keep the tile; 1 and 2
  // tokens (the streaming path), 17 (a partial tile of tokens), 300 (several tiles and, at 1100 columns, chunks).
  const cases: { shape: [number, number]; block: [number, number]; density: number }[] = [
    { shape: [40, 48], block: [1, 1], density: 0.3 },
    { shape: [36, 49], block: [1, 7], density: 0.4 },
    { shape: [49, 36], block: [7, 1], density: 0.4 },
    { shape: [30, 45], block: [2, 3], density: 0.3 },
    { shape: [24, 140], block: [3, 70], density: 0.5 },
    { shape: [20, 192], block: [1, 64], density: 0.4 },
    { shape: [192, 20], block: [64, 1], density: 0.4 },
    { shape: [35, 40], block: [5, 5], density: 0.3 },
    { shape: [48, 64], block: [16, 16], density: 0.5 },
    { shape: [64, 96], block: [32, 32], density: 0.5 },
    // Over 1024 K steps per output (two runs summed into the output) and several chunks of tokens.
    { shape: [12, 1100], block: [1, 1], density: 1 },
    { shape: [1100, 12], block: [1, 1], density: 1 },
    // No blocks: the bias, or zeros.
    { shape: [16, 24], block: [1, 4], density: 0 },
  ];
  for (const isa of ISAS) {
    for (const threads of [1, 4]) {
      it(`${isa}, ${threads} thread${threads > 1 ? "s" : ""}: every block shape against float64, with and without bias`, { timeout: 60_000 }, () => {
        if (!runsOn("linear_narrow.test.ts", isa, threads)) return;
        const rng = new SeededRandom(301 + threads);
        for (const { shape, block, density } of cases) {
          const [rows, cols] = shape;
          const pattern = BsrPattern.random(shape, { blockShape: block, density, seed: rng.nextInt(1e6) });
          const values = randomValues(rng, pattern.nnzBlocks * block[0] * block[1]);
          const w = denseWeight(values, pattern);
          const bias = randomValues(rng, rows);
          for (const tokens of [1, 2, 17, 300]) {
            const what = `${isa} ${rows}x${cols} b${block.join("x")} d${density} tokens ${tokens}`;
            tidy(() => {
              const x = randomValues(rng, tokens * cols);
              const dy = randomValues(rng, tokens * rows);
              const v = tensor(values, [pattern.nnzBlocks, ...block]);
              const y = bsrLinear(tensor(x, [tokens, cols]), v, pattern).dataSync() as Float32Array;
              expectClose(y, linearReference(x, w, null, rows, cols, tokens), `${what}: bsrLinear`);
              const yb = bsrLinear(tensor(x, [tokens, cols]), v, pattern, tensor(bias, [rows])).dataSync() as Float32Array;
              expectClose(yb, linearReference(x, w, bias, rows, cols, tokens), `${what}: bsrLinear with bias`);
              const dx = bsrMatmul(tensor(dy, [tokens, rows]), v, pattern).dataSync() as Float32Array;
              expectClose(dx, matmulReference(dy, w, rows, cols, tokens), `${what}: bsrMatmul`);
            });
          }
        }
      });
    }
  }

  it("NaN and infinities come out as the js backend gives them", () => {
    // 1x1 and 1x3 blocks (narrow in Y), 3x1 (narrow in dX): a NaN in x, an infinite weight, and products that
    // overflow float32 (3e38 x 1e38) summing to +-inf or cancelling.
    for (const isa of ISAS) {
      if (!runsOn("linear_narrow.test.ts", isa, 2)) continue;
      for (const block of [[1, 1], [1, 3], [3, 1]] as [number, number][]) {
        const [rows, cols, tokens] = [24, 24, 40];
        const pattern = BsrPattern.random([rows, cols], { blockShape: block, density: 1, seed: 5 });
        const values = Float32Array.from({ length: rows * cols }, (_, i) => (i % 7 === 0 ? -1e38 : 1e38));
        values[5] = Number.POSITIVE_INFINITY;
        const x = Float32Array.from({ length: tokens * cols }, (_, i) => (i % 5 === 0 ? 1 : 3e38));
        x[3 * cols + 2] = Number.NaN;
        const on = (backend: "js" | "cpu", op: () => Tensor) => {
          setBackend(backend);
          return tidy(() => op().dataSync() as Float32Array);
        };
        const linear = () => bsrLinear(tensor(x, [tokens, cols]), tensor(values, [pattern.nnzBlocks, ...block]), pattern);
        const backward = () => bsrMatmul(tensor(x, [tokens, rows]), tensor(values, [pattern.nnzBlocks, ...block]), pattern);
        for (const [name, op] of [["bsrLinear", linear], ["bsrMatmul", backward]] as const) {
          const js = on("js", op);
          const cpu = on("cpu", op);
          let nonFinite = 0;
          for (let i = 0; i < js.length; i++) {
            if (Number.isFinite(js[i])) {
              if (!(Math.abs(cpu[i] - js[i]) <= 1e-5 * Math.abs(js[i]) + 1e32)) expect.fail(`${isa} b${block.join("x")} ${name}: element ${i} is ${cpu[i]}, js ${js[i]}`);
            } else {
              nonFinite++;
              if (!Object.is(cpu[i], js[i])) expect.fail(`${isa} b${block.join("x")} ${name}: element ${i} is ${cpu[i]}, js ${js[i]}`);
            }
          }
          expect(nonFinite, `${isa} b${block.join("x")} ${name}: the case overflows`).toBeGreaterThan(0);
        }
      }
    }
    setBackend("cpu");
  });

  it("narrow blocks take one chunk of the token operand and each thread's sums as scratch, whatever their density", () => {
    const addon = cpuBackend().addon;
    // 480 is a whole number of blocks of every shape here; 300 tokens are 5 tiles of 64.
    const [rows, cols, tokens] = [480, 480, 300];
    const rng = new SeededRandom(17);
    const x = randomValues(rng, tokens * cols);
    const dy = randomValues(rng, tokens * rows);
    const bias = randomValues(rng, rows);
    // Each product's scratch from none: what it asks for itself.
    const scratchOf = (R: number, C: number, density: number, product: "bsrLinear" | "bsrMatmul"): number => {
      const pattern = BsrPattern.random([rows, cols], { blockShape: [R, C], density, seed: R * 100 + C });
      const values = randomValues(rng, pattern.nnzBlocks * R * C);
      const sizes = { rows, cols, blockHeight: R, blockWidth: C };
      addon.releaseScratch();
      if (product === "bsrLinear") {
        const index: NativeRowIndex = { ...sizes, blockRowPtr: pattern.blockRowPtr, blockColIdx: pattern.blockColIdx };
        addon.bsrLinear(x, 0, values, 0, bias, 0, new Float32Array(tokens * rows), 0, tokens, index);
      } else {
        const index: NativeColumnIndex = { ...sizes, ...pattern.columnIndex };
        addon.bsrMatmul(dy, 0, values, 0, new Float32Array(tokens * cols), 0, tokens, index);
      }
      return addon.scratchBytes();
    };
    // The token operand's 480 columns by 300 tokens rounded up to whole tiles of 64, and each thread's sums of a run of
    // groups (under 80 columns) by 64 tokens.
    const bound = 480 * 320 * 4 + cpuThreads() * 80 * 64 * 4;
    for (const isa of ISAS) {
      if (!runsOn("linear_narrow.test.ts", isa, cpuThreads())) continue;
      // Whole strips of the tile had taken 14 MiB for 1x1 blocks at density 0.5 (AVX-512): 32 times the weights.
      for (const [R, C, product] of [[1, 1, "bsrLinear"], [1, 1, "bsrMatmul"], [1, 8, "bsrLinear"], [8, 1, "bsrMatmul"], [5, 5, "bsrLinear"], [4, 4, "bsrMatmul"], [3, 60, "bsrLinear"]] as const) {
        for (const density of [0.5, 0.05]) {
          expect(scratchOf(R, C, density, product), `${isa}: ${product} ${R}x${C} at density ${density}`).toBeLessThanOrEqual(bound);
        }
      }
    }
    addon.releaseScratch();
  });
});
