export { JsBackend, JsBuffer, type FloatOutput } from "./backend";
export { jsKernels } from "./kernels";
export { type ActivationKernels, type BsrLinearHalfArgs, type LinearHalfArgs, type ProductCompute, productKernels } from "./kernels/products";
export {
  type AdamHyperparameters,
  type AdamStep,
  type AdamStepInPlace,
  adamKernels,
  type AttentionBackwardInputs,
  type AttentionOnArrays,
  type AttentionSizes,
  cachedAttentionWrites,
  jsAdamStep,
  packedAttentionKernels,
} from "./kernels/nn";
