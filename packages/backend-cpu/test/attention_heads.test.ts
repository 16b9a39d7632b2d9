/**
 * The addon's attention over all heads at once (attentionForward, attentionBackward: each head's products and rows on
 * one thread, the heads side by side) against the path that runs a product at a time over every thread: the same bits
 * on finite inputs at 1, 2 and 3 threads, with fewer heads than threads and more, causal and not, in one block of
 * query rows and in several; a head with a non-finite input or an overflowing score flagged for that path, the others
 * not; and the binding's argument checks.
 */
import { ShapeError, tidy, type TensorInfo, tensorOn, ValueError } from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/core/testing";
import { afterAll, describe, expect, it } from "vitest";
import { attentionKernels } from "../src/attention";
import { nativeAttentionHeads, nativeAttentionRows } from "../src/compute";
import { cpuBackend, cpuThreads, nativeCompute, setCpuThreads } from "../src/index";
import { cpuMissing, reportCpuAvailability } from "./cpu";

reportCpuAvailability("attention_heads.test.ts");

type Inputs = { q: Float32Array; k: Float32Array; v: Float32Array; g: Float32Array };

function randomInputs(seed: number, [heads, m, n, d]: number[]): Inputs {
  const rng = new SeededRandom(seed);
  const values = (rows: number) => Float32Array.from({ length: heads * rows * d }, () => rng.uniform(-2, 2));
  return { q: values(m), k: values(n), v: values(n), g: values(m) };
}

/** out, lse, dq, dk and dv through attentionKernels, with the heads path or without, scores held `scratchFloats` at a time. */
function run(inputs: Inputs, [heads, m, n, d]: number[], causal: boolean, withHeads: boolean, scratchFloats = 2 ** 22): Float32Array[] {
  const backend = cpuBackend();
  backend.poisonAllocations = true;
  try {
    const kernels = attentionKernels(nativeCompute(backend.addon), nativeAttentionRows(backend.addon), scratchFloats, withHeads ? nativeAttentionHeads(backend.addon) : null);
    const attrs = { causal, scale: 1 / Math.sqrt(d) };
    return tidy(() => {
      const upload = (x: Float32Array, rows: number) => tensorOn(backend, x, [heads, rows, d], "float32");
      const [q, k, v, dout] = [upload(inputs.q, m), upload(inputs.k, n), upload(inputs.v, n), upload(inputs.g, m)];
      const [out, lse] = kernels.Attention({ inputs: { q, k, v }, attrs, backend });
      const grads = kernels.AttentionBackward({ inputs: { dout, q, k, v, out, lse }, attrs, backend });
      const results: TensorInfo[] = [out, lse, ...grads];
      const read = results.map((info) => Float32Array.from(backend.readSync(info.dataId) as Float32Array));
      for (const info of results) backend.free(info.dataId);
      return read;
    });
  } finally {
    backend.poisonAllocations = false;
  }
}

const NAMES = ["out", "lse", "dq", "dk", "dv"];

/** out, lse and dqkv of PackedAttention and its backward through attentionKernels, with the heads path or without. */
function runPacked(qkvValues: Float32Array, doutValues: Float32Array, [batch, t, h, d]: number[], causal: boolean, withHeads: boolean): Float32Array[] {
  const backend = cpuBackend();
  backend.poisonAllocations = true;
  try {
    const kernels = attentionKernels(nativeCompute(backend.addon), nativeAttentionRows(backend.addon), 2 ** 22, withHeads ? nativeAttentionHeads(backend.addon) : null);
    const attrs = { causal, scale: 1 / Math.sqrt(d) };
    return tidy(() => {
      const qkv = tensorOn(backend, qkvValues, [batch, t, 3, h, d], "float32");
      const dout = tensorOn(backend, doutValues, [batch, t, h, d], "float32");
      const [out, lse] = kernels.PackedAttention({ inputs: { qkv }, attrs, backend });
      const dqkv = kernels.PackedAttentionBackward({ inputs: { dout, qkv, out, lse }, attrs, backend });
      const results: TensorInfo[] = [out, lse, dqkv];
      const read = results.map((info) => Float32Array.from(backend.readSync(info.dataId) as Float32Array));
      for (const info of results) backend.free(info.dataId);
      return read;
    });
  } finally {
    backend.poisonAllocations = false;
  }
}

describe.skipIf(cpuMissing)("cpu attention over all heads at once", () => {
  const startThreads = cpuMissing ? 1 : cpuThreads();
  afterAll(() => {
    if (!cpuMissing) setCpuThreads(startThreads);
  });

  const cases: { shape: [number, number, number, number]; causal: boolean; scratchFloats?: number }[] = [
    { shape: [1, 70, 70, 16], causal: true },
    { shape: [2, 33, 50, 8], causal: false },
    { shape: [5, 40, 40, 24], causal: true },
    { shape: [8, 9, 130, 12], causal: true },
    { shape: [6, 45, 21, 7], causal: false, scratchFloats: 21 * 10 },
    { shape: [3, 29, 31, 5], causal: true, scratchFloats: 31 * 4 },
  ];
  for (const { shape, causal, scratchFloats } of cases) {
    const label = `[${shape.join(", ")}]${causal ? " causal" : ""}${scratchFloats ? ` in blocks of ${scratchFloats / shape[2]} rows` : ""}`;
    it(`${label}: the bits of the product-at-a-time path, at 1, 2 and 3 threads`, () => {
      const inputs = randomInputs(shape.reduce((a, b) => a * 7 + b, 0), shape);
      setCpuThreads(2);
      const want = run(inputs, shape, causal, false, scratchFloats);
      for (const threads of [1, 2, 3]) {
        setCpuThreads(threads);
        const got = run(inputs, shape, causal, true, scratchFloats);
        NAMES.forEach((name, i) => {
          expect(got[i].every(Number.isFinite), `${name} at ${threads} threads is finite`).toBe(true);
          expect(got[i], `${name} at ${threads} threads`).toEqual(want[i]);
        });
      }
    });
  }

  const packedCases: { shape: [number, number, number, number]; causal: boolean }[] = [
    { shape: [2, 40, 3, 16], causal: true },
    { shape: [1, 33, 1, 8], causal: false },
    { shape: [3, 17, 4, 5], causal: true },
  ];
  for (const { shape, causal } of packedCases) {
    it(`packed [${shape.join(", ")}]${causal ? " causal" : ""}: each head read and written in its rows, the bits of the product-at-a-time path`, () => {
      const [batch, t, h, d] = shape;
      const rng = new SeededRandom(t * 13 + h);
      const qkv = Float32Array.from({ length: batch * t * 3 * h * d }, () => rng.uniform(-2, 2));
      const dout = Float32Array.from({ length: batch * t * h * d }, () => rng.uniform(-2, 2));
      setCpuThreads(2);
      const want = runPacked(qkv, dout, shape, causal, false);
      for (const threads of [1, 2, 3]) {
        setCpuThreads(threads);
        const got = runPacked(qkv, dout, shape, causal, true);
        ["out", "lse", "dqkv"].forEach((name, i) => {
          expect(got[i].every(Number.isFinite), `${name} at ${threads} threads is finite`).toBe(true);
          expect(got[i], `${name} at ${threads} threads`).toEqual(want[i]);
        });
      }
    });
  }

  it("packed: a head with a NaN query, an infinite value or an overflowing score gets the product-at-a-time path's values, its neighbours too", () => {
    const shape = [2, 9, 3, 4];
    const [batch, t, h, d] = shape;
    const rowAt = (sequence: number, i: number, part: number, head: number) => (((sequence * t + i) * 3 + part) * h + head) * d;
    const poisons: [string, (qkv: Float32Array, dout: Float32Array) => void][] = [
      ["a NaN query", (qkv) => (qkv[rowAt(1, 4, 0, 2) + 1] = Number.NaN)],
      ["an infinite value", (qkv) => (qkv[rowAt(0, 6, 2, 1)] = Number.POSITIVE_INFINITY)],
      ["an infinite output gradient", (_, dout) => (dout[((1 * t + 3) * h + 0) * d + 2] = Number.NEGATIVE_INFINITY)],
      [
        "scores past float32's range",
        (qkv) => {
          qkv[rowAt(1, 2, 0, 1)] = 1e20;
          for (let i = 0; i < t; i++) qkv[rowAt(1, i, 1, 1)] = 1e20;
        },
      ],
    ];
    for (const [name, poison] of poisons) {
      const rng = new SeededRandom(name.length);
      const qkv = Float32Array.from({ length: batch * t * 3 * h * d }, () => rng.uniform(-2, 2));
      const dout = Float32Array.from({ length: batch * t * h * d }, () => rng.uniform(-2, 2));
      poison(qkv, dout);
      setCpuThreads(2);
      const want = runPacked(qkv, dout, shape, true, false);
      const got = runPacked(qkv, dout, shape, true, true);
      ["out", "lse", "dqkv"].forEach((output, i) => {
        expect(got[i], `${name}: ${output}`).toEqual(want[i]);
      });
    }
  });

  it("a long sequence is taken in blocks of query rows per thread, and matches the product-at-a-time path closely", () => {
    // 2^18 / 40000 = 6 rows of scores per thread at a time where the other path takes all 20 in one block: dk and dv
    // add four blocks' shares in float32.
    const shape = [2, 20, 40000, 4];
    const inputs = randomInputs(99, shape);
    setCpuThreads(2);
    const want = run(inputs, shape, true, false);
    const got = run(inputs, shape, true, true);
    NAMES.forEach((name, i) => {
      let diff = 0;
      let norm = 0;
      for (let x = 0; x < want[i].length; x++) {
        diff += (got[i][x] - want[i][x]) ** 2;
        norm += want[i][x] ** 2;
      }
      expect(Math.sqrt(diff / norm), name).toBeLessThanOrEqual(1e-6);
    });
  });

  it("a head of more than 2^18 scores gets the same bits at 1, 2 and 3 threads (side by side or one head at a time)", () => {
    // 160 x 1700 scores: a thread's heads side by side take 154 rows at a time, so dk and dv add two blocks' shares;
    // the pool's head at a time had taken all 160 rows in one block.
    const shape = [2, 160, 1700, 2];
    const inputs = randomInputs(5, shape);
    setCpuThreads(1);
    const want = run(inputs, shape, true, true);
    for (const threads of [2, 3]) {
      setCpuThreads(threads);
      const got = run(inputs, shape, true, true);
      NAMES.forEach((name, i) => {
        expect(got[i], `${name} at ${threads} threads`).toEqual(want[i]);
      });
    }
  });

  it("flags the heads with a non-finite input or an overflowing score, and only those", () => {
    const [heads, m, n, d] = [6, 12, 12, 8];
    const addon = cpuBackend().addon;
    for (const [name, poison, poisonedHeads] of [
      ["a NaN query", (x: Inputs) => (x.q[1 * m * d + 3] = Number.NaN), [1]],
      ["an infinite key", (x: Inputs) => (x.k[4 * n * d + 5] = Number.POSITIVE_INFINITY), [4]],
      ["an infinite value", (x: Inputs) => (x.v[2 * n * d] = Number.NEGATIVE_INFINITY), [2]],
      // Finite queries and keys of 1e20: q k^T of 1e40 overflows float32.
      [
        "scores past float32's range",
        (x: Inputs) => {
          x.q[5 * m * d] = 1e20;
          x.k.fill(1e20, 5 * n * d, 6 * n * d);
        },
        [5],
      ],
    ] as const) {
      for (const threads of [1, 2]) {
        setCpuThreads(threads);
        const inputs = randomInputs(7, [heads, m, n, d]);
        poison(inputs);
        const exact = new Uint8Array(heads).fill(9);
        const out = new Float32Array(heads * m * d);
        const lse = new Float32Array(heads * m);
        addon.attentionForward(inputs.q, 0, inputs.k, 0, inputs.v, 0, out, 0, lse, 0, exact, heads, m, n, d, true, 1 / Math.sqrt(d), m);
        const flagged = [...exact.keys()].filter((b) => exact[b] === 1);
        expect(flagged, `forward, ${name}, ${threads} threads`).toEqual([...poisonedHeads]);
        expect([...exact].every((flag) => flag === 0 || flag === 1), "every flag written").toBe(true);
        const grads = [new Float32Array(heads * m * d), new Float32Array(heads * n * d), new Float32Array(heads * n * d)];
        exact.fill(9);
        addon.attentionBackward(inputs.g, 0, inputs.q, 0, inputs.k, 0, inputs.v, 0, null, 0, grads[0], 0, grads[1], 0, grads[2], 0, exact, heads, m, n, d, true, 1 / Math.sqrt(d), m);
        expect([...exact.keys()].filter((b) => exact[b] === 1), `backward, ${name}, ${threads} threads`).toEqual([...poisonedHeads]);
      }
    }
  });

  it("an output gradient that is not finite flags its head in the backward", () => {
    const [heads, m, n, d] = [3, 5, 5, 4];
    const inputs = randomInputs(3, [heads, m, n, d]);
    inputs.g[2 * m * d + 7] = Number.POSITIVE_INFINITY;
    const exact = new Uint8Array(heads);
    const grads = [new Float32Array(heads * m * d), new Float32Array(heads * n * d), new Float32Array(heads * n * d)];
    cpuBackend().addon.attentionBackward(inputs.g, 0, inputs.q, 0, inputs.k, 0, inputs.v, 0, null, 0, grads[0], 0, grads[1], 0, grads[2], 0, exact, heads, m, n, d, false, 0.5, m);
    expect([...exact]).toEqual([0, 0, 1]);
  });

  it("with no query rows the keys and values get zero gradients", () => {
    const [heads, n, d] = [4, 6, 3];
    const grads = [new Float32Array(0), new Float32Array(heads * n * d).fill(Number.NaN), new Float32Array(heads * n * d).fill(Number.NaN)];
    const kv = Float32Array.from({ length: heads * n * d }, (_, i) => i);
    const exact = new Uint8Array(heads).fill(9);
    cpuBackend().addon.attentionBackward(new Float32Array(0), 0, new Float32Array(0), 0, kv, 0, kv, 0, null, 0, grads[0], 0, grads[1], 0, grads[2], 0, exact, heads, 0, n, d, true, 1, 1);
    expect([...exact]).toEqual([0, 0, 0, 0]);
    expect(grads[1].every((x) => x === 0) && grads[2].every((x) => x === 0)).toBe(true);
  });

  it("a blockRows past m takes the m rows in one block: the same values, no scratch sized by blockRows", () => {
    const addon = cpuBackend().addon;
    const [heads, m, n, d] = [2, 3, 5, 4];
    const inputs = randomInputs(11, [heads, m, n, d]);
    const attend = (blockRows: number) => {
      const out = new Float32Array(heads * m * d);
      const lse = new Float32Array(heads * m);
      const exact = new Uint8Array(heads).fill(9);
      addon.attentionForward(inputs.q, 0, inputs.k, 0, inputs.v, 0, out, 0, lse, 0, exact, heads, m, n, d, true, 0.5, blockRows);
      const grads = [new Float32Array(heads * m * d), new Float32Array(heads * n * d), new Float32Array(heads * n * d)];
      addon.attentionBackward(inputs.g, 0, inputs.q, 0, inputs.k, 0, inputs.v, 0, null, 0, grads[0], 0, grads[1], 0, grads[2], 0, exact, heads, m, n, d, true, 0.5, blockRows);
      return [out, lse, ...grads, exact];
    };
    // One thread and two: one head at a time over the pool, and the heads side by side.
    for (const threads of [1, 2]) {
      setCpuThreads(threads);
      const want = attend(m);
      addon.releaseScratch();
      expect(attend(2 ** 52), `${threads} threads`).toEqual(want);
      expect(addon.scratchBytes(), `${threads} threads: scratch`).toBeLessThan(2 ** 20);
    }
  });

  it("with d = 0 no block of scores is made: lse is log(kept keys), the gradients have no elements", () => {
    const addon = cpuBackend().addon;
    const none = new Float32Array(0);
    // 2^24 keys of no values: no array bounds n (nor, backward, m), and each row had taken a block of n scores.
    const [heads, m, n] = [2, 3, 2 ** 24];
    for (const threads of [1, 2]) {
      setCpuThreads(threads);
      for (const causal of [false, true]) {
        addon.releaseScratch();
        const lse = new Float32Array(heads * m).fill(Number.NaN);
        const exact = new Uint8Array(heads).fill(9);
        addon.attentionForward(none, 0, none, 0, none, 0, none, 0, lse, 0, exact, heads, m, n, 0, causal, 0.5, 1);
        const want = [0, 1, 2].map((i) => Math.fround(Math.log(causal ? n - m + 1 + i : n)));
        expect(Array.from(lse), causal ? "causal" : "").toEqual([...want, ...want]);
        expect([...exact]).toEqual([0, 0]);
        exact.fill(9);
        addon.attentionBackward(none, 0, none, 0, none, 0, none, 0, null, 0, none, 0, none, 0, none, 0, exact, heads, m, n, 0, causal, 0.5, 1);
        expect([...exact]).toEqual([0, 0]);
        expect(addon.scratchBytes(), `${threads} threads: scratch`).toBe(0);
      }
    }
    // Causal with more queries than keys: a row that keeps no key has lse -inf, as the softmax of no scores.
    const lse = new Float32Array(3);
    addon.attentionForward(none, 0, none, 0, none, 0, none, 0, lse, 0, new Uint8Array(1), 1, 3, 2, 0, true, 1, 3);
    expect(Array.from(lse)).toEqual([Number.NEGATIVE_INFINITY, 0, Math.fround(Math.log(2))]);
  });

  it("packed: checks its arguments before it runs", () => {
    const heads = nativeAttentionHeads(cpuBackend().addon);
    const layout = { sequences: 2, t: 3, parts: 3, h: 2, d: 4 };
    const qkv = new Float32Array(2 * 3 * 3 * 2 * 4);
    const rows = 2 * 3 * 2 * 4;
    const forward = (over: Partial<{ qkv: Float32Array; out: Float32Array; lse: Float32Array; exact: Uint8Array }>) => () =>
      heads.packedForward(over.qkv ?? qkv, over.out ?? new Float32Array(rows), over.lse ?? new Float32Array(12), over.exact ?? new Uint8Array(4), layout, 1, true, 3);
    expect(forward({})).not.toThrow();
    expect(forward({ qkv: new Float32Array(143) })).toThrow(/qkv has 143 elements, needs 144/);
    expect(forward({ out: new Float32Array(rows - 1) })).toThrow(/out has 47 elements, needs 48/);
    expect(forward({ lse: new Float32Array(11) })).toThrow(/lse has 11 elements, needs 12/);
    expect(forward({ exact: new Uint8Array(3) })).toThrow(/exact has 3 elements, needs 4/);
    expect(forward({ out: qkv.subarray(96) })).toThrow(/out shares memory with qkv/);
    const backward = (over: Partial<{ dout: Float32Array; out: Float32Array; dqkv: Float32Array }>) => () =>
      heads.packedBackward(over.dout ?? new Float32Array(rows), qkv, over.out ?? null, over.dqkv ?? new Float32Array(qkv.length), new Uint8Array(4), layout, 1, false, 3);
    expect(backward({})).not.toThrow();
    expect(backward({ out: new Float32Array(rows) })).not.toThrow();
    expect(backward({ dout: new Float32Array(rows - 1) })).toThrow(/dout has 47 elements, needs 48/);
    expect(backward({ out: new Float32Array(rows - 1) })).toThrow(/out has 47 elements, needs 48/);
    expect(backward({ dqkv: qkv })).toThrow(/dqkv shares memory with qkv/);
    expect(backward({ dqkv: new Float32Array(100) })).toThrow(ShapeError);
  });

  it("checks its arguments before it runs", () => {
    const heads = nativeAttentionHeads(cpuBackend().addon);
    const [h, m, n, d] = [2, 3, 4, 5];
    const q = new Float32Array(h * m * d);
    const kv = new Float32Array(h * n * d);
    const sizes = { heads: h, m, n, d };
    const forward = (over: Partial<{ q: Float32Array; k: Float32Array; out: Float32Array; lse: Float32Array; exact: Uint8Array; blockRows: number }>) => () =>
      heads.forward(over.q ?? q, over.k ?? kv, kv, over.out ?? new Float32Array(h * m * d), over.lse ?? new Float32Array(h * m), over.exact ?? new Uint8Array(h), sizes, 1, true, over.blockRows ?? m);
    expect(forward({})).not.toThrow();
    expect(forward({ q: new Float32Array(h * m * d - 1) })).toThrow(ShapeError);
    expect(forward({ q: new Float32Array(h * m * d - 1) })).toThrow(/q has 29 elements, needs 30/);
    expect(forward({ k: new Float32Array(h * n * d - 1) })).toThrow(/k has 39 elements, needs 40/);
    expect(forward({ lse: new Float32Array(h * m - 1) })).toThrow(/lse has 5 elements, needs 6/);
    expect(forward({ exact: new Uint8Array(h - 1) })).toThrow(/exact has 1 elements, needs 2/);
    expect(forward({ blockRows: 0 })).toThrow(/blockRows must be at least 1/);
    // An output over an input.
    expect(forward({ out: q })).toThrow(ValueError);
    expect(forward({ out: q })).toThrow(/out shares memory with q/);
    const grads: [Float32Array, Float32Array, Float32Array] = [new Float32Array(h * m * d), new Float32Array(h * n * d), new Float32Array(h * n * d)];
    const backward = (over: Partial<{ dq: Float32Array; dk: Float32Array; dv: Float32Array; dout: Float32Array; out: Float32Array }>) => () =>
      heads.backward(over.dout ?? new Float32Array(h * m * d), q, kv, kv, over.out ?? null, [over.dq ?? grads[0], over.dk ?? grads[1], over.dv ?? grads[2]], new Uint8Array(h), sizes, 1, false, m);
    expect(backward({})).not.toThrow();
    expect(backward({ out: new Float32Array(h * m * d) })).not.toThrow();
    expect(backward({ dout: new Float32Array(3) })).toThrow(/dout has 3 elements, needs 30/);
    expect(backward({ out: new Float32Array(3) })).toThrow(/out has 3 elements, needs 30/);
    expect(backward({ out: grads[0] })).toThrow(/shares memory with out/);
    expect(backward({ dk: kv })).toThrow(/dk shares memory with k/);
    const shared = new Float32Array(h * n * d);
    expect(backward({ dk: shared, dv: shared })).toThrow(/dk shares memory with dv/);
    expect(backward({ dq: grads[1].subarray(0, h * m * d), dk: grads[1] })).toThrow(/dq shares memory with dk/);
  });
});
