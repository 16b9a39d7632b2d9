export { JsBackend, JsBuffer, type FloatOutput } from "./backend";
export { jsKernels } from "./kernels";
