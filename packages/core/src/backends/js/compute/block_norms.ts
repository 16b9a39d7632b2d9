import { checkDims, checkSpan } from "./validate";

/** Arguments of {@link blockNormsF32}; offsets count elements. */
export interface BlockNormsArgs {
  /** blockCount blocks of blockSize contiguous values. */
  values: Float32Array;
  /** [blockCount]; written fully. */
  norms: Float32Array;
  blockCount: number;
  /** Elements per block (R * C). */
  blockSize: number;
  valuesOffset?: number;
  normsOffset?: number;
}

/** norms[k] = ||block k||_2, summed in float64. */
export function blockNormsF32(args: BlockNormsArgs): void {
  const fn = "blockNormsF32";
  const { values, norms, blockCount, blockSize } = args;
  const valuesOffset = args.valuesOffset ?? 0;
  const normsOffset = args.normsOffset ?? 0;
  checkDims(fn, { blockCount, blockSize, valuesOffset, normsOffset });
  checkSpan(fn, "values", values, valuesOffset, 1, 0, blockCount * blockSize);
  checkSpan(fn, "norms", norms, normsOffset, 1, 0, blockCount);
  for (let k = 0; k < blockCount; k++) {
    const start = valuesOffset + k * blockSize;
    const end = start + blockSize;
    // Four partial sums keep four independent add chains in flight.
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    let i = start;
    for (; i + 3 < end; i += 4) {
      const v0 = values[i], v1 = values[i + 1], v2 = values[i + 2], v3 = values[i + 3];
      s0 += v0 * v0; s1 += v1 * v1; s2 += v2 * v2; s3 += v3 * v3;
    }
    for (; i < end; i++) s0 += values[i] * values[i];
    norms[normsOffset + k] = Math.sqrt(s0 + s1 + s2 + s3);
  }
}
