import { BackendError, BsrPattern, cast, randn, setBackend, tidy, ValueError, zeros } from "@blocksparse/core";
import { Adam, BlockSparseLinear, backward, mseLoss, type Optimizer, pruneAndRegrow, Sequential, SGD, SparseOptimizer } from "@blocksparse/nn";
import { saveOptimizer } from "@blocksparse/nn/node";
import { describe, expect, it } from "vitest";
import { useSecondBackend } from "./helpers";

useSecondBackend();

function layerOf(seed: number): BlockSparseLinear {
  return new BlockSparseLinear(8, 8, { density: 0.5, blockShape: [2, 2], seed });
}

/** One backward of `model` on fixed data and a step of each optimizer. */
function trainStep(model: BlockSparseLinear | Sequential, optimizers: Optimizer[], seed: number): void {
  for (const o of optimizers) o.zeroGrad();
  tidy(() => backward(mseLoss(cast(model.forward(randn([4, 8], { seed })), "float32"), randn([4, 8], { seed: seed + 1 }))));
  for (const o of optimizers) o.step();
}

/** The same pattern with its first stored block swapped for the first free one. */
function movedPattern(layer: BlockSparseLinear): BsrPattern {
  const held = layer.pattern.blockMask();
  const flats = Int32Array.from(held.keys());
  const kept = flats.filter((flat) => held[flat]).slice(1);
  const free = flats.find((flat) => !held[flat]) as number;
  return BsrPattern.fromFlatBlocks(layer.pattern.shape, layer.pattern.blockShape, Int32Array.from([...kept, free]).sort());
}

describe("pattern moves with an optimizer that does not hold the layer", () => {
  it("setPattern and pruneAndRegrow refuse it with a ValueError naming the layer, and nothing moves", () => {
    const layer = layerOf(1);
    const other = layerOf(2);
    const own = new Adam(layer.parameters(), { lr: 0.01 });
    const stranger = new Adam(other.parameters(), { lr: 0.01 });
    trainStep(layer, [own], 3);
    const before = { pattern: layer.pattern, values: Array.from(layer.weight.value.dataSync()), m: Array.from(own.stateOf(layer.weight)?.m.dataSync() ?? []) };
    expect(() => layer.setPattern(movedPattern(layer), { optimizer: stranger })).toThrow(ValueError);
    expect(() => layer.setPattern(movedPattern(layer), { optimizer: stranger })).toThrow(/BlockSparseLinear\.setPattern: no optimizer given holds any of BlockSparseLinear's parameters/);
    expect(() => layer.setPattern(movedPattern(layer), { optimizer: [] })).toThrow(/BlockSparseLinear\.setPattern: no optimizer given holds any of/);
    expect(() => pruneAndRegrow(layer, { fraction: 0.5, random: 1, optimizer: stranger })).toThrow(/pruneAndRegrow: no optimizer given holds any of/);
    // Also when the fraction moves no block (setPattern is not reached).
    expect(() => pruneAndRegrow(layer, { fraction: 0, optimizer: stranger })).toThrow(/pruneAndRegrow: no optimizer given holds any of/);
    expect(layer.pattern).toBe(before.pattern);
    expect(Array.from(layer.weight.value.dataSync())).toEqual(before.values);
    expect(Array.from(own.stateOf(layer.weight)?.m.dataSync() ?? [])).toEqual(before.m);
    own.dispose();
    stranger.dispose();
  });

  it("a list of optimizers is taken: the one holding the weight keeps its state through the move, the others are left alone", () => {
    const layer = layerOf(1);
    const other = layerOf(2);
    const own = new Adam(layer.parameters(), { lr: 0.01 });
    const stranger = new SGD(other.parameters(), { lr: 0.01, momentum: 0.9 });
    trainStep(layer, [own], 3);
    trainStep(other, [stranger], 3);
    pruneAndRegrow(layer, { fraction: 0.5, random: 4, optimizer: [stranger, own] });
    expect(own.stateOf(layer.weight)?.m.shape).toEqual([layer.nnzBlocks, 2, 2]);
    trainStep(layer, [own], 5);
    // The state followed the move: the step count carried on rather than restarting at 1.
    expect(own.stepsOf(layer.weight)).toBe(2);
    expect(stranger.stepsOf(other.weight)).toBe(1);
    own.dispose();
    stranger.dispose();
  });

  it("an optimizer holding only the layer's bias is taken (it has no state for the weight)", () => {
    const layer = layerOf(1);
    const biasOnly = new SGD([layer.bias as NonNullable<typeof layer.bias>], { lr: 0.01 });
    expect(() => layer.setPattern(movedPattern(layer), { optimizer: biasOnly })).not.toThrow();
    biasOnly.dispose();
  });

  it("SparseOptimizer moves a model split across two attached optimizers, each layer's state following; one attached alone is refused before any layer moves", async () => {
    const model = new Sequential(layerOf(1), layerOf(2));
    const [first, second] = model.modules().filter((m): m is BlockSparseLinear => m instanceof BlockSparseLinear);
    const a = new Adam(first.parameters(), { lr: 0.01 });
    const b = new Adam(second.parameters(), { lr: 0.01 });
    trainStep(model, [a, b], 3);
    const sparse = new SparseOptimizer(model, { fraction: 0.5, seed: 3 }).attachOptimizer(a);
    const patterns = [first.pattern, second.pattern];
    expect(() => sparse.step()).toThrow(ValueError);
    expect(sparse.calls).toBe(0);
    expect(() => sparse.step()).toThrow(/SparseOptimizer\.step: no optimizer given holds any of BlockSparseLinear\(1\)'s parameters/);
    expect([first.pattern, second.pattern]).toEqual(patterns);
    expect(first.pattern).toBe(patterns[0]);
    sparse.attachOptimizer([a, b]);
    expect(sparse.optimizers).toEqual([a, b]);
    expect(sparse.optimizer).toBeUndefined();
    const moves = sparse.step();
    expect(moves.get(first)?.pruned.length).toBe(4);
    expect(moves.get(second)?.pruned.length).toBe(4);
    trainStep(model, [a, b], 5);
    expect(a.stepsOf(first.weight)).toBe(2);
    expect(b.stepsOf(second.weight)).toBe(2);
    expect(() => sparse.attachOptimizer([])).toThrow(/SparseOptimizer\.attachOptimizer: expected an Optimizer or a non-empty array/);
    // A file holds one optimizer's state: with two attached, saveOptimizer says so (before writing anything).
    await expect(saveOptimizer(sparse, "unused.safetensors")).rejects.toThrow(/saveOptimizer: the SparseOptimizer has 2 optimizers attached: pass each optimizer in a file of its own/);
    a.dispose();
    b.dispose();
  });
});

describe("setPattern with newValues on another backend", () => {
  it("is a BackendError naming setPattern, newValues and both backends, and nothing moves", () => {
    setBackend("js");
    const layer = layerOf(1);
    const next = movedPattern(layer);
    const pattern = layer.pattern;
    const values = Array.from(layer.weight.value.dataSync());
    const newValues = zeros([1, 2, 2]).to("second");
    expect(newValues.backend.name).toBe("second");
    expect(() => layer.setPattern(next, { newValues })).toThrow(BackendError);
    expect(() => layer.setPattern(next, { newValues })).toThrow(/BlockSparseLinear\.setPattern: newValues is on backend 'second' but the weight is on 'js'/);
    expect(layer.pattern).toBe(pattern);
    expect(Array.from(layer.weight.value.dataSync())).toEqual(values);
    // On the weight's backend it moves.
    const here = newValues.to("js");
    layer.setPattern(next, { newValues: here });
    expect(layer.pattern).toBe(next);
    here.dispose();
    newValues.dispose();
  });
});
