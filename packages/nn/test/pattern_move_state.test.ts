import { BsrPattern, cast, randn, type Tensor, tidy, zeros } from "@blocksparse/core";
import { Adam, BlockSparseLinear, BlockSparseWeight, backward, mseLoss, type Optimizer, pruneAndRegrow, SGD } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";

function layerOf(seed: number, dtype: "float32" | "bfloat16" = "float32"): BlockSparseLinear {
  return new BlockSparseLinear(8, 8, { density: 0.5, blockShape: [2, 2], seed }).to(dtype);
}

/** One backward on fixed data and the optimizer's step. */
function trainStep(layer: BlockSparseLinear, optimizer: Optimizer, seed: number): void {
  optimizer.zeroGrad();
  const dtype = layer.weight.dtype;
  tidy(() => backward(mseLoss(cast(layer.forward(cast(randn([4, 8], { seed }), dtype)), "float32"), randn([4, 8], { seed: seed + 1 }))));
  optimizer.step();
}

describe("pattern moves and the optimizer's state", () => {
  it("a move right after the weights were replaced takes the master copy from the new weights, not the stale copy", () => {
    const layer = layerOf(1, "bfloat16");
    const optimizer = new Adam(layer.parameters(), { lr: 0.01 });
    trainStep(layer, optimizer, 3);
    // New weights for the same pattern (a checkpoint loaded, an average assigned) between the step and the move.
    const loaded = tidy(() => cast(randn(layer.weight.shape, { seed: 9 }), "bfloat16"));
    layer.loadStateDict(new Map([["weight", new BlockSparseWeight(layer.pattern, loaded)]]), { strict: false });
    loaded.dispose();
    const held = layer.pattern.blockMask();
    const kept = new Map<number, number[]>();
    const values = layer.weight.value.dataSync();
    const { blockRow, blockCol } = layer.pattern.coordinates;
    for (let k = 0; k < layer.nnzBlocks; k++) kept.set(blockRow[k] * layer.pattern.blockCols + blockCol[k], Array.from(values.subarray(k * 4, k * 4 + 4)));
    pruneAndRegrow(layer, { fraction: 0.25, optimizer, random: 5 });
    // The master follows the weights block for block: kept blocks are the loaded values, new blocks the weights' zeros.
    const master = Array.from((optimizer.masterOf(layer.weight) as NonNullable<ReturnType<Optimizer["masterOf"]>>).dataSync());
    expect(master).toEqual(Array.from(layer.weight.value.dataSync()));
    const after = layer.pattern.coordinates;
    for (let k = 0; k < layer.nnzBlocks; k++) {
      const flat = after.blockRow[k] * layer.pattern.blockCols + after.blockCol[k];
      if (held[flat]) expect(master.slice(k * 4, k * 4 + 4)).toEqual(kept.get(flat));
    }
    // The next step starts from the loaded weights: with lr 0 they stay as they are.
    optimizer.lr = 0;
    const before = Array.from(layer.weight.value.dataSync());
    trainStep(layer, optimizer, 4);
    expect(Array.from(layer.weight.value.dataSync())).toEqual(before);
    optimizer.dispose();
  });

  it("state left behind by a move without the optimizer restarts, rather than being remapped by a later move", () => {
    const layer = layerOf(1);
    const optimizer = new SGD(layer.parameters(), { lr: 0.01, momentum: 0.9 });
    trainStep(layer, optimizer, 3);
    // Moved without the optimizer: its state follows the old blocks, so the next step would restart it.
    pruneAndRegrow(layer, { fraction: 0.5, random: 5 });
    // A later move with the optimizer must not remap that state as if it followed the blocks it moves.
    pruneAndRegrow(layer, { fraction: 0.25, optimizer, random: 6 });
    const saved = optimizer.stateDict();
    expect(saved.steps[0]).toBe(0);
    for (const t of saved.tensors.values()) t.dispose();
    optimizer.zeroGrad();
    tidy(() => backward(mseLoss(layer.forward(randn([4, 8], { seed: 4 })), randn([4, 8], { seed: 5 }))));
    const grad = Array.from((layer.weight.grad as NonNullable<typeof layer.weight.grad>).dataSync());
    optimizer.step();
    // A restarted momentum buffer is the gradient itself (torch.optim.SGD's first step).
    expect(optimizer.stepsOf(layer.weight)).toBe(1);
    expect(Array.from(optimizer.stateOf(layer.weight)?.momentumBuffer.dataSync() ?? [])).toEqual(grad);
    optimizer.dispose();
  });

  it("state left behind by a move to fewer blocks is not remapped either", () => {
    const layer = layerOf(1);
    const optimizer = new Adam(layer.parameters(), { lr: 0.01 });
    trainStep(layer, optimizer, 3);
    layer.setPattern(BsrPattern.random([8, 8], { blockShape: [2, 2], density: 0.25, seed: 3 }));
    pruneAndRegrow(layer, { fraction: 0.25, optimizer, random: 6 });
    trainStep(layer, optimizer, 4);
    expect(optimizer.stepsOf(layer.weight)).toBe(1);
    optimizer.dispose();
  });

  it("state that follows the moved blocks is still remapped: kept blocks keep theirs, new blocks start at zero", () => {
    const layer = layerOf(1);
    const optimizer = new SGD(layer.parameters(), { lr: 0.01, momentum: 0.9 });
    trainStep(layer, optimizer, 3);
    const buffer = Array.from(optimizer.stateOf(layer.weight)?.momentumBuffer.dataSync() ?? []);
    const sources = layer.setPattern(BsrPattern.random([8, 8], { blockShape: [2, 2], density: 0.5, seed: 11 }), { optimizer });
    const moved = Array.from(optimizer.stateOf(layer.weight)?.momentumBuffer.dataSync() ?? []);
    sources.forEach((source, k) => {
      expect(moved.slice(k * 4, k * 4 + 4)).toEqual(source < 0 ? [0, 0, 0, 0] : buffer.slice(source * 4, source * 4 + 4));
    });
    expect(optimizer.stepsOf(layer.weight)).toBe(1);
    optimizer.dispose();
  });

  it("setPattern refuses newValues that are not one float block per added block, naming setPattern and the expected shape, and changes nothing", () => {
    const layer = layerOf(1);
    const optimizer = new Adam(layer.parameters(), { lr: 0.01 });
    trainStep(layer, optimizer, 3);
    const held = layer.pattern.blockMask();
    const free = Int32Array.from(held.keys()).filter((flat) => !held[flat]).slice(0, 2);
    const next = BsrPattern.fromFlatBlocks(layer.pattern.shape, layer.pattern.blockShape, Int32Array.from([...Int32Array.from(held.keys()).filter((flat) => held[flat]), ...free]).sort());
    const before = { pattern: layer.pattern, values: Array.from(layer.weight.value.dataSync()), m: Array.from(optimizer.stateOf(layer.weight)?.m.dataSync() ?? []) };
    const cases: Tensor[] = [zeros([2, 4, 1]), zeros([2, 4]), zeros([3, 2, 2]), zeros([1, 2, 2]), zeros([2, 2, 2], "int32")];
    for (const newValues of cases) {
      expect(() => layer.setPattern(next, { newValues, optimizer })).toThrow(/BlockSparseLinear\.setPattern: newValues must be a Tensor of float blocks \[2, 2, 2\]/);
      newValues.dispose();
    }
    expect(layer.pattern).toBe(before.pattern);
    expect(Array.from(layer.weight.value.dataSync())).toEqual(before.values);
    expect(Array.from(optimizer.stateOf(layer.weight)?.m.dataSync() ?? [])).toEqual(before.m);
    // The right shape moves the layer.
    const fresh = zeros([2, 2, 2]);
    layer.setPattern(next, { newValues: fresh, optimizer });
    fresh.dispose();
    expect(layer.nnzBlocks).toBe(before.pattern.nnzBlocks + 2);
    optimizer.dispose();
  });
});

describe("a move of no block", () => {
  it("leaves the layer's pattern and the optimizer's state as they were (a fraction that rounds to 0, a full layer)", () => {
    const cases: [BlockSparseLinear, number][] = [
      [layerOf(1), 0.01], // 16 blocks: round(0.16) = 0
      [layerOf(2), 0],
      [new BlockSparseLinear(8, 8, { density: 1, blockShape: [2, 2], seed: 3 }), 0.5], // every pruned block is taken back
    ];
    for (const [layer, fraction] of cases) {
      const optimizer = new Adam(layer.parameters(), { lr: 0.01 });
      trainStep(layer, optimizer, 3);
      const [pattern, values] = [layer.pattern, layer.weight.value.dataSync()];
      const before = [...optimizer.stateDict().tensors.keys()];
      expect(before).toContain("0.m");
      // Moved without the optimizer: a real move would restart its state for the weight, a move of nothing must not.
      pruneAndRegrow(layer, { fraction, random: 1 });
      expect(layer.pattern).toBe(pattern);
      expect(layer.weight.value.dataSync()).toEqual(values);
      expect([...optimizer.stateDict().tensors.keys()]).toEqual(before);
    }
  });
});
