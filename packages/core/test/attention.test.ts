import {
  BackendError,
  DisposedTensorError,
  DTypeError,
  IndexError,
  ShapeError,
  type Tensor,
  ValueError,
  attentionBackward,
  attentionWithStats,
  cachedAttention,
  cast,
  dispose,
  indexCopy,
  listBackends,
  logSoftmax,
  matmul,
  memory,
  mul,
  packedAttentionBackward,
  packedAttentionWithStats,
  randn,
  registerBackend,
  removeBackend,
  scaledDotProductAttention,
  slice,
  softmax,
  squeeze,
  sub,
  tensor,
  tidy,
  zeros,
} from "@blocksparse/core";
import { afterEach, describe, expect, it } from "vitest";
import { ToyBackend } from "./toy_backend";

afterEach(() => {
  for (const name of listBackends()) if (name !== "js") removeBackend(name);
});

/** softmax(scale q k^T, causal) v written out with the unfused ops. */
function unfused(q: Tensor, k: Tensor, v: Tensor, causal: boolean, scale: number): Tensor {
  return tidy(() => matmul(softmax(matmul(mul(q, scale), k, { transposeB: true }), -1, { causal }), v));
}

function expectClose(got: Tensor, want: Tensor, tolerance: number): void {
  expect([...got.shape]).toEqual([...want.shape]);
  const a = got.dataSync();
  const b = want.dataSync();
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  expect(worst).toBeLessThan(tolerance);
}

describe("scaledDotProductAttention rejects bad arguments with typed errors naming the problem", () => {
  const op = "scaledDotProductAttention";
  const cases: { name: string; run: () => unknown; type: new (...args: never[]) => Error; message: string }[] = [
    { name: "q not a tensor", run: () => scaledDotProductAttention([1, 2] as unknown as Tensor, zeros([2, 4]), zeros([2, 4])), type: ValueError, message: `${op}: q must be a Tensor, got an array` },
    { name: "v not a tensor", run: () => scaledDotProductAttention(zeros([2, 4]), zeros([2, 4]), null as unknown as Tensor), type: ValueError, message: `${op}: v must be a Tensor, got null` },
    { name: "int32 q", run: () => scaledDotProductAttention(zeros([2, 4], "int32"), zeros([2, 4], "int32"), zeros([2, 4], "int32")), type: DTypeError, message: `${op}: q has dtype int32, expected a float dtype` },
    { name: "k of another dtype", run: () => scaledDotProductAttention(zeros([2, 4]), zeros([2, 4], "float16"), zeros([2, 4])), type: DTypeError, message: `${op}: k has dtype float16 but q has float32; cast one first` },
    { name: "v of another dtype", run: () => scaledDotProductAttention(zeros([2, 4], "bfloat16"), zeros([2, 4], "bfloat16"), zeros([2, 4])), type: DTypeError, message: `${op}: v has dtype float32 but q has bfloat16` },
    { name: "q of rank 1", run: () => scaledDotProductAttention(zeros([4]), zeros([2, 4]), zeros([2, 4])), type: ShapeError, message: `${op}: q must have rank >= 2, got shape [4]` },
    { name: "k of rank 1", run: () => scaledDotProductAttention(zeros([2, 4]), zeros([4]), zeros([4])), type: ShapeError, message: `${op}: k must have rank >= 2, got shape [4]` },
    { name: "v not shaped like k", run: () => scaledDotProductAttention(zeros([2, 4]), zeros([3, 4]), zeros([3, 5])), type: ShapeError, message: `${op}: v has shape [3, 5], expected [3, 4]` },
    {
      name: "batch dims that differ",
      run: () => scaledDotProductAttention(zeros([2, 3, 4]), zeros([3, 5, 4]), zeros([3, 5, 4])),
      type: ShapeError,
      message: `${op}: q [2, 3, 4] and k [3, 5, 4] must have identical batch dims (all but the last two; no broadcasting), got [2] and [3]`,
    },
    {
      name: "batch dims that would only broadcast",
      run: () => scaledDotProductAttention(zeros([3, 4]), zeros([1, 5, 4]), zeros([1, 5, 4])),
      type: ShapeError,
      message: `${op}: q [3, 4] and k [1, 5, 4] must have identical batch dims`,
    },
    {
      name: "head dims that differ",
      run: () => scaledDotProductAttention(zeros([3, 8]), zeros([5, 4]), zeros([5, 4])),
      type: ShapeError,
      message: `${op}: q [3, 8] and k [5, 4] must have the same last dim (the head dim D), got 8 and 4`,
    },
    { name: "no keys", run: () => scaledDotProductAttention(zeros([3, 4]), zeros([0, 4]), zeros([0, 4])), type: ShapeError, message: `${op}: k [0, 4] has no keys: attention needs N >= 1` },
    { name: "head dim 0", run: () => scaledDotProductAttention(zeros([3, 0]), zeros([2, 0]), zeros([2, 0]), { scale: 1 }), type: ShapeError, message: `${op}: q [3, 0] has head dim 0: attention needs D >= 1` },
    { name: "causal not a boolean", run: () => scaledDotProductAttention(zeros([2, 4]), zeros([2, 4]), zeros([2, 4]), { causal: 1 as unknown as boolean }), type: ValueError, message: `${op}: causal must be a boolean, got 1` },
    {
      name: "causal with more queries than keys",
      run: () => scaledDotProductAttention(zeros([2, 5, 4]), zeros([2, 3, 4]), zeros([2, 3, 4]), { causal: true }),
      type: ShapeError,
      message: `${op}: causal masking needs no more queries than keys (rows than columns of the scores), got q [2, 5, 4] and k [2, 3, 4] (5 > 3)`,
    },
    { name: "scale NaN", run: () => scaledDotProductAttention(zeros([2, 4]), zeros([2, 4]), zeros([2, 4]), { scale: Number.NaN }), type: ValueError, message: `${op}: scale must be a finite number, got NaN` },
    { name: "scale Infinity", run: () => scaledDotProductAttention(zeros([2, 4]), zeros([2, 4]), zeros([2, 4]), { scale: Number.POSITIVE_INFINITY }), type: ValueError, message: `${op}: scale must be a finite number, got Infinity` },
    { name: "scale a string", run: () => scaledDotProductAttention(zeros([2, 4]), zeros([2, 4]), zeros([2, 4]), { scale: "0.5" as unknown as number }), type: ValueError, message: `${op}: scale must be a finite number, got "0.5"` },
    {
      name: "disposed k",
      run: () => {
        const k = zeros([2, 4]);
        k.dispose();
        return scaledDotProductAttention(zeros([2, 4]), k, zeros([2, 4]));
      },
      type: DisposedTensorError,
      message: `${op}: k`,
    },
    {
      name: "attentionBackward: dout not shaped like q",
      run: () => attentionBackward(zeros([3, 5]), zeros([3, 4]), zeros([2, 4]), zeros([2, 4]), zeros([3, 4]), zeros([3])),
      type: ShapeError,
      message: "attentionBackward: dout has shape [3, 5], expected [3, 4]",
    },
    {
      name: "attentionBackward: out of another dtype",
      run: () => attentionBackward(zeros([3, 4]), zeros([3, 4]), zeros([2, 4]), zeros([2, 4]), zeros([3, 4], "float16"), zeros([3])),
      type: DTypeError,
      message: "attentionBackward: out has dtype float16 but q has float32",
    },
    {
      name: "attentionBackward: lse not float32",
      run: () => attentionBackward(zeros([3, 4], "bfloat16"), zeros([3, 4], "bfloat16"), zeros([2, 4], "bfloat16"), zeros([2, 4], "bfloat16"), zeros([3, 4], "bfloat16"), zeros([3], "bfloat16")),
      type: DTypeError,
      message: "attentionBackward: lse has dtype bfloat16, expected float32",
    },
    {
      name: "attentionBackward: lse not shaped like q's rows",
      run: () => attentionBackward(zeros([2, 3, 4]), zeros([2, 3, 4]), zeros([2, 2, 4]), zeros([2, 2, 4]), zeros([2, 3, 4]), zeros([3])),
      type: ShapeError,
      message: "attentionBackward: lse has shape [3], expected [2, 3]",
    },
    {
      name: "attentionBackward: causal with more queries than keys",
      run: () => attentionBackward(zeros([3, 4]), zeros([3, 4]), zeros([2, 4]), zeros([2, 4]), zeros([3, 4]), zeros([3]), { causal: true }),
      type: ShapeError,
      message: "attentionBackward: causal masking needs no more queries than keys",
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const before = memory().numTensors;
      let caught: unknown;
      try {
        tidy(() => {
          c.run();
        });
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(c.type);
      expect((caught as Error).message).toContain(c.message);
      expect(memory().numTensors).toBe(before);
    });
  }

  it("q, k and v on different backends", () => {
    registerBackend("toy", () => new ToyBackend("toy"));
    const q = zeros([2, 4]);
    const k = zeros([2, 4]);
    const onToy = k.to("toy");
    try {
      expect(() => scaledDotProductAttention(q, k, onToy)).toThrow(BackendError);
      expect(() => scaledDotProductAttention(q, k, onToy)).toThrow(`${op}: v is on backend 'toy' but q is on 'js'; move one with tensor.to(name)`);
    } finally {
      dispose([q, k, onToy]);
    }
  });
});

describe("scaledDotProductAttention on js", () => {
  const shapes: { batch: number[]; m: number; n: number; d: number; causal: boolean; scale?: number }[] = [
    { batch: [], m: 5, n: 5, d: 4, causal: true },
    { batch: [2, 3], m: 4, n: 9, d: 8, causal: true },
    { batch: [2], m: 7, n: 3, d: 6, causal: false },
    { batch: [1], m: 1, n: 1, d: 3, causal: false },
    { batch: [3], m: 6, n: 6, d: 16, causal: false, scale: 0.9 },
    { batch: [2], m: 4, n: 6, d: 8, causal: true, scale: 0 },
    { batch: [2], m: 5, n: 5, d: 8, causal: false, scale: -0.7 },
  ];
  for (const [index, s] of shapes.entries()) {
    const label = `q [${[...s.batch, s.m, s.d]}], k and v [${[...s.batch, s.n, s.d]}]${s.causal ? ", causal" : ""}${s.scale === undefined ? "" : `, scale ${s.scale}`}`;
    it(`equals matmul, softmax and matmul written out: ${label}`, () => {
      tidy(() => {
        const q = randn([...s.batch, s.m, s.d], { seed: 10 * index + 1 });
        const k = randn([...s.batch, s.n, s.d], { seed: 10 * index + 2 });
        const v = randn([...s.batch, s.n, s.d], { seed: 10 * index + 3 });
        const scale = s.scale ?? 1 / Math.sqrt(s.d);
        expectClose(scaledDotProductAttention(q, k, v, { causal: s.causal, scale: s.scale }), unfused(q, k, v, s.causal, scale), 1e-5);
      });
    });
  }

  it("lse is each row's log-sum-exp of its kept scores, float32 of shape [...batch, M]", () => {
    tidy(() => {
      const q = cast(randn([2, 4, 8], { seed: 41 }), "bfloat16");
      const k = cast(randn([2, 6, 8], { seed: 42 }), "bfloat16");
      const v = cast(randn([2, 6, 8], { seed: 43 }), "bfloat16");
      const { out, lse } = attentionWithStats(q, k, v, { causal: true });
      expect(out.dtype).toBe("bfloat16");
      expect(lse.dtype).toBe("float32");
      expect([...lse.shape]).toEqual([2, 4]);
      // score - logSoftmax(score) = lse for any kept key; key 0 is kept by every row.
      const scores = matmul(mul(cast(q, "float32"), 1 / Math.sqrt(8)), cast(k, "float32"), { transposeB: true });
      const first = (t: Tensor) => squeeze(slice(t, [0, 0, 0], [2, 4, 1]), -1);
      expectClose(lse, sub(first(scores), first(logSoftmax(scores, -1, { causal: true }))), 1e-5);
    });
  });

  it("scale 0 attends uniformly over each row's kept keys, as torch's scaled_dot_product_attention(scale=0.0), in every attention op", () => {
    tidy(() => {
      // Rows of a causal [3, 3]: keys {0}, {0, 1}, {0, 1, 2}; v's rows 1, 2 and 6.
      const q = randn([3, 2], { seed: 51 });
      const k = randn([3, 2], { seed: 52 });
      const v = tensor([[1, 10], [2, 20], [6, 60]]);
      const { out, lse } = attentionWithStats(q, k, v, { causal: true, scale: 0 });
      expectClose(out, tensor([[1, 10], [1.5, 15], [3, 30]]), 1e-6);
      expectClose(lse, tensor([0, Math.log(2), Math.log(3)]), 1e-6);
      // The scores do not depend on q or k: their gradients are 0.
      const { dq, dk, dv } = attentionBackward(tensor([[1, 0], [0, 1], [1, 1]]), q, k, v, out, lse, { causal: true, scale: 0 });
      expect(dq.toArray().every((x) => x === 0)).toBe(true);
      expect(dk.toArray().every((x) => x === 0)).toBe(true);
      expectClose(dv, tensor([[1 + 1 / 3, 0.5 + 1 / 3], [1 / 3, 0.5 + 1 / 3], [1 / 3, 1 / 3]]), 1e-6);
      // qkv [T 3, 3, H 1, D 2] holding the same q, k and v, position by position.
      const [qs, ks, vs] = [q, k, v].map((t) => t.toArray());
      const packed = [0, 1, 2].flatMap((i) => [qs, ks, vs].flatMap((rows) => rows.slice(2 * i, 2 * i + 2)));
      expectClose(packedAttentionWithStats(tensor(packed, [3, 3, 1, 2]), { causal: true, scale: 0 }).out, tensor([1, 10, 1.5, 15, 3, 30], [3, 1, 2]), 1e-6);
      // positions [0, 1, 2]: the same rows as causal masking.
      expectClose(cachedAttention(q, k, v, tensor([0, 1, 2], [3], "int32"), { scale: 0 }), tensor([[1, 10], [1.5, 15], [3, 30]]), 1e-6);
    });
  });

  it("no queries (M = 0) gives empty outputs", () => {
    tidy(() => {
      const { out, lse } = attentionWithStats(zeros([2, 0, 4]), randn([2, 3, 4], { seed: 5 }), randn([2, 3, 4], { seed: 6 }), { causal: true });
      expect([...out.shape]).toEqual([2, 0, 4]);
      expect([...lse.shape]).toEqual([2, 0]);
    });
  });

  it("the backward's P is not skewed by the float32 rounding of lse at large scores (finite up to 1e38)", () => {
    // Two equal keys: P = [0.5, 0.5] at any magnitude s^2 of the scores, so dv = [0.5, 0.5], dq = 0, dk = [-s/2, s/2]
    // (dS = P (v - out) = [-0.5, 0.5] with v = [1, 3], out = 2). exp(s^2 - lse) with lse rounded to float32 gave dv off
    // by 0.2% at s = 300 and 26% at 1e4, and Infinity (dq NaN) at 1e9 and 1e19.
    for (const s of [300, 1e4, 1e9, 1e19]) {
      tidy(() => {
        const q = tensor([[s]]);
        const k = tensor([[s], [s]]);
        const v = tensor([[1], [3]]);
        const { out, lse } = attentionWithStats(q, k, v, { scale: 1 });
        const { dq, dk, dv } = attentionBackward(tensor([[1]]), q, k, v, out, lse, { scale: 1 });
        const stored = q.toArray()[0];
        expect(dv.toArray(), `s = ${s}: dv`).toEqual([0.5, 0.5]);
        expect(dq.toArray(), `s = ${s}: dq`).toEqual([0]);
        expect(dk.toArray(), `s = ${s}: dk`).toEqual([Math.fround(-stored / 2), Math.fround(stored / 2)]);
      });
    }
  });

  it("packed attention's backward is not skewed by the float32 rounding of lse either", () => {
    for (const s of [300, 1e19]) {
      tidy(() => {
        // qkv [T 2, 3, H 1, D 1]: both positions hold q = k = s, v = 1 and 3, so each row's P is [0.5, 0.5].
        const qkv = tensor([s, s, 1, s, s, 3], [2, 3, 1, 1]);
        const { out, lse } = packedAttentionWithStats(qkv, { scale: 1 });
        const dqkv = packedAttentionBackward(tensor([1, 0], [2, 1, 1]), qkv, out, lse, { scale: 1 }).toArray();
        // dv of both keys from row 0 only (dout of row 1 is 0): 0.5 each.
        expect([dqkv[2], dqkv[5]], `s = ${s}: dv`).toEqual([0.5, 0.5]);
        expect(dqkv.every(Number.isFinite), `s = ${s}: finite`).toBe(true);
      });
    }
  });

  it("returns only out: lse is freed, nothing else stays alive", () => {
    const q = randn([2, 3, 4], { seed: 7 });
    const before = memory();
    const out = scaledDotProductAttention(q, q, q, { causal: true });
    expect(memory().numTensors - before.numTensors).toBe(1);
    expect(memory().numBuffers - before.numBuffers).toBe(1);
    dispose([q, out]);
  });
});

describe("cachedAttention with newKeys and newValues on js", () => {
  it("writes them at the positions and attends as indexCopy then cachedAttention do, nothing else left alive", () => {
    tidy(() => {
      const [q, fresh, freshValues] = [randn([2, 1, 4], { seed: 1 }), randn([2, 1, 4], { seed: 2 }), randn([2, 1, 4], { seed: 3 })];
      const positions = tensor([2], [1], "int32");
      const [k, v] = [randn([2, 5, 4], { seed: 4 }), randn([2, 5, 4], { seed: 5 })];
      const [k2, v2] = [randn([2, 5, 4], { seed: 4 }), randn([2, 5, 4], { seed: 5 })]; // the same caches, apart
      const before = memory();
      const out = cachedAttention(q, k, v, positions, { newKeys: fresh, newValues: freshValues });
      expect(memory().numBuffers - before.numBuffers).toBe(1); // out alone: k and v written in place
      indexCopy(k2, positions, fresh, 1);
      indexCopy(v2, positions, freshValues, 1);
      expect(Array.from(k.dataSync())).toEqual(Array.from(k2.dataSync()));
      expect(Array.from(v.dataSync())).toEqual(Array.from(v2.dataSync()));
      expectClose(out, cachedAttention(q, k2, v2, positions), 1e-6);
    });
  });

  it("rejects a position outside the cache with an IndexError naming it, before writing", () => {
    tidy(() => {
      const k = zeros([3, 4]);
      const write = () => cachedAttention(zeros([1, 4]), k, zeros([3, 4]), tensor([3], [1], "int32"), { newKeys: randn([1, 4], { seed: 1 }), newValues: zeros([1, 4]) });
      expect(write).toThrow(IndexError);
      expect(write).toThrow("cachedAttention: position 3 of newKeys row 0 is out of range [0, 3)");
      expect(Array.from(k.dataSync()).every((x) => x === 0)).toBe(true);
    });
  });
});
