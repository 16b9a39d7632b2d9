// dW's patch tile at 32x32 blocks (kPatchDwTile and kPatchDwPairsTile, tc_kernels.h): mma.sync m16n8k16 on every
// sm_80+ device. Kept for measurement: on an H200 it moved half the L2 bytes of mma.sync's dW tile at its rate
// (docs/kernels.md, "dW's patch tile (dev variants 30, 31 and 32)").
//
// A CTA takes one record of the pattern's patch list (patch_list.h, appendPatchList): up to kPatchMaxBlocks stored
// blocks of a few consecutive block rows x a few consecutive block columns of W. For each 64-token step of its token
// range it copies the patch's dY slices (64 tokens x one block row's 32 outputs) and X slices (64 tokens x one block
// column's 32 inputs) into shared memory once, and every block of the patch reads its row's and its column's slice from
// there: 32 n / (rows + columns) FLOP per L2 byte for n blocks, where the wgmma and mma.sync dW tiles, whose CTAs share
// one block column's X slice among its blocks, stay under 32 (docs/kernels.md, "dW's patch tile").
//
// Eight warps each hold the float32 accumulators of up to four of the record's blocks (a 32x32 block is 2 x 4 tiles of
// m16n8 per warp: 32 registers a thread), a balanced run of the record's. Both slices are token-major in
// shared memory (64-byte rows, swizzled as panelOffset<32>), read with ldmatrix.trans: dY^T as mma's A (the block's
// rows), X as its B (the block's columns), the tokens as its K. A split of the tokens writes float32 partials
// [split][nnzBlocks][32][32] for launchSumSplits; one split writes the values.
#include "dev_variants.h"
#include "tc/patch_list.h"
#include "tc/patch_tile.cuh"
#include "tc/bsr_mma.cuh"

namespace bs::tc {

namespace {

constexpr int kPatchStep = 64;                       // tokens per pipeline stage
constexpr int kPatchSliceBytes = kPatchStep * 64;    // 64 tokens x 32 two-byte elements
constexpr int kPatchStages = 2;
constexpr int kPatchStageBytes = kPatchMaxSlices * kPatchSliceBytes;
constexpr int kPatchSmemBytes = 128 + kPatchStages * kPatchStageBytes;

// The warps of a CTA and the blocks each holds at most (kPatchMaxBlocks in all).
template <int kWarps_>
struct PatchTraits {
  static constexpr int kWarps = kWarps_;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlocksPerWarp = kPatchMaxBlocks / kWarps;
  static_assert(kWarps * kBlocksPerWarp == kPatchMaxBlocks, "the warps hold a whole record");
  static_assert(kThreads % (kPatchStep * 4) == 0, "whole tokens of 16-byte chunks per pass");
};

// One warp's kCount blocks over one stage: per 16-token slice, each block's dY fragments (its row's 32 outputs) and X
// fragments (its column's 32 inputs) by ldmatrix.trans, then its 2 x 4 m16n8k16 products. A whole stage is straight-line
// code (kCount is the warp's block count, fixed per instantiation), so the loads of one block issue under the products
// of the one before.
template <typename T, int kCount, int kHeld>
__device__ __forceinline__ void patchStage(uint32_t stage, const uint32_t (&aSlice)[kHeld],
                                           const uint32_t (&bSlice)[kHeld], int lane, float (&acc)[kHeld][2][4][4]) {
  const int quad = lane >> 3, r8 = lane & 7;
#pragma unroll
  for (int kk = 0; kk < kPatchStep / 16; ++kk) {
    const int kA = kk * 16 + r8 + (quad >> 1) * 8, kB = kk * 16 + r8 + (quad & 1) * 8;
    const uint32_t aOffset0 = panelOffset<32>(kA, quad & 1), aOffset1 = panelOffset<32>(kA, 2 + (quad & 1));
    const uint32_t bOffset0 = panelOffset<32>(kB, quad >> 1), bOffset1 = panelOffset<32>(kB, 2 + (quad >> 1));
#pragma unroll
    for (int b = 0; b < kCount; ++b) {
      uint32_t af[2][4], r0[4], r1[4];
      ldmatrixX4Trans(af[0], stage + aSlice[b] + aOffset0);
      ldmatrixX4Trans(af[1], stage + aSlice[b] + aOffset1);
      ldmatrixX4Trans(r0, stage + bSlice[b] + bOffset0);
      ldmatrixX4Trans(r1, stage + bSlice[b] + bOffset1);
      const uint32_t bf[4][2] = {{r0[0], r0[1]}, {r0[2], r0[3]}, {r1[0], r1[1]}, {r1[2], r1[3]}};
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) mma16816<T>(acc[b][mt][nt], af[mt], bf[nt]);
    }
  }
}

template <typename T, class P>
__global__ void __launch_bounds__(P::kThreads, 1) bsrMmaPatchDwKernel(const KernelArgs args) {
  constexpr int kPatchWarps = P::kWarps, kPatchBlocksPerWarp = P::kBlocksPerWarp;
  extern __shared__ uint8_t smemRaw[];
  // Slices start on 128-byte boundaries, so that the swizzle's eight rows of a chunk hit distinct banks.
  const uint32_t smem = (smemAddress(smemRaw) + 127) & ~uint32_t(127);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  allowDependentLaunch();
  waitForPrimary();

  const int32_t* record = args.patchList + static_cast<int64_t>(blockIdx.x) * kPatchRecordWords;
  const int32_t rowBase = __ldg(record), colBase = __ldg(record + 1), spans = __ldg(record + 2);
  const int32_t blocks = __ldg(record + 3);
  const int rowSlices = spans >> 16, slices = rowSlices + (spans & 0xffff);
  const int64_t tokenBase = static_cast<int64_t>(blockIdx.y) * args.tokensPerSplit;
  const int64_t tokenEnd = min(args.m, tokenBase + args.tokensPerSplit);
  const int steps = static_cast<int>((tokenEnd - tokenBase + kPatchStep - 1) / kPatchStep);

  // This warp's blocks: a balanced run of the record's, row-major (at most kPatchBlocksPerWarp).
  const int first = warp * blocks / kPatchWarps, count = (warp + 1) * blocks / kPatchWarps - first;
  int32_t value[kPatchBlocksPerWarp];
  uint32_t aSlice[kPatchBlocksPerWarp], bSlice[kPatchBlocksPerWarp];
#pragma unroll
  for (int b = 0; b < kPatchBlocksPerWarp; ++b) {
    const int entry = b < count ? first + b : first;
    value[b] = __ldg(record + kPatchHeaderWords + 2 * entry);
    const int32_t at = __ldg(record + kPatchHeaderWords + 2 * entry + 1);
    aSlice[b] = static_cast<uint32_t>(at >> 16) * kPatchSliceBytes;
    bSlice[b] = static_cast<uint32_t>(rowSlices + (at & 0xffff)) * kPatchSliceBytes;
  }

  auto load = [&](int step, uint32_t stage) {
    loadPatchSlices<T, kPatchStep, P::kThreads>(args, rowBase, colBase, rowSlices, slices, tokenBase, tokenEnd, step,
                                                stage, tid);
  };

  float acc[kPatchBlocksPerWarp][2][4][4];
#pragma unroll
  for (int b = 0; b < kPatchBlocksPerWarp; ++b)
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[b][mt][nt][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < kPatchStages - 1; ++s) {
    if (s < steps) load(s, smem + s * kPatchStageBytes);
    cpAsyncCommit();
  }
  for (int step = 0; step < steps; ++step) {
    cpAsyncWait<kPatchStages - 2>();
    __syncthreads();  // stage `step` landed for every thread; stage `step - 1` is free again
    const int next = step + kPatchStages - 1;
    if (next < steps) load(next, smem + (next % kPatchStages) * kPatchStageBytes);
    cpAsyncCommit();
    const uint32_t stage = smem + (step % kPatchStages) * kPatchStageBytes;
    switch (count) {
      case 4: if constexpr (kPatchBlocksPerWarp >= 4) patchStage<T, 4>(stage, aSlice, bSlice, lane, acc); break;
      case 3: if constexpr (kPatchBlocksPerWarp >= 3) patchStage<T, 3>(stage, aSlice, bSlice, lane, acc); break;
      case 2: patchStage<T, 2>(stage, aSlice, bSlice, lane, acc); break;
      case 1: patchStage<T, 1>(stage, aSlice, bSlice, lane, acc); break;
      default: break;
    }
  }
  cpAsyncWait<0>();

  // Each thread holds rows g and g + 8 of every m16n8 tile, two adjacent columns each: the block's row-major values.
  const int g = lane >> 2, c2 = (lane & 3) * 2;
  float* partial = patchPartials(args);
#pragma unroll
  for (int b = 0; b < kPatchBlocksPerWarp; ++b) {
    if (b >= count) break;
    const int64_t base = static_cast<int64_t>(value[b]) * 1024;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          const int64_t at = base + (mt * 16 + g + half * 8) * 32 + nt * 8 + c2;
          storePatchPair<T>(partial, args, at, acc[b][mt][nt][half * 2], acc[b][mt][nt][half * 2 + 1]);
        }
  }
}

template <typename T, class P>
bool launchTyped(const KernelArgs& args, cudaStream_t stream) {
  const int64_t splits = (args.m + args.tokensPerSplit - 1) / args.tokensPerSplit;
  if (splits > 65535 || (splits > 1 && args.partials == nullptr)) return false;
  auto kernel = bsrMmaPatchDwKernel<T, P>;
  BS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kPatchSmemBytes));
  KernelArgs launched = args;
  if (splits == 1) launched.partials = nullptr;
  launchOverlapped("launch of bsrMmaPatchDwKernel", kernel,
                   dim3(static_cast<unsigned>(args.patchItems), static_cast<unsigned>(splits)), dim3(P::kThreads),
                   kPatchSmemBytes, stream, launched);
  return true;
}

}  // namespace

using PatchDefault = PatchTraits<8>;
using PatchWide = PatchTraits<16>;

bool launchPatchDwVariant(DType dtype, const KernelArgs& args, int blockSize, int variant, cudaStream_t stream) {
  if (blockSize != 32 || args.groupList != nullptr || args.clusterSplits > 1 || args.tokensPerSplit <= 0) return false;
  if (variant == kPatchDwWgmmaTile) return launchPatchDwWgmma(dtype, args, stream);
  if (args.patchList == nullptr || args.patchItems <= 0) return false;
  const bool wide = variant == kPatchDwPairsTile;
  if (dtype == DType::BFloat16)
    return wide ? launchTyped<__nv_bfloat16, PatchWide>(args, stream) : launchTyped<__nv_bfloat16, PatchDefault>(args, stream);
  if (dtype == DType::Float16)
    return wide ? launchTyped<__half, PatchWide>(args, stream) : launchTyped<__half, PatchDefault>(args, stream);
  return false;
}

}  // namespace bs::tc
