// dW at 32x32 blocks on wgmma through patches (kPatchPairTile, tc_kernels.h; sm_90a): the addon's tile for 32x32 weight
// gradients with many tokens at moderate densities (dispatch.cu, patchDwRule, on the devices of kPatchPairMinBandwidth;
// docs/kernels.md, "dW's patch tile fed by bulk copies").
//
// A CTA takes one record of the pattern's pair list (patch_list.h, appendPatchPairList, built when a 32x32 pattern is
// uploaded on a wgmma device while the tile is dispatched, and by tc_bench): the stored blocks of a patch of a few block rows x a few block columns of W, paired within
// each column. Each pair is one wgmma m64n32k16 per 16 tokens, A the two blocks' dY row slices (MN-major: the
// descriptor's start at the first slice and its leading offset the distance to the second, each slice one 64-byte
// swizzled atom of 32 features) and B the column's X slice, so each slice of a 64-token step is loaded once for all of
// the record's blocks. One producer warp copies each slice of a step as a 2-D tensor-map box (64 tokens x 32 features,
// 64-byte swizzle), its lanes issuing one slice each, into a ring of stages with full and empty mbarriers; two consumer
// warpgroups of 8 products each keep one step's wgmmas in flight while they wait for the next. The ring is 208 KB, cut
// into as many stages of the record's own slices as fit: the records' kPatchPairMaxSlices slices (17) give three.
// Products past the record's count run on whatever slices their descriptors name and are never stored, so that every
// wgmma is issued on every path (ptxas serializes wgmma behind branches it cannot prove uniform). The token splits'
// float32 partials (args.partials) are summed by the dispatch's split pass.
#include <cudaTypedefs.h>

#include "bsr_wgmma.cuh"
#include "patch_list.h"
#include "patch_tile.cuh"
#include "wgmma_ops.cuh"

namespace bs::tc {

namespace {

constexpr int kPatchStep = 64;  // tokens per stage (32-deep stages, twice as many, measured slower)
constexpr int kPtConsumers = 2;
constexpr int kPtThreads = 128 * (kPtConsumers + 1);                  // the producer warpgroup, then the consumers
[[maybe_unused]] constexpr int kPtProducts = kPatchPairProducts / kPtConsumers;  // per consumer warpgroup
constexpr int kPtRingBytes = kPatchMaxSlices * 64 * 64 * 2;           // two stages of 26 slices of 64 tokens
constexpr int kPtMaxStages = 12;
constexpr int kPtSmemBytes = 1024 + kPtRingBytes + 2 * kPtMaxStages * 8;
static_assert(kPtSmemBytes <= 227 * 1024, "fits the shared memory");

template <typename T>
__global__ void __launch_bounds__(kPtThreads, 1)
    bsrWgmmaPatchDwKernel(const __grid_constant__ CUtensorMap mapDy, const __grid_constant__ CUtensorMap mapX,
                             const KernelArgs args) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kSliceBytes = kPatchStep * 64;  // kPatchStep tokens x 32 two-byte features
  extern __shared__ __align__(1024) uint8_t smemRaw[];
  // The ring starts on a 1024-byte boundary; slices are multiples of 1024 bytes (the 64-byte swizzle repeats every 512).
  uint8_t* ring = smemRaw + ((1024 - (smemAddress(smemRaw) & 1023)) & 1023);
  uint64_t* full = reinterpret_cast<uint64_t*>(ring + kPtRingBytes);
  uint64_t* empty = full + kPtMaxStages;
  const int tid = threadIdx.x;

  const int32_t* record = args.patchPairList + static_cast<int64_t>(blockIdx.x) * kPatchPairRecordWords;
  const int32_t rowBase = __ldg(record), colBase = __ldg(record + 1), spans = __ldg(record + 2);
  const int rowSlices = spans >> 16, slices = rowSlices + (spans & 0xffff);
  const int stageBytes = slices * kSliceBytes;
  const int stages = min(kPtMaxStages, kPtRingBytes / stageBytes);
  const int64_t tokenBase = static_cast<int64_t>(blockIdx.y) * args.tokensPerSplit;
  const int64_t tokenEnd = min(args.m, tokenBase + args.tokensPerSplit);
  const int steps = static_cast<int>((tokenEnd - tokenBase + kPatchStep - 1) / kPatchStep);

  if (tid == 0) {
    prefetchTensorMap(&mapDy);
    prefetchTensorMap(&mapX);
    for (int s = 0; s < stages; ++s) {
      mbarrierInit(&full[s], 1);
      mbarrierInit(&empty[s], 4 * kPtConsumers);
    }
    fenceBarrierInit();
  }
  __syncthreads();
  allowDependentLaunch();
  waitForPrimary();

  const int warpGroup = warpGroupOf(tid);
  if (warpGroup == 0) {
    setMaxRegistersDecrease<40>();
    if (tid >= 32) return;
    // The producer warp: each step's slices, lane l copying slices l, l + 32, ...; tokens past M arrive as zeros (the
    // box's bytes still count). A split's tokens are a multiple of the step, so no step reaches the next split's.
    const int lane = tid;
    for (int step = 0; step < steps; ++step) {
      const int s = step % stages;
      if (step >= stages) mbarrierWait(&empty[s], ((step / stages) + 1) & 1);
      if (lane == 0) mbarrierArriveExpectTx(&full[s], static_cast<uint32_t>(stageBytes));
      __syncwarp();
      const int32_t token = static_cast<int32_t>(tokenBase + static_cast<int64_t>(step) * kPatchStep);
      uint8_t* stage = ring + s * stageBytes;
      for (int slice = lane; slice < slices; slice += 32) {
        if (slice < rowSlices) tmaLoad2d(stage + slice * kSliceBytes, &mapDy, (rowBase + slice) * 32, token, &full[s]);
        else tmaLoad2d(stage + slice * kSliceBytes, &mapX, (colBase + slice - rowSlices) * 32, token, &full[s]);
      }
      __syncwarp();
    }
    return;
  }

  setMaxRegistersIncrease<232>();
  const int consumer = warpGroup - 1, warpInGroup = (tid % 128) / 32, lane = tid % 32;
  const uint32_t ringAddress = smemAddress(ring);
  // This consumer's products: each one's descriptors in stage 0 (A: the first row slice, the second one leading offset
  // further; B: the column's slice), 8 token rows of 64 bytes apart per core matrix group.
  uint64_t descA[kPtProducts], descB[kPtProducts];
#pragma unroll
  for (int p = 0; p < kPtProducts; ++p) {
    const int32_t* product = record + kPatchHeaderWords + 4 * (consumer * kPtProducts + p);
    const int32_t slots = __ldg(product), column = __ldg(product + 1);
    const uint32_t first = static_cast<uint32_t>(slots >> 16), second = static_cast<uint32_t>(slots & 0xffff);
    descA[p] = matrixDescriptor(ringAddress + first * kSliceBytes, (second - first) * kSliceBytes, 8 * 64, 2);
    descB[p] = matrixDescriptor(ringAddress + static_cast<uint32_t>(rowSlices + column) * kSliceBytes, kSliceBytes,
                                8 * 64, 2);
  }

  float acc[kPtProducts][16];
#pragma unroll
  for (int p = 0; p < kPtProducts; ++p) zeroAccumulators(acc[p]);

  for (int step = 0; step < steps; ++step) {
    const int s = step % stages;
    mbarrierWait(&full[s], (step / stages) & 1);
    const uint32_t offset = static_cast<uint32_t>(s * stageBytes);
#pragma unroll
    for (int p = 0; p < kPtProducts; ++p) fenceRegisters(acc[p]);
    wgmmaFence();
#pragma unroll
    for (int kk = 0; kk < kPatchStep / 16; ++kk)
#pragma unroll
      for (int p = 0; p < kPtProducts; ++p)
        Wgmma<T, 32, 1, 1>::run(acc[p], advanceDescriptor(descA[p], offset + kk * 16 * 64),
                                advanceDescriptor(descB[p], offset + kk * 16 * 64));
    wgmmaCommit();
#pragma unroll
    for (int p = 0; p < kPtProducts; ++p) fenceRegisters(acc[p]);
    // The step before is done once at most this step's group is in flight: its stage goes back to the producer.
    wgmmaWait<1>();
#pragma unroll
    for (int p = 0; p < kPtProducts; ++p) fenceRegisters(acc[p]);
    if (step > 0 && lane == 0) mbarrierArrive(&empty[(step - 1) % stages]);
  }
  wgmmaWait<0>();
#pragma unroll
  for (int p = 0; p < kPtProducts; ++p) fenceRegisters(acc[p]);

  storePatchProducts<T, kPtProducts>(acc, record, consumer, warpInGroup, lane, args);
#endif
}

template <typename T>
bool launchTyped(DType dtype, const KernelArgs& args, cudaStream_t stream) {
  if (args.tokensPerSplit % kPatchStep != 0) return false;  // a split's last step must not reach the next split's tokens
  const int64_t splits = (args.m + args.tokensPerSplit - 1) / args.tokensPerSplit;
  if (splits > 65535 || (splits > 1 && args.partials == nullptr) || args.m > INT32_MAX) return false;
  CUtensorMap mapDy, mapX;
  if (!sm90::encodeMap(&mapDy, dtype, args.a, args.rows, args.m, 32, kPatchStep) ||
      !sm90::encodeMap(&mapX, dtype, args.b, args.cols, args.m, 32, kPatchStep))
    return false;
  auto kernel = bsrWgmmaPatchDwKernel<T>;
  BS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kPtSmemBytes));
  KernelArgs launched = args;
  if (splits == 1) launched.partials = nullptr;
  launchOverlapped("launch of bsrWgmmaPatchDwKernel", kernel,
                   dim3(static_cast<unsigned>(args.patchPairItems), static_cast<unsigned>(splits)), dim3(kPtThreads),
                   kPtSmemBytes, stream, mapDy, mapX, launched);
  return true;
}

}  // namespace

bool launchPatchPairDw(DType dtype, const KernelArgs& args, cudaStream_t stream) {
  if (!wgmmaAvailable() || args.patchPairList == nullptr || args.patchPairItems <= 0 || args.tokensPerSplit <= 0 ||
      args.groupList != nullptr || args.clusterSplits > 1)
    return false;
  if (dtype == DType::BFloat16) return launchTyped<__nv_bfloat16>(dtype, args, stream);
  if (dtype == DType::Float16) return launchTyped<__half>(dtype, args, stream);
  return false;
}

}  // namespace bs::tc
