/**
 * Finds, loads and starts the native addon. Every failure becomes ONE message saying why CUDA is
 * unavailable here (not built, failed to load, no driver, no GPU) and how to fix it.
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type DeviceInfo, NATIVE_FUNCTIONS, type NativeAddon } from "./native";

const ADDON_FILE = "blocksparse_cuda.node";

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

/** The optional package that holds the prebuilt binary for this platform (npm installs only the matching one). */
export const PLATFORM_PACKAGE = `@blocksparse/backend-cuda-${process.platform}-${process.arch}`;

/** How an app builds the addon from source, for npm and for pnpm (which runs install scripts only once approved). */
export const BUILD_FROM_SOURCE =
  "to build it from source (needs an NVIDIA driver, the CUDA toolkit's nvcc and CMake >= 3.24): with npm, `npm rebuild @blocksparse/backend-cuda --foreground-scripts`; " +
  "with pnpm, `pnpm approve-builds` (approve @blocksparse/backend-cuda), then `pnpm rebuild @blocksparse/backend-cuda`";

export interface AddonCandidate {
  /** What it is, in words a user knows. */
  source: string;
  path: string | null;
}

function platformBinary(): string | null {
  try {
    const manifest = createRequire(moduleFile()).resolve(`${PLATFORM_PACKAGE}/package.json`);
    return join(dirname(manifest), ADDON_FILE);
  } catch {
    return null;
  }
}

/** Where the addon may be, in the order tried: the override, the prebuilt binary, then builds from source. */
export function addonCandidates(): AddonCandidate[] {
  const here = dirname(moduleFile()); // src/ in tests, dist/ when built
  const candidates: AddonCandidate[] = [];
  if (process.env.BLOCKSPARSE_CUDA_ADDON) candidates.push({ source: "BLOCKSPARSE_CUDA_ADDON", path: resolve(process.env.BLOCKSPARSE_CUDA_ADDON) });
  candidates.push({ source: `the prebuilt binary (${PLATFORM_PACKAGE})`, path: platformBinary() });
  candidates.push({ source: "a build from source at install", path: resolve(here, "../native", ADDON_FILE) });
  candidates.push({ source: "a build from source in this repository", path: resolve(here, "../../../kernels-cuda/build/Release", ADDON_FILE) });
  return candidates;
}

/** The addon's functions a loaded module lacks (all of them when it is not an object). */
function missingFunctions(value: unknown): readonly string[] {
  if (typeof value !== "object" || value === null) return NATIVE_FUNCTIONS;
  const record = value as Record<string, unknown>;
  return NATIVE_FUNCTIONS.filter((name) => typeof record[name] !== "function");
}

/** "a, b and 3 more": the first few names of a list, for a one-line message. */
function someNames(names: readonly string[]): string {
  const shown = names.slice(0, 3).join(", ");
  return names.length > 3 ? `${shown} and ${names.length - 3} more` : shown;
}

/** The candidate the user named: what it was asked for is what is reported when it fails, never skipped in silence. */
const OVERRIDE = "BLOCKSPARSE_CUDA_ADDON";

export type AddonLoad = { addon: NativeAddon; path: string } | { addon: null; reason: string };

let loaded: AddonLoad | undefined;

/**
 * Loads the first candidate that is present and loads as a compatible addon; when none does, one
 * reason that lists every failure (or says none is installed) and how to build from source.
 */
export function loadFirstAddon(candidates: AddonCandidate[]): AddonLoad {
  const present = candidates.filter((candidate): candidate is { source: string; path: string } => candidate.path !== null && existsSync(candidate.path));
  // A path the user set that names nothing (a typo, a build folder since cleaned) was dropped without a word: the
  // reason said only that the platform package was missing, or another binary loaded in its place.
  const override = candidates.find((candidate) => candidate.source === OVERRIDE && candidate.path !== null && !existsSync(candidate.path));
  const errors: string[] = override ? [`${OVERRIDE} names ${override.path}, which does not exist`] : [];
  if (present.length === 0) {
    const platform = process.platform === "linux" && process.arch === "x64" ? `${PLATFORM_PACKAGE} is not installed (an optional dependency: was it omitted?)` : `no prebuilt binary for ${process.platform}-${process.arch}`;
    const named = errors.length > 0 ? `${errors[0]}, ` : "";
    return { addon: null, reason: `the CUDA addon is not installed: ${named}${platform}, and it was not built from source; ${BUILD_FROM_SOURCE}` };
  }
  const require = createRequire(moduleFile());
  for (const { source, path } of present) {
    try {
      const module: unknown = require(path);
      const missing = missingFunctions(module);
      if (missing.length > 0) {
        errors.push(`${source} is not a compatible build (it lacks ${someNames(missing)}: built from other sources than this package's)`);
        continue;
      }
      if (errors.length > 0 && candidates.some((candidate) => candidate.source === OVERRIDE)) {
        process.emitWarning(`${errors.join("; ")}; loaded ${source} (${path}) instead`, { code: "BLOCKSPARSE_CUDA_ADDON" });
      }
      return { addon: module as NativeAddon, path };
    } catch (error) {
      errors.push(`${source} failed to load (${error instanceof Error ? error.message : String(error)})`);
    }
  }
  return { addon: null, reason: `the CUDA addon could not be loaded: ${errors.join("; ")}; reinstall @blocksparse/backend-cuda, or ${BUILD_FROM_SOURCE}` };
}

/** Loads the addon once (the result, success or reason, is kept). */
export function loadAddon(): AddonLoad {
  loaded ??= loadFirstAddon(addonCandidates());
  return loaded;
}

export type CudaStart = { addon: NativeAddon; device: DeviceInfo; path: string } | { addon: null; reason: string };

let started: CudaStart | undefined;

/**
 * The device BLOCKSPARSE_CUDA_DEVICE names (default 0; empty counts as unset), or why it names none: decimal digits
 * only (Number() read "0x1" as device 1, "1e1" as 10 and "  " as 0), and an index within int32 (2^32 would reach
 * CUDA wrapped, as device 0: another GPU than the one asked for).
 */
export function deviceIndexOf(text: string | undefined): number | string {
  if (text === undefined || text === "") return 0;
  const deviceIndex = /^\s*\d+\s*$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isInteger(deviceIndex) || deviceIndex > 2 ** 31 - 1) {
    return `BLOCKSPARSE_CUDA_DEVICE must be a device index, got '${text}'`;
  }
  return deviceIndex;
}

/**
 * Starts CUDA through a loaded addon on the device `deviceText` (BLOCKSPARSE_CUDA_DEVICE's value) names. A device the
 * addon refuses (past the GPUs there are) is reported with the variable that chose it, which CUDA's message cannot name.
 */
export function startOn(load: AddonLoad, deviceText: string | undefined): CudaStart {
  if (load.addon === null) return load;
  const deviceIndex = deviceIndexOf(deviceText);
  if (typeof deviceIndex === "string") return { addon: null, reason: deviceIndex };
  try {
    const device = load.addon.init(deviceIndex);
    return { addon: load.addon, device, path: load.path };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const chosen = deviceText === undefined || deviceText === "" ? "" : `BLOCKSPARSE_CUDA_DEVICE=${deviceText.trim()}: `;
    return { addon: null, reason: `${chosen}${message}` };
  }
}

/** Loads the addon and starts CUDA on the device (BLOCKSPARSE_CUDA_DEVICE, default 0), once. */
export function startCuda(): CudaStart {
  started ??= startOn(loadAddon(), process.env.BLOCKSPARSE_CUDA_DEVICE);
  return started;
}

/** Whether the CUDA backend can run here and, if not, the one-line reason. Starts CUDA on first call. */
export function cudaAvailability(): { available: boolean; reason?: string; device?: DeviceInfo } {
  const start = startCuda();
  return start.addon === null ? { available: false, reason: start.reason } : { available: true, device: start.device };
}
