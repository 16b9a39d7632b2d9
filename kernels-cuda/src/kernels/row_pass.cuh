// One pass of `threads` threads over a row of n elements of T (LayerNorm's rows, cross-entropy's rows): 16-byte
// vector loads and stores where the row's start allows, scalar elements before the first 16-byte boundary and
// after the last. A row of 768 bf16 values read two bytes at a time spends its time issuing loads; in 16-byte
// vectors a warp moves 512 bytes per load instruction.
#pragma once

#include <cstdint>

#include "dtype.cuh"

namespace bs {

template <typename T>
constexpr int kRowVector = 16 / static_cast<int>(sizeof(T));

// Elements of T before p's first 16-byte boundary (p is T-aligned).
template <typename T>
__device__ __forceinline__ int64_t elementsToBoundary(const T* p) {
  return static_cast<int64_t>(((16u - (reinterpret_cast<uintptr_t>(p) & 15u)) & 15u) / sizeof(T));
}

// fn(j, v) -> float for every element j of the row, v[i] = in[i][j] as float. With kWrite, out[j] = fn(...) rounded
// to T; without, fn's result is ignored. Vectors are used when every pointer has the same offset from a 16-byte
// boundary (always, for rows of a width that is a multiple of kRowVector<T> in buffers from the allocator);
// otherwise the whole row goes element by element.
template <typename T, int kIn, bool kWrite, typename Fn>
__device__ __forceinline__ void rowPass(const T* const (&in)[kIn], T* out, int64_t n, int tid, int threads, Fn fn) {
  constexpr int kN = kRowVector<T>;
  const uintptr_t phase = reinterpret_cast<uintptr_t>(in[0]) & 15u;
  bool vectors = true;
#pragma unroll
  for (int i = 1; i < kIn; ++i) vectors = vectors && (reinterpret_cast<uintptr_t>(in[i]) & 15u) == phase;
  if constexpr (kWrite) vectors = vectors && (reinterpret_cast<uintptr_t>(out) & 15u) == phase;
  int64_t head = vectors ? elementsToBoundary(in[0]) : n;
  if (head > n) head = n;
  auto scalar = [&](int64_t j) {
    float v[kIn];
#pragma unroll
    for (int i = 0; i < kIn; ++i) v[i] = toFloat<T>(in[i][j]);
    float r = fn(j, v);
    if constexpr (kWrite) out[j] = fromFloat<T>(r);
    (void)r;
  };
  for (int64_t j = tid; j < head; j += threads) scalar(j);
  const int64_t vecs = (n - head) / kN;
  for (int64_t q = tid; q < vecs; q += threads) {
    const int64_t j0 = head + q * kN;
    uint4 raw[kIn];
#pragma unroll
    for (int i = 0; i < kIn; ++i) raw[i] = *reinterpret_cast<const uint4*>(in[i] + j0);
    uint4 packed;
    T* packedT = reinterpret_cast<T*>(&packed);
#pragma unroll
    for (int k = 0; k < kN; ++k) {
      float v[kIn];
#pragma unroll
      for (int i = 0; i < kIn; ++i) v[i] = toFloat<T>(reinterpret_cast<const T*>(&raw[i])[k]);
      float r = fn(j0 + k, v);
      if constexpr (kWrite) packedT[k] = fromFloat<T>(r);
      (void)r;
    }
    if constexpr (kWrite) *reinterpret_cast<uint4*>(out + j0) = packed;
  }
  for (int64_t j = head + vecs * kN + tid; j < n; j += threads) scalar(j);
}

}  // namespace bs
