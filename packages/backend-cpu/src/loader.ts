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

/** Where the addon may be, in the order tried. */
export function addonCandidates(): string[] {
  const here = dirname(fileURLToPath(import.meta.url)); // src/ in tests, dist/ when built
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

/** Loads the addon once (the result, success or reason, is kept). */
export function loadAddon(): AddonLoad {
  if (loaded) return loaded;
  const candidates = addonCandidates();
  const present = candidates.filter((path) => existsSync(path));
  if (present.length === 0) {
    loaded = {
      addon: null,
      reason: `the CPU addon is not built (looked for ${candidates.join(", ")}); it builds at install when a C++17 compiler and CMake are on PATH: install them, then run \`pnpm build\``,
    };
    return loaded;
  }
  const require = createRequire(import.meta.url);
  const errors: string[] = [];
  for (const path of present) {
    try {
      const module: unknown = require(path);
      if (!isNativeAddon(module)) {
        errors.push(`${path} is not a compatible build (missing functions); rebuild it with \`pnpm build\``);
        continue;
      }
      loaded = { addon: module, path };
      return loaded;
    } catch (error) {
      errors.push(`${path} failed to load: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  loaded = { addon: null, reason: `the CPU addon could not be loaded: ${errors.join("; ")}` };
  return loaded;
}

/** Whether the cpu backend can run here and, if not, the one-line reason. */
export function cpuAvailability(): { available: boolean; reason?: string } {
  const load = loadAddon();
  return load.addon === null ? { available: false, reason: load.reason } : { available: true };
}
