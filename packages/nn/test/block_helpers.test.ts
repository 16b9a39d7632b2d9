import { BsrPattern, cast, randn, ValueError, zeros } from "@blocksparse/core";
import { blockCountFor, blockSources, remapBlocks } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";

describe("the block helpers refuse what is not theirs, naming it", () => {
  it("remapBlocks: a source other than -1 or a block index is refused, not read as a new block or truncated", () => {
    const values = randn([2, 4, 4], { seed: 1 });
    // -2 counted as a new block (zeros in silence); 1.5 in a plain array was truncated to block 1; NaN failed in gather.
    expect(() => remapBlocks(values, Int32Array.from([0, -2, 1]))).toThrow(/remapBlocks: source -2 is not -1 or one of the 2 blocks/);
    expect(() => remapBlocks(values, [0, 1.5] as unknown as Int32Array)).toThrow(/source 1\.5/);
    expect(() => remapBlocks(values, [Number.NaN] as unknown as Int32Array)).toThrow(/remapBlocks: source NaN/);
    expect(() => remapBlocks(values, Int32Array.from([2]))).toThrow(/remapBlocks: source 2 /);
    expect(() => remapBlocks(values, 3 as unknown as Int32Array)).toThrow(/remapBlocks: source NaN/);
    expect(Array.from(remapBlocks(values, Int32Array.from([1, -1])).dataSync().slice(16))).toEqual(new Array(16).fill(0));
  });

  it("remapBlocks: values must be float blocks and fresh blocks of their dtype, block shape and count", () => {
    const values = randn([2, 4, 4], { seed: 1 });
    const sources = Int32Array.from([0, -1]);
    expect(() => remapBlocks(null as never, sources)).toThrow(/remapBlocks: values must be float blocks \[n, R, C\]/);
    expect(() => remapBlocks(randn([2, 4]), sources)).toThrow(ValueError);
    expect(() => remapBlocks(values, sources, randn([1, 2, 8]))).toThrow(/remapBlocks: fresh must be float32 blocks \[1, 4, 4\]/);
    expect(() => remapBlocks(values, sources, randn([2, 4, 4]))).toThrow(/fresh must be float32 blocks \[1, 4, 4\]/);
    expect(() => remapBlocks(values, sources, cast(randn([1, 4, 4]), "float16"))).toThrow(/fresh must be float32 blocks/);
    expect(() => remapBlocks(values, sources, zeros([1, 4, 4], "int32"))).toThrow(ValueError);
    expect(remapBlocks(values, sources, randn([1, 4, 4])).shape).toEqual([2, 4, 4]);
  });

  it("blockSources: a pattern that is not a BsrPattern is a ValueError, not a TypeError", () => {
    const pattern = BsrPattern.dense([8, 8], [4, 4]);
    expect(() => blockSources(null as never, pattern)).toThrow(/blockSources: previous and next must be BsrPatterns/);
    expect(() => blockSources(pattern, {} as never)).toThrow(ValueError);
    expect(Array.from(blockSources(pattern, pattern))).toEqual([0, 1, 2, 3]);
  });

  it("blockCountFor: a density outside (0, 1] or a total that is not a count is refused (NaN came back as NaN)", () => {
    expect(() => blockCountFor(Number.NaN, 10)).toThrow(/blockCountFor: density must be in \(0, 1\] and total a block count, got NaN, 10/);
    expect(() => blockCountFor(0, 10)).toThrow(ValueError);
    expect(() => blockCountFor(2, 10)).toThrow(ValueError);
    expect(() => blockCountFor(0.5, 2.5)).toThrow(ValueError);
    expect(() => blockCountFor(0.5, -1)).toThrow(ValueError);
    expect([blockCountFor(1e-9, 10), blockCountFor(0.25, 10), blockCountFor(1, 10), blockCountFor(0.5, 0)]).toEqual([1, 3, 10, 0]);
  });
});
