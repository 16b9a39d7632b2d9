import { describe, expect, it } from "vitest";
import { copyBandwidth, copyBuffers } from "../src/copy_bandwidth";

describe("the memory-bandwidth copy", () => {
  it("prepares both buffers written in full before any copy is timed (no first-touch page fault in the figure)", () => {
    const { source, target } = copyBuffers(4 * 2 ** 20);
    expect(source.length).toBe(2 ** 20);
    expect(target.length).toBe(2 ** 20);
    expect(source.every((v) => v === 1)).toBe(true);
    // Every page of the target holds the copy: it has been written once already.
    expect(target.every((v) => v === 1)).toBe(true);
  });

  it("refuses sizes and repeat counts that are not counts", () => {
    for (const bytes of [0, -4, 6, Number.NaN, 1.5]) expect(() => copyBuffers(bytes)).toThrow(/copyBuffers: bytes must be a positive multiple of 4/);
    for (const repeats of [0, -1, Number.NaN, 2.5]) expect(() => copyBandwidth(repeats, 1024)).toThrow(/copyBandwidth: repeats must be a positive integer/);
  });
});
