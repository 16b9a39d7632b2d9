import type { TensorInfo } from "../../../backend";
import type { DType } from "../../../dtypes";
import type { KernelArgs } from "../../../backend";
import type { Activation, BinaryKernelName, ComparisonKernelName, GeluApproximate, UnaryKernelName } from "../../../kernel_names";
import { broadcastShapes, broadcastStrides, shapesEqual, sizeOf } from "../../../shape";
import type { JsBackend } from "../backend";
import { erfc, walkRows } from "./util";

type Fn1 = (x: number) => number;
type Fn2 = (a: number, b: number) => number;

/** C's pow (powf on CUDA, torch.pow): 1 ** y and (-1) ** +-inf are 1, where JavaScript's ** gives NaN. */
const pow: Fn2 = (a, b) => (a === 1 || (a === -1 && Math.abs(b) === Number.POSITIVE_INFINITY) ? 1 : a ** b);

const UNARY: Record<UnaryKernelName, Fn1> = {
  Neg: (x) => -x,
  Abs: (x) => Math.abs(x),
  Exp: (x) => Math.exp(x),
  Log: (x) => Math.log(x),
  Sqrt: (x) => Math.sqrt(x),
  Rsqrt: (x) => 1 / Math.sqrt(x),
  Tanh: (x) => Math.tanh(x),
  Sigmoid: (x) => 1 / (1 + Math.exp(-x)),
  Relu: (x) => (x > 0 || Number.isNaN(x) ? x : 0),
  Square: (x) => x * x,
};

const BINARY: Record<BinaryKernelName | ComparisonKernelName, Fn2> = {
  Add: (a, b) => a + b,
  Sub: (a, b) => a - b,
  Mul: (a, b) => a * b,
  Div: (a, b) => a / b,
  Maximum: (a, b) => Math.max(a, b),
  Minimum: (a, b) => Math.min(a, b),
  Pow: pow,
  Equal: (a, b) => (a === b ? 1 : 0),
  NotEqual: (a, b) => (a !== b ? 1 : 0),
  Less: (a, b) => (a < b ? 1 : 0),
  LessEqual: (a, b) => (a <= b ? 1 : 0),
  Greater: (a, b) => (a > b ? 1 : 0),
  GreaterEqual: (a, b) => (a >= b ? 1 : 0),
};

/** int32 products and squares wrap like C's 32-bit arithmetic. */
const INT32_OVERRIDES: Partial<Record<string, Fn2 | Fn1>> = {
  Mul: (a: number, b: number) => Math.imul(a, b),
  Square: (x: number) => Math.imul(x, x),
};

export function unaryKernel(name: UnaryKernelName) {
  return ({ inputs: { x }, backend }: KernelArgs<UnaryKernelName, JsBackend>): TensorInfo => {
    const fn = (x.dtype === "int32" ? (INT32_OVERRIDES[name] as Fn1 | undefined) : undefined) ?? UNARY[name];
    const input = backend.numbers(x);
    const out = backend.numberOutput(x.shape, x.dtype);
    const data = out.data;
    for (let i = 0; i < input.length; i++) data[i] = fn(input[i]);
    return out.commit();
  };
}

/** out[i] = fn(a[ia], b[ib]) over the broadcast shape, with fast paths for equal shapes and scalars. */
function broadcastLoop(
  a: ArrayLike<number>,
  aShape: readonly number[],
  b: ArrayLike<number>,
  bShape: readonly number[],
  outShape: readonly number[],
  out: Float32Array | Int32Array,
  fn: Fn2,
): void {
  const n = sizeOf(outShape);
  if (shapesEqual(aShape, outShape) && shapesEqual(bShape, outShape)) {
    for (let i = 0; i < n; i++) out[i] = fn(a[i], b[i]);
  } else if (b.length === 1 && shapesEqual(aShape, outShape)) {
    const bv = b[0];
    for (let i = 0; i < n; i++) out[i] = fn(a[i], bv);
  } else if (a.length === 1 && shapesEqual(bShape, outShape)) {
    const av = a[0];
    for (let i = 0; i < n; i++) out[i] = fn(av, b[i]);
  } else {
    walkRows(outShape, [broadcastStrides(aShape, outShape), broadcastStrides(bShape, outShape)], (i, o, inner, step) => {
      const ao = o[0];
      const bo = o[1];
      const as = step[0];
      const bs = step[1];
      for (let j = 0; j < inner; j++) out[i + j] = fn(a[ao + j * as], b[bo + j * bs]);
    });
  }
}

export function binaryKernel(name: BinaryKernelName | ComparisonKernelName, comparison: boolean) {
  return ({ inputs: { a, b }, backend }: KernelArgs<BinaryKernelName | ComparisonKernelName, JsBackend>): TensorInfo => {
    const fn = (a.dtype === "int32" && !comparison ? (INT32_OVERRIDES[name] as Fn2 | undefined) : undefined) ?? BINARY[name];
    const outShape = broadcastShapes(a.shape, b.shape);
    const outDType: DType = comparison ? "int32" : a.dtype;
    const out = backend.numberOutput(outShape, outDType);
    broadcastLoop(backend.numbers(a), a.shape, backend.numbers(b), b.shape, outShape, out.data, fn);
    return out.commit();
  };
}

export function whereKernel({ inputs: { condition, a, b }, backend }: KernelArgs<"Where", JsBackend>): TensorInfo {
  const outShape = broadcastShapes(broadcastShapes(condition.shape, a.shape), b.shape);
  const cond = backend.ints(condition);
  const av = backend.storage(a);
  const bv = backend.storage(b);
  // A selection copies raw storage: exact for every dtype.
  const { info, values } = backend.output(outShape, a.dtype);
  const strides = [condition.shape, a.shape, b.shape].map((shape) => broadcastStrides(shape, outShape));
  walkRows(outShape, strides, (i, o, inner, step) => {
    for (let j = 0; j < inner; j++) values[i + j] = cond[o[0] + j * step[0]] !== 0 ? av[o[1] + j * step[1]] : bv[o[2] + j * step[2]];
  });
  return info;
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const GELU_C = 0.044715;
const INV_SQRT_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/**
 * GELU(tanh)'s gate 0.5 (1 + tanh u), u = sqrt(2 / pi) (x + 0.044715 x^3), as the logistic 1 / (1 + e^(-2u)), the form
 * the native kernels compute: 1 + tanh u cancels where tanh u nears -1 and reads 0 from x = -7 on, where the gate is
 * still about 1e-16 (and float32's is not 0).
 */
function geluTanhGate(x: number): number {
  return 1 / (1 + Math.exp(-2 * SQRT_2_OVER_PI * (x + GELU_C * x * x * x)));
}

function geluValue(x: number, approximate: GeluApproximate): number {
  // x Phi(x) tends to x at +inf and to -0 at -inf, where the formulas multiply an infinity by 0 (NaN).
  if (x === Number.NEGATIVE_INFINITY) return -0;
  if (x === Number.POSITIVE_INFINITY) return x;
  if (approximate === "tanh") return x * geluTanhGate(x);
  // Phi(x) as erfc(-x / sqrt 2) / 2: 1 + erf(x / sqrt 2) cancels for x < 0 and loses the tail's relative accuracy.
  return 0.5 * x * erfc(-x * INV_SQRT_2);
}

function geluDerivative(x: number, approximate: GeluApproximate): number {
  // The limits, 1 at +inf and 0 at -inf, where x phi(x) would be an infinity times 0 (NaN).
  if (x === Number.POSITIVE_INFINITY) return 1;
  if (x === Number.NEGATIVE_INFINITY) return 0;
  if (approximate === "tanh") {
    // d/dx x s(x) for the gate s: s + 2 x s (1 - s) du/dx. s (1 - s) is 0 where the gate saturates, and du/dx
    // overflows for |x| past 1e154: inf * 0 there, where the derivative is s.
    const s = geluTanhGate(x);
    const w = s * (1 - s);
    return w === 0 ? s : s + 2 * x * w * SQRT_2_OVER_PI * (1 + 3 * GELU_C * x * x);
  }
  return 0.5 * erfc(-x * INV_SQRT_2) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
}

/** An activation and its derivative at a float64 input. */
function activationOf(activation: Activation): { value: (x: number) => number; derivative: (x: number) => number } {
  switch (activation) {
    case "relu":
      // The derivative is 0 only where x <= 0, 1 at NaN: torch's threshold_backward passes the gradient there.
      return { value: (x) => (x > 0 ? x : Number.isNaN(x) ? x : 0), derivative: (x) => (x <= 0 ? 0 : 1) };
    case "gelu":
      return { value: (x) => geluValue(x, "none"), derivative: (x) => geluDerivative(x, "none") };
    case "gelu_tanh":
      return { value: (x) => geluValue(x, "tanh"), derivative: (x) => geluDerivative(x, "tanh") };
  }
}

/** The bias values along the last axis (zeros without one) and the width of that axis. */
function biasOf(backend: JsBackend, x: TensorInfo, bias: TensorInfo | undefined): { b: Float32Array; width: number } {
  const width = x.shape[x.shape.length - 1];
  return { b: bias ? backend.floats(bias) : new Float32Array(width), width };
}

export function biasActivationKernel({ inputs: { x, bias }, attrs, backend }: KernelArgs<"BiasActivation", JsBackend>): TensorInfo {
  const input = backend.floats(x);
  const { b, width } = biasOf(backend, x, bias);
  const { value } = activationOf(attrs.activation);
  const out = backend.floatOutput(x.shape, x.dtype);
  // The sum stays a float64 number, as the kernels keep it in float32 registers: it is not rounded to x's dtype.
  for (let row = 0; row < input.length; row += width) {
    for (let j = 0; j < width; j++) out.data[row + j] = value(input[row + j] + b[j]);
  }
  return out.commit();
}

export function biasActivationBackwardKernel({
  inputs: { dy, x, bias },
  attrs,
  backend,
}: KernelArgs<"BiasActivationBackward", JsBackend>): [TensorInfo, TensorInfo] {
  const input = backend.floats(x);
  const grad = backend.floats(dy);
  const { b, width } = biasOf(backend, x, bias);
  const { derivative } = activationOf(attrs.activation);
  const dx = backend.floatOutput(x.shape, x.dtype);
  const dbias = backend.floatOutput([width], x.dtype);
  const sums = new Float64Array(width);
  for (let row = 0; row < input.length; row += width) {
    for (let j = 0; j < width; j++) {
      const g = grad[row + j] * derivative(input[row + j] + b[j]);
      dx.data[row + j] = g;
      sums[j] += g;
    }
  }
  dbias.data.set(sums);
  return [dx.commit(), dbias.commit()];
}

export function geluKernel({ inputs: { x }, attrs, backend }: KernelArgs<"Gelu", JsBackend>): TensorInfo {
  const input = backend.floats(x);
  const out = backend.floatOutput(x.shape, x.dtype);
  for (let i = 0; i < input.length; i++) out.data[i] = geluValue(input[i], attrs.approximate);
  return out.commit();
}

export function geluBackwardKernel({ inputs: { dy, x }, attrs, backend }: KernelArgs<"GeluBackward", JsBackend>): TensorInfo {
  const input = backend.floats(x);
  const grad = backend.floats(dy);
  const out = backend.floatOutput(x.shape, x.dtype);
  for (let i = 0; i < input.length; i++) out.data[i] = grad[i] * geluDerivative(input[i], attrs.approximate);
  return out.commit();
}
