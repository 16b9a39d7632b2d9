// dW's patch tile at 32x32 blocks on wgmma (kPatchDwWgmmaTile, tc_kernels.h; sm_90a), kept for measurement.
//
// The patches of bsr_mma_patch.cu, each record's blocks paired within a column (patch_list.h, appendPatchPairList):
// a product is one wgmma m64n32k16 per 16 tokens, A the two blocks' dY row slices (MN-major: the descriptor's start at
// the first slice and its leading offset the distance to the second, each slice one 64-byte swizzled atom of 32
// features) and B the column's X slice, so each slice of a 64-token step is loaded once for all of the record's
// products. Both consumer warpgroups copy the step's slices with cp.async (as the mma.sync tile does), then each runs
// its 8 products (kPatchPairProducts / 2: 128 accumulator registers a thread) for the step's four 16-token slices, the
// next step's copies in flight meanwhile. (Steps of 32 tokens four stages deep measured 1.14-1.17x slower at 8192 tokens
// on an H200.)
// Products past the record's count run on whatever slices their descriptors name and are never stored, so that every
// wgmma is issued on every path (ptxas serializes wgmma behind branches it cannot prove uniform).
#include "dev_variants.h"
#include "tc/patch_list.h"
#include "tc/patch_tile.cuh"
#include "tc/bsr_mma.cuh"
#include "tc/wgmma_ops.cuh"

namespace bs::tc {

namespace {

constexpr int kPwStep = 64;                      // tokens per stage
constexpr int kPwSliceBytes = kPwStep * 64;      // 64 tokens x 32 two-byte elements
constexpr int kPwStages = 2;
constexpr int kPwStageBytes = kPatchMaxSlices * kPwSliceBytes;
constexpr int kPwSmemBytes = 1024 + kPwStages * kPwStageBytes;
constexpr int kPwConsumers = 2;
constexpr int kPwThreads = 128 * kPwConsumers;
[[maybe_unused]] constexpr int kPwProducts = kPatchPairProducts / kPwConsumers;  // per consumer warpgroup
static_assert(kPwSmemBytes <= 227 * 1024, "fits the shared memory");

template <typename T>
__global__ void __launch_bounds__(kPwThreads, 1) bsrWgmmaPatchDwKernel(const KernelArgs args) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) uint8_t smemRaw[];
  // Slices start on 1024-byte boundaries (each 4 KB): the 64-byte swizzle's pattern repeats every 512 bytes.
  const uint32_t smem = (smemAddress(smemRaw) + 1023) & ~uint32_t(1023);
  const int tid = threadIdx.x, consumer = tid / 128, warpInGroup = (tid % 128) / 32, lane = tid % 32;
  allowDependentLaunch();
  waitForPrimary();

  const int32_t* record = args.patchPairList + static_cast<int64_t>(blockIdx.x) * kPatchPairRecordWords;
  const int32_t rowBase = __ldg(record), colBase = __ldg(record + 1), spans = __ldg(record + 2);
  const int rowSlices = spans >> 16, slices = rowSlices + (spans & 0xffff);
  const int64_t tokenBase = static_cast<int64_t>(blockIdx.y) * args.tokensPerSplit;
  const int64_t tokenEnd = min(args.m, tokenBase + args.tokensPerSplit);
  const int steps = static_cast<int>((tokenEnd - tokenBase + kPwStep - 1) / kPwStep);

  // This consumer's products: each one's descriptors at stage 0 (A: the first row slice, the second one leading
  // offset further; B: the column's slice), 8 token rows of 64 bytes apart per core matrix group.
  uint64_t descA[kPwProducts], descB[kPwProducts];
#pragma unroll
  for (int p = 0; p < kPwProducts; ++p) {
    const int32_t* product = record + kPatchHeaderWords + 4 * (consumer * kPwProducts + p);
    const int32_t slots = __ldg(product), column = __ldg(product + 1);
    const uint32_t first = static_cast<uint32_t>(slots >> 16), second = static_cast<uint32_t>(slots & 0xffff);
    descA[p] = matrixDescriptor(smem + first * kPwSliceBytes, (second - first) * kPwSliceBytes, 8 * 64, 2);
    descB[p] = matrixDescriptor(smem + static_cast<uint32_t>(rowSlices + column) * kPwSliceBytes, kPwSliceBytes, 8 * 64,
                                 2);
  }

  auto load = [&](int step, uint32_t stage) {
    loadPatchSlices<T, kPwStep, kPwThreads>(args, rowBase, colBase, rowSlices, slices, tokenBase, tokenEnd, step, stage,
                                            tid);
  };

  float acc[kPwProducts][16];
#pragma unroll
  for (int p = 0; p < kPwProducts; ++p)
#pragma unroll
    for (int e = 0; e < 16; ++e) acc[p][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < kPwStages - 1; ++s) {
    if (s < steps) load(s, smem + s * kPwStageBytes);
    cpAsyncCommit();
  }
  for (int step = 0; step < steps; ++step) {
    cpAsyncWait<kPwStages - 2>();
    fenceProxyAsync();  // this thread's copies, visible to the async proxy that wgmma reads through
    __syncthreads();    // every thread's copies of stage `step` landed; every product of stage `step - 1` is done
    const int next = step + kPwStages - 1;
    if (next < steps) load(next, smem + (next % kPwStages) * kPwStageBytes);
    cpAsyncCommit();
    const uint32_t offset = (step % kPwStages) * kPwStageBytes;
#pragma unroll
    for (int p = 0; p < kPwProducts; ++p) fenceRegisters(acc[p]);
    wgmmaFence();
#pragma unroll
    for (int kk = 0; kk < kPwStep / 16; ++kk)
#pragma unroll
      for (int p = 0; p < kPwProducts; ++p)
        Wgmma<T, 32, 1, 1>::run(acc[p], advanceDescriptor(descA[p], offset + kk * 16 * 64),
                                advanceDescriptor(descB[p], offset + kk * 16 * 64));
    wgmmaCommit();
#pragma unroll
    for (int p = 0; p < kPwProducts; ++p) fenceRegisters(acc[p]);
    wgmmaWait<0>();
#pragma unroll
    for (int p = 0; p < kPwProducts; ++p) fenceRegisters(acc[p]);
  }
  cpAsyncWait<0>();

  storePatchProducts<T, kPwProducts>(acc, record, consumer, warpInGroup, lane, args);
#endif
}

template <typename T>
bool launchTyped(const KernelArgs& args, cudaStream_t stream) {
  const int64_t splits = (args.m + args.tokensPerSplit - 1) / args.tokensPerSplit;
  if (splits > 65535 || (splits > 1 && args.partials == nullptr)) return false;
  auto kernel = bsrWgmmaPatchDwKernel<T>;
  BS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kPwSmemBytes));
  KernelArgs launched = args;
  if (splits == 1) launched.partials = nullptr;
  launchOverlapped("launch of bsrWgmmaPatchDwKernel", kernel,
                   dim3(static_cast<unsigned>(args.patchPairItems), static_cast<unsigned>(splits)), dim3(kPwThreads),
                   kPwSmemBytes, stream, launched);
  return true;
}

}  // namespace

bool launchPatchDwWgmma(DType dtype, const KernelArgs& args, cudaStream_t stream) {
  if (!wgmmaAvailable() || args.patchPairList == nullptr || args.patchPairItems <= 0) return false;
  if (dtype == DType::BFloat16) return launchTyped<__nv_bfloat16>(args, stream);
  if (dtype == DType::Float16) return launchTyped<__half>(args, stream);
  return false;
}

}  // namespace bs::tc
