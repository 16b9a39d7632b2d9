import { ValueError } from "@blocksparse/core";
import { BlockSparseLinear, LayerNorm, Linear } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";

// A flag given as something other than a boolean was read by its truthiness or by `=== false`: `bias: 0` (torch's
// Linear(..., bias=0) has no bias) made a bias, `strict: "false"` loaded strictly, `elementwiseAffine: "false"` learned
// a scale and a shift. Each is now refused as core's flags are.
describe("boolean options", () => {
  it("Linear's and BlockSparseLinear's bias must be a boolean", () => {
    expect(() => new Linear(4, 2, { bias: 0 as never })).toThrow(new ValueError("Linear: bias must be a boolean, got 0"));
    expect(() => new Linear(4, 2, { bias: null as never })).toThrow(new ValueError("Linear: bias must be a boolean, got null"));
    expect(() => new BlockSparseLinear(4, 2, { density: 1, blockShape: [2, 2], bias: "false" as never })).toThrow(
      new ValueError('BlockSparseLinear: bias must be a boolean, got "false"'),
    );
    expect(new Linear(4, 2, { bias: false }).bias).toBeNull();
    expect(new BlockSparseLinear(4, 2, { density: 1, blockShape: [2, 2], bias: false }).bias).toBeNull();
    expect(new Linear(4, 2).bias?.shape).toEqual([2]);
  });

  it("LayerNorm's elementwiseAffine must be a boolean", () => {
    expect(() => new LayerNorm(4, { elementwiseAffine: "false" as never })).toThrow(new ValueError('LayerNorm: elementwiseAffine must be a boolean, got "false"'));
    expect(new LayerNorm(4, { elementwiseAffine: false }).weight).toBeNull();
  });

  it("loadStateDict's strict must be a boolean, and nothing is loaded when it is not", () => {
    const layer = new Linear(2, 2, { seed: 1 });
    const source = new Linear(2, 2, { seed: 2 });
    const before = Array.from(layer.weight.value.dataSync());
    const partial = new Map([["weight", source.weight.value]]);
    expect(() => layer.loadStateDict(partial, { strict: "false" as never })).toThrow(new ValueError('Linear.loadStateDict: strict must be a boolean, got "false"'));
    expect(() => layer.loadStateDict(partial, { strict: 0 as never })).toThrow(ValueError);
    expect(Array.from(layer.weight.value.dataSync())).toEqual(before);
    expect(layer.loadStateDict(partial, { strict: false }).missingKeys).toEqual(["bias"]);
  });
});
