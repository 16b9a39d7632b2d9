// A stand-in for the CUDA addon that launches nothing and returns at once: with it, an eager step's time on the
// cuda backend is the host's JavaScript alone (core, autograd, nn and the backend's own checks), measurable on
// any machine. Used by eager_step.ts --stand-in; results it computes are meaningless.
let next = 1;
const answers = {
  init: () => ({ index: 0, name: "stand-in", computeCapability: "9.0", multiprocessors: 132, totalMemory: 1e11, runtimeVersion: 13000, driverVersion: 13000 }),
  buildInfo: () => ({ cublas: true, cublasLibrary: "stand-in", cudaVersion: 13000, architectures: "90a" }),
  alloc: () => next++,
  createPattern: () => next++,
  memory: () => ({ bytesInUse: 0, bytesCached: 0, buffersInUse: 0, buffersCached: 0, cudaMallocCalls: 0, cacheHits: 0, bytesInGraphPools: 0 }),
  autotuneRecords: () => [],
  setAutotune: () => false,
  allowTf32: () => false,
  setAllowTf32: () => false,
  setDenseSampledMode: () => 0,
  setDenseProductMode: () => 0,
  ncclInfo: () => ({ available: false, library: "stand-in" }),
};
// Every other function the loader asks for exists and returns undefined.
module.exports = new Proxy(answers, {
  get: (target, key) => (key in target ? target[key] : typeof key === "string" ? () => undefined : undefined),
  has: () => true,
});
