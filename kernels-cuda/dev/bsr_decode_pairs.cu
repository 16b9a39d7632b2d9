// The decoding kernel with block rows in pairs, the longest with the shortest (kDecodePairsVariant, kept for
// measurement: TcOptions::devDecode = launchDecodeDevVariant). bsrLinear with 1-16 tokens in bfloat16/float16.
//
// The addon's decoding kernel (tc/bsr_decode.cu) gives a CTA one 16-row slice of one block row, and with a random
// pattern its grid runs in one wave that ends with the longest rows: on an H200, giving every block row the same
// number of blocks (tc_bench --rows equal) took 0.89-1.04x the time, 0.92 at 4096 -> 16384 with 64x64 blocks at
// density 0.25 (benchmarks/results/gpu-nvidia-h200/decode.md, "Rows of equal length"). Here a CTA takes the same slice
// of two block rows, the p-th longest and the p-th shortest (the pattern's rows ordered by their block count, most
// first: BsrPatternView::decodeRowOrder, which tc_bench builds), so every CTA streams about twice the mean row's blocks.
// Its warps take the pair's blocks in turn as one run (warp w the blocks w, w + warps, ... of the first row, then on
// into the second where the first left it), each with a float32 sum per row, reduced through shared memory in warp
// order as the addon's kernel does; the launch overlaps the kernel before it and asks L2 for the start of W as the
// addon's does.
#include <algorithm>
#include <numeric>
#include <vector>

#include "../src/tc/bsr_decode.cuh"
#include "dev_variants.h"

namespace bs::tc {

namespace {

constexpr int kPairsMaxWarps = 16;
constexpr int kPairsMostBytesPerWarp = 16384;  // as the addon's widths: a warp streams at most this much
constexpr double kPairsPrefetchShareOfL2 = 1.0 / 8;

// Adds the blocks of one row's run that this warp takes (entries e, e + warps, ... below count) to its sums.
template <class K>
__device__ __forceinline__ void addRun(Accumulator<K>& acc, const DecodeArgs& args, const typename K::T* x,
                                       const typename K::T* laneW, const int32_t* colIdx, int e, int count, int warps,
                                       int lane) {
  constexpr int S = K::kBlocksPerStep;
  for (; e + (S - 1) * warps < count; e += S * warps) addBlocks<K, S>(acc, args, x, laneW, colIdx, e, warps, lane);
  if constexpr (S > 1) {
    for (; e < count; e += warps) addBlocks<K, 1>(acc, args, x, laneW, colIdx, e, warps, lane);
  }
}

template <class K>
__global__ void __launch_bounds__(32 * kPairsMaxWarps) bsrDecodePairsKernel(const typename K::T* __restrict__ x,
                                                                           const typename K::T* __restrict__ values,
                                                                           const typename K::T* __restrict__ bias,
                                                                           typename K::T* __restrict__ y,
                                                                           DecodeArgs args,
                                                                           const int32_t* __restrict__ order) {
  using T = typename K::T;
  static_assert(K::kTensorCores, "half precision");
  extern __shared__ float partial[];  // [warps][2][kSliceRows][kTokens]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const int g = lane / 4, q = lane % 4;
  overlapWithNeighbours(args);
  const int slicesPerRow = args.blockHeight / kSliceRows;
  const int blockRows = static_cast<int>(args.rows / args.blockHeight);
  const int pair = blockIdx.x / slicesPerRow, slice = blockIdx.x % slicesPerRow;
  // The pair: the pair-th longest row and the pair-th shortest (none when they are the same row).
  const int32_t rowA = order[pair], rowB = blockRows - 1 - pair > pair ? order[blockRows - 1 - pair] : -1;
  Accumulator<K> acc[2] = {};
  int e = warp;  // this warp's next entry of the pair's run, counted from the first row's start
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int32_t blockRow = r == 0 ? rowA : rowB;
    if (blockRow < 0) continue;
    const int32_t first = args.blockRowPtr[blockRow];
    const int count = args.blockRowPtr[blockRow + 1] - first;
    const T* laneW = values + (static_cast<int64_t>(first) * args.blockHeight + slice * kSliceRows + g) * K::C +
                     q * K::kVec;
    addRun<K>(acc[r], args, x, laneW, args.blockColIdx + first, e, count, warps, lane);
    // Where the first row's turns leave this warp in the second: its next turn past the first row's count.
    e = ((e - count) % warps + warps) % warps;
  }
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int tile = 0; tile < K::kTokenTiles; ++tile)
#pragma unroll
      for (int i = 0; i < 4; ++i)
        partial[((warp * 2 + r) * kSliceRows + g + 8 * (i / 2)) * K::kTokens + tile * kTokenTile + 2 * q + i % 2] =
            acc[r].value[tile][i];
  __syncthreads();
  for (int i = threadIdx.x; i < 2 * kSliceRows * args.m; i += blockDim.x) {
    const int r = i / (kSliceRows * static_cast<int>(args.m));
    const int within = i % (kSliceRows * static_cast<int>(args.m));
    const int row = within % kSliceRows, token = within / kSliceRows;
    const int32_t blockRow = r == 0 ? rowA : rowB;
    if (blockRow < 0) continue;
    float sum = 0.0f;
    for (int w = 0; w < warps; ++w) sum += partial[((w * 2 + r) * kSliceRows + row) * K::kTokens + token];
    const int64_t at = static_cast<int64_t>(blockRow) * args.blockHeight + slice * kSliceRows + row;
    if (bias) sum += static_cast<float>(bias[at]);
    y[token * args.rows + at] = static_cast<T>(sum);
  }
}

template <class K>
size_t pairPartialBytes(int warps) {
  return size_t(warps) * 2 * kSliceRows * K::kTokens * sizeof(float);
}

// CTAs of `warps` warps one SM holds at once; 0 when the runtime cannot say.
template <class K>
int pairResidentCtas(int warps) {
  static int cache[kPairsMaxWarps + 1][kDevices] = {};
  return oncePerDevice(cache[warps], [&](int) {
    int count = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&count, bsrDecodePairsKernel<K>, 32 * warps,
                                                      pairPartialBytes<K>(warps)) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return count;
  });
}

// The addon's width rule for a CTA of two rows: each warp streaming at most kPairsMostBytesPerWarp and no more warps
// than the pair has blocks, the width whose grid runs in the fewest waves, the widest of those.
template <class K>
int pairWarps(const BsrPatternView& pattern, int numSms) {
  const double blocksPerPair = pattern.blockRows > 0 ? 2.0 * pattern.nnzBlocks / pattern.blockRows : 0.0;
  const double sliceBytes = blocksPerPair * kSliceRows * K::C * sizeof(typename K::T);
  const auto clampWarps = [](double warps, int most) { return static_cast<int>(std::clamp(warps, 1.0, double(most))); };
  const int most = clampWarps(std::ceil(blocksPerPair), kPairsMaxWarps);
  const int fewest = clampWarps(std::ceil(sliceBytes / kPairsMostBytesPerWarp), most);
  const int64_t ctas = int64_t{(pattern.blockRows + 1) / 2} * (pattern.blockHeight / kSliceRows);
  int best = 0;
  int64_t bestWaves = 0;
  for (int warps = most; numSms > 0 && warps >= fewest; --warps) {
    const int64_t perWave = int64_t{numSms} * pairResidentCtas<K>(warps);
    if (perWave <= 0) continue;
    const int64_t waves = (ctas + perWave - 1) / perWave;
    if (best == 0 || waves < bestWaves) best = warps, bestWaves = waves;
  }
  return best > 0 ? best : most;
}

// Calls f(DecodeTraits<T, C, 8 or 16>{}) for `dtype` (bfloat16 or float16), `blockCols` and `m` (1-16) tokens.
template <class F>
void visitPairs(DType dtype, int blockCols, int64_t m, F&& f) {
  const auto byColumns = [&](auto element) {
    using T = decltype(element);
    const auto byTokens = [&](auto columns) {
      constexpr int C = decltype(columns)::value;
      if (m <= 8) f(DecodeTraits<T, C, 8>{});
      else f(DecodeTraits<T, C, 16>{});
    };
    switch (blockCols) {
      case 16: return byTokens(std::integral_constant<int, 16>{});
      case 32: return byTokens(std::integral_constant<int, 32>{});
      case 64: return byTokens(std::integral_constant<int, 64>{});
      default: return byTokens(std::integral_constant<int, 128>{});
    }
  };
  if (dtype == DType::BFloat16) byColumns(__nv_bfloat16{});
  else byColumns(__half{});
}

}  // namespace

bool decodePairsSupported(DType dtype, const BsrPatternView& pattern, int64_t m) {
  return (dtype == DType::BFloat16 || dtype == DType::Float16) && m >= 1 && m <= 16 && pattern.blockRows > 0 &&
         pattern.decodeRowOrder != nullptr;
}

int decodePairsWarps(DType dtype, const BsrPatternView& pattern, int64_t m, int numSms) {
  if (!decodePairsSupported(dtype, pattern, m)) return 0;
  int warps = 0;
  visitPairs(dtype, pattern.blockWidth, m, [&](auto traits) { warps = pairWarps<decltype(traits)>(pattern, numSms); });
  return warps;
}

bool launchDecodePairs(DType dtype, const void* x, const void* values, const void* bias, void* y, int64_t m,
                       const BsrPatternView& pattern, int numSms, int l2Bytes, cudaStream_t stream) {
  if (!decodePairsSupported(dtype, pattern, m)) return false;
  DecodeArgs args{m, pattern.rows, pattern.cols, pattern.blockHeight, pattern.blockRowPtr, pattern.blockColIdx,
                  nullptr, nullptr, 0, 0};
  const unsigned ctas = static_cast<unsigned>((pattern.blockRows + 1) / 2 * (pattern.blockHeight / kSliceRows));
  visitPairs(dtype, pattern.blockWidth, m, [&](auto traits) {
    using K = decltype(traits);
    using T = typename K::T;
    const int warps = pairWarps<K>(pattern, numSms);
    const int64_t valueBytes = static_cast<int64_t>(pattern.nnzBlocks) * pattern.blockHeight * K::C * sizeof(T);
    // The prefetch asks for W's bytes in order, CTA by CTA: the first CTAs' rows are the longest, not the first, so it
    // warms L2 with the start of W as the addon's does, whichever CTA reads it.
    if (programmaticLaunchBuilt(reinterpret_cast<const void*>(bsrDecodePairsKernel<K>)))
      planPrefetch(args, values, valueBytes, ctas, l2Bytes, kPairsPrefetchShareOfL2);
    launchOverlapped("launch of bsrDecodePairsKernel", bsrDecodePairsKernel<K>, dim3(ctas), dim3(32 * warps),
                     pairPartialBytes<K>(warps), stream, static_cast<const T*>(x), static_cast<const T*>(values),
                     static_cast<const T*>(bias), static_cast<T*>(y), args, pattern.decodeRowOrder);
  });
  return true;
}

}  // namespace bs::tc
