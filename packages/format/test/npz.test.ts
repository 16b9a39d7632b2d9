import { constants } from "node:buffer";
import { spawnSync } from "node:child_process";
import { mkdtemp, readdir, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { strToU8, unzipSync, zipSync } from "fflate";
import { describe, expect, it } from "vitest";
import { BsrFormatError, BsrMatrix, BsrPattern } from "../src/index.js";
import { loadScipyNpz, saveScipyNpz } from "../src/node.js";
import { decodeScipyNpz, encodeScipyNpz } from "../src/npz.js";
import { checkZip32Sizes, deflateLevel } from "../src/zip32.js";
import { SCIPY_NPZ_COMPRESSED_BASE64, SCIPY_NPZ_NARROW_INDICES_BASE64, SCIPY_NPZ_STORED_BASE64 } from "./fixtures.js";
import { thrown } from "./helpers.js";

const SCIPY_DENSE = [1, 2, 0, 0, 0, 0, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0, 17, 18, 0, 0, 0, 0, 23, 24];

/** A .npy file built by hand (format 1.0), independent of the encoder under test. */
function npy(descr: string, shape: string, data: Uint8Array, fortran = false): Uint8Array {
  let header = `{'descr': '${descr}', 'fortran_order': ${fortran ? "True" : "False"}, 'shape': ${shape}, }`;
  while ((10 + header.length + 1) % 16 !== 0) header += " ";
  header += "\n";
  const out = new Uint8Array(10 + header.length + data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length & 0xff, header.length >> 8]);
  out.set(strToU8(header), 10);
  out.set(data, 10 + header.length);
  return out;
}

const bytesOf = (array: { buffer: ArrayBufferLike; byteOffset: number; byteLength: number }) =>
  new Uint8Array(array.buffer, array.byteOffset, array.byteLength);

function archive(overrides: Record<string, Uint8Array | undefined> = {}): Uint8Array {
  const files: Record<string, Uint8Array> = {
    "indices.npy": npy("<i4", "(2,)", bytesOf(Int32Array.from([0, 2]))),
    "indptr.npy": npy("<i4", "(3,)", bytesOf(Int32Array.from([0, 1, 2]))),
    "format.npy": npy("|S3", "()", strToU8("bsr")),
    "shape.npy": npy("<i8", "(2,)", bytesOf(BigInt64Array.from([4n, 6n]))),
    "data.npy": npy("<f8", "(2, 2, 2)", bytesOf(Float64Array.from([1, 2, 7, 8, 17, 18, 23, 24]))),
  };
  for (const [name, file] of Object.entries(overrides)) {
    if (file === undefined) delete files[name];
    else files[name] = file;
  }
  return zipSync(files);
}

function fieldOf(bytes: Uint8Array): string {
  const error = thrown(() => decodeScipyNpz(bytes));
  expect(error).toBeInstanceOf(BsrFormatError);
  return (error as BsrFormatError).field;
}

describe("SciPy save_npz files", () => {
  it("reads files written by SciPy (deflate and stored, zip64 headers, float64 and float32)", () => {
    for (const base64 of [SCIPY_NPZ_COMPRESSED_BASE64, SCIPY_NPZ_STORED_BASE64]) {
      const matrix = decodeScipyNpz(Buffer.from(base64, "base64"));
      expect(matrix.shape).toEqual([4, 6]);
      expect(matrix.blockShape).toEqual([2, 2]);
      expect(matrix.dtype).toBe("float32");
      expect(Array.from(matrix.toDense())).toEqual(SCIPY_DENSE);
    }
  });

  it.each([
    ["float32", [32, 48], [8, 16]],
    ["float16", [12, 20], [3, 5]],
    ["bfloat16", [20, 12], [5, 3]],
  ] as const)("round-trips %s values, shape %j block %j", (dtype, shape, blockShape) => {
    const matrix = BsrMatrix.random(shape, { blockShape, density: 0.5, seed: 6, dtype });
    for (const compressed of [true, false]) {
      const read = decodeScipyNpz(encodeScipyNpz(matrix, { compressed }));
      expect(read.pattern.equals(matrix.pattern)).toBe(true);
      // SciPy has no 16-bit floats: values come back as float32, widened exactly.
      expect(read.dtype).toBe("float32");
      expect(read.values).toEqual(matrix.valuesAsFloat32());
    }
  });

  it("writes what NumPy expects: the five arrays, .npy headers aligned to 64 bytes", () => {
    const matrix = BsrMatrix.random([8, 12], { blockShape: [2, 3], density: 0.5, seed: 2 });
    const files = unzipSync(encodeScipyNpz(matrix));
    expect(Object.keys(files).sort()).toEqual(["data.npy", "format.npy", "indices.npy", "indptr.npy", "shape.npy"]);
    for (const file of Object.values(files)) {
      const headerLength = file[8] | (file[9] << 8);
      expect((10 + headerLength) % 64).toBe(0);
      expect(file[10 + headerLength - 1]).toBe(0x0a);
    }
    const dataHeader = new TextDecoder().decode(files["data.npy"].subarray(10, 80));
    expect(dataHeader).toContain(`'descr': '<f4', 'fortran_order': False, 'shape': (${matrix.nnzBlocks}, 2, 3), }`);
    expect(encodeScipyNpz(matrix)).toEqual(encodeScipyNpz(matrix));
  });

  it("writes the same bytes in every time zone: each member dated 1980-01-01 00:00, zip's earliest (zip dates have no zone)", () => {
    const matrix = BsrMatrix.random([4, 6], { blockShape: [2, 3], density: 0.5, seed: 3 });
    const zone = process.env.TZ;
    const written: Uint8Array[] = [];
    try {
      for (const tz of ["UTC", "America/St_Johns", "Pacific/Kiritimati", "Asia/Kathmandu", "Pacific/Pago_Pago"]) {
        process.env.TZ = tz;
        written.push(encodeScipyNpz(matrix));
      }
    } finally {
      if (zone === undefined) delete process.env.TZ;
      else process.env.TZ = zone;
    }
    for (const bytes of written) expect(bytes).toEqual(written[0]);
    // The first local header's DOS time (offset 10) and date (offset 12): 00:00:00, 1980-01-01.
    const view = new DataView(written[0].buffer, written[0].byteOffset);
    expect([view.getUint32(0, true), view.getUint16(10, true), view.getUint16(12, true)]).toEqual([0x04034b50, 0, (0 << 9) | (1 << 5) | 1]);
  });

  it("reads CSR as 1 x 1 blocks, float16 data, int64 indices, unicode format, Fortran order and big-endian", () => {
    const csr = archive({
      "format.npy": npy("<U3", "()", bytesOf(Uint32Array.from([0x63, 0x73, 0x72]))),
      "indices.npy": npy("<i8", "(3,)", bytesOf(BigInt64Array.from([1n, 0n, 2n]))),
      "indptr.npy": npy("<i8", "(3,)", bytesOf(BigInt64Array.from([0n, 1n, 3n]))),
      "shape.npy": npy("<i8", "(2,)", bytesOf(BigInt64Array.from([2n, 3n]))),
      "data.npy": npy("<f2", "(3,)", bytesOf(Uint16Array.from([0x3c00, 0x4000, 0x4200]))),
    });
    const matrix = decodeScipyNpz(csr);
    expect(matrix.dtype).toBe("float16");
    expect(matrix.blockShape).toEqual([1, 1]);
    expect(Array.from(matrix.toDense())).toEqual([0, 1, 0, 2, 0, 3]);

    // data (2, 2, 2) in Fortran order: element (n, r, c) sits at n + 2 r + 4 c.
    const cOrder = [1, 2, 7, 8, 17, 18, 23, 24];
    const fortran = new Float32Array(8);
    for (let n = 0; n < 2; n++) for (let r = 0; r < 2; r++) for (let c = 0; c < 2; c++) fortran[n + 2 * r + 4 * c] = cOrder[n * 4 + r * 2 + c];
    const fromFortran = decodeScipyNpz(archive({ "data.npy": npy("<f4", "(2, 2, 2)", bytesOf(fortran), true) }));
    expect(Array.from(fromFortran.toDense())).toEqual(SCIPY_DENSE);

    const bigEndian = new Uint8Array(32);
    for (const [i, v] of cOrder.entries()) new DataView(bigEndian.buffer).setFloat32(i * 4, v, false);
    const fromBigEndian = decodeScipyNpz(archive({ "data.npy": npy(">f4", "(2, 2, 2)", bigEndian) }));
    expect(Array.from(fromBigEndian.toDense())).toEqual(SCIPY_DENSE);
  });

  it("rejects malformed archives, naming the array", () => {
    expect(fieldOf(strToU8("not a zip at all"))).toBe("npz");
    expect(fieldOf(archive({ "indptr.npy": undefined }))).toBe("indptr.npy");
    expect(fieldOf(archive({ "format.npy": npy("|S3", "()", strToU8("coo")) }))).toBe("format.npy");
    expect(fieldOf(archive({ "data.npy": npy("<f8", "(2, 2, 2)", new Uint8Array(60)) }))).toBe("data.npy");
    expect(fieldOf(archive({ "data.npy": npy("|S4", "(2, 2, 2)", new Uint8Array(32)) }))).toBe("data.npy");
    expect(fieldOf(archive({ "data.npy": npy("<f8", "(16,)", new Uint8Array(128)) }))).toBe("data.npy");
    expect(fieldOf(archive({ "data.npy": strToU8("garbage that is long enough") }))).toBe("data.npy");
    expect(fieldOf(archive({ "indices.npy": npy("<f4", "(2,)", new Uint8Array(8)) }))).toBe("indices.npy");
    expect(fieldOf(archive({ "indices.npy": npy("<i4", "(2,)", bytesOf(Int32Array.from([0, 3]))) }))).toBe("indices");
    expect(fieldOf(archive({ "shape.npy": npy("<i8", "(3,)", bytesOf(BigInt64Array.from([4n, 6n, 1n]))) }))).toBe(
      "shape.npy",
    );
  });

  it("takes null options as none (compressed), as undefined ones, rather than a TypeError", () => {
    const matrix = BsrMatrix.random([8, 12], { blockShape: [2, 3], density: 0.5, seed: 4 });
    const bytes = encodeScipyNpz(matrix, null as unknown as { compressed?: boolean });
    expect(bytes).toEqual(encodeScipyNpz(matrix));
    expect(decodeScipyNpz(bytes).toDense()).toEqual(matrix.toDense());
  });

  it("refuses a misspelt option, naming it, where it was ignored (compressed: false wrote a compressed archive)", () => {
    const matrix = BsrMatrix.random([8, 12], { blockShape: [2, 3], density: 0.5, seed: 4 });
    const error = thrown(() => encodeScipyNpz(matrix, { compress: false } as never));
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.message).toBe("options: unknown option 'compress'; the options are compressed");
    expect(thrown(() => encodeScipyNpz(matrix, "stored" as never))).toBeInstanceOf(BsrFormatError);
  });

  it("saves and loads files through the node entry", async () => {
    const directory = await mkdtemp(join(tmpdir(), "bsr-npz-"));
    try {
      const path = join(directory, "w.npz");
      const matrix = BsrMatrix.random([16, 16], { blockShape: [4, 4], density: 0.5, seed: 3 });
      await saveScipyNpz(path, matrix);
      const loaded = await loadScipyNpz(path);
      expect(loaded.values).toEqual(matrix.values);
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });
});

/** Where `name`'s central directory entry starts in the zip `bytes`. */
function centralEntry(bytes: Uint8Array, name: string): number {
  const text = new TextDecoder("latin1").decode(bytes);
  for (let at = text.indexOf("PK\x01\x02"); at >= 0; at = text.indexOf("PK\x01\x02", at + 4)) {
    if (text.slice(at + 46, at + 46 + name.length) === name) return at;
  }
  throw new Error(`no central directory entry for ${name}`);
}

/** `bytes` with the 32-bit field at `field` of `name`'s central directory entry set to `value`. */
function withCentralField(bytes: Uint8Array, name: string, field: number, value: number): Uint8Array {
  const patched = bytes.slice();
  new DataView(patched.buffer).setUint32(centralEntry(bytes, name) + field, value, true);
  return patched;
}

/** `bytes` with a size (`field` 20 compressed, 24 inflated) of `name` set to `value` in its central directory entry and local header alike. */
function withRecordedSize(bytes: Uint8Array, name: string, field: 20 | 24, value: number): Uint8Array {
  const patched = withCentralField(bytes, name, field, value);
  const view = new DataView(patched.buffer);
  view.setUint32(view.getUint32(centralEntry(bytes, name) + 42, true) + field - 2, value, true);
  return patched;
}

/** The zip `bytes` with `name`'s sizes and offset moved to a zip64 extra field of its central directory entry. */
function withZip64Extra(bytes: Uint8Array, name: string): Uint8Array {
  const entry = centralEntry(bytes, name);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const extra = new DataView(new ArrayBuffer(28));
  extra.setUint16(0, 1, true);
  extra.setUint16(2, 24, true);
  for (const [at, field] of [[4, 24], [12, 20], [20, 42]]) extra.setBigUint64(at, BigInt(view.getUint32(entry + field, true)), true);
  const extraAt = entry + 46 + view.getUint16(entry + 28, true);
  const out = new Uint8Array(bytes.length + 28);
  out.set(bytes.subarray(0, extraAt));
  out.set(new Uint8Array(extra.buffer), extraAt);
  out.set(bytes.subarray(extraAt), extraAt + 28);
  const patched = new DataView(out.buffer);
  for (const field of [20, 24, 42]) patched.setUint32(entry + field, 0xffffffff, true);
  patched.setUint16(entry + 30, view.getUint16(entry + 30, true) + 28, true);
  const end = out.length - 22;
  patched.setUint32(end + 12, patched.getUint32(end + 12, true) + 28, true);
  return out;
}

describe("zip fields past 2 GiB are unsigned", () => {
  // Central directory entry fields: +20 compressed size, +24 size, +42 local header offset.
  it("refuses a member whose local header offset has the top bit set as past the end, not as a negative offset", () => {
    const error = thrown(() => decodeScipyNpz(withCentralField(archive(), "data.npy", 42, 0x80000000))) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("data.npy");
    expect(error.message).toMatch(/local header at offset 2147483648 lies past the end of the \d+-byte archive \(is it truncated\?\)/);
  });

  it("refuses a member whose compressed size has the top bit set as running past the end (truncated), deflated or stored", () => {
    const deflated = archive();
    const tooLong = thrown(() => decodeScipyNpz(withRecordedSize(deflated, "data.npy", 20, 0xfffffff0))) as BsrFormatError;
    expect(tooLong).toBeInstanceOf(BsrFormatError);
    expect(tooLong.field).toBe("data.npy");
    expect(tooLong.message).toMatch(/its 4294967280 bytes from offset \d+ run past the end of the \d+-byte archive \(is it truncated\?\)/);
    const stored = encodeScipyNpz(BsrMatrix.random([4, 4], { blockShape: [2, 2], density: 1, seed: 3 }), { compressed: false });
    const both = withRecordedSize(withRecordedSize(stored, "indices.npy", 20, 0x80000000), "indices.npy", 24, 0x80000000);
    expect(thrown(() => decodeScipyNpz(both)).message).toMatch(/^indices\.npy: its 2147483648 bytes from offset \d+ run past the end/);
  });

  it("refuses, before allocating it, a recorded size with the top bit set that the deflate stream cannot inflate to", () => {
    const error = thrown(() => decodeScipyNpz(withRecordedSize(archive(), "data.npy", 24, 0x80000000))) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("data.npy");
    expect(error.message).toMatch(/records 2147483648 bytes inflated from \d+, more than deflate expands to \(1032-fold\)/);
  });

  it("reads sizes and offsets from a central directory entry's zip64 extra field, and refuses one that lacks it", () => {
    const matrix = BsrMatrix.random([8, 8], { blockShape: [2, 2], density: 0.5, seed: 4 });
    for (const compressed of [true, false]) {
      const zip64 = withZip64Extra(encodeScipyNpz(matrix, { compressed }), "data.npy");
      expect(decodeScipyNpz(zip64).values).toEqual(matrix.values);
    }
    const lacking = withCentralField(encodeScipyNpz(matrix), "data.npy", 24, 0xffffffff);
    expect(thrown(() => decodeScipyNpz(lacking)).message).toBe("data.npy: its size reads 0xffffffff and no zip64 extra field gives it");
  });
});

describe("zip integrity", () => {
  it("a flipped bit in a stored member's data is refused by its CRC-32, naming the member", () => {
    const bytes = encodeScipyNpz(BsrMatrix.random([4, 4], { blockShape: [2, 2], density: 1, seed: 3 }), { compressed: false });
    expect(() => decodeScipyNpz(bytes)).not.toThrow();
    // The last value of data.npy sits just before its data descriptor / the next local header.
    const data = new TextDecoder("latin1").decode(bytes).indexOf("data.npy");
    const header = new TextDecoder("latin1").decode(bytes).indexOf("<f4", data);
    const corrupt = bytes.slice();
    corrupt[header + 150] ^= 0x40;
    const error = thrown(() => decodeScipyNpz(corrupt)) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("data.npy");
    expect(error.message).toMatch(/CRC-32/);
  });

  it("reads SciPy's own archives, whose CRCs sit in the central directory (zip64 extras)", () => {
    for (const base64 of [SCIPY_NPZ_COMPRESSED_BASE64, SCIPY_NPZ_STORED_BASE64]) {
      expect(() => decodeScipyNpz(Buffer.from(base64, "base64"))).not.toThrow();
    }
  });

  it("crc32 matches the standard check value", async () => {
    const { crc32 } = await import("../src/crc32.js");
    expect(crc32(strToU8("123456789"))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array(0))).toBe(0);
  });
});

describe("local headers checked against the central directory", () => {
  /** Where `name`'s local header starts, from its central directory entry. */
  const localHeader = (bytes: Uint8Array, name: string) => new DataView(bytes.buffer, bytes.byteOffset).getUint32(centralEntry(bytes, name) + 42, true);

  it("refuses an entry that points at another member's local header, rather than reading that member's bytes as its own", () => {
    const bytes = archive({ "xata.npy": npy("<f8", "(2, 2, 2)", bytesOf(Float64Array.from([9, 9, 9, 9, 9, 9, 9, 9]))) });
    // data.npy's entry takes xata.npy's offset, CRC-32 and sizes: its bytes would be xata.npy's, CRC and all.
    const view = new DataView(bytes.buffer);
    const [data, xata] = [centralEntry(bytes, "data.npy"), centralEntry(bytes, "xata.npy")];
    for (const field of [16, 20, 24, 42]) view.setUint32(data + field, view.getUint32(xata + field, true), true);
    const error = thrown(() => decodeScipyNpz(bytes)) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("data.npy");
    expect(error.message).toBe(
      `data.npy: its local header at offset ${localHeader(bytes, "xata.npy")} gives the name "xata.npy", the central directory "data.npy" (a damaged or ambiguous archive)`,
    );
  });

  it("refuses a local header naming another file, as Python's zipfile does (File name in directory and header differ)", () => {
    const bytes = archive();
    bytes[localHeader(bytes, "shape.npy") + 30] = "x".charCodeAt(0);
    const error = thrown(() => decodeScipyNpz(bytes)) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.message).toMatch(/^shape\.npy: its local header at offset \d+ gives the name "xhape\.npy", the central directory "shape\.npy"/);
  });

  it.each([
    ["compression method", 8, 2, 0, "compression method 0, the central directory 8"],
    ["CRC-32", 14, 4, 0x12345678, "CRC-32 0x12345678, the central directory 0x"],
    ["compressed size", 18, 4, 3, "compressed size 3, the central directory "],
    ["size", 22, 4, 99999, "size 99999, the central directory "],
  ])("refuses a local header whose %s disagrees with the central directory, which a streaming reader would follow", (_, offset, width, value, message) => {
    const bytes = archive();
    const at = localHeader(bytes, "indptr.npy") + offset;
    if (width === 2) new DataView(bytes.buffer).setUint16(at, value, true);
    else new DataView(bytes.buffer).setUint32(at, value, true);
    const error = thrown(() => decodeScipyNpz(bytes)) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("indptr.npy");
    expect(error.message).toContain(`gives ${message}`);
  });

  it("compares the sizes of a local zip64 extra field (NumPy writes one in every local header)", () => {
    const bytes = new Uint8Array(Buffer.from(SCIPY_NPZ_COMPRESSED_BASE64, "base64"));
    // The local header's 0xffffffff sizes point to its zip64 extra field: size at +4, compressed size at +12 of the field.
    const extra = localHeader(bytes, "data.npy") + 30 + "data.npy".length;
    expect(new DataView(bytes.buffer).getUint16(extra, true)).toBe(1);
    new DataView(bytes.buffer).setUint32(extra + 12, 7, true);
    expect(thrown(() => decodeScipyNpz(bytes)).message).toMatch(/^data\.npy: its local header at offset \d+ gives compressed size 7, the central directory 96 /);
  });

  it("reads every entry the central directory holds, as Python's zipfile does, and refuses an end record whose count hides one", () => {
    // data.npy twice, the second copy last: np.load takes the last, whatever the end record counts.
    const bytes = archive({ "xata.npy": npy("<f8", "(2, 2, 2)", bytesOf(Float64Array.from([9, 9, 9, 9, 9, 9, 9, 9]))) });
    const name = strToU8("xata.npy");
    for (let at = 0; at + name.length <= bytes.length; at++) if (name.every((byte, i) => bytes[at + i] === byte)) bytes[at] = 0x64;
    // The end record counts 5 entries (on this disk and in all), so that a reader trusting it never sees the second copy.
    const view = new DataView(bytes.buffer);
    for (const field of [8, 10]) view.setUint16(bytes.length - 22 + field, 5, true);
    const error = thrown(() => decodeScipyNpz(bytes)) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.message).toBe("npz: not a readable zip archive (the end record counts 5 entries, the central directory holds 6)");
  });

  it("refuses an end record that places the central directory elsewhere than just before it (Python would shift every offset)", () => {
    const bytes = archive();
    const end = bytes.length - 22;
    // Eight bytes between the central directory and the end record.
    const padded = new Uint8Array(bytes.length + 8);
    padded.set(bytes.subarray(0, end));
    padded.set(bytes.subarray(end), end + 8);
    const { size, offset } = { size: new DataView(bytes.buffer).getUint32(end + 12, true), offset: new DataView(bytes.buffer).getUint32(end + 16, true) };
    expect(thrown(() => decodeScipyNpz(padded)).message).toBe(
      `npz: not a readable zip archive (the end record places the ${size}-byte central directory at offset ${offset}, ending at ${offset + size}, not at ${end + 8} where the end record starts)`,
    );
  });

  it("takes the counts and offsets of a zip64 end record where its locator is there, as Python's zipfile does", () => {
    const bytes = archive();
    const end = bytes.length - 22;
    const view = new DataView(bytes.buffer);
    const [count, size, offset] = [view.getUint16(end + 10, true), view.getUint32(end + 12, true), view.getUint32(end + 16, true)];
    // A zip64 end record (56 bytes) and its locator (20) between the central directory and the end record.
    const zip64 = new DataView(new ArrayBuffer(76));
    zip64.setUint32(0, 0x06064b50, true);
    zip64.setBigUint64(4, 44n, true);
    zip64.setUint16(12, 45, true);
    zip64.setUint16(14, 45, true);
    zip64.setBigUint64(24, BigInt(count), true);
    zip64.setBigUint64(32, BigInt(count), true);
    zip64.setBigUint64(40, BigInt(size), true);
    zip64.setBigUint64(48, BigInt(offset), true);
    zip64.setUint32(56, 0x07064b50, true);
    zip64.setBigUint64(64, BigInt(end), true);
    zip64.setUint32(72, 1, true);
    const withZip64 = (shortCount: number) => {
      const out = new Uint8Array(bytes.length + 76);
      out.set(bytes.subarray(0, end));
      out.set(new Uint8Array(zip64.buffer), end);
      out.set(bytes.subarray(end), end + 76);
      // The end record's own fields saturated, as a zip64 writer leaves them, or wrong: the zip64 record's are read.
      for (const field of [8, 10]) new DataView(out.buffer).setUint16(end + 76 + field, shortCount, true);
      return out;
    };
    for (const shortCount of [0xffff, 1]) expect(Array.from(decodeScipyNpz(withZip64(shortCount)).toDense())).toEqual(SCIPY_DENSE);
  });

  it("refuses an entry that needs a zip version past 6.3 to extract, as Python's zipfile does", () => {
    const bytes = archive();
    bytes[centralEntry(bytes, "format.npy") + 6] = 64;
    expect(thrown(() => decodeScipyNpz(bytes)).message).toBe("format.npy: needs zip version 6.4 to extract; Python's zipfile reads up to 6.3");
  });

  it("reads a local header that leaves its CRC-32 and sizes to a data descriptor (flag bit 3), as streaming writers write them", () => {
    const bytes = archive();
    const view = new DataView(bytes.buffer);
    for (const name of ["data.npy", "indices.npy"]) {
      const at = localHeader(bytes, name);
      view.setUint16(at + 6, view.getUint16(at + 6, true) | 8, true);
      for (const field of [14, 18, 22]) view.setUint32(at + field, 0, true);
    }
    expect(Array.from(decodeScipyNpz(bytes).toDense())).toEqual(SCIPY_DENSE);
  });

  it("refuses an encrypted member, saying so, rather than a CRC-32 or deflate error", () => {
    const bytes = archive();
    const view = new DataView(bytes.buffer);
    for (const at of [centralEntry(bytes, "data.npy") + 8, localHeader(bytes, "data.npy") + 6]) view.setUint16(at, view.getUint16(at, true) | 1, true);
    expect(thrown(() => decodeScipyNpz(bytes)).message).toBe("data.npy: is encrypted, which this reader does not read");
  });
});

describe("huge declared sizes inside a small archive", () => {
  /** data.npy of the 4 x 6 fixture whose header is padded to `length` characters, in format version `major`.0. */
  const dataWithHeaderLength = (length: number, major: number) => {
    const prefix = major === 1 ? 10 : 12;
    const dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2, 2), }";
    const header = `${dict}${" ".repeat(length - dict.length - 1)}\n`;
    const data = bytesOf(Float64Array.from([1, 2, 7, 8, 17, 18, 23, 24]));
    const file = new Uint8Array(prefix + header.length + data.length);
    file.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, major, 0]);
    if (major === 1) new DataView(file.buffer).setUint16(8, header.length, true);
    else new DataView(file.buffer).setUint32(8, header.length, true);
    file.set(strToU8(header), prefix);
    file.set(data, prefix + header.length);
    return archive({ "data.npy": file });
  };

  it.each([1, 2, 3])("reads a version %i.0 header of 10000 characters and refuses one longer, as np.load does (max_header_size)", (major) => {
    expect(Array.from(decodeScipyNpz(dataWithHeaderLength(10_000, major)).toDense())).toEqual(SCIPY_DENSE);
    expect(thrown(() => decodeScipyNpz(dataWithHeaderLength(10_001, major))).message).toBe(
      `data.npy: the .npy header is 10001 characters long, past the 10000 characters np.load reads (its max_header_size)`,
    );
  });

  it("refuses a header of megabytes (a few kilobytes deflated) before making it a string", () => {
    for (const [major, unit] of [[2, "characters"], [3, "bytes"]] as const) {
      const error = thrown(() => decodeScipyNpz(dataWithHeaderLength(4_000_000, major))) as BsrFormatError;
      expect(error).toBeInstanceOf(BsrFormatError);
      expect(error.message).toMatch(new RegExp(`^data\\.npy: the \\.npy header is 4000000 ${unit} long, past the 10000 characters np\\.load reads`));
    }
  });

  it("names a format.npy string too long to be a format by its length, before decoding it (one of 600 MB passed the longest string JavaScript makes)", () => {
    const long = npy("|S100000", "()", new Uint8Array(100_000).fill(0x61));
    const error = thrown(() => decodeScipyNpz(archive({ "format.npy": long }))) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.message).toBe("format.npy: holds a string of 100000 characters, which names no sparse format");
    // Trailing NULs are padding, as NumPy's .item() reads them: a wide string holding bsr is bsr.
    const padded = new Uint8Array(100_000);
    padded.set(strToU8("bsr"));
    expect(Array.from(decodeScipyNpz(archive({ "format.npy": npy("|S100000", "()", padded) })).toDense())).toEqual(SCIPY_DENSE);
  });

  it("refuses a shape.npy of millions of dimensions in a 64 MB heap (copying them out as BigInts ran the process out of memory)", async () => {
    const dimensions = 4_000_000;
    const members: Record<string, Uint8Array> = unzipSync(archive());
    members["shape.npy"] = npy("<i8", `(${dimensions},)`, new Uint8Array(8 * dimensions));
    const bytes = zipSync(members, { level: 0 });
    const directory = await mkdtemp(join(tmpdir(), "bsr-npz-"));
    try {
      const path = join(directory, "many-dimensions.npz");
      await writeFile(path, bytes);
      const { stdout, status } = spawnSync(process.execPath, ["--max-old-space-size=64", "--import", "tsx", join("test", "children", "decode-npz.ts"), path], {
        cwd: fileURLToPath(new URL("..", import.meta.url)),
        encoding: "utf8",
      });
      expect(status).toBe(0);
      expect(JSON.parse(stdout)).toEqual({ name: "BsrFormatError", message: `shape.npy: expected 2 dimensions, got ${dimensions}` });
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  }, 60_000);
});

describe("unsorted and repeated block columns", () => {
  // (block column, values) of a 4 x 6 matrix of 2 x 2 blocks: block row 0 holds columns 0 and 2, block row 1 all three.
  const rows = [
    [
      [0, [1, 2, 7, 8]],
      [2, [17, 18, 23, 24]],
    ],
    [
      [1, [3, 4, 9, 10]],
      [0, [5, 6, 11, 12]],
      [2, [13, 14, 19, 20]],
    ],
  ] as const;
  /** What `save_npz` writes for a bsr_matrix with has_sorted_indices False: blocks in the order given. */
  const bsrFile = (order: (readonly (readonly [number, readonly number[]])[])[]) => {
    const blocks = order.flat();
    const indptr = [0];
    for (const row of order) indptr.push(indptr.at(-1)! + row.length);
    return archive({
      "indices.npy": npy("<i4", `(${blocks.length},)`, bytesOf(Int32Array.from(blocks.map(([col]) => col)))),
      "indptr.npy": npy("<i4", `(${indptr.length},)`, bytesOf(Int32Array.from(indptr))),
      "data.npy": npy("<f8", `(${blocks.length}, 2, 2)`, bytesOf(Float64Array.from(blocks.flatMap(([, values]) => values)))),
    });
  };

  it("sorts each block row's columns and moves the data blocks with them, as sort_indices() does", () => {
    const sorted = decodeScipyNpz(bsrFile(rows.map((row) => [...row].sort((a, b) => a[0] - b[0]))));
    const unsorted = decodeScipyNpz(bsrFile([[rows[0][1], rows[0][0]], [...rows[1]]]));
    expect(Array.from(unsorted.blockColIdx)).toEqual([0, 2, 0, 1, 2]);
    expect(Array.from(unsorted.blockRowPtr)).toEqual([0, 2, 5]);
    expect(unsorted.values).toEqual(sorted.values);
    expect(Array.from(unsorted.values.subarray(8, 12))).toEqual([5, 6, 11, 12]);
  });

  it("sorts CSR rows (1 x 1 blocks) and int64 indices", () => {
    const csr = archive({
      "format.npy": npy("|S3", "()", strToU8("csr")),
      "indices.npy": npy("<i8", "(4,)", bytesOf(BigInt64Array.from([2n, 0n, 1n, 0n]))),
      "indptr.npy": npy("<i8", "(3,)", bytesOf(BigInt64Array.from([0n, 2n, 4n]))),
      "shape.npy": npy("<i8", "(2,)", bytesOf(BigInt64Array.from([2n, 3n]))),
      "data.npy": npy("<f4", "(4,)", bytesOf(Float32Array.from([3, 1, 5, 4]))),
    });
    expect(Array.from(decodeScipyNpz(csr).toDense())).toEqual([1, 0, 3, 4, 5, 0]);
  });

  it("reports a block column outside the matrix at its place in the file, not where sorting would move it", () => {
    const error = thrown(() => decodeScipyNpz(bsrFile([[...rows[0]], [[7, [0, 0, 0, 0]], rows[1][1], rows[1][2]]]))) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect([error.field, error.position]).toEqual(["indices", 2]);
    expect(error.message).toContain("column 7 is outside [0, 3)");
  });

  it("still refuses a block column listed twice in a row, sorted or not, naming it", () => {
    for (const row1 of [
      [rows[1][0], rows[1][2], rows[1][0]],
      [rows[1][0], rows[1][0]],
    ]) {
      const error = thrown(() => decodeScipyNpz(bsrFile([[...rows[0]], row1]))) as BsrFormatError;
      expect(error).toBeInstanceOf(BsrFormatError);
      expect(error.field).toBe("indices");
      expect(error.message).toMatch(/block row 1 lists block column 1 twice.*sum_duplicates/);
    }
  });
});

describe("hostile members", () => {
  it("reads format.npy of any one-element shape, as SciPy's .item() does, and names any other shape", () => {
    for (const shape of ["(1,)", "(1, 1)"]) {
      expect(decodeScipyNpz(archive({ "format.npy": npy("|S3", shape, strToU8("bsr")) })).toDense()).toEqual(decodeScipyNpz(archive()).toDense());
    }
    const error = thrown(() => decodeScipyNpz(archive({ "format.npy": npy("|S3", "(2,)", strToU8("bsrbsr")) }))) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("format.npy");
    expect(error.message).toContain("expected a single string, got shape (2,)");
  });

  it("refuses a unicode format.npy holding a number that is no code point, naming the array", () => {
    const format = npy("<U3", "()", bytesOf(Uint32Array.from([0x110000, 0x73, 0x72])));
    const error = thrown(() => decodeScipyNpz(archive({ "format.npy": format }))) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("format.npy");
    expect(error.message).toContain("character 0 is 1114112, not a Unicode code point");
  });

  it("reads a unicode format.npy as NumPy's .item() does: trailing NULs dropped, a NUL inside kept (so b\\0sr is no bsr)", () => {
    const unicode = (codes: number[]) => npy(`<U${codes.length}`, "()", bytesOf(Uint32Array.from(codes)));
    expect(decodeScipyNpz(archive({ "format.npy": unicode([0x62, 0x73, 0x72, 0, 0]) })).toDense()).toEqual(decodeScipyNpz(archive()).toDense());
    const error = thrown(() => decodeScipyNpz(archive({ "format.npy": unicode([0x62, 0, 0x73, 0x72]) }))) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.message).toBe('format.npy: the archive holds a "b\\u0000sr" matrix; only bsr and csr are read');
  });

  it("refuses an archive holding data.npy twice, instead of reading the last copy", () => {
    const other = npy("<f8", "(2, 2, 2)", bytesOf(Float64Array.from([9, 9, 9, 9, 9, 9, 9, 9])));
    const bytes = archive({ "xata.npy": other });
    // Renames xata.npy to data.npy in its local header and central directory entry (the CRC covers only the data).
    const name = strToU8("xata.npy");
    let renamed = 0;
    for (let at = 0; at + name.length <= bytes.length; at++) {
      if (name.every((byte, i) => bytes[at + i] === byte)) {
        bytes[at] = 0x64;
        renamed++;
      }
    }
    expect(renamed).toBe(2);
    const error = thrown(() => decodeScipyNpz(bytes)) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("data.npy");
    expect(error.message).toContain("is in the archive twice");
  });
});

describe("members named without .npy, which np.load reads first", () => {
  const nines = () => npy("<f8", "(2, 2, 2)", bytesOf(Float64Array.from([9, 9, 9, 9, 9, 9, 9, 9])));

  it("refuses an archive holding both data and data.npy, of which load_npz reads data (this reader read data.npy)", () => {
    const error = thrown(() => decodeScipyNpz(archive({ data: nines() }))) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("data");
    expect(error.message).toBe(
      `data: the archive holds both data and data.npy, and np.load reads data (which is meant is ambiguous)`,
    );
  });

  it("reads a member named data (or shape, format...) where there is no data.npy, as load_npz does, and names it in errors", () => {
    const files = unzipSync(archive());
    const bare: Record<string, Uint8Array> = {};
    for (const [name, file] of Object.entries(files)) bare[name === "indptr.npy" ? name : name.slice(0, -".npy".length)] = file;
    expect(Array.from(decodeScipyNpz(zipSync(bare)).toDense())).toEqual(SCIPY_DENSE);
    bare.shape = npy("<i8", "(3,)", bytesOf(BigInt64Array.from([4n, 6n, 1n])));
    expect(thrown(() => decodeScipyNpz(zipSync(bare))).message).toBe("shape: expected 2 dimensions, got 3");
  });
});

describe("index arrays of the wrong rank", () => {
  it.each([
    ["indices.npy", "(2, 1)", npy("<i4", "(2, 1)", bytesOf(Int32Array.from([0, 2])))],
    ["indptr.npy", "(1, 3)", npy("<i4", "(1, 3)", bytesOf(Int32Array.from([0, 1, 2])))],
    ["shape.npy", "(1, 2)", npy("<i8", "(1, 2)", bytesOf(BigInt64Array.from([4n, 6n])))],
    ["shape.npy", "()", npy("<i8", "()", bytesOf(BigInt64Array.from([4n])))],
  ])("refuses %s of shape %s instead of flattening it", (name, shape, file) => {
    const error = thrown(() => decodeScipyNpz(archive({ [name]: file }))) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe(name);
    expect(error.message).toContain(`expected a 1-D array, got shape ${shape}`);
  });
});

describe("index arrays of every integer dtype, cast to int32 as SciPy casts them", () => {
  /** Little-endian bytes of `values` in a NumPy integer dtype ("i1", "u2", "u8"...), byte-swapped for ">". */
  function integers(descr: string, values: bigint[]): Uint8Array {
    const size = Number(descr.slice(2));
    const out = new Uint8Array(values.length * size);
    const view = new DataView(out.buffer);
    for (const [i, value] of values.entries()) {
      const unsigned = BigInt.asUintN(8 * size, value);
      for (let byte = 0; byte < size; byte++) {
        view.setUint8(i * size + (descr[0] === ">" ? size - 1 - byte : byte), Number((unsigned >> BigInt(8 * byte)) & 0xffn));
      }
    }
    return out;
  }
  // NumPy writes one-byte types with "|", the others with their byte order.
  const DESCRS = ["|i1", "|u1", "<i2", "<u2", ">i2", "<i4", "<u4", ">u4", "<i8", "<u8", ">i8", ">u8"];

  it("reads a file NumPy wrote with uint16 (big-endian) indices, uint8 indptr and a uint32 shape", () => {
    const matrix = decodeScipyNpz(Buffer.from(SCIPY_NPZ_NARROW_INDICES_BASE64, "base64"));
    expect(matrix.shape).toEqual([4, 6]);
    expect(Array.from(matrix.blockColIdx)).toEqual([0, 2]);
    expect(Array.from(matrix.toDense())).toEqual(SCIPY_DENSE);
  });

  it.each(DESCRS)("reads indices, indptr and shape of %s", (descr) => {
    const matrix = decodeScipyNpz(
      archive({
        "indices.npy": npy(descr, "(2,)", integers(descr, [0n, 2n])),
        "indptr.npy": npy(descr, "(3,)", integers(descr, [0n, 1n, 2n])),
        "shape.npy": npy(descr, "(2,)", integers(descr, [4n, 6n])),
      }),
    );
    expect(matrix.shape).toEqual([4, 6]);
    expect(Array.from(matrix.blockRowPtr)).toEqual([0, 1, 2]);
    expect(Array.from(matrix.toDense())).toEqual(SCIPY_DENSE);
  });

  it.each([
    // Wrapped to int32, 2^32 - 1 read as column -1 and 2^32 as column 0: a silent wrong answer.
    ["indices.npy", "<u4", [0n, 2n ** 32n - 1n], "indices[1]: 4294967295 does not fit int32"],
    ["indices.npy", ">u4", [2n ** 31n, 2n], "indices[0]: 2147483648 does not fit int32"],
    ["indices.npy", "<u8", [0n, 2n ** 32n], "indices[1]: 4294967296 does not fit int32"],
    ["indptr.npy", "<u8", [0n, 2n ** 64n - 1n, 2n], "indptr[1]: 18446744073709551615 does not fit int32"],
    ["indices.npy", "<i8", [-(2n ** 31n) - 1n, 2n], "indices[0]: -2147483649 does not fit int32"],
    // Negative values of narrow signed types are read, then refused with what they mean.
    ["indices.npy", "|i1", [0n, -1n], "indices[1]: column -1 is outside [0, 3)"],
    ["indptr.npy", "<i2", [0n, -1n, 2n], "indptr[1]: decreases from 0 to -1"],
  ])("refuses %s of %s holding a value int32 cannot hold or a negative one, naming it and its place", (name, descr, values, message) => {
    const error = thrown(() => decodeScipyNpz(archive({ [name]: npy(descr, `(${values.length},)`, integers(descr, values)) }))) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.message.startsWith(message), error.message).toBe(true);
  });

  it("refuses a uint64 shape past 2^53 under shape.npy", () => {
    const error = thrown(() => decodeScipyNpz(archive({ "shape.npy": npy("<u8", "(2,)", integers("<u8", [4n, 2n ** 64n - 1n])) }))) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.message).toBe("shape.npy: the matrix is 4 x 18446744073709551615; a BsrMatrix has dimensions of 1 to 2^53 - 1");
  });
});

describe("dtype names in errors", () => {
  it("says that <f16 is a 16-byte float (float128), not float16", () => {
    const error = thrown(() => decodeScipyNpz(archive({ "data.npy": npy("<f16", "(2, 2, 2)", new Uint8Array(128)) })));
    expect((error as Error).message).toContain("got <f16 (a 16-byte float: float128)");
    const indices = thrown(() => decodeScipyNpz(archive({ "indices.npy": npy("<f2", "(2,)", new Uint8Array(4)) })));
    expect((indices as Error).message).toContain("got <f2 (a 2-byte float: float16)");
  });
});

describe("an index member of the wrong dtype", () => {
  // shape.npy of floats used to be refused as "int32 or int64 indices": indices.npy is another member.
  it.each([
    ["shape.npy", npy("<f8", "(2,)", bytesOf(Float64Array.from([4, 6]))), "shape.npy: expected integer dimensions (int8 to int64, uint8 to uint64), got <f8 (a 8-byte float: float64)"],
    ["shape.npy", npy("<f8", "(2,)", bytesOf(Float64Array.from([4.5, 6]))), "shape.npy: expected integer dimensions (int8 to int64, uint8 to uint64), got <f8 (a 8-byte float: float64)"],
    ["indptr.npy", npy("<f4", "(3,)", bytesOf(Float32Array.from([0, 1, 2]))), "indptr.npy: expected integer offsets (int8 to int64, uint8 to uint64), got <f4 (a 4-byte float: float32)"],
    ["indices.npy", npy("<f4", "(2,)", bytesOf(Float32Array.from([0, 2]))), "indices.npy: expected integer indices (int8 to int64, uint8 to uint64), got <f4 (a 4-byte float: float32)"],
  ])("names %s and what it holds", (name, file, message) => {
    const error = thrown(() => decodeScipyNpz(archive({ [name]: file }))) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect([error.field, error.message]).toEqual([name, message]);
  });

  it("calls an indptr value past int32 an offset's value, not an index", () => {
    const error = thrown(() => decodeScipyNpz(archive({ "indptr.npy": npy("<i8", "(3,)", bytesOf(BigInt64Array.from([0n, 2n ** 40n, 2n]))) }))) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.message).toBe("indptr[1]: 1099511627776 does not fit int32");
  });

  it("reports data blocks that do not tile the matrix under data.npy, with the dimension of its shape", () => {
    const error = thrown(() => decodeScipyNpz(archive({ "data.npy": npy("<f8", "(2, 3, 2)", new Uint8Array(96)) }))) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("data.npy");
    expect(error.message).toMatch(/^data\.npy: its shape \(2, 3, 2\), dimension 1: block height R=3 does not divide rows=4/);
  });
});

describe("size limits of .npz files", () => {
  /** A real matrix of one 65536 x 16384 block whose 4 GiB of values are never allocated: reading them throws. */
  const hugeMatrix = () => {
    const side = [65536, 16384] as const;
    const pattern = new BsrPattern({ shape: side, blockShape: side, blockRowPtr: Int32Array.of(0, 1), blockColIdx: Int32Array.of(0) });
    const values = Object.create(Float32Array.prototype, { length: { value: side[0] * side[1] } }) as Float32Array;
    const Matrix = BsrMatrix as unknown as new (pattern: BsrPattern, values: Float32Array, dtype: "float32") => BsrMatrix;
    const matrix = new Matrix(pattern, values, "float32");
    matrix.validate();
    return matrix;
  };

  it("refuses, before building anything, a matrix whose data.npy would pass the 4 GiB a zip without ZIP64 holds", async () => {
    const error = thrown(() => encodeScipyNpz(hugeMatrix())) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("data.npy");
    expect(error.message).toMatch(/4294967424 bytes \(4\.00 GiB\).*ZIP64.*safetensors/);

    const directory = await mkdtemp(join(tmpdir(), "bsr-npz-"));
    try {
      await expect(saveScipyNpz(join(directory, "huge.npz"), hugeMatrix())).rejects.toThrow(BsrFormatError);
      expect(await readdir(directory)).toEqual([]);
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });

  it("bounds each member and the whole archive, with room for headers and deflate's stored blocks", () => {
    const instead = "use safetensors";
    expect(() => checkZip32Sizes([["data.npy", 2 ** 32 - 2]], instead)).toThrow(/data\.npy: is 4294967294 bytes.*archive/);
    expect(() => checkZip32Sizes([["data.npy", 2 ** 32 - 1]], instead)).toThrow(/data\.npy: would be 4294967295 bytes/);
    // Two members each under 4 GiB, together past it: the larger is named.
    expect(() => checkZip32Sizes([["indices.npy", 2 ** 30], ["data.npy", 3 * 2 ** 30]], instead)).toThrow(/^data\.npy: .*archive would reach 4\.00 GiB/);
    expect(() => checkZip32Sizes([["indices.npy", 2 ** 30], ["data.npy", 2 ** 31]], instead)).not.toThrow();
    expect(() => checkZip32Sizes([["data.npy", 2 ** 32 - 2 ** 22]], instead)).not.toThrow();
  });

  it("stores, rather than deflates, a member that fflate's deflate would write past 2 GiB (it truncates such output)", () => {
    expect(deflateLevel(2 ** 31 - 2 ** 22 - 1, 6)).toBe(6);
    expect(deflateLevel(2 ** 31 - 2 ** 22, 6)).toBe(0);
    expect(deflateLevel(3 * 2 ** 30, 6)).toBe(0);
    expect(deflateLevel(100, 0)).toBe(0);
  });

  it("refuses only archives past the 4 GiB the writer produces (not past 2 GiB), naming the path and what to use instead", async () => {
    const directory = await mkdtemp(join(tmpdir(), "bsr-npz-"));
    try {
      const path = join(directory, "big.npz");
      await writeFile(path, new Uint8Array(0));
      await truncate(path, 2 ** 32); // sparse: no disk space used
      const error = (await loadScipyNpz(path).catch((e) => e)) as BsrFormatError;
      expect(error).toBeInstanceOf(BsrFormatError);
      expect(error.field).toBe("npz");
      expect(error.message).toContain(`${path} is 4294967296 bytes (4.00 GiB), past the 4294967294 bytes (4.00 GiB) read whole`);
      expect(error.message).toMatch(/safetensors/);
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });
});

describe("refusals that say what the archive holds", () => {
  it("names the members of an archive that np.savez wrote instead of save_npz (arr_0)", () => {
    const error = thrown(() => decodeScipyNpz(zipSync({ "arr_0.npy": npy("|O", "()", new Uint8Array(8)) })));
    expect(error).toBeInstanceOf(BsrFormatError);
    expect((error as BsrFormatError).field).toBe("data.npy");
    expect(error.message).toMatch(/holds arr_0\.npy/);
  });

  it("quotes the dtype of a complex or pickled array", () => {
    const complex = thrown(() => decodeScipyNpz(archive({ "data.npy": npy("<c8", "(2, 2, 2)", new Uint8Array(64)) })));
    expect(complex).toBeInstanceOf(BsrFormatError);
    expect(complex.message).toMatch(/^data\.npy\.descr: unsupported dtype "<c8"/);
    expect(thrown(() => decodeScipyNpz(archive({ "data.npy": npy("|O", "(2, 2, 2)", new Uint8Array(64)) }))).message).toMatch(/"\|O"/);
  });

  it("refuses an empty SciPy matrix (shape (0, 6)) under shape.npy", () => {
    const empty = archive({
      "indices.npy": npy("<i4", "(0,)", new Uint8Array()),
      "indptr.npy": npy("<i4", "(1,)", bytesOf(Int32Array.from([0]))),
      "shape.npy": npy("<i8", "(2,)", bytesOf(BigInt64Array.from([0n, 6n]))),
      "data.npy": npy("<f8", "(0, 1, 2)", new Uint8Array()),
    });
    const error = thrown(() => decodeScipyNpz(empty));
    expect(error).toBeInstanceOf(BsrFormatError);
    expect((error as BsrFormatError).field).toBe("shape.npy");
    expect(error.message).toMatch(/0 x 6/);
  });
});

describe("SciPy files of other formats and data types", () => {
  it("names the format of a coo or dia archive (which has no indices.npy) rather than a missing member", () => {
    const shape = npy("<i8", "(2,)", bytesOf(BigInt64Array.from([4n, 6n])));
    const coo = zipSync({
      "row.npy": npy("<i4", "(1,)", bytesOf(Int32Array.from([0]))),
      "col.npy": npy("<i4", "(1,)", bytesOf(Int32Array.from([2]))),
      "format.npy": npy("|S3", "()", strToU8("coo")),
      "shape.npy": shape,
      "data.npy": npy("<f8", "(1,)", bytesOf(Float64Array.from([5]))),
    });
    const dia = zipSync({
      "offsets.npy": npy("<i4", "(1,)", bytesOf(Int32Array.from([0]))),
      "format.npy": npy("|S3", "()", strToU8("dia")),
      "shape.npy": shape,
      "data.npy": npy("<f8", "(1, 6)", new Uint8Array(48)),
    });
    for (const [bytes, format] of [[coo, "coo"], [dia, "dia"]] as const) {
      const error = thrown(() => decodeScipyNpz(bytes)) as BsrFormatError;
      expect(error).toBeInstanceOf(BsrFormatError);
      expect(error.field).toBe("format.npy");
      expect(error.message).toContain(`holds a "${format}" matrix; only bsr and csr are read`);
    }
  });

  it("reads bool and integer data (a mask, counts) as float32, as load_npz reads them", () => {
    const cases: [string, Uint8Array, number[]][] = [
      // NumPy reads any non-zero byte of a bool as True.
      ["|b1", Uint8Array.from([1, 0, 1, 1, 0, 1, 2, 1]), [1, 0, 1, 1, 0, 1, 1, 1]],
      ["|i1", bytesOf(Int8Array.from([-1, 2, 7, 8, 17, 18, 23, -128])), [-1, 2, 7, 8, 17, 18, 23, -128]],
      ["<u2", bytesOf(Uint16Array.from([1, 2, 7, 8, 17, 18, 23, 65535])), [1, 2, 7, 8, 17, 18, 23, 65535]],
      ["<i4", bytesOf(Int32Array.from([1, -2, 7, 8, 17, 18, 23, 2 ** 24])), [1, -2, 7, 8, 17, 18, 23, 2 ** 24]],
      ["<i8", bytesOf(BigInt64Array.from([1n, 2n, -7n, 8n, 17n, 18n, 23n, 2n ** 40n])), [1, 2, -7, 8, 17, 18, 23, 2 ** 40]],
      ["<u8", bytesOf(BigUint64Array.from([1n, 2n, 7n, 8n, 17n, 18n, 23n, 2n ** 63n])), [1, 2, 7, 8, 17, 18, 23, 2 ** 63]],
      // 2^24 + 1 has no float32: it rounds, as float64 data does.
      [">i4", Uint8Array.from([0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 8, 0, 0, 0, 17, 0, 0, 0, 18, 0, 0, 0, 23, 1, 0, 0, 1]), [1, 2, 7, 8, 17, 18, 23, 2 ** 24]],
    ];
    for (const [descr, data, blocks] of cases) {
      const matrix = decodeScipyNpz(archive({ "data.npy": npy(descr, "(2, 2, 2)", data) }));
      expect(matrix.dtype, descr).toBe("float32");
      expect(Array.from(matrix.values), descr).toEqual(blocks);
    }
    const csrMask = archive({
      "format.npy": npy("|S3", "()", strToU8("csr")),
      "indices.npy": npy("<i4", "(2,)", bytesOf(Int32Array.from([0, 5]))),
      "indptr.npy": npy("<i4", "(5,)", bytesOf(Int32Array.from([0, 1, 1, 1, 2]))),
      "data.npy": npy("|b1", "(2,)", Uint8Array.from([1, 1])),
    });
    const dense = Array.from(decodeScipyNpz(csrMask).toDense());
    expect(dense.filter((value) => value === 1).length).toBe(2);
    expect([dense[0], dense[23]]).toEqual([1, 1]);
  });

  it("rounds int64 and uint64 data past 2^53 to float32 once, as NumPy's astype(float32) does, not through float64", () => {
    // Expected values from NumPy 2.4: np.array(data).astype(np.float32). Through float64 first, 2^60 + 2^36 + 1
    // became 2^60 + 2^36, a float32 tie that rounded down to 2^60.
    const cases: [string, Uint8Array, number[]][] = [
      [
        "<i8",
        bytesOf(BigInt64Array.from([2n ** 60n + 2n ** 36n + 1n, -(2n ** 62n + 2n ** 38n + 1n), 2n ** 53n + 1n, 2n ** 63n - 1n, -(2n ** 63n), 2n ** 25n + 3n, 3n, 2n ** 40n + 2n ** 16n - 1n])),
        [2 ** 60 + 2 ** 37, -(2 ** 62 + 2 ** 39), 2 ** 53, 2 ** 63, -(2 ** 63), 2 ** 25 + 4, 3, 2 ** 40],
      ],
      [
        "<u8",
        bytesOf(BigUint64Array.from([2n ** 63n + 2n ** 39n + 1n, 2n ** 64n - 1n, 2n ** 54n + 2n ** 30n + 1n, 5n, 0n, 2n ** 24n + 1n, 2n ** 24n + 3n, 2n ** 53n + 2n ** 29n])),
        [2 ** 63 + 2 ** 40, 2 ** 64, 2 ** 54 + 2 ** 31, 5, 0, 2 ** 24, 2 ** 24 + 4, 2 ** 53],
      ],
    ];
    for (const [descr, data, blocks] of cases) {
      const matrix = decodeScipyNpz(archive({ "data.npy": npy(descr, "(2, 2, 2)", data) }));
      expect(Array.from(matrix.values), descr).toEqual(blocks);
    }
  });
});

describe("16-bit values widened to float32", () => {
  it("keep every bit, signaling NaN payloads included, as NumPy's astype(float32) widens them", () => {
    const values = (matrix: BsrMatrix) => Array.from(new Uint32Array(decodeScipyNpz(encodeScipyNpz(matrix)).values.buffer));
    const over = (bits: number[], dtype: "float16" | "bfloat16") =>
      BsrMatrix.fromTorch({ crowIndices: [0, 1], colIndices: [0], values: Uint16Array.from(bits), valuesShape: [1, 2, 2], size: [2, 2], dtype });
    // A signaling NaN, a quiet NaN with a payload, the smallest subnormal and -0.
    expect(values(over([0x7c01, 0xfe01, 0x0001, 0x8000], "float16"))).toEqual([0x7f802000, 0xffc02000, 0x33800000, 0x80000000]);
    expect(values(over([0x7f81, 0xffc1, 0x0001, 0x8000], "bfloat16"))).toEqual([0x7f810000, 0xffc10000, 0x00010000, 0x80000000]);
  });
});

describe("a .npy header read as NumPy reads it (a Python dict literal)", () => {
  /** data.npy of the 4 x 6 fixture with exactly this header text (float64 values 1, 2, 7, 8, 17, 18, 23, 24). */
  const dataWithHeader = (header: string) => {
    const data = bytesOf(Float64Array.from([1, 2, 7, 8, 17, 18, 23, 24]));
    const out = new Uint8Array(10 + header.length + data.length);
    out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length & 0xff, header.length >> 8]);
    out.set(strToU8(header), 10);
    out.set(data, 10 + header.length);
    return archive({ "data.npy": out });
  };

  it.each([
    ['{"descr": "<f8", "fortran_order": False, "shape": (2, 2, 2)}\n'],
    ["{'descr': 'f8', 'fortran_order': False, 'shape': (2, 2, 2), }\n"],
    ["{u'descr': u'<f8', 'fortran_order': False,\n 'shape': (2, 2, 2,)}   \n"],
  ])("reads %j, as np.load does", (header) => {
    expect(Array.from(decodeScipyNpz(dataWithHeader(header)).toDense())).toEqual(SCIPY_DENSE);
  });

  it.each([
    // np.load reads the last of a repeated key; the first was read, so the float64 data came out as integers.
    ["{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2, 2), 'descr': '<f8'}\n", "data.npy.descr: appears twice"],
    ["{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2, 2), 'descr': '<i8'}\n", "data.npy.descr: appears twice"],
    ["{'descr': '<f8', 'fortran_order': False, 'fortran_order': True, 'shape': (2, 2, 2)}\n", "data.npy.fortran_order: appears twice"],
    // np.load refuses each of these.
    ["{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2, 2), 'extra': 1}\n", "data.npy: the .npy header is not the dict NumPy writes (NumPy reads only the keys descr, fortran_order, shape, not 'extra')"],
    ["{'descr': '<f8', 'fortran_order': False, 'shape': (8,,)}\n", "data.npy.shape[1]: (8,,) is not a tuple (item 1 is empty)"],
    ["{'descr': '<f8', 'fortran_order': False, 'shape': (8)}\n", "data.npy.shape: the header has no 'shape' tuple"],
    ["{'descr': '<f8', 'fortran_order': Falsey, 'shape': (2, 2, 2)}\n", "data.npy.fortranOrder: the header has no 'fortran_order' of True or False"],
    ["{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2, 2)} x\n", "data.npy: the .npy header is not the dict NumPy writes (text follows the })"],
  ])("refuses %j, naming what is wrong", (header, message) => {
    const error = thrown(() => decodeScipyNpz(dataWithHeader(header)));
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.message.startsWith(message), error.message).toBe(true);
  });

  it.each([
    [1, 1],
    [2, 1],
    [3, 255],
    [4, 0],
  ])("refuses format version %i.%i, as np.load does (it reads 1.0, 2.0 and 3.0 only)", (major, minor) => {
    const header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2, 2), }\n";
    const prefix = major === 1 ? 10 : 12;
    const data = bytesOf(Float64Array.from([1, 2, 7, 8, 17, 18, 23, 24]));
    const file = new Uint8Array(prefix + header.length + data.length);
    file.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, major, minor]);
    // Format 1 has a 2-byte length (the header overwrites the upper two bytes written here), later ones 4 bytes.
    new DataView(file.buffer).setUint32(8, header.length, true);
    file.set(strToU8(header), prefix);
    file.set(data, prefix + header.length);
    const error = thrown(() => decodeScipyNpz(archive({ "data.npy": file })));
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.message).toBe(`data.npy: unsupported .npy format version ${major}.${minor} (NumPy reads versions 1.0, 2.0 and 3.0)`);
  });

  /** data.npy of the 4 x 6 fixture in format version `major`.0 with this shape text in its header. */
  const dataWithShape = (shape: string, major: number) => {
    const header = `{'descr': '<f8', 'fortran_order': False, 'shape': ${shape}, }\n`;
    const prefix = major === 1 ? 10 : 12;
    const data = bytesOf(Float64Array.from([1, 2, 7, 8, 17, 18, 23, 24]));
    const file = new Uint8Array(prefix + header.length + data.length);
    file.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, major, 0]);
    if (major === 1) new DataView(file.buffer).setUint16(8, header.length, true);
    else new DataView(file.buffer).setUint32(8, header.length, true);
    file.set(strToU8(header), prefix);
    file.set(data, prefix + header.length);
    return archive({ "data.npy": file });
  };

  it.each([1, 2])("reads Python 2's long literals (2L) in format version %i.0, which Python 2 wrote, as np.load does", (major) => {
    for (const shape of ["(2L, 2L, 2L)", "(2 L, 2, 2L,)"]) {
      expect(Array.from(decodeScipyNpz(dataWithShape(shape, major)).toDense())).toEqual(SCIPY_DENSE);
    }
  });

  it("refuses a long literal in a version 3.0 header, as np.load does (Cannot parse header), quoting the header", () => {
    const error = thrown(() => decodeScipyNpz(dataWithShape("(2L, 2, 2)", 3))) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("data.npy.shape");
    expect(error.position).toBe(0);
    expect(error.message).toBe(
      `data.npy.shape[0]: 2L is a Python 2 long literal, which np.load reads in .npy versions 1.0 and 2.0 only, not in this 3.0 header: "{'descr': '<f8', 'fortran_order': False, 'shape': (2L, 2, 2), }"`,
    );
  });

  it.each([1, 3])("reads the integers Python reads (0x2, 0b10, +2, 0o2, 0b1_0, 00) in version %i.0", (major) => {
    expect(Array.from(decodeScipyNpz(dataWithShape("(0x2, 0b10, +2)", major)).toDense())).toEqual(SCIPY_DENSE);
    expect(Array.from(decodeScipyNpz(dataWithShape("(0o2, 0b1_0, 2)", major)).toDense())).toEqual(SCIPY_DENSE);
    // 00 is zero: 0 blocks, of 0 x 2, which no matrix has (the point is that it parses as a number).
    expect(thrown(() => decodeScipyNpz(dataWithShape("(00, 2, 2)", major))).message).toMatch(/^data\.npy: .*shape \(0, 2, 2\)/);
  });

  it.each([
    ["(02, 2, 2)", "a leading zero, no Python 3 literal"],
    ["(2, 2l, 2)", "a lower-case long suffix, which NumPy does not strip"],
    ["(2,\u00a02, 2)", "a no-break space, which Python does not take for a space"],
    ["(2, 2, 2)\u00a0", "a no-break space after the tuple"],
  ])("refuses %j (%s), as np.load does", (shape) => {
    for (const major of [1, 3]) expect(thrown(() => decodeScipyNpz(dataWithShape(shape, major)))).toBeInstanceOf(BsrFormatError);
  });

  it("reads format versions 2.0 and 3.0 (a 4-byte header length)", () => {
    const header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2, 2), }\n";
    const data = bytesOf(Float64Array.from([1, 2, 7, 8, 17, 18, 23, 24]));
    for (const major of [2, 3]) {
      const file = new Uint8Array(12 + header.length + data.length);
      file.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, major, 0]);
      new DataView(file.buffer).setUint32(8, header.length, true);
      file.set(strToU8(header), 12);
      file.set(data, 12 + header.length);
      expect(Array.from(decodeScipyNpz(archive({ "data.npy": file })).toDense())).toEqual(SCIPY_DENSE);
    }
  });
});

describe("big-endian and Fortran-order arrays", () => {
  /** Element (n, r, c) of a [blocks, 3, 5] array in Fortran order, given its C-order bytes and item size. */
  function toFortran(cBytes: Uint8Array, shape: number[], size: number): Uint8Array {
    const out = new Uint8Array(cBytes.length);
    const [a, b, c] = shape;
    for (let n = 0; n < a; n++) {
      for (let r = 0; r < b; r++) {
        for (let col = 0; col < c; col++) {
          const from = (n * b * c + r * c + col) * size;
          const to = (n + a * r + a * b * col) * size;
          out.set(cBytes.subarray(from, from + size), to);
        }
      }
    }
    return out;
  }

  function blocksArchive(descr: string, data: Uint8Array, blocks: number, fortran: boolean): Uint8Array {
    return zipSync(
      {
        "indices.npy": npy("<i4", `(${blocks},)`, bytesOf(Int32Array.from({ length: blocks }, (_, i) => i))),
        "indptr.npy": npy("<i4", "(2,)", bytesOf(Int32Array.from([0, blocks]))),
        "format.npy": npy("|S3", "()", strToU8("bsr")),
        "shape.npy": npy("<i8", "(2,)", bytesOf(BigInt64Array.from([3n, BigInt(5 * blocks)]))),
        "data.npy": npy(descr, `(${blocks}, 3, 5)`, data, fortran),
      },
      { level: 0 },
    );
  }

  it("leaves the caller's bytes alone: a stored big-endian archive in a Node Buffer decodes the same twice", () => {
    // save_npz(compressed=False) stores members, so their arrays are views into the caller's bytes.
    const data = new Uint8Array(2 * 15 * 4);
    for (let i = 0; i < 30; i++) new DataView(data.buffer).setFloat32(i * 4, i + 0.5, false);
    const file = Buffer.from(blocksArchive(">f4", data, 2, false));
    const before = Buffer.from(file);
    const first = decodeScipyNpz(file);
    expect(Buffer.compare(file, before)).toBe(0);
    const second = decodeScipyNpz(file);
    expect(Array.from(first.values)).toEqual(Array.from({ length: 30 }, (_, i) => i + 0.5));
    expect(second.values).toEqual(first.values);
  });

  it.each([
    ["|i1", 1],
    ["<f2", 2],
    ["<f4", 4],
    [">f4", 4],
    ["<f8", 8],
    [">i8", 8],
  ])("reads %s data in Fortran order as its C-order twin", (descr, size) => {
    const blocks = 7;
    const cBytes = new Uint8Array(blocks * 15 * size);
    // Small values in every byte order and width, non-zero and distinct per element.
    for (let i = 0; i < blocks * 15; i++) {
      const view = new DataView(cBytes.buffer, i * size, size);
      const little = descr[0] !== ">";
      if (descr.endsWith("f2")) view.setUint16(0, 0x3c00 + i, little);
      else if (descr.endsWith("f4")) view.setFloat32(0, i + 1, little);
      else if (descr.endsWith("f8")) view.setFloat64(0, i + 1, little);
      else if (descr.endsWith("i8")) view.setBigInt64(0, BigInt(i + 1), little);
      else view.setInt8(0, (i % 100) + 1);
    }
    const fromC = decodeScipyNpz(blocksArchive(descr, cBytes, blocks, false));
    const fromFortran = decodeScipyNpz(blocksArchive(descr, toFortran(cBytes, [blocks, 3, 5], size), blocks, true));
    expect(fromFortran.dtype).toBe(fromC.dtype);
    expect(fromFortran.values).toEqual(fromC.values);
  });
});

/** `bytes` with `name`'s recorded size moved to a zip64 extra field of its central directory entry and set to `size`. */
function withZip64Size(bytes: Uint8Array, name: string, size: number): Uint8Array {
  const entry = centralEntry(bytes, name);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const extraAt = entry + 46 + view.getUint16(entry + 28, true);
  const extra = new DataView(new ArrayBuffer(12));
  extra.setUint16(0, 1, true);
  extra.setUint16(2, 8, true);
  extra.setBigUint64(4, BigInt(size), true);
  const out = new Uint8Array(bytes.length + 12);
  out.set(bytes.subarray(0, extraAt));
  out.set(new Uint8Array(extra.buffer), extraAt);
  out.set(bytes.subarray(extraAt), extraAt + 12);
  const patched = new DataView(out.buffer);
  patched.setUint32(entry + 24, 0xffffffff, true);
  patched.setUint16(entry + 30, view.getUint16(entry + 30, true) + 12, true);
  patched.setUint32(out.length - 22 + 12, patched.getUint32(out.length - 22 + 12, true) + 12, true);
  return out;
}

describe("a member larger than one buffer holds", () => {
  const limit = constants.MAX_LENGTH;

  /** What loadScipyNpz makes of `bytes` in a file: the error it throws, or the matrix. */
  async function load(bytes: Uint8Array): Promise<{ path: string; error: BsrFormatError }> {
    const directory = await mkdtemp(join(tmpdir(), "bsr-npz-"));
    const path = join(directory, "huge.npz");
    try {
      await writeFile(path, bytes);
      return { path, error: (await loadScipyNpz(path).catch((e) => e)) as BsrFormatError };
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  }

  it("loadScipyNpz refuses it from the central directory, naming the file, the member, its size and the runtime's limit", async () => {
    // A small archive whose data.npy declares one byte past buffer.constants.MAX_LENGTH: nothing that large is written or allocated.
    const { path, error } = await load(withZip64Size(archive(), "data.npy", limit + 1));
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("data.npy");
    expect(error.message).toContain(`${path}: data.npy: inflates to ${limit + 1} bytes`);
    expect(error.message).toContain(`past the ${limit} bytes`);
    expect(error.message).toContain(`one buffer holds in Node.js ${process.version} (buffer.constants.MAX_LENGTH)`);
  });

  it("looks at a member named data, which load_npz reads in place of data.npy, too", async () => {
    const files: Record<string, Uint8Array> = unzipSync(archive());
    files.data = files["data.npy"];
    delete files["data.npy"];
    const { error } = await load(withZip64Size(zipSync(files), "data", limit + 1));
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("data");
    expect(error.message).toContain(`data: inflates to ${limit + 1} bytes`);
  });

  it("looks only at the members it reads: a huge member save_npz does not write is left alone", async () => {
    const files = unzipSync(archive());
    const bytes = withZip64Size(zipSync({ ...files, "extra.npy": strToU8("unused") }), "extra.npy", limit + 1);
    const { error: loaded } = await load(bytes);
    expect(loaded).toBeInstanceOf(BsrMatrix);
    expect(Array.from((loaded as unknown as BsrMatrix).toDense())).toEqual(SCIPY_DENSE);
  });

  it("names the file in every format error of loadScipyNpz", async () => {
    const { path, error } = await load(archive({ "format.npy": npy("|S3", "()", strToU8("coo")) }));
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("format.npy");
    expect(error.message).toBe(`${path}: format.npy: the archive holds a "coo" matrix; only bsr and csr are read`);
  });
});

describe("errors name the archive's arrays, never decodeScipyNpz's internals", () => {
  it("quotes a structured dtype (a list of fields) instead of 'Invalid input'", () => {
    const header = npy("<f4", "(1,)", new Uint8Array(4));
    const text = new TextDecoder("latin1").decode(header).replace("'<f4'", "[('a', '<f4')]");
    const structured = new Uint8Array(Buffer.from(text, "latin1"));
    new DataView(structured.buffer).setUint16(8, structured.length - 10 - 4, true);
    const error = thrown(() => decodeScipyNpz(archive({ "data.npy": structured }))) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("data.npy.descr");
    expect(error.message).toBe(`data.npy.descr: unsupported dtype "[('a', '<f4')]": only bool, integer, float and string arrays are read`);
  });

  it("says which part of a member's .npy header is missing or wrong instead of 'Invalid input'", () => {
    /** A .npy file with exactly this header text. */
    const rawNpy = (header: string, data: Uint8Array) => {
      const out = new Uint8Array(10 + header.length + data.length);
      out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length & 0xff, header.length >> 8]);
      out.set(strToU8(header), 10);
      out.set(data, 10 + header.length);
      return out;
    };
    const shape = bytesOf(BigInt64Array.from([4n, 6n]));
    const message = (file: Uint8Array) => thrown(() => decodeScipyNpz(archive({ "shape.npy": file }))).message;
    expect(message(rawNpy("{'descr': '<i8', 'fortran_order': False, }\n", shape))).toBe("shape.npy.shape: the header has no 'shape' tuple");
    expect(message(rawNpy("{'descr': '<i8', 'shape': (2,), }\n", shape))).toBe("shape.npy.fortranOrder: the header has no 'fortran_order' of True or False");
    expect(message(rawNpy("{'fortran_order': False, 'shape': (2,), }\n", shape))).toBe("shape.npy.descr: the header has no 'descr' (the dtype)");
    expect(message(npy("<i8", "(2.5,)", shape))).toBe("shape.npy.shape[0]: expected a dimension (an integer >= 0), got 2.5");
    expect(message(npy("<i8", "(-2,)", shape))).toBe("shape.npy.shape[0]: expected a dimension (an integer >= 0), got -2");
    expect(message(npy("<i8", "(two,)", shape))).toBe("shape.npy.shape[0]: expected a dimension (an integer >= 0), got two");
    // Python 2's long literals still read.
    expect(decodeScipyNpz(archive({ "shape.npy": npy("<i8", "(2L,)", shape) })).shape).toEqual([4, 6]);
  });

  it("reports a zero block dimension or a block count that disagrees with the indices under data.npy, with its shape", () => {
    const zeroHeight = thrown(() => decodeScipyNpz(archive({ "data.npy": npy("<f4", "(2, 0, 2)", new Uint8Array(0)) }))) as BsrFormatError;
    expect(zeroHeight).toBeInstanceOf(BsrFormatError);
    expect(zeroHeight.message).toBe("data.npy: its shape (2, 0, 2), dimension 1: expected a positive integer");
    const oneBlock = thrown(() => decodeScipyNpz(archive({ "data.npy": npy("<f4", "(1, 2, 2)", new Uint8Array(16)) }))) as BsrFormatError;
    expect(oneBlock).toBeInstanceOf(BsrFormatError);
    expect(oneBlock.message).toBe("data.npy: its shape (1, 2, 2), dimension 0: leading dimension 1 differs from the 2 blocks the indices name");
  });

  it("reports a shape past 2^53 under shape.npy", () => {
    const huge = archive({ "shape.npy": npy("<i8", "(2,)", bytesOf(BigInt64Array.from([2n ** 62n, 6n]))) });
    const error = thrown(() => decodeScipyNpz(huge)) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("shape.npy");
    expect(error.message).toBe("shape.npy: the matrix is 4611686018427387904 x 6; a BsrMatrix has dimensions of 1 to 2^53 - 1");
  });
});
