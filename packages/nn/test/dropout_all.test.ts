import { backward } from "@blocksparse/autograd";
import { cast, randn, sum, tensor } from "@blocksparse/core";
import { Dropout, Linear, Sequential } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";

// torch.nn.Dropout(p=1) is allowed and drops every element (input * 0); it was refused here.
describe("Dropout with p = 1", () => {
  it("zeroes every element while training, keeps the shape and dtype, and sends no gradient back", () => {
    const dropout = new Dropout(1, { seed: 1 });
    expect(dropout.active).toBe(true);
    const layer = new Linear(3, 4, { seed: 2 });
    const model = new Sequential(layer, dropout);
    const y = model.forward(randn([2, 5, 3], { seed: 3 }));
    expect(y.shape).toEqual([2, 5, 4]);
    // -0 where the input was negative, as torch's input * 0.
    expect(Array.from(y.dataSync()).every((v) => v === 0)).toBe(true);
    backward(sum(y));
    expect(Array.from(layer.weight.grad?.dataSync() ?? [1]).every((v) => v === 0)).toBe(true);
    const half = dropout.forward(cast(randn([3]), "bfloat16"));
    expect(half.dtype).toBe("bfloat16");
    expect(Array.from(half.dataSync()).every((v) => v === 0)).toBe(true);
  });

  it("is NaN where the input is inf or NaN, as torch's input * 0, and the identity in eval mode", () => {
    const x = tensor([Number.POSITIVE_INFINITY, Number.NaN, 2], [3]);
    const dropout = new Dropout(1);
    expect(Array.from(dropout.forward(x).dataSync())).toEqual([Number.NaN, Number.NaN, 0]);
    dropout.eval();
    expect(Array.from(dropout.forward(x).dataSync())).toEqual([Number.POSITIVE_INFINITY, Number.NaN, 2]);
  });
});
