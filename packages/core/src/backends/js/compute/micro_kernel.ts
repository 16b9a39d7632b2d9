/**
 * The register-blocked inner kernel every product in this folder runs on, and the packer
 * that lays operands out for it. V8 does not vectorize, so speed comes from keeping a 4x4
 * tile of the output in 16 local doubles while streaming two packed float64 panels: 8
 * loads per 32 flops, no float32 conversions and no bounds-varying strides in the loop.
 */

/** Rows of the output tile: the A panel interleaves this many rows per K step. */
export const TILE_ROWS = 4;
/** Columns of the output tile: the B panel interleaves this many columns per K step. */
export const TILE_COLS = 4;

/**
 * tile[4 * i + j] = sum over the K steps of a_i * b_j: a 4x4 product of two packed panels.
 *
 * A panel: 4 values per K step. The K steps come in `segmentCount` runs of
 * `segmentLength` steps, run q starting at `aBase + aSegmentOffsets[q]`, so a block-sparse
 * product gathers its blocks without copying them. B panel: 4 values per K step,
 * contiguous from `bOffset` across all runs. Panels are zero-padded to full tiles.
 */
export function microKernel4x4(
  a: Float64Array,
  aBase: number,
  aSegmentOffsets: Int32Array,
  segmentCount: number,
  segmentLength: number,
  b: Float64Array,
  bOffset: number,
  tile: Float64Array,
): void {
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0;
  let c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  let c20 = 0, c21 = 0, c22 = 0, c23 = 0;
  let c30 = 0, c31 = 0, c32 = 0, c33 = 0;
  // One induction variable per run: the B index rides on the A index (measured ~10% faster).
  let bShift = bOffset;
  for (let q = 0; q < segmentCount; q++) {
    const start = aBase + aSegmentOffsets[q];
    const end = start + 4 * segmentLength;
    bShift -= start;
    for (let ao = start; ao < end; ao += 4) {
      const bo = ao + bShift;
      const a0 = a[ao], a1 = a[ao + 1], a2 = a[ao + 2], a3 = a[ao + 3];
      const b0 = b[bo], b1 = b[bo + 1], b2 = b[bo + 2], b3 = b[bo + 3];
      c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
      c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
      c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
      c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
    }
    bShift += end;
  }
  tile[0] = c00; tile[1] = c01; tile[2] = c02; tile[3] = c03;
  tile[4] = c10; tile[5] = c11; tile[6] = c12; tile[7] = c13;
  tile[8] = c20; tile[9] = c21; tile[10] = c22; tile[11] = c23;
  tile[12] = c30; tile[13] = c31; tile[14] = c32; tile[15] = c33;
}

/** out[outOffset + i * ldOut + j] (+)= tile[4 * i + j] for i < rows, j < cols (both <= 4). */
export function storeTile(tile: Float64Array, out: Float32Array, outOffset: number, ldOut: number, rows: number, cols: number, accumulate: boolean): void {
  for (let i = 0, o = outOffset; i < rows; i++, o += ldOut) {
    const t = 4 * i;
    if (accumulate) for (let j = 0; j < cols; j++) out[o + j] += tile[t + j];
    else for (let j = 0; j < cols; j++) out[o + j] = tile[t + j];
  }
}

/**
 * Packs `count` lines of `depth` elements, element (i, p) at src[srcOffset + i * lineStride
 * + p * step], into ceil(count / 4) panels of depth x 4 float64 (line-interleaved), zero
 * padding the last panel. Returns the offset just past what it wrote.
 */
export function packPanels(
  src: Float32Array,
  srcOffset: number,
  lineStride: number,
  step: number,
  count: number,
  depth: number,
  dst: Float64Array,
  dstOffset: number,
): number {
  let d = dstOffset;
  for (let i0 = 0; i0 < count; i0 += 4) {
    const s0 = srcOffset + i0 * lineStride;
    const lines = count - i0;
    if (lines >= 4) {
      const s1 = s0 + lineStride, s2 = s1 + lineStride, s3 = s2 + lineStride;
      for (let p = 0, o = 0; p < depth; p++, o += step) {
        dst[d] = src[s0 + o];
        dst[d + 1] = src[s1 + o];
        dst[d + 2] = src[s2 + o];
        dst[d + 3] = src[s3 + o];
        d += 4;
      }
    } else {
      for (let p = 0, o = 0; p < depth; p++, o += step) {
        for (let ii = 0; ii < 4; ii++) dst[d + ii] = ii < lines ? src[s0 + ii * lineStride + o] : 0;
        d += 4;
      }
    }
  }
  return d;
}

/** Length of the panels packPanels writes for `count` lines of `depth`. */
export function panelLength(count: number, depth: number): number {
  return Math.ceil(count / 4) * 4 * depth;
}
