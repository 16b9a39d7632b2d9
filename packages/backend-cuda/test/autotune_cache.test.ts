/**
 * The autotune cache's file format (no GPU needed): what serializeAutotuneCache writes parses back, and a file
 * that is not one fails with an AutotuneCacheError naming the file and the field.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ValueError } from "@blocksparse/core";
import { afterAll, describe, expect, test } from "vitest";
import {
  AUTOTUNE_CACHE_FORMAT,
  AUTOTUNE_CACHE_VERSION,
  AutotuneCacheError,
  inspectAutotuneCache,
  parseAutotuneCache,
  readAutotuneCache,
  sameDevice,
  serializeAutotuneCache,
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
