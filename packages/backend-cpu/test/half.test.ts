// The addon's float16 / bfloat16 conversions (every half input a kernel reads is widened by them, every half output
// rounded) against @blocksparse/format's, bit for bit: every half pattern, every float32 sign and exponent with the
// rounding boundaries below them, random patterns, NaN payloads; then the cpu backend's half ops against js's.
import {
  BsrPattern,
  bfloat16BitsToFloat32Into,
  bsrLinear,
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
import type { CpuBackend, NativeIsa } from "../src/index";
import { cpuMissing, reportCpuAvailability, runsOn, useCpuPoisoned } from "./cpu";

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

/** `length` values of about unit size, every 29th times `huge` (weights near float16's largest, inputs whose products overflow float32). */
function unitValues(seed: number, length: number, huge = 1): Float32Array {
  let state = (seed * 2654435761) >>> 0 || 1;
  return Float32Array.from({ length }, (_, i) => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    const value = ((state >>> 0) / 2 ** 32 - 0.5) * 2;
    return i % 29 === 0 ? value * huge : value;
  });
}

/** Whether a float32 sum went past float32's range somewhere (an output infinite, NaN or recomputed near the top). */
const overflowed = (values: Float32Array) => values.some((v) => !Number.isFinite(v) || Math.abs(v) > 1e37);

/** The half bits of `values` (as the backend stores a half tensor) and their exact float32 widening. */
function halfOf(values: Float32Array, bfloat: boolean): [Uint16Array, Float32Array] {
  const bits = new Uint16Array(values.length);
  if (bfloat) float32ToBfloat16BitsInto(values, bits);
  else float32ToFloat16BitsInto(values, bits);
  const wide = new Float32Array(values.length);
  if (bfloat) bfloat16BitsToFloat32Into(bits, wide);
  else float16BitsToFloat32Into(bits, wide);
  return [bits, wide];
}

const bitsOf = (values: Float32Array) => new Uint32Array(values.buffer, values.byteOffset, values.length);

describe.skipIf(cpuMissing)("products that read half weights in the addon", () => {
  useCpuPoisoned();
  // Each ISA: AVX-512 widens the half blocks in registers, the others into a buffer; many tokens widen all at once.
  for (const isa of ["avx512", "avx2", "scalar"] as NativeIsa[]) {
    it(`${isa}: bsrLinearHalf gives bsrLinear's bits on the widened values, at 1-9 and 20 tokens, any block shape`, () => {
      if (!runsOn("half.test.ts", isa, 2)) return;
      const addon = cpuBackend().addon;
      for (const [[R, C], [rows, cols]] of [
        [[32, 32], [128, 96]],
        [[1, 1], [24, 40]],
        [[3, 5], [36, 40]],
        [[16, 48], [64, 144]],
        [[40, 7], [80, 35]],
        // Taller than the 512 rows summed at once, and more than the 4096 floats widened at once (AVX2, scalar).
        [[520, 12], [1040, 24]],
        [[4, 4100], [8, 8200]],
      ] as const) {
        const pattern = BsrPattern.random([rows, cols], { blockShape: [R, C], density: 0.4, seed: R * 100 + C });
        const { blockRowPtr, blockColIdx, nnzBlocks } = pattern;
        const index = { rows, cols, blockHeight: R, blockWidth: C, blockRowPtr, blockColIdx };
        for (const bfloat of [true, false]) {
          for (const tokens of [1, 2, 3, 5, 8, 9, 20]) {
            for (const huge of [false, true]) {
              const [bits, wide] = halfOf(unitValues(tokens + R, nnzBlocks * R * C, huge ? 6e4 : 1), bfloat);
              const x = unitValues(tokens * 7 + C, tokens * cols, huge ? 3e34 : 1);
              const bias = tokens % 2 === 1 ? unitValues(3, rows) : null;
              const want = new Float32Array(tokens * rows).fill(Number.NaN);
              addon.bsrLinear(x, 0, wide, 0, bias, 0, want, 0, tokens, index);
              // The bits from an offset, into a poisoned output.
              const shifted = new Uint16Array(bits.length + 3);
              shifted.set(bits, 3);
              const got = new Float32Array(tokens * rows).fill(Number.NaN);
              addon.bsrLinearHalf(x, 0, shifted, 3, bfloat, bias, 0, got, 0, tokens, index);
              const what = `${isa} ${bfloat ? "bfloat16" : "float16"} ${R}x${C} blocks, ${tokens} tokens${huge ? ", overflowing" : ""}`;
              expect(firstDifference(bitsOf(got), bitsOf(want)), what).toBeNull();
              expect(overflowed(want), `${what}: past float32's range`).toBe(huge);
            }
          }
        }
      }
    });
  }

  it("linearHalf gives matmul's bits on the widened weight, at 1-8 rows (streamed) and more (widened once)", () => {
    const addon = cpuBackend().addon;
    // k past whole 16-element steps by 8 to 15 (the dot's leftover elements), and past a 4096-element slice.
    for (const [n, k] of [[48, 64], [33, 4097], [7, 1], [300, 63], [5, 8], [9, 15], [17, 100], [3, 4104]] as const) {
      for (const bfloat of [true, false]) {
        for (const m of [1, 2, 7, 8, 9, 40]) {
          for (const huge of [false, true]) {
            const [bits, wide] = halfOf(unitValues(n + m, n * k, huge ? 6e4 : 1), bfloat);
            const x = unitValues(k + m, m * k, huge ? 3e34 : 1);
            const want = new Float32Array(m * n).fill(Number.NaN);
            addon.matmul(x, 0, wide, 0, want, 0, m, n, k, false, true);
            const got = new Float32Array(m * n + 2).fill(Number.NaN);
            addon.linearHalf(x, 0, bits, 0, bfloat, got, 1, m, n, k);
            const what = `${bfloat ? "bfloat16" : "float16"} [${m}, ${k}] x [${n}, ${k}]^T${huge ? ", overflowing" : ""}`;
            expect(firstDifference(bitsOf(got.subarray(1, 1 + m * n)), bitsOf(want)), what).toBeNull();
            if (k > 29) expect(overflowed(want), `${what}: past float32's range`).toBe(huge);
            expect([got[0], got[m * n + 1]], `${what}: outside the span`).toEqual([Number.NaN, Number.NaN]);
          }
        }
      }
    }
  });

  it("check their arguments before they run", () => {
    const addon = cpuBackend().addon;
    const index = { rows: 4, cols: 4, blockHeight: 2, blockWidth: 2, blockRowPtr: Int32Array.from([0, 1, 2]), blockColIdx: Int32Array.from([0, 1]) };
    const x = new Float32Array(4);
    expect(() => addon.bsrLinearHalf(x, 0, new Uint16Array(7), 0, true, null, 0, new Float32Array(4), 0, 1, index)).toThrow(/bits has 7 elements, needs 8/);
    expect(() => addon.bsrLinearHalf(x, 0, new Float32Array(8) as unknown as Uint16Array, 0, true, null, 0, new Float32Array(4), 0, 1, index)).toThrow(/bits must be a Uint16Array/);
    expect(() => addon.bsrLinearHalf(x, 0, new Uint16Array(8), 0, "yes" as unknown as boolean, null, 0, new Float32Array(4), 0, 1, index)).toThrow(/bfloat16 must be a boolean/);
    expect(() => addon.linearHalf(x, 0, new Uint16Array(15), 0, false, new Float32Array(4), 0, 1, 4, 4)).toThrow(/bits has 15 elements, needs 16/);
    expect(() => addon.linearHalf(x, 0, new Uint16Array(16), 0, false, new Float32Array(3), 0, 1, 4, 4)).toThrow(/y has 3 elements, needs 4/);
    const shared = new ArrayBuffer(64);
    expect(() => addon.linearHalf(x, 0, new Uint16Array(shared, 0, 16), 0, false, new Float32Array(shared, 16, 4), 0, 1, 4, 4)).toThrow(/y shares memory with bits/);
  });

  it("take half layers of the cpu backend within a half's rounding of the js backend's, at decode and training sizes", () => {
    const js = getBackendInstance("js");
    const cpu = cpuBackend();
    for (const dtype of HALVES) {
      for (const tokens of [1, 4, 24]) {
        tidy(() => {
          const pattern = BsrPattern.random([96, 64], { blockShape: [16, 16], density: 0.5, seed: tokens });
          const x = unitValues(tokens, tokens * 64);
          const values = unitValues(tokens + 1, pattern.nnzBlocks * 256);
          const weight = unitValues(tokens + 2, 96 * 64);
          const run = (backend: typeof js) => {
            const xs = cast(tensorOn(backend, x, [tokens, 64]), dtype);
            const sparse = bsrLinear(xs, cast(tensorOn(backend, values, [pattern.nnzBlocks, 16, 16]), dtype), pattern).dataSync() as Float32Array;
            const dense = linear(xs, cast(tensorOn(backend, weight, [96, 64]), dtype)).dataSync() as Float32Array;
            return [sparse, dense];
          };
          const [want, got] = [run(js), run(cpu)];
          const ulp = dtype === "float16" ? 2 ** -10 : 2 ** -7;
          for (const [which, w, g] of [["bsrLinear", want[0], got[0]], ["linear", want[1], got[1]]] as const) {
            for (let i = 0; i < w.length; i++) expect(Math.abs(g[i] - w[i]), `${dtype} ${which}, ${tokens} tokens, element ${i}`).toBeLessThanOrEqual(ulp * Math.abs(w[i]) + 1e-6);
          }
        });
      }
    }
  });
});
