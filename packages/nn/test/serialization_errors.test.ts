import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { memory, randn, tensor, ValueError } from "@blocksparse/core";
import {
  BsrFormatError,
  BsrIoError,
  BsrMatrix,
  encodeSafetensors,
  putBsrMatrix,
  type SafetensorsContent,
  type SafetensorsTensor,
} from "@blocksparse/format";
import {
  BlockSparseLinear,
  BlockSparseWeight,
  disposeStateDict,
  Embedding,
  LayerNorm,
  Linear,
  loadStateDict,
  NnError,
  ReLU,
  Sequential,
  StateDictError,
  saveStateDict,
  stateDictFromSafetensors,
} from "@blocksparse/nn";
import { load, loadSafetensorsFile, save } from "@blocksparse/nn/node";
import { afterAll, describe, expect, it } from "vitest";
import { host, liveTensors } from "./helpers";

const dir = mkdtemp(join(tmpdir(), "nn-serialization-"));
afterAll(async () => rm(await dir, { recursive: true, force: true }));

const model = (seed: number) =>
  new Sequential(new Linear(8, 16, { seed }), new ReLU(), new BlockSparseLinear(16, 8, { density: 0.5, blockShape: [4, 8], seed: seed + 1 }));

const f32 = (values: number[]): SafetensorsTensor => ({ dtype: "F32", shape: [values.length], data: Float32Array.from(values) });

/** Content with a BSR matrix and a few dense tensors; `last` is appended after them (file order). */
function contentWith(last: [string, SafetensorsTensor]): SafetensorsContent {
  const content: SafetensorsContent = { tensors: new Map([["a", f32([1, 2])], ["b", f32([3])]]), metadata: {} };
  putBsrMatrix(content, "w", BsrMatrix.random([8, 8], { blockShape: [4, 4], density: 0.5, seed: 1 }));
  content.tensors.set(...last);
  return content;
}

/** The error `action` throws, as a BsrFormatError (undefined when it does not throw). */
function thrownBy(action: () => unknown): BsrFormatError | undefined {
  try {
    action();
  } catch (error) {
    return error as BsrFormatError;
  }
  return undefined;
}

describe("loading never leaks", () => {
  it("stateDictFromSafetensors disposes what it built when a later entry fails", () => {
    const before = memory().numTensors;
    const content = contentWith(["z", { dtype: "F64", shape: [1], data: Float64Array.from([1]) }]);
    const error = thrownBy(() => stateDictFromSafetensors(content));
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error?.field).toBe("z");
    expect(memory().numTensors).toBe(before);
    // A second block-sparse matrix that is malformed, after "w" was built.
    const broken = contentWith(["z", f32([1])]);
    broken.metadata["x.layout"] = "bsr";
    broken.metadata["x.shape"] = "8,8";
    expect(() => stateDictFromSafetensors(broken)).toThrow(/x\.crow_indices: missing tensor/);
    expect(memory().numTensors).toBe(before);
  });

  it("load(model, path) of a file the model refuses leaves nothing allocated and the model unchanged", async () => {
    const path = join(await dir, "other.safetensors");
    await save(new Sequential(new Linear(8, 4, { seed: 1 })), path);
    const target = model(2);
    const x = randn([2, 8], { seed: 3 });
    const expected = host(target.forward(x));
    const before = liveTensors();
    await expect(load(target, path)).rejects.toThrow();
    expect(liveTensors()).toBe(before);
    expect(host(target.forward(x))).toEqual(expected);
  });
});

describe("nothing malformed accepted", () => {
  it("a dense tensor named like a block-sparse matrix is an error, not a silent replacement", () => {
    const before = memory().numTensors;
    const content = contentWith(["w", f32([9, 9, 9])]);
    const error = thrownBy(() => stateDictFromSafetensors(content));
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error?.field).toBe("w");
    expect(memory().numTensors).toBe(before);
  });

  it("an entry named __proto__ is kept", () => {
    const bytes = encodeSafetensors(new Map([["__proto__", f32([1, 2])], ["x", f32([3])]]));
    const stateDict = loadStateDict(bytes);
    expect([...stateDict.keys()].sort()).toEqual(["__proto__", "x"]);
    for (const entry of stateDict.values()) entry.dispose();
  });
});

describe("a block-sparse weight into a dense layer", () => {
  it("is a layout mismatch naming the entry, both layouts and how to load it (the model was not patched as the saved one was), in either mode, and nothing changes", () => {
    const saved = model(1);
    const bytes = saveStateDict(saved.stateDict());
    // The same architecture with its third layer left dense: loaded, it would hold the blocks densified and lose the pattern.
    const target = new Sequential(new Linear(8, 16, { seed: 5 }), new ReLU(), new Linear(16, 8, { seed: 6 }));
    const x = randn([2, 8], { seed: 3 });
    const expected = host(target.forward(x));
    for (const strict of [true, false]) {
      const stateDict = loadStateDict(bytes);
      const error: unknown = thrownBy(() => target.loadStateDict(stateDict, { strict }));
      if (!(error instanceof StateDictError)) throw new Error(`expected a StateDictError, got ${error}`);
      expect(error.mismatches).toEqual([{ key: "2.weight", expected: "dense [8, 16] float32", got: "block-sparse [8, 16] with 4x8 blocks (2 stored)", reason: "layout" }]);
      expect(error.message).toBe(
        "loadStateDict: layout mismatch for 2.weight: the checkpoint has block-sparse [8, 16] with 4x8 blocks (2 stored), the model has dense [8, 16] float32; " +
          "to load a block-sparse entry, patch the model as the saved one was first, or load its dense weight: tensor(entry.toMatrix().toDense(), entry.shape)",
      );
      disposeStateDict(stateDict);
    }
    expect(host(target.forward(x))).toEqual(expected);
  });

  it("loads once the entry is densified as the message says, giving the saved model's outputs", () => {
    const saved = model(1);
    const stateDict = loadStateDict(saveStateDict(saved.stateDict()));
    const entry = stateDict.get("2.weight");
    if (!(entry instanceof BlockSparseWeight)) throw new Error("expected a block-sparse entry");
    stateDict.set("2.weight", tensor(entry.toMatrix().toDense(), entry.shape));
    entry.dispose();
    const target = new Sequential(new Linear(8, 16, { seed: 5 }), new ReLU(), new Linear(16, 8, { seed: 6 }));
    target.loadStateDict(stateDict);
    disposeStateDict(stateDict);
    const x = randn([2, 8], { seed: 3 });
    const got = host(target.forward(x));
    const want = host(saved.forward(x));
    for (const [i, value] of want.entries()) expect(got[i]).toBeCloseTo(value, 5);
  });
});

describe("typed errors for wrong arguments", () => {
  it("forward(null) names the layer", () => {
    for (const layer of [new Linear(2, 2), new BlockSparseLinear(4, 4, { density: 1, blockShape: [2, 2] }), new ReLU(), new LayerNorm(2), new Embedding(3, 2), model(1)]) {
      expect(() => layer.forward(null as never)).toThrow(ValueError);
      expect(() => layer.forward(null as never)).toThrow(/input must be a Tensor, got null/);
    }
  });

  it("save and load refuse a missing model or path; file failures name the target", async () => {
    await expect(save(null as never, join(await dir, "x.safetensors"))).rejects.toThrow(NnError);
    await expect(save(model(1), null as never)).rejects.toThrow(/path must be a non-empty string/);
    await expect(load(undefined as never, "x")).rejects.toThrow(NnError);
    const target = join(await dir, "missing-dir", "m.safetensors");
    const error = await save(model(1), target).catch((e) => e);
    expect(error).toBeInstanceOf(BsrIoError);
    expect(error.path).toBe(target);
    const missing = await loadSafetensorsFile(join(await dir, "nope.safetensors")).catch((e) => e);
    expect(missing).toBeInstanceOf(BsrIoError);
  });
});

describe("sharded checkpoints", () => {
  it("save with maxShardSize writes shards and an index; load reads the directory, the index or a single file", async () => {
    const shardedDir = join(await dir, "sharded");
    const source = model(5);
    await save(source, shardedDir, {}, { maxShardSize: 200 });
    const files = (await readdir(shardedDir)).sort();
    expect(files.at(-1)).toBe("model.safetensors.index.json");
    expect(files.length).toBeGreaterThan(2);
    const x = randn([3, 8], { seed: 6 });
    for (const from of [shardedDir, join(shardedDir, "model.safetensors.index.json")]) {
      const target = model(50);
      await load(target, from);
      expect(host(target.forward(x))).toEqual(host(source.forward(x)));
    }
    const single = join(await dir, "single.safetensors");
    await save(source, single);
    const target = model(51);
    await load(target, single);
    expect(host(target.forward(x))).toEqual(host(source.forward(x)));
  });

  it("a corrupt shard is refused, naming the file, with nothing allocated", async () => {
    const shardedDir = join(await dir, "corrupt");
    await save(model(7), shardedDir, {}, { maxShardSize: 200 });
    const shard = (await readdir(shardedDir)).filter((name) => name.startsWith("model-00002-of-"))[0];
    await writeFile(join(shardedDir, shard), "garbage!");
    const target = model(8);
    const before = liveTensors();
    const error = await load(target, shardedDir).catch((e) => e);
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.message).toContain(shard);
    expect(liveTensors()).toBe(before);
  });
});

