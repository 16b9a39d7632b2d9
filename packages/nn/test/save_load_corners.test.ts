import { randn, tensor, ValueError } from "@blocksparse/core";
import { Linear, TransformerBlock } from "@blocksparse/nn";
import { load } from "@blocksparse/nn/node";
import { describe, expect, it } from "vitest";

describe("load(model, path) with a path that is not one", () => {
  it("names load, as save does, not the loadSafetensorsFile it calls", async () => {
    const model = new Linear(2, 2, { seed: 1 });
    for (const path of ["", 42, null]) {
      await expect(load(model, path as string)).rejects.toThrow(/^load: path must be a non-empty string/);
    }
  });
});

describe("TransformerBlock.forward with a mask", () => {
  const block = new TransformerBlock({ dModel: 4, nHeads: 2, seed: 1 });
  const x = randn([1, 3, 4], { seed: 2 });

  it("refuses it, naming the block, rather than running unmasked (its attention is causal only)", () => {
    const mask = tensor([0, -1e9, -1e9, 0, 0, -1e9, 0, 0, 0], [3, 3]);
    expect(() => (block.forward as (...args: unknown[]) => unknown)(x, mask)).toThrow(ValueError);
    expect(() => (block.forward as (...args: unknown[]) => unknown)(x, mask)).toThrow(/TransformerBlock\.forward: takes x alone, no mask/);
  });

  it("takes null or undefined as no mask, and a context of one position", () => {
    const plain = Array.from(block.forward(x).dataSync());
    expect(Array.from((block.forward as (...args: unknown[]) => { dataSync(): Float32Array })(x, null).dataSync())).toEqual(plain);
    expect(Array.from((block.forward as (...args: unknown[]) => { dataSync(): Float32Array })(x, undefined).dataSync())).toEqual(plain);
    expect(block.forward(randn([2, 1, 4], { seed: 3 })).shape).toEqual([2, 1, 4]);
  });
});
