import { add, mul, randn, type Tensor, tidy } from "@blocksparse/core";
import { CausalSelfAttention, forwardResidual, Linear, Module, TransformerBlock } from "@blocksparse/nn";
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
