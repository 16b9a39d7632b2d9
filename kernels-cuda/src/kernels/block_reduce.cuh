// Warp and block reductions of float32 partials.
#pragma once

namespace bs {

__device__ __forceinline__ float warpSum(float value) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

__device__ __forceinline__ float warpMax(float value) {
  for (int offset = 16; offset > 0; offset >>= 1) value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  return value;
}

// Every thread of the block gets the result. `scratch` holds one float per warp (32 suffice).
template <bool IsMax>
__device__ __forceinline__ float blockReduce(float value, float* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  value = IsMax ? warpMax(value) : warpSum(value);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  float init = IsMax ? -INFINITY : 0.0f;
  value = lane < warps ? scratch[lane] : init;
  return IsMax ? warpMax(value) : warpSum(value);
}

__device__ __forceinline__ float blockSum(float value, float* scratch) { return blockReduce<false>(value, scratch); }
__device__ __forceinline__ float blockMax(float value, float* scratch) { return blockReduce<true>(value, scratch); }

}  // namespace bs
