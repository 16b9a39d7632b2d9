/**
 * The native float32 compute behind the cpu backend's product kernels: core's kernel layer (shapes,
 * batching, half widening) calls these instead of the js backend's TypeScript loops. The arguments
 * are the js compute functions' own; offsets pass through to the addon, which checks each span from its offset.
 */
import { type ProductCompute, ShapeError, ValueError } from "@blocksparse/core";
import type { AttentionHeadsCompute, AttentionRowCompute, CachedAttentionCompute } from "./attention";
import { translateNativeError } from "./errors";
import type { NativeAddon } from "./native";

/** Runs an addon call, its errors turned into core's typed errors. */
export function native(call: () => void): void {
  try {
    call();
  } catch (error) {
    throw translateNativeError(error);
  }
}

/**
 * `offset`, checked: a ShapeError for one that is not a non-negative integer, or is past the array's end (the addon
 * checks the span it reads from there, and reports the array's whole length).
 */
function offsetOf(fn: string, name: string, array: Float32Array | Uint16Array, offset = 0): number {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new ShapeError(`cpu: ${fn}: ${name}Offset must be a non-negative integer, got ${offset}`);
  if (offset > array.length) throw new ShapeError(`cpu: ${fn}: ${name}Offset ${offset} is past the end of ${name} (${array.length} elements)`);
  return offset;
}

/** bsrLinear's operands and their checked offsets (float32 or half values). */
function linearOperands<V extends Float32Array | Uint16Array>(
  fn: string,
  args: { x: Float32Array; values: V; bias?: Float32Array | null; y: Float32Array; xOffset?: number; valuesOffset?: number; biasOffset?: number; yOffset?: number },
) {
  const { x, values, y } = args;
  const bias = args.bias ?? null;
  return {
    x,
    values,
    bias,
    y,
    xOffset: offsetOf(fn, "x", x, args.xOffset),
    valuesOffset: offsetOf(fn, "values", values, args.valuesOffset),
    biasOffset: bias ? offsetOf(fn, "bias", bias, args.biasOffset) : 0,
    yOffset: offsetOf(fn, "y", y, args.yOffset),
  };
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
    bsrLinearF32: (args) => {
      const { x, values, bias, y, xOffset, valuesOffset, biasOffset, yOffset } = linearOperands("bsrLinearF32", args);
      native(() => addon.bsrLinear(x, xOffset, values, valuesOffset, bias, biasOffset, y, yOffset, args.tokens, args));
    },
    linearHalf: ({ x, weight, bfloat16, y, m, n, k }) => native(() => addon.linearHalf(x, 0, weight, 0, bfloat16, y, 0, m, n, k)),
    bsrLinearHalf: (args) => {
      const { x, values, bias, y, xOffset, valuesOffset, biasOffset, yOffset } = linearOperands("bsrLinearHalf", args);
      native(() => addon.bsrLinearHalf(x, xOffset, values, valuesOffset, args.bfloat16, bias, biasOffset, y, yOffset, args.tokens, args));
    },
    bsrMatmulF32: (args) => {
      const fn = "bsrMatmulF32";
      if (args.accumulate) unsupported(fn, "accumulate");
      const { dy, values, dx } = args;
      const dyOffset = offsetOf(fn, "dy", dy, args.dyOffset);
      const valuesOffset = offsetOf(fn, "values", values, args.valuesOffset);
      const dxOffset = offsetOf(fn, "dx", dx, args.dxOffset);
      native(() => addon.bsrMatmul(dy, dyOffset, values, valuesOffset, dx, dxOffset, args.tokens, args));
    },
    sampledMatmulF32: (args) => {
      const fn = "sampledMatmulF32";
      if (args.accumulate) unsupported(fn, "accumulate");
      const { dy, x, dw } = args;
      const dyOffset = offsetOf(fn, "dy", dy, args.dyOffset);
      const xOffset = offsetOf(fn, "x", x, args.xOffset);
      const dwOffset = offsetOf(fn, "dw", dw, args.dwOffset);
      native(() => addon.sampledMatmul(dy, dyOffset, x, xOffset, dw, dwOffset, args.tokens, args));
    },
  };
}

/** Attention's row steps (softmax, dS) over the addon. */
/** Attention over all of a call's heads in the addon (attentionForward, attentionBackward). */
export function nativeAttentionHeads(addon: NativeAddon): AttentionHeadsCompute {
  return {
    forward: (q, k, v, out, lse, exact, { heads, m, n, d }, scale, causal, blockRows) =>
      native(() => addon.attentionForward(q, 0, k, 0, v, 0, out, 0, lse, 0, exact, heads, m, n, d, causal, scale, blockRows)),
    backward: (dout, q, k, v, out, [dq, dk, dv], exact, { heads, m, n, d }, scale, causal, blockRows) =>
      native(() => addon.attentionBackward(dout, 0, q, 0, k, 0, v, 0, out, 0, dq, 0, dk, 0, dv, 0, exact, heads, m, n, d, causal, scale, blockRows)),
    packedForward: (qkv, out, lse, exact, { sequences, t, h, d }, scale, causal, blockRows) =>
      native(() => addon.packedAttentionForward(qkv, 0, out, 0, lse, 0, exact, sequences, t, h, d, causal, scale, blockRows)),
    packedBackward: (dout, qkv, out, dqkv, exact, { sequences, t, h, d }, scale, causal, blockRows) =>
      native(() => addon.packedAttentionBackward(dout, 0, qkv, 0, out, 0, dqkv, 0, exact, sequences, t, h, d, causal, scale, blockRows)),
  };
}

/** CachedAttention's rows in the addon. */
export function nativeCachedAttention(addon: NativeAddon): CachedAttentionCompute {
  return (q, k, v, positions, out, { heads, m, n, d }, scale) => native(() => addon.cachedAttention(q, 0, k, 0, v, 0, positions, out, 0, heads, m, n, d, scale));
}

export function nativeAttentionRows(addon: NativeAddon): AttentionRowCompute {
  return {
    softmax: (s, lse, lseOffset, flags, rows, n, first, m, causal, scale) =>
      native(() => addon.attentionSoftmax(s, 0, lse, lseOffset, flags, rows, n, first, m, causal, scale)),
    scoreGradients: (p, ds, shift, flags, rows, n, first, m, causal, scale) =>
      native(() => addon.attentionScoreGradients(p, 0, ds, 0, flags, rows, n, first, m, causal, scale, shift)),
  };
}
