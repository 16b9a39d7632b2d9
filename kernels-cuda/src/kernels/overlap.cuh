// Overlap with the kernels before and after in the stream (programmatic dependent launch, sm_90+).
//
// A kernel launched with launchOverlapped may start while the kernel before it in the stream ends: its CTAs are
// scheduled as SMs free up in that kernel's last wave (once all of that kernel's CTAs have called
// allowDependentLaunch, or ended), instead of after the whole grid has ended and the launch has gone through. Such a
// kernel calls waitForPrimary before it reads or writes any global memory: that returns once the kernel before it
// has ended and its writes are visible, so what overlaps is the launch and the kernel's own set-up (shared memory,
// barriers, tensor-map prefetches), never its loads. A kernel launched the ordinary way returns from the wait at once.
#pragma once

#include <cuda_runtime.h>

#include <mutex>
#include <unordered_map>
#include <utility>

#include "../common.h"

namespace bs {

// Lets the next kernel in the stream start before this one ends, if it was launched to wait for it (launchOverlapped,
// or the decoding kernel, tc/bsr_decode.cu). Kernels launched the ordinary way still wait for this one to end, so
// calling it is always safe; before sm_90 it is nothing.
__device__ __forceinline__ void allowDependentLaunch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Waits until the kernel before this one in the stream has ended and its writes are visible (a programmatic launch);
// returns at once for a kernel launched the ordinary way, and before sm_90.
__device__ __forceinline__ void waitForPrimary() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// The first thing a pass launched with launchOverlapped does: wait for the kernel before it, then let the kernel after
// it start (only then, so a chain of passes never runs ahead of a kernel that is still computing).
__device__ __forceinline__ void beginOverlappedPass() {
  waitForPrimary();
  allowDependentLaunch();
}

// Programmatic launches are on unless BLOCKSPARSE_CUDA_PROGRAMMATIC_LAUNCH=0 (read once per process: measurement, and
// a way out should a driver misbehave).
inline bool programmaticLaunchEnabled() {
  static const bool enabled = environmentSwitch("BLOCKSPARSE_CUDA_PROGRAMMATIC_LAUNCH") != 0;
  return enabled;
}

// Whether the code the current device runs for `kernel` was built for sm_90+ (so its waitForPrimary waits): a
// programmatic launch of code without the wait would race with the kernel before it. Both the binary and the PTX it
// came from must be sm_90+: a newer GPU that JIT-compiles the sm_80 PTX runs a binary of its own version made from code
// without the wait. (A PTX version of 0, where the runtime does not say, defers to the binary's.) Asked once per device
// and kernel.
inline bool programmaticLaunchBuilt(const void* kernel) {
  constexpr int kDevices = 64;
  static std::mutex mutex;
  static std::unordered_map<const void*, bool> built[kDevices];
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kDevices) {
    cudaGetLastError();
    return false;
  }
  std::lock_guard<std::mutex> lock(mutex);
  auto known = built[device].find(kernel);
  if (known != built[device].end()) return known->second;
  cudaFuncAttributes attributes{};
  bool answer = false;
  if (cudaFuncGetAttributes(&attributes, kernel) == cudaSuccess)
    answer = attributes.binaryVersion >= 90 && (attributes.ptxVersion == 0 || attributes.ptxVersion >= 90);
  else cudaGetLastError();
  built[device].emplace(kernel, answer);
  return answer;
}

// Launches `kernel` so that it may overlap the end of the kernel before it in the stream (a programmatic dependent
// launch, in a captured graph a programmatic edge) where the device runs sm_90+ code for it; the ordinary way
// elsewhere. `kernel` must call waitForPrimary before it touches global memory. Launch errors are thrown, naming
// `name`.
template <class... Params, class... Args>
void launchOverlapped(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t sharedBytes,
                      cudaStream_t stream, Args&&... args) {
  if (programmaticLaunchEnabled() && programmaticLaunchBuilt(reinterpret_cast<const void*>(kernel))) {
    cudaLaunchAttribute attribute{};
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config{};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = sharedBytes;
    config.stream = stream;
    config.attrs = &attribute;
    config.numAttrs = 1;
    const cudaError_t launched = cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
    if (launched != cudaSuccess) {
      cudaGetLastError();
      throwCuda(launched, name);
    }
  } else {
    kernel<<<grid, block, sharedBytes, stream>>>(std::forward<Args>(args)...);
  }
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) throwCuda(status, name);
}

// CTAs of `kernel` (launched with `threads` threads and `sharedBytes` of dynamic shared memory) that one SM of the
// current device holds at once, as the runtime's occupancy says; 0 where it cannot say (the error cleared).
template <class... Params>
int residentCtas(void (*kernel)(Params...), int threads, int sharedBytes) {
  int ctas = 0;
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, sharedBytes) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, kernel, threads, sharedBytes) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return ctas;
}

}  // namespace bs
