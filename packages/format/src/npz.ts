import { type Zippable, zipSync } from "fflate";
import * as z from "zod/mini";
import { littleEndianHost } from "./byte-order.js";
import { BsrFormatError, checkOptionKeys, parseWith } from "./errors.js";
import { BsrMatrix } from "./matrix.js";
import { unzipMembers, zipMemberNames } from "./unzip.js";
import { checkZip32Sizes, deflateLevel } from "./zip32.js";

/**
 * SciPy's `scipy.sparse.save_npz` / `load_npz` files for BSR (and CSR, read as 1 x 1 blocks):
 * a zip of `.npy` arrays `data`, `indices`, `indptr`, `shape` and `format`. The entry
 * `@blocksparse/format/npz` (browser-safe), apart from the main one because of its zip library.
 */

/** An array read from a `.npy` file: its elements' bytes in the host's order, for typed arrays, plus its NumPy dtype. */
interface NpyArray {
  /** NumPy type string without byte order, e.g. "f4", "i8", "S3". */
  kind: string;
  /** The type string as the file wrote it, e.g. "<f4", ">i8", "|S3". */
  descr: string;
  shape: number[];
  /** Element bytes in the host's byte order (as typed arrays read them), C order. */
  bytes: Uint8Array;
}

const NPY_MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"

// zod's own "Invalid input" would not say which part of the header is missing or wrong.
const dimension = { error: (issue: { input?: unknown }) => `expected a dimension (an integer >= 0), got ${String(issue.input)}` };
const npyHeaderSchema = z.object({
  descr: z.string({ error: "the header has no 'descr' (the dtype)" }).check(
    z.regex(/^[<>|=]?[fiubSU]\d+$/, { error: (issue) => `unsupported dtype ${JSON.stringify(issue.input)}: only bool, integer, float and string arrays are read` }),
  ),
  fortranOrder: z.boolean({ error: "the header has no 'fortran_order' of True or False" }),
  shape: z.array(z.int(dimension).check(z.nonnegative(dimension)), { error: "the header has no 'shape' tuple" }),
});

function itemSize(kind: string): number {
  const count = Number(kind.slice(1));
  return kind[0] === "U" ? 4 * count : count;
}

const KIND_NAMES: Record<string, [family: string, name: string]> = {
  f: ["float", "float"],
  i: ["signed integer", "int"],
  u: ["unsigned integer", "uint"],
  b: ["boolean", "bool"],
};

/** "<f16 (a 16-byte float: float128)": NumPy counts bytes in a type string, so "f16" alone reads like float16. */
function describeDtype(array: NpyArray): string {
  const { kind, descr } = array;
  const names = KIND_NAMES[kind[0]];
  if (names === undefined) return `${descr} (a string of ${kind.slice(1)} characters)`;
  const size = itemSize(kind);
  return `${descr} (a ${size}-byte ${names[0]}: ${kind[0] === "b" ? "bool" : `${names[1]}${8 * size}`})`;
}

/** A shape as NumPy prints it: (), (3,), (2, 3). */
function npyShapeText(shape: readonly number[]): string {
  return shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(", ")})`;
}

/** A value of a `.npy` header: a string's contents, or the source text of a tuple's inside, a list or a bare token. */
interface NpyHeaderValue {
  kind: "string" | "tuple" | "list" | "token";
  text: string;
}

/**
 * Python's whitespace between tokens: JavaScript's \s also takes U+00A0, U+FEFF and other spaces, which Python
 * (and so np.load) refuses as "invalid non-printable character".
 */
const PYTHON_SPACE = /[ \t\n\r\f]/;

/**
 * A Python int literal as `ast.literal_eval` reads one (`12`, `0x1f`, `0o7`, `0b1`, `1_000`, one sign), and
 * after it Python 2's long suffix (`3L`). Leading zeros (`03`) are no Python 3 literal, `00` is.
 */
const PYTHON_INT = /^([+-]?)[ \t\n\r\f]*(0[xX](?:_?[\da-fA-F])+|0[oO](?:_?[0-7])+|0[bB](?:_?[01])+|[1-9](?:_?\d)*|0+(?:_?0)*)([ \t\n\r\f]*L)?$/;

/** The keys NumPy writes in a `.npy` header, and the only ones it reads (it refuses a header with any other). */
const NPY_HEADER_KEYS = ["descr", "fortran_order", "shape"];

/**
 * The header of a `.npy` file, a Python dict literal as NumPy reads it (`ast.literal_eval`): keys in
 * single or double quotes, values a string, a tuple, a list (a structured dtype) or a bare word or number.
 * A key listed twice is refused (Python keeps the last silently, a regex took the first), as is a key
 * NumPy does not know, or text that is not such a literal (`(6,,)`).
 */
function npyHeaderDict(header: string, field: string): Map<string, NpyHeaderValue> {
  const bad = (why: string): never => {
    throw new BsrFormatError(field, `the .npy header is not the dict NumPy writes (${why}): ${JSON.stringify(header.trim().slice(0, 120))}`);
  };
  let at = 0;
  const space = () => {
    while (at < header.length && PYTHON_SPACE.test(header[at])) at++;
  };
  const string = (): string => {
    if (header[at] === "u") at++;
    const quote = header[at];
    if (quote !== "'" && quote !== '"') return bad(`expected a quoted string at character ${at}`);
    const end = header.indexOf(quote, at + 1);
    if (end < 0) return bad("a string is not closed");
    const text = header.slice(at + 1, end);
    if (text.includes("\\")) return bad("escapes in strings are not read");
    at = end + 1;
    return text;
  };
  const values = new Map<string, NpyHeaderValue>();
  space();
  if (header[at++] !== "{") bad("it does not start with {");
  for (;;) {
    space();
    if (header[at] === "}") break;
    const key = string();
    space();
    if (header[at++] !== ":") bad(`expected : after '${key}'`);
    space();
    const start = at;
    let value: NpyHeaderValue;
    if (header[at] === "'" || header[at] === '"' || (header[at] === "u" && (header[at + 1] === "'" || header[at + 1] === '"'))) {
      value = { kind: "string", text: string() };
    } else if (header[at] === "(" || header[at] === "[") {
      const close = header[at] === "(" ? ")" : "]";
      // A list (a structured dtype's fields) may nest tuples and lists; strings in it hold no brackets NumPy writes.
      let depth = 0;
      for (; at < header.length; at++) {
        if (header[at] === "(" || header[at] === "[") depth++;
        else if (header[at] === ")" || header[at] === "]") depth--;
        if (depth === 0) break;
      }
      if (at >= header.length || header[at] !== close) bad(`'${key}' is not closed`);
      at++;
      value = close === ")" ? { kind: "tuple", text: header.slice(start + 1, at - 1) } : { kind: "list", text: header.slice(start, at) };
    } else {
      while (at < header.length && !PYTHON_SPACE.test(header[at]) && header[at] !== "," && header[at] !== "}") at++;
      value = { kind: "token", text: header.slice(start, at) };
    }
    if (!NPY_HEADER_KEYS.includes(key)) bad(`NumPy reads only the keys ${NPY_HEADER_KEYS.join(", ")}, not '${key}'`);
    if (values.has(key)) throw new BsrFormatError(`${field}.${key}`, "appears twice in the .npy header (which value is meant is ambiguous)");
    values.set(key, value);
    space();
    if (header[at] === ",") at++;
    else if (header[at] !== "}") bad(`expected , or } after '${key}'`);
  }
  at++;
  space();
  if (at < header.length) bad("text follows the }");
  return values;
}

/**
 * The items of a shape tuple's inside (`6,` or `2, 3`): integers as numbers, anything else kept as text for the
 * message. A single item needs its trailing comma (`(6)` is a number, not a tuple) and no item may be empty
 * (`(6,,)`), as Python reads them. Python 2's long literals (`3L`) are read where `python2Longs` (format versions
 * 1.0 and 2.0, which Python 2 wrote: NumPy strips the `L` there and nowhere else); in version 3.0 one is refused,
 * as np.load refuses it ("Cannot parse header"), quoting `header`.
 */
function tupleItems(text: string, field: string, python2Longs: boolean, header: string): (number | string)[] | undefined {
  const parts = text.split(",").map((part) => part.replace(/^[ \t\n\r\f]+|[ \t\n\r\f]+$/g, ""));
  if (parts.length === 1 && parts[0] === "") return [];
  if (parts.at(-1) === "") parts.pop();
  else if (parts.length === 1) return undefined;
  const empty = parts.indexOf("");
  if (empty >= 0) throw new BsrFormatError(field, `(${text}) is not a tuple (item ${empty} is empty)`, empty);
  return parts.map((part, index) => {
    const match = PYTHON_INT.exec(part);
    if (match === null) return part;
    const [, sign, digits, long] = match;
    if (long !== undefined && !python2Longs) {
      throw new BsrFormatError(
        field,
        `${part} is a Python 2 long literal, which np.load reads in .npy versions 1.0 and 2.0 only, not in this 3.0 header: ${JSON.stringify(header.trim().slice(0, 120))}`,
        index,
      );
    }
    const value = Number(BigInt(digits.replaceAll("_", "")));
    return sign === "-" && value !== 0 ? -value : value;
  });
}

/**
 * The longest `.npy` header np.load reads (`max_header_size`, which SciPy's load_npz leaves at its default): it
 * refuses a longer one as unsafe to parse. Refusing it here too keeps a header of hundreds of megabytes (a few
 * kilobytes deflated) from becoming a string longer than JavaScript holds.
 */
const NPY_MAX_HEADER_CHARACTERS = 10_000;

/** Parses one `.npy` file (format versions 1.0, 2.0 and 3.0). */
function readNpy(bytes: Uint8Array, field: string): NpyArray {
  if (bytes.length < 10 || NPY_MAGIC.some((byte, i) => bytes[i] !== byte)) {
    throw new BsrFormatError(field, "not a .npy array (bad magic)");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const [major, minor] = [bytes[6], bytes[7]];
  // NumPy's read_magic takes versions (1, 0), (2, 0) and (3, 0) only: a minor version is a format it does not know.
  if (major < 1 || major > 3 || minor !== 0) {
    throw new BsrFormatError(field, `unsupported .npy format version ${major}.${minor} (NumPy reads versions 1.0, 2.0 and 3.0)`);
  }
  const prefix = major === 1 ? 10 : 12;
  if (bytes.length < prefix) throw new BsrFormatError(field, `the .npy file ends inside its ${prefix}-byte prefix`);
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  if (prefix + headerLength > bytes.length) throw new BsrFormatError(field, "the .npy header runs past the end of the file");
  const tooLong = (length: string) =>
    new BsrFormatError(field, `the .npy header is ${length}, past the ${NPY_MAX_HEADER_CHARACTERS} characters np.load reads (its max_header_size)`);
  // A character is a byte in versions 1.0 and 2.0 (latin-1), up to four in 3.0 (UTF-8): checked before any text is made.
  if (headerLength > NPY_MAX_HEADER_CHARACTERS * (major === 3 ? 4 : 1)) throw tooLong(`${headerLength} ${major === 3 ? "bytes" : "characters"} long`);
  const header = new TextDecoder().decode(bytes.subarray(prefix, prefix + headerLength));
  const characters = major === 3 ? [...header].length : headerLength;
  if (characters > NPY_MAX_HEADER_CHARACTERS) throw tooLong(`${characters} characters long`);
  const values = npyHeaderDict(header, field);
  const descr = values.get("descr");
  const fortran = values.get("fortran_order");
  const shapeText = values.get("shape");
  const parsed = parseWith(
    npyHeaderSchema,
    {
      // A structured dtype's descr is a list of fields, not a string: kept as text, so that the error quotes it.
      descr: descr?.kind === "string" || descr?.kind === "list" ? descr.text : undefined,
      fortranOrder: fortran?.kind === "token" && (fortran.text === "True" || fortran.text === "False") ? fortran.text === "True" : undefined,
      shape: shapeText?.kind === "tuple" ? tupleItems(shapeText.text, `${field}.shape`, major < 3, header) : undefined,
    },
    field,
  );
  // A type string without byte order ('f4') is native, as NumPy reads it.
  const order = /^[<>|=]/.test(parsed.descr) ? parsed.descr[0] : "=";
  const kind = order === parsed.descr[0] ? parsed.descr.slice(1) : parsed.descr;
  const size = itemSize(kind);
  let count = 1;
  for (const dim of parsed.shape) count *= dim;
  const data = bytes.subarray(prefix + headerLength);
  if (!Number.isSafeInteger(count * size) || data.length !== count * size) {
    throw new BsrFormatError(field, `shape ${npyShapeText(parsed.shape)} of ${parsed.descr} needs ${count * size} bytes, the file holds ${data.length}`);
  }
  // A copy in a buffer of its own: `data` may view the caller's bytes (a stored member), and on a
  // Node Buffer `slice` is a view too, so swapping it in place would corrupt the caller's file.
  let out: Uint8Array<ArrayBuffer> = new Uint8Array(data);
  const width = kind[0] === "U" ? 4 : kind[0] === "S" ? 1 : size;
  // Typed arrays read the host's order: '<' and '>' elements are swapped where the host differs, '=' and '|' are native.
  if ((order === "<" && !littleEndianHost) || (order === ">" && littleEndianHost)) {
    for (let at = 0; at < out.length; at += width) out.subarray(at, at + width).reverse();
  }
  if (parsed.fortranOrder && parsed.shape.length > 1) out = fortranToC(out, parsed.shape, size);
  return { kind, descr: parsed.descr, shape: parsed.shape, bytes: out };
}

/**
 * Re-lays column-major (Fortran) element bytes in row-major (C) order, copying whole 4-, 2- or
 * 1-byte words through typed views (never a view per element: that took ~200 ns an element,
 * minutes for a large matrix). `bytes` starts a buffer of its own, so the views are aligned.
 */
function fortranToC(bytes: Uint8Array<ArrayBuffer>, shape: number[], size: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(bytes.length);
  const count = size === 0 ? 0 : bytes.length / size;
  if (count === 0) return out;
  const word = size % 4 === 0 ? 4 : size % 2 === 0 ? 2 : 1;
  const View = word === 4 ? Uint32Array : word === 2 ? Uint16Array : Uint8Array;
  const source = new View(bytes.buffer, bytes.byteOffset, bytes.length / word);
  const target = new View(out.buffer, 0, out.length / word);
  const words = size / word;
  // Element (i0, i1, ..., in) sits at i0 + d0 i1 + d0 d1 i2 ... in Fortran order.
  const strides: number[] = [];
  for (let axis = 0, stride = words; axis < shape.length; stride *= shape[axis++]) strides.push(stride);
  const last = shape.length - 1;
  const inner = shape[last];
  const innerStride = strides[last];
  const index = new Array(shape.length).fill(0);
  let base = 0;
  for (let c = 0; c < count * words; c += inner * words) {
    for (let i = 0, from = base, to = c; i < inner; i++, from += innerStride) {
      for (let w = 0; w < words; w++) target[to++] = source[from + w];
    }
    for (let axis = last - 1; axis >= 0; axis--) {
      if (++index[axis] < shape[axis]) {
        base += strides[axis];
        break;
      }
      base -= strides[axis] * (shape[axis] - 1);
      index[axis] = 0;
    }
  }
  return out;
}

/** The header of a `.npy` file, format 1.0, padded as NumPy pads it (10 + length a multiple of 64). */
function npyHeader(descr: string, shape: readonly number[]): string {
  const header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${npyShapeText(shape)}, }`;
  return `${header}${" ".repeat(63 - ((10 + header.length) % 64))}\n`;
}

/** One `.npy` file, format 1.0. */
function writeNpy(descr: string, shape: readonly number[], data: Uint8Array): Uint8Array {
  const header = npyHeader(descr, shape);
  const out = new Uint8Array(10 + header.length + data.length);
  out.set(NPY_MAGIC);
  out[6] = 1;
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), 10);
  out.set(data, 10 + header.length);
  return out;
}

function littleEndianBytes(array: Int32Array | Float32Array | BigInt64Array): Uint8Array {
  const bytes = new Uint8Array(array.buffer.slice(array.byteOffset, array.byteOffset + array.byteLength));
  if (!littleEndianHost) {
    for (let at = 0; at < bytes.length; at += array.BYTES_PER_ELEMENT) bytes.subarray(at, at + array.BYTES_PER_ELEMENT).reverse();
  }
  return bytes;
}

/**
 * The `scipy.sparse.save_npz` file of a matrix (a `bsr_matrix` for `load_npz`). SciPy has
 * no 16-bit floats, so float16 and bfloat16 values are widened (exactly) to float32.
 * Deflate-compressed like `save_npz`'s default unless `compressed: false`; a member of
 * 2 GiB - 4 MiB or more is stored, since fflate's deflate corrupts output past 2 GiB.
 */
export function encodeScipyNpz(matrix: BsrMatrix, options: { compressed?: boolean } = {}): Uint8Array {
  if (!(matrix instanceof BsrMatrix)) throw new BsrFormatError("matrix", "expected a BsrMatrix");
  checkOptionKeys(options, ["compressed"]);
  matrix.validate();
  const [rows, cols] = matrix.shape;
  const [blockHeight, blockWidth] = matrix.blockShape;
  // name, dtype, shape, item bytes, contents (made only once the sizes pass).
  const members: [string, string, number[], number, () => Uint8Array][] = [
    ["indices.npy", "<i4", [matrix.nnzBlocks], 4, () => littleEndianBytes(matrix.blockColIdx)],
    ["indptr.npy", "<i4", [matrix.blockRows + 1], 4, () => littleEndianBytes(matrix.blockRowPtr)],
    ["format.npy", "|S3", [], 3, () => new TextEncoder().encode("bsr")],
    ["shape.npy", "<i8", [2], 8, () => littleEndianBytes(BigInt64Array.from([BigInt(rows), BigInt(cols)]))],
    ["data.npy", "<f4", [matrix.nnzBlocks, blockHeight, blockWidth], 4, () => littleEndianBytes(matrix.valuesAsFloat32())],
  ];
  checkZip32Sizes(
    members.map(([name, descr, shape, itemBytes]) => [
      name,
      10 + npyHeader(descr, shape).length + shape.reduce((count, dim) => count * dim, itemBytes),
    ]),
    "save the matrix as safetensors instead (bsrMatricesToSafetensors, or saveBsrMatrices in Node), which has no such limit",
  );
  // null options are none, as undefined ones are.
  const level = options?.compressed === false ? 0 : 6;
  const files: Zippable = {};
  for (const [name, descr, shape, , contents] of members) {
    const npy = writeNpy(descr, shape, contents());
    files[name] = [npy, { level: deflateLevel(npy.length, level) }];
  }
  // A fixed timestamp keeps the bytes reproducible (np.savez stamps each member with the local time of the save).
  // A zip date is local fields with no zone, and fflate writes this Date's local fields: 1980-01-01 00:00, zip's
  // earliest date, in every zone (a Date made from UTC would date the members by the machine's zone).
  return zipSync(files, { mtime: new Date(1980, 0, 1) });
}

/** NumPy's integer dtypes, each with the typed array that holds it. */
const INDEX_ARRAYS: Record<string, { new (buffer: ArrayBufferLike): ArrayLike<number | bigint> }> = {
  i1: Int8Array,
  u1: Uint8Array,
  i2: Int16Array,
  u2: Uint16Array,
  i4: Int32Array,
  u4: Uint32Array,
  i8: BigInt64Array,
  u8: BigUint64Array,
};

/**
 * A 1-D array of any integer dtype, as SciPy casts index arrays and the shape of any integer dtype
 * (SciPy refuses index arrays of any other rank, so nothing is flattened); `what` it holds names it in messages.
 */
function toIntegerArray(array: NpyArray, field: string, what: string): ArrayLike<number | bigint> {
  if (array.shape.length !== 1) throw new BsrFormatError(field, `expected a 1-D array, got shape ${npyShapeText(array.shape)}`);
  if (!Object.hasOwn(INDEX_ARRAYS, array.kind)) {
    throw new BsrFormatError(field, `expected integer ${what} (int8 to int64, uint8 to uint64), got ${describeDtype(array)}`);
  }
  const copy = array.bytes.buffer.slice(array.bytes.byteOffset, array.bytes.byteOffset + array.bytes.byteLength);
  return new INDEX_ARRAYS[array.kind](copy);
}

/**
 * Index values cast to int32, the index type of a BsrMatrix, as SciPy casts narrower or unsigned ones: a value
 * int32 cannot hold (a uint32 or 64-bit one past 2^31 - 1) is refused at its place, never wrapped around.
 * Negative values are left to BsrPattern, which names each one with its meaning.
 */
function toInt32Indices(values: ArrayLike<number | bigint>, field: string): Int32Array {
  if (values instanceof Int32Array) return values;
  const out = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const value = values[i];
    if (value < -(2 ** 31) || value >= 2 ** 31) throw new BsrFormatError(field, `${value} does not fit int32`, i);
    out[i] = Number(value);
  }
  return out;
}

/** The longest format.npy string decoded: SciPy's formats are three letters, and a longer string is named by its length. */
const MAX_FORMAT_CHARACTERS = 64;

function npyString(array: NpyArray, field: string): string {
  // SciPy reads it with .item(): any shape of one element, () as save_npz writes it or (1,).
  if (array.shape.some((size) => size !== 1)) throw new BsrFormatError(field, `expected a single string, got shape ${npyShapeText(array.shape)}`);
  const width = array.kind[0] === "S" ? 1 : array.kind[0] === "U" ? 4 : 0;
  if (width === 0) throw new BsrFormatError(field, `expected a string, got ${describeDtype(array)}`);
  // NumPy drops the trailing NULs that pad a string to its width, and keeps any other.
  const { bytes } = array;
  let last = bytes.length - 1;
  while (last >= 0 && bytes[last] === 0) last--;
  const length = Math.ceil((last + 1) / width);
  // Counted before anything is decoded: a string of hundreds of millions of characters is longer than JavaScript holds.
  if (length > MAX_FORMAT_CHARACTERS) {
    throw new BsrFormatError(field, `holds a string of ${length} characters, which names no sparse format`);
  }
  if (width === 1) return new TextDecoder().decode(bytes.subarray(0, length));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let text = "";
  for (let at = 0; at < length * 4; at += 4) {
    const code = view.getUint32(at, littleEndianHost);
    if (code > 0x10ffff) throw new BsrFormatError(field, `character ${at / 4} is ${code}, not a Unicode code point`);
    text += String.fromCodePoint(code);
  }
  return text;
}

/** The typed array of each bool and integer dtype SciPy stores data in (a mask, counts). */
const INTEGER_ARRAYS: Record<string, { new (buffer: ArrayBufferLike): ArrayLike<number | bigint> }> = { b1: Uint8Array, ...INDEX_ARRAYS };

/**
 * A 64-bit integer rounded to float32 once, as NumPy casts it: through float64 first it rounded twice
 * (2^60 + 2^36 + 1 -> 2^60 + 2^36, a float32 tie -> 2^60). Past 2^53 the value is first cut to 26
 * significant bits, the last one set if any bit below was (round to odd), which float64 holds exactly.
 */
function bigintToFloat32(value: bigint): number {
  const magnitude = value < 0n ? -value : value;
  if (magnitude < 2n ** 53n) return Number(value);
  const shift = BigInt(magnitude.toString(2).length - 26);
  let top = magnitude >> shift;
  if (top << shift !== magnitude) top |= 1n;
  const rounded = Number(top) * 2 ** Number(shift);
  return value < 0n ? -rounded : rounded;
}

/** Bool (any non-zero byte is True, as NumPy reads it) and integer data as float32, each rounded once past 2^24 as NumPy rounds it. */
function integersAsFloat32(kind: string, raw: ArrayBufferLike): Float32Array {
  const source = new INTEGER_ARRAYS[kind](raw);
  const out = new Float32Array(source.length);
  for (let i = 0; i < source.length; i++) {
    const value = source[i];
    out[i] = kind === "b1" ? (value !== 0 ? 1 : 0) : typeof value === "bigint" ? bigintToFloat32(value) : value;
  }
  return out;
}

/** The members of a `scipy.sparse.save_npz` archive that decodeScipyNpz reads (and encodeScipyNpz writes). */
export const SCIPY_NPZ_MEMBERS = Object.freeze(["data.npy", "indices.npy", "indptr.npy", "shape.npy", "format.npy"] as const);
type ScipyMember = (typeof SCIPY_NPZ_MEMBERS)[number];

/**
 * The member np.load reads for each of SciPy's arrays, by the name it has in the archive: for `data` it reads a
 * member named `data` itself when there is one, else `data.npy`. An archive holding both is refused: readers that
 * look for `data.npy` alone read the other one.
 */
function scipyMembers(bytes: Uint8Array): Map<ScipyMember, { name: string; bytes: Uint8Array }> {
  const found = unzipMembers(bytes, new Set(SCIPY_NPZ_MEMBERS.flatMap((name) => [name, name.slice(0, -".npy".length)])));
  const members = new Map<ScipyMember, { name: string; bytes: Uint8Array }>();
  for (const name of SCIPY_NPZ_MEMBERS) {
    const bare = name.slice(0, -".npy".length);
    const [plain, npy] = [found.get(bare), found.get(name)];
    if (plain !== undefined && npy !== undefined) {
      throw new BsrFormatError(bare, `the archive holds both ${bare} and ${name}, and np.load reads ${bare} (which is meant is ambiguous)`);
    }
    if (plain !== undefined) members.set(name, { name: bare, bytes: plain });
    else if (npy !== undefined) members.set(name, { name, bytes: npy });
  }
  return members;
}

/**
 * A matrix from a `scipy.sparse.save_npz` file holding a BSR matrix (or a CSR one, read
 * as 1 x 1 blocks). float32 and float16 data keep their dtype; float64 is rounded to float32,
 * and bool and integer data (a mask, counts) are read as float32.
 * Unsorted block rows are sorted (as SciPy's `sort_indices()` does); a repeated block is refused.
 */
export function decodeScipyNpz(bytes: Uint8Array): BsrMatrix {
  if (!(bytes instanceof Uint8Array)) throw new BsrFormatError("bytes", "expected a Uint8Array");
  const files = scipyMembers(bytes);
  const field = (name: ScipyMember) => files.get(name)?.name ?? name;
  // The format first: a coo or dia archive lacks indices.npy, and saying so would hide what it holds.
  const formatFile = files.get("format.npy");
  const format = formatFile === undefined ? undefined : npyString(readNpy(formatFile.bytes, formatFile.name), formatFile.name);
  if (format !== undefined && format !== "bsr" && format !== "csr") {
    throw new BsrFormatError(field("format.npy"), `the archive holds a ${JSON.stringify(format)} matrix; only bsr and csr are read`);
  }
  for (const name of SCIPY_NPZ_MEMBERS) {
    if (!files.has(name)) {
      const names = zipMemberNames(bytes);
      const more = names.length > 20 ? ` and ${names.length - 20} more` : "";
      const held = names.length === 0 ? "nothing" : `${names.slice(0, 20).join(", ")}${more}`;
      throw new BsrFormatError(name, `missing from the archive, which holds ${held} (scipy.sparse.save_npz writes data, indices, indptr, shape and format)`);
    }
  }
  const read = (name: ScipyMember) => readNpy(files.get(name)!.bytes, field(name));
  const shapeArray = toIntegerArray(read("shape.npy"), field("shape.npy"), "dimensions");
  // Counted before the values are copied out: millions of 64-bit ones would each become a BigInt.
  if (shapeArray.length !== 2) throw new BsrFormatError(field("shape.npy"), `expected 2 dimensions, got ${shapeArray.length}`);
  const shapeRead: (number | bigint)[] = Array.from(shapeArray);
  const shapeValues = shapeRead.map(Number);
  if (!(shapeValues[0] > 0 && shapeValues[1] > 0)) {
    throw new BsrFormatError(field("shape.npy"), `the matrix is ${shapeValues.join(" x ")}; a BsrMatrix has at least one row and one column`);
  }
  if (!shapeValues.every(Number.isSafeInteger)) {
    throw new BsrFormatError(field("shape.npy"), `the matrix is ${shapeRead.join(" x ")}; a BsrMatrix has dimensions of 1 to 2^53 - 1`);
  }
  const data = read("data.npy");
  const expectedDims = format === "bsr" ? 3 : 1;
  if (data.shape.length !== expectedDims) {
    throw new BsrFormatError(field("data.npy"), `a ${format} matrix has ${expectedDims}-D data, got shape ${npyShapeText(data.shape)}`);
  }
  const dataShape: [number, number, number] = format === "bsr" ? [data.shape[0], data.shape[1], data.shape[2]] : [data.shape[0], 1, 1];
  const raw = data.bytes.buffer.slice(data.bytes.byteOffset, data.bytes.byteOffset + data.bytes.byteLength);
  let values: Float32Array | Uint16Array;
  let dtype: "float32" | "float16";
  if (data.kind === "f4") [values, dtype] = [new Float32Array(raw), "float32"];
  else if (data.kind === "f2") [values, dtype] = [new Uint16Array(raw), "float16"];
  else if (data.kind === "f8") [values, dtype] = [Float32Array.from(new Float64Array(raw)), "float32"];
  else if (Object.hasOwn(INTEGER_ARRAYS, data.kind)) [values, dtype] = [integersAsFloat32(data.kind, raw), "float32"];
  else throw new BsrFormatError(field("data.npy"), `expected bool, integer or float (16, 32 or 64-bit) data, got ${describeDtype(data)}`);
  const indptr = toInt32Indices(toIntegerArray(read("indptr.npy"), field("indptr.npy"), "offsets"), "indptr");
  const indices = toInt32Indices(toIntegerArray(read("indices.npy"), field("indices.npy"), "indices"), "indices");
  sortBlockRows(indptr, indices, shapeValues[1] / dataShape[2], values, dataShape[1] * dataShape[2]);
  try {
    return BsrMatrix.fromScipy({ indptr, indices, data: values, dataShape, shape: [shapeValues[0], shapeValues[1]], dtype });
  } catch (error) {
    // fromScipy names its arguments (scipy.dataShape, dataShape, the blockShape data's dimensions 1 and 2 give): say which array of the archive holds the value.
    if (!(error instanceof BsrFormatError) || !["scipy.dataShape", "dataShape", "blockShape"].includes(error.field)) throw error;
    const position = error.field === "blockShape" && error.position !== undefined ? error.position + 1 : error.position;
    const dimension = position === undefined ? "" : `, dimension ${position}`;
    throw new BsrFormatError(field("data.npy"), `its shape ${npyShapeText(data.shape)}${dimension}: ${error.detail}`);
  }
}

/**
 * SciPy saves rows whose column indices are unsorted (`has_sorted_indices` false, after some
 * arithmetic): sorts each such block row and permutes its data blocks to match, in place, as
 * `sort_indices()` does. A sorted row costs one comparison per block; a block column listed
 * twice in a row is refused. A malformed `indptr`, or a column outside [0, blockCols), stops the
 * sort, so that `fromScipy` reports it at its place in the file rather than where sorting moved it.
 */
function sortBlockRows(indptr: Int32Array, indices: Int32Array, blockCols: number, data: Float32Array | Uint16Array, blockSize: number): void {
  const rows = indptr.length - 1;
  if (rows < 0 || indptr[0] !== 0 || indptr[rows] !== indices.length || data.length !== indices.length * blockSize) return;
  for (let row = 0; row < rows; row++) {
    const start = indptr[row];
    const end = indptr[row + 1];
    if (end < start || end > indices.length) return;
    let sorted = true;
    for (let k = start; k < end; k++) {
      if (!(indices[k] >= 0 && indices[k] < blockCols)) return;
      if (k > start && indices[k] <= indices[k - 1]) sorted = false;
    }
    if (sorted) continue;
    const columns = indices.slice(start, end);
    const blocks = data.slice(start * blockSize, end * blockSize);
    const order = Array.from(columns.keys()).sort((a, b) => columns[a] - columns[b] || a - b);
    for (let i = 0; i < order.length; i++) {
      const from = order[i];
      if (i > 0 && columns[from] === columns[order[i - 1]]) {
        throw new BsrFormatError("indices", `block row ${row} lists block column ${columns[from]} twice (scipy's sum_duplicates() merges them)`, start + from);
      }
      indices[start + i] = columns[from];
      data.set(blocks.subarray(from * blockSize, (from + 1) * blockSize), (start + i) * blockSize);
    }
  }
}
