/**
 * The native float32 compute behind the cpu backend's product kernels: core's kernel layer (shapes,
 * batching, half widening) calls these instead of the js backend's TypeScript loops. The arguments
 * are the js compute functions' own; offsets become zero-copy subarrays.
 */
import { type ProductCompute, ShapeError, ValueError } from "@blocksparse/core";
import { translateNativeError } from "./errors";
import type { NativeAddon } from "./native";

function native(call: () => void): void {
  try {
    call();
  } catch (error) {
    throw translateNativeError(error);
  }
}

/**
 * The array from `offset` on (no copy); a ShapeError for an offset that is not a non-negative integer (subarray would
 * read -1 as the last element) or is past the array's end (subarray would give an empty view, reported as an empty array).
 */
function from(fn: string, name: string, array: Float32Array, offset = 0): Float32Array {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new ShapeError(`cpu: ${fn}: ${name}Offset must be a non-negative integer, got ${offset}`);
  if (offset > array.length) throw new ShapeError(`cpu: ${fn}: ${name}Offset ${offset} is past the end of ${name} (${array.length} elements)`);
  return offset === 0 ? array : array.subarray(offset);
}

/** The kernel layer never asks for these; a direct caller gets a clear error, not a wrong answer. */
function unsupported(fn: string, what: string): never {
  throw new ValueError(`cpu: ${fn} runs natively without ${what}; use the js compute functions for it`);
}

/** ProductCompute over the addon. */
export function nativeCompute(addon: NativeAddon): ProductCompute {
  return {
    matmulF32: (args) => {
      const { a, b, c, m, n, k, aOffset = 0, bOffset = 0, cOffset = 0, batch = 1 } = args;
      if (args.accumulate) unsupported("matmulF32", "accumulate");
      if (batch !== 1) unsupported("matmulF32", "batch");
      native(() => addon.matmul(a, aOffset, b, bOffset, c, cOffset, m, n, k, args.transposeA ?? false, args.transposeB ?? false));
    },
    bsrLinearF32: (args) =>
      native(() =>
        addon.bsrLinear(
          from("bsrLinearF32", "x", args.x, args.xOffset),
          from("bsrLinearF32", "values", args.values, args.valuesOffset),
          args.bias ? from("bsrLinearF32", "bias", args.bias, args.biasOffset) : null,
          from("bsrLinearF32", "y", args.y, args.yOffset),
          args.tokens,
          args,
        ),
      ),
    bsrMatmulF32: (args) => {
      const fn = "bsrMatmulF32";
      if (args.accumulate) unsupported(fn, "accumulate");
      native(() => addon.bsrMatmul(from(fn, "dy", args.dy, args.dyOffset), from(fn, "values", args.values, args.valuesOffset), from(fn, "dx", args.dx, args.dxOffset), args.tokens, args));
    },
    sampledMatmulF32: (args) => {
      const fn = "sampledMatmulF32";
      if (args.accumulate) unsupported(fn, "accumulate");
      native(() => addon.sampledMatmul(from(fn, "dy", args.dy, args.dyOffset), from(fn, "x", args.x, args.xOffset), from(fn, "dw", args.dw, args.dwOffset), args.tokens, args));
    },
  };
}
