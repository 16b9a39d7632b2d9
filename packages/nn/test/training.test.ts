import { backward } from "@blocksparse/autograd";
import { memory, type Tensor, tidy } from "@blocksparse/core";
import {
  Adam,
  BlockSparseLinear,
  crossEntropy,
  Dropout,
  Linear,
  loadStateDict,
  type Module,
  parameterCount,
  ReLU,
  Sequential,
  SGD,
  SparseOptimizer,
  saveStateDict,
} from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host, syntheticClassification } from "./helpers";

function train(model: Module, x: Tensor, y: Tensor, steps: number, makeOptimizer: (m: Module) => Adam | SGD, sparse?: SparseOptimizer): number[] {
  const optimizer = makeOptimizer(model);
  if (sparse) sparse.attachOptimizer(optimizer);
  const losses: number[] = [];
  for (let step = 0; step < steps; step++) {
    optimizer.zeroGrad();
    const loss = tidy(() => {
      const l = crossEntropy(model.forward(x), y);
      backward(l);
      return l.item();
    });
    losses.push(loss);
    optimizer.step();
    sparse?.step();
  }
  optimizer.dispose();
  return losses;
}

describe("training a small MLP", () => {
  const { x, y } = syntheticClassification(128, 32, 4, 11);

  it("lowers the loss with dense layers (Adam)", () => {
    const model = new Sequential(new Linear(32, 64, { seed: 1 }), new ReLU(), new Linear(64, 4, { seed: 2 }));
    const losses = train(model, x, y, 30, (m) => new Adam(m.parameters(), { lr: 1e-2 }));
    expect(losses[29]).toBeLessThan(losses[0] * 0.5);
  });

  it("lowers the loss with block-sparse layers (Adam), keeping the parameter count", () => {
    const model = new Sequential(
      new BlockSparseLinear(32, 64, { density: 0.5, blockShape: [8, 8], seed: 1 }),
      new ReLU(),
      new Linear(64, 4, { seed: 2 }),
    );
    const before = parameterCount(model);
    expect(before).toBe(0.5 * 32 * 64 + 64 + 64 * 4 + 4);
    const losses = train(model, x, y, 30, (m) => new Adam(m.parameters(), { lr: 1e-2 }));
    expect(losses[29]).toBeLessThan(losses[0] * 0.5);
    expect(parameterCount(model)).toBe(before);
  });

  it("lowers the loss with SGD and momentum while a SparseOptimizer moves the pattern", () => {
    const layer = new BlockSparseLinear(32, 64, { density: 0.25, blockShape: [8, 8], seed: 3 });
    const model = new Sequential(layer, new ReLU(), new Linear(64, 4, { seed: 4 }));
    const first = layer.pattern;
    const sparse = new SparseOptimizer(model, { fraction: 0.25, every: 5, seed: 5 });
    const losses = train(model, x, y, 40, (m) => new SGD(m.parameters(), { lr: 0.1, momentum: 0.9 }), sparse);
    expect(losses[39]).toBeLessThan(losses[0] * 0.7);
    expect(layer.pattern.equals(first)).toBe(false);
    expect(layer.nnzBlocks).toBe(first.nnzBlocks);
  });
});

describe("memory", () => {
  it("a training loop with a pattern move keeps the number of live tensors and buffers constant", () => {
    const { x, y } = syntheticClassification(16, 16, 4, 12);
    const layer = new BlockSparseLinear(16, 32, { density: 0.5, blockShape: [8, 8], seed: 13 });
    const model = new Sequential(layer, new ReLU(), new Dropout(0.1, { seed: 1 }), new Linear(32, 4, { seed: 14 }));
    const optimizer = new Adam(model.parameters(), { lr: 1e-2 });
    const sparse = new SparseOptimizer(model, { fraction: 0.25, seed: 15 }).attachOptimizer(optimizer);
    const step = () => {
      optimizer.zeroGrad();
      tidy(() => backward(crossEntropy(model.forward(x), y)));
      optimizer.step();
      sparse.step();
    };
    step();
    const before = memory();
    for (let i = 0; i < 3; i++) step();
    const after = memory();
    expect([after.numTensors, after.numBuffers]).toEqual([before.numTensors, before.numBuffers]);
    optimizer.dispose();
  });
});

describe("state dict round trip through safetensors bytes", () => {
  it("reproduces the outputs exactly (dense and block-sparse, after a pattern move)", () => {
    const make = (seed: number) =>
      new Sequential(
        new BlockSparseLinear(16, 32, { density: 0.5, blockShape: [4, 8], seed }),
        new ReLU(),
        new Linear(32, 8, { seed: seed + 1 }),
      );
    const source = make(1);
    const layer = source.at(0) as BlockSparseLinear;
    new SparseOptimizer(source, { fraction: 0.5, seed: 9, newBlocks: "normal" }).step();
    const bytes = tidy(() => saveStateDict(source.stateDict()));
    const target = make(100);
    const loaded = loadStateDict(bytes);
    target.loadStateDict(loaded);
    for (const entry of loaded.values()) entry.dispose();
    expect((target.at(0) as BlockSparseLinear).pattern.equals(layer.pattern)).toBe(true);
    const { x } = syntheticClassification(5, 16, 2, 3);
    const expected = tidy(() => host(source.forward(x)));
    const got = tidy(() => host(target.forward(x)));
    expect(Array.from(got)).toEqual(Array.from(expected));
  });
});
