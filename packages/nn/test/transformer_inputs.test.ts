import { add, mul, randn, ShapeError, type Tensor, tidy, ValueError, zeros } from "@blocksparse/core";
import { CausalSelfAttention, forwardResidual, Linear, MLP, Module, type Parameter, TransformerBlock } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host, maxAbsDiff } from "./helpers";

/** A module of one input that doubles it: what a user may put in a dropout's, an attention's or an MLP's place. */
class Double extends Module {
  forward(x: Tensor): Tensor {
    return mul(x, 2);
  }
}

describe("forwardResidual with a module other than a Dropout in the dropout's place", () => {
  it("runs that module (it was skipped as a Dropout that drops nothing, and the fused product ran alone)", () => {
    const layer = new Linear(4, 3, { seed: 1 });
    const x = randn([2, 4], { seed: 2 });
    const residual = randn([2, 3], { seed: 3 });
    const out = tidy(() => host(forwardResidual(layer, new Double(), x, residual)));
    const expected = tidy(() => host(add(residual, mul(layer.forward(x), 2))));
    expect(maxAbsDiff(out, expected)).toBeLessThan(1e-6);
  });

  it("CausalSelfAttention's residDropout replaced by setSubmodule applies with a residual as without one", () => {
    const attn = new CausalSelfAttention({ dModel: 4, nHeads: 2, seed: 1 });
    attn.setSubmodule("residDropout", new Double());
    const x = randn([1, 3, 4], { seed: 2 });
    const alone = tidy(() => host(attn.forward(x)));
    const withZeroResidual = tidy(() => host(attn.forward(x, mul(x, 0))));
    expect(maxAbsDiff(withZeroResidual, alone)).toBeLessThan(1e-6);
  });
});

describe("TransformerBlock with its attention or MLP replaced by a module of one input", () => {
  it("keeps both residual connections, x + attn(ln1(x)) then + mlp(ln2(.)) as torch's block (they were dropped)", () => {
    const block = new TransformerBlock({ dModel: 4, nHeads: 2, seed: 1 });
    block.setSubmodule("attn", new Double());
    block.setSubmodule("mlp", new Double());
    const x = randn([2, 3, 4], { seed: 2 });
    const out = tidy(() => host(block.forward(x)));
    const expected = tidy(() => {
      const afterAttention = add(x, mul(block.ln1.forward(x), 2));
      return host(add(afterAttention, mul(block.ln2.forward(afterAttention), 2)));
    });
    expect(maxAbsDiff(out, expected)).toBeLessThan(1e-6);
  });

  it("a subclass of CausalSelfAttention whose forward takes one input keeps the residual too", () => {
    class NoResidualAttention extends CausalSelfAttention {
      override forward(x: Tensor): Tensor {
        return super.forward(x);
      }
    }
    const block = new TransformerBlock({ dModel: 4, nHeads: 2, seed: 1 });
    const x = randn([1, 3, 4], { seed: 2 });
    const before = tidy(() => host(block.forward(x)));
    const own = block.attn;
    const replacement = new NoResidualAttention({ dModel: 4, nHeads: 2, seed: 3 });
    replacement.loadStateDict(own.stateDict());
    block.setSubmodule("attn", replacement);
    const after = tidy(() => host(block.forward(x)));
    expect(maxAbsDiff(after, before)).toBeLessThan(1e-5);
  });
});

describe("a residual of another shape than the branch's output", () => {
  // The fused path refused it, but with dropout active (training) add broadcast a [d] or [1, T, d] residual silently.
  it("is a ShapeError naming the layer whether or not the dropout is active", () => {
    const x = randn([2, 3, 4], { seed: 1 });
    for (const training of [false, true]) {
      const attn = new CausalSelfAttention({ dModel: 4, nHeads: 2, dropout: 0.5, seed: 2 }).train(training);
      const mlp = new MLP({ dModel: 4, hidden: 8, dropout: 0.5, seed: 3 }).train(training);
      attn.namedModules();
      mlp.namedModules();
      for (const shape of [[4], [1, 3, 4], [2, 1, 4]]) {
        expect(() => attn.forward(x, zeros(shape))).toThrow(ShapeError);
        expect(() => mlp.forward(x, zeros(shape))).toThrow(new RegExp(`residual has shape \\[${shape.join(", ")}\\], expected the output's \\[2, 3, 4\\]`));
      }
      expect(attn.forward(x, zeros([2, 3, 4])).shape).toEqual([2, 3, 4]);
    }
    expect(() => forwardResidual(new Linear(4, 4), new Double(), x, zeros([4]))).toThrow("Linear: residual has shape [4], expected the output's [2, 3, 4]");
    expect(() => forwardResidual(new Linear(4, 4), new Double(), x, [1] as never)).toThrow(new ValueError("Linear: residual must be a Tensor, got an array"));
  });
});

describe("TransformerBlock's mlpRatio", () => {
  // 0.1 with dModel 4 rounds to an MLP of width 0: the message said "must be > 0, got 0.1"; Infinity named Linear's outFeatures.
  it("names the width it gives when that is not a positive integer", () => {
    expect(() => new TransformerBlock({ dModel: 4, nHeads: 2, mlpRatio: 0.1 })).toThrow(
      new ValueError("TransformerBlock: mlpRatio must give an MLP width round(dModel * mlpRatio) >= 1, got 0.1 (width 0)"),
    );
    expect(() => new TransformerBlock({ dModel: 4, nHeads: 2, mlpRatio: Number.POSITIVE_INFINITY })).toThrow("mlpRatio must give an MLP width round(dModel * mlpRatio) >= 1, got Infinity (width Infinity)");
    expect(() => new TransformerBlock({ dModel: 4, nHeads: 2, mlpRatio: -1 })).toThrow("got -1 (width -4)");
    expect(() => new TransformerBlock({ dModel: 4, nHeads: 2, mlpRatio: "2" as never })).toThrow('got "2" (width 8)');
    expect(new TransformerBlock({ dModel: 4, nHeads: 2, mlpRatio: 0.25 }).mlp.fc1.outFeatures).toBe(1);
  });
});

describe("TransformerBlock's forward against a float64 reference", () => {
  const erf = (z: number) => {
    let sum = 0;
    let term = z;
    for (let n = 0; n < 100; n++) {
      sum += term / (2 * n + 1);
      term *= (-z * z) / (n + 1);
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  };
  const values = (p: Parameter | null) => host(p!.value);
  const linear = (x: number[][], w: Float64Array, b: Float64Array) =>
    x.map((row) => Array.from(b, (bias, o) => row.reduce((acc, v, i) => acc + w[o * row.length + i] * v, bias)));
  const layerNorm = (x: number[][], g: Float64Array, b: Float64Array) =>
    x.map((row) => {
      const mean = row.reduce((a, v) => a + v) / row.length;
      const variance = row.reduce((a, v) => a + (v - mean) ** 2, 0) / row.length; // biased, eps inside the sqrt
      return row.map((v, i) => ((v - mean) / Math.sqrt(variance + 1e-5)) * g[i] + b[i]);
    });

  /** x + attn(ln1(x)) = h, then h + mlp(ln2(h)): heads of d / H, causal, scores scaled by 1 / sqrt(d / H), exact GELU. */
  function reference(block: TransformerBlock, x: number[][], heads: number): number[][] {
    const d = x[0].length;
    const hd = d / heads;
    const qkv = linear(layerNorm(x, values(block.ln1.weight), values(block.ln1.bias)), values(block.attn.qkv.weight), values(block.attn.qkv.bias));
    const merged = x.map(() => new Array<number>(d).fill(0));
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < x.length; i++) {
        const scores = Array.from({ length: i + 1 }, (_, j) => {
          let dot = 0;
          for (let e = 0; e < hd; e++) dot += qkv[i][h * hd + e] * qkv[j][d + h * hd + e];
          return dot / Math.sqrt(hd);
        });
        const top = Math.max(...scores);
        const weights = scores.map((s) => Math.exp(s - top));
        const total = weights.reduce((a, w) => a + w);
        for (let e = 0; e < hd; e++) merged[i][h * hd + e] = weights.reduce((acc, w, j) => acc + (w / total) * qkv[j][2 * d + h * hd + e], 0);
      }
    }
    const attended = linear(merged, values(block.attn.proj.weight), values(block.attn.proj.bias));
    const h1 = x.map((row, t) => row.map((v, i) => v + attended[t][i]));
    const hidden = linear(layerNorm(h1, values(block.ln2.weight), values(block.ln2.bias)), values(block.mlp.fc1.weight), values(block.mlp.fc1.bias));
    const activated = hidden.map((row) => row.map((v) => 0.5 * v * (1 + erf(v / Math.SQRT2))));
    const out = linear(activated, values(block.mlp.fc2.weight), values(block.mlp.fc2.bias));
    return h1.map((row, t) => row.map((v, i) => v + out[t][i]));
  }

  it("matches with 2 heads, on the fused path (eval) and the explicit one (attention dropout active)", () => {
    const [batch, length, d, heads] = [2, 3, 8, 2];
    const make = (dropout: number) => {
      const block = new TransformerBlock({ dModel: d, nHeads: heads, mlpRatio: 2, dropout, seed: 1 });
      // LayerNorms away from ones and zeros, so that their placement shows.
      for (const [i, p] of [block.ln1.weight, block.ln1.bias, block.ln2.weight, block.ln2.bias].entries()) p!.assign(randn([d], { seed: 11 + i }));
      return block;
    };
    const x = randn([batch, length, d], { seed: 2 });
    const xs = host(x);
    const expected: number[] = [];
    const eager = make(0).eval();
    for (let b = 0; b < batch; b++) {
      const rows = Array.from({ length }, (_, t) => Array.from(xs.subarray((b * length + t) * d, (b * length + t + 1) * d)));
      expected.push(...reference(eager, rows, heads).flat());
    }
    expect(maxAbsDiff(host(eager.forward(x)), expected)).toBeLessThan(1e-5);
    // p = 1e-12 drops nothing in practice but makes the attention weights (explicit matmul, causal softmax, dropout).
    const explicit = make(1e-12).train();
    expect(explicit.attn.attnDropout.active).toBe(true);
    expect(maxAbsDiff(host(explicit.forward(x)), expected)).toBeLessThan(1e-5);
  });
});

describe("MLP's widths", () => {
  // They were checked by its Linear layers, whose errors named Linear's inFeatures/outFeatures.
  it("are named as MLP's own options", () => {
    expect(() => new MLP({ dModel: 0, hidden: 8 })).toThrow(new ValueError("MLP: dModel must be a positive integer, got 0"));
    expect(() => new MLP({ dModel: 4, hidden: 2.5 })).toThrow(new ValueError("MLP: hidden must be a positive integer, got 2.5"));
    expect(() => new MLP({ dModel: 4, hidden: "8" as never })).toThrow(new ValueError('MLP: hidden must be a positive integer, got "8"'));
    expect(new MLP({ dModel: 4, hidden: 8 }).fc1.outFeatures).toBe(8);
  });
});
