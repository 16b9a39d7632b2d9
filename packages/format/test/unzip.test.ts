import { strToU8, unzipSync, zipSync } from "fflate";
import { describe, expect, it } from "vitest";
import { BsrFormatError } from "../src/index.js";
import { unzipMembers } from "../src/unzip.js";
import { thrown } from "./helpers.js";

/** 48 KB that deflates to dynamic Huffman blocks and matches: every path of the inflater. */
const text = strToU8(Array.from({ length: 3000 }, (_, i) => `row ${i % 997} col ${(i * 7) % 131};`).join("\n"));
const names = new Set(["a.npy", "b.npy"]);
const zip = zipSync({ "a.npy": text, "b.npy": strToU8("short"), "c.npy": strToU8("not asked for") });

/** `bytes` with `name`'s recorded size (central directory entry, +24) changed by `delta`. */
function withSizeChanged(bytes: Uint8Array, name: string, delta: number): Uint8Array {
  const patched = bytes.slice();
  const view = new DataView(patched.buffer);
  const latin1 = new TextDecoder("latin1").decode(patched);
  for (let at = latin1.indexOf("PK\x01\x02"); at >= 0; at = latin1.indexOf("PK\x01\x02", at + 4)) {
    if (latin1.slice(at + 46, at + 46 + name.length) === name) view.setUint32(at + 24, view.getUint32(at + 24, true) + delta, true);
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
    expect(long.field).toBe("a.npy");
    // In pieces the overflow itself is caught; in one call fflate drops the extra byte and the CRC-32 differs.
    expect(long.message).toMatch(pieces ? `inflates past the ${text.length - 1} bytes the archive records` : "CRC-32");
  });

  it("refuses a truncated deflate stream in pieces", () => {
    const truncated = zipSync({ "a.npy": text });
    const entry = new TextDecoder("latin1").decode(truncated).indexOf("PK\x01\x02");
    const view = new DataView(truncated.buffer);
    view.setUint32(entry + 20, view.getUint32(entry + 20, true) - 100, true);
    const error = thrown(() => unzipMembers(truncated, names, 1000)) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.message).toMatch(/^a\.npy: not a deflate stream \(unexpected EOF\)/);
  });
});
