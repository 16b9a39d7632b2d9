import { BsrPattern, memory, randn, ShapeError, ValueError } from "@blocksparse/core";
import { Parameter } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";

describe("Parameter checks the pattern it is given", () => {
  const pattern = BsrPattern.fromFlatBlocks([4, 4], [2, 2], Int32Array.from([0, 1, 3]));

  it("takes blocks [nnzBlocks, R, C] of the pattern", () => {
    const parameter = new Parameter(randn([3, 2, 2], { seed: 1 }), { pattern });
    expect(parameter.pattern).toBe(pattern);
    parameter.dispose();
  });

  it("refuses values that are not the pattern's blocks, naming both shapes, and keeps nothing", () => {
    const value = randn([2, 2, 2], { seed: 1 });
    const dense = randn([4, 4], { seed: 2 });
    const live = memory().numTensors;
    expect(() => new Parameter(value, { pattern })).toThrow(ShapeError);
    expect(() => new Parameter(value, { pattern })).toThrow("value has shape [2, 2, 2], expected the pattern's blocks [3, 2, 2]");
    expect(() => new Parameter(dense, { pattern })).toThrow(ShapeError);
    expect(memory().numTensors).toBe(live);
    expect(value.isDisposed || dense.isDisposed).toBe(false);
    value.dispose();
    dense.dispose();
  });

  it("refuses a pattern that is not a BsrPattern", () => {
    const value = randn([3, 2, 2], { seed: 1 });
    expect(() => new Parameter(value, { pattern: { nnzBlocks: 3, blockShape: [2, 2] } as unknown as BsrPattern })).toThrow(ValueError);
    expect(() => new Parameter(value, { pattern: "blocks" as unknown as BsrPattern })).toThrow("pattern must be a BsrPattern or null");
    value.dispose();
  });
});
