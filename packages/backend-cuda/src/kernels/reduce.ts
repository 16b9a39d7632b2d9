import { type KernelArgs, type TensorInfo, reduceShape, sizeOf, softmaxRows, splitAt, stridesOf } from "@blocksparse/core";
import type { CudaBackend } from "../backend";
import { ReduceOp, type ReduceOpCode } from "../native";
import { collapseDims } from "./util";

type ReduceName = "Sum" | "Mean" | "Max" | "Min";

const REDUCE_CODES: Record<ReduceName, ReduceOpCode> = {
  Sum: ReduceOp.Sum,
  Mean: ReduceOp.Mean,
  Max: ReduceOp.Max,
  Min: ReduceOp.Min,
};

function product(dims: readonly number[]): number {
  return dims.reduce((p, d) => p * d, 1);
}

/**
 * Reduces `axes` (sorted, unique) of x into `out`. Adjacent axes reduce in place as the middle of an
 * [outer, size, inner] view; scattered ones are first gathered last by a transposing copy.
 */
function reduceInto(backend: CudaBackend, op: ReduceOpCode, x: TensorInfo, axes: readonly number[], out: TensorInfo): void {
  const shape = x.shape;
  const adjacent = axes.every((axis, i) => i === 0 || axis === axes[i - 1] + 1);
  if (adjacent) {
    const first = axes[0];
    const last = axes[axes.length - 1];
    const outer = product(shape.slice(0, first));
    const size = product(shape.slice(first, last + 1));
    const inner = product(shape.slice(last + 1));
    backend.addon.reduce(op, backend.code(x.dtype), backend.handle(x), backend.handle(out), outer, size, inner);
    return;
  }
  const kept = shape.map((_, i) => i).filter((i) => !axes.includes(i));
  const perm = [...kept, ...axes];
  const permuted = perm.map((axis) => shape[axis]);
  const inStrides = stridesOf(shape);
  backend.withScratch(x.dtype, sizeOf(shape), (scratch) => {
    if (sizeOf(shape) > 0) {
      const merged = collapseDims(permuted, [perm.map((axis) => inStrides[axis]), stridesOf(permuted)]);
      backend.addon.copyStrided(
        backend.code(x.dtype),
        backend.handle(x),
        0,
        merged.strides[0],
        scratch.handle,
        0,
        merged.strides[1],
        merged.shape,
      );
    }
    const outer = product(kept.map((axis) => shape[axis]));
    const size = product(axes.map((axis) => shape[axis]));
    backend.addon.reduce(op, backend.code(x.dtype), scratch.handle, backend.handle(out), outer, size, 1);
  });
}

export function reduceKernel(name: ReduceName) {
  return ({ inputs: { x }, attrs: { axes, keepDims }, backend }: KernelArgs<ReduceName, CudaBackend>): TensorInfo => {
    const out = backend.output(reduceShape(x.shape, axes, keepDims), x.dtype);
    if (sizeOf(out.shape) === 0) return out;
    if (axes.length === 0) {
      // Reducing over no axis is the identity.
      backend.addon.cast(backend.code(x.dtype), backend.code(x.dtype), backend.handle(x), backend.handle(out), sizeOf(x.shape));
      return out;
    }
    reduceInto(backend, REDUCE_CODES[name], x, axes, out);
    return out;
  };
}

export function argmaxKernel({ inputs: { x }, attrs: { axis, keepDims }, backend }: KernelArgs<"Argmax", CudaBackend>): TensorInfo {
  const out = backend.output(reduceShape(x.shape, [axis], keepDims), "int32");
  const [outer, size, inner] = splitAt(x.shape, axis);
  backend.addon.reduce(ReduceOp.Argmax, backend.code(x.dtype), backend.handle(x), backend.handle(out), outer, size, inner);
  return out;
}

function softmaxLike(log: boolean) {
  return ({ inputs: { x }, attrs: { causal }, backend }: KernelArgs<"Softmax" | "LogSoftmax", CudaBackend>): TensorInfo => {
    const out = backend.output(x.shape, x.dtype);
    const { rows, size, causalRows } = softmaxRows(x.shape, causal);
    backend.addon.softmax(log, backend.code(x.dtype), backend.handle(x), backend.handle(out), rows, size, causalRows);
    return out;
  };
}

export const softmaxKernel = softmaxLike(false);
export const logSoftmaxKernel = softmaxLike(true);

export function softmaxBackwardKernel({ inputs: { dy, y }, attrs: { log, causal }, backend }: KernelArgs<"SoftmaxBackward", CudaBackend>): TensorInfo {
  const out = backend.output(y.shape, y.dtype);
  const { rows, size, causalRows } = softmaxRows(y.shape, causal);
  backend.addon.softmaxBackward(log, backend.code(y.dtype), backend.handle(dy), backend.handle(y), backend.handle(out), rows, size, causalRows);
  return out;
}
