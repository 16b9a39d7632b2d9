/**
 * skipInit: layers built inside it start with zero weights and biases (nothing drawn for them), and everything else is
 * as without it: the global generator ends in the same state, a BlockSparseLinear draws the same pattern, LayerNorm
 * keeps its ones, the flag is off again after the build, even one that throws.
 */
import { manualSeed, randn, setBackend, ValueError } from "@blocksparse/core";
import { beforeAll, describe, expect, it } from "vitest";
import { BlockSparseLinear, Embedding, initSkipped, LayerNorm, Linear, type Module, Sequential, skipInit } from "../src/index";

const free = (module: Module) => {
  for (const parameter of module.parameters()) parameter.dispose();
};

describe("skipInit", () => {
  beforeAll(() => setBackend("js"));

  it("builds Linear, Embedding and BlockSparseLinear with zero weights and biases, LayerNorm with its ones", () => {
    const model = skipInit(() => new Sequential(new Linear(5, 6), new Embedding(7, 6), new BlockSparseLinear(64, 32, { density: 0.5, blockShape: [16, 16] }), new LayerNorm(6)));
    const [linear, embedding, sparse, norm] = model.children() as [Linear, Embedding, BlockSparseLinear, LayerNorm];
    for (const [name, parameter] of [
      ["linear weight", linear.weight],
      ["linear bias", linear.bias!],
      ["embedding weight", embedding.weight],
      ["sparse weight", sparse.weight],
      ["sparse bias", sparse.bias!],
    ] as const) {
      expect(parameter.value.toArray().flat(3), name).toEqual(new Array(parameter.value.size).fill(0));
    }
    expect(norm.weight!.value.toArray()).toEqual([1, 1, 1, 1, 1, 1]);
    expect(norm.bias!.value.toArray()).toEqual([0, 0, 0, 0, 0, 0]);
    free(model);
  });

  it("leaves the global generator and a BlockSparseLinear's pattern as a normal build does", () => {
    const after = (skip: boolean) => {
      manualSeed(11);
      const build = () => [new Linear(3, 4), new Embedding(5, 2), new BlockSparseLinear(64, 64, { density: 0.25, blockShape: [16, 16] })] as const;
      const layers = skip ? skipInit(build) : build();
      const next = randn([4]).toArray();
      const pattern = layers[2].weight.pattern!;
      const blocks = Array.from(pattern.blockColIdx);
      for (const layer of layers) free(layer);
      return { next, blocks };
    };
    const plain = after(false);
    const skipped = after(true);
    expect(skipped.next).toEqual(plain.next);
    expect(skipped.blocks).toEqual(plain.blocks);
  });

  it("returns the build's value, nests, and is off again after a build that throws", () => {
    expect(initSkipped()).toBe(false);
    const inner = skipInit(() => skipInit(() => initSkipped()) && initSkipped());
    expect(inner).toBe(true);
    expect(initSkipped()).toBe(false);
    expect(() =>
      skipInit(() => {
        throw new RangeError("refused");
      }),
    ).toThrow(RangeError);
    expect(initSkipped()).toBe(false);
    const layer = new Linear(2, 2, { seed: 3 });
    expect(layer.weight.value.toArray().flat().some((x) => x !== 0)).toBe(true);
    free(layer);
  });

  it("refuses a build that is not a function, and an async build (what it builds after an await would draw its weights)", async () => {
    for (const build of [null, undefined, new Linear(2, 2, { seed: 1 })]) {
      expect(() => skipInit(build as never), String(build)).toThrow(ValueError);
      expect(() => skipInit(build as never)).toThrow(/skipInit: build must be a function/);
    }
    const late: Linear[] = [];
    const build = async () => {
      await Promise.resolve();
      late.push(new Linear(3, 3, { seed: 2 }));
      return late;
    };
    expect(() => skipInit(build)).toThrow(ValueError);
    expect(() => skipInit(build)).toThrow(/skipInit: build returned a Promise/);
    // A rejected async build is reported by the error above, not left as an unhandled rejection.
    expect(() =>
      skipInit(async () => {
        throw new RangeError("inside");
      }),
    ).toThrow(/returned a Promise/);
    expect(initSkipped()).toBe(false);
    await Promise.resolve();
    await Promise.resolve();
    for (const layer of late) free(layer);
  });
});
