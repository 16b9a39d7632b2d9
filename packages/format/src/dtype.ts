import { BsrFormatError, quoted } from "./errors.js";

/** Element types of block values. 16-bit types keep their raw bits in a Uint16Array. */
export type BsrDType = "float32" | "float16" | "bfloat16";
export type BsrValues = Float32Array | Uint16Array;

export const BSR_DTYPES: readonly BsrDType[] = ["float32", "float16", "bfloat16"];

export function isBsrDType(value: unknown): value is BsrDType {
  return value === "float32" || value === "float16" || value === "bfloat16";
}

/** Refuses anything but a BsrDType, naming what it got. */
export function checkDType(dtype: unknown): asserts dtype is BsrDType {
  if (!isBsrDType(dtype)) throw new BsrFormatError("dtype", `expected "float32", "float16" or "bfloat16", got ${String(dtype)}`);
}

// One float32 slot viewed as its bits: both views share the platform's byte order.
const scratchFloat = new Float32Array(1);
const scratchBits = new Uint32Array(scratchFloat.buffer);

function float32Bits(value: number): number {
  scratchFloat[0] = value;
  return scratchBits[0];
}

function float32FromBits(bits: number): number {
  scratchBits[0] = bits >>> 0;
  return scratchFloat[0];
}

/**
 * IEEE binary16 bits of a float32 value, rounded to nearest, ties to even. Values past
 * the largest half (65504) round to infinity, tiny ones to subnormals or signed zero,
 * NaN stays a (quiet) NaN. A JavaScript number is first rounded to float32.
 */
export function float32ToFloat16Bits(value: number): number {
  return float16FromFloat32Bits(float32Bits(value));
}

/** float32ToFloat16Bits on the float32's bits. */
function float16FromFloat32Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return mantissa === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mantissa >>> 13);
  const unbiased = exponent - 127;
  if (unbiased > 15) return sign | 0x7c00;
  if (unbiased >= -14) {
    const half = ((unbiased + 15) << 10) | (mantissa >>> 13);
    const rest = mantissa & 0x1fff;
    // A carry out of the mantissa bumps the exponent, up to infinity: both are right.
    const roundUp = rest > 0x1000 || (rest === 0x1000 && (half & 1) === 1);
    return sign | (half + (roundUp ? 1 : 0));
  }
  if (unbiased < -25) return sign;
  // Subnormal half: value = significand * 2^(unbiased - 23) = half * 2^-24.
  const significand = mantissa | 0x800000;
  const shift = -unbiased - 1;
  const half = significand >>> shift;
  const rest = significand & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  const roundUp = rest > halfway || (rest === halfway && (half & 1) === 1);
  return sign | (half + (roundUp ? 1 : 0));
}

/** The float32 bits of IEEE binary16 bits (exact: every half is a float32; a NaN keeps its payload, signaling or quiet). */
function float16ToFloat32Bits(bits: number): number {
  const sign = (bits & 0x8000) << 16;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0x1f) return (sign | 0x7f800000 | (mantissa << 13)) >>> 0;
  if (exponent !== 0) return (sign | ((exponent + 112) << 23) | (mantissa << 13)) >>> 0;
  if (mantissa === 0) return sign >>> 0;
  // Subnormal half (mantissa * 2^-24): its leading 1 becomes float32's implicit bit.
  const shift = Math.clz32(mantissa) - 21;
  return (sign | ((113 - shift) << 23) | (((mantissa << shift) & 0x3ff) << 13)) >>> 0;
}

/** The float32 value of IEEE binary16 bits (exact: every half is a float32). */
export function float16BitsToFloat32(bits: number): number {
  return float32FromBits(float16ToFloat32Bits(bits));
}

/** bfloat16 bits of a float32 value (its top 16 bits), rounded to nearest, ties to even. */
export function float32ToBfloat16Bits(value: number): number {
  return bfloat16FromFloat32Bits(float32Bits(value));
}

/** float32ToBfloat16Bits on the float32's bits. */
function bfloat16FromFloat32Bits(bits: number): number {
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) return (bits >>> 16) | 0x40;
  return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

/** The float32 value of bfloat16 bits (exact). */
export function bfloat16BitsToFloat32(bits: number): number {
  return float32FromBits((bits & 0xffff) << 16);
}

export function float32ArrayToFloat16Bits(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = float32ToFloat16Bits(values[i]);
  return out;
}

// The array versions write float32 bits, not numbers: reading a signaling NaN as a number sets its quiet bit.
export function float16BitsToFloat32Array(bits: ArrayLike<number>): Float32Array {
  const out = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = float16ToFloat32Bits(bits[i]);
  return new Float32Array(out.buffer);
}

export function float32ArrayToBfloat16Bits(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = float32ToBfloat16Bits(values[i]);
  return out;
}

export function bfloat16BitsToFloat32Array(bits: ArrayLike<number>): Float32Array {
  const out = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = (bits[i] & 0xffff) << 16;
  return new Float32Array(out.buffer);
}

/**
 * The conversions into given arrays read and write the arrays' words: another array came out wrong without a word (a
 * Float64Array `out` got float32 bits in its first half and garbage, a plain array nothing at all, a Float32Array of
 * values passed as bits read 1.0 as the subnormal 2^-24). A shorter `out` silently dropped the last values, a longer
 * one was filled with zeros past them.
 */
function checkArrays(
  input: ArrayLike<number>,
  inputType: Float32ArrayConstructor | Uint16ArrayConstructor,
  out: ArrayLike<number>,
  outType: Float32ArrayConstructor | Uint16ArrayConstructor,
): void {
  const inputName = inputType === Uint16Array ? "bits" : "values";
  for (const [array, type, field] of [[input, inputType, inputName], [out, outType, "out"]] as const) {
    if (!(array instanceof type)) throw new BsrFormatError(field, `expected a ${type.name}, got ${array?.constructor?.name ?? String(array)}`);
  }
  if (out.length !== input.length) throw new BsrFormatError("out", `expected ${input.length} elements, as many as the input, got ${out.length}`);
}

/**
 * The array conversions into arrays the caller provides (same length; nothing allocated), on the values' bits: for
 * kernels that convert every input and output of a half dtype, where a new array per call costs more than the loop.
 */
export function float16BitsToFloat32Into(bits: Uint16Array, out: Float32Array): Float32Array {
  checkArrays(bits, Uint16Array, out, Float32Array);
  const words = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < words.length; i++) words[i] = float16ToFloat32Bits(bits[i]);
  return out;
}

export function bfloat16BitsToFloat32Into(bits: Uint16Array, out: Float32Array): Float32Array {
  checkArrays(bits, Uint16Array, out, Float32Array);
  const words = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < words.length; i++) words[i] = bits[i] << 16;
  return out;
}

export function float32ToFloat16BitsInto(values: Float32Array, out: Uint16Array): Uint16Array {
  checkArrays(values, Float32Array, out, Uint16Array);
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < words.length; i++) out[i] = float16FromFloat32Bits(words[i]);
  return out;
}

export function float32ToBfloat16BitsInto(values: Float32Array, out: Uint16Array): Uint16Array {
  checkArrays(values, Float32Array, out, Uint16Array);
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < words.length; i++) out[i] = bfloat16FromFloat32Bits(words[i]);
  return out;
}

/** `values` as an array of numbers: anything else named, where a string was read as NaNs and undefined was a TypeError. */
export function checkNumbers(values: ArrayLike<number>): ArrayLike<number> {
  if (typeof values !== "object" || !(values?.length >= 0)) {
    throw new BsrFormatError("values", `expected an array of numbers, got ${String(values)}`);
  }
  if (values instanceof Float32Array || values instanceof Float64Array) return values;
  for (let i = 0; i < values.length; i++) {
    if (typeof values[i] !== "number") throw new BsrFormatError("values", `expected a number, got ${quoted(values[i])}`, i);
  }
  return values;
}

/** Float values stored as `dtype`: a new Float32Array, or rounded 16-bit patterns. */
export function encodeValues(values: ArrayLike<number>, dtype: BsrDType): BsrValues {
  checkDType(dtype);
  checkNumbers(values);
  if (dtype === "float16") return float32ArrayToFloat16Bits(values);
  if (dtype === "bfloat16") return float32ArrayToBfloat16Bits(values);
  return Float32Array.from(values);
}

/** Stored values of `dtype` as float32 (a new array). */
export function decodeValues(values: BsrValues, dtype: BsrDType): Float32Array {
  checkDType(dtype);
  // The wrong array read floats as bit patterns, or bit patterns as integers, without a word.
  const expected = dtype === "float32" ? Float32Array : Uint16Array;
  if (!(values instanceof expected)) throw new BsrFormatError("values", `${dtype} values must be a ${expected.name}, got ${values?.constructor?.name ?? String(values)}`);
  if (dtype === "float16") return float16BitsToFloat32Array(values);
  if (dtype === "bfloat16") return bfloat16BitsToFloat32Array(values);
  return Float32Array.from(values);
}
