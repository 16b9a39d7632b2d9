import { OutOfMemoryError, memory, tensor } from "@blocksparse/core";
import { AdamW, BlockSparseLinear, backward, DisposedTensorError, Linear, mseLoss, Sequential } from "@blocksparse/nn";
import { BlockSparseModelPatcher, PatchError } from "@blocksparse/patcher";
import { describe, expect, it, vi } from "vitest";
import { Tied, TinyNet } from "./helpers";

const input = () => tensor(new Float32Array(2 * 64).map((_, i) => Math.sin(i)), [2, 64]);

function replacedLayers(model: Sequential): Linear[] {
  return model
    .namedModules()
    .filter(([name]) => name !== "")
    .map(([, module]) => module as Linear);
}

describe("after patching", () => {
  it("the replaced Linear layers can be disposed: the patched model's outputs do not change", () => {
    const model = new Sequential(new Linear(64, 64, { seed: 1 }), new Linear(64, 32, { seed: 2 }));
    const replaced = replacedLayers(model);
    const x = input();
    new BlockSparseModelPatcher().addPattern(".*", { density: 0.5 }).patchModel(model);
    const before = Array.from(model.forward(x).dataSync());
    for (const module of replaced) for (const parameter of module.parameters()) parameter.value.dispose();
    expect(Array.from(model.forward(x).dataSync())).toEqual(before);
  });

  it("disposeReplaced frees the dense weights itself, and the model computes what the same patch without it does", () => {
    const x = input();
    const kept = new Sequential(new Linear(64, 64, { seed: 1 }), new Linear(64, 32, { seed: 2 }));
    new BlockSparseModelPatcher().addPattern(".*", { density: 0.5 }).patchModel(kept);
    const want = Array.from(kept.forward(x).dataSync());

    const model = new Sequential(new Linear(64, 64, { seed: 1 }), new Linear(64, 32, { seed: 2 }));
    const replaced = replacedLayers(model);
    const tensorsBefore = memory().numTensors;
    new BlockSparseModelPatcher().addPattern(".*", { density: 0.5 }).patchModel(model, { disposeReplaced: true });
    for (const linear of replaced) {
      expect(linear.weight.value.isDisposed).toBe(true);
      expect(linear.bias?.value.isDisposed).toBe(true);
    }
    // Two dense weights and two biases gone, two block-value tensors and two bias views made.
    expect(memory().numTensors).toBe(tensorsBefore);
    expect(Array.from(model.forward(x).dataSync())).toEqual(want);
  });

  it("an optimizer made before a patch with disposeReplaced refuses to step, naming the parameter; one made after trains every layer", () => {
    const model = new Sequential(new Linear(64, 64, { seed: 1 }), new Linear(64, 32, { seed: 2 }));
    const early = new AdamW(model.parameters(), { lr: 1e-2 });
    new BlockSparseModelPatcher().addPattern("0", { density: 0.5 }).patchModel(model, { disposeReplaced: true });
    const x = input();
    backward(mseLoss(model.forward(x), tensor(new Float32Array(2 * 32), [2, 32])));
    // Before, it updated the unpatched layer alone and skipped the disposed dense weight and bias in silence.
    const head = model.parameters().slice(2);
    const values = head.map((p) => Array.from(p.value.dataSync()));
    expect(() => early.step()).toThrow(DisposedTensorError);
    expect(() => early.step()).toThrow(
      "AdamW.step: params[0] (paramGroups[0].params[0]), [64, 64] float32, was disposed (and 1 more): it can never be trained again; create the optimizer after patching",
    );
    expect(head.map((p) => Array.from(p.value.dataSync()))).toEqual(values);
    early.dispose();
    const optimizer = new AdamW(model.parameters(), { lr: 1e-2 });
    const before = model.parameters().map((p) => Array.from(p.value.dataSync()));
    optimizer.step();
    for (const [i, p] of model.parameters().entries()) expect(Array.from(p.value.dataSync())).not.toEqual(before[i]);
    optimizer.dispose();
  });

  it("disposeReplaced disposes a weight tied between two patched layers once, and leaves the tie", () => {
    const model = new Tied();
    const [a, b] = [model.a, model.b];
    new BlockSparseModelPatcher().addPattern("a|b", { density: 0.5, blockShape: [4, 4] }).patchModel(model, { disposeReplaced: true });
    expect(a.weight.value.isDisposed).toBe(true);
    expect(b.bias?.value.isDisposed).toBe(true);
    expect(model.a.parameters()[0]).toBe(model.b.parameters()[0]);
    expect(model.a.parameters().every((p) => !p.value.isDisposed)).toBe(true);
  });

  it("a dry run disposes nothing, and a layer no pattern matches keeps its weights", () => {
    const model = new TinyNet();
    const head = model.head as Linear;
    const fc1 = model.namedModules().find(([name]) => name === "blocks.0.fc1")?.[1] as Linear;
    const patcher = new BlockSparseModelPatcher().addPattern(/\.fc1$/, { density: 0.5, blockShape: [8, 8] });
    patcher.patchModel(model, { dryRun: true, disposeReplaced: true });
    expect(fc1.weight.value.isDisposed).toBe(false);
    patcher.patchModel(model, { disposeReplaced: true });
    expect(fc1.weight.value.isDisposed).toBe(true);
    expect(head.weight.value.isDisposed).toBe(false);
  });

  it("refuses a disposeReplaced that is not a boolean, naming it", () => {
    const model = new TinyNet();
    const patcher = new BlockSparseModelPatcher().addPattern(/\.fc1$/, { density: 0.5, blockShape: [8, 8] });
    const attempt = () => patcher.patchModel(model, { disposeReplaced: "yes" as unknown as boolean });
    expect(attempt).toThrow(PatchError);
    expect(attempt).toThrow(/disposeReplaced/);
  });

  it("a replacement that cannot be built (out of memory) leaves the model as it was and frees the ones built before it", () => {
    const model = new TinyNet();
    const before = model.namedModules().map(([name, module]) => [name, module]);
    const x = tensor(new Float32Array(2 * 16).map((_, i) => Math.cos(i)), [2, 16]);
    const want = Array.from(model.forward(x).dataSync());
    const build = BlockSparseLinear.fromLinear;
    let calls = 0;
    const spy = vi.spyOn(BlockSparseLinear, "fromLinear").mockImplementation((linear, options) => {
      calls += 1;
      if (calls === 3) throw new OutOfMemoryError("device out of memory");
      return build.call(BlockSparseLinear, linear, options);
    });
    const tensorsBefore = memory().numTensors;
    try {
      const patcher = new BlockSparseModelPatcher().addPattern(/fc\d$/, { density: 0.5, blockShape: [8, 8] });
      expect(() => patcher.patchModel(model, { disposeReplaced: true })).toThrow(OutOfMemoryError);
    } finally {
      spy.mockRestore();
    }
    expect(calls).toBe(3);
    // The two replacements built before the failure (blocks.0.fc1 with its bias view, blocks.0.fc2) are freed.
    expect(memory().numTensors).toBe(tensorsBefore);
    expect(model.namedModules()).toEqual(before);
    expect(model.parameters().every((p) => !p.value.isDisposed)).toBe(true);
    expect(Array.from(model.forward(x).dataSync())).toEqual(want);
  });
});
