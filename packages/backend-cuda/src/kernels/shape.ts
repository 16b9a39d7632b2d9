import {
  type DType,
  type KernelArgs,
  type TensorInfo,
  broadcastStrides,
  float32ToBfloat16Bits,
  float32ToFloat16Bits,
  sizeOf,
  splitAt,
  splitParts,
  stridesOf,
} from "@blocksparse/core";
import type { CudaBackend } from "../backend";
import { collapseDims } from "./util";

/** The storage bits of `value` in `dtype`, rounded the way the js backend stores it. */
function storageBits(dtype: DType, value: number): number {
  switch (dtype) {
    case "float32":
      return new Uint32Array(Float32Array.of(value).buffer)[0];
    case "int32":
      return (value | 0) >>> 0;
    case "float16":
      return float32ToFloat16Bits(value);
    case "bfloat16":
      return float32ToBfloat16Bits(value);
  }
}

/** dst[dstOffset + walk(dstStrides)] = src[srcOffset + walk(srcStrides)] over `shape`. */
function copyStrided(
  backend: CudaBackend,
  dtype: DType,
  src: TensorInfo,
  srcOffset: number,
  srcStrides: readonly number[],
  dst: TensorInfo,
  dstOffset: number,
  dstStrides: readonly number[],
  shape: readonly number[],
): void {
  if (sizeOf(shape) === 0) return;
  const merged = collapseDims(shape, [srcStrides, dstStrides]);
  backend.addon.copyStrided(
    backend.code(dtype),
    backend.handle(src),
    srcOffset,
    merged.strides[0],
    backend.handle(dst),
    dstOffset,
    merged.strides[1],
    merged.shape,
  );
}

export function fillKernel({ attrs: { shape, dtype, value }, backend }: KernelArgs<"Fill", CudaBackend>): TensorInfo {
  const out = backend.output(shape, dtype);
  const size = sizeOf(shape);
  if (size > 0) {
    const width = dtype === "float16" || dtype === "bfloat16" ? 2 : 4;
    backend.addon.fillBits(width, backend.handle(out), size, storageBits(dtype, value));
  }
  return out;
}

export function castKernel({ inputs: { x }, attrs: { dtype }, backend }: KernelArgs<"Cast", CudaBackend>): TensorInfo {
  const out = backend.output(x.shape, dtype);
  backend.addon.cast(backend.code(x.dtype), backend.code(dtype), backend.handle(x), backend.handle(out), sizeOf(x.shape));
  return out;
}

export function broadcastToKernel({ inputs: { x }, attrs: { shape }, backend }: KernelArgs<"BroadcastTo", CudaBackend>): TensorInfo {
  const out = backend.output(shape, x.dtype);
  copyStrided(backend, x.dtype, x, 0, broadcastStrides(x.shape, shape), out, 0, stridesOf(shape), shape);
  return out;
}

export function transposeKernel({ inputs: { x }, attrs: { perm }, backend }: KernelArgs<"Transpose", CudaBackend>): TensorInfo {
  const shape = perm.map((axis) => x.shape[axis]);
  const inStrides = stridesOf(x.shape);
  const out = backend.output(shape, x.dtype);
  copyStrided(backend, x.dtype, x, 0, perm.map((axis) => inStrides[axis]), out, 0, stridesOf(shape), shape);
  return out;
}

export function sliceKernel({ inputs: { x }, attrs: { begin, size }, backend }: KernelArgs<"Slice", CudaBackend>): TensorInfo {
  const strides = stridesOf(x.shape);
  const offset = begin.reduce((sum, b, i) => sum + b * strides[i], 0);
  const out = backend.output(size, x.dtype);
  copyStrided(backend, x.dtype, x, offset, strides, out, 0, stridesOf(size), size);
  return out;
}

export function splitKernel({ inputs: { x }, attrs: { axis, sizes }, backend }: KernelArgs<"Split", CudaBackend>): TensorInfo[] {
  // One strided copy per part, as Slice makes it.
  return splitParts(x.shape, axis, sizes).map((attrs) => sliceKernel({ inputs: { x }, attrs, backend } as KernelArgs<"Slice", CudaBackend>));
}

export function concatKernel({ inputs: { tensors }, attrs: { axis }, backend }: KernelArgs<"Concat", CudaBackend>): TensorInfo {
  const shape = [...tensors[0].shape];
  shape[axis] = tensors.reduce((sum, t) => sum + t.shape[axis], 0);
  const dtype = tensors[0].dtype;
  const out = backend.output(shape, dtype);
  const outStrides = stridesOf(shape);
  let at = 0;
  for (const t of tensors) {
    copyStrided(backend, dtype, t, 0, stridesOf(t.shape), out, at * outStrides[axis], outStrides, t.shape);
    at += t.shape[axis];
  }
  return out;
}

export function gatherKernel({ inputs: { x, indices }, attrs: { axis }, backend }: KernelArgs<"Gather", CudaBackend>): TensorInfo {
  const [outer, axisSize, inner] = splitAt(x.shape, axis);
  const count = sizeOf(indices.shape);
  const out = backend.output([...x.shape.slice(0, axis), ...indices.shape, ...x.shape.slice(axis + 1)], x.dtype);
  backend.addon.gather(
    backend.code(x.dtype),
    backend.handle(x),
    backend.handle(indices),
    backend.handle(out),
    outer,
    axisSize,
    inner,
    count,
  );
  return out;
}

export function scatterAddKernel({
  inputs: { indices, updates },
  attrs: { axis, shape },
  backend,
}: KernelArgs<"ScatterAdd", CudaBackend>): TensorInfo {
  const [outer, axisSize, inner] = splitAt(shape, axis);
  const out = backend.output(shape, updates.dtype);
  backend.addon.scatterAdd(
    backend.code(updates.dtype),
    backend.handle(updates),
    backend.handle(indices),
    backend.handle(out),
    outer,
    axisSize,
    inner,
    sizeOf(indices.shape),
  );
  return out;
}

export function indexCopyKernel({
  inputs: { target, indices, source },
  attrs: { axis, inPlace },
  backend,
}: KernelArgs<"IndexCopy", CudaBackend>): TensorInfo[] {
  const [outer, axisSize, inner] = splitAt(target.shape, axis);
  let into = target;
  const made: TensorInfo[] = [];
  if (inPlace !== true) {
    into = backend.output(target.shape, target.dtype);
    made.push(into);
    if (sizeOf(target.shape) > 0) backend.addon.copyBuffer(backend.handle(target), backend.handle(into));
  }
  backend.addon.indexCopy(
    backend.code(target.dtype),
    backend.handle(source),
    backend.handle(indices),
    backend.handle(into),
    outer,
    axisSize,
    inner,
    sizeOf(indices.shape),
  );
  return made;
}

export function oneHotKernel({ inputs: { indices }, attrs: { depth, dtype }, backend }: KernelArgs<"OneHot", CudaBackend>): TensorInfo {
  const out = backend.output([...indices.shape, depth], dtype);
  backend.addon.oneHot(backend.code(dtype), backend.handle(indices), backend.handle(out), sizeOf(indices.shape), depth);
  return out;
}
