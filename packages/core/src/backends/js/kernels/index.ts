import type { CompleteKernelTable } from "../../../backend";
import type { JsBackend } from "../backend";
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
  crossEntropyBackwardKernel,
  crossEntropyKernel,
  layerNormBackwardKernel,
  layerNormKernel,
  logSoftmaxKernel,
  softmaxBackwardKernel,
  multiTensorAdamUpdateKernel,
  softmaxKernel,
} from "./nn";
import { blockNormsKernel, bsrLinearActivationKernel, bsrLinearKernel, bsrMatmulKernel, matmulKernel, sampledMatmulKernel } from "./products";
import { argmaxKernel, reduceKernel } from "./reduce";
import {
  broadcastToKernel,
  castKernel,
  concatKernel,
  fillKernel,
  gatherKernel,
  oneHotKernel,
  scatterAddKernel,
  sliceKernel,
  splitKernel,
  transposeKernel,
} from "./shape";

/** Every kernel of the js backend, keyed by kernel name (Reshape is the engine's). */
export const jsKernels = {
  Fill: fillKernel,
  Cast: castKernel,
  BroadcastTo: broadcastToKernel,
  Transpose: transposeKernel,
  Slice: sliceKernel,
  Split: splitKernel,
  Concat: concatKernel,
  Gather: gatherKernel,
  ScatterAdd: scatterAddKernel,
  OneHot: oneHotKernel,

  Neg: unaryKernel("Neg"),
  Abs: unaryKernel("Abs"),
  Exp: unaryKernel("Exp"),
  Log: unaryKernel("Log"),
  Sqrt: unaryKernel("Sqrt"),
  Rsqrt: unaryKernel("Rsqrt"),
  Tanh: unaryKernel("Tanh"),
  Sigmoid: unaryKernel("Sigmoid"),
  Relu: unaryKernel("Relu"),
  Square: unaryKernel("Square"),
  Gelu: geluKernel,
  GeluBackward: geluBackwardKernel,
  BiasActivation: biasActivationKernel,
  BiasActivationBackward: biasActivationBackwardKernel,

  Add: binaryKernel("Add", false),
  Sub: binaryKernel("Sub", false),
  Mul: binaryKernel("Mul", false),
  Div: binaryKernel("Div", false),
  Maximum: binaryKernel("Maximum", false),
  Minimum: binaryKernel("Minimum", false),
  Pow: binaryKernel("Pow", false),
  Equal: binaryKernel("Equal", true),
  NotEqual: binaryKernel("NotEqual", true),
  Less: binaryKernel("Less", true),
  LessEqual: binaryKernel("LessEqual", true),
  Greater: binaryKernel("Greater", true),
  GreaterEqual: binaryKernel("GreaterEqual", true),
  Where: whereKernel,

  Sum: reduceKernel("Sum"),
  Mean: reduceKernel("Mean"),
  Max: reduceKernel("Max"),
  Min: reduceKernel("Min"),
  Argmax: argmaxKernel,

  Softmax: softmaxKernel,
  SoftmaxBackward: softmaxBackwardKernel,
  LogSoftmax: logSoftmaxKernel,
  LayerNorm: layerNormKernel,
  LayerNormBackward: layerNormBackwardKernel,
  CrossEntropy: crossEntropyKernel,
  CrossEntropyBackward: crossEntropyBackwardKernel,

  Matmul: matmulKernel,
  BsrLinear: bsrLinearKernel,
  BsrLinearActivation: bsrLinearActivationKernel,
  BsrMatmul: bsrMatmulKernel,
  SampledMatmul: sampledMatmulKernel,
  BlockNorms: blockNormsKernel,

  AdamUpdate: adamUpdateKernel,
  MultiTensorAdamUpdate: multiTensorAdamUpdateKernel,
} satisfies CompleteKernelTable<JsBackend>;
