import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  BsrFormatError,
  BsrMatrix,
  bsrMatricesToSafetensors,
  bsrMatrixNames,
  decodeSafetensors,
  encodeSafetensors,
  getBsrMatrices,
  getBsrMatrix,
  putBsrMatrix,
  type SafetensorsContent,
  type Shape2,
} from "../src/index.js";
import { loadBsrMatrices, loadSafetensors, saveBsrMatrices, saveSafetensors } from "../src/node.js";
import { PYTHON_FILE_HEX } from "./fixtures.js";
import { thrown } from "./helpers.js";

const cases: [Shape2, Shape2, "float32" | "float16" | "bfloat16", number][] = [
  [[64, 32], [16, 16], "float32", 0.5],
  [[12, 20], [3, 5], "float16", 0.3],
  [[20, 12], [5, 3], "bfloat16", 1],
  [[8, 8], [4, 4], "float32", 0],
];

function roundTrip(content: SafetensorsContent): SafetensorsContent {
  return decodeSafetensors(encodeSafetensors(content.tensors, content.metadata));
}

function fieldOf(action: () => unknown): string {
  const error = thrown(action);
  expect(error).toBeInstanceOf(BsrFormatError);
  return (error as BsrFormatError).field;
}

describe("BSR matrices in safetensors", () => {
  it.each(cases)("round-trip exactly: shape %j block %j %s density %d", (shape, blockShape, dtype, density) => {
    const matrix = BsrMatrix.random(shape, { blockShape, density, seed: 21, dtype });
    const read = getBsrMatrix(roundTrip(putBsrMatrix({ tensors: new Map(), metadata: {} }, "layer.weight", matrix)), "layer.weight");
    expect(read.dtype).toBe(dtype);
    expect(read.pattern.equals(matrix.pattern)).toBe(true);
    expect(read.values).toEqual(matrix.values);
  });

  it("stores PyTorch's tensor names and documented metadata", () => {
    const matrix = BsrMatrix.random([1024, 4096], { blockShape: [32, 64], density: 0.01, seed: 1, dtype: "bfloat16" });
    const content = putBsrMatrix({ tensors: new Map(), metadata: {} }, "enc.0.w", matrix);
    expect(content.metadata).toEqual({
      "enc.0.w.layout": "bsr",
      "enc.0.w.layout_version": "1",
      "enc.0.w.shape": "1024,4096",
      "enc.0.w.block_shape": "32,64",
      "enc.0.w.dtype": "bfloat16",
    });
    const crow = content.tensors.get("enc.0.w.crow_indices")!;
    expect(crow.dtype).toBe("I32");
    expect(crow.shape).toEqual([33]);
    expect(content.tensors.get("enc.0.w.col_indices")!.shape).toEqual([matrix.nnzBlocks]);
    const values = content.tensors.get("enc.0.w.values")!;
    expect(values.dtype).toBe("BF16");
    expect(values.shape).toEqual([matrix.nnzBlocks, 32, 64]);
  });

  it("holds many matrices and dense tensors in one file", () => {
    const a = BsrMatrix.random([16, 16], { blockShape: [4, 4], density: 0.5, seed: 1 });
    const b = BsrMatrix.random([8, 24], { blockShape: [8, 8], density: 0.7, seed: 2, dtype: "float16" });
    const bias = { dtype: "F32" as const, shape: [16], data: Float32Array.from({ length: 16 }, (_, i) => i) };
    const content = bsrMatricesToSafetensors({ a, "deep.b": b }, { tensors: new Map([["bias", bias]]), metadata: { epoch: "3" } });
    const read = roundTrip(content);
    expect(bsrMatrixNames(read)).toEqual(["a", "deep.b"]);
    const matrices = getBsrMatrices(read);
    expect(matrices.get("a")!.toDense()).toEqual(a.toDense());
    expect(matrices.get("deep.b")!.values).toEqual(b.values);
    expect(read.tensors.get("bias")!.data).toEqual(bias.data);
    expect(read.metadata.epoch).toBe("3");
  });

  it("takes dense tensors as an object of name to tensor too, as encodeSafetensors does", () => {
    const a = BsrMatrix.random([8, 8], { blockShape: [4, 4], density: 0.5, seed: 1 });
    const bias = { dtype: "F32" as const, shape: [8], data: Float32Array.from({ length: 8 }, (_, i) => i) };
    const read = roundTrip(bsrMatricesToSafetensors({ a }, { tensors: { bias } }));
    expect(read.tensors.get("bias")!.data).toEqual(bias.data);
    expect(getBsrMatrix(read, "a").toDense()).toEqual(a.toDense());
  });

  it("reads a matrix written from Python (int64 indices, float16 values)", () => {
    const content = decodeSafetensors(Uint8Array.from(Buffer.from(PYTHON_FILE_HEX, "hex")));
    expect(bsrMatrixNames(content)).toEqual(["w"]);
    const matrix = getBsrMatrix(content, "w");
    expect(matrix.dtype).toBe("float16");
    expect(Array.from(matrix.toDense())).toEqual([
      1, 2, 0, 0, 0, 0, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 5, 6, 0, 0, 0, 0, 7, 8,
    ]);
  });

  it("needs only the shape in the metadata (the rest comes from the tensors)", () => {
    const matrix = BsrMatrix.random([8, 12], { blockShape: [2, 3], density: 0.5, seed: 4 });
    const content = putBsrMatrix({ tensors: new Map(), metadata: {} }, "w", matrix);
    content.metadata = { "w.shape": "8,12" };
    expect(getBsrMatrix(content, "w").toDense()).toEqual(matrix.toDense());
  });

  it("putBsrMatrix refuses content without metadata (read as none elsewhere) with a BsrFormatError, not a TypeError", () => {
    const matrix = BsrMatrix.random([2, 2], { blockShape: [1, 1], density: 1, seed: 1 });
    expect(fieldOf(() => putBsrMatrix({ tensors: new Map() } as never, "w", matrix))).toBe("content.metadata");
    expect(fieldOf(() => putBsrMatrix({ tensors: new Map(), metadata: null } as never, "w", matrix))).toBe("content.metadata");
  });

  describe("rejects a malformed matrix, naming the tensor or metadata key", () => {
    const matrix = BsrMatrix.random([8, 12], { blockShape: [2, 3], density: 0.5, seed: 4 });
    const fresh = () => putBsrMatrix({ tensors: new Map(), metadata: {} }, "w", matrix);

    it("missing or malformed metadata", () => {
      const noShape = fresh();
      delete noShape.metadata["w.shape"];
      expect(fieldOf(() => getBsrMatrix(noShape, "w"))).toBe("w.shape");
      const badShape = fresh();
      badShape.metadata["w.shape"] = "8x12";
      expect(fieldOf(() => getBsrMatrix(badShape, "w"))).toBe("w.shape");
      const newer = fresh();
      newer.metadata["w.layout_version"] = "2";
      expect(thrown(() => getBsrMatrix(newer, "w")).message).toMatch(/layout version "2" is not supported/);
      const otherLayout = fresh();
      otherLayout.metadata["w.layout"] = "csr";
      expect(fieldOf(() => getBsrMatrix(otherLayout, "w"))).toBe("w.layout");
      const wrongBlocks = fresh();
      wrongBlocks.metadata["w.block_shape"] = "3,2";
      expect(fieldOf(() => getBsrMatrix(wrongBlocks, "w"))).toBe("w.block_shape");
      const wrongDType = fresh();
      wrongDType.metadata["w.dtype"] = "float16";
      expect(fieldOf(() => getBsrMatrix(wrongDType, "w"))).toBe("w.dtype");
    });

    it("missing or mistyped tensors", () => {
      const noValues = fresh();
      noValues.tensors.delete("w.values");
      expect(fieldOf(() => getBsrMatrix(noValues, "w"))).toBe("w.values");
      const floatIndices = fresh();
      floatIndices.tensors.set("w.col_indices", { dtype: "F32", shape: [matrix.nnzBlocks], data: new Float32Array(matrix.nnzBlocks) });
      expect(fieldOf(() => getBsrMatrix(floatIndices, "w"))).toBe("w.col_indices");
      const intValues = fresh();
      intValues.tensors.set("w.values", { dtype: "I32", shape: [matrix.nnzBlocks, 2, 3], data: new Int32Array(matrix.nnzBlocks * 6) });
      expect(thrown(() => getBsrMatrix(intValues, "w")).message).toMatch(/F32, F16, BF16 or F64, got I32/);
      const flatValues = fresh();
      flatValues.tensors.set("w.values", { dtype: "F32", shape: [matrix.nnzBlocks * 6], data: new Float32Array(matrix.nnzBlocks * 6) });
      // 1-D values are a CSR matrix's 1 x 1 blocks: here the metadata's 2 x 3 blocks disagree with them.
      expect(fieldOf(() => getBsrMatrix(flatValues, "w"))).toBe("w.block_shape");
    });

    it("tensors and metadata of a content built by hand, with a BsrFormatError naming them, not a TypeError", () => {
      const nullTensor = fresh();
      nullTensor.tensors.set("w.crow_indices", null as never);
      expect(thrown(() => getBsrMatrix(nullTensor, "w")).message).toBe("w.crow_indices: expected { dtype, shape, data }");
      const noShape = fresh();
      (noShape.tensors.get("w.values") as { shape?: number[] }).shape = undefined;
      expect(thrown(() => getBsrMatrix(noShape, "w")).message).toBe("w.values.shape: expected an array of non-negative integers");
      // Data of another type than the dtype's was read as that type (a Float64Array as F32 values) without a word.
      const float64Data = fresh();
      const values = float64Data.tensors.get("w.values")!;
      float64Data.tensors.set("w.values", { ...values, data: Float64Array.from(values.data as Float32Array) } as never);
      expect(thrown(() => getBsrMatrix(float64Data, "w")).message).toBe("w.values.data: a F32 tensor needs a Float32Array");
      const numberShape = fresh();
      (numberShape.metadata as Record<string, unknown>)["w.shape"] = 96;
      expect(thrown(() => getBsrMatrix(numberShape, "w")).message).toBe('w.shape: expected "<integer>,<integer>"');
    });

    it("indices that break an invariant, with the position", () => {
      const content = fresh();
      const col = content.tensors.get("w.col_indices")!.data as Int32Array;
      col[1] = 99;
      const error = thrown(() => getBsrMatrix(roundTrip(content), "w")) as BsrFormatError;
      expect(error.field).toBe("w.col_indices");
      expect(error.position).toBe(1);
      const crowContent = fresh();
      (crowContent.tensors.get("w.crow_indices")!.data as Int32Array)[0] = 1;
      expect(fieldOf(() => getBsrMatrix(crowContent, "w"))).toBe("w.crow_indices");
      const blockCount = fresh();
      blockCount.tensors.set("w.values", { dtype: "F32", shape: [matrix.nnzBlocks + 1, 2, 3], data: new Float32Array((matrix.nnzBlocks + 1) * 6) });
      expect(fieldOf(() => getBsrMatrix(blockCount, "w"))).toBe("w.values");
      const mismatchedShape = fresh();
      mismatchedShape.metadata["w.shape"] = "8,13";
      expect(fieldOf(() => getBsrMatrix(mismatchedShape, "w"))).toBe("w.values");
    });
  });
});

const directory = mkdtemp(join(tmpdir(), "bsr-format-"));
afterAll(async () => rm(await directory, { recursive: true, force: true }));

describe("@blocksparse/format/node", () => {

  it("saves and loads files byte for byte, leaving no temporary file", async () => {
    const path = join(await directory, "model.safetensors");
    const matrix = BsrMatrix.random([32, 48], { blockShape: [8, 16], density: 0.5, seed: 8, dtype: "float16" });
    const content = putBsrMatrix({ tensors: new Map(), metadata: { source: "test" } }, "fc", matrix);
    await saveSafetensors(path, content.tensors, content.metadata);
    expect(new Uint8Array(await readFile(path))).toEqual(encodeSafetensors(content.tensors, content.metadata));
    const loaded = await loadSafetensors(path);
    expect(loaded.metadata.source).toBe("test");
    expect(getBsrMatrix(loaded, "fc").values).toEqual(matrix.values);
    expect(await readdir(await directory)).toEqual(["model.safetensors"]);
  });

  it("saves and loads BSR matrices directly", async () => {
    const path = join(await directory, "matrices.safetensors");
    const a = BsrMatrix.random([16, 32], { blockShape: [4, 8], density: 0.25, seed: 9 });
    await saveBsrMatrices(path, new Map([["a", a]]));
    const loaded = await loadBsrMatrices(path);
    expect(loaded.get("a")!.pattern.equals(a.pattern)).toBe(true);
    expect(loaded.get("a")!.values).toEqual(a.values);
  });

  it("refuses a truncated file with a clear error", async () => {
    const path = join(await directory, "truncated.safetensors");
    const a = BsrMatrix.random([16, 32], { blockShape: [4, 8], density: 0.25, seed: 9 });
    await saveBsrMatrices(path, { a });
    const { writeFile } = await import("node:fs/promises");
    const bytes = await readFile(path);
    await writeFile(path, bytes.subarray(0, 40));
    await expect(loadSafetensors(path)).rejects.toThrow(/header claims \d+ bytes but only 32 follow/);
  });
});

describe("errors name the file key and the matrix", () => {
  it("a block shape that does not tile the matrix names the values tensor, not an argument", () => {
    const matrix = BsrMatrix.random([8, 12], { blockShape: [2, 3], density: 0.5, seed: 4 });
    const content = putBsrMatrix({ tensors: new Map(), metadata: {} }, "fc.weight", matrix);
    content.metadata["fc.weight.shape"] = "8,13";
    const error = thrown(() => getBsrMatrix(content, "fc.weight")) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("fc.weight.values");
    expect(error.message).not.toMatch(/^blockShape/);
  });

  it("null matrices are a BsrFormatError naming the argument; null extra content is none", () => {
    const error = thrown(() => bsrMatricesToSafetensors(null as never));
    expect(error).toBeInstanceOf(BsrFormatError);
    expect((error as BsrFormatError).field).toBe("matrices");
    const a = BsrMatrix.random([4, 4], { blockShape: [2, 2], density: 1, seed: 1 });
    const content = bsrMatricesToSafetensors({ a }, null as never);
    expect([...content.tensors.keys()].sort()).toEqual(["a.col_indices", "a.crow_indices", "a.values"]);
  });

  it("a misspelt key of the extra content is refused, naming it, where what it held was left out of the file", () => {
    const a = BsrMatrix.random([4, 4], { blockShape: [2, 2], density: 1, seed: 1 });
    const error = thrown(() => bsrMatricesToSafetensors({ a }, { metdata: { step: "3" } } as never)) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("extra");
    expect(error.message).toBe("extra: unknown option 'metdata'; the options are tensors, metadata");
  });

  it("a dense tensor named like a matrix's tensor is refused, naming it, not overwritten by the matrix", () => {
    const fc = BsrMatrix.random([8, 8], { blockShape: [4, 4], density: 0.5, seed: 1 });
    const dense = { dtype: "F32" as const, shape: [2], data: Float32Array.from([1, 2]) };
    for (const suffix of [".values", ".crow_indices", ".col_indices"]) {
      const error = thrown(() => bsrMatricesToSafetensors({ fc }, { tensors: { [`fc${suffix}`]: dense } })) as BsrFormatError;
      expect(error).toBeInstanceOf(BsrFormatError);
      expect(error.field).toBe(`fc${suffix}`);
    }
  });

  it("extra metadata with a key a matrix writes is refused, naming it and the matrix, not overwritten by the matrix", () => {
    const fc = BsrMatrix.random([8, 8], { blockShape: [4, 4], density: 0.5, seed: 1 });
    for (const suffix of [".layout", ".layout_version", ".shape", ".block_shape", ".dtype"]) {
      const error = thrown(() => bsrMatricesToSafetensors({ fc }, { metadata: { [`fc${suffix}`]: "mine" } })) as BsrFormatError;
      expect(error).toBeInstanceOf(BsrFormatError);
      expect(error.message).toBe(`fc${suffix}: a metadata entry has this name, which matrix "fc" writes`);
    }
  });

  it("putBsrMatrix refuses a metadata key or dense tensor a new matrix would write, and still replaces a matrix of that name", () => {
    const fc = BsrMatrix.random([8, 8], { blockShape: [4, 4], density: 0.5, seed: 1 });
    const userShape = { tensors: new Map(), metadata: { "fc.shape": "the user's" } };
    expect(fieldOf(() => putBsrMatrix(userShape, "fc", fc))).toBe("fc.shape");
    expect(userShape.metadata["fc.shape"]).toBe("the user's");
    const dense = { dtype: "F32" as const, shape: [2], data: Float32Array.from([1, 2]) };
    expect(fieldOf(() => putBsrMatrix({ tensors: new Map([["fc.values", dense]]), metadata: {} }, "fc", fc))).toBe("fc.values");
    // A matrix already there (its crow_indices tensor) is replaced, metadata and all.
    const other = BsrMatrix.random([4, 12], { blockShape: [2, 3], density: 1, seed: 2, dtype: "float16" });
    const content = putBsrMatrix(putBsrMatrix({ tensors: new Map(), metadata: {} }, "fc", fc), "fc", other);
    expect(content.metadata["fc.shape"]).toBe("4,12");
    expect(getBsrMatrix(content, "fc").values).toEqual(other.values);
  });

  it("a metadata key or tensor with an empty matrix name (.layout, .crow_indices) is refused, naming it", async () => {
    const a = BsrMatrix.random([4, 4], { blockShape: [2, 2], density: 1, seed: 1 });
    const layoutKey = bsrMatricesToSafetensors({ a }, { metadata: { ".layout": "bsr" } });
    const error = thrown(() => getBsrMatrices(layoutKey)) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.message).toBe('.layout: empty matrix name (expected "<name>.layout")');
    const index = { dtype: "I32" as const, shape: [1], data: Int32Array.from([0]) };
    const path = join(await directory, "unnamed.safetensors");
    await saveSafetensors(path, new Map([[".crow_indices", index]]));
    await expect(loadBsrMatrices(path)).rejects.toThrow('.crow_indices: empty matrix name (expected "<name>.crow_indices")');
  });

  it("null content or name is a BsrFormatError", () => {
    expect(fieldOf(() => getBsrMatrix(null as never, "w"))).toBe("content");
    expect(fieldOf(() => getBsrMatrix({ tensors: new Map(), metadata: {} }, undefined as never))).toBe("name");
  });
});

describe("a CSR matrix's parts (torch.sparse_csr_tensor: values [nnz])", () => {
  // [[0, 5, 0], [6, 0, 7]] as crow_indices, col_indices and 1-D values, with the shape in the metadata.
  const csr = (metadata: Record<string, string> = {}): SafetensorsContent => ({
    tensors: new Map([
      ["w.crow_indices", { dtype: "I64", shape: [3], data: BigInt64Array.from([0n, 1n, 3n]) }],
      ["w.col_indices", { dtype: "I64", shape: [3], data: BigInt64Array.from([1n, 0n, 2n]) }],
      ["w.values", { dtype: "F32", shape: [3], data: Float32Array.from([5, 6, 7]) }],
    ]),
    metadata: { "w.shape": "2,3", ...metadata },
  });

  it("are read as 1 x 1 blocks, as decodeScipyNpz reads SciPy's CSR", () => {
    const matrix = getBsrMatrix(csr(), "w");
    expect(matrix.blockShape).toEqual([1, 1]);
    expect(Array.from(matrix.toDense())).toEqual([0, 5, 0, 6, 0, 7]);
    expect(getBsrMatrices(csr({ "w.block_shape": "1,1" })).get("w")?.nnzBlocks).toBe(3);
    expect(fieldOf(() => getBsrMatrix(csr({ "w.block_shape": "2,2" }), "w"))).toBe("w.block_shape");
  });

  it("values of another rank are still refused, naming the tensor", () => {
    const content = csr();
    content.tensors.set("w.values", { dtype: "F32", shape: [3, 1], data: Float32Array.from([5, 6, 7]) });
    const error = thrown(() => getBsrMatrix(content, "w")) as BsrFormatError;
    expect(error.field).toBe("w.values");
    expect(error.message).toContain("or [nnz] for CSR");
  });
});

describe("float64 values (torch.float64, SciPy's default)", () => {
  // A 2 x 4 matrix of 1 x 2 blocks: block (0, 1) and block (1, 0), values that float32 rounds.
  const float64Content = (metadata: Record<string, string> = {}): SafetensorsContent => ({
    tensors: new Map([
      ["w.crow_indices", { dtype: "I64", shape: [3], data: BigInt64Array.from([0n, 1n, 2n]) }],
      ["w.col_indices", { dtype: "I64", shape: [2], data: BigInt64Array.from([1n, 0n]) }],
      ["w.values", { dtype: "F64", shape: [2, 1, 2], data: Float64Array.from([0.1, 1 / 3, -2.5, 1e-40]) }],
    ]),
    metadata: { "w.shape": "2,4", ...metadata },
  });

  it("are read rounded to float32, as decodeScipyNpz reads float64 data", () => {
    const matrix = getBsrMatrix(float64Content(), "w");
    expect(matrix.dtype).toBe("float32");
    expect(Array.from(matrix.toDense())).toEqual([0, 0, Math.fround(0.1), Math.fround(1 / 3), -2.5, Math.fround(1e-40), 0, 0]);
    expect(getBsrMatrix(float64Content({ "w.dtype": "float64" }), "w").dtype).toBe("float32");
    expect(fieldOf(() => getBsrMatrix(float64Content({ "w.dtype": "float16" }), "w"))).toBe("w.dtype");
  });
});

describe("unsorted block columns (SciPy's indices as they are, has_sorted_indices false)", () => {
  // A 4 x 6 matrix of 2 x 2 blocks whose block row 0 lists columns 2 and 0 in that order, as SciPy may hold them.
  const file = (wide: boolean): Uint8Array =>
    encodeSafetensors(
      {
        "w.crow_indices": wide ? { dtype: "I64", shape: [3], data: BigInt64Array.from([0n, 2n, 3n]) } : { dtype: "I32", shape: [3], data: Int32Array.from([0, 2, 3]) },
        "w.col_indices": wide ? { dtype: "I64", shape: [3], data: BigInt64Array.from([2n, 0n, 1n]) } : { dtype: "I32", shape: [3], data: Int32Array.from([2, 0, 1]) },
        "w.values": { dtype: "F32", shape: [3, 2, 2], data: new Float32Array(12) },
      },
      { "w.shape": "4,6" },
    );

  // The layout is PyTorch's, whose invariants want sorted, distinct columns in each row: the file is refused with the fix.
  it.each([false, true])("are refused, naming the tensor, the entry and how to sort them (int64 indices: %s)", (wide) => {
    const error = thrown(() => getBsrMatrix(decodeSafetensors(file(wide)), "w")) as BsrFormatError;
    expect(error).toBeInstanceOf(BsrFormatError);
    expect([error.field, error.position]).toEqual(["w.col_indices", 1]);
    expect(error.message).toBe(
      "w.col_indices[1]: column 0 follows 2 in block row 0: columns must be strictly increasing (SciPy: sort_indices(), sum_duplicates())",
    );
  });
});
