import {
  type Activation,
  type BinaryKernelName,
  type ComparisonKernelName,
  type KernelArgs,
  type TensorInfo,
  type UnaryKernelName,
  broadcastShapes,
  broadcastStrides,
  shapesEqual,
  sizeOf,
} from "@blocksparse/core";
import type { CudaBackend } from "../backend";
import { ActivationOp, type ActivationOpCode, BinaryOp, type BinaryOpCode, UnaryOp, type UnaryOpCode } from "../native";
import { collapseDims } from "./util";

const UNARY_CODES: Record<UnaryKernelName, UnaryOpCode> = {
  Neg: UnaryOp.Neg,
  Abs: UnaryOp.Abs,
  Exp: UnaryOp.Exp,
  Log: UnaryOp.Log,
  Sqrt: UnaryOp.Sqrt,
  Rsqrt: UnaryOp.Rsqrt,
  Tanh: UnaryOp.Tanh,
  Sigmoid: UnaryOp.Sigmoid,
  Relu: UnaryOp.Relu,
  Square: UnaryOp.Square,
};

const BINARY_CODES: Record<BinaryKernelName | ComparisonKernelName, BinaryOpCode> = {
  Add: BinaryOp.Add,
  Sub: BinaryOp.Sub,
  Mul: BinaryOp.Mul,
  Div: BinaryOp.Div,
  Maximum: BinaryOp.Maximum,
  Minimum: BinaryOp.Minimum,
  Pow: BinaryOp.Pow,
  Equal: BinaryOp.Equal,
  NotEqual: BinaryOp.NotEqual,
  Less: BinaryOp.Less,
  LessEqual: BinaryOp.LessEqual,
  Greater: BinaryOp.Greater,
  GreaterEqual: BinaryOp.GreaterEqual,
};

function runUnary(backend: CudaBackend, op: UnaryOpCode, x: TensorInfo): TensorInfo {
  const out = backend.output(x.shape, x.dtype);
  backend.addon.unary(op, backend.code(x.dtype), backend.handle(x), backend.handle(out), sizeOf(x.shape));
  return out;
}

/** The stride of a tensor read contiguously (shared, never written). */
const UNIT_STRIDE: readonly number[] = Object.freeze([1]);

/** out = op(a, b) broadcast; comparisons write int32. */
function runBinary(backend: CudaBackend, op: BinaryOpCode, a: TensorInfo, b: TensorInfo, comparison: boolean): TensorInfo {
  // Operands of one shape (most calls): one contiguous run of n elements, what collapseDims gives for them, with no
  // stride arrays built.
  if (shapesEqual(a.shape, b.shape)) {
    const n = sizeOf(a.shape);
    if (n > 1) {
      const out = backend.output(a.shape, comparison ? "int32" : a.dtype);
      backend.addon.binary(op, backend.code(a.dtype), backend.handle(a), UNIT_STRIDE, backend.handle(b), UNIT_STRIDE, backend.handle(out), [n]);
      return out;
    }
  }
  const shape = broadcastShapes(a.shape, b.shape);
  const out = backend.output(shape, comparison ? "int32" : a.dtype);
  if (sizeOf(shape) === 0) return out;
  const merged = collapseDims(shape, [broadcastStrides(a.shape, shape), broadcastStrides(b.shape, shape)]);
  backend.addon.binary(
    op,
    backend.code(a.dtype),
    backend.handle(a),
    merged.strides[0],
    backend.handle(b),
    merged.strides[1],
    backend.handle(out),
    merged.shape,
  );
  return out;
}

/** a + b (b broadcast to a), a new output: for kernels that compose an add. */
export function addTensors(backend: CudaBackend, a: TensorInfo, b: TensorInfo): TensorInfo {
  return runBinary(backend, BINARY_CODES.Add, a, b, false);
}

export function unaryKernel(name: UnaryKernelName) {
  return ({ inputs: { x }, backend }: KernelArgs<UnaryKernelName, CudaBackend>): TensorInfo =>
    runUnary(backend, UNARY_CODES[name], x);
}

export function binaryKernel(name: BinaryKernelName | ComparisonKernelName, comparison: boolean) {
  return ({ inputs: { a, b }, backend }: KernelArgs<BinaryKernelName | ComparisonKernelName, CudaBackend>): TensorInfo =>
    runBinary(backend, BINARY_CODES[name], a, b, comparison);
}

export function geluKernel({ inputs: { x }, attrs, backend }: KernelArgs<"Gelu", CudaBackend>): TensorInfo {
  return runUnary(backend, attrs.approximate === "tanh" ? UnaryOp.GeluTanh : UnaryOp.Gelu, x);
}

export function geluBackwardKernel({ inputs: { dy, x }, attrs, backend }: KernelArgs<"GeluBackward", CudaBackend>): TensorInfo {
  return runBinary(backend, attrs.approximate === "tanh" ? BinaryOp.GeluTanhBackward : BinaryOp.GeluBackward, dy, x, false);
}

export function whereKernel({ inputs: { condition, a, b }, backend }: KernelArgs<"Where", CudaBackend>): TensorInfo {
  const shape = broadcastShapes(broadcastShapes(condition.shape, a.shape), b.shape);
  const out = backend.output(shape, a.dtype);
  if (sizeOf(shape) === 0) return out;
  const merged = collapseDims(shape, [
    broadcastStrides(condition.shape, shape),
    broadcastStrides(a.shape, shape),
    broadcastStrides(b.shape, shape),
  ]);
  backend.addon.where(
    backend.code(a.dtype),
    backend.handle(condition),
    merged.strides[0],
    backend.handle(a),
    merged.strides[1],
    backend.handle(b),
    merged.strides[2],
    backend.handle(out),
    merged.shape,
  );
  return out;
}

export const ACTIVATION_CODES: Record<Activation, ActivationOpCode> = {
  relu: ActivationOp.Relu,
  gelu: ActivationOp.Gelu,
  gelu_tanh: ActivationOp.GeluTanh,
};

/** [rows, width] of a tensor viewed along its last axis. */
function rowsAndWidth(shape: readonly number[]): [number, number] {
  const width = shape[shape.length - 1];
  return [width === 0 ? 0 : sizeOf(shape) / width, width];
}

export function biasActivationKernel({ inputs: { x, bias }, attrs, backend }: KernelArgs<"BiasActivation", CudaBackend>): TensorInfo {
  const [rows, width] = rowsAndWidth(x.shape);
  const y = backend.output(x.shape, x.dtype);
  backend.addon.biasActivation(
    ACTIVATION_CODES[attrs.activation],
    backend.code(x.dtype),
    backend.handle(x),
    bias ? backend.handle(bias) : null,
    backend.handle(y),
    rows,
    width,
  );
  return y;
}

export function biasActivationBackwardKernel({
  inputs: { dy, x, bias },
  attrs,
  backend,
}: KernelArgs<"BiasActivationBackward", CudaBackend>): [TensorInfo, TensorInfo] {
  const [rows, width] = rowsAndWidth(x.shape);
  const dx = backend.output(x.shape, x.dtype);
  const dbias = backend.output([width], x.dtype);
  backend.addon.biasActivationBackward(
    ACTIVATION_CODES[attrs.activation],
    backend.code(x.dtype),
    backend.handle(dy),
    backend.handle(x),
    bias ? backend.handle(bias) : null,
    backend.handle(dx),
    backend.handle(dbias),
    rows,
    width,
  );
  return [dx, dbias];
}
