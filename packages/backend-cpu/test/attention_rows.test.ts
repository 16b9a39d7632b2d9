/**
 * The addon's attention row kernels (attentionSoftmax, attentionScoreGradients) against the float64 formulas the js
 * backend computes, over poisoned outputs: causal and not, blocks starting past row 0, fewer queries than keys, rows
 * that underflow float32 or hold a non-finite score left untouched and flagged; and their argument checks.
 */
import { ShapeError, ValueError } from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/core/testing";
import { describe, expect, it } from "vitest";
import { AttentionRowFlag } from "../src/attention";
import { nativeAttentionRows } from "../src/compute";
import { cpuBackend } from "../src/index";
import { cpuMissing, reportCpuAvailability } from "./cpu";

reportCpuAvailability("attention_rows.test.ts");

const kept = (i: number, m: number, n: number, causal: boolean) => (causal ? Math.min(n, i + n - m + 1) : n);

/** Softmax of one row's kept scores in float64, the js backend's: [P (0 past kept), lse, whether a P underflows float32]. */
function softmaxRow(scores: Float32Array, keptKeys: number, scale: number): [Float64Array, number, boolean] {
  const e = new Float64Array(scores.length);
  let max = Number.NEGATIVE_INFINITY;
  for (let j = 0; j < keptKeys; j++) max = Math.max(max, scale * scores[j]);
  let sum = 0;
  for (let j = 0; j < keptKeys; j++) sum += e[j] = Math.exp(scale * scores[j] - max);
  const p = e.map((x) => x / sum);
  return [p, max + Math.log(sum), p.some((x) => x > 0 && Math.fround(x) === 0)];
}

/** got equals want rounded to float32, or its neighbour (the exponentials may differ in their last float64 bit). */
function expectFloat32Of(got: number, want: number, what: string): void {
  const rounded = Math.fround(want);
  expect(Math.abs(got - rounded), `${what}: ${got} vs ${want}`).toBeLessThanOrEqual(Math.abs(rounded) * 2 ** -23);
}

describe.skipIf(cpuMissing)("cpu attention row kernels", () => {
  const cases: [m: number, n: number, first: number, rows: number, causal: boolean][] = [
    [7, 7, 0, 7, true],
    [9, 20, 3, 5, true],
    [6, 33, 2, 4, false],
    [4, 300, 0, 4, true],
  ];
  for (const [m, n, first, rows, causal] of cases) {
    it(`softmax and dS of rows [${first}, ${first + rows}) of ${m} x ${n}${causal ? " causal" : ""} are the float64 formulas, over poisoned outputs`, () => {
      const rows$ = nativeAttentionRows(cpuBackend().addon);
      const rng = new SeededRandom(m * 100 + n);
      const scale = 0.3;
      const scores = Float32Array.from({ length: rows * n }, () => rng.uniform(-20, 20));
      // Row 1 underflows float32: one key 600 / scale above the others.
      scores[n] = 600 / scale;
      const s = scores.slice();
      // Past the kept keys the scores are poison: P must be 0 there.
      for (let r = 0; r < rows; r++) s.fill(Number.NaN, r * n + kept(first + r, m, n, causal), (r + 1) * n);
      const lse = new Float32Array(rows + 2).fill(Number.NaN);
      const flags = new Uint8Array(rows).fill(7);
      rows$.softmax(s, lse, 1, flags, rows, n, first, m, causal, scale);
      const p64: Float64Array[] = [];
      for (let r = 0; r < rows; r++) {
        const keep = kept(first + r, m, n, causal);
        const [p, wantLse, underflow] = softmaxRow(scores.subarray(r * n, (r + 1) * n), keep, scale);
        p64.push(p);
        for (let j = 0; j < n; j++) expectFloat32Of(s[r * n + j], j < keep ? p[j] : 0, `P[${r}, ${j}]`);
        expectFloat32Of(lse[1 + r], wantLse, `lse[${r}]`);
        expect(flags[r], `flags[${r}]`).toBe(underflow ? AttentionRowFlag.Underflow : AttentionRowFlag.Done);
      }
      expect(flags[1]).toBe(AttentionRowFlag.Underflow);
      expect([lse[0], lse[rows + 1]]).toEqual([Number.NaN, Number.NaN]);

      const dp = Float32Array.from({ length: rows * n }, () => rng.uniform(-3, 3));
      const ds = dp.slice();
      for (let r = 0; r < rows; r++) ds.fill(Number.NaN, r * n + kept(first + r, m, n, causal), (r + 1) * n);
      flags.fill(7);
      // Di's shift (the saved output's rounding) on every other block of rows.
      const shift = causal ? Float64Array.from({ length: rows }, () => rng.uniform(-1, 1)) : null;
      rows$.scoreGradients(s, ds, shift, flags, rows, n, first, m, causal, scale);
      for (let r = 0; r < rows; r++) {
        const keep = kept(first + r, m, n, causal);
        let di = 0;
        for (let j = 0; j < keep; j++) di += s[r * n + j] * dp[r * n + j];
        if (shift !== null) di += shift[r];
        for (let j = 0; j < n; j++) {
          const want = j < keep ? s[r * n + j] * (dp[r * n + j] - di) * scale : 0;
          expect(ds[r * n + j], `dS[${r}, ${j}]`).toBe(Math.fround(want));
        }
        expect(flags[r]).toBe(AttentionRowFlag.Done);
      }
    });
  }

  it("a row with a non-finite kept score is left as it is and flagged; a masked one does not count; dS that overflows is flagged", () => {
    const rows$ = nativeAttentionRows(cpuBackend().addon);
    // 3 rows of 4 keys, causal (rows keep 2, 3 and 4 keys): row 0's infinity is masked, row 1's is kept.
    const s = Float32Array.from([1, 2, Number.POSITIVE_INFINITY, 0, 1, 2, Number.POSITIVE_INFINITY, 0, 1, 2, 3, 4]);
    const before = s.slice();
    const lse = new Float32Array(3).fill(-1);
    const flags = new Uint8Array(3).fill(7);
    rows$.softmax(s, lse, 0, flags, 3, 4, 1, 4, true, 1);
    expect(Array.from(flags)).toEqual([AttentionRowFlag.Done, AttentionRowFlag.NonFinite, AttentionRowFlag.Done]);
    expect(Array.from(s.subarray(4, 8))).toEqual(Array.from(before.subarray(4, 8)));
    expect(lse[1]).toBe(-1);
    expect(Array.from(s.subarray(0, 4)).map((x) => x.toFixed(4))).toEqual(["0.2689", "0.7311", "0.0000", "0.0000"]);
    // dP of 3e38 against -3e38: P (dP - Di) overflows float32 in row 0.
    const p = Float32Array.from([0.5, 0.5, 0, 0]);
    const ds = Float32Array.from([3e38, -3e38, 0, 0]);
    rows$.scoreGradients(p, ds, null, flags, 1, 4, 0, 1, false, 4);
    expect(flags[0]).toBe(AttentionRowFlag.NonFinite);
  });

  it("the addon checks its arguments before it runs", () => {
    const { addon } = cpuBackend();
    const rows$ = nativeAttentionRows(addon);
    const s = new Float32Array(12);
    const flags = new Uint8Array(3);
    expect(() => rows$.softmax(s, null, 0, flags, 3, 4, 2, 4, true, 1)).toThrow(ShapeError);
    expect(() => rows$.softmax(s, null, 0, flags, 3, 4, 2, 4, true, 1)).toThrow(/attentionSoftmax: rows 2 to 5 pass the batch matrix's 4 query rows/);
    expect(() => rows$.softmax(s, null, 0, flags, 3, 5, 0, 3, false, 1)).toThrow(/attentionSoftmax: s has 12 elements, needs 15/);
    expect(() => rows$.softmax(s, new Float32Array(2), 0, flags, 3, 4, 0, 3, false, 1)).toThrow(/attentionSoftmax: lse has 2 elements, needs 3/);
    expect(() => rows$.softmax(s, s, 0, flags, 3, 4, 0, 3, false, 1)).toThrow(ValueError);
    expect(() => rows$.softmax(s, s, 0, flags, 3, 4, 0, 3, false, 1)).toThrow(/s shares memory with lse/);
    expect(() => rows$.softmax(s, null, 0, new Uint8Array(2), 3, 4, 0, 3, false, 1)).toThrow(/attentionSoftmax: flags has 2 elements, needs 3/);
    expect(() => rows$.softmax(s, null, 0, new Int8Array(3) as never, 3, 4, 0, 3, false, 1)).toThrow(/flags must be a Uint8Array/);
    expect(() => rows$.scoreGradients(s, s, null, flags, 3, 4, 0, 3, false, 1)).toThrow(/attentionScoreGradients: ds shares memory with p/);
    expect(() => rows$.scoreGradients(s, new Float32Array(12), null, flags, 3, 4, 0, 3, false, "1" as never)).toThrow(/scale must be a number/);
    expect(() => rows$.scoreGradients(s, new Float32Array(12), new Float64Array(2), flags, 3, 4, 0, 3, false, 1)).toThrow(/attentionScoreGradients: shift has 2 elements, needs 3/);
    expect(() => rows$.scoreGradients(s, new Float32Array(12), new Float32Array(3) as never, flags, 3, 4, 0, 3, false, 1)).toThrow(/shift must be a Float64Array/);
    expect(() => addon.attentionScoreGradients(s, 1, new Float32Array(12), 0, flags, 3, 4, 0, 3, false, 1, null)).toThrow(/p has 12 elements, needs 13/);
  });
});
