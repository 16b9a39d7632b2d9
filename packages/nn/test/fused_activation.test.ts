import { backward } from "@blocksparse/autograd";
import { addKernelObserver, randn, type Tensor, tidy } from "@blocksparse/core";
import { BlockSparseLinear, GELU, Linear, type Module, mseLoss, ReLU, Sequential, SparseOptimizer } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host, maxAbsDiff } from "./helpers";

/** A GELU that is not the library's own class: Sequential must run it as written, unfused. */
class LoggedGELU extends GELU {}

/** Runs `model` forward and backward on x and dy; returns the output, every parameter's gradient and the kernels run. */
function step(model: Module, x: Tensor, dy: Tensor) {
  const kernels: string[] = [];
  const stop = addKernelObserver((record) => kernels.push(record.kernelName));
  for (const p of model.parameters()) p.zeroGrad();
  const out = tidy(() => {
    const y = model.forward(x);
    backward(y, dy);
    return host(y);
  });
  stop();
  return { out, grads: model.parameters().map((p) => host(p.grad as Tensor)), kernels };
}

describe("fused bias + activation in Sequential", () => {
  const cases: [string, () => Module, () => Module][] = [
    ["Linear + GELU", () => new Linear(24, 64, { seed: 1 }), () => new GELU()],
    ["Linear + GELU(tanh)", () => new Linear(24, 64, { seed: 1 }), () => new GELU("tanh")],
    ["Linear + ReLU", () => new Linear(24, 64, { seed: 1 }), () => new ReLU()],
    ["BlockSparseLinear + GELU", () => new BlockSparseLinear(24, 64, { density: 0.5, blockShape: [8, 8], seed: 1 }), () => new GELU()],
  ];
  for (const [name, first, act] of cases) {
    it(`${name}: one fused kernel each way, the same output and gradients as the layers run one by one`, () => {
      const x = randn([5, 24], { seed: 2 });
      const dy = randn([5, 16], { seed: 3 });
      const fused = new Sequential(first(), act(), new Linear(64, 16, { seed: 4 }));
      const written = new Sequential(first(), new LoggedGELU(), new Linear(64, 16, { seed: 4 }));
      const plain = act();
      // The same layers, unfused: the activation module applied by hand.
      const unfused = {
        parameters: () => written.parameters(),
        forward: (input: Tensor) => tidy(() => (written.at(2) as Linear).forward(plain.forward(written.at(0).forward(input)))),
      } as unknown as Module;
      const a = step(fused, x, dy);
      const b = step(unfused, x, dy);
      // A Linear runs its product, bias and activation as one kernel (LinearActivation), a BlockSparseLinear too
      // (BsrLinearActivation). The gradients take one fused activation backward either way.
      const sparse = fused.at(0) instanceof BlockSparseLinear;
      expect(a.kernels).toContain(sparse ? "BsrLinearActivation" : "LinearActivation");
      expect(a.kernels).not.toContain("BiasActivation");
      expect(a.kernels).toContain("BiasActivationBackward");
      for (const k of ["Gelu", "Relu", "GeluBackward", "Where", "Greater"]) expect(a.kernels, k).not.toContain(k);
      // The first layer's bias gradient comes out of the fused backward: one column sum fewer.
      const count = (kernels: string[], name: string) => kernels.filter((k) => k === name).length;
      expect(count(a.kernels, "Sum")).toBe(count(b.kernels, "Sum") - 1);
      expect(maxAbsDiff(a.out, b.out)).toBeLessThan(1e-5);
      a.grads.forEach((g, i) => {
        expect(maxAbsDiff(g, b.grads[i]), `gradient ${i}`).toBeLessThan(1e-5);
      });
      // A subclass of GELU is run as written.
      expect(step(written, x, dy).kernels).not.toContain("BiasActivation");
      for (const t of [x, dy]) t.dispose();
      for (const p of [...fused.parameters(), ...written.parameters()]) p.dispose();
    });
  }
});

describe("fusion and layers wrapped on the instance", () => {
  it("RigL's gradient recording sees every layer of a fused Sequential, and moves the same blocks as the unfused model", () => {
    const make = (act: () => Module) =>
      new Sequential(
        new BlockSparseLinear(16, 32, { density: 0.25, blockShape: [4, 4], seed: 30 }),
        act(),
        new BlockSparseLinear(32, 8, { density: 0.5, blockShape: [4, 4], seed: 31 }),
      );
    const x = randn([6, 16], { seed: 32 });
    const target = randn([6, 8], { seed: 33 });
    const moved = (model: Sequential) => {
      const loss = () => mseLoss(model.forward(x), target);
      const sparse = new SparseOptimizer(model, { fraction: 0.5, regrow: "gradient", every: 1 });
      const moves = sparse.step(loss);
      return [0, 2].map((i) => Array.from(moves.get(model.at(i) as BlockSparseLinear)?.regrown ?? []));
    };
    const fused = make(() => new GELU());
    const unfused = make(() => new LoggedGELU());
    const regrown = moved(fused);
    expect(regrown[0].length).toBeGreaterThan(0);
    expect(regrown).toEqual(moved(unfused));
    for (const t of [x, target]) t.dispose();
    for (const p of [...fused.parameters(), ...unfused.parameters()]) p.dispose();
  });
});
