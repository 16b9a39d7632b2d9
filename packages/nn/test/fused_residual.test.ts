import { backward } from "@blocksparse/autograd";
import { add, addKernelObserver, randn, type Tensor, tidy } from "@blocksparse/core";
import { BlockSparseLinear, Dropout, forwardResidual, Linear, type Module, TransformerBlock } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host, maxAbsDiff } from "./helpers";

/** Something holding a gradient: an input tensor or a module's Parameter. */
type HasGrad = { grad: Tensor | null };

/** Runs fn forward and backward with dy (the gradients of `inputs` cleared first); the output, their gradients, the kernels run. */
function run(fn: () => Tensor, inputs: HasGrad[], dy: Tensor) {
  for (const t of inputs) t.grad = null;
  const kernels: string[] = [];
  const stop = addKernelObserver((record) => kernels.push(record.kernelName));
  const out = tidy(() => {
    const y = fn();
    backward(y, dy);
    return host(y);
  });
  stop();
  return { out, grads: inputs.map((t) => host(t.grad as Tensor)), kernels };
}

describe("a residual connection in the layer's product (forwardResidual)", () => {
  for (const [name, kernel, make] of [
    ["Linear", "Linear", () => new Linear(24, 16, { seed: 1 })],
    ["BlockSparseLinear", "BsrLinear", () => new BlockSparseLinear(24, 16, { density: 0.5, blockShape: [8, 8], seed: 1 })],
  ] as const)
  it(`${name}: one ${kernel} kernel, no Add, the same output and gradients as forward + add`, () => {
    const layer = make();
    const x = randn([3, 5, 24], { seed: 2 });
    const residual = randn([3, 5, 16], { seed: 3 });
    x.requiresGrad = true;
    residual.requiresGrad = true;
    const dy = randn([3, 5, 16], { seed: 4 });
    const inputs: HasGrad[] = [x, residual, ...layer.parameters()];
    const fused = run(() => forwardResidual(layer, new Dropout(0), x, residual), inputs, dy);
    const written = run(() => add(residual, layer.forward(x)), inputs, dy);
    expect(fused.kernels.filter((k) => k === kernel)).toHaveLength(1);
    expect(fused.kernels).not.toContain("Add");
    expect(written.kernels).toContain("Add");
    expect(maxAbsDiff(fused.out, written.out)).toBeLessThan(1e-5);
    fused.grads.forEach((g, i) => {
      expect(maxAbsDiff(g, written.grads[i]), `gradient ${i}`).toBeLessThan(1e-5);
    });
  });

  it("an active dropout or a replaced forward run unfused: layer, dropout, add", () => {
    const x = randn([4, 32], { seed: 5 });
    const residual = randn([4, 32], { seed: 6 });
    const sparse = new BlockSparseLinear(32, 32, { density: 0.5, blockShape: [8, 8], seed: 7 });
    const hookedSparse = new BlockSparseLinear(32, 32, { density: 0.5, blockShape: [8, 8], seed: 7 });
    const sparseForward = hookedSparse.forward.bind(hookedSparse);
    hookedSparse.forward = (input: Tensor) => sparseForward(input);
    const dense = new Linear(32, 32, { seed: 8 });
    const hooked = new Linear(32, 32, { seed: 8 });
    const original = hooked.forward.bind(hooked);
    hooked.forward = (input: Tensor) => original(input);
    const cases: [string, Module, Dropout][] = [
      ["active dropout", dense, new Dropout(0.5, { seed: 9 })],
      ["active dropout, block-sparse", sparse, new Dropout(0.5, { seed: 9 })],
      ["replaced forward", hooked, new Dropout(0)],
      ["replaced forward, block-sparse", hookedSparse, new Dropout(0)],
    ];
    for (const [name, layer, dropout] of cases) {
      const kernels: string[] = [];
      const stop = addKernelObserver((record) => kernels.push(record.kernelName));
      const y = forwardResidual(layer, dropout, x, residual);
      stop();
      expect(kernels, name).toContain("Add");
      if (!name.startsWith("active dropout")) expect(maxAbsDiff(host(y), host(add(residual, layer.forward(x)))), name).toBeLessThan(1e-5);
      y.dispose();
    }
  });

  it("TransformerBlock: its two residual adds ride in the products, with the outputs and gradients of the written-out block", () => {
    const block = new TransformerBlock({ dModel: 32, nHeads: 4, seed: 11 });
    const x = randn([2, 6, 32], { seed: 12 });
    x.requiresGrad = true;
    const dy = randn([2, 6, 32], { seed: 13 });
    const params = block.parameters();
    const fused = run(() => block.forward(x), [x, ...params], dy);
    const written = run(
      () =>
        tidy(() => {
          const a = add(x, block.attn.forward(block.ln1.forward(x)));
          return add(a, block.mlp.forward(block.ln2.forward(a)));
        }),
      [x, ...params],
      dy,
    );
    expect(fused.kernels.filter((k) => k === "Add").length).toBe(written.kernels.filter((k) => k === "Add").length - 2);
    expect(maxAbsDiff(fused.out, written.out)).toBeLessThan(1e-5);
    fused.grads.forEach((g, i) => {
      expect(maxAbsDiff(g, written.grads[i]), `gradient ${i}`).toBeLessThan(1e-4);
    });
  });
});
