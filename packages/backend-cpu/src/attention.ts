import type { AttentionBackwardInputs, AttentionOnArrays, AttentionSizes, JsBackend, KernelArgs, KernelTable, ProductCompute, TensorInfo } from "@blocksparse/core";
import { cachedAttentionWrites, type PackedHeads, packedAttentionKernels, packedHeadsOf, sizeOf } from "@blocksparse/core";

/** The largest positive float64 that rounds to 0 as a float32 (half the smallest float32 subnormal, a tie to even). */
const FLOAT32_ROUNDS_TO_ZERO = 2 ** -150;

/** Floats of one block of scores (16 MiB): attention takes as many query rows at a time as fit, one at least. */
export const ATTENTION_SCRATCH_FLOATS = 2 ** 22;

/** Row i of a batch matrix keeps keys [0, kept): all n, or under causal masking j <= i + n - m. */
function keptKeys(i: number, m: number, n: number, causal: boolean): number {
  return causal ? Math.min(n, i + n - m + 1) : n;
}

/** Whether x[at..at + length) holds no NaN or infinity. */
function allFinite(x: Float32Array, at: number, length: number): boolean {
  for (let i = at; i < at + length; i++) if (!Number.isFinite(x[i])) return false;
  return true;
}

/** The last of `rows` rows of d values from `offset` holding a NaN or an infinity, or -1. */
function lastNonFiniteRow(x: Float32Array, offset: number, rows: number, d: number): number {
  for (let j = rows - 1; j >= 0; j--) if (!allFinite(x, offset + j * d, d)) return j;
  return -1;
}

/** sum_c a[aAt + c] b[bAt + c] in float64. */
function dot64(a: Float32Array, aAt: number, b: Float32Array, bAt: number, d: number): number {
  let sum = 0;
  for (let c = 0; c < d; c++) sum += a[aAt + c] * b[bAt + c];
  return sum;
}

/** What the native row kernels found in a row (their `flags`): done, done with a float32 underflow, or left to recompute. */
export const AttentionRowFlag = { Done: 0, Underflow: 1, NonFinite: 2 } as const;

/**
 * The row-wise steps between attention's products (the addon's attentionSoftmax and attentionScoreGradients): float64
 * math per row, as this file's TypeScript computed it, with a flag per row for what needs the float64 recomputation.
 */
export interface AttentionRowCompute {
  /** P over rows x n scores in place, lse (from lseOffset, one per row) when not null; flags: Done, Underflow or NonFinite (row untouched). */
  softmax(s: Float32Array, lse: Float32Array | null, lseOffset: number, flags: Uint8Array, rows: number, n: number, first: number, m: number, causal: boolean, scale: number): void;
  /**
   * dS = P (dP - Di) scale in place over ds (dP), Di = sum_j P dP plus shift[r] where shift is given (dout . (out - P v),
   * so that Di is dout . out); flags NonFinite where the row's dS sums to a non-finite value.
   */
  scoreGradients(
    p: Float32Array,
    ds: Float32Array,
    shift: Float64Array | null,
    flags: Uint8Array,
    rows: number,
    n: number,
    first: number,
    m: number,
    causal: boolean,
    scale: number,
  ): void;
}

/**
 * Attention over all of a call's batch matrices at once (the addon's attentionForward and attentionBackward): the same
 * products and rows as the path below, with each head's run on one thread and the heads side by side, or one head at a
 * time over every thread where there are fewer heads than threads. exact[b] = 1 marks a head left to the path below:
 * one with a NaN or an infinity among its inputs, or a score or dS row whose float32 value is not finite.
 */
export interface AttentionHeadsCompute {
  forward(q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, lse: Float32Array, exact: Uint8Array, sizes: AttentionSizes, scale: number, causal: boolean, blockRows: number): void;
  /** `out` (the saved output, or null): Di = dout . out rather than sum_j P dP (see the addon's attentionBackward). */
  backward(
    dout: Float32Array,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    out: Float32Array | null,
    grads: [Float32Array, Float32Array, Float32Array],
    exact: Uint8Array,
    sizes: AttentionSizes,
    scale: number,
    causal: boolean,
    blockRows: number,
  ): void;
  /** forward over packed attention's heads where they lie: qkv [sequences, t, 3, h, d], out [sequences, t, h, d], lse [sequences, h, t]. */
  packedForward(qkv: Float32Array, out: Float32Array, lse: Float32Array, exact: Uint8Array, layout: PackedHeads, scale: number, causal: boolean, blockRows: number): void;
  /** backward over packed attention's heads: dqkv (qkv's layout) from dout [sequences, t, h, d]; out (dout's layout) as backward's. */
  packedBackward(
    dout: Float32Array,
    qkv: Float32Array,
    out: Float32Array | null,
    dqkv: Float32Array,
    exact: Uint8Array,
    layout: PackedHeads,
    scale: number,
    causal: boolean,
    blockRows: number,
  ): void;
}

/** Head b (sequence-major: b = sequence h + head) of part `part` of packed rows, as a [t, d] matrix (a copy). */
function gatherHead(rows: Float32Array, { t, parts, h, d }: PackedHeads, part: number, b: number): Float32Array {
  const [sequence, head] = [Math.floor(b / h), b % h];
  const matrix = new Float32Array(t * d);
  for (let i = 0; i < t; i++) {
    const at = (((sequence * t + i) * parts + part) * h + head) * d;
    matrix.set(rows.subarray(at, at + d), i * d);
  }
  return matrix;
}

/** A [t, d] matrix written as head b of part `part` of packed rows. */
function scatterHead(matrix: Float32Array, rows: Float32Array, { t, parts, h, d }: PackedHeads, part: number, b: number): void {
  const [sequence, head] = [Math.floor(b / h), b % h];
  for (let i = 0; i < t; i++) rows.set(matrix.subarray(i * d, (i + 1) * d), (((sequence * t + i) * parts + part) * h + head) * d);
}

/**
 * Attention and its backward through the native matmul: per batch matrix, the products (q k^T and P v forward; q k^T
 * again, dout v^T, P v for Di, P^T dout, dS k and dS^T q backward) by the addon and the softmax and dS rows between them in float64
 * (the addon's row kernels, `rowCompute`; the few rows they flag recomputed here), one
 * block of query rows at a time, so the float32 scores stay within `scratchFloats` (one row at least) whatever M and N:
 * a long sequence needs no [M, N] buffer (70000 tokens would take 4.9e9 floats, more than a typed array holds). The js
 * backend's own kernels (core) make nothing of size [M, N] but compute every product in JavaScript: on this backend
 * they were 5-10x slower than the unfused matmul and softmax at [2, 8, 256, 64]. These are 2.7x faster than the
 * unfused ops forward and 1.9x forward + backward there (a 2-core Xeon; `benchmarks/src/attention.ts --backend cpu`).
 * The rows in the addon rather than in TypeScript (Math.exp per score) took PackedAttention at [4, 128, 3, 8, 64]
 * causal from about 13 to 8-10 ms and its backward from 20-24 to 16-21 ms (the same bits there).
 * PackedAttention and its backward run the same products on contiguous copies of the heads (core's
 * packedAttentionKernels).
 * With `headsCompute`, every head runs there first (a product per head over every thread left the threads mostly
 * handing off work at a transformer's sizes: [4, 8, 128, 64] causal, forward 4.0-4.7 ms and backward 8.1-8.7 ms on 2
 * cores, now 1.1-1.3 and 2.2-2.3 ms); the heads it marks run through the products and rows here.
 */
export function attentionKernels(
  products: ProductCompute,
  rowCompute: AttentionRowCompute,
  scratchFloats: number = ATTENTION_SCRATCH_FLOATS,
  headsCompute: AttentionHeadsCompute | null = null,
): Required<Pick<KernelTable<JsBackend>, "Attention" | "AttentionBackward" | "PackedAttention" | "PackedAttentionBackward">> {
  /**
   * P = exp(scale s - max) / sum over each row's kept keys, 0 elsewhere, in place over the scores s of `rows` query
   * rows of one batch matrix from row `first` (qOffset and lseOffset point at row 0 of the batch matrix); with `lse`
   * (the forward), each row's log-sum-exp max + log(sum) is written there. The backward recomputes P so too, as the js
   * backend does, never as exp(scale s - lse) from the saved lse: rounded to float32, that lse is off by up to half its
   * ulp (4 at 1.2e8), and P was scaled by e^(that error) (two keys of equal score 1.2e8 got P = 1 each, not 0.5).
   * The addon computes each row whose kept scores are finite, in float64 (rowCompute.softmax). A row whose float32
   * product overflowed (an infinite or NaN score) is flagged and has its scores recomputed here in float64 from q and
   * k (exactProbabilities), as the js backend computes every score: q k^T of about 1e39 is finite there.
   * The rows with a probability that rounds to 0 in float32 but not in float64 are pushed to `underflows`.
   */
  let row64 = new Float64Array(0);
  let softmaxFlags = new Uint8Array(0);
  let gradientFlags = new Uint8Array(0);
  const probabilities = (
    s: Float32Array,
    qs: Float32Array,
    qOffset: number,
    ks: Float32Array,
    kOffset: number,
    d: number,
    lse: Float32Array | null,
    lseOffset: number,
    first: number,
    rows: number,
    m: number,
    n: number,
    scale: number,
    causal: boolean,
    underflows?: number[],
  ) => {
    if (softmaxFlags.length < rows) softmaxFlags = new Uint8Array(rows);
    // The finite rows in the addon; a row with a non-finite score is left to the float64 recomputation here.
    rowCompute.softmax(s, lse, lseOffset + first, softmaxFlags, rows, n, first, m, causal, scale);
    for (let r = 0; r < rows; r++) {
      const flag = softmaxFlags[r];
      if (flag === AttentionRowFlag.NonFinite && exactProbabilities(s, qs, qOffset, ks, kOffset, d, lse, lseOffset, first + r, r, m, n, scale, causal)) underflows?.push(r);
      else if (flag === AttentionRowFlag.Underflow) underflows?.push(r);
    }
  };
  /** Row r (query row i) of probabilities' block from scores recomputed in float64; whether a probability underflowed in float32. */
  const exactProbabilities = (
    s: Float32Array,
    qs: Float32Array,
    qOffset: number,
    ks: Float32Array,
    kOffset: number,
    d: number,
    lse: Float32Array | null,
    lseOffset: number,
    i: number,
    r: number,
    m: number,
    n: number,
    scale: number,
    causal: boolean,
  ): boolean => {
    if (row64.length < n) row64 = new Float64Array(n);
    const row = r * n;
    const kept = keptKeys(i, m, n, causal);
    let underflow = false;
    for (let j = 0; j < kept; j++) row64[j] = scale * dot64(qs, qOffset + i * d, ks, kOffset + j * d, d);
    let max = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < kept; j++) {
      if (row64[j] > max || Number.isNaN(row64[j])) max = row64[j];
    }
    let sum = 0;
    for (let j = 0; j < kept; j++) {
      const e = Math.exp(row64[j] - max);
      row64[j] = e;
      sum += e;
    }
    if (lse !== null) lse[lseOffset + i] = max + Math.log(sum);
    const inverse = 1 / sum;
    for (let j = 0; j < kept; j++) {
      const p = row64[j] * inverse;
      s[row + j] = p;
      if (p <= FLOAT32_ROUNDS_TO_ZERO && p > 0) underflow = true;
    }
    s.fill(0, row + kept, row + n);
    return underflow;
  };
  const sizes = (q: TensorInfo, k: TensorInfo): AttentionSizes => {
    const rank = q.shape.length;
    return { heads: sizeOf(q.shape.slice(0, -2)), m: q.shape[rank - 2], n: k.shape[rank - 2], d: q.shape[rank - 1] };
  };
  /** Query rows per block: as many as `scratchFloats` holds of N scores each, one at least, at most M. */
  const blockRows = (m: number, n: number) => Math.max(1, Math.min(m, Math.floor(scratchFloats / Math.max(n, 1))));
  /** dst[at..at + length) += src[0..length). */
  const addInto = (dst: Float32Array, at: number, src: Float32Array, length: number) => {
    for (let i = 0; i < length; i++) dst[at + i] += src[i];
  };
  // Under causal masking a masked key's score is an exact 0 in the products' sums, and 0 times an infinite or NaN key,
  // value, query or output gradient is NaN, where the js backend sums each row's kept keys only: a non-finite entry
  // would reach rows or keys it is masked from. The few rows and keys it touches are summed over the kept keys instead.
  let sum64 = new Float64Array(0);
  /**
   * Row-side products (out = P v, dq = dS k) over block rows [first, first + rows): each row whose kept keys end at or
   * before `lastNonFinite` (a key of y with a non-finite value) is recomputed as sum_{j < kept} x[r, j] y[j, :].
   */
  const keptRowSums = (x: Float32Array, y: Float32Array, yOffset: number, result: Float32Array, resultOffset: number, first: number, rows: number, m: number, n: number, d: number, lastNonFinite: number) => {
    if (lastNonFinite < 0) return;
    if (sum64.length < d) sum64 = new Float64Array(d);
    for (let r = 0; r < rows; r++) {
      const kept = keptKeys(first + r, m, n, true);
      if (kept > lastNonFinite) continue;
      sum64.fill(0, 0, d);
      for (let j = 0; j < kept; j++) {
        const weight = x[r * n + j];
        for (let c = 0; c < d; c++) sum64[c] += weight * y[yOffset + j * d + c];
      }
      for (let c = 0; c < d; c++) result[resultOffset + r * d + c] = sum64[c];
    }
  };
  let cleanRows = new Float32Array(0);
  /**
   * Key-side products (dv = P^T dout, dk = dS^T q) of block rows [first, first + rows) into c at cOffset: a row of z
   * with a non-finite value that masks some key is left out of the product (zeroed in a copy) and its x[r, j] z[r, :]
   * added to the kept keys j only. The rows in `exact` are left out too (zeroed in x and in the copy of z) and their
   * float64 weights, `exactWeights` from (index in exact) * n, times z[r, :] added to `exactSums` (float64, [n, d] from
   * exactSumsOffset) at their kept keys: c gets those once, as js rounds its float64 sums (1e39 - 1e39 is 0, not NaN).
   */
  const keySums = (
    x: Float32Array,
    z: Float32Array,
    zOffset: number,
    c: Float32Array,
    cOffset: number,
    first: number,
    rows: number,
    m: number,
    n: number,
    d: number,
    causal: boolean,
    exact: number[],
    exactWeights: Float64Array,
    exactSums: Float64Array,
    exactSumsOffset: number,
  ) => {
    const masking: number[] = [];
    for (let r = 0; causal && r < rows; r++) {
      if (keptKeys(first + r, m, n, true) < n && !allFinite(z, zOffset + r * d, d) && !exact.includes(r)) masking.push(r);
    }
    let [b, bOffset] = [z, zOffset];
    if (masking.length > 0 || exact.length > 0) {
      if (cleanRows.length < rows * d) cleanRows = new Float32Array(rows * d);
      cleanRows.set(z.subarray(zOffset, zOffset + rows * d));
      for (const r of [...masking, ...exact]) cleanRows.fill(0, r * d, (r + 1) * d);
      [b, bOffset] = [cleanRows, 0];
    }
    for (const r of exact) x.fill(0, r * n, (r + 1) * n);
    products.matmulF32({ a: x, b, bOffset, c, cOffset, m: n, n: d, k: rows, transposeA: true });
    for (const r of masking) {
      const kept = keptKeys(first + r, m, n, true);
      for (let j = 0; j < kept; j++) {
        const weight = x[r * n + j];
        for (let col = 0; col < d; col++) c[cOffset + j * d + col] += weight * z[zOffset + r * d + col];
      }
    }
    exact.forEach((r, e) => {
      const kept = keptKeys(first + r, m, n, causal);
      for (let j = 0; j < kept; j++) {
        const weight = exactWeights[e * n + j];
        for (let col = 0; col < d; col++) exactSums[exactSumsOffset + j * d + col] += weight * z[zOffset + r * d + col];
      }
    });
  };
  // Rows of a block whose probabilities underflowed in float32 (see probabilities).
  const underflows: number[] = [];
  /**
   * Output row i (of the batch matrix at qOffset, kOffset) in float64 over its kept keys, as the js backend computes it:
   * for a row whose float32 probabilities underflowed to 0 where a value is infinite, 0 * inf made NaN where js's tiny
   * probability times inf is +-inf.
   */
  const attendRow64 = (qs: Float32Array, qOffset: number, ks: Float32Array, vs: Float32Array, kOffset: number, out: Float32Array, i: number, m: number, n: number, d: number, scale: number, causal: boolean) => {
    const kept = keptKeys(i, m, n, causal);
    if (row64.length < n) row64 = new Float64Array(n);
    if (sum64.length < d) sum64 = new Float64Array(d);
    let max = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < kept; j++) {
      row64[j] = scale * dot64(qs, qOffset + i * d, ks, kOffset + j * d, d);
      if (row64[j] > max || Number.isNaN(row64[j])) max = row64[j];
    }
    sum64.fill(0, 0, d);
    let sum = 0;
    for (let j = 0; j < kept; j++) {
      const e = Math.exp(row64[j] - max);
      sum += e;
      for (let c = 0; c < d; c++) sum64[c] += e * vs[kOffset + j * d + c];
    }
    for (let c = 0; c < d; c++) out[qOffset + i * d + c] = sum64[c] / sum;
  };
  // Backward: a block's rows recomputed in float64 (see gradientRow64), their P, dS and dq rows, and a head's float64
  // sums of their dv then dk shares ([2, n, d]).
  const exactRows: number[] = [];
  let exactKeySums = new Float64Array(0);
  let exactP = new Float64Array(0);
  let exactDs = new Float64Array(0);
  let exactDq = new Float64Array(0);
  /**
   * Row i's P and dS over its kept keys (into exactP and exactDs from e * n) and its dq row (into exactDq from e * d) in
   * float64, as the js backend computes them: for a row whose float32 probabilities underflowed to 0 where the output
   * gradient or dP - Di is infinite, 0 * inf made NaN where js's tiny probability times inf is +-inf; for a row whose
   * float32 dP or dS overflowed (dout and v of 1e20: dP of 1e40), inf - inf made NaN where js's are finite. P is the
   * row's float64 softmax (see probabilities), not exp(scale s - lse) from the float32 lse.
   */
  const gradientRow64 = (
    [gs, qs, ks, vs, os]: AttentionBackwardInputs,
    qOffset: number,
    kOffset: number,
    i: number,
    e: number,
    m: number,
    n: number,
    d: number,
    scale: number,
    causal: boolean,
  ) => {
    const kept = keptKeys(i, m, n, causal);
    const row = qOffset + i * d;
    const di = dot64(gs, row, os, row, d);
    let max = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < kept; j++) {
      const score = scale * dot64(qs, row, ks, kOffset + j * d, d);
      exactP[e * n + j] = score;
      if (score > max || Number.isNaN(score)) max = score;
    }
    let sum = 0;
    for (let j = 0; j < kept; j++) {
      const exponential = Math.exp(exactP[e * n + j] - max);
      exactP[e * n + j] = exponential;
      sum += exponential;
    }
    exactDq.fill(0, e * d, (e + 1) * d);
    for (let j = 0; j < kept; j++) {
      const key = kOffset + j * d;
      const p = exactP[e * n + j] / sum;
      const dsj = scale * p * (dot64(gs, row, vs, key, d) - di);
      exactP[e * n + j] = p;
      exactDs[e * n + j] = dsj;
      for (let c = 0; c < d; c++) exactDq[e * d + c] += dsj * ks[key + c];
    }
  };
  const eachProduct: AttentionOnArrays = {
    forward(qs, ks, vs, out, lse, { heads, m, n, d }, scale, causal) {
      const rowsPerBlock = blockRows(m, n);
      const s = new Float32Array(rowsPerBlock * n);
      for (let b = 0; b < heads && m > 0; b++) {
        const [qOffset, kOffset] = [b * m * d, b * n * d];
        const lastNonFiniteValue = causal ? lastNonFiniteRow(vs, kOffset, n, d) : -1;
        for (let i0 = 0; i0 < m; i0 += rowsPerBlock) {
          const rows = Math.min(rowsPerBlock, m - i0);
          products.matmulF32({ a: qs, aOffset: qOffset + i0 * d, b: ks, bOffset: kOffset, c: s, m: rows, n, k: d, transposeB: true });
          underflows.length = 0;
          probabilities(s, qs, qOffset, ks, kOffset, d, lse, b * m, i0, rows, m, n, scale, causal, underflows);
          products.matmulF32({ a: s, b: vs, bOffset: kOffset, c: out, cOffset: qOffset + i0 * d, m: rows, n: d, k: n });
          keptRowSums(s, vs, kOffset, out, qOffset + i0 * d, i0, rows, m, n, d, lastNonFiniteValue);
          for (const r of underflows) {
            if (!allFinite(out, qOffset + (i0 + r) * d, d)) attendRow64(qs, qOffset, ks, vs, kOffset, out, i0 + r, m, n, d, scale, causal);
          }
        }
      }
    },
    backward(inputs, [dq, dk, dv], { heads, m, n, d }, scale, causal) {
      const [gs, qs, ks, vs, os] = inputs;
      if (m === 0) {
        // No query: the keys and values get no gradient.
        dk.fill(0);
        dv.fill(0);
      }
      const rowsPerBlock = blockRows(m, n);
      const p = new Float32Array(rowsPerBlock * n);
      const ds = new Float32Array(rowsPerBlock * n);
      // P v of a block, and each row's Di shift dout . (out - P v): Di is dout . out, the saved output's.
      const recomputed = new Float32Array(rowsPerBlock * d);
      const shift = new Float64Array(rowsPerBlock);
      // A later block's share of dk and dv, added to the first block's (the native matmul does not accumulate).
      const share = new Float32Array(rowsPerBlock < m ? n * d : 0);
      for (let b = 0; b < heads && m > 0; b++) {
        const [qOffset, kOffset] = [b * m * d, b * n * d];
        const lastNonFiniteKey = causal ? lastNonFiniteRow(ks, kOffset, n, d) : -1;
        let exactInHead = false;
        for (let i0 = 0; i0 < m; i0 += rowsPerBlock) {
          const rows = Math.min(rowsPerBlock, m - i0);
          const rowsOffset = qOffset + i0 * d;
          // The first block writes dk and dv, a later one its share, then added.
          const [dvAt, dkAt, at] = i0 === 0 ? [dv, dk, kOffset] : [share, share, 0];
          products.matmulF32({ a: qs, aOffset: rowsOffset, b: ks, bOffset: kOffset, c: p, m: rows, n, k: d, transposeB: true });
          underflows.length = 0;
          probabilities(p, qs, qOffset, ks, kOffset, d, null, 0, i0, rows, m, n, scale, causal, underflows);
          products.matmulF32({ a: gs, aOffset: rowsOffset, b: vs, bOffset: kOffset, c: ds, m: rows, n, k: d, transposeB: true });
          products.matmulF32({ a: p, b: vs, bOffset: kOffset, c: recomputed, m: rows, n: d, k: n });
          for (let r = 0; r < rows; r++) {
            let sum = 0;
            for (let c = 0; c < d; c++) sum += gs[rowsOffset + r * d + c] * (os[rowsOffset + r * d + c] - recomputed[r * d + c]);
            shift[r] = sum;
          }
          // dS scale = P (dP - Di) scale over the kept keys, 0 at the masked ones, with Di = sum_j P[i, j] dP[i, j] in
          // float64 over the same float32 dP (the softmax backward's row sum, equal to dout[i] . (P v)[i]): its rounding
          // cancels in dP - Di as js's float64 dP and dout . out cancel, so a one-hot row's dS is 0 as on js. Di from
          // out against the float32 dP left noise of 6e-8 |dP| there: dq = dS k of 1e31 at dout and v of 1e19, inf at k of 1e12.
          // Plus the shift dout[i] . (out[i] - (P v)[i]), 0 for the forward's own float32 out: Di is dout . out, as the
          // kernel's contract and js have it, for an out rounded to a half dtype too.
          // Recomputed in float64 (exactRows): a row whose float32 dS holds a NaN or an infinity (their sum, in float64,
          // is finite otherwise), and an underflowed row whose output gradient does (see gradientRow64).
          exactRows.length = 0;
          if (gradientFlags.length < rows) gradientFlags = new Uint8Array(rows);
          rowCompute.scoreGradients(p, ds, shift, gradientFlags, rows, n, i0, m, causal, scale);
          let underflowAt = 0;
          for (let r = 0; r < rows; r++) {
            const underflowed = underflows[underflowAt] === r;
            if (underflowed) underflowAt++;
            if (gradientFlags[r] === AttentionRowFlag.NonFinite || (underflowed && !allFinite(gs, rowsOffset + r * d, d))) exactRows.push(r);
          }
          if (exactRows.length > 0) {
            if (exactP.length < exactRows.length * n) [exactP, exactDs] = [new Float64Array(exactRows.length * n), new Float64Array(exactRows.length * n)];
            if (exactDq.length < exactRows.length * d) exactDq = new Float64Array(exactRows.length * d);
            if (!exactInHead) {
              if (exactKeySums.length < 2 * n * d) exactKeySums = new Float64Array(2 * n * d);
              exactKeySums.fill(0, 0, 2 * n * d);
              exactInHead = true;
            }
            exactRows.forEach((r, e) => {
              gradientRow64(inputs, qOffset, kOffset, i0 + r, e, m, n, d, scale, causal);
            });
          }
          keySums(p, gs, rowsOffset, dvAt, at, i0, rows, m, n, d, causal, exactRows, exactP, exactKeySums, 0);
          if (i0 > 0) addInto(dv, kOffset, share, n * d);
          products.matmulF32({ a: ds, b: ks, bOffset: kOffset, c: dq, cOffset: rowsOffset, m: rows, n: d, k: n });
          keptRowSums(ds, ks, kOffset, dq, rowsOffset, i0, rows, m, n, d, lastNonFiniteKey);
          exactRows.forEach((r, e) => {
            dq.set(exactDq.subarray(e * d, (e + 1) * d), rowsOffset + r * d);
          });
          keySums(ds, qs, rowsOffset, dkAt, at, i0, rows, m, n, d, causal, exactRows, exactDs, exactKeySums, n * d);
          if (i0 > 0) addInto(dk, kOffset, share, n * d);
        }
        for (let x = 0; exactInHead && x < n * d; x++) {
          dv[kOffset + x] += exactKeySums[x];
          dk[kOffset + x] += exactKeySums[n * d + x];
        }
      }
    },
  };
  /** Head b's rows of a [heads, rows, width] array. */
  const headOf = (x: Float32Array, b: number, rows: number, width: number) => x.subarray(b * rows * width, (b + 1) * rows * width);
  /** Attention over every head in the addon, the heads it marks through eachProduct. */
  const forward: AttentionOnArrays["forward"] = (qs, ks, vs, out, lse, sizes, scale, causal) => {
    if (headsCompute === null) {
      eachProduct.forward(qs, ks, vs, out, lse, sizes, scale, causal);
      return;
    }
    const { heads, m, n, d } = sizes;
    const exact = new Uint8Array(heads);
    headsCompute.forward(qs, ks, vs, out, lse, exact, sizes, scale, causal, blockRows(m, n));
    for (let b = 0; b < heads; b++) {
      if (exact[b] === 0) continue;
      const [q, k, v] = [headOf(qs, b, m, d), headOf(ks, b, n, d), headOf(vs, b, n, d)];
      eachProduct.forward(q, k, v, headOf(out, b, m, d), headOf(lse, b, m, 1), { heads: 1, m, n, d }, scale, causal);
    }
  };
  /**
   * AttentionBackward over every head in the addon, the heads it marks through eachProduct. `outRounded`: out is the
   * saved output rounded to a half dtype, whose difference from P v Di takes (the addon recomputes P v for it); a
   * float32 out is the forward's P v to the bit, and Di = sum_j P dP is dout . out without that product.
   */
  const backward = (inputs: AttentionBackwardInputs, grads: [Float32Array, Float32Array, Float32Array], sizes: AttentionSizes, scale: number, causal: boolean, outRounded: boolean) => {
    if (headsCompute === null) {
      eachProduct.backward(inputs, grads, sizes, scale, causal);
      return;
    }
    const { heads, m, n, d } = sizes;
    const [gs, qs, ks, vs, os, lse] = inputs;
    const exact = new Uint8Array(heads);
    headsCompute.backward(gs, qs, ks, vs, outRounded ? os : null, grads, exact, sizes, scale, causal, blockRows(m, n));
    for (let b = 0; b < heads; b++) {
      if (exact[b] === 0) continue;
      const [dq, dk, dv] = grads;
      const headInputs: AttentionBackwardInputs = [headOf(gs, b, m, d), headOf(qs, b, m, d), headOf(ks, b, n, d), headOf(vs, b, n, d), headOf(os, b, m, d), headOf(lse, b, m, 1)];
      eachProduct.backward(headInputs, [headOf(dq, b, m, d), headOf(dk, b, n, d), headOf(dv, b, n, d)], { heads: 1, m, n, d }, scale, causal);
    }
  };
  /**
   * PackedAttention and its backward with every head read and written in its packed rows by the addon; a head it marks
   * is copied out, computed by the product-at-a-time path and written back.
   */
  const packedKernels = (
    heads: AttentionHeadsCompute,
  ): Required<Pick<KernelTable<JsBackend>, "PackedAttention" | "PackedAttentionBackward">> => ({
    PackedAttention({ inputs: { qkv }, attrs: { causal, scale }, backend }: KernelArgs<"PackedAttention", JsBackend>): [TensorInfo, TensorInfo] {
      const layout = packedHeadsOf(qkv.shape);
      const { sequences, t, h, d } = layout;
      const rows = backend.floats(qkv);
      const lse = backend.floatOutput([...qkv.shape.slice(0, -4), h, t], "float32");
      const out = backend.floatOutput([...qkv.shape.slice(0, -3), h, d], qkv.dtype);
      const exact = new Uint8Array(sequences * h);
      heads.packedForward(rows, out.data, lse.data, exact, layout, scale, causal, blockRows(t, t));
      const outLayout = { ...layout, parts: 1 };
      for (let b = 0; b < sequences * h; b++) {
        if (exact[b] === 0) continue;
        const [q, k, v] = [0, 1, 2].map((part) => gatherHead(rows, layout, part, b));
        const attended = new Float32Array(t * d);
        eachProduct.forward(q, k, v, attended, lse.data.subarray(b * t, (b + 1) * t), { heads: 1, m: t, n: t, d }, scale, causal);
        scatterHead(attended, out.data, outLayout, 0, b);
      }
      return [out.commit(), lse.commit()];
    },
    PackedAttentionBackward({ inputs: { dout, qkv, out, lse }, attrs: { causal, scale }, backend }: KernelArgs<"PackedAttentionBackward", JsBackend>): TensorInfo {
      const layout = packedHeadsOf(qkv.shape);
      const { sequences, t, h, d } = layout;
      const rows = backend.floats(qkv);
      const g = backend.floats(dout);
      const dqkv = backend.floatOutput(qkv.shape, qkv.dtype);
      const exact = new Uint8Array(sequences * h);
      // A half out is read for Di (see backward); a float32 one and lse for a marked head only (the addon
      // recomputes P from q and k).
      let saved: [Float32Array, Float32Array] | null = out.dtype === "float32" ? null : [backend.floats(out), backend.floats(lse)];
      heads.packedBackward(g, rows, saved === null ? null : saved[0], dqkv.data, exact, layout, scale, causal, blockRows(t, t));
      const outLayout = { ...layout, parts: 1 };
      for (let b = 0; b < sequences * h; b++) {
        if (exact[b] === 0) continue;
        saved ??= [backend.floats(out), backend.floats(lse)];
        const [q, k, v] = [0, 1, 2].map((part) => gatherHead(rows, layout, part, b));
        const [gb, ob] = [g, saved[0]].map((x) => gatherHead(x, outLayout, 0, b));
        const grads: [Float32Array, Float32Array, Float32Array] = [new Float32Array(t * d), new Float32Array(t * d), new Float32Array(t * d)];
        eachProduct.backward([gb, q, k, v, ob, saved[1].subarray(b * t, (b + 1) * t)], grads, { heads: 1, m: t, n: t, d }, scale, causal);
        grads.forEach((grad, part) => {
          scatterHead(grad, dqkv.data, layout, part, b);
        });
      }
      return dqkv.commit();
    },
  });
  return {
    Attention({ inputs: { q, k, v }, attrs: { causal, scale }, backend }: KernelArgs<"Attention", JsBackend>): [TensorInfo, TensorInfo] {
      const out = backend.floatOutput(q.shape, q.dtype);
      const lse = backend.floatOutput(q.shape.slice(0, -1), "float32");
      forward(backend.floats(q), backend.floats(k), backend.floats(v), out.data, lse.data, sizes(q, k), scale, causal);
      return [out.commit(), lse.commit()];
    },
    AttentionBackward({ inputs: { dout, q, k, v, out, lse }, attrs: { causal, scale }, backend }: KernelArgs<"AttentionBackward", JsBackend>): [TensorInfo, TensorInfo, TensorInfo] {
      const dq = backend.floatOutput(q.shape, q.dtype);
      const dk = backend.floatOutput(k.shape, k.dtype);
      const dv = backend.floatOutput(v.shape, v.dtype);
      const inputs = [dout, q, k, v, out, lse].map((t) => backend.floats(t)) as AttentionBackwardInputs;
      backward(inputs, [dq.data, dk.data, dv.data], sizes(q, k), scale, causal, out.dtype !== "float32");
      return [dq.commit(), dk.commit(), dv.commit()];
    },
    ...(headsCompute === null ? packedAttentionKernels(eachProduct) : packedKernels(headsCompute)),
  };
}

/** The addon's cachedAttention: out [heads, m, d], each query row over the first positions[i] + 1 keys of k and v. */
export type CachedAttentionCompute = (q: Float32Array, k: Float32Array, v: Float32Array, positions: Int32Array, out: Float32Array, sizes: AttentionSizes, scale: number) => void;

/**
 * CachedAttention (a decoding step's attention over a key/value cache) with its rows in the addon: float64 scores,
 * exponentials and sums per row as the js kernel's, the rows spread over the threads, where the js kernel's loops took
 * most of a long generation's time (GPT-2 small at a context of 600: about 200 ms a token, the model's products
 * 38). The new positions' keys and values are written first, in place, by core's cachedAttentionWrites (the js
 * kernel's).
 */
export function cachedAttentionKernels(attend: CachedAttentionCompute): Required<Pick<KernelTable<JsBackend>, "CachedAttention">> {
  return {
    CachedAttention(args: KernelArgs<"CachedAttention", JsBackend>): TensorInfo {
      const {
        inputs: { q, k, v, positions },
        attrs: { scale },
        backend,
      } = args;
      cachedAttentionWrites(args);
      const rank = q.shape.length;
      const sizes = { heads: sizeOf(q.shape.slice(0, -2)), m: q.shape[rank - 2], n: k.shape[rank - 2], d: q.shape[rank - 1] };
      const out = backend.floatOutput(q.shape, q.dtype);
      attend(backend.floats(q), backend.floats(k), backend.floats(v), backend.ints(positions), out.data, sizes, scale);
      return out.commit();
    },
  };
}
