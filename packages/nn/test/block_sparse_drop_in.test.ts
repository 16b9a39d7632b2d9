import { backward } from "@blocksparse/autograd";
import { add, cast, memory, randn, ShapeError, type Tensor, ValueError } from "@blocksparse/core";
import { BlockSparseLinear, Linear } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host, maxAbsDiff } from "./helpers";

describe("BlockSparseLinear as a drop-in for Linear", () => {
  it("has Linear's forwardResidual: forward(x) + residual, with the gradients of the written-out sum", () => {
    const layer = BlockSparseLinear.fromLinear(new Linear(16, 8, { seed: 1 }), { density: 0.5, blockShape: [4, 4] });
    const x = randn([2, 3, 16], { seed: 2 });
    const residual = randn([2, 3, 8], { seed: 3 });
    x.requiresGrad = true;
    residual.requiresGrad = true;
    const dy = randn([2, 3, 8], { seed: 4 });
    const grads = (run: () => Tensor) => {
      for (const t of [x, residual, layer.weight, layer.bias!]) t.grad = null;
      const y = run();
      backward(y, dy);
      return [host(y), ...[x, residual, layer.weight, layer.bias!].map((t) => host(t.grad as Tensor))];
    };
    const fused = grads(() => layer.forwardResidual(x, residual));
    const written = grads(() => add(residual, layer.forward(x)));
    fused.forEach((values, i) => {
      expect(maxAbsDiff(values, written[i]), `output or gradient ${i}`).toBe(0);
    });
  });

  it("refuses a residual that is not a Tensor, of another shape or another dtype, naming the layer, and leaks nothing", () => {
    const layer = new BlockSparseLinear(16, 8, { density: 0.5, blockShape: [4, 4], seed: 1 });
    const x = randn([3, 16], { seed: 2 });
    const [row, transposed, half, wide, residual] = [randn([8]), randn([8, 3]), cast(randn([3, 8]), "float16"), randn([3, 15]), randn([3, 8])];
    const before = memory().numTensors;
    expect(() => layer.forwardResidual(x, null as unknown as Tensor)).toThrow(ValueError);
    // A number would be added to every element, where Linear.forwardResidual refuses it.
    expect(() => layer.forwardResidual(x, 1 as unknown as Tensor)).toThrow(/residual is 1, expected the output.s \[3, 8\] float32/);
    // [8] would broadcast over the rows in an add: Linear's kernel refuses it, so does this.
    expect(() => layer.forwardResidual(x, row)).toThrow(ShapeError);
    expect(() => layer.forwardResidual(x, transposed)).toThrow(/BlockSparseLinear\.forwardResidual: residual is \[8, 3\] float32, expected the output's \[3, 8\] float32/);
    expect(() => layer.forwardResidual(x, half)).toThrow(/residual is \[3, 8\] float16, expected the output's \[3, 8\] float32/);
    expect(() => layer.forwardResidual(wide, residual)).toThrow(/input has 15 features, expected 16/);
    expect(memory().numTensors).toBe(before);
  });
});
