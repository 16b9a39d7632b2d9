export { JsBackend, JsBuffer, type FloatOutput } from "./backend";
export { jsKernels } from "./kernels";
export { type ActivationKernels, type ProductCompute, productKernels } from "./kernels/products";
export { type AttentionBackwardInputs, type AttentionOnArrays, type AttentionSizes, packedAttentionKernels } from "./kernels/nn";
