/**
 * Attention on the cpu backend runs through the native matmul (src/attention.ts), not the js backend's kernels that
 * compute every product in JavaScript: its results against the js backend's (float64 sums) at sizes where the native
 * products take their tiled paths, causal and not, fewer queries than keys, float32 and bfloat16, outputs poisoned; and
 * in blocks of query rows, so no scratch of [M, N] scores is made.
 */
import {
  attentionBackward,
  attentionWithStats,
  type DType,
  getBackendInstance,
  jsKernels,
  packedAttentionBackward,
  packedAttentionWithStats,
  type ProductCompute,
  reshape,
  setBackend,
  split,
  type TensorInfo,
  tensorOn,
  tidy,
  transpose,
} from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/core/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { attentionKernels } from "../src/attention";
import { nativeAttentionRows } from "../src/compute";
import { cpuBackend, nativeCompute } from "../src/index";
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

  for (const dtype of ["float16", "bfloat16"] as const) {
    for (const packed of [false, true]) {
      it(`${dtype}${packed ? " packed" : ""}: the backward's Di is dout . out of the saved, rounded out, as js takes it`, () => {
        // Sharp rows (dq, dk small beside dP), values of 16: out's rounding to the half dtype moves Di = dout . out by
        // several units in dq's last place; the addon's sum_j P dP (dout . P v, unrounded) gave float16 dq 9.039 for
        // js's 9.086, bfloat16 -1.117 for -0.961.
        const rng = new SeededRandom(dtype === "float16" ? 5 : 6);
        const [t, h, d] = [9, 2, 5];
        const values = (count: number, magnitude: number) => Array.from({ length: count }, () => magnitude * rng.uniform(-1, 1));
        const qkv = Array.from({ length: t * 3 * h * d }, (_, i) => (Math.floor(i / (h * d)) % 3 < 2 ? 3 : 16) * rng.uniform(-1, 1));
        const dout = values(t * h * d, 16);
        const options = { causal: !packed, scale: 2 / Math.sqrt(d) };
        const run = (backend: string) =>
          tidy(() => {
            const on = getBackendInstance(backend);
            // out and lse from the js forward on both: the backward alone is compared.
            const saved = tidy(() => {
              const { out, lse } = packedAttentionWithStats(tensorOn(getBackendInstance("js"), qkv, [t, 3, h, d], dtype), options);
              return [Array.from(out.dataSync()), Array.from(lse.dataSync())];
            });
            const x = tensorOn(on, qkv, [t, 3, h, d], dtype);
            const [g, out, lse] = [tensorOn(on, dout, [t, h, d], dtype), tensorOn(on, saved[0], [t, h, d], dtype), tensorOn(on, saved[1], [h, t])];
            if (packed) return [Array.from(packedAttentionBackward(g, x, out, lse, options).dataSync())];
            // The same heads as separate [h, t, d] tensors.
            const heads = (y: ReturnType<typeof tensorOn>) => transpose(y, [1, 0, 2]);
            const [q, k, v] = split(x, 3, 1).map((part) => heads(reshape(part, [t, h, d])));
            const { dq, dk, dv } = attentionBackward(heads(g), q, k, v, heads(out), lse, options);
            return [dq, dk, dv].map((y) => Array.from(y.dataSync()));
          });
        const [cpu, js] = [run("cpu"), run("js")];
        // Within a unit in the half dtype's last place of each element (at least 1/64 of the largest one's).
        const ulp = (x: number) => 2 ** (Math.floor(Math.log2(Math.abs(x))) - (dtype === "float16" ? 10 : 7));
        cpu.forEach((got, i) => {
          const floor = ulp(Math.max(...js[i].map(Math.abs))) / 64;
          got.forEach((x, at) => {
            const want = js[i][at];
            if (!(Math.abs(x - want) <= Math.max(ulp(want), floor))) expect.fail(`gradient ${i}[${at}] is ${x}, js ${want}`);
          });
        });
      });
    }
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

describe.skipIf(cpuMissing)("cpu attention where a probability underflows float32", () => {
  // Query rows [1, 0] against keys of scores 0, -200, -1 and -300: exp(-200) and exp(-300) are float64 values that round
  // to 0 as float32. The second key's value is +inf in column 0, the fourth's -inf in column 1: js's tiny probability
  // times the infinity is +-inf, where a float32 probability of 0 made 0 * inf = NaN.
  const [m, n, d] = [3, 4, 2];
  const inputs = {
    q: [1, 0, 1, 0, 1, 0],
    k: [0, 0, -200, 0, -1, 0, -300, 0],
    v: [1, 2, Number.POSITIVE_INFINITY, 1, 3, 4, 1, Number.NEGATIVE_INFINITY],
  };
  /** out and lse of attentionWithStats on `backend`. */
  const forward = (backend: string, causal: boolean): number[][] =>
    tidy(() => {
      const upload = (x: number[], rows: number) => tensorOn(getBackendInstance(backend), x, [rows, d], "float32");
      const { out, lse } = attentionWithStats(upload(inputs.q, m), upload(inputs.k, n), upload(inputs.v, n), { causal, scale: 1 });
      return [Array.from(out.dataSync()), Array.from(lse.dataSync())];
    });
  for (const causal of [false, true]) {
    it(`out is js's +-inf, not NaN${causal ? " (causal)" : ""}, in one block of rows and in blocks of one`, () => {
      setBackend("cpu");
      const js = forward("js", causal);
      expect(js[0].some((x) => x === Number.POSITIVE_INFINITY)).toBe(true);
      // Through the kernels with a scratch of one row's scores: the repair runs per block of rows.
      const backend = cpuBackend();
      const kernels = attentionKernels(nativeCompute(backend.addon), nativeAttentionRows(backend.addon), n);
      const blocks = tidy(() => {
        const upload = (x: number[], rows: number) => tensorOn(backend, x, [1, rows, d], "float32");
        const results = kernels.Attention({ inputs: { q: upload(inputs.q, m), k: upload(inputs.k, n), v: upload(inputs.v, n) }, attrs: { causal, scale: 1 }, backend });
        const read = results.map((info) => Array.from(backend.readSync(info.dataId)));
        for (const info of results) backend.free(info.dataId);
        return read;
      });
      for (const [run, cpu] of Object.entries({ backend: forward("cpu", causal), "blocks of one row": blocks })) {
        // NaN, Infinity and -Infinity at the same places; the finite values close.
        const nonFinite = (x: number[]) => x.map((value) => (Number.isFinite(value) ? "finite" : String(value)));
        const finite = (x: number[]) => x.map((value) => (Number.isFinite(value) ? value : 0));
        expect(nonFinite(cpu[0]), `${run}: out`).toEqual(nonFinite(js[0]));
        expect(relativeError(finite(cpu[0]), finite(js[0])), `${run}: out`).toBeLessThanOrEqual(1e-6);
        expect(relativeError(cpu[1], js[1]), `${run}: lse`).toBeLessThanOrEqual(1e-6);
      }
    });
  }
});

describe.skipIf(cpuMissing)("cpu attention backward where a probability underflows float32", () => {
  // Random data but for the last query of the second head, [200, 0, 0, 0] (scaled by 1/2), against keys 0, 5 and 6 of
  // first entries 1.5, -0.5 and -1: scores 150, -50 and -100, so exp(-200) and exp(-250) are float64 probabilities that
  // round to 0 as float32. js's tiny probability times an infinity is +-inf, where a float32 0 made 0 * inf = NaN.
  const [heads, m, n, d] = [2, 5, 7, 4];
  const planted = (inputs: { q: number[]; k: number[] }) => {
    inputs.q.splice((2 * m - 1) * d, d, 200, 0, 0, 0);
    for (const [key, first] of [[0, 1.5], [n - 2, -0.5], [n - 1, -1]]) inputs.k[(n + key) * d] = first;
  };
  const cases: { name: string; output: number; causal: boolean[]; poison: (inputs: { v: number[]; g: number[] }) => void }[] = [
    // dv = P^T dout: each key's share of that query's infinite gradient.
    { name: "that query's output gradient infinite", output: 4, causal: [false, true], poison: ({ g }) => (g[(2 * m - 1) * d] = Number.POSITIVE_INFINITY) },
    // dk = dS^T q: key 5's dS = P (dP - Di) of that query, where Di is infinite through key 6's value (a key only that
    // query keeps under causal masking).
    { name: "key 6's value infinite", output: 3, causal: [true], poison: ({ v }) => (v[(2 * n - 1) * d] = Number.POSITIVE_INFINITY) },
  ];
  for (const { name, output, causal: causalities, poison } of cases) {
    for (const causal of causalities) {
      it(`${name}: dq, dk and dv are js's, +-inf where js's are, not NaN${causal ? " (causal)" : ""}, in one block of rows and in blocks of one`, () => {
        setBackend("cpu");
        const rng = new SeededRandom(name.length * 10 + Number(causal));
        const values = (rows: number) => Array.from({ length: heads * rows * d }, () => rng.uniform(-1.5, 1.5));
        const inputs = { q: values(m), k: values(n), v: values(n), g: values(m) };
        planted(inputs);
        poison(inputs);
        const js = forwardBackward("js", inputs, [heads, m, n, d], "float32", { causal, scale: 1 / Math.sqrt(d) });
        expect(js[output].some((x) => x === Number.POSITIVE_INFINITY || x === Number.NEGATIVE_INFINITY), "js has an infinity").toBe(true);
        expect(differingFromJs(js, inputs, [heads, m, n, d], causal), "results that differ from js").toEqual([]);
      });
    }
  }
});

describe.skipIf(cpuMissing)("cpu attention backward where float32 dP overflows", () => {
  // Random data but for the second head's values and the output gradients of its queries 1 and 3, scaled by 1e20: their
  // dP = dout v^T of about 1e40 overflows float32 (so dP - Di is inf - inf), where js's float64 dS is finite and its dq
  // and dk sums are finite (above 1e37) or past float32's range: stored as float32, +-inf.
  const [heads, m, n, d] = [2, 5, 7, 4];
  for (const causal of [false, true]) {
    it(`dq, dk and dv are js's rounded to float32, not NaN${causal ? " (causal)" : ""}, in one block of rows and in blocks of one`, () => {
      setBackend("cpu");
      const rng = new SeededRandom(2027 + Number(causal));
      const values = (rows: number) => Array.from({ length: heads * rows * d }, () => rng.uniform(-1.5, 1.5));
      const inputs = { q: values(m), k: values(n), v: values(n), g: values(m) };
      for (let x = n * d; x < 2 * n * d; x++) inputs.v[x] *= 1e20;
      for (const query of [m + 1, m + 3]) for (let x = query * d; x < (query + 1) * d; x++) inputs.g[x] *= 1e20;
      const options = { causal, scale: 1 / Math.sqrt(d) };
      const js = forwardBackward("js", inputs, [heads, m, n, d], "float32", options);
      const gradients = [...js[2], ...js[3]];
      expect(gradients.some((x) => x === Number.POSITIVE_INFINITY || x === Number.NEGATIVE_INFINITY), "js dq or dk has an infinity").toBe(true);
      expect(gradients.some((x) => Number.isFinite(x) && Math.abs(x) > 1e37), "js dq or dk has a finite entry above 1e37").toBe(true);
      expect(js.flat().some(Number.isNaN), "js has a NaN").toBe(false);
      expect(differingFromJs(js, inputs, [heads, m, n, d], causal), "results that differ from js").toEqual([]);
    });
  }
});

/**
 * Which of out, lse, dq, dk and dv differ from js's (`js`, forwardBackward's results) when the cpu backend computes
 * them, through the backend and through its kernels in blocks of one query row: NaN, Infinity and -Infinity must sit at
 * the same places and the finite values agree within 1e-5.
 */
function differingFromJs(
  js: number[][],
  inputs: { q: number[]; k: number[]; v: number[]; g: number[] },
  [heads, m, n, d]: number[],
  causal: boolean,
): string[] {
  const runs = {
    backend: forwardBackward("cpu", inputs, [heads, m, n, d], "float32", { causal, scale: 1 / Math.sqrt(d) }),
    "blocks of one row": kernelsForwardBackward(nativeCompute(cpuBackend().addon), n, inputs, [heads, m, n, d], causal),
  };
  const nonFinite = (x: number[]) => x.map((value) => (Number.isFinite(value) ? "finite" : String(value)));
  const finite = (x: number[]) => x.map((value) => (Number.isFinite(value) ? value : 0));
  return Object.entries(runs).flatMap(([run, cpu]) =>
    ["out", "lse", "dq", "dk", "dv"]
      .filter((_, i) => JSON.stringify(nonFinite(cpu[i])) !== JSON.stringify(nonFinite(js[i])) || relativeError(finite(cpu[i]), finite(js[i])) > 1e-5)
      .map((result) => `${run}: ${result}`),
  );
}

/** forwardBackward through the kernels `attentionKernels` makes of `products`, on the cpu backend's tensors. */
function kernelsForwardBackward(
  products: ProductCompute,
  scratchFloats: number,
  inputs: { q: number[]; k: number[]; v: number[]; g: number[] },
  [heads, m, n, d]: number[],
  causal: boolean,
): number[][] {
  const backend = cpuBackend();
  const kernels = attentionKernels(products, nativeAttentionRows(backend.addon), scratchFloats);
  const attrs = { causal, scale: 1 / Math.sqrt(d) };
  return tidy(() => {
    const upload = (x: number[], rows: number) => tensorOn(backend, x, [heads, rows, d], "float32");
    const [q, k, v, dout] = [upload(inputs.q, m), upload(inputs.k, n), upload(inputs.v, n), upload(inputs.g, m)];
    const [out, lse] = kernels.Attention({ inputs: { q, k, v }, attrs, backend });
    const grads = kernels.AttentionBackward({ inputs: { dout, q, k, v, out, lse }, attrs, backend });
    const results: TensorInfo[] = [out, lse, ...grads];
    const read = results.map((info) => Array.from(backend.readSync(info.dataId)));
    for (const info of results) backend.free(info.dataId);
    return read;
  });
}

describe.skipIf(cpuMissing)("cpu attention in blocks of query rows", () => {
  // 64 floats of scores at a time: blocks of 1 to 7 rows here, a last block shorter than the others, N over the budget.
  const scratchFloats = 64;
  const cases: [heads: number, m: number, n: number, d: number, causal: boolean][] = [
    [2, 37, 20, 8, false],
    [2, 13, 40, 5, true],
    [3, 9, 9, 3, true],
    [1, 1, 30, 4, true],
    [1, 5, 100, 4, false],
  ];
  for (const [heads, m, n, d, causal] of cases) {
    it(`[${heads}] M=${m} N=${n} D=${d}${causal ? " causal" : ""}: no product makes more than ${scratchFloats} scores, and the results match js`, () => {
      setBackend("cpu");
      const native = nativeCompute(cpuBackend().addon);
      // Every product with a scores-sized output (q k^T, dout v^T: B transposed), as rows x N.
      const scoreProducts: number[] = [];
      const recording: ProductCompute = {
        ...native,
        matmulF32: (args) => {
          if (args.transposeB) scoreProducts.push(args.m * args.n);
          native.matmulF32(args);
        },
      };
      const rng = new SeededRandom(heads * 1000 + m * 31 + n);
      const values = (rows: number) => Array.from({ length: heads * rows * d }, () => rng.uniform(-1.5, 1.5));
      const inputs = { q: values(m), k: values(n), v: values(n), g: values(m) };
      const cpu = kernelsForwardBackward(recording, scratchFloats, inputs, [heads, m, n, d], causal);
      expect(scoreProducts.length).toBeGreaterThan(0);
      expect(Math.max(...scoreProducts)).toBeLessThanOrEqual(Math.max(scratchFloats, n));
      const js = forwardBackward("js", inputs, [heads, m, n, d], "float32", { causal });
      ["out", "lse", "dq", "dk", "dv"].forEach((name, i) => {
        expect(relativeError(cpu[i], js[i]), name).toBeLessThanOrEqual(1e-5);
      });
    });
  }
});

describe.skipIf(cpuMissing)("cpu causal attention with a non-finite entry", () => {
  // A NaN or infinity reaches exactly the outputs and gradients it reaches on js: never a row or key it is masked from
  // (a masked score is 0 in the products, and 0 times it is NaN).
  const [heads, m, n, d] = [2, 6, 8, 3];
  const cases: { name: string; poison: (inputs: { q: number[]; k: number[]; v: number[]; g: number[] }) => void }[] = [
    { name: "a value of the last key NaN", poison: ({ v }) => (v[(n - 1) * d] = Number.NaN) },
    { name: "a value of a middle key infinite", poison: ({ v }) => (v[n * d + 5 * d + 1] = Number.POSITIVE_INFINITY) },
    { name: "the last key infinite", poison: ({ k }) => (k[(n - 1) * d + 2] = Number.POSITIVE_INFINITY) },
    { name: "the first query NaN", poison: ({ q }) => (q[0] = Number.NaN) },
    { name: "an output gradient of the second query -infinity", poison: ({ g }) => (g[m * d + d] = Number.NEGATIVE_INFINITY) },
  ];
  for (const { name, poison } of cases) {
    it(`${name}: non-finite where js is, the same values elsewhere, in one block of rows and in several`, () => {
      setBackend("cpu");
      const rng = new SeededRandom(name.length);
      const values = (rows: number) => Array.from({ length: heads * rows * d }, () => rng.uniform(-1.5, 1.5));
      const inputs = { q: values(m), k: values(n), v: values(n), g: values(m) };
      poison(inputs);
      const js = forwardBackward("js", inputs, [heads, m, n, d], "float32", { causal: true });
      const runs = {
        backend: forwardBackward("cpu", inputs, [heads, m, n, d], "float32", { causal: true }),
        "blocks of 2 rows": kernelsForwardBackward(nativeCompute(cpuBackend().addon), 2 * n, inputs, [heads, m, n, d], true),
      };
      for (const [run, cpu] of Object.entries(runs)) {
        ["out", "lse", "dq", "dk", "dv"].forEach((output, i) => {
          const what = `${run}: ${output}`;
          // NaN, Infinity and -Infinity at the same places; the finite values close.
          const nonFinite = (x: number[]) => x.map((value) => (Number.isFinite(value) ? "finite" : String(value)));
          expect(nonFinite(cpu[i]), what).toEqual(nonFinite(js[i]));
          expect(js[i].some(Number.isFinite), `js ${output} has finite entries`).toBe(true);
          const finite = (x: number[]) => x.map((value) => (Number.isFinite(value) ? value : 0));
          expect(relativeError(finite(cpu[i]), finite(js[i])), what).toBeLessThanOrEqual(1e-5);
        });
      }
    });
  }
});

describe.skipIf(cpuMissing)("cpu attention backward at large scores", () => {
  // One query against two keys of the same score, q k^T = 11111.1^2, about 1.2e8: P is 1/2 each, exactly. The saved lse
  // is that score plus log 2 rounded to float32 (an ulp of 8), and exp(score - lse) had made P about 1 each (dv doubled).
  const a = Math.fround(11111.1);
  const inputs = (v: [number, number], g: number) => ({ q: [a], k: [a, a], v, g: [g] });
  it("P is the softmax of the row's scores, not exp(score - lse): dv is P dout, dk P (dP - Di) q", () => {
    const [out, , dq, dk, dv] = forwardBackward("cpu", inputs([1, 3], 1), [1, 2, 1], "float32", { causal: false, scale: 1 });
    expect(out).toEqual([2]);
    expect(dv).toEqual([0.5, 0.5]);
    // dP = v, Di = dout out = 2, dS = P (dP - Di) = [-0.5, 0.5].
    expect(dk).toEqual([Math.fround(-0.5 * a), Math.fround(0.5 * a)]);
    expect(dq).toEqual([0]);
  });

  it("a row recomputed in float64 (its float32 dP overflows) takes the same P", () => {
    // dP = dout v of +-1e40 overflows float32, so the row is recomputed in float64; out = 0, so Di = 0.
    const [out, , dq, , dv] = forwardBackward("cpu", inputs([1e20, -1e20], 1e20), [1, 2, 1], "float32", { causal: false, scale: 1 });
    expect(out).toEqual([0]);
    expect(dv).toEqual([Math.fround(5e19), Math.fround(5e19)]);
    expect(dq).toEqual([0]);
  });
});

describe.skipIf(cpuMissing)("cpu attention backward where a softmax row is one-hot", () => {
  // Every query [query, small] against keys of first entries 0, 1, ..., n - 1 times `key`: scores that far apart make each
  // row's P exactly one-hot in float64 and float32, so dP - Di is 0 on js up to float64 rounding (dout . v of the kept
  // key less dout . out, out being that value), and so are dq and dk. Di taken from out against the float32 dP left
  // float32 rounding noise in dS: dq about 1e-7 of |dout| |v| |k| (1e31 at values and output gradients of 1e19), and
  // Infinity with keys of 1e12 too.
  const [heads, m, n, d] = [2, 5, 6, 8];
  const cases: { name: string; query: number; key: number; value: number }[] = [
    { name: "inputs of about 1", query: 1000, key: 1, value: 1 },
    { name: "values and output gradients of 1e19", query: 1000, key: 1, value: 1e19 },
    { name: "keys of 1e12, values and output gradients of 1e19", query: 1e-9, key: 1e12, value: 1e19 },
  ];
  const largest = (x: number[]) => Math.max(...x.map(Math.abs));
  for (const { name, query, key, value } of cases) {
    for (const causal of [false, true]) {
      it(`${name}: dq and dk are js's (0 but for float64 rounding), not float32 noise${causal ? " (causal)" : ""}`, () => {
        setBackend("cpu");
        const rng = new SeededRandom(99 + Number(causal));
        const values = (rows: number, magnitude: number) => Array.from({ length: heads * rows * d }, () => magnitude * rng.uniform(-1.5, 1.5));
        const inputs = { q: values(m, query * 1e-5), k: values(n, key), v: values(n, value), g: values(m, value) };
        for (let row = 0; row < heads * m; row++) inputs.q[row * d] = query;
        for (let row = 0; row < heads * n; row++) inputs.k[row * d] = (row % n) * key;
        const options = { causal, scale: 1 / Math.sqrt(d) };
        const js = forwardBackward("js", inputs, [heads, m, n, d], "float32", options);
        const cpu = forwardBackward("cpu", inputs, [heads, m, n, d], "float32", options);
        expect(js.flat().every(Number.isFinite), "js results are finite").toBe(true);
        // dq = dS k and dk = dS^T q, dS = P (dP - Di) with dP = dout v^T: float32 noise in dP - Di is about 6e-8 of these.
        const gv = largest(inputs.g) * largest(inputs.v);
        for (const [i, result, size] of [[2, "dq", gv * largest(inputs.k)], [3, "dk", gv * largest(inputs.q)]] as const) {
          expect(largest(js[i]), `js ${result} is 0 but for float64 rounding`).toBeLessThanOrEqual(1e-12 * size);
          expect(cpu[i].every(Number.isFinite), `${result} is finite`).toBe(true);
          expect(largest(cpu[i].map((x, at) => x - js[i][at])), `${result} against js`).toBeLessThanOrEqual(1e-12 * size);
        }
        ["out", "lse", "dv"].forEach((result) => {
          const i = ["out", "lse", "dq", "dk", "dv"].indexOf(result);
          expect(relativeError(cpu[i], js[i]), result).toBeLessThanOrEqual(1e-6);
        });
      });
    }
  }
});
