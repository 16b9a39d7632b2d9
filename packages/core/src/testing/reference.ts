/**
 * Float64 reference math for the conformance suite, written independently of every
 * backend: plain index arithmetic over row-major arrays, dense W for block-sparse ops.
 */
import type { BsrPattern } from "@blocksparse/format";

/** A float64 (or integer-valued) row-major array. */
export interface Ref {
  shape: number[];
  data: Float64Array;
}

export const size = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

export function ref(shape: readonly number[], fill: (i: number) => number = () => 0): Ref {
  const data = new Float64Array(size(shape));
  for (let i = 0; i < data.length; i++) data[i] = fill(i);
  return { shape: [...shape], data };
}

function strides(shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    out[i] = s;
    s *= shape[i];
  }
  return out;
}

/** Multi-index of flat position `flat` in `shape`. */
export function unravel(flat: number, shape: readonly number[]): number[] {
  const index = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    index[d] = shape[d] === 0 ? 0 : flat % shape[d];
    flat = shape[d] === 0 ? 0 : Math.floor(flat / shape[d]);
  }
  return index;
}

function ravel(index: readonly number[], shape: readonly number[]): number {
  const st = strides(shape);
  return index.reduce((sum, v, d) => sum + v * st[d], 0);
}

export function broadcastShape(...shapes: (readonly number[])[]): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let dim = 1;
    for (const s of shapes) {
      const d = s[s.length - rank + i] ?? 1;
      if (d !== 1) dim = d;
    }
    out.push(dim);
  }
  return out;
}

/** The element of `a` that output index `index` reads under broadcasting. */
function at(a: Ref, index: readonly number[]): number {
  const offset = index.length - a.shape.length;
  const own = a.shape.map((d, i) => (d === 1 ? 0 : index[i + offset]));
  return a.data[ravel(own, a.shape)];
}

export function map(a: Ref, fn: (x: number) => number): Ref {
  return ref(a.shape, (i) => fn(a.data[i]));
}

export function zip(inputs: Ref[], fn: (...xs: number[]) => number): Ref {
  const shape = broadcastShape(...inputs.map((r) => r.shape));
  return ref(shape, (i) => {
    const index = unravel(i, shape);
    return fn(...inputs.map((r) => at(r, index)));
  });
}

/** erf to double precision: Maclaurin series below 1, 1 - erfc above. */
export function erf(x: number): number {
  const z = Math.abs(x);
  if (z >= 1) return Math.sign(x) * (1 - erfc(z));
  let term = z;
  let sum = z;
  for (let n = 1; n < 200; n++) {
    term *= (-z * z) / n;
    const add = term / (2 * n + 1);
    sum += add;
    if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
  }
  return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
}

/** erfc to a few ulps, relative, also in the tails: 1 - erf below 1, Laplace's continued fraction above. */
export function erfc(x: number): number {
  const z = Math.abs(x);
  if (!(z >= 1)) return 1 - erf(x);
  if (z > 28) return x < 0 ? 2 : 0;
  // erfc(z) = exp(-z^2)/sqrt(pi) * 1/(z + 1/2/(z + 1/(z + 3/2/(z + ...)))), 200 levels from the bottom (enough at z = 1).
  let fraction = z;
  for (let k = 200; k >= 1; k--) fraction = z + k / 2 / fraction;
  // exp(-z^2) as exp(-r^2) exp((r - z)(r + z)) with r = z to 1/16, r^2 exact: z * z's rounding would cost z^2 ulps.
  const r = Math.round(z * 16) / 16;
  const tail = (Math.exp(-r * r) * Math.exp((r - z) * (r + z))) / Math.sqrt(Math.PI) / fraction;
  return x < 0 ? 2 - tail : tail;
}

export function relu(x: number): number {
  return x > 0 ? x : Number.isNaN(x) ? x : 0;
}

/** GELU; at +-inf its limits (+inf and 0), where x Phi(x) would multiply an infinity by 0. */
export function gelu(x: number, approximate: "none" | "tanh"): number {
  if (x === Number.POSITIVE_INFINITY) return x;
  if (x === Number.NEGATIVE_INFINITY) return 0;
  // The tanh form's gate 0.5 (1 + tanh u) as the logistic 1 / (1 + e^(-2u)): 1 + tanh u cancels for x < -4.
  if (approximate === "tanh") return x / (1 + Math.exp(-2 * Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
  // Phi(x) as erfc(-x / sqrt 2) / 2: 1 + erf(x / sqrt 2) cancels for x < 0.
  return 0.5 * x * erfc(-x / Math.SQRT2);
}

/** d/dx gelu by its closed form; at +-inf its limits, 1 and 0. */
export function geluGrad(x: number, approximate: "none" | "tanh"): number {
  if (x === Number.POSITIVE_INFINITY) return 1;
  if (x === Number.NEGATIVE_INFINITY) return 0;
  if (approximate === "tanh") {
    // s + 2 x s (1 - s) du/dx for the gate s = 1 / (1 + e^(-2u)), 0 * inf avoided where s saturates.
    const c = Math.sqrt(2 / Math.PI);
    const s = 1 / (1 + Math.exp(-2 * c * (x + 0.044715 * x ** 3)));
    const w = s * (1 - s);
    return w === 0 ? s : s + 2 * x * w * c * (1 + 3 * 0.044715 * x * x);
  }
  const pdf = Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
  return 0.5 * erfc(-x / Math.SQRT2) + x * pdf;
}

/** Reduction over `axes` with a combine function and its identity. */
export function reduce(
  a: Ref,
  axes: readonly number[],
  keepDims: boolean,
  init: number,
  combine: (acc: number, x: number) => number,
  finish: (acc: number, count: number) => number = (acc) => acc,
): Ref {
  const keptShape = a.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const acc = ref(keptShape, () => init);
  const count = axes.reduce((c, ax) => c * a.shape[ax], 1);
  for (let i = 0; i < a.data.length; i++) {
    const index = unravel(i, a.shape).map((v, d) => (axes.includes(d) ? 0 : v));
    const o = ravel(index, keptShape);
    acc.data[o] = combine(acc.data[o], a.data[i]);
  }
  const outShape = keepDims ? keptShape : a.shape.filter((_, i) => !axes.includes(i));
  return { shape: outShape, data: acc.data.map((v) => finish(v, count)) };
}

export function argmax(a: Ref, axis: number, keepDims: boolean): Ref {
  const outKept = a.shape.map((d, i) => (i === axis ? 1 : d));
  const out = ref(outKept);
  const best = ref(outKept, () => Number.NEGATIVE_INFINITY);
  for (let i = 0; i < a.data.length; i++) {
    const index = unravel(i, a.shape);
    const position = index[axis];
    index[axis] = 0;
    const o = ravel(index, outKept);
    if (a.data[i] > best.data[o]) {
      best.data[o] = a.data[i];
      out.data[o] = position;
    }
  }
  return { shape: keepDims ? outKept : a.shape.filter((_, i) => i !== axis), data: out.data };
}

/** Rows of the last axis as arrays (for softmax, layerNorm, crossEntropy). */
function rows(a: Ref): Float64Array[] {
  const n = a.shape[a.shape.length - 1];
  const count = n === 0 ? 0 : a.data.length / n;
  return Array.from({ length: count }, (_, r) => a.data.subarray(r * n, (r + 1) * n));
}

export function softmax(a: Ref, log: boolean): Ref {
  const out = ref(a.shape);
  const n = a.shape[a.shape.length - 1];
  rows(a).forEach((row, r) => {
    const max = Math.max(...row);
    const sum = row.reduce((s, v) => s + Math.exp(v - max), 0);
    row.forEach((v, j) => {
      out.data[r * n + j] = log ? v - max - Math.log(sum) : Math.exp(v - max) / sum;
    });
  });
  return out;
}

export function layerNorm(x: Ref, gamma: Ref | null, beta: Ref | null, eps: number): { y: Ref; mean: Ref; rstd: Ref } {
  const d = x.shape[x.shape.length - 1];
  const statShape = x.shape.slice(0, -1);
  const y = ref(x.shape);
  const mean = ref(statShape);
  const rstd = ref(statShape);
  rows(x).forEach((row, r) => {
    const mu = row.reduce((s, v) => s + v, 0) / d;
    const variance = row.reduce((s, v) => s + (v - mu) ** 2, 0) / d;
    const rs = 1 / Math.sqrt(variance + eps);
    mean.data[r] = mu;
    rstd.data[r] = rs;
    row.forEach((v, j) => {
      y.data[r * d + j] = (v - mu) * rs * (gamma ? gamma.data[j] : 1) + (beta ? beta.data[j] : 0);
    });
  });
  return { y, mean, rstd };
}

/**
 * LayerNorm's gradients by the chain rule written out per element (an O(d^2) Jacobian
 * product, independent of the fused formula backends use).
 */
export function layerNormBackward(dy: Ref, x: Ref, gamma: Ref | null, eps: number): { dx: Ref; dgamma: Ref; dbeta: Ref } {
  const d = x.shape[x.shape.length - 1];
  const dx = ref(x.shape);
  const dgamma = ref([d]);
  const dbeta = ref([d]);
  rows(x).forEach((row, r) => {
    const mu = row.reduce((s, v) => s + v, 0) / d;
    const variance = row.reduce((s, v) => s + (v - mu) ** 2, 0) / d;
    const rs = 1 / Math.sqrt(variance + eps);
    for (let j = 0; j < d; j++) {
      const g = dy.data[r * d + j];
      dgamma.data[j] += g * (row[j] - mu) * rs;
      dbeta.data[j] += g;
    }
    for (let i = 0; i < d; i++) {
      let sum = 0;
      for (let j = 0; j < d; j++) {
        // d xhat_j / d x_i = rs * (delta_ij - 1/d) - (x_j - mu) * rs^3 * (x_i - mu) / d
        const dxhat = rs * ((i === j ? 1 : 0) - 1 / d) - ((row[j] - mu) * rs ** 3 * (row[i] - mu)) / d;
        sum += dy.data[r * d + j] * (gamma ? gamma.data[j] : 1) * dxhat;
      }
      dx.data[r * d + i] = sum;
    }
  });
  return { dx, dgamma, dbeta };
}

/** The sizes of an attention call: `heads` [M, D] matrices of q, each against N rows of k and v. */
function attentionSizes(q: Ref, k: Ref): { heads: number; m: number; n: number; d: number } {
  const rank = q.shape.length;
  return { heads: size(q.shape.slice(0, -2)), m: q.shape[rank - 2], n: k.shape[rank - 2], d: q.shape[rank - 1] };
}

/** Whether query i of m keeps key j of n: all of them, or causally (Softmax's rule) j <= i + n - m. */
const keeps = (causal: boolean, i: number, j: number, m: number, n: number): boolean => !causal || j <= i + n - m;

/**
 * Attention per head: out = softmax(scale q k^T, masked) v and lse, each row's natural-log log-sum-exp of its kept
 * scores. `magnitudes`: the largest sum of absolute terms behind an element of each output (sum_j p_ij |v_jc| for out,
 * |max_j s_ij| + scale max_j sum_c |q_ic k_jc| + log(kept) for lse), the size its rounding errors scale with where the
 * terms cancel.
 */
export function attention(q: Ref, k: Ref, v: Ref, causal: boolean, scale: number): { out: Ref; lse: Ref; magnitudes: { out: number; lse: number } } {
  const { m, n } = attentionSizes(q, k);
  return attentionKeeping(q, k, v, scale, (i, j) => keeps(causal, i, j, m, n));
}

/** CachedAttention: query i keeps the keys j <= positions[i]; a row keeping none is zeros. */
export function cachedAttention(q: Ref, k: Ref, v: Ref, positions: readonly number[], scale: number): { out: Ref; magnitudes: { out: number } } {
  const { out, magnitudes } = attentionKeeping(q, k, v, scale, (i, j) => j <= positions[i]);
  return { out, magnitudes: { out: magnitudes.out } };
}

function attentionKeeping(q: Ref, k: Ref, v: Ref, scale: number, keep: (i: number, j: number) => boolean): { out: Ref; lse: Ref; magnitudes: { out: number; lse: number } } {
  const { heads, m, n, d } = attentionSizes(q, k);
  const out = ref(q.shape);
  const lse = ref(q.shape.slice(0, -1));
  const magnitudes = { out: 0, lse: 0 };
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < m; i++) {
      const scores: number[] = [];
      let absScore = 0;
      for (let j = 0; j < n; j++) {
        if (!keep(i, j)) continue;
        let dot = 0;
        let abs = 0;
        for (let c = 0; c < d; c++) {
          dot += q.data[(h * m + i) * d + c] * k.data[(h * n + j) * d + c];
          abs += Math.abs(q.data[(h * m + i) * d + c] * k.data[(h * n + j) * d + c]);
        }
        scores.push(scale * dot);
        absScore = Math.max(absScore, scale * abs);
      }
      if (scores.length === 0) continue;
      const max = Math.max(...scores);
      const logSum = max + Math.log(scores.reduce((total, s) => total + Math.exp(s - max), 0));
      lse.data[h * m + i] = logSum;
      magnitudes.lse = Math.max(magnitudes.lse, Math.abs(max) + absScore + Math.log(scores.length));
      for (let c = 0; c < d; c++) {
        let abs = 0;
        scores.forEach((s, j) => {
          const term = Math.exp(s - logSum) * v.data[(h * n + j) * d + c];
          out.data[(h * m + i) * d + c] += term;
          abs += Math.abs(term);
        });
        magnitudes.out = Math.max(magnitudes.out, abs);
      }
    }
  }
  return { out, lse, magnitudes };
}

/**
 * Attention's gradients as matrices per head, from the given out and lse: P = exp(scale q k^T - lse) (0 where masked),
 * dP = dout v^T, dS = P (dP - rowsum(dout * out)), dq = scale dS k, dk = scale dS^T q, dv = P^T dout. `magnitudes`: the
 * largest sum of absolute terms behind an element of each gradient (dS_ij's terms P_ij |dP_ij| and P_ij |D_i| taken
 * apart), the size its rounding errors scale with: dS cancels to 0 where a row keeps one key.
 */
export function attentionBackward(
  dout: Ref,
  q: Ref,
  k: Ref,
  v: Ref,
  out: Ref,
  lse: Ref,
  causal: boolean,
  scale: number,
): { dq: Ref; dk: Ref; dv: Ref; magnitudes: { dq: number; dk: number; dv: number } } {
  const { heads, m, n, d } = attentionSizes(q, k);
  const dq = ref(q.shape);
  const dk = ref(k.shape);
  const dv = ref(v.shape);
  const bounds = { dq: ref(q.shape), dk: ref(k.shape), dv: ref(v.shape) };
  const dot = (a: Ref, row: number, b: Ref, other: number) => {
    let total = 0;
    for (let c = 0; c < d; c++) total += a.data[row * d + c] * b.data[other * d + c];
    return total;
  };
  for (let h = 0; h < heads; h++) {
    const p = new Float64Array(m * n);
    const ds = new Float64Array(m * n);
    const dsAbs = new Float64Array(m * n);
    for (let i = 0; i < m; i++) {
      const rowSum = dot(dout, h * m + i, out, h * m + i);
      for (let j = 0; j < n; j++) {
        if (!keeps(causal, i, j, m, n)) continue;
        p[i * n + j] = Math.exp(scale * dot(q, h * m + i, k, h * n + j) - lse.data[h * m + i]);
        const dp = dot(dout, h * m + i, v, h * n + j);
        ds[i * n + j] = p[i * n + j] * (dp - rowSum);
        dsAbs[i * n + j] = p[i * n + j] * (Math.abs(dp) + Math.abs(rowSum));
      }
    }
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        for (let c = 0; c < d; c++) {
          const qi = (h * m + i) * d + c;
          const kj = (h * n + j) * d + c;
          dq.data[qi] += scale * ds[i * n + j] * k.data[kj];
          dk.data[kj] += scale * ds[i * n + j] * q.data[qi];
          dv.data[kj] += p[i * n + j] * dout.data[qi];
          bounds.dq.data[qi] += scale * dsAbs[i * n + j] * Math.abs(k.data[kj]);
          bounds.dk.data[kj] += scale * dsAbs[i * n + j] * Math.abs(q.data[qi]);
          bounds.dv.data[kj] += p[i * n + j] * Math.abs(dout.data[qi]);
        }
      }
    }
  }
  const largest = (a: Ref) => a.data.reduce((most, x) => Math.max(most, x), 0);
  return { dq, dk, dv, magnitudes: { dq: largest(bounds.dq), dk: largest(bounds.dk), dv: largest(bounds.dv) } };
}

/** Part `part` (0 queries, 1 keys, 2 values) of packed qkv [...batch, T, 3, H, D] as head-major [...batch, H, T, D]. */
export function unpackHeads(qkv: Ref, part: number): Ref {
  const rank = qkv.shape.length;
  const [t, , h, d] = qkv.shape.slice(rank - 4);
  const batch = qkv.shape.slice(0, rank - 4);
  const begin = qkv.shape.map((_, axis) => (axis === rank - 3 ? part : 0));
  return swapHeads(reshape(slice(qkv, begin, [...batch, t, 1, h, d]), [...batch, t, h, d]));
}

/** Head-major [...batch, H, T, D] as token-major [...batch, T, H, D] (and back: the same swap). */
export function swapHeads(x: Ref): Ref {
  const rank = x.shape.length;
  return transpose(x, [...x.shape.keys()].map((axis) => (axis === rank - 3 ? rank - 2 : axis === rank - 2 ? rank - 3 : axis)));
}

/** Head-major q, k and v (or their gradients) [...batch, H, T, D] packed as [...batch, T, 3, H, D]. */
export function packHeads(parts: Ref[]): Ref {
  return concat(
    parts.map((part) => {
      const rows = swapHeads(part);
      return reshape(rows, [...rows.shape.slice(0, -2), 1, ...rows.shape.slice(-2)]);
    }),
    parts[0].shape.length - 2,
  );
}

/** Per-row cross-entropy; a row whose target is `ignoreIndex` is 0. */
export function crossEntropy(logits: Ref, targets: ArrayLike<number>, ignoreIndex?: number): Ref {
  const n = logits.shape[1];
  return ref([logits.shape[0]], (r) => {
    if (targets[r] === ignoreIndex) return 0;
    const row = logits.data.subarray(r * n, (r + 1) * n);
    const max = Math.max(...row);
    return Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0)) + max - row[targets[r]];
  });
}

/** log softmax of each row of [N, C]. */
function logSoftmaxRows(logits: Ref): Float64Array[] {
  return rows(logits).map((row) => {
    const max = Math.max(...row);
    const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
    return row.map((v) => v - lse);
  });
}

/**
 * torch.nn.functional.cross_entropy against class indices with `weight` and `label_smoothing`, each row's loss
 * (1 - e) w[t] (-log p_t) + (e / C) sum_c w_c (-log p_c), 0 where the target is `ignoreIndex`; `divisor` is "mean"'s
 * denominator: the sum of w[t] over the rows kept (their count without weight).
 */
export function crossEntropyWeighted(
  logits: Ref,
  targets: ArrayLike<number>,
  options: { weight?: ArrayLike<number>; ignoreIndex?: number; labelSmoothing?: number },
): { rows: Ref; divisor: number } {
  const { weight, ignoreIndex, labelSmoothing: e = 0 } = options;
  const classes = logits.shape[1];
  const w = (c: number) => (weight === undefined ? 1 : weight[c]);
  const logp = logSoftmaxRows(logits);
  let divisor = 0;
  const out = ref([logits.shape[0]], (r) => {
    if (targets[r] === ignoreIndex) return 0;
    divisor += w(targets[r]);
    const smooth = logp[r].reduce((s, v, c) => s - w(c) * v, 0);
    return (1 - e) * w(targets[r]) * -logp[r][targets[r]] + (e / classes) * smooth;
  });
  return { rows: out, divisor };
}

/**
 * torch.nn.functional.cross_entropy against class probabilities [N, C]: each row's -sum_c w_c q_c log p_c with
 * q = (1 - e) probs + e / C ("mean" divides by N).
 */
export function crossEntropyProbabilities(logits: Ref, probs: Ref, options: { weight?: ArrayLike<number>; labelSmoothing?: number } = {}): Ref {
  const { weight, labelSmoothing: e = 0 } = options;
  const classes = logits.shape[1];
  const logp = logSoftmaxRows(logits);
  return ref([logits.shape[0]], (r) =>
    logp[r].reduce((s, v, c) => s - (weight === undefined ? 1 : weight[c]) * ((1 - e) * probs.data[r * classes + c] + e / classes) * v, 0),
  );
}

/** The gradient of each row's cross-entropy times dy; rows whose target is `ignoreIndex` are 0. */
export function crossEntropyBackward(logits: Ref, targets: ArrayLike<number>, dy: Ref, ignoreIndex?: number): Ref {
  const p = softmax(logits, false);
  const n = logits.shape[1];
  return ref(logits.shape, (i) => {
    const r = Math.floor(i / n);
    if (targets[r] === ignoreIndex) return 0;
    return (p.data[i] - (i % n === targets[r] ? 1 : 0)) * dy.data[r];
  });
}

export function transpose(a: Ref, perm: readonly number[]): Ref {
  const shape = perm.map((p) => a.shape[p]);
  return ref(shape, (i) => {
    const index = unravel(i, shape);
    const source = new Array<number>(a.shape.length);
    perm.forEach((p, k) => {
      source[p] = index[k];
    });
    return a.data[ravel(source, a.shape)];
  });
}

export function slice(a: Ref, begin: readonly number[], sizes: readonly number[]): Ref {
  return ref(sizes, (i) => a.data[ravel(unravel(i, sizes).map((v, d) => v + begin[d]), a.shape)]);
}

export function concat(parts: Ref[], axis: number): Ref {
  const shape = [...parts[0].shape];
  shape[axis] = parts.reduce((s, p) => s + p.shape[axis], 0);
  return ref(shape, (i) => {
    const index = unravel(i, shape);
    let k = 0;
    while (index[axis] >= parts[k].shape[axis]) index[axis] -= parts[k++].shape[axis];
    return parts[k].data[ravel(index, parts[k].shape)];
  });
}

export function gather(x: Ref, indices: Ref, axis: number): Ref {
  const shape = [...x.shape.slice(0, axis), ...indices.shape, ...x.shape.slice(axis + 1)];
  const ir = indices.shape.length;
  return ref(shape, (i) => {
    const index = unravel(i, shape);
    const inner = index.slice(axis, axis + ir);
    const source = [...index.slice(0, axis), indices.data[ravel(inner, indices.shape)], ...index.slice(axis + ir)];
    return x.data[ravel(source, x.shape)];
  });
}

export function scatterAdd(indices: Ref, updates: Ref, shape: readonly number[], axis: number): Ref {
  const out = ref(shape);
  const ir = indices.shape.length;
  for (let i = 0; i < updates.data.length; i++) {
    const index = unravel(i, updates.shape);
    const inner = index.slice(axis, axis + ir);
    const target = [...index.slice(0, axis), indices.data[ravel(inner, indices.shape)], ...index.slice(axis + ir)];
    out.data[ravel(target, shape)] += updates.data[i];
  }
  return out;
}

/** Batched op(a) op(b) with broadcast batch dims. */
export function matmul(a: Ref, b: Ref, transposeA: boolean, transposeB: boolean): Ref {
  const ra = a.shape.length;
  const rb = b.shape.length;
  const m = transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
  const k = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
  const n = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
  const batch = broadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const shape = [...batch, m, n];
  return ref(shape, (flat) => {
    const index = unravel(flat, shape);
    const bi = index.slice(0, -2);
    const [i, j] = index.slice(-2);
    const aBatch = a.shape.slice(0, -2).map((d, q) => (d === 1 ? 0 : bi[q + bi.length - (ra - 2)]));
    const bBatch = b.shape.slice(0, -2).map((d, q) => (d === 1 ? 0 : bi[q + bi.length - (rb - 2)]));
    let sum = 0;
    for (let p = 0; p < k; p++) {
      const av = a.data[ravel([...aBatch, ...(transposeA ? [p, i] : [i, p])], a.shape)];
      const bv = b.data[ravel([...bBatch, ...(transposeB ? [j, p] : [p, j])], b.shape)];
      sum += av * bv;
    }
    return sum;
  });
}

/** The dense [rows, cols] matrix of a pattern and its block values. */
export function denseWeight(pattern: BsrPattern, values: Ref): Ref {
  const [rows, cols] = pattern.shape;
  const [R, C] = pattern.blockShape;
  const w = ref([rows, cols]);
  for (let br = 0; br < pattern.blockRows; br++) {
    for (let k = pattern.blockRowPtr[br]; k < pattern.blockRowPtr[br + 1]; k++) {
      const bc = pattern.blockColIdx[k];
      for (let r = 0; r < R; r++) {
        for (let c = 0; c < C; c++) w.data[(br * R + r) * cols + bc * C + c] = values.data[(k * R + r) * C + c];
      }
    }
  }
  return w;
}

export function reshape(a: Ref, shape: readonly number[]): Ref {
  return { shape: [...shape], data: a.data };
}
