import { type DType, isDType } from "../dtypes";
import { engine } from "../engine";
import { DTypeError, IndexError, ShapeError, ValueError } from "../errors";
import { BroadcastTo, Cast, Concat, Gather, IndexCopy, OneHot, Reshape, ScatterAdd, Slice, Split, Transpose } from "../kernel_names";
import { broadcastShapes, checkScalarAxes, formatShape, normalizeAxes, shapesEqual, sizeOf } from "../shape";
import type { Tensor } from "../tensor";
import { assertArray, assertDType, assertPositiveInt, assertRank, assertSameBackend, assertSameDType, assertShapeArg, assertTensor, axisArg, formatArg } from "./validate";

/** The same data with another shape of the same size; one dim may be -1 (inferred). */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  assertTensor("reshape", "x", x);
  assertArray("reshape", "shape", shape);
  const inferAt = shape.indexOf(-1);
  if (shape.filter((d) => d === -1).length > 1) throw new ShapeError(`reshape: shape ${formatShape(shape)} has more than one -1`);
  // Array.from keeps a hole (as undefined, refused below): filter would drop it.
  const known = Array.from(shape).filter((d) => d !== -1);
  assertShapeArg("reshape", "shape", known);
  const resolved = [...shape];
  if (inferAt >= 0) {
    const rest = sizeOf(known);
    if (rest === 0 || x.size % rest !== 0) {
      throw new ShapeError(`reshape: cannot infer the -1 in ${formatShape(shape)} for ${x.size} elements`);
    }
    resolved[inferAt] = x.size / rest;
  }
  if (sizeOf(resolved) !== x.size) {
    throw new ShapeError(`reshape: cannot view ${formatShape(x.shape)} (${x.size} elements) as ${formatShape(resolved)}`);
  }
  return engine.runKernel(Reshape, { x }, { shape: resolved });
}

/** Collapses dims [startAxis, endAxis] (inclusive) into one. Default (or null): from the first (0) to the last (-1). */
export function flatten(x: Tensor, startAxis?: number | null, endAxis?: number | null): Tensor {
  assertTensor("flatten", "x", x);
  const [startGiven, endGiven] = [startAxis ?? 0, endAxis ?? -1];
  // A scalar's axes are those of [1], as torch's (flatten(scalar, 5) was [1]).
  const start = axisArg("flatten", startGiven, Math.max(x.rank, 1));
  const end = axisArg("flatten", endGiven, Math.max(x.rank, 1));
  if (x.rank === 0) return reshape(x, [1]);
  if (end < start) throw new IndexError(`flatten: endAxis ${endGiven} comes before startAxis ${startGiven}`);
  const merged = sizeOf(x.shape.slice(start, end + 1));
  return reshape(x, [...x.shape.slice(0, start), merged, ...x.shape.slice(end + 1)]);
}

/** Inserts a dim of size 1 at `axis` (in [-rank-1, rank]). */
export function expandDims(x: Tensor, axis: number): Tensor {
  assertTensor("expandDims", "x", x);
  const position = axisArg("expandDims", axis, x.rank + 1);
  return reshape(x, [...x.shape.slice(0, position), 1, ...x.shape.slice(position)]);
}

/** Removes dims of size 1 (the given axes, or all of them where axes is undefined or null). */
export function squeeze(x: Tensor, axes?: number | readonly number[] | null): Tensor {
  assertTensor("squeeze", "x", x);
  // A scalar's axes are those of [1], as torch's: squeezing them leaves it a scalar.
  if (x.rank === 0) {
    checkScalarAxes(axes, "squeeze");
    return reshape(x, []);
  }
  const list = axes === undefined || axes === null ? undefined : normalizeAxes(axes, x.rank, "squeeze");
  for (const a of list ?? []) {
    if (x.shape[a] !== 1) throw new ShapeError(`squeeze: axis ${a} has size ${x.shape[a]}, expected 1`);
  }
  return reshape(x, x.shape.filter((d, i) => (list === undefined ? d !== 1 : !list.includes(i))));
}

/** Permutes dims: out.shape[i] = x.shape[perm[i]]. Default (or null, as NumPy's axes=None): reverses them. */
export function transpose(x: Tensor, perm?: readonly number[] | null): Tensor {
  assertTensor("transpose", "x", x);
  if (perm !== undefined && perm !== null) assertArray("transpose", "perm", perm);
  const order = perm === undefined || perm === null ? x.shape.map((_, i) => x.rank - 1 - i) : Array.from(perm, (a) => axisArg("transpose", a, x.rank));
  if (order.length !== x.rank || new Set(order).size !== x.rank) {
    throw new ShapeError(`transpose: perm [${perm}] is not a permutation of ${x.rank} axes`);
  }
  if (order.every((a, i) => a === i)) return x.clone();
  // Axes of size 1 moved among the others, whose order stays: the same elements in the same order, a reshape (no
  // kernel), as [B, 1, H, D] -> [B, H, 1, D] when a model decodes one token.
  const kept = order.filter((a) => x.shape[a] !== 1);
  if (kept.every((a, i) => i === 0 || kept[i - 1] < a)) return reshape(x, order.map((a) => x.shape[a]));
  return engine.runKernel(Transpose, { x }, { perm: order });
}

/** Alias of transpose with an explicit permutation. */
export function permute(x: Tensor, perm: readonly number[]): Tensor {
  return transpose(x, perm);
}

/**
 * x[begin[i] : begin[i] + size[i]]; a size of -1 takes the rest of the dim; negative begins
 * count from the end. `begin`/`size` may be shorter than the rank (the rest is taken whole).
 */
export function slice(x: Tensor, begin: readonly number[], size?: readonly number[]): Tensor {
  assertTensor("slice", "x", x);
  // A number for begin would read as an empty list and take x whole.
  assertArray("slice", "begin", begin);
  if (size !== undefined) assertArray("slice", "size", size);
  if (begin.length > x.rank || (size && size.length > x.rank)) {
    throw new ShapeError(`slice: begin/size have more entries than x's rank ${x.rank}`);
  }
  const starts: number[] = [];
  const sizes: number[] = [];
  for (let i = 0; i < x.rank; i++) {
    const dim = x.shape[i];
    // By length, not ??: a hole or null within begin/size is refused, not read as the default.
    let start = i < begin.length ? begin[i] : 0;
    if (!Number.isInteger(start)) throw new IndexError(`slice: begin[${i}] must be an integer, got ${formatArg(start)}`);
    if (start < 0) start += dim;
    if (start < 0 || start > dim) throw new IndexError(`slice: begin[${i}] = ${begin[i]} is out of range for dim ${dim}`);
    let length = size && i < size.length ? size[i] : -1;
    if (length === -1) length = dim - start;
    if (!Number.isInteger(length) || length < 0) throw new IndexError(`slice: size[${i}] must be -1 or a non-negative integer, got ${formatArg(length)}`);
    if (start + length > dim) throw new IndexError(`slice: size[${i}] = ${length} from ${start} exceeds dim ${dim}`);
    starts.push(start);
    sizes.push(length);
  }
  if (shapesEqual(sizes, x.shape)) return x.clone();
  return engine.runKernel(Slice, { x }, { begin: starts, size: sizes });
}

/**
 * Cuts x along `axis` (default or null: 0) into consecutive parts: `sizes` gives each part's length (they sum to
 * x.shape[axis]), or a number of equal parts that divides it (tf.split's and torch.chunk's count: torch.split's number
 * is a part's length, so torch.split(x, 2) over 6 is split(x, 3) here). Each part is a new tensor. Its gradient is one
 * concatenation of the parts' gradients, where slicing the parts one by one would pad each gradient to x's size and
 * add them.
 */
export function split(x: Tensor, sizes: number | readonly number[], axis?: number | null): Tensor[] {
  assertTensor("split", "x", x);
  const ax = axisArg("split", axis ?? 0, x.rank);
  const dim = x.shape[ax];
  let parts: number[];
  if (typeof sizes === "number") {
    if (!Number.isInteger(sizes) || sizes < 1 || dim % sizes !== 0) {
      throw new ValueError(`split: ${sizes} equal parts do not divide dim ${ax} of x ${formatShape(x.shape)} (size ${dim})`);
    }
    parts = new Array<number>(sizes).fill(dim / sizes);
  } else {
    if (!Array.isArray(sizes) || sizes.length === 0) throw new ValueError("split: sizes must be a number of parts or a non-empty array of sizes");
    // An indexed loop: forEach skips a hole.
    for (let i = 0; i < sizes.length; i++) {
      if (!Number.isInteger(sizes[i]) || sizes[i] < 0) throw new ValueError(`split: sizes[${i}] must be a non-negative integer, got ${formatArg(sizes[i])}`);
    }
    const total = sizes.reduce((sum, size) => sum + size, 0);
    if (total !== dim) throw new ShapeError(`split: sizes [${sizes.join(", ")}] sum to ${total}, but dim ${ax} of x ${formatShape(x.shape)} is ${dim}`);
    parts = [...sizes];
  }
  if (parts.length === 1) return [x.clone()];
  return engine.runKernel(Split, { x }, { axis: ax, sizes: parts });
}

/** concat's and stack's tensors: a non-empty array of live tensors of one backend and dtype, checked under the op's own name. */
function checkJoined(op: string, tensors: readonly Tensor[]): Tensor {
  if (!Array.isArray(tensors as unknown) || tensors.length === 0) throw new ValueError(`${op}: expected a non-empty array of tensors`);
  tensors.forEach((t, i) => {
    assertTensor(op, `tensors[${i}]`, t);
  });
  const first = tensors[0];
  assertSameBackend(op, tensors.map((t, i) => [`tensors[${i}]`, t]));
  tensors.forEach((t, i) => {
    if (t.dtype !== first.dtype) throw new DTypeError(`${op}: tensors[${i}] has dtype ${t.dtype}, expected ${first.dtype}`);
  });
  return first;
}

/** Joins tensors along an existing axis (default or null: 0). */
export function concat(tensors: readonly Tensor[], axis?: number | null): Tensor {
  const first = checkJoined("concat", tensors);
  const ax = axisArg("concat", axis ?? 0, first.rank);
  tensors.forEach((t, i) => {
    if (t.rank !== first.rank || t.shape.some((d, j) => j !== ax && d !== first.shape[j])) {
      throw new ShapeError(
        `concat: tensors[${i}] has shape ${formatShape(t.shape)}, incompatible with ${formatShape(first.shape)} along axis ${ax}`,
      );
    }
  });
  if (tensors.length === 1) return first.clone();
  return engine.runKernel(Concat, { tensors: [...tensors] }, { axis: ax });
}

/** Joins same-shape tensors along a new axis (default or null: 0). */
export function stack(tensors: readonly Tensor[], axis?: number | null): Tensor {
  const first = checkJoined("stack", tensors);
  tensors.forEach((t, i) => {
    if (!shapesEqual(t.shape, first.shape)) {
      throw new ShapeError(`stack: tensors[${i}] has shape ${formatShape(t.shape)}, expected ${formatShape(first.shape)}`);
    }
  });
  const ax = axisArg("stack", axis ?? 0, first.rank + 1);
  return engine.tidy(() => concat(tensors.map((t) => expandDims(t, ax)), ax));
}

/** x broadcast to `shape` (NumPy rules). */
export function broadcastTo(x: Tensor, shape: readonly number[]): Tensor {
  assertTensor("broadcastTo", "x", x);
  assertShapeArg("broadcastTo", "shape", shape);
  const out = broadcastShapes(x.shape, shape, "broadcastTo");
  if (!shapesEqual(out, shape)) throw new ShapeError(`broadcastTo: cannot broadcast ${formatShape(x.shape)} to ${formatShape(shape)}`);
  if (shapesEqual(x.shape, shape)) return x.clone();
  return engine.runKernel(BroadcastTo, { x }, { shape: [...shape] });
}

/**
 * Rows of x picked by int32 `indices` along `axis` (default or null: 0, an embedding lookup). An index outside [0, x.shape[axis])
 * throws IndexError: at once on host backends (js, cpu); at the next read or synchronize on device backends, which
 * read zeros for it meanwhile.
 */
export function gather(x: Tensor, indices: Tensor, axis?: number | null): Tensor {
  assertTensor("gather", "x", x);
  assertTensor("gather", "indices", indices);
  assertDType("gather", "indices", indices, "int32");
  assertSameBackend("gather", [["x", x], ["indices", indices]]);
  if (x.rank === 0) throw new ShapeError("gather: x must have rank >= 1, got a scalar");
  const ax = axisArg("gather", axis ?? 0, x.rank);
  return engine.runKernel(Gather, { x, indices }, { axis: ax });
}

/**
 * The adjoint of gather: zeros of `shape` with `updates` added at `indices` along `axis` (default or null: 0;
 * repeated indices accumulate). updates.shape = shape[:axis] + indices.shape + shape[axis+1:].
 */
export function scatterAdd(indices: Tensor, updates: Tensor, shape: readonly number[], axis?: number | null): Tensor {
  assertTensor("scatterAdd", "indices", indices);
  assertTensor("scatterAdd", "updates", updates);
  assertDType("scatterAdd", "indices", indices, "int32");
  assertSameBackend("scatterAdd", [["indices", indices], ["updates", updates]]);
  assertShapeArg("scatterAdd", "shape", shape);
  if (shape.length === 0) throw new ShapeError("scatterAdd: shape must have rank >= 1");
  const ax = axisArg("scatterAdd", axis ?? 0, shape.length);
  const expected = [...shape.slice(0, ax), ...indices.shape, ...shape.slice(ax + 1)];
  if (!shapesEqual(updates.shape, expected)) {
    throw new ShapeError(`scatterAdd: updates has shape ${formatShape(updates.shape)}, expected ${formatShape(expected)}`);
  }
  return engine.runKernel(ScatterAdd, { indices, updates }, { axis: ax, shape: [...shape] });
}

/**
 * Writes `source` into `target` along `axis` (default or null: 0) at the positions `indices` names, in place (PyTorch's `index_copy_`):
 * target[..., indices[j], ...] = source[..., j, ...]. `indices` is int32 [n]; source.shape is target.shape with n at
 * `axis`; same dtype and backend. A key/value cache of fixed length takes each step's new positions this way, and a
 * captured graph (captureGraph) records the write, its positions read from the device on every replay.
 *
 * The write lands in target's own buffer when no other tensor shares it; otherwise target gets a new buffer (as
 * `assign`), so tensors sharing the old one keep their values. Autograd records it as PyTorch's `index_copy_`: target
 * then carries the write's history (source's rows at the indices, its own other rows); writing into a leaf that
 * requires grad throws AutogradError (after the write). A cache written under `noGrad` is not recorded. An index
 * outside [0, target.shape[axis]) throws IndexError before anything is written on host backends (js, cpu); device
 * backends skip it and throw the IndexError at the next read or synchronize. With repeated indices one of the writes
 * lands (the last on host backends), and only that source row gets the row's gradient.
 */
export function indexCopy(target: Tensor, indices: Tensor, source: Tensor, axis?: number | null): void {
  assertTensor("indexCopy", "target", target);
  assertTensor("indexCopy", "indices", indices);
  assertTensor("indexCopy", "source", source);
  assertDType("indexCopy", "indices", indices, "int32");
  assertRank("indexCopy", "indices", indices, 1);
  assertSameDType("indexCopy", ["source", "target"], source, target);
  assertSameBackend("indexCopy", [["target", target], ["indices", indices], ["source", source]]);
  if (target.rank === 0) throw new ShapeError("indexCopy: target must have rank >= 1, got a scalar");
  const ax = axisArg("indexCopy", axis ?? 0, target.rank);
  const expected = [...target.shape.slice(0, ax), indices.shape[0], ...target.shape.slice(ax + 1)];
  if (!shapesEqual(source.shape, expected)) {
    throw new ShapeError(`indexCopy: source has shape ${formatShape(source.shape)}, expected ${formatShape(expected)} (target ${formatShape(target.shape)} with ${indices.shape[0]} indices along axis ${ax})`);
  }
  if (engine.canWriteInPlace([target], [indices, source])) engine.runKernel(IndexCopy, { target, indices, source }, { axis: ax, inPlace: true });
  else engine.writeThroughNewBuffers(IndexCopy, { target, indices, source }, { axis: ax });
}

/**
 * x converted to `dtype`: halves round to nearest even; float -> int32 truncates toward zero and wraps modulo 2^32 past
 * int32's range, with NaN and infinities giving 0 (JavaScript's ToInt32, on every backend: 3e9 -> -1294967296), where
 * PyTorch leaves such casts undefined; int32 -> a half dtype rounds through float32, as PyTorch's.
 */
export function cast(x: Tensor, dtype: DType): Tensor {
  assertTensor("cast", "x", x);
  if (!isDType(dtype)) throw new DTypeError(`cast: unknown dtype ${formatArg(dtype)}`);
  if (x.dtype === dtype) return x.clone();
  return engine.runKernel(Cast, { x }, { dtype });
}

/** [...indices.shape, depth]: 1 at each index, 0 elsewhere (zeros for an index outside [0, depth)). */
export function oneHot(indices: Tensor, depth: number, dtype: DType = "float32"): Tensor {
  assertTensor("oneHot", "indices", indices);
  assertDType("oneHot", "indices", indices, "int32");
  assertPositiveInt("oneHot", "depth", depth);
  if (!isDType(dtype)) throw new DTypeError(`oneHot: unknown dtype ${formatArg(dtype)}`);
  return engine.runKernel(OneHot, { indices }, { depth, dtype });
}
