import * as z from "zod/mini";
import { BsrFormatError, parseWith } from "./errors.js";

/**
 * The safetensors file format: an 8-byte little-endian header length N, N bytes of JSON
 * (`{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__": { string: string } }`,
 * padded with spaces to a multiple of 8), then the tensors' bytes, little-endian.
 */

export type SafetensorsDType =
  | "BOOL"
  | "U8"
  | "I8"
  | "F8_E5M2"
  | "F8_E4M3"
  | "I16"
  | "U16"
  | "F16"
  | "BF16"
  | "I32"
  | "U32"
  | "F32"
  | "F64"
  | "I64"
  | "U64";

/** The typed array of each dtype: F16 and BF16 hold raw bits; BOOL and F8 hold bytes. */
export interface SafetensorsDataTypes {
  BOOL: Uint8Array;
  U8: Uint8Array;
  I8: Int8Array;
  F8_E5M2: Uint8Array;
  F8_E4M3: Uint8Array;
  I16: Int16Array;
  U16: Uint16Array;
  F16: Uint16Array;
  BF16: Uint16Array;
  I32: Int32Array;
  U32: Uint32Array;
  F32: Float32Array;
  F64: Float64Array;
  I64: BigInt64Array;
  U64: BigUint64Array;
}

export type SafetensorsData = SafetensorsDataTypes[SafetensorsDType];

/** One tensor: `data` holds product(shape) elements, row-major. */
export type SafetensorsTensor = {
  [D in SafetensorsDType]: { dtype: D; shape: number[]; data: SafetensorsDataTypes[D] };
}[SafetensorsDType];

/** A whole file's contents. */
export interface SafetensorsContent {
  tensors: Map<string, SafetensorsTensor>;
  metadata: Record<string, string>;
}

type TypedArrayConstructor = {
  new (length: number): SafetensorsData;
  new (buffer: ArrayBuffer): SafetensorsData;
  readonly BYTES_PER_ELEMENT: number;
  readonly name: string;
};

const ARRAY_TYPES: Record<SafetensorsDType, TypedArrayConstructor> = {
  BOOL: Uint8Array,
  U8: Uint8Array,
  I8: Int8Array,
  F8_E5M2: Uint8Array,
  F8_E4M3: Uint8Array,
  I16: Int16Array,
  U16: Uint16Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  I32: Int32Array,
  U32: Uint32Array,
  F32: Float32Array,
  F64: Float64Array,
  I64: BigInt64Array,
  U64: BigUint64Array,
};

export const SAFETENSORS_DTYPES = Object.keys(ARRAY_TYPES) as SafetensorsDType[];

/** Bytes per element of a safetensors dtype. */
export function safetensorsDTypeSize(dtype: SafetensorsDType): number {
  return ARRAY_TYPES[dtype].BYTES_PER_ELEMENT;
}

/** The largest header accepted, as the reference implementation does. */
export const MAX_HEADER_BYTES = 100_000_000;
const METADATA_KEY = "__metadata__";

const littleEndianHost = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const metadataSchema = z.record(z.string(), z.string({ error: "metadata values must be strings" }), {
  error: "expected an object of string to string",
});

const shapeSchema = z.array(
  z.int({ error: "expected a non-negative integer" }).check(z.nonnegative({ error: "expected a non-negative integer" })),
  { error: "expected an array of non-negative integers" },
);

const tensorInfoSchema = z.object(
  {
    dtype: z.enum(SAFETENSORS_DTYPES as [SafetensorsDType, ...SafetensorsDType[]], {
      error: (issue) => `unsupported dtype ${JSON.stringify(issue.input)}; supported: ${SAFETENSORS_DTYPES.join(", ")}`,
    }),
    shape: shapeSchema,
    data_offsets: z.tuple([z.int().check(z.nonnegative()), z.int().check(z.nonnegative())], {
      error: "expected [begin, end] byte offsets",
    }),
  },
  { error: "expected { dtype, shape, data_offsets }" },
);

const headerSchema = z.record(z.string(), z.unknown(), { error: "the header must be a JSON object" });

function elementCount(shape: readonly number[], field: string): number {
  let count = 1;
  for (const dim of shape) count *= dim;
  if (!Number.isSafeInteger(count)) throw new BsrFormatError(field, `shape ${JSON.stringify(shape)} is too large`);
  return count;
}

function entriesOf(
  tensors: Map<string, SafetensorsTensor> | Record<string, SafetensorsTensor>,
): [string, SafetensorsTensor][] {
  if (tensors instanceof Map) return [...tensors.entries()];
  if (tensors === null || typeof tensors !== "object") {
    throw new BsrFormatError("tensors", "expected a Map or an object of name to tensor");
  }
  return Object.entries(tensors);
}

function checkTensor(name: string, tensor: SafetensorsTensor): void {
  if (name === "" || name === METADATA_KEY) {
    throw new BsrFormatError("tensors", `${JSON.stringify(name)} cannot name a tensor`);
  }
  if (tensor === null || typeof tensor !== "object") throw new BsrFormatError(name, "expected { dtype, shape, data }");
  const arrayType = ARRAY_TYPES[tensor.dtype as SafetensorsDType];
  if (!Object.hasOwn(ARRAY_TYPES, tensor.dtype) || arrayType === undefined) {
    throw new BsrFormatError(`${name}.dtype`, `unsupported dtype ${JSON.stringify(tensor.dtype)}; supported: ${SAFETENSORS_DTYPES.join(", ")}`);
  }
  parseWith(shapeSchema, tensor.shape, `${name}.shape`);
  if (!(tensor.data instanceof arrayType)) {
    throw new BsrFormatError(`${name}.data`, `a ${tensor.dtype} tensor needs a ${arrayType.name}`);
  }
  const count = elementCount(tensor.shape, `${name}.shape`);
  if (tensor.data.length !== count) {
    throw new BsrFormatError(
      `${name}.data`,
      `shape ${JSON.stringify(tensor.shape)} needs ${count} elements, got ${tensor.data.length}`,
    );
  }
}

/** The bytes of a typed array, little-endian, as a view or (on big-endian hosts) a swapped copy. */
function littleEndianBytes(data: SafetensorsData): Uint8Array {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return littleEndianHost || data.BYTES_PER_ELEMENT === 1 ? bytes : swapBytes(bytes.slice(), data.BYTES_PER_ELEMENT);
}

function swapBytes(bytes: Uint8Array, width: number): Uint8Array {
  for (let at = 0; at < bytes.length; at += width) bytes.subarray(at, at + width).reverse();
  return bytes;
}

/**
 * A safetensors file. Tensors are laid out contiguously, the widest dtypes first, then
 * by name (as the reference writer does); `__metadata__` is written when non-empty.
 */
export function encodeSafetensors(
  tensors: Map<string, SafetensorsTensor> | Record<string, SafetensorsTensor>,
  metadata: Record<string, string> = {},
): Uint8Array {
  const entries = entriesOf(tensors);
  for (const [name, tensor] of entries) checkTensor(name, tensor);
  const checkedMetadata = parseWith(metadataSchema, metadata, "metadata");
  entries.sort(
    ([nameA, a], [nameB, b]) =>
      safetensorsDTypeSize(b.dtype) - safetensorsDTypeSize(a.dtype) || (nameA < nameB ? -1 : nameA > nameB ? 1 : 0),
  );
  const header: Record<string, unknown> = {};
  if (Object.keys(checkedMetadata).length > 0) header[METADATA_KEY] = checkedMetadata;
  let offset = 0;
  for (const [name, tensor] of entries) {
    header[name] = { dtype: tensor.dtype, shape: tensor.shape, data_offsets: [offset, offset + tensor.data.byteLength] };
    offset += tensor.data.byteLength;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerLength = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLength + offset);
  const view = new DataView(out.buffer);
  view.setUint32(0, headerLength, true);
  view.setUint32(4, Math.floor(headerLength / 2 ** 32), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);
  let at = 8 + headerLength;
  for (const [, tensor] of entries) {
    out.set(littleEndianBytes(tensor.data), at);
    at += tensor.data.byteLength;
  }
  return out;
}

/**
 * Reads a safetensors file. Checks the header length against the file, the JSON, every
 * dtype, shape and byte range (inside the buffer, the right size, no overlap, no gap)
 * before copying each tensor into its own aligned typed array. Tensors come in file order.
 */
export function decodeSafetensors(bytes: Uint8Array): SafetensorsContent {
  if (!(bytes instanceof Uint8Array)) throw new BsrFormatError("bytes", "expected a Uint8Array");
  if (bytes.length < 8) {
    throw new BsrFormatError("header", `the file has ${bytes.length} bytes; safetensors starts with an 8-byte header length`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32;
  if (headerLength > bytes.length - 8) {
    throw new BsrFormatError(
      "header",
      `the header claims ${headerLength} bytes but only ${bytes.length - 8} follow the length field (truncated or not safetensors)`,
    );
  }
  if (headerLength > MAX_HEADER_BYTES) {
    throw new BsrFormatError("header", `the header claims ${headerLength} bytes, more than the ${MAX_HEADER_BYTES} allowed`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + headerLength)));
  } catch (error) {
    throw new BsrFormatError("header", `not valid UTF-8 JSON (${(error as Error).message})`);
  }
  const header = parseWith(headerSchema, parsed, "header");
  const bufferStart = 8 + headerLength;
  const bufferLength = bytes.length - bufferStart;

  let metadata: Record<string, string> = {};
  const infos: { name: string; info: z.infer<typeof tensorInfoSchema> }[] = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === METADATA_KEY) {
      metadata = parseWith(metadataSchema, value, METADATA_KEY);
      continue;
    }
    const info = parseWith(tensorInfoSchema, value, name);
    const [begin, end] = info.data_offsets;
    const expected = elementCount(info.shape, name) * safetensorsDTypeSize(info.dtype);
    if (end < begin) throw new BsrFormatError(name, `data_offsets [${begin}, ${end}] end before they begin`);
    if (end > bufferLength) {
      throw new BsrFormatError(name, `data_offsets end at byte ${end}, past the ${bufferLength}-byte data buffer`);
    }
    if (end - begin !== expected) {
      throw new BsrFormatError(
        name,
        `data_offsets span ${end - begin} bytes but ${info.dtype} ${JSON.stringify(info.shape)} needs ${expected}`,
      );
    }
    infos.push({ name, info });
  }

  infos.sort((a, b) => a.info.data_offsets[0] - b.info.data_offsets[0] || a.info.data_offsets[1] - b.info.data_offsets[1]);
  let expectedBegin = 0;
  for (const { name, info } of infos) {
    const [begin, end] = info.data_offsets;
    if (begin < expectedBegin) throw new BsrFormatError(name, `data_offsets [${begin}, ${end}] overlap the previous tensor`);
    if (begin > expectedBegin) throw new BsrFormatError(name, `data_offsets leave bytes [${expectedBegin}, ${begin}) unused`);
    expectedBegin = end;
  }
  if (expectedBegin !== bufferLength) {
    throw new BsrFormatError("header", `the tensors cover ${expectedBegin} bytes but the data buffer has ${bufferLength}`);
  }

  const tensors = new Map<string, SafetensorsTensor>();
  for (const { name, info } of infos) {
    const [begin, end] = info.data_offsets;
    // A fresh buffer (not `slice`, which is a view on Node's Buffer) gives aligned, owned data.
    const copy = new Uint8Array(end - begin);
    copy.set(bytes.subarray(bufferStart + begin, bufferStart + end));
    const arrayType = ARRAY_TYPES[info.dtype];
    if (!littleEndianHost) swapBytes(copy, arrayType.BYTES_PER_ELEMENT);
    const data = new arrayType(copy.buffer);
    tensors.set(name, { dtype: info.dtype, shape: info.shape, data } as SafetensorsTensor);
  }
  return { tensors, metadata };
}
