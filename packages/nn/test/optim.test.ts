import { adamUpdate, addKernelObserver, BsrPattern, cast, keep, randn, type Tensor, tensor, tidy, ValueError, zeros } from "@blocksparse/core";
import {
  Adam,
  AdamW,
  BlockSparseLinear,
  backward,
  clipGradNorm,
  disposeStateDict,
  inverseDensity,
  Linear,
  loadOptimizerState,
  mseLoss,
  Parameter,
  pruneAndRegrow,
  SGD,
  SparseOptimizer,
  saveOptimizerState,
} from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host, maxAbsDiff, thrown } from "./helpers";

/** Fresh gradients for each step, the same for the optimizer and the reference. */
function gradients(steps: number, size: number, seed: number): Float64Array[] {
  return Array.from({ length: steps }, (_, i) => host(randn([size], { seed: seed + i })));
}

function runOptimizer(make: (params: Parameter[]) => SGD | Adam, start: Float64Array, grads: Float64Array[]): Float64Array {
  const parameter = new Parameter(tensor(start, [start.length]));
  const optimizer = make([parameter]);
  for (const g of grads) {
    parameter.zeroGrad();
    parameter.grad = tensor(g, [g.length]);
    optimizer.step();
  }
  const out = host(parameter.value);
  optimizer.dispose();
  return out;
}

describe("optimizers match a float64 reference", () => {
  const start = host(randn([40], { seed: 1 }));
  const grads = gradients(3, 40, 2);

  it("SGD with momentum, dampening and weight decay; nesterov", () => {
    for (const nesterov of [false, true]) {
      const lr = 0.1;
      const momentum = 0.9;
      const dampening = nesterov ? 0 : 0.1;
      const weightDecay = 0.01;
      const p = Float64Array.from(start);
      const buf = new Float64Array(p.length);
      grads.forEach((grad, step) => {
        for (let i = 0; i < p.length; i++) {
          const g = grad[i] + weightDecay * p[i];
          buf[i] = step === 0 ? g : momentum * buf[i] + (1 - dampening) * g;
          p[i] -= lr * (nesterov ? g + momentum * buf[i] : buf[i]);
        }
      });
      const got = runOptimizer((params) => new SGD(params, { lr, momentum, dampening, weightDecay, nesterov }), start, grads);
      expect(maxAbsDiff(got, p)).toBeLessThan(1e-6);
    }
  });

  it("SGD's momentum buffer starts at the gradient, undamped, when momentum is turned on after some steps", () => {
    // As torch.optim.SGD, whose buffer is None until momentum's first step (buf = g, then momentum * buf + (1 - dampening) * g).
    const lr = 0.1;
    const weightDecay = 0.01;
    const schedule = [0, 0, 0.9, 0.9, 0, 0.5, 0.5];
    const dampening = 0.3;
    const stepGrads = gradients(schedule.length, 40, 20);
    const p = Float64Array.from(start);
    let buf: Float64Array | null = null;
    for (const [step, momentum] of schedule.entries()) {
      // Momentum set to 0 drops the buffer: turned on again, it starts afresh.
      const fresh = momentum !== 0 && buf === null;
      if (momentum === 0) buf = null;
      else buf ??= new Float64Array(p.length);
      for (let i = 0; i < p.length; i++) {
        const g = stepGrads[step][i] + weightDecay * p[i];
        if (buf === null) {
          p[i] -= lr * g;
        } else {
          buf[i] = fresh ? g : momentum * buf[i] + (1 - dampening) * g;
          p[i] -= lr * buf[i];
        }
      }
    }
    const parameter = new Parameter(tensor(start, [start.length]));
    const optimizer = new SGD([parameter], { lr, dampening, weightDecay });
    schedule.forEach((momentum, step) => {
      optimizer.momentum = momentum;
      parameter.zeroGrad();
      parameter.grad = tensor(stepGrads[step], [40]);
      optimizer.step();
    });
    expect(maxAbsDiff(host(parameter.value), p)).toBeLessThan(1e-6);
    expect(maxAbsDiff(host(optimizer.stateOf(parameter)!.momentumBuffer), buf as Float64Array)).toBeLessThan(1e-6);
    optimizer.dispose();
  });

  it("Adam (L2 weight decay) and AdamW (decoupled), as torch.optim's documented algorithm", () => {
    // Gradients of eps's size make eps's place count: added to sqrt(v / (1 - beta2^t)), after the bias correction.
    const cases = [
      { gradScale: 1, eps: 1e-6, weightDecay: 0.1 },
      { gradScale: 1e-4, eps: 1e-4, weightDecay: 1e-4 },
    ];
    for (const { gradScale, eps, weightDecay } of cases) {
      for (const decoupled of [false, true]) {
        const lr = 0.01;
        const [b1, b2] = [0.8, 0.95];
        const scaled = grads.map((grad) => grad.map((g) => g * gradScale));
        const p = Float64Array.from(start);
        const m = new Float64Array(p.length);
        const v = new Float64Array(p.length);
        scaled.forEach((grad, index) => {
          const t = index + 1;
          for (let i = 0; i < p.length; i++) {
            let g = grad[i];
            if (decoupled) p[i] *= 1 - lr * weightDecay;
            else g += weightDecay * p[i];
            m[i] = b1 * m[i] + (1 - b1) * g;
            v[i] = b2 * v[i] + (1 - b2) * g * g;
            const mHat = m[i] / (1 - b1 ** t);
            const vHat = v[i] / (1 - b2 ** t);
            p[i] -= (lr * mHat) / (Math.sqrt(vHat) + eps);
          }
        });
        const options = { lr, betas: [b1, b2] as const, eps, weightDecay };
        const got = runOptimizer((params) => (decoupled ? new AdamW(params, options) : new Adam(params, options)), start, scaled);
        expect(maxAbsDiff(got, p), `${decoupled ? "AdamW" : "Adam"} with gradients x ${gradScale}, eps ${eps}`).toBeLessThan(1e-6);
      }
    }
  });

  it("skips parameters without a gradient and rejects bad options", () => {
    const parameter = new Parameter(tensor(start, [40]));
    new Adam([parameter]).step();
    expect(host(parameter.value)).toEqual(start);
    expect(() => new SGD([parameter], { lr: -1 })).toThrow(ValueError);
    expect(() => new Adam([parameter], { betas: [1, 0.9] })).toThrow("betas[0] must be a finite number in [0, 1)");
    expect(() => new Adam([])).toThrow("params is empty");
  });

  it("refuses an option it does not have (torch's weight_decay, maximize, a typo) rather than ignoring it", () => {
    const parameter = new Parameter(tensor(start, [40]));
    expect(() => new AdamW([parameter], { lr: 1e-3, weight_decay: 0.1 } as never)).toThrow("AdamW: unknown option 'weight_decay'");
    expect(() => new Adam([parameter], { maximize: true } as never)).toThrow(ValueError);
    expect(() => new SGD([parameter], { lr: 0.1, momentom: 0.9 } as never)).toThrow("SGD: unknown option 'momentom'");
    expect(() => new AdamW([parameter], { amsgrad: true, foreach: true } as never)).toThrow("AdamW: unknown options 'amsgrad', 'foreach'");
    const options = { lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: true, masterWeights: false, lrScale: () => 1 };
    expect(new SGD([parameter], options).nesterov).toBe(true);
    expect(new AdamW([parameter], { lr: 1, betas: [0.9, 0.95], eps: 1e-6, weightDecay: 0.1, capturable: false, masterWeights: "auto", lrScale: () => 1 }).weightDecay).toBe(0.1);
  });
});

describe("an optimizer's option names", () => {
  const parameter = () => new Parameter(tensor([1, 2, 3], [3]));

  it("are its documented ones only: a method or inherited name (toString, constructor, step, zeroGrad) is an unknown option", () => {
    // Each used to pass, as the optimizer (or Object.prototype) has a property of that name.
    expect(thrown(() => new SGD([parameter()], { lr: 0.1, step: 1 } as never))).toEqual([
      "ValueError",
      "SGD: unknown option 'step'; the options are lr, momentum, dampening, weightDecay, nesterov, masterWeights, lrScale",
    ]);
    expect(thrown(() => new Adam([parameter()], { zeroGrad: true } as never))).toEqual([
      "ValueError",
      "Adam: unknown option 'zeroGrad'; the options are lr, betas, eps, weightDecay, capturable, masterWeights, lrScale",
    ]);
    expect(() => new AdamW([parameter()], { toString: () => "AdamW" } as never)).toThrow("AdamW: unknown option 'toString'; the options are lr, betas");
    expect(() => new SGD([parameter()], { lr: 0.1, constructor: SGD } as never)).toThrow("SGD: unknown option 'constructor'");
    expect(() => new Adam([parameter()], { params: [], lr: 1e-3 } as never)).toThrow("Adam: unknown option 'params'");
    expect(() => new SGD([parameter()], { lr: 0.1, hasOwnProperty: 1, loadStateDict: 1 } as never)).toThrow("SGD: unknown options 'hasOwnProperty', 'loadStateDict'");
  });

  it("are read from the options object itself, not its prototype", () => {
    const inherited = Object.create({ momentom: 0.9 }) as { lr: number };
    inherited.lr = 0.1;
    expect(new SGD([parameter()], inherited).momentum).toBe(0);
    const withNullPrototype = Object.assign(Object.create(null), { lr: 0.1, momentum: 0.5 }) as { lr: number; momentum: number };
    expect(new SGD([parameter()], withNullPrototype).momentum).toBe(0.5);
  });

  it("a Tensor, an array or a typed array as options is a ValueError naming what was passed; null means the defaults", () => {
    expect(() => new Adam([parameter()], tensor([1e-3], [1]) as never)).toThrow("Adam: options must be an object or null, got a Tensor");
    expect(() => new AdamW([parameter()], new Float32Array([1e-3]) as never)).toThrow("AdamW: options must be an object or null, got a Float32Array");
    expect(() => new SGD([parameter()], [0.1] as never)).toThrow("SGD: options must be an object or null, got an array");
    expect(() => new SGD([parameter()], new Map([["lr", 0.1]]) as never)).toThrow("SGD: options must be an object or null, got a Map");
    expect(new Adam([parameter()], null).lr).toBe(1e-3);
    expect(new SGD([parameter()], null).lr).toBe(1e-3);
  });
});

describe("optimizer state of block-sparse weights", () => {
  it("has the size of the stored values, never the dense size", () => {
    const layer = new BlockSparseLinear(64, 32, { density: 0.25, blockShape: [8, 16], seed: 3 });
    const optimizer = new Adam(layer.parameters());
    layer.weight.grad = randn(layer.weight.shape as number[], { seed: 4 });
    layer.bias!.grad = randn([32], { seed: 5 });
    optimizer.step();
    const nnzValues = layer.nnzBlocks * 8 * 16;
    expect(nnzValues).toBe(0.25 * 64 * 32);
    expect(optimizer.stateOf(layer.weight)?.m.shape).toEqual([layer.nnzBlocks, 8, 16]);
    expect(optimizer.stateSize(layer.weight)).toBe(2 * nnzValues);
    const momentum = new SGD(layer.parameters(), { lr: 0.1, momentum: 0.9 });
    momentum.step();
    expect(momentum.stateSize(layer.weight)).toBe(nnzValues);
  });

  it("pruneAndRegrow drops the lowest-norm blocks, regrows elsewhere, and resets Adam state of regrown blocks only", () => {
    const layer = new BlockSparseLinear(16, 16, { density: 0.5, blockShape: [4, 4], seed: 6 });
    const optimizer = new Adam(layer.parameters(), { lr: 0.01 });
    layer.weight.grad = randn(layer.weight.shape as number[], { seed: 7 });
    optimizer.step();
    const before = layer.pattern;
    const values = host(layer.weight.value);
    const m = host(optimizer.stateOf(layer.weight)!.m);
    const v = host(optimizer.stateOf(layer.weight)!.v);
    const norms = Array.from({ length: before.nnzBlocks }, (_, k) => Math.hypot(...values.subarray(k * 16, (k + 1) * 16)));
    const flatOf = (pattern: BsrPattern, k: number) => pattern.coordinates.blockRow[k] * 4 + pattern.coordinates.blockCol[k];
    const weakest = norms
      .map((n, k) => [n, k])
      .sort((a, b) => a[0] - b[0])
      .slice(0, 2)
      .map(([, k]) => flatOf(before, k))
      .sort((a, b) => a - b);

    const move = pruneAndRegrow(layer, { fraction: 0.25, random: 8, optimizer });
    expect(Array.from(move.pruned)).toEqual(weakest);
    expect(move.regrown).toHaveLength(2);
    const held = before.blockMask();
    for (const flat of move.regrown) expect(held[flat]).toBe(0);
    const after = layer.pattern;
    expect(after.nnzBlocks).toBe(before.nnzBlocks);
    const newValues = host(layer.weight.value);
    const newM = host(optimizer.stateOf(layer.weight)!.m);
    const newV = host(optimizer.stateOf(layer.weight)!.v);
    const meanV = v.reduce((a, b) => a + b, 0) / v.length;
    expect(meanV).toBeGreaterThan(0);
    expect(newM.length).toBe(newValues.length);
    for (let k = 0; k < after.nnzBlocks; k++) {
      const flat = flatOf(after, k);
      const old = Array.from({ length: before.nnzBlocks }, (_, j) => j).find((j) => flatOf(before, j) === flat);
      const block = (a: Float64Array, i: number) => Array.from(a.subarray(i * 16, (i + 1) * 16));
      if (old === undefined) {
        expect(block(newValues, k)).toEqual(new Array(16).fill(0));
        expect(block(newM, k)).toEqual(new Array(16).fill(0));
        for (const x of block(newV, k)) expect(x).toBeCloseTo(meanV, 6);
      } else {
        expect(block(newValues, k)).toEqual(block(values, old));
        expect(block(newM, k)).toEqual(block(m, old));
        expect(block(newV, k)).toEqual(block(v, old));
      }
    }
  });

  it("a block grown late in training takes Adam steps of at most about lr, not the 3-6x lr that zero moments give", () => {
    // Many steps first, so that Adam's bias correction is about 1 when the pattern moves.
    const lr = 0.01;
    const run = (fresh: "adam" | "zeros") => {
      const layer = new BlockSparseLinear(16, 16, { density: 0.5, blockShape: [4, 4], seed: 6 });
      const optimizer = new Adam(layer.parameters(), { lr });
      for (let i = 0; i < 1500; i++) {
        layer.weight.grad = randn(layer.weight.shape as number[], { seed: 100 + i });
        optimizer.step();
      }
      const move = pruneAndRegrow(layer, { fraction: 0.25, random: 8, optimizer });
      if (fresh === "zeros") optimizer.stateOf(layer.weight)!.v.assign(tidy(() => cast(zeros(layer.weight.shape as number[]), "float32")));
      const grown = Array.from({ length: layer.nnzBlocks }, (_, k) => k).filter((k) => {
        const flat = layer.pattern.coordinates.blockRow[k] * 4 + layer.pattern.coordinates.blockCol[k];
        return move.regrown.includes(flat);
      });
      expect(grown).toHaveLength(2);
      // The same gradient each step (unit variance, like the ones before): the worst case for a fresh m.
      const g = randn(layer.weight.shape as number[], { seed: 999 });
      let largest = 0;
      for (let i = 0; i < 20; i++) {
        const before = host(layer.weight.value);
        layer.weight.grad = g.clone();
        optimizer.step();
        const after = host(layer.weight.value);
        for (const k of grown) for (let e = k * 16; e < (k + 1) * 16; e++) largest = Math.max(largest, Math.abs(after[e] - before[e]));
      }
      g.dispose();
      optimizer.dispose();
      return largest / lr;
    };
    // From zero moments the steps reach (1 - 0.9^k) / sqrt(1 - 0.999^k) lr (6.5x near k = 10).
    expect(run("zeros")).toBeGreaterThan(4);
    // From the layer's mean v: a unit gradient against a mean v near 1 gives steps up to about lr.
    expect(run("adam")).toBeLessThan(2);
  });

  it("SparseOptimizer moves every BlockSparseLinear of a model every `every` steps, keeping the density", () => {
    const a = new BlockSparseLinear(16, 16, { density: 0.5, blockShape: [4, 4], seed: 9 });
    const b = new BlockSparseLinear(16, 8, { density: 0.5, blockShape: [4, 4], seed: 10 });
    const model = new (class extends Linear {
      a = a;
      b = b;
    })(2, 2);
    const sparse = new SparseOptimizer(model, { fraction: 0.5, every: 2, seed: 11 });
    expect(sparse.layers()).toEqual([a, b]);
    expect(sparse.step().size).toBe(0);
    const [patternA, patternB] = [a.pattern, b.pattern];
    const moves = sparse.step();
    expect(moves.size).toBe(2);
    expect(a.pattern.equals(patternA)).toBe(false);
    expect(b.pattern.equals(patternB)).toBe(false);
    expect([a.nnzBlocks, b.nnzBlocks]).toEqual([patternA.nnzBlocks, patternB.nnzBlocks]);
    expect(() => new SparseOptimizer(model, { every: 0 })).toThrow(ValueError);
  });
});

describe("clipGradNorm", () => {
  it("scales every gradient by maxNorm / norm when the joint norm is larger, and returns the norm", () => {
    const layer = new BlockSparseLinear(16, 8, { density: 0.5, blockShape: [4, 4], seed: 12 });
    const other = new Parameter(tensor([1, 2, 3], [3]));
    layer.weight.grad = randn(layer.weight.shape as number[], { seed: 13 });
    layer.bias!.grad = randn([8], { seed: 14 });
    const grads = [host(layer.weight.grad), host(layer.bias!.grad)];
    const norm = Math.sqrt(grads.reduce((a, g) => a + g.reduce((b, v) => b + v * v, 0), 0));
    const params = [...layer.parameters(), other];
    expect(clipGradNorm(params, 1e6)).toBeCloseTo(norm, 4);
    expect(host(layer.bias!.grad!)).toEqual(grads[1]);
    expect(clipGradNorm(params, 0.5)).toBeCloseTo(norm, 4);
    const scale = 0.5 / (norm + 1e-6);
    expect(maxAbsDiff(host(layer.weight.grad!), grads[0].map((v) => v * scale))).toBeLessThan(1e-6);
    expect(maxAbsDiff(host(layer.bias!.grad!), grads[1].map((v) => v * scale))).toBeLessThan(1e-6);
    expect(other.grad).toBeNull();
    expect(() => clipGradNorm(params, -1)).toThrow(ValueError);
  });

  it("returns a NaN norm and scales every gradient by NaN, as torch's clip_grad_norm_ (error_if_nonfinite=False)", () => {
    const poisoned = new Parameter(tensor([1, 2], [2]));
    const clean = new Parameter(tensor([1, 2], [2]));
    poisoned.grad = tensor([Number.NaN, 1], [2]);
    clean.grad = tensor([3, 4], [2]);
    expect(clipGradNorm([poisoned, clean], 1)).toBeNaN();
    expect([...host(poisoned.grad), ...host(clean.grad)].every(Number.isNaN)).toBe(true);
  });

  it("returns an infinite norm and scales every gradient by 0 (inf * 0 is NaN), as torch's", () => {
    const infinite = new Parameter(tensor([1, 2], [2]));
    const clean = new Parameter(tensor([1, 2], [2]));
    infinite.grad = tensor([Number.POSITIVE_INFINITY, 1], [2]);
    clean.grad = tensor([3, 4], [2]);
    expect(clipGradNorm([infinite, clean], 1)).toBe(Number.POSITIVE_INFINITY);
    expect(host(infinite.grad)).toEqual(Float64Array.from([Number.NaN, 0]));
    expect(host(clean.grad)).toEqual(Float64Array.from([0, 0]));
  });
});

describe("Adam's multi-tensor step", () => {
  it("updates parameters of every dtype in one kernel call per kind, each exactly as adamUpdate on its own would", () => {
    // float32 (updated directly), bfloat16 and float16 (float32 masters, rounded back inside the kernel),
    // with one parameter skipping a step so that the steps differ.
    const dtypes = ["float32", "bfloat16", "float16", "bfloat16"] as const;
    const options = { lr: 1e-2, weightDecay: 0.05 };
    const params = dtypes.map((dtype, i) => new Parameter(tidy(() => cast(randn([3 + 5 * i, 7], { seed: 40 + i }), dtype))));
    // The reference: per parameter, adamUpdate on a float32 copy, then the rounding to the parameter's dtype.
    const reference = params.map((p) => {
      const master = keep(tidy(() => cast(p.value, "float32")));
      return { master, m: keep(zeros(p.shape)), v: keep(zeros(p.shape)), steps: 0 };
    });
    const optimizer = new AdamW(params, options);
    const calls: string[] = [];
    const stop = addKernelObserver((record) => calls.push(record.kernelName));
    for (let step = 0; step < 3; step++) {
      for (const [i, p] of params.entries()) {
        p.zeroGrad();
        if (step === 1 && i === 3) continue;
        p.grad = tidy(() => cast(randn(p.shape, { seed: 100 * step + i }), p.dtype));
        const r = reference[i];
        r.steps++;
        const next = tidy(() =>
          adamUpdate(r.master, cast(p.grad as Tensor, "float32"), r.m, r.v, { ...options, decoupledWeightDecay: true, step: r.steps }),
        );
        for (const key of ["m", "v"] as const) {
          r[key].dispose();
          r[key] = keep(next[key]);
        }
        r.master.dispose();
        r.master = keep(next.param);
      }
      calls.length = 0;
      optimizer.step();
      // One call for the float32 parameter and one per half dtype with masters; no cast once the
      // masters exist (the first step takes them from the parameters).
      expect(calls.filter((k) => k === "MultiTensorAdamUpdate")).toHaveLength(3);
      expect(calls.filter((k) => k === "AdamUpdate" || (step > 0 && k === "Cast"))).toEqual([]);
    }
    stop();
    for (const [i, p] of params.entries()) {
      const r = reference[i];
      expect(p.dtype).toBe(dtypes[i]);
      expect(optimizer.stepsOf(p)).toBe(r.steps);
      const rounded = tidy(() => cast(r.master, dtypes[i]));
      expect(maxAbsDiff(host(p.value), host(rounded))).toBe(0);
      rounded.dispose();
      if (dtypes[i] !== "float32") expect(maxAbsDiff(host(optimizer.masterOf(p) as Tensor), host(r.master))).toBe(0);
      const state = optimizer.stateOf(p) ?? {};
      expect(maxAbsDiff(host(state.m), host(r.m))).toBe(0);
      expect(maxAbsDiff(host(state.v), host(r.v))).toBe(0);
    }
    optimizer.dispose();
    for (const r of reference) for (const t of [r.master, r.m, r.v]) t.dispose();
    for (const p of params) p.dispose();
  });
});

describe("Adam's step in place", () => {
  it("keeps every parameter, master and moment in its own buffer, and leaves a clone taken before a step as it was", () => {
    const params = (["bfloat16", "float32"] as const).map((dtype, i) => new Parameter(tidy(() => cast(randn([6, 5], { seed: 70 + i }), dtype))));
    const optimizer = new AdamW(params, { lr: 1e-2 });
    const step = (seed: number) => {
      for (const [i, p] of params.entries()) {
        p.zeroGrad();
        p.grad = tidy(() => cast(randn(p.shape, { seed: seed + i }), p.dtype));
      }
      optimizer.step();
    };
    step(1); // the first step makes the state and the masters
    const buffers = () => params.map((p) => [p.value.dataId, optimizer.masterOf(p)?.dataId, optimizer.stateOf(p)?.m.dataId, optimizer.stateOf(p)?.v.dataId]);
    const before = buffers();
    const values = params.map((p) => host(p.value));
    step(2);
    expect(buffers()).toEqual(before);
    for (const [i, p] of params.entries()) expect(maxAbsDiff(host(p.value), values[i])).toBeGreaterThan(0);
    // A clone shares its buffer until one of them changes: the step must not write through it.
    const clone = params[0].value.clone();
    const cloned = host(clone);
    step(3);
    expect(maxAbsDiff(host(clone), cloned)).toBe(0);
    expect(maxAbsDiff(host(params[0].value), cloned)).toBeGreaterThan(0);
    clone.dispose();
    optimizer.dispose();
    for (const p of params) p.dispose();
  });
});

describe("lrScale: a learning rate per parameter", () => {
  // Each parameter trained by one optimizer with lrScale must end exactly where separate optimizers at
  // lr * scale leave it (PyTorch's parameter groups), for AdamW (one launch per learning rate) and SGD.
  const model = () => {
    const sparse = new BlockSparseLinear(16, 8, { density: 0.25, blockShape: [4, 4], seed: 3 });
    const dense = new Linear(16, 8, { seed: 4 });
    return { sparse, dense, params: [sparse.weight, sparse.bias!, dense.weight, dense.bias!] };
  };
  const makers = {
    AdamW: (params: Parameter[], lr: number, lrScale?: (p: Parameter) => number) => new AdamW(params, { lr, weightDecay: 0.1, lrScale }),
    SGD: (params: Parameter[], lr: number, lrScale?: (p: Parameter) => number) => new SGD(params, { lr, momentum: 0.9, lrScale }),
  };
  for (const [name, make] of Object.entries(makers)) {
    it(`${name} with inverseDensity equals a separate optimizer at lr / density for the block-sparse weight`, () => {
      const a = model();
      const b = model();
      expect(inverseDensity(a.sparse.weight)).toBeCloseTo(1 / a.sparse.pattern.density, 12);
      expect(inverseDensity(a.sparse.weight)).toBe(4);
      expect(inverseDensity(a.dense.weight)).toBe(1);
      const scaled = make(a.params, 1e-2, inverseDensity);
      const others = make(b.params.filter((p) => p !== b.sparse.weight), 1e-2);
      const sparseOnly = make([b.sparse.weight], 4e-2);
      const calls: string[] = [];
      const stop = addKernelObserver((record) => calls.push(record.kernelName));
      for (let step = 0; step < 3; step++) {
        for (const [i, p] of a.params.entries()) {
          p.grad = randn(p.shape, { seed: 10 * step + i });
          b.params[i].grad = randn(p.shape, { seed: 10 * step + i });
        }
        calls.length = 0;
        scaled.step();
        if (name === "AdamW") expect(calls.filter((k) => k === "MultiTensorAdamUpdate")).toHaveLength(2);
        others.step();
        sparseOnly.step();
      }
      stop();
      for (const [i, p] of a.params.entries()) expect(maxAbsDiff(host(p.value), host(b.params[i].value))).toBe(0);
      // The block-sparse weight really moved further than with lr alone.
      const plain = model();
      const unscaled = make(plain.params, 1e-2);
      for (let step = 0; step < 3; step++) {
        for (const [i, p] of plain.params.entries()) p.grad = randn(p.shape, { seed: 10 * step + i });
        unscaled.step();
      }
      const start = model().sparse.weight.value;
      expect(maxAbsDiff(host(a.sparse.weight.value), host(start))).toBeGreaterThan(2 * maxAbsDiff(host(plain.sparse.weight.value), host(start)));
      for (const o of [scaled, others, sparseOnly, unscaled]) o.dispose();
    });
  }

  it("rejects an lrScale that is not a function, or that gives a negative or non-finite scale, naming the parameter", () => {
    const { params } = model();
    expect(() => new AdamW(params, { lrScale: 2 as unknown as (p: Parameter) => number })).toThrow(ValueError);
    expect(() => new AdamW(params, { lrScale: 2 as unknown as (p: Parameter) => number })).toThrow("AdamW: lrScale must be a function");
    const optimizer = new AdamW(params, { lrScale: (p) => (p === params[2] ? Number.NaN : 1) });
    for (const p of params) p.grad = zeros(p.shape);
    expect(() => optimizer.step()).toThrow("AdamW: lrScale gave NaN for params[2] (shape [8,16])");
    // Nothing was updated or counted.
    for (const p of params) expect(optimizer.stepsOf(p)).toBe(0);
    optimizer.dispose();
  });
});

describe("a BlockSparseLinear without blocks", () => {
  for (const make of [
    (params: Parameter[]) => new Adam(params, { lr: 0.1, lrScale: inverseDensity }),
    (params: Parameter[]) => new AdamW(params, { lr: 0.1, lrScale: inverseDensity }),
    (params: Parameter[]) => new SGD(params, { lr: 0.1, momentum: 0.9, lrScale: inverseDensity }),
  ]) {
    it(`trains under ${make([new Parameter(zeros([1]))]).constructor.name} with inverseDensity: no step for the weight, the bias updated, its state saved and loaded`, () => {
      expect(inverseDensity(new Parameter(zeros([0, 4, 4]), { pattern: BsrPattern.fromMask([8, 8], [4, 4], [0, 0, 0, 0]) }))).toBe(1);
      const layer = new BlockSparseLinear(8, 8, { density: 0.5, blockShape: [4, 4], seed: 1 });
      const optimizer = make(layer.parameters());
      layer.setPattern(BsrPattern.fromMask([8, 8], [4, 4], [0, 0, 0, 0]), { optimizer });
      const bias = host(layer.bias!.value);
      for (let step = 0; step < 2; step++) {
        tidy(() => backward(mseLoss(layer.forward(randn([3, 8], { seed: step })), randn([3, 8], { seed: 10 + step }))));
        optimizer.step();
        optimizer.zeroGrad();
      }
      expect(layer.weight.shape).toEqual([0, 4, 4]);
      expect(maxAbsDiff(host(layer.bias!.value), bias)).toBeGreaterThan(0);
      const loaded = loadOptimizerState(saveOptimizerState(optimizer.stateDict()));
      const resumed = make(layer.parameters());
      resumed.loadStateDict(loaded);
      disposeStateDict(loaded.tensors);
      expect(resumed.stepsOf(layer.bias!)).toBe(2);
      // Blocks grown back train again.
      layer.setPattern(BsrPattern.fromMask([8, 8], [4, 4], [1, 0, 0, 1]), { optimizer: resumed, newValues: randn([2, 4, 4], { seed: 5 }) });
      const grown = host(layer.weight.value);
      tidy(() => backward(mseLoss(layer.forward(randn([3, 8], { seed: 7 })), randn([3, 8], { seed: 8 }))));
      resumed.step();
      expect(maxAbsDiff(host(layer.weight.value), grown)).toBeGreaterThan(0);
      for (const o of [optimizer, resumed]) o.dispose();
    });
  }
});
