import {
  type KernelArgs,
  type TensorInfo,
  broadcastStrides,
  matmulShape,
  sizeOf,
  stridesOf,
} from "@blocksparse/core";
import type { CudaBackend, CudaBuffer } from "../backend";
import { ACTIVATION_CODES, addTensors, biasActivationKernel } from "./elementwise";
import { collapseDims } from "./util";

/**
 * One matmul operand as [batch] matrices with a fixed stride: its own buffer when its batch dims are
 * absent or match the output's (stride 0 or one matrix), else a broadcast copy in scratch.
 */
function batchedOperand(
  backend: CudaBackend,
  operand: TensorInfo,
  batchShape: readonly number[],
  scratch: CudaBuffer[],
): { handle: number; stride: number } {
  const rank = operand.shape.length;
  const matrix = operand.shape.slice(rank - 2);
  const matrixSize = matrix[0] * matrix[1];
  const ownBatch = sizeOf(operand.shape.slice(0, rank - 2));
  if (ownBatch === 1) return { handle: backend.handle(operand), stride: 0 };
  if (ownBatch === sizeOf(batchShape)) return { handle: backend.handle(operand), stride: matrixSize };
  const fullShape = [...batchShape, ...matrix];
  const copy = backend.allocate(operand.dtype, sizeOf(fullShape)) as CudaBuffer;
  scratch.push(copy);
  const merged = collapseDims(fullShape, [broadcastStrides(operand.shape, fullShape), stridesOf(fullShape)]);
  backend.addon.copyStrided(
    backend.code(operand.dtype),
    backend.handle(operand),
    0,
    merged.strides[0],
    copy.handle,
    0,
    merged.strides[1],
    merged.shape,
  );
  return { handle: copy.handle, stride: matrixSize };
}

export function matmulKernel({ inputs: { a, b }, attrs: { transposeA, transposeB }, backend }: KernelArgs<"Matmul", CudaBackend>): TensorInfo {
  const shape = matmulShape(a.shape, b.shape, transposeA, transposeB);
  const out = backend.output(shape, a.dtype);
  if (sizeOf(shape) === 0) return out;
  const ra = a.shape.length;
  const m = shape[shape.length - 2];
  const n = shape[shape.length - 1];
  const k = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
  const batchShape = shape.slice(0, -2);
  const scratch: CudaBuffer[] = [];
  try {
    const left = batchedOperand(backend, a, batchShape, scratch);
    const right = batchedOperand(backend, b, batchShape, scratch);
    backend.addon.matmul(
      backend.code(a.dtype),
      left.handle,
      right.handle,
      backend.handle(out),
      sizeOf(batchShape),
      m,
      n,
      k,
      transposeA,
      transposeB,
      left.stride,
      right.stride,
    );
  } finally {
    for (const buffer of scratch) backend.free(buffer);
  }
  return out;
}

/** dX = dY W and dW = dY^T X of a dense Linear, in one addon call. */
export function linearBackwardKernel({ inputs: { dy, x, weight }, backend }: KernelArgs<"LinearBackward", CudaBackend>): [TensorInfo, TensorInfo] {
  const [n, k] = weight.shape;
  const m = sizeOf(x.shape.slice(0, -1));
  const dx = backend.output(x.shape, x.dtype);
  const dweight = backend.output(weight.shape, weight.dtype);
  backend.addon.linearBackward(backend.code(x.dtype), backend.handle(dy), backend.handle(x), backend.handle(weight), backend.handle(dx), backend.handle(dweight), m, n, k);
  return [dx, dweight];
}

/**
 * y = x W^T + bias + residual: one cuBLASLt call with the adds in its epilogue, or, where the addon declines
 * (no cuBLASLt, cuBLAS switched off, K = 0, no algorithm), the product and then each add as its own kernel.
 */
export function linearKernel({ inputs: { x, weight, bias, residual }, backend }: KernelArgs<"Linear", CudaBackend>): TensorInfo {
  const [n, k] = weight.shape;
  const m = sizeOf(x.shape.slice(0, -1));
  const shape = [...x.shape.slice(0, -1), n];
  const out = backend.output(shape, x.dtype);
  if (m * n === 0) return out;
  const dtype = backend.code(x.dtype);
  const fused = backend.addon.linear(
    dtype,
    backend.handle(x),
    backend.handle(weight),
    bias ? backend.handle(bias) : null,
    residual ? backend.handle(residual) : null,
    backend.handle(out),
    m,
    n,
    k,
  );
  if (fused) return out;
  backend.addon.matmul(dtype, backend.handle(x), backend.handle(weight), backend.handle(out), 1, m, n, k, false, true, 0, 0);
  let sum = out;
  for (const addend of [bias, residual]) {
    if (addend === undefined) continue;
    const next = addTensors(backend, sum, addend);
    backend.free(sum.dataId);
    sum = next;
  }
  return sum;
}

/**
 * [activation(z), z] with z = x W^T + bias: one cuBLASLt call where its GELU epilogue applies (GELU's tanh form, widths
 * a multiple of 8), else linear (the bias in its epilogue) and the activation pass.
 */
export function linearActivationKernel({
  inputs: { x, weight, bias },
  attrs: { activation },
  backend,
}: KernelArgs<"LinearActivation", CudaBackend>): [TensorInfo, TensorInfo] {
  const [n, k] = weight.shape;
  const m = sizeOf(x.shape.slice(0, -1));
  const shape = [...x.shape.slice(0, -1), n];
  if (m * n > 0) {
    const y = backend.output(shape, x.dtype);
    const pre = backend.output(shape, x.dtype);
    const fused = backend.addon.linearActivation(
      ACTIVATION_CODES[activation],
      backend.code(x.dtype),
      backend.handle(x),
      backend.handle(weight),
      bias ? backend.handle(bias) : null,
      backend.handle(y),
      backend.handle(pre),
      m,
      n,
      k,
    );
    if (fused) return [y, pre];
    backend.free(y.dataId);
    backend.free(pre.dataId);
  }
  const z = linearKernel({ inputs: { x, weight, bias }, attrs: {}, backend });
  return [biasActivationKernel({ inputs: { x: z }, attrs: { activation }, backend }), z];
}

/** Rows of a [..., width] operand (leading dims flattened). */
function rowsOf(info: TensorInfo): number {
  const width = info.shape[info.shape.length - 1];
  return width === 0 ? sizeOf(info.shape.slice(0, -1)) : sizeOf(info.shape) / width;
}

/** y = x W^T + bias + residual: the decoding kernel adds the residual in its epilogue, the other routes after the product. */
export function bsrLinearKernel({ inputs: { x, values, bias, residual }, attrs: { pattern }, backend }: KernelArgs<"BsrLinear", CudaBackend>): TensorInfo {
  const out = backend.output([...x.shape.slice(0, -1), pattern.shape[0]], x.dtype);
  backend.addon.bsrLinear(
    backend.code(x.dtype),
    backend.pattern(pattern),
    backend.handle(x),
    backend.handle(values),
    bias ? backend.handle(bias) : null,
    backend.handle(out),
    rowsOf(x),
    residual ? backend.handle(residual) : null,
  );
  return out;
}

/**
 * activation(x W^T + bias), the outputs [activation, pre-activation], in one addon call: bsrLinear, then the activation
 * pass over its output, except where the product's own epilogue writes both (tcBsrLinearActivation in kernels-cuda,
 * chosen by tcFusesActivation): the decoding kernel with few tokens, the X-resident tile (32x32 blocks), the 64- and
 * 128-wide tensor-core tiles where their rules take the fused forward (short lines, few tiles, any 128-wide tile below
 * 4096 tokens) or Z outgrows half of L2 (docs/kernels.md, "A fused activation in the forward's epilogue").
 */
export function bsrLinearActivationKernel({
  inputs: { x, values, bias },
  attrs: { pattern, activation },
  backend,
}: KernelArgs<"BsrLinearActivation", CudaBackend>): [TensorInfo, TensorInfo] {
  const shape = [...x.shape.slice(0, -1), pattern.shape[0]];
  const z = backend.output(shape, x.dtype);
  const a = backend.output(shape, x.dtype);
  backend.addon.bsrLinearActivation(
    ACTIVATION_CODES[activation],
    backend.code(x.dtype),
    backend.pattern(pattern),
    backend.handle(x),
    backend.handle(values),
    bias ? backend.handle(bias) : null,
    backend.handle(z),
    backend.handle(a),
    rowsOf(x),
  );
  return [a, z];
}

export function bsrMatmulKernel({ inputs: { dy, values }, attrs: { pattern }, backend }: KernelArgs<"BsrMatmul", CudaBackend>): TensorInfo {
  const out = backend.output([...dy.shape.slice(0, -1), pattern.shape[1]], dy.dtype);
  backend.addon.bsrMatmul(
    backend.code(dy.dtype),
    backend.pattern(pattern),
    backend.handle(dy),
    backend.handle(values),
    backend.handle(out),
    rowsOf(dy),
  );
  return out;
}

/**
 * dX taken on through the activation of the layer before, [dpre, dbias]: one addon call, which the wgmma tiles run
 * in dX's epilogue (dX never stored) and other routes as bsrMatmul then the activation's backward pass.
 */
export function bsrMatmulActivationBackwardKernel({
  inputs: { dy, values, pre },
  attrs: { pattern, activation },
  backend,
}: KernelArgs<"BsrMatmulActivationBackward", CudaBackend>): [TensorInfo, TensorInfo] {
  const dpre = backend.output(pre.shape, pre.dtype);
  const dbias = backend.output([pattern.shape[1]], pre.dtype);
  backend.addon.bsrMatmulActivationBackward(
    ACTIVATION_CODES[activation],
    backend.code(dy.dtype),
    backend.pattern(pattern),
    backend.handle(dy),
    backend.handle(values),
    backend.handle(pre),
    backend.handle(dpre),
    backend.handle(dbias),
    rowsOf(dy),
  );
  return [dpre, dbias];
}

export function sampledMatmulKernel({ inputs: { dy, x }, attrs: { pattern }, backend }: KernelArgs<"SampledMatmul", CudaBackend>): TensorInfo {
  const [r, c] = pattern.blockShape;
  const out = backend.output([pattern.nnzBlocks, r, c], dy.dtype);
  backend.addon.sampledMatmul(
    backend.code(dy.dtype),
    backend.pattern(pattern),
    backend.handle(dy),
    backend.handle(x),
    backend.handle(out),
    rowsOf(dy),
  );
  return out;
}

export function blockNormsKernel({ inputs: { values }, backend }: KernelArgs<"BlockNorms", CudaBackend>): TensorInfo {
  const [nnzBlocks, blockHeight, blockWidth] = values.shape;
  const out = backend.output([nnzBlocks], "float32");
  backend.addon.blockNorms(backend.code(values.dtype), backend.handle(values), backend.handle(out), nnzBlocks, blockHeight * blockWidth);
  return out;
}
