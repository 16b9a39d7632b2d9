import { IndexError, OutOfMemoryError, ShapeError, ValueError } from "@blocksparse/core";

/** Memory for a tensor or the native addon's packed operands could not be allocated (core's OutOfMemoryError, as js raises). */
export class CpuOutOfMemoryError extends OutOfMemoryError {
  override name = "CpuOutOfMemoryError";
}

function isNativeError(error: unknown): error is Error & { code: string } {
  return error instanceof Error && typeof (error as { code?: unknown }).code === "string";
}

/** Turns an error thrown by the addon into core's matching typed error; other errors pass through. */
export function translateNativeError(error: unknown): unknown {
  if (!isNativeError(error)) return error;
  switch (error.code) {
    case "ERR_CPU_SHAPE":
      return new ShapeError(`cpu: ${error.message}`);
    case "ERR_CPU_INDEX":
      return new IndexError(`cpu: ${error.message}`);
    case "ERR_CPU_INVALID_ARGUMENT":
      return new ValueError(`cpu: ${error.message}`);
    case "ERR_CPU_OUT_OF_MEMORY":
      return new CpuOutOfMemoryError(`cpu: ${error.message}`);
    default:
      return error;
  }
}
