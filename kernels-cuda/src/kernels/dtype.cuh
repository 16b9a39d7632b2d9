// Loading and storing each element type through float32, and dispatch over the float types.
#pragma once

#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../common.h"

namespace bs {

template <typename T>
__device__ __forceinline__ float toFloat(T value);
template <>
__device__ __forceinline__ float toFloat<float>(float value) { return value; }
template <>
__device__ __forceinline__ float toFloat<__half>(__half value) { return __half2float(value); }
template <>
__device__ __forceinline__ float toFloat<__nv_bfloat16>(__nv_bfloat16 value) { return __bfloat162float(value); }
template <>
__device__ __forceinline__ float toFloat<int32_t>(int32_t value) { return static_cast<float>(value); }

template <typename T>
__device__ __forceinline__ T fromFloat(float value);
template <>
__device__ __forceinline__ float fromFloat<float>(float value) { return value; }
template <>
__device__ __forceinline__ __half fromFloat<__half>(float value) { return __float2half_rn(value); }
template <>
__device__ __forceinline__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float value) { return __float2bfloat16_rn(value); }
template <>
__device__ __forceinline__ int32_t fromFloat<int32_t>(float value) {
  // JavaScript's ToInt32: truncate toward zero, wrap modulo 2^32; NaN and infinities give 0.
  if (!isfinite(value)) return 0;
  double wrapped = fmod(trunc(static_cast<double>(value)), 4294967296.0);
  if (wrapped < 0) wrapped += 4294967296.0;
  return static_cast<int32_t>(static_cast<uint32_t>(wrapped));
}

// N adjacent elements moved as one aligned vector (16-byte loads and stores for eight half or four float values).
template <typename T, int N>
struct alignas(sizeof(T) * N) Packed {
  T v[N];
};

// 16 bytes of T (4 float32 or 8 half values) rounded from float32 values (as fromFloat does) into one word, which
// stores as one 16-byte access: a T[N] or Packed<T, N> built element by element was stored in 2- and 4-byte pieces.
template <typename T>
__device__ __forceinline__ uint4 packWord(const float (&f)[16 / sizeof(T)]) {
  uint4 word;
  if constexpr (sizeof(T) == 4) {
    word = make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]), __float_as_uint(f[3]));
  } else {
    uint32_t w[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if constexpr (std::is_same_v<T, __half>) {
        const __half2 pair = __floats2half2_rn(f[2 * k], f[2 * k + 1]);
        w[k] = *reinterpret_cast<const uint32_t*>(&pair);
      } else {
        const __nv_bfloat162 pair = __floats2bfloat162_rn(f[2 * k], f[2 * k + 1]);
        w[k] = *reinterpret_cast<const uint32_t*>(&pair);
      }
    }
    word = make_uint4(w[0], w[1], w[2], w[3]);
  }
  return word;
}

// One 16-byte global store (p 16-byte aligned). Plain uint4 stores through a T* were split into 4-byte stores in
// some loops (the compiler's view of the pointer's alignment), a quarter of the store width.
__device__ __forceinline__ void store16(void* p, uint4 word) {
  asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(word.x), "r"(word.y), "r"(word.z), "r"(word.w)
               : "memory");
}

constexpr int kThreads = 256;

inline unsigned gridFor(int64_t n, int threads = kThreads) {
  int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65535 * 16 ? blocks : 65535 * 16);
}

}  // namespace bs

// Runs the body with T bound to the storage type of a float dtype.
#define BS_DISPATCH_FLOAT(dtype, T, ...)                                   \
  switch (dtype) {                                                         \
    case ::bs::DType::Float32: {                                           \
      using T = float;                                                     \
      __VA_ARGS__;                                                         \
      break;                                                               \
    }                                                                      \
    case ::bs::DType::Float16: {                                           \
      using T = __half;                                                    \
      __VA_ARGS__;                                                         \
      break;                                                               \
    }                                                                      \
    case ::bs::DType::BFloat16: {                                          \
      using T = __nv_bfloat16;                                             \
      __VA_ARGS__;                                                         \
      break;                                                               \
    }                                                                      \
    default:                                                               \
      ::bs::throwInvalid(std::string("expected a float dtype, got ") + ::bs::dtypeName(dtype)); \
  }

// Runs the body with T bound to the storage type of any dtype.
#define BS_DISPATCH_ANY(dtype, T, ...)                                     \
  switch (dtype) {                                                         \
    case ::bs::DType::Int32: {                                             \
      using T = int32_t;                                                   \
      __VA_ARGS__;                                                         \
      break;                                                               \
    }                                                                      \
    default:                                                               \
      BS_DISPATCH_FLOAT(dtype, T, __VA_ARGS__);                            \
  }
