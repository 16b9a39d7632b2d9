import { backward } from "@blocksparse/autograd";
import { add, arange, type Tensor, tensor, tidy } from "@blocksparse/core";
import { AdamW, BlockSparseLinear, crossEntropy, Embedding, LayerNorm, Linear, Module, TransformerBlock } from "@blocksparse/nn";
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
