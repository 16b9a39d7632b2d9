import type { Tensor } from "@blocksparse/core";
import { BlockSparseLinear, Linear, Module } from "@blocksparse/nn";
import { BlockSparseModelPatcher, PatchError } from "@blocksparse/patcher";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { maxAbsDiff, seededTensor } from "./helpers";

/** A model whose Linear children have the given names (8 -> 8, so 4x4 blocks tile them). */
function modelWith(names: string[]): Module {
  class Named extends Module {
    forward(): never {
      throw new Error("not called");
    }
  }
  const model = new Named();
  for (const [i, name] of names.entries()) model.registerModule(name, new Linear(8, 8, { seed: i + 1 }));
  return model;
}

const escapeRegex = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
// Names a module may hold a child under: not one of a module's own properties ("to", "eval", "training", ...),
// which registerModule refuses.
const probe = modelWith([]);
const layerNames = fc.uniqueArray(
  fc.stringMatching(/^[a-z][a-z0-9_]{0,6}$/).filter((name) => !(name in probe)),
  { minLength: 1, maxLength: 5 },
);

describe("properties of the patcher", () => {
  it("an escaped name as a string pattern patches exactly that layer", () => {
    fc.assert(
      fc.property(layerNames, fc.nat(), (names, pick) => {
        const target = names[pick % names.length];
        const model = modelWith(names);
        const report = new BlockSparseModelPatcher().addPattern(escapeRegex(target), { density: 0.5, blockShape: [4, 4] }).patchModel(model);
        expect(report.layers.map((layer) => layer.name)).toEqual([target]);
        for (const [name, child] of model.namedChildren()) expect(child instanceof BlockSparseLinear).toBe(name === target);
      }),
      { numRuns: 40 },
    );
  });

  it("any string pattern either is refused with a PatchError or patches exactly the names it fully matches", () => {
    fc.assert(
      fc.property(layerNames, fc.string({ maxLength: 8, unit: fc.constantFrom("a", "b", "1", "_", "|", "(", ")", ".", "*", "?", "^", "$", "[", "]") }), (names, pattern) => {
        let patcher: BlockSparseModelPatcher;
        try {
          patcher = new BlockSparseModelPatcher().addPattern(pattern, { density: 0.5, blockShape: [4, 4] });
        } catch (error) {
          expect(error).toBeInstanceOf(PatchError);
          return;
        }
        const expected = names.filter((name) => {
          const match = new RegExp(`^(?:${pattern})$`).exec(name);
          return match !== null && match[0] === name;
        });
        const report = patcher.patchModel(modelWith(names), { dryRun: true, allowNoMatch: true });
        expect(report.layers.map((layer) => layer.name).sort()).toEqual(expected.sort());
        // Never more than what the pattern matches on its own, anchored at both ends of the name.
        for (const name of expected) expect(new RegExp(pattern).test(name)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it("the report's kept blocks are round(density * blocks), at least one", () => {
    fc.assert(
      fc.property(fc.double({ min: 0.001, max: 1, noNaN: true }), (density) => {
        const report = new BlockSparseModelPatcher().addPattern("fc", { density, blockShape: [4, 4] }).patchModel(modelWith(["fc"]), { dryRun: true });
        expect(report.layers[0].keptBlocks).toBe(Math.max(1, Math.round(density * 4)));
      }),
      { numRuns: 50 },
    );
  });
});

describe("density 1 on random layers", () => {
  /** Two layers a (in -> hidden) and b (hidden -> out), or one Linear held as both a and b. */
  class Pair extends Module {
    constructor(
      public a: Module,
      public b: Module,
    ) {
      super();
    }
    forward(x: Tensor): Tensor {
      return this.b.forward(this.a.forward(x));
    }
  }

  it("keeps every block: the patched model computes what the dense one did, with or without bias, a layer held twice", () => {
    const settings = fc.record({
      blockShape: fc.tuple(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 4 })),
      blocks: fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 })),
      bias: fc.tuple(fc.boolean(), fc.boolean()),
      shared: fc.boolean(),
      rows: fc.integer({ min: 1, max: 3 }),
      seed: fc.integer({ min: 1, max: 1000 }),
    });
    fc.assert(
      fc.property(settings, ({ blockShape: [r, c], blocks: [i, h, o], bias, shared, rows, seed }) => {
        // Every dim a multiple of both block sides: the layer held twice needs in = out, and b's in is a's out.
        const side = r * c;
        const [inputs, hidden, outputs] = shared ? [i * side, i * side, i * side] : [i * c, h * r * c, o * r];
        const a = new Linear(inputs, hidden, { seed, bias: bias[0] });
        const model = new Pair(a, shared ? a : new Linear(hidden, outputs, { seed: seed + 1, bias: bias[1] }));
        const x = seededTensor([rows, inputs], seed + 2);
        const dense = model.forward(x).dataSync();
        const report = new BlockSparseModelPatcher().addPattern(/^[ab]$/, { density: 1, blockShape: [r, c] }).patchModel(model, null);
        expect(model.a).toBeInstanceOf(BlockSparseLinear);
        expect(model.b).toBeInstanceOf(BlockSparseLinear);
        expect(model.a === model.b).toBe(shared);
        expect(report.layers.every((layer) => layer.keptBlocks === layer.totalBlocks)).toBe(true);
        const patched = model.forward(x).dataSync();
        const scale = Math.max(1, ...Array.from(dense, Math.abs));
        expect(maxAbsDiff(dense, patched)).toBeLessThanOrEqual(1e-5 * scale);
      }),
      { numRuns: 40, seed: 7 },
    );
  });
});
