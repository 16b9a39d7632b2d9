import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randn, tidy } from "@blocksparse/core";
import { BsrFormatError, decodeSafetensors, getBsrMatrix } from "@blocksparse/format";
import { BlockSparseLinear, BlockSparseWeight, disposeStateDict, Linear, loadStateDict, ReLU, Sequential, StateDictError, saveStateDict } from "@blocksparse/nn";
import { load, loadSafetensorsFile, save } from "@blocksparse/nn/node";
import { afterAll, describe, expect, it } from "vitest";
import { host, liveTensors } from "./helpers";

const model = (seed: number) =>
  new Sequential(new Linear(8, 16, { seed }), new ReLU(), new BlockSparseLinear(16, 8, { density: 0.5, blockShape: [4, 8], seed: seed + 1 }));

describe("safetensors state dicts", () => {
  it("stores dense entries as tensors and block-sparse weights in format's BSR layout", () => {
    const source = model(1);
    const bytes = tidy(() => saveStateDict(source.stateDict(), { note: "test" }));
    const content = decodeSafetensors(bytes);
    expect([...content.tensors.keys()].sort()).toEqual(
      ["0.bias", "0.weight", "2.bias", "2.weight.col_indices", "2.weight.crow_indices", "2.weight.values"].sort(),
    );
    expect(content.metadata.note).toBe("test");
    const layer = source.at(2) as BlockSparseLinear;
    const matrix = getBsrMatrix(content, "2.weight");
    expect(matrix.pattern.equals(layer.pattern)).toBe(true);
    expect(Array.from(matrix.values)).toEqual(Array.from(host(layer.weight.value)));
    expect(content.tensors.get("0.weight")?.shape).toEqual([16, 8]);
    const loaded = loadStateDict(bytes);
    expect(loaded.get("2.weight")).toBeInstanceOf(BlockSparseWeight);
  });

  it("rejects malformed bytes with a format error", () => {
    const bytes = tidy(() => saveStateDict(model(2).stateDict()));
    expect(() => loadStateDict(bytes.subarray(0, 20))).toThrow(BsrFormatError);
  });

  const dir = mkdtemp(join(tmpdir(), "nn-test-"));
  afterAll(async () => rm(await dir, { recursive: true, force: true }));

  it("save(model, path) / load(model, path) reproduce outputs exactly", async () => {
    const path = join(await dir, "model.safetensors");
    const source = model(3);
    await save(source, path);
    const target = model(30);
    await load(target, path);
    const x = randn([4, 8], { seed: 4 });
    expect(host(target.forward(x))).toEqual(host(source.forward(x)));
    const sd = await loadSafetensorsFile(path);
    expect(sd.size).toBe(4);
    await writeFile(path, (await readFile(path)).subarray(0, 30));
    await expect(load(target, path)).rejects.toThrow();
  });

  it("a file of another block shape is refused, naming the entry and both block shapes; one of the same block shape brings its pattern", async () => {
    const path = join(await dir, "blocks-32x32.safetensors");
    const layer = (blockShape: readonly [number, number], seed: number) => new Sequential(new BlockSparseLinear(64, 64, { density: 0.5, blockShape, seed }));
    const source = layer([32, 32], 12);
    await save(source, path);
    const x = randn([2, 64], { seed: 13 });
    for (const blockShape of [[64, 64], [16, 16]] as const) {
      const target = layer(blockShape, 14);
      const expected = host(target.forward(x));
      const before = liveTensors();
      const error = await load(target, path).catch((e) => e);
      expect(error).toBeInstanceOf(StateDictError);
      expect(error.message).toContain("size mismatch for 0.weight: the checkpoint has block-sparse [64, 64] with 32x32 blocks");
      expect(error.message).toContain(`the model has block-sparse [64, 64] with ${blockShape[0]}x${blockShape[1]} blocks`);
      expect(liveTensors()).toBe(before);
      expect((target.at(0) as BlockSparseLinear).blockShape).toEqual(blockShape);
      expect(host(target.forward(x))).toEqual(expected);
      // The bytes path refuses the same way.
      const sd = loadStateDict(tidy(() => saveStateDict(source.stateDict())));
      expect(() => target.loadStateDict(sd)).toThrow(StateDictError);
      disposeStateDict(sd);
    }
    const target = layer([32, 32], 15);
    expect((target.at(0) as BlockSparseLinear).pattern.equals((source.at(0) as BlockSparseLinear).pattern)).toBe(false);
    await load(target, path);
    expect((target.at(0) as BlockSparseLinear).pattern.equals((source.at(0) as BlockSparseLinear).pattern)).toBe(true);
    expect(host(target.forward(x))).toEqual(host(source.forward(x)));
  });
});
