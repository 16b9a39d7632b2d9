import * as autograd from "@blocksparse/autograd";
import * as core from "@blocksparse/core";
import { describe, expect, it } from "vitest";
import * as nn from "../src/index";

describe("an app that depends on @blocksparse/nn alone", () => {
  it("gets core's and autograd's own functions and classes, not copies", () => {
    for (const name of ["tensor", "tidy", "randn", "zeros", "setBackend", "Tensor", "BsrPattern", "ShapeError"] as const) {
      expect(nn[name], name).toBe(core[name]);
    }
    for (const name of ["backward", "noGrad", "detach"] as const) expect(nn[name], name).toBe(autograd[name]);
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
