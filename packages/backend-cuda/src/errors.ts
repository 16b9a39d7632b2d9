import { BackendError, IndexError, OutOfMemoryError, ValueError } from "@blocksparse/core";

/**
 * A CUDA runtime or cuBLAS call, or a kernel launch, failed; the message names the call and CUDA's reason. A
 * CudaOutOfMemoryError is one too (`instanceof CudaError` holds for it), though its class extends core's
 * OutOfMemoryError.
 */
export class CudaError extends BackendError {
  override name = "CudaError";

  // `this` is the class on the right of `instanceof` (CudaError or a subclass): only CudaError itself also takes the
  // out-of-memory error.
  static override [Symbol.hasInstance](value: unknown): boolean {
    // biome-ignore lint/complexity/noThisInStatic: the subclass that `instanceof` names, which the class name is not
    return Function.prototype[Symbol.hasInstance].call(this, value) || (this === CudaError && value instanceof CudaOutOfMemoryError);
  }
}

/**
 * The device ran out of memory even after the allocator released its cache and retried. Catchable, as core's
 * OutOfMemoryError (what every backend throws when an allocation fails) and as a CudaError.
 */
export class CudaOutOfMemoryError extends OutOfMemoryError {
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
    // An index a kernel found out of range (gather, scatterAdd, indexCopy, a cross-entropy target), reported by the
    // first read or synchronize after it.
    case "ERR_CUDA_INDEX":
      return new IndexError(`cuda: ${error.message}`);
    case "ERR_CUDA":
      return new CudaError(`cuda: ${error.message}`);
    default:
      return error;
  }
}
