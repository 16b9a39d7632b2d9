/**
 * Float64 references for the benchmarked products, written plainly and independently of
 * any backend. Each computes only the rows (or blocks) asked for, so that validating a
 * GPU-sized product costs a fraction of the product itself.
 */
import type { BsrPattern } from "@blocksparse/format";

/** Rows of A B^T: a [*, K], b [N, K] -> [rows.length, N]. */
export function rowsTimesTransposed(a: ArrayLike<number>, K: number, b: ArrayLike<number>, N: number, rows: readonly number[]): Float64Array {
  const out = new Float64Array(rows.length * N);
  for (let i = 0; i < rows.length; i++) {
    const aRow = rows[i] * K;
    for (let n = 0; n < N; n++) {
      let sum = 0;
      const bRow = n * K;
      for (let k = 0; k < K; k++) sum += a[aRow + k] * b[bRow + k];
      out[i * N + n] = sum;
    }
  }
  return out;
}

/** Rows of A B: a [*, K], b [K, N] -> [rows.length, N]. */
export function rowsTimes(a: ArrayLike<number>, K: number, b: ArrayLike<number>, N: number, rows: readonly number[]): Float64Array {
  const out = new Float64Array(rows.length * N);
  for (let i = 0; i < rows.length; i++) {
    const aRow = rows[i] * K;
    const outRow = i * N;
    for (let k = 0; k < K; k++) {
      const scale = a[aRow + k];
      const bRow = k * N;
      for (let n = 0; n < N; n++) out[outRow + n] += scale * b[bRow + n];
    }
  }
  return out;
}

/** Rows of A^T B: a [M, N], b [M, K] -> rows n of [N, K]. */
export function transposedTimesRows(a: ArrayLike<number>, N: number, b: ArrayLike<number>, K: number, M: number, rows: readonly number[]): Float64Array {
  const out = new Float64Array(rows.length * K);
  for (let m = 0; m < M; m++) {
    const bRow = m * K;
    for (let i = 0; i < rows.length; i++) {
      const scale = a[m * N + rows[i]];
      const outRow = i * K;
      for (let k = 0; k < K; k++) out[outRow + k] += scale * b[bRow + k];
    }
  }
  return out;
}

/** Rows of X W^T with W block-sparse: x [*, cols] -> [rows.length, pattern rows]. */
export function bsrLinearRows(x: ArrayLike<number>, pattern: BsrPattern, values: ArrayLike<number>, rows: readonly number[]): Float64Array {
  const [outFeatures, inFeatures] = pattern.shape;
  const [R, C] = pattern.blockShape;
  const out = new Float64Array(rows.length * outFeatures);
  for (let i = 0; i < rows.length; i++) {
    const xRow = rows[i] * inFeatures;
    for (let blockRow = 0; blockRow < pattern.blockRows; blockRow++) {
      for (let k = pattern.blockRowPtr[blockRow]; k < pattern.blockRowPtr[blockRow + 1]; k++) {
        const left = pattern.blockColIdx[k] * C;
        for (let r = 0; r < R; r++) {
          let sum = 0;
          const v = (k * R + r) * C;
          for (let c = 0; c < C; c++) sum += x[xRow + left + c] * values[v + c];
          out[i * outFeatures + blockRow * R + r] += sum;
        }
      }
    }
  }
  return out;
}

/** Rows of dY W with W block-sparse: dy [*, pattern rows] -> [rows.length, pattern cols]. */
export function bsrMatmulRows(dy: ArrayLike<number>, pattern: BsrPattern, values: ArrayLike<number>, rows: readonly number[]): Float64Array {
  const [outFeatures, inFeatures] = pattern.shape;
  const [R, C] = pattern.blockShape;
  const out = new Float64Array(rows.length * inFeatures);
  for (let i = 0; i < rows.length; i++) {
    const dyRow = rows[i] * outFeatures;
    for (let blockRow = 0; blockRow < pattern.blockRows; blockRow++) {
      for (let k = pattern.blockRowPtr[blockRow]; k < pattern.blockRowPtr[blockRow + 1]; k++) {
        const left = i * inFeatures + pattern.blockColIdx[k] * C;
        for (let r = 0; r < R; r++) {
          const scale = dy[dyRow + blockRow * R + r];
          const v = (k * R + r) * C;
          for (let c = 0; c < C; c++) out[left + c] += scale * values[v + c];
        }
      }
    }
  }
  return out;
}

/** Blocks of dY^T X sampled at W's pattern: dy [M, rows], x [M, cols] -> [blocks.length, R, C]. */
export function sampledMatmulBlocks(dy: ArrayLike<number>, x: ArrayLike<number>, M: number, pattern: BsrPattern, blocks: readonly number[]): Float64Array {
  const [outFeatures, inFeatures] = pattern.shape;
  const [R, C] = pattern.blockShape;
  const { blockRow, blockCol } = pattern.coordinates;
  const out = new Float64Array(blocks.length * R * C);
  for (let i = 0; i < blocks.length; i++) {
    const top = blockRow[blocks[i]] * R;
    const left = blockCol[blocks[i]] * C;
    for (let m = 0; m < M; m++) {
      for (let r = 0; r < R; r++) {
        const scale = dy[m * outFeatures + top + r];
        const o = (i * R + r) * C;
        const xRow = m * inFeatures + left;
        for (let c = 0; c < C; c++) out[o + c] += scale * x[xRow + c];
      }
    }
  }
  return out;
}

export interface AdamReferenceOptions {
  lr: number;
  beta1: number;
  beta2: number;
  epsilon: number;
  step: number;
}

/** One Adam step (no weight decay) in float64: the new parameter values. */
export function adamStep(
  param: ArrayLike<number>,
  grad: ArrayLike<number>,
  m: ArrayLike<number>,
  v: ArrayLike<number>,
  options: AdamReferenceOptions,
): Float64Array {
  const { lr, beta1, beta2, epsilon, step } = options;
  const out = new Float64Array(param.length);
  const correction1 = 1 - beta1 ** step;
  const correction2 = 1 - beta2 ** step;
  for (let i = 0; i < param.length; i++) {
    const mNew = beta1 * m[i] + (1 - beta1) * grad[i];
    const vNew = beta2 * v[i] + (1 - beta2) * grad[i] * grad[i];
    out[i] = param[i] - (lr * (mNew / correction1)) / (Math.sqrt(vNew / correction2) + epsilon);
  }
  return out;
}

/** The given rows of a row-major [*, rowLength] array, concatenated. */
export function pickRows(values: ArrayLike<number>, rowLength: number, rows: readonly number[]): Float64Array {
  const out = new Float64Array(rows.length * rowLength);
  for (let i = 0; i < rows.length; i++) {
    for (let j = 0; j < rowLength; j++) out[i * rowLength + j] = values[rows[i] * rowLength + j];
  }
  return out;
}
