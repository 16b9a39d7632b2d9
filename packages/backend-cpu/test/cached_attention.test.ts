/**
 * CachedAttention on the cpu backend (the addon's rows) against the js backend's kernel: decoding steps and blocks of
 * new positions over a cache, positions past the cache (clamped) and negative ones (zeros), the new keys and values
 * written in place first, float32 and bfloat16, a NaN in a kept or in an ignored key; and the binding's checks.
 */
import { cachedAttention, getBackendInstance, ShapeError, tensorOn, tidy, ValueError } from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/core/testing";
import { describe, expect, it } from "vitest";
import { nativeCachedAttention } from "../src/compute";
import { cpuBackend, cpuThreads, setCpuThreads } from "../src/index";
import { cpuMissing, reportCpuAvailability } from "./cpu";

reportCpuAvailability("cached_attention.test.ts");

type Case = { batch: number[]; m: number; n: number; d: number; positions: number[]; dtype: "float32" | "float16" | "bfloat16"; write?: boolean; poison?: (v: number[]) => void };

/** out of cachedAttention on `backend`, and the cache's k and v after it. */
function run(backend: string, c: Case, seed: number): number[][] {
  const rng = new SeededRandom(seed);
  const heads = c.batch.reduce((a, b) => a * b, 1);
  const values = (rows: number) => Array.from({ length: heads * rows * c.d }, () => rng.uniform(-2, 2));
  const [q, k, v, newKeys, newValues] = [values(c.m), values(c.n), values(c.n), values(c.m), values(c.m)];
  c.poison?.(v);
  return tidy(() => {
    const on = getBackendInstance(backend);
    const upload = (x: number[], rows: number) => tensorOn(on, x, [...c.batch, rows, c.d], c.dtype);
    const cacheK = upload(k, c.n);
    const cacheV = upload(v, c.n);
    const positions = tensorOn(on, c.positions, [c.m], "int32");
    const options = c.write ? { newKeys: upload(newKeys, c.m), newValues: upload(newValues, c.m) } : {};
    const out = cachedAttention(upload(q, c.m), cacheK, cacheV, positions, options);
    return [out, cacheK, cacheV].map((t) => Array.from(t.dataSync()));
  });
}

describe.skipIf(cpuMissing)("cpu CachedAttention", () => {
  const cases: [string, Case][] = [
    ["a decoding step, one query per sequence", { batch: [2, 3], m: 1, n: 40, d: 16, positions: [25], dtype: "float32" }],
    ["a step that writes its key and value first", { batch: [2, 2], m: 1, n: 33, d: 8, positions: [32], dtype: "float32", write: true }],
    ["a block of new positions, written in place", { batch: [3], m: 4, n: 20, d: 12, positions: [5, 6, 7, 8], dtype: "float32", write: true }],
    ["positions past the cache (clamped) and negative (zeros)", { batch: [2], m: 5, n: 10, d: 5, positions: [-1, 0, 3, 9, 100], dtype: "float32" }],
    ["bfloat16", { batch: [2, 2], m: 2, n: 30, d: 16, positions: [10, 29], dtype: "bfloat16", write: true }],
    // Half caches longer than the rows read, and one that no query reads.
    ["bfloat16, the cache's leading rows", { batch: [2, 3], m: 2, n: 64, d: 16, positions: [3, 9], dtype: "bfloat16", write: true }],
    ["float16, the cache's leading rows", { batch: [3], m: 3, n: 50, d: 8, positions: [0, 17, 4], dtype: "float16" }],
    ["bfloat16, no row read", { batch: [2], m: 2, n: 20, d: 4, positions: [-1, -5], dtype: "bfloat16" }],
    // v's key 3 NaN: rows that keep it get NaN, a row that stops before it does not.
    ["a NaN value in a kept key and an ignored one", { batch: [1], m: 2, n: 12, d: 4, positions: [2, 6], dtype: "float32", poison: (v) => (v[3 * 4 + 1] = Number.NaN) }],
  ];
  for (const [name, c] of cases) {
    it(`${name}: the js kernel's output and cache`, () => {
      const cpu = run("cpu", c, name.length);
      const js = run("js", c, name.length);
      const tolerance = c.dtype === "float32" ? 2e-7 : 1e-2;
      ["out", "k", "v"].forEach((what, i) => {
        expect(cpu[i].length, what).toBe(js[i].length);
        for (let x = 0; x < js[i].length; x++) {
          const [got, want] = [cpu[i][x], js[i][x]];
          if (Number.isNaN(want)) expect(got, `${what}[${x}]`).toBeNaN();
          else expect(Math.abs(got - want), `${what}[${x}]: ${got} vs ${want}`).toBeLessThanOrEqual(tolerance * Math.max(1, Math.abs(want)));
        }
      });
      if (c.poison) expect(cpu[0].map((x) => (Number.isNaN(x) ? "NaN" : "finite"))).toEqual([...new Array(5).fill("finite"), "NaN", "finite", "finite"]);
    });
  }

  it("a half cache read to row 10 of 64 gives the bits of the same cache cut at row 10", () => {
    // The rows past the last position read take no part in the sums.
    for (const dtype of ["bfloat16", "float16"] as const) {
      const rng = new SeededRandom(7);
      const [heads, n, d, read] = [6, 64, 16, 10];
      const q = Array.from({ length: heads * 2 * d }, () => rng.uniform(-2, 2));
      const cache = [0, 1].map(() => Array.from({ length: heads * n * d }, () => rng.uniform(-2, 2)));
      const cut = cache.map((x) => x.filter((_, i) => i % (n * d) < read * d));
      const [whole, short] = [n, read].map((rows) =>
        tidy(() => {
          const on = getBackendInstance("cpu");
          const [k, v] = (rows === n ? cache : cut).map((x) => tensorOn(on, x, [2, 3, rows, d], dtype));
          const out = cachedAttention(tensorOn(on, q, [2, 3, 2, d], dtype), k, v, tensorOn(on, [4, read - 1], [2], "int32"));
          return Array.from(out.dataSync());
        }),
      );
      expect(whole, dtype).toEqual(short);
    }
  });

  it("checks its arguments before it runs, with core's typed errors", () => {
    const attend = nativeCachedAttention(cpuBackend().addon);
    const [h, m, n, d] = [2, 3, 5, 4];
    const q = new Float32Array(h * m * d);
    const kv = new Float32Array(h * n * d);
    const call = (over: Partial<{ q: Float32Array; k: Float32Array; positions: Int32Array; out: Float32Array }>) => () =>
      attend(over.q ?? q, over.k ?? kv, kv, over.positions ?? new Int32Array(m), over.out ?? new Float32Array(h * m * d), { heads: h, m, n, d }, 0.5);
    expect(call({})).not.toThrow();
    expect(call({ q: new Float32Array(h * m * d - 1) })).toThrow(ShapeError);
    expect(call({ q: new Float32Array(h * m * d - 1) })).toThrow(/q has 23 elements, needs 24/);
    expect(call({ k: new Float32Array(3) })).toThrow(/k has 3 elements, needs 40/);
    expect(call({ positions: new Int32Array(m - 1) })).toThrow(/positions has 2 elements, needs 3/);
    expect(call({ out: q })).toThrow(ValueError);
    expect(call({ out: q })).toThrow(/out shares memory with q/);
  });

  it("with d = 0 the output has no elements: no row is attended, whatever the heads and keys", () => {
    const addon = cpuBackend().addon;
    const none = new Float32Array(0);
    const startThreads = cpuThreads();
    try {
      // 2^24 keys of no values, a position past them: each row had taken a row of 2^24 float64 scores (128 MiB).
      for (const threads of [1, 2]) {
        setCpuThreads(threads);
        addon.releaseScratch();
        addon.cachedAttention(none, 0, none, 0, none, 0, Int32Array.of(2 ** 31 - 1, -1), none, 0, 2, 2, 2 ** 24, 0, 0.5);
        expect(addon.scratchBytes(), `${threads} threads: scratch`).toBe(0);
      }
      // (2^40 + 1 heads of no values had passed the pool's item count, which then waited for ever; not called here, where
      // a regression would hang the suite instead of failing it: the scratch above fails first.)
    } finally {
      setCpuThreads(startThreads);
    }
  });

  it("positions in a SharedArrayBuffer are a ValueError: another thread could change one during the call", () => {
    // A worker flipping shared positions between -1 and n - 1 made a row longer than the scores sized for the call's
    // longest row, and the process died (SIGSEGV).
    const attend = nativeCachedAttention(cpuBackend().addon);
    const [h, m, n, d] = [1, 2, 8, 4];
    const shared = new Int32Array(new SharedArrayBuffer(4 * m)).fill(3);
    const call = (positions: Int32Array) => () =>
      attend(new Float32Array(h * m * d), new Float32Array(h * n * d), new Float32Array(h * n * d), positions, new Float32Array(h * m * d), { heads: h, m, n, d }, 0.5);
    expect(call(shared)).toThrow(ValueError);
    expect(call(shared)).toThrow("cachedAttention: positions must not be backed by a SharedArrayBuffer");
    // The same positions in ordinary memory run.
    expect(call(Int32Array.from(shared))).not.toThrow();
  });
});
