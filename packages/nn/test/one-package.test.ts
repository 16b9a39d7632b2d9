import * as autograd from "@blocksparse/autograd";
import * as core from "@blocksparse/core";
import { describe, expect, it } from "vitest";
import * as nn from "../src/index";

describe("an app that depends on @blocksparse/nn alone", () => {
  it("gets core's and autograd's own functions and classes, not copies", () => {
    const pairs: [unknown, unknown][] = [
      [nn.tensor, core.tensor],
      [nn.tidy, core.tidy],
      [nn.randn, core.randn],
      [nn.zeros, core.zeros],
      [nn.setBackend, core.setBackend],
      [nn.Tensor, core.Tensor],
      [nn.BsrPattern, core.BsrPattern],
      [nn.ShapeError, core.ShapeError],
      [nn.backward, autograd.backward],
      [nn.noGrad, autograd.noGrad],
      [nn.detach, autograd.detach],
    ];
    for (const [fromNn, original] of pairs) expect(fromNn).toBe(original);
  });

  it("trains the README's model with imports from @blocksparse/nn only", () => {
    const { Adam, BlockSparseLinear, Linear, ReLU, Sequential, backward, crossEntropy, randn, tensor, tidy } = nn;
    const model = new Sequential(new BlockSparseLinear(64, 32, { density: 0.5, blockShape: [16, 16], seed: 1 }), new ReLU(), new Linear(32, 4, { seed: 2 }));
    const optimizer = new Adam(model.parameters(), { lr: 1e-2 });
    const x = randn([8, 64], { seed: 3 });
    const y = tensor([0, 1, 2, 3, 0, 1, 2, 3], [8], "int32");
    const losses: number[] = [];
    for (let step = 0; step < 5; step++) {
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
    expect(losses[4]).toBeLessThan(losses[0]!);
  });
});
