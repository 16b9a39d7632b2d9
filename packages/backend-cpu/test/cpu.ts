/**
 * Shared by the cpu backend's tests: whether the addon is built here. Without it the suites skip with
 * one printed reason, unless BLOCKSPARSE_REQUIRE_CPU=1, where a test fails with the loader's reason.
 */
import { getBackendInstance, setBackend } from "@blocksparse/core";
import { cpuAvailability, cpuIsa, cpuThreads, type NativeIsa, setCpuIsa, setCpuThreads } from "../src/index";
import { afterAll, beforeAll, expect, test } from "vitest";

export const availability = cpuAvailability();
export const cpuMissing = !availability.available;
const required = process.env.BLOCKSPARSE_REQUIRE_CPU === "1";

/** Call once per test file, at top level. */
export function reportCpuAvailability(file: string): void {
  if (!cpuMissing) return;
  if (required) {
    test("the CPU addon is available (BLOCKSPARSE_REQUIRE_CPU=1)", () => {
      throw new Error(`the CPU addon is required but unavailable: ${availability.reason}`);
    });
  } else {
    console.log(`[${file}] cpu backend tests skipped: ${availability.reason}`);
  }
}

/**
 * Call inside a describe: the cpu backend active with poisoned allocations for its tests, and the instruction set and
 * thread count they set put back after them.
 */
export function useCpuPoisoned(): void {
  let startIsa: NativeIsa;
  let startThreads: number;
  beforeAll(() => {
    setBackend("cpu");
    getBackendInstance("cpu").poisonAllocations = true;
    startIsa = cpuIsa();
    startThreads = cpuThreads();
  });
  afterAll(() => {
    getBackendInstance("cpu").poisonAllocations = false;
    setCpuIsa(startIsa);
    setCpuThreads(startThreads);
  });
}

/** Selects `isa` and `threads`; false (printed once per call, naming `file`) where this CPU cannot run the isa. */
export function runsOn(file: string, isa: NativeIsa, threads: number): boolean {
  try {
    setCpuIsa(isa);
  } catch {
    console.log(`[${file}] ${isa}: this CPU cannot run it, skipped`);
    return false;
  }
  setCpuThreads(threads);
  return true;
}

/** ||out - ref|| <= 1e-5 ||ref|| (float32 sums of up to a few thousand terms), and every element written and finite. */
export function expectClose(out: Float32Array, ref: Float64Array, what: string): void {
  expect(out.length, `${what}: length`).toBe(ref.length);
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < ref.length; i++) {
    if (!Number.isFinite(out[i])) expect.fail(`${what}: element ${i} is ${out[i]}, expected ${ref[i]}`);
    diff += (out[i] - ref[i]) ** 2;
    norm += ref[i] ** 2;
  }
  expect(Math.sqrt(diff), `${what}: error norm`).toBeLessThanOrEqual(1e-5 * Math.sqrt(norm) + 1e-6);
}
