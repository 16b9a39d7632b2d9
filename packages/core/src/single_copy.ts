/**
 * One core per process. Two copies (its ESM and CJS builds, or two installed versions) would
 * each keep their own engine, backends and Tensor class: a tensor of one fails the other's
 * checks, and a backend registered with one is missing from the other. The first copy records
 * itself in the global symbol registry; a second one throws on load and says how to fix it.
 */
import { DuplicateCoreError } from "./errors";

// Set by the build (tsup.shared.ts) to "esm" or "cjs"; absent when the sources run directly.
declare const __BLOCKSPARSE_MODULE_FORMAT__: string | undefined;

const LOADED = Symbol.for("@blocksparse/core");

interface LoadedCopy {
  version: string;
  moduleFormat: string;
}

function moduleFormat(): string {
  if (typeof __BLOCKSPARSE_MODULE_FORMAT__ === "undefined") return "its TypeScript sources";
  return __BLOCKSPARSE_MODULE_FORMAT__ === "cjs" ? "its CommonJS build (require)" : "its ES module build (import)";
}

/** Records this copy of core, or throws DuplicateCoreError when another one is already loaded. */
export function claimSingleCopy(version: string): void {
  const registry = globalThis as { [LOADED]?: LoadedCopy };
  const here: LoadedCopy = { version, moduleFormat: moduleFormat() };
  const first = registry[LOADED];
  if (first !== undefined) {
    throw new DuplicateCoreError(
      `@blocksparse/core is loaded twice in this process: version ${first.version} from ${first.moduleFormat}, then version ${here.version} from ${here.moduleFormat}. ` +
        "Each copy keeps its own tensors and backends, so they cannot work together. " +
        "Load every @blocksparse package in one module format (all `import` or all `require`), and install one version of @blocksparse/core " +
        "(`npm ls @blocksparse/core` shows the copies; `npm dedupe` or `pnpm dedupe` merges them).",
    );
  }
  Object.defineProperty(registry, LOADED, { value: here, configurable: true });
}
