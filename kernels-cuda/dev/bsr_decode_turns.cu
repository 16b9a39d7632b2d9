// The staged decoding variant with its slices taken in turn (kDecodeTurnsVariant and kDecodeTurnsWideVariant, kept for
// measurement: TcOptions::devDecode = launchDecodeDevVariant). bsrLinear with 33-64 tokens in bfloat16/float16, the addon's staged variant
// (tc/bsr_decode.cu, kDecodeStagedVariant) with three changes:
// - the grid is one wave: a CTA's group is the fewest block rows that leave at most one CTA per SM
//   (decodeTurnsGroupRows), where the addon's is the largest of 8, 4, 2, 1 (at 32x32) that still fills three quarters
//   of the SMs, which on an H100 ran 4096 -> 16384 in two waves;
// - its warps (at most 12, or 16 in kDecodeTurnsWideVariant) take the group's 16-row slices in turn, the first one each and then the
//   next from a shared-memory counter, where the addon's warp owns one slice: a long slice no longer holds the CTA
//   while its other warps idle;
// - X's range is copied with asynchronous copies, all in flight together (the addon's loop waits on each load before
//   its store), and while they are in flight the CTA asks L2 for the blocks of its first slices (sm_90+).
// The same fragments, the same float32 partials [range][token][row] summed by launchSumSplits where there is more than
// one range, the first range's carry the bias. 12 warps hold their 64 tokens' sums and a step's W in registers
// without spilling (ptxas: 163-164 registers on sm_90a, 150-156 on sm_80); 16 warps' 128 spill 40-84 bytes
// (kDecodeTurnsWideVariant, to measure whether more of W in flight per SM pays for them).
#include <optional>

#include "../src/kernels.h"
#include "../src/memory.h"
#include "../src/tc/bsr_decode.cuh"
#include "dev_variants.h"

namespace bs::tc {

namespace {

template <class K, int kMostWarps>
__global__ void __launch_bounds__(32 * kMostWarps, 1) bsrDecodeTurnsKernel(const typename K::T* __restrict__ x,
                                                                         const typename K::T* __restrict__ values,
                                                                         const typename K::T* __restrict__ bias,
                                                                         typename K::T* __restrict__ y, DecodeArgs args,
                                                                         StagedArgs staged) {
  using T = typename K::T;
  static_assert(K::kTensorCores && K::kVecBytes == 16, "16-byte rows of half-precision X");
  constexpr int S = K::kBlocksPerStep;
  extern __shared__ __align__(16) unsigned char stagedBytes[];
  __shared__ int nextSlice;
  T* xs = reinterpret_cast<T*>(stagedBytes);  // [kTokens][kStagedPitch]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  overlapWithNeighbours(args);
  const int range = blockIdx.y;
  const int64_t c0 = static_cast<int64_t>(range) * kStagedRangeCols;
  const int width = static_cast<int>(std::min<int64_t>(kStagedRangeCols, args.cols - c0));
  copyStagedRangeAsync<K>(x, xs, args, c0, width);
  if (threadIdx.x == 0) nextSlice = warps;

  const int slicesPerRow = args.blockHeight / kSliceRows;
  const int64_t blockRows = args.rows / args.blockHeight;
  const int64_t firstRow = static_cast<int64_t>(blockIdx.x) * staged.groupRows;
  const int slices = static_cast<int>(std::min<int64_t>(staged.groupRows, blockRows - firstRow)) * slicesPerRow;
  const int32_t colLo = static_cast<int32_t>(c0 / K::C), colHi = static_cast<int32_t>((c0 + width) / K::C);
  const bool wholeRow = staged.ranges == 1;
  const int64_t blockElements = static_cast<int64_t>(args.blockHeight) * K::C;

  // While X's copy is in flight, the warps' first block rows are asked of L2 (a hint: the blocks in this CTA's range
  // of each row the first warps take, asked by the warp of its first slice).
  int s = warp;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (s < slices && s % slicesPerRow == 0) {
    const StagedSlice<K> first = stagedSlice<K>(args, values, firstRow, s, colLo, colHi, wholeRow, lane);
    if (lane == 0 && first.count > 0)
      asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(values + static_cast<int64_t>(first.first) * blockElements),
                   "r"(static_cast<uint32_t>(first.count * blockElements * sizeof(T)))
                   : "memory");
  }
#endif
  cpAsyncWait<0>();
  __syncthreads();

  while (s < slices) {
    const StagedSlice<K> run = stagedSlice<K>(args, values, firstRow, s, colLo, colHi, wholeRow, lane);
    Accumulator<K> acc{};
    int e = 0;
    for (; e + S <= run.count; e += S) addStagedBlocks<K, S>(acc, xs, run.laneW, run.colIdx, e, colLo, blockElements, lane);
    if constexpr (S > 1) {
      for (; e < run.count; ++e) addStagedBlocks<K, 1>(acc, xs, run.laneW, run.colIdx, e, colLo, blockElements, lane);
    }

    storeStagedSums<K>(acc, args, bias, y, staged, range, run.rowBase, lane);

    // The group's next slice not yet taken.
    int taken = 0;
    if (lane == 0) taken = atomicAdd(&nextSlice, 1);
    s = __shfl_sync(0xffffffffu, taken, 0);
  }
}

// The most warps of a CTA of decoding variant `variant`; 0 for none of this file's.
int mostWarpsOf(int variant) {
  return variant == kDecodeTurnsVariant ? kDecodeTurnsMaxWarps
         : variant == kDecodeTurnsWideVariant ? kDecodeTurnsWideMaxWarps
                                              : 0;
}

template <class K, int kMostWarps>
void launchTurns(const void* x, const void* values, const void* bias, void* y, const DecodeArgs& args,
                 const StagedArgs& staged, dim3 grid, int warps, cudaStream_t stream, bool& launched) {
  using T = typename K::T;
  static int sized[kDevices] = {};
  const int ready = oncePerDevice(sized, [](int) {
    if (cudaFuncSetAttribute(bsrDecodeTurnsKernel<K, kMostWarps>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(stagedBytes<K>())) == cudaSuccess)
      return 1;
    cudaGetLastError();
    return 0;
  });
  if (!ready) {  // a GPU whose CTAs get less shared memory (sm_86, sm_89: about 100 KB)
    launched = false;
    return;
  }
  launchOverlapped("launch of bsrDecodeTurnsKernel", bsrDecodeTurnsKernel<K, kMostWarps>, grid, dim3(32 * warps),
                   stagedBytes<K>(), stream, static_cast<const T*>(x), static_cast<const T*>(values),
                   static_cast<const T*>(bias), static_cast<T*>(y), args, staged);
}

}  // namespace

int decodeTurnsDevWarps(DType dtype, const BsrPatternView& pattern, int64_t m, int variant, int numSms) {
  if (mostWarpsOf(variant) == 0 || !decodeStagedSupported(dtype, pattern, m)) return 0;
  return decodeTurnsWarps(decodeTurnsGroupRows(pattern.blockRows, decodeStagedRanges(pattern), numSms),
                          pattern.blockHeight, mostWarpsOf(variant));
}

bool launchDecodeTurns(DType dtype, const void* x, const void* values, const void* bias, void* y, int64_t m,
                       const BsrPatternView& pattern, int variant, int numSms, cudaStream_t stream) {
  const int most = mostWarpsOf(variant);
  if (most == 0 || !decodeStagedSupported(dtype, pattern, m)) return false;
  DecodeArgs args{m, pattern.rows, pattern.cols, pattern.blockHeight, pattern.blockRowPtr, pattern.blockColIdx,
                  nullptr, nullptr, 0, 0};
  const int64_t ranges = decodeStagedRanges(pattern);
  const int group = decodeTurnsGroupRows(pattern.blockRows, ranges, numSms);
  std::optional<Scratch> partials;
  if (ranges > 1) partials.emplace(static_cast<size_t>(ranges * m * pattern.rows) * sizeof(float));
  const StagedArgs staged{group, static_cast<int32_t>(ranges), partials ? partials->as<float>() : nullptr};
  const dim3 grid(static_cast<unsigned>((pattern.blockRows + group - 1) / group), static_cast<unsigned>(ranges));
  const int warps = decodeTurnsWarps(group, pattern.blockHeight, most);
  bool launched = true;
  visitStaged(dtype, pattern.blockWidth, [&](auto traits) {
    using K = decltype(traits);
    if (most == kDecodeTurnsWideMaxWarps)
      launchTurns<K, kDecodeTurnsWideMaxWarps>(x, values, bias, y, args, staged, grid, warps, stream, launched);
    else
      launchTurns<K, kDecodeTurnsMaxWarps>(x, values, bias, y, args, staged, grid, warps, stream, launched);
  });
  if (launched && ranges > 1) launchSumSplits(dtype, partials->as<float>(), static_cast<int>(ranges), m * pattern.rows, y, stream);
  return launched;
}

}  // namespace bs::tc
