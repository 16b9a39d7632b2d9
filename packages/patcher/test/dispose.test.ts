import { tensor } from "@blocksparse/core";
import { Linear, Sequential } from "@blocksparse/nn";
import { BlockSparseModelPatcher } from "@blocksparse/patcher";
import { describe, expect, it } from "vitest";

describe("after patching", () => {
  it("the replaced Linear layers can be disposed: the patched model's outputs do not change", () => {
    const model = new Sequential(new Linear(64, 64, { seed: 1 }), new Linear(64, 32, { seed: 2 }));
    const replaced = model
      .namedModules()
      .filter(([name]) => name !== "")
      .map(([, module]) => module);
    const x = tensor(new Float32Array(2 * 64).map((_, i) => Math.sin(i)), [2, 64]);
    new BlockSparseModelPatcher().addPattern(".*", { density: 0.5 }).patchModel(model);
    const before = Array.from(model.forward(x).dataSync());
    for (const module of replaced) for (const parameter of module.parameters()) parameter.value.dispose();
    expect(Array.from(model.forward(x).dataSync())).toEqual(before);
  });
});
