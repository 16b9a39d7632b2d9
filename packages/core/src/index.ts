export const version = "0.1.0";

export type { Backend, BackendFactory, BackendMemory, DataId, KernelArgs, KernelFunc, KernelTable, TensorInfo } from "./backend";
export * from "./dtypes";
export * from "./errors";
export {
  Engine,
  addKernelObserver,
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
  BackendMemoryInfo,
  KernelObserver,
  KernelRecord,
  MemoryInfo,
  TensorInputs,
  TensorOutputs,
} from "./engine";
export * from "./half";
export * from "./kernel_names";
export type { BsrPattern } from "./pattern";
export * from "./shape";
export { Tensor } from "./tensor";
