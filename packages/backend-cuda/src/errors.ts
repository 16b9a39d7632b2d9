import { BackendError, ValueError } from "@blocksparse/core";

/** A CUDA runtime or cuBLAS call, or a kernel launch, failed; the message names the call and CUDA's reason. */
export class CudaError extends BackendError {
  override name = "CudaError";
}

/** The device ran out of memory even after the allocator released its cache and retried. Catchable. */
export class CudaOutOfMemoryError extends CudaError {
  override name = "CudaOutOfMemoryError";
}

function isNativeError(error: unknown): error is Error & { code: string } {
  return error instanceof Error && typeof (error as { code?: unknown }).code === "string";
}

/** Turns an error thrown by the addon into the matching typed error; other errors pass through. */
export function translateNativeError(error: unknown): unknown {
  if (!isNativeError(error)) return error;
  switch (error.code) {
    case "ERR_CUDA_OUT_OF_MEMORY":
      return new CudaOutOfMemoryError(`cuda: ${error.message}`);
    case "ERR_CUDA_INVALID_ARGUMENT":
      return new ValueError(`cuda: ${error.message}`);
    case "ERR_CUDA":
      return new CudaError(`cuda: ${error.message}`);
    default:
      return error;
  }
}
