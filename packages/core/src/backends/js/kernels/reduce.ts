import type { KernelArgs, TensorInfo } from "../../../backend";
import { reduceShape, sizeOf, splitAt, stridesOf } from "../../../shape";
import type { JsBackend } from "../backend";
import { stridedOffsets } from "./util";

type ReduceName = "Sum" | "Mean" | "Max" | "Min";

/** For each input element (row-major), the offset of the output element it reduces into. */
function reduceOffsets(shape: readonly number[], axes: readonly number[]): Int32Array {
  const keptStrides = stridesOf(reduceShape(shape, axes, true));
  const strides = shape.map((_, d) => (axes.includes(d) ? 0 : keptStrides[d]));
  return stridedOffsets(shape, strides);
}

/**
 * "leading" when the reduced axes are the first ones (0..k-1), "trailing" when they are the last ones, null otherwise
 * (or when there are no elements to add: the general walk then does nothing either).
 */
function contiguousRun(shape: readonly number[], axes: readonly number[]): "leading" | "trailing" | null {
  if (sizeOf(shape) === 0) return null;
  const sorted = [...axes].sort((a, b) => a - b);
  if (sorted.every((axis, i) => axis === i)) return "leading";
  if (sorted.every((axis, i) => axis === shape.length - sorted.length + i)) return "trailing";
  return null;
}

export function reduceKernel(name: ReduceName) {
  return ({ inputs: { x }, attrs: { axes, keepDims }, backend }: KernelArgs<ReduceName, JsBackend>): TensorInfo => {
    const outShape = reduceShape(x.shape, axes, keepDims);
    const outSize = sizeOf(outShape);
    const input = backend.numbers(x);
    // Float64 accumulators: one rounding, on store. An int32 sum wraps as it goes (exact modulo 2^32, as cuda's int64
    // sum wrapped on store), where a float64 sum past 2^53 rounded.
    const acc = new (x.dtype === "int32" && name === "Sum" ? Int32Array : Float64Array)(outSize);
    if (name === "Sum" || name === "Mean") {
      const run = contiguousRun(x.shape, axes);
      // The same additions in the same order as the general walk below, without its offsets: the reduced axes leading
      // (column sums, a bias gradient) or trailing (row sums).
      if (run === "leading") {
        for (let base = 0; base < input.length; base += outSize) for (let j = 0; j < outSize; j++) acc[j] += input[base + j];
      } else if (run === "trailing") {
        const inner = input.length / outSize;
        if (acc instanceof Int32Array) {
          // An int32 sum wraps at every addition.
          for (let o = 0; o < outSize; o++) for (let j = 0, base = o * inner; j < inner; j++) acc[o] += input[base + j];
        } else {
          for (let o = 0; o < outSize; o++) {
            let total = 0;
            for (let j = 0, base = o * inner; j < inner; j++) total += input[base + j];
            acc[o] = total;
          }
        }
      } else {
        const offsets = reduceOffsets(x.shape, axes);
        for (let i = 0; i < input.length; i++) acc[offsets[i]] += input[i];
      }
      if (name === "Mean") {
        const count = outSize === 0 ? 1 : input.length / outSize;
        for (let o = 0; o < outSize; o++) acc[o] = count === 0 ? Number.NaN : acc[o] / count;
      }
    } else {
      const offsets = reduceOffsets(x.shape, axes);
      const isMax = name === "Max";
      acc.fill(isMax ? Number.NEGATIVE_INFINITY : Number.POSITIVE_INFINITY);
      for (let i = 0; i < input.length; i++) {
        const v = input[i];
        const o = offsets[i];
        const current = acc[o];
        if (Number.isNaN(v) || (isMax ? v > current : v < current)) acc[o] = v;
      }
    }
    const out = backend.numberOutput(outShape, x.dtype);
    out.data.set(acc);
    return out.commit();
  };
}

export function argmaxKernel({ inputs: { x }, attrs: { axis, keepDims }, backend }: KernelArgs<"Argmax", JsBackend>): TensorInfo {
  const [outer, dim, inner] = splitAt(x.shape, axis);
  const input = backend.numbers(x);
  const outShape = reduceShape(x.shape, [axis], keepDims);
  const { info, values } = backend.output(outShape, "int32");
  for (let o = 0; o < outer; o++) {
    for (let k = 0; k < inner; k++) {
      const base = o * dim * inner + k;
      let best = input[base];
      let bestIndex = 0;
      for (let j = 1; j < dim && !Number.isNaN(best); j++) {
        const v = input[base + j * inner];
        if (v > best || Number.isNaN(v)) {
          best = v;
          bestIndex = j;
        }
      }
      values[o * inner + k] = bestIndex;
    }
  }
  return info;
}
