import * as z from "zod/mini";
import { littleEndianHost } from "./byte-order.js";
import { BsrFormatError, parseWith, quoted } from "./errors.js";

/**
 * The safetensors file format: an 8-byte little-endian header length N, N bytes of JSON
 * (`{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__": { string: string } }`,
 * padded with spaces to a multiple of 8), then the tensors' bytes, little-endian.
 */

export type SafetensorsDType =
  | "BOOL"
  | "F4"
  | "F6_E2M3"
  | "F6_E3M2"
  | "U8"
  | "I8"
  | "F8_E5M2"
  | "F8_E4M3"
  | "F8_E8M0"
  | "F8_E4M3FNUZ"
  | "F8_E5M2FNUZ"
  | "I16"
  | "U16"
  | "F16"
  | "BF16"
  | "I32"
  | "U32"
  | "F32"
  | "C64"
  | "F64"
  | "I64"
  | "U64";

/**
 * The typed array of each dtype: F16 and BF16 hold raw bits; BOOL and F8 hold bytes; F4 and F6
 * hold their packed bytes (shape counts elements: F4 [2, 8] is 8 bytes); C64 holds (real, imaginary) pairs.
 */
export interface SafetensorsDataTypes {
  BOOL: Uint8Array;
  F4: Uint8Array;
  F6_E2M3: Uint8Array;
  F6_E3M2: Uint8Array;
  U8: Uint8Array;
  I8: Int8Array;
  F8_E5M2: Uint8Array;
  F8_E4M3: Uint8Array;
  F8_E8M0: Uint8Array;
  F8_E4M3FNUZ: Uint8Array;
  F8_E5M2FNUZ: Uint8Array;
  I16: Int16Array;
  U16: Uint16Array;
  F16: Uint16Array;
  BF16: Uint16Array;
  I32: Int32Array;
  U32: Uint32Array;
  F32: Float32Array;
  C64: Float32Array;
  F64: Float64Array;
  I64: BigInt64Array;
  U64: BigUint64Array;
}

export type SafetensorsData = SafetensorsDataTypes[SafetensorsDType];

/** One tensor: `data` holds product(shape) elements, row-major (packed dtypes and C64 aside, see SafetensorsDataTypes). */
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

// In the order of the reference's `Dtype` enum, by which its writer lays tensors out (see encodeSafetensorsHeader).
const ARRAY_TYPES: Record<SafetensorsDType, TypedArrayConstructor> = {
  BOOL: Uint8Array,
  F4: Uint8Array,
  F6_E2M3: Uint8Array,
  F6_E3M2: Uint8Array,
  U8: Uint8Array,
  I8: Int8Array,
  F8_E5M2: Uint8Array,
  F8_E4M3: Uint8Array,
  F8_E8M0: Uint8Array,
  F8_E4M3FNUZ: Uint8Array,
  F8_E5M2FNUZ: Uint8Array,
  I16: Int16Array,
  U16: Uint16Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  I32: Int32Array,
  U32: Uint32Array,
  F32: Float32Array,
  C64: Float32Array,
  F64: Float64Array,
  I64: BigInt64Array,
  U64: BigUint64Array,
};

export const SAFETENSORS_DTYPES = Object.keys(ARRAY_TYPES) as SafetensorsDType[];

/** Each dtype's place in the reference's `Dtype` enum. */
const DTYPE_RANK = new Map(SAFETENSORS_DTYPES.map((dtype, rank) => [dtype, rank]));

/** Bits of the dtypes whose element is not one element of their typed array. */
const PACKED_BITS: Partial<Record<SafetensorsDType, number>> = { F4: 4, F6_E2M3: 6, F6_E3M2: 6, C64: 64 };

/** Bytes per element of a safetensors dtype (a fraction for the 4- and 6-bit floats). */
export function safetensorsDTypeSize(dtype: SafetensorsDType): number {
  // An unknown name read a property of undefined (a TypeError), or one of Object.prototype's ("toString": NaN).
  if (!Object.hasOwn(ARRAY_TYPES, dtype)) throw new BsrFormatError("dtype", unsupportedDType(dtype));
  return (PACKED_BITS[dtype] ?? 8 * ARRAY_TYPES[dtype].BYTES_PER_ELEMENT) / 8;
}

/** Bytes of a tensor; packed dtypes must fill whole bytes, as the reference reader requires. */
function tensorBytes(dtype: SafetensorsDType, shape: readonly number[], field: string): number {
  const bytes = elementCount(shape, field) * safetensorsDTypeSize(dtype);
  if (!Number.isInteger(bytes)) throw new BsrFormatError(field, `${dtype} ${JSON.stringify(shape)} is ${bytes * 8} bits, not whole bytes`);
  return bytes;
}

/** The largest header accepted, as the reference implementation does. */
export const MAX_HEADER_BYTES = 100_000_000;
const METADATA_KEY = "__metadata__";

/**
 * String-to-string metadata as a null-prototype object (so a key "__proto__" stays a key).
 * Not a zod record: its output would set such a key as the prototype and lose it.
 */
export function checkMetadata(value: unknown, field: string): Record<string, string> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new BsrFormatError(field, "expected an object of string to string");
  }
  // Object.entries of a Map (or any class instance's hidden state) is empty: its entries were dropped from the file.
  const prototype = Object.getPrototypeOf(value);
  if (prototype !== Object.prototype && prototype !== null) {
    throw new BsrFormatError(field, `expected a plain object of string to string, got a ${value.constructor?.name ?? "object"} (a Map: Object.fromEntries(map))`);
  }
  const out: Record<string, string> = Object.create(null);
  for (const [key, text] of Object.entries(value)) {
    if (typeof text !== "string") throw new BsrFormatError(`${field}.${key}`, "metadata values must be strings");
    out[key] = text;
  }
  return out;
}

const unsupportedDType = (dtype: unknown): string => `unsupported dtype ${quoted(dtype)}; supported: ${SAFETENSORS_DTYPES.join(", ")}`;

// A dimension past 2^53 - 1 is an integer all the same (the reference reader takes [2^53 + 1, 0], an empty tensor): say why it is refused.
const dimension = {
  error: (issue: { input?: unknown }) =>
    Number.isInteger(issue.input) && (issue.input as number) > Number.MAX_SAFE_INTEGER
      ? `${issue.input} is past 2^53 - 1, the largest integer JavaScript holds exactly (a dimension is at most that)`
      : "expected a non-negative integer",
};
const shapeSchema = z.array(z.int(dimension).check(z.nonnegative(dimension)), { error: "expected an array of non-negative integers" });

// JSON numbers are doubles: an offset past 2^53 - 1 would be read rounded, so it is refused as such.
const byteOffset = { error: "expected a non-negative integer byte offset (at most 2^53 - 1)" };
const byteOffsetSchema = z.int(byteOffset).check(z.nonnegative(byteOffset));

const tensorInfoSchema = z.object(
  {
    dtype: z.enum(SAFETENSORS_DTYPES as [SafetensorsDType, ...SafetensorsDType[]], {
      error: (issue) => unsupportedDType(issue.input),
    }),
    shape: shapeSchema,
    data_offsets: z.tuple([byteOffsetSchema, byteOffsetSchema], {
      error: "expected [begin, end] byte offsets",
    }),
  },
  { error: "expected { dtype, shape, data_offsets }" },
);


function elementCount(shape: readonly number[], field: string): number {
  // Exact (a float product rounds 2^64 - 1 up to 2^64): the reference reader multiplies the dimensions in order as
  // 64-bit integers, and refuses one that overflows, a 0 after it too.
  let count = 1n;
  for (const dim of shape) {
    count *= BigInt(dim);
    if (count >= 2n ** 64n) {
      throw new BsrFormatError(field, `shape ${JSON.stringify(shape)} overflows 64 bits as its dimensions multiply, which the reference safetensors reader refuses`);
    }
  }
  if (count > BigInt(Number.MAX_SAFE_INTEGER)) throw new BsrFormatError(field, `shape ${JSON.stringify(shape)} is too large`);
  return Number(count);
}

/** The [name, value] pairs of a Map or an object of name to value; anything else is a BsrFormatError on `field`. */
export function entriesOf<T>(values: Map<string, T> | Record<string, T>, field = "tensors"): [string, T][] {
  if (values instanceof Map) return [...values];
  if (values === null || typeof values !== "object") throw new BsrFormatError(field, "expected a Map or an object of name to value");
  return Object.entries(values);
}

/** A tensor to write (or one built by hand): a known dtype, a shape, and data of its typed array and length. */
export function checkTensor(name: string, tensor: SafetensorsTensor): void {
  // "" names a tensor as far as the reference reader goes (and a file holding one decodes here): only the metadata's key is taken.
  if (name === METADATA_KEY) {
    throw new BsrFormatError("tensors", `${JSON.stringify(name)} cannot name a tensor`);
  }
  if (tensor === null || typeof tensor !== "object") throw new BsrFormatError(name, "expected { dtype, shape, data }");
  const arrayType = ARRAY_TYPES[tensor.dtype as SafetensorsDType];
  if (!Object.hasOwn(ARRAY_TYPES, tensor.dtype) || arrayType === undefined) {
    throw new BsrFormatError(`${name}.dtype`, unsupportedDType(tensor.dtype));
  }
  parseWith(shapeSchema, tensor.shape, `${name}.shape`);
  if (!(tensor.data instanceof arrayType)) {
    throw new BsrFormatError(`${name}.data`, `a ${tensor.dtype} tensor needs a ${arrayType.name}`);
  }
  const count = tensorBytes(tensor.dtype, tensor.shape, `${name}.shape`) / arrayType.BYTES_PER_ELEMENT;
  if (tensor.data.length !== count) {
    throw new BsrFormatError(
      `${name}.data`,
      `${tensor.dtype} ${JSON.stringify(tensor.shape)} needs ${count} elements, got ${tensor.data.length}`,
    );
  }
}

/**
 * Refuses text holding half of a UTF-16 surrogate pair: JSON.stringify writes it as an escape (`\ud800`) that
 * JSON.parse reads back, but it is no Unicode character, and the reference reader (Rust's serde_json reading into
 * UTF-8 strings) refuses the whole header, so the file would load here and nowhere else.
 */
function refuseLoneSurrogate(text: string, field: string, what: string): void {
  const match = /[\uD800-\uDFFF]/u.exec(text);
  if (match === null) return;
  const unit = match[0].charCodeAt(0).toString(16).toUpperCase();
  throw new BsrFormatError(
    field,
    `${what} ${quoted(text)} holds a lone surrogate (U+${unit}) at index ${match.index}: it is not Unicode text, and the reference safetensors reader (Rust, which Python's safetensors uses) refuses such a header`,
  );
}

/**
 * Strings in code point order, which is UTF-8 byte order, as Rust compares them; JavaScript's `<` compares
 * UTF-16 units, which puts U+10000 and above before U+E000 to U+FFFF. Lone surrogates are refused before this.
 */
function compareCodePoints(a: string, b: string): number {
  for (let at = 0; at < a.length && at < b.length; ) {
    const left = a.codePointAt(at)!;
    const right = b.codePointAt(at)!;
    if (left !== right) return left - right;
    at += left > 0xffff ? 2 : 1;
  }
  return a.length - b.length;
}

/** The bytes of a typed array, little-endian, as a view or (on big-endian hosts) a swapped copy. */
export function safetensorsBytes(data: SafetensorsData): Uint8Array {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return littleEndianHost || data.BYTES_PER_ELEMENT === 1 ? bytes : swapBytes(bytes.slice(), data.BYTES_PER_ELEMENT);
}

function swapBytes(bytes: Uint8Array, width: number): Uint8Array {
  for (let at = 0; at < bytes.length; at += width) bytes.subarray(at, at + width).reverse();
  return bytes;
}

/** Where one tensor's bytes sit in a file's data buffer (after the 8-byte length and the header). */
export interface SafetensorsEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** Byte offsets into the data buffer: [begin, end). */
  begin: number;
  end: number;
}

/** A file's header, validated: its entries in data order, metadata, and where the data starts. */
export interface SafetensorsLayout {
  entries: SafetensorsEntry[];
  metadata: Record<string, string>;
  /** 8 + header length: the file offset of data byte 0. */
  dataStart: number;
  /** Bytes of the data buffer (the file's size less dataStart). */
  dataLength: number;
}

/**
 * The first 8 + N bytes of a safetensors file for these tensors, and where each tensor goes.
 * Tensors are laid out contiguously as the reference writer lays them out: by dtype, last in its
 * `Dtype` enum first (U64, I64, F64, C64, F32, ...), then by name in UTF-8 byte order; `__metadata__`
 * is written when non-empty. Checks every tensor first.
 */
export function encodeSafetensorsHeader(
  tensors: Map<string, SafetensorsTensor> | Record<string, SafetensorsTensor>,
  metadata: Record<string, string> = {},
): { header: Uint8Array; ordered: [string, SafetensorsTensor][]; dataLength: number } {
  const ordered = entriesOf(tensors);
  for (const [name, tensor] of ordered) {
    checkTensor(name, tensor);
    refuseLoneSurrogate(name, name, "the tensor name");
  }
  const checkedMetadata = checkMetadata(metadata, "metadata");
  // Each UTF-16 unit of a name, key or value is at least one byte of the JSON: a header past the limit on that count
  // alone is refused before a scan and an encoding of it.
  let leastLength = 0;
  for (const [name] of ordered) leastLength += name.length;
  for (const [key, value] of Object.entries(checkedMetadata)) leastLength += key.length + value.length;
  if (leastLength > MAX_HEADER_BYTES) {
    throw new BsrFormatError("header", `the header would be at least ${leastLength} bytes, more than the ${MAX_HEADER_BYTES} allowed`);
  }
  for (const [key, value] of Object.entries(checkedMetadata)) {
    refuseLoneSurrogate(key, `metadata.${key}`, "the key");
    refuseLoneSurrogate(value, `metadata.${key}`, "the value");
  }
  ordered.sort(([nameA, a], [nameB, b]) => DTYPE_RANK.get(b.dtype)! - DTYPE_RANK.get(a.dtype)! || compareCodePoints(nameA, nameB));
  // The JSON is written entry by entry, in the data's order after __metadata__ as the reference writer does: an object
  // would list integer-like names ("0", "1": a ParameterList's) first, whatever their order.
  const entries: string[] = [];
  if (Object.keys(checkedMetadata).length > 0) entries.push(`${JSON.stringify(METADATA_KEY)}:${JSON.stringify(checkedMetadata)}`);
  let offset = 0;
  for (const [name, tensor] of ordered) {
    entries.push(`${JSON.stringify(name)}:${JSON.stringify({ dtype: tensor.dtype, shape: tensor.shape, data_offsets: [offset, offset + tensor.data.byteLength] })}`);
    offset += tensor.data.byteLength;
  }
  const json = new TextEncoder().encode(`{${entries.join(",")}}`);
  const headerLength = Math.ceil(json.length / 8) * 8;
  if (headerLength > MAX_HEADER_BYTES) {
    throw new BsrFormatError("header", `the header would be ${headerLength} bytes, more than the ${MAX_HEADER_BYTES} allowed`);
  }
  const header = new Uint8Array(8 + headerLength);
  const view = new DataView(header.buffer);
  view.setUint32(0, headerLength, true);
  view.setUint32(4, Math.floor(headerLength / 2 ** 32), true);
  header.set(json, 8);
  header.fill(0x20, 8 + json.length);
  return { header, ordered, dataLength: offset };
}

/** A safetensors file in one buffer (see encodeSafetensorsHeader for the layout). */
export function encodeSafetensors(
  tensors: Map<string, SafetensorsTensor> | Record<string, SafetensorsTensor>,
  metadata: Record<string, string> = {},
): Uint8Array {
  const { header, ordered, dataLength } = encodeSafetensorsHeader(tensors, metadata);
  const out = new Uint8Array(header.length + dataLength);
  out.set(header);
  let at = header.length;
  for (const [, tensor] of ordered) {
    out.set(safetensorsBytes(tensor.data), at);
    at += tensor.data.byteLength;
  }
  return out;
}

/**
 * The header length a file's first 8 bytes declare, checked against the file's size and
 * MAX_HEADER_BYTES before anything that large is read.
 */
export function safetensorsHeaderLength(prefix: Uint8Array, fileSize: number): number {
  if (fileSize < 8 || prefix.length < 8) {
    throw new BsrFormatError("header", `the file has ${fileSize} bytes; safetensors starts with an 8-byte header length`);
  }
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const headerLength = view.getUint32(0, true) + view.getUint32(4, true) * 2 ** 32;
  if (headerLength > fileSize - 8) {
    throw new BsrFormatError(
      "header",
      `the header claims ${headerLength} bytes but only ${fileSize - 8} follow the length field (truncated or not safetensors)`,
    );
  }
  if (headerLength > MAX_HEADER_BYTES) {
    throw new BsrFormatError("header", `the header claims ${headerLength} bytes, more than the ${MAX_HEADER_BYTES} allowed`);
  }
  return headerLength;
}

/**
 * Validates a header (the JSON bytes after the length field) against a file of `fileSize`
 * bytes: the JSON, every dtype, shape and byte range (inside the data buffer, the right
 * size, no overlap, no gap). Entries come in data order.
 */
export function parseSafetensorsHeader(json: Uint8Array, fileSize: number): SafetensorsLayout {
  const dataStart = 8 + json.length;
  const dataLength = fileSize - dataStart;
  let parsed: unknown;
  let text: string;
  try {
    // ignoreBOM keeps a byte-order mark in the text (TextDecoder drops it by default), so that it is refused below.
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(json);
  } catch (error) {
    throw new BsrFormatError("header", `not valid UTF-8 JSON (${(error as Error).message})`);
  }
  if (text.startsWith("\uFEFF")) {
    throw new BsrFormatError(
      "header",
      "starts with a UTF-8 byte-order mark (EF BB BF): a safetensors header is JSON without one, and the reference safetensors reader (Rust, which Python's safetensors uses) refuses it",
    );
  }
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new BsrFormatError("header", `not valid UTF-8 JSON (${(error as Error).message})`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new BsrFormatError("header", "the header must be a JSON object");
  }
  // One walk for the three checks; where a header fails several, a repeated key is told first, then a float-written integer.
  const found: HeaderRefusals = {};
  scanJson(text, repeatedKeyCheck(found), floatWrittenIntegerCheck(found), serdeJsonCheck(found));
  const repeated = found.repeatedKey;
  if (repeated !== undefined) {
    throw repeated.owner === undefined
      ? new BsrFormatError(repeated.key, "listed twice in the header (which entry is meant is ambiguous)")
      : new BsrFormatError(repeated.owner, `key ${JSON.stringify(repeated.key)} appears twice (which value is meant is ambiguous)`);
  }
  const float = found.floatWrittenInteger;
  if (float !== undefined) {
    throw new BsrFormatError(
      `${float.name}.${float.field}`,
      `${float.token} is written as a float: the reference safetensors reader (Rust, which Python's safetensors uses) reads shapes and data_offsets as unsigned integers and refuses it${Number.isSafeInteger(Number(float.token)) ? ` (write ${Math.abs(Number(float.token))})` : ""}`,
      float.index,
    );
  }
  const unreadable = found.serdeJson;
  if (unreadable !== undefined) {
    throw new BsrFormatError(
      "header",
      `${unreadable}: JavaScript reads it, but the reference safetensors reader (Rust's serde_json, which Python's safetensors uses) refuses the whole header`,
    );
  }
  refuseLoneSurrogatesIn(parsed);
  let metadata: Record<string, string> = Object.create(null);
  const entries: SafetensorsEntry[] = [];
  // JSON.parse keeps "__proto__" as an own key; Object.entries sees it.
  for (const [name, value] of Object.entries(parsed)) {
    if (name === METADATA_KEY) {
      // The reference reader takes null as no metadata.
      if (value !== null) metadata = checkMetadata(value, METADATA_KEY);
      continue;
    }
    const info = parseWith(tensorInfoSchema, value, name);
    const [begin, end] = info.data_offsets;
    const expected = tensorBytes(info.dtype, info.shape, name);
    if (end < begin) throw new BsrFormatError(name, `data_offsets [${begin}, ${end}] end before they begin`);
    if (end > dataLength) {
      throw new BsrFormatError(name, `data_offsets end at byte ${end}, past the ${dataLength}-byte data buffer`);
    }
    if (end - begin !== expected) {
      throw new BsrFormatError(
        name,
        `data_offsets span ${end - begin} bytes but ${info.dtype} ${JSON.stringify(info.shape)} needs ${expected}`,
      );
    }
    entries.push({ name, dtype: info.dtype, shape: info.shape, begin, end });
  }

  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expectedBegin = 0;
  for (const { name, begin, end } of entries) {
    if (begin < expectedBegin) throw new BsrFormatError(name, `data_offsets [${begin}, ${end}] overlap the previous tensor`);
    if (begin > expectedBegin) throw new BsrFormatError(name, `data_offsets leave bytes [${expectedBegin}, ${begin}) unused`);
    expectedBegin = end;
  }
  if (expectedBegin !== dataLength) {
    throw new BsrFormatError("header", `the tensors cover ${expectedBegin} bytes but the data buffer has ${dataLength}`);
  }
  return { entries, metadata, dataStart, dataLength };
}

/**
 * Refuses a parsed header holding a lone surrogate in any string, key or value, read or ignored: JSON.parse reads
 * the escape `"w\ud800"`, the reference reader refuses the whole header. Errors name the entry and its key.
 * Iterative, since a header may nest arrays 100 000 deep.
 */
function refuseLoneSurrogatesIn(header: object): void {
  for (const [name, entry] of Object.entries(header)) {
    if (name !== METADATA_KEY) refuseLoneSurrogate(name, name, "the tensor name");
    if (typeof entry === "string") refuseLoneSurrogate(entry, name, "the value");
    if (entry === null || typeof entry !== "object") continue;
    for (const [key, value] of Object.entries(entry)) {
      const field = `${name}.${key}`;
      refuseLoneSurrogate(key, field, "the key");
      const pending: unknown[] = [value];
      while (pending.length > 0) {
        const item = pending.pop();
        if (typeof item === "string") refuseLoneSurrogate(item, field, "the value");
        else if (item !== null && typeof item === "object") {
          for (const [innerKey, inner] of Object.entries(item)) {
            refuseLoneSurrogate(innerKey, field, "the key");
            pending.push(inner);
          }
        }
      }
    }
  }
}

/** An open object (with its latest key, and the keys a check has seen in it) or array (with the index of its current item). */
interface JsonFrame {
  array: boolean;
  key?: string;
  keys?: Set<string>;
  index: number;
}

/**
 * What the header checks look at in valid JSON text, in text order: `path` holds the open objects and arrays,
 * outermost first, and `at` is the index of a token's first character.
 */
interface JsonVisitor {
  open?(path: readonly JsonFrame[], at: number): void;
  key?(key: string, path: readonly JsonFrame[]): void;
  number?(token: string, path: readonly JsonFrame[], at: number): void;
}

// A number token: in valid JSON, the characters up to the next whitespace, ",", "]" or "}".
const NUMBER_TOKEN = /[\d.eE+-]+/y;

/** Walks `text`, valid JSON (JSON.parse has read it), once for all `visitors`; iterative, as arrays may nest 100 000 deep. */
function scanJson(text: string, ...visitors: JsonVisitor[]): void {
  const path: JsonFrame[] = [];
  for (let at = 0; at < text.length; at++) {
    const char = text[at];
    if (char === "{" || char === "[") {
      path.push({ array: char === "[", index: 0 });
      for (const visitor of visitors) visitor.open?.(path, at);
    } else if (char === "}" || char === "]") {
      path.pop();
    } else if (char === ",") path.at(-1)!.index++;
    else if (char === '"') {
      let end = at + 1;
      while (text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      let next = end + 1;
      // Outside strings, valid JSON holds no control characters: all up to a space are whitespace.
      while (text[next] <= " ") next++;
      if (text[next] === ":") {
        const key = JSON.parse(text.slice(at, end + 1)) as string;
        path.at(-1)!.key = key;
        for (const visitor of visitors) visitor.key?.(key, path);
      }
      at = end;
    } else if (char === "-" || (char >= "0" && char <= "9")) {
      NUMBER_TOKEN.lastIndex = at;
      const token = NUMBER_TOKEN.exec(text)![0];
      for (const visitor of visitors) visitor.number?.(token, path, at);
      at += token.length - 1;
    }
  }
}

/** The first of each refusal the header checks find, in text order. */
interface HeaderRefusals {
  repeatedKey?: { key: string; owner: string | undefined };
  floatWrittenInteger?: { name: string; field: "shape" | "data_offsets"; index: number; token: string };
  serdeJson?: string;
}

/**
 * The first key that appears twice in one object of `text` (valid JSON), with the top-level
 * key it sits under (undefined for a repeated top-level key). JSON.parse keeps the last
 * value of a repeated key silently; a header (or an index's weight_map) that names a
 * tensor twice is ambiguous.
 */
export function repeatedKey(text: string): { key: string; owner: string | undefined } | undefined {
  const found: HeaderRefusals = {};
  scanJson(text, repeatedKeyCheck(found));
  return found.repeatedKey;
}

function repeatedKeyCheck(found: HeaderRefusals): JsonVisitor {
  return {
    key(key, path) {
      const object = path.at(-1)!;
      object.keys ??= new Set();
      const keys = object.keys;
      if (keys.has(key)) found.repeatedKey ??= { key, owner: path.length === 1 ? undefined : path[0].key };
      keys.add(key);
    },
  };
}

/** serde_json's recursion limit: it refuses JSON whose arrays and objects nest this deep (the outermost counts). */
const SERDE_JSON_MAX_DEPTH = 128;

/**
 * What the reference reader's JSON parser refuses in a header (valid JSON) that JSON.parse reads, anywhere,
 * fields the reader ignores included: arrays and objects nested 128 deep ("recursion limit exceeded"), and a number
 * past the largest float64 ("number out of range"; JSON.parse reads it as Infinity).
 */
function serdeJsonCheck(found: HeaderRefusals): JsonVisitor {
  return {
    open(path, at) {
      if (path.length === SERDE_JSON_MAX_DEPTH) found.serdeJson ??= `arrays and objects nest ${path.length} deep at character ${at} ("recursion limit exceeded" past 127)`;
    },
    number(token) {
      if (!Number.isFinite(Number(token))) {
        found.serdeJson ??= `the number ${token.length > 40 ? `${token.slice(0, 40)}...` : token} is past the largest float64 ("number out of range")`;
      }
    },
  };
}

/**
 * The first shape dimension or data offset of a header (valid JSON) written as a float (`4.0`, `4e0`, `-0`):
 * JSON.parse reads such a number as the integer, but the reference reader reads these fields as unsigned integers
 * and refuses the whole header, so the file would load here and nowhere else. Numbers in fields the reference
 * reader ignores are left alone.
 */
function floatWrittenIntegerCheck(found: HeaderRefusals): JsonVisitor {
  return {
    number(token, path) {
      if (path.length !== 3 || (!/[.eE]/.test(token) && token !== "-0")) return;
      const [tensor, info, list] = path;
      const field = info.key;
      if (!tensor.array && tensor.key !== METADATA_KEY && !info.array && (field === "shape" || field === "data_offsets") && list.array) {
        found.floatWrittenInteger ??= { name: tensor.key as string, field, index: list.index, token };
      }
    },
  };
}

/** A tensor over `bytes` (its own aligned buffer, little-endian file order), swapped in place on big-endian hosts. */
export function safetensorsTensorFromBytes(entry: SafetensorsEntry, bytes: Uint8Array<ArrayBuffer>): SafetensorsTensor {
  const arrayType = ARRAY_TYPES[entry.dtype];
  if (!littleEndianHost) swapBytes(bytes, arrayType.BYTES_PER_ELEMENT);
  const data = new arrayType(bytes.buffer);
  return { dtype: entry.dtype, shape: entry.shape, data } as SafetensorsTensor;
}

/**
 * Reads a safetensors file held in memory: checks the header length against the buffer,
 * then the header (see parseSafetensorsHeader), before copying each tensor into its own
 * aligned typed array. Tensors come in file order.
 */
export function decodeSafetensors(bytes: Uint8Array): SafetensorsContent {
  if (!(bytes instanceof Uint8Array)) throw new BsrFormatError("bytes", "expected a Uint8Array");
  const headerLength = safetensorsHeaderLength(bytes, bytes.length);
  const layout = parseSafetensorsHeader(bytes.subarray(8, 8 + headerLength), bytes.length);
  const tensors = new Map<string, SafetensorsTensor>();
  for (const entry of layout.entries) {
    // A fresh buffer (not `slice`, which is a view on Node's Buffer) gives aligned, owned data.
    const copy = new Uint8Array(entry.end - entry.begin);
    copy.set(bytes.subarray(layout.dataStart + entry.begin, layout.dataStart + entry.end));
    tensors.set(entry.name, safetensorsTensorFromBytes(entry, copy));
  }
  return { tensors, metadata: layout.metadata };
}
