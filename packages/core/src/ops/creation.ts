import { SeededRandom } from "@blocksparse/format";
import type { Backend } from "../backend";
import { type BackendValues, type DType, allocationError, isDType } from "../dtypes";
import { engine } from "../engine";
import { DTypeError, ShapeError, ValueError } from "../errors";
import { float32ArrayToBfloat16Bits, float32ArrayToFloat16Bits } from "../half";
import { Fill } from "../kernel_names";
import { formatShape, shapesEqual, sizeOf } from "../shape";
import type { Tensor } from "../tensor";
import { assertBackendArg, assertFiniteNumber, assertSafeSize, assertShapeArg, assertTensor, formatArg, isInt32, kindOf, optionsArg, seedArg } from "./validate";

/** Nested arrays of numbers, any depth. */
export type NestedArray = number | NestedArray[];

/** Values `tensor()` accepts: a number, nested arrays, or a typed array. */
export type TensorData = NestedArray | Float32Array | Float64Array | Int32Array | Uint16Array | Uint8Array | Int8Array;

function checkDType(op: string, dtype: DType): void {
  if (!isDType(dtype)) throw new DTypeError(`${op}: unknown dtype ${formatArg(dtype)} (float32, float16, bfloat16, int32)`);
}

function inferShape(data: NestedArray): number[] {
  const shape: number[] = [];
  let level: NestedArray = data;
  while (Array.isArray(level)) {
    shape.push(level.length);
    if (level.length === 0) break;
    level = level[0];
  }
  return shape;
}

/** An entry that is not a number, for a message: a BigInt with its n (formatArg writes 1n as 1), a boolean as such. */
function describeEntry(value: unknown): string {
  if (typeof value === "bigint") return `${value}n (a BigInt; convert it with Number())`;
  if (typeof value === "boolean") return `${value} (a boolean; there is no bool dtype, give 1 or 0)`;
  return value === undefined ? "undefined (a hole or a missing entry)" : formatArg(value);
}

/**
 * The numbers of nested arrays of `shape`, in row-major order. `path` is where `data` sits ([1][0]), for messages:
 * they named neither the entry nor what it held ("ragged or hold a non-number" for a boolean, a BigInt or a hole).
 */
function flatten(op: string, data: NestedArray, shape: number[], depth: number, out: number[], path = ""): void {
  if (depth === shape.length) {
    if (typeof data === "number") out.push(data);
    else if (Array.isArray(data)) throw new ShapeError(`${op}: nested arrays are ragged: data${path} is an array, but data${"[0]".repeat(depth)} is a number`);
    else throw new ValueError(`${op}: data${path} must be a number, got ${describeEntry(data)}`);
    return;
  }
  if (!Array.isArray(data)) {
    throw new ShapeError(`${op}: nested arrays are ragged: data${path} is ${describeEntry(data)} where an array of ${shape[depth]} entries was expected`);
  }
  if (data.length !== shape[depth]) {
    throw new ShapeError(`${op}: nested arrays are ragged: data${path} has ${data.length} entries, expected ${shape[depth]} (as data${"[0]".repeat(depth)})`);
  }
  // An indexed loop: for-of reads a hole as undefined, named above as such.
  for (let i = 0; i < data.length; i++) flatten(op, data[i], shape, depth + 1, out, `${path}[${i}]`);
}

/** Numbers stored as `dtype` (f16/bf16 rounded to nearest even; int32 must be integers). */
export function encodeStorage(op: string, values: ArrayLike<number>, dtype: DType): BackendValues {
  switch (dtype) {
    case "float32":
      return Float32Array.from(values);
    case "float16":
      return float32ArrayToFloat16Bits(values);
    case "bfloat16":
      return float32ArrayToBfloat16Bits(values);
    case "int32": {
      const out = new Int32Array(values.length);
      for (let i = 0; i < values.length; i++) {
        const v = values[i];
        if (!isInt32(v)) {
          throw new ValueError(`${op}: value ${v} at index ${i} is not a 32-bit integer`);
        }
        out[i] = v;
      }
      return out;
    }
  }
}

/**
 * A tensor from values: nested arrays (shape inferred; a `shape` given must equal it), or a flat array / typed array
 * with `shape` of its size. dtype defaults to int32 for an Int32Array, float32 otherwise. With a half dtype,
 * a Uint16Array is taken as raw bits; every other input is taken as numbers and rounded.
 */
export function tensor(data: TensorData, shape?: readonly number[], dtype?: DType): Tensor {
  const op = "tensor";
  const type: DType = dtype ?? (data instanceof Int32Array ? "int32" : "float32");
  checkDType(op, type);
  let flat: ArrayLike<number>;
  let inferred: number[];
  if (typeof data === "number") {
    flat = [data];
    inferred = [];
  } else if (Array.isArray(data)) {
    inferred = inferShape(data);
    const out: number[] = [];
    flatten(op, data, inferred, 0, out);
    flat = out;
  } else if (ArrayBuffer.isView(data) && !(data instanceof DataView || data instanceof BigInt64Array || data instanceof BigUint64Array)) {
    flat = data;
    inferred = [data.length];
  } else {
    throw new ValueError(`${op}: data must be a number, nested arrays or a typed array of numbers, got ${typeof data === "bigint" || typeof data === "boolean" ? describeEntry(data) : (data?.constructor?.name ?? String(data))}`);
  }
  // Not spread: a shape that is not an array is named by the check below, not a TypeError.
  const finalShape = shape === undefined ? inferred : shape;
  assertShapeArg(op, "shape", finalShape);
  // As tfjs: a flat array takes any shape of its size, nested arrays only their own ([[1, 2], [3, 4]] with [4] was
  // silently flattened).
  if (Array.isArray(data) && inferred.length > 1 && !shapesEqual(inferred, finalShape)) {
    throw new ShapeError(`${op}: nested arrays of shape ${formatShape(inferred)} do not match the given shape ${formatShape(finalShape)}; give flat values to fill another shape, or reshape`);
  }
  if (sizeOf(finalShape) !== flat.length) {
    throw new ShapeError(`${op}: ${flat.length} values do not fill shape ${formatShape(finalShape)}`);
  }
  const rawHalf = data instanceof Uint16Array && (type === "float16" || type === "bfloat16");
  const storage = rawHalf ? Uint16Array.from(data) : encodeStorage(op, flat, type);
  return engine.upload(storage, finalShape, type);
}

/** A tensor wrapping storage already in the dtype's layout (Uint16Array bits for halves). */
export function fromStorage(values: BackendValues, shape: readonly number[], dtype: DType): Tensor {
  checkDType("fromStorage", dtype);
  assertShapeArg("fromStorage", "shape", shape);
  return engine.upload(values, shape, dtype, undefined, "fromStorage");
}

/** A rank-0 tensor. */
export function scalar(value: number, dtype: DType = "float32"): Tensor {
  return tensor(value, [], dtype);
}

function fill(op: string, backend: Backend, shape: readonly number[], value: number, dtype: DType): Tensor {
  assertBackendArg(op, backend);
  assertShapeArg(op, "shape", shape);
  checkDType(op, dtype);
  if (typeof value !== "number") throw new ValueError(`${op}: value must be a number, got ${typeof value}`);
  if (dtype === "int32" && !Number.isInteger(value)) throw new ValueError(`${op}: value ${value} is not an integer (dtype int32)`);
  // An int32 buffer would wrap a value past its range (3e9 -> -1294967296).
  if (dtype === "int32" && !isInt32(value)) throw new ValueError(`${op}: value ${value} is outside int32's range [-2^31, 2^31 - 1]`);
  return engine.runKernel(Fill, {}, { shape: [...shape], dtype, value }, backend);
}

/**
 * Refuses a finite value past the dtype's largest finite one: it was stored as Infinity. Rounded to float32 as the
 * kernels round halves (65519.99999 becomes 65520: Infinity in float16); a non-number goes on to the op's own check.
 */
function checkInRange(op: string, value: number, dtype: DType): void {
  const bits = dtype === "bfloat16" ? 8 : dtype === "float16" ? 11 : 24;
  if (Number.isFinite(value) && Math.abs(Math.fround(value)) >= (2 - 2 ** -bits) * 2 ** (dtype === "float16" ? 15 : 127)) throw new ValueError(`${op}: value ${value} is outside ${dtype}'s range`);
}

/** A tensor of `shape` filled with `value` (a finite value past the dtype's range is refused, as torch.full does). */
export function full(shape: readonly number[], value: number, dtype: DType = "float32"): Tensor {
  // fullOn keeps IEEE rounding: the scalar operands of ops go through it, as torch's do.
  checkInRange("full", value, dtype);
  return fill("full", engine.activeBackend(), shape, value, dtype);
}

/**
 * `full` on `backend` whatever the active backend (the Fill kernel runs there): how code that
 * follows its inputs' backend (gradients, optimizer state) makes a filled tensor.
 */
export function fullOn(backend: Backend, shape: readonly number[], value: number, dtype: DType = "float32"): Tensor {
  return fill("fullOn", backend, shape, value, dtype);
}

/**
 * A tensor of `shape` from host numbers on `backend` whatever the active backend, stored as
 * `dtype` (halves rounded to nearest even, int32 checked to be integers).
 */
export function tensorOn(backend: Backend, values: ArrayLike<number>, shape: readonly number[], dtype: DType = "float32"): Tensor {
  assertBackendArg("tensorOn", backend);
  // A string was read as its characters (NaNs), a number as no values, an array's strings or nulls as numbers.
  if (Array.isArray(values)) {
    for (let i = 0; i < values.length; i++) {
      if (typeof values[i] !== "number") throw new ValueError(`tensorOn: values[${i}] must be a number, got ${formatArg(values[i])}`);
    }
  } else if (!ArrayBuffer.isView(values) || values instanceof DataView || values instanceof BigInt64Array || values instanceof BigUint64Array) {
    throw new ValueError(`tensorOn: values must be an array or a typed array of numbers, got ${kindOf(values)}`);
  }
  assertShapeArg("tensorOn", "shape", shape);
  checkDType("tensorOn", dtype);
  return engine.upload(encodeStorage("tensorOn", values, dtype), shape, dtype, backend, "tensorOn");
}

export function zeros(shape: readonly number[], dtype: DType = "float32"): Tensor {
  return full(shape, 0, dtype);
}

export function ones(shape: readonly number[], dtype: DType = "float32"): Tensor {
  return full(shape, 1, dtype);
}

/** Zeros of t's shape and dtype on t's backend (as torch.zeros_like keeps the device). */
export function zerosLike(t: Tensor): Tensor {
  // A disposed t gave zeros as if it were live; null, a TypeError.
  assertTensor("zerosLike", "t", t);
  return fullOn(t.backend, t.shape, 0, t.dtype);
}

/** Ones of t's shape and dtype on t's backend. */
export function onesLike(t: Tensor): Tensor {
  assertTensor("onesLike", "t", t);
  return fullOn(t.backend, t.shape, 1, t.dtype);
}

/**
 * [start, start + step, ...) below `stop` (or above it for a negative step); as int32, each value must be a 32-bit
 * integer, as a float dtype each within its finite range (as torch.arange's). A step that moves away from `stop`
 * (arange(5, 0), arange(0, 5, -1)) is a ValueError, as torch.arange's; start == stop gives an empty tensor.
 */
export function arange(start: number, stop?: number, step = 1, dtype: DType = "float32"): Tensor {
  if (stop === undefined) {
    stop = start;
    start = 0;
  }
  assertFiniteNumber("arange", "start", start);
  assertFiniteNumber("arange", "stop", stop);
  assertFiniteNumber("arange", "step", step);
  if (step === 0) throw new ValueError("arange: step must not be 0");
  // It gave an empty tensor, hiding a swapped start and stop.
  if (Math.sign(stop - start) * Math.sign(step) < 0) {
    throw new ValueError(`arange: step ${step} moves away from stop ${stop} (start ${start}); use a ${step > 0 ? "negative" : "positive"} step to count ${step > 0 ? "down" : "up"}`);
  }
  checkDType("arange", dtype);
  // max: start == stop with a negative step gives -0, stored as 0.
  const count = Math.max(0, Math.ceil((stop - start) / step));
  assertSafeSize("arange", `[${start}, ${stop})`, count);
  // The values run one way: the first and last are the extremes (arange(65000, 70000, 1000) in float16 stored 66000 on as Infinity).
  if (count > 0) for (const value of [start, start + (count - 1) * step]) checkInRange("arange", value, dtype);
  const values = hostArray("arange", count, dtype, Float64Array);
  for (let i = 0; i < count; i++) values[i] = start + i * step;
  return engine.upload(encodeStorage("arange", values, dtype), [count], dtype);
}

let globalRandom = new SeededRandom(Math.floor(Math.random() * 2 ** 32));

/** Reseeds the generator that random ops use when given no seed. */
export function manualSeed(seed: number): void {
  globalRandom = new SeededRandom(seedArg("manualSeed", "seed", seed));
}

export interface RandomOptions {
  /** Seed for this call alone; without it, the global generator (see manualSeed) is used. */
  seed?: number;
  dtype?: DType;
}

function generator(op: string, seed: number | undefined): SeededRandom {
  return seed === undefined ? globalRandom : new SeededRandom(seedArg(op, "seed", seed));
}

/** The host array of `count` values an op makes before uploading them as `dtype`. */
function hostArray<T>(op: string, count: number, dtype: DType, Type: new (count: number) => T): T {
  try {
    return new Type(count);
  } catch (error) {
    throw allocationError(error, `${op}: cannot allocate ${count} ${dtype} values on the host`);
  }
}

function randomFloat(op: string, shape: readonly number[], dtype: DType, fill: (out: Float64Array) => void): Tensor {
  assertShapeArg(op, "shape", shape);
  checkDType(op, dtype);
  if (dtype === "int32") throw new DTypeError(`${op}: dtype int32 is not a float dtype; use randint`);
  const values = hostArray(op, sizeOf(shape), dtype, Float64Array);
  fill(values);
  return engine.upload(encodeStorage(op, values, dtype), shape, dtype);
}

/**
 * Normal deviates (mean 0, std 1 unless given: finite, std >= 0), generated on the host by a seeded
 * generator: the same seed gives the same numbers on every backend.
 */
export function randn(shape: readonly number[], options?: (RandomOptions & { mean?: number; std?: number }) | null): Tensor {
  const { mean = 0, std = 1, dtype = "float32", seed } = optionsArg("randn", options, ["mean", "std", "dtype", "seed"]);
  assertFiniteNumber("randn", "mean", mean);
  assertFiniteNumber("randn", "std", std);
  if (std < 0) throw new ValueError(`randn: std must be >= 0, got ${std}`);
  const random = generator("randn", seed);
  return randomFloat("randn", shape, dtype, (out) => random.fillNormal(out, mean, std));
}

/**
 * Uniform deviates in [low, high) (default [0, 1)), seeded like randn; finite bounds, low <= high (low == high: all low).
 * Each is low + (high - low) u with u at most the dtype's largest value below 1 (as PyTorch's): one rounding up to 1
 * would store `high` itself. [0, b) and [-b, 0) never give their excluded bound; bounds off zero that are close next to
 * their size ([1, 2) in bfloat16) can still round to `high`, as in PyTorch.
 */
export function rand(shape: readonly number[], options?: (RandomOptions & { low?: number; high?: number }) | null): Tensor {
  const { low = 0, high = 1, dtype = "float32", seed } = optionsArg("rand", options, ["low", "high", "dtype", "seed"]);
  assertFiniteNumber("rand", "low", low);
  assertFiniteNumber("rand", "high", high);
  if (low > high) throw new ValueError(`rand: low ${low} is above high ${high}`);
  const random = generator("rand", seed);
  // Unclamped, a bfloat16 draw of [0, 1) was 1 once in 512 (float16: 4096, float32: 2^25).
  const top = 1 - 2 ** -(dtype === "bfloat16" ? 8 : dtype === "float16" ? 11 : 24);
  // The dtype's largest value is top 2^16 (float16) or top 2^128: past it, as torch's uniform_ refuses, draws store as Infinity.
  if (Math.max(-low, high) > top * 2 ** (dtype === "float16" ? 16 : 128)) throw new ValueError(`rand: [${low}, ${high}) is outside ${dtype}'s range`);
  return randomFloat("rand", shape, dtype, (out) => {
    for (let i = 0; i < out.length; i++) out[i] = low + (high - low) * Math.min(random.next(), top);
  });
}

/** Uniform integers in [low, high) as int32, seeded like randn. */
export function randint(low: number, high: number, shape: readonly number[], options?: { seed?: number } | null): Tensor {
  assertShapeArg("randint", "shape", shape);
  if (!Number.isInteger(low) || !Number.isInteger(high) || high <= low) {
    throw new ValueError(`randint: expected integers low < high, got [${formatArg(low)}, ${formatArg(high)})`);
  }
  // Every value drawn must fit int32: past it the store would wrap (randint(0, 2 ** 32) gave negatives).
  if (low < -(2 ** 31) || high > 2 ** 31) {
    throw new ValueError(`randint: [${low}, ${high}) does not fit int32; low must be >= -2^31 and high <= 2^31`);
  }
  const random = generator("randint", optionsArg("randint", options, ["seed"]).seed);
  const out = hostArray("randint", sizeOf(shape), "int32", Int32Array);
  for (let i = 0; i < out.length; i++) out[i] = low + random.nextInt(high - low);
  return engine.upload(out, shape, "int32");
}
