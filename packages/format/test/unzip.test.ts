import { strToU8, unzipSync, zipSync } from "fflate";
import { describe, expect, it } from "vitest";
import { crc32 } from "../src/crc32.js";
import { BsrFormatError, SeededRandom } from "../src/index.js";
import { unzipMembers } from "../src/unzip.js";
import { thrown } from "./helpers.js";

/** 48 KB that deflates to dynamic Huffman blocks and matches: every path of the inflater. */
const text = strToU8(Array.from({ length: 3000 }, (_, i) => `row ${i % 997} col ${(i * 7) % 131};`).join("\n"));
const names = new Set(["a.npy", "b.npy"]);
const zip = zipSync({ "a.npy": text, "b.npy": strToU8("short"), "c.npy": strToU8("not asked for") });

/**
 * `bytes` with `name`'s recorded size (or compressed size, `field` 20) changed by `delta` in its central directory
 * entry (`field`) and its local header (`field` - 2) alike, so that the two agree.
 */
function withSizeChanged(bytes: Uint8Array, name: string, delta: number, field = 24): Uint8Array {
  const patched = bytes.slice();
  const view = new DataView(patched.buffer);
  const latin1 = new TextDecoder("latin1").decode(patched);
  for (let at = latin1.indexOf("PK\x01\x02"); at >= 0; at = latin1.indexOf("PK\x01\x02", at + 4)) {
    if (latin1.slice(at + 46, at + 46 + name.length) !== name) continue;
    const local = view.getUint32(at + 42, true) + field - 2;
    view.setUint32(at + field, view.getUint32(at + field, true) + delta, true);
    view.setUint32(local, view.getUint32(local, true) + delta, true);
  }
  return patched;
}

describe("inflating a member in pieces, as one past fflate's 2 GiB one-shot limit is", () => {
  it.each([7, 1000])("gives the same bytes in pieces of %i as in one call, and only the members asked for", (chunkBytes) => {
    const whole = unzipMembers(zip, names);
    const pieces = unzipMembers(zip, names, chunkBytes);
    const fflate = unzipSync(zip, { filter: (file) => names.has(file.name) });
    expect([...whole.keys()].sort()).toEqual(["a.npy", "b.npy"]);
    expect([...pieces.keys()].sort()).toEqual(["a.npy", "b.npy"]);
    // Buffer.equals: a byte-wise toEqual of 48 KB takes most of a second.
    for (const [name, bytes] of whole) {
      expect(Buffer.from(bytes).equals(Buffer.from(fflate[name]))).toBe(true);
      expect(Buffer.from(pieces.get(name)!).equals(Buffer.from(bytes))).toBe(true);
    }
    expect(Buffer.from(whole.get("a.npy")!).equals(Buffer.from(text))).toBe(true);
  });

  it.each([
    ["in one call", undefined],
    ["in pieces of 64 bytes", 64],
  ])("refuses a stream longer or shorter than the size the archive records, %s", (_, pieces) => {
    const short = thrown(() => unzipMembers(withSizeChanged(zip, "a.npy", 1), names, pieces)) as BsrFormatError;
    expect(short).toBeInstanceOf(BsrFormatError);
    expect(short.message).toBe(`a.npy: inflates to ${text.length} bytes, not the ${text.length + 1} the archive records`);
    const long = thrown(() => unzipMembers(withSizeChanged(zip, "a.npy", -1), names, pieces)) as BsrFormatError;
    expect(long).toBeInstanceOf(BsrFormatError);
    expect(long.message).toBe(`a.npy: inflates past the ${text.length - 1} bytes the archive records`);
  });

  // Text deflates to Huffman blocks; random bytes to stored blocks inside the deflate stream, copied in whole.
  const random = new SeededRandom(5);
  const noise = Uint8Array.from({ length: 3000 }, () => random.nextUint32() & 255);
  it.each([
    ["Huffman", text],
    ["stored", noise],
  ])("refuses, in one call, a stream longer than the size recorded with the CRC-32 of the bytes kept (%s blocks)", (_, contents) => {
    const kept = 100;
    const patched = zipSync({ "a.npy": contents });
    const view = new DataView(patched.buffer);
    const central = new TextDecoder("latin1").decode(patched).indexOf("PK\x01\x02");
    expect(view.getUint16(8, true)).toBe(8);
    // The CRC-32 and size fields of the local header (14, 22) and the central directory entry (16, 24).
    for (const [crc, size] of [[14, 22], [central + 16, central + 24]]) {
      view.setUint32(crc, crc32(contents.subarray(0, kept)), true);
      view.setUint32(size, kept, true);
    }
    // fflate drops what a stream writes past the buffer it is given: the member came out as the first 100 bytes.
    const error = thrown(() => unzipMembers(patched, names)) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.message).toBe(`a.npy: inflates past the ${kept} bytes the archive records`);
  });

  it("refuses a truncated deflate stream in pieces", () => {
    const truncated = withSizeChanged(zipSync({ "a.npy": text }), "a.npy", -100, 20);
    const error = thrown(() => unzipMembers(truncated, names, 1000)) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.message).toMatch(/^a\.npy: not a deflate stream \(unexpected EOF\)/);
  });
});

describe("members that overlap", () => {
  it("refuses a member whose data runs over the next member's local header, as Python's zipfile does (Overlapped entries)", () => {
    const stored = zipSync({ "a.npy": [strToU8("first member"), { level: 0 }], "b.npy": [strToU8("second"), { level: 0 }] });
    const view = new DataView(stored.buffer);
    const latin1 = new TextDecoder("latin1").decode(stored);
    const central = latin1.indexOf("PK\x01\x02");
    const next = latin1.indexOf("PK\x03\x04", 4);
    // a.npy claims everything up to the central directory (b.npy's header and data), with a CRC-32 to match, in both headers.
    const start = 30 + "a.npy".length;
    const claimed = central - start;
    for (const [at, crc, sizes] of [[central + 16, central + 20, central + 24], [14, 18, 22]]) {
      view.setUint32(at, crc32(stored.subarray(start, central)), true);
      view.setUint32(crc, claimed, true);
      view.setUint32(sizes, claimed, true);
    }
    const error = thrown(() => unzipMembers(stored, new Set(["a.npy"]))) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.message).toBe(
      `a.npy: its ${claimed} bytes from offset ${start} run past offset ${next}, where the next member's local header starts (overlapping members: a damaged archive or a zip bomb)`,
    );
    // b.npy itself still reads.
    expect(new TextDecoder().decode(unzipMembers(stored, new Set(["b.npy"])).get("b.npy"))).toBe("second");
  });

  it("refuses a last member whose data runs into the central directory", () => {
    const stored = zipSync({ "a.npy": [strToU8("only member"), { level: 0 }] });
    const view = new DataView(stored.buffer);
    const central = new TextDecoder("latin1").decode(stored).indexOf("PK\x01\x02");
    const start = 30 + "a.npy".length;
    const claimed = central - start + 8;
    for (const [crc, compressed, size] of [[central + 16, central + 20, central + 24], [14, 18, 22]]) {
      view.setUint32(crc, crc32(stored.subarray(start, start + claimed)), true);
      view.setUint32(compressed, claimed, true);
      view.setUint32(size, claimed, true);
    }
    expect(thrown(() => unzipMembers(stored, new Set(["a.npy"]))).message).toMatch(/run past offset \d+, where the central directory starts/);
  });
});
