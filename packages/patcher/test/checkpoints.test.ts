import { memory, tidy } from "@blocksparse/core";
import { BlockSparseLinear, SGD, StateDictError, disposeStateDict, loadStateDict, saveStateDict } from "@blocksparse/nn";
import { BlockSparseModelPatcher } from "@blocksparse/patcher";
import { describe, expect, it } from "vitest";
import { TinyNet, seededTensor } from "./helpers";

const patcher = (pattern: RegExp) => new BlockSparseModelPatcher().addPattern(pattern, { density: 0.5, blockShape: [8, 8] });
const outputs = (model: TinyNet) => tidy(() => Array.from(model.forward(seededTensor([3, 16], 7)).dataSync()));

/** The StateDictError loading `bytes` into `model` throws. */
function refusal(model: TinyNet, bytes: Uint8Array, strict: boolean): StateDictError {
  const stateDict = loadStateDict(bytes);
  try {
    model.loadStateDict(stateDict, { strict });
  } catch (error) {
    if (error instanceof StateDictError) return error;
    throw error;
  } finally {
    disposeStateDict(stateDict);
  }
  throw new Error("expected a StateDictError, the load went through");
}

describe("a patched model's checkpoint", () => {
  it("loads into a model patched with the same patterns (the patterns come from the file), and the optimizer sees only the new parameters", () => {
    const saved = new TinyNet(1);
    const replaced = saved.namedParameters().flatMap(([name, p]) => (name.includes(".fc") ? [p] : []));
    patcher(/fc/).patchModel(saved);
    const optimizer = new SGD(saved.parameters(), { lr: 0.1 });
    expect(optimizer.params.filter((p) => replaced.includes(p))).toEqual([]);
    expect(optimizer.params.filter((p) => p.pattern !== null)).toHaveLength(4);
    const bytes = saveStateDict(saved.stateDict());
    const reloaded = new TinyNet(2);
    patcher(/fc/).patchModel(reloaded);
    const stateDict = loadStateDict(bytes);
    reloaded.loadStateDict(stateDict);
    disposeStateDict(stateDict);
    for (const [name, module] of reloaded.namedModules()) {
      if (module instanceof BlockSparseLinear) expect(module.pattern.equals((saved.getSubmodule(name) as BlockSparseLinear).pattern), name).toBe(true);
    }
    expect(outputs(reloaded)).toEqual(outputs(saved));
  });

  it("is refused by a model left dense, or patched with other patterns, naming each block-sparse weight it cannot take, and nothing changes", () => {
    const saved = new TinyNet(1);
    patcher(/fc/).patchModel(saved);
    const bytes = saveStateDict(saved.stateDict());
    const unpatched = new TinyNet(2);
    const fc1Only = new TinyNet(3);
    patcher(/fc1$/).patchModel(fc1Only);
    for (const [model, refused] of [
      [unpatched, ["blocks.0.fc1.weight", "blocks.0.fc2.weight", "blocks.1.fc1.weight", "blocks.1.fc2.weight"]],
      [fc1Only, ["blocks.0.fc2.weight", "blocks.1.fc2.weight"]],
    ] as const) {
      const before = outputs(model);
      const tensors = memory().numTensors;
      for (const strict of [true, false]) {
        const error = refusal(model, bytes, strict);
        expect(error.mismatches.map((m) => m.key)).toEqual(refused);
        expect(error.mismatches.every((m) => m.reason === "layout")).toBe(true);
        expect(error.message).toContain(
          "layout mismatch for blocks.0.fc2.weight: the checkpoint has block-sparse [16, 32] with 8x8 blocks (4 stored), the model has dense [16, 32] float32",
        );
        expect(error.message).toMatch(/; to load a block-sparse entry, patch the model as the saved one was first, or load its dense weight: .*\)$/);
      }
      expect(memory().numTensors).toBe(tensors);
      expect(outputs(model)).toEqual(before);
    }
  });
});
