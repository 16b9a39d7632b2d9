import type { Options } from "tsup";

/** ESM + CJS + .d.ts with sourcemaps, the same for every package. */
export function packageBuild(entry: Record<string, string>, overrides: Partial<Options> = {}): Options {
  return {
    entry,
    format: ["esm", "cjs"],
    dts: true,
    sourcemap: true,
    clean: true,
    target: "node20",
    splitting: false,
    treeshake: true,
    // Keep `node:fs` as written: a bundler meeting a Node-only entry then says "Node built-in"
    // instead of suggesting a polyfill for `fs`.
    removeNodeProtocol: false,
    // Tells a package which of its builds is running (core names it when loaded twice).
    esbuildOptions(options, context) {
      options.define = { ...options.define, __BLOCKSPARSE_MODULE_FORMAT__: JSON.stringify(context.format) };
    },
    ...overrides,
  };
}
