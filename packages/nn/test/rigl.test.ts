import { backward } from "@blocksparse/autograd";
import { add, BsrPattern, mean, randn, relu, ShapeError, square, sub, sum, type Tensor, tensor, tidy, ValueError } from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/format";
import { Adam, BlockSparseLinear, crossEntropy, Linear, Module, pruneAndRegrow, ReLU, Sequential, SparseOptimizer } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host, syntheticClassification } from "./helpers";

/** A 16x16 layer of 4x4 blocks (4x4 positions) holding exactly the flat positions `held`. */
function layerHolding(held: number[], seed: number): BlockSparseLinear {
  const layer = new BlockSparseLinear(16, 16, { density: held.length / 16, blockShape: [4, 4], seed });
  layer.setPattern(BsrPattern.fromFlatBlocks([16, 16], [4, 4], Int32Array.from(held).sort()));
  layer.weight.value = randn([held.length, 4, 4], { seed: seed + 1 });
  return layer;
}

/** Per flat position, ||(dy^T x) block|| in float64: the oracle for the grown blocks. */
function blockGradientNorms(dy: Float64Array, x: Float64Array, rows: number): number[] {
  const norms = new Array(16).fill(0);
  for (let o = 0; o < 16; o++) {
    for (let i = 0; i < 16; i++) {
      let g = 0;
      for (let r = 0; r < rows; r++) g += dy[r * 16 + o] * x[r * 16 + i];
      norms[Math.floor(o / 4) * 4 + Math.floor(i / 4)] += g * g;
    }
  }
  return norms.map(Math.sqrt);
}

function topAbsent(norms: number[], held: number[], count: number): number[] {
  return norms
    .map((n, flat) => [n, flat])
    .filter(([, flat]) => !held.includes(flat))
    .sort((a, b) => b[0] - a[0] || a[1] - b[1])
    .slice(0, count)
    .map(([, flat]) => flat)
    .sort((a, b) => a - b);
}

describe("RigL: gradient regrowth", () => {
  it("grows exactly the absent blocks where dW = dy^T x is largest (a constructed case)", () => {
    const held = [0, 1, 2, 3, 4, 5, 6, 7];
    const layer = layerHolding(held, 1);
    // dy lives on output rows 8..11 (block row 2) and x on inputs 4..7 and 12..15 (block columns 1 and 3),
    // so dW has only blocks (2, 1) = 9 and (2, 3) = 11, the second four times larger.
    const rows = 3;
    const dy = new Float32Array(rows * 16);
    const x = new Float32Array(rows * 16);
    for (let r = 0; r < rows; r++) {
      for (let o = 8; o < 12; o++) dy[r * 16 + o] = 1;
      for (let i = 4; i < 8; i++) x[r * 16 + i] = 1;
      for (let i = 12; i < 16; i++) x[r * 16 + i] = 4;
    }
    const move = pruneAndRegrow(layer, { fraction: 0.25, regrow: "gradient", gradient: { x: tensor(x, [rows, 16]), dy: tensor(dy, [rows, 16]) } });
    expect(Array.from(move.regrown)).toEqual([9, 11]);
    expect(Array.from(move.pruned)).toHaveLength(2);
  });

  it("matches a float64 oracle on random inputs (leading dims summed), with new blocks at zero, m at zero and v at the old mean", () => {
    const held = [0, 2, 5, 7, 8, 10, 13, 15];
    const layer = layerHolding(held, 3);
    const optimizer = new Adam(layer.parameters(), { lr: 0.01 });
    layer.weight.grad = randn(layer.weight.shape as number[], { seed: 4 });
    optimizer.step();
    const oldV = host(optimizer.stateOf(layer.weight)!.v);
    const meanV = oldV.reduce((a, b) => a + b, 0) / oldV.length;
    const random = new SeededRandom(5);
    const x = random.fillNormal(new Float32Array(2 * 5 * 16), 0, 1);
    const dy = random.fillNormal(new Float32Array(2 * 5 * 16), 0, 1);
    const expected = topAbsent(blockGradientNorms(Float64Array.from(dy), Float64Array.from(x), 10), held, 3);
    const move = pruneAndRegrow(layer, {
      fraction: 3 / 8,
      regrow: "gradient",
      gradient: { x: tensor(x, [2, 5, 16]), dy: tensor(dy, [2, 5, 16]) },
      optimizer,
    });
    expect(Array.from(move.regrown)).toEqual(expected);
    const { blockRow, blockCol } = layer.pattern.coordinates;
    const values = host(layer.weight.value);
    const m = host(optimizer.stateOf(layer.weight)!.m);
    const v = host(optimizer.stateOf(layer.weight)!.v);
    let kept = 0;
    for (let k = 0; k < layer.nnzBlocks; k++) {
      const flat = blockRow[k] * 4 + blockCol[k];
      const block = (a: Float64Array) => Array.from(a.subarray(k * 16, (k + 1) * 16));
      if (expected.includes(flat)) {
        expect(block(values)).toEqual(new Array(16).fill(0));
        expect(block(m)).toEqual(new Array(16).fill(0));
        for (const value of block(v)) expect(value).toBeCloseTo(meanV, 7);
      } else {
        kept++;
        expect(block(m).some((value) => value !== 0)).toBe(true);
      }
    }
    expect(kept).toBe(5);
  });

  it("refuses gradient regrowth without the layer's input and output gradient", () => {
    const layer = layerHolding([0, 1, 2, 3], 6);
    expect(() => pruneAndRegrow(layer, { fraction: 0.5, regrow: "gradient" })).toThrow(ValueError);
    expect(() => pruneAndRegrow(layer, { fraction: 0.5, regrow: "sideways" as "random" })).toThrow(/regrow must be/);
  });

  it("refuses x / dy whose shapes do not fit the layer with a ShapeError naming pruneAndRegrow, the argument and its shape, before any block moves", () => {
    // 8 outputs x 16 inputs, so that swapping x and dy is caught too.
    const layer = new BlockSparseLinear(16, 8, { density: 0.5, blockShape: [4, 4], seed: 3 });
    const before = layer.pattern.blockMask().slice();
    const move = (x: Tensor, dy: Tensor) => () => pruneAndRegrow(layer, { fraction: 0.5, regrow: "gradient", gradient: { x, dy } });
    expect(move(randn([3, 8]), randn([3, 8]))).toThrow(ShapeError);
    expect(move(randn([3, 8]), randn([3, 8]))).toThrow(/^pruneAndRegrow: gradient\.x has shape \[3, 8\], expected \[\.\.\., 16\]/);
    expect(move(randn([3, 16]), randn([3, 16]))).toThrow(/^pruneAndRegrow: gradient\.dy has shape \[3, 16\], expected \[\.\.\., 8\]/);
    expect(move(randn([3, 16]), randn([4, 8]))).toThrow(/^pruneAndRegrow: gradient\.x \[3, 16\] and gradient\.dy \[4, 8\] must have the same leading/);
    const pairs = [{ x: randn([3, 16]), dy: randn([3, 8]) }, { x: randn([2, 16]), dy: randn([3, 8]) }];
    expect(() => pruneAndRegrow(layer, { fraction: 0.5, regrow: "gradient", gradient: pairs })).toThrow(/^pruneAndRegrow: gradient\[1\]\.x \[2, 16\]/);
    expect(layer.pattern.blockMask()).toEqual(before);
  });
});

class TwoLayer extends Module {
  fc1: Module;
  fc2: Module;
  constructor(fc1: Module, fc2: Module) {
    super();
    this.fc1 = fc1;
    this.fc2 = fc2;
  }
  forward(x: Tensor): Tensor {
    return this.fc2.forward(relu(this.fc1.forward(x)));
  }
}

describe("SparseOptimizer with regrow 'gradient'", () => {
  it("grows where a dense copy of the model has its largest weight gradients, and leaves no parameter gradient behind", () => {
    const fc1 = new BlockSparseLinear(16, 16, { density: 0.25, blockShape: [4, 4], seed: 20 });
    const fc2 = new BlockSparseLinear(16, 16, { density: 0.5, blockShape: [4, 4], seed: 21 });
    const model = new TwoLayer(fc1, fc2);
    const { x, y } = syntheticClassification(12, 16, 16, 22);
    const loss = () => crossEntropy(model.forward(x), y);
    // The dense twin: same weights (zeros off the pattern), so its weight gradients are dy^T x everywhere.
    const denseTwin = (layer: BlockSparseLinear) => {
      const linear = new Linear(16, 16);
      linear.weight.value = layer.toDense();
      linear.bias!.value = tensor(Float32Array.from(layer.bias!.value.dataSync()), [16]);
      return linear;
    };
    const twin = new TwoLayer(denseTwin(fc1), denseTwin(fc2));
    tidy(() => backward(crossEntropy(twin.forward(x), y)));
    const expectedFor = (layer: BlockSparseLinear, linear: Linear, count: number) => {
      const grad = host(linear.weight.grad!);
      const norms = new Array(16).fill(0);
      for (let o = 0; o < 16; o++) for (let i = 0; i < 16; i++) norms[Math.floor(o / 4) * 4 + Math.floor(i / 4)] += grad[o * 16 + i] ** 2;
      const held = Array.from(layer.pattern.blockMask()).flatMap((b, flat) => (b ? [flat] : []));
      return topAbsent(norms.map(Math.sqrt), held, count);
    };
    const expected1 = expectedFor(fc1, twin.fc1 as Linear, 2);
    const expected2 = expectedFor(fc2, twin.fc2 as Linear, 4);

    const sparse = new SparseOptimizer(model, { fraction: 0.5, regrow: "gradient", every: 2 });
    expect(sparse.step(loss).size).toBe(0);
    const moves = sparse.step(loss);
    expect(Array.from(moves.get(fc1)!.regrown)).toEqual(expected1);
    expect(Array.from(moves.get(fc2)!.regrown)).toEqual(expected2);
    for (const parameter of model.parameters()) {
      expect(parameter.grad).toBeNull();
      expect(parameter.requiresGrad).toBe(true);
    }
    expect(() => new SparseOptimizer(model, { regrow: "gradient" }).step()).toThrow(/needs a closure/);
    // A closure that fails leaves the model as it was: the class's forwards, parameters requiring gradients.
    expect(() => new SparseOptimizer(model, { regrow: "gradient" }).step(() => mean(sum(x)))).toThrow(/does not track gradients/);
    expect(Object.hasOwn(fc1, "forward")).toBe(false);
    expect(model.parameters().every((p) => p.requiresGrad)).toBe(true);
  });

  it("moves a weight tied between two layers once, grown where the tied weight's gradient (both layers' dy^T x summed) is largest", () => {
    const fc1 = new BlockSparseLinear(16, 16, { density: 0.5, blockShape: [4, 4], seed: 40 });
    const fc2 = new BlockSparseLinear(16, 16, { density: 0.5, blockShape: [4, 4], seed: 41 });
    // As the patcher keeps a tied weight: one Parameter (values and pattern) in both layers; the biases stay apart.
    fc2.registerParameter("weight", fc1.weight);
    const model = new TwoLayer(fc1, fc2);
    const { x, y } = syntheticClassification(12, 16, 16, 42);
    const loss = () => crossEntropy(model.forward(x), y);
    // The dense twin: one Linear holding the tied weight, used twice, so its gradient is the sum over both uses.
    const shared = new Linear(16, 16);
    shared.weight.value = fc1.toDense();
    const bias2 = new Linear(16, 16);
    bias2.registerParameter("weight", shared.weight);
    shared.bias!.value = tensor(Float32Array.from(fc1.bias!.value.dataSync()), [16]);
    bias2.bias!.value = tensor(Float32Array.from(fc2.bias!.value.dataSync()), [16]);
    const twin = new TwoLayer(shared, bias2);
    tidy(() => backward(crossEntropy(twin.forward(x), y)));
    const grad = host(shared.weight.grad!);
    const norms = new Array(16).fill(0);
    for (let o = 0; o < 16; o++) for (let i = 0; i < 16; i++) norms[Math.floor(o / 4) * 4 + Math.floor(i / 4)] += grad[o * 16 + i] ** 2;
    const held = Array.from(fc1.pattern.blockMask()).flatMap((b, flat) => (b ? [flat] : []));
    const expected = topAbsent(norms.map(Math.sqrt), held, 4);

    const optimizer = new Adam(model.parameters(), { lr: 0.01 });
    const sparse = new SparseOptimizer(model, { fraction: 0.5, regrow: "gradient", every: 1 }).attachOptimizer(optimizer);
    const moves = sparse.step(loss);
    // One move, reported for both layers; moved twice, the second would prune blocks the first had just grown.
    expect(moves.get(fc1)).toBe(moves.get(fc2));
    expect(moves.get(fc1)!.pruned.length).toBe(4);
    expect(Array.from(moves.get(fc1)!.regrown)).toEqual(expected);
    expect(fc2.weight).toBe(fc1.weight);
    expect(fc1.nnzBlocks).toBe(8);
    const grown = Array.from(fc1.pattern.blockMask()).flatMap((b, flat) => (b ? [flat] : []));
    for (const flat of expected) expect(grown).toContain(flat);
    // A closure calling only one of the tied layers still regrows the weight (by that layer's gradient).
    const onlyFirst = new SparseOptimizer(model, { fraction: 0.25, regrow: "gradient", every: 1 }).attachOptimizer(optimizer);
    expect(onlyFirst.step(() => mean(sum(relu(fc1.forward(x)))))
      .get(fc2)!.pruned.length).toBe(2);
    optimizer.dispose();
  });

  it("trains a model down while the patterns move by gradient", () => {
    const fc1 = new BlockSparseLinear(16, 32, { density: 0.25, blockShape: [4, 4], seed: 30 });
    const fc2 = new BlockSparseLinear(32, 4, { density: 0.5, blockShape: [4, 4], seed: 31 });
    const model = new TwoLayer(fc1, fc2);
    const { x, y } = syntheticClassification(64, 16, 4, 32);
    const optimizer = new Adam(model.parameters(), { lr: 0.02 });
    const sparse = new SparseOptimizer(model, { fraction: 0.3, every: 5, regrow: "gradient", schedule: "cosine", totalSteps: 40 }).attachOptimizer(optimizer);
    const losses: number[] = [];
    for (let step = 0; step < 60; step++) {
      optimizer.zeroGrad();
      losses.push(tidy(() => {
        const l = crossEntropy(model.forward(x), y);
        backward(l);
        return l.item();
      }));
      optimizer.step();
      sparse.step(() => crossEntropy(model.forward(x), y));
    }
    expect(losses.at(-1)!).toBeLessThan(0.5 * losses[0]);
    expect(fc1.nnzBlocks).toBe(8);
    optimizer.dispose();
  });
});

describe("SparseOptimizer schedule", () => {
  it("decays the moved fraction as RigL's cosine and stops at totalSteps", () => {
    const layer = layerHolding([0, 1, 2, 3, 4, 5, 6, 7], 40);
    const sparse = new SparseOptimizer([layer], { fraction: 0.4, every: 10, schedule: "cosine", totalSteps: 100 });
    expect(sparse.fractionAt(0)).toBeCloseTo(0.4, 12);
    expect(sparse.fractionAt(50)).toBeCloseTo(0.2, 12);
    expect(sparse.fractionAt(25)).toBeCloseTo(0.2 * (1 + Math.SQRT1_2), 12);
    expect(sparse.fractionAt(100)).toBe(0);
    expect(sparse.fractionAt(120)).toBe(0);
    const updates: number[] = [];
    for (let t = 1; t <= 120; t++) if (sparse.step().size > 0) updates.push(t);
    expect(updates).toEqual([10, 20, 30, 40, 50, 60, 70, 80, 90]);
    const constant = new SparseOptimizer([layer], { fraction: 0.25 });
    expect(constant.fractionAt(1e6)).toBe(0.25);
    expect(() => new SparseOptimizer([layer], { schedule: "cosine" })).toThrow(/needs totalSteps/);
    expect(() => new SparseOptimizer([layer], { totalSteps: 0 })).toThrow(ValueError);
  });

  it("moves round(fraction_t * blocks) blocks at each update", () => {
    const layer = layerHolding([0, 1, 2, 3, 4, 5, 6, 7], 41);
    const sparse = new SparseOptimizer([layer], { fraction: 0.5, every: 1, schedule: "cosine", totalSteps: 4, seed: 1 });
    const moved = [1, 2, 3].map(() => sparse.step().get(layer)!.regrown.length);
    expect(moved).toEqual([1, 2, 3].map((t) => Math.round(sparse.fractionAt(t) * 8)));
    expect(moved).toEqual([3, 2, 1]);
  });

  it("skipStep counts a call without moving, so a replica's schedule keeps pace with the deciding rank's", () => {
    const layer = new BlockSparseLinear(16, 16, { density: 0.5, blockShape: [4, 4], seed: 5 });
    const sparse = new SparseOptimizer([layer], { fraction: 0.5, every: 2, seed: 1 });
    const before = layer.pattern;
    sparse.skipStep();
    expect(sparse.calls).toBe(1);
    expect(sparse.willUpdate()).toBe(true);
    sparse.skipStep();
    expect(sparse.calls).toBe(2);
    expect(layer.pattern).toBe(before);
    expect(sparse.optimizer).toBeUndefined();
    const adam = new Adam(layer.parameters());
    expect(sparse.attachOptimizer(adam).optimizer).toBe(adam);
    // Anything else is refused when attached, not at the first pattern move (after step() had counted the call).
    expect(() => sparse.attachOptimizer({} as Adam)).toThrow(ValueError);
    expect(() => sparse.attachOptimizer({} as Adam)).toThrow(/SparseOptimizer.attachOptimizer: expected an Optimizer/);
    expect(sparse.optimizer).toBe(adam);
  });

  it("gradient regrowth sees a layer that Sequential would fuse with its activation (BlockSparseLinear then ReLU)", () => {
    const layer = new BlockSparseLinear(16, 16, { density: 0.5, blockShape: [4, 4], seed: 11 });
    const model = new Sequential(layer, new ReLU(), new Linear(16, 3, { seed: 12 }));
    const sparse = new SparseOptimizer(model, { fraction: 0.25, regrow: "gradient", seed: 2 });
    const x = randn([6, 16], { seed: 13 });
    const y = tensor([0, 1, 2, 0, 1, 2], [6], "int32");
    const moves = sparse.step(() => crossEntropy(model.forward(x), y));
    expect(moves.get(layer)?.regrown.length).toBe(2);
    x.dispose();
    y.dispose();
  });

  it("gradient regrowth sees a layer called through forwardResidual, growing the blocks forward(x) + residual would", () => {
    const x = randn([6, 16], { seed: 15 });
    const target = randn([6, 16], { seed: 16 });
    const grown = (residualForward: boolean) => {
      const layer = new BlockSparseLinear(16, 16, { density: 0.5, blockShape: [4, 4], seed: 14 });
      const run = () => (residualForward ? layer.forwardResidual(x, x) : add(layer.forward(x), x));
      const sparse = new SparseOptimizer([layer], { fraction: 0.25, regrow: "gradient", seed: 3 });
      const regrown = Array.from(sparse.step(() => mean(square(sub(run(), target)))).get(layer)?.regrown ?? []);
      expect(Object.hasOwn(layer, "forwardResidual")).toBe(false);
      return regrown;
    };
    const expected = grown(false);
    expect(expected.length).toBe(2);
    expect(grown(true)).toEqual(expected);
  });

  it("leaves the gradients of parameters outside its target (another module, an array of layers) and of inputs as they were", () => {
    for (const target of ["array", "submodule"]) {
      const body = new Sequential(new BlockSparseLinear(8, 8, { density: 0.5, blockShape: [4, 4], seed: 1 }), new ReLU());
      const head = new Linear(8, 3, { seed: 2 });
      const model = new Sequential(body, head);
      const sparse = new SparseOptimizer(target === "array" ? [body.at(0) as BlockSparseLinear] : body, { regrow: "gradient", fraction: 0.5 });
      const x = randn([4, 8], { seed: 3 });
      x.requiresGrad = true;
      const y = tensor([0, 1, 2, 0], [4], "int32");
      backward(crossEntropy(model.forward(x), y));
      const before = host(head.weight.grad as Tensor);
      const inputGrad = host(x.grad as Tensor);
      head.bias?.zeroGrad(); // a gradient the last step cleared stays cleared
      sparse.step(() => crossEntropy(model.forward(x), y));
      expect(host(head.weight.grad as Tensor)).toEqual(before);
      expect(head.bias?.grad).toBeNull();
      expect(host(x.grad as Tensor)).toEqual(inputGrad);
    }
  });
});
