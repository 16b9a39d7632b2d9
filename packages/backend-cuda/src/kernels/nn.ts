import { type KernelArgs, packedHeadsOf, type TensorInfo, ValueError, sizeOf } from "@blocksparse/core";
import type { CudaBackend } from "../backend";
import { ADAM_TABLE_ENTRY } from "../native";

/** [rows, width] of a tensor normalised over its last axis. */
function rowsOf(shape: readonly number[]): [number, number] {
  const width = shape.length === 0 ? 1 : shape[shape.length - 1];
  return [width === 0 ? sizeOf(shape.slice(0, -1)) : sizeOf(shape) / width, width];
}

export function layerNormKernel({
  inputs: { x, gamma, beta },
  attrs: { epsilon },
  backend,
}: KernelArgs<"LayerNorm", CudaBackend>): [TensorInfo, TensorInfo, TensorInfo] {
  const [rows, width] = rowsOf(x.shape);
  const y = backend.output(x.shape, x.dtype);
  const mean = backend.output(x.shape.slice(0, -1), "float32");
  const rstd = backend.output(x.shape.slice(0, -1), "float32");
  backend.addon.layerNorm(
    backend.code(x.dtype),
    backend.handle(x),
    gamma ? backend.handle(gamma) : null,
    beta ? backend.handle(beta) : null,
    backend.handle(y),
    backend.handle(mean),
    backend.handle(rstd),
    rows,
    width,
    epsilon,
  );
  return [y, mean, rstd];
}

export function layerNormBackwardKernel({
  inputs: { dy, x, mean, rstd, gamma },
  backend,
}: KernelArgs<"LayerNormBackward", CudaBackend>): [TensorInfo, TensorInfo, TensorInfo] {
  const [rows, width] = rowsOf(x.shape);
  const dx = backend.output(x.shape, x.dtype);
  const dgamma = backend.output([width], x.dtype);
  const dbeta = backend.output([width], x.dtype);
  backend.addon.layerNormBackward(
    backend.code(x.dtype),
    backend.handle(dy),
    backend.handle(x),
    backend.handle(mean),
    backend.handle(rstd),
    gamma ? backend.handle(gamma) : null,
    backend.handle(dx),
    backend.handle(dgamma),
    backend.handle(dbeta),
    rows,
    width,
  );
  return [dx, dgamma, dbeta];
}

// The kernels give a target out of [0, classes) a row of 0 (loss and gradient); one other than attrs.ignoreIndex (a
// negative integer; 0 stands for none, as no class is out of range) is reported as an IndexError at the next read or
// synchronize, as the host backends throw for it at once.
export function crossEntropyKernel({ inputs: { logits, targets }, attrs, backend }: KernelArgs<"CrossEntropy", CudaBackend>): TensorInfo {
  const [rows, classes] = logits.shape;
  const loss = backend.output([rows], "float32");
  backend.addon.crossEntropy(
    backend.code(logits.dtype),
    backend.handle(logits),
    backend.handle(targets),
    backend.handle(loss),
    rows,
    classes,
    attrs.ignoreIndex ?? 0,
  );
  return loss;
}

export function crossEntropyBackwardKernel({
  inputs: { logits, targets, dy },
  attrs,
  backend,
}: KernelArgs<"CrossEntropyBackward", CudaBackend>): TensorInfo {
  const [rows, classes] = logits.shape;
  const dlogits = backend.output(logits.shape, logits.dtype);
  backend.addon.crossEntropyBackward(
    backend.code(logits.dtype),
    backend.handle(logits),
    backend.handle(targets),
    backend.handle(dy),
    backend.handle(dlogits),
    rows,
    classes,
    attrs.ignoreIndex ?? 0,
  );
  return dlogits;
}

export function adamUpdateKernel({
  inputs: { param, grad, m, v },
  attrs,
  backend,
}: KernelArgs<"AdamUpdate", CudaBackend>): [TensorInfo, TensorInfo, TensorInfo] {
  const paramOut = backend.output(param.shape, param.dtype);
  const mOut = backend.output(m.shape, m.dtype);
  const vOut = backend.output(v.shape, v.dtype);
  backend.addon.adamUpdate(
    backend.code(param.dtype),
    backend.handle(param),
    backend.handle(grad),
    backend.code(m.dtype),
    backend.handle(m),
    backend.code(v.dtype),
    backend.handle(v),
    backend.handle(paramOut),
    backend.handle(mOut),
    backend.handle(vOut),
    sizeOf(param.shape),
    {
      lr: attrs.lr,
      beta1: attrs.beta1,
      beta2: attrs.beta2,
      epsilon: attrs.epsilon,
      weightDecay: attrs.weightDecay,
      decoupledWeightDecay: attrs.decoupledWeightDecay,
      step: attrs.step,
    },
  );
  return [paramOut, mOut, vOut];
}

export function multiTensorAdamUpdateKernel({ inputs, attrs, backend }: KernelArgs<"MultiTensorAdamUpdate", CudaBackend>): TensorInfo[] {
  const n = inputs.params.length;
  // In place: the kernel reads and writes each element in the same thread, so an output may be its input.
  const inPlace = attrs.inPlace === true;
  const counts = inputs.stepCounts;
  const outputs: TensorInfo[] = inPlace ? [] : new Array((attrs.copyDType === null ? 3 * n : 4 * n) + (counts === undefined ? 0 : n));
  const countsAt = attrs.copyDType === null ? 3 * n : 4 * n;
  const table = new Float64Array(n * ADAM_TABLE_ENTRY);
  for (let i = 0; i < n; i++) {
    const param = inputs.params[i];
    const grad = inputs.grads[i];
    const m = inputs.m[i];
    const v = inputs.v[i];
    const paramOut = inPlace ? param : backend.output(param.shape, param.dtype);
    const mOut = inPlace ? m : backend.output(m.shape, m.dtype);
    const vOut = inPlace ? v : backend.output(v.shape, v.dtype);
    const copy = attrs.copyDType === null ? null : inPlace ? (inputs.copies as TensorInfo[])[i] : backend.output(param.shape, attrs.copyDType);
    const stepIn = counts === undefined ? null : counts[i];
    const stepOut = stepIn === null ? null : inPlace ? stepIn : backend.output(stepIn.shape, "float32");
    if (!inPlace) {
      outputs[i] = paramOut;
      outputs[n + i] = mOut;
      outputs[2 * n + i] = vOut;
      if (copy !== null) outputs[3 * n + i] = copy;
      if (stepOut !== null) outputs[countsAt + i] = stepOut;
    }
    // Written in place: this runs for every parameter of every step.
    const at = i * ADAM_TABLE_ENTRY;
    table[at] = sizeOf(param.shape);
    table[at + 1] = stepIn === null ? attrs.steps[i] : 0;
    table[at + 2] = backend.code(param.dtype);
    table[at + 3] = backend.code(grad.dtype);
    table[at + 4] = backend.code(m.dtype);
    table[at + 5] = backend.code(v.dtype);
    table[at + 6] = backend.handle(param);
    table[at + 7] = backend.handle(grad);
    table[at + 8] = backend.handle(m);
    table[at + 9] = backend.handle(v);
    table[at + 10] = backend.handle(paramOut);
    table[at + 11] = backend.handle(mOut);
    table[at + 12] = backend.handle(vOut);
    table[at + 13] = copy === null ? 0 : backend.handle(copy);
    table[at + 14] = stepIn === null ? 0 : backend.handle(stepIn);
    table[at + 15] = stepOut === null ? 0 : backend.handle(stepOut);
  }
  const { lr, beta1, beta2, epsilon, weightDecay, decoupledWeightDecay } = attrs;
  backend.addon.multiTensorAdamUpdate(table, attrs.copyDType === null ? null : backend.code(attrs.copyDType), {
    lr,
    beta1,
    beta2,
    epsilon,
    weightDecay,
    decoupledWeightDecay,
  }, inputs.lrValue === undefined ? null : backend.handle(inputs.lrValue));
  return outputs;
}

/** [batch, M, N, D] of attention's operands q [..., M, D] and k [..., N, D] (leading dims flattened). */
function attentionDims(q: TensorInfo, k: TensorInfo): [number, number, number, number] {
  const rank = q.shape.length;
  const m = q.shape[rank - 2];
  const d = q.shape[rank - 1];
  const n = k.shape[rank - 2];
  return [sizeOf(q.shape.slice(0, -2)), m, n, d];
}

export function attentionKernel({
  inputs: { q, k, v },
  attrs: { causal, scale },
  backend,
}: KernelArgs<"Attention", CudaBackend>): [TensorInfo, TensorInfo] {
  const [batch, m, n, d] = attentionDims(q, k);
  const out = backend.output(q.shape, q.dtype);
  const lse = backend.output(q.shape.slice(0, -1), "float32");
  backend.addon.attention(
    backend.code(q.dtype),
    backend.handle(q),
    backend.handle(k),
    backend.handle(v),
    backend.handle(out),
    backend.handle(lse),
    batch,
    m,
    n,
    d,
    scale,
    causal,
  );
  return [out, lse];
}

export function packedAttentionKernel({ inputs: { qkv }, attrs: { causal, scale }, backend }: KernelArgs<"PackedAttention", CudaBackend>): [TensorInfo, TensorInfo] {
  const { sequences, t, h, d } = packedHeadsOf(qkv.shape);
  const out = backend.output([...qkv.shape.slice(0, -3), h, d], qkv.dtype);
  const lse = backend.output([...qkv.shape.slice(0, -4), h, t], "float32");
  backend.addon.packedAttention(backend.code(qkv.dtype), backend.handle(qkv), backend.handle(out), backend.handle(lse), sequences, h, t, d, scale, causal);
  return [out, lse];
}

export function packedAttentionBackwardKernel({
  inputs: { dout, qkv, out, lse },
  attrs: { causal, scale },
  backend,
}: KernelArgs<"PackedAttentionBackward", CudaBackend>): TensorInfo {
  const { sequences, t, h, d } = packedHeadsOf(qkv.shape);
  const dqkv = backend.output(qkv.shape, qkv.dtype);
  backend.addon.packedAttentionBackward(
    backend.code(qkv.dtype),
    backend.handle(dout),
    backend.handle(qkv),
    backend.handle(out),
    backend.handle(lse),
    backend.handle(dqkv),
    sequences,
    h,
    t,
    d,
    scale,
    causal,
  );
  return dqkv;
}

export function cachedAttentionKernel({
  inputs: { q, k, v, positions, newKeys, newValues },
  attrs: { scale, inPlace },
  backend,
}: KernelArgs<"CachedAttention", CudaBackend>): TensorInfo {
  if ((newKeys !== undefined || newValues !== undefined) && (inPlace !== true || newKeys === undefined || newValues === undefined)) {
    throw new ValueError("CachedAttention: newKeys and newValues go together and are written in place (attrs.inPlace)");
  }
  const [batch, m, n, d] = attentionDims(q, k);
  const out = backend.output(q.shape, q.dtype);
  backend.addon.cachedAttention(
    backend.code(q.dtype),
    backend.handle(q),
    backend.handle(k),
    backend.handle(v),
    backend.handle(positions),
    backend.handle(out),
    batch,
    m,
    n,
    d,
    scale,
    newKeys === undefined ? null : backend.handle(newKeys),
    newValues === undefined ? null : backend.handle(newValues),
  );
  return out;
}

export function attentionBackwardKernel({
  inputs: { dout, q, k, v, out, lse },
  attrs: { causal, scale },
  backend,
}: KernelArgs<"AttentionBackward", CudaBackend>): [TensorInfo, TensorInfo, TensorInfo] {
  const [batch, m, n, d] = attentionDims(q, k);
  const dq = backend.output(q.shape, q.dtype);
  const dk = backend.output(k.shape, k.dtype);
  const dv = backend.output(v.shape, v.dtype);
  backend.addon.attentionBackward(
    backend.code(q.dtype),
    backend.handle(dout),
    backend.handle(q),
    backend.handle(k),
    backend.handle(v),
    backend.handle(out),
    backend.handle(lse),
    backend.handle(dq),
    backend.handle(dk),
    backend.handle(dv),
    batch,
    m,
    n,
    d,
    scale,
    causal,
  );
  return [dq, dk, dv];
}
