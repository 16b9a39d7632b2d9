// The addon's float16 / bfloat16 conversions (every half input a kernel reads is widened by them, every half output
// rounded) against @blocksparse/format's, bit for bit: every half pattern, every float32 sign and exponent with the
// rounding boundaries below them, random patterns, NaN payloads; then the cpu backend's half ops against js's.
import {
  bfloat16BitsToFloat32Into,
  cast,
  float16BitsToFloat32Into,
  float32ToBfloat16BitsInto,
  float32ToFloat16BitsInto,
  getBackendInstance,
  linear,
  randn,
  tensorOn,
  tidy,
} from "@blocksparse/core";
import { describe, expect, it } from "vitest";
import type { CpuBackend } from "../src/index";
import { cpuMissing, reportCpuAvailability, useCpuPoisoned } from "./cpu";

reportCpuAvailability("half.test.ts");

const cpuBackend = () => getBackendInstance("cpu") as CpuBackend;
const HALVES = ["float16", "bfloat16"] as const;

/** The index and the two words of the first difference of two equal-length arrays' words, or null. */
function firstDifference(got: Uint32Array | Uint16Array, want: Uint32Array | Uint16Array): string | null {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== want[i]) return `element ${i}: 0x${got[i].toString(16)}, expected 0x${want[i].toString(16)}`;
  }
  return null;
}

/**
 * float32 bit patterns: each of the 65536 sign-and-top-bits prefixes with low halves at the rounding boundaries of
 * both dtypes (bfloat16 rounds on the low 16 bits; float16 on 13 bits for normals, 14 to 24 for subnormals, whose
 * boundaries from bit 16 up lie in the prefixes), then random patterns.
 */
function float32Patterns(random: number): Uint32Array {
  const lows = [0, 1, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x2001, 0x3000, 0x4000, 0x4001, 0x7fff, 0x8000, 0x8001, 0xc000, 0xffff];
  const words = new Uint32Array(65536 * lows.length + random);
  let at = 0;
  for (let high = 0; high < 65536; high++) for (const low of lows) words[at++] = ((high << 16) | low) >>> 0;
  let state = 0x9e3779b9;
  for (; at < words.length; at++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    words[at] = state >>> 0;
  }
  return words;
}

describe.skipIf(cpuMissing)("half conversions in the addon", () => {
  useCpuPoisoned();

  it("widen every float16 and bfloat16 pattern exactly as format does, NaN payloads kept, from an offset", () => {
    const addon = cpuBackend().addon;
    const bits = new Uint16Array(65536 + 3);
    for (let i = 0; i < 65536; i++) bits[i + 3] = i;
    for (const dtype of HALVES) {
      const want = new Float32Array(65536);
      const source = bits.subarray(3);
      if (dtype === "float16") float16BitsToFloat32Into(source, want);
      else bfloat16BitsToFloat32Into(source, want);
      // Poisoned around the span written: the elements before the offset and after the count stay as they were.
      const out = new Float32Array(65536 + 10);
      new Uint32Array(out.buffer).fill(0xdeadbeef);
      addon.widenHalf(bits, 3, out, 5, 65536, dtype === "bfloat16");
      const words = new Uint32Array(out.buffer);
      expect(firstDifference(words.subarray(5, 5 + 65536), new Uint32Array(want.buffer)), dtype).toBeNull();
      for (const i of [0, 1, 2, 3, 4, 65541, 65542, 65543, 65544, 65545]) expect(words[i], `${dtype} word ${i} outside the span`).toBe(0xdeadbeef);
    }
  });

  it("round float32 to float16 and bfloat16 exactly as format does: ties to even, overflow, subnormals, NaN", () => {
    const addon = cpuBackend().addon;
    const words = float32Patterns(1 << 20);
    const values = new Float32Array(words.buffer);
    for (const dtype of HALVES) {
      const want = new Uint16Array(values.length);
      if (dtype === "float16") float32ToFloat16BitsInto(values, want);
      else float32ToBfloat16BitsInto(values, want);
      const out = new Uint16Array(values.length + 2).fill(0xbeef);
      addon.roundHalf(values, 0, out, 1, values.length, dtype === "bfloat16");
      const difference = firstDifference(out.subarray(1, 1 + values.length), want);
      expect(difference && `${dtype}: float32 0x${words[Number(difference.split(/[ :]/)[1])].toString(16)}: ${difference}`).toBeNull();
      expect([out[0], out[out.length - 1]], `${dtype}: outside the span`).toEqual([0xbeef, 0xbeef]);
    }
  });

  it("give the same bits on a single chunk, across work items and past a chunk's end", () => {
    // Lengths around the pool's 32768-element items: the last item short, one item, no item (the caller alone).
    const addon = cpuBackend().addon;
    for (const length of [1, 255, 32767, 65535, 65536, 65537, 100003]) {
      const values = new Float32Array(length);
      for (let i = 0; i < length; i++) values[i] = Math.sin(i) * 70000 * 2 ** ((i % 61) - 40);
      for (const dtype of HALVES) {
        const want = new Uint16Array(length);
        if (dtype === "float16") float32ToFloat16BitsInto(values, want);
        else float32ToBfloat16BitsInto(values, want);
        const got = new Uint16Array(length);
        addon.roundHalf(values, 0, got, 0, length, dtype === "bfloat16");
        expect(firstDifference(got, want), `${dtype} x ${length}`).toBeNull();
        const wide = new Float32Array(length);
        addon.widenHalf(got, 0, wide, 0, length, dtype === "bfloat16");
        const wantWide = new Float32Array(length);
        if (dtype === "float16") float16BitsToFloat32Into(got, wantWide);
        else bfloat16BitsToFloat32Into(got, wantWide);
        expect(firstDifference(new Uint32Array(wide.buffer), new Uint32Array(wantWide.buffer)), `${dtype} x ${length} widened`).toBeNull();
      }
    }
  });

  it("check their arguments before they run", () => {
    const addon = cpuBackend().addon;
    expect(() => addon.widenHalf(new Uint16Array(4), 1, new Float32Array(4), 0, 4, true)).toThrow(/bits has 4 elements, needs 5/);
    expect(() => addon.widenHalf(new Uint16Array(4), 0, new Float32Array(3), 0, 4, false)).toThrow(/out has 3 elements, needs 4/);
    expect(() => addon.roundHalf(new Float32Array(4), 0, new Uint16Array(4), 2, 3, true)).toThrow(/out has 4 elements, needs 5/);
    expect(() => addon.widenHalf(new Float32Array(4) as unknown as Uint16Array, 0, new Float32Array(4), 0, 4, true)).toThrow(/bits must be a Uint16Array/);
    expect(() => addon.roundHalf(new Float32Array(4), 0, new Int16Array(4) as unknown as Uint16Array, 0, 4, true)).toThrow(/out must be a Uint16Array/);
    expect(() => addon.roundHalf(new Float32Array(4), 0, new Uint16Array(4), 0, -1, true)).toThrow(/count must be a non-negative integer/);
    expect(() => addon.widenHalf(new Uint16Array(4), 0, new Float32Array(4), 0, 4, 1 as unknown as boolean)).toThrow(/bfloat16 must be a boolean/);
    const shared = new ArrayBuffer(64);
    expect(() => addon.widenHalf(new Uint16Array(shared, 0, 8), 0, new Float32Array(shared, 8, 8), 0, 8, true)).toThrow(/out shares memory with bits/);
  });

  it("carry the cpu backend's half ops to the same bits as the js backend's", () => {
    const js = getBackendInstance("js");
    const cpu = cpuBackend();
    // dataSync widens a half tensor exactly, so equal float32 words are equal half bits.
    const words = (t: { dataSync(): ArrayLike<number> }) => new Uint32Array((t.dataSync() as Float32Array).slice().buffer);
    for (const dtype of HALVES) {
      // Past the size below which the backend converts in TypeScript, and below it; values past float16's range too.
      for (const [m, k, n] of [[37, 64, 48], [3, 5, 7]] as const) {
        tidy(() => {
          const a = Array.from(randn([m, k], { seed: m }).dataSync(), (v, i) => (i % 17 === 0 ? v * 1e5 : i % 13 === 0 ? v * 1e-6 : v));
          const b = randn([n, k], { seed: n }).dataSync();
          const onBoth = <T>(op: (backend: typeof js) => T): [T, T] => [op(js), op(cpu)];
          const [wantCast, gotCast] = onBoth((backend) => words(cast(tensorOn(backend, a, [m, k]), dtype)));
          expect(firstDifference(gotCast, wantCast), `cast [${m}, ${k}] to ${dtype}`).toBeNull();
          const [wantLinear, gotLinear] = onBoth((backend) => linear(cast(tensorOn(backend, a, [m, k]), dtype), cast(tensorOn(backend, b, [n, k]), dtype)).dataSync() as Float32Array);
          // The products sum in another order than js's float64 sums: the rounded halves may differ in their last bit.
          const ulp = dtype === "float16" ? 2 ** -10 : 2 ** -7;
          for (let i = 0; i < m * n; i++) {
            const [got, want] = [gotLinear[i], wantLinear[i]];
            if (!Number.isFinite(want)) expect(got, `${dtype} linear [${m}, ${k}] element ${i}`).toBe(want);
            else expect(Math.abs(got - want), `${dtype} linear [${m}, ${k}] element ${i}: ${got} vs ${want}`).toBeLessThanOrEqual(ulp * Math.abs(want) + 1e-30);
          }
        });
      }
    }
  });
});
