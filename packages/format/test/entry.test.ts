import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const sourceDir = join(dirname(fileURLToPath(import.meta.url)), "../src");

/** Relative imports of a source file, followed transitively from `entry`. */
function importGraph(entry: string): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const visit = (file: string) => {
    if (graph.has(file)) return;
    const text = readFileSync(join(sourceDir, file), "utf8");
    const specifiers = [...text.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+"([^"]+)"/gms)].map((m) => m[1]);
    graph.set(file, specifiers);
    for (const specifier of specifiers) if (specifier.startsWith("./")) visit(specifier.slice(2).replace(/\.js$/, ".ts"));
  };
  visit(entry);
  return graph;
}

describe("entry points", () => {
  it("the main entry imports no node: module (it runs in browsers)", () => {
    const graph = importGraph("index.ts");
    expect(graph.size).toBeGreaterThan(5);
    const external = [...graph.values()].flat().filter((specifier) => !specifier.startsWith("./"));
    // Only zod (schemas): the zip library stays with the .npz subpath, out of bundles that do not use it.
    expect(new Set(external)).toEqual(new Set(["zod/mini"]));
  });

  it("the npz entry runs in browsers too: zod and fflate, no node: module", () => {
    const graph = importGraph("npz.ts");
    const external = [...graph.values()].flat().filter((specifier) => !specifier.startsWith("./"));
    expect(new Set(external)).toEqual(new Set(["zod/mini", "fflate"]));
  });

  it("only the node entry uses node: modules", () => {
    const graph = importGraph("node.ts");
    const nodeUsers = [...graph].filter(([, specifiers]) => specifiers.some((s) => s.startsWith("node:"))).map(([file]) => file);
    expect(nodeUsers.sort()).toEqual(["files.ts", "safetensors-file.ts"]);
    expect(importGraph("index.ts").has("files.ts")).toBe(false);
  });
});
