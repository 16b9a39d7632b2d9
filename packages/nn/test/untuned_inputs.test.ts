import { BsrPattern, DTypeError, memory, ones, tensor, tidy, ValueError } from "@blocksparse/core";
import { Adam, AdamW, BlockSparseLinear, clipGradNorm, GradScaler, Linear, NnError, Parameter, SGD } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host } from "./helpers";

function withGrad(parameter: Parameter, values: number[]): Parameter {
  parameter.grad?.dispose();
  parameter.grad = tensor(Float32Array.from(values), [values.length]);
  return parameter;
}

describe("GradScaler at the ends of float32's range", () => {
  it("stops growing where the scale would leave float32's range, so it can still back off (torch keeps it finite too)", () => {
    const scaler = new GradScaler({ initScale: 2 ** 126, growthInterval: 1 });
    const parameter = new Parameter(ones([2]));
    const optimizer = new SGD([parameter], { lr: 0.1 });
    for (let i = 0; i < 4; i++) {
      withGrad(parameter, [1, 1]);
      expect(scaler.step(optimizer)).toBe(true);
      scaler.update();
    }
    expect(scaler.scaleFactor).toBe(2 ** 127);
    withGrad(parameter, [Number.POSITIVE_INFINITY, 1]);
    expect(scaler.step(optimizer)).toBe(false);
    scaler.update();
    expect(scaler.scaleFactor).toBe(2 ** 126);
    optimizer.dispose();
    parameter.dispose();
  });

  it("throws an NnError once inf or NaN gradients at every step would back the scale off to 0 (every later step skipped)", () => {
    const scaler = new GradScaler({ initScale: 2 ** -148 });
    const parameter = new Parameter(ones([2]));
    const optimizer = new SGD([parameter], { lr: 0.1 });
    withGrad(parameter, [Number.NaN, 1]);
    expect(scaler.step(optimizer)).toBe(false);
    scaler.update();
    expect(scaler.scaleFactor).toBe(2 ** -149);
    withGrad(parameter, [Number.NaN, 1]);
    expect(scaler.step(optimizer)).toBe(false);
    expect(() => scaler.update()).toThrow(NnError);
    expect(scaler.scaleFactor).toBe(2 ** -149);
    optimizer.dispose();
    parameter.dispose();
  });

  it("refuses an initial or loaded scale that float32 holds as inf or 0", () => {
    expect(() => new GradScaler({ initScale: 1e300 })).toThrow(/initScale/);
    expect(() => new GradScaler({ initScale: 1e-50 })).toThrow(/initScale/);
    expect(() => new GradScaler().loadStateDict({ scale: 1e39, growthTracker: 0 })).toThrow(/scale/);
    expect(new GradScaler({ initScale: 2 ** 127 }).scaleFactor).toBe(2 ** 127);
  });

  it("names a missing optimizer instead of failing on it", () => {
    const scaler = new GradScaler();
    expect(() => scaler.unscale({} as SGD)).toThrow(ValueError);
    expect(() => new GradScaler({ enabled: false }).step(undefined as unknown as SGD)).toThrow(/expected an Optimizer/);
  });
});

describe("GradScaler.unscale inside a scope", () => {
  it("keeps the gradients it unscales inside tidy(), so that a later clipGradNorm and step() still see them", () => {
    const parameter = new Parameter(ones([2]));
    const optimizer = new SGD([parameter], { lr: 0.5 });
    const scaler = new GradScaler({ initScale: 4 });
    tidy(() => {
      withGrad(parameter, [4, 8]);
      expect(scaler.unscale(optimizer)).toBe(true);
    });
    // They were freed with the scope: the step below then found no gradient and left the weights as they were.
    expect(parameter.grad === null ? null : Array.from(host(parameter.grad))).toEqual([1, 2]);
    expect(clipGradNorm([parameter], 100)).toBeCloseTo(Math.sqrt(5), 6);
    expect(scaler.step(optimizer)).toBe(true);
    scaler.update();
    expect(Array.from(host(parameter.value))).toEqual([0.5, 0]);
    optimizer.dispose();
    parameter.dispose();
  });
});

describe("optimizer hyperparameters set between steps", () => {
  it("are checked at the next step, before any weight changes (a NaN weight decay, nesterov without momentum)", () => {
    const parameter = withGrad(new Parameter(ones([2])), [1, 1]);
    const sgd = new SGD([parameter], { lr: 0.1 });
    sgd.weightDecay = Number.NaN;
    expect(() => sgd.step()).toThrow(/SGD.step: weightDecay/);
    sgd.weightDecay = 0;
    sgd.nesterov = true;
    expect(() => sgd.step()).toThrow(/nesterov/);
    expect(host(parameter.value)).toEqual(new Float64Array([1, 1]));
    expect(sgd.stepsOf(parameter)).toBe(0);
    const adam = new Adam([parameter]);
    adam.weightDecay = -1;
    expect(() => adam.step()).toThrow(/Adam.step: weightDecay/);
    expect(host(parameter.value)).toEqual(new Float64Array([1, 1]));
    sgd.dispose();
    adam.dispose();
    parameter.dispose();
  });

  it("set to undefined take their defaults, as an option left out of the constructor does (NaN weights or a TypeError before)", () => {
    // Each optimizer steps twice with gradient [1, 1] from [1, 2] at lr 1; the hyperparameter is unset after the first step.
    const run = (make: (parameter: Parameter) => SGD | Adam, unset: (optimizer: SGD | Adam) => void) => {
      const parameter = new Parameter(tensor([1, 2], [2]));
      const optimizer = make(parameter);
      withGrad(parameter, [1, 1]);
      optimizer.step();
      unset(optimizer);
      withGrad(parameter, [1, 1]);
      optimizer.step();
      const out = Array.from(host(parameter.value));
      optimizer.dispose();
      parameter.dispose();
      return out;
    };
    const unset = (name: string) => (optimizer: SGD | Adam) => Object.assign(optimizer, { [name]: undefined });
    const sgd = (options: object) => (p: Parameter) => new SGD([p], { lr: 1, ...options });
    // dampening 0: buffer 0.5 * 1 + 1 = 1.5 (it was NaN).
    expect(run(sgd({ momentum: 0.5, dampening: 0.5 }), unset("dampening"))).toEqual([-1.5, -0.5]);
    // momentum 0: plain SGD (the update read an undefined momentum).
    expect(run(sgd({ momentum: 0.5 }), unset("momentum"))).toEqual([-1, 0]);
    // weightDecay 0: [1, 2] - [1.5, 2] = [-0.5, 0], then - [1, 1] (it threw mul's ValueError).
    expect(run(sgd({ weightDecay: 0.5 }), unset("weightDecay"))).toEqual([-1.5, -1]);
    // Adam's betas [0.9, 0.999] (a TypeError), AdamW's weightDecay 0.01: as an optimizer made without them.
    const adam = (p: Parameter) => new Adam([p], { lr: 0.1, betas: [0.5, 0.6] });
    const plainAdam = (p: Parameter) => new Adam([p], { lr: 0.1 });
    expect(run(adam, unset("betas"))).toEqual(run(adam, (o) => Object.assign(o, { betas: [0.9, 0.999] })));
    expect(run(plainAdam, unset("eps"))).toEqual(run(plainAdam, () => {}));
    const adamW = (p: Parameter) => new AdamW([p], { lr: 0.1, weightDecay: 0.5 });
    expect(run(adamW, unset("weightDecay"))).toEqual(run(adamW, (o) => Object.assign(o, { weightDecay: 0.01 })));
  });

  it("SGD's momentum turned on after a step starts a buffer (it threw), and turned off drops it; state dicts follow", () => {
    const before = memory().numTensors;
    const parameter = new Parameter(ones([2]));
    const sgd = new SGD([parameter], { lr: 0.5 });
    withGrad(parameter, [1, 2]);
    sgd.step(); // [0.5, 0]
    sgd.momentum = 0.5;
    // Saved before the next step: no buffer (no step has written one), named in fresh, so that the dict loads back.
    const saved = sgd.stateDict();
    expect(saved.steps).toEqual([1]);
    expect([...saved.tensors.keys()]).toEqual([]);
    expect(saved.fresh).toEqual(["0.momentumBuffer"]);
    const fresh = new SGD([new Parameter(ones([2]))], { lr: 0.5 });
    fresh.loadStateDict(saved);
    for (const t of saved.tensors.values()) t.dispose();
    withGrad(parameter, [1, 2]);
    sgd.step(); // buffer 0.5 * 0 + g = [1, 2]: [0, -1]
    withGrad(parameter, [1, 2]);
    sgd.step(); // buffer 0.5 * [1, 2] + g = [1.5, 3]: [-0.75, -2.5]
    expect(host(parameter.value)).toEqual(new Float64Array([-0.75, -2.5]));
    sgd.momentum = 0;
    const plain = sgd.stateDict();
    expect([...plain.tensors.keys()]).toEqual([]);
    const other = new Parameter(ones([2]));
    new SGD([other], { lr: 0.5 }).loadStateDict(plain);
    other.dispose();
    withGrad(parameter, [1, 2]);
    sgd.step();
    expect(host(parameter.value)).toEqual(new Float64Array([-1.25, -3.5]));
    expect(Object.keys(sgd.stateOf(parameter) ?? {})).toEqual([]);
    sgd.dispose();
    fresh.dispose();
    for (const p of fresh.params) p.dispose();
    parameter.dispose();
    expect(memory().numTensors).toBe(before);
  });
});

describe("setPattern with an optimizer or newValues of the wrong kind", () => {
  it("is a ValueError naming the option, and the layer keeps its pattern and values", () => {
    const layer = new BlockSparseLinear(8, 8, { density: 0.25, blockShape: [4, 4], seed: 1 });
    const pattern = layer.pattern;
    const values = host(layer.weight.value);
    const dense = BsrPattern.random([8, 8], { blockShape: [4, 4], density: 1, seed: 1 });
    expect(() => layer.setPattern(dense, { optimizer: {} as Adam })).toThrow(/optimizer must be an Optimizer or an array of them/);
    expect(() => layer.setPattern(dense, { newValues: [1, 2] as never })).toThrow(/newValues must be a Tensor/);
    expect(layer.pattern).toBe(pattern);
    expect(host(layer.weight.value)).toEqual(values);
    layer.weight.dispose();
    layer.bias?.dispose();
  });
});

describe("Module.to with a dtype that is not a float", () => {
  it("is a DTypeError naming the float dtypes, as to({ dtype }) gives and torch's module.to(torch.int32) refuses (it was a BackendError for a backend 'int32')", () => {
    const model = new Linear(2, 3, { seed: 1 });
    expect(() => model.to("int32")).toThrow(DTypeError);
    expect(() => model.to("int32")).toThrow(/Module\.to: dtype must be one of float32, float16, bfloat16, got "int32"/);
    expect(model.weight.dtype).toBe("float32");
    expect(model.to("bfloat16").dtype).toBe("bfloat16");
    for (const parameter of model.parameters()) parameter.dispose();
  });
});

describe("Module.to with a dtype this library lacks", () => {
  // torch's module.to(torch.float64) casts; a float64 or int64 here was looked up as a backend and reported as one not registered.
  it("is a DTypeError naming the float dtypes (float64, int64, uint8, float8_e4m3fn alike), and another name is still a backend", () => {
    const model = new Linear(2, 3, { seed: 1 });
    for (const name of ["float64", "int64", "uint8", "complex64", "float8_e4m3fn"]) {
      expect(() => model.to(name)).toThrow(DTypeError);
      expect(() => model.to(name)).toThrow(`Module.to: dtype must be one of float32, float16, bfloat16, got "${name}"`);
    }
    expect(() => model.to("gpu0")).toThrow(/Backend 'gpu0' is not registered/);
    // Other names for a dtype (torch's half(), bf16) were looked up as backends too: the error now says which name to write.
    for (const [name, dtype] of [["half", "float16"], ["BF16", "bfloat16"], ["float", "float32"], ["fp16", "float16"]]) {
      expect(() => model.to(name)).toThrow(DTypeError);
      expect(() => model.to(name)).toThrow(`Module.to: "${name}" is not a dtype's name here: write "${dtype}" (dtypes: float32, float16, bfloat16)`);
    }
    expect(model.weight.dtype).toBe("float32");
    for (const parameter of model.parameters()) parameter.dispose();
  });
});

describe("a Parameter of int32 values", () => {
  it("is refused (only float tensors take gradients), and the tensor is not kept past its scope", () => {
    const before = memory().numTensors;
    tidy(() => {
      const ids = tensor([1, 2, 3], [3], "int32");
      expect(() => new Parameter(ids)).toThrow(DTypeError);
      expect(() => new Parameter(ids)).toThrow(/only float tensors can/);
    });
    expect(memory().numTensors).toBe(before);
    // requiresGrad: false is an int32 parameter no optimizer updates (a lookup table).
    const table = new Parameter(tensor([1, 2, 3], [3], "int32"), { requiresGrad: false });
    expect(table.value.dtype).toBe("int32");
    table.value.dispose();
    expect(memory().numTensors).toBe(before);
  });
});
