/**
 * The native float32 compute behind the cpu backend's product kernels: core's kernel layer (shapes,
 * batching, half widening) calls these instead of the js backend's TypeScript loops. The arguments
 * are the js compute functions' own; offsets become zero-copy subarrays.
 */
import { type ProductCompute, ValueError } from "@blocksparse/core";
import { translateNativeError } from "./errors";
import type { NativeAddon } from "./native";

function native(call: () => void): void {
  try {
    call();
  } catch (error) {
    throw translateNativeError(error);
  }
}

/** The array from `offset` on (no copy). */
function from(array: Float32Array, offset = 0): Float32Array {
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
          from(args.x, args.xOffset),
          from(args.values, args.valuesOffset),
          args.bias ? from(args.bias, args.biasOffset) : null,
          from(args.y, args.yOffset),
          args.tokens,
          args,
        ),
      ),
    bsrMatmulF32: (args) => {
      if (args.accumulate) unsupported("bsrMatmulF32", "accumulate");
      native(() => addon.bsrMatmul(from(args.dy, args.dyOffset), from(args.values, args.valuesOffset), from(args.dx, args.dxOffset), args.tokens, args));
    },
    sampledMatmulF32: (args) => {
      if (args.accumulate) unsupported("sampledMatmulF32", "accumulate");
      native(() => addon.sampledMatmul(from(args.dy, args.dyOffset), from(args.x, args.xOffset), from(args.dw, args.dwOffset), args.tokens, args));
    },
  };
}
