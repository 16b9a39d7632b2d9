import { claimSingleCopy } from "./single_copy";

export const version = "0.1.0";
claimSingleCopy(version);

export type {
  Backend,
  BackendFactory,
  BackendGraphs,
  BackendMemory,
  CompleteKernelTable,
  DataId,
  KernelArgs,
  KernelFunc,
  KernelTable,
  TensorInfo,
} from "./backend";
export { importBackendModules } from "./backend_modules";
export { addReplayCheck, type CapturedGraph, captureGraph, isCapturing } from "./graph";
export * from "./dtypes";
export * from "./errors";
export {
  Engine,
  addAssignObserver,
  addDisposeObserver,
  addKernelObserver,
  addRequiresGradObserver,
  dispose,
  engine,
  getBackend,
  getBackendInstance,
  keep,
  listBackends,
  memory,
  registerBackend,
  removeBackend,
  runKernel,
  setBackend,
  setKernelLeakCheck,
  tidy,
} from "./engine";
export type {
  AssignObserver,
  AssignRecord,
  BackendMemoryInfo,
  DisposeObserver,
  DisposeRecord,
  KernelObserver,
  KernelRecord,
  MemoryInfo,
  RequiresGradObserver,
  RequiresGradRecord,
  TensorInputs,
  TensorOutputs,
} from "./engine";
export * from "./half";
export { disableLeakGuard, enableLeakGuard, type LeakGuardOptions, type LeakReport, type LeakSite, leakGuard } from "./leak_guard";
export * from "./kernel_names";
export { BsrPattern } from "./pattern";
export * from "./shape";
export { Tensor, type TensorStorage } from "./tensor";

export * from "./ops/creation";
export * from "./ops/elementwise";
export * from "./ops/matmul";
export * from "./ops/nn_ops";
export * from "./ops/reduce";
export * from "./ops/shape_ops";
export * from "./ops/sparse";
export { assertBoolean, formatArg, optionsArg, seedArg } from "./ops/validate";

// The reference backend ships inside core and is registered by this entry at priority 1.
import { JsBackend } from "./backends/js";
import { registerBackend as registerBackendForJs } from "./engine";
export {
  type AttentionBackwardInputs,
  type AttentionOnArrays,
  type ActivationKernels,
  type AdamHyperparameters,
  type AdamStep,
  type AdamStepInPlace,
  adamKernels,
  type AttentionSizes,
  type BsrLinearHalfArgs,
  type LinearHalfArgs,
  cachedAttentionWrites,
  jsAdamStep,
  type FloatOutput,
  JsBackend,
  JsBuffer,
  type ProductCompute,
  jsKernels,
  packedAttentionKernels,
  productKernels,
} from "./backends/js";
export { type DelegatedKernel, delegateToJs, delegatedKernels } from "./backends/js/delegate";
// The js products' float32 compute functions, for other backends (documented under @blocksparse/core/js-kernels).
export {
  type BlockNormsArgs,
  type BsrLinearArgs,
  type BsrMatmulArgs,
  type BsrSizes,
  type MatmulArgs,
  type SampledMatmulArgs,
  blockNormsF32,
  bsrLinearF32,
  bsrMatmulF32,
  matmulF32,
  sampledMatmulF32,
} from "./backends/js/compute";
registerBackendForJs("js", () => new JsBackend(), 1);
