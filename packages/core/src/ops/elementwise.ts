import { engine } from "../engine";
import { DTypeError, ShapeError, ValueError } from "../errors";
import { bfloat16BitsToFloat32, float16BitsToFloat32, float32ToBfloat16Bits, float32ToFloat16Bits } from "../half";
import {
  Abs,
  type Activation,
  Add,
  BiasActivation,
  BiasActivationBackward,
  type BinaryKernelName,
  type ComparisonKernelName,
  Div,
  Equal,
  Exp,
  Gelu,
  type GeluApproximate,
  GeluBackward,
  Greater,
  GreaterEqual,
  INT32_ELEMENTWISE,
  Less,
  LessEqual,
  Log,
  Maximum,
  Minimum,
  Mul,
  Neg,
  NotEqual,
  Pow,
  Relu,
  Rsqrt,
  Sigmoid,
  Sqrt,
  Square,
  Sub,
  Tanh,
  type UnaryKernelName,
  Where,
} from "../kernel_names";
import { broadcastShapes, formatShape } from "../shape";
import { Tensor } from "../tensor";
import { fullOn } from "./creation";
import { cast } from "./shape_ops";
import { assertActivation, assertDType, assertFloat, assertMinRank, assertSameBackend, assertSameDType, assertShape, assertTensor, formatArg, isInt32, kindOf } from "./validate";

/** A tensor, or a number taken as a scalar of the other operand's dtype (one that a half dtype holds as Infinity or 0 joins in float32). */
export type TensorLike = Tensor | number;

/** The op's name as users call it ("add" for Add): built only for an error message. */
const opName = (kernel: string) => kernel.charAt(0).toLowerCase() + kernel.slice(1);

function unary(kernel: UnaryKernelName, x: Tensor): Tensor {
  // Checks without building the op's name unless one fails: this runs for every elementwise op.
  if (!(x instanceof Tensor) || x.storage.disposed) assertTensor(opName(kernel), "x", x);
  if (x.dtype === "int32" && !INT32_ELEMENTWISE.includes(kernel)) assertFloat(opName(kernel), "x", x);
  return engine.runKernel(kernel, { x }, {});
}

export const neg = (x: Tensor): Tensor => unary(Neg, x);
export const abs = (x: Tensor): Tensor => unary(Abs, x);
export const exp = (x: Tensor): Tensor => unary(Exp, x);
export const log = (x: Tensor): Tensor => unary(Log, x);
export const sqrt = (x: Tensor): Tensor => unary(Sqrt, x);
export const rsqrt = (x: Tensor): Tensor => unary(Rsqrt, x);
export const tanh = (x: Tensor): Tensor => unary(Tanh, x);
export const sigmoid = (x: Tensor): Tensor => unary(Sigmoid, x);
export const relu = (x: Tensor): Tensor => unary(Relu, x);
export const square = (x: Tensor): Tensor => unary(Square, x);

function checkApproximate(op: string, approximate: GeluApproximate): void {
  if (approximate !== "none" && approximate !== "tanh") {
    throw new ValueError(`${op}: approximate must be "none" or "tanh", got ${formatArg(approximate)}`);
  }
}

/** GELU: exact (erf) by default, or the tanh approximation. */
export function gelu(x: Tensor, approximate: GeluApproximate = "none"): Tensor {
  assertTensor("gelu", "x", x);
  assertFloat("gelu", "x", x);
  checkApproximate("gelu", approximate);
  return engine.runKernel(Gelu, { x }, { approximate });
}

/** dy * GELU'(x), for either variant. */
export function geluBackward(dy: Tensor, x: Tensor, approximate: GeluApproximate = "none"): Tensor {
  assertTensor("geluBackward", "dy", dy);
  assertTensor("geluBackward", "x", x);
  assertFloat("geluBackward", "x", x);
  assertSameBackend("geluBackward", [["dy", dy], ["x", x]]);
  assertSameDType("geluBackward", ["dy", "x"], dy, x);
  assertShape("geluBackward", "dy", dy, x.shape);
  checkApproximate("geluBackward", approximate);
  return engine.runKernel(GeluBackward, { dy, x }, { approximate });
}

/** x's and bias's checks shared by biasActivation and its backward. */
function checkBiasActivation(op: string, x: Tensor, bias: Tensor | null | undefined, activation: Activation): void {
  assertTensor(op, "x", x);
  assertFloat(op, "x", x);
  assertMinRank(op, "x", x, 1);
  assertActivation(op, activation);
  if (bias === null || bias === undefined) return;
  assertTensor(op, "bias", bias);
  assertSameBackend(op, [["x", x], ["bias", bias]]);
  assertSameDType(op, ["bias", "x"], bias, x);
  assertShape(op, "bias", bias, [x.shape[x.rank - 1]]);
}

/**
 * act(x + bias) in one pass (bias along the last axis, optional): a Linear layer's bias and its
 * activation ("relu", "gelu" or "gelu_tanh") fused, as `nn` layers with an `activation` run them.
 */
export function biasActivation(x: Tensor, bias: Tensor | null, activation: Activation): Tensor {
  checkBiasActivation("biasActivation", x, bias, activation);
  return engine.runKernel(BiasActivation, bias ? { x, bias } : { x }, { activation });
}

/** biasActivation's gradients in one pass: [dx = dy * act'(x + bias), dbias = dx summed over all axes but the last]. */
export function biasActivationBackward(dy: Tensor, x: Tensor, bias: Tensor | null, activation: Activation): [Tensor, Tensor] {
  const op = "biasActivationBackward";
  checkBiasActivation(op, x, bias, activation);
  assertTensor(op, "dy", dy);
  assertSameBackend(op, [["dy", dy], ["x", x]]);
  assertSameDType(op, ["dy", "x"], dy, x);
  assertShape(op, "dy", dy, x.shape);
  return engine.runKernel(BiasActivationBackward, bias ? { dy, x, bias } : { dy, x }, { activation });
}

/** Turns numbers into scalars of the other operand's dtype; returns the temporaries to dispose. */
function operands(op: string, a: TensorLike, b: TensorLike): [Tensor, Tensor, Tensor[]] {
  const temporaries: Tensor[] = [];
  const asTensor = (value: TensorLike, other: TensorLike, name: string): Tensor => {
    if (value instanceof Tensor) {
      assertTensor(op, name, value);
      return value;
    }
    if (typeof value !== "number") throw new ValueError(`${op}: ${name} must be a Tensor or a number, got ${kindOf(value)}`);
    if (!(other instanceof Tensor)) throw new ValueError(`${op}: at least one operand must be a Tensor`);
    assertTensor(op, name === "a" ? "b" : "a", other);
    const dtype = other.dtype;
    if (dtype === "int32" && !Number.isInteger(value)) {
      throw new DTypeError(`${op}: ${name} = ${value} is not an integer, but the other operand is int32`);
    }
    // Stored as an int32 scalar, a number past its range would wrap (3e9 -> -1294967296).
    if (dtype === "int32" && !isInt32(value)) {
      throw new ValueError(`${op}: ${name} = ${value} is outside int32's range [-2^31, 2^31 - 1], and the other operand is int32`);
    }
    // Scalars follow the other operand onto its backend, made by a Fill kernel (no host transfer: a captured
    // graph records it, the number being a constant of the graph).
    const t = fullOn(other.backend, [], value, dtype);
    temporaries.push(t);
    return t;
  };
  const ta = asTensor(a, b, "a");
  const tb = asTensor(b, a, "b");
  return [ta, tb, temporaries];
}

function binary(kernel: BinaryKernelName | ComparisonKernelName, a: TensorLike, b: TensorLike, floatOnly: boolean): Tensor {
  // Two live tensors of one backend and dtype whose shapes broadcast: checked without allocating (no name, no
  // lists); anything else takes the full path below, which names what is wrong.
  if (
    a instanceof Tensor &&
    b instanceof Tensor &&
    !a.storage.disposed &&
    !b.storage.disposed &&
    a.backend === b.backend &&
    a.dtype === b.dtype &&
    !(floatOnly && a.dtype === "int32") &&
    broadcasts(a.shape, b.shape)
  ) {
    return engine.runKernel(kernel, { a, b }, {});
  }
  // A number a half dtype holds as Infinity, 0 or a subnormal off by more than its rounding (65536, 1e-8 or 3e-8 in
  // float16) joins in float32, as PyTorch's scalars do: the op runs on the widened tensor, its result rounded once
  // (mul(x, 65536) gave Infinity for x = 1e-3, mul(x, 3e-8) twice the product).
  const half = lostInHalf(a, b) ?? lostInHalf(b, a);
  if (half) {
    return engine.tidy(() => {
      const out = binary(kernel, a === half ? cast(half, "float32") : a, b === half ? cast(half, "float32") : b, floatOnly);
      return out.dtype === "int32" ? out : cast(out, half.dtype);
    });
  }
  const op = opName(kernel);
  const [ta, tb, temporaries] = operands(op, a, b);
  try {
    assertSameBackend(op, [["a", ta], ["b", tb]]);
    assertSameDType(op, ["a", "b"], ta, tb);
    if (floatOnly) assertFloat(op, "a", ta);
    broadcastShapes(ta.shape, tb.shape, op);
    return engine.runKernel(kernel, { a: ta, b: tb }, {});
  } finally {
    for (const t of temporaries) t.dispose();
  }
}

/**
 * `other` when it is a live half tensor that stores the finite, nonzero number `value` off by more than the dtype's
 * relative rounding (2^-11 float16, 2^-8 bfloat16): as Infinity, 0 or a subnormal (3e-8 stored as 5.96e-8).
 */
function lostInHalf(value: TensorLike, other: TensorLike): Tensor | undefined {
  if (typeof value !== "number" || !(other instanceof Tensor) || other.isDisposed || value === 0 || !Number.isFinite(value)) return undefined;
  const wide = Math.fround(value);
  const f16 = other.dtype === "float16";
  if (!f16 && other.dtype !== "bfloat16") return undefined;
  const stored = f16 ? float16BitsToFloat32(float32ToFloat16Bits(wide)) : bfloat16BitsToFloat32(float32ToBfloat16Bits(wide));
  // Not <=: Infinity fails it too.
  return Math.abs(stored - wide) <= Math.abs(wide) * 2 ** (f16 ? -11 : -8) ? undefined : other;
}

/** Whether two shapes broadcast together (broadcastShapes without the result). */
function broadcasts(a: readonly number[], b: readonly number[]): boolean {
  for (let i = a.length - 1, j = b.length - 1; i >= 0 && j >= 0; i--, j--) {
    if (a[i] !== b[j] && a[i] !== 1 && b[j] !== 1) return false;
  }
  return true;
}

export const add = (a: TensorLike, b: TensorLike): Tensor => binary(Add, a, b, false);
export const sub = (a: TensorLike, b: TensorLike): Tensor => binary(Sub, a, b, false);
export const mul = (a: TensorLike, b: TensorLike): Tensor => binary(Mul, a, b, false);
export const div = (a: TensorLike, b: TensorLike): Tensor => binary(Div, a, b, true);
export const maximum = (a: TensorLike, b: TensorLike): Tensor => binary(Maximum, a, b, false);
export const minimum = (a: TensorLike, b: TensorLike): Tensor => binary(Minimum, a, b, false);
export const pow = (a: TensorLike, b: TensorLike): Tensor => binary(Pow, a, b, true);

/** Comparisons return int32 tensors of 0 and 1. */
export const equal = (a: TensorLike, b: TensorLike): Tensor => binary(Equal, a, b, false);
export const notEqual = (a: TensorLike, b: TensorLike): Tensor => binary(NotEqual, a, b, false);
export const less = (a: TensorLike, b: TensorLike): Tensor => binary(Less, a, b, false);
export const lessEqual = (a: TensorLike, b: TensorLike): Tensor => binary(LessEqual, a, b, false);
export const greater = (a: TensorLike, b: TensorLike): Tensor => binary(Greater, a, b, false);
export const greaterEqual = (a: TensorLike, b: TensorLike): Tensor => binary(GreaterEqual, a, b, false);

/**
 * condition (int32, nonzero = true) ? a : b, the three broadcast together. A number takes the other branch's dtype;
 * two numbers make a float32 tensor of condition's shape on condition's backend (torch.where(c, 1.0, 0.0)).
 */
export function where(condition: Tensor, a: TensorLike, b: TensorLike): Tensor {
  assertTensor("where", "condition", condition);
  assertDType("where", "condition", condition, "int32");
  const [ta, tb, temporaries] = typeof a === "number" && typeof b === "number" ? numberBranches(condition, a, b) : operands("where", a, b);
  try {
    assertSameBackend("where", [["condition", condition], ["a", ta], ["b", tb]]);
    assertSameDType("where", ["a", "b"], ta, tb);
    try {
      broadcastShapes(broadcastShapes(condition.shape, ta.shape), tb.shape);
    } catch {
      // Each input's own shape: the pairwise error would name the broadcast of two of them.
      throw new ShapeError(`where: condition ${formatShape(condition.shape)}, a ${formatShape(ta.shape)} and b ${formatShape(tb.shape)} cannot be broadcast together`);
    }
    return engine.runKernel(Where, { condition, a: ta, b: tb }, {});
  } finally {
    for (const t of temporaries) t.dispose();
  }
}

/** where's two number branches as float32 scalars on condition's backend, and the temporaries to dispose. */
function numberBranches(condition: Tensor, a: number, b: number): [Tensor, Tensor, Tensor[]] {
  const ta = fullOn(condition.backend, [], a, "float32");
  const tb = fullOn(condition.backend, [], b, "float32");
  return [ta, tb, [ta, tb]];
}
