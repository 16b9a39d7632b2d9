import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BsrPattern, cast, type FloatDType, memory, randn, type Tensor, tensor, tidy, zeros } from "@blocksparse/core";
import {
  Adam,
  AdamW,
  BlockSparseLinear,
  backward,
  disposeStateDict,
  inverseDensity,
  Linear,
  loadOptimizerState,
  type Module,
  mseLoss,
  NnError,
  type Optimizer,
  type OptimizerStateDict,
  Parameter,
  SGD,
  Sequential,
  saveOptimizerState,
  saveStateDict,
  StateDictError,
  ValueError,
} from "@blocksparse/nn";
import { loadOptimizer, saveOptimizer } from "@blocksparse/nn/node";
import { afterAll, describe, expect, it } from "vitest";
import { checkpointBytes, resumeFromBytes } from "./helpers";

type Kind = "SGD" | "Adam" | "AdamW";
type Layer = "Linear" | "BlockSparseLinear";

function makeModel(layer: Layer, dtype: FloatDType, seed: number): Linear | BlockSparseLinear {
  const model = layer === "Linear" ? new Linear(8, 8, { seed }) : new BlockSparseLinear(8, 8, { density: 0.5, blockShape: [4, 4], seed });
  return model.to(dtype);
}

/** The optimizer under test; `other` gives it other hyperparameters, which a load must replace (lrScale is how it is made, not state). */
function makeOptimizer(kind: Kind, params: Parameter[], other = false, capturable = false): Optimizer {
  if (kind === "SGD") return new SGD(params, other ? { lr: 0.5 } : { lr: 0.05, momentum: 0.9, weightDecay: 0.01 });
  const options = other ? { lr: 0.5, betas: [0.5, 0.5] as const, lrScale: inverseDensity } : { lr: 0.01, betas: [0.8, 0.95] as const, lrScale: inverseDensity, capturable };
  return kind === "Adam" ? new Adam(params, options) : new AdamW(params, options);
}

/** One training step on data fixed by `step`, the same for every model. */
function trainStep(model: Module, optimizer: Optimizer, step: number): void {
  const dtype = model.dtype ?? "float32";
  tidy(() => {
    const x = cast(randn([6, 8], { seed: 100 + step }), dtype);
    backward(mseLoss(model.forward(x), randn([6, 8], { seed: 200 + step })));
  });
  optimizer.step();
  optimizer.zeroGrad();
}

const bits = (t: Tensor) => Array.from(t.dataSync());

/**
 * The resumed run against the uninterrupted one after 6 steps, bit for bit: weights, step counts, master copies (which
 * exist exactly when `withMaster`), and each state tensor's dtype and values. Then both are disposed.
 */
function expectSameRun(run: [Module, Optimizer], resumedRun: [Module, Optimizer], withMaster: boolean): void {
  const [[model, optimizer], [resumed, resumedOptimizer]] = [run, resumedRun];
  const [a, b] = [model.parameters(), resumed.parameters()];
  for (let i = 0; i < a.length; i++) {
    expect(bits(b[i].value)).toEqual(bits(a[i].value));
    expect(resumedOptimizer.stepsOf(b[i])).toBe(6);
    const masterA = optimizer.masterOf(a[i]);
    expect(masterA !== undefined).toBe(withMaster);
    if (masterA) expect(bits(resumedOptimizer.masterOf(b[i]) as Tensor)).toEqual(bits(masterA));
    for (const [name, t] of Object.entries(optimizer.stateOf(a[i]) ?? {})) {
      const resumedState = resumedOptimizer.stateOf(b[i])?.[name] as Tensor;
      expect(resumedState.dtype).toBe(t.dtype);
      expect(bits(resumedState)).toEqual(bits(t));
    }
  }
  for (const o of [optimizer, resumedOptimizer]) o.dispose();
  for (const m of [model, resumed]) for (const p of m.parameters()) p.dispose();
}

describe("optimizer state dicts resume training bit for bit", () => {
  for (const kind of ["SGD", "Adam", "AdamW"] as const) {
    for (const layer of ["Linear", "BlockSparseLinear"] as const) {
      for (const dtype of ["float32", "bfloat16"] as const) {
        it(`${kind}, ${layer}, ${dtype}: 3 steps, save to safetensors bytes, load into a fresh model and optimizer, 3 more = 6 uninterrupted`, () => {
          const model = makeModel(layer, dtype, 1);
          const optimizer = makeOptimizer(kind, model.parameters());
          for (let step = 0; step < 3; step++) {
            trainStep(model, optimizer, step);
            // A pattern moved mid-run: the state follows it, and the checkpoint carries it.
            if (step === 1 && model instanceof BlockSparseLinear) model.setPattern(BsrPattern.random([8, 8], { blockShape: [4, 4], density: 0.75, seed: 9 }), { optimizer });
          }
          const saved = checkpointBytes(model, optimizer);
          for (let step = 3; step < 6; step++) trainStep(model, optimizer, step);

          const resumed = makeModel(layer, dtype, 2);
          const resumedOptimizer = makeOptimizer(kind, resumed.parameters(), true);
          resumeFromBytes(resumed, resumedOptimizer, saved);
          expect(resumedOptimizer.lr).toBe(optimizer.lr);
          for (let step = 3; step < 6; step++) trainStep(resumed, resumedOptimizer, step);

          expectSameRun([model, optimizer], [resumed, resumedOptimizer], dtype !== "float32");
        });
      }
    }
  }

  it("capturable Adam: steps counted on the device are saved and restored, in memory", () => {
    const model = makeModel("BlockSparseLinear", "bfloat16", 1);
    const optimizer = makeOptimizer("Adam", model.parameters(), false, true);
    for (let step = 0; step < 2; step++) trainStep(model, optimizer, step);
    const resumed = makeModel("BlockSparseLinear", "bfloat16", 1);
    const resumedOptimizer = makeOptimizer("Adam", resumed.parameters(), false, true);
    const modelDict = model.stateDict();
    resumed.loadStateDict(modelDict);
    disposeStateDict(modelDict);
    const optimizerDict = optimizer.stateDict();
    expect(optimizerDict.steps).toEqual([2, 2]);
    resumedOptimizer.loadStateDict(optimizerDict);
    disposeStateDict(optimizerDict.tensors);
    for (let step = 2; step < 4; step++) {
      trainStep(model, optimizer, step);
      trainStep(resumed, resumedOptimizer, step);
    }
    expect(bits(resumed.weight.value)).toEqual(bits(model.weight.value));
    expect(resumedOptimizer.stepsOf(resumed.weight)).toBe(4);
  });

  const dir = mkdtemp(join(tmpdir(), "nn-optim-"));
  afterAll(async () => rm(await dir, { recursive: true, force: true }));

  it("saveOptimizer / loadOptimizer round-trip a file (node)", async () => {
    const path = join(await dir, "optimizer.safetensors");
    const model = makeModel("BlockSparseLinear", "float32", 1);
    const optimizer = makeOptimizer("AdamW", model.parameters());
    trainStep(model, optimizer, 0);
    await saveOptimizer(optimizer, path);
    const resumedOptimizer = makeOptimizer("AdamW", model.parameters(), true);
    await loadOptimizer(resumedOptimizer, path);
    expect(resumedOptimizer.lr).toBe(0.01);
    expect((resumedOptimizer as AdamW).betas).toEqual([0.8, 0.95]);
    expect(bits(resumedOptimizer.stateOf(model.weight)?.v as Tensor)).toEqual(bits(optimizer.stateOf(model.weight)?.v as Tensor));
    // A model checkpoint is not an optimizer's.
    await expect(loadOptimizer(resumedOptimizer, join(await dir, "missing.safetensors"))).rejects.toThrow();
    expect(() => loadOptimizerState(saveStateDict(new Map()))).toThrow(NnError);
    expect(() => loadOptimizerState(saveStateDict(new Map()))).toThrow(/no 'optimizer' metadata/);
  });
});

describe("optimizer state dicts taken between module.to(dtype) and the next step resume bit for bit", () => {
  type Cast = [FloatDType, FloatDType];
  type MasterWeights = "auto" | false;

  /** A Linear and a BlockSparseLinear in `dtype`. */
  function makeNet(dtype: FloatDType, seed: number): Sequential {
    return new Sequential(new Linear(8, 8, { seed }), new BlockSparseLinear(8, 8, { density: 0.5, blockShape: [4, 4], seed: seed + 1 })).to(dtype);
  }

  function makeCastOptimizer(kind: Kind, params: Parameter[], masterWeights: MasterWeights): Optimizer {
    if (kind === "SGD") return new SGD(params, { lr: 0.05, momentum: 0.9, masterWeights });
    const options = { lr: 0.01, betas: [0.8, 0.95] as const, masterWeights };
    return kind === "Adam" ? new Adam(params, options) : new AdamW(params, options);
  }

  /** 3 steps in `from`, cast to `to`, the state dict, 3 more steps; and a fresh cast model and optimizer loading both dicts, 3 steps. */
  function resumeAcrossCast(kind: Kind, [from, to]: Cast, masterWeights: MasterWeights): void {
    const model = makeNet(from, 1);
    const optimizer = makeCastOptimizer(kind, model.parameters(), masterWeights);
    for (let step = 0; step < 3; step++) trainStep(model, optimizer, step);
    model.to(to);
    const live = memory().numTensors;
    const saved = checkpointBytes(model, optimizer);
    expect(memory().numTensors).toBe(live);
    for (let step = 3; step < 6; step++) trainStep(model, optimizer, step);

    const resumed = makeNet(to, 2);
    const resumedOptimizer = makeCastOptimizer(kind, resumed.parameters(), masterWeights);
    resumeFromBytes(resumed, resumedOptimizer, saved);
    for (let step = 3; step < 6; step++) trainStep(resumed, resumedOptimizer, step);

    expectSameRun([model, optimizer], [resumed, resumedOptimizer], to !== "float32" && masterWeights !== false);
  }

  const casts: Cast[] = [
    ["bfloat16", "float32"],
    ["float32", "bfloat16"],
    ["bfloat16", "float16"],
  ];
  for (const kind of ["Adam", "AdamW"] as const) {
    for (const dtypes of casts) {
      for (const masterWeights of ["auto", false] as const) {
        it(`${kind}, masterWeights ${masterWeights}: ${dtypes[0]} -> ${dtypes[1]}, saved before the next step, resumes in a fresh optimizer as if uninterrupted`, () => {
          resumeAcrossCast(kind, dtypes, masterWeights);
        });
      }
    }
  }

  // Without master weights SGD keeps its momentum in the parameter's dtype: the cast changes the buffer's dtype.
  for (const dtypes of casts) {
    it(`SGD with momentum, masterWeights false: ${dtypes[0]} -> ${dtypes[1]}, saved before the next step, resumes in a fresh optimizer as if uninterrupted`, () => {
      resumeAcrossCast("SGD", dtypes, false);
    });
  }

  const dir = mkdtemp(join(tmpdir(), "nn-optim-cast-"));
  afterAll(async () => rm(await dir, { recursive: true, force: true }));

  it("saveOptimizer / loadOptimizer after a cast, into the same optimizer: the run goes on as without them (node)", async () => {
    const path = join(await dir, "cast.safetensors");
    const [model, twin] = [makeNet("float32", 1), makeNet("float32", 1)];
    const [optimizer, uninterrupted] = [makeCastOptimizer("AdamW", model.parameters(), "auto"), makeCastOptimizer("AdamW", twin.parameters(), "auto")];
    for (let step = 0; step < 2; step++) {
      trainStep(model, optimizer, step);
      trainStep(twin, uninterrupted, step);
    }
    for (const m of [model, twin]) m.to("bfloat16");
    const live = memory().numTensors;
    await saveOptimizer(optimizer, path);
    // At most as many: across the await, the finalizers may free tensors the cast left unreachable.
    expect(memory().numTensors).toBeLessThanOrEqual(live);
    await loadOptimizer(optimizer, path);
    for (let step = 2; step < 4; step++) {
      trainStep(model, optimizer, step);
      trainStep(twin, uninterrupted, step);
    }
    const [a, b] = [model.parameters(), twin.parameters()];
    for (let i = 0; i < a.length; i++) expect(bits(a[i].value)).toEqual(bits(b[i].value));
    for (const o of [optimizer, uninterrupted]) o.dispose();
    for (const m of [model, twin]) for (const p of m.parameters()) p.dispose();
  });

});

describe("Optimizer.loadStateDict checks everything before changing anything", () => {
  /** A trained Linear(8, 8) model's optimizer and its state dict. */
  function trained(kind: Kind = "Adam", dtype: FloatDType = "float32") {
    const model = makeModel("Linear", dtype, 1);
    const optimizer = makeOptimizer(kind, model.parameters());
    trainStep(model, optimizer, 0);
    return { model, optimizer, stateDict: optimizer.stateDict() };
  }

  /** Runs `load` (which must throw `error` matching `message`), then checks the target optimizer kept its state and lr, and nothing leaked. */
  function refuses(target: Optimizer, load: () => void, error: new (...args: never[]) => Error, message: RegExp): Error {
    const before = target.params.map((p) => bits(target.stateOf(p)?.m ?? target.stateOf(p)?.momentumBuffer ?? p.value));
    const lr = target.lr;
    const live = memory().numTensors;
    let thrown: unknown;
    try {
      load();
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(error);
    expect((thrown as Error).message).toMatch(message);
    expect(memory().numTensors).toBe(live);
    expect(target.lr).toBe(lr);
    expect(target.params.map((p) => bits(target.stateOf(p)?.m ?? target.stateOf(p)?.momentumBuffer ?? p.value))).toEqual(before);
    return thrown as Error;
  }

  it("refuses another kind of optimizer, another number of parameters, bad or unknown hyperparameters", () => {
    const { stateDict } = trained("Adam");
    const target = trained("AdamW").optimizer;
    refuses(target, () => target.loadStateDict(stateDict), ValueError, /state dict is of "Adam", not AdamW/);
    const adam = trained("Adam").optimizer;
    refuses(adam, () => adam.loadStateDict({ ...stateDict, steps: [1] }), ValueError, /steps for 1 parameters, this optimizer has 2/);
    refuses(adam, () => adam.loadStateDict({ ...stateDict, hyperparameters: { betas: [1.5, 0.9] } }), ValueError, /betas\[0\] must be a finite number in \[0, 1\), got 1.5/);
    refuses(adam, () => adam.loadStateDict({ ...stateDict, hyperparameters: { momentum: 0.9 } }), ValueError, /unknown hyperparameter 'momentum'/);
    refuses(adam, () => adam.loadStateDict({ ...stateDict, steps: [1, -1] }), ValueError, /steps\[1\] \(params\[1\]\)/);
  });

  it("refuses missing, unexpected, misshapen and mistyped tensors with a StateDictError naming each and params[i]", () => {
    const { stateDict } = trained("Adam");
    const adam = trained("Adam").optimizer;
    const tensors = new Map(stateDict.tensors);
    tensors.delete("0.v");
    tensors.set("5.m", stateDict.tensors.get("0.m") as Tensor);
    tensors.set("1.m", randn([3]));
    tensors.set("1.v", cast(stateDict.tensors.get("1.v") as Tensor, "bfloat16"));
    const error = refuses(adam, () => adam.loadStateDict({ ...stateDict, tensors }), StateDictError, /Adam.loadStateDict: missing keys: 0.v; unexpected keys: 5.m/) as StateDictError;
    expect(error.message).toMatch(/size mismatch for 1.m: the checkpoint has \[3\], the model has \[8\] float32 \(params\[1\]\)/);
    expect(error.mismatches.map((m) => [m.key, m.reason ?? "size"])).toEqual([
      ["1.m", "size"],
      ["1.v", "dtype"],
    ]);
  });

  it("refuses a state saved from a float32 model for a bfloat16 one (no master copy), and a disposed tensor", () => {
    const { stateDict } = trained("SGD", "float32");
    const sgd = trained("SGD", "bfloat16").optimizer;
    refuses(sgd, () => sgd.loadStateDict(stateDict), StateDictError, /missing keys: 0.master, 1.master/);
    const other = trained("SGD", "float32");
    const disposed = new Map(other.stateDict.tensors);
    (disposed.get("0.momentumBuffer") as Tensor).dispose();
    refuses(sgd, () => sgd.loadStateDict({ ...stateDict, tensors: disposed }), StateDictError, /type mismatch for 0.momentumBuffer: the checkpoint has a disposed tensor/);
  });

  it("refuses a block-sparse state whose pattern differs from the parameter's, telling to load the model first", () => {
    const model = makeModel("BlockSparseLinear", "float32", 1) as BlockSparseLinear;
    const optimizer = makeOptimizer("Adam", model.parameters());
    trainStep(model, optimizer, 0);
    const stateDict = optimizer.stateDict();
    const other = makeModel("BlockSparseLinear", "float32", 2) as BlockSparseLinear;
    expect(other.pattern.equals(model.pattern)).toBe(false);
    const target = makeOptimizer("Adam", other.parameters());
    trainStep(other, target, 0);
    const error = refuses(target, () => target.loadStateDict(stateDict), StateDictError, /pattern mismatch for 0.m: .*params\[0\], block-sparse .*load the model's state dict first/) as StateDictError;
    expect(error.mismatches.map((m) => m.key)).toEqual(["0.m", "0.v"]);
    // Once the model has the saved pattern, the same state dict loads.
    const modelDict = model.stateDict();
    other.loadStateDict(modelDict);
    target.loadStateDict(stateDict);
    expect(bits(target.stateOf(other.weight)?.m as Tensor)).toEqual(bits(optimizer.stateOf(model.weight)?.m as Tensor));
  });

  it("replaces the hyperparameters and the whole state: SGD without momentum takes a momentum buffer, parameters without saved state lose theirs", () => {
    const model = makeModel("Linear", "float32", 1);
    const saved = new SGD(model.parameters(), { lr: 0.1, momentum: 0.9, nesterov: true });
    (model.bias as Parameter).requiresGrad = false;
    trainStep(model, saved, 0);
    const stateDict = saved.stateDict();
    expect(stateDict.steps).toEqual([1, 0]);
    expect(stateDict.hyperparameters).toEqual({ lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: true });
    (model.bias as Parameter).requiresGrad = true;
    const plain = new SGD(model.parameters(), { lr: 0.5 });
    trainStep(model, plain, 1);
    expect(plain.stepsOf(model.bias as Parameter)).toBe(1);
    plain.loadStateDict(stateDict);
    expect([plain.lr, plain.momentum, plain.nesterov]).toEqual([0.1, 0.9, true]);
    expect(Object.keys(plain.stateOf(model.weight) ?? {})).toEqual(["momentumBuffer"]);
    expect(plain.stepsOf(model.bias as Parameter)).toBe(0);
    expect(plain.stateOf(model.bias as Parameter)).toBeUndefined();
  });

  it("a dict of JSON-safe values: the numbers survive metadata exactly", () => {
    const { optimizer } = trained("AdamW");
    optimizer.lr = 1 / 3;
    const dict: OptimizerStateDict = optimizer.stateDict();
    const loaded = loadOptimizerState(saveOptimizerState(dict));
    expect(loaded.hyperparameters).toEqual(dict.hyperparameters);
    expect(loaded.steps).toEqual(dict.steps);
    expect(loaded.optimizer).toBe("AdamW");
    disposeStateDict(loaded.tensors);
  });
});

describe("a momentum buffer no step has written yet survives a save and load as such", () => {
  const p0 = [1.5, -2, 0.25];
  const grads = [
    [0.5, 1, -2],
    [0.3, -0.7, 1.1],
    [-0.9, 0.2, 0.6],
  ];
  const [lr, momentum, dampening] = [0.1, 0.9, 0.5];

  /** One step of `optimizer` on its only parameter with the gradient `g`. */
  function stepWith(optimizer: SGD, g: number[]): void {
    const parameter = optimizer.params[0];
    parameter.grad = tensor(g, [3]);
    optimizer.step();
    parameter.zeroGrad();
  }

  it("SGD with momentum turned on after a step, saved before the next: no buffer saved, and the resumed run starts it from the gradient (float64 by hand)", () => {
    const [parameter, twin] = [new Parameter(tensor(p0, [3])), new Parameter(tensor(p0, [3]))];
    const optimizer = new SGD([parameter], { lr, dampening });
    const uninterrupted = new SGD([twin], { lr, dampening });
    for (const o of [optimizer, uninterrupted]) stepWith(o, grads[0]);
    for (const o of [optimizer, uninterrupted]) o.momentum = momentum;

    const dict = optimizer.stateDict();
    expect([...dict.tensors.keys()]).toEqual([]);
    expect(dict.fresh).toEqual(["0.momentumBuffer"]);
    const loaded = loadOptimizerState(saveOptimizerState(dict));
    disposeStateDict(dict.tensors);
    const resumed = new SGD([parameter], { lr: 0.5 });
    resumed.loadStateDict(loaded);
    disposeStateDict(loaded.tensors);
    expect([resumed.momentum, resumed.dampening]).toEqual([momentum, dampening]);
    for (const g of grads.slice(1)) {
      stepWith(resumed, g);
      stepWith(uninterrupted, g);
      expect(bits(parameter.value)).toEqual(bits(twin.value));
    }

    // By hand: the buffer's first value is the gradient itself, undamped; then momentum * buf + (1 - dampening) * g.
    const expected = p0.map((p, k) => {
      const first = p - lr * grads[0][k];
      const buffer = grads[1][k];
      const second = first - lr * buffer;
      return second - lr * (momentum * buffer + (1 - dampening) * grads[2][k]);
    });
    for (const [k, value] of bits(parameter.value).entries()) expect(value).toBeCloseTo(expected[k], 6);
    for (const o of [optimizer, uninterrupted, resumed]) o.dispose();
    for (const p of [parameter, twin]) p.dispose();
  });

  it("a state dict without fresh keys (as saved before they were named) loads its zeros as a written buffer", () => {
    const parameter = new Parameter(tensor(p0, [3]));
    const bytes = saveOptimizerState({
      optimizer: "SGD",
      hyperparameters: { lr, momentum, dampening, weightDecay: 0, nesterov: false },
      steps: [1],
      tensors: new Map([["0.momentumBuffer", zeros([3])]]),
    });
    const loaded = loadOptimizerState(bytes);
    expect(loaded.fresh).toEqual([]);
    const optimizer = new SGD([parameter], { lr });
    optimizer.loadStateDict(loaded);
    disposeStateDict(loaded.tensors);
    stepWith(optimizer, grads[0]);
    for (const [k, value] of bits(parameter.value).entries()) expect(value).toBeCloseTo(p0[k] - lr * (1 - dampening) * grads[0][k], 6);
    optimizer.dispose();
    parameter.dispose();
  });

  it("refuses a fresh key that also has a tensor, names no state or names a master copy", () => {
    const parameter = new Parameter(tensor(p0, [3]));
    const optimizer = new SGD([parameter], { lr, momentum });
    stepWith(optimizer, grads[0]);
    const dict = optimizer.stateDict();
    const load = (fresh: string[]) => () => optimizer.loadStateDict({ ...dict, fresh });
    expect(load(["0.momentumBuffer"])).toThrow(/type mismatch for 0.momentumBuffer: the checkpoint has both/);
    expect(load(["1.momentumBuffer", "0.master"])).toThrow(/unexpected keys: 1.momentumBuffer, 0.master/);
    expect(() => optimizer.loadStateDict({ ...dict, fresh: "0.momentumBuffer" as unknown as string[] })).toThrow(ValueError);
    disposeStateDict(dict.tensors);
    optimizer.dispose();
    parameter.dispose();
  });
});
