/**
 * A stand-in for the native addon that launches nothing: every function of NATIVE_FUNCTIONS exists, the ones whose
 * answer the backend reads give a plausible one, and each call is recorded. With it a CudaBackend starts on any
 * machine, so that the checks the TypeScript layer makes before the addon is reached can be tested without a GPU
 * (mock `startCuda` of ../src/loader to return `standInStart()`). Results of kernels are meaningless.
 */
import type { CudaStart } from "../src/loader";
import { type DeviceInfo, NATIVE_FUNCTIONS, type NativeAddon } from "../src/native";

export const STAND_IN_DEVICE: DeviceInfo = {
  index: 0,
  name: "stand-in",
  computeCapability: "9.0",
  multiprocessors: 132,
  totalMemory: 1e11,
  memoryBandwidth: 3.35e12,
  runtimeVersion: 13000,
  driverVersion: 13000,
};

/** The names of the addon's functions called so far, in order (cleared by the tests as they like). */
export const standInCalls: string[] = [];

let nextHandle = 1;
const answers: Partial<Record<keyof NativeAddon, (...args: never[]) => unknown>> = {
  init: () => STAND_IN_DEVICE,
  buildInfo: () => ({ cublas: true, cublasLibrary: "stand-in", cublasLtLibrary: "stand-in", cudaVersion: 13000, architectures: "90a" }),
  alloc: () => nextHandle++,
  createPattern: () => nextHandle++,
  endCapture: () => nextHandle++,
  memory: () => ({ bytesInUse: 0, bytesCached: 0, buffersInUse: 0, buffersCached: 0, cudaMallocCalls: 0, cacheHits: 0, bytesReserved: 0, segments: 0, bytesReleasable: 0, bytesInGraphPools: 0 }),
  autotuneRecords: () => [],
  allowTf32: () => false,
  setAllowTf32: () => false,
  setAutotune: () => false,
  setCublasEnabled: () => true,
  setDenseSampledMode: () => 0,
  setDenseProductMode: () => 0,
  setMemoryLimit: () => 0,
  importAutotune: () => false,
  linear: () => false,
  linearActivation: () => false,
  sampledPlan: () => "declined",
  ncclInfo: () => ({ available: false, library: "stand-in" }),
};

/** The stand-in: one object, shared by every backend the test file starts. */
export const standInAddon = Object.fromEntries(
  NATIVE_FUNCTIONS.map((name) => [
    name,
    (...args: never[]) => {
      standInCalls.push(name);
      return answers[name]?.(...args);
    },
  ]),
) as unknown as NativeAddon;

/** What startCuda returns when the stand-in is the addon. */
export function standInStart(): CudaStart {
  return { addon: standInAddon, device: STAND_IN_DEVICE, path: "stand-in" };
}
