import { engine } from "../engine";
import { ShapeError } from "../errors";
import { Argmax, Max, Mean, Min, Sum } from "../kernel_names";
import { checkScalarAxes, formatShape, normalizeAxes } from "../shape";
import type { Tensor } from "../tensor";
import { reshape } from "./shape_ops";
import { assertBoolean, assertFloat, assertTensor, axisArg } from "./validate";

type Axes = number | readonly number[];
type ReduceKernel = typeof Sum | typeof Mean | typeof Max | typeof Min;

function reduce(kernel: ReduceKernel, op: string, x: Tensor, axes: Axes | null | undefined, keepDims: boolean): Tensor {
  assertTensor(op, "x", x);
  // torch.sum(x, 0, keepdim="no") is a TypeError; a truthy string would keep the dims here.
  assertBoolean(op, "keepDims", keepDims);
  // A scalar's axes are those of [1] (0 and -1), as torch's: reducing over them leaves it as it is.
  if (x.rank === 0) checkScalarAxes(axes, op);
  const list = x.rank === 0 ? [] : normalizeAxes(axes, x.rank, op);
  if (kernel === Max || kernel === Min) {
    for (const a of list) {
      if (x.shape[a] === 0) throw new ShapeError(`${op}: cannot reduce over axis ${a} of size 0 (shape ${formatShape(x.shape)})`);
    }
  }
  return engine.runKernel(kernel, { x }, { axes: list, keepDims });
}

/**
 * Sum over `axes` (default, or null as torch's dim=None: all; an empty list reduces none, as NumPy's axis=(), where
 * torch.sum(x, dim=[]) reduces all). float or int32 (an int32 sum wraps modulo 2^32, as int32 add does; cast to float32 first for a wider one).
 */
export function sum(x: Tensor, axes?: Axes | null, keepDims = false): Tensor {
  return reduce(Sum, "sum", x, axes, keepDims);
}

/** Mean over `axes` (default or null: all). float dtypes. */
export function mean(x: Tensor, axes?: Axes | null, keepDims = false): Tensor {
  assertTensor("mean", "x", x);
  assertFloat("mean", "x", x);
  return reduce(Mean, "mean", x, axes, keepDims);
}

/** Maximum over `axes` (default or null: all); NaN where a NaN is reduced, as torch.amax. */
export function max(x: Tensor, axes?: Axes | null, keepDims = false): Tensor {
  return reduce(Max, "max", x, axes, keepDims);
}

/** Minimum over `axes` (default or null: all); NaN where a NaN is reduced, as torch.amin. */
export function min(x: Tensor, axes?: Axes | null, keepDims = false): Tensor {
  return reduce(Min, "min", x, axes, keepDims);
}

/**
 * int32 index of the first maximum along `axis`, or of the first NaN, as torch.argmax. The axis (undefined or null)
 * defaults to the last (torch.argmax without a dim gives an index into the flattened tensor: argmax(reshape(x, [-1]))
 * here).
 */
export function argmax(x: Tensor, axis?: number | null, keepDims = false): Tensor {
  assertTensor("argmax", "x", x);
  const along = axis ?? -1;
  // A scalar's axes are those of [1], as torch's: its argmax is 0, a scalar whatever keepDims.
  if (x.rank === 0) checkScalarAxes(along, "argmax");
  const ax = axisArg("argmax", along, Math.max(x.rank, 1));
  assertBoolean("argmax", "keepDims", keepDims);
  if (x.rank === 0) return engine.tidy(() => engine.runKernel(Argmax, { x: reshape(x, [1]) }, { axis: 0, keepDims: false }));
  if (x.shape[ax] === 0) throw new ShapeError(`argmax: axis ${ax} has size 0 (shape ${formatShape(x.shape)})`);
  return engine.runKernel(Argmax, { x }, { axis: ax, keepDims });
}
