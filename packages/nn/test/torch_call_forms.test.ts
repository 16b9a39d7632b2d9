import { backward } from "@blocksparse/autograd";
import { cast, memory, mul, sum, type Tensor, tensor, ValueError } from "@blocksparse/core";
import { Adam, clipGradNorm, GradScaler, Linear, NnError, Parameter, SGD } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host } from "./helpers";

/** Calls that PyTorch code makes with an argument these functions used to ignore: each now does what torch's does. */

function withGrads(values: number[][]): Parameter[] {
  return values.map((v) => {
    const p = new Parameter(tensor(Float32Array.from(v), [v.length]));
    p.grad = tensor(Float32Array.from(v), [v.length]);
    return p;
  });
}

const grads = (params: Parameter[]) => params.flatMap((p) => [...host(p.grad as Tensor)]);

describe("clipGradNorm's norm_type, error_if_nonfinite and an infinite max_norm", () => {
  const values = [
    [3, -4, 0.5],
    [-7, 1],
  ];
  const flat = values.flat();

  it("clips by the norm of order normType (torch's positional norm_type, or { normType }), Infinity the largest |g|", () => {
    for (const [normType, norm] of [
      [Number.POSITIVE_INFINITY, 7],
      [1, flat.reduce((a, v) => a + Math.abs(v), 0)],
      [3, flat.reduce((a, v) => a + Math.abs(v) ** 3, 0) ** (1 / 3)],
    ]) {
      for (const form of [normType, { normType }]) {
        const params = withGrads(values);
        expect(clipGradNorm(params, 2, form)).toBeCloseTo(norm, 5);
        const scale = 2 / (norm + 1e-6);
        expect(Math.max(...grads(params).map((g, i) => Math.abs(g - flat[i] * scale)))).toBeLessThan(1e-6);
      }
    }
  });

  it("with errorIfNonfinite, a NaN or infinite norm is an NnError and no gradient is scaled", () => {
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY]) {
      const params = withGrads([[bad, 1], [2]]);
      expect(() => clipGradNorm(params, 1, 2, true)).toThrow(NnError);
      expect(() => clipGradNorm(params, 1, { errorIfNonfinite: true, normType: Number.POSITIVE_INFINITY })).toThrow(/norm is (NaN|Infinity)/);
      expect(grads(params)).toEqual([bad, 1, 2]);
    }
  });

  it("maxNorm Infinity returns the norm and leaves the gradients as they are (the usual way to log it)", () => {
    const params = withGrads(values);
    expect(clipGradNorm(params, Number.POSITIVE_INFINITY)).toBeCloseTo(Math.hypot(...flat), 5);
    expect(grads(params)).toEqual(flat.map(Math.fround));
  });

  it("takes torch's norm types 0 (parameters with a non-zero gradient), -Infinity (the smallest |g|) and negative orders", () => {
    // torch takes the norm of the parameters' norms: with ord 0, each counts its non-zeros, then the non-zero counts.
    const withZeros = [[3, 0, -0.5], [0, 0], [Number.NaN, 0], [-2]];
    for (const [normType, norm] of [
      [0, 3],
      [Number.NEGATIVE_INFINITY, 0.5],
      [-1, 1 / flat.reduce((a, v) => a + 1 / Math.abs(v), 0)],
    ]) {
      for (const form of [normType, { normType }]) {
        const params = withGrads(normType === 0 ? withZeros : values);
        const before = grads(params);
        expect(clipGradNorm(params, 0.25, form)).toBeCloseTo(norm, 5);
        const scale = 0.25 / (norm + 1e-6);
        const after = grads(params);
        for (const [i, g] of before.entries()) {
          if (Number.isNaN(g)) expect(after[i]).toBeNaN();
          else expect(Math.abs(after[i] - g * scale)).toBeLessThan(1e-6);
        }
      }
    }
    // A zero gradient makes the smallest |g| (and a negative order's norm) 0: nothing is clipped.
    const zero = withGrads([[0, 5], [7]]);
    expect(clipGradNorm(zero, 1, Number.NEGATIVE_INFINITY)).toBe(0);
    expect(clipGradNorm(zero, 1, -2)).toBe(0);
    expect(grads(zero)).toEqual([0, 5, 7]);
    // No gradient: norm 0 whatever the order, as torch's.
    expect(clipGradNorm([new Parameter(tensor([1], [1]))], 1, -1)).toBe(0);
  });

  it("refuses a norm type that is not a number, a non-boolean flag and unknown options, naming them", () => {
    const params = withGrads(values);
    expect(() => clipGradNorm(params, 1, Number.NaN)).toThrow(/normType must be a number/);
    expect(() => clipGradNorm(params, 1, { normType: Number.NaN })).toThrow(/normType must be a number/);
    expect(() => clipGradNorm(params, 1, "2" as never)).toThrow(ValueError);
    expect(() => clipGradNorm(params, 1, { errorIfNonfinite: 1 as never })).toThrow(ValueError);
    expect(() => clipGradNorm(params, 1, { norm_type: 1 } as never)).toThrow(ValueError);
    expect(() => clipGradNorm(params, Number.NaN)).toThrow(/maxNorm must be a number >= 0/);
    expect(grads(params)).toEqual(flat.map(Math.fround));
  });
});

describe("GradScaler.update(newScale)", () => {
  it("sets the scale and keeps the growth tracker, as torch's update(new_scale), with or without a step since", () => {
    const scaler = new GradScaler({ initScale: 1024, growthInterval: 3 });
    const [parameter] = withGrads([[1, 2]]);
    const optimizer = new SGD([parameter], { lr: 0 });
    expect(scaler.step(optimizer)).toBe(true);
    scaler.update();
    expect(scaler.stateDict()).toMatchObject({ scale: 1024, growthTracker: 1 });
    parameter.grad = tensor([1, 2], [2]);
    scaler.step(optimizer);
    scaler.update(8);
    expect(scaler.stateDict()).toMatchObject({ scale: 8, growthTracker: 1 });
    // The step's record is cleared: the next step unscales its new gradients by the new scale.
    parameter.grad = tensor([16, 8], [2]);
    scaler.unscale(optimizer);
    expect(host(parameter.grad)).toEqual(Float64Array.from([2, 1]));
    scaler.update(4);
    scaler.update(2);
    expect(scaler.scaleFactor).toBe(2);
    for (const bad of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, 1e300, "8"]) {
      expect(() => scaler.update(bad as never)).toThrow(/newScale must be > 0/);
      expect(() => new GradScaler({ enabled: false }).update(bad as never)).toThrow(ValueError);
    }
    expect(scaler.scaleFactor).toBe(2);
  });
});

describe("Optimizer.zeroGrad(false), torch's zero_grad(set_to_none=False)", () => {
  it("leaves zero gradients, so that the next step still moves momentum and weight decay, as torch's (float64 by hand)", () => {
    const [used, unused] = withGrads([[1, -2], [0.5]]);
    const optimizer = new SGD([used, unused], { lr: 0.1, momentum: 0.9, weightDecay: 0.01 });
    optimizer.step();
    optimizer.zeroGrad(false);
    expect(grads([used, unused])).toEqual([0, 0, 0]);
    // The next backward reaches `used` only: it accumulates into the zeros, `unused` keeps its zero gradient.
    const x = tensor([3, 4], [2]);
    backward(sum(mul(used.value, x)));
    expect(host(used.grad as Tensor)).toEqual(Float64Array.from([3, 4]));
    optimizer.step();
    // unused: p1 = 0.5 - 0.1 * (0.5 + 0.01 * 0.5); buf1 = 0.505; g2 = 0.01 * p1; buf2 = 0.9 * buf1 + g2; p2 = p1 - 0.1 * buf2.
    const p1 = Math.fround(0.5 - 0.1 * 0.505);
    const buf2 = 0.9 * 0.505 + 0.01 * p1;
    expect(host(unused.value)[0]).toBeCloseTo(p1 - 0.1 * buf2, 6);
    expect(optimizer.stepsOf(unused)).toBe(2);
    optimizer.zeroGrad();
    expect([used.grad, unused.grad]).toEqual([null, null]);
    expect(() => optimizer.zeroGrad("no" as never)).toThrow(ValueError);
    optimizer.dispose();
  });

  it("gives zeros of the parameter's dtype, so a float16 layer's next backward accumulates after GradScaler's float32 unscale", () => {
    const layer = new Linear(2, 2, { seed: 1 }).to("float16");
    const optimizer = new Adam(layer.parameters(), { lr: 1e-3 });
    const scaler = new GradScaler({ initScale: 256 });
    const x = cast(tensor([1, 2], [1, 2]), "float16");
    for (let i = 0; i < 2; i++) {
      backward(scaler.scale(sum(layer.forward(x))));
      expect(scaler.step(optimizer)).toBe(true);
      scaler.update();
      optimizer.zeroGrad(false);
      for (const p of layer.parameters()) {
        expect(p.grad?.dtype).toBe("float16");
        expect(host(p.grad as Tensor).every((g) => g === 0)).toBe(true);
      }
    }
    const before = memory().numTensors;
    optimizer.zeroGrad(false);
    expect(memory().numTensors).toBe(before);
    optimizer.dispose();
    for (const p of layer.parameters()) p.dispose();
  });
});

describe("zeroGrad(false) after a gradient was disposed", () => {
  // Its `grad` reads null, as torch's None: zeros would make the next step move the weight by its weight decay.
  it("leaves no gradient, so the next step leaves that parameter alone (optimizer, module and parameter alike)", () => {
    const layer = new Linear(2, 1, { seed: 2 });
    const optimizer = new SGD(layer.parameters(), { lr: 0.1, weightDecay: 0.5 });
    for (const clear of [() => optimizer.zeroGrad(false), () => layer.zeroGrad(false), () => layer.weight.zeroGrad(false)]) {
      backward(sum(layer.forward(tensor([1, 2], [1, 2]))));
      layer.weight.grad?.dispose();
      expect(layer.weight.grad).toBeNull();
      clear();
      expect(layer.weight.grad).toBeNull();
      const before = host(layer.weight.value);
      optimizer.step();
      expect(host(layer.weight.value)).toEqual(before);
      optimizer.zeroGrad();
    }
    optimizer.dispose();
    for (const p of layer.parameters()) p.dispose();
  });
});

describe("Module.zeroGrad(false)", () => {
  it("leaves zeros where the gradients were, as the optimizer's does, and clears them by default", () => {
    const layer = new Linear(3, 2, { seed: 4 });
    backward(sum(layer.forward(tensor([1, 2, 3], [1, 3]))));
    layer.zeroGrad(false);
    for (const p of layer.parameters()) expect(host(p.grad as Tensor).every((g) => g === 0)).toBe(true);
    layer.zeroGrad();
    for (const p of layer.parameters()) expect(p.grad).toBeNull();
    layer.zeroGrad(false);
    for (const p of layer.parameters()) expect(p.grad).toBeNull();
    expect(() => layer.zeroGrad(0 as never)).toThrow(ValueError);
    for (const p of layer.parameters()) p.dispose();
  });
});

describe("optimizer.step(closure)", () => {
  it("runs the closure first and updates from the gradients it leaves, returning its loss, as torch's step(closure)", () => {
    const [parameter] = withGrads([[1, 2]]);
    parameter.grad = null;
    const optimizer = new SGD([parameter], { lr: 0.5 });
    const x = tensor([3, -1], [2]);
    const loss = optimizer.step(() => {
      optimizer.zeroGrad();
      const l = sum(mul(parameter.value, x));
      backward(l);
      return l;
    });
    expect(loss?.item()).toBe(1);
    expect(host(parameter.value)).toEqual(Float64Array.from([1 - 1.5, 2 + 0.5]));
    expect(optimizer.step()).toBeUndefined();
    expect(() => optimizer.step(42 as never)).toThrow(/closure must be a function/);
    loss?.dispose();
    optimizer.dispose();
  });

  it("GradScaler.step passes a closure on when disabled and refuses one when enabled, as torch's", () => {
    const [parameter] = withGrads([[1]]);
    const optimizer = new SGD([parameter], { lr: 1 });
    let calls = 0;
    const closure = () => {
      calls++;
    };
    expect(() => new GradScaler().step(optimizer, closure)).toThrow(/no closure while enabled/);
    expect(host(parameter.value)).toEqual(Float64Array.from([1]));
    expect(new GradScaler({ enabled: false }).step(optimizer, closure)).toBe(true);
    expect(calls).toBe(1);
    expect(host(parameter.value)).toEqual(Float64Array.from([0]));
    optimizer.dispose();
  });
});
