import { BsrPattern, relu, type Tensor, tensor, ValueError } from "@blocksparse/core";
import { BlockSparseLinear, blockSources, crossEntropy, Module, pruneAndRegrow, ReLU, Sequential, SparseOptimizer } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host, syntheticClassification } from "./helpers";

const layer16 = (seed: number) => new BlockSparseLinear(16, 16, { density: 0.5, blockShape: [4, 4], seed });

/** Applies its first layer's ReLU with `layer.forwardActivation` (one fused kernel) or as relu(layer.forward(x)). */
class CustomFused extends Module {
  constructor(
    readonly fc1: BlockSparseLinear,
    readonly fc2: BlockSparseLinear,
    readonly fused: boolean,
  ) {
    super();
  }
  forward(x: Tensor): Tensor {
    return this.fc2.forward(this.fused ? this.fc1.forwardActivation(x, "relu") : relu(this.fc1.forward(x)));
  }
}

describe("SparseOptimizer and frozen layers", () => {
  it("leaves a layer whose weight does not require gradients as it was (pattern and values) and moves the others", () => {
    const { x, y } = syntheticClassification(8, 16, 16, 1);
    for (const regrow of ["random", "gradient"] as const) {
      for (const target of ["model", "array"]) {
        const [frozen, trained] = [layer16(2), layer16(3)];
        for (const p of frozen.parameters()) p.requiresGrad = false;
        const model = new Sequential(frozen, new ReLU(), trained);
        const [pattern, values, other] = [frozen.pattern, host(frozen.weight.value), trained.pattern];
        const sparse = new SparseOptimizer(target === "model" ? model : [frozen, trained], { fraction: 0.5, regrow, seed: 4 });
        expect(sparse.layers()).toEqual([trained]);
        const moves = sparse.step(() => crossEntropy(model.forward(x), y));
        expect([...moves.keys()]).toEqual([trained]);
        expect(frozen.pattern).toBe(pattern);
        expect(host(frozen.weight.value)).toEqual(values);
        expect(frozen.weight.requiresGrad).toBe(false);
        expect(trained.pattern.equals(other)).toBe(false);
      }
    }
  });
});

describe("SparseOptimizer with a layer listed twice in its array", () => {
  it("moves it once per update, as when it is listed once", () => {
    const { x, y } = syntheticClassification(8, 16, 16, 5);
    for (const regrow of ["random", "gradient"] as const) {
      const [twice, once] = [layer16(6), layer16(6)];
      const sparse = new SparseOptimizer([twice, twice], { fraction: 0.25, regrow, seed: 7 });
      expect(sparse.layers()).toEqual([twice]);
      const moves = sparse.step(() => crossEntropy(twice.forward(x), y));
      const reference = new SparseOptimizer([once], { fraction: 0.25, regrow, seed: 7 }).step(() => crossEntropy(once.forward(x), y));
      expect(moves.get(twice)).toEqual(reference.get(once));
      expect(twice.pattern.equals(once.pattern)).toBe(true);
      expect(host(twice.weight.value)).toEqual(host(once.weight.value));
    }
  });
});

describe("pruneAndRegrow when fewer positions are free than blocks move", () => {
  // 12 of 16 positions held (4..15), block k of norm 4 (k + 1): a fraction 0.5 drops the 6 weakest (4..9), and only 0..3 are free.
  const crowded = () => {
    const held = Array.from({ length: 12 }, (_, k) => k + 4);
    const layer = new BlockSparseLinear(16, 16, { density: 0.75, blockShape: [4, 4], seed: 8 });
    layer.setPattern(BsrPattern.fromFlatBlocks([16, 16], [4, 4], held));
    layer.weight.value = tensor(Float32Array.from({ length: 12 * 16 }, (_, i) => Math.floor(i / 16) + 1), [12, 4, 4]);
    return layer;
  };

  it("regrows every free position and only the rest among the pruned ones, the same for the same seed (random)", () => {
    for (let seed = 0; seed < 8; seed++) {
      const move = pruneAndRegrow(crowded(), { fraction: 0.5, random: seed });
      expect(Array.from(move.pruned)).toEqual([4, 5, 6, 7, 8, 9]);
      expect(Array.from(move.regrown.slice(0, 4))).toEqual([0, 1, 2, 3]);
      expect(move.regrown.length).toBe(6);
      expect(move.regrown.slice(4).every((flat) => move.pruned.includes(flat))).toBe(true);
      expect(pruneAndRegrow(crowded(), { fraction: 0.5, random: seed })).toEqual(move);
    }
  });

  it("regrows every free position first with regrow 'gradient', even where the pruned ones have the larger gradient", () => {
    // dy is zero on outputs 0..3 (block row 0, where the free positions are): dW is zero there and equal on every other block.
    const x = tensor(new Float32Array(32).fill(1), [2, 16]);
    const dy = tensor(Float32Array.from({ length: 32 }, (_, i) => (i % 16 < 4 ? 0 : 1)), [2, 16]);
    const move = pruneAndRegrow(crowded(), { fraction: 0.5, regrow: "gradient", gradient: { x, dy } });
    // The two taken back are the pruned ones of largest gradient (all equal: lower position first).
    expect(Array.from(move.regrown)).toEqual([0, 1, 2, 3, 4, 5]);
  });
});

describe("blockSources with patterns of another shape", () => {
  it("is a ValueError naming both shapes and block shapes, not blocks mapped to block 0", () => {
    const previous = BsrPattern.dense([8, 8], [4, 4]);
    expect(() => blockSources(previous, BsrPattern.dense([16, 16], [4, 4]))).toThrow(ValueError);
    expect(() => blockSources(previous, BsrPattern.dense([16, 16], [4, 4]))).toThrow("blockSources: the pattern is [16,16] with 4x4 blocks, expected [8,8] with 4x4 blocks");
    // The same 2 x 2 grid of blocks, of another size.
    expect(() => blockSources(previous, BsrPattern.dense([16, 16], [8, 8]))).toThrow("with 8x8 blocks, expected [8,8] with 4x4 blocks");
    expect(Array.from(blockSources(previous, BsrPattern.fromFlatBlocks([8, 8], [4, 4], [1, 2])))).toEqual([1, 2]);
  });
});

describe("SparseOptimizer's gradient pass and forwardActivation", () => {
  it("records a layer that a module runs with layer.forwardActivation, as one run as relu(layer.forward(x))", () => {
    const { x, y } = syntheticClassification(8, 16, 16, 9);
    const [fused, plain] = [true, false].map((flag) => new CustomFused(layer16(10), layer16(11), flag));
    const moves = [fused, plain].map((model) => new SparseOptimizer(model, { fraction: 0.5, regrow: "gradient", seed: 12 }).step(() => crossEntropy(model.forward(x), y)));
    expect(moves[0].get(fused.fc1)).toEqual(moves[1].get(plain.fc1));
    expect(moves[0].get(fused.fc2)).toEqual(moves[1].get(plain.fc2));
    expect(Object.hasOwn(fused.fc1, "forwardActivation")).toBe(false);
  });

  it("names a layer the closure did not call, how a closure calls it, and that freezing leaves it out", () => {
    const { x, y } = syntheticClassification(8, 16, 16, 13);
    const [fc1, fc2] = [layer16(14), layer16(15)];
    const loss = () => crossEntropy(fc1.forward(x), y);
    for (const [target, name] of [
      [new Sequential(fc1, new ReLU(), fc2), "2"],
      [[fc1, fc2], "layer 1"],
      // A single layer as the target: its name in namedModules() is "" (the message said "of ;").
      [fc2, "the layer"],
    ] as const) {
      const sparse = new SparseOptimizer(target, { regrow: "gradient" });
      expect(() => sparse.step(loss)).toThrow(ValueError);
      expect(() => sparse.step(loss)).toThrow(
        `SparseOptimizer.step: the loss closure did not call forward, forwardActivation or forwardResidual of ${name}; gradient regrowth needs every layer it moves (a frozen one is left out)`,
      );
    }
    fc2.weight.requiresGrad = false;
    expect(new SparseOptimizer([fc1, fc2], { regrow: "gradient" }).step(loss).size).toBe(1);
  });
});

describe("pruneAndRegrow, property by property", () => {
  it("moves round(fraction * nnz) blocks: the weakest pruned (ties: lower position), grown only where the layer had none, at zero", () => {
    const grids: [number, number, [number, number], number][] = [[18, 12, [3, 2], 0.4], [8, 8, [2, 4], 0.25], [10, 6, [3, 5], 0.5], [16, 16, [4, 4], 0.9]];
    for (const [inFeatures, outFeatures, blockShape, density] of grids) {
      for (const fraction of [0, 0.05, 0.3, 0.5, 0.99, 1]) {
        for (const seed of [1, 2]) {
          const layer = new BlockSparseLinear(inFeatures, outFeatures, { density, blockShape, seed });
          const blockSize = blockShape[0] * blockShape[1];
          const flats = (p: BsrPattern) => [...p.blockMask().keys()].filter((flat) => p.blockMask()[flat] === 1);
          const before = flats(layer.pattern);
          const values = host(layer.weight.value);
          const norms = before.map((_, k) => Math.hypot(...values.slice(k * blockSize, (k + 1) * blockSize)));
          const move = pruneAndRegrow(layer, { fraction, random: seed });
          const after = flats(layer.pattern);
          const count = Math.round(fraction * before.length);
          expect([after.length, move.pruned.length, move.regrown.length]).toEqual([before.length, count, count]);
          const weakest = before.map((flat, k) => [norms[k], flat]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
          expect(Array.from(move.pruned)).toEqual(weakest.slice(0, count).map(([, flat]) => flat).sort((a, b) => a - b));
          const free = layer.pattern.blockRows * layer.pattern.blockCols - before.length;
          expect(move.regrown.filter((flat) => before.includes(flat)).length).toBe(Math.max(0, count - free));
          const now = host(layer.weight.value);
          after.forEach((flat, k) => {
            const block = Array.from(now.slice(k * blockSize, (k + 1) * blockSize));
            const old = before.indexOf(flat);
            expect(block).toEqual(old < 0 ? new Array(blockSize).fill(0) : Array.from(values.slice(old * blockSize, (old + 1) * blockSize)));
          });
        }
      }
    }
  });
});
