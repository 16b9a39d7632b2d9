/**
 * Finds, loads and starts the native addon. Every failure becomes ONE message saying why CUDA is
 * unavailable here (not built, failed to load, no driver, no GPU) and how to fix it.
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type DeviceInfo, NATIVE_FUNCTIONS, type NativeAddon } from "./native";

const ADDON_FILE = "blocksparse_cuda.node";

/** Where the addon may be, in the order tried. */
export function addonCandidates(): string[] {
  const here = dirname(fileURLToPath(import.meta.url)); // src/ in tests, dist/ when built
  const candidates: string[] = [];
  if (process.env.BLOCKSPARSE_CUDA_ADDON) candidates.push(resolve(process.env.BLOCKSPARSE_CUDA_ADDON));
  candidates.push(resolve(here, "../../../kernels-cuda/build/Release", ADDON_FILE));
  candidates.push(resolve(here, "../native/build/Release", ADDON_FILE)); // a published package builds here
  return candidates;
}

function nvccOnPath(): boolean {
  const dirs = (process.env.PATH ?? "").split(delimiter).filter(Boolean);
  return [...dirs, "/usr/local/cuda/bin"].some((dir) => existsSync(join(dir, "nvcc")));
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
    const why = nvccOnPath()
      ? "nvcc is on PATH: run `pnpm build` (or `pnpm install`) to build it, and read the build output if it fails"
      : "nvcc was not found when it was installed: install the CUDA toolkit (nvcc, CMake >= 3.24), then run `pnpm build`";
    loaded = { addon: null, reason: `the CUDA addon is not built (looked for ${candidates.join(", ")}); ${why}` };
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
  loaded = { addon: null, reason: `the CUDA addon could not be loaded: ${errors.join("; ")}` };
  return loaded;
}

export type CudaStart = { addon: NativeAddon; device: DeviceInfo; path: string } | { addon: null; reason: string };

let started: CudaStart | undefined;

/** Loads the addon and starts CUDA on the device (BLOCKSPARSE_CUDA_DEVICE, default 0), once. */
export function startCuda(): CudaStart {
  if (started) return started;
  const load = loadAddon();
  if (load.addon === null) {
    started = load;
    return started;
  }
  const deviceText = process.env.BLOCKSPARSE_CUDA_DEVICE ?? "0";
  const deviceIndex = Number(deviceText);
  if (!Number.isInteger(deviceIndex) || deviceIndex < 0) {
    started = { addon: null, reason: `BLOCKSPARSE_CUDA_DEVICE must be a device index, got '${deviceText}'` };
    return started;
  }
  try {
    const device = load.addon.init(deviceIndex);
    started = { addon: load.addon, device, path: load.path };
  } catch (error) {
    started = { addon: null, reason: error instanceof Error ? error.message : String(error) };
  }
  return started;
}

/** Whether the CUDA backend can run here and, if not, the one-line reason. Starts CUDA on first call. */
export function cudaAvailability(): { available: boolean; reason?: string; device?: DeviceInfo } {
  const start = startCuda();
  return start.addon === null ? { available: false, reason: start.reason } : { available: true, device: start.device };
}
