/**
 * The autotune cache's file format (no GPU needed): what serializeAutotuneCache writes parses back, and a file
 * that is not one fails with an AutotuneCacheError naming the file and the field.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ValueError } from "@blocksparse/core";
import { build } from "esbuild";
import { afterAll, describe, expect, test } from "vitest";
import { workspaceAlias } from "../../../vitest.shared.ts";
import {
  AUTOTUNE_CACHE_FORMAT,
  AUTOTUNE_CACHE_VERSION,
  AUTOTUNE_LOCK_STALE_MS,
  AutotuneCacheError,
  inspectAutotuneCache,
  parseAutotuneCache,
  readAutotuneCache,
  sameDevice,
  serializeAutotuneCache,
  updateAutotuneCache,
  writeAutotuneCache,
} from "../src/autotune_cache";
import type { AutotuneRecord } from "../src/native";

const DEVICE = { name: "NVIDIA H200", computeCapability: "9.0" };
const RECORDS: AutotuneRecord[] = [
  {
    product: "bsrLinear",
    dtype: "bfloat16",
    blockShape: [64, 64],
    m: 8192,
    rows: 4096,
    cols: 1024,
    nnzBlocks: 256,
    bias: true,
    epilogue: "none",
    route: "wgmma persistent",
    choice: { dense: false, path: "wgmma", variant: 7, splits: 0 },
    timings: [
      { route: "wgmma tile", ms: 0.061 },
      { route: "wgmma persistent", ms: 0.044 },
    ],
  },
  {
    product: "sampledMatmul",
    dtype: "float16",
    blockShape: [32, 32],
    m: 2048,
    rows: 768,
    cols: 3072,
    nnzBlocks: 576,
    bias: false,
    epilogue: "none",
    route: "dense product, sampled",
    choice: { dense: true, path: "auto", variant: -1, splits: 0 },
    timings: [{ route: "dense product, sampled", ms: 0.05 }],
  },
  {
    product: "bsrMatmul",
    dtype: "bfloat16",
    blockShape: [32, 32],
    m: 8192,
    rows: 1024,
    cols: 4096,
    nnzBlocks: 1024,
    bias: false,
    epilogue: "activationBackward",
    route: "wgmma X-resident",
    choice: { dense: false, path: "wgmma", variant: 6, splits: 0 },
    timings: [{ route: "wgmma X-resident", ms: 0.09 }],
  },
];

const dir = mkdtempSync(join(tmpdir(), "blocksparse-autotune-cache-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("autotune cache files", () => {
  test("what is written parses back to the same records, device and format", () => {
    const file = join(dir, "cache.json");
    writeAutotuneCache(file, serializeAutotuneCache(DEVICE, RECORDS));
    const cache = readAutotuneCache(file);
    expect(cache.format).toBe(AUTOTUNE_CACHE_FORMAT);
    expect(cache.device).toEqual(DEVICE);
    expect(cache.records.map((r) => ({ ...r }))).toEqual(RECORDS);
    expect(sameDevice(cache, DEVICE)).toBe(true);
    expect(sameDevice(cache, { ...DEVICE, computeCapability: "9.1" })).toBe(false);
    expect(sameDevice(cache, { ...DEVICE, name: "NVIDIA H100 80GB HBM3" })).toBe(false);
    // Written whole: no temporary file is left beside it.
    expect(readdirSync(dir).filter((f) => f.includes(".tmp"))).toEqual([]);
  });

  test("inspecting a path: an earlier version's cache is outdated (rewritable), a newer one's foreign (left alone)", () => {
    const at = (name: string, text: string) => {
      const file = join(dir, name);
      writeFileSync(file, text);
      return inspectAutotuneCache(file).kind;
    };
    const current = JSON.parse(serializeAutotuneCache(DEVICE, RECORDS));
    expect(at("current.json", JSON.stringify(current))).toBe("cache");
    expect(at("v1.json", JSON.stringify({ ...current, version: 1 }))).toBe("outdated");
    expect(at("newer.json", JSON.stringify({ ...current, version: AUTOTUNE_CACHE_VERSION + 1 }))).toBe("foreign");
    expect(at("other.json", JSON.stringify({ ...current, format: "other", version: 1 }))).toBe("foreign");
    expect(at("bad-record.json", JSON.stringify({ ...current, records: [{ ...current.records[0], m: -1 }] }))).toBe("damaged");
    expect(at("version-zero.json", JSON.stringify({ ...current, version: 0 }))).toBe("foreign");
  });

  test("a file written before fused calls were tuned apart (no epilogue) reads as plain products", () => {
    const old = JSON.parse(serializeAutotuneCache(DEVICE, RECORDS.slice(0, 2)));
    for (const record of old.records) delete record.epilogue;
    const cache = parseAutotuneCache(JSON.stringify(old), "old.json");
    expect(cache.records.map((r) => r.epilogue ?? "none")).toEqual(["none", "none"]);
    // Written again, the field is explicit.
    expect(JSON.parse(serializeAutotuneCache(DEVICE, cache.records)).records.map((r: { epilogue: string }) => r.epilogue)).toEqual(["none", "none"]);
  });

  const valid = JSON.parse(serializeAutotuneCache(DEVICE, RECORDS));
  const withRecord = (change: Record<string, unknown>) => JSON.stringify({ ...valid, records: [{ ...valid.records[0], ...change }] });
  const CASES: [string, string, RegExp][] = [
    ["not JSON", "{ records: [", /bad\.json: not JSON/],
    ["another format", JSON.stringify({ ...valid, format: "something-else" }), /bad\.json: format:/],
    ["a newer version", JSON.stringify({ ...valid, version: AUTOTUNE_CACHE_VERSION + 1 }), /bad\.json: version \d+, written by a newer version of this package \(this one reads and writes version \d+\)/],
    ["an earlier version (host-bound timings)", JSON.stringify({ ...valid, version: 1 }), /bad\.json: version 1, written by an earlier version .*not used/],
    ["no device", JSON.stringify({ ...valid, device: undefined }), /bad\.json: device:/],
    ["an unknown product", withRecord({ product: "conv2d" }), /records\.0\.product:/],
    ["a dtype without tensor-core routes", withRecord({ dtype: "int32" }), /records\.0\.dtype:/],
    ["a negative token count", withRecord({ m: -1 }), /records\.0\.m:/],
    ["a fractional block side", withRecord({ blockShape: [32.5, 32] }), /records\.0\.blockShape\.0:/],
    ["an unknown path", withRecord({ choice: { ...valid.records[0].choice, path: "tiles" } }), /records\.0\.choice\.path:/],
    ["a variant out of range", withRecord({ choice: { ...valid.records[0].choice, variant: 4096 } }), /records\.0\.choice\.variant:/],
    ["no choice", withRecord({ choice: undefined }), /records\.0\.choice:/],
    ["an unknown epilogue", withRecord({ epilogue: "softmax" }), /records\.0\.epilogue:/],
    ["an activation after dW", withRecord({ product: "sampledMatmul", epilogue: "activation" }), /records\.0\.epilogue: an activation follows bsrLinear/],
    ["an activation's backward after bsrLinear", withRecord({ epilogue: "activationBackward" }), /records\.0\.epilogue: .*its backward bsrMatmul/],
    // Records no call could use: a shape no pattern has, or a route the addon has no kernel for (it would drop it).
    ["a W that is not whole blocks", withRecord({ rows: 4000 }), /records\.0\.blockShape: a 4000x1024 W is not whole 64x64 blocks/],
    ["a W without columns", withRecord({ cols: 0 }), /records\.0\.blockShape: a 4096x0 W is not whole 64x64 blocks/],
    ["more blocks than W holds", withRecord({ nnzBlocks: 1025 }), /records\.0\.nnzBlocks: 1025 blocks, more than the 1024 of a 4096x1024 W/],
    ["a bias on bsrMatmul", withRecord({ product: "bsrMatmul" }), /records\.0\.bias: bsrMatmul is tuned without a bias/],
    ["the decoding path for bsrMatmul", withRecord({ product: "bsrMatmul", bias: false, m: 8, choice: { ...valid.records[0].choice, path: "decode", variant: 0 } }), /records\.0\.choice\.path: the decoding path runs bsrLinear .*not bsrMatmul/],
    ["the decoding path past its tokens", withRecord({ choice: { ...valid.records[0].choice, path: "decode", variant: 0 } }), /records\.0\.choice\.path: the decoding path runs bsrLinear with 1-64 tokens .*8192 tokens/],
    ["a decoding variant the addon lacks", withRecord({ m: 32, choice: { ...valid.records[0].choice, path: "decode", variant: 6 } }), /records\.0\.choice\.variant: the decoding path's variants are 0-5, not 6/],
    ["a tile kept for measurement in kernels-cuda/dev", withRecord({ choice: { ...valid.records[0].choice, variant: 3 } }), /records\.0\.choice\.variant: the addon has no tile variant 3/],
    ["a named tile on mma.sync", withRecord({ choice: { ...valid.records[0].choice, path: "mma" } }), /records\.0\.choice\.variant: .*one tile on mma\.sync \(variant -1 or 0\), not 7/],
    ["dW's patch tile for bsrLinear", withRecord({ choice: { ...valid.records[0].choice, variant: 33 } }), /records\.0\.choice\.variant: the patch tile \(33\) computes sampledMatmul with 32x32 blocks, not bsrLinear/],
    ["blocks no tensor-core tile has", withRecord({ blockShape: [48, 48], rows: 4800, cols: 1056 }), /records\.0\.blockShape: no tensor-core tile runs bsrLinear in bfloat16 with 48x48 blocks/],
    ["wgmma for a 32-wide output tile", withRecord({ blockShape: [32, 64], choice: { ...valid.records[0].choice, variant: 0 } }), /records\.0\.choice\.path: wgmma has no tile for bsrLinear in bfloat16 with 32x64 blocks/],
    ["wgmma in float32", withRecord({ dtype: "float32" }), /records\.0\.choice\.path: wgmma has no tile for bsrLinear in float32/],
    ["a tensor-core route without tokens", withRecord({ m: 0 }), /records\.0\.m: no tensor-core tile runs a call without tokens/],
  ];
  for (const [what, text, message] of CASES) {
    test(`${what}: an AutotuneCacheError (a ValueError) naming the file and the field`, () => {
      let caught: unknown;
      try {
        parseAutotuneCache(text, "bad.json");
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(AutotuneCacheError);
      expect(caught).toBeInstanceOf(ValueError);
      expect((caught as Error).message).toMatch(message);
    });
  }

  test("records the addon can run are kept: the dense route on any blocks, each path on the shapes it has kernels for", () => {
    const base = valid.records[0];
    const usable: Record<string, unknown>[] = [
      { blockShape: [48, 48], rows: 4800, cols: 1056, choice: { dense: true, path: "auto", variant: -1, splits: 0 } },
      { m: 0, choice: { dense: true, path: "auto", variant: -1, splits: 0 } },
      { blockShape: [32, 32], choice: { dense: false, path: "mma", variant: -1, splits: 0 } },
      { blockShape: [16, 32], rows: 4096, cols: 1024, choice: { dense: false, path: "mma", variant: 0, splits: 2 } },
      { m: 64, blockShape: [16, 16], choice: { dense: false, path: "decode", variant: 5, splits: 0 } },
      { m: 16, dtype: "float32", choice: { dense: false, path: "decode", variant: 0, splits: 0 } },
      { m: 8, blockShape: [16, 128], choice: { dense: false, path: "auto", variant: -1, splits: 0 } },
      { blockShape: [64, 128], choice: { dense: false, path: "wgmma", variant: 14, splits: 0 } },
      { product: "bsrMatmul", bias: false, blockShape: [32, 64], choice: { dense: false, path: "wgmma", variant: 0, splits: 0 } },
      { product: "sampledMatmul", bias: false, blockShape: [32, 32], choice: { dense: false, path: "wgmma", variant: 33, splits: 0 } },
      { product: "sampledMatmul", bias: false, nnzBlocks: 1024, choice: { dense: false, path: "wgmma", variant: 0, splits: 4 } },
    ];
    const text = JSON.stringify({ ...valid, records: usable.map((change) => ({ ...base, ...change })) });
    expect(parseAutotuneCache(text, "usable.json").records).toHaveLength(usable.length);
  });

  test("a file that cannot be read or written names itself, and a failed write leaves nothing behind", () => {
    expect(() => readAutotuneCache(join(dir, "missing.json"))).toThrow(/missing\.json: cannot read it/);
    const inMissingDir = join(dir, "no-such-dir", "cache.json");
    expect(() => writeAutotuneCache(inMissingDir, "{}")).toThrow(AutotuneCacheError);
    expect(() => writeAutotuneCache(inMissingDir, "{}")).toThrow(/no-such-dir.*cannot write it/);
    expect(existsSync(join(dir, "no-such-dir"))).toBe(false);
    // An earlier good file survives a later failed write of another.
    const file = join(dir, "kept.json");
    writeAutotuneCache(file, serializeAutotuneCache(DEVICE, RECORDS));
    const before = readFileSync(file, "utf8");
    expect(() => writeAutotuneCache(join(dir, "no-such-dir", "kept.json"), "{}")).toThrow(AutotuneCacheError);
    expect(readFileSync(file, "utf8")).toBe(before);
    // A write that fails after its temporary file was made (here the rename, over a directory that holds a file)
    // removes the temporary.
    const blocked = mkdtempSync(join(dir, "blocked-"));
    const target = join(blocked, "cache.json");
    mkdirSync(target);
    writeFileSync(join(target, "inside"), "x");
    expect(() => writeAutotuneCache(target, serializeAutotuneCache(DEVICE, RECORDS))).toThrow(/cache\.json: cannot write it/);
    expect(readdirSync(blocked)).toEqual(["cache.json"]);
  });

  test("a writer never writes into, renames or removes another writer's temporary file (threads of one process share its id)", () => {
    const file = join(dir, "shared.json");
    const theirs = `${file}.${process.pid}.tmp`;
    writeFileSync(theirs, "another writer's half-written cache");
    writeAutotuneCache(file, serializeAutotuneCache(DEVICE, RECORDS));
    expect(readAutotuneCache(file).records).toHaveLength(RECORDS.length);
    expect(readFileSync(theirs, "utf8")).toBe("another writer's half-written cache");
    rmSync(theirs);
    expect(readdirSync(dir).filter((f) => f.startsWith("shared.json."))).toEqual([]);
  });
});

describe("the exit write (updateAutotuneCache) under the cache's lock", () => {
  /** RECORDS[0] at `count` token counts of its own for writer `writer`: shapes no other writer has. */
  const recordsOf = (writer: number, count: number): AutotuneRecord[] =>
    Array.from({ length: count }, (_, i) => ({ ...RECORDS[0], m: 100_000 * (writer + 1) + i }));

  test("writers ending at the same moment (separate processes) all keep their choices", { timeout: 60_000 }, async () => {
    // A child process that writes the records it is given at a given moment, as BLOCKSPARSE_CUDA_AUTOTUNE_CACHE's exit
    // listener does: this package's source bundled with its workspace imports (Node runs no TypeScript itself).
    const bundle = await build({
      stdin: {
        contents: `import { updateAutotuneCache } from ${JSON.stringify(resolve(import.meta.dirname, "../src/autotune_cache.ts"))};
          const [file, startAt, records] = process.argv.slice(2);
          while (Date.now() < Number(startAt)) {} // every writer starts within a millisecond or so
          const update = updateAutotuneCache(file, ${JSON.stringify(DEVICE)}, JSON.parse(records));
          process.stdout.write(JSON.stringify(update));`,
        resolveDir: import.meta.dirname,
        loader: "ts",
      },
      bundle: true,
      platform: "node",
      format: "esm",
      write: false,
      logLevel: "silent",
      plugins: [
        {
          name: "workspace-sources",
          setup(builder) {
            builder.onResolve({ filter: /^@blocksparse\// }, (args) => {
              const alias = workspaceAlias.find(({ find }) => find.test(args.path));
              return alias ? { path: args.path.replace(alias.find, alias.replacement) } : undefined;
            });
          },
        },
      ],
    });
    const writerDir = mkdtempSync(join(dir, "writers-"));
    const script = join(writerDir, "writer.mjs");
    writeFileSync(script, bundle.outputFiles[0].text);
    const file = join(writerDir, "shared.json");
    const writers = 8;
    const perWriter = 50;
    const startAt = Date.now() + 1500;
    const results = await Promise.all(
      Array.from({ length: writers }, (_, writer) => {
        const child = spawn(process.execPath, [script, file, String(startAt), JSON.stringify(recordsOf(writer, perWriter))]);
        let output = "";
        child.stdout.on("data", (data) => (output += data));
        child.stderr.on("data", (data) => (output += data));
        return new Promise<{ code: number | null; output: string }>((done) => child.on("close", (code) => done({ code, output })));
      }),
    );
    for (const { code, output } of results) expect(code, output).toBe(0);
    const written = readAutotuneCache(file).records.map((r) => r.m);
    expect(new Set(written)).toEqual(new Set(Array.from({ length: writers }, (_, writer) => recordsOf(writer, perWriter).map((r) => r.m)).flat()));
    expect(written).toHaveLength(writers * perWriter);
    // Each held the lock: none waited it out.
    for (const { output } of results) expect(JSON.parse(output)).toEqual({ written: true });
    // The lock and every temporary file are gone.
    expect(readdirSync(writerDir).sort()).toEqual(["shared.json", "writer.mjs"]);
  });

  test("a lock older than AUTOTUNE_LOCK_STALE_MS (its writer killed) is taken over at once, and removed after", () => {
    const file = join(dir, "stale.json");
    writeAutotuneCache(file, serializeAutotuneCache(DEVICE, recordsOf(1, 2)));
    writeFileSync(`${file}.lock`, "4194304 0 killed\n");
    const past = (Date.now() - AUTOTUNE_LOCK_STALE_MS - 1000) / 1000;
    utimesSync(`${file}.lock`, past, past);
    const start = Date.now();
    expect(updateAutotuneCache(file, DEVICE, recordsOf(2, 2))).toEqual({ written: true });
    expect(Date.now() - start).toBeLessThan(1000);
    expect(readAutotuneCache(file).records.map((r) => r.m)).toEqual([...recordsOf(2, 2), ...recordsOf(1, 2)].map((r) => r.m));
    expect(existsSync(`${file}.lock`)).toBe(false);
  });

  test("the lock is removed whatever happens while it is held: a failure, a file that is not a cache (left as it is)", () => {
    const lockDir = mkdtempSync(join(dir, "lock-"));
    const file = join(lockDir, "cache.json");
    const unreadable = {
      ...RECORDS[0],
      get m(): number {
        throw new Error("a record that cannot be read");
      },
    };
    expect(() => updateAutotuneCache(file, DEVICE, [unreadable])).toThrow("a record that cannot be read");
    expect(readdirSync(lockDir)).toEqual([]);
    const foreign = join(lockDir, "weights.bin");
    writeFileSync(foreign, "another program's data");
    const update = updateAutotuneCache(foreign, DEVICE, RECORDS);
    expect(update.written).toBe(false);
    expect(readFileSync(foreign, "utf8")).toBe("another program's data");
    expect(readdirSync(lockDir)).toEqual(["weights.bin"]);
  });
});
