/**
 * The native CPU backend for @blocksparse/core. Importing this package registers the `cpu` backend at
 * priority 5 (above `js`, below `cuda`): dense and block-sparse products then run on SIMD
 * micro-kernels and every core of the machine. When the addon is not built (no C++ compiler at
 * install), the engine warns once with the reason and stays on `js`.
 */
import { getBackendInstance, registerBackend } from "@blocksparse/core";
import { CpuBackend } from "./backend";

export const version = "0.1.0";

/** The priority `cpu` is registered at (`js` has 1, `cuda` 10). */
export const CPU_PRIORITY = 5;

registerBackend("cpu", () => new CpuBackend(), CPU_PRIORITY);

/** The started cpu backend (throws a BackendError with the reason when the addon is unavailable). */
export function cpuBackend(): CpuBackend {
  return getBackendInstance("cpu") as CpuBackend;
}

export { CpuBackend, type CpuMemory } from "./backend";
export { BufferCache, type BufferCacheStats, DEFAULT_CACHE_LIMIT_BYTES, sizeClass } from "./buffer_cache";
export { nativeCompute } from "./compute";
export { CpuOutOfMemoryError } from "./errors";
export { addonCandidates, cpuAvailability } from "./loader";
export type { BuildInfo, NativeAddon, NativeBsrSizes, NativeColumnIndex, NativeIsa, NativeRowIndex } from "./native";
export { cpuIsa, cpuThreads, defaultCpuThreads, setCpuIsa, setCpuThreads } from "./settings";
