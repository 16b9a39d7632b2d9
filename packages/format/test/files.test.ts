import { constants } from "node:buffer";
import { spawn } from "node:child_process";
import { chmod, lstat, mkdir, mkdtemp, open, readdir, readFile, readlink, rm, stat, symlink, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it, vi } from "vitest";
import { readSmallFile } from "../src/files.js";
import {
  BsrFormatError,
  BsrIoError,
  BsrMatrix,
  decodeSafetensors,
  encodeSafetensors,
  parseSafetensorsHeader,
  type SafetensorsTensor,
} from "../src/index.js";
import {
  loadBsrMatrices,
  loadSafetensors,
  saveBsrMatrices,
  saveSafetensors,
  saveShardedSafetensors,
  shardFileName,
} from "../src/node.js";
import { checkTensorsFit } from "../src/safetensors-file.js";

const root = mkdtemp(join(tmpdir(), "format-files-"));
afterAll(async () => rm(await root, { recursive: true, force: true }));
let counter = 0;
const freshDir = async () => {
  const dir = join(await root, `case${counter++}`);
  await mkdir(dir);
  return dir;
};

const f32 = (values: number[], shape = [values.length]): SafetensorsTensor => ({ dtype: "F32", shape, data: Float32Array.from(values) });
const sample = (seed: number) =>
  new Map<string, SafetensorsTensor>([
    ["a", f32([seed, 2, 3, 4], [2, 2])],
    ["b", { dtype: "I64", shape: [2], data: BigInt64Array.from([BigInt(seed), -1n]) }],
    ["c", { dtype: "F16", shape: [3], data: Uint16Array.from([0x3c00, 0x4000, seed]) }],
  ]);

describe("streaming safetensors files", () => {
  it("writes the same bytes as encodeSafetensors and reads them back", async () => {
    const path = join(await freshDir(), "x.safetensors");
    await saveSafetensors(path, sample(1), { note: "n" });
    expect(new Uint8Array(await readFile(path))).toEqual(encodeSafetensors(sample(1), { note: "n" }));
    const loaded = await loadSafetensors(path);
    expect(loaded.tensors).toEqual(sample(1));
    expect({ ...loaded.metadata }).toEqual({ note: "n" });
  });

  it("reads every tensor into its own aligned buffer", async () => {
    const path = join(await freshDir(), "x.safetensors");
    await saveSafetensors(path, sample(2));
    const loaded = await loadSafetensors(path);
    const buffers = new Set([...loaded.tensors.values()].map((t) => t.data.buffer));
    expect(buffers.size).toBe(3);
    for (const tensor of loaded.tensors.values()) expect(tensor.data.byteOffset).toBe(0);
  });

  it("keeps a tensor and a metadata key named __proto__", async () => {
    const path = join(await freshDir(), "x.safetensors");
    const tensors = new Map([["__proto__", f32([1, 2])], ["x", f32([3])]]);
    const metadata = JSON.parse('{"__proto__": "kept", "other": "v"}');
    await saveSafetensors(path, tensors, metadata);
    const loaded = await loadSafetensors(path);
    expect([...loaded.tensors.keys()].sort()).toEqual(["__proto__", "x"]);
    expect(Array.from(loaded.tensors.get("__proto__")!.data as Float32Array)).toEqual([1, 2]);
    expect(Object.keys(loaded.metadata).sort()).toEqual(["__proto__", "other"]);
    expect(decodeSafetensors(encodeSafetensors(tensors, metadata)).tensors.has("__proto__")).toBe(true);
  });

  it("refuses a truncated file or a huge header before allocating, naming the path", async () => {
    const dir = await freshDir();
    const path = join(dir, "x.safetensors");
    const bytes = encodeSafetensors(sample(3));
    await writeFile(path, bytes.subarray(0, bytes.length - 2));
    await expect(loadSafetensors(path)).rejects.toThrow(BsrFormatError);
    await expect(loadSafetensors(path)).rejects.toThrow(path);
    const huge = new Uint8Array(64);
    new DataView(huge.buffer).setBigUint64(0, 100n * 2n ** 30n, true);
    await writeFile(path, huge);
    const error = await loadSafetensors(path).catch((e) => e);
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("header");
  });

  it("turns a missing file or directory into a BsrIoError naming the path the caller gave", async () => {
    const dir = await freshDir();
    const missing = join(dir, "nope.safetensors");
    const readError = await loadSafetensors(missing).catch((e) => e);
    expect(readError).toBeInstanceOf(BsrIoError);
    expect(readError.path).toBe(missing);
    expect(readError.code).toBe("ENOENT");
    const target = join(dir, "no-such-dir", "x.safetensors");
    const writeError = await saveSafetensors(target, sample(1)).catch((e) => e);
    expect(writeError).toBeInstanceOf(BsrIoError);
    expect(writeError.path).toBe(target);
    expect(writeError.message).toContain(target);
    expect(writeError.message).not.toMatch(/\.tmp/);
    await expect(loadSafetensors(dir)).rejects.toThrow(/neither model.safetensors.index.json nor model.safetensors/);
  });

  it("refuses bad tensors before touching the file", async () => {
    const path = join(await freshDir(), "x.safetensors");
    await saveSafetensors(path, sample(1));
    const bad = new Map([["a", { dtype: "F32", shape: [3], data: new Float32Array(2) } as SafetensorsTensor]]);
    await expect(saveSafetensors(path, bad)).rejects.toThrow(BsrFormatError);
    expect((await loadSafetensors(path)).tensors).toEqual(sample(1));
    expect(await readdir(dirname(path))).toEqual(["x.safetensors"]);
  });
});

/**
 * A file whose header declares `small` (4 bytes) then `huge`, `hugeBytes` of U8, the file extended to its
 * declared size with truncate: sparse, so only the header's block is written. Undefined when the
 * file system refuses a file that large.
 */
async function sparseSafetensors(path: string, hugeBytes: number): Promise<string | undefined> {
  const header: Record<string, unknown> = {
    small: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
    huge: { dtype: "U8", shape: [hugeBytes], data_offsets: [4, 4 + hugeBytes] },
  };
  const json = JSON.stringify(header).padEnd(Math.ceil(JSON.stringify(header).length / 8) * 8, " ");
  const bytes = new Uint8Array(8 + json.length + 4);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(json.length), true);
  bytes.set(new TextEncoder().encode(json), 8);
  await writeFile(path, bytes);
  try {
    await truncate(path, 8 + json.length + 4 + hugeBytes);
  } catch {
    await rm(path, { force: true });
    return undefined;
  }
  return path;
}

// A sparse file past the limit is cheap up to Node 20's 4 GiB; Node 22's 2^53 - 1 is past what a file system holds.
const limitFitsInAFile = constants.MAX_LENGTH <= 2 ** 40;

describe("a tensor larger than one buffer holds", () => {
  it("checkTensorsFit names the tensor, its bytes and the limit, and lets a tensor of exactly the limit through", () => {
    const file = encodeSafetensors({ a: f32([1]), weight: f32([1, 2, 3, 4], [2, 2]) });
    const json = file.subarray(8, 8 + Number(new DataView(file.buffer).getBigUint64(0, true)));
    const layout = parseSafetensorsHeader(json, file.length);
    expect(() => checkTensorsFit(layout, 16)).not.toThrow();
    const error = (() => {
      try {
        checkTensorsFit(layout, 15);
      } catch (e) {
        return e as BsrFormatError;
      }
    })();
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error?.field).toBe("weight");
    expect(error?.message).toBe(
      `weight: F32 [2,2] is 16 bytes (0.00 GiB), past the 15 bytes (0.00 GiB) one buffer holds in Node.js ${process.version} (buffer.constants.MAX_LENGTH); each tensor is read into one buffer`,
    );
  });

  it.skipIf(!limitFitsInAFile)("loadSafetensors refuses it before reading, naming the file, the tensor, its bytes and the runtime's limit", async (context) => {
    const limit = constants.MAX_LENGTH;
    const path = await sparseSafetensors(join(await freshDir(), "big.safetensors"), limit + 1);
    if (path === undefined) return context.skip();
    try {
      const error = await loadSafetensors(path).catch((e) => e);
      expect(error).toBeInstanceOf(BsrFormatError);
      expect(error.field).toBe("huge");
      expect(error.message).toContain(`${path}: huge: U8 [${limit + 1}] is ${limit + 1} bytes`);
      expect(error.message).toContain(`past the ${limit} bytes`);
      expect((await stat(path)).blocks * 512).toBeLessThan(2 ** 20);
    } finally {
      await rm(path, { force: true });
    }
  });

  it.skipIf(!limitFitsInAFile)("a sharded load refuses it the same way, naming the shard that holds it", async (context) => {
    const limit = constants.MAX_LENGTH;
    const dir = await freshDir();
    await saveSafetensors(join(dir, "model-00001-of-00002.safetensors"), { first: f32([1, 2]) });
    const second = await sparseSafetensors(join(dir, "model-00002-of-00002.safetensors"), limit + 1);
    if (second === undefined) return context.skip();
    try {
      const weightMap = { first: "model-00001-of-00002.safetensors", small: "model-00002-of-00002.safetensors", huge: "model-00002-of-00002.safetensors" };
      await writeFile(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
      const error = await loadSafetensors(dir).catch((e) => e);
      expect(error).toBeInstanceOf(BsrFormatError);
      expect(error.field).toBe("huge");
      expect(error.message).toContain(`${second}: huge: U8 [${limit + 1}] is ${limit + 1} bytes`);
      expect(error.message).toContain(`past the ${limit} bytes`);
    } finally {
      await rm(second, { force: true });
    }
  });
});

describe("files read whole", () => {
  it("reads in calls of at most chunkBytes, each at its own position, into one buffer (Node aborts on one read past 2 GiB)", async () => {
    const path = join(await freshDir(), "x.npz");
    const contents = Uint8Array.from({ length: 1000 }, (_, i) => (i * 37) % 251);
    await writeFile(path, contents);
    const probe = await open(path, "r");
    const read = vi.spyOn(Object.getPrototypeOf(probe), "read");
    await probe.close();
    try {
      const bytes = await readSmallFile(path, 1000, "npz", "", 64);
      expect(Buffer.from(bytes).equals(Buffer.from(contents))).toBe(true);
      const calls = read.mock.calls as unknown as [Uint8Array, number, number, number][];
      expect(calls.map(([, offset, length, position]) => [offset, length, position])).toEqual(
        Array.from({ length: 16 }, (_, i) => [64 * i, Math.min(64, 1000 - 64 * i), 64 * i]),
      );
    } finally {
      read.mockRestore();
    }
    await expect(readSmallFile(path, 999, "npz", "use safetensors", 64)).rejects.toThrow(/1000 bytes .* past the 999 bytes .*; use safetensors/);
  });
});

describe("atomic, durable saves", () => {
  it("keeps the mode of the file it replaces", async () => {
    const path = join(await freshDir(), "x.safetensors");
    await saveSafetensors(path, sample(1));
    await chmod(path, 0o600);
    await saveSafetensors(path, sample(2));
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await loadSafetensors(path)).tensors).toEqual(sample(2));
  });

  it("writes through a symbolic link: the link stays, its target changes", async () => {
    const dir = await freshDir();
    await mkdir(join(dir, "real"));
    const target = join(dir, "real", "x.safetensors");
    await saveSafetensors(target, sample(1));
    const link = join(dir, "link.safetensors");
    await symlink(join("real", "x.safetensors"), link);
    await saveSafetensors(link, sample(2));
    expect((await lstat(link)).isSymbolicLink()).toBe(true);
    expect(await readlink(link)).toBe(join("real", "x.safetensors"));
    expect((await loadSafetensors(target)).tensors).toEqual(sample(2));
    expect((await readdir(dir)).sort()).toEqual(["link.safetensors", "real"]);
  });

  it("a killed save leaves the previous file intact, and the next save removes its temporary file", async () => {
    const dir = await freshDir();
    const path = join(dir, "model.safetensors");
    await saveSafetensors(path, sample(7));
    const before = await readFile(path);
    const child = spawn(process.execPath, ["--import", "tsx", join("test", "children", "slow-save.ts"), path], {
      cwd: fileURLToPath(new URL("..", import.meta.url)),
      stdio: "ignore",
    });
    const exited = new Promise((done) => child.on("exit", done));
    // Kill it once its temporary file holds some bytes (mid-write).
    const deadline = Date.now() + 60_000;
    let killed = false;
    while (Date.now() < deadline && !killed) {
      const temporaries = (await readdir(dir)).filter((name) => name.endsWith(".tmp"));
      const size = temporaries.length === 0 ? 0 : await stat(join(dir, temporaries[0])).then((s) => s.size, () => 0);
      if (size > 1024) {
        child.kill("SIGKILL");
        killed = true;
      } else await new Promise((done) => setTimeout(done, 5));
    }
    await exited;
    expect(killed).toBe(true);
    expect(await readFile(path)).toEqual(before);
    expect((await readdir(dir)).filter((name) => name.endsWith(".tmp"))).toHaveLength(1);
    await saveSafetensors(path, sample(8));
    expect(await readdir(dir)).toEqual(["model.safetensors"]);
    expect((await loadSafetensors(path)).tensors).toEqual(sample(8));
  }, 90_000);

  it("leaves the temporary files of a live writer alone", async () => {
    const dir = await freshDir();
    const path = join(dir, "x.safetensors");
    const live = join(dir, `x.safetensors.${process.pid}.0123456789ab.tmp`);
    await writeFile(live, "in progress");
    await saveSafetensors(path, sample(1));
    expect((await readdir(dir)).sort()).toEqual([`x.safetensors.${process.pid}.0123456789ab.tmp`, "x.safetensors"].sort());
  });
});

describe("sharded checkpoints", () => {
  const many = () =>
    new Map<string, SafetensorsTensor>(Array.from({ length: 7 }, (_, i) => [`layer${i}.weight`, f32(Array.from({ length: 10 }, (_, j) => i * 10 + j))]));

  it("splits by maxShardSize, writes the Hugging Face index, and loads from the directory or the index", async () => {
    const dir = await freshDir();
    const { index, shards } = await saveShardedSafetensors(dir, many(), { note: "x" }, { maxShardSize: 100 });
    expect(shards.map((s) => s.slice(dir.length + 1))).toEqual([1, 2, 3, 4].map((i) => shardFileName("model", i, 4)));
    expect(shardFileName("model", 1, 3)).toBe("model-00001-of-00003.safetensors");
    const json = JSON.parse(await readFile(index, "utf8"));
    expect(json.metadata.total_size).toBe(7 * 40);
    expect(json.weight_map["layer0.weight"]).toBe("model-00001-of-00004.safetensors");
    expect(json.weight_map["layer6.weight"]).toBe("model-00004-of-00004.safetensors");
    for (const from of [dir, index]) {
      const loaded = await loadSafetensors(from);
      expect(loaded.tensors).toEqual(many());
      expect(loaded.metadata.note).toBe("x");
    }
  });

  it("a checkpoint with no tensors keeps its metadata: in the index, which names no shard to read it from", async () => {
    const dir = await freshDir();
    const { index } = await saveShardedSafetensors(dir, {}, { note: "keep me" }, { maxShardSize: 10 });
    expect(JSON.parse(await readFile(index, "utf8")).metadata).toEqual({ note: "keep me", total_size: 0 });
    for (const from of [dir, index]) {
      const loaded = await loadSafetensors(from);
      expect(loaded.tensors.size).toBe(0);
      expect({ ...loaded.metadata }).toEqual({ note: "keep me" });
    }
  });

  it("refuses, before writing anything, a checkpoint with no tensors whose metadata has a total_size the index's own would replace", async () => {
    const dir = await freshDir();
    const error = await saveShardedSafetensors(dir, {}, { note: "keep me", total_size: "mine" }, { maxShardSize: 10 }).catch((caught) => caught);
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("metadata.total_size");
    expect(error.message).toMatch(/^metadata\.total_size: a checkpoint with no tensors keeps its metadata in the index, .* this entry would be lost/);
    expect(await readdir(dir)).toEqual([]);
  });

  it("a later save with fewer shards removes the old ones", async () => {
    const dir = await freshDir();
    await saveShardedSafetensors(dir, many(), {}, { maxShardSize: 40 });
    expect((await readdir(dir)).length).toBe(8);
    await saveShardedSafetensors(dir, many(), {}, { maxShardSize: 1000 });
    expect((await readdir(dir)).sort()).toEqual(["model-00001-of-00001.safetensors", "model.safetensors.index.json"]);
  });

  it("keeps a BSR matrix's parts in one shard, each shard readable alone", async () => {
    const dir = await freshDir();
    const a = BsrMatrix.random([8, 8], { blockShape: [2, 2], density: 0.5, seed: 1 });
    const b = BsrMatrix.random([8, 8], { blockShape: [2, 2], density: 0.5, seed: 2 });
    await saveBsrMatrices(dir, { a, b }, {}, { maxShardSize: 1 });
    const loaded = await loadBsrMatrices(dir);
    expect(loaded.get("a")!.toDense()).toEqual(a.toDense());
    expect(loaded.get("b")!.toDense()).toEqual(b.toDense());
    const first = await loadBsrMatrices(join(dir, "model-00001-of-00002.safetensors"));
    expect([...first.keys()]).toEqual(["a"]);
  });

  it("refuses an index that disagrees with its shards or points outside its directory", async () => {
    const dir = await freshDir();
    const { index } = await saveShardedSafetensors(dir, many(), {}, { maxShardSize: 100 });
    const original = JSON.parse(await readFile(index, "utf8"));
    const rewrite = async (change: (json: typeof original) => void) => {
      const json = structuredClone(original);
      change(json);
      await writeFile(index, JSON.stringify(json));
      return loadSafetensors(dir).catch((e) => e);
    };
    const unlisted = await rewrite((j) => delete j.weight_map["layer0.weight"]);
    expect(unlisted.field).toBe("layer0.weight");
    const ghost = await rewrite((j) => (j.weight_map.ghost = "model-00001-of-00004.safetensors"));
    expect(ghost.field).toBe("ghost");
    const climbing = await rewrite((j) => (j.weight_map["layer0.weight"] = "../x.safetensors"));
    expect(climbing).toBeInstanceOf(BsrFormatError);
    expect(climbing.field).toBe("weight_map.layer0.weight");
    const missingShard = await rewrite((j) => (j.weight_map["layer0.weight"] = "gone.safetensors"));
    expect(missingShard).toBeInstanceOf(BsrIoError);
    await writeFile(index, "{not json");
    await expect(loadSafetensors(dir)).rejects.toThrow(BsrFormatError);
  });

  it("takes total_size as informative: a size other than the tensors' bytes loads, one that is not a non-negative number is refused", async () => {
    const dir = await freshDir();
    const { index } = await saveShardedSafetensors(dir, many(), {}, { maxShardSize: 100 });
    const original = JSON.parse(await readFile(index, "utf8"));
    const withTotal = async (totalSize: unknown) => {
      await writeFile(index, JSON.stringify({ ...original, metadata: { total_size: totalSize } }));
      return loadSafetensors(dir).catch((e) => e);
    };
    // Writers have counted storage sizes, tied storage once, and a bool as 1/8 byte: none of it is the sum of the tensors.
    for (const totalSize of [1, 7 * 40 + 12, 0, 280.125]) expect((await withTotal(totalSize)).tensors).toEqual(many());
    for (const totalSize of [-1, "280", null]) {
      const error = await withTotal(totalSize);
      expect(error).toBeInstanceOf(BsrFormatError);
      expect(error.field).toBe("metadata.total_size");
    }
  });

  it("names a weight_map entry or total_size nested 100 000 deep without serialising it (JSON.stringify overflowed the stack)", async () => {
    const dir = await freshDir();
    const { index } = await saveShardedSafetensors(dir, many(), {}, { maxShardSize: 100 });
    const text = await readFile(index, "utf8");
    const deep = `${"[".repeat(100_000)}${"]".repeat(100_000)}`;
    await writeFile(index, text.replace('"model-00001-of-00004.safetensors"', deep));
    const shard = await loadSafetensors(dir).catch((e) => e);
    expect(shard).toBeInstanceOf(BsrFormatError);
    expect(shard.field).toBe("weight_map.layer0.weight");
    expect(shard.message).toMatch(/expected a shard file name beside the index, got an array of length 1$/);
    await writeFile(index, text.replace(/"total_size": \d+/, `"total_size": ${deep}`));
    const total = await loadSafetensors(dir).catch((e) => e);
    expect(total).toBeInstanceOf(BsrFormatError);
    expect(total.field).toBe("metadata.total_size");
  });

  it("refuses a tensor listed twice in weight_map, instead of keeping the last silently", async () => {
    const dir = await freshDir();
    const { index } = await saveShardedSafetensors(dir, many(), {}, { maxShardSize: 100 });
    const text = await readFile(index, "utf8");
    // Both entries name a real shard: only the repetition is wrong.
    const repeated = '"layer0.weight": "model-00002-of-00004.safetensors",\n    "layer0.weight"';
    await writeFile(index, text.replace('"layer0.weight"', repeated));
    const error = await loadSafetensors(dir).catch((e) => e);
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("weight_map.layer0.weight");
    expect(error.message).toMatch(/twice.*which shard is meant is ambiguous/);
    await writeFile(index, text.replace('"total_size"', '"total_size": 280, "total_size"'));
    expect((await loadSafetensors(dir).catch((e) => e)).field).toBe("metadata.total_size");
    await writeFile(index, text);
    await expect(loadSafetensors(dir)).resolves.toBeDefined();
  });

  it("refuses an index starting with a UTF-8 byte-order mark, as Python's json (and so transformers) does, naming the file", async () => {
    const dir = await freshDir();
    const { index } = await saveShardedSafetensors(dir, many(), {}, { maxShardSize: 100 });
    await writeFile(index, `\uFEFF${await readFile(index, "utf8")}`);
    const error = await loadSafetensors(dir).catch((e) => e);
    expect(error).toBeInstanceOf(BsrFormatError);
    expect(error.field).toBe("index");
    expect(error.message).toBe(`index: ${index} starts with a UTF-8 byte-order mark (EF BB BF), which JSON readers refuse (Python's json.load: "Unexpected UTF-8 BOM")`);
  });

  it("reads a directory's model.safetensors before its model.safetensors.index.json, as transformers does", async () => {
    const dir = await freshDir();
    await saveShardedSafetensors(dir, many(), {}, { maxShardSize: 100 });
    // Written beside the shards by hand (saveSafetensors would remove them).
    await writeFile(join(dir, "model.safetensors"), encodeSafetensors(sample(9)));
    expect((await loadSafetensors(dir)).tensors).toEqual(sample(9));
    expect((await loadSafetensors(join(dir, "model.safetensors.index.json"))).tensors).toEqual(many());
  });

  it("a sharded save removes the folder's model.safetensors, which would be read first", async () => {
    const dir = await freshDir();
    await saveSafetensors(join(dir, "model.safetensors"), sample(1));
    await saveSafetensors(join(dir, "other.safetensors"), sample(2));
    await saveShardedSafetensors(dir, many(), {}, { maxShardSize: 1000 });
    expect((await readdir(dir)).sort()).toEqual(["model-00001-of-00001.safetensors", "model.safetensors.index.json", "other.safetensors"]);
    expect((await loadSafetensors(dir)).tensors).toEqual(many());
  });

  it("a single-file save removes the sharded checkpoint of its name beside it (the index and its shards), nothing else", async () => {
    const dir = await freshDir();
    await saveShardedSafetensors(dir, many(), {}, { maxShardSize: 100 });
    await writeFile(join(dir, "config.json"), "{}");
    await saveSafetensors(join(dir, "other.safetensors"), sample(2));
    expect((await readdir(dir)).length).toBe(7);
    await saveSafetensors(join(dir, "model.safetensors"), sample(1));
    expect((await readdir(dir)).sort()).toEqual(["config.json", "model.safetensors", "other.safetensors"]);
    expect((await loadSafetensors(dir)).tensors).toEqual(sample(1));
  });

  it("takes undefined metadata as none, as saveSafetensors does (it threw a TypeError halfway through the save)", async () => {
    const dir = await freshDir();
    await saveShardedSafetensors(dir, many(), undefined, { maxShardSize: 100 });
    const loaded = await loadSafetensors(dir);
    expect(loaded.tensors).toEqual(many());
    expect(loaded.metadata).toEqual({});
  });

  it("saveBsrMatrices takes null options as none: one file, not a TypeError", async () => {
    const dir = await freshDir();
    const w = BsrMatrix.random([8, 8], { blockShape: [2, 2], density: 0.5, seed: 3 });
    const path = join(dir, "w.safetensors");
    await saveBsrMatrices(path, { w }, {}, null as unknown as { maxShardSize?: number });
    expect((await loadBsrMatrices(path)).get("w")!.toDense()).toEqual(w.toDense());
  });

  it("refuses a misspelt option before writing anything, where saveBsrMatrices wrote one unsharded file", async () => {
    const dir = await freshDir();
    const w = BsrMatrix.random([8, 8], { blockShape: [2, 2], density: 0.5, seed: 3 });
    const bsrError = await saveBsrMatrices(join(dir, "w"), { w }, {}, { maxShardsize: 100 } as never).catch((error: unknown) => error);
    expect(bsrError).toBeInstanceOf(BsrFormatError);
    expect((bsrError as Error).message).toBe("options: unknown option 'maxShardsize'; the options are maxShardSize");
    const shardedError = await saveShardedSafetensors(dir, many(), {}, { maxShardSize: 100, prefx: "weights" } as never).catch((error: unknown) => error);
    expect(shardedError).toBeInstanceOf(BsrFormatError);
    expect((shardedError as Error).message).toContain("unknown option 'prefx'; the options are maxShardSize, prefix");
    expect(await readdir(dir)).toEqual([]);
  });

  it("checks its options", async () => {
    const dir = await freshDir();
    await expect(saveShardedSafetensors(dir, many(), {}, { maxShardSize: 0 })).rejects.toThrow(/maxShardSize/);
    await expect(saveShardedSafetensors(dir, many(), {}, { maxShardSize: 10, prefix: "../x" })).rejects.toThrow(/prefix/);
  });
});
