import type { KernelArgs, TensorInfo } from "../../../backend";
import { allocationError } from "../../../dtypes";
import { IndexError } from "../../../errors";
import { float32ToBfloat16Bits, float32ToFloat16Bits } from "../../../half";
import { broadcastStrides, sizeOf, splitAt, splitParts, stridesOf } from "../../../shape";
import type { JsBackend } from "../backend";
import { stridedCopy } from "./util";

export function fillKernel({ attrs: { shape, dtype, value }, backend }: KernelArgs<"Fill", JsBackend>): TensorInfo {
  const { info, values } = backend.output(shape, dtype);
  const stored = dtype === "float16" ? float32ToFloat16Bits(value) : dtype === "bfloat16" ? float32ToBfloat16Bits(value) : value;
  values.fill(stored);
  return info;
}

export function castKernel({ inputs: { x }, attrs: { dtype }, backend }: KernelArgs<"Cast", JsBackend>): TensorInfo {
  if (dtype === "int32") {
    const input = backend.floats(x);
    const { info, values } = backend.output(x.shape, "int32");
    // Truncation toward zero; NaN becomes 0 (Int32Array conversion).
    for (let i = 0; i < input.length; i++) values[i] = Math.trunc(input[i]);
    return info;
  }
  // Converted straight into the output's buffer: a half widened into it, anything else rounded into it from float32
  // (an int32 input rounded to float32 first, as a float32 staging array took it).
  const { info, values } = backend.output(x.shape, dtype);
  if (dtype === "float32" && x.dtype !== "int32" && x.dtype !== "float32") {
    backend.floatsInto(x, values as Float32Array);
    return info;
  }
  const input = backend.numbers(x);
  backend.storeFloats(info, input instanceof Float32Array ? input : Float32Array.from(input));
  return info;
}

export function broadcastToKernel({ inputs: { x }, attrs: { shape }, backend }: KernelArgs<"BroadcastTo", JsBackend>): TensorInfo {
  const input = backend.storage(x);
  const { info, values } = backend.output(shape, x.dtype);
  stridedCopy(values, input, 0, shape, broadcastStrides(x.shape, shape));
  return info;
}

export function transposeKernel({ inputs: { x }, attrs: { perm }, backend }: KernelArgs<"Transpose", JsBackend>): TensorInfo {
  const outShape = perm.map((axis) => x.shape[axis]);
  const inStrides = stridesOf(x.shape);
  // Reading input with permuted strides walks the output in row-major order.
  const input = backend.storage(x);
  const { info, values } = backend.output(outShape, x.dtype);
  stridedCopy(values, input, 0, outShape, perm.map((axis) => inStrides[axis]));
  return info;
}

export function sliceKernel({ inputs: { x }, attrs: { begin, size }, backend }: KernelArgs<"Slice", JsBackend>): TensorInfo {
  const strides = stridesOf(x.shape);
  const base = begin.reduce((sum, b, i) => sum + b * strides[i], 0);
  const input = backend.storage(x);
  const { info, values } = backend.output(size, x.dtype);
  stridedCopy(values, input, base, size, strides);
  return info;
}

export function splitKernel({ inputs: { x }, attrs: { axis, sizes }, backend }: KernelArgs<"Split", JsBackend>): TensorInfo[] {
  return splitParts(x.shape, axis, sizes).map((attrs) => sliceKernel({ inputs: { x }, attrs, backend } as KernelArgs<"Slice", JsBackend>));
}

export function concatKernel({ inputs: { tensors }, attrs: { axis }, backend }: KernelArgs<"Concat", JsBackend>): TensorInfo {
  const first = tensors[0];
  const total = tensors.reduce((sum, t) => sum + t.shape[axis], 0);
  const outShape = first.shape.map((d, i) => (i === axis ? total : d));
  const [outer, , inner] = splitAt(outShape, axis);
  const { info, values } = backend.output(outShape, first.dtype);
  const rowLength = total * inner;
  let start = 0;
  for (const t of tensors) {
    const input = backend.storage(t);
    const chunk = t.shape[axis] * inner;
    for (let o = 0; o < outer; o++) values.set(input.subarray(o * chunk, (o + 1) * chunk), o * rowLength + start);
    start += chunk;
  }
  return info;
}

function checkIndex(op: string, index: number, bound: number, position: number): void {
  if (index < 0 || index >= bound) {
    throw new IndexError(`${op}: index ${index} at position ${position} is out of range [0, ${bound})`);
  }
}

export function gatherKernel({ inputs: { x, indices }, attrs: { axis }, backend }: KernelArgs<"Gather", JsBackend>): TensorInfo {
  const [outer, dim, inner] = splitAt(x.shape, axis);
  const idx = backend.ints(indices);
  const count = idx.length;
  for (let j = 0; j < count; j++) checkIndex("gather", idx[j], dim, j);
  const outShape = [...x.shape.slice(0, axis), ...indices.shape, ...x.shape.slice(axis + 1)];
  const input = backend.storage(x);
  const { info, values } = backend.output(outShape, x.dtype);
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < count; j++) {
      const from = (o * dim + idx[j]) * inner;
      values.set(input.subarray(from, from + inner), (o * count + j) * inner);
    }
  }
  return info;
}

export function scatterAddKernel({ inputs: { indices, updates }, attrs: { axis, shape }, backend }: KernelArgs<"ScatterAdd", JsBackend>): TensorInfo {
  const [outer, dim, inner] = splitAt(shape, axis);
  const idx = backend.ints(indices);
  const count = idx.length;
  for (let j = 0; j < count; j++) checkIndex("scatterAdd", idx[j], dim, j);
  const source = backend.numbers(updates);
  // int32 sums wrap as they go, exact modulo 2^32 (see the Sum kernel).
  const Sums = updates.dtype === "int32" ? Int32Array : Float64Array;
  let sums: Int32Array | Float64Array;
  try {
    sums = new Sums(sizeOf(shape));
  } catch (error) {
    throw allocationError(error, `scatterAdd: cannot allocate the sums of ${sizeOf(shape)} ${updates.dtype} elements on the host`);
  }
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < count; j++) {
      const to = (o * dim + idx[j]) * inner;
      const from = (o * count + j) * inner;
      for (let k = 0; k < inner; k++) sums[to + k] += source[from + k];
    }
  }
  const out = backend.numberOutput(shape, updates.dtype);
  out.data.set(sums);
  return out.commit();
}

export function indexCopyKernel({ inputs: { target, indices, source }, attrs: { axis, inPlace }, backend }: KernelArgs<"IndexCopy", JsBackend>): TensorInfo[] {
  const [outer, dim, inner] = splitAt(target.shape, axis);
  const idx = backend.ints(indices);
  const count = idx.length;
  for (let j = 0; j < count; j++) checkIndex("indexCopy", idx[j], dim, j);
  const from = backend.storage(source);
  let into = backend.storage(target);
  let out: TensorInfo[] = [];
  if (inPlace !== true) {
    const made = backend.output(target.shape, target.dtype);
    made.values.set(into);
    into = made.values;
    out = [made.info];
  }
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < count; j++) {
      const at = (o * count + j) * inner;
      into.set(from.subarray(at, at + inner), (o * dim + idx[j]) * inner);
    }
  }
  return out;
}

export function oneHotKernel({ inputs: { indices }, attrs: { depth, dtype }, backend }: KernelArgs<"OneHot", JsBackend>): TensorInfo {
  const idx = backend.ints(indices);
  const out = backend.numberOutput([...indices.shape, depth], dtype);
  out.data.fill(0);
  for (let j = 0; j < idx.length; j++) {
    if (idx[j] >= 0 && idx[j] < depth) out.data[j * depth + idx[j]] = 1;
  }
  return out.commit();
}
