import type { KernelArgs, TensorInfo } from "../../../backend";
import { matmulShape, sizeOf } from "../../../shape";
import type { JsBackend } from "../backend";
import { bsrLinearF32, bsrMatmulF32, blockNormsF32, matmulF32, sampledMatmulF32 } from "./products_compute";
import { broadcastOffsets } from "./util";

export function matmulKernel({ inputs: { a, b }, attrs: { transposeA, transposeB }, backend }: KernelArgs<"MatMul", JsBackend>): TensorInfo {
  const outShape = matmulShape(a.shape, b.shape, transposeA, transposeB);
  const rank = outShape.length;
  const m = outShape[rank - 2];
  const n = outShape[rank - 1];
  const k = transposeA ? a.shape[a.shape.length - 2] : a.shape[a.shape.length - 1];
  const batchShape = outShape.slice(0, -2);
  const aBatch = broadcastOffsets(a.shape.slice(0, -2), batchShape);
  const bBatch = broadcastOffsets(b.shape.slice(0, -2), batchShape);
  const av = backend.floats(a);
  const bv = backend.floats(b);
  const out = backend.floatOutput(outShape, a.dtype);
  for (let batch = 0; batch < aBatch.length; batch++) {
    matmulF32(av, aBatch[batch] * m * k, bv, bBatch[batch] * k * n, out.data, batch * m * n, m, n, k, transposeA, transposeB);
  }
  return out.commit();
}

export function bsrLinearKernel({ inputs: { x, values, bias }, attrs: { pattern }, backend }: KernelArgs<"BsrLinear", JsBackend>): TensorInfo {
  const [rows, cols] = pattern.shape;
  const tokens = cols === 0 ? sizeOf(x.shape.slice(0, -1)) : sizeOf(x.shape) / cols;
  const outShape = [...x.shape.slice(0, -1), rows];
  const out = backend.floatOutput(outShape, x.dtype);
  bsrLinearF32(backend.floats(x), backend.floats(values), bias ? backend.floats(bias) : null, out.data, tokens, pattern);
  return out.commit();
}

export function bsrMatmulKernel({ inputs: { dy, values }, attrs: { pattern }, backend }: KernelArgs<"BsrMatmul", JsBackend>): TensorInfo {
  const [rows, cols] = pattern.shape;
  const tokens = rows === 0 ? sizeOf(dy.shape.slice(0, -1)) : sizeOf(dy.shape) / rows;
  const out = backend.floatOutput([...dy.shape.slice(0, -1), cols], dy.dtype);
  bsrMatmulF32(backend.floats(dy), backend.floats(values), out.data, tokens, pattern);
  return out.commit();
}

export function sampledMatmulKernel({ inputs: { dy, x }, attrs: { pattern }, backend }: KernelArgs<"SampledMatmul", JsBackend>): TensorInfo {
  const tokens = sizeOf(dy.shape.slice(0, -1));
  const [r, c] = pattern.blockShape;
  const out = backend.floatOutput([pattern.nnzBlocks, r, c], dy.dtype);
  sampledMatmulF32(backend.floats(dy), backend.floats(x), out.data, tokens, pattern);
  return out.commit();
}

export function blockNormsKernel({ inputs: { values }, backend }: KernelArgs<"BlockNorms", JsBackend>): TensorInfo {
  const [nnz, r, c] = values.shape;
  const out = backend.floatOutput([nnz], "float32");
  blockNormsF32(backend.floats(values), out.data, nnz, r * c);
  return out.commit();
}
