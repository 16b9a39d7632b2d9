import { DTypeError, memory, ones, randn, tensor, ValueError, zeros } from "@blocksparse/core";
import {
  BlockSparseLinear,
  CausalSelfAttention,
  clipGradNorm,
  Dropout,
  distillationLoss,
  Embedding,
  GELU,
  GradScaler,
  LayerNorm,
  klDivergence,
  Linear,
  MLP,
  mseLoss,
  Parameter,
  NnError,
  pruneAndRegrow,
  ReLU,
  saveStateDict,
  SGD,
  Sequential,
  SparseOptimizer,
} from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host } from "./helpers";

describe("Sequential when a module throws", () => {
  it("frees the output of the module before it, and that output's graph", () => {
    const net = new Sequential(new Linear(4, 6, { seed: 1 }), new GELU(), new Linear(6, 3, { seed: 2 }), new Linear(5, 2, { seed: 3 }));
    const x = randn([2, 4], { seed: 1 });
    const before = memory().numTensors;
    expect(() => net.forward(x)).toThrow(/input has 3 features, expected 5/);
    expect(memory().numTensors).toBe(before);
    expect(x.isDisposed).toBe(false);
  });
});

describe("clipGradNorm with a parameter listed twice", () => {
  it("counts a tied parameter once in the norm and scales its gradient once", () => {
    const tied = new Parameter(tensor([3, 4], [2]));
    tied.grad = tensor([3, 4], [2]);
    expect(clipGradNorm([tied, tied], 1)).toBeCloseTo(5, 5);
    const grad = host(tied.grad!);
    expect(grad[0]).toBeCloseTo(0.6, 5);
    expect(grad[1]).toBeCloseTo(0.8, 5);
  });

  it("names a single Parameter (not an iterable) instead of crashing on it", () => {
    const parameter = new Parameter(tensor([1], [1]));
    expect(() => clipGradNorm(parameter as never, 1)).toThrow(ValueError);
    expect(() => clipGradNorm(null as never, 1)).toThrow(/parameters must be an iterable of Parameters/);
  });
});

describe("GradScaler.loadStateDict with a growthTracker past this scaler's growthInterval", () => {
  it("still grows the scale after the next clean step", () => {
    const scaler = new GradScaler({ growthInterval: 2, initScale: 4 });
    scaler.loadStateDict({ scale: 4, growthTracker: 5 });
    const parameter = new Parameter(tensor([1], [1]));
    const optimizer = new SGD([parameter], { lr: 0 });
    parameter.grad = tensor([1], [1]);
    expect(scaler.step(optimizer)).toBe(true);
    scaler.update();
    expect(scaler.scaleFactor).toBe(8);
  });
});

describe("regrowing blocks with a scale that is not a finite number >= 0", () => {
  for (const scale of [Number.NaN, Number.POSITIVE_INFINITY, -1]) {
    it(`pruneAndRegrow refuses scale ${scale} and leaves the layer as it was (no NaN or inf blocks)`, () => {
      const layer = new BlockSparseLinear(8, 8, { density: 0.5, blockShape: [2, 2], seed: 1 });
      const before = host(layer.weight.value);
      expect(() => pruneAndRegrow(layer, { fraction: 0.5, random: 1, newBlocks: "normal", scale })).toThrow(/scale must be a finite number >= 0/);
      expect(host(layer.weight.value)).toEqual(before);
    });
  }

  it("SparseOptimizer refuses a bad scale or newBlocks when it is made, not at its first update", () => {
    const layer = new BlockSparseLinear(8, 8, { density: 0.5, blockShape: [2, 2], seed: 1 });
    expect(() => new SparseOptimizer(layer, { newBlocks: "normal", scale: Number.NaN })).toThrow(ValueError);
    expect(() => new SparseOptimizer(layer, { newBlocks: "ones" as never })).toThrow(/SparseOptimizer: newBlocks must be "zeros" or "normal"/);
  });
});

describe("SparseOptimizer with gradient regrowth on a model without block-sparse layers", () => {
  it("moves nothing instead of failing in backward", () => {
    const net = new Sequential(new Linear(2, 2, { seed: 1 }));
    const sparse = new SparseOptimizer(net, { regrow: "gradient" });
    const x = ones([1, 2]);
    expect(sparse.step(() => mseLoss(net.forward(x), x)).size).toBe(0);
    expect(sparse.calls).toBe(1);
  });
});

describe("registering a child under a name the module already uses for something else", () => {
  it("refuses __proto__, a method, a getter and a field, and keeps the module as it was", () => {
    const net = new Sequential(new ReLU());
    for (const name of ["__proto__", "forward", "dtype", "training"]) {
      expect(() => net.registerModule(name, new GELU())).toThrow(ValueError);
      expect(() => net.registerParameter(name, new Parameter(tensor([1], [1])))).toThrow(/is a property of Sequential, not a module or parameter slot/);
    }
    expect(Object.getPrototypeOf(net)).toBe(Sequential.prototype);
    expect(net.training).toBe(true);
    expect(net.length).toBe(1);
  });

  it("still replaces a child, a parameter and an empty slot", () => {
    const layer = new Linear(2, 2, { bias: false, seed: 1 });
    layer.registerParameter("bias", new Parameter(tensor([1, 2], [2])));
    layer.registerParameter("weight", new Parameter(ones([2, 2])));
    expect(layer.namedParameters().map(([name]) => name)).toEqual(["weight", "bias"]);
    const net = new Sequential(new ReLU());
    net.registerModule("0", new GELU());
    expect(net.at(0)).toBeInstanceOf(GELU);
  });
});

describe("train() with a mode that is not a boolean", () => {
  it("refuses it rather than storing a truthy string", () => {
    const net = new Sequential(new Dropout(0.5));
    expect(() => net.train("no" as never)).toThrow(/train: mode must be a boolean/);
    expect(net.at(0).training).toBe(true);
  });
});

describe("Dropout on an int32 input while it drops", () => {
  it("is a DTypeError naming the layer (the mask's 1 / (1 - p) is not an integer); inactive, it is the identity", () => {
    const ids = tensor([10, 10, 10, 10], [4], "int32");
    expect(() => new Dropout(0.3, { seed: 1 }).forward(ids)).toThrow(DTypeError);
    expect(() => new Dropout(0.5, { seed: 1 }).forward(ids)).toThrow(/Dropout: input has dtype int32, expected a float dtype/);
    expect(Array.from(new Dropout(0.3).eval().forward(ids).dataSync())).toEqual([10, 10, 10, 10]);
  });
});

describe("LayerNorm with an infinite eps", () => {
  it("is refused when the layer is made", () => {
    expect(() => new LayerNorm(4, { eps: Number.POSITIVE_INFINITY })).toThrow(/LayerNorm: eps must be a finite number >= 0/);
    expect(new LayerNorm(4, { eps: 0 }).eps).toBe(0);
  });
});

describe("null for an options argument", () => {
  it("is no options where every option has a default, as in core's ops", () => {
    expect(new Linear(2, 3, null as never).bias).not.toBeNull();
    expect(new Embedding(4, 2, null as never).weight.shape).toEqual([4, 2]);
    expect(new Dropout(0.5, null as never).p).toBe(0.5);
    expect(new LayerNorm(4, null as never).eps).toBe(1e-5);
    const logits = randn([3, 4], { seed: 1 });
    expect(klDivergence(logits, logits, null as never).item()).toBeCloseTo(0, 6);
    expect(distillationLoss(logits, logits, tensor([0, 1, 2], [3], "int32"), null as never).dtype).toBe("float32");
    const layer = new BlockSparseLinear(4, 4, { density: 0.5, blockShape: [2, 2], seed: 1 });
    expect(Array.from(layer.setPattern(layer.pattern, null as never))).toEqual([0, 1]);
    expect(layer.loadStateDict(layer.stateDict(), null as never)).toEqual({ missingKeys: [], unexpectedKeys: [] });
    expect(new SparseOptimizer(layer, null as never).fraction).toBe(0.1);
  });

  it("is a ValueError naming what is required where options are required", () => {
    expect(() => new CausalSelfAttention(null as never)).toThrow(/CausalSelfAttention: options \{ dModel, nHeads \} are required/);
    expect(() => new MLP(null as never)).toThrow(/MLP: options \{ dModel, hidden \} are required/);
    const layer = new BlockSparseLinear(4, 4, { density: 0.5, blockShape: [2, 2], seed: 1 });
    expect(() => pruneAndRegrow(layer, null as never)).toThrow(/pruneAndRegrow: options \{ fraction \} are required/);
  });
});

describe("saveStateDict with a dense entry named like a block-sparse part", () => {
  it("refuses '<name>.crow_indices', which loadStateDict would take for a block-sparse matrix and fail to load", () => {
    const stateDict = new Map([["w.crow_indices", zeros([3], "int32")]]);
    expect(() => saveStateDict(stateDict)).toThrow(NnError);
    expect(() => saveStateDict(stateDict)).toThrow(/dense entry 'w.crow_indices' ends in .crow_indices/);
    expect(saveStateDict(new Map([["w.values", zeros([3])]])).length).toBeGreaterThan(0);
  });
});

describe("GELU with an approximate other than 'none' or 'tanh'", () => {
  it("is refused when the layer is made, not run as the exact GELU where Sequential fuses it", () => {
    expect(() => new GELU("Tanh" as never)).toThrow(ValueError);
    expect(() => new GELU("Tanh" as never)).toThrow(/GELU: approximate must be "none" or "tanh", got "Tanh"/);
    expect(new GELU("tanh").activation).toBe("gelu_tanh");
    expect(new GELU().activation).toBe("gelu");
  });
});
