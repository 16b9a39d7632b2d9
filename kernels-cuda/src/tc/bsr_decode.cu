// Decoding path of bsrLinear (Y = X W^T + b with 1-64 tokens, float32 1-16): the product is bound by reading W
// once, so each stored block is streamed once with 16-byte loads. Up to 16 tokens nothing else of note moves; past
// that X's columns, read once per block from L2 (M / 16 of W's bytes), and the token tiles' products weigh too.
//
// A CTA owns one 16-row slice of one block row; its warps split that row's blocks (warp w takes blocks
// w, w + warps, ...), so every warp reads whole 16 x C slabs, contiguous in values. Lane (g, q) =
// (lane / 4, lane % 4) holds rows g and g + 8 of the slab, the kVec columns at q * kVec of each chunk.
// The sum over a chunk's columns does not care how they are ordered, so the lane's W and X vectors
// are used as mma.sync m16n8k16 fragments as loaded (W as A: 16 rows, X^T as B: 8 tokens per tile),
// with no shuffles or shared memory; float32 runs exactly on the CUDA cores with the same layout.
// Warps reduce their float32 partials through shared memory in a fixed order, then add the bias.
#include "../kernels.h"
#include "bsr_decode.cuh"

namespace bs::tc {

namespace {

constexpr int kMaxPartialBytes = 48 * 1024;  // the warps' partial sums: at most the default dynamic shared memory
constexpr int kMaxWarps = 16;            // warps splitting one slice's blocks
// TcOptions::variant: 0 is the default; the others are kept for measurement. `bytesPerWarp` is the W each warp
// should stream, which sets the warps per CTA (0: the default's widths, below). `overlap`: the kernel may start while
// the one before it in the stream ends (programmatic dependent launch, sm_90+), and before it waits for that
// kernel's results it asks L2 for the start of W, at most kPrefetchShareOfL2 of L2 in all.
struct DecodeVariantSpec {
  int bytesPerWarp;
  bool overlap;
};
constexpr DecodeVariantSpec kDecodeVariantSpecs[kDecodeVariants] = {
    {0, true}, {2048, true}, {8192, true}, {16384, true}, {0, false}, {0, true} /* staged: launchDecodeStaged */};
// The fallback width when the runtime cannot say what is resident: about this much W per warp.
constexpr int kFallbackBytesPerWarp = 4096;
// The default's widths: the grid in the fewest waves, each warp streaming at most this much (four rounds of loads).
// On an H200 (decode.md), 4096 rows (256 CTAs) ran 5-11% faster at 16 warps than at the 8-9 of 4 KB per warp, and
// 16384 rows (1024 CTAs) fastest at 4-5 warps, the widest that fit one wave there (8-9: two waves, 16: four).
constexpr int kMostBytesPerWarp = 16384;

template <class K>
__global__ void __launch_bounds__(32 * kMaxWarps) bsrDecodeLinearKernel(const typename K::T* __restrict__ x,
                                                                       const typename K::T* __restrict__ values,
                                                                       const typename K::T* __restrict__ bias,
                                                                       typename K::T* __restrict__ y, DecodeArgs args) {
  using T = typename K::T;
  extern __shared__ float partial[];  // [warps][kSliceRows][kTokens]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const int g = lane / 4, q = lane % 4;
  overlapWithNeighbours(args);
  const int slicesPerRow = args.blockHeight / kSliceRows;
  const int blockRow = blockIdx.x / slicesPerRow, slice = blockIdx.x % slicesPerRow;
  const int32_t first = args.blockRowPtr[blockRow];
  const int count = args.blockRowPtr[blockRow + 1] - first;
  const int32_t* colIdx = args.blockColIdx + first;
  // This lane's first element: row g of the slice in the row's first block, its columns in each chunk.
  const T* laneW = values + (static_cast<int64_t>(first) * args.blockHeight + slice * kSliceRows + g) * K::C +
                   q * K::kVec;

  Accumulator<K> acc{};
  int e = warp;
  for (; e + (K::kBlocksPerStep - 1) * warps < count; e += K::kBlocksPerStep * warps)
    addBlocks<K, K::kBlocksPerStep>(acc, args, x, laneW, colIdx, e, warps, lane);
  if constexpr (K::kBlocksPerStep > 1)
    for (; e < count; e += warps) addBlocks<K, 1>(acc, args, x, laneW, colIdx, e, warps, lane);

  if constexpr (K::kTensorCores) {
#pragma unroll
    for (int tile = 0; tile < K::kTokenTiles; ++tile)
#pragma unroll
      for (int i = 0; i < 4; ++i)
        partial[(warp * kSliceRows + g + 8 * (i / 2)) * K::kTokens + tile * kTokenTile + 2 * q + i % 2] =
            acc.value[tile][i];
  } else {
    // The four lanes of a row hold partials over different columns: sum them, then each stores a quarter.
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int token = 0; token < K::kTokens; ++token) {
        float v = acc.value[half][token];
        v += __shfl_xor_sync(0xffffffffu, v, 1);
        v += __shfl_xor_sync(0xffffffffu, v, 2);
        if (token % 4 == q) partial[(warp * kSliceRows + g + 8 * half) * K::kTokens + token] = v;
      }
  }
  __syncthreads();
  const int64_t rowBase = static_cast<int64_t>(blockRow) * args.blockHeight + slice * kSliceRows;
  for (int i = threadIdx.x; i < kSliceRows * args.m; i += blockDim.x) {
    const int row = i % kSliceRows, token = i / kSliceRows;
    float sum = 0.0f;
    for (int w = 0; w < warps; ++w) sum += partial[(w * kSliceRows + row) * K::kTokens + token];
    if (bias) sum += static_cast<float>(bias[rowBase + row]);
    storeDecoded(args.epilogue, y, token * args.rows + rowBase + row, sum);
  }
}

// The staged variant (kDecodeStagedVariant; 33-64 tokens in bfloat16/float16). Past 32 tokens the kernel above reads X
// from L2 once per block and 16-row slice (M / 8 of W's bytes at 32x32, 64 tokens: four times W), and that, not W's
// stream, bounds it. Here a CTA takes a group of block rows and one range of K (kStagedRangeCols columns): it copies
// X's [tokens x range] into shared memory once (asynchronous copies all in flight together, zero past M; rows padded by
// 64 bytes, kStagedPad, so the two token rows each quarter-warp reads at once fall in different banks), and while they
// are in flight asks L2 for the blocks of its warps' first slices (sm_90+). Its warps then take the group's 16-row
// slices in turn, the first one each and the next from a shared-memory counter, so that a long slice does not hold the
// CTA while its other warps idle; each streams its slice over the range with the fragments above, X read from shared
// memory, and owns its sums (no reduction between warps). The grid is one wave (decodeStagedGroupRows). With more than
// one range each CTA writes float32 partials [range][token][row] that a second pass adds (the first range's carry the
// bias). 12 warps hold their 64 tokens' sums and a step's W in registers without spilling.

template <class K>
__global__ void __launch_bounds__(32 * kDecodeStagedMaxWarps, 1) bsrDecodeStagedKernel(const typename K::T* __restrict__ x,
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
  // of each row the first warps take, asked by the warp of the row's first slice).
  // The warp's first slice, read here where its blocks are asked of L2, is not read again below.
  int s = warp;
  StagedSlice<K> run{};
  bool haveRun = false;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (s < slices && s % slicesPerRow == 0) {
    run = stagedSlice<K>(args, values, firstRow, s, colLo, colHi, wholeRow, lane);
    haveRun = true;
    if (lane == 0 && run.count > 0)
      prefetchToL2(values + static_cast<int64_t>(run.first) * blockElements,
                   static_cast<uint32_t>(run.count * blockElements * sizeof(T)));
  }
#endif
  cpAsyncWait<0>();
  __syncthreads();

  while (s < slices) {
    if (!haveRun) run = stagedSlice<K>(args, values, firstRow, s, colLo, colHi, wholeRow, lane);
    haveRun = false;
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

// The staged variant's ranges summed with the decoding epilogue (a residual, an activation's second output): in range
// order from zero, as launchSumSplits sums them where there is no epilogue, so Y is bit for bit the same either way.
template <typename T>
__global__ void sumStagedRangesKernel(const float* __restrict__ partials, int ranges, int64_t n, T* __restrict__ y,
                                      DecodeEpilogue epilogue) {
  beginOverlappedPass();  // launched with launchOverlapped
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float sum = 0.0f;
#pragma unroll 8
    for (int r = 0; r < ranges; ++r) sum += partials[static_cast<int64_t>(r) * n + i];
    storeDecoded(epilogue, y, i, sum);
  }
}

// The same, kPackedSum adjacent outputs per thread (one float4 of each range's partials; 8 bytes of Y, of the residual
// and of the activation's output), where those pointers are aligned for that and n is a multiple of kPackedSum: a
// quarter of the scalar kernel's loads and stores. Four outputs, not eight, so that a layer of few rows and many
// ranges (4096 rows of 40 tokens, 16 ranges) still has the threads to keep its loads in flight: with eight per thread,
// 160 CTAs of 128 threads took 8.9 us there against the scalar kernel's 4.2 (H100). Each output's sum and epilogue
// are the scalar kernel's, in the same order, so Y and A are the same bits.
constexpr int kPackedSum = 4;
constexpr int kPackedSumThreads = 128;
template <typename T>
__global__ void sumStagedRangesPackedKernel(const float* __restrict__ partials, int ranges, int64_t n,
                                            T* __restrict__ y, DecodeEpilogue epilogue) {
  beginOverlappedPass();  // launched with launchOverlapped
  const int64_t packs = n / kPackedSum;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < packs;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float sum[kPackedSum] = {};
    const float4* from = reinterpret_cast<const float4*>(partials) + p;
#pragma unroll 8
    for (int r = 0; r < ranges; ++r) {
      const float4 a = from[r * packs];
      sum[0] += a.x, sum[1] += a.y, sum[2] += a.z, sum[3] += a.w;
    }
    if (epilogue.residual != nullptr) {
      const Packed<T, kPackedSum> residual = reinterpret_cast<const Packed<T, kPackedSum>*>(epilogue.residual)[p];
#pragma unroll
      for (int k = 0; k < kPackedSum; ++k) sum[k] += toFloat<T>(residual.v[k]);
    }
    Packed<T, kPackedSum> stored;
#pragma unroll
    for (int k = 0; k < kPackedSum; ++k) stored.v[k] = static_cast<T>(sum[k]);
    reinterpret_cast<Packed<T, kPackedSum>*>(y)[p] = stored;
    if (epilogue.activated != nullptr) {
      Packed<T, kPackedSum> activated;
#pragma unroll
      for (int k = 0; k < kPackedSum; ++k) activated.v[k] = activatedFrom(epilogue, stored.v[k]);
      reinterpret_cast<Packed<T, kPackedSum>*>(epilogue.activated)[p] = activated;
    }
  }
}

// Calls f(DecodeTraits<...>{}) for the kernel that runs `dtype`, `blockCols` and `m` tokens: the tokens rounded up
// to what it covers (8, 16, 32 or 64 on the mma path, a power of two up to 16 for float32).
template <typename T, int C, class F>
void visitTokens(int64_t m, F&& f) {
  if constexpr (sizeof(T) == 2) {
    if (m <= 8) f(DecodeTraits<T, C, 8>{});
    else if (m <= 16) f(DecodeTraits<T, C, 16>{});
    else if (m <= 32) f(DecodeTraits<T, C, 32>{});
    else f(DecodeTraits<T, C, 64>{});
  } else {
    if (m <= 1) f(DecodeTraits<T, C, 1>{});
    else if (m <= 2) f(DecodeTraits<T, C, 2>{});
    else if (m <= 4) f(DecodeTraits<T, C, 4>{});
    else if (m <= 8) f(DecodeTraits<T, C, 8>{});
    else f(DecodeTraits<T, C, 16>{});
  }
}

template <typename T, class F>
void visitColumns(int blockCols, int64_t m, F&& f) {
  switch (blockCols) {
    case 16: return visitTokens<T, 16>(m, f);
    case 32: return visitTokens<T, 32>(m, f);
    case 64: return visitTokens<T, 64>(m, f);
    default: return visitTokens<T, 128>(m, f);
  }
}

template <class F>
void visitTraits(DType dtype, int blockCols, int64_t m, F&& f) {
  if (dtype == DType::BFloat16) visitColumns<__nv_bfloat16>(blockCols, m, f);
  else if (dtype == DType::Float16) visitColumns<__half>(blockCols, m, f);
  else visitColumns<float>(blockCols, m, f);
}

template <class K>
size_t partialBytes(int warps) {
  return size_t(warps) * kSliceRows * K::kTokens * sizeof(float);
}

// CTAs of `warps` warps that one SM of the current device holds at once (registers, threads, shared memory); 0 when
// the runtime cannot say.
template <class K>
int residentCtas(int warps) {
  static int cache[kMaxWarps + 1][kDevices] = {};
  return oncePerDevice(cache[warps], [&](int) {
    int count = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&count, bsrDecodeLinearKernel<K>, 32 * warps,
                                                      partialBytes<K>(warps)) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return count;
  });
}

// Warps per CTA. The measurement variants 1-3 aim at their bytesPerWarp of W per warp. The default takes, among the
// widths where each warp streams at most kMostBytesPerWarp and no more warps than the row has blocks (a warp streams
// whole blocks), the one whose grid runs in the fewest waves of resident CTAs, the widest of those (one wave when
// any width gives one); about kFallbackBytesPerWarp per warp when the runtime cannot say what is resident.
template <class K>
int chooseWarps(const BsrPatternView& pattern, int variant, int numSms) {
  const double blocksPerRow = pattern.blockRows > 0 ? double(pattern.nnzBlocks) / pattern.blockRows : 0.0;
  const double sliceBytes = blocksPerRow * kSliceRows * K::C * sizeof(typename K::T);
  const DecodeVariantSpec& spec = kDecodeVariantSpecs[decodeVariant(variant) ? variant : 0];
  const auto clampWarps = [](double warps, int most) { return static_cast<int>(std::clamp(warps, 1.0, double(most))); };
  // The warps' partial sums stay within the dynamic shared memory a launch gets without asking (64 tokens: 12 warps).
  const int widest = std::min<int>(kMaxWarps, static_cast<int>(kMaxPartialBytes / partialBytes<K>(1)));
  if (spec.bytesPerWarp != 0) return clampWarps(std::ceil(sliceBytes / spec.bytesPerWarp), widest);
  const int most = clampWarps(std::ceil(blocksPerRow), widest);
  const int fewest = clampWarps(std::ceil(sliceBytes / kMostBytesPerWarp), most);
  const int64_t ctas = pattern.rows / kSliceRows;
  int best = 0;
  int64_t bestWaves = 0;
  for (int warps = most; numSms > 0 && warps >= fewest; --warps) {
    const int64_t perWave = int64_t(numSms) * residentCtas<K>(warps);
    if (perWave <= 0) continue;
    const int64_t waves = (ctas + perWave - 1) / perWave;
    if (best == 0 || waves < bestWaves) best = warps, bestWaves = waves;
  }
  if (best > 0) return best;
  return std::clamp(clampWarps(std::ceil(sliceBytes / kFallbackBytesPerWarp), most), fewest, most);
}

// Whether the code the current device runs for this kernel was built for sm_90+, and so waits in
// overlapWithNeighbours before it reads another kernel's results: a programmatic launch of a kernel without that
// wait would race with the kernel before it.
template <class K>
bool overlapBuilt() {
  return programmaticLaunchBuilt(reinterpret_cast<const void*>(bsrDecodeLinearKernel<K>));
}

bool decodeBlockSide(int side) { return side == 16 || side == 32 || side == 64 || side == 128; }

bool alignedTo(const void* pointer, uintptr_t bytes) { return (reinterpret_cast<uintptr_t>(pointer) % bytes) == 0; }

}  // namespace

bool decodeSupported(DType dtype, const void* x, const void* values, const void* bias, const void* y, int64_t m,
                     const BsrPatternView& pattern) {
  if (!isFloat(dtype) || m < 1 || m > decodeMaxTokens(dtype)) return false;
  if (!decodeBlockSide(pattern.blockHeight) || !decodeBlockSide(pattern.blockWidth)) return false;
  if (pattern.rows <= 0 || pattern.rows / kSliceRows > INT32_MAX || pattern.cols <= 0) return false;
  // Each lane reads 8 or 16 bytes of a row of X and of W: their starts and X's row stride must be aligned.
  const size_t element = dtypeSize(dtype);
  const uintptr_t vector = pattern.blockWidth * element / 4 < 16 ? 8 : 16;
  if ((pattern.cols * element) % vector != 0 || !alignedTo(x, vector) || !alignedTo(values, vector)) return false;
  return alignedTo(y, element) && (!bias || alignedTo(bias, element));
}

bool decodeVariant(int variant) { return variant >= 0 && variant < kDecodeVariants; }

int decodeWarps(DType dtype, const BsrPatternView& pattern, int64_t m, int variant, int numSms) {
  if (variant == kDecodeStagedVariant && decodeStagedSupported(dtype, pattern, m))
    return decodeStagedWarps(decodeStagedGroupRows(pattern.blockRows, decodeStagedRanges(pattern), numSms),
                             pattern.blockHeight);
  int warps = 1;
  visitTraits(dtype, pattern.blockWidth, m, [&](auto traits) { warps = chooseWarps<decltype(traits)>(pattern, variant, numSms); });
  return warps;
}

void launchDecodeLinear(DType dtype, const void* x, const void* values, const void* bias, void* y, int64_t m,
                        const BsrPatternView& pattern, int variant, int numSms, int l2Bytes, cudaStream_t stream,
                        const DecodeEpilogue& epilogue) {
  DecodeArgs args{m,       pattern.rows, pattern.cols, pattern.blockHeight, pattern.blockRowPtr, pattern.blockColIdx,
                  nullptr, nullptr,      0,            0,                   epilogue};
  const unsigned ctas = static_cast<unsigned>(pattern.rows / kSliceRows);
  const DecodeVariantSpec& spec = kDecodeVariantSpecs[decodeVariant(variant) ? variant : 0];
  visitTraits(dtype, pattern.blockWidth, m, [&](auto traits) {
    using K = decltype(traits);
    using T = typename K::T;
    const int warps = chooseWarps<K>(pattern, variant, numSms);
    const bool overlap = spec.overlap && overlapBuilt<K>();
    if (overlap) {
      const int64_t valueBytes = static_cast<int64_t>(pattern.nnzBlocks) * pattern.blockHeight * K::C * sizeof(T);
      planPrefetch(args, values, valueBytes, ctas, l2Bytes, kPrefetchShareOfL2);
    }
    cudaLaunchAttribute attribute{};
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(ctas);
    config.blockDim = dim3(32 * warps);
    config.dynamicSmemBytes = partialBytes<K>(warps);
    config.stream = stream;
    config.attrs = overlap ? &attribute : nullptr;
    config.numAttrs = overlap ? 1 : 0;
    const cudaError_t launched =
        cudaLaunchKernelEx(&config, bsrDecodeLinearKernel<K>, static_cast<const T*>(x),
                           static_cast<const T*>(values), static_cast<const T*>(bias), static_cast<T*>(y), args);
    if (launched != cudaSuccess) {
      cudaGetLastError();
      throwCuda(launched, "launch of bsrDecodeLinearKernel");
    }
    BS_LAUNCH_CHECK("bsrDecodeLinearKernel");
  });
}

bool decodeStagedSupported(DType dtype, const BsrPatternView& pattern, int64_t m) {
  return (dtype == DType::BFloat16 || dtype == DType::Float16) && m > 32 && m <= 64 &&
         (pattern.blockWidth == 32 || pattern.blockWidth == 64 || pattern.blockWidth == 128) &&
         pattern.blockHeight % kSliceRows == 0 && pattern.blockRows > 0;
}

int64_t decodeStagedRanges(const BsrPatternView& pattern) { return decodeStagedRangesOf(pattern.cols); }

bool launchDecodeStaged(DType dtype, const void* x, const void* values, const void* bias, void* y, float* partials,
                        int64_t m, const BsrPatternView& pattern, int numSms, cudaStream_t stream,
                        const DecodeEpilogue& epilogue) {
  DecodeArgs args{m, pattern.rows, pattern.cols, pattern.blockHeight, pattern.blockRowPtr, pattern.blockColIdx,
                  nullptr, nullptr, 0, 0};
  const int64_t ranges = decodeStagedRanges(pattern);
  const int group = decodeStagedGroupRows(pattern.blockRows, ranges, numSms);
  StagedArgs staged{group, static_cast<int32_t>(ranges), partials};
  bool launched = true;
  visitStaged(dtype, pattern.blockWidth, [&](auto traits) {
    using K = decltype(traits);
    using T = typename K::T;
    static int sized[kDevices] = {};
    const int ready = oncePerDevice(sized, [](int) {
      if (cudaFuncSetAttribute(bsrDecodeStagedKernel<K>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(stagedBytes<K>())) == cudaSuccess)
        return 1;
      cudaGetLastError();
      return 0;
    });
    if (!ready) {  // a GPU whose CTAs get less shared memory (sm_86, sm_89: about 100 KB): the caller runs variant 0
      launched = false;
      return;
    }
    launchOverlapped("launch of bsrDecodeStagedKernel", bsrDecodeStagedKernel<K>,
                     dim3(static_cast<unsigned>((pattern.blockRows + group - 1) / group), static_cast<unsigned>(ranges)),
                     dim3(32 * decodeStagedWarps(group, pattern.blockHeight)), stagedBytes<K>(), stream,
                     static_cast<const T*>(x), static_cast<const T*>(values), static_cast<const T*>(bias),
                     static_cast<T*>(y), args, staged);
    if (partials == nullptr) return;
    const int64_t outputs = m * pattern.rows;
    constexpr uintptr_t kPackBytes = kPackedSum * sizeof(T);
    const bool packed = outputs % kPackedSum == 0 && alignedTo(partials, 16) && alignedTo(y, kPackBytes) &&
                        alignedTo(epilogue.residual, kPackBytes) && alignedTo(epilogue.activated, kPackBytes);
    if (packed)
      launchOverlapped("launch of sumStagedRangesPackedKernel", sumStagedRangesPackedKernel<T>,
                       dim3(gridFor(outputs / kPackedSum, kPackedSumThreads)), dim3(kPackedSumThreads), 0, stream,
                       static_cast<const float*>(partials), static_cast<int>(ranges), outputs, static_cast<T*>(y),
                       epilogue);
    else if (!hasEpilogue(epilogue))
      launchSumSplits(dtype, partials, static_cast<int>(ranges), outputs, y, stream);
    else
      launchOverlapped("launch of sumStagedRangesKernel", sumStagedRangesKernel<T>, dim3(gridFor(outputs)),
                       dim3(kThreads), 0, stream, static_cast<const float*>(partials), static_cast<int>(ranges), outputs,
                       static_cast<T*>(y), epilogue);
  });
  return launched;
}

}  // namespace bs::tc
