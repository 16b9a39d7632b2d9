/**
 * The native float32 compute behind the cpu backend's product kernels: core's kernel layer (shapes,
 * batching, half widening) calls these instead of the js backend's TypeScript loops.
 */
import type { BsrPattern, ProductCompute } from "@blocksparse/core";
import { translateNativeError } from "./errors";
import type { NativeAddon, NativePattern } from "./native";

const nativePatterns = new WeakMap<BsrPattern, NativePattern>();

/** The pattern's sizes and index arrays (both orientations), built once per pattern. */
export function nativePattern(pattern: BsrPattern): NativePattern {
  let described = nativePatterns.get(pattern);
  if (described === undefined) {
    const [rows, cols] = pattern.shape;
    const [blockHeight, blockWidth] = pattern.blockShape;
    const { blockColPtr, blockRowIdx, valueIndex } = pattern.columnIndex;
    described = { rows, cols, blockHeight, blockWidth, blockRowPtr: pattern.blockRowPtr, blockColIdx: pattern.blockColIdx, blockColPtr, blockRowIdx, valueIndex };
    nativePatterns.set(pattern, described);
  }
  return described;
}

function native(call: () => void): void {
  try {
    call();
  } catch (error) {
    throw translateNativeError(error);
  }
}

/** ProductCompute over the addon. */
export function nativeCompute(addon: NativeAddon): ProductCompute {
  return {
    matmulF32: (a, aOffset, b, bOffset, c, cOffset, m, n, k, transposeA, transposeB) =>
      native(() => addon.matmul(a, aOffset, b, bOffset, c, cOffset, m, n, k, transposeA, transposeB)),
    bsrLinearF32: (x, values, bias, y, tokens, pattern) => native(() => addon.bsrLinear(x, values, bias, y, tokens, nativePattern(pattern))),
    bsrMatmulF32: (dy, values, dx, tokens, pattern) => native(() => addon.bsrMatmul(dy, values, dx, tokens, nativePattern(pattern))),
    sampledMatmulF32: (dy, x, dw, tokens, pattern) => native(() => addon.sampledMatmul(dy, x, dw, tokens, nativePattern(pattern))),
  };
}
