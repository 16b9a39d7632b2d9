import { describe, expect, it } from "vitest";
import {
  BsrFormatError,
  bsrMatricesToSafetensors,
  decodeSafetensors,
  encodeSafetensors,
  type SafetensorsDType,
  type SafetensorsTensor,
  safetensorsDTypeSize,
} from "../src/index.js";
import { PYTHON_FILE_HEX, PYTHON_LAYOUT_HEX } from "./fixtures.js";
import { thrown } from "./helpers.js";

/** A file built by hand: 8-byte length, JSON header (padded with spaces), then `data`. */
function handMadeFile(header: unknown, data: Uint8Array | number[] = [], declaredLength?: number): Uint8Array {
  let json = JSON.stringify(header);
  while (json.length % 8 !== 0) json += " ";
  const text = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + text.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(declaredLength ?? text.length), true);
  out.set(text, 8);
  out.set(data, 8 + text.length);
  return out;
}

function rejects(bytes: Uint8Array, field: string, message: RegExp): void {
  const error = thrown(() => decodeSafetensors(bytes));
  expect(error).toBeInstanceOf(BsrFormatError);
  expect((error as BsrFormatError).field).toBe(field);
  expect(error.message).toMatch(message);
}

const f32Bytes = (values: number[]) => new Uint8Array(Float32Array.from(values).buffer);

describe("encodeSafetensors", () => {
  it("writes the real layout: u64 length, space-padded JSON, contiguous data widest first then by name", () => {
    const bytes = encodeSafetensors(
      {
        b: { dtype: "F16", shape: [3], data: Uint16Array.from([0x3c00, 0x4000, 0x4200]) },
        a: { dtype: "F32", shape: [2, 1], data: Float32Array.from([1.5, -2]) },
        c: { dtype: "I64", shape: [1], data: BigInt64Array.from([-5n]) },
        d: { dtype: "U8", shape: [0], data: new Uint8Array(0) },
      },
      { note: "hello" },
    );
    const view = new DataView(bytes.buffer);
    const headerLength = Number(view.getBigUint64(0, true));
    expect(headerLength % 8).toBe(0);
    const text = new TextDecoder().decode(bytes.subarray(8, 8 + headerLength));
    expect(text).toMatch(/^\{.*\} *$/);
    expect(JSON.parse(text)).toEqual({
      __metadata__: { note: "hello" },
      c: { dtype: "I64", shape: [1], data_offsets: [0, 8] },
      a: { dtype: "F32", shape: [2, 1], data_offsets: [8, 16] },
      b: { dtype: "F16", shape: [3], data_offsets: [16, 22] },
      d: { dtype: "U8", shape: [0], data_offsets: [22, 22] },
    });
    const data = bytes.subarray(8 + headerLength);
    expect(data.length).toBe(22);
    // Little-endian values, checked byte by byte.
    expect(new DataView(data.buffer, data.byteOffset).getBigInt64(0, true)).toBe(-5n);
    expect(new DataView(data.buffer, data.byteOffset).getFloat32(8, true)).toBe(1.5);
    expect(new DataView(data.buffer, data.byteOffset).getUint16(20, true)).toBe(0x4200);
  });

  it("lays tensors out as the reference writer does, byte for byte: by its dtype order, then by name in UTF-8 order", () => {
    // Same-width dtypes were ordered by name (a BSR matrix's I32 indices before its F32 values), names by UTF-16 units.
    const tensors: Record<string, SafetensorsTensor> = {
      "w.values": { dtype: "F32", shape: [1, 1, 2], data: Float32Array.from([1.5, -2]) },
      "w.col_indices": { dtype: "I32", shape: [1], data: Int32Array.from([1]) },
      "w.crow_indices": { dtype: "I32", shape: [2], data: Int32Array.from([0, 1]) },
      u: { dtype: "U64", shape: [1], data: BigUint64Array.from([7n]) },
      i: { dtype: "I64", shape: [1], data: BigInt64Array.from([-7n]) },
      f: { dtype: "F64", shape: [1], data: Float64Array.from([0.25]) },
      h: { dtype: "F16", shape: [1], data: Uint16Array.from([0x3c00]) },
      s: { dtype: "I16", shape: [1], data: Int16Array.from([-3]) },
      t: { dtype: "U16", shape: [1], data: Uint16Array.from([3]) },
      b: { dtype: "BOOL", shape: [1], data: Uint8Array.from([1]) },
      q: { dtype: "U8", shape: [1], data: Uint8Array.from([5]) },
      r: { dtype: "I8", shape: [1], data: Int8Array.from([-5]) },
      "\uff01": { dtype: "U8", shape: [1], data: Uint8Array.from([1]) },
      "\u{1f600}": { dtype: "U8", shape: [1], data: Uint8Array.from([2]) },
    };
    expect(Buffer.from(encodeSafetensors(tensors, { "w.shape": "1,4" })).toString("hex")).toBe(PYTHON_LAYOUT_HEX);
  });

  it("writes __metadata__ first, then the tensors in the data's order, also names that are integers (a ParameterList's '0', '1')", () => {
    const tensors = new Map<string, SafetensorsTensor>([
      ["b", { dtype: "F32", shape: [1], data: Float32Array.from([1]) }],
      ["1", { dtype: "I8", shape: [2], data: Int8Array.from([1, 2]) }],
      ["0", { dtype: "F32", shape: [1], data: Float32Array.from([2]) }],
    ]);
    // A JavaScript object lists integer-like keys first, in numeric order: the header read {"0":..,"1":..,"__metadata__":..,"b":..}.
    const expected =
      '{"__metadata__":{"k":"v"},"0":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"1":{"dtype":"I8","shape":[2],"data_offsets":[8,10]}}';
    const file = encodeSafetensors(tensors, { k: "v" });
    const headerText = (bytes: Uint8Array) => new TextDecoder().decode(bytes.subarray(8, 8 + Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true)))).trimEnd();
    expect(headerText(file)).toBe(expected);
    const decoded = decodeSafetensors(file);
    expect(Buffer.from(encodeSafetensors(decoded.tensors, decoded.metadata)).equals(Buffer.from(file))).toBe(true);
    // "" names a tensor for the reference reader, and a file holding one decodes: it is written back too.
    const empty = decodeSafetensors(encodeSafetensors({ "": { dtype: "U8", shape: [1], data: Uint8Array.from([7]) } }));
    expect(empty.tensors.get("")!.data).toEqual(Uint8Array.from([7]));
  });

  it("refuses a tensor name or metadata text holding a lone surrogate, which the reference reader refuses, naming it", () => {
    const tensor: SafetensorsTensor = { dtype: "F32", shape: [1], data: Float32Array.from([1]) };
    // JSON.stringify wrote these as `\ud800` escapes: the file read back here, but the Rust reader refused the header.
    const name = thrown(() => encodeSafetensors({ "w\ud800": tensor })) as BsrFormatError;
    expect(name).toBeInstanceOf(BsrFormatError);
    expect(name.message).toMatch(/^w\ud800: the tensor name "w\\ud800" holds a lone surrogate \(U\+D800\) at index 1/);
    const value = thrown(() => encodeSafetensors({ w: tensor }, { note: "x\udc01" })) as BsrFormatError;
    expect([value.field, value.message]).toEqual(["metadata.note", expect.stringContaining('the value "x\\udc01" holds a lone surrogate (U+DC01) at index 1')]);
    const key = thrown(() => encodeSafetensors({ w: tensor }, { "\ud83d": "v" })) as BsrFormatError;
    expect(key.message).toContain("the key");
    // A pair is one character (an emoji) and is written as UTF-8.
    const emoji = decodeSafetensors(encodeSafetensors({ "w\ud83d\ude00": tensor }, { note: "\ud83d\ude00" }));
    expect([...emoji.tensors.keys()]).toEqual(["w\u{1f600}"]);
    expect(emoji.metadata.note).toBe("\u{1f600}");
  });

  it("omits empty metadata", () => {
    const bytes = encodeSafetensors(new Map([["x", { dtype: "I32", shape: [], data: Int32Array.from([7]) }]]));
    const length = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + length)))).toEqual({
      x: { dtype: "I32", shape: [], data_offsets: [0, 4] },
    });
  });

  it("refuses tensors whose data does not match their dtype or shape", () => {
    const bad = (tensor: unknown, name = "t") => thrown(() => encodeSafetensors({ [name]: tensor as SafetensorsTensor }));
    expect((bad({ dtype: "F32", shape: [3], data: new Float32Array(2) }) as BsrFormatError).field).toBe("t.data");
    expect((bad({ dtype: "F32", shape: [2], data: new Float64Array(2) }) as BsrFormatError).field).toBe("t.data");
    expect((bad({ dtype: "F128", shape: [2], data: new Float32Array(2) }) as BsrFormatError).field).toBe("t.dtype");
    expect((bad({ dtype: "F32", shape: [-2], data: new Float32Array(2) }) as BsrFormatError).field).toBe("t.shape");
    expect((bad({ dtype: "F32", shape: [1], data: new Float32Array(1) }, "__metadata__") as BsrFormatError).field).toBe(
      "tensors",
    );
    const metadataError = thrown(() => encodeSafetensors({}, { n: 3 } as unknown as Record<string, string>));
    expect((metadataError as BsrFormatError).field).toBe("metadata.n");
  });

  it("safetensorsDTypeSize gives each dtype's bytes and refuses an unknown one, where it threw a TypeError or gave NaN", () => {
    expect(["F32", "BF16", "I64", "F4", "F6_E3M2", "C64", "BOOL"].map((dtype) => safetensorsDTypeSize(dtype as SafetensorsDType))).toEqual([4, 2, 8, 0.5, 0.75, 8, 1]);
    for (const dtype of ["F128", "f32", "toString", "__proto__"]) {
      const error = thrown(() => safetensorsDTypeSize(dtype as SafetensorsDType));
      expect(error).toBeInstanceOf(BsrFormatError);
      expect((error as BsrFormatError).field).toBe("dtype");
      expect(error.message).toContain(`unsupported dtype "${dtype}"`);
    }
  });

  it("refuses metadata given as a Map, whose entries were dropped from the file", () => {
    const error = thrown(() => encodeSafetensors({}, new Map([["format", "pt"]]) as unknown as Record<string, string>));
    expect(error).toBeInstanceOf(BsrFormatError);
    expect((error as BsrFormatError).field).toBe("metadata");
    expect(error.message).toContain("Map");
    const extra = { metadata: new Map([["format", "pt"]]) as unknown as Record<string, string> };
    expect((thrown(() => bsrMatricesToSafetensors({}, extra)) as BsrFormatError).field).toBe("metadata");
    expect(decodeSafetensors(encodeSafetensors({}, Object.fromEntries([["format", "pt"]]))).metadata).toEqual({ format: "pt" });
  });
});

describe("decodeSafetensors", () => {
  it("round-trips every dtype into fresh, aligned typed arrays", () => {
    const tensors: Record<string, SafetensorsTensor> = {
      f64: { dtype: "F64", shape: [2], data: Float64Array.from([Math.PI, -0]) },
      f32: { dtype: "F32", shape: [1, 3], data: Float32Array.from([1, Number.NaN, Number.NEGATIVE_INFINITY]) },
      f16: { dtype: "F16", shape: [1], data: Uint16Array.from([0x7bff]) },
      bf16: { dtype: "BF16", shape: [2], data: Uint16Array.from([0x3f80, 0xff80]) },
      i64: { dtype: "I64", shape: [2], data: BigInt64Array.from([-(2n ** 62n), 3n]) },
      u64: { dtype: "U64", shape: [1], data: BigUint64Array.from([2n ** 64n - 1n]) },
      i32: { dtype: "I32", shape: [3], data: Int32Array.from([-1, 0, 2 ** 31 - 1]) },
      u32: { dtype: "U32", shape: [1], data: Uint32Array.from([2 ** 32 - 1]) },
      i16: { dtype: "I16", shape: [1], data: Int16Array.from([-300]) },
      u16: { dtype: "U16", shape: [1], data: Uint16Array.from([65535]) },
      i8: { dtype: "I8", shape: [2], data: Int8Array.from([-128, 127]) },
      u8: { dtype: "U8", shape: [1], data: Uint8Array.from([255]) },
      bool: { dtype: "BOOL", shape: [2], data: Uint8Array.from([1, 0]) },
      f8: { dtype: "F8_E4M3", shape: [1], data: Uint8Array.from([0x38]) },
      empty: { dtype: "F32", shape: [0, 4], data: new Float32Array(0) },
      scalar: { dtype: "F32", shape: [], data: Float32Array.from([42]) },
    };
    const bytes = encodeSafetensors(tensors, { a: "1", "b.c": "x,y" });
    // Decode from an unaligned view inside a larger buffer, as Node's pooled Buffers are.
    const padded = new Uint8Array(bytes.length + 3);
    padded.set(bytes, 3);
    const decoded = decodeSafetensors(padded.subarray(3));
    expect(decoded.metadata).toEqual({ a: "1", "b.c": "x,y" });
    expect(new Set(decoded.tensors.keys())).toEqual(new Set(Object.keys(tensors)));
    for (const [name, tensor] of Object.entries(tensors)) {
      const read = decoded.tensors.get(name)!;
      expect(read.dtype).toBe(tensor.dtype);
      expect(read.shape).toEqual(tensor.shape);
      expect(read.data.constructor).toBe(tensor.data.constructor);
      expect(read.data).toEqual(tensor.data);
      expect(read.data.byteOffset).toBe(0);
      expect(read.data.buffer).not.toBe(padded.buffer);
    }
    expect(encodeSafetensors(decoded.tensors, decoded.metadata)).toEqual(bytes);
  });

  it("reads a file written by the Python safetensors library", () => {
    // A small Node Buffer is a view into a shared pool: decoding must still copy out exactly.
    const tensors = decodeSafetensors(Buffer.from(PYTHON_FILE_HEX, "hex"));
    expect(tensors.metadata["w.shape"]).toBe("4,6");
    expect(tensors.tensors.get("w.crow_indices")!.data).toEqual(BigInt64Array.from([0n, 1n, 2n]));
    expect(tensors.tensors.get("bias")!.data).toEqual(Float32Array.from([0.5, -1.5]));
    expect(tensors.tensors.get("w.values")!.shape).toEqual([2, 2, 2]);
    expect(Array.from(tensors.tensors.get("w.values")!.data as Uint16Array)).toEqual([
      0x3c00, 0x4000, 0x4200, 0x4400, 0x4500, 0x4600, 0x4700, 0x4800,
    ]);
  });

  const tensorAt = (begin: number, end: number, shape = [(end - begin) / 4]) => ({
    dtype: "F32",
    shape,
    data_offsets: [begin, end],
  });

  it("rejects a file too short to hold the length", () => {
    rejects(new Uint8Array(5), "header", /5 bytes.*8-byte header length/);
  });
  it("rejects a header that claims more bytes than the file has (truncated or lying)", () => {
    const good = handMadeFile({ x: tensorAt(0, 8) }, f32Bytes([1, 2]));
    rejects(good.subarray(0, 20), "header", /claims \d+ bytes but only 12 follow/);
    rejects(handMadeFile({}, [], 2 ** 40), "header", /claims 1099511627776 bytes/);
    const huge = new Uint8Array(16);
    new DataView(huge.buffer).setBigUint64(0, 2n ** 64n - 1n, true);
    rejects(huge, "header", /claims/);
  });
  it("rejects a truncated data buffer", () => {
    const good = handMadeFile({ x: tensorAt(0, 8) }, f32Bytes([1, 2]));
    rejects(good.subarray(0, good.length - 1), "x", /past the 7-byte data buffer/);
  });
  it("rejects a header that is not JSON, not UTF-8 or not an object", () => {
    const notJson = handMadeFile({});
    notJson.set(new TextEncoder().encode("{oops}  "), 8);
    rejects(notJson, "header", /JSON/);
    const notUtf8 = handMadeFile({ ab: "cd" });
    notUtf8[10] = 0xff;
    rejects(notUtf8, "header", /UTF-8/);
    rejects(handMadeFile([1, 2]), "header", /object/);
    rejects(handMadeFile(null), "header", /object/);
  });
  it("rejects bad tensor entries, naming the tensor", () => {
    rejects(handMadeFile({ w: { ...tensorAt(0, 8), dtype: "F128" } }, f32Bytes([1, 2])), "w.dtype", /unsupported dtype "F128"/);
    rejects(handMadeFile({ w: { ...tensorAt(0, 8), shape: [-2] } }, f32Bytes([1, 2])), "w.shape", /non-negative/);
    rejects(handMadeFile({ w: { dtype: "F32", shape: [2] } }, f32Bytes([1, 2])), "w.data_offsets", /begin, end/);
    rejects(handMadeFile({ w: 3 }, f32Bytes([1, 2])), "w", /dtype, shape, data_offsets/);
  });
  it("rejects offsets of the wrong size, reversed, overlapping, leaving gaps or past the end", () => {
    const data = f32Bytes([1, 2, 3, 4]);
    rejects(handMadeFile({ w: tensorAt(0, 16, [3]) }, data), "w", /span 16 bytes but F32 \[3\] needs 12/);
    rejects(handMadeFile({ w: tensorAt(8, 0, [0]) }, data), "w", /end before they begin/);
    rejects(handMadeFile({ a: tensorAt(0, 12), b: tensorAt(8, 16, [2]) }, data), "b", /overlap/);
    rejects(handMadeFile({ a: tensorAt(0, 4), b: tensorAt(8, 16) }, data), "b", /bytes \[4, 8\) unused/);
    rejects(handMadeFile({ a: tensorAt(0, 12) }, data), "header", /cover 12 bytes but the data buffer has 16/);
    rejects(handMadeFile({ a: tensorAt(0, 20) }, data), "a", /past the 16-byte data buffer/);
  });
  it("says what is wrong with an offset past 2^53 or negative, not 'Invalid input'", () => {
    // 2^64 - 1: a u64 the reference reader parses (then refuses as past the end); JSON.parse rounds it to a double.
    const huge = { w: { dtype: "F32", shape: [1], data_offsets: [0, 2 ** 64 - 1] } };
    rejects(handMadeFile(huge, f32Bytes([1])), "w.data_offsets", /^w\.data_offsets\[1\]: expected a non-negative integer byte offset \(at most 2\^53 - 1\)$/);
    rejects(handMadeFile({ w: { dtype: "F32", shape: [1], data_offsets: [-4, 0] } }, f32Bytes([1])), "w.data_offsets", /^w\.data_offsets\[0\]: expected a non-negative integer byte offset/);
  });
  it("says that a shape dimension past 2^53 - 1 is refused for its size (the reference reader reads [2^53 + 1, 0]), not that it is no integer", () => {
    // JSON.stringify writes 2^64 as 18446744073709552000: an integer the reference reader reads, and JavaScript cannot hold exactly.
    const file = handMadeFile({ w: { dtype: "F32", shape: [2 ** 64, 0], data_offsets: [0, 0] } });
    rejects(file, "w.shape", /^w\.shape\[0\]: 18446744073709552000 is past 2\^53 - 1, the largest integer JavaScript holds exactly \(a dimension is at most that\)$/);
    rejects(handMadeFile({ w: { dtype: "F32", shape: [-1], data_offsets: [0, 0] } }), "w.shape", /^w\.shape\[0\]: expected a non-negative integer$/);
    const error = thrown(() => encodeSafetensors({ w: { dtype: "F32", shape: [2 ** 53, 0], data: new Float32Array(0) } }));
    expect(error.message).toBe("w.shape[0]: 9007199254740992 is past 2^53 - 1, the largest integer JavaScript holds exactly (a dimension is at most that)");
  });
  it("refuses a header starting with a UTF-8 byte-order mark, which the reference reader refuses, instead of dropping it", () => {
    const good = handMadeFile({ x: tensorAt(0, 4) }, f32Bytes([1]));
    const text = new TextDecoder().decode(good.subarray(8, good.length - 4));
    const withBom = new TextEncoder().encode(`\uFEFF${text.trimEnd()}`.padEnd(text.length + 8));
    const file = new Uint8Array(8 + withBom.length + 4);
    new DataView(file.buffer).setBigUint64(0, BigInt(withBom.length), true);
    file.set(withBom, 8);
    file.set(f32Bytes([1]), 8 + withBom.length);
    rejects(file, "header", /^header: starts with a UTF-8 byte-order mark \(EF BB BF\)/);
    // JSON whitespace before the object is fine, as it is to the reference reader.
    const spaced = handMadeFile({ x: tensorAt(0, 4) }, f32Bytes([1]));
    spaced.copyWithin(9, 8, spaced.length - 5);
    spaced[8] = 0x20;
    expect(decodeSafetensors(spaced).tensors.get("x")!.data).toEqual(Float32Array.from([1]));
  });
  it("refuses a header holding a lone surrogate escape (\\ud800), which the reference reader refuses (it loaded here only), naming where", () => {
    const data = f32Bytes([1]);
    // JSON.stringify writes each lone surrogate as an escape (`"w\\ud800"`), which JSON.parse reads back.
    rejects(handMadeFile({ "w\ud800": tensorAt(0, 4) }, data), "w\ud800", /^w\ud800: the tensor name "w\\ud800" holds a lone surrogate \(U\+D800\) at index 1: .*refuses such a header/);
    rejects(handMadeFile({ __metadata__: { note: "x\udc01" }, w: tensorAt(0, 4) }, data), "__metadata__.note", /the value "x\\udc01" holds a lone surrogate \(U\+DC01\)/);
    rejects(handMadeFile({ __metadata__: { "\ud83d": "v" }, w: tensorAt(0, 4) }, data), "__metadata__.\ud83d", /the key "\\ud83d" holds a lone surrogate/);
    // A field the reader ignores is JSON all the same: the reference reader refuses the header for it too.
    rejects(handMadeFile({ w: { ...tensorAt(0, 4), note: ["ok", { "k\udfff": 1 }] } }, data), "w.note", /the key "k\\udfff" holds a lone surrogate/);
    // A pair is one character (an emoji), escaped or not.
    const pair = decodeSafetensors(handMadeFile({ __metadata__: { note: "\ud83d\ude00" }, "w\ud83d\ude00": tensorAt(0, 4) }, data));
    expect([[...pair.tensors.keys()], pair.metadata]).toEqual([["w\u{1f600}"], { note: "\u{1f600}" }]);
  });
  it("refuses a header nesting arrays or objects 128 deep, or holding a number past float64, which the reference reader refuses anywhere (it loaded here only)", () => {
    /** A file whose tensor "w" carries `note`, a field the reader ignores, written as this JSON text. */
    const withNote = (note: string) => {
      const json = `{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"note":${note}}}`;
      const text = new TextEncoder().encode(json.padEnd(Math.ceil(json.length / 8) * 8));
      const out = new Uint8Array(8 + text.length + 4);
      new DataView(out.buffer).setBigUint64(0, BigInt(text.length), true);
      out.set(text, 8);
      return out;
    };
    // The header and w's entry are two levels: serde_json takes 127 in all, and refuses the 128th ("recursion limit exceeded").
    expect(decodeSafetensors(withNote(`${"[".repeat(125)}${"]".repeat(125)}`)).tensors.get("w")!.shape).toEqual([1]);
    rejects(withNote(`${"[".repeat(126)}${"]".repeat(126)}`), "header", /^header: arrays and objects nest 128 deep at character \d+ \("recursion limit exceeded" past 127\): .*refuses the whole header/);
    rejects(withNote(`${'{"k":'.repeat(126)}0${"}".repeat(126)}`), "header", /nest 128 deep/);
    // A number JSON.parse reads as Infinity is "number out of range" there; large but finite ones read.
    for (const number of ["1e309", "-1e999", "[0,1E400]"]) rejects(withNote(number), "header", /past the largest float64 \("number out of range"\): JavaScript reads it/);
    for (const number of ["1e308", "1e-400", "-0", "123456789012345678901234567890", '"1e999"']) {
      expect(decodeSafetensors(withNote(number)).tensors.get("w")!.shape).toEqual([1]);
    }
  });
  it("refuses a shape or offset written as a float (4.0, 4e0, -0), which the reference reader refuses, naming it", () => {
    /** A file whose header is `json` exactly (space-padded), then `data`. */
    const raw = (json: string, data: Uint8Array) => {
      const text = new TextEncoder().encode(json.padEnd(Math.ceil(json.length / 8) * 8));
      const out = new Uint8Array(8 + text.length + data.length);
      new DataView(out.buffer).setBigUint64(0, BigInt(text.length), true);
      out.set(text, 8);
      out.set(data, 8 + text.length);
      return out;
    };
    const data = f32Bytes([1, 2]);
    rejects(raw('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8e0]}}', data), "w.data_offsets", /^w\.data_offsets\[1\]: 8e0 is written as a float/);
    rejects(raw('{"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}', data), "w.shape", /^w\.shape\[0\]: 2\.0 is written as a float/);
    rejects(raw('{"w":{"dtype":"F32","shape":[2],"data_offsets":[-0,8]}}', data), "w.data_offsets", /^w\.data_offsets\[0\]: -0 is written as a float/);
    rejects(raw('{"a\\"b":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8E+0]}}', data), 'a"b.data_offsets', /\[1\]: 8E\+0 is written/);
    // Numbers elsewhere (a field the reader ignores) are left alone, as the reference reader leaves them.
    const extra = decodeSafetensors(raw('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"scale":[1.5,2e0]}}', data));
    expect(extra.tensors.get("w")!.data).toEqual(Float32Array.from([1, 2]));
  });
  it("refuses a shape whose dimensions multiply past 64 bits before a 0, as the reference reader does (it loaded here only)", () => {
    const shape = [2 ** 32, 2 ** 32, 0];
    rejects(handMadeFile({ w: { dtype: "U8", shape, data_offsets: [0, 0] } }), "w", /^w: shape \[4294967296,4294967296,0\] overflows 64 bits/);
    const error = thrown(() => encodeSafetensors({ w: { dtype: "U8", shape, data: new Uint8Array(0) } }));
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.message).toMatch(/^w\.shape: shape \[4294967296,4294967296,0\] overflows 64 bits/);
    // An empty tensor whose other dimensions stay in range is fine, either way round; 2^64 - 1 is in range (as a float
    // product it rounded up to 2^64 and was refused).
    for (const empty of [[0, 2 ** 32, 2 ** 31], [2 ** 31, 2 ** 32, 0], [4294967297, 4294967295, 0]]) {
      const decoded = decodeSafetensors(encodeSafetensors({ w: { dtype: "F32", shape: empty, data: new Float32Array(0) } }));
      expect(decoded.tensors.get("w")!.shape).toEqual(empty);
    }
  });
  it("rejects metadata that is not string to string", () => {
    rejects(handMadeFile({ __metadata__: { a: 1 } }), "__metadata__.a", /strings/);
    rejects(handMadeFile({ __metadata__: ["a"] }), "__metadata__", /string to string/);
  });
  it("rejects a tensor or metadata key listed twice, instead of keeping the last silently", () => {
    const entry = (dtype: string) => `{"dtype":"${dtype}","shape":[1],"data_offsets":[0,4]}`;
    // JSON.stringify cannot write a repeated key: the header text is written by hand.
    const file = (json: string, data: Uint8Array) => {
      const text = new TextEncoder().encode(json.padEnd(Math.ceil(json.length / 8) * 8));
      const out = new Uint8Array(8 + text.length + data.length);
      new DataView(out.buffer).setBigUint64(0, BigInt(text.length), true);
      out.set(text, 8);
      out.set(data, 8 + text.length);
      return out;
    };
    // Same bytes, read as F32 or as I32: which one the file means is unknowable.
    rejects(file(`{"w":${entry("F32")},"w":${entry("I32")}}`, f32Bytes([1.5])), "w", /listed twice/);
    rejects(file(`{"a\\"b":${entry("F32")}, "a\\u0022b" :${entry("F32")}}`, f32Bytes([1])), 'a"b', /listed twice/);
    rejects(file(`{"__metadata__":{"k":"1","k":"2"}}`, new Uint8Array()), "__metadata__", /"k" appears twice/);
    rejects(file(`{"w":{"dtype":"F32","dtype":"I32","shape":[1],"data_offsets":[0,4]}}`, f32Bytes([1])), "w", /"dtype" appears twice/);
    // Equal strings as values, or keys of different objects, are fine.
    const fine = decodeSafetensors(file(`{"__metadata__":{"w":"w"},"w":${entry("F32")}}`, f32Bytes([2])));
    expect(fine.tensors.get("w")!.data).toEqual(Float32Array.from([2]));
    expect(fine.metadata).toEqual({ w: "w" });
  });
  it("names a dtype that is no string without serialising it: an array nested 100 000 deep overflowed the stack (RangeError)", () => {
    const deep = `${"[".repeat(100_000)}${"]".repeat(100_000)}`;
    const json = `{"w":{"dtype":${deep},"shape":[1],"data_offsets":[0,4]}}`;
    const text = new TextEncoder().encode(json.padEnd(Math.ceil(json.length / 8) * 8));
    const bytes = new Uint8Array(8 + text.length + 4);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(text.length), true);
    bytes.set(text, 8);
    // The nesting alone is refused now, as the reference reader refuses it, before any tensor is looked at.
    rejects(bytes, "header", /^header: arrays and objects nest 128 deep/);
    rejects(handMadeFile({ w: { ...tensorAt(0, 4), dtype: ["F32"] } }, f32Bytes([1])), "w.dtype", /unsupported dtype an array of length 1; supported/);
    rejects(handMadeFile({ w: { ...tensorAt(0, 4), dtype: "F".repeat(1000) } }, f32Bytes([1])), "w.dtype", /^w\.dtype: unsupported dtype "F{80}"; supported/);
  });
  it("accepts tensors listed in any order", () => {
    const data = f32Bytes([1, 2, 3]);
    const decoded = decodeSafetensors(handMadeFile({ late: tensorAt(4, 12), early: tensorAt(0, 4) }, data));
    expect(decoded.tensors.get("late")!.data).toEqual(Float32Array.from([2, 3]));
    expect(decoded.tensors.get("early")!.data).toEqual(Float32Array.from([1]));
    expect([...decoded.tensors.keys()]).toEqual(["early", "late"]);
  });
});

describe("files from newer safetensors writers", () => {
  it("reads the float8, packed float4/float6 and complex64 dtypes PyTorch writes, with shapes counting elements", () => {
    const header = {
      c: { dtype: "C64", shape: [2], data_offsets: [0, 16] },
      scale: { dtype: "F8_E8M0", shape: [2], data_offsets: [16, 18] },
      fnuz: { dtype: "F8_E4M3FNUZ", shape: [1], data_offsets: [18, 19] },
      fp4: { dtype: "F4", shape: [2, 4], data_offsets: [19, 23] },
      fp6: { dtype: "F6_E2M3", shape: [4], data_offsets: [23, 26] },
      e5: { dtype: "F8_E5M2FNUZ", shape: [0], data_offsets: [26, 26] },
    };
    const data = new Uint8Array(26);
    data.set(f32Bytes([1, -2, 0.5, 3]), 0);
    data.set([0x7f, 0x80, 0x40, 0x12, 0x34, 0x56, 0x78, 0xaa, 0xbb, 0xcc], 16);
    const decoded = decodeSafetensors(handMadeFile(header, data));
    expect(decoded.tensors.get("c")!.data).toEqual(Float32Array.from([1, -2, 0.5, 3]));
    expect(decoded.tensors.get("scale")!.data).toEqual(Uint8Array.from([0x7f, 0x80]));
    expect(decoded.tensors.get("fnuz")!.data).toEqual(Uint8Array.from([0x40]));
    expect(decoded.tensors.get("fp4")).toEqual({ dtype: "F4", shape: [2, 4], data: Uint8Array.from([0x12, 0x34, 0x56, 0x78]) });
    expect(decoded.tensors.get("fp6")!.data).toEqual(Uint8Array.from([0xaa, 0xbb, 0xcc]));
    expect(decoded.tensors.get("e5")!.data).toEqual(new Uint8Array(0));
  });

  it("refuses a packed tensor that does not fill whole bytes, as the reference reader does", () => {
    rejects(handMadeFile({ w: { dtype: "F4", shape: [3], data_offsets: [0, 2] } }, [1, 2]), "w", /F4 \[3\] is 12 bits, not whole bytes/);
    const error = thrown(() => encodeSafetensors({ w: { dtype: "F6_E3M2", shape: [2], data: new Uint8Array(2) } }));
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.message).toMatch(/F6_E3M2 \[2\] is 12 bits/);
  });

  it("writes complex64 as (real, imaginary) float32 pairs and F4 as packed bytes", () => {
    const bytes = encodeSafetensors({
      c: { dtype: "C64", shape: [1], data: Float32Array.from([2, -1]) },
      q: { dtype: "F4", shape: [4], data: Uint8Array.from([0x21, 0x43]) },
    });
    const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)))).toEqual({
      c: { dtype: "C64", shape: [1], data_offsets: [0, 8] },
      q: { dtype: "F4", shape: [4], data_offsets: [8, 10] },
    });
    expect(Array.from(bytes.subarray(8 + headerLength))).toEqual([...f32Bytes([2, -1]), 0x21, 0x43]);
    expect(thrown(() => encodeSafetensors({ c: { dtype: "C64", shape: [2], data: new Float32Array(2) } })).message).toMatch(
      /C64 \[2\] needs 4 elements, got 2/,
    );
  });

  it("reads a null __metadata__ as no metadata, as the reference reader does", () => {
    const decoded = decodeSafetensors(handMadeFile({ __metadata__: null, x: { dtype: "F32", shape: [1], data_offsets: [0, 4] } }, f32Bytes([7])));
    expect({ ...decoded.metadata }).toEqual({});
    expect(decoded.tensors.get("x")!.data).toEqual(Float32Array.from([7]));
  });

  it("writes and reads non-ASCII names and metadata as UTF-8", () => {
    const tensor: SafetensorsTensor = { dtype: "F32", shape: [1], data: Float32Array.from([1]) };
    const decoded = decodeSafetensors(encodeSafetensors({ "poids.é.😀": tensor }, { clé: "😀" }));
    expect([...decoded.tensors.keys()]).toEqual(["poids.é.😀"]);
    expect({ ...decoded.metadata }).toEqual({ clé: "😀" });
  });

  it("refuses to write a header past the 100 MB that safetensors readers accept", () => {
    const error = thrown(() => encodeSafetensors({}, { big: "x".repeat(100_000_000) }));
    expect(error).toBeInstanceOf(BsrFormatError);
    expect((error as BsrFormatError).field).toBe("header");
    expect(error.message).toMatch(/more than the 100000000/);
  });
});
