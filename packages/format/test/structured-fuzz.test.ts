import { strToU8, zipSync } from "fflate";
import { describe, expect, it } from "vitest";
import { getBsrMatrices } from "../src/bsr-safetensors.js";
import { BsrFormatError } from "../src/errors.js";
import { BsrMatrix } from "../src/matrix.js";
import { decodeScipyNpz } from "../src/npz.js";
import { SeededRandom } from "../src/random.js";
import { decodeSafetensors, encodeSafetensors } from "../src/safetensors.js";

/**
 * Structure-aware fuzzing of the file readers: valid files from our own writers, with one
 * mutation that knows the format (a header field set to an edge value, a truncation at a region
 * boundary, a .npy member rewritten as NumPy may write it). Every case has an oracle: the reader
 * returns exactly what the file says (an independent reference decoder's answer, or the original
 * matrix) or throws a BsrFormatError; anything else (RangeError, TypeError, wrong data) fails.
 */

const CASES = Number(process.env.BLOCKSPARSE_STRUCTURED_FUZZ_CASES ?? 400);

const MATRICES = [
  BsrMatrix.random([8, 12], { blockShape: [2, 3], density: 0.5, seed: 1 }),
  BsrMatrix.random([16, 16], { blockShape: [4, 4], density: 0.25, seed: 2, dtype: "float16" }),
  BsrMatrix.random([6, 4], { blockShape: [1, 1], density: 0.6, seed: 3, dtype: "bfloat16" }),
  BsrMatrix.random([4, 8], { blockShape: [4, 8], density: 1, seed: 4 }),
];

const SIZES: Record<string, number> = { F4: 0.5, F6_E2M3: 0.75, F6_E3M2: 0.75, F8_E5M2: 1, F8_E4M3: 1, F8_E8M0: 1, F8_E4M3FNUZ: 1, F8_E5M2FNUZ: 1, BOOL: 1, U8: 1, I8: 1, I16: 2, U16: 2, F16: 2, BF16: 2, I32: 4, U32: 4, F32: 4, F64: 8, I64: 8, U64: 8, C64: 8 };
const EDGE_NUMBERS: unknown[] = [-1, -8, 0, 1, 3, 2 ** 31, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 64, 1e300, 1.5, -0.5, "4", null, true, [], {}];
const DTYPES: unknown[] = ["F32", "F16", "BF16", "I32", "I64", "U8", "F64", "C64", "F4", "F6_E2M3", "F8_E4M3", "f32", "", "__proto__", 5, null];

type Verdict = "ok" | string;

function classify(action: () => Verdict): Verdict {
  try {
    return action();
  } catch (error) {
    if (error instanceof BsrFormatError) return "ok";
    return `threw ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`;
  }
}

/** The safetensors rules, written independently of the reader: the layout of a file they allow, undefined for one they refuse. */
function referenceLayout(bytes: Uint8Array, repeatedKey: boolean): { header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>; dataStart: number } | undefined {
  if (bytes.length < 8) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(view.getBigUint64(0, true));
  if (n > bytes.length - 8 || n > 100_000_000) return undefined;
  let text: string;
  let header: Record<string, unknown>;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n));
    header = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (header === null || typeof header !== "object" || Array.isArray(header) || repeatedKey) return undefined;
  const dataLength = bytes.length - 8 - n;
  const ranges: [number, number][] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (info === null) continue;
      if (typeof info !== "object" || Array.isArray(info) || !Object.values(info as object).every((v) => typeof v === "string")) return undefined;
      continue;
    }
    if (info === null || typeof info !== "object") return undefined;
    const { dtype, shape, data_offsets } = info as Record<string, unknown>;
    if (typeof dtype !== "string" || !Object.hasOwn(SIZES, dtype)) return undefined;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) return undefined;
    if (!Array.isArray(data_offsets) || data_offsets.length !== 2 || !data_offsets.every((d) => Number.isSafeInteger(d) && d >= 0)) return undefined;
    const [begin, end] = data_offsets as number[];
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    if (end < begin || end > dataLength || end - begin !== count * SIZES[dtype] || !Number.isInteger(count * SIZES[dtype])) return undefined;
    ranges.push([begin, end]);
  }
  ranges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let at = 0;
  for (const [begin, end] of ranges) {
    if (begin !== at) return undefined;
    at = end;
  }
  if (at !== dataLength) return undefined;
  return { header: header as never, dataStart: 8 + n };
}

function safetensorsSeed(matrix: BsrMatrix, i: number): Uint8Array {
  const torch = matrix.toTorch();
  const valuesDType = ({ float32: "F32", float16: "F16", bfloat16: "BF16" } as const)[matrix.dtype];
  const tensors = new Map([
    ["w.crow_indices", { dtype: "I32" as const, shape: [torch.crowIndices.length], data: torch.crowIndices }],
    ["w.col_indices", { dtype: "I32" as const, shape: [torch.colIndices.length], data: torch.colIndices }],
    ["w.values", { dtype: valuesDType, shape: [...torch.valuesShape], data: torch.values } as never],
    ["bias", { dtype: "I64" as const, shape: [2], data: BigInt64Array.from([1n, BigInt(-i)]) }],
    ["empty", { dtype: "F64" as const, shape: [0, 3], data: new Float64Array(0) }],
  ]);
  const metadata = { "w.layout": "bsr", "w.layout_version": "1", "w.shape": matrix.shape.join(","), "w.block_shape": matrix.blockShape.join(","), "w.dtype": matrix.dtype };
  return encodeSafetensors(tensors, metadata);
}

function withHeader(bytes: Uint8Array, text: string, dataStart: number, lengthOverride?: bigint): Uint8Array {
  const json = strToU8(text);
  const out = new Uint8Array(8 + json.length + bytes.length - dataStart);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(bytes.subarray(dataStart), 8 + json.length);
  return out;
}

const pick = <T>(random: SeededRandom, items: readonly T[]): T => items[Math.floor(random.next() * items.length)];

/** One structure-aware mutation of a valid safetensors file. */
function mutateSafetensors(bytes: Uint8Array, random: SeededRandom): { bytes: Uint8Array; repeatedKey?: boolean } {
  const out = mutateSafetensorsBytes(bytes, random);
  return out instanceof Uint8Array ? { bytes: out } : out;
}

function mutateSafetensorsBytes(bytes: Uint8Array, random: SeededRandom): Uint8Array | { bytes: Uint8Array; repeatedKey: boolean } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const dataStart = 8 + n;
  const text = new TextDecoder().decode(bytes.subarray(8, dataStart));
  const header = JSON.parse(text) as Record<string, Record<string, unknown>>;
  const names = Object.keys(header).filter((name) => name !== "__metadata__");
  const name = pick(random, names);
  const info = header[name];
  switch (Math.floor(random.next() * 10)) {
    case 0: {
      // Truncation at a region boundary (or one byte either side).
      const cuts = [0, 4, 7, 8, 9, dataStart - 1, dataStart, bytes.length - 1];
      for (const entry of Object.values(header)) if (Array.isArray(entry.data_offsets)) cuts.push(...(entry.data_offsets as number[]).map((o) => dataStart + o));
      const cut = pick(random, cuts) + Math.floor(random.next() * 3) - 1;
      return bytes.slice(0, Math.max(0, Math.min(bytes.length, cut)));
    }
    case 1: {
      // The declared header length: off by a little, huge, past the file.
      const length = pick(random, [0n, 1n, BigInt(n - 1), BigInt(n + 1), BigInt(bytes.length), 2n ** 32n + BigInt(n), 2n ** 63n, 2n ** 64n - 1n]);
      return withHeader(bytes, text, dataStart, length);
    }
    case 2: {
      const shape = (info.shape as number[]).slice();
      if (shape.length > 0 && random.next() < 0.7) shape[Math.floor(random.next() * shape.length)] = pick(random, EDGE_NUMBERS) as number;
      else shape.push(pick(random, [0, 1, 2]));
      info.shape = shape;
      break;
    }
    case 3: {
      const offsets = (info.data_offsets as number[]).slice();
      offsets[Math.floor(random.next() * 2)] = random.next() < 0.5 ? (pick(random, EDGE_NUMBERS) as number) : offsets[0] + Math.floor(random.next() * 17) - 8;
      info.data_offsets = offsets;
      break;
    }
    case 4: {
      // Two tensors swap or share ranges.
      const other = header[pick(random, names)];
      const mine = info.data_offsets;
      info.data_offsets = other.data_offsets;
      if (random.next() < 0.5) other.data_offsets = mine;
      break;
    }
    case 5:
      info.dtype = pick(random, DTYPES);
      break;
    case 6: {
      // A repeated key: top level or inside one tensor's object.
      const json = JSON.stringify(header);
      const duplicated =
        random.next() < 0.5
          ? json.replace("{", `{${JSON.stringify(name)}:${JSON.stringify(info)},`)
          : json.replace(`${JSON.stringify(name)}:{`, `${JSON.stringify(name)}:{"dtype":${JSON.stringify(info.dtype)},`);
      return { bytes: withHeader(bytes, duplicated, dataStart), repeatedKey: true };
    }
    case 7: {
      // A name that is not UTF-8, or a byte of the header replaced.
      const json = strToU8(JSON.stringify(header));
      const at = random.next() < 0.5 ? json.indexOf(0x22, 2) + 1 : Math.floor(random.next() * json.length);
      json[at] = pick(random, [0x80, 0xc3, 0xff, 0xed, 0x00, 0x22, 0x5c, 0x7b]);
      const out = new Uint8Array(8 + json.length + bytes.length - dataStart);
      new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
      out.set(json, 8);
      out.set(bytes.subarray(dataStart), 8 + json.length);
      return out;
    }
    case 8: {
      const metadata = header.__metadata__ as Record<string, unknown>;
      const key = pick(random, Object.keys(metadata));
      const value = pick(random, ["0,0", "-4,6", "99999999999999999999,3", "4,6", "1,1", "", "bsr", "2", "float64", "int8", " 8 , 12 ", "8,12,1"]);
      const roll = random.next();
      if (roll < 0.2) metadata[key] = pick(random, [1, null, ["x"], {}]) as never;
      else if (roll < 0.4) header.__metadata__ = pick(random, [null, [], "x", 3]) as never;
      else metadata[key] = value;
      break;
    }
    default: {
      // Data bytes changed: the reader cannot tell, and must return them as they are.
      const out = bytes.slice();
      if (out.length > dataStart) out[dataStart + Math.floor(random.next() * (out.length - dataStart))] ^= 0xff;
      return out;
    }
  }
  const json = JSON.stringify(header);
  return withHeader(bytes, json + " ".repeat((8 - (json.length % 8)) % 8), dataStart);
}

function checkSafetensors({ bytes, repeatedKey = false }: { bytes: Uint8Array; repeatedKey?: boolean }): Verdict {
  const expected = referenceLayout(bytes, repeatedKey);
  return classify(() => {
    const content = decodeSafetensors(bytes);
    if (expected === undefined) return "accepted a file the format refuses";
    const names = Object.keys(expected.header).filter((name) => name !== "__metadata__");
    if (content.tensors.size !== names.length) return `read ${content.tensors.size} tensors, the header lists ${names.length}`;
    for (const name of names) {
      const info = expected.header[name];
      const tensor = content.tensors.get(name);
      if (tensor === undefined || tensor.dtype !== info.dtype || JSON.stringify(tensor.shape) !== JSON.stringify(info.shape)) return `${name}: wrong dtype or shape`;
      const got = new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
      const want = bytes.subarray(expected.dataStart + info.data_offsets[0], expected.dataStart + info.data_offsets[1]);
      if (got.length !== want.length || got.some((byte, i) => byte !== want[i])) return `${name}: wrong bytes`;
    }
    // The matrices on top: either read or refused with a BsrFormatError.
    getBsrMatrices(content);
    return "ok";
  });
}

// ---------------------------------------------------------------- .npz

function npy(descr: string, shape: string, data: Uint8Array, options: { fortran?: string; version?: number; extra?: string } = {}): Uint8Array {
  const version = options.version ?? 1;
  const prefix = version === 1 ? 10 : 12;
  let header = `{'descr': '${descr}', 'fortran_order': ${options.fortran ?? "False"}, 'shape': ${shape}, ${options.extra ?? ""}}`;
  while ((prefix + header.length + 1) % 64 !== 0) header += " ";
  header += "\n";
  const out = new Uint8Array(prefix + header.length + data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]);
  const view = new DataView(out.buffer);
  if (version === 1) view.setUint16(8, header.length, true);
  else view.setUint32(8, header.length, true);
  out.set(strToU8(header), prefix);
  out.set(data, prefix + header.length);
  return out;
}

const shapeText = (shape: readonly number[]) => (shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(", ")})`);

function swapped(bytes: Uint8Array, width: number): Uint8Array {
  const out = bytes.slice();
  for (let at = 0; at < out.length; at += width) out.subarray(at, at + width).reverse();
  return out;
}

/** Row-major elements of `shape` (each `width` bytes) re-laid in column-major order. */
function toFortran(bytes: Uint8Array, shape: readonly number[], width: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  const count = shape.reduce((a, b) => a * b, 1);
  for (let c = 0; c < count; c++) {
    let rest = c;
    const index: number[] = [];
    for (let axis = shape.length - 1; axis >= 0; axis--) {
      index[axis] = rest % shape[axis];
      rest = Math.floor(rest / shape[axis]);
    }
    let f = 0;
    for (let axis = shape.length - 1; axis >= 0; axis--) f = f * shape[axis] + index[axis];
    out.set(bytes.subarray(c * width, (c + 1) * width), f * width);
  }
  return out;
}

const bytesOf = (array: { buffer: ArrayBufferLike; byteOffset: number; byteLength: number }) => new Uint8Array(array.buffer, array.byteOffset, array.byteLength).slice();

interface NpzCase {
  bytes: Uint8Array;
  /** "same": must read as the original; "reject": must throw a BsrFormatError; "either": one of the two. */
  expect: "same" | "reject" | "either";
  what: string;
}

/** The members of a matrix's .npz, each a valid .npy in some layout NumPy writes. */
function npzMembers(matrix: BsrMatrix, random: SeededRandom, what: string[]): Record<string, Uint8Array> {
  const scipy = matrix.toScipy();
  const data = Float32Array.from(matrix.valuesAsFloat32());
  const dataShape = [...scipy.dataShape];
  const variant = (name: string, descr: string, shape: number[], raw: Uint8Array, width: number): Uint8Array => {
    const choice = Math.floor(random.next() * 5);
    const version = pick(random, [1, 2, 3]);
    if (choice === 1 && width > 1) {
      what.push(`${name} big-endian`);
      return npy(`>${descr.slice(1)}`, shapeText(shape), swapped(raw, width), { version });
    }
    if (choice === 2 && shape.length > 1) {
      what.push(`${name} fortran`);
      return npy(descr, shapeText(shape), toFortran(raw, shape, width), { fortran: "True", version });
    }
    if (choice === 3 && shape.length > 1 && width > 1) {
      what.push(`${name} big-endian fortran`);
      return npy(`>${descr.slice(1)}`, shapeText(shape), swapped(toFortran(raw, shape, width), width), { fortran: "True", version });
    }
    return npy(descr, shapeText(shape), raw, { version });
  };
  const wide = random.next() < 0.5;
  const dataDescr = pick(random, ["<f4", "<f8"]);
  const dataRaw = dataDescr === "<f8" ? bytesOf(Float64Array.from(data)) : bytesOf(data);
  return {
    "data.npy": variant("data", dataDescr, dataShape, dataRaw, dataDescr === "<f8" ? 8 : 4),
    "indices.npy": variant("indices", wide ? "<i8" : "<i4", [scipy.indices.length], wide ? bytesOf(BigInt64Array.from(scipy.indices, BigInt)) : bytesOf(scipy.indices), wide ? 8 : 4),
    "indptr.npy": variant("indptr", wide ? "<i8" : "<i4", [scipy.indptr.length], wide ? bytesOf(BigInt64Array.from(scipy.indptr, BigInt)) : bytesOf(scipy.indptr), wide ? 8 : 4),
    "shape.npy": variant("shape", "<i8", [2], bytesOf(BigInt64Array.from(scipy.shape, BigInt)), 8),
    "format.npy": npy("|S3", "()", strToU8("bsr")),
  };
}

/** Central directory entries of a zip written by fflate: where each sits. */
function centralEntries(zip: Uint8Array): { at: number; name: string; localAt: number }[] {
  const view = new DataView(zip.buffer, zip.byteOffset, zip.byteLength);
  const end = zip.length - 22;
  const count = view.getUint16(end + 10, true);
  let at = view.getUint32(end + 16, true);
  const out = [];
  for (let i = 0; i < count; i++) {
    const nameLength = view.getUint16(at + 28, true);
    out.push({ at, name: new TextDecoder().decode(zip.subarray(at + 46, at + 46 + nameLength)), localAt: view.getUint32(at + 42, true) });
    at += 46 + nameLength + view.getUint16(at + 30, true) + view.getUint16(at + 32, true);
  }
  return out;
}

function npzCase(matrix: BsrMatrix, random: SeededRandom): NpzCase {
  const what: string[] = [];
  const members = npzMembers(matrix, random, what);
  const level = random.next() < 0.5 ? 0 : 6;
  const zip = () => zipSync(Object.fromEntries(Object.entries(members).map(([name, file]) => [name, [file, { level }]])), { mtime: new Date(1980, 0, 1) });
  const kind = Math.floor(random.next() * 9);
  if (kind <= 2) return { bytes: zip(), expect: "same", what: what.join(", ") || "valid" };
  const member = pick(random, Object.keys(members));
  if (kind === 3) {
    // The member's .npy header rewritten as NumPy reads it (or refuses it), over its own valid data.
    const file = members[member];
    const prefix = file[6] === 1 ? 10 : 12;
    const fileView = new DataView(file.buffer, file.byteOffset);
    const headerLength = prefix === 10 ? fileView.getUint16(8, true) : fileView.getUint32(8, true);
    const header = new TextDecoder().decode(file.subarray(prefix, prefix + headerLength)).trimEnd();
    const data = file.subarray(prefix + headerLength);
    const descr = /'descr': '([^']*)'/.exec(header)![1];
    const wrongDescr = descr.endsWith("8") ? `${descr[0]}i8` : descr.endsWith("S3") ? "|S2" : `${descr[0]}i4`;
    const quirk = pick(random, [
      ["double quotes", header.replaceAll("'", '"'), "same"],
      ["no byte order", descr[0] === "<" ? header.replace(`'${descr}'`, `'${descr.slice(1)}'`) : header, "same"],
      ["repeated descr, first wrong", header.replace("{", `{'descr': '${wrongDescr}', `), "reject"],
      ["repeated descr, last wrong", header.replace(/}$/, `'descr': '${wrongDescr}'}`), "reject"],
      ["repeated fortran_order", header.replace(/}$/, "'fortran_order': True}"), "reject"],
      ["extra key", header.replace(/}$/, "'extra': 0}"), "reject"],
      ["empty shape item", header.replace(/\)/, ",,)"), "reject"],
      ["object dtype", header.replace(`'${descr}'`, "'|O'"), "reject"],
      ["complex dtype", header.replace(`'${descr}'`, "'<c8'"), "reject"],
      ["fortran_order not a bool", header.replace(/'fortran_order': (True|False)/, "'fortran_order': 1"), "reject"],
      ["huge shape", header.replace(/'shape': \([^)]*\)/, "'shape': (4294967296, 4294967296, 4294967296)"), "reject"],
      ["negative shape", header.replace(/'shape': \(/, "'shape': (-1, "), "reject"],
    ] as const);
    let text = `${quirk[1]}`;
    while ((prefix + text.length + 1) % 64 !== 0) text += " ";
    text += "\n";
    const out = new Uint8Array(prefix + text.length + data.length);
    out.set(file.subarray(0, 8));
    if (prefix === 10) new DataView(out.buffer).setUint16(8, text.length, true);
    else new DataView(out.buffer).setUint32(8, text.length, true);
    out.set(strToU8(text), prefix);
    out.set(data, prefix + text.length);
    members[member] = out;
    return { bytes: zip(), expect: quirk[2], what: `${member} header: ${quirk[0]}` };
  }
  if (kind === 4) {
    // The .npy truncated, or its declared header length changed.
    const file = members[member].slice();
    if (random.next() < 0.5) members[member] = file.subarray(0, Math.floor(random.next() * file.length));
    else {
      new DataView(file.buffer).setUint16(8, pick(random, [0, 1, 0xffff, file.length]), true);
      members[member] = file;
    }
    return { bytes: zip(), expect: "reject", what: `${member} truncated or header length changed` };
  }
  const bytes = zip();
  const view = new DataView(bytes.buffer);
  const entries = centralEntries(bytes);
  const entry = pick(random, entries);
  if (kind === 5) {
    // Sizes, CRC, method in the central directory (what the reader trusts).
    const field = pick(random, [
      ["crc", 16, 4],
      ["compressed size", 20, 4],
      ["size", 24, 4],
      ["method", 10, 2],
      ["local header offset", 42, 4],
    ] as const);
    const value = pick(random, [0, 1, 7, 12, 14, 99, 0xffff, 0x7fffffff, 0xfffffffe, 0xffffffff]);
    const old = field[2] === 4 ? view.getUint32(entry.at + field[1], true) : view.getUint16(entry.at + field[1], true);
    const next = field[2] === 4 ? value >>> 0 : value & 0xffff;
    if (next === old) return { bytes, expect: "same", what: "unchanged" };
    if (field[2] === 4) view.setUint32(entry.at + field[1], next, true);
    else view.setUint16(entry.at + field[1], next, true);
    // The local header (fflate writes its CRC and sizes there) now disagrees; another offset may land on another header.
    return { bytes, expect: field[0] === "local header offset" ? "either" : "reject", what: `central ${field[0]} of ${entry.name} = ${next}` };
  }
  if (kind === 6) {
    // The local header's own CRC and sizes: where they disagree with the central directory (which NumPy's readers
    // use) readers disagree, so they are refused, unless a data descriptor holds them (streaming writers zero them
    // and set flag bit 3) or a size reads 0xffffffff with no zip64 field to give it.
    if (random.next() < 0.25) {
      view.setUint16(entry.localAt + 6, view.getUint16(entry.localAt + 6, true) | 8, true);
      for (const offset of [14, 18, 22]) view.setUint32(entry.localAt + offset, 0, true);
      return { bytes, expect: "same", what: `local header of ${entry.name} deferring to a data descriptor` };
    }
    const offset = pick(random, [14, 18, 22]);
    const value = pick(random, [0, 0xffffffff, 12345]);
    view.setUint32(entry.localAt + offset, value, true);
    return { bytes, expect: offset !== 14 && value === 0xffffffff ? "same" : "reject", what: `local field ${offset} of ${entry.name} = ${value}` };
  }
  if (kind === 7) {
    // Truncation at a region boundary: a local header, a member's data, the central directory, the end record.
    const cuts = [0, 21, 22, bytes.length - 22, bytes.length - 1, entries[0].at, entry.at + 46];
    for (const e of entries) cuts.push(e.localAt, e.localAt + 30);
    const cut = pick(random, cuts) + Math.floor(random.next() * 3) - 1;
    return { bytes: bytes.slice(0, Math.max(0, Math.min(bytes.length - 1, cut))), expect: "reject", what: `truncated at ${cut}` };
  }
  // A member renamed with bytes that are not UTF-8, or a second copy of a member.
  if (random.next() < 0.5) {
    bytes[entry.at + 46] = pick(random, [0xff, 0x80, 0xc3]);
    return { bytes, expect: "reject", what: `central name of ${entry.name} not UTF-8` };
  }
  const files = Object.entries(members).map(([name, file]) => [name, file] as const);
  const duplicate = files.find(([name]) => name === member)!;
  // fflate keys by name, so the duplicate gets a placeholder name patched afterwards.
  const placeholder = `${"x".repeat(member.length - 4)}.npy`;
  const doubled = zipSync(Object.fromEntries([...files, [placeholder, duplicate[1]]].map(([name, file]) => [name, [file, { level }]])), { mtime: new Date(1980, 0, 1) });
  const text = strToU8(placeholder);
  for (let at = 0; at + text.length <= doubled.length; at++) {
    if (text.every((byte, i) => doubled[at + i] === byte)) doubled.set(strToU8(member), at);
  }
  return { bytes: doubled, expect: "reject", what: `${member} twice` };
}

function checkNpz(testCase: NpzCase, matrix: BsrMatrix): Verdict {
  let read: BsrMatrix;
  try {
    read = decodeScipyNpz(testCase.bytes);
  } catch (error) {
    if (!(error instanceof BsrFormatError)) return `${testCase.what}: threw ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`;
    return testCase.expect === "same" ? `${testCase.what}: refused (${error.message})` : "ok";
  }
  if (testCase.expect === "reject") return `${testCase.what}: accepted`;
  const want = matrix.toDense();
  const got = read.toDense();
  if (got.length !== want.length || got.some((v, i) => !Object.is(v, want[i]))) return `${testCase.what}: read different values`;
  return "ok";
}

describe("structure-aware fuzzing of the file readers", () => {
  it("safetensors: every mutated header is read exactly as the format says, or refused with a BsrFormatError", () => {
    const seeds = MATRICES.map(safetensorsSeed);
    const failures: string[] = [];
    for (let index = 0; index < CASES; index++) {
      const random = new SeededRandom(7919 * index + 1);
      const verdict = checkSafetensors(mutateSafetensors(seeds[index % seeds.length], random));
      if (verdict !== "ok") failures.push(`case ${index}: ${verdict}`);
    }
    expect(failures.slice(0, 10)).toEqual([]);
  }, 60_000);

  it("npz: NumPy's layouts read back exactly, damaged archives and headers are refused with a BsrFormatError", () => {
    const failures: string[] = [];
    for (let index = 0; index < CASES; index++) {
      const random = new SeededRandom(104729 * index + 3);
      const matrix = MATRICES[index % MATRICES.length];
      const verdict = checkNpz(npzCase(matrix, random), matrix);
      if (verdict !== "ok") failures.push(`case ${index}: ${verdict}`);
    }
    expect(failures.slice(0, 10)).toEqual([]);
  }, 60_000);
});
