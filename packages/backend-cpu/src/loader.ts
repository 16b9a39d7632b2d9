/**
 * Finds and loads the native addon. Every failure becomes ONE message saying why the cpu backend is
 * unavailable here (not built, failed to load) and how to fix it.
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { NATIVE_FUNCTIONS, type NativeAddon } from "./native";

const ADDON_FILE = "blocksparse_cpu.node";

/** "cjs" or "esm" in the built package (tsup defines it); absent in the TypeScript sources. */
declare const __BLOCKSPARSE_MODULE_FORMAT__: string | undefined;

/**
 * This module's file: src/loader.ts in tests, dist/index.{js,cjs} when built. The CommonJS build takes its own
 * `__filename`: its shim of import.meta.url (`file:` + the path, not encoded) read a directory with `#` as ending there
 * (no addon found) and one with a `%` as a malformed URL (a URIError).
 */
function moduleFile(): string {
  if (typeof __BLOCKSPARSE_MODULE_FORMAT__ !== "undefined" && __BLOCKSPARSE_MODULE_FORMAT__ === "cjs") return __filename;
  return fileURLToPath(import.meta.url);
}

/** Where the addon may be, in the order tried. */
export function addonCandidates(): string[] {
  const here = dirname(moduleFile()); // src/ in tests, dist/ when built
  const candidates: string[] = [];
  if (process.env.BLOCKSPARSE_CPU_ADDON) candidates.push(resolve(process.env.BLOCKSPARSE_CPU_ADDON));
  candidates.push(resolve(here, "../../../kernels-cpu/build/Release", ADDON_FILE));
  candidates.push(resolve(here, "../native/build/Release", ADDON_FILE)); // a published package builds here
  return candidates;
}

function isNativeAddon(value: unknown): value is NativeAddon {
  if (typeof value !== "object" || value === null) return false;
  const record = value as Record<string, unknown>;
  return NATIVE_FUNCTIONS.every((name) => typeof record[name] === "function");
}

export type AddonLoad = { addon: NativeAddon; path: string } | { addon: null; reason: string };

let loaded: AddonLoad | undefined;

/** What to do when a build is here but does not load or does not fit. */
const REBUILD = "rebuild it on this machine: `npm rebuild @blocksparse/backend-cpu` (in this workspace: `pnpm build`), which needs a C++17 compiler and CMake";

/** Loads the addon once (the result, success or reason, is kept). */
export function loadAddon(): AddonLoad {
  loaded ??= loadAddonFrom(addonCandidates());
  return loaded;
}

/** The first of `candidates` that loads as the addon, else the one-line reason none did (nothing kept). */
export function loadAddonFrom(candidates: readonly string[]): AddonLoad {
  const present = candidates.filter((path) => existsSync(path));
  if (present.length === 0) {
    return {
      addon: null,
      reason: `the CPU addon is not built (looked for ${candidates.join(", ")}); it builds at install when a C++17 compiler and CMake are on PATH: install them, then run \`pnpm build\``,
    };
  }
  const require = createRequire(moduleFile());
  const errors: string[] = [];
  for (const path of present) {
    try {
      const module: unknown = require(path);
      if (!isNativeAddon(module)) {
        errors.push(`${path} is not a compatible build (missing functions); ${REBUILD}`);
        continue;
      }
      return { addon: module, path };
    } catch (error) {
      // dlopen's reason alone can mislead: a build for another CPU reads "cannot open shared object file: No such file".
      const cause = (error instanceof Error ? error.message : String(error)).replace(/\s*\n\s*/g, " ");
      errors.push(`${path} failed to load (${cause}): it may be built for another platform, CPU or Node.js, or need a newer C++ runtime; ${REBUILD}`);
    }
  }
  return { addon: null, reason: `the CPU addon could not be loaded: ${errors.join("; ")}` };
}

/** Whether the cpu backend can run here and, if not, the one-line reason. */
export function cpuAvailability(): { available: boolean; reason?: string } {
  const load = loadAddon();
  return load.addon === null ? { available: false, reason: load.reason } : { available: true };
}
