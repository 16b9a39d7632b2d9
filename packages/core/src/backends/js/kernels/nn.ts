import type { KernelArgs, KernelTable, TensorInfo } from "../../../backend";
import { IndexError, ValueError } from "../../../errors";
import { gatherHeads, type PackedHeads, packedHeadsOf, scatterHeads, sizeOf, softmaxRows } from "../../../shape";
import type { FloatDType } from "../../../dtypes";
import type { FloatOutput, JsBackend } from "../backend";
import { indexCopyKernel } from "./shape";

/** A float64 row reused across calls: each exponential of a softmax row is taken once and kept there. */
let row64 = new Float64Array(0);

/**
 * Softmax or log-softmax of each row of length `n` (max-subtracted, float64 sums). `causalRows` m > 0:
 * row r keeps its first (r mod m) + n - m + 1 entries and the rest read as -Infinity.
 */
function rowSoftmax(input: Float32Array, out: Float32Array, rows: number, n: number, log: boolean, causalRows: number): void {
  if (row64.length < n) row64 = new Float64Array(n);
  const e = row64;
  for (let r = 0; r < rows; r++) {
    const base = r * n;
    const kept = causalRows > 0 ? (r % causalRows) + n - causalRows + 1 : n;
    let max = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < kept; j++) if (input[base + j] > max || Number.isNaN(input[base + j])) max = input[base + j];
    let sum = 0;
    for (let j = 0; j < kept; j++) {
      e[j] = Math.exp(input[base + j] - max);
      sum += e[j];
    }
    if (log) {
      // (x - max) - log(sum): x - (max + log(sum)) lost log(sum) once |max| dwarfed it (logSoftmax([1e30, 1e30]) gave 0s).
      const logSum = Math.log(sum);
      for (let j = 0; j < kept; j++) out[base + j] = input[base + j] - max - logSum;
    } else {
      for (let j = 0; j < kept; j++) out[base + j] = e[j] / sum;
    }
    out.fill(log ? Number.NEGATIVE_INFINITY : 0, base + kept, base + n);
  }
}

function softmaxLike(log: boolean) {
  return ({ inputs: { x }, attrs: { causal }, backend }: KernelArgs<"Softmax" | "LogSoftmax", JsBackend>): TensorInfo => {
    const { rows, size, causalRows } = softmaxRows(x.shape, causal);
    const out = backend.floatOutput(x.shape, x.dtype);
    rowSoftmax(backend.floats(x), out.data, rows, size, log, causalRows);
    return out.commit();
  };
}

export function softmaxBackwardKernel({ inputs: { dy, y }, attrs: { log, causal }, backend }: KernelArgs<"SoftmaxBackward", JsBackend>): TensorInfo {
  const { rows, size: n, causalRows: m } = softmaxRows(y.shape, causal);
  const g = backend.floats(dy);
  const out = backend.floats(y);
  const dx = backend.floatOutput(y.shape, y.dtype);
  for (let r = 0; r < rows; r++) {
    const base = r * n;
    const kept = m > 0 ? (r % m) + n - m + 1 : n;
    let sum = 0;
    for (let j = 0; j < kept; j++) sum += log ? g[base + j] : g[base + j] * out[base + j];
    for (let j = 0; j < kept; j++) dx.data[base + j] = log ? g[base + j] - Math.exp(out[base + j]) * sum : out[base + j] * (g[base + j] - sum);
    dx.data.fill(0, base + kept, base + n);
  }
  return dx.commit();
}

export const softmaxKernel = softmaxLike(false);
export const logSoftmaxKernel = softmaxLike(true);

export function layerNormKernel({ inputs: { x, gamma, beta }, attrs: { epsilon }, backend }: KernelArgs<"LayerNorm", JsBackend>): [TensorInfo, TensorInfo, TensorInfo] {
  const d = x.shape[x.shape.length - 1];
  const statShape = x.shape.slice(0, -1);
  const rows = sizeOf(statShape);
  const input = backend.floats(x);
  const g = gamma ? backend.floats(gamma) : undefined;
  const b = beta ? backend.floats(beta) : undefined;
  const y = backend.floatOutput(x.shape, x.dtype);
  const mean = backend.floatOutput(statShape, "float32");
  const rstd = backend.floatOutput(statShape, "float32");
  for (let r = 0; r < rows; r++) {
    const base = r * d;
    let sum = 0;
    for (let j = 0; j < d; j++) sum += input[base + j];
    const mu = d === 0 ? 0 : sum / d;
    let sq = 0;
    for (let j = 0; j < d; j++) {
      const c = input[base + j] - mu;
      sq += c * c;
    }
    const rs = 1 / Math.sqrt((d === 0 ? 0 : sq / d) + epsilon);
    mean.data[r] = mu;
    rstd.data[r] = rs;
    for (let j = 0; j < d; j++) {
      const normalized = (input[base + j] - mu) * rs;
      y.data[base + j] = normalized * (g ? g[j] : 1) + (b ? b[j] : 0);
    }
  }
  return [y.commit(), mean.commit(), rstd.commit()];
}

export function layerNormBackwardKernel({ inputs: { dy, x, mean, rstd, gamma }, backend }: KernelArgs<"LayerNormBackward", JsBackend>): [TensorInfo, TensorInfo, TensorInfo] {
  const d = x.shape[x.shape.length - 1];
  const rows = sizeOf(x.shape.slice(0, -1));
  const input = backend.floats(x);
  const grad = backend.floats(dy);
  const mu = backend.floats(mean);
  const rs = backend.floats(rstd);
  const g = gamma ? backend.floats(gamma) : undefined;
  const dgammaAcc = new Float64Array(d);
  const dbetaAcc = new Float64Array(d);
  const dx = backend.floatOutput(x.shape, x.dtype);
  for (let r = 0; r < rows; r++) {
    const base = r * d;
    // dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * gamma.
    let sumDxhat = 0;
    let sumDxhatXhat = 0;
    for (let j = 0; j < d; j++) {
      const xhat = (input[base + j] - mu[r]) * rs[r];
      const dxhat = grad[base + j] * (g ? g[j] : 1);
      sumDxhat += dxhat;
      sumDxhatXhat += dxhat * xhat;
      dgammaAcc[j] += grad[base + j] * xhat;
      dbetaAcc[j] += grad[base + j];
    }
    for (let j = 0; j < d; j++) {
      const xhat = (input[base + j] - mu[r]) * rs[r];
      const dxhat = grad[base + j] * (g ? g[j] : 1);
      dx.data[base + j] = rs[r] * (dxhat - sumDxhat / d - (xhat * sumDxhatXhat) / d);
    }
  }
  const dgamma = backend.floatOutput([d], x.dtype);
  const dbeta = backend.floatOutput([d], x.dtype);
  dgamma.data.set(dgammaAcc);
  dbeta.data.set(dbetaAcc);
  return [dx.commit(), dgamma.commit(), dbeta.commit()];
}

/** Throws for a target out of [0, classes) other than `ignoreIndex` (a row left out). */
function checkTargets(op: string, targets: Int32Array, classes: number, ignoreIndex: number | undefined): void {
  for (let n = 0; n < targets.length; n++) {
    if ((targets[n] < 0 || targets[n] >= classes) && targets[n] !== ignoreIndex) {
      throw new IndexError(`${op}: target ${targets[n]} at row ${n} is out of range [0, ${classes})`);
    }
  }
}

export function crossEntropyKernel({ inputs: { logits, targets }, attrs, backend }: KernelArgs<"CrossEntropy", JsBackend>): TensorInfo {
  const [rows, classes] = logits.shape;
  const t = backend.ints(targets);
  checkTargets("crossEntropy", t, classes, attrs.ignoreIndex);
  const input = backend.floats(logits);
  const out = backend.floatOutput([rows], "float32");
  for (let r = 0; r < rows; r++) {
    if (t[r] === attrs.ignoreIndex) {
      out.data[r] = 0;
      continue;
    }
    const base = r * classes;
    let max = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < classes; j++) if (input[base + j] > max) max = input[base + j];
    let sum = 0;
    for (let j = 0; j < classes; j++) sum += Math.exp(input[base + j] - max);
    // (max - x_t) first: log(sum) + max - x_t lost log(sum) once |max| dwarfed it (logits [1e30, 1e30] gave a loss of 0).
    out.data[r] = max - input[base + t[r]] + Math.log(sum);
  }
  return out.commit();
}

export function crossEntropyBackwardKernel({
  inputs: { logits, targets, dy },
  attrs,
  backend,
}: KernelArgs<"CrossEntropyBackward", JsBackend>): TensorInfo {
  const [rows, classes] = logits.shape;
  const t = backend.ints(targets);
  checkTargets("crossEntropyBackward", t, classes, attrs.ignoreIndex);
  const input = backend.floats(logits);
  const grad = backend.floats(dy);
  const out = backend.floatOutput(logits.shape, logits.dtype);
  for (let r = 0; r < rows; r++) {
    const base = r * classes;
    if (t[r] === attrs.ignoreIndex) {
      out.data.fill(0, base, base + classes);
      continue;
    }
    let max = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < classes; j++) if (input[base + j] > max) max = input[base + j];
    let sum = 0;
    for (let j = 0; j < classes; j++) sum += Math.exp(input[base + j] - max);
    for (let j = 0; j < classes; j++) {
      const p = Math.exp(input[base + j] - max) / sum;
      out.data[base + j] = (p - (j === t[r] ? 1 : 0)) * grad[r];
    }
  }
  return out.commit();
}

/** sum_c a[aAt + c] * b[bAt + c] in float64, in four partial sums (independent adds, which the CPU overlaps). */
function dot(a: Float32Array, aAt: number, b: Float32Array, bAt: number, d: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let c = 0;
  for (; c + 4 <= d; c += 4) {
    s0 += a[aAt + c] * b[bAt + c];
    s1 += a[aAt + c + 1] * b[bAt + c + 1];
    s2 += a[aAt + c + 2] * b[bAt + c + 2];
    s3 += a[aAt + c + 3] * b[bAt + c + 3];
  }
  for (; c < d; c++) s0 += a[aAt + c] * b[bAt + c];
  return s0 + s1 + (s2 + s3);
}

/** An attention call's sizes: `heads` [M, D] matrices of queries, each against N keys. */
export interface AttentionSizes {
  heads: number;
  m: number;
  n: number;
  d: number;
}

function attentionSizes(q: TensorInfo, k: TensorInfo): AttentionSizes {
  const rank = q.shape.length;
  return { heads: sizeOf(q.shape.slice(0, -2)), m: q.shape[rank - 2], n: k.shape[rank - 2], d: q.shape[rank - 1] };
}

/**
 * Attention of every query row over its first `kept(i)` keys, in float64, one row of scores and one row of output at a
 * time (nothing of size [M, N]): out_i = softmax(scale q_i k^T) v over them (zeros when a row keeps none), and
 * `rowDone(index, max, sum)` gets each row's max score and sum of exp(score - max).
 */
function attendRows(
  q: TensorInfo,
  k: TensorInfo,
  v: TensorInfo,
  scale: number,
  backend: JsBackend,
  kept: (i: number, m: number, n: number) => number,
  rowDone?: (index: number, max: number, sum: number) => void,
): TensorInfo {
  const out = backend.floatOutput(q.shape, q.dtype);
  attendMatrices(backend.floats(q), backend.floats(k), backend.floats(v), out.data, attentionSizes(q, k), scale, kept, rowDone);
  return out.commit();
}

/** attendRows over contiguous [heads, m, d] (q, out) and [heads, n, d] (k, v) arrays. */
function attendMatrices(
  qs: Float32Array,
  ks: Float32Array,
  vs: Float32Array,
  out: Float32Array,
  { heads, m, n, d }: AttentionSizes,
  scale: number,
  kept: (i: number, m: number, n: number) => number,
  rowDone?: (index: number, max: number, sum: number) => void,
): void {
  const scores = new Float64Array(n);
  const acc = new Float64Array(d);
  for (let h = 0; h < heads; h++) {
    const keyBase = h * n * d;
    for (let i = 0; i < m; i++) {
      const row = (h * m + i) * d;
      const keys = kept(i, m, n);
      let max = Number.NEGATIVE_INFINITY;
      for (let j = 0; j < keys; j++) {
        const s = scale * dot(qs, row, ks, keyBase + j * d, d);
        scores[j] = s;
        if (s > max || Number.isNaN(s)) max = s;
      }
      acc.fill(0);
      let sum = 0;
      let j = 0;
      // Two values per pass over the accumulator.
      for (; j + 2 <= keys; j += 2) {
        const p0 = Math.exp(scores[j] - max);
        const p1 = Math.exp(scores[j + 1] - max);
        sum += p0 + p1;
        const v0 = keyBase + j * d;
        const v1 = v0 + d;
        for (let c = 0; c < d; c++) acc[c] += p0 * vs[v0 + c] + p1 * vs[v1 + c];
      }
      if (j < keys) {
        const p = Math.exp(scores[j] - max);
        sum += p;
        const value = keyBase + j * d;
        for (let c = 0; c < d; c++) acc[c] += p * vs[value + c];
      }
      for (let c = 0; c < d; c++) out[row + c] = keys === 0 ? 0 : acc[c] / sum;
      rowDone?.(h * m + i, max, sum);
    }
  }
}

/**
 * CachedAttention's cache writes: newKeys and newValues (both or neither, attrs.inPlace) into k and v at `positions`,
 * in place, each position checked against the cache first. What the kernel does before it attends, on this backend
 * and on those that attend natively over the same storage (cpu).
 */
export function cachedAttentionWrites({ inputs: { k, v, positions, newKeys, newValues }, attrs: { inPlace }, backend }: KernelArgs<"CachedAttention", JsBackend>): void {
  if (newKeys !== undefined || newValues !== undefined) {
    if (inPlace !== true || newKeys === undefined || newValues === undefined) {
      throw new ValueError("CachedAttention: newKeys and newValues go together and are written in place (attrs.inPlace)");
    }
    // The new positions' keys and values into the cache first, in place (IndexCopy's writes).
    const axis = k.shape.length - 2;
    const n = k.shape[axis];
    for (const [j, p] of backend.ints(positions).entries()) {
      if (p < 0 || p >= n) throw new IndexError(`cachedAttention: position ${p} of newKeys row ${j} is out of range [0, ${n})`);
    }
    indexCopyKernel({ inputs: { target: k, indices: positions, source: newKeys }, attrs: { axis, inPlace: true }, backend });
    indexCopyKernel({ inputs: { target: v, indices: positions, source: newValues }, attrs: { axis, inPlace: true }, backend });
  }
}

export function cachedAttentionKernel(args: KernelArgs<"CachedAttention", JsBackend>): TensorInfo {
  cachedAttentionWrites(args);
  const {
    inputs: { q, k, v, positions },
    attrs: { scale },
    backend,
  } = args;
  const last = backend.ints(positions);
  return attendRows(q, k, v, scale, backend, (i, _m, n) => Math.max(0, Math.min(last[i] + 1, n)));
}

export function attentionKernel({ inputs: { q, k, v }, attrs: { causal, scale }, backend }: KernelArgs<"Attention", JsBackend>): [TensorInfo, TensorInfo] {
  const lse = backend.floatOutput(q.shape.slice(0, -1), "float32");
  const out = attendRows(
    q,
    k,
    v,
    scale,
    backend,
    (i, m, n) => (causal ? i + n - m + 1 : n),
    (index, max, sum) => {
      lse.data[index] = max + Math.log(sum);
    },
  );
  return [out, lse.commit()];
}

export function attentionBackwardKernel({
  inputs: { dout, q, k, v, out, lse },
  attrs: { causal, scale },
  backend,
}: KernelArgs<"AttentionBackward", JsBackend>): [TensorInfo, TensorInfo, TensorInfo] {
  const dq = backend.floatOutput(q.shape, q.dtype);
  const dk = backend.floatOutput(k.shape, q.dtype);
  const dv = backend.floatOutput(v.shape, q.dtype);
  const inputs = [dout, q, k, v, out, lse].map((t) => backend.floats(t)) as AttentionBackwardInputs;
  attentionGradients(inputs, [dq.data, dk.data, dv.data], attentionSizes(q, k), causal, scale);
  return [dq.commit(), dk.commit(), dv.commit()];
}

/** dout, q, k, v, out and lse as AttentionBackward reads them (contiguous matrices). */
export type AttentionBackwardInputs = [Float32Array, Float32Array, Float32Array, Float32Array, Float32Array, Float32Array];

/**
 * AttentionBackward over contiguous arrays: dq [heads, m, d], dk and dv [heads, n, d] from dout, q, k, v and out. Each
 * row's P is its float64 scores' softmax, exp(s - max) / sum, as the forward computes it, not exp(s - lse) from the
 * saved float32 lse: that lse is the row's log-sum-exp rounded to float32, off by up to half its ulp (0.004 at 1e5,
 * 5e30 at 1e38), and exp of the difference scaled P by e^(that error) (dv at scores near 1e9 was Infinity, dq NaN).
 */
function attentionGradients(
  [g, qs, ks, vs, o]: AttentionBackwardInputs,
  [dq, dk, dv]: [Float32Array, Float32Array, Float32Array],
  { heads, m, n, d }: AttentionSizes,
  causal: boolean,
  scale: number,
): void {
  // Row by row, each P_ij recomputed from the row's scores; dk and dv summed over the rows of one head in float64.
  const dqRow = new Float64Array(d);
  const dkAcc = new Float64Array(n * d);
  const dvAcc = new Float64Array(n * d);
  const probabilities = new Float64Array(n);
  for (let h = 0; h < heads; h++) {
    const keyBase = h * n * d;
    dkAcc.fill(0);
    dvAcc.fill(0);
    for (let i = 0; i < m; i++) {
      const row = (h * m + i) * d;
      const kept = causal ? i + n - m + 1 : n;
      let max = Number.NEGATIVE_INFINITY;
      for (let j = 0; j < kept; j++) {
        const s = scale * dot(qs, row, ks, keyBase + j * d, d);
        probabilities[j] = s;
        if (s > max || Number.isNaN(s)) max = s;
      }
      let sum = 0;
      for (let j = 0; j < kept; j++) {
        const e = Math.exp(probabilities[j] - max);
        probabilities[j] = e;
        sum += e;
      }
      for (let j = 0; j < kept; j++) probabilities[j] /= sum;
      const di = dot(g, row, o, row, d);
      dqRow.fill(0);
      let j = 0;
      // Two keys per pass over the row: each q, dout and dq element is read once for both.
      for (; j + 2 <= kept; j += 2) {
        const k0 = keyBase + j * d;
        const k1 = k0 + d;
        let t0 = 0;
        let t1 = 0;
        for (let c = 0; c < d; c++) {
          const gc = g[row + c];
          t0 += gc * vs[k0 + c];
          t1 += gc * vs[k1 + c];
        }
        const p0 = probabilities[j];
        const p1 = probabilities[j + 1];
        const ds0 = scale * p0 * (t0 - di);
        const ds1 = scale * p1 * (t1 - di);
        const a0 = j * d;
        const a1 = a0 + d;
        for (let c = 0; c < d; c++) {
          const qc = qs[row + c];
          const gc = g[row + c];
          dvAcc[a0 + c] += p0 * gc;
          dvAcc[a1 + c] += p1 * gc;
          dkAcc[a0 + c] += ds0 * qc;
          dkAcc[a1 + c] += ds1 * qc;
          dqRow[c] += ds0 * ks[k0 + c] + ds1 * ks[k1 + c];
        }
      }
      if (j < kept) {
        const key = keyBase + j * d;
        const p = probabilities[j];
        const ds = scale * p * (dot(g, row, vs, key, d) - di);
        const at = j * d;
        for (let c = 0; c < d; c++) {
          dvAcc[at + c] += p * g[row + c];
          dkAcc[at + c] += ds * qs[row + c];
          dqRow[c] += ds * ks[key + c];
        }
      }
      for (let c = 0; c < d; c++) dq[row + c] = dqRow[c];
    }
    for (let c = 0; c < n * d; c++) {
      dk[keyBase + c] = dkAcc[c];
      dv[keyBase + c] = dvAcc[c];
    }
  }
}

/** Contiguous attention over arrays: `heads` matrices of q [m, d] against k and v [n, d]. */
export interface AttentionOnArrays {
  /** out [heads, m, d] and lse [heads, m] (natural log). */
  forward(q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, lse: Float32Array, sizes: AttentionSizes, scale: number, causal: boolean): void;
  /** dq, dk and dv from dout, q, k, v, out and lse. */
  backward(inputs: AttentionBackwardInputs, grads: [Float32Array, Float32Array, Float32Array], sizes: AttentionSizes, scale: number, causal: boolean): void;
}

/**
 * PackedAttention and PackedAttentionBackward from a backend's contiguous attention: the heads of qkv [...batch, T,
 * 3, H, D] gathered into [sequences H, T, D] matrices, attended, and the output and the packed gradient scattered back
 * into their rows. The js backend's kernels, and the cpu backend's over its native products.
 */
export function packedAttentionKernels(attention: AttentionOnArrays): Required<Pick<KernelTable<JsBackend>, "PackedAttention" | "PackedAttentionBackward">> {
  const sizesOf = ({ sequences, t, h, d }: PackedHeads): AttentionSizes => ({ heads: sequences * h, m: t, n: t, d });
  return {
    PackedAttention({ inputs: { qkv }, attrs: { causal, scale }, backend }: KernelArgs<"PackedAttention", JsBackend>): [TensorInfo, TensorInfo] {
      const layout = packedHeadsOf(qkv.shape);
      const rows = backend.floats(qkv);
      const [q, k, v] = [0, 1, 2].map((part) => gatherHeads(rows, layout, part));
      const attended = new Float32Array(q.length);
      const lse = backend.floatOutput([...qkv.shape.slice(0, -4), layout.h, layout.t], "float32");
      attention.forward(q, k, v, attended, lse.data, sizesOf(layout), scale, causal);
      const out = backend.floatOutput([...qkv.shape.slice(0, -3), layout.h, layout.d], qkv.dtype);
      scatterHeads(attended, out.data, { ...layout, parts: 1 }, 0);
      return [out.commit(), lse.commit()];
    },
    PackedAttentionBackward({ inputs: { dout, qkv, out, lse }, attrs: { causal, scale }, backend }: KernelArgs<"PackedAttentionBackward", JsBackend>): TensorInfo {
      const layout = packedHeadsOf(qkv.shape);
      const rows = backend.floats(qkv);
      const [q, k, v] = [0, 1, 2].map((part) => gatherHeads(rows, layout, part));
      const [g, o] = [dout, out].map((x) => gatherHeads(backend.floats(x), { ...layout, parts: 1 }, 0));
      const grads: [Float32Array, Float32Array, Float32Array] = [new Float32Array(q.length), new Float32Array(q.length), new Float32Array(q.length)];
      attention.backward([g, q, k, v, o, backend.floats(lse)], grads, sizesOf(layout), scale, causal);
      const dqkv = backend.floatOutput(qkv.shape, qkv.dtype);
      for (const [part, grad] of grads.entries()) scatterHeads(grad, dqkv.data, layout, part);
      return dqkv.commit();
    },
  };
}

export const { PackedAttention: packedAttentionKernel, PackedAttentionBackward: packedAttentionBackwardKernel } = packedAttentionKernels({
  forward: (q, k, v, out, lse, sizes, scale, causal) =>
    attendMatrices(
      q,
      k,
      v,
      out,
      sizes,
      scale,
      (i, m, n) => (causal ? i + n - m + 1 : n),
      (index, max, sum) => {
        lse[index] = max + Math.log(sum);
      },
    ),
  backward: (inputs, grads, sizes, scale, causal) => attentionGradients(inputs, grads, sizes, causal, scale),
});

/** Adam's settings, as the kernels take them (the step count apart). */
export type AdamHyperparameters = Omit<KernelArgs<"AdamUpdate", JsBackend>["attrs"], "step">;

/** One Adam/AdamW step over one tensor into fresh outputs of the inputs' dtypes. */
export type AdamStep = (
  backend: JsBackend,
  param: TensorInfo,
  grad: TensorInfo,
  m: TensorInfo,
  v: TensorInfo,
  h: AdamHyperparameters,
  step: number,
) => { pOut: FloatOutput; mOut: FloatOutput; vOut: FloatOutput };

/** One step written over param, m and v where they lie; false where it cannot (the kernel then runs the AdamStep). */
export type AdamStepInPlace = (backend: JsBackend, param: TensorInfo, grad: TensorInfo, m: TensorInfo, v: TensorInfo, h: AdamHyperparameters, step: number) => boolean;

/** The js backend's step: float64 math on the widened values (a host backend's fallback for what it does not run). */
export const jsAdamStep: AdamStep = (backend, param, grad, m, v, h, step) => {
  const { lr, beta1, beta2, epsilon, weightDecay, decoupledWeightDecay } = h;
  const p = backend.floats(param);
  const g = backend.floats(grad);
  const m0 = backend.floats(m);
  const v0 = backend.floats(v);
  const pOut = backend.floatOutput(param.shape, param.dtype);
  const mOut = backend.floatOutput(m.shape, m.dtype);
  const vOut = backend.floatOutput(v.shape, v.dtype);
  const correction1 = 1 - beta1 ** step;
  const correction2 = 1 - beta2 ** step;
  for (let i = 0; i < p.length; i++) {
    let gi = g[i];
    let pi = p[i];
    if (decoupledWeightDecay) pi *= 1 - lr * weightDecay;
    else gi += weightDecay * p[i];
    const mi = beta1 * m0[i] + (1 - beta1) * gi;
    const vi = beta2 * v0[i] + (1 - beta2) * gi * gi;
    mOut.data[i] = mi;
    vOut.data[i] = vi;
    pOut.data[i] = pi - (lr * (mi / correction1)) / (Math.sqrt(vi / correction2) + epsilon);
  }
  return { pOut, mOut, vOut };
};

/**
 * AdamUpdate and MultiTensorAdamUpdate over a per-tensor step: the step counts and learning rate read when the kernel
 * runs (capturable), the copies in copyDType, the new counts, in place or into new outputs. `step` computes into fresh
 * outputs; `stepInPlace` (a host backend's native update) writes the tensors where they lie when it can.
 */
export function adamKernels(step: AdamStep, stepInPlace?: AdamStepInPlace): Required<Pick<KernelTable<JsBackend>, "AdamUpdate" | "MultiTensorAdamUpdate">> {
  return {
    AdamUpdate({ inputs: { param, grad, m, v }, attrs, backend }) {
      const { pOut, mOut, vOut } = step(backend, param, grad, m, v, attrs, attrs.step);
      return [pOut.commit(), mOut.commit(), vOut.commit()];
    },
    MultiTensorAdamUpdate({ inputs, attrs, backend }) {
      const n = inputs.params.length;
      // Step counts and the learning rate on the device (capturable): read here, when the kernel runs.
      const counts = inputs.stepCounts;
      const stepOf = (i: number) => (counts === undefined ? attrs.steps[i] : backend.floats(counts[i])[0] + 1);
      const h = inputs.lrValue === undefined ? attrs : { ...attrs, lr: attrs.lr * backend.floats(inputs.lrValue)[0] };
      const newCount = (i: number, count: number): TensorInfo => {
        const out = backend.floatOutput([...(counts as TensorInfo[])[i].shape], "float32");
        out.data[0] = count;
        return out.commit();
      };
      // The copy rounds the stored param (already rounded to its own dtype), as a cast of it would.
      const copyOf = (stored: TensorInfo): TensorInfo => {
        const copy = backend.floatOutput(stored.shape, attrs.copyDType as FloatDType);
        copy.data.set(backend.floats(stored));
        return copy.commit();
      };
      if (attrs.inPlace) {
        // Computed into fresh buffers and stored over the inputs, unless stepInPlace writes them where they lie.
        const into = (target: TensorInfo, result: TensorInfo) => {
          backend.write(target.dataId, backend.storage(result));
          backend.free(result.dataId);
        };
        for (let i = 0; i < n; i++) {
          const [param, m, v] = [inputs.params[i], inputs.m[i], inputs.v[i]];
          const count = stepOf(i);
          if (!stepInPlace?.(backend, param, inputs.grads[i], m, v, h, count)) {
            const { pOut, mOut, vOut } = step(backend, param, inputs.grads[i], m, v, h, count);
            into(param, pOut.commit());
            into(m, mOut.commit());
            into(v, vOut.commit());
          }
          // Rounded straight into the copy's buffer (a new output, then copied over it, had taken four passes).
          if (attrs.copyDType !== null) backend.storeFloats((inputs.copies as TensorInfo[])[i], backend.floats(param));
          if (counts !== undefined) into(counts[i], newCount(i, count));
        }
        return [];
      }
      const params: TensorInfo[] = [];
      const ms: TensorInfo[] = [];
      const vs: TensorInfo[] = [];
      const copies: TensorInfo[] = [];
      const steps: TensorInfo[] = [];
      for (let i = 0; i < n; i++) {
        const count = stepOf(i);
        const { pOut, mOut, vOut } = step(backend, inputs.params[i], inputs.grads[i], inputs.m[i], inputs.v[i], h, count);
        const stored = pOut.commit();
        params.push(stored);
        if (attrs.copyDType !== null) copies.push(copyOf(stored));
        ms.push(mOut.commit());
        vs.push(vOut.commit());
        if (counts !== undefined) steps.push(newCount(i, count));
      }
      return [...params, ...ms, ...vs, ...copies, ...steps];
    },
  };
}

export const { AdamUpdate: adamUpdateKernel, MultiTensorAdamUpdate: multiTensorAdamUpdateKernel } = adamKernels(jsAdamStep);
