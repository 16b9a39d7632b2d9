import { backward, noGrad } from "@blocksparse/autograd";
import { BsrPattern, cast, DTypeError, full, indexCopy, memory, randn, type Tensor, tensor, tidy, ValueError } from "@blocksparse/core";
import {
  Adam,
  AdamW,
  allFinite,
  BlockSparseLinear,
  crossEntropy,
  Embedding,
  GELU,
  GradScaler,
  LayerNorm,
  Linear,
  type Module,
  mseLoss,
  Parameter,
  Sequential,
  SGD,
} from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host, maxAbsDiff, syntheticClassification } from "./helpers";

/** float32 values rounded to bfloat16 and back (round to nearest even), as the backends store them. */
function toBf16(values: ArrayLike<number>): Float64Array {
  return host(tidy(() => cast(cast(tensor(Float32Array.from(values), [values.length]), "bfloat16"), "float32")));
}

describe("Module.to with a dtype", () => {
  it("casts every floating-point parameter, keeps shapes and block patterns, and reports the dtype", () => {
    const model = new Sequential(new Linear(8, 16, { seed: 1 }), new GELU(), new BlockSparseLinear(16, 32, { density: 0.5, blockShape: [8, 8], seed: 2 }), new LayerNorm(32));
    const before = model.parameters().map((p) => host(p.value));
    const pattern = (model.getSubmodule("2") as BlockSparseLinear).pattern;
    expect(model.dtype).toBe("float32");
    model.to("bfloat16");
    expect(model.dtype).toBe("bfloat16");
    model.parameters().forEach((p, i) => {
      expect(p.dtype).toBe("bfloat16");
      expect(maxAbsDiff(host(p.value), toBf16(before[i]))).toBe(0);
    });
    expect((model.getSubmodule("2") as BlockSparseLinear).pattern).toBe(pattern);
    model.to({ dtype: "float16", backend: "js" });
    expect(model.dtype).toBe("float16");
    model.to("float32");
    expect(model.parameters().every((p) => p.dtype === "float32")).toBe(true);
    for (const p of model.parameters()) p.dispose();
  });

  it("refuses a dtype that is not a float type, naming it", () => {
    const model = new Linear(4, 4, { seed: 1 });
    expect(() => model.to({ dtype: "int32" as "float32" })).toThrow(DTypeError);
    expect(() => model.to({ dtype: "float64" as "float32" })).toThrow(/float64/);
    expect(() => model.to(null as unknown as string)).toThrow(ValueError);
    for (const p of model.parameters()) p.dispose();
  });

  it("does not leak: the float32 tensors are freed when the parameters take their casts", () => {
    const model = new Linear(8, 8, { seed: 3 });
    const live = memory().numTensors;
    model.to("bfloat16").to("float16").to("float32");
    expect(memory().numTensors).toBe(live);
    for (const p of model.parameters()) p.dispose();
  });

  it("casts each parameter's gradient with it, as torch's module.to; a parameter without one stays without", () => {
    const model = new Sequential(new Linear(8, 4, { seed: 4 }), new BlockSparseLinear(4, 8, { density: 0.5, blockShape: [2, 2], seed: 5 }));
    tidy(() => backward(mseLoss(model.forward(randn([3, 8], { seed: 6 })), full([3, 8], 0))));
    model.parameters()[3].zeroGrad();
    const grads = model.parameters().map((p) => (p.grad === null ? null : toBf16(host(p.grad))));
    expect(grads.map((g) => g === null)).toEqual([false, false, false, true]);
    const live = memory().numTensors;
    model.to("bfloat16");
    model.parameters().forEach((p, i) => {
      const want = grads[i];
      expect(p.grad?.dtype ?? null).toBe(want === null ? null : "bfloat16");
      if (want === null) return;
      expect(p.grad?.shape).toEqual(p.shape);
      expect(maxAbsDiff(host(p.grad as Tensor), want)).toBe(0);
    });
    // Back to float32: the rounded gradients widen exactly; the old tensors (values and gradients) were all freed.
    model.to("float32");
    model.parameters().forEach((p, i) => {
      const want = grads[i];
      expect(p.grad?.dtype ?? null).toBe(want === null ? null : "float32");
      if (want !== null) expect(maxAbsDiff(host(p.grad as Tensor), want)).toBe(0);
    });
    expect(memory().numTensors).toBe(live);
    for (const p of model.parameters()) p.dispose();
  });

  it("converts a parameter tied between two modules once: it stays shared, its gradient cast with it, nothing leaked", () => {
    const first = new Linear(4, 4, { seed: 7 });
    const second = new Linear(4, 4, { seed: 8 });
    second.weight.dispose();
    second.registerParameter("weight", first.weight);
    const model = new Sequential(first, second);
    expect(model.parameters()).toHaveLength(3);
    tidy(() => backward(mseLoss(model.forward(randn([2, 4], { seed: 9 })), full([2, 4], 0))));
    const grad = toBf16(host(first.weight.grad as Tensor));
    const live = memory().numTensors;
    model.to("bfloat16");
    expect(second.weight).toBe(first.weight);
    expect(first.weight.dtype).toBe("bfloat16");
    expect(first.weight.grad?.dtype).toBe("bfloat16");
    expect(maxAbsDiff(host(first.weight.grad as Tensor), grad)).toBe(0);
    expect(memory().numTensors).toBe(live);
    for (const p of model.parameters()) p.dispose();
  });
});

describe("float32 master weights in the optimizers", () => {
  const start = Float32Array.from(host(randn([64], { seed: 5 })));
  const grads = Array.from({ length: 4 }, (_, i) => Float32Array.from(host(randn([64], { seed: 10 + i }))));

  /** Runs `make` on one parameter of `dtype` fed the given gradients (rounded to that dtype); returns the optimizer and parameter. */
  function run(dtype: "float32" | "bfloat16", make: (p: Parameter[]) => Adam | SGD) {
    const parameter = new Parameter(tidy(() => cast(tensor(start, [64]), dtype)));
    const optimizer = make([parameter]);
    for (const g of grads) {
      parameter.zeroGrad();
      parameter.grad = tidy(() => cast(tensor(g, [64]), dtype));
      optimizer.step();
    }
    return { parameter, optimizer };
  }

  for (const [name, make] of [
    ["Adam", (p: Parameter[]) => new Adam(p, { lr: 1e-2 })],
    ["AdamW", (p: Parameter[]) => new AdamW(p, { lr: 1e-2, weightDecay: 0.1 })],
    ["SGD with momentum", (p: Parameter[]) => new SGD(p, { lr: 0.05, momentum: 0.9 })],
  ] as const) {
    it(`${name}: the master follows exactly the float32 update of the widened gradients; the parameter is its rounding`, () => {
      const low = run("bfloat16", make);
      // The float32 reference starts where the bfloat16 parameter started and sees the same (rounded) gradients.
      const referenceParameter = new Parameter(tensor(Float32Array.from(toBf16(start)), [64]));
      const reference = make([referenceParameter]);
      for (const g of grads) {
        referenceParameter.zeroGrad();
        referenceParameter.grad = tensor(Float32Array.from(toBf16(g)), [64]);
        reference.step();
      }
      const master = low.optimizer.masterOf(low.parameter);
      expect(master?.dtype).toBe("float32");
      expect(maxAbsDiff(host(master as Tensor), host(referenceParameter.value))).toBe(0);
      expect(maxAbsDiff(host(low.parameter.value), toBf16(host(referenceParameter.value)))).toBe(0);
      for (const t of Object.values(low.optimizer.stateOf(low.parameter) ?? {})) expect(t.dtype).toBe("float32");
      low.optimizer.dispose();
      reference.dispose();
      low.parameter.dispose();
      referenceParameter.dispose();
    });
  }

  it("keeps updates smaller than the bfloat16 spacing, which a direct update loses", () => {
    const steps = 20;
    const make = (masterWeights: boolean) => {
      const parameter = new Parameter(full([4], 1, "bfloat16"));
      const optimizer = new SGD([parameter], { lr: 1e-3, masterWeights });
      for (let i = 0; i < steps; i++) {
        parameter.zeroGrad();
        parameter.grad = full([4], 1, "bfloat16");
        optimizer.step();
      }
      return { parameter, optimizer };
    };
    const direct = make(false);
    const mastered = make(true);
    // 1 - 1e-3 rounds back to 1 in bfloat16 (spacing 2^-8 below 1): the direct update never moves.
    expect(host(direct.parameter.value)).toEqual(new Float64Array([1, 1, 1, 1]));
    expect(host(mastered.optimizer.masterOf(mastered.parameter) as Tensor)[0]).toBeCloseTo(1 - steps * 1e-3, 5);
    expect(host(mastered.parameter.value)[0]).toBeLessThan(1);
    expect(direct.optimizer.masterOf(direct.parameter)).toBeUndefined();
    for (const r of [direct, mastered]) {
      r.optimizer.dispose();
      r.parameter.dispose();
    }
  });

  it("takes the master again from weights replaced between steps (a loaded checkpoint)", () => {
    const model = new Linear(4, 4, { seed: 7 }).to("bfloat16");
    const optimizer = new Adam(model.parameters(), { lr: 1e-3 });
    const step = () => {
      optimizer.zeroGrad();
      tidy(() => backward(mseLoss(model.forward(full([2, 4], 1, "bfloat16")), full([2, 4], 0, "float32"))));
      optimizer.step();
    };
    step();
    const loaded = tensor(new Float32Array(16).fill(3), [4, 4]);
    model.loadStateDict({ weight: loaded, bias: tensor(new Float32Array(4), [4]) });
    step();
    const master = host(optimizer.masterOf(model.weight) as Tensor);
    // One Adam step of lr 1e-3 from 3: the master is near 3, not near the old weights.
    for (const value of master) expect(Math.abs(value - 3)).toBeLessThan(2e-3);
    optimizer.dispose();
    loaded.dispose();
  });

  it.each(["Adam", "SGD"])("%s takes the master again from weights written in place between steps (indexCopy into an embedding's rows)", (kind) => {
    const embedding = new Embedding(4, 2, { seed: 1 }).to("bfloat16");
    const optimizer = kind === "Adam" ? new Adam(embedding.parameters(), { lr: 1e-3 }) : new SGD(embedding.parameters(), { lr: 1e-3 });
    const rows = tensor(new Int32Array([0, 1, 2, 3]), [4], "int32");
    const step = () => {
      optimizer.zeroGrad();
      tidy(() => backward(mseLoss(embedding.forward(rows), full([4, 2], 0, "float32"))));
      optimizer.step();
    };
    step();
    const row = tensor(new Int32Array([1]), [1], "int32");
    const written = full([1, 2], 0.25, "bfloat16");
    const buffer = embedding.weight.value.dataId;
    noGrad(() => indexCopy(embedding.weight.value, row, written));
    expect(embedding.weight.value.dataId).toBe(buffer); // the same buffer, written in place
    step();
    // One step of lr 1e-3 from 0.25 stays within a bfloat16 spacing there (2^-9): the write is not undone.
    for (const value of host(embedding.weight.value).subarray(2, 4)) expect(Math.abs(value - 0.25)).toBeLessThanOrEqual(2 ** -9);
    optimizer.dispose();
    for (const t of [rows, row, written]) t.dispose();
  });

  it("follows a moved block pattern: kept blocks keep their float32 master values, added blocks take the layer's new values", () => {
    const layer = new BlockSparseLinear(16, 16, { density: 0.5, blockShape: [8, 8], seed: 3 }).to("bfloat16");
    const optimizer = new Adam(layer.parameters(), { lr: 1e-3 });
    optimizer.zeroGrad();
    tidy(() => backward(mseLoss(layer.forward(full([2, 16], 1, "bfloat16")), full([2, 16], 0, "float32"))));
    optimizer.step();
    const masterBefore = host(optimizer.masterOf(layer.weight) as Tensor);
    const old = layer.pattern;
    const mask = old.blockMask();
    const flipped = Int32Array.from(mask.keys()).filter((flat) => !mask[flat] || flat === old.coordinates.blockRow[0] * old.blockCols + old.coordinates.blockCol[0]);
    const next = BsrPattern.fromFlatBlocks(old.shape, old.blockShape, flipped);
    const sources = layer.setPattern(next, { optimizer });
    const master = host(optimizer.masterOf(layer.weight) as Tensor);
    const values = host(layer.weight.value);
    const blockSize = 64;
    sources.forEach((source, k) => {
      const got = master.subarray(k * blockSize, (k + 1) * blockSize);
      const want = source >= 0 ? masterBefore.subarray(source * blockSize, (source + 1) * blockSize) : values.subarray(k * blockSize, (k + 1) * blockSize);
      expect(maxAbsDiff(got, want)).toBe(0);
    });
    expect(sources.some((s) => s < 0)).toBe(true);
    expect(sources.some((s) => s >= 0)).toBe(true);
    optimizer.dispose();
    for (const p of layer.parameters()) p.dispose();
  });

  it("refuses a masterWeights that is not 'auto' or a boolean", () => {
    const parameter = new Parameter(full([2], 1));
    expect(() => new Adam([parameter], { masterWeights: "yes" as unknown as boolean })).toThrow(/masterWeights/);
    parameter.dispose();
  });
});

describe("losses in float32 for low-precision logits", () => {
  it("crossEntropy and mseLoss return float32 and send gradients back in the inputs' dtype", () => {
    const logits = cast(randn([6, 5], { seed: 3 }), "bfloat16");
    logits.requiresGrad = true;
    const targets = tensor(Int32Array.from([0, 1, 2, 3, 4, 0]), [6], "int32");
    const loss = crossEntropy(logits, targets);
    expect(loss.dtype).toBe("float32");
    const reference = crossEntropy(cast(logits, "float32"), targets);
    expect(Math.abs(loss.item() - reference.item())).toBeLessThan(1e-6);
    backward(loss);
    expect(logits.grad?.dtype).toBe("bfloat16");
    expect(mseLoss(logits, cast(logits, "float32")).dtype).toBe("float32");
  });
});

describe("GradScaler", () => {
  function parameterWithGrad(values: number[], dtype: "float16" | "float32" = "float16"): Parameter {
    const parameter = new Parameter(full([values.length], 1, dtype));
    parameter.grad = cast(tensor(Float32Array.from(values), [values.length]), dtype);
    return parameter;
  }

  it("refuses an option it does not have (torch's init_scale, a typo) rather than training at the default scale", () => {
    expect(() => new GradScaler({ init_scale: 1024 } as never)).toThrow(ValueError);
    expect(() => new GradScaler({ init_scale: 1024 } as never)).toThrow(
      "GradScaler: unknown option 'init_scale'; the options are initScale, growthFactor, backoffFactor, growthInterval, enabled",
    );
    expect(() => new GradScaler({ initScale: 8, growth_interval: 10, toString: () => "" } as never)).toThrow("GradScaler: unknown options 'growth_interval', 'toString'");
    expect(() => new GradScaler(new Float32Array([1024]) as never)).toThrow("GradScaler: options must be an object or null, got a Float32Array");
    expect(new GradScaler(null as never).scaleFactor).toBe(2 ** 16);
  });

  it("scale refuses a loss that is not a Tensor with a ValueError naming GradScaler.scale and what it got, enabled or not", () => {
    for (const enabled of [true, false]) {
      const scaler = new GradScaler({ enabled });
      expect(() => scaler.scale(3 as never)).toThrow(ValueError);
      expect(() => scaler.scale(3 as never)).toThrow("GradScaler.scale: loss must be a Tensor, got a number");
      expect(() => scaler.scale(null as never)).toThrow("GradScaler.scale: loss must be a Tensor, got null");
    }
  });

  it("scales the loss into float32 and unscales gradients into float32", () => {
    const scaler = new GradScaler({ initScale: 1024 });
    const loss = full([], 2, "float16");
    const scaled = scaler.scale(loss);
    expect(scaled.dtype).toBe("float32");
    expect(scaled.item()).toBe(2048);
    const parameter = parameterWithGrad([1024, -512, 3]);
    const optimizer = new SGD([parameter], { lr: 0.5 });
    expect(scaler.unscale(optimizer)).toBe(true);
    expect(parameter.grad?.dtype).toBe("float32");
    expect(host(parameter.grad as Tensor)).toEqual(new Float64Array([1, -0.5, 3 / 1024]));
    expect(() => scaler.unscale(optimizer)).toThrow(/already/);
    expect(scaler.step(optimizer)).toBe(true);
    // SGD on the float32 master copy: 1 - 0.5 * g, rounded to float16.
    expect(host(parameter.value)).toEqual(toF16([0.5, 1.25, 1 - 0.5 * (3 / 1024)]));
    optimizer.dispose();
    parameter.dispose();
  });

  it("skips the step and backs off on inf or NaN gradients; grows after growthInterval clean steps", () => {
    const schedule = { growthInterval: 3, growthFactor: 2, backoffFactor: 0.25 };
    const scaler = new GradScaler({ initScale: 256, ...schedule });
    const parameter = parameterWithGrad([1, 2]);
    const optimizer = new SGD([parameter], { lr: 1 });
    const stepWith = (values: number[]): boolean => {
      parameter.grad?.dispose();
      parameter.grad = cast(tensor(Float32Array.from(values), [values.length]), "float16");
      const stepped = scaler.step(optimizer);
      scaler.update();
      return stepped;
    };
    const before = host(parameter.value);
    expect(stepWith([Number.POSITIVE_INFINITY, 1])).toBe(false);
    expect(host(parameter.value)).toEqual(before);
    expect(scaler.scaleFactor).toBe(64);
    expect(stepWith([Number.NaN, 1])).toBe(false);
    expect(scaler.scaleFactor).toBe(16);
    expect(stepWith([16, 16])).toBe(true);
    expect(stepWith([16, 16])).toBe(true);
    expect(scaler.stateDict()).toEqual({ ...schedule, scale: 16, growthTracker: 2 });
    expect(stepWith([16, 16])).toBe(true);
    expect(scaler.stateDict()).toEqual({ ...schedule, scale: 32, growthTracker: 0 });
    expect(stepWith([Number.NEGATIVE_INFINITY, 0])).toBe(false);
    expect(scaler.stateDict()).toEqual({ ...schedule, scale: 8, growthTracker: 0 });
    optimizer.dispose();
    parameter.dispose();
  });

  it("passes everything through when disabled", () => {
    const scaler = new GradScaler({ enabled: false });
    const loss = full([], 3);
    expect(scaler.scale(loss)).toBe(loss);
    const parameter = parameterWithGrad([Number.POSITIVE_INFINITY], "float32");
    const optimizer = new SGD([parameter], { lr: 1 });
    expect(scaler.step(optimizer)).toBe(true);
    expect(scaler.scaleFactor).toBe(1);
    optimizer.dispose();
    parameter.dispose();
  });

  it("checks its options and loaded state", () => {
    expect(() => new GradScaler({ initScale: 0 })).toThrow(/initScale/);
    expect(() => new GradScaler({ growthFactor: 1 })).toThrow(/growthFactor/);
    expect(() => new GradScaler({ backoffFactor: 1 })).toThrow(/backoffFactor/);
    expect(() => new GradScaler({ growthInterval: 1.5 })).toThrow(/growthInterval/);
    const scaler = new GradScaler();
    expect(() => scaler.loadStateDict({ scale: Number.NaN, growthTracker: 0 })).toThrow(/scale/);
    expect(() => scaler.loadStateDict({ scale: 8, growthTracker: -1 })).toThrow(/growthTracker/);
    scaler.loadStateDict({ scale: 8, growthTracker: 5 });
    expect(scaler.stateDict()).toEqual({ scale: 8, growthTracker: 5, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000 });
    // A bad schedule is refused with nothing changed.
    expect(() => scaler.loadStateDict({ scale: 4, growthTracker: 0, growthFactor: 0.5 })).toThrow(/GradScaler.loadStateDict: growthFactor must be > 1/);
    expect(() => scaler.loadStateDict({ scale: 4, growthTracker: 0, growthInterval: 0 })).toThrow(/growthInterval must be a positive integer/);
    expect(scaler.stateDict()).toEqual({ scale: 8, growthTracker: 5, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000 });
  });

  it("a state loaded into a scaler made with other options brings its schedule, as torch's: the scale then moves as the saved scaler's", () => {
    const options = { initScale: 8, growthInterval: 2, growthFactor: 4, backoffFactor: 0.125 };
    const [saved, uninterrupted] = [new GradScaler(options), new GradScaler(options)];
    const parameter = parameterWithGrad([1, 2]);
    const optimizer = new SGD([parameter], { lr: 0 });
    const stepWith = (scaler: GradScaler, value: number): number => {
      parameter.grad?.dispose();
      parameter.grad = cast(tensor([value, 1], [2]), "float16");
      scaler.step(optimizer);
      scaler.update();
      return scaler.scaleFactor;
    };
    for (const scaler of [saved, uninterrupted]) stepWith(scaler, 1);
    const resumed = new GradScaler();
    resumed.loadStateDict(JSON.parse(JSON.stringify(saved.stateDict())));
    for (const value of [1, 1, Number.POSITIVE_INFINITY, 1, 1, 1]) expect(stepWith(resumed, value)).toBe(stepWith(uninterrupted, value));
    expect([resumed.growthFactor, resumed.backoffFactor, resumed.growthInterval]).toEqual([4, 0.125, 2]);
    expect(resumed.stateDict()).toEqual(uninterrupted.stateDict());
    optimizer.dispose();
    parameter.dispose();
  });

  it("allFinite reads every tensor once and finds a single bad element", () => {
    const good = [randn([50], { seed: 1 }), cast(randn([7, 3], { seed: 2 }), "bfloat16")];
    expect(allFinite(good)).toBe(true);
    const values = new Float32Array(300).fill(0.5);
    values[217] = Number.NaN;
    expect(allFinite([...good, tensor(values, [300])])).toBe(false);
    expect(allFinite([])).toBe(true);
  });
});

describe("mixed-precision training", () => {
  function trainMlp(dtype: "float32" | "bfloat16" | "float16", steps: number): number[] {
    const { x, y } = syntheticClassification(128, 32, 4, 21);
    const model: Module = new Sequential(
      new BlockSparseLinear(32, 64, { density: 0.5, blockShape: [8, 8], seed: 1 }),
      new GELU(),
      new Linear(64, 4, { seed: 2 }),
    ).to(dtype);
    const optimizer = new AdamW(model.parameters(), { lr: 1e-2 });
    const scaler = new GradScaler({ enabled: dtype === "float16" });
    const input = cast(x, dtype);
    const losses: number[] = [];
    for (let step = 0; step < steps; step++) {
      optimizer.zeroGrad();
      losses.push(
        tidy(() => {
          const loss = crossEntropy(model.forward(input), y);
          backward(scaler.scale(loss));
          return loss.item();
        }),
      );
      scaler.step(optimizer);
      scaler.update();
    }
    optimizer.dispose();
    for (const p of model.parameters()) p.dispose();
    return losses;
  }

  it("bfloat16 and float16 (with loss scaling) follow the float32 loss curve", () => {
    const reference = trainMlp("float32", 25);
    for (const dtype of ["bfloat16", "float16"] as const) {
      const losses = trainMlp(dtype, 25);
      expect(losses[24]).toBeLessThan(losses[0] * 0.5);
      expect(Math.abs(losses[24] - reference[24])).toBeLessThan(0.1 * reference[0]);
    }
  });
});

function toF16(values: number[]): Float64Array {
  return host(tidy(() => cast(cast(tensor(Float32Array.from(values), [values.length]), "float16"), "float32")));
}
