import { backward } from "@blocksparse/autograd";
import { add, addKernelObserver, arange, matmul, mul, permute, randn, reshape, slice, softmax, type Tensor, tensor, tidy } from "@blocksparse/core";
import { AdamW, BlockSparseLinear, crossEntropy, Dropout, Embedding, LayerNorm, Linear, Module, TransformerBlock } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";

class TinyLM extends Module {
  tokens = new Embedding(8, 16, { seed: 1 });
  positions = new Embedding(6, 16, { seed: 2 });
  block = new TransformerBlock({ dModel: 16, nHeads: 2, mlpRatio: 2, seed: 3 });
  norm = new LayerNorm(16);
  head = new Linear(16, 8, { seed: 4 });

  forward(ids: Tensor): Tensor {
    return tidy(() => {
      const positions = arange(0, ids.shape[1], 1, "int32");
      const h = this.block.forward(add(this.tokens.forward(ids), this.positions.forward(positions)));
      return this.head.forward(this.norm.forward(h));
    });
  }
}

describe("a tiny causal language model", () => {
  it("learns a repeating sequence, dense and with its feed-forward layers made block-sparse", () => {
    // Each row is 0..7 repeating from a different start: the next token is (token + 1) % 8.
    const rows = 4;
    const ids = new Int32Array(rows * 6);
    const next = new Int32Array(rows * 6);
    for (let r = 0; r < rows; r++) {
      for (let t = 0; t < 6; t++) {
        ids[r * 6 + t] = (r + t) % 8;
        next[r * 6 + t] = (r + t + 1) % 8;
      }
    }
    const x = tensor(ids, [rows, 6], "int32");
    const y = tensor(next, [rows, 6], "int32");
    for (const sparse of [false, true]) {
      const model = new TinyLM();
      if (sparse) {
        for (const name of ["block.mlp.fc1", "block.mlp.fc2"]) {
          model.setSubmodule(name, BlockSparseLinear.fromLinear(model.getSubmodule(name) as Linear, { density: 0.5, blockShape: [8, 8] }));
        }
        expect(model.block.mlp.fc1).toBeInstanceOf(BlockSparseLinear);
      }
      const optimizer = new AdamW(model.parameters(), { lr: 2e-2 });
      const losses: number[] = [];
      for (let step = 0; step < 25; step++) {
        optimizer.zeroGrad();
        losses.push(
          tidy(() => {
            const loss = crossEntropy(model.forward(x), y);
            backward(loss);
            return loss.item();
          }),
        );
        optimizer.step();
      }
      expect(losses[24], `sparse=${sparse}: ${losses[0]} -> ${losses[24]}`).toBeLessThan(losses[0] * 0.3);
      optimizer.dispose();
    }
    // Training two small models takes a few seconds; room for a loaded machine.
  }, 30_000);
});

describe("CausalSelfAttention", () => {
  it("equals attention written out with an explicit -Infinity mask, scores scaled after the product", () => {
    const block = new TransformerBlock({ dModel: 16, nHeads: 4, seed: 7 });
    const attn = block.attn;
    const x = randn([2, 5, 16], { seed: 8 });
    const got = attn.forward(x);
    const want = tidy(() => {
      const [batch, length] = [2, 5];
      const qkv = permute(reshape(attn.qkv.forward(x), [batch, length, 3, 4, 4]), [2, 0, 3, 1, 4]);
      const part = (i: number) => reshape(slice(qkv, [i], [1]), [batch, 4, length, 4]);
      const mask = tensor(Float32Array.from({ length: 25 }, (_, i) => (i % 5 > Math.floor(i / 5) ? Number.NEGATIVE_INFINITY : 0)), [5, 5]);
      const scores = add(mul(matmul(part(0), part(1), { transposeB: true }), 0.5), mask);
      const merged = reshape(permute(matmul(softmax(scores, -1), part(2)), [0, 2, 1, 3]), [batch, length, 16]);
      return attn.proj.forward(merged);
    });
    const a = got.dataSync();
    const b = want.dataSync();
    for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - b[i])).toBeLessThan(1e-5);
  });

  /** How many times each named kernel runs in the attention's forward and backward on x [2, 5, 16]. */
  const attentionKernelCounts = (block: TransformerBlock, names: string[]): number[] => {
    const x = randn([2, 5, 16], { seed: 10 });
    x.requiresGrad = true;
    const kernels: string[] = [];
    const stop = addKernelObserver((record) => kernels.push(record.kernelName));
    tidy(() => backward(block.attn.forward(x), randn([2, 5, 16], { seed: 11 })));
    stop();
    block.zeroGrad();
    x.dispose();
    return names.map((name) => kernels.filter((k) => k === name).length);
  };

  it("reads the heads from the qkv product's rows: no Split, Slice, Concat or Transpose either way", () => {
    const block = new TransformerBlock({ dModel: 16, nHeads: 4, seed: 9 });
    const names = ["Split", "Slice", "Concat", "Transpose", "PackedAttention", "PackedAttentionBackward"];
    expect(attentionKernelCounts(block, names)).toEqual([0, 0, 0, 0, 1, 1]);
  });

  it("with attention dropout takes q, k and v with one Split, whose gradient is one Concat (no Slice padded to the qkv tensor)", () => {
    const block = new TransformerBlock({ dModel: 16, nHeads: 4, dropout: 0.2, seed: 9 });
    expect(attentionKernelCounts(block, ["Split", "Slice", "Concat"])).toEqual([1, 0, 1]);
  });

  it("gives the same output and gradients as the explicit attention whose dropout drops nothing", () => {
    const fused = new TransformerBlock({ dModel: 16, nHeads: 4, seed: 15 });
    const explicit = new TransformerBlock({ dModel: 16, nHeads: 4, seed: 15 });
    // A Dropout with p > 0 in training takes the explicit path; p = 1e-30 drops (almost surely) nothing.
    explicit.setSubmodule("attn.attnDropout", new Dropout(1e-30, { seed: 1 }));
    const x = randn([2, 6, 16], { seed: 16 });
    const dy = randn([2, 6, 16], { seed: 17 });
    const run = (block: TransformerBlock) => {
      const out = block.attn.forward(x);
      backward(out, dy);
      return [out, block.attn.qkv.weight.grad as Tensor, block.attn.proj.weight.grad as Tensor];
    };
    const [a, b] = [run(fused), run(explicit)];
    for (let i = 0; i < a.length; i++) {
      const [x0, x1] = [a[i].dataSync(), b[i].dataSync()];
      for (let j = 0; j < x0.length; j++) expect(Math.abs(x0[j] - x1[j]), `tensor ${i} element ${j}`).toBeLessThan(1e-5);
    }
  });

  it("runs the fused attention (no [T, T] weights) unless its attention dropout is active", () => {
    const kernelsOf = (block: TransformerBlock) =>
      attentionKernelCounts(block, ["PackedAttention", "PackedAttentionBackward", "Softmax", "SoftmaxBackward"]);
    const dropping = new TransformerBlock({ dModel: 16, nHeads: 4, dropout: 0.2, seed: 12 });
    expect(kernelsOf(dropping), "training with dropout 0.2").toEqual([0, 0, 1, 1]);
    dropping.eval();
    expect(kernelsOf(dropping), "dropout 0.2 in eval mode").toEqual([1, 1, 0, 0]);
    expect(kernelsOf(new TransformerBlock({ dModel: 16, nHeads: 4, seed: 12 })), "no dropout").toEqual([1, 1, 0, 0]);
  });
});
