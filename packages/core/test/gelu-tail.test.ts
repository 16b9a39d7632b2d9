import { describe, expect, it } from "vitest";
import { erfc } from "../src/backends/js/kernels/util";
import { type FloatDType, gelu, geluBackward, tensor, tidy } from "../src/index";
import * as R from "../src/testing/reference";

// The expected values come from two methods neither implementation uses, each without cancellation where it is used.
const density = (x: number): number => Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);

/** Phi(x) for x >= 0: 1/2 + phi(x) (x + x^3/3 + x^5/(3 5) + ...), every term positive (Marsaglia, J. Stat. Softw. 11, 2004). */
function cdfBySeries(x: number): number {
  let term = x;
  let sum = x;
  for (let n = 1; term > 1e-18 * sum; n++) {
    term *= (x * x) / (2 * n + 1);
    sum += term;
  }
  return 0.5 + density(x) * sum;
}

/** Mills' ratio (1 - Phi(t)) / phi(t) = int_0^inf e^(-t s - s^2/2) ds, t >= 0: trapezoidal rule after s = e^(v - e^(-v)). */
function millsRatio(t: number): number {
  const h = 1 / 8;
  let sum = 0;
  for (let v = -6; v <= 6; v += h) {
    const s = Math.exp(v - Math.exp(-v));
    sum += Math.exp(-t * s - 0.5 * s * s) * s * (1 + Math.exp(-v));
  }
  return sum * h;
}

/** The standard normal CDF to about 1e-15, relative, on [-40, 10]. */
const normalCdf = (x: number): number => (x >= 0 ? cdfBySeries(x) : density(x) * millsRatio(-x));

const EPS = 2 ** -52;
const grid = (from: number, to: number, step: number): number[] => Array.from({ length: Math.round((to - from) / step) + 1 }, (_, i) => from + i * step);

/** Fails with the first x where |got - want| > tol(x, want). */
function expectClose(xs: number[], got: (x: number, i: number) => number, want: (x: number) => number, tol: (x: number, want: number) => number): void {
  xs.forEach((x, i) => {
    const [g, w] = [got(x, i), want(x)];
    if (!(Math.abs(g - w) <= tol(x, w))) expect.fail(`x = ${x}: got ${g}, want ${w} (error ${Math.abs(g - w)}, allowed ${tol(x, w)})`);
  });
}

describe("erf GELU in the negative tail", () => {
  it("the test's own Phi agrees with tabulated values", () => {
    // Phi(-10), Phi(-5), Phi(+-1) from standard tables; Phi(-20) and Phi(-37) by mpmath at 40 digits.
    const table: [number, number][] = [
      [-37, 5.725571222524577e-300],
      [-20, 2.7536241186062337e-89],
      [-10, 7.619853024160525e-24],
      [-5, 2.866515718791939e-7],
      [-1, 0.15865525393145705],
      [1, 0.8413447460685429],
    ];
    for (const [x, phi] of table) expect(Math.abs(normalCdf(x) - phi) / phi, `Phi(${x})`).toBeLessThan(4 * EPS);
  });

  it("js erfc gives Phi(x) = erfc(-x / sqrt 2) / 2 in float64 to (8 + x^2) ulps on [-37, 10]", () => {
    // x / sqrt 2 rounds once, which moves erfc by up to x^2 ulps; erfc itself is within a few.
    expectClose(grid(-37, 10, 1 / 16), (x) => 0.5 * erfc(-x * Math.SQRT1_2), normalCdf, (x, w) => (8 + x * x) * EPS * w);
  });

  it("the float64 reference's gelu and geluGrad are relatively accurate on [-37, 10]", () => {
    const xs = grid(-37, 10, 1 / 16);
    const tol = (x: number): number => (16 + x * x) * EPS;
    expectClose(xs, (x) => R.gelu(x, "none"), (x) => x * normalCdf(x), (x, w) => tol(x) * Math.abs(w));
    // The derivative Phi(x) + x phi(x) crosses 0 near x = -0.75: its error is relative to the size of its two terms.
    const terms = (x: number): number => normalCdf(x) + Math.abs(x) * density(x);
    expectClose(xs, (x) => R.geluGrad(x, "none"), (x) => normalCdf(x) + x * density(x), (x) => tol(x) * terms(x));
  });

  // Relative tolerance (js rounds a float64 result once, half types through float32) and the smallest subnormal.
  const TOLERANCE: Record<FloatDType, [relative: number, subnormal: number]> = {
    float32: [2 ** -22, 2 ** -149],
    float16: [2 ** -10, 2 ** -24],
    bfloat16: [2 ** -7, 2 ** -133],
  };
  for (const dtype of ["float32", "float16", "bfloat16"] as const) {
    it(`js Gelu and GeluBackward (erf) ${dtype} are relatively accurate on [-40, 10], tiny and negative deep in the tail`, () => {
      const [relative, subnormal] = TOLERANCE[dtype];
      const xs = grid(-40, 10, 1 / 4);
      tidy(() => {
        const x = tensor(xs, [xs.length], dtype);
        const value = gelu(x, "none").dataSync();
        const derivative = geluBackward(tensor(xs.map(() => 1), [xs.length], dtype), x, "none").dataSync();
        expectClose(xs, (_, i) => value[i], (v) => v * normalCdf(v), (_, w) => relative * Math.abs(w) + subnormal);
        const terms = (v: number): number => normalCdf(v) + Math.abs(v) * density(v);
        expectClose(xs, (_, i) => derivative[i], (v) => normalCdf(v) + v * density(v), (v) => relative * terms(v) + subnormal);
      });
    });
  }
});

describe("tanh GELU in the negative tail", () => {
  // The gate 0.5 (1 + tanh u) as e^(2u) / (1 + e^(2u)), u = sqrt(2 / pi) x (1 + 0.044715 x^2) < 0 for x < 0: no
  // cancellation there, and a different rounding of u than the implementations' (u's rounding, a few ulps, moves the
  // gate by |2u| times as many: the tolerances below grow with |u|).
  const C = Math.sqrt(2 / Math.PI);
  const u = (x: number): number => C * x * (1 + 0.044715 * x * x);
  const gate = (x: number): number => {
    const e = Math.exp(2 * u(x));
    return e / (1 + e);
  };
  const du = (x: number): number => C * (1 + 3 * 0.044715 * x * x);
  // The derivative s + 2 x s (1 - s) du/dx crosses 0 near x = -0.75: its error is relative to its terms' size.
  const terms = (x: number): number => gate(x) * (1 + 2 * Math.abs(x) * (1 - gate(x)) * du(x));
  const derivative = (x: number): number => gate(x) * (1 + 2 * x * (1 - gate(x)) * du(x));
  const xs = grid(-21, 0, 1 / 16);
  const amplified = (x: number): number => (16 + 8 * Math.abs(u(x))) * EPS;

  it("the float64 reference's gelu and geluGrad are relatively accurate on [-21, 0] (1 + tanh u read 0 from x = -7.2)", () => {
    expectClose(xs, (x) => R.gelu(x, "tanh"), (x) => x * gate(x), (x, w) => amplified(x) * Math.abs(w));
    expectClose(xs, (x) => R.geluGrad(x, "tanh"), derivative, (x) => amplified(x) * terms(x));
  });

  for (const dtype of ["float32", "float16", "bfloat16"] as const) {
    it(`js Gelu and GeluBackward (tanh) ${dtype} are relatively accurate on [-21, 0], tiny and negative deep in the tail`, () => {
      const relative = { float32: 2 ** -22, float16: 2 ** -10, bfloat16: 2 ** -7 }[dtype];
      const subnormal = { float32: 2 ** -149, float16: 2 ** -24, bfloat16: 2 ** -133 }[dtype];
      tidy(() => {
        const x = tensor(xs, [xs.length], dtype);
        // The points as the dtype holds them (bfloat16's 8 bits round some of the sixteenths past 16).
        const at = Array.from(x.dataSync());
        const value = gelu(x, "tanh").dataSync();
        const grad = geluBackward(tensor(xs.map(() => 1), [xs.length], dtype), x, "tanh").dataSync();
        expectClose(at, (_, i) => value[i], (v) => v * gate(v), (v, w) => (relative + amplified(v)) * Math.abs(w) + subnormal);
        expectClose(at, (_, i) => grad[i], derivative, (v) => (relative + amplified(v)) * terms(v) + subnormal);
      });
    });
  }
});
