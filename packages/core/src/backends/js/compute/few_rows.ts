/**
 * Products with only a few rows of output (one to three tokens, a vector times a matrix).
 * There the 4x4 tiles would mostly multiply padding and packing would cost as much as the
 * product, so these loops read the float32 operands in place, four lines per sweep.
 */

/** Below this many tokens the block-sparse products take the loops in this file. */
export const FEW_ROWS = 4;

/**
 * C (m x n, m small) = op(A) B or op(A) B^T for one product of a batch. aRow (k) and cRow (n) are
 * float64 scratch; op(A)(i, p) = a[aBase + i * aRowStride + p * aStep].
 */
export function matmulFewRows(
  a: Float32Array,
  aBase: number,
  aRowStride: number,
  aStep: number,
  b: Float32Array,
  bBase: number,
  transposeB: boolean,
  c: Float32Array,
  cBase: number,
  m: number,
  n: number,
  k: number,
  accumulate: boolean,
  aRow: Float64Array,
  cRow: Float64Array,
): void {
  for (let i = 0; i < m; i++) {
    for (let p = 0, o = aBase + i * aRowStride; p < k; p++, o += aStep) aRow[p] = a[o];
    const cAt = cBase + i * n;
    if (transposeB) {
      // C(i, j) = dot(op(A) row i, row j of B): four rows of B per sweep.
      let j = 0;
      for (; j + 3 < n; j += 4) {
        const b0 = bBase + j * k, b1 = b0 + k, b2 = b1 + k, b3 = b2 + k;
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (let p = 0; p < k; p++) {
          const x = aRow[p];
          s0 += x * b[b0 + p]; s1 += x * b[b1 + p]; s2 += x * b[b2 + p]; s3 += x * b[b3 + p];
        }
        cRow[j] = s0; cRow[j + 1] = s1; cRow[j + 2] = s2; cRow[j + 3] = s3;
      }
      for (; j < n; j++) {
        const b0 = bBase + j * k;
        let s0 = 0;
        for (let p = 0; p < k; p++) s0 += aRow[p] * b[b0 + p];
        cRow[j] = s0;
      }
    } else {
      // C row i = sum over p of op(A)(i, p) times row p of B: four rows of B per sweep.
      cRow.fill(0, 0, n);
      let p = 0;
      for (; p + 3 < k; p += 4) {
        const x0 = aRow[p], x1 = aRow[p + 1], x2 = aRow[p + 2], x3 = aRow[p + 3];
        const b0 = bBase + p * n, b1 = b0 + n, b2 = b1 + n, b3 = b2 + n;
        for (let j = 0; j < n; j++) cRow[j] += x0 * b[b0 + j] + x1 * b[b1 + j] + x2 * b[b2 + j] + x3 * b[b3 + j];
      }
      for (; p < k; p++) {
        const x0 = aRow[p];
        const b0 = bBase + p * n;
        for (let j = 0; j < n; j++) cRow[j] += x0 * b[b0 + j];
      }
    }
    if (accumulate) for (let j = 0; j < n; j++) c[cAt + j] += cRow[j];
    else for (let j = 0; j < n; j++) c[cAt + j] = cRow[j];
  }
}

/**
 * One token of Y = X W^T (+ bias): each output row is the dot product of a row of W's
 * blocks with the matching segments of x, four rows of a block row per sweep.
 */
export function bsrLinearOneToken(
  x: Float32Array,
  xAt: number,
  values: Float32Array,
  valuesOffset: number,
  bias: Float32Array | null,
  biasOffset: number,
  y: Float32Array,
  yAt: number,
  blockRows: number,
  R: number,
  C: number,
  blockRowPtr: Int32Array,
  blockColIdx: Int32Array,
): void {
  for (let br = 0; br < blockRows; br++) {
    const first = blockRowPtr[br];
    const last = blockRowPtr[br + 1];
    for (let r0 = 0; r0 < R; r0 += 4) {
      const lines = Math.min(4, R - r0);
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let q = first; q < last; q++) {
        const xo = xAt + blockColIdx[q] * C;
        const w0 = valuesOffset + (q * R + r0) * C;
        if (lines === 4) {
          const w1 = w0 + C, w2 = w1 + C, w3 = w2 + C;
          for (let c = 0; c < C; c++) {
            const v = x[xo + c];
            s0 += values[w0 + c] * v; s1 += values[w1 + c] * v; s2 += values[w2 + c] * v; s3 += values[w3 + c] * v;
          }
        } else {
          // At most 3 lines: the tail of a block height that is not a multiple of 4.
          for (let c = 0; c < C; c++) {
            const v = x[xo + c];
            s0 += values[w0 + c] * v;
            if (lines > 1) s1 += values[w0 + C + c] * v;
            if (lines > 2) s2 += values[w0 + 2 * C + c] * v;
          }
        }
      }
      const out = yAt + br * R + r0;
      const b = biasOffset + br * R + r0;
      y[out] = bias ? s0 + bias[b] : s0;
      if (lines > 1) y[out + 1] = bias ? s1 + bias[b + 1] : s1;
      if (lines > 2) y[out + 2] = bias ? s2 + bias[b + 2] : s2;
      if (lines > 3) y[out + 3] = bias ? s3 + bias[b + 3] : s3;
    }
  }
}

/**
 * One token of dX = dY W, block column by block column through the column-wise index:
 * eight (then four) output columns at a time gather the column's blocks in registers, so each output
 * is stored once.
 */
export function bsrMatmulOneToken(
  dy: Float32Array,
  dyAt: number,
  values: Float32Array,
  valuesOffset: number,
  dx: Float32Array,
  dxAt: number,
  accumulate: boolean,
  blockCols: number,
  R: number,
  C: number,
  blockColPtr: Int32Array,
  blockRowIdx: Int32Array,
  valueIndex: Int32Array,
): void {
  for (let bc = 0; bc < blockCols; bc++) {
    const first = blockColPtr[bc];
    const last = blockColPtr[bc + 1];
    let c0 = 0;
    for (; c0 + 7 < C; c0 += 8) {
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
      for (let q = first; q < last; q++) {
        const g = dyAt + blockRowIdx[q] * R;
        for (let r = 0, o = valuesOffset + valueIndex[q] * R * C + c0; r < R; r++, o += C) {
          const v = dy[g + r];
          s0 += v * values[o]; s1 += v * values[o + 1]; s2 += v * values[o + 2]; s3 += v * values[o + 3];
          s4 += v * values[o + 4]; s5 += v * values[o + 5]; s6 += v * values[o + 6]; s7 += v * values[o + 7];
        }
      }
      const out = dxAt + bc * C + c0;
      if (accumulate) {
        dx[out] += s0; dx[out + 1] += s1; dx[out + 2] += s2; dx[out + 3] += s3;
        dx[out + 4] += s4; dx[out + 5] += s5; dx[out + 6] += s6; dx[out + 7] += s7;
      } else {
        dx[out] = s0; dx[out + 1] = s1; dx[out + 2] = s2; dx[out + 3] = s3;
        dx[out + 4] = s4; dx[out + 5] = s5; dx[out + 6] = s6; dx[out + 7] = s7;
      }
    }
    for (; c0 < C; c0 += 4) {
      const lines = Math.min(4, C - c0);
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let q = first; q < last; q++) {
        const g = dyAt + blockRowIdx[q] * R;
        const w = valuesOffset + valueIndex[q] * R * C + c0;
        if (lines === 4) {
          for (let r = 0, o = w; r < R; r++, o += C) {
            const v = dy[g + r];
            s0 += v * values[o]; s1 += v * values[o + 1]; s2 += v * values[o + 2]; s3 += v * values[o + 3];
          }
        } else {
          // At most 3 lines: the tail of a block width that is not a multiple of 4.
          for (let r = 0, o = w; r < R; r++, o += C) {
            const v = dy[g + r];
            s0 += v * values[o];
            if (lines > 1) s1 += v * values[o + 1];
            if (lines > 2) s2 += v * values[o + 2];
          }
        }
      }
      const out = dxAt + bc * C + c0;
      if (accumulate) {
        dx[out] += s0;
        if (lines > 1) dx[out + 1] += s1;
        if (lines > 2) dx[out + 2] += s2;
        if (lines > 3) dx[out + 3] += s3;
      } else {
        dx[out] = s0;
        if (lines > 1) dx[out + 1] = s1;
        if (lines > 2) dx[out + 2] = s2;
        if (lines > 3) dx[out + 3] = s3;
      }
    }
  }
}
