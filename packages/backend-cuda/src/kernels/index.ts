import type { CompleteKernelTable } from "@blocksparse/core";
import type { CudaBackend } from "../backend";
import {
  biasActivationBackwardKernel,
  biasActivationKernel,
  binaryKernel,
  geluBackwardKernel,
  geluKernel,
  unaryKernel,
  whereKernel,
} from "./elementwise";
import {
  adamUpdateKernel,
  attentionBackwardKernel,
  attentionKernel,
  packedAttentionBackwardKernel,
  packedAttentionKernel,
  cachedAttentionKernel,
  crossEntropyBackwardKernel,
  crossEntropyKernel,
  layerNormBackwardKernel,
  layerNormKernel,
  multiTensorAdamUpdateKernel,
} from "./nn";
import {
  blockNormsKernel,
  bsrLinearActivationKernel,
  bsrLinearKernel,
  bsrMatmulActivationBackwardKernel,
  bsrMatmulKernel,
  linearActivationKernel,
  linearBackwardKernel,
  linearKernel,
  matmulKernel,
  sampledMatmulKernel,
} from "./products";
import { argmaxKernel, logSoftmaxKernel, reduceKernel, softmaxBackwardKernel, softmaxKernel } from "./reduce";
import {
  broadcastToKernel,
  castKernel,
  concatKernel,
  fillKernel,
  gatherKernel,
  indexCopyKernel,
  oneHotKernel,
  scatterAddKernel,
  sliceKernel,
  splitKernel,
  transposeKernel,
} from "./shape";

/** Each kernel runs through backend.runKernel: typed errors, and no output left behind if it throws. */
function guarded<A extends { backend: CudaBackend }, R>(kernel: (args: A) => R): (args: A) => R {
  return (args) => args.backend.runKernel(() => kernel(args));
}

/** Every kernel the cuda backend implements: all of core's backend kernels (a missing one fails typecheck). */
export const cudaKernels = {
  Fill: guarded(fillKernel),
  Cast: guarded(castKernel),
  BroadcastTo: guarded(broadcastToKernel),
  Transpose: guarded(transposeKernel),
  Slice: guarded(sliceKernel),
  Split: guarded(splitKernel),
  Concat: guarded(concatKernel),
  Gather: guarded(gatherKernel),
  ScatterAdd: guarded(scatterAddKernel),
  IndexCopy: guarded(indexCopyKernel),
  OneHot: guarded(oneHotKernel),

  Neg: guarded(unaryKernel("Neg")),
  Abs: guarded(unaryKernel("Abs")),
  Exp: guarded(unaryKernel("Exp")),
  Log: guarded(unaryKernel("Log")),
  Sqrt: guarded(unaryKernel("Sqrt")),
  Rsqrt: guarded(unaryKernel("Rsqrt")),
  Tanh: guarded(unaryKernel("Tanh")),
  Sigmoid: guarded(unaryKernel("Sigmoid")),
  Relu: guarded(unaryKernel("Relu")),
  Square: guarded(unaryKernel("Square")),
  Gelu: guarded(geluKernel),
  GeluBackward: guarded(geluBackwardKernel),
  BiasActivation: guarded(biasActivationKernel),
  BiasActivationBackward: guarded(biasActivationBackwardKernel),

  Add: guarded(binaryKernel("Add", false)),
  Sub: guarded(binaryKernel("Sub", false)),
  Mul: guarded(binaryKernel("Mul", false)),
  Div: guarded(binaryKernel("Div", false)),
  Maximum: guarded(binaryKernel("Maximum", false)),
  Minimum: guarded(binaryKernel("Minimum", false)),
  Pow: guarded(binaryKernel("Pow", false)),
  Equal: guarded(binaryKernel("Equal", true)),
  NotEqual: guarded(binaryKernel("NotEqual", true)),
  Less: guarded(binaryKernel("Less", true)),
  LessEqual: guarded(binaryKernel("LessEqual", true)),
  Greater: guarded(binaryKernel("Greater", true)),
  GreaterEqual: guarded(binaryKernel("GreaterEqual", true)),
  Where: guarded(whereKernel),

  Sum: guarded(reduceKernel("Sum")),
  Mean: guarded(reduceKernel("Mean")),
  Max: guarded(reduceKernel("Max")),
  Min: guarded(reduceKernel("Min")),
  Argmax: guarded(argmaxKernel),

  Softmax: guarded(softmaxKernel),
  SoftmaxBackward: guarded(softmaxBackwardKernel),
  LogSoftmax: guarded(logSoftmaxKernel),
  LayerNorm: guarded(layerNormKernel),
  LayerNormBackward: guarded(layerNormBackwardKernel),
  Attention: guarded(attentionKernel),
  AttentionBackward: guarded(attentionBackwardKernel),
  PackedAttention: guarded(packedAttentionKernel),
  PackedAttentionBackward: guarded(packedAttentionBackwardKernel),
  CachedAttention: guarded(cachedAttentionKernel),
  CrossEntropy: guarded(crossEntropyKernel),
  CrossEntropyBackward: guarded(crossEntropyBackwardKernel),

  Matmul: guarded(matmulKernel),
  Linear: guarded(linearKernel),
  LinearBackward: guarded(linearBackwardKernel),
  LinearActivation: guarded(linearActivationKernel),
  BsrLinear: guarded(bsrLinearKernel),
  BsrLinearActivation: guarded(bsrLinearActivationKernel),
  BsrMatmulActivationBackward: guarded(bsrMatmulActivationBackwardKernel),
  BsrMatmul: guarded(bsrMatmulKernel),
  SampledMatmul: guarded(sampledMatmulKernel),
  BlockNorms: guarded(blockNormsKernel),

  AdamUpdate: guarded(adamUpdateKernel),
  MultiTensorAdamUpdate: guarded(multiTensorAdamUpdateKernel),
} satisfies CompleteKernelTable<CudaBackend>;
