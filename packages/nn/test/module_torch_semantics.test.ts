import { mul, randn, type Tensor, tidy } from "@blocksparse/core";
import { CausalSelfAttention, Dropout, Linear, MLP, Module, ModuleList, Sequential, TransformerBlock, ValueError } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host, maxAbsDiff } from "./helpers";

/** A module that keeps its encoder in eval whatever its own mode, the torch way: overriding train(). */
class FrozenEncoder extends Module {
  enc = new Dropout(0.5, { seed: 1 });
  head = new Linear(2, 2, { seed: 2 });
  override train(mode = true): this {
    super.train(mode);
    this.enc.eval();
    return this;
  }
  forward(x: Tensor): Tensor {
    return this.head.forward(this.enc.forward(x));
  }
}

describe("train() and eval() through the tree", () => {
  it("call each child's train(mode), so that a child's override is obeyed from its parent, as torch's", () => {
    const model = new Sequential(new FrozenEncoder(), new Dropout(0.1));
    const frozen = model.at(0) as FrozenEncoder;
    model.eval();
    expect(model.modules().every((m) => !m.training)).toBe(true);
    model.train();
    expect(frozen.enc.training).toBe(false);
    expect([model.training, frozen.training, frozen.head.training, model.at(1).training]).toEqual([true, true, true, true]);
  });

  it("reach a module held in two places and stop at a module held by its own descendant", () => {
    const shared = new Dropout(0.2);
    const inner = new Sequential(shared);
    const outer = new Sequential(inner, shared);
    inner.registerModule("up", outer);
    outer.eval();
    expect([outer.training, inner.training, shared.training]).toEqual([false, false, false]);
    expect(outer.train()).toBe(outer);
    expect([outer.training, inner.training, shared.training]).toEqual([true, true, true]);
  });
});

/** Monte Carlo dropout: drops in eval too (a subclass whose forward ignores the mode). */
class AlwaysDropout extends Dropout {
  override forward(x: Tensor): Tensor {
    return mul(x, 0);
  }
}

describe("a Dropout subclass with its own forward on the fused residual paths", () => {
  it("runs in MLP's and CausalSelfAttention's place in eval (it was skipped as a Dropout that drops nothing)", () => {
    const x = randn([2, 3, 4], { seed: 1 });
    const residual = randn([2, 3, 4], { seed: 2 });
    const mlp = new MLP({ dModel: 4, hidden: 8, seed: 3 });
    mlp.setSubmodule("dropout", new AlwaysDropout(0.5));
    const attn = new CausalSelfAttention({ dModel: 4, nHeads: 2, seed: 4 });
    attn.setSubmodule("residDropout", new AlwaysDropout(0.5));
    for (const branch of [mlp.eval(), attn.eval()]) {
      // Every branch output is dropped: what is left is the residual.
      expect(maxAbsDiff(tidy(() => host(branch.forward(x, residual))), host(residual))).toBe(0);
    }
  });

  it("runs as the attention dropout in eval: the explicit attention, not the fused one that has no weights to drop", () => {
    const block = new TransformerBlock({ dModel: 4, nHeads: 2, seed: 5 });
    block.attn.setSubmodule("attnDropout", new AlwaysDropout(0.5));
    block.eval();
    const x = randn([1, 3, 4], { seed: 6 });
    // Every attention weight dropped: the attention's output is proj's bias alone, on every position.
    const attended = tidy(() => host(block.attn.forward(block.ln1.forward(x))));
    const bias = host(block.attn.proj.bias!.value);
    expect(maxAbsDiff(attended, Array.from({ length: 12 }, (_, i) => bias[i % 4]))).toBeLessThan(1e-6);
  });
});

describe("loadStateDict given something other than a state dict", () => {
  it("is a ValueError naming it, strict or not (a non-strict load of a Promise, null or an array loaded nothing silently)", () => {
    const model = new Sequential(new Linear(2, 2, { seed: 1 }));
    const before = host(model.at(0).parameters()[0].value);
    const source = new Sequential(new Linear(2, 2, { seed: 2 }));
    for (const wrong of [Promise.resolve(source.stateDict()), null, [], 5, "0.weight"]) {
      for (const strict of [true, false]) {
        expect(() => model.loadStateDict(wrong as never, { strict })).toThrow(ValueError);
        expect(() => model.loadStateDict(wrong as never, { strict })).toThrow(/Sequential\.loadStateDict: expected a state dict \(a Map or an object of name to entry\), got /);
      }
    }
    expect(host(model.at(0).parameters()[0].value)).toEqual(before);
    // A Map and a plain object still load.
    expect(model.loadStateDict(Object.fromEntries(source.stateDict()))).toEqual({ missingKeys: [], unexpectedKeys: [] });
    expect(host(model.at(0).parameters()[0].value)).toEqual(host(source.at(0).parameters()[0].value));
  });
});

describe("ModuleList's constructor", () => {
  it("refuses a module or null in place of an iterable with a ValueError (it was a TypeError from the loop)", () => {
    for (const wrong of [new Linear(1, 1), null, 3]) {
      expect(() => new ModuleList(wrong as never)).toThrow(ValueError);
      expect(() => new ModuleList(wrong as never)).toThrow(/ModuleList: modules must be an iterable of Modules, got /);
    }
    expect(new ModuleList().length).toBe(0);
  });
});

describe("Module.apply", () => {
  it("calls fn on each module once, children before their parent, the root last, as torch's apply, and returns the root", () => {
    const shared = new Linear(2, 2, { seed: 1 });
    const model = new Sequential(new Sequential(shared, new Dropout(0.1)), shared, new Linear(2, 1, { seed: 2 }));
    const visited: Module[] = [];
    expect(model.apply((m) => visited.push(m))).toBe(model);
    const inner = model.at(0) as Sequential;
    expect(visited).toEqual([shared, inner.at(1), inner, model.at(2), model]);
    expect(() => model.apply(null as never)).toThrow(ValueError);
  });
});
