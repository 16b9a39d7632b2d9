/**
 * The backend conformance suite: `runBackendConformance(name)` declares (with vitest) every
 * kernel's tests against the named backend. Values are checked against float64 math
 * written here, on seeded random inputs, in float32, float16 and bfloat16 with per-dtype
 * tolerances; outputs are poisoned (the backend's `poisonAllocations`) so an unwritten
 * element fails; each test fails if it leaves a buffer allocated, and each kernel call if
 * it leaves more buffers than its outputs (the engine's leak check).
 */
import {
  BACKEND_KERNELS,
  BackendError,
  type Backend,
  BsrPattern,
  CoreError,
  DTypeError,
  type DType,
  DisposedTensorError,
  FLOAT_DTYPES,
  type FloatDType,
  IndexError,
  ShapeError,
  type Tensor,
  ValueError,
  abs,
  adamUpdate,
  add,
  argmax,
  blockNorms,
  broadcastTo,
  bsrLinear,
  bsrMatmul,
  cast,
  concat,
  crossEntropy,
  crossEntropyBackward,
  div,
  equal,
  exp,
  float16BitsToFloat32,
  float32ToFloat16Bits,
  bfloat16BitsToFloat32,
  float32ToBfloat16Bits,
  fromStorage,
  full,
  gather,
  gelu,
  geluBackward,
  getBackend,
  getBackendInstance,
  greater,
  greaterEqual,
  layerNorm,
  layerNormBackward,
  layerNormWithStats,
  less,
  lessEqual,
  log,
  logSoftmax,
  matmul,
  max,
  maximum,
  mean,
  memory,
  min,
  minimum,
  mul,
  neg,
  notEqual,
  oneHot,
  ones,
  pow,
  randint,
  randn,
  relu,
  reshape,
  rsqrt,
  sampledMatmul,
  scatterAdd,
  setBackend,
  setKernelLeakCheck,
  sigmoid,
  slice,
  softmax,
  sqrt,
  square,
  stack,
  sub,
  sum,
  tanh,
  tensor,
  tidy,
  transpose,
  where,
  zeros,
} from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/format";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as R from "./testing/reference";
import type { Ref } from "./testing/reference";

/** Relative tolerance of each dtype: a few units in the last place of its output rounding. */
/** The suite's float64 reference math (dense W of a pattern, matmul, ...), for a backend's own tests. */
export * as reference from "./testing/reference";
export { SeededRandom } from "@blocksparse/format";

export const TOLERANCES: Readonly<Record<FloatDType, number>> = { float32: 2e-5, float16: 2e-3, bfloat16: 1.6e-2 };

/**
 * "elementwise": |got - want| <= rtol * |want| (plus a tiny floor), for ops whose every
 * output is one rounding of an exact value. "scaled": <= rtol * (|want| + max|want|),
 * for sums and products where cancellation makes small outputs absolutely, not
 * relatively, accurate.
 */
type Mode = "elementwise" | "scaled";

const ELEMENTWISE_FLOOR: Readonly<Record<FloatDType, number>> = { float32: 1e-30, float16: 1e-4, bfloat16: 1e-30 };

const INT32_POISON = 0x7fffffff;

function round(dtype: DType, value: number): number {
  switch (dtype) {
    case "float32":
      return Math.fround(value);
    case "float16":
      return float16BitsToFloat32(float32ToFloat16Bits(value));
    case "bfloat16":
      return bfloat16BitsToFloat32(float32ToBfloat16Bits(value));
    default:
      return Math.trunc(value);
  }
}

/** A tensor of seeded values and the exact (already rounded) values it holds. */
interface Input {
  t: Tensor;
  ref: Ref;
}

type Generator = "normal" | "positive" | "uniform" | "smallInt";

function makeInput(rng: SeededRandom, shape: readonly number[], dtype: DType, kind: Generator = "normal"): Input {
  const values = R.ref(shape, () => {
    switch (kind) {
      case "positive":
        return rng.uniform(0.1, 3);
      case "uniform":
        return rng.uniform(-1, 1);
      case "smallInt":
        return rng.nextInt(5) - 2;
      default:
        return rng.normal();
    }
  });
  const rounded = R.map(values, (v) => round(dtype, v));
  return { t: tensor(rounded.data, shape, dtype), ref: rounded };
}

function describeValue(v: number): string {
  return Number.isNaN(v) ? "NaN (unwritten or invalid)" : String(v);
}

/** Asserts shape, dtype and values of `got` against the float64 reference. */
function expectValues(got: Tensor, want: Ref, dtype: DType, mode: Mode = "elementwise", scale = 1): void {
  expect([...got.shape], "output shape").toEqual(want.shape);
  expect(got.dtype, "output dtype").toBe(dtype);
  const values = got.dataSync();
  if (dtype === "int32") {
    for (let i = 0; i < values.length; i++) {
      if (values[i] !== want.data[i]) {
        expect.fail(`element ${i}: got ${values[i] === INT32_POISON ? "the poison value (unwritten)" : values[i]}, want ${want.data[i]}`);
      }
    }
    return;
  }
  const rtol = TOLERANCES[dtype] * scale;
  let maxAbs = 0;
  for (const w of want.data) if (Number.isFinite(w)) maxAbs = Math.max(maxAbs, Math.abs(w));
  const floor = mode === "scaled" ? maxAbs : ELEMENTWISE_FLOOR[dtype];
  for (let i = 0; i < values.length; i++) {
    const g = values[i];
    const w = want.data[i];
    if (Number.isNaN(w)) {
      if (!Number.isNaN(g)) expect.fail(`element ${i}: got ${g}, want NaN`);
      continue;
    }
    if (!Number.isFinite(w)) {
      if (g !== w) expect.fail(`element ${i}: got ${describeValue(g)}, want ${w}`);
      continue;
    }
    const error = Math.abs(g - w);
    if (!(error <= rtol * (Math.abs(w) + floor))) {
      expect.fail(
        `element ${i} of ${values.length} (${dtype}): got ${describeValue(g)}, want ${w} (error ${error.toExponential(2)}, allowed ${(rtol * (Math.abs(w) + floor)).toExponential(2)})`,
      );
    }
  }
}

/** Asserts bit-exact equality (shape ops copy values). */
function expectExact(got: Tensor, want: Ref, dtype: DType): void {
  expect([...got.shape], "output shape").toEqual(want.shape);
  expect(got.dtype, "output dtype").toBe(dtype);
  const values = got.dataSync();
  for (let i = 0; i < values.length; i++) {
    if (!Object.is(values[i], want.data[i]) && values[i] !== want.data[i]) {
      expect.fail(`element ${i}: got ${describeValue(values[i])}, want ${want.data[i]}`);
    }
  }
}

function expectThrows(fn: () => unknown, type: new (...args: never[]) => Error, fragment?: string): void {
  let caught: unknown;
  try {
    tidy(() => {
      fn();
    });
  } catch (error) {
    caught = error;
  }
  expect(caught, "expected an error").toBeInstanceOf(type);
  if (fragment !== undefined) expect((caught as Error).message).toContain(fragment);
}

const UNARY_CASES: { name: string; op: (x: Tensor) => Tensor; ref: (x: number) => number; input: Generator; int32: boolean }[] = [
  { name: "neg", op: neg, ref: (x) => -x, input: "normal", int32: true },
  { name: "abs", op: abs, ref: Math.abs, input: "normal", int32: true },
  { name: "exp", op: exp, ref: Math.exp, input: "normal", int32: false },
  { name: "log", op: log, ref: Math.log, input: "positive", int32: false },
  { name: "sqrt", op: sqrt, ref: Math.sqrt, input: "positive", int32: false },
  { name: "rsqrt", op: rsqrt, ref: (x) => 1 / Math.sqrt(x), input: "positive", int32: false },
  { name: "tanh", op: tanh, ref: Math.tanh, input: "normal", int32: false },
  { name: "sigmoid", op: sigmoid, ref: (x) => 1 / (1 + Math.exp(-x)), input: "normal", int32: false },
  { name: "relu", op: relu, ref: (x) => Math.max(x, 0), input: "normal", int32: true },
  { name: "square", op: square, ref: (x) => x * x, input: "normal", int32: true },
];

type Binary = (a: Tensor, b: Tensor) => Tensor;

const BINARY_CASES: { name: string; op: Binary; ref: (a: number, b: number) => number; int32: boolean; positiveA?: boolean }[] = [
  { name: "add", op: add, ref: (a, b) => a + b, int32: true },
  { name: "sub", op: sub, ref: (a, b) => a - b, int32: true },
  { name: "mul", op: mul, ref: (a, b) => a * b, int32: true },
  { name: "div", op: div, ref: (a, b) => a / b, int32: false },
  { name: "maximum", op: maximum, ref: Math.max, int32: true },
  { name: "minimum", op: minimum, ref: Math.min, int32: true },
  { name: "pow", op: pow, ref: (a, b) => a ** b, int32: false, positiveA: true },
];

const COMPARISON_CASES: { name: string; op: Binary; ref: (a: number, b: number) => boolean }[] = [
  { name: "equal", op: equal, ref: (a, b) => a === b },
  { name: "notEqual", op: notEqual, ref: (a, b) => a !== b },
  { name: "less", op: less, ref: (a, b) => a < b },
  { name: "lessEqual", op: lessEqual, ref: (a, b) => a <= b },
  { name: "greater", op: greater, ref: (a, b) => a > b },
  { name: "greaterEqual", op: greaterEqual, ref: (a, b) => a >= b },
];

const UNARY_SHAPES = [[0], [1], [7], [3, 5], [2, 3, 4]];
const BROADCAST_PAIRS: [number[], number[]][] = [
  [[3, 4], [3, 4]],
  [[3, 4], [4]],
  [[3, 4], []],
  [[], [2, 3]],
  [[2, 1, 4], [3, 1]],
  [[0, 3], [1, 3]],
  [[1], [5]],
];

/** Block shapes: square 16/32/64, rectangular, and small odd ones. */
const BLOCK_SHAPES: [number, number][] = [
  [16, 16],
  [32, 32],
  [64, 64],
  [16, 32],
  [32, 8],
  [2, 3],
];
const DENSITIES = [0, 0.25, 0.5, 1];

/**
 * Declares the conformance tests for backend `backendName` (registered beforehand, e.g. by
 * importing its package). Call it once from a test file; it uses vitest's describe/it.
 */
export function runBackendConformance(backendName: string): void {
  describe(`backend conformance: ${backendName}`, () => {
    let previousBackend: string | undefined;
    let previousLeakCheck = false;
    let backend: Backend;
    let seed = 1000;
    const rng = () => new SeededRandom(seed++);

    beforeAll(() => {
      previousBackend = getBackend();
      setBackend(backendName);
      backend = getBackendInstance(backendName);
      backend.poisonAllocations = true;
      previousLeakCheck = setKernelLeakCheck(true);
    });

    afterAll(() => {
      backend.poisonAllocations = false;
      setKernelLeakCheck(previousLeakCheck);
      if (previousBackend !== undefined) setBackend(previousBackend);
    });

    /** A test whose tensors are freed at its end, and that fails if any buffer stays allocated. */
    const check = (name: string, body: () => void) => {
      it(name, () => {
        const buffersBefore = backend.memory().buffers;
        const tensorsBefore = memory().numTensors;
        tidy(() => {
          body();
        });
        expect(memory().numTensors, "tensors left alive").toBe(tensorsBefore);
        expect(backend.memory().buffers, "buffers left allocated").toBe(buffersBefore);
      });
    };

    describe("backend object", () => {
      it("implements every kernel core declares", () => {
        const missing = BACKEND_KERNELS.filter((k) => typeof backend.kernels[k] !== "function");
        expect(missing, `kernels missing from '${backendName}'`).toEqual([]);
      });

      it("round-trips every dtype through write and read, and counts buffers", async () => {
        const before = backend.memory();
        const cases: [DType, Float32Array | Uint16Array | Int32Array][] = [
          ["float32", Float32Array.from([1.5, -2, 0, 3.25])],
          ["float16", Uint16Array.from([0x3c00, 0xc000, 0, 0x7bff])],
          ["bfloat16", Uint16Array.from([0x3f80, 0xc000, 0, 0x7f7f])],
          ["int32", Int32Array.from([1, -2, 0, 2147483647])],
        ];
        for (const [dtype, values] of cases) {
          const id = backend.allocate(dtype, values.length);
          backend.write(id, values);
          expect(backend.memory().buffers).toBe(before.buffers + 1);
          expect(Array.from(backend.readSync(id))).toEqual(Array.from(values));
          expect(Array.from(await backend.read(id))).toEqual(Array.from(values));
          backend.free(id);
        }
        const empty = backend.allocate("float32", 0);
        expect(backend.readSync(empty).length).toBe(0);
        backend.free(empty);
        expect(backend.memory().buffers).toBe(before.buffers);
        expect(backend.memory().bytesInUse).toBe(before.bytesInUse);
      });

      it("poisons allocations, fresh or reused, when poisonAllocations is on", () => {
        for (const dtype of ["float32", "float16", "bfloat16", "int32"] as const) {
          const first = backend.allocate(dtype, 64);
          const filler = dtype === "float32" ? new Float32Array(64).fill(1) : dtype === "int32" ? new Int32Array(64).fill(1) : new Uint16Array(64).fill(0x3c00);
          backend.write(first, filler);
          backend.free(first);
          const second = backend.allocate(dtype, 64);
          const raw = backend.readSync(second);
          backend.free(second);
          const decoded = Array.from(raw, (v) =>
            dtype === "float16" ? float16BitsToFloat32(v) : dtype === "bfloat16" ? bfloat16BitsToFloat32(v) : v,
          );
          if (dtype === "int32") expect(decoded.every((v) => v === INT32_POISON)).toBe(true);
          else expect(decoded.every((v) => Number.isNaN(v))).toBe(true);
        }
      });
    });

    describe("creation", () => {
      for (const dtype of ["float32", "float16", "bfloat16", "int32"] as const) {
        check(`full/zeros/ones ${dtype}`, () => {
          expectExact(full([2, 3], 7, dtype), R.ref([2, 3], () => 7), dtype);
          expectExact(zeros([4], dtype), R.ref([4]), dtype);
          expectExact(ones([0, 2], dtype), R.ref([0, 2]), dtype);
          expectExact(full([], -3, dtype), R.ref([], () => -3), dtype);
        });
      }
      check("full rounds to the dtype", () => {
        expectExact(full([2], 0.1, "float16"), R.ref([2], () => round("float16", 0.1)), "float16");
        expectExact(full([2], 0.1, "bfloat16"), R.ref([2], () => round("bfloat16", 0.1)), "bfloat16");
      });
      check("randn/randint give the seeded generator's numbers", () => {
        const normal = new SeededRandom(77);
        expectExact(randn([3, 4], { seed: 77 }), R.ref([3, 4], () => Math.fround(normal.normal())), "float32");
        const normalHalf = new SeededRandom(78);
        expectExact(randn([5], { seed: 78, dtype: "bfloat16" }), R.ref([5], () => round("bfloat16", normalHalf.normal())), "bfloat16");
        const ints = new SeededRandom(79);
        expectExact(randint(-3, 9, [6], { seed: 79 }), R.ref([6], () => -3 + ints.nextInt(12)), "int32");
      });
      check("fromStorage keeps raw half bits", () => {
        const t = fromStorage(Uint16Array.from([0x3c00, 0x7c00, 0xfc00]), [3], "float16");
        expectExact(t, { shape: [3], data: Float64Array.from([1, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) }, "float16");
      });
    });

    describe("elementwise unary", () => {
      for (const c of UNARY_CASES) {
        for (const dtype of [...FLOAT_DTYPES, ...(c.int32 ? (["int32"] as const) : [])]) {
          check(`${c.name} ${dtype}`, () => {
            for (const shape of UNARY_SHAPES) {
              const x = makeInput(rng(), shape, dtype, dtype === "int32" ? "smallInt" : c.input);
              const want = R.map(x.ref, (v) => (dtype === "int32" ? c.ref(v) : round(dtype, c.ref(v))));
              expectValues(c.op(x.t), want, dtype);
            }
          });
        }
      }
      for (const approximate of ["none", "tanh"] as const) {
        for (const dtype of FLOAT_DTYPES) {
          check(`gelu (${approximate}) and its backward, ${dtype}`, () => {
            for (const shape of [[0], [1], [4, 9]]) {
              const x = makeInput(rng(), shape, dtype);
              const dy = makeInput(rng(), shape, dtype);
              expectValues(gelu(x.t, approximate), R.map(x.ref, (v) => R.gelu(v, approximate)), dtype, "scaled");
              const wantGrad = R.zip([dy.ref, x.ref], (g, v) => g * R.geluGrad(v, approximate));
              expectValues(geluBackward(dy.t, x.t, approximate), wantGrad, dtype, "scaled");
            }
            // Extremes: tails must saturate, not overflow.
            const tails = tensor([-30, -8, 8, 30], [4], dtype);
            expectValues(gelu(tails, approximate), R.map(R.ref([4], (i) => [-30, -8, 8, 30][i]), (v) => R.gelu(v, approximate)), dtype, "scaled");
          });
        }
      }
    });

    describe("elementwise binary", () => {
      for (const c of BINARY_CASES) {
        for (const dtype of [...FLOAT_DTYPES, ...(c.int32 ? (["int32"] as const) : [])]) {
          check(`${c.name} ${dtype} with broadcasting`, () => {
            for (const [sa, sb] of BROADCAST_PAIRS) {
              const kind: Generator = dtype === "int32" ? "smallInt" : "normal";
              const a = makeInput(rng(), sa, dtype, c.positiveA ? "positive" : kind);
              const b = makeInput(rng(), sb, dtype, kind);
              const want = R.zip([a.ref, b.ref], (x, y) => (dtype === "int32" ? c.ref(x, y) : round(dtype, c.ref(x, y))));
              expectValues(c.op(a.t, b.t), want, dtype);
            }
          });
        }
      }
      check("binary ops accept a number as a scalar of the other dtype", () => {
        const a = makeInput(rng(), [2, 3], "float16");
        expectValues(mul(a.t, 3), R.map(a.ref, (v) => round("float16", v * 3)), "float16");
        expectValues(sub(1, a.t), R.map(a.ref, (v) => round("float16", 1 - v)), "float16");
        const i = makeInput(rng(), [4], "int32", "smallInt");
        expectValues(add(i.t, 5), R.map(i.ref, (v) => v + 5), "int32");
      });
      check("int32 arithmetic wraps around 32 bits", () => {
        const big = tensor([2147483647, -2147483648, 65536], [3], "int32");
        expectValues(add(big, 1), { shape: [3], data: Float64Array.from([-2147483648, -2147483647, 65537]) }, "int32");
        expectValues(mul(big, big), { shape: [3], data: Float64Array.from([1, 0, 0]) }, "int32");
      });
      for (const c of COMPARISON_CASES) {
        for (const dtype of [...FLOAT_DTYPES, "int32"] as const) {
          check(`${c.name} ${dtype} returns int32`, () => {
            for (const [sa, sb] of BROADCAST_PAIRS) {
              const a = makeInput(rng(), sa, dtype, "smallInt");
              const b = makeInput(rng(), sb, dtype, "smallInt");
              expectValues(c.op(a.t, b.t), R.zip([a.ref, b.ref], (x, y) => (c.ref(x, y) ? 1 : 0)), "int32");
            }
          });
        }
      }
      for (const dtype of [...FLOAT_DTYPES, "int32"] as const) {
        check(`where ${dtype} broadcasts condition and both branches`, () => {
          const shapes: [number[], number[], number[]][] = [
            [[3, 4], [3, 4], [3, 4]],
            [[3, 1], [4], []],
            [[2, 1, 3], [1, 4, 1], [3]],
            [[0, 2], [2], [1]],
          ];
          for (const [sc, sa, sb] of shapes) {
            const cond = makeInput(rng(), sc, "int32", "smallInt");
            const a = makeInput(rng(), sa, dtype, dtype === "int32" ? "smallInt" : "normal");
            const b = makeInput(rng(), sb, dtype, dtype === "int32" ? "smallInt" : "normal");
            expectExact(where(cond.t, a.t, b.t), R.zip([cond.ref, a.ref, b.ref], (c, x, y) => (c !== 0 ? x : y)), dtype);
          }
        });
      }
    });

    describe("reductions", () => {
      const cases: { shape: number[]; axes: number[] | undefined }[] = [
        { shape: [2, 3, 4], axes: [1] },
        { shape: [2, 3, 4], axes: [0, 2] },
        { shape: [2, 3, 4], axes: undefined },
        { shape: [2, 3, 4], axes: [] },
        { shape: [5, 1], axes: [1] },
        { shape: [7], axes: [0] },
        { shape: [3, 70], axes: [-1] },
      ];
      const axesOf = (shape: number[], axes: number[] | undefined) =>
        axes === undefined ? shape.map((_, i) => i) : axes.map((a) => (a < 0 ? a + shape.length : a)).sort();
      const reductions = [
        { name: "sum", op: sum, init: 0, combine: (a: number, x: number) => a + x, finish: (a: number) => a, int32: true, mode: "scaled" as Mode },
        { name: "mean", op: mean, init: 0, combine: (a: number, x: number) => a + x, finish: (a: number, n: number) => a / n, int32: false, mode: "scaled" as Mode },
        { name: "max", op: max, init: Number.NEGATIVE_INFINITY, combine: Math.max, finish: (a: number) => a, int32: true, mode: "elementwise" as Mode },
        { name: "min", op: min, init: Number.POSITIVE_INFINITY, combine: Math.min, finish: (a: number) => a, int32: true, mode: "elementwise" as Mode },
      ];
      for (const c of reductions) {
        for (const dtype of [...FLOAT_DTYPES, ...(c.int32 ? (["int32"] as const) : [])]) {
          check(`${c.name} ${dtype} over axes, with and without keepDims`, () => {
            for (const { shape, axes } of cases) {
              for (const keepDims of [false, true]) {
                const x = makeInput(rng(), shape, dtype, dtype === "int32" ? "smallInt" : "normal");
                const want = R.reduce(x.ref, axesOf(shape, axes), keepDims, c.init, c.combine, c.finish);
                const rounded = R.map(want, (v) => round(dtype, v));
                expectValues(c.op(x.t, axes, keepDims), rounded, dtype, c.mode);
              }
            }
          });
        }
      }
      check("sum over a size-0 axis is 0, mean is NaN", () => {
        const x = zeros([2, 0, 3]);
        expectValues(sum(x, 1), R.ref([2, 3]), "float32");
        expectValues(mean(x, [1]), R.ref([2, 3], () => Number.NaN), "float32");
        expectValues(sum(x), R.ref([]), "float32");
      });
      for (const dtype of [...FLOAT_DTYPES, "int32"] as const) {
        check(`argmax ${dtype} picks the first maximum`, () => {
          for (const [shape, axis] of [[[4, 6], 1], [[4, 6], 0], [[2, 3, 5], 1], [[1], 0]] as [number[], number][]) {
            for (const keepDims of [false, true]) {
              const x = makeInput(rng(), shape, dtype, "smallInt");
              expectValues(argmax(x.t, axis, keepDims), R.argmax(x.ref, axis, keepDims), "int32");
            }
          }
        });
      }
    });

    describe("softmax, layerNorm, crossEntropy", () => {
      for (const dtype of FLOAT_DTYPES) {
        check(`softmax and logSoftmax ${dtype}`, () => {
          for (const shape of [[1, 1], [4, 7], [2, 3, 33], [0, 5]]) {
            const x = makeInput(rng(), shape, dtype);
            expectValues(softmax(x.t), R.softmax(x.ref, false), dtype, "elementwise", 2);
            expectValues(logSoftmax(x.t), R.softmax(x.ref, true), dtype, "scaled");
          }
          // Large logits must not overflow: the max is subtracted first.
          const big = makeInput(rng(), [3, 8], dtype);
          const scaled = mul(big.t, 60);
          const scaledRef = R.map(big.ref, (v) => round(dtype, v * 60));
          expectValues(softmax(scaled), R.softmax(scaledRef, false), dtype, "scaled");
          expectValues(logSoftmax(scaled), R.softmax(scaledRef, true), dtype, "scaled");
          // Along an inner axis (the op moves it last).
          const inner = makeInput(rng(), [3, 4, 2], dtype);
          const moved = R.transpose(R.softmax(R.transpose(inner.ref, [0, 2, 1]), false), [0, 2, 1]);
          expectValues(softmax(inner.t, 1), moved, dtype, "elementwise", 2);
        });

        check(`layerNorm with saved statistics, and its backward, ${dtype}`, () => {
          for (const [shape, affine] of [[[3, 8], true], [[2, 2, 16], false], [[1, 1], true], [[4, 33], true], [[0, 4], true]] as [number[], boolean][]) {
            const d = shape[shape.length - 1];
            const x = makeInput(rng(), shape, dtype);
            const gamma = affine ? makeInput(rng(), [d], dtype) : undefined;
            const beta = affine ? makeInput(rng(), [d], dtype) : undefined;
            const eps = 1e-5;
            const want = R.layerNorm(x.ref, gamma?.ref ?? null, beta?.ref ?? null, eps);
            const { y, mean: mu, rstd } = layerNormWithStats(x.t, gamma?.t, beta?.t, eps);
            expectValues(y, want.y, dtype, "scaled", 2);
            expectValues(mu, want.mean, "float32", "scaled");
            expectValues(rstd, want.rstd, "float32", "elementwise", 2);
            expectValues(layerNorm(x.t, gamma?.t, beta?.t, eps), want.y, dtype, "scaled", 2);
            const dy = makeInput(rng(), shape, dtype);
            const grads = R.layerNormBackward(dy.ref, x.ref, gamma?.ref ?? null, eps);
            const got = layerNormBackward(dy.t, x.t, mu, rstd, gamma?.t);
            expectValues(got.dx, grads.dx, dtype, "scaled", 4);
            expectValues(got.dgamma, grads.dgamma, dtype, "scaled", 2);
            expectValues(got.dbeta, grads.dbeta, dtype, "scaled", 2);
          }
        });

        check(`crossEntropy and its gradient ${dtype}`, () => {
          for (const [n, classes] of [[5, 7], [1, 1], [3, 130], [0, 4]]) {
            const logits = makeInput(rng(), [n, classes], dtype);
            const pick = rng();
            const t = R.ref([n], () => pick.nextInt(classes));
            const targetTensor = tensor(t.data, [n], "int32");
            const rows = R.crossEntropy(logits.ref, t.data);
            expectValues(crossEntropy(logits.t, targetTensor, "none"), rows, dtype, "scaled");
            if (n > 0) {
              const total = rows.data.reduce((s, v) => s + v, 0);
              expectValues(crossEntropy(logits.t, targetTensor, "sum"), R.ref([], () => total), dtype, "scaled");
              expectValues(crossEntropy(logits.t, targetTensor), R.ref([], () => total / n), dtype, "scaled");
            }
            const dy = makeInput(rng(), [n], dtype);
            expectValues(crossEntropyBackward(logits.t, targetTensor, dy.t), R.crossEntropyBackward(logits.ref, t.data, dy.ref), dtype, "scaled");
          }
          // Leading dims are flattened by the op.
          const logits3 = makeInput(rng(), [2, 3, 5], dtype);
          const targets3 = tensor([0, 4, 2, 1, 3, 4], [2, 3], "int32");
          const rows3 = R.crossEntropy(R.reshape(logits3.ref, [6, 5]), [0, 4, 2, 1, 3, 4]);
          expectValues(crossEntropy(logits3.t, targets3, "none"), R.reshape(rows3, [2, 3]), dtype, "scaled");
        });
      }
      check("out-of-range targets throw IndexError or give no out-of-bounds read", () => {
        const logits = zeros([2, 3]);
        const targets = tensor([1, 3], [2], "int32");
        let result: Tensor | undefined;
        try {
          result = crossEntropy(logits, targets, "none");
        } catch (error) {
          expect(error).toBeInstanceOf(IndexError);
        }
        // A device backend that cannot throw still returns a finite first row.
        if (result) expect(Number.isFinite(result.dataSync()[0])).toBe(true);
      });
    });

    describe("shape ops", () => {
      for (const dtype of [...FLOAT_DTYPES, "int32"] as const) {
        const kind: Generator = dtype === "int32" ? "smallInt" : "normal";
        check(`reshape, transpose, slice ${dtype}`, () => {
          const x = makeInput(rng(), [2, 3, 4], dtype, kind);
          expectExact(reshape(x.t, [4, -1]), R.reshape(x.ref, [4, 6]), dtype);
          for (const perm of [[2, 0, 1], [1, 0, 2], [0, 2, 1], [2, 1, 0]]) expectExact(transpose(x.t, perm), R.transpose(x.ref, perm), dtype);
          const m = makeInput(rng(), [5, 1], dtype, kind);
          expectExact(transpose(m.t), R.transpose(m.ref, [1, 0]), dtype);
          const empty = makeInput(rng(), [0, 3], dtype, kind);
          expectExact(transpose(empty.t), R.transpose(empty.ref, [1, 0]), dtype);
          expectExact(slice(x.t, [1, 1, 0], [1, 2, 3]), R.slice(x.ref, [1, 1, 0], [1, 2, 3]), dtype);
          expectExact(slice(x.t, [0, 2], [-1, 1]), R.slice(x.ref, [0, 2, 0], [2, 1, 4]), dtype);
          expectExact(slice(x.t, [0, 0, 4], [2, 3, 0]), R.slice(x.ref, [0, 0, 4], [2, 3, 0]), dtype);
          expectExact(slice(x.t, [0, -1, 1]), R.slice(x.ref, [0, 2, 1], [2, 1, 3]), dtype);
        });
        check(`concat, stack, broadcastTo ${dtype}`, () => {
          const a = makeInput(rng(), [2, 3, 4], dtype, kind);
          const b = makeInput(rng(), [2, 1, 4], dtype, kind);
          const c = makeInput(rng(), [2, 0, 4], dtype, kind);
          expectExact(concat([a.t, b.t, c.t], 1), R.concat([a.ref, b.ref, c.ref], 1), dtype);
          const d = makeInput(rng(), [2, 3, 2], dtype, kind);
          expectExact(concat([a.t, d.t], -1), R.concat([a.ref, d.ref], 2), dtype);
          const e = makeInput(rng(), [1, 3, 4], dtype, kind);
          expectExact(concat([a.t, e.t], 0), R.concat([a.ref, e.ref], 0), dtype);
          const s1 = makeInput(rng(), [3, 2], dtype, kind);
          const s2 = makeInput(rng(), [3, 2], dtype, kind);
          const stacked = R.concat([R.reshape(s1.ref, [3, 1, 2]), R.reshape(s2.ref, [3, 1, 2])], 1);
          expectExact(stack([s1.t, s2.t], 1), stacked, dtype);
          const small = makeInput(rng(), [3, 1], dtype, kind);
          expectExact(broadcastTo(small.t, [2, 3, 4]), R.zip([small.ref, R.ref([2, 3, 4])], (v) => v), dtype);
          const scalarInput = makeInput(rng(), [], dtype, kind);
          expectExact(broadcastTo(scalarInput.t, [0, 2]), R.ref([0, 2]), dtype);
        });
        check(`gather and scatterAdd ${dtype}`, () => {
          const table = makeInput(rng(), [6, 6], dtype, kind);
          const ids = R.ref([2, 3], (i) => [4, 0, 4, 5, 1, 1][i]);
          const idTensor = tensor(ids.data, ids.shape, "int32");
          expectExact(gather(table.t, idTensor, 0), R.gather(table.ref, ids, 0), dtype);
          expectExact(gather(table.t, idTensor, 1), R.gather(table.ref, ids, 1), dtype);
          const empty = tensor([], [0], "int32");
          expectExact(gather(table.t, empty, 0), R.gather(table.ref, R.ref([0]), 0), dtype);
          const updates = makeInput(rng(), [2, 3, 5], dtype, kind);
          const want = R.map(R.scatterAdd(ids, updates.ref, [6, 5], 0), (v) => round(dtype, v));
          expectValues(scatterAdd(idTensor, updates.t, [6, 5], 0), want, dtype, "scaled");
          const none = makeInput(rng(), [0, 5], dtype, kind);
          expectValues(scatterAdd(empty, none.t, [6, 5], 0), R.ref([6, 5]), dtype);
          const updates1 = makeInput(rng(), [6, 2, 3], dtype, kind);
          const want1 = R.map(R.scatterAdd(ids, updates1.ref, [6, 6], 1), (v) => round(dtype, v));
          expectValues(scatterAdd(idTensor, updates1.t, [6, 6], 1), want1, dtype, "scaled");
        });
      }
      check("gather with an out-of-range index throws IndexError or reads nothing out of bounds", () => {
        const table = ones([3, 2]);
        const ids = tensor([0, 3], [2], "int32");
        let result: Tensor | undefined;
        try {
          result = gather(table, ids, 0);
        } catch (error) {
          expect(error).toBeInstanceOf(IndexError);
        }
        if (result) expect(Array.from(result.dataSync())).toEqual([1, 1, 0, 0]);
      });
      for (const from of [...FLOAT_DTYPES, "int32"] as const) {
        for (const to of [...FLOAT_DTYPES, "int32"] as const) {
          if (from === to) continue;
          check(`cast ${from} -> ${to}`, () => {
            const x = makeInput(rng(), [3, 7], from, from === "int32" ? "smallInt" : "normal");
            const scaled = from === "int32" ? x : { t: mul(x.t, 4), ref: R.map(x.ref, (v) => round(from, v * 4)) };
            expectExact(cast(scaled.t, to), R.map(scaled.ref, (v) => round(to, v)), to);
          });
        }
      }
      for (const dtype of [...FLOAT_DTYPES, "int32"] as const) {
        check(`oneHot ${dtype} (out-of-range indices give zero rows)`, () => {
          const ids = R.ref([2, 3], (i) => [0, 3, 2, -1, 4, 1][i]);
          const got = oneHot(tensor(ids.data, ids.shape, "int32"), 4, dtype);
          expectExact(got, R.ref([2, 3, 4], (i) => (ids.data[Math.floor(i / 4)] === i % 4 ? 1 : 0)), dtype);
        });
      }
    });

    describe("matmul", () => {
      const shapes: { a: number[]; b: number[] }[] = [
        { a: [3, 5], b: [5, 4] },
        { a: [1, 1], b: [1, 1] },
        { a: [1, 7], b: [7, 1] },
        { a: [4, 0], b: [0, 3] },
        { a: [0, 3], b: [3, 2] },
        { a: [17, 33], b: [33, 9] },
        { a: [2, 3, 4], b: [2, 4, 5] },
        { a: [2, 1, 3, 4], b: [3, 4, 2] },
        { a: [3, 4], b: [2, 4, 6] },
      ];
      for (const dtype of FLOAT_DTYPES) {
        check(`matmul ${dtype}, batched, broadcast and transposed`, () => {
          for (const { a: sa, b: sb } of shapes) {
            for (const transposeA of [false, true]) {
              for (const transposeB of [false, true]) {
                const swap = (s: number[], flag: boolean) => (flag ? [...s.slice(0, -2), s[s.length - 1], s[s.length - 2]] : s);
                const a = makeInput(rng(), swap(sa, transposeA), dtype);
                const b = makeInput(rng(), swap(sb, transposeB), dtype);
                const want = R.matmul(a.ref, b.ref, transposeA, transposeB);
                expectValues(matmul(a.t, b.t, { transposeA, transposeB }), want, dtype, "scaled", 2);
              }
            }
          }
        });
      }
    });

    describe("block-sparse", () => {
      for (const [rBlock, cBlock] of BLOCK_SHAPES) {
        const blockRows = rBlock >= 64 ? 2 : 3;
        const blockCols = cBlock >= 64 ? 2 : rBlock === 2 ? 4 : 2;
        const shape: [number, number] = [rBlock * blockRows, cBlock * blockCols];
        for (const density of DENSITIES) {
          for (const dtype of FLOAT_DTYPES) {
            check(`block ${rBlock}x${cBlock}, density ${density}, ${dtype}: bsrLinear, bsrMatmul, sampledMatmul, blockNorms`, () => {
              const pattern = BsrPattern.random(shape, { blockShape: [rBlock, cBlock], density, seed: seed++ });
              const [rows, cols] = shape;
              const nnz = pattern.nnzBlocks;
              const values = makeInput(rng(), [nnz, rBlock, cBlock], dtype);
              const w = R.denseWeight(pattern, values.ref);
              const bias = makeInput(rng(), [rows], dtype);
              for (const lead of [[2, 3], [1], [0], []]) {
                const x = makeInput(rng(), [...lead, cols], dtype);
                const tokens = R.size(lead);
                const x2 = R.reshape(x.ref, [tokens, cols]);
                const yRef = R.matmul(x2, w, false, true);
                expectValues(bsrLinear(x.t, values.t, pattern), R.reshape(yRef, [...lead, rows]), dtype, "scaled", 2);
                const yBias = R.zip([yRef, bias.ref], (y, b) => y + b);
                expectValues(bsrLinear(x.t, values.t, pattern, bias.t), R.reshape(yBias, [...lead, rows]), dtype, "scaled", 2);
                const dy = makeInput(rng(), [...lead, rows], dtype);
                const dy2 = R.reshape(dy.ref, [tokens, rows]);
                const dxRef = R.matmul(dy2, w, false, false);
                expectValues(bsrMatmul(dy.t, values.t, pattern), R.reshape(dxRef, [...lead, cols]), dtype, "scaled", 2);
                const dwDense = R.matmul(dy2, x2, true, false);
                const dwRef = R.ref([nnz, rBlock, cBlock], (i) => {
                  const k = Math.floor(i / (rBlock * cBlock));
                  const r = Math.floor(i / cBlock) % rBlock;
                  const c = i % cBlock;
                  const { blockRow, blockCol } = pattern.coordinates;
                  return dwDense.data[(blockRow[k] * rBlock + r) * cols + blockCol[k] * cBlock + c];
                });
                expectValues(sampledMatmul(dy.t, x.t, pattern), dwRef, dtype, "scaled", 2);
              }
              const normsRef = R.ref([nnz], (k) => {
                let s = 0;
                for (let i = 0; i < rBlock * cBlock; i++) s += values.ref.data[k * rBlock * cBlock + i] ** 2;
                return Math.sqrt(s);
              });
              expectValues(blockNorms(values.t), normsRef, "float32", "elementwise");
            });
          }
        }
      }
      check("patterns with empty block rows and columns", () => {
        const pattern = BsrPattern.fromMask([48, 64], [16, 16], [0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1]);
        const values = makeInput(rng(), [pattern.nnzBlocks, 16, 16], "float32");
        const w = R.denseWeight(pattern, values.ref);
        const x = makeInput(rng(), [5, 64], "float32");
        expectValues(bsrLinear(x.t, values.t, pattern), R.matmul(x.ref, w, false, true), "float32", "scaled");
        const dy = makeInput(rng(), [5, 48], "float32");
        expectValues(bsrMatmul(dy.t, values.t, pattern), R.matmul(dy.ref, w, false, false), "float32", "scaled");
      });
    });

    describe("adamUpdate", () => {
      const settings = [
        { lr: 1e-2, weightDecay: 0, decoupledWeightDecay: false, step: 1 },
        { lr: 3e-3, weightDecay: 0.1, decoupledWeightDecay: false, step: 7 },
        { lr: 1e-3, weightDecay: 0.01, decoupledWeightDecay: true, step: 1000 },
      ];
      for (const dtype of FLOAT_DTYPES) {
        for (const stateDType of dtype === "float32" ? (["float32"] as const) : ([dtype, "float32"] as const)) {
          check(`adamUpdate param ${dtype}, state ${stateDType}`, () => {
            for (const s of settings) {
              for (const shape of [[5, 7], [0], [1]]) {
                const param = makeInput(rng(), shape, dtype);
                const grad = makeInput(rng(), shape, dtype);
                const m = makeInput(rng(), shape, stateDType, "uniform");
                const v = makeInput(rng(), shape, stateDType, "positive");
                const beta1 = 0.9;
                const beta2 = 0.999;
                const epsilon = 1e-8;
                const mRef = R.ref(shape);
                const vRef = R.ref(shape);
                const pRef = R.ref(shape, (i) => {
                  const p = param.ref.data[i];
                  const g = grad.ref.data[i] + (s.decoupledWeightDecay ? 0 : s.weightDecay * p);
                  const mi = beta1 * m.ref.data[i] + (1 - beta1) * g;
                  const vi = beta2 * v.ref.data[i] + (1 - beta2) * g * g;
                  mRef.data[i] = mi;
                  vRef.data[i] = vi;
                  const decayed = s.decoupledWeightDecay ? p * (1 - s.lr * s.weightDecay) : p;
                  return decayed - (s.lr * (mi / (1 - beta1 ** s.step))) / (Math.sqrt(vi / (1 - beta2 ** s.step)) + epsilon);
                });
                const out = adamUpdate(param.t, grad.t, m.t, v.t, { ...s, beta1, beta2, epsilon });
                expectValues(out.param, pRef, dtype, "elementwise", 2);
                expectValues(out.m, mRef, stateDType, "elementwise", 2);
                expectValues(out.v, vRef, stateDType, "elementwise", 2);
              }
            }
          });
        }
      }
    });

    describe("errors name the op, the argument and what was expected", () => {
      const cases: { name: string; run: () => unknown; type: new (...args: never[]) => Error; message: string }[] = [
        { name: "add shape mismatch", run: () => add(zeros([2, 3]), zeros([4])), type: ShapeError, message: "add: shapes [2, 3] and [4] cannot be broadcast" },
        { name: "add dtype mismatch", run: () => add(zeros([2]), zeros([2], "float16")), type: DTypeError, message: "add: a has dtype float32 but b has float16" },
        { name: "exp of int32", run: () => exp(zeros([2], "int32")), type: DTypeError, message: "exp: x has dtype int32" },
        { name: "div of int32", run: () => div(zeros([2], "int32"), ones([2], "int32")), type: DTypeError, message: "div: a has dtype int32" },
        { name: "where condition dtype", run: () => where(zeros([2]), zeros([2]), zeros([2])), type: DTypeError, message: "where: condition has dtype float32, expected int32" },
        { name: "sum axis out of range", run: () => sum(zeros([2, 3]), 2), type: IndexError, message: "sum: axis 2 is out of range for rank 2" },
        { name: "max over empty axis", run: () => max(zeros([2, 0]), 1), type: ShapeError, message: "max: cannot reduce over axis 1 of size 0" },
        { name: "reshape size mismatch", run: () => reshape(zeros([2, 3]), [4, 2]), type: ShapeError, message: "reshape: cannot view [2, 3]" },
        { name: "transpose bad perm", run: () => transpose(zeros([2, 3]), [0, 0]), type: ShapeError, message: "transpose: perm [0,0]" },
        { name: "slice out of range", run: () => slice(zeros([2, 3]), [0, 2], [1, 2]), type: IndexError, message: "slice: size[1] = 2 from 2 exceeds dim 3" },
        { name: "concat dims differ", run: () => concat([zeros([2, 3]), zeros([3, 3])], 1), type: ShapeError, message: "concat: tensors[1] has shape [3, 3]" },
        { name: "gather float indices", run: () => gather(zeros([3, 2]), zeros([2])), type: DTypeError, message: "gather: indices has dtype float32, expected int32" },
        { name: "scatterAdd updates shape", run: () => scatterAdd(tensor([0, 1], [2], "int32"), zeros([3, 4]), [5, 4]), type: ShapeError, message: "scatterAdd: updates has shape [3, 4], expected [2, 4]" },
        { name: "matmul inner dims", run: () => matmul(zeros([2, 3]), zeros([4, 5])), type: ShapeError, message: "matmul: inner dims differ" },
        { name: "matmul rank 1", run: () => matmul(zeros([3]), zeros([3, 2])), type: ShapeError, message: "matmul: a must have rank >= 2" },
        { name: "layerNorm gamma size", run: () => layerNorm(zeros([2, 4]), ones([3])), type: ShapeError, message: "layerNorm: gamma has shape [3], expected [4]" },
        { name: "crossEntropy targets shape", run: () => crossEntropy(zeros([4, 3]), zeros([3], "int32")), type: ShapeError, message: "crossEntropy: targets has shape [3], expected [4]" },
        { name: "crossEntropy targets dtype", run: () => crossEntropy(zeros([4, 3]), zeros([4])), type: DTypeError, message: "crossEntropy: targets has dtype float32, expected int32" },
        { name: "oneHot depth", run: () => oneHot(zeros([2], "int32"), 0), type: ValueError, message: "oneHot: depth must be a positive integer" },
        { name: "cast unknown dtype", run: () => cast(zeros([2]), "float64" as DType), type: DTypeError, message: "cast: unknown dtype" },
        {
          name: "bsrLinear features",
          run: () => {
            const pattern = BsrPattern.dense([32, 32], [16, 16]);
            return bsrLinear(zeros([2, 30]), zeros([4, 16, 16]), pattern);
          },
          type: ShapeError,
          message: "bsrLinear: x has 30 features, the weight expects 32",
        },
        {
          name: "bsrLinear values shape",
          run: () => bsrLinear(zeros([2, 32]), zeros([3, 16, 16]), BsrPattern.dense([32, 32], [16, 16])),
          type: ShapeError,
          message: "bsrLinear: values has shape [3, 16, 16], the pattern expects [4, 16, 16]",
        },
        {
          name: "bsrLinear pattern type",
          run: () => bsrLinear(zeros([2, 32]), zeros([4, 16, 16]), {} as BsrPattern),
          type: ValueError,
          message: "bsrLinear: pattern must be a BsrPattern",
        },
        {
          name: "bsrMatmul dtype",
          run: () => bsrMatmul(zeros([2, 32], "float16"), zeros([4, 16, 16]), BsrPattern.dense([32, 32], [16, 16])),
          type: DTypeError,
          message: "bsrMatmul: dy has dtype float16 but values has float32",
        },
        {
          name: "sampledMatmul leading dims",
          run: () => sampledMatmul(zeros([2, 32]), zeros([3, 32]), BsrPattern.dense([32, 32], [16, 16])),
          type: ShapeError,
          message: "sampledMatmul: dy [2, 32] and x [3, 32] must have the same leading dims",
        },
        { name: "blockNorms rank", run: () => blockNorms(zeros([4, 16])), type: ShapeError, message: "blockNorms: values must be [nnzBlocks, R, C]" },
        { name: "adamUpdate shapes", run: () => adamUpdate(zeros([3]), zeros([3]), zeros([4]), zeros([3]), { lr: 0.1, step: 1 }), type: ShapeError, message: "adamUpdate: m has shape [4], expected [3]" },
        { name: "adamUpdate step", run: () => adamUpdate(zeros([3]), zeros([3]), zeros([3]), zeros([3]), { lr: 0.1, step: 0 }), type: IndexError, message: "adamUpdate: step must be an integer >= 1" },
        {
          name: "disposed input",
          run: () => {
            const t = zeros([2]);
            t.dispose();
            return neg(t);
          },
          type: DisposedTensorError,
          message: "was disposed",
        },
      ];
      for (const c of cases) {
        check(c.name, () => {
          expectThrows(c.run, c.type, c.message);
        });
      }
      check("every error is a CoreError (or the format's own)", () => {
        expectThrows(() => add(zeros([2]), zeros([3])), CoreError);
      });
      it.skipIf(backendName === "js")("mixing backends is refused (needs a second backend: skipped on js itself)", () => {
        const here = zeros([2]);
        const onJs = tidy(() => zeros([2]).to("js"));
        try {
          expectThrows(() => add(here, onJs), BackendError, `add: b is on backend 'js' but a is on '${backend.name}'`);
        } finally {
          here.dispose();
          onJs.dispose();
        }
      });
    });

    describe("memory", () => {
      it("tidy frees everything but the result, and buffers are shared by clone/reshape/assign", () => {
        const buffers = backend.memory().buffers;
        const kept = tidy(() => {
          const a = randn([3, 4], { seed: 1 });
          const b = exp(a);
          const view = reshape(b, [12]);
          const copy = view.clone();
          expect(memory().backends[backendName].numBuffers).toBeGreaterThanOrEqual(2);
          return { copy, sum: sum(copy) };
        });
        expect(backend.memory().buffers).toBe(buffers + 2);
        const target = zeros([12]);
        target.assign(kept.copy);
        expect(backend.memory().buffers).toBe(buffers + 2);
        kept.copy.dispose();
        expect(backend.memory().buffers).toBe(buffers + 2);
        expect(target.dataSync()[0]).toBeCloseTo(Math.exp(new SeededRandom(1).normal()), 5);
        target.dispose();
        kept.sum.dispose();
        expect(backend.memory().buffers).toBe(buffers);
      });
    });
  });
}
