/** Argument checks shared by ops: each throws a typed error naming the op and the argument. */
import type { DType } from "../dtypes";
import type { Activation } from "../kernel_names";
import { BackendError, DTypeError, ShapeError, ValueError } from "../errors";
import { formatShape, isValidShape, normalizeAxis, shapesEqual, sizeOf } from "../shape";
import { Tensor } from "../tensor";

export function assertTensor(op: string, name: string, value: unknown): asserts value is Tensor {
  if (!(value instanceof Tensor)) throw new ValueError(`${op}: ${name} must be a Tensor, got ${kindOf(value)}`);
  value.throwIfDisposed(`${op}: ${name}`);
}

/** All given tensors live on one backend (undefined entries are skipped). */
export function assertSameBackend(op: string, entries: [string, Tensor | undefined][]): void {
  let first: [string, Tensor] | undefined;
  for (const [name, t] of entries) {
    if (t === undefined) continue;
    if (first === undefined) first = [name, t];
    else if (t.backend !== first[1].backend) {
      throw new BackendError(
        `${op}: ${name} is on backend '${t.backend.name}' but ${first[0]} is on '${first[1].backend.name}'; move one with tensor.to(name)`,
      );
    }
  }
}

/**
 * A backend argument must be a Backend object (or undefined: the active one): a name ("js"), null or another object (a
 * tensor given for its backend) failed inside the engine with a TypeError ("backend.allocate is not a function").
 */
export function assertBackendArg(op: string, backend: unknown): void {
  if (backend === undefined) return;
  const candidate = backend as { allocate?: unknown; kernels?: unknown } | null;
  if (candidate === null || typeof candidate !== "object" || typeof candidate.allocate !== "function" || typeof candidate.kernels !== "object" || candidate.kernels === null) {
    const hint = backend instanceof Tensor ? " (a tensor's backend is tensor.backend)" : "";
    throw new ValueError(`${op}: backend must be a Backend object (getBackendInstance(name) returns one), got ${formatArg(backend)}${hint}`);
  }
}

export function assertFloat(op: string, name: string, t: Tensor): void {
  if (t.dtype === "int32") throw new DTypeError(`${op}: ${name} has dtype int32, expected a float dtype (float32, float16, bfloat16)`);
}

export function assertDType(op: string, name: string, t: Tensor, dtype: DType): void {
  if (t.dtype !== dtype) throw new DTypeError(`${op}: ${name} has dtype ${t.dtype}, expected ${dtype}`);
}

export function assertSameDType(op: string, names: [string, string], a: Tensor, b: Tensor): void {
  if (a.dtype !== b.dtype) {
    throw new DTypeError(`${op}: ${names[0]} has dtype ${a.dtype} but ${names[1]} has ${b.dtype}; cast one first`);
  }
}

export function assertRank(op: string, name: string, t: Tensor, rank: number): void {
  if (t.rank !== rank) throw new ShapeError(`${op}: ${name} must have rank ${rank}, got shape ${formatShape(t.shape)}`);
}

export function assertMinRank(op: string, name: string, t: Tensor, rank: number): void {
  if (t.rank < rank) throw new ShapeError(`${op}: ${name} must have rank >= ${rank}, got shape ${formatShape(t.shape)}`);
}

export function assertShape(op: string, name: string, t: Tensor, shape: readonly number[]): void {
  if (!shapesEqual(t.shape, shape)) {
    throw new ShapeError(`${op}: ${name} has shape ${formatShape(t.shape)}, expected ${formatShape(shape)}`);
  }
}

export function assertArray(op: string, name: string, value: unknown): asserts value is readonly unknown[] {
  if (!Array.isArray(value)) throw new ValueError(`${op}: ${name} must be an array, got ${kindOf(value)}`);
}

/**
 * What a value is, for a message: "null", "an array", "a Tensor", a built-in object by its tag ("a Float32Array", "an
 * ArrayBuffer", "a Map": anything but a plain object, from any realm) or its typeof ("object" for a plain one).
 */
export function kindOf(value: unknown): string {
  const tag = value instanceof Tensor ? "Tensor" : {}.toString.call(value).slice(8, -1);
  return value === null ? "null" : Array.isArray(value) ? "an array" : typeof value !== "object" || tag === "Object" ? typeof value : `a${"AEIO".includes(tag[0]) ? "n" : ""} ${tag}`;
}

/** A value a caller passed, for a message: a primitive as written, strings quoted ("0.5", not 0.5), an object by its kind. */
export function formatArg(value: unknown): string {
  return typeof value === "string" ? JSON.stringify(value) : Object(value) === value ? kindOf(value) : String(value);
}

/** A flag must be a boolean, as torch's: a truthy non-boolean ("no", 1, an object) would silently turn it on. */
export function assertBoolean(op: string, name: string, value: unknown): asserts value is boolean {
  if (typeof value !== "boolean") throw new ValueError(`${op}: ${name} must be a boolean, got ${formatArg(value)}`);
}

export function assertShapeArg(op: string, name: string, shape: readonly number[]): void {
  if (!isValidShape(shape)) {
    throw new ShapeError(`${op}: ${name} must be an array of non-negative integers, got ${Array.isArray(shape) ? `[${Array.from(shape, formatArg).join(", ")}]` : formatArg(shape)}`);
  }
  // The message is built only on failure: shapes are checked on every op call.
  const size = sizeOf(shape);
  if (!(size <= Number.MAX_SAFE_INTEGER)) assertSafeSize(op, `${name} ${formatShape(shape)}`, size);
}

/** An element count a double holds exactly: past 2^53 - 1 sizes and offsets would round silently. */
export function assertSafeSize(op: string, what: string, size: number): void {
  if (!(size <= Number.MAX_SAFE_INTEGER)) throw new ShapeError(`${op}: ${what} has ${size} elements, over 2^53 - 1`);
}

// Read, never written: ops only destructure their options.
const NO_OPTIONS = {};

/**
 * An optional options argument: undefined and null mean none (one shared empty object, nothing allocated); anything
 * else must be an object whose keys are all `names`: an unknown key (torch's label_smoothing, a typo) is refused, not
 * ignored, as TypeScript would refuse it. Own enumerable keys only, against `names`: inherited ones (toString, a
 * method of the receiver) are never options. Exported for the packages above core that take options the same way.
 */
export function optionsArg<T extends object>(op: string, options: T | null | undefined, names: readonly (keyof T & string)[]): T {
  if (options == null) return NO_OPTIONS as T;
  // A Tensor or an array would otherwise be refused for its fields or indices as unknown options, an empty Map or a Date accepted.
  const kind = kindOf(options);
  if (kind !== "object") throw new ValueError(`${op}: options must be an object or null, got ${kind}`);
  const unknown = Object.keys(options).filter((key) => !names.includes(key as keyof T & string));
  if (unknown.length > 0) {
    throw new ValueError(`${op}: unknown option${unknown.length > 1 ? "s" : ""} ${unknown.map((key) => `'${key}'`).join(", ")}; the options are ${names.join(", ")}`);
  }
  return options;
}

/** `value` as a seed, named in the error as `${where}: ${name}`: format's SeededRandom throws a RangeError naming neither. */
export function seedArg(where: string, name: string, value: unknown): number {
  if (!Number.isSafeInteger(value)) {
    throw new ValueError(`${where}: ${name} must be a safe integer (|seed| <= 2^53 - 1), got ${formatArg(value)}`);
  }
  return value as number;
}

/** True for an integer an int32 element holds exactly (what stores as int32 without wrapping). */
export function isInt32(value: number): boolean {
  return Number.isInteger(value) && value >= -2147483648 && value <= 2147483647;
}

export function assertFiniteNumber(op: string, name: string, value: number): void {
  if (typeof value !== "number" || !Number.isFinite(value)) throw new ValueError(`${op}: ${name} must be a finite number, got ${formatArg(value)}`);
}

export function assertPositiveInt(op: string, name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) throw new ValueError(`${op}: ${name} must be a positive integer, got ${formatArg(value)}`);
}

export function axisArg(op: string, axis: number, rank: number): number {
  return normalizeAxis(axis, rank, op);
}

const ACTIVATIONS: readonly Activation[] = ["relu", "gelu", "gelu_tanh"];

/** Throws ValueError unless `activation` is one the fused bias + activation kernels know. */
export function assertActivation(op: string, activation: Activation): void {
  if (!ACTIVATIONS.includes(activation)) {
    throw new ValueError(`${op}: activation must be one of ${ACTIVATIONS.map((a) => JSON.stringify(a)).join(", ")}, got ${formatArg(activation)}`);
  }
}
