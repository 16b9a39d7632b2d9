import { BsrPattern, bsrLinear, bsrMatmul, sampledMatmul, tidy } from "@blocksparse/core";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type CudaBackend, allowTf32, setAllowTf32 } from "../src/index";
import { cudaMissing, random, randomTensor, reportCudaAvailability, useCuda } from "./cuda";

reportCudaAvailability("tf32.test.ts");

/** ||out - ref|| / ||ref||, with every element finite (poisoned outputs left unwritten are NaN). */
function relativeError(out: ArrayLike<number>, ref: ArrayLike<number>, what: string): number {
  expect(out.length, `${what}: length`).toBe(ref.length);
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < ref.length; i++) {
    if (!Number.isFinite(out[i])) expect.fail(`${what}: element ${i} is ${out[i]}`);
    diff += (out[i] - ref[i]) ** 2;
    norm += ref[i] ** 2;
  }
  return Math.sqrt(diff / norm);
}

/** The three products in float32 and their float64 references, on fresh random inputs. */
function productErrors(shape: [number, number], block: number, m: number, seed: number): Record<string, number> {
  const next = random(seed);
  const pattern = BsrPattern.random(shape, { blockShape: [block, block], density: 0.5, seed });
  const [rows, cols] = shape;
  const { blockRow, blockCol } = pattern.coordinates;
  return tidy(() => {
    const x = randomTensor(next, [m, cols], "float32");
    const values = randomTensor(next, [pattern.nnzBlocks, block, block], "float32");
    const bias = randomTensor(next, [rows], "float32");
    const dy = randomTensor(next, [m, rows], "float32");
    const yRef = new Float64Array(m * rows);
    const dxRef = new Float64Array(m * cols);
    const dwRef = new Float64Array(pattern.nnzBlocks * block * block);
    for (let i = 0; i < m; i++) for (let o = 0; o < rows; o++) yRef[i * rows + o] = bias.values[o];
    for (let p = 0; p < pattern.nnzBlocks; p++)
      for (let r = 0; r < block; r++) {
        const row = blockRow[p] * block + r;
        for (let c = 0; c < block; c++) {
          const col = blockCol[p] * block + c;
          const w = values.values[(p * block + r) * block + c];
          let dw = 0;
          for (let i = 0; i < m; i++) {
            yRef[i * rows + row] += x.values[i * cols + col] * w;
            dxRef[i * cols + col] += dy.values[i * rows + row] * w;
            dw += dy.values[i * rows + row] * x.values[i * cols + col];
          }
          dwRef[(p * block + r) * block + c] = dw;
        }
      }
    return {
      bsrLinear: relativeError(bsrLinear(x.t, values.t, pattern, bias.t).dataSync(), yRef, "bsrLinear"),
      bsrMatmul: relativeError(bsrMatmul(dy.t, values.t, pattern).dataSync(), dxRef, "bsrMatmul"),
      sampledMatmul: relativeError(sampledMatmul(dy.t, x.t, pattern).dataSync(), dwRef, "sampledMatmul"),
    };
  });
}

// The tensor-core block sizes; 2100 tokens make sampledMatmul split the tokens and sum partials.
const CASES: { shape: [number, number]; block: number; m: number }[] = [
  { shape: [128, 192], block: 32, m: 200 },
  { shape: [128, 192], block: 64, m: 200 },
  { shape: [256, 384], block: 128, m: 130 },
  { shape: [64, 96], block: 32, m: 2100 },
];

describe("setAllowTf32 without CUDA", () => {
  test("rejects a non-boolean", () => {
    expect(() => setAllowTf32("yes" as unknown as boolean)).toThrow(/allow must be a boolean/);
  });
});

describe.skipIf(cudaMissing)("float32 block-sparse products with and without TF32", () => {
  let backend: CudaBackend;
  const initial = allowTf32();
  beforeAll(() => {
    backend = useCuda();
  });
  afterAll(() => setAllowTf32(initial));

  test("the setting reaches the addon and is off unless BLOCKSPARSE_ALLOW_TF32=1", () => {
    expect(initial).toBe(process.env.BLOCKSPARSE_ALLOW_TF32 === "1");
    expect(backend.addon.allowTf32()).toBe(initial);
    setAllowTf32(true);
    expect([allowTf32(), backend.addon.allowTf32()]).toEqual([true, true]);
    setAllowTf32(false);
    expect([allowTf32(), backend.addon.allowTf32()]).toEqual([false, false]);
  });

  // Each case checks three products against float64 host math: seconds of CPU on the larger shapes.
  const caseTimeout = 60_000;
  for (const { shape, block, m } of CASES) {
    const name = `W ${shape.join("x")} in ${block}x${block} blocks, ${m} tokens`;

    test(`${name}: exact float32 when TF32 is not allowed`, () => {
      setAllowTf32(false);
      for (const [product, error] of Object.entries(productErrors(shape, block, m, block + m)))
        expect(error, product).toBeLessThanOrEqual(1e-5);
    }, caseTimeout);

    test(`${name}: TF32 within 2e-3 when allowed, and rounded like TF32 on sm_80+`, () => {
      setAllowTf32(true);
      const tensorCores = Number.parseFloat(backend.device.computeCapability) >= 8;
      for (const [product, error] of Object.entries(productErrors(shape, block, m, block + m + 1))) {
        expect(error, product).toBeLessThanOrEqual(2e-3);
        // Inputs rounded to a 10-bit mantissa: far above float32 rounding, so the TF32 kernel ran.
        if (tensorCores) expect(error, `${product} ran in TF32`).toBeGreaterThan(5e-5);
      }
    }, caseTimeout);
  }
});
