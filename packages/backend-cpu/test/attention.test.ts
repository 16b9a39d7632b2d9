/**
 * Attention on the cpu backend runs through the native matmul (src/attention.ts), not the js backend's kernels that
 * compute every product in JavaScript: its results against the js backend's (float64 sums) at sizes where the native
 * products take their tiled paths, causal and not, fewer queries than keys, float32 and bfloat16, outputs poisoned.
 */
import { type DType, attentionBackward, attentionWithStats, getBackendInstance, jsKernels, setBackend, tensorOn, tidy } from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/core/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cpuMissing, reportCpuAvailability } from "./cpu";

reportCpuAvailability("attention.test.ts");

function relativeError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < want.length; i++) {
    if (!Number.isFinite(got[i])) return Number.POSITIVE_INFINITY;
    diff += (got[i] - want[i]) ** 2;
    norm += want[i] ** 2;
  }
  return Math.sqrt(diff / Math.max(norm, 1e-30));
}

describe.skipIf(cpuMissing)("cpu attention", () => {
  beforeAll(() => {
    setBackend("cpu");
    getBackendInstance("cpu").poisonAllocations = true;
  });
  afterAll(() => {
    getBackendInstance("cpu").poisonAllocations = false;
  });

  it("runs its own kernels, not the js backend's", () => {
    const kernels = getBackendInstance("cpu").kernels;
    expect(kernels.Attention).toBeDefined();
    expect(kernels.Attention).not.toBe(jsKernels.Attention);
    expect(kernels.AttentionBackward).not.toBe(jsKernels.AttentionBackward);
  });

  const cases: { shape: [number[], number, number, number]; causal: boolean; dtype: DType }[] = [
    { shape: [[2, 3], 150, 150, 64], causal: true, dtype: "float32" },
    { shape: [[2], 37, 210, 40], causal: true, dtype: "float32" },
    { shape: [[3], 130, 65, 24], causal: false, dtype: "float32" },
    { shape: [[2, 2], 96, 96, 64], causal: true, dtype: "bfloat16" },
  ];
  for (const { shape, causal, dtype } of cases) {
    const [batch, m, n, d] = shape;
    it(`matches the js backend: ${dtype} [${batch}] M=${m} N=${n} D=${d}${causal ? " causal" : ""}`, () => {
      const rng = new SeededRandom(m * 131 + n * 7 + d);
      const values = (rows: number) => Array.from({ length: batch.reduce((a, b) => a * b, 1) * rows * d }, () => rng.uniform(-1.5, 1.5));
      const [qv, kv, vv, gv] = [values(m), values(n), values(n), values(m)];
      const run = (backend: string) =>
        tidy(() => {
          const [q, k, v, g] = [
            [qv, m],
            [kv, n],
            [vv, n],
            [gv, m],
          ].map(([x, rows]) => tensorOn(getBackendInstance(backend), x as number[], [...batch, rows as number, d], dtype));
          const { out, lse } = attentionWithStats(q, k, v, { causal });
          const { dq, dk, dv } = attentionBackward(g, q, k, v, out, lse, { causal });
          return [out, lse, dq, dk, dv].map((t) => Array.from(t.dataSync()));
        });
      const cpu = run("cpu");
      const js = run("js");
      // float32: the native products sum in float32; bfloat16: outputs rounded once either way.
      const tolerance = dtype === "float32" ? 1e-5 : 1e-2;
      ["out", "lse", "dq", "dk", "dv"].forEach((name, i) => {
        expect(relativeError(cpu[i], js[i]), name).toBeLessThanOrEqual(tolerance);
      });
    });
  }

  it("scores whose float32 product overflows are computed as the js backend does (finite, not NaN)", () => {
    // q k^T of about 1e40 overflows float32 (and partial sums 1e20 * 1e20 too), the scaled scores are about 1.
    const rng = new SeededRandom(7);
    const [batch, m, n, d] = [2, 5, 7, 4];
    const values = (rows: number, magnitude: number) => Array.from({ length: batch * rows * d }, () => magnitude * rng.uniform(-1.5, 1.5));
    const [qv, kv, vv, gv] = [values(m, 1e20), values(n, 1e20), values(n, 1), values(m, 1)];
    for (const causal of [false, true]) {
      const run = (backend: string) =>
        tidy(() => {
          const [q, k, v, g] = [
            [qv, m],
            [kv, n],
            [vv, n],
            [gv, m],
          ].map(([x, rows]) => tensorOn(getBackendInstance(backend), x as number[], [batch, rows as number, d], "float32"));
          const { out, lse } = attentionWithStats(q, k, v, { causal, scale: 1e-40 });
          const { dq, dk, dv } = attentionBackward(g, q, k, v, out, lse, { causal, scale: 1e-40 });
          return [out, lse, dq, dk, dv].map((t) => Array.from(t.dataSync()));
        });
      const cpu = run("cpu");
      const js = run("js");
      ["out", "lse", "dq", "dk", "dv"].forEach((name, i) => {
        expect(js[i].every(Number.isFinite), `js ${name}`).toBe(true);
        expect(relativeError(cpu[i], js[i]), `${name}${causal ? " causal" : ""}`).toBeLessThanOrEqual(1e-5);
      });
    }
  });
});
