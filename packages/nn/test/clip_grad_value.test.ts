import { cast, memory, tensor, tidy } from "@blocksparse/core";
import { BlockSparseLinear, clipGradValue, Linear, Parameter } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host, thrown } from "./helpers";

describe("clipGradValue (torch.nn.utils.clip_grad_value_)", () => {
  it("clamps every gradient to [-clipValue, clipValue] in place, keeps NaN and skips parameters without a gradient", () => {
    const a = new Parameter(tensor([0, 0, 0, 0, 0, 0], [6]));
    const b = new Parameter(tensor([0, 0], [2]));
    const none = new Parameter(tensor([1], [1]));
    a.grad = tensor([-3, -0.5, 0.25, 2, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY], [6]);
    b.grad = tensor([Number.NaN, 0.75], [2]);
    const gradA = a.grad;
    expect(clipGradValue([a, b, none], 1)).toBeUndefined();
    // torch.clamp(g, -1, 1): the same tensor, written in place.
    expect(a.grad).toBe(gradA);
    expect([...host(a.grad)]).toEqual([-1, -0.5, 0.25, 1, 1, -1]);
    expect(Number.isNaN(host(b.grad)[0])).toBe(true);
    expect(host(b.grad)[1]).toBe(0.75);
    expect(none.grad).toBeNull();
  });

  it("clamps a block-sparse weight's stored blocks and a float16 gradient in its own dtype", () => {
    const layer = new BlockSparseLinear(8, 4, { density: 0.5, blockShape: [2, 2], seed: 1 }).to("float16");
    const blocks = layer.weight.shape.reduce((n, d) => n * d, 1);
    layer.weight.grad = cast(tensor(Array.from({ length: blocks }, (_, i) => i - blocks / 2), [...layer.weight.shape]), "float16");
    clipGradValue(layer.parameters(), 2.5);
    expect(layer.weight.grad.dtype).toBe("float16");
    expect([...host(layer.weight.grad)]).toEqual(Array.from({ length: blocks }, (_, i) => Math.min(2.5, Math.max(-2.5, i - blocks / 2))));
    expect(layer.bias?.grad).toBeNull();
  });

  it("clips nothing at Infinity and clamps everything to 0 at 0", () => {
    const layer = new Linear(2, 2, { seed: 1 });
    layer.weight.grad = tensor([1e30, -2, 3, -4], [2, 2]);
    clipGradValue(layer.parameters(), Number.POSITIVE_INFINITY);
    expect([...host(layer.weight.grad)]).toEqual([1e30, -2, 3, -4].map(Math.fround));
    clipGradValue(layer.parameters(), 0);
    expect([...host(layer.weight.grad)].map(Math.abs)).toEqual([0, 0, 0, 0]);
  });

  it("refuses a negative, NaN or non-number clipValue and what is not an iterable of Parameters, changing nothing", () => {
    const p = new Parameter(tensor([0, 0], [2]));
    p.grad = tensor([5, -5], [2]);
    for (const bad of [-1, Number.NaN, "1", null]) {
      expect(thrown(() => clipGradValue([p], bad as number))).toEqual(["ValueError", `clipGradValue: clipValue must be a number >= 0, got ${bad === "1" ? '"1"' : String(bad)}`]);
    }
    expect(thrown(() => clipGradValue(p as unknown as Parameter[], 1))).toEqual(["ValueError", "clipGradValue: parameters must be an iterable of Parameters (model.parameters())"]);
    expect(thrown(() => clipGradValue([p, tensor([1], [1]) as unknown as Parameter], 1))).toEqual(["ValueError", "clipGradValue: parameters[1] is not a Parameter"]);
    expect([...host(p.grad)]).toEqual([5, -5]);
  });

  it("leaves no tensor behind", () => {
    const p = new Parameter(tensor([0, 0, 0], [3]));
    p.grad = tensor([5, -5, 0.5], [3]);
    clipGradValue([p], 1);
    const before = memory().numTensors;
    tidy(() => clipGradValue([p], 0.5));
    clipGradValue([p], 0.25);
    expect(memory().numTensors).toBe(before);
  });
});
