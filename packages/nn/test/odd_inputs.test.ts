import { backward } from "@blocksparse/autograd";
import { BsrPattern, cast, DTypeError, randn, ShapeError, tensor, tidy, ValueError, zeros } from "@blocksparse/core";
import {
  Adam,
  AdamW,
  BlockSparseLinear,
  type BlockSparseWeight,
  CausalSelfAttention,
  crossEntropy,
  Dropout,
  Embedding,
  disposeStateDict,
  GELU,
  GradScaler,
  Linear,
  MLP,
  mseLoss,
  NnError,
  Parameter,
  pruneAndRegrow,
  Sequential,
  SGD,
  SparseOptimizer,
  StateDictError,
  TransformerBlock,
} from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host } from "./helpers";

function model(seed: number): Sequential {
  return new Sequential(new BlockSparseLinear(8, 6, { density: 0.5, blockShape: [3, 4], seed }), new GELU(), new Linear(6, 4, { seed: seed + 1 }));
}

function trainSteps(net: Sequential, optimizers: (Adam | SGD)[], steps: number): void {
  const dtype = net.dtype ?? "float32";
  const x = tidy(() => cast(randn([5, 8], { seed: 11 }), dtype));
  const y = tensor([0, 1, 2, 3, 1], [5], "int32");
  for (let i = 0; i < steps; i++) {
    net.zeroGrad();
    backward(crossEntropy(net.forward(x), y));
    for (const optimizer of optimizers) optimizer.step();
  }
}

describe("optimizer state across module.to(dtype)", () => {
  for (const [from, to] of [
    ["float32", "bfloat16"],
    ["bfloat16", "float32"],
  ] as const) {
    it(`keeps Adam's moments and step count and SGD's momentum when the model goes ${from} -> ${to}`, () => {
      const net = model(1).to(from);
      const adam = new AdamW(net.parameters(), { lr: 1e-2 });
      const sgd = new SGD(net.parameters(), { lr: 1e-2, momentum: 0.9 });
      trainSteps(net, [adam, sgd], 3);
      const p = net.parameters()[0];
      const v = host(adam.stateOf(p)!.v);
      const buffer = host(sgd.stateOf(p)!.momentumBuffer);
      net.to(to);
      trainSteps(net, [adam, sgd], 1);
      expect(adam.stepsOf(p)).toBe(4);
      expect(sgd.stepsOf(p)).toBe(4);
      // v decays by beta2 and gains (1 - beta2) g^2: never below beta2 * v (a reset state would start from 0).
      const vAfter = host(adam.stateOf(p)!.v);
      for (let i = 0; i < v.length; i++) expect(vAfter[i]).toBeGreaterThanOrEqual(0.999 * v[i] * (1 - 1e-6));
      // momentum * previous buffer + this step's gradient (a reset buffer would be the gradient alone).
      const grad = host(p.grad!);
      const bufferAfter = host(sgd.stateOf(p)!.momentumBuffer);
      for (let i = 0; i < grad.length; i++) expect(bufferAfter[i]).toBeCloseTo(0.9 * buffer[i] + grad[i], 5);
      expect(adam.masterOf(p)?.dtype).toBe(to === "float32" ? undefined : "float32");
      adam.dispose();
      sgd.dispose();
    });
  }

  it("SGD without master weights casts its momentum with the parameters instead of failing on mixed dtypes", () => {
    const net = model(2);
    const sgd = new SGD(net.parameters(), { lr: 1e-2, momentum: 0.9, masterWeights: false });
    trainSteps(net, [sgd], 2);
    net.to("bfloat16");
    trainSteps(net, [sgd], 1);
    const p = net.parameters()[0];
    expect(sgd.stateOf(p)!.momentumBuffer.dtype).toBe("bfloat16");
    expect(sgd.stepsOf(p)).toBe(3);
    net.to("float32");
    trainSteps(net, [sgd], 1);
    expect(sgd.stateOf(p)!.momentumBuffer.dtype).toBe("float32");
    sgd.dispose();
  });
});

describe("optimizer step with a gradient that does not fit its parameter", () => {
  it("refuses a gradient of another shape (even a broadcastable one), naming the parameter, and changes nothing", () => {
    for (const make of [(p: Parameter[]) => new SGD(p, { lr: 1 }), (p: Parameter[]) => new Adam(p, { lr: 1 })]) {
      const fine = new Parameter(tensor([1, 2], [2]));
      const parameter = new Parameter(tensor([1, 2], [2]));
      const optimizer = make([fine, parameter]);
      fine.grad = tensor([1, 1], [2]);
      parameter.grad = tensor([1], [1]);
      expect(() => optimizer.step()).toThrow(ShapeError);
      expect(() => optimizer.step()).toThrow(/params\[1\] has a gradient of shape \[1\], expected its shape \[2\]/);
      expect(host(fine.value)).toEqual(Float64Array.from([1, 2]));
      expect(host(parameter.value)).toEqual(Float64Array.from([1, 2]));
      expect(optimizer.stepsOf(fine)).toBe(0);
      optimizer.dispose();
    }
  });

  it("refuses an int32 gradient", () => {
    const parameter = new Parameter(tensor([1, 2], [2]));
    const optimizer = new SGD([parameter], { lr: 1 });
    parameter.grad = tensor([1, 1], [2], "int32");
    expect(() => optimizer.step()).toThrow(DTypeError);
    expect(host(parameter.value)).toEqual(Float64Array.from([1, 2]));
  });
});

describe("GradScaler without update() between steps", () => {
  it("refuses a second step, which would take new (still scaled) gradients as unscaled", () => {
    const parameter = new Parameter(tensor([1, 2], [2]));
    const optimizer = new SGD([parameter], { lr: 1 });
    const scaler = new GradScaler({ initScale: 1024 });
    parameter.grad = tensor([1024, 1024], [2]);
    expect(scaler.step(optimizer)).toBe(true);
    expect(host(parameter.value)).toEqual(Float64Array.from([0, 1]));
    parameter.zeroGrad();
    parameter.grad = tensor([1024, 1024], [2]);
    expect(() => scaler.step(optimizer)).toThrow(/already called for this optimizer since the last update/);
    expect(() => scaler.unscale(optimizer)).toThrow(ValueError);
    expect(host(parameter.value)).toEqual(Float64Array.from([0, 1]));
    scaler.update();
    expect(scaler.step(optimizer)).toBe(true);
    expect(host(parameter.value)).toEqual(Float64Array.from([-1, 0]));
  });

  it("a skipped (inf) step also counts: update() must come before the next", () => {
    const parameter = new Parameter(tensor([1, 2], [2]));
    const optimizer = new SGD([parameter], { lr: 1 });
    const scaler = new GradScaler({ initScale: 4 });
    parameter.grad = tensor([Number.POSITIVE_INFINITY, 1], [2]);
    expect(scaler.step(optimizer)).toBe(false);
    expect(() => scaler.step(optimizer)).toThrow(ValueError);
    scaler.update();
    expect(scaler.scaleFactor).toBe(2);
  });
});

describe("GradScaler with no inf check recorded (torch raises for each)", () => {
  it("update() with no step() since the last update() is an NnError and leaves the scale and tracker", () => {
    const scaler = new GradScaler({ initScale: 8, growthInterval: 1 });
    expect(() => scaler.update()).toThrow(NnError);
    expect(() => scaler.update()).toThrow("GradScaler.update: no step(optimizer) since the last update()");
    const parameter = new Parameter(tensor([1, 2], [2]));
    const optimizer = new SGD([parameter], { lr: 1 });
    parameter.grad = tensor([8, 8], [2]);
    expect(scaler.step(optimizer)).toBe(true);
    scaler.update();
    expect(scaler.stateDict()).toMatchObject({ scale: 16, growthTracker: 0 });
    // A second update() would count the same step twice toward growth.
    expect(() => scaler.update()).toThrow(NnError);
    expect(scaler.stateDict()).toMatchObject({ scale: 16, growthTracker: 0 });
  });

  it("step() when no parameter has a gradient is an NnError, steps nothing, and update() after it throws too", () => {
    const parameter = new Parameter(tensor([1, 2], [2]));
    const optimizer = new SGD([parameter], { lr: 1 });
    const scaler = new GradScaler({ initScale: 4 });
    expect(() => scaler.step(optimizer)).toThrow(NnError);
    expect(() => scaler.step(optimizer)).toThrow(/GradScaler.step: no parameter of this optimizer has a gradient; call backward\(scaler.scale\(loss\)\) first/);
    expect(scaler.unscale(optimizer)).toBe(true);
    expect(() => scaler.update()).toThrow(NnError);
    expect(host(parameter.value)).toEqual(Float64Array.from([1, 2]));
    expect(scaler.scaleFactor).toBe(4);
    // With a gradient the same scaler steps and updates as usual.
    parameter.grad = tensor([4, 4], [2]);
    expect(scaler.step(optimizer)).toBe(true);
    scaler.update();
    expect(host(parameter.value)).toEqual(Float64Array.from([0, 1]));
  });

  it("a disabled scaler passes through: step() with no gradient and update() with no step() throw nothing, as torch's", () => {
    const parameter = new Parameter(tensor([1, 2], [2]));
    const optimizer = new SGD([parameter], { lr: 1 });
    const scaler = new GradScaler({ enabled: false });
    expect(() => scaler.update()).not.toThrow();
    expect(scaler.step(optimizer)).toBe(true);
    expect(() => scaler.update()).not.toThrow();
    expect(host(parameter.value)).toEqual(Float64Array.from([1, 2]));
  });
});

describe("a disabled GradScaler's state, as torch's", () => {
  it("is {}, and a disabled scaler loads {} or an enabled one's state and keeps nothing", () => {
    const disabled = new GradScaler({ enabled: false, initScale: 8 });
    expect(disabled.stateDict()).toEqual({});
    disabled.loadStateDict({});
    disabled.loadStateDict(new GradScaler({ initScale: 4 }).stateDict());
    expect(disabled.scaleFactor).toBe(1);
    expect(() => disabled.loadStateDict(null as never)).toThrow(ValueError);
  });

  it("loaded into an enabled scaler is a ValueError naming what is missing, and changes nothing", () => {
    const enabled = new GradScaler({ initScale: 8 });
    const empty = new GradScaler({ enabled: false }).stateDict();
    expect(() => enabled.loadStateDict(empty)).toThrow(ValueError);
    expect(() => enabled.loadStateDict(empty)).toThrow("GradScaler.loadStateDict: no scale or growthTracker in the state (a disabled scaler saves {})");
    expect(() => enabled.loadStateDict({ scale: 4 } as never)).toThrow("GradScaler.loadStateDict: no growthTracker in the state (a disabled scaler saves {})");
    expect(enabled.stateDict()).toMatchObject({ scale: 8, growthTracker: 0 });
  });
});

describe("loadStateDict refuses entries that are not weights", () => {
  it("an int32 tensor for a float parameter is a dtype mismatch naming the key, and nothing is loaded", () => {
    const net = model(3);
    const before = net.parameters().map((p) => host(p.value));
    const sd = model(4).stateDict();
    sd.get("2.weight")!.dispose();
    sd.set("2.weight", zeros([4, 6], "int32"));
    const error = (() => {
      try {
        net.loadStateDict(sd);
      } catch (e) {
        return e;
      }
    })() as StateDictError;
    expect(error).toBeInstanceOf(StateDictError);
    expect(error.mismatches).toEqual([{ key: "2.weight", expected: "dtype float32", got: "dtype int32", reason: "dtype" }]);
    expect(error.message).toContain("dtype mismatch for 2.weight: the checkpoint has dtype int32, the model has dtype float32");
    for (const [i, p] of net.parameters().entries()) expect(host(p.value)).toEqual(before[i]);
    disposeStateDict(sd);
  });

  it("a block-sparse entry whose values were disposed is refused before any other entry is loaded", () => {
    const net = model(3);
    const before = net.parameters().map((p) => host(p.value));
    const sd = model(4).stateDict();
    (sd.get("0.weight") as BlockSparseWeight).values.dispose();
    expect(() => net.loadStateDict(sd)).toThrow(/mismatch for 0\.weight: the checkpoint has a disposed tensor/);
    for (const [i, p] of net.parameters().entries()) expect(host(p.value)).toEqual(before[i]);
    disposeStateDict(sd);
  });

  it("a float16 or bfloat16 entry is still cast into a float32 model", () => {
    const net = model(3);
    const sd = model(4).stateDict();
    const bias = sd.get("2.bias")!;
    sd.set("2.bias", tidy(() => cast(bias as never, "bfloat16")));
    bias.dispose();
    net.loadStateDict(sd);
    expect(net.parameters().every((p) => p.dtype === "float32")).toBe(true);
    disposeStateDict(sd);
  });
});

describe("moving patterns with odd inputs", () => {
  it("pruneAndRegrow with newBlocks 'normal' works when too few positions are free and pruned blocks are taken back", () => {
    for (const density of [1, 0.75]) {
      const layer = new BlockSparseLinear(8, 6, { density, blockShape: [3, 4], seed: 1 });
      const nnz = layer.nnzBlocks;
      const move = pruneAndRegrow(layer, { fraction: 0.5, random: 1, newBlocks: "normal" });
      expect(layer.nnzBlocks).toBe(nnz);
      expect(move.regrown.length).toBe(move.pruned.length);
    }
  });

  it("setPattern casts float newValues of another dtype to the weight's (float32 blocks into a bfloat16 layer)", () => {
    const layer = new BlockSparseLinear(8, 6, { density: 0.5, blockShape: [3, 4], seed: 1 }).to("bfloat16");
    const next = BsrPattern.fromFlatBlocks([6, 8], [3, 4], Int32Array.from([0, 1, 2, 3]));
    const sources = layer.setPattern(next, { newValues: tensor(new Float32Array(24).fill(0.5), [2, 3, 4]) });
    expect(layer.weight.dtype).toBe("bfloat16");
    expect(layer.nnzBlocks).toBe(4);
    const values = host(layer.weight.value);
    const added = [...sources.keys()].filter((k) => sources[k] < 0);
    expect(added.length).toBe(2);
    for (const k of added) expect(values.slice(k * 12, (k + 1) * 12).every((v) => v === 0.5)).toBe(true);
  });
});

describe("mseLoss", () => {
  it("names a non-tensor argument instead of crashing on it", () => {
    expect(() => mseLoss([1, 2] as never, tensor([1, 2], [2]))).toThrow(ValueError);
  });

  it("refuses int32 inputs with a DTypeError naming mseLoss, for every reduction (\"sum\" and \"none\" gave an int32 loss)", () => {
    const labels = tensor(Int32Array.from([1, 2]), [2], "int32");
    for (const reduction of ["mean", "sum", "none"] as const) {
      expect(() => mseLoss(labels, labels, reduction)).toThrow(DTypeError);
      expect(() => mseLoss(tensor([1, 2], [2]), labels, reduction)).toThrow(/mseLoss: target has dtype int32, expected a float dtype/);
    }
  });
});

describe("seeds that are not safe integers", () => {
  it("are a ValueError naming the layer (or function) and the option, not format's RangeError", () => {
    for (const seed of [2 ** 60, 1.5]) {
      const calls: [string, () => unknown][] = [
        ["Linear: seed", () => new Linear(4, 4, { seed })],
        ["BlockSparseLinear: seed", () => new BlockSparseLinear(8, 8, { density: 0.5, blockShape: [4, 4], seed })],
        ["Embedding: seed", () => new Embedding(4, 4, { seed })],
        ["Dropout: seed", () => new Dropout(0.5, { seed })],
        ["CausalSelfAttention: seed", () => new CausalSelfAttention({ dModel: 4, nHeads: 2, seed })],
        ["MLP: seed", () => new MLP({ dModel: 4, hidden: 8, seed })],
        ["TransformerBlock: seed", () => new TransformerBlock({ dModel: 4, nHeads: 2, seed })],
        ["SparseOptimizer: seed", () => new SparseOptimizer(new Linear(4, 4, { seed: 1 }), { seed })],
        ["pruneAndRegrow: random", () => pruneAndRegrow(new BlockSparseLinear(8, 8, { density: 0.5, blockShape: [4, 4], seed: 1 }), { fraction: 0.5, random: seed })],
      ];
      for (const [name, call] of calls) {
        expect(call, name).toThrow(ValueError);
        expect(call, name).toThrow(`${name} must be a safe integer (|seed| <= 2^53 - 1), got ${seed}`);
      }
    }
  });
});
