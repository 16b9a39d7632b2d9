/**
 * Shared by the CUDA tests: whether CUDA runs here, a seeded generator, and float64 comparisons.
 * Without CUDA the suites skip with one printed reason, unless BLOCKSPARSE_REQUIRE_CUDA=1, where a
 * test fails with the loader's reason instead.
 */
import { type DType, type Tensor, getBackendInstance, setBackend, tensor } from "@blocksparse/core";
import { CudaBackend, cudaAvailability } from "../src/index";
import { expect, test } from "vitest";

export const availability = cudaAvailability();
export const cudaMissing = !availability.available;
const required = process.env.BLOCKSPARSE_REQUIRE_CUDA === "1";

/** Call once per test file, at top level. */
export function reportCudaAvailability(file: string): void {
  if (!cudaMissing) return;
  if (required) {
    test("CUDA is available (BLOCKSPARSE_REQUIRE_CUDA=1)", () => {
      throw new Error(`CUDA is required but unavailable: ${availability.reason}`);
    });
  } else {
    console.log(`[${file}] CUDA tests skipped: ${availability.reason}`);
  }
}

/** Makes `cuda` the active backend, with allocations poisoned (NaN / 0x7fffffff). */
export function useCuda(): CudaBackend {
  setBackend("cuda");
  const backend = getBackendInstance("cuda");
  if (!(backend instanceof CudaBackend)) throw new Error("the cuda backend is not a CudaBackend");
  backend.poisonAllocations = true;
  return backend;
}

/** mulberry32: small, seeded, the same on every machine. */
export function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomValues(next: () => number, n: number, scale = 1): number[] {
  return Array.from({ length: n }, () => (next() * 2 - 1) * scale);
}

/** A tensor of random values in [-scale, scale) and the values it actually holds (rounded to dtype), as float64. */
export function randomTensor(next: () => number, shape: number[], dtype: DType, scale = 1): { t: Tensor; values: Float64Array } {
  const size = shape.reduce((a, b) => a * b, 1);
  const t = tensor(randomValues(next, size, scale), shape, dtype);
  return { t, values: Float64Array.from(t.dataSync()) };
}

export const FLOAT_DTYPES: DType[] = ["float32", "float16", "bfloat16"];

/** ||out - ref|| / ||ref|| bound per dtype (float32 accumulation in every case). */
export const RELATIVE_TOLERANCE: Record<DType, number> = { float32: 1e-5, float16: 2e-3, bfloat16: 1.5e-2, int32: 0 };

/** Asserts out matches ref: every element finite where ref is, and the relative error norm within tolerance. */
export function expectClose(out: ArrayLike<number>, ref: ArrayLike<number>, dtype: DType, what: string): void {
  expect(out.length, `${what}: length`).toBe(ref.length);
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < ref.length; i++) {
    // One expect per failure, not per element: an assertion per element made an 8M-element check take minutes.
    if (Number.isFinite(ref[i]) && !Number.isFinite(out[i])) expect.fail(`${what}: element ${i} is ${out[i]}, expected ${ref[i]}`);
    diff += (out[i] - ref[i]) ** 2;
    norm += ref[i] ** 2;
  }
  const relative = norm === 0 ? Math.sqrt(diff) : Math.sqrt(diff / norm);
  expect(relative, `${what}: relative error`).toBeLessThanOrEqual(RELATIVE_TOLERANCE[dtype] + (norm === 0 ? 1e-6 : 0));
}
