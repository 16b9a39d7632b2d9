import { gzipSync } from "node:zlib";
import { build, type Plugin } from "esbuild";
import { describe, expect, it } from "vitest";
import { workspaceAlias } from "../../../vitest.shared.ts";

/** Resolves `@blocksparse/*` to the packages' sources, as the tests do. */
const workspaceSources: Plugin = {
  name: "workspace-sources",
  setup(builder) {
    builder.onResolve({ filter: /^@blocksparse\// }, (args) => {
      for (const { find, replacement } of workspaceAlias) {
        if (find.test(args.path)) return { path: args.path.replace(find, replacement) };
      }
      return undefined;
    });
  },
};

/** A minified browser bundle of everything the given packages export, as an app bundler makes it. */
async function browserBundle(packages: string[]): Promise<{ code: string; gzipKiB: number }> {
  const result = await build({
    stdin: { contents: packages.map((name) => `export * from "${name}";`).join("\n"), resolveDir: import.meta.dirname, loader: "ts" },
    bundle: true,
    minify: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    logLevel: "silent",
    plugins: [workspaceSources],
  });
  const code = result.outputFiles[0]!.text;
  return { code, gzipKiB: gzipSync(code, { level: 9 }).length / 1024 };
}

// Evaluated code is what a strict Content-Security-Policy blocks (and reports, even when caught).
// A method named `eval` (Module.eval) is not a call: `eval(){` and `.eval(` are left out.
const EVAL_PATTERN = /\bnew Function\b|(?<![.\w])(?:Function|eval)\((?!\)\s*\{)/g;

/** Each place the code would evaluate a string, with a little context, for the failure message. */
function evaluatedCode(code: string): string[] {
  return [...code.matchAll(EVAL_PATTERN)].map((match) => code.slice(Math.max(0, match.index - 60), match.index + 40));
}

describe("browser bundles (esbuild, minified, every export kept)", () => {
  it("@blocksparse/format stays within 30 KiB gzipped and evaluates no code", async () => {
    const { code, gzipKiB } = await browserBundle(["@blocksparse/format"]);
    console.log(`@blocksparse/format: ${(code.length / 1024).toFixed(1)} KiB minified, ${gzipKiB.toFixed(1)} KiB gzipped`);
    expect(gzipKiB).toBeLessThanOrEqual(30);
    expect(evaluatedCode(code)).toEqual([]);
  }, 60_000);

  // SciPy .npz files (and their zip library) are a subpath: a bundle takes them only when it imports them.
  it("@blocksparse/format with its npz subpath stays within 30 KiB gzipped and evaluates no code", async () => {
    const { code, gzipKiB } = await browserBundle(["@blocksparse/format", "@blocksparse/format/npz"]);
    console.log(`@blocksparse/format + /npz: ${(code.length / 1024).toFixed(1)} KiB minified, ${gzipKiB.toFixed(1)} KiB gzipped`);
    expect(gzipKiB).toBeLessThanOrEqual(30);
    expect(evaluatedCode(code)).toEqual([]);
  }, 60_000);

  it("format + core + autograd + nn stay within 60 KiB gzipped and evaluate no code", async () => {
    const { code, gzipKiB } = await browserBundle(["@blocksparse/format", "@blocksparse/core", "@blocksparse/autograd", "@blocksparse/nn"]);
    console.log(`format + core + autograd + nn: ${(code.length / 1024).toFixed(1)} KiB minified, ${gzipKiB.toFixed(1)} KiB gzipped`);
    expect(gzipKiB).toBeLessThanOrEqual(60);
    expect(evaluatedCode(code)).toEqual([]);
  }, 60_000);

  it("the eval check finds code evaluated from a string", () => {
    expect(evaluatedCode('a=1;const f=new Function("return 1");b.eval();class M{eval(){}};eval("2")')).toHaveLength(2);
  });

  it("the Node-only entry names its Node built-ins instead of bundling for a browser", async () => {
    await expect(browserBundle(["@blocksparse/nn/node"])).rejects.toThrow(/node:/);
  }, 60_000);
});
