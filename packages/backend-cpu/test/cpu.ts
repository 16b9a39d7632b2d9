/**
 * Shared by the cpu backend's tests: whether the addon is built here. Without it the suites skip with
 * one printed reason, unless BLOCKSPARSE_REQUIRE_CPU=1, where a test fails with the loader's reason.
 */
import { cpuAvailability } from "../src/index";
import { test } from "vitest";

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
