/**
 * The TypeScript side of the addon (src/native.ts) against its C++ sources, so that the two cannot
 * drift: the operation and dtype codes against ops.h and common.h, the function list against
 * addon.cpp's exports, and, when a built addon loads here, against what the module really exports.
 * Needs no GPU: the sources are parsed as text.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { DECODE_BLOCK_SIDES, DECODE_MAX_TOKENS, DECODE_VARIANTS, MMA_SHAPES, SQUARE_BLOCK_SIDES, TILE_VARIANTS, WGMMA_SHAPES } from "../src/autotune_cache";
import { loadAddon } from "../src/loader";
import { ActivationOp, BinaryOp, DTYPE_CODE, NATIVE_FUNCTIONS, NcclReduceOp, ReduceOp, UnaryOp } from "../src/native";

const SOURCES = resolve(import.meta.dirname, "../../../kernels-cuda/src");

function source(file: string): string {
  // Comments out, so a commented-out enumerator or export does not count.
  return readFileSync(resolve(SOURCES, file), "utf8")
    .replace(/\/\*[\s\S]*?\*\//g, "")
    .replace(/\/\/.*$/gm, "");
}

/** The enumerators of `enum class <name> : int32_t { ... }` (or `enum <name> : int`) with their values (C++ numbering rules). */
function cppEnum(file: string, name: string): Record<string, number> {
  const match = new RegExp(`enum\\s+(?:class\\s+)?${name}\\s*:\\s*(?:int32_t|int)\\s*\\{([^}]*)\\}`).exec(source(file));
  if (!match) throw new Error(`${file}: no 'enum class ${name} : int32_t' or 'enum ${name} : int' found`);
  const values: Record<string, number> = {};
  let next = 0;
  for (const item of match[1].split(",").map((part) => part.trim()).filter(Boolean)) {
    const [enumerator, value] = item.split("=").map((part) => part.trim());
    next = value === undefined ? next : Number(value);
    if (!Number.isInteger(next)) throw new Error(`${file}: ${name}::${enumerator} has a value this test cannot read: ${value}`);
    values[enumerator] = next++;
  }
  return values;
}

/** The value of `constexpr <type> <name> = <integer>;`. */
function cppConstant(file: string, name: string): number {
  const match = new RegExp(`constexpr\\s+\\w+\\s+${name}\\s*=\\s*(\\d+)\\s*;`).exec(source(file));
  if (!match) throw new Error(`${file}: no 'constexpr ... ${name} = <integer>;' found`);
  return Number(match[1]);
}

/** The body of the function whose definition starts with `head` (up to the first line that is a closing brace). */
function cppFunction(file: string, head: string): string {
  const text = source(file);
  const start = text.indexOf(head);
  if (start < 0) throw new Error(`${file}: no '${head}' found`);
  return text.slice(start, text.indexOf("\n}", start));
}

/** The [rows, cols] pairs of `<name>[] = {{r, c}, ...};`. */
function cppShapes(file: string, name: string): [number, number][] {
  const match = new RegExp(`${name}\\[\\]\\s*=\\s*\\{(.*?)\\};`).exec(source(file));
  if (!match) throw new Error(`${file}: no '${name}[] = {...};' found`);
  return [...match[1].matchAll(/\{\s*(\d+)\s*,\s*(\d+)\s*\}/g)].map((m) => [Number(m[1]), Number(m[2])]);
}

/** The names addon.cpp's module initialiser exports, in order. */
function addonExports(): string[] {
  const names = [...source("addon.cpp").matchAll(/BS_EXPORT\(\s*"(\w+)"/g)].map((m) => m[1]);
  if (names.length === 0) throw new Error("addon.cpp: no BS_EXPORT(\"name\", ...) lines found");
  return names;
}

describe("native interface: src/native.ts against kernels-cuda/src", () => {
  for (const [name, ts] of [
    ["UnaryOp", UnaryOp],
    ["BinaryOp", BinaryOp],
    ["ReduceOp", ReduceOp],
    ["Activation", ActivationOp],
  ] as const) {
    it(`${name} codes are ops.h's ${name} (every enumerator but Count, same values)`, () => {
      const { Count, ...cpp } = cppEnum("ops.h", name);
      expect(Count, `ops.h ${name}::Count`).toBe(Object.keys(cpp).length);
      expect(ts).toEqual(cpp);
    });
  }

  it("DTYPE_CODE is common.h's DType", () => {
    const cpp = cppEnum("common.h", "DType");
    expect(Object.fromEntries(Object.entries(cpp).map(([k, v]) => [k.toLowerCase(), v]))).toEqual(DTYPE_CODE);
  });

  it("NcclReduceOp is nccl.h's ReduceOp (NCCL's ncclSum and ncclAvg)", () => {
    expect(NcclReduceOp).toEqual(cppEnum("nccl.h", "ReduceOp"));
  });

  it("NATIVE_FUNCTIONS are exactly the functions addon.cpp exports", () => {
    const exported = addonExports();
    expect(new Set(exported).size, "addon.cpp exports a name twice").toBe(exported.length);
    expect([...exported].sort()).toEqual([...NATIVE_FUNCTIONS].sort());
  });

  // What an autotune cache's records are checked against (autotune_cache.ts): a record the addon could not run is refused.
  it("the cache's tile variants are tc_kernels.h's TileVariant less those kept in kernels-cuda/dev/, and every tile autotuning times", () => {
    // tc_kernels.h: "kept for measurement in kernels-cuda/dev/" (the numbers there for the split rule), no launcher in the addon.
    const { kFeatureMajorDwTile, kPatchDwTile, kPatchDwPairsTile, kPatchDwWgmmaTile, ...shipped } = cppEnum("tc/tc_kernels.h", "TileVariant");
    expect([kFeatureMajorDwTile, kPatchDwTile, kPatchDwPairsTile, kPatchDwWgmmaTile].every(Number.isInteger)).toBe(true);
    expect(TILE_VARIANTS).toEqual(shipped);
    const timed = [...cppFunction("tc/dispatch.cu", "std::vector<TcOptions> tcTuneCandidates(").matchAll(/tc::(k\w+Tile)\b/g)].map((m) => m[1]);
    expect(timed.length).toBeGreaterThan(0);
    for (const tile of timed) expect(Object.keys(TILE_VARIANTS), `tcTuneCandidates times ${tile}`).toContain(tile);
  });

  it("the cache's block shapes and decoding limits are the kernels' (squareBlocks, kMmaShapes, kWgmmaShapes, decodeBlockSide, tc.h)", () => {
    // The sides a function's `<name> == <side> || ...` accepts.
    const sides = (file: string, head: string, name: string) => [...cppFunction(file, head).matchAll(new RegExp(`${name} == (\\d+)`, "g"))].map((m) => Number(m[1]));
    expect(sides("tc/dispatch.cu", "bool squareBlocks(", "block")).toEqual([...SQUARE_BLOCK_SIDES]);
    expect(cppShapes("tc/tc_kernels.h", "kMmaShapes")).toEqual(MMA_SHAPES);
    expect(cppShapes("tc/tc_kernels.h", "kWgmmaShapes")).toEqual(WGMMA_SHAPES);
    expect(sides("tc/bsr_decode.cu", "bool decodeBlockSide(", "side")).toEqual([...DECODE_BLOCK_SIDES]);
    expect(cppConstant("tc/tc_kernels.h", "kDecodeVariants")).toBe(DECODE_VARIANTS);
    expect(cppConstant("tc/tc.h", "kDecodeMaxTokens")).toBe(DECODE_MAX_TOKENS.bfloat16);
    expect(cppConstant("tc/tc.h", "kDecodeMaxTokens")).toBe(DECODE_MAX_TOKENS.float16);
    expect(cppConstant("tc/tc.h", "kDecodeMaxTokensFloat32")).toBe(DECODE_MAX_TOKENS.float32);
  });

  const load = loadAddon();
  const loadable = load.addon !== null;
  if (!loadable) console.log(`[native_interface.test.ts] built-addon check skipped: ${load.reason}`);
  it.skipIf(!loadable)("the built addon exports exactly NATIVE_FUNCTIONS, each a function", () => {
    if (load.addon === null) return;
    const module = load.addon as unknown as Record<string, unknown>;
    expect(Object.keys(module).sort()).toEqual([...NATIVE_FUNCTIONS].sort());
    for (const name of NATIVE_FUNCTIONS) expect(typeof module[name], name).toBe("function");
  });
});
