/**
 * The CUDA backend for @blocksparse/core. Importing this package registers the `cuda` backend at
 * priority 10 (above `js`): the same model code then runs on the GPU. When CUDA cannot run here (addon
 * not built, no driver, no GPU), the engine warns once with the reason and stays on `js`.
 */
import { getBackendInstance, registerBackend } from "@blocksparse/core";
import { CudaBackend } from "./backend";

export const version = "0.1.0";

/** The priority `cuda` is registered at (`js` has 1). */
export const CUDA_PRIORITY = 10;

registerBackend("cuda", () => new CudaBackend(), CUDA_PRIORITY);

/** The started cuda backend (throws a BackendError with the reason when CUDA is unavailable). */
export function cudaBackend(): CudaBackend {
  return getBackendInstance("cuda") as CudaBackend;
}

export { CudaBackend, CudaBuffer, type CudaMemory, DENSE_SAMPLED_MODES, type DenseSampledMode } from "./backend";
export { CudaError, CudaOutOfMemoryError } from "./errors";
export { addonCandidates, cudaAvailability } from "./loader";
export { AUTOTUNE_CACHE_FORMAT, AutotuneCacheError } from "./autotune_cache";
export type { AutotuneChoice, AutotuneRecord, BuildInfo, CommunicatorHandle, DeviceInfo, NativeAddon, NcclInfo, NcclReduceOpCode } from "./native";
export { DTYPE_CODE, NATIVE_FUNCTIONS, NcclReduceOp } from "./native";
export { allowTf32, setAllowTf32 } from "./tf32";
