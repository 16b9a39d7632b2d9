import type { AttentionBackwardInputs, AttentionOnArrays, AttentionSizes, JsBackend, KernelArgs, KernelTable, ProductCompute, TensorInfo } from "@blocksparse/core";
import { packedAttentionKernels, sizeOf } from "@blocksparse/core";

/** Row i of a batch matrix keeps keys [0, kept): all n, or under causal masking j <= i + n - m. */
function keptKeys(i: number, m: number, n: number, causal: boolean): number {
  return causal ? Math.min(n, i + n - m + 1) : n;
}

/** sum_c a[aAt + c] b[bAt + c] in float64. */
function dot64(a: Float32Array, aAt: number, b: Float32Array, bAt: number, d: number): number {
  let sum = 0;
  for (let c = 0; c < d; c++) sum += a[aAt + c] * b[bAt + c];
  return sum;
}

/**
 * Attention and its backward through the native matmul: per batch matrix, the products (q k^T and P v forward; q k^T
 * again, P^T dout, dout v^T, dS k and dS^T q backward) by the addon and the softmax rows between them in float64, one
 * [M, N] float32 scratch per batch matrix at a time. The js backend's own kernels (core) make nothing of size [M, N]
 * but compute every product in JavaScript: on this backend they were 5-10x slower than the unfused matmul and softmax
 * at [2, 8, 256, 64]. These are 2.7x faster than the unfused ops forward and 1.9x forward + backward there (a 2-core
 * Xeon; `benchmarks/src/attention.ts --backend cpu`). PackedAttention and its backward run the same products on
 * contiguous copies of the heads (core's packedAttentionKernels).
 */
export function attentionKernels(products: ProductCompute): Required<Pick<KernelTable<JsBackend>, "Attention" | "AttentionBackward" | "PackedAttention" | "PackedAttentionBackward">> {
  /**
   * P = exp(scale s - lse) over each row's kept keys, 0 elsewhere, in place over the scores s of one batch matrix.
   * Each row's scaled scores are first taken into `row64` (float64); computing lse, each exponential is kept there
   * and divided by the row's sum. A row whose float32 product overflowed (an infinite or NaN score) has its scores
   * recomputed in float64 from q and k, as the js backend computes every score: q k^T of about 1e39 is finite there.
   */
  let row64 = new Float64Array(0);
  const probabilities = (
    s: Float32Array,
    qs: Float32Array,
    qOffset: number,
    ks: Float32Array,
    kOffset: number,
    d: number,
    lse: Float32Array,
    lseOffset: number,
    m: number,
    n: number,
    scale: number,
    causal: boolean,
    computeLse: boolean,
  ) => {
    if (row64.length < n) row64 = new Float64Array(n);
    for (let i = 0; i < m; i++) {
      const row = i * n;
      const kept = keptKeys(i, m, n, causal);
      let finite = true;
      for (let j = 0; j < kept; j++) {
        row64[j] = scale * s[row + j];
        if (!Number.isFinite(s[row + j])) finite = false;
      }
      if (!finite) {
        for (let j = 0; j < kept; j++) row64[j] = scale * dot64(qs, qOffset + i * d, ks, kOffset + j * d, d);
      }
      if (computeLse) {
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
        lse[lseOffset + i] = max + Math.log(sum);
        const inverse = 1 / sum;
        for (let j = 0; j < kept; j++) s[row + j] = row64[j] * inverse;
      } else {
        const rowLse = lse[lseOffset + i];
        for (let j = 0; j < kept; j++) s[row + j] = Math.exp(row64[j] - rowLse);
      }
      s.fill(0, row + kept, row + n);
    }
  };
  const sizes = (q: TensorInfo, k: TensorInfo): AttentionSizes => {
    const rank = q.shape.length;
    return { heads: sizeOf(q.shape.slice(0, -2)), m: q.shape[rank - 2], n: k.shape[rank - 2], d: q.shape[rank - 1] };
  };
  const onArrays: AttentionOnArrays = {
    forward(qs, ks, vs, out, lse, { heads, m, n, d }, scale, causal) {
      const s = new Float32Array(m * n);
      for (let b = 0; b < heads && m > 0; b++) {
        products.matmulF32({ a: qs, aOffset: b * m * d, b: ks, bOffset: b * n * d, c: s, m, n, k: d, transposeB: true });
        probabilities(s, qs, b * m * d, ks, b * n * d, d, lse, b * m, m, n, scale, causal, true);
        products.matmulF32({ a: s, b: vs, bOffset: b * n * d, c: out, cOffset: b * m * d, m, n: d, k: n });
      }
    },
    backward([gs, qs, ks, vs, os, ls], [dq, dk, dv], { heads, m, n, d }, scale, causal) {
      if (m === 0) {
        // No query: the keys and values get no gradient.
        dk.fill(0);
        dv.fill(0);
      }
      const p = new Float32Array(m * n);
      const ds = new Float32Array(m * n);
      for (let b = 0; b < heads && m > 0; b++) {
        const [qOffset, kOffset] = [b * m * d, b * n * d];
        products.matmulF32({ a: qs, aOffset: qOffset, b: ks, bOffset: kOffset, c: p, m, n, k: d, transposeB: true });
        probabilities(p, qs, qOffset, ks, kOffset, d, ls, b * m, m, n, scale, causal, false);
        products.matmulF32({ a: p, b: gs, bOffset: qOffset, c: dv, cOffset: kOffset, m: n, n: d, k: m, transposeA: true });
        products.matmulF32({ a: gs, aOffset: qOffset, b: vs, bOffset: kOffset, c: ds, m, n, k: d, transposeB: true });
        // dS scale = P (dP - Di) scale, Di = sum_c dout[i, c] out[i, c].
        for (let i = 0; i < m; i++) {
          let di = 0;
          for (let c = 0; c < d; c++) di += gs[qOffset + i * d + c] * os[qOffset + i * d + c];
          const row = i * n;
          for (let j = 0; j < n; j++) ds[row + j] = p[row + j] * (ds[row + j] - di) * scale;
        }
        products.matmulF32({ a: ds, b: ks, bOffset: kOffset, c: dq, cOffset: qOffset, m, n: d, k: n });
        products.matmulF32({ a: ds, b: qs, bOffset: qOffset, c: dk, cOffset: kOffset, m: n, n: d, k: m, transposeA: true });
      }
    },
  };
  return {
    Attention({ inputs: { q, k, v }, attrs: { causal, scale }, backend }: KernelArgs<"Attention", JsBackend>): [TensorInfo, TensorInfo] {
      const out = backend.floatOutput(q.shape, q.dtype);
      const lse = backend.floatOutput(q.shape.slice(0, -1), "float32");
      onArrays.forward(backend.floats(q), backend.floats(k), backend.floats(v), out.data, lse.data, sizes(q, k), scale, causal);
      return [out.commit(), lse.commit()];
    },
    AttentionBackward({ inputs: { dout, q, k, v, out, lse }, attrs: { causal, scale }, backend }: KernelArgs<"AttentionBackward", JsBackend>): [TensorInfo, TensorInfo, TensorInfo] {
      const dq = backend.floatOutput(q.shape, q.dtype);
      const dk = backend.floatOutput(k.shape, k.dtype);
      const dv = backend.floatOutput(v.shape, v.dtype);
      const inputs = [dout, q, k, v, out, lse].map((t) => backend.floats(t)) as AttentionBackwardInputs;
      onArrays.backward(inputs, [dq.data, dk.data, dv.data], sizes(q, k), scale, causal);
      return [dq.commit(), dk.commit(), dv.commit()];
    },
    // Packed q, k and v ([...batch, T, 3, H, D]): core's wrapper gathers the heads for the same products and scatters
    // the output and the packed gradient back.
    ...packedAttentionKernels(onArrays),
  };
}
