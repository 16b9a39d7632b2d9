import { strToU8, zipSync } from "fflate";
import { describe, expect, it, vi } from "vitest";
import { decodeScipyNpz } from "../src/npz.js";

// This machine is little-endian: the reader is run as on a big-endian host (s390x), whose typed arrays read their
// elements big-endian. Elements it hands to typed arrays must then be big-endian, whatever order the file wrote.
vi.mock("../src/byte-order.js", () => ({ littleEndianHost: false }));

/** A .npy file (format 1.0) of raw element bytes. */
function npy(descr: string, shape: string, data: Uint8Array): Uint8Array {
  const header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }\n`;
  const out = new Uint8Array(10 + header.length + data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length, 0]);
  out.set(strToU8(header), 10);
  out.set(data, 10 + header.length);
  return out;
}

/** float32 `values` as bytes of either order. */
function float32Bytes(values: number[], littleEndian: boolean): Uint8Array {
  const out = new Uint8Array(4 * values.length);
  for (const [i, value] of values.entries()) new DataView(out.buffer).setFloat32(4 * i, value, littleEndian);
  return out;
}

/** A 2 x 4 matrix of 2 x 2 blocks in block columns 0 and 1; its one-byte indices read the same in either order. */
function archive(data: Uint8Array, dataDescr: string, format: Uint8Array): Uint8Array {
  return zipSync({
    "indices.npy": npy("|u1", "(2,)", Uint8Array.from([0, 1])),
    "indptr.npy": npy("|u1", "(2,)", Uint8Array.from([0, 2])),
    "format.npy": format,
    "shape.npy": npy("|u1", "(2,)", Uint8Array.from([2, 4])),
    "data.npy": npy(dataDescr, "(2, 2, 2)", data),
  });
}

describe("a .npy member read on a big-endian host", () => {
  const values = [1, 2, 3, 4, 5, 6, 7, 8];

  it.each([
    ["<f4", true],
    [">f4", false],
  ])("hands the typed arrays %s data in the host's order (big-endian)", (descr, littleEndian) => {
    const matrix = decodeScipyNpz(archive(float32Bytes(values, littleEndian), descr, npy("|S3", "()", strToU8("bsr"))));
    const held = new DataView(matrix.values.buffer, matrix.values.byteOffset, matrix.values.byteLength);
    expect(Array.from(values, (_, i) => held.getFloat32(4 * i, false))).toEqual(values);
  });

  it("reads a unicode format string written in either order", () => {
    for (const littleEndian of [true, false]) {
      const codes = new Uint8Array(12);
      for (const [i, code] of [0x62, 0x73, 0x72].entries()) new DataView(codes.buffer).setUint32(4 * i, code, littleEndian);
      const format = npy(littleEndian ? "<U3" : ">U3", "()", codes);
      expect(decodeScipyNpz(archive(float32Bytes(values, false), ">f4", format)).shape).toEqual([2, 4]);
    }
  });
});
