import { type Tensor, ValueError, exp, mul, square, sub, sum, tanh, tensor, tidy } from "@blocksparse/core";
import { addGradReadyObserver, backward, getGradient, gradcheck, isRecording, noGrad, registerGradient } from "@blocksparse/autograd";
import { describe, expect, it } from "vitest";
import { poisonAllocations, randomTensor } from "./helpers";

poisonAllocations();

/** Replaces a kernel's gradient for the duration of `body`. */
function withGradient(kernel: "Tanh" | "Mul", gradFunc: NonNullable<ReturnType<typeof getGradient>>["gradFunc"], body: () => void) {
  const original = getGradient(kernel)!;
  registerGradient(kernel, { ...original, gradFunc });
  try {
    body();
  } finally {
    registerGradient(kernel, original);
  }
}

describe("gradcheck", () => {
  it("its numeric gradient is the float64 derivative of sum(out * r), written out by hand", () => {
    const x = randomTensor([5], 1);
    const result = gradcheck((t) => exp(t), [x], { seed: 3 });
    expect(result.ok).toBe(true);
    // With out = exp(x) and the projection r, d/dx sum(exp(x) r) = exp(x) r; r is recovered from backward.
    const detail = result.details[0];
    const xs = x.dataSync();
    const r = detail.analytic.map((g, i) => g / Math.fround(Math.exp(xs[i])));
    for (let i = 0; i < xs.length; i++) {
      expect(detail.numeric[i]).toBeCloseTo(Math.exp(xs[i]) * r[i], 3);
      expect(Math.abs(r[i])).toBeGreaterThan(0);
    }
  });

  it("FAILS on a deliberately wrong gradient: 3% too large, a wrong sign, or a term left out", () => {
    const x = randomTensor([3, 4], 2);
    withGradient("Tanh", ([dy], { savedOutputs: [y] }) => ({ x: () => mul(mul(dy, sub(1, square(y!))), 1.03) }), () => {
      expect(gradcheck((t) => tanh(t), [x]).ok).toBe(false);
    });
    withGradient("Tanh", ([dy]) => ({ x: () => mul(dy, -1) }), () => {
      const result = gradcheck((t) => tanh(t), [x]);
      expect(result.ok).toBe(false);
      expect(result.details[0].ok).toBe(false);
      expect(result.maxAbsError).toBeGreaterThan(0.1);
    });
    // Mul's gradient for b left as dy (missing the factor a): only input 1 fails.
    withGradient("Mul", ([dy], { saved }) => ({ a: () => mul(dy, saved.b as Tensor), b: () => mul(dy, 1) }), () => {
      const result = gradcheck((a, b) => mul(a, b), [x, randomTensor([3, 4], 3)]);
      expect(result.ok).toBe(false);
      expect(result.details.map((d) => d.ok)).toEqual([true, false]);
    });
  });

  it("the true gradient passes with a tight tolerance", () => {
    const result = gradcheck((t) => tanh(t), [randomTensor([3, 4], 2)], { atol: 1e-4, rtol: 1e-3 });
    expect(result.ok).toBe(true);
    expect(result.maxAbsError).toBeLessThan(1e-4);
  });

  it("checks only the inputs named in wrt, holding the others constant", () => {
    const a = randomTensor([2, 2], 4);
    const b = randomTensor([2, 2], 5);
    const onlyB = gradcheck((p, q) => mul(p, q), [a, b], { wrt: [1] });
    const onlyA = gradcheck((p, q) => mul(p, q), [a, b], { wrt: [0] });
    expect(onlyB.details.map((d) => d.input)).toEqual([1]);
    expect([onlyA.ok, onlyB.ok, a.requiresGrad, b.requiresGrad]).toEqual([true, true, false, false]);
    // d sum(a b r)/db = a r and d/da = b r: both give back the same projection r.
    const [av, bv] = [a.dataSync(), b.dataSync()];
    for (let i = 0; i < 4; i++) expect(onlyB.details[0].analytic[i] / av[i]).toBeCloseTo(onlyA.details[0].analytic[i] / bv[i], 5);
  });

  it("reports zero analytic gradients for an input the output does not depend on", () => {
    const result = gradcheck(() => sum(tensor([1, 2])), [randomTensor([3], 6)]);
    expect(result.ok).toBe(true);
    expect(Array.from(result.details[0].analytic)).toEqual([0, 0, 0]);
  });

  it("keeps an input's existing .grad", () => {
    const x = randomTensor([3], 7);
    x.requiresGrad = true;
    tidy(() => backward(sum(mul(x, 2))));
    const before = Array.from(x.grad!.dataSync());
    expect(gradcheck((t) => mul(t, t), [x]).ok).toBe(true);
    expect(Array.from(x.grad!.dataSync())).toEqual(before);
    expect(x.requiresGrad).toBe(true);
  });

  it("leaves a tracked input's graph, and the leaf behind it, as they were", () => {
    const w = randomTensor([3], 9);
    w.requiresGrad = true;
    const h = mul(w, 2);
    expect(gradcheck((t) => exp(t), [h]).ok).toBe(true);
    expect(w.grad).toBeNull();
    tidy(() => backward(sum(h)));
    expect(Array.from(w.grad!.dataSync())).toEqual([2, 2, 2]);
  });

  it("leaves the .grad of leaves fn closes over (a layer's parameters) alone, and tells no gradient-ready observer of them", () => {
    const w = randomTensor([3], 11);
    w.requiresGrad = true;
    const seen: Tensor[] = [];
    const stop = addGradReadyObserver((t) => seen.push(t));
    try {
      expect(gradcheck((t) => mul(t, w), [randomTensor([3], 12)]).ok).toBe(true);
      expect(gradcheck(() => w, [randomTensor([3], 13)]).ok).toBe(true);
    } finally {
      stop();
    }
    expect(w.grad).toBeNull();
    expect(seen).not.toContain(w);
    expect(w.requiresGrad).toBe(true);
  });

  it("leaves the graph of a tracked tensor fn closes over (an activation) for the caller's backward", () => {
    const w = randomTensor([3], 14);
    w.requiresGrad = true;
    const h = exp(w);
    expect(gradcheck((t) => mul(t, h), [randomTensor([3], 15)]).ok).toBe(true);
    expect(w.grad).toBeNull();
    tidy(() => backward(sum(h)));
    expect(Array.from(w.grad!.dataSync())).toEqual(Array.from(h.dataSync()));
  });

  it("gives an input passed twice a gradient per position, as its differences do", () => {
    const x = randomTensor([3], 10);
    const result = gradcheck((p, q) => mul(p, q), [x, x]);
    expect(result.ok).toBe(true);
    // d sum(p q r)/dp = q r and d/dq = p r: the same with p = q = x.
    expect(Array.from(result.details[0].analytic)).toEqual(Array.from(result.details[1].analytic));
  });

  it("records its own forward when called inside noGrad, where its analytic gradient was all zeros", () => {
    const x = randomTensor([4], 12);
    const result = noGrad(() => gradcheck((t) => mul(t, t), [x]));
    expect(result.ok).toBe(true);
    expect(Array.from(result.details[0].analytic).every((g) => g !== 0)).toBe(true);
    expect(isRecording()).toBe(true);
  });

  it("takes null options as the defaults", () => {
    const x = randomTensor([3], 9);
    const withNull = gradcheck((t) => exp(t), [x], null);
    expect(withNull.ok).toBe(true);
    expect(withNull.details.map((d) => Array.from(d.numeric))).toEqual(gradcheck((t) => exp(t), [x]).details.map((d) => Array.from(d.numeric)));
  });

  it("rejects bad arguments with clear errors", () => {
    const x = randomTensor([2], 8);
    expect(() => gradcheck((t) => t, [x], { eps: 0 })).toThrow(/eps must be > 0/);
    expect(() => gradcheck((t) => t, [x], { atol: -1 })).toThrow(/atol must be a finite number >= 0/);
    // A string is quoted: "got 0.1" read as a refused number.
    expect(() => gradcheck((t) => t, [x], { eps: "0.1" as never })).toThrow(/gradcheck: eps must be a finite number >= 0, got "0.1"/);
    expect(() => gradcheck((t) => t, [x], { rtol: "1e-2" as never })).toThrow(/gradcheck: rtol must be a finite number >= 0, got "1e-2"/);
    expect(() => gradcheck((t) => t, [x], "tight" as never)).toThrow(/options must be an object such as \{ atol: 1e-3 \}, got "tight"/);
    expect(() => gradcheck((t) => t, [x], { wrt: [3] })).toThrow(/wrt index 3 is out of range for 1 inputs/);
    expect(() => gradcheck((t) => t, [tensor(new Int32Array([1]))])).toThrow(/no float32 input/);
    expect(() => gradcheck((t) => t, [x, "x" as unknown as Tensor])).toThrow(/inputs\[1\] is not a Tensor/);
    expect(() => gradcheck(() => 3 as unknown as Tensor, [x])).toThrow(/must return a Tensor/);
  });

  it("refuses a wrt that is not an array of indices, options that are not an object and a seed that is not an integer", () => {
    const x = randomTensor([2], 8);
    const y = randomTensor([2], 9);
    // A number: wrt 0 was ignored (every input checked), wrt 1 a TypeError; a string's characters read as indices.
    expect(() => gradcheck((a, b) => mul(a, b), [x, y], { wrt: 0 as never })).toThrow(/wrt must be an array of input indices such as \[0\], got 0/);
    expect(() => gradcheck((a, b) => mul(a, b), [x, y], { wrt: 1 as never })).toThrow(ValueError);
    expect(() => gradcheck((a, b) => mul(a, b), [x, y], { wrt: "1" as never })).toThrow(/wrt must be an array of input indices such as \[0\], got "1"/);
    expect(() => gradcheck((a, b) => mul(a, b), [x, y], { wrt: ["1"] as never })).toThrow(/wrt holds "1", expected integer input indices/);
    expect(() => gradcheck((t) => t, [x], 5 as never)).toThrow(/options must be an object such as \{ atol: 1e-3 \}, got 5/);
    expect(() => gradcheck((t) => t, [x], { seed: Number.NaN })).toThrow(/gradcheck: seed must be an integer, got NaN/);
    expect(() => gradcheck((t) => t, [x], { seed: 1.5 })).toThrow(ValueError);
    expect(gradcheck((a, b) => mul(a, b), [x, y], { wrt: null as never }).details.map((d) => d.input)).toEqual([0, 1]);
  });

  it("refuses an eps that moves an input by nothing in float32, naming the element (its numeric gradient was NaN)", () => {
    const x = tensor([2, 1e6]);
    expect(() => gradcheck((t) => mul(t, t), [x])).toThrow(/gradcheck: eps 0.01 does not move inputs\[0\] element 1 \(1000000\) in float32; pass a larger eps/);
    expect(gradcheck((t) => mul(t, 3), [x], { eps: 0.5 }).ok).toBe(true);
  });

  it("refuses an unknown option, naming it, where it ran with the default it meant to change", () => {
    const x = randomTensor([2], 8);
    expect(() => gradcheck((t) => tanh(t), [x], { epsilon: 1e-3 } as never)).toThrow(/gradcheck: unknown option 'epsilon'; the options are eps, atol, rtol, wrt, seed/);
    expect(() => gradcheck((t) => tanh(t), [x], { atol: 1e-3, tol: 1, rTol: 1 } as never)).toThrow(/gradcheck: unknown options 'tol', 'rTol'/);
    expect(() => gradcheck((t) => tanh(t), [x], [] as never)).toThrow(/gradcheck: options must be an object or null, got an array/);
    expect(gradcheck((t) => tanh(t), [x], { eps: 1e-2, atol: 1e-3, rtol: 1e-2, wrt: [0], seed: 1 }).ok).toBe(true);
  });

  it("refuses an fn whose output changes shape between calls, in its differences too (they read NaN)", () => {
    const x = randomTensor([3], 10);
    // The first two calls (the output's shape, the analytic gradient) return [3]; the differences' calls [2].
    let made = 0;
    const changing = (t: Tensor) => (++made <= 2 ? mul(t, t) : sum(mul(t, t), 0, true));
    expect(() => gradcheck(changing, [x])).toThrow(ValueError);
    made = 0;
    expect(() => gradcheck(changing, [x])).toThrow(/gradcheck: fn returned \[3\], then \[1\]; it must be deterministic/);
    // Changed at the second call (the analytic gradient's), named in the order it happened.
    let seen = 0;
    const early = (t: Tensor) => (++seen <= 1 ? mul(t, t) : sum(mul(t, t), 0, true));
    expect(() => gradcheck(early, [x])).toThrow(/gradcheck: fn returned \[3\], then \[1\]; it must be deterministic/);
  });
});
