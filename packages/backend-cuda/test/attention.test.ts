import { type DType, IndexError, attentionBackward, cachedAttention, runKernel, scaledDotProductAttention, split, tensor, tidy } from "@blocksparse/core";
import { reference } from "@blocksparse/core/testing";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { CudaBackend } from "../src/index";
import { cudaMissing, expectClose, random, randomTensor, reportCudaAvailability, useCuda } from "./cuda";

reportCudaAvailability("attention.test.ts");

interface Case {
  dtype: DType;
  batch: number[];
  m: number;
  n: number;
  d: number;
  causal: boolean;
  /** Input values in [-spread, spread); scale 1 / sqrt(d) unless given. */
  spread?: number;
  scale?: number;
}

// The flash route (float16 and bfloat16, head dims that are multiples of 8 up to 128: 40 runs in a 64-wide tile) and
// the products route (float32, other head dims), at tile edges: lengths that are not multiples of the 64-row tiles, one query, fewer queries than keys
// under causal masking (the last queries of the sequence), batch dims, and large logits (the online softmax's
// rescaling).
const CASES: Case[] = [
  { dtype: "bfloat16", batch: [2, 3], m: 130, n: 130, d: 64, causal: true },
  { dtype: "float16", batch: [2, 3], m: 130, n: 130, d: 64, causal: true },
  { dtype: "bfloat16", batch: [3], m: 65, n: 200, d: 128, causal: true },
  { dtype: "float16", batch: [3], m: 200, n: 77, d: 128, causal: false },
  { dtype: "bfloat16", batch: [], m: 1, n: 1, d: 32, causal: false },
  { dtype: "float16", batch: [2], m: 1, n: 190, d: 32, causal: true },
  { dtype: "float16", batch: [2], m: 64, n: 64, d: 64, causal: false, spread: 3, scale: 1 },
  { dtype: "bfloat16", batch: [1], m: 300, n: 300, d: 64, causal: true, spread: 3, scale: 1 },
  { dtype: "float32", batch: [2, 2], m: 70, n: 70, d: 64, causal: true },
  { dtype: "float32", batch: [2], m: 33, n: 90, d: 40, causal: true },
  { dtype: "bfloat16", batch: [2], m: 70, n: 70, d: 40, causal: false },
  { dtype: "float16", batch: [2], m: 70, n: 129, d: 88, causal: true },
  { dtype: "float16", batch: [3], m: 50, n: 70, d: 20, causal: true },
  { dtype: "bfloat16", batch: [], m: 40, n: 40, d: 136, causal: false },
];

// Each case through the kernels the device picks (wgmma on Hopper) and through the mma.sync kernels, which Ampere runs
// (BLOCKSPARSE_CUDA_ATTENTION=mma, read by the addon at each call).
describe.skipIf(cudaMissing).each(["auto", "mma"])("cuda attention (%s kernels)", (kernels) => {
  let backend: CudaBackend;
  beforeAll(() => {
    backend = useCuda();
    if (kernels === "mma") process.env.BLOCKSPARSE_CUDA_ATTENTION = "mma";
  });
  afterAll(() => {
    delete process.env.BLOCKSPARSE_CUDA_ATTENTION;
    backend.poisonAllocations = false;
  });

  for (const c of CASES) {
    const name = `${c.dtype} [${c.batch}] M=${c.m} N=${c.n} D=${c.d}${c.causal ? " causal" : ""}${c.spread ? " large logits" : ""}`;
    test(`forward and backward against float64: ${name}`, () => {
      const next = random(c.m * 7919 + c.n * 31 + c.d);
      const spread = c.spread ?? 1;
      const scale = c.scale ?? 1 / Math.sqrt(c.d);
      tidy(() => {
        const q = randomTensor(next, [...c.batch, c.m, c.d], c.dtype, spread);
        const k = randomTensor(next, [...c.batch, c.n, c.d], c.dtype, spread);
        const v = randomTensor(next, [...c.batch, c.n, c.d], c.dtype);
        const dout = randomTensor(next, [...c.batch, c.m, c.d], c.dtype);
        // core's float64 reference from the values the tensors hold; the gradients from its own out and lse.
        const held = (t: { t: { shape: readonly number[] }; values: Float64Array }) => ({ shape: [...t.t.shape], data: t.values });
        const forward = reference.attention(held(q), held(k), held(v), c.causal, scale);
        const backward = reference.attentionBackward(held(dout), held(q), held(k), held(v), forward.out, forward.lse, c.causal, scale);
        const ref = { out: forward.out.data, lse: forward.lse.data, dq: backward.dq.data, dk: backward.dk.data, dv: backward.dv.data };
        const out = scaledDotProductAttention(q.t, k.t, v.t, { causal: c.causal, scale });
        expect(out.shape).toEqual([...c.batch, c.m, c.d]);
        expectClose(Float64Array.from(out.dataSync()), ref.out, c.dtype, `${name} out`);
        // The kernel's own outputs, as autograd saves them: out and the float32 lse.
        const [kernelOut, lse] = runKernel("Attention", { q: q.t, k: k.t, v: v.t }, { causal: c.causal, scale });
        expect(lse.dtype).toBe("float32");
        expectClose(Float64Array.from(lse.dataSync()), ref.lse, c.dtype, `${name} lse`);
        const grads = attentionBackward(dout.t, q.t, k.t, v.t, kernelOut, lse, { causal: c.causal, scale });
        expectClose(Float64Array.from(grads.dq.dataSync()), ref.dq, c.dtype, `${name} dq`);
        expectClose(Float64Array.from(grads.dk.dataSync()), ref.dk, c.dtype, `${name} dk`);
        expectClose(Float64Array.from(grads.dv.dataSync()), ref.dv, c.dtype, `${name} dv`);
      });
    });
  }

  // packedAttention: the same kernels reading q, k and v from qkv [B, T, 3, H, D] and writing out [B, T, H, D] and
  // dqkv in place. Head dims on the flash route (64, 128, 40 in a wider tile) and off it (20: the packed rows are not
  // 16-byte aligned, so the math route's contiguous copies), float32, lengths off the tiles, large logits.
  const packedCases: { dtype: DType; batch: number; t: number; h: number; d: number; causal: boolean; spread?: number }[] = [
    { dtype: "bfloat16", batch: 2, t: 130, h: 3, d: 64, causal: true },
    { dtype: "float16", batch: 1, t: 200, h: 2, d: 128, causal: true, spread: 3 },
    { dtype: "bfloat16", batch: 3, t: 70, h: 4, d: 40, causal: false },
    { dtype: "float16", batch: 2, t: 65, h: 3, d: 20, causal: true },
    { dtype: "float32", batch: 2, t: 90, h: 2, d: 64, causal: true },
    { dtype: "bfloat16", batch: 4, t: 1, h: 2, d: 32, causal: true },
  ];
  for (const c of packedCases) {
    const name = `packed ${c.dtype} qkv [${c.batch}, ${c.t}, 3, ${c.h}, ${c.d}]${c.causal ? " causal" : ""}${c.spread ? " large logits" : ""}`;
    test(`forward and backward against float64: ${name}`, () => {
      const next = random(c.t * 7907 + c.h * 31 + c.d);
      const scale = 1 / Math.sqrt(c.d);
      tidy(() => {
        const qkv = randomTensor(next, [c.batch, c.t, 3, c.h, c.d], c.dtype, c.spread ?? 1);
        const dout = randomTensor(next, [c.batch, c.t, c.h, c.d], c.dtype);
        const packed = { shape: [...qkv.t.shape], data: qkv.values };
        const [q, k, v] = [0, 1, 2].map((part) => reference.unpackHeads(packed, part));
        const forward = reference.attention(q, k, v, c.causal, scale);
        const heldDout = reference.swapHeads({ shape: [...dout.t.shape], data: dout.values });
        const backward = reference.attentionBackward(heldDout, q, k, v, forward.out, forward.lse, c.causal, scale);
        const [out, lse] = runKernel("PackedAttention", { qkv: qkv.t }, { causal: c.causal, scale });
        expect(out.shape).toEqual([c.batch, c.t, c.h, c.d]);
        expect(lse.shape).toEqual([c.batch, c.h, c.t]);
        expectClose(Float64Array.from(out.dataSync()), reference.swapHeads(forward.out).data, c.dtype, `${name} out`);
        expectClose(Float64Array.from(lse.dataSync()), forward.lse.data, c.dtype, `${name} lse`);
        const dqkv = runKernel("PackedAttentionBackward", { dout: dout.t, qkv: qkv.t, out, lse }, { causal: c.causal, scale });
        const parts = split(dqkv, 3, 2);
        for (const [index, grad] of [backward.dq, backward.dk, backward.dv].entries()) {
          expectClose(Float64Array.from(parts[index].dataSync()), reference.packHeads([grad]).data, c.dtype, `${name} dqkv part ${index}`);
        }
      });
    });
  }
});


// cachedAttention's kernel (one block per query row) past what the conformance suite's small cases reach: several
// 1024-key chunks of the online softmax, head dims of one thread set (D >= 256) and of sets that do not divide the
// block (D = 48, 100), positions past N and below 0 (zeros), outputs poisoned.
describe.skipIf(cudaMissing)("cuda cachedAttention", () => {
  let backend: CudaBackend;
  beforeAll(() => {
    backend = useCuda();
  });
  afterAll(() => {
    backend.poisonAllocations = false;
  });
  const cases: { dtype: DType; batch: number[]; n: number; d: number; positions: number[]; spread?: number }[] = [
    { dtype: "bfloat16", batch: [2, 3], n: 2500, d: 64, positions: [2499, 1500] },
    { dtype: "float16", batch: [2], n: 3100, d: 48, positions: [3099, 2047, 5000], spread: 3 },
    { dtype: "float32", batch: [3], n: 700, d: 320, positions: [699, -1] },
    { dtype: "bfloat16", batch: [1], n: 1025, d: 1024, positions: [1024] },
    { dtype: "float16", batch: [4], n: 40, d: 100, positions: [0, 17, 39, 38] },
  ];
  for (const c of cases) {
    const m = c.positions.length;
    const name = `${c.dtype} [${c.batch}] M=${m} N=${c.n} D=${c.d} positions [${c.positions}]`;
    test(`against float64: ${name}`, () => {
      const next = random(c.n * 31 + c.d);
      const spread = c.spread ?? 1;
      const scale = 1 / Math.sqrt(c.d);
      tidy(() => {
        const q = randomTensor(next, [...c.batch, m, c.d], c.dtype, spread);
        const k = randomTensor(next, [...c.batch, c.n, c.d], c.dtype, spread);
        const v = randomTensor(next, [...c.batch, c.n, c.d], c.dtype);
        const held = (t: { t: { shape: readonly number[] }; values: Float64Array }) => ({ shape: [...t.t.shape], data: t.values });
        const want = reference.cachedAttention(held(q), held(k), held(v), c.positions, scale);
        const out = cachedAttention(q.t, k.t, v.t, tensor(c.positions, [m], "int32"), { scale });
        expect(out.shape).toEqual([...c.batch, m, c.d]);
        expectClose(Float64Array.from(out.dataSync()), want.out.data, c.dtype, `${name} out`);
      });
    });
  }
  // newKeys and newValues: written in the attention kernel for one query row (the new key in the third 1024-key chunk,
  // the wide path's D = 320, the first and the last position), by copies before it for more rows.
  const appends: { dtype: DType; batch: number[]; n: number; d: number; positions: number[] }[] = [
    { dtype: "bfloat16", batch: [2, 3], n: 2500, d: 64, positions: [2100] },
    { dtype: "float32", batch: [3], n: 700, d: 320, positions: [0] },
    { dtype: "float16", batch: [4], n: 40, d: 100, positions: [39] },
    { dtype: "bfloat16", batch: [2], n: 50, d: 48, positions: [7, 8, 9] },
  ];
  for (const c of appends) {
    const m = c.positions.length;
    const name = `${c.dtype} [${c.batch}] M=${m} N=${c.n} D=${c.d} positions [${c.positions}]`;
    test(`with newKeys and newValues, against float64 and the caches written: ${name}`, () => {
      const next = random(c.n * 17 + c.d);
      const scale = 1 / Math.sqrt(c.d);
      tidy(() => {
        const q = randomTensor(next, [...c.batch, m, c.d], c.dtype);
        const k = randomTensor(next, [...c.batch, c.n, c.d], c.dtype);
        const v = randomTensor(next, [...c.batch, c.n, c.d], c.dtype);
        const newKeys = randomTensor(next, [...c.batch, m, c.d], c.dtype);
        const newValues = randomTensor(next, [...c.batch, m, c.d], c.dtype);
        const written = (cache: Float64Array, rows: Float64Array): Float64Array => {
          const out = Float64Array.from(cache);
          const heads = cache.length / (c.n * c.d);
          for (let h = 0; h < heads; h++)
            for (let i = 0; i < m; i++) out.set(rows.subarray((h * m + i) * c.d, (h * m + i + 1) * c.d), (h * c.n + c.positions[i]) * c.d);
          return out;
        };
        const keys = written(k.values, newKeys.values);
        const values = written(v.values, newValues.values);
        const shape = [...c.batch, c.n, c.d];
        const want = reference.cachedAttention({ shape: [...c.batch, m, c.d], data: q.values }, { shape, data: keys }, { shape, data: values }, c.positions, scale);
        const out = cachedAttention(q.t, k.t, v.t, tensor(c.positions, [m], "int32"), { scale, newKeys: newKeys.t, newValues: newValues.t });
        expectClose(Float64Array.from(out.dataSync()), want.out.data, c.dtype, `${name} out`);
        expect(Array.from(k.t.dataSync())).toEqual(Array.from(keys));
        expect(Array.from(v.t.dataSync())).toEqual(Array.from(values));
      });
    });
  }

  // The positions live on the device, so the kernel finds a bad one: it writes nothing for it, and the next read
  // throws the IndexError that js throws before it runs. One query row (the write in the attention kernel) and two
  // (the copies before it).
  for (const positions of [[40], [3, -1]]) {
    test(`an appended position out of range is reported at the next read and leaves the caches unchanged: [${positions}]`, () => {
      const next = random(101 + positions.length);
      tidy(() => {
        const m = positions.length;
        const q = randomTensor(next, [2, m, 16], "bfloat16");
        const k = randomTensor(next, [2, 40, 16], "bfloat16");
        const v = randomTensor(next, [2, 40, 16], "bfloat16");
        const keys = Array.from(k.t.dataSync());
        const rows = randomTensor(next, [2, m, 16], "bfloat16");
        const out = cachedAttention(q.t, k.t, v.t, tensor(positions, [m], "int32"), { newKeys: rows.t, newValues: rows.t });
        const bad = positions.findIndex((p) => p < 0 || p >= 40);
        let message = "";
        try {
          out.dataSync();
        } catch (error) {
          expect(error).toBeInstanceOf(IndexError);
          message = (error as Error).message;
        }
        expect(message).toContain(`cuda: cachedAttention: index ${positions[bad]} at position ${bad} is out of range [0, 40)`);
        // The rows in range were written; the bad one nowhere.
        const want = keys.slice();
        for (let h = 0; h < 2; h++)
          positions.forEach((p, i) => {
            if (p >= 0 && p < 40) for (let d = 0; d < 16; d++) want[(h * 40 + p) * 16 + d] = rows.values[(h * m + i) * 16 + d];
          });
        expect(Array.from(k.t.dataSync())).toEqual(want);
        backend.synchronize();
      });
    });
  }

  test("names a head dim past the kernel's 1024", () => {
    tidy(() => {
      const q = tensor(new Array(1025).fill(0), [1, 1025], "bfloat16");
      expect(() => cachedAttention(q, q, q, tensor([0], [1], "int32")).dataSync()).toThrow(/cachedAttention: head dims up to 1024 on cuda, got D=1025/);
    });
  });
});
