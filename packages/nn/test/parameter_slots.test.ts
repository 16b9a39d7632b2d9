import { memory, ones, tensor, ValueError, zeros } from "@blocksparse/core";
import { BlockSparseLinear, Embedding, GELU, LayerNorm, Linear, Parameter, ReLU, Sequential } from "@blocksparse/nn";
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
