import { BackendError, IndexError, OutOfMemoryError, ValueError } from "@blocksparse/core";
import { describe, expect, test } from "vitest";
import { CudaError, CudaOutOfMemoryError } from "../src/index";
import { translateNativeError } from "../src/errors";

/** An error as the addon throws it: a message and a code. */
function nativeError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

// No GPU needed: the addon's error codes turned into the package's typed errors.
describe("typed errors from the addon's codes", () => {
  test("out of memory is core's OutOfMemoryError and a CudaError, as every backend's allocation failure is the former", () => {
    const error = translateNativeError(nativeError("ERR_CUDA_OUT_OF_MEMORY", "cudaMalloc of 1.0 TiB failed"));
    expect(error).toBeInstanceOf(CudaOutOfMemoryError);
    expect(error).toBeInstanceOf(OutOfMemoryError);
    expect(error).toBeInstanceOf(CudaError);
    expect(error).toBeInstanceOf(BackendError);
    expect((error as Error).name).toBe("CudaOutOfMemoryError");
    expect((error as Error).message).toBe("cuda: cudaMalloc of 1.0 TiB failed");
  });

  test("the other codes: CudaError (not out of memory), ValueError, IndexError; anything else passes through", () => {
    const failed = translateNativeError(nativeError("ERR_CUDA", "cudaMemcpy: an illegal memory access"));
    expect(failed).toBeInstanceOf(CudaError);
    expect(failed).not.toBeInstanceOf(OutOfMemoryError);
    expect(failed).not.toBeInstanceOf(CudaOutOfMemoryError);
    expect(translateNativeError(nativeError("ERR_CUDA_INVALID_ARGUMENT", "bad stride"))).toBeInstanceOf(ValueError);
    const index = translateNativeError(nativeError("ERR_CUDA_INDEX", "gather: index 9 at position 1 is out of range [0, 3)"));
    expect(index).toBeInstanceOf(IndexError);
    expect((index as Error).message).toBe("cuda: gather: index 9 at position 1 is out of range [0, 3)");
    const other = new TypeError("not from the addon");
    expect(translateNativeError(other)).toBe(other);
    // An OutOfMemoryError from another backend is not a CudaError.
    expect(new OutOfMemoryError("js: out of memory")).not.toBeInstanceOf(CudaError);
    expect(new CudaError("x")).not.toBeInstanceOf(OutOfMemoryError);
  });
});
