import { memory, ones, tensor, ValueError, zeros } from "@blocksparse/core";
import { Adam, BlockSparseLinear, Embedding, functionalCall, GELU, LayerNorm, Linear, type Module, Parameter, ReLU, Sequential } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";

// torch refuses a plain tensor in a parameter's attribute ("cannot assign 'torch.FloatTensor' as parameter 'bias'"):
// a Tensor there is not one of the layer's parameters, and was read as no bias at all.
describe("a layer's weight or bias that is not a Parameter", () => {
  const layers = () => [new Linear(4, 4, { seed: 1 }), new BlockSparseLinear(4, 4, { density: 1, blockShape: [2, 2], seed: 1 })];

  it("is refused by forward, forwardActivation, forwardResidual and the fused paths, naming the layer and the slot", () => {
    for (const layer of layers()) {
      (layer as unknown as { bias: unknown }).bias = ones([4]);
      const x = ones([2, 4]);
      const bias = /'bias' is a Tensor, not a Parameter; assign new Parameter\(tensor\) \(or null for no bias\)/;
      expect(() => layer.forward(x)).toThrow(ValueError);
      expect(() => layer.forward(x)).toThrow(new RegExp(`${layer.constructor.name}.*${bias.source}`));
      expect(() => layer.forwardActivation(x, "relu")).toThrow(bias);
      expect(() => layer.forwardResidual(x, zeros([2, 4]))).toThrow(bias);
      expect(() => new Sequential(layer, new GELU()).forward(x)).toThrow(bias);
      expect(() => new Sequential(new Sequential(layer), new ReLU()).forward(x)).toThrow(bias);
      (layer as unknown as { bias: unknown }).bias = null;
      (layer as unknown as { weight: unknown }).weight = layer.weight.value;
      expect(() => layer.forward(x)).toThrow(/'weight' is a Tensor, not a Parameter; assign new Parameter\(tensor\)$/);
    }
  });

  it("a Parameter or null still works", () => {
    const layer = new Linear(2, 1, { seed: 1 });
    layer.weight = new Parameter(tensor([[1, 2]]));
    layer.bias = new Parameter(tensor([10]));
    expect(Array.from(layer.forward(tensor([[1, 1]])).dataSync())).toEqual([13]);
    layer.bias = null;
    expect(Array.from(layer.forward(tensor([[1, 1]])).dataSync())).toEqual([3]);
  });

  it("fromLinear refuses it before building anything", () => {
    const linear = new Linear(4, 4, { seed: 1 });
    (linear as unknown as { bias: unknown }).bias = ones([4]);
    const before = memory().numTensors;
    expect(() => BlockSparseLinear.fromLinear(linear, { density: 0.5, blockShape: [2, 2] })).toThrow(/'bias' is a Tensor, not a Parameter/);
    expect(memory().numTensors).toBe(before);
  });
});

describe("BlockSparseLinear.fromLinear", () => {
  it("frees the blocks it built when the bias cannot be taken (a disposed bias)", () => {
    const linear = new Linear(4, 4, { seed: 1 });
    linear.bias?.value.dispose();
    const before = memory().numTensors;
    expect(() => BlockSparseLinear.fromLinear(linear, { density: 0.5, blockShape: [2, 2] })).toThrow(/disposed/);
    expect(memory().numTensors).toBe(before);
  });
});

describe("LayerNorm's and Embedding's parameters that are not Parameters", () => {
  // LayerNorm read weight?.value: a Tensor scale or shift was dropped (a plain normalization came out); Embedding's
  // gather was handed undefined.
  it("are refused, naming the layer and the slot; null scale and shift still mean none", () => {
    const norm = new LayerNorm(4);
    const x = tensor([1, 2, 3, 5, 0, 1, 0, 1], [2, 4]);
    const plain = Array.from(new LayerNorm(4, { elementwiseAffine: false }).forward(x).dataSync());
    (norm as unknown as { weight: unknown }).weight = ones([4]);
    expect(() => norm.forward(x)).toThrow(/LayerNorm.*'weight' is a Tensor, not a Parameter; assign new Parameter\(tensor\) \(or null for no weight\)/);
    norm.weight = null;
    norm.bias = null;
    expect(Array.from(norm.forward(x).dataSync())).toEqual(plain);
    const embedding = new Embedding(5, 3);
    (embedding as unknown as { weight: unknown }).weight = zeros([5, 3]);
    expect(() => embedding.forward(tensor([1, 2], [2], "int32"))).toThrow(/Embedding.*'weight' is a Tensor, not a Parameter; assign new Parameter\(tensor\)$/);
  });
});

// Before forward runs, the tree's walks skipped a Tensor in a declared slot: parameters() (and so every optimizer),
// stateDict() and loadStateDict() left it out silently, as if the layer had no bias. torch refuses it at assignment.
describe("the tree's walks and a Tensor in a layer's parameter slot", () => {
  const cases: [string, () => Module, "weight" | "bias", boolean][] = [
    ["Linear", () => new Linear(4, 4, { seed: 1 }), "bias", true],
    ["Linear", () => new Linear(4, 4, { seed: 1 }), "weight", false],
    ["BlockSparseLinear", () => new BlockSparseLinear(4, 4, { density: 0.5, blockShape: [2, 2], seed: 1 }), "bias", true],
    ["LayerNorm", () => new LayerNorm(4), "weight", true],
    ["Embedding", () => new Embedding(5, 4, { seed: 1 }), "weight", false],
  ];
  for (const [kind, make, slot, optional] of cases) {
    it(`${kind}'s ${slot}: refused by parameters, namedParameters, stateDict, loadStateDict, functionalCall and an optimizer, naming the path`, () => {
      const layer = make();
      const model = new Sequential(new Linear(4, 4, { seed: 2 }), layer);
      const saved = model.stateDict();
      const held = (layer as unknown as Record<string, Parameter>)[slot].value;
      (layer as unknown as Record<string, unknown>)[slot] = held;
      const message = `${kind}(1): '${slot}' is a Tensor, not a Parameter; assign new Parameter(tensor)${optional ? ` (or null for no ${slot})` : ""}`;
      for (const walk of [() => model.parameters(), () => model.namedParameters(), () => model.stateDict(), () => new Adam(model.parameters(), { lr: 0.1 })]) {
        expect(walk).toThrow(ValueError);
        expect(walk).toThrow(message);
      }
      expect(() => model.loadStateDict(saved)).toThrow(message);
      expect(() => functionalCall(model, {}, () => null)).toThrow(message);
      // The layer's own walk names it without a path, as its forward does.
      expect(() => layer.parameters()).toThrow(new RegExp(`^${kind}: '${slot}'`));
      expect((layer as unknown as Record<string, unknown>)[slot]).toBe(held);
    });
  }

  it("null and deleted slots are still no parameter", () => {
    const model = new Sequential(new Linear(4, 4, { bias: false }), new LayerNorm(4, { elementwiseAffine: false }), new BlockSparseLinear(4, 4, { density: 1, blockShape: [2, 2] }));
    delete (model.at(2) as { bias?: unknown }).bias;
    expect(model.namedParameters().map(([name]) => name)).toEqual(["0.weight", "2.weight"]);
    expect([...model.stateDict().keys()]).toEqual(["0.weight", "2.weight"]);
  });

  it("a BlockSparseLinear's Tensor bias is the same typed error from stateDict, not a failure inside it", () => {
    const layer = new BlockSparseLinear(4, 4, { density: 0.5, blockShape: [2, 2], seed: 1 });
    (layer as unknown as { bias: unknown }).bias = ones([4]);
    expect(() => layer.stateDict()).toThrow(ValueError);
    expect(() => layer.stateDict()).toThrow("BlockSparseLinear: 'bias' is a Tensor, not a Parameter; assign new Parameter(tensor) (or null for no bias)");
  });
});

// The blocks are ranked by norm: a NaN (or infinite) value gives its block a NaN (or infinite) norm, and the ranking
// kept the lowest-numbered blocks of an all-NaN weight, and the broken blocks first of a partly-NaN one, silently.
describe("BlockSparseLinear.fromLinear on a weight with non-finite values", () => {
  const withWeight = (values: number[]): Linear => {
    const linear = new Linear(4, 4, { seed: 1 });
    linear.weight = new Parameter(tensor(values, [4, 4]));
    return linear;
  };
  const finite = Array.from({ length: 16 }, (_, i) => i - 8);

  it("is refused for an all-NaN, a partly-NaN and an infinite weight, naming the layer and the first such value's place, leaking nothing", () => {
    const cases: [number[], RegExp][] = [
      [finite.map(() => Number.NaN), /Linear's weight holds NaN at \[0, 0\]: a non-finite weight has no strongest blocks to keep$/],
      [finite.map((v, i) => (i === 6 || i === 13 ? Number.NaN : v)), /Linear's weight holds NaN at \[1, 2\]: a non-finite/],
      [finite.map((v, i) => (i === 9 ? Number.NEGATIVE_INFINITY : v)), /Linear's weight holds -Infinity at \[2, 1\]: a non-finite/],
    ];
    for (const [values, message] of cases) {
      const linear = withWeight(values);
      const before = memory().numTensors;
      expect(() => BlockSparseLinear.fromLinear(linear, { density: 0.5, blockShape: [2, 2] })).toThrow(ValueError);
      expect(() => BlockSparseLinear.fromLinear(linear, { density: 0.5, blockShape: [2, 2] })).toThrow(message);
      expect(memory().numTensors).toBe(before);
    }
  });

  it("names the layer's path once a walk named it", () => {
    const model = new Sequential(withWeight(finite.map(() => Number.NaN)));
    model.namedModules();
    expect(() => BlockSparseLinear.fromLinear(model.at(0) as Linear, { density: 0.5, blockShape: [2, 2] })).toThrow(/^BlockSparseLinear\.fromLinear: Linear\(0\)'s weight holds NaN at \[0, 0\]/);
  });

  it("a finite weight still keeps its strongest blocks", () => {
    const layer = BlockSparseLinear.fromLinear(withWeight(finite), { density: 0.5, blockShape: [2, 2] });
    expect(Array.from(layer.pattern.blockMask())).toEqual([1, 0, 0, 1]);
  });
});
