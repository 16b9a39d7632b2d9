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

/**
 * attentionWithStats then attentionBackward on `backend` over q, k, v and the output gradient g (host values of
 * [...batch, m or n, d], `dims` being [...batch, m, n, d]); their five results (out, lse, dq, dk, dv) as host arrays.
 */
function forwardBackward(
  backend: string,
  inputs: { q: number[]; k: number[]; v: number[]; g: number[] },
  dims: number[],
  dtype: DType,
  options: { causal: boolean; scale?: number },
): number[][] {
  const batch = dims.slice(0, -3);
  const [m, n, d] = dims.slice(-3);
  return tidy(() => {
    const upload = (x: number[], rows: number) => tensorOn(getBackendInstance(backend), x, [...batch, rows, d], dtype);
    const [q, k, v, g] = [upload(inputs.q, m), upload(inputs.k, n), upload(inputs.v, n), upload(inputs.g, m)];
    const { out, lse } = attentionWithStats(q, k, v, options);
    const { dq, dk, dv } = attentionBackward(g, q, k, v, out, lse, options);
    return [out, lse, dq, dk, dv].map((t) => Array.from(t.dataSync()));
  });
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
      const inputs = { q: values(m), k: values(n), v: values(n), g: values(m) };
      const run = (backend: string) => forwardBackward(backend, inputs, [...batch, m, n, d], dtype, { causal });
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
    const inputs = { q: values(m, 1e20), k: values(n, 1e20), v: values(n, 1), g: values(m, 1) };
    for (const causal of [false, true]) {
      const run = (backend: string) => forwardBackward(backend, inputs, [batch, m, n, d], "float32", { causal, scale: 1e-40 });
      const cpu = run("cpu");
      const js = run("js");
      ["out", "lse", "dq", "dk", "dv"].forEach((name, i) => {
        expect(js[i].every(Number.isFinite), `js ${name}`).toBe(true);
        expect(relativeError(cpu[i], js[i]), `${name}${causal ? " causal" : ""}`).toBeLessThanOrEqual(1e-5);
      });
    }
  });
});
