// A kernel that holds a stream until the host releases it (autotune.cpp's timing).
#include <cstdint>

#include "../kernels.h"

namespace bs {

namespace {

__device__ __forceinline__ uint64_t globalNanoseconds() {
  uint64_t now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  return now;
}

// One thread polls the host-mapped word until it is non-zero, or until timeoutNs have passed.
__global__ void holdStreamKernel(const volatile int* release, uint64_t timeoutNs) {
  const uint64_t start = globalNanoseconds();
  while (*release == 0 && globalNanoseconds() - start < timeoutNs) __nanosleep(2000);
}

}  // namespace

void launchHoldStream(const int* release, uint64_t timeoutNs, cudaStream_t stream) {
  holdStreamKernel<<<1, 1, 0, stream>>>(release, timeoutNs);
  BS_LAUNCH_CHECK("holdStreamKernel");
}

}  // namespace bs
