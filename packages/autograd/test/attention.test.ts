import {
  type LeakReport,
  type Tensor,
  add,
  addKernelObserver,
  attentionWithStats,
  disableLeakGuard,
  dispose,
  enableLeakGuard,
  matmul,
  memory,
  mul,
  packedAttention,
  permute,
  reshape,
  setKernelLeakCheck,
  scaledDotProductAttention,
  softmax,
  split,
  sum,
  tidy,
} from "@blocksparse/core";
import { AutogradError, backward, zeroGrad } from "@blocksparse/autograd";
import { afterEach, describe, expect, it } from "vitest";
import { poisonAllocations, randomTensor } from "./helpers";

poisonAllocations();

afterEach(() => disableLeakGuard());

interface Case {
  batch: number[];
  m: number;
  n: number;
  d: number;
  causal: boolean;
  scale?: number;
}

const CASES: Case[] = [
  { batch: [], m: 6, n: 6, d: 4, causal: true },
  { batch: [2, 3], m: 5, n: 9, d: 8, causal: true },
  { batch: [2], m: 7, n: 4, d: 6, causal: false },
  { batch: [1], m: 1, n: 1, d: 3, causal: false },
  { batch: [3], m: 5, n: 5, d: 16, causal: false, scale: 1.3 },
];

const label = (c: Case) =>
  `q [${[...c.batch, c.m, c.d]}], k and v [${[...c.batch, c.n, c.d]}]${c.causal ? ", causal" : ""}${c.scale === undefined ? "" : `, scale ${c.scale}`}`;

/** q, k and v tracking gradients, and the output's gradient. */
function inputs(c: Case, seed: number): { q: Tensor; k: Tensor; v: Tensor; dout: Tensor } {
  const q = randomTensor([...c.batch, c.m, c.d], seed);
  const k = randomTensor([...c.batch, c.n, c.d], seed + 1);
  const v = randomTensor([...c.batch, c.n, c.d], seed + 2);
  for (const t of [q, k, v]) t.requiresGrad = true;
  return { q, k, v, dout: randomTensor([...c.batch, c.m, c.d], seed + 3) };
}

function maxDifference(a: Tensor, b: Tensor): number {
  expect([...a.shape]).toEqual([...b.shape]);
  const x = a.dataSync();
  const y = b.dataSync();
  let worst = 0;
  for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]));
  return worst;
}

describe("scaledDotProductAttention's gradient (one AttentionBackward)", () => {
  for (const [index, c] of CASES.entries()) {
    it(`equals the gradients of matmul, softmax and matmul written out: ${label(c)}`, () => {
      const { q, k, v, dout } = inputs(c, 100 + 10 * index);
      const scale = c.scale ?? 1 / Math.sqrt(c.d);
      const grads = (fused: boolean): Tensor[] => {
        tidy(() => {
          const out = fused
            ? scaledDotProductAttention(q, k, v, { causal: c.causal, scale: c.scale })
            : matmul(softmax(matmul(mul(q, scale), k, { transposeB: true }), -1, { causal: c.causal }), v);
          backward(out, dout);
        });
        const taken = [q, k, v].map((t) => t.grad as Tensor);
        for (const t of [q, k, v]) t.grad = null;
        return taken;
      };
      const fused = grads(true);
      const composed = grads(false);
      for (const [i, name] of ["q", "k", "v"].entries()) {
        expect(maxDifference(fused[i], composed[i]), `d${name}`).toBeLessThan(1e-5);
      }
      dispose([q, k, v, dout, fused, composed]);
    });
  }

  it("runs one Attention forward and one AttentionBackward, no [M, N] product or softmax", () => {
    const { q, k, v, dout } = inputs(CASES[1], 200);
    const kernels: string[] = [];
    const stop = addKernelObserver((record) => kernels.push(record.kernelName));
    tidy(() => backward(scaledDotProductAttention(q, k, v, { causal: true }), dout));
    stop();
    const count = (name: string) => kernels.filter((kernel) => kernel === name).length;
    expect([count("Attention"), count("AttentionBackward")]).toEqual([1, 1]);
    expect([count("Matmul"), count("Softmax"), count("SoftmaxBackward")]).toEqual([0, 0, 0]);
    zeroGrad([q, k, v]);
    dispose([q, k, v, dout]);
  });

  it("gives only the inputs that track gradients theirs", () => {
    const { q, k, v, dout } = inputs(CASES[0], 210);
    k.requiresGrad = false;
    tidy(() => backward(scaledDotProductAttention(q, k, v, { causal: true }), dout));
    expect([q.grad === null, k.grad === null, v.grad === null]).toEqual([false, true, false]);
    zeroGrad([q, v]);
    dispose([q, k, v, dout]);
  });

  it("refuses a gradient that reaches lse (attentionWithStats), which has none", () => {
    const { q, k, v, dout } = inputs(CASES[0], 220);
    const before = memory().numTensors;
    expect(() =>
      tidy(() => {
        const { out, lse } = attentionWithStats(q, k, v);
        backward(add(sum(mul(out, dout)), sum(lse)));
      }),
    ).toThrow(AutogradError);
    expect(() =>
      tidy(() => {
        const { lse } = attentionWithStats(q, k, v);
        backward(sum(lse));
      }),
    ).toThrow("Attention: a gradient reached its lse output, which has none");
    expect(memory().numTensors).toBe(before);
    expect([q.grad, k.grad, v.grad]).toEqual([null, null, null]);
    dispose([q, k, v, dout]);
  });
});

describe("packedAttention's gradient (one PackedAttentionBackward)", () => {
  it("equals scaledDotProductAttention's over the heads split out and the output merged back, in one kernel each way", () => {
    const [batch, t, heads, d] = [2, 7, 3, 4];
    const qkv = randomTensor([batch, t, 3, heads, d], 400);
    qkv.requiresGrad = true;
    const dout = randomTensor([batch, t, heads, d], 401);
    const kernels: string[] = [];
    const stop = addKernelObserver((record) => kernels.push(record.kernelName));
    tidy(() => backward(packedAttention(qkv, { causal: true }), dout));
    stop();
    expect(kernels.filter((kernel) => kernel.includes("Attention"))).toEqual(["PackedAttention", "PackedAttentionBackward"]);
    expect(kernels.filter((kernel) => kernel === "Transpose" || kernel === "Concat" || kernel === "Split")).toEqual([]);
    const take = (): Tensor => {
      const grad = qkv.grad as Tensor;
      qkv.grad = null;
      return grad;
    };
    const packed = take();
    tidy(() => {
      const [q, k, v] = split(qkv, 3, 2).map((part) => permute(reshape(part, [batch, t, heads, d]), [0, 2, 1, 3]));
      backward(permute(scaledDotProductAttention(q, k, v, { causal: true }), [0, 2, 1, 3]), dout);
    });
    const split3 = take();
    expect(maxDifference(packed, split3)).toBeLessThan(1e-5);
    dispose([qkv, dout, packed, split3]);
  });
});

describe("scaledDotProductAttention's memory", () => {
  it("a forward and backward inside tidy leaves only the .grads, every kernel call checked for leaks", () => {
    const { q, k, v, dout } = inputs(CASES[1], 300);
    const previous = setKernelLeakCheck(true);
    try {
      const [tensors, buffers] = [memory().numTensors, memory().numBuffers];
      tidy(() => backward(scaledDotProductAttention(q, k, v, { causal: true }), dout));
      expect(memory().numTensors - tensors).toBe(3);
      expect(memory().numBuffers - buffers).toBe(3);
      zeroGrad([q, k, v]);
      expect([memory().numTensors, memory().numBuffers]).toEqual([tensors, buffers]);
    } finally {
      setKernelLeakCheck(previous);
    }
    dispose([q, k, v, dout]);
  });

  it("the leak guard sees no growth over many steps", () => {
    const reports: LeakReport[] = [];
    enableLeakGuard({ onLeak: (report) => reports.push(report), windowSteps: 5, growingWindows: 3, minGrowth: 1 });
    const { q, k, v, dout } = inputs(CASES[0], 310);
    const before = memory().numTensors;
    for (let step = 0; step < 40; step++) {
      tidy(() => backward(scaledDotProductAttention(q, k, v, { causal: true }), dout));
      zeroGrad([q, k, v]);
    }
    expect(memory().numTensors).toBe(before);
    expect(reports).toEqual([]);
    dispose([q, k, v, dout]);
  });
});
