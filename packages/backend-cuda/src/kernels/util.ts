import { ValueError } from "@blocksparse/core";

/** The rank the native strided kernels accept (kernels-cuda/src/ops.h kMaxRank). */
export const MAX_NATIVE_RANK = 8;

/**
 * Drops size-1 dims and merges neighbouring dims that every operand walks contiguously, so that the
 * native kernels index fewer dims (at most 8). The iteration order is unchanged.
 */
export function collapseDims(
  shape: readonly number[],
  strides: readonly (readonly number[])[],
): { shape: number[]; strides: number[][] } {
  const outShape: number[] = [];
  const outStrides = strides.map(() => [] as number[]);
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    const last = outShape.length - 1;
    if (last >= 0 && strides.every((s, k) => outStrides[k][last] === s[d] * shape[d])) {
      outShape[last] *= shape[d];
      strides.forEach((s, k) => {
        outStrides[k][last] = s[d];
      });
    } else {
      outShape.push(shape[d]);
      strides.forEach((s, k) => {
        outStrides[k].push(s[d]);
      });
    }
  }
  if (outShape.length > MAX_NATIVE_RANK) {
    throw new ValueError(`cuda: this strided access needs ${outShape.length} dims after merging; at most ${MAX_NATIVE_RANK} are supported`);
  }
  return { shape: outShape, strides: outStrides };
}
