import { OutOfMemoryError } from "./errors";

/** Element types a tensor can hold. Half types are stored as raw 16-bit patterns. */
export type DType = "float32" | "float16" | "bfloat16" | "int32";

/** Floating-point element types (everything but int32). */
export type FloatDType = Exclude<DType, "int32">;

export const DTYPES: readonly DType[] = ["float32", "float16", "bfloat16", "int32"];
export const FLOAT_DTYPES: readonly FloatDType[] = ["float32", "float16", "bfloat16"];

/** The typed array a backend reads and writes for each dtype. */
export interface StorageTypes {
  float32: Float32Array;
  float16: Uint16Array;
  bfloat16: Uint16Array;
  int32: Int32Array;
}

/** Raw storage of any dtype: float32 -> Float32Array, f16/bf16 -> Uint16Array bits, int32 -> Int32Array. */
export type BackendValues = Float32Array | Uint16Array | Int32Array;

/** What `Tensor.data()` returns: half types are widened to Float32Array. */
export type TensorValues = Float32Array | Int32Array;

/**
 * What a poisoned allocation holds (see Backend.poisonAllocations), as the bits of one element:
 * a quiet NaN for each float dtype, int32's largest value.
 */
export const POISON_BITS: Readonly<Record<DType, number>> = {
  float32: 0x7fc00000,
  float16: 0x7e00,
  bfloat16: 0x7fc0,
  int32: 0x7fffffff,
};

export function isDType(value: unknown): value is DType {
  return typeof value === "string" && (DTYPES as readonly string[]).includes(value);
}

export function isFloatDType(dtype: DType): dtype is FloatDType {
  return dtype !== "int32";
}

export function bytesPerElement(dtype: DType): number {
  return dtype === "float16" || dtype === "bfloat16" ? 2 : 4;
}

/** A zeroed storage array of `size` elements for `dtype`. */
export function allocStorage<D extends DType>(dtype: D, size: number): StorageTypes[D];
export function allocStorage(dtype: DType, size: number): BackendValues {
  switch (dtype) {
    case "float32":
      return new Float32Array(size);
    case "int32":
      return new Int32Array(size);
    default:
      return new Uint16Array(size);
  }
}

/**
 * What to throw for an error caught while allocating a typed array: the engine's bare RangeError (a length past its
 * limit, or no memory) becomes an OutOfMemoryError saying `what` was being allocated; other errors pass through.
 */
export function allocationError(error: unknown, what: string): unknown {
  return error instanceof RangeError ? new OutOfMemoryError(`${what}: out of memory (${error.message})`) : error;
}

/** True when `values` is the storage array type of `dtype`. */
export function isStorageOf(dtype: DType, values: BackendValues): boolean {
  switch (dtype) {
    case "float32":
      return values instanceof Float32Array;
    case "int32":
      return values instanceof Int32Array;
    default:
      return values instanceof Uint16Array;
  }
}
