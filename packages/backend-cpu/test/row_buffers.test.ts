/**
 * The per-thread buffers of CachedAttention's rows and of attention's softmax rows hold a row as long as the longest
 * context a call asked for: they are the products' scratch (counted by scratchBytes, freed by releaseScratch) and shrink
 * again once a call needs a quarter of what they hold.
 */
import { describe, expect, it } from "vitest";
import { cpuBackend, cpuThreads, setCpuThreads } from "../src/index";
import { cpuMissing, reportCpuAvailability } from "./cpu";

reportCpuAvailability("row_buffers.test.ts");

describe.skipIf(cpuMissing)("cpu attention row buffers", () => {
  const longKeys = 2 ** 18;

  /** One query attending the first `kept` of `n` keys of width d = 1. */
  function cached(n: number, kept: number): Float32Array {
    const addon = cpuBackend().addon;
    const k = new Float32Array(n).fill(0.5);
    const v = new Float32Array(n).fill(2);
    const out = new Float32Array(1);
    addon.cachedAttention(new Float32Array([1]), 0, k, 0, v, 0, Int32Array.of(kept - 1), out, 0, 1, 1, n, 1, 1);
    return out;
  }

  /** Softmax of one row of n scores. */
  function softmax(n: number): void {
    const s = new Float32Array(n).fill(1);
    cpuBackend().addon.attentionSoftmax(s, 0, null, 0, new Uint8Array(1), 1, n, 0, 1, false, 1);
    expect(s[n - 1]).toBeCloseTo(1 / n, 12);
  }

  it("cachedAttention's scores over a long context are counted, then given back by a short call", () => {
    const addon = cpuBackend().addon;
    const threads = cpuThreads();
    setCpuThreads(1);
    try {
      addon.releaseScratch();
      expect(cached(longKeys, longKeys)[0]).toBeCloseTo(2, 6);
      // float64 scores of 2^18 keys: 2 MiB on the thread that ran the row.
      expect(addon.scratchBytes()).toBeGreaterThanOrEqual(8 * longKeys);
      expect(cached(64, 64)[0]).toBeCloseTo(2, 6);
      expect(addon.scratchBytes()).toBeLessThan(64 * 1024);
      // Growing back one key at a time reallocates only at powers of two: the result is unchanged.
      expect(cached(longKeys, longKeys - 1)[0]).toBeCloseTo(2, 6);
      addon.releaseScratch();
      expect(addon.scratchBytes()).toBe(0);
    } finally {
      setCpuThreads(threads);
    }
  });

  it("attention's softmax rows over a long sequence are counted, then given back by a short call", () => {
    const addon = cpuBackend().addon;
    const threads = cpuThreads();
    setCpuThreads(1);
    try {
      addon.releaseScratch();
      softmax(longKeys);
      expect(addon.scratchBytes()).toBeGreaterThanOrEqual(8 * longKeys);
      softmax(64);
      expect(addon.scratchBytes()).toBeLessThan(64 * 1024);
    } finally {
      setCpuThreads(threads);
    }
  });
});
