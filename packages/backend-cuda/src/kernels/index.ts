import {
  BINARY_KERNELS,
  COMPARISON_KERNELS,
  type KernelArgs,
  type KernelName,
  type KernelOutputs,
  type KernelTable,
  UNARY_KERNELS,
} from "@blocksparse/core";
import type { CudaBackend } from "../backend";
import { binaryKernel, geluBackwardKernel, geluKernel, unaryKernel, whereKernel } from "./elementwise";
import { adamUpdateKernel, crossEntropyBackwardKernel, crossEntropyKernel, layerNormBackwardKernel, layerNormKernel } from "./nn";
import { blockNormsKernel, bsrLinearKernel, bsrMatmulKernel, matmulKernel, sampledMatmulKernel } from "./products";
import { argmaxKernel, logSoftmaxKernel, reduceKernel, softmaxKernel } from "./reduce";
import {
  broadcastToKernel,
  castKernel,
  concatKernel,
  fillKernel,
  gatherKernel,
  oneHotKernel,
  scatterAddKernel,
  sliceKernel,
  transposeKernel,
} from "./shape";

type Kernel<K extends KernelName> = (args: KernelArgs<K, CudaBackend>) => KernelOutputs<K>;

/** Each kernel runs through backend.runKernel: typed errors, and no output left behind if it throws. */
function guarded<K extends KernelName>(kernel: Kernel<K>): Kernel<K> {
  return (args) => args.backend.runKernel(() => kernel(args));
}

const table: { [K in KernelName]?: Kernel<K> } = {
  Fill: fillKernel,
  Cast: castKernel,
  BroadcastTo: broadcastToKernel,
  Transpose: transposeKernel,
  Slice: sliceKernel,
  Concat: concatKernel,
  Gather: gatherKernel,
  ScatterAdd: scatterAddKernel,
  OneHot: oneHotKernel,
  Gelu: geluKernel,
  GeluBackward: geluBackwardKernel,
  Where: whereKernel,
  Sum: reduceKernel("Sum"),
  Mean: reduceKernel("Mean"),
  Max: reduceKernel("Max"),
  Min: reduceKernel("Min"),
  Argmax: argmaxKernel,
  Softmax: softmaxKernel,
  LogSoftmax: logSoftmaxKernel,
  LayerNorm: layerNormKernel,
  LayerNormBackward: layerNormBackwardKernel,
  CrossEntropy: crossEntropyKernel,
  CrossEntropyBackward: crossEntropyBackwardKernel,
  MatMul: matmulKernel,
  BsrLinear: bsrLinearKernel,
  BsrMatmul: bsrMatmulKernel,
  SampledMatmul: sampledMatmulKernel,
  BlockNorms: blockNormsKernel,
  AdamUpdate: adamUpdateKernel,
};
for (const name of UNARY_KERNELS) table[name] = unaryKernel(name);
for (const name of BINARY_KERNELS) table[name] = binaryKernel(name, false);
for (const name of COMPARISON_KERNELS) table[name] = binaryKernel(name, true);

/** Every kernel the cuda backend implements (all of core's BACKEND_KERNELS). */
export const cudaKernels: KernelTable<CudaBackend> = Object.fromEntries(
  Object.entries(table).map(([name, kernel]) => [name, guarded(kernel as Kernel<KernelName>)]),
) as KernelTable<CudaBackend>;
