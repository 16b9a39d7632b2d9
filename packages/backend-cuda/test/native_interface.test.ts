/**
 * The TypeScript side of the addon (src/native.ts) against its C++ sources, so that the two cannot
 * drift: the operation and dtype codes against ops.h and common.h, the function list against
 * addon.cpp's exports, and, when a built addon loads here, against what the module really exports.
 * Needs no GPU: the sources are parsed as text.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { loadAddon } from "../src/loader";
import { ActivationOp, BinaryOp, DTYPE_CODE, NATIVE_FUNCTIONS, NcclReduceOp, ReduceOp, UnaryOp } from "../src/native";

const SOURCES = resolve(import.meta.dirname, "../../../kernels-cuda/src");

function source(file: string): string {
  // Comments out, so a commented-out enumerator or export does not count.
  return readFileSync(resolve(SOURCES, file), "utf8")
    .replace(/\/\*[\s\S]*?\*\//g, "")
    .replace(/\/\/.*$/gm, "");
}

/** The enumerators of `enum class <name> : int32_t { ... }` with their values (C++ numbering rules). */
function cppEnum(file: string, name: string): Record<string, number> {
  const match = new RegExp(`enum\\s+class\\s+${name}\\s*:\\s*int32_t\\s*\\{([^}]*)\\}`).exec(source(file));
  if (!match) throw new Error(`${file}: no 'enum class ${name} : int32_t' found`);
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
