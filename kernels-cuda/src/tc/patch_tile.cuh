// What dev's dW patch tiles (bsr_mma_patch.cu, bsr_wgmma_patch.cu) share on the device: the copy of a record's slices.
#pragma once

#include "patch_list.h"
#include "ptx.cuh"
#include "tc_kernels.h"

namespace bs::tc {

// Copies step `step` (kStep tokens from tokenBase, zeros past tokenEnd) of a record's slices into `stage`: its rowSlices
// dY slices (block rows rowBase...) then its X slices (block columns colBase...), up to `slices` in all, each kStep
// tokens x 32 features swizzled as panelOffset<32> (kStep x 64 bytes). kThreads threads, thread tid copying 16-byte
// chunk tid % 4 of token (tid / 4) % kStep of every (kThreads / (4 kStep))-th slice.
template <typename T, int kStep, int kThreads>
__device__ __forceinline__ void loadPatchSlices(const KernelArgs& args, int32_t rowBase, int32_t colBase, int rowSlices,
                                                int slices, int64_t tokenBase, int64_t tokenEnd, int step,
                                                uint32_t stage, int tid) {
  constexpr int kPasses = kThreads / (kStep * 4);
  static_assert(kThreads % (kStep * 4) == 0, "whole tokens of 16-byte chunks per pass");
  const int chunkToken = (tid >> 2) % kStep, chunk = tid & 3, pass = tid / (kStep * 4);
  const uint32_t at = stage + panelOffset<32>(chunkToken, chunk);
  const int64_t token = tokenBase + static_cast<int64_t>(step) * kStep + chunkToken;
  const bool valid = token < tokenEnd;
  const T* dyRow = static_cast<const T*>(args.a) +
                   (valid ? token * args.rows + static_cast<int64_t>(rowBase) * 32 + chunk * 8 : 0);
  const T* xRow = static_cast<const T*>(args.b) +
                  (valid ? token * args.cols + static_cast<int64_t>(colBase) * 32 + chunk * 8 : 0);
  for (int s = pass; s < slices; s += kPasses) {
    const T* src = s < rowSlices ? dyRow + (valid ? s * 32 : 0) : xRow + (valid ? (s - rowSlices) * 32 : 0);
    cpAsync16(at + s * kStep * 64, src, valid);
  }
}

// This split's float32 partials [nnzBlocks][32][32] (the grid's y the split), or null with one split.
__device__ __forceinline__ float* patchPartials(const KernelArgs& args) {
  return args.partials ? args.partials + static_cast<int64_t>(blockIdx.y) * args.nnzBlocks * 1024 : nullptr;
}

// Writes two adjacent sums at `at` of the values: into this split's partials, or rounded into the values themselves.
template <typename T>
__device__ __forceinline__ void storePatchPair(float* partial, const KernelArgs& args, int64_t at, float v0, float v1) {
  if (partial) *reinterpret_cast<float2*>(partial + at) = make_float2(v0, v1);
  else *reinterpret_cast<uint32_t*>(static_cast<T*>(args.out) + at) = packPair<T>(v0, v1);
}

// Stores consumer `consumer`'s kProducts m64n32 products of a pair record (patch_list.h, appendPatchPairList): each
// product's two blocks, the second left out where the record has none. Warp w of the consumer holds rows 16w + g and
// + 8 of the m64 product: warps 0-1 the first block's 32 rows, 2-3 the second's; per 8 columns j, accumulators 4j (+1)
// on row 16w + g and 4j + 2 (+3) on row + 8.
template <typename T, int kProducts>
__device__ __forceinline__ void storePatchProducts(const float (&acc)[kProducts][16], const int32_t* record,
                                                   int consumer, int warpInGroup, int lane, const KernelArgs& args) {
  const int g = lane >> 2, c2 = (lane & 3) * 2;
  float* partial = patchPartials(args);
#pragma unroll
  for (int p = 0; p < kProducts; ++p) {
    const int32_t* product = record + kPatchHeaderWords + 4 * (consumer * kProducts + p);
    const int32_t value = __ldg(product + 2 + warpInGroup / 2);
    if (value < 0) continue;
    const int64_t base = static_cast<int64_t>(value) * 1024;
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t at = base + ((warpInGroup % 2) * 16 + g + half * 8) * 32 + j * 8 + c2;
        storePatchPair<T>(partial, args, at, acc[p][4 * j + 2 * half], acc[p][4 * j + 2 * half + 1]);
      }
  }
}

}  // namespace bs::tc
