// Overlap with the kernel that follows in the stream (programmatic dependent launch, sm_90+).
#pragma once

namespace bs {

// Lets the next kernel in the stream start before this one ends, if it was launched to wait for it (the decoding
// kernel, tc/bsr_decode.cu: it asks L2 for its weights, then waits for this kernel to finish and flush before it
// reads anything). Kernels launched the ordinary way still wait for this one to end, so calling it is always safe;
// before sm_90 it is nothing. Called first by the small kernels that run between a model's layers.
__device__ __forceinline__ void allowDependentLaunch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

}  // namespace bs
