import { gzipSync } from "node:zlib";
import { build, type Plugin } from "esbuild";
import { workspaceAlias } from "./vitest.shared.ts";

/** The browser-bundle tests' tools: what an app's bundler makes of the packages, and what in it would evaluate code. */

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
export async function browserBundle(packages: string[]): Promise<{ code: string; gzipKiB: number }> {
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
export function evaluatedCode(code: string): string[] {
  return [...code.matchAll(EVAL_PATTERN)].map((match) => code.slice(Math.max(0, match.index - 60), match.index + 40));
}
