/** Shape helpers shared by ops and backends (kernels compute their output shapes with these). */
import { IndexError, ShapeError, ValueError } from "./errors";
import { formatArg } from "./ops/validate";

/** Number of elements of a shape (1 for a scalar []). */
export function sizeOf(shape: readonly number[]): number {
  // Indexed loops here and below: these run several times per op, on arrays of several element kinds.
  let size = 1;
  for (let i = 0; i < shape.length; i++) size *= shape[i];
  return size;
}

/** Row-major strides in elements. */
export function stridesOf(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let stride = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = stride;
    stride *= shape[i];
  }
  return strides;
}

export function shapesEqual(a: readonly number[], b: readonly number[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/** True for an array of non-negative integers (a hole is none: every() would skip it). */
export function isValidShape(shape: readonly number[]): boolean {
  if (!Array.isArray(shape)) return false;
  for (let i = 0; i < shape.length; i++) if (!Number.isInteger(shape[i]) || shape[i] < 0) return false;
  return true;
}

/**
 * NumPy broadcasting of two shapes: align right, a dim of 1 stretches. Throws ShapeError
 * (prefixed with `op`) when two dims differ and neither is 1.
 */
export function broadcastShapes(a: readonly number[], b: readonly number[], op = "broadcast"): number[] {
  const rank = Math.max(a.length, b.length);
  const out = new Array<number>(rank);
  for (let i = 0; i < rank; i++) {
    const da = i < rank - a.length ? 1 : a[i - (rank - a.length)];
    const db = i < rank - b.length ? 1 : b[i - (rank - b.length)];
    if (da !== db && da !== 1 && db !== 1) {
      throw new ShapeError(`${op}: shapes ${formatShape(a)} and ${formatShape(b)} cannot be broadcast (dim ${i}: ${da} vs ${db})`);
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/**
 * Strides to read an input of `shape` as if it had `outShape` (broadcast dims get stride 0).
 * `shape` must broadcast to `outShape`.
 */
export function broadcastStrides(shape: readonly number[], outShape: readonly number[]): number[] {
  const own = stridesOf(shape);
  const offset = outShape.length - shape.length;
  return outShape.map((_, i) => (i < offset || shape[i - offset] === 1 ? 0 : own[i - offset]));
}

/** A possibly negative axis as an index in [0, rank). Throws IndexError otherwise. */
export function normalizeAxis(axis: number, rank: number, op = "axis"): number {
  // A string "1" or 0.5 is named as what it is: "axis 1 is out of range for rank 2" read as if axis 1 were refused.
  if (!Number.isInteger(axis)) throw new IndexError(`${op}: axis must be an integer, got ${formatArg(axis)}`);
  if (axis < -rank || axis >= rank) throw new IndexError(`${op}: axis ${axis} is out of range for rank ${rank}`);
  return axis < 0 ? axis + rank : axis;
}

/** Axes normalised, sorted and unique; `undefined` or `null` (torch's dim=None) means all axes. */
export function normalizeAxes(axes: number | readonly number[] | null | undefined, rank: number, op = "axes"): number[] {
  if (axes === undefined || axes === null) return Array.from({ length: rank }, (_, i) => i);
  const list = typeof axes === "number" ? [axes] : axes;
  if (!Array.isArray(list)) throw new ValueError(`${op}: axes must be a number or an array of numbers, got ${formatArg(axes)}`);
  // Array.from reads a hole as undefined, refused: map would skip it.
  const out = Array.from(list, (a) => normalizeAxis(a, rank, op));
  if (new Set(out).size !== out.length) throw new IndexError(`${op}: axes [${list}] repeat an axis`);
  return out.sort((x, y) => x - y);
}

/**
 * Checks axes given for a scalar: a scalar's axes are those of [1] (0 and -1), as torch's, so ops that take an axis
 * accept them and leave the scalar as it is. Throws as normalizeAxes does, naming the scalar for an axis out of range.
 */
export function checkScalarAxes(axes: number | readonly number[] | null | undefined, op = "axes"): void {
  const list: readonly unknown[] = typeof axes === "number" ? [axes] : Array.isArray(axes) ? axes : [];
  for (const axis of list) {
    if (Number.isInteger(axis) && ((axis as number) < -1 || (axis as number) > 0)) {
      throw new IndexError(`${op}: axis ${axis} is out of range for a scalar (axes 0 and -1)`);
    }
  }
  normalizeAxes(axes, 1, op);
}

/** Output shape of a reduction over sorted `axes`. */
export function reduceShape(shape: readonly number[], axes: readonly number[], keepDims: boolean): number[] {
  const out: number[] = [];
  for (let i = 0; i < shape.length; i++) {
    if (axes.includes(i)) {
      if (keepDims) out.push(1);
    } else {
      out.push(shape[i]);
    }
  }
  return out;
}

/**
 * Softmax's rows of x's `shape` along its last axis: `rows` of `size`, and for causal masking the row count m of
 * each trailing [m, size] matrix (`causalRows`, 0 without it); row r then keeps its first (r mod m) + size - m + 1
 * entries.
 */
export function softmaxRows(shape: readonly number[], causal: boolean): { rows: number; size: number; causalRows: number } {
  const size = shape.length === 0 ? 1 : shape[shape.length - 1];
  const rows = size === 0 ? 0 : sizeOf(shape) / size;
  return { rows, size, causalRows: causal && rows > 0 ? shape[shape.length - 2] : 0 };
}

/** The parts of Split as Slice attributes: x of `shape` cut along `axis` into consecutive lengths `sizes`. */
export function splitParts(shape: readonly number[], axis: number, sizes: readonly number[]): { begin: number[]; size: number[] }[] {
  let at = 0;
  return sizes.map((length) => {
    const begin = shape.map((_, i) => (i === axis ? at : 0));
    at += length;
    return { begin, size: shape.map((d, i) => (i === axis ? length : d)) };
  });
}

/** Output shape of Matmul with transpose flags, batch dims broadcast. */
/** [outer, size, inner]: the element counts before, along and after `axis` of `shape`. */
export function splitAt(shape: readonly number[], axis: number): [number, number, number] {
  return [sizeOf(shape.slice(0, axis)), shape[axis], sizeOf(shape.slice(axis + 1))];
}

export function matmulShape(
  a: readonly number[],
  b: readonly number[],
  transposeA: boolean,
  transposeB: boolean,
): number[] {
  const m = transposeA ? a[a.length - 1] : a[a.length - 2];
  const n = transposeB ? b[b.length - 2] : b[b.length - 1];
  const batch = broadcastShapes(a.slice(0, -2), b.slice(0, -2), "matmul");
  return [...batch, m, n];
}

/**
 * How packed attention's operands hold their heads: `sequences` x `t` positions, each with `parts` rows of `h` heads
 * of `d` values side by side (qkv [...batch, T, 3, H, D]: parts 3; the output [...batch, T, H, D]: parts 1).
 */
export interface PackedHeads {
  sequences: number;
  t: number;
  parts: number;
  h: number;
  d: number;
}

/** Each head row of part `part`: `visit(rowAt, headAt)` with its offset in the packed rows and in head-major matrices. */
function visitPackedHeads({ sequences, t, parts, h, d }: PackedHeads, part: number, visit: (rowAt: number, headAt: number) => void): void {
  for (let b = 0; b < sequences; b++) {
    for (let i = 0; i < t; i++) {
      for (let head = 0; head < h; head++) visit((((b * t + i) * parts + part) * h + head) * d, ((b * h + head) * t + i) * d);
    }
  }
}

/** Part `part` of packed rows [sequences, t, parts, h, d] as head-major matrices [sequences, h, t, d] (a copy). */
export function gatherHeads(rows: Float32Array, layout: PackedHeads, part: number): Float32Array {
  const { sequences, t, h, d } = layout;
  const heads = new Float32Array(sequences * h * t * d);
  visitPackedHeads(layout, part, (rowAt, headAt) => heads.set(rows.subarray(rowAt, rowAt + layout.d), headAt));
  return heads;
}

/** Head-major matrices [sequences, h, t, d] written into part `part` of packed rows [sequences, t, parts, h, d]. */
export function scatterHeads(heads: Float32Array, rows: Float32Array, layout: PackedHeads, part: number): void {
  visitPackedHeads(layout, part, (rowAt, headAt) => rows.set(heads.subarray(headAt, headAt + layout.d), rowAt));
}

/** The packed layout of attention's qkv [...batch, T, 3, H, D] (parts 3; `parts: 1` for its output and dout). */
export function packedHeadsOf(qkvShape: readonly number[]): PackedHeads {
  const rank = qkvShape.length;
  const [t, parts, h, d] = qkvShape.slice(rank - 4);
  return { sequences: sizeOf(qkvShape.slice(0, rank - 4)), t, parts, h, d };
}
