/** The elementwise family: the unary, binary and comparison kernels, Gelu/GeluBackward and Where. */
import {
  FLOAT_DTYPES,
  type Tensor,
  abs,
  add,
  div,
  equal,
  exp,
  formatShape,
  biasActivation,
  biasActivationBackward,
  gelu,
  geluBackward,
  greater,
  greaterEqual,
  less,
  lessEqual,
  log,
  maximum,
  minimum,
  mul,
  neg,
  notEqual,
  pow,
  relu,
  rsqrt,
  sigmoid,
  sqrt,
  square,
  sub,
  tanh,
  tensor,
  where,
} from "@blocksparse/core";
import { describe, expect } from "vitest";
import { ALL_DTYPES, type Conformance, type Generator, expectExact, expectValues, inCase, makeInput, round } from "./harness";
import * as R from "./reference";

const UNARY_CASES: { kernel: string; op: (x: Tensor) => Tensor; ref: (x: number) => number; input: Generator; int32: boolean }[] = [
  { kernel: "Neg", op: neg, ref: (x) => -x, input: "normal", int32: true },
  { kernel: "Abs", op: abs, ref: Math.abs, input: "normal", int32: true },
  { kernel: "Exp", op: exp, ref: Math.exp, input: "normal", int32: false },
  { kernel: "Log", op: log, ref: Math.log, input: "positive", int32: false },
  { kernel: "Sqrt", op: sqrt, ref: Math.sqrt, input: "positive", int32: false },
  { kernel: "Rsqrt", op: rsqrt, ref: (x) => 1 / Math.sqrt(x), input: "positive", int32: false },
  { kernel: "Tanh", op: tanh, ref: Math.tanh, input: "normal", int32: false },
  { kernel: "Sigmoid", op: sigmoid, ref: (x) => 1 / (1 + Math.exp(-x)), input: "normal", int32: false },
  { kernel: "Relu", op: relu, ref: (x) => Math.max(x, 0), input: "normal", int32: true },
  { kernel: "Square", op: square, ref: (x) => x * x, input: "normal", int32: true },
];

type Binary = (a: Tensor, b: Tensor) => Tensor;

const BINARY_CASES: { kernel: string; op: Binary; ref: (a: number, b: number) => number; int32: boolean; positiveA?: boolean }[] = [
  { kernel: "Add", op: add, ref: (a, b) => a + b, int32: true },
  { kernel: "Sub", op: sub, ref: (a, b) => a - b, int32: true },
  { kernel: "Mul", op: mul, ref: (a, b) => a * b, int32: true },
  { kernel: "Div", op: div, ref: (a, b) => a / b, int32: false },
  { kernel: "Maximum", op: maximum, ref: Math.max, int32: true },
  { kernel: "Minimum", op: minimum, ref: Math.min, int32: true },
  { kernel: "Pow", op: pow, ref: (a, b) => a ** b, int32: false, positiveA: true },
];

const COMPARISON_CASES: { kernel: string; op: Binary; ref: (a: number, b: number) => boolean }[] = [
  { kernel: "Equal", op: equal, ref: (a, b) => a === b },
  { kernel: "NotEqual", op: notEqual, ref: (a, b) => a !== b },
  { kernel: "Less", op: less, ref: (a, b) => a < b },
  { kernel: "LessEqual", op: lessEqual, ref: (a, b) => a <= b },
  { kernel: "Greater", op: greater, ref: (a, b) => a > b },
  { kernel: "GreaterEqual", op: greaterEqual, ref: (a, b) => a >= b },
];

/** The inputs where activations must take their limits rather than compute inf * 0 or inf / inf. */
const NON_FINITE = [Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY, Number.NaN];

const UNARY_SHAPES = [[0], [1], [7], [3, 5], [2, 3, 4]];
const BROADCAST_PAIRS: [number[], number[]][] = [
  [[3, 4], [3, 4]],
  [[3, 4], [4]],
  [[3, 4], []],
  [[], [2, 3]],
  [[2, 1, 4], [3, 1]],
  [[0, 3], [1, 3]],
  [[1], [5]],
  // Shapes that take a device backend's packed paths (a row, a scalar or one value per row against a contiguous
  // operand, with tails) and its strided path over dims it cannot merge.
  [[5, 16], [5, 1]],
  [[3, 1], [3, 24]],
  [[2, 3, 8], [2, 3, 1]],
  [[37], []],
  [[], [2, 40]],
  [[2, 3, 16], [16]],
  [[4, 2, 8], [4, 1, 8]],
];

export function declareElementwiseTests(suite: Conformance): void {
  const { check, rng } = suite;

  describe("elementwise unary", () => {
    for (const c of UNARY_CASES) {
      for (const dtype of [...FLOAT_DTYPES, ...(c.int32 ? (["int32"] as const) : [])]) {
        check(`${c.kernel} ${dtype}`, () => {
          for (const shape of UNARY_SHAPES) {
            inCase(`${c.kernel} ${dtype} x ${formatShape(shape)}`, () => {
              const x = makeInput(rng(), shape, dtype, dtype === "int32" ? "smallInt" : c.input);
              const want = R.map(x.ref, (v) => (dtype === "int32" ? c.ref(v) : round(dtype, c.ref(v))));
              expectValues(c.op(x.t), want, dtype);
            });
          }
        });
      }
    }
    for (const c of UNARY_CASES.filter((unary) => unary.input === "normal")) {
      for (const dtype of FLOAT_DTYPES) {
        check(`${c.kernel} ${dtype} at -inf, +inf, NaN`, () => {
          const special = R.ref([3], (i) => NON_FINITE[i]);
          expectValues(c.op(tensor(special.data, [3], dtype)), R.map(special, c.ref), dtype);
        });
      }
    }
    for (const approximate of ["none", "tanh"] as const) {
      for (const dtype of FLOAT_DTYPES) {
        check(`Gelu and GeluBackward (approximate ${approximate}) ${dtype}`, () => {
          for (const shape of [[0], [1], [4, 9]]) {
            const x = makeInput(rng(), shape, dtype);
            const dy = makeInput(rng(), shape, dtype);
            inCase(`Gelu (${approximate}) ${dtype} x ${formatShape(shape)}`, () =>
              expectValues(gelu(x.t, approximate), R.map(x.ref, (v) => R.gelu(v, approximate)), dtype, "scaled"),
            );
            inCase(`GeluBackward (${approximate}) ${dtype} x ${formatShape(shape)}`, () => {
              const wantGrad = R.zip([dy.ref, x.ref], (g, v) => g * R.geluGrad(v, approximate));
              expectValues(geluBackward(dy.t, x.t, approximate), wantGrad, dtype, "scaled");
            });
          }
          // Extremes: tails must saturate, not overflow.
          inCase(`Gelu (${approximate}) ${dtype} tails +-8, +-30`, () => {
            const tails = tensor([-30, -8, 8, 30], [4], dtype);
            expectValues(gelu(tails, approximate), R.map(R.ref([4], (i) => [-30, -8, 8, 30][i]), (v) => R.gelu(v, approximate)), dtype, "scaled");
          });
          // Infinities take GELU's limits (gelu(+-inf) = +inf, 0; gelu'(+-inf) = 1, 0), not inf * 0; NaN stays NaN.
          inCase(`Gelu and GeluBackward (${approximate}) ${dtype} at -inf, +inf, NaN`, () => {
            const special = R.ref([3], (i) => NON_FINITE[i]);
            const x = tensor(special.data, [3], dtype);
            expectValues(gelu(x, approximate), R.map(special, (v) => R.gelu(v, approximate)), dtype);
            const dy = tensor([2, 2, 2], [3], dtype);
            expectValues(geluBackward(dy, x, approximate), R.map(special, (v) => 2 * R.geluGrad(v, approximate)), dtype);
          });
        });
      }
    }
  });

  describe("biasActivation", () => {
    // Against float64 math on the unrounded sum x + bias; shapes with and without rows, odd widths,
    // rank 3, and enough rows for a GPU to split the bias sum.
    const activations = { relu: R.relu, gelu: (v: number) => R.gelu(v, "none"), gelu_tanh: (v: number) => R.gelu(v, "tanh") };
    const derivatives = {
      // 1 at NaN, as torch's threshold_backward (zero only where the output is <= 0).
      relu: (v: number) => (v <= 0 ? 0 : 1),
      gelu: (v: number) => R.geluGrad(v, "none"),
      gelu_tanh: (v: number) => R.geluGrad(v, "tanh"),
    };
    for (const activation of ["relu", "gelu", "gelu_tanh"] as const) {
      for (const dtype of FLOAT_DTYPES) {
        check(`BiasActivation and BiasActivationBackward (${activation}) ${dtype}`, () => {
          for (const shape of [[0, 5], [1, 7], [33, 65], [2, 3, 40], [4100, 24]]) {
            for (const withBias of [true, false]) {
              const width = shape[shape.length - 1];
              const x = makeInput(rng(), shape, dtype);
              const dy = makeInput(rng(), shape, dtype);
              const bias = withBias ? makeInput(rng(), [width], dtype) : null;
              const pre = R.ref(shape, (i) => x.ref.data[i] + (bias ? bias.ref.data[i % width] : 0));
              const label = `${activation} ${dtype} x ${formatShape(shape)}${withBias ? " + bias" : ""}`;
              inCase(`BiasActivation ${label}`, () => expectValues(biasActivation(x.t, bias?.t ?? null, activation), R.map(pre, activations[activation]), dtype, "scaled"));
              inCase(`BiasActivationBackward ${label}`, () => {
                const dx = R.zip([dy.ref, pre], (g, v) => g * derivatives[activation](v));
                const dbias = R.ref([width], (j) => {
                  let total = 0;
                  for (let i = j; i < dx.data.length; i += width) total += dx.data[i];
                  return total;
                });
                const [gotDx, gotDbias] = biasActivationBackward(dy.t, x.t, bias?.t ?? null, activation);
                expectValues(gotDx, dx, dtype, "scaled");
                expectValues(gotDbias, dbias, dtype, "scaled");
              });
            }
          }
          inCase(`BiasActivation and BiasActivationBackward ${activation} ${dtype} at -inf, +inf, NaN`, () => {
            const x = R.ref([1, 3], (i) => NON_FINITE[i]);
            const bias = tensor([1, -1, 0], [3], dtype);
            const pre = R.ref([1, 3], (i) => x.data[i] + [1, -1, 0][i]);
            const xt = tensor(x.data, [1, 3], dtype);
            expectValues(biasActivation(xt, bias, activation), R.map(pre, activations[activation]), dtype);
            const dy = tensor([2, 2, 2], [1, 3], dtype);
            const dx = R.map(pre, (v) => 2 * derivatives[activation](v));
            const [gotDx, gotDbias] = biasActivationBackward(dy, xt, bias, activation);
            expectValues(gotDx, dx, dtype);
            expectValues(gotDbias, R.ref([3], (j) => dx.data[j]), dtype);
          });
        });
      }
    }
  });

  describe("elementwise binary", () => {
    for (const c of BINARY_CASES) {
      for (const dtype of [...FLOAT_DTYPES, ...(c.int32 ? (["int32"] as const) : [])]) {
        check(`${c.kernel} ${dtype} with broadcasting`, () => {
          for (const [sa, sb] of BROADCAST_PAIRS) {
            inCase(`${c.kernel} ${dtype} a ${formatShape(sa)} b ${formatShape(sb)}`, () => {
              const kind: Generator = dtype === "int32" ? "smallInt" : "normal";
              const a = makeInput(rng(), sa, dtype, c.positiveA ? "positive" : kind);
              const b = makeInput(rng(), sb, dtype, kind);
              const want = R.zip([a.ref, b.ref], (x, y) => (dtype === "int32" ? c.ref(x, y) : round(dtype, c.ref(x, y))));
              expectValues(c.op(a.t, b.t), want, dtype);
            });
          }
        });
      }
    }
    for (const dtype of FLOAT_DTYPES) {
      check(`Pow ${dtype} follows C's pow at 1 ** y and (-1) ** +-inf`, () => {
        const a = [1, 1, 1, -1, -1, Number.NaN];
        const b = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 0];
        expectValues(pow(tensor(a, [6], dtype), tensor(b, [6], dtype)), R.ref([6], () => 1), dtype);
      });
    }
    for (const dtype of FLOAT_DTYPES) {
      check(`Maximum, Minimum ${dtype} give NaN where either operand is NaN; comparisons with NaN are false but NotEqual`, () => {
        // Each pair also in the other order and broadcast against a row, past the first pack of a vectorized loop.
        const a = [Number.NaN, 1, Number.NaN, Number.NEGATIVE_INFINITY, Number.NaN, 2];
        const b = [1, Number.NaN, Number.NaN, Number.NaN, Number.POSITIVE_INFINITY, 3];
        const wide = (values: number[]) => Array.from({ length: 40 }, (_, i) => values[i % values.length]);
        for (const [sa, sb, va, vb] of [
          [[6], [6], a, b],
          [[6], [6], b, a],
          [[40], [40], wide(a), wide(b)],
          [[5, 8], [8], wide(a), wide(b).slice(0, 8)],
        ] as [number[], number[], number[], number[]][]) {
          inCase(`Maximum, Minimum and comparisons ${dtype} a ${formatShape(sa)} b ${formatShape(sb)} with NaN`, () => {
            const ta = tensor(va, sa, dtype);
            const tb = tensor(vb, sb, dtype);
            const ra = R.ref(sa, (i) => va[i]);
            const rb = R.ref(sb, (i) => vb[i]);
            // Math.max and Math.min return NaN when either argument is NaN.
            expectValues(maximum(ta, tb), R.zip([ra, rb], Math.max), dtype);
            expectValues(minimum(ta, tb), R.zip([ra, rb], Math.min), dtype);
            for (const c of COMPARISON_CASES) expectValues(c.op(ta, tb), R.zip([ra, rb], (x, y) => (c.ref(x, y) ? 1 : 0)), "int32");
          });
        }
      });
    }
    check("Mul, Sub, Add accept a number as a scalar of the other operand's dtype", () => {
      const a = makeInput(rng(), [2, 3], "float16");
      inCase("Mul float16 a [2, 3] b 3", () => expectValues(mul(a.t, 3), R.map(a.ref, (v) => round("float16", v * 3)), "float16"));
      inCase("Sub float16 a 1 b [2, 3]", () => expectValues(sub(1, a.t), R.map(a.ref, (v) => round("float16", 1 - v)), "float16"));
      const i = makeInput(rng(), [4], "int32", "smallInt");
      inCase("Add int32 a [4] b 5", () => expectValues(add(i.t, 5), R.map(i.ref, (v) => v + 5), "int32"));
    });
    check("Add, Mul int32 wrap around 32 bits", () => {
      const big = tensor([2147483647, -2147483648, 65536], [3], "int32");
      inCase("Add int32 overflow", () => expectValues(add(big, 1), { shape: [3], data: Float64Array.from([-2147483648, -2147483647, 65537]) }, "int32"));
      inCase("Mul int32 overflow", () => expectValues(mul(big, big), { shape: [3], data: Float64Array.from([1, 0, 0]) }, "int32"));
    });
    for (const c of COMPARISON_CASES) {
      for (const dtype of ALL_DTYPES) {
        check(`${c.kernel} ${dtype} returns int32`, () => {
          for (const [sa, sb] of BROADCAST_PAIRS) {
            inCase(`${c.kernel} ${dtype} a ${formatShape(sa)} b ${formatShape(sb)}`, () => {
              const a = makeInput(rng(), sa, dtype, "smallInt");
              const b = makeInput(rng(), sb, dtype, "smallInt");
              expectValues(c.op(a.t, b.t), R.zip([a.ref, b.ref], (x, y) => (c.ref(x, y) ? 1 : 0)), "int32");
            });
          }
        });
      }
    }
    for (const dtype of ALL_DTYPES) {
      check(`Where ${dtype} broadcasts condition and both branches`, () => {
        const shapes: [number[], number[], number[]][] = [
          [[3, 4], [3, 4], [3, 4]],
          [[3, 1], [4], []],
          [[2, 1, 3], [1, 4, 1], [3]],
          [[0, 2], [2], [1]],
        ];
        for (const [sc, sa, sb] of shapes) {
          inCase(`Where ${dtype} condition ${formatShape(sc)} a ${formatShape(sa)} b ${formatShape(sb)}`, () => {
            const cond = makeInput(rng(), sc, "int32", "smallInt");
            const a = makeInput(rng(), sa, dtype, dtype === "int32" ? "smallInt" : "normal");
            const b = makeInput(rng(), sb, dtype, dtype === "int32" ? "smallInt" : "normal");
            expectExact(where(cond.t, a.t, b.t), R.zip([cond.ref, a.ref, b.ref], (c, x, y) => (c !== 0 ? x : y)), dtype);
          });
        }
      });
    }
    check("Where with two numbers gives float32 of the condition's shape on the condition's backend", () => {
      for (const shape of [[2, 3], [], [0, 4]]) {
        inCase(`Where condition ${formatShape(shape)} a 0.1 b -Infinity`, () => {
          const cond = makeInput(rng(), shape, "int32", "smallInt");
          const got = where(cond.t, 0.1, Number.NEGATIVE_INFINITY);
          expect(got.backend, "output backend").toBe(cond.t.backend);
          expectExact(got, R.map(cond.ref, (c) => (c !== 0 ? Math.fround(0.1) : Number.NEGATIVE_INFINITY)), "float32");
        });
      }
      if (suite.backendName !== "js") {
        inCase("Where with a condition on js while another backend is active", () => {
          expect(where(tensor([1, 0], [2], "int32").to("js"), 1, 0).backend.name, "output backend").toBe("js");
        });
      }
    });
  });
}
