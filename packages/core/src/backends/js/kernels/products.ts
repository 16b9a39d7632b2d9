/** The product kernels: each widens its inputs to float32 (backend.floats) and calls one compute function. */
import type { KernelArgs, KernelTable, TensorInfo } from "../../../backend";
import { broadcastStrides, matmulShape, sizeOf } from "../../../shape";
import type { JsBackend } from "../backend";
import type { BsrColumnIndex, BsrPattern } from "@blocksparse/format";
import { IndexError } from "../../../errors";
import * as compute from "../compute";
import { checkCompressedIndex } from "../compute/validate";
import { biasActivationBackwardKernel, biasActivationKernel } from "./elementwise";
import { stridedOffsets } from "./util";

function sizes(pattern: BsrPattern): compute.BsrSizes {
  const [rows, cols] = pattern.shape;
  const [blockHeight, blockWidth] = pattern.blockShape;
  return { rows, cols, blockHeight, blockWidth };
}

/**
 * `pattern.columnIndex`, checked against the row-wise index it stands for (itself checked as bsrLinear checks it): each
 * block named once, at the block row and column where the row-wise index holds it. Its arrays can be written into after the pattern is built (the pattern
 * only re-checks its row-wise arrays), and a repeated or misplaced valueIndex entry made a silently wrong product.
 */
function checkedColumnIndex(fn: string, pattern: BsrPattern): BsrColumnIndex {
  const index = pattern.columnIndex;
  const { blockColPtr, blockRowIdx, valueIndex } = index;
  const { blockRowPtr, blockColIdx, blockRows, blockCols, nnzBlocks: nnz } = pattern;
  // The row view first: the checks below read it, and bsrLinear and sampledMatmul refuse what it refuses.
  checkCompressedIndex(fn, "pattern.blockRowPtr", blockRowPtr, "pattern.blockColIdx", blockColIdx, blockRows, blockCols);
  const where = `${fn}: pattern.columnIndex`;
  if (blockColPtr.length !== blockCols + 1 || blockRowIdx.length !== nnz || valueIndex.length !== nnz) {
    throw new IndexError(
      `${where} has ${blockColPtr.length} blockColPtr, ${blockRowIdx.length} blockRowIdx and ${valueIndex.length} valueIndex entries; the pattern needs ${blockCols + 1}, ${nnz} and ${nnz}`,
    );
  }
  if (blockColPtr[0] !== 0 || blockColPtr[blockCols] !== nnz) {
    throw new IndexError(`${where}.blockColPtr must run from 0 to nnzBlocks = ${nnz}, got ${blockColPtr[0]} to ${blockColPtr[blockCols]}`);
  }
  const seen = new Int32Array(nnz).fill(-1);
  for (let col = 0; col < blockCols; col++) {
    const end = blockColPtr[col + 1];
    if (end < blockColPtr[col]) throw new IndexError(`${where}.blockColPtr decreases at ${col + 1} (${blockColPtr[col]} then ${end})`);
    for (let q = blockColPtr[col]; q < end; q++) {
      const block = valueIndex[q];
      if (!(block >= 0 && block < nnz)) throw new IndexError(`${where}.valueIndex[${q}] = ${block} is outside [0, ${nnz})`);
      if (seen[block] >= 0) {
        throw new IndexError(`${where}.valueIndex[${q}] = ${block} repeats valueIndex[${seen[block]}]: the column view must name each block once (a permutation of [0, ${nnz}))`);
      }
      seen[block] = q;
      const row = blockRowIdx[q];
      if (!(row >= 0 && row < blockRows) || blockColIdx[block] !== col || block < blockRowPtr[row] || block >= blockRowPtr[row + 1]) {
        let heldRow = 0;
        while (heldRow < blockRows - 1 && blockRowPtr[heldRow + 1] <= block) heldRow++;
        throw new IndexError(
          `${where} places block ${block} (valueIndex[${q}]) at block (${row}, ${col}); the row-wise index holds it at (${heldRow}, ${blockColIdx[block]})`,
        );
      }
    }
  }
  return index;
}

/**
 * The float32 compute behind the product kernels. The kernel layer (output shapes, batch
 * broadcasting, half widening and rounding) is shared; a host backend with faster compute
 * (the native `cpu` backend) passes its own functions to {@link productKernels}.
 */
export type ProductCompute = Pick<typeof compute, "matmulF32" | "bsrLinearF32" | "bsrMatmulF32" | "sampledMatmulF32"> & {
  /**
   * Optional: bsrLinearF32 with W's values as their float16 or bfloat16 bits, read without a widened copy (the native cpu
   * backend's few-token path streams half the bytes of float32); the product is that of the widened values, summed as
   * bsrLinearF32 sums. Without it, half values are widened first and bsrLinearF32 runs.
   */
  bsrLinearHalf?: (args: BsrLinearHalfArgs) => void;
  /** Optional: Y [m, n] = X [m, k] W^T with W [n, k] as half bits, read as bsrLinearHalf reads them. Without it, W is widened and matmulF32 runs. */
  linearHalf?: (args: LinearHalfArgs) => void;
};

/** {@link ProductCompute}'s linearHalf arguments: row-major arrays, W's float16 or bfloat16 bits. */
export interface LinearHalfArgs {
  x: Float32Array;
  weight: Uint16Array;
  bfloat16: boolean;
  y: Float32Array;
  m: number;
  n: number;
  k: number;
}

/** {@link ProductCompute}'s bsrLinearHalf arguments: bsrLinearF32's, with `values` the half bits. */
export type BsrLinearHalfArgs = Omit<compute.BsrLinearArgs, "values"> & { values: Uint16Array; bfloat16: boolean };

/** The bias-and-activation kernels the fused products apply after their product (a host backend may pass native ones). */
export interface ActivationKernels {
  BiasActivation: (args: KernelArgs<"BiasActivation", JsBackend>) => TensorInfo;
  BiasActivationBackward: (args: KernelArgs<"BiasActivationBackward", JsBackend>) => [TensorInfo, TensorInfo];
}

/**
 * Matmul, BsrLinear (and BsrLinearActivation: BsrLinear, then the activation of its stored output), BsrMatmul (and
 * BsrMatmulActivationBackward: BsrMatmul, then the activation's backward over its stored output) and SampledMatmul
 * over typed-array storage, computed by `products`; the fused kernels' activations by `activations` (the js
 * backend's own by default).
 */
export function productKernels(
  products: ProductCompute,
  activations: ActivationKernels = { BiasActivation: biasActivationKernel, BiasActivationBackward: biasActivationBackwardKernel },
): Required<
  Pick<KernelTable<JsBackend>, "Matmul" | "Linear" | "LinearActivation" | "LinearBackward" | "BsrLinear" | "BsrLinearActivation" | "BsrMatmul" | "BsrMatmulActivationBackward" | "SampledMatmul">
> {
  const table = {
    Matmul({ inputs: { a, b }, attrs: { transposeA, transposeB }, backend }: KernelArgs<"Matmul", JsBackend>): TensorInfo {
      const outShape = matmulShape(a.shape, b.shape, transposeA, transposeB);
      const rank = outShape.length;
      const m = outShape[rank - 2];
      const n = outShape[rank - 1];
      const k = transposeA ? a.shape[a.shape.length - 2] : a.shape[a.shape.length - 1];
      const batchShape = outShape.slice(0, -2);
      const aBatch = stridedOffsets(batchShape, broadcastStrides(a.shape.slice(0, -2), batchShape));
      const bBatch = stridedOffsets(batchShape, broadcastStrides(b.shape.slice(0, -2), batchShape));
      const av = backend.floats(a);
      const bv = backend.floats(b);
      const out = backend.floatOutput(outShape, a.dtype);
      for (let batch = 0; batch < aBatch.length; batch++) {
        const [aOffset, bOffset, cOffset] = [aBatch[batch] * m * k, bBatch[batch] * k * n, batch * m * n];
        products.matmulF32({ a: av, aOffset, b: bv, bOffset, c: out.data, cOffset, m, n, k, transposeA, transposeB });
      }
      return out.commit();
    },

    // The product, then the addends added to its float32 sums: rounded once.
    Linear({ inputs: { x, weight, bias, residual }, backend }: KernelArgs<"Linear", JsBackend>): TensorInfo {
      const [n, k] = weight.shape;
      const m = sizeOf(x.shape.slice(0, -1));
      const out = backend.floatOutput([...x.shape.slice(0, -1), n], x.dtype);
      const data = out.data;
      if (products.linearHalf !== undefined && (weight.dtype === "float16" || weight.dtype === "bfloat16")) {
        products.linearHalf({ x: backend.floats(x), weight: backend.storage(weight) as Uint16Array, bfloat16: weight.dtype === "bfloat16", y: data, m, n, k });
      } else {
        products.matmulF32({ a: backend.floats(x), b: backend.floats(weight), c: data, m, n, k, transposeB: true });
      }
      if (bias) {
        const b = backend.floats(bias);
        for (let row = 0; row < m; row++) for (let j = 0; j < n; j++) data[row * n + j] += b[j];
      }
      if (residual) {
        const r = backend.floats(residual);
        for (let i = 0; i < m * n; i++) data[i] += r[i];
      }
      return out.commit();
    },

    // dx = dy weight and dweight = dy^T x, each through the product of Matmul.
    LinearBackward({ inputs: { dy, x, weight }, backend }: KernelArgs<"LinearBackward", JsBackend>): [TensorInfo, TensorInfo] {
      const [n, k] = weight.shape;
      const m = sizeOf(x.shape.slice(0, -1));
      const g = backend.floats(dy);
      const dx = backend.floatOutput(x.shape, x.dtype);
      const dweight = backend.floatOutput(weight.shape, weight.dtype);
      products.matmulF32({ a: g, b: backend.floats(weight), c: dx.data, m, n: k, k: n });
      products.matmulF32({ a: g, b: backend.floats(x), c: dweight.data, m: n, n: k, k: m, transposeA: true });
      return [dx.commit(), dweight.commit()];
    },

    // The product, then the residual added to its float32 sums: rounded once, as Linear.
    BsrLinear({ inputs: { x, values, bias, residual }, attrs: { pattern }, backend }: KernelArgs<"BsrLinear", JsBackend>): TensorInfo {
      const [rows, cols] = pattern.shape;
      const tokens = cols === 0 ? sizeOf(x.shape.slice(0, -1)) : sizeOf(x.shape) / cols;
      const outShape = [...x.shape.slice(0, -1), rows];
      const out = backend.floatOutput(outShape, x.dtype);
      const { blockRowPtr, blockColIdx } = pattern;
      const args = { ...sizes(pattern), x: backend.floats(x), bias: bias ? backend.floats(bias) : null, y: out.data, tokens, blockRowPtr, blockColIdx };
      if (products.bsrLinearHalf !== undefined && (values.dtype === "float16" || values.dtype === "bfloat16")) {
        products.bsrLinearHalf({ ...args, values: backend.storage(values) as Uint16Array, bfloat16: values.dtype === "bfloat16" });
      } else {
        products.bsrLinearF32({ ...args, values: backend.floats(values) });
      }
      if (residual) {
        const r = backend.floats(residual);
        const data = out.data;
        for (let i = 0; i < data.length; i++) data[i] += r[i];
      }
      return out.commit();
    },

    BsrMatmul({ inputs: { dy, values }, attrs: { pattern }, backend }: KernelArgs<"BsrMatmul", JsBackend>): TensorInfo {
      const [rows, cols] = pattern.shape;
      const tokens = rows === 0 ? sizeOf(dy.shape.slice(0, -1)) : sizeOf(dy.shape) / rows;
      const out = backend.floatOutput([...dy.shape.slice(0, -1), cols], dy.dtype);
      const { blockColPtr, blockRowIdx, valueIndex } = checkedColumnIndex("bsrMatmul", pattern);
      products.bsrMatmulF32({
        ...sizes(pattern),
        dy: backend.floats(dy),
        values: backend.floats(values),
        dx: out.data,
        tokens,
        blockColPtr,
        blockRowIdx,
        valueIndex,
      });
      return out.commit();
    },

    SampledMatmul({ inputs: { dy, x }, attrs: { pattern }, backend }: KernelArgs<"SampledMatmul", JsBackend>): TensorInfo {
      const tokens = sizeOf(dy.shape.slice(0, -1));
      const [blockHeight, blockWidth] = pattern.blockShape;
      const out = backend.floatOutput([pattern.nnzBlocks, blockHeight, blockWidth], dy.dtype);
      const { blockRowPtr, blockColIdx } = pattern;
      products.sampledMatmulF32({ ...sizes(pattern), dy: backend.floats(dy), x: backend.floats(x), dw: out.data, tokens, blockRowPtr, blockColIdx });
      return out.commit();
    },
  };
  return {
    ...table,
    LinearActivation({ inputs: { x, weight, bias }, attrs: { activation }, backend }: KernelArgs<"LinearActivation", JsBackend>): [TensorInfo, TensorInfo] {
      const z = table.Linear({ inputs: { x, weight, bias }, attrs: {}, backend });
      return [activations.BiasActivation({ inputs: { x: z }, attrs: { activation }, backend }), z];
    },
    BsrLinearActivation({ inputs: { x, values, bias }, attrs: { pattern, activation }, backend }: KernelArgs<"BsrLinearActivation", JsBackend>): [TensorInfo, TensorInfo] {
      const z = table.BsrLinear({ inputs: { x, values, bias }, attrs: { pattern }, backend });
      return [activations.BiasActivation({ inputs: { x: z }, attrs: { activation }, backend }), z];
    },
    BsrMatmulActivationBackward({
      inputs: { dy, values, pre },
      attrs: { pattern, activation },
      backend,
    }: KernelArgs<"BsrMatmulActivationBackward", JsBackend>): [TensorInfo, TensorInfo] {
      const dx = table.BsrMatmul({ inputs: { dy, values }, attrs: { pattern }, backend });
      try {
        return activations.BiasActivationBackward({ inputs: { dy: dx, x: pre }, attrs: { activation }, backend });
      } finally {
        backend.free(dx.dataId);
      }
    },
  };
}

export const {
  Matmul: matmulKernel,
  Linear: linearKernel,
  LinearActivation: linearActivationKernel,
  LinearBackward: linearBackwardKernel,
  BsrLinear: bsrLinearKernel,
  BsrLinearActivation: bsrLinearActivationKernel,
  BsrMatmul: bsrMatmulKernel,
  BsrMatmulActivationBackward: bsrMatmulActivationBackwardKernel,
  SampledMatmul: sampledMatmulKernel,
} = productKernels(compute);

export function blockNormsKernel({ inputs: { values }, backend }: KernelArgs<"BlockNorms", JsBackend>): TensorInfo {
  const [nnzBlocks, blockHeight, blockWidth] = values.shape;
  const out = backend.floatOutput([nnzBlocks], "float32");
  compute.blockNormsF32({ values: backend.floats(values), norms: out.data, blockCount: nnzBlocks, blockSize: blockHeight * blockWidth });
  return out.commit();
}
