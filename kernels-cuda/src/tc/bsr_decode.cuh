// What the decoding kernels of bsrLinear share (tc/bsr_decode.cu, and the variants kept for measurement in
// kernels-cuda/dev/): the lane layout of a 16-row slice (lane (g, q) = (lane / 4, lane % 4) holds rows g and g + 8 of a
// slab, the kVec columns at q * kVec of each chunk), W's streaming loads and X's cached ones, the mma.sync fragments
// they make as loaded, the launch's overlap with the kernel before it, and the staged variant's shared-memory range of
// X. Internal to each file that includes it.
#pragma once

#include <algorithm>

#include "../kernels/activation_math.cuh"
#include "../kernels/dtype.cuh"
#include "../kernels/overlap.cuh"
#include "ptx.cuh"
#include "tc_kernels.h"

namespace bs::tc {

namespace {

constexpr int kSliceRows = kDecodeSliceRows;  // W rows per CTA: the m of one mma tile
constexpr int kTokenTile = 8;            // tokens per mma tile (its n)
constexpr int kVectorsInFlight = 8;      // W vectors per lane loaded before any is used

template <int kWords>
struct Vec {
  uint32_t word[kWords];
};

// W is read once: skip L1, and let L2 fetch the rest of the 256-byte segment for the next lanes.
template <int kWords>
__device__ __forceinline__ Vec<kWords> loadStreaming(const void* pointer) {
  Vec<kWords> v;
  if constexpr (kWords == 4) {
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.word[0]), "=r"(v.word[1]), "=r"(v.word[2]), "=r"(v.word[3])
                 : "l"(pointer));
  } else {
    static_assert(kWords == 2, "8- or 16-byte vectors");
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v2.u32 {%0, %1}, [%2];\n"
                 : "=r"(v.word[0]), "=r"(v.word[1])
                 : "l"(pointer));
  }
  return v;
}

// X is small and read by every CTA: keep it in L1.
template <int kWords>
__device__ __forceinline__ Vec<kWords> loadCached(const void* pointer) {
  Vec<kWords> v;
  if constexpr (kWords == 4) {
    const uint4 raw = __ldg(static_cast<const uint4*>(pointer));
    v.word[0] = raw.x, v.word[1] = raw.y, v.word[2] = raw.z, v.word[3] = raw.w;
  } else {
    const uint2 raw = __ldg(static_cast<const uint2*>(pointer));
    v.word[0] = raw.x, v.word[1] = raw.y;
  }
  return v;
}

template <typename T_, int kC_, int kTokens_>
struct DecodeTraits {
  using T = T_;
  static constexpr int C = kC_;
  static constexpr bool kTensorCores = sizeof(T) == 2;  // bf16/f16 on mma.sync, float32 exact on FMA
  static constexpr int kTokens = kTokens_;              // tokens covered: a multiple of 8 on the mma path
  static constexpr int kTokenTiles = kTokens / kTokenTile;
  static constexpr int kVecBytes = C * static_cast<int>(sizeof(T)) / 4 < 16 ? 8 : 16;
  static constexpr int kVec = kVecBytes / static_cast<int>(sizeof(T));  // elements per lane per row
  static constexpr int kWords = kVecBytes / 4;
  static constexpr int kChunk = 4 * kVec;  // columns the four lanes of a row cover
  static constexpr int kChunksPerBlock = C / kChunk;
  static constexpr int kBlocksPerStep =
      2 * kChunksPerBlock >= kVectorsInFlight ? 1 : kVectorsInFlight / (2 * kChunksPerBlock);
  static_assert(C % kChunk == 0, "a block is whole chunks");
  static_assert(!kTensorCores || (kTokens % kTokenTile == 0 && kVec % 4 == 0), "mma fragments");
};

struct DecodeArgs {
  int64_t m, rows, cols;
  int32_t blockHeight;
  const int32_t* blockRowPtr;
  const int32_t* blockColIdx;
  // CTA i asks L2 for bytes [i * prefetchStride, + prefetchBytes) of prefetchBase (16-byte aligned, clipped to
  // prefetchEnd); prefetchBytes 0: none.
  const char* prefetchBase;
  const char* prefetchEnd;
  int64_t prefetchStride;
  uint32_t prefetchBytes;
  DecodeEpilogue epilogue{};  // variant 0's (tc_kernels.h); the staged variant's sum pass takes it, dev's kernels none
};

// Asks L2 for `bytes` from `from` (16-byte aligned; a hint, so safe whatever another kernel writes there); nothing
// before sm_90.
__device__ __forceinline__ void prefetchToL2(const void* from, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(from), "r"(bytes) : "memory");
#endif
}

// Before the kernel reads anything another kernel may write (X, the pattern) or writes Y, it lets the next kernel
// in the stream launch, asks L2 for its share of W (a hint: L2 is where the device's writes land, so what it holds
// is current whatever the kernel before wrote), and waits for the kernel before it to finish and flush. Without a
// programmatic launch the wait returns at once.
__device__ __forceinline__ void overlapWithNeighbours(const DecodeArgs& args) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  allowDependentLaunch();
  if (threadIdx.x == 0 && args.prefetchBytes > 0) {
    const char* from = args.prefetchBase + blockIdx.x * args.prefetchStride;
    if (from < args.prefetchEnd) {
      const int64_t left = args.prefetchEnd - from;
      const uint32_t bytes = left < args.prefetchBytes ? static_cast<uint32_t>(left) : args.prefetchBytes;
      prefetchToL2(from, bytes);
    }
  }
  waitForPrimary();
#endif
}

// Partial sums of one warp: rows {g, g + 8} of the slice x the tokens it covers.
template <class K>
struct Accumulator {
  // mma: [token tile][c0..c3] = (row g, tokens 2q, 2q+1), (row g + 8, tokens 2q, 2q+1) of the tile.
  // FMA: [row g / g + 8][token], each lane's partial over its columns.
  float value[K::kTensorCores ? K::kTokenTiles : 2][K::kTensorCores ? 4 : K::kTokens];
};

// The lane's W vectors of `kBlocks` blocks (entries e, e + stride, ... of the slice's run from laneW): rows g and g + 8
// of each chunk, all loaded before any is used.
template <class K, int kBlocks>
struct WVectors {
  Vec<K::kWords> low[kBlocks][K::kChunksPerBlock], high[kBlocks][K::kChunksPerBlock];
};
template <class K, int kBlocks>
__device__ __forceinline__ void loadWVectors(WVectors<K, kBlocks>& w, const typename K::T* laneW, int e, int stride,
                                             int64_t blockElements) {
#pragma unroll
  for (int b = 0; b < kBlocks; ++b)
#pragma unroll
    for (int c = 0; c < K::kChunksPerBlock; ++c) {
      const typename K::T* row = laneW + static_cast<int64_t>(e + b * stride) * blockElements + c * K::kChunk;
      w.low[b][c] = loadStreaming<K::kWords>(row);
      w.high[b][c] = loadStreaming<K::kWords>(row + 8 * K::C);
    }
}

// One chunk's products for one token tile: the lane's W vectors as mma's A fragments, its X vector as B.
template <class K>
__device__ __forceinline__ void mmaChunk(float (&acc)[4], const Vec<K::kWords>& low, const Vec<K::kWords>& high,
                                         const Vec<K::kWords>& xv) {
#pragma unroll
  for (int j = 0; j < K::kVec / 4; ++j) {
    const uint32_t a[4] = {low.word[2 * j], high.word[2 * j], low.word[2 * j + 1], high.word[2 * j + 1]};
    const uint32_t bFragment[2] = {xv.word[2 * j], xv.word[2 * j + 1]};
    mma16816<typename K::T>(acc, a, bFragment);
  }
}

// Adds `kBlocks` blocks (entries e, e + stride, ...) of the slice to the warp's sums.
template <class K, int kBlocks>
__device__ __forceinline__ void addBlocks(Accumulator<K>& acc, const DecodeArgs& args, const typename K::T* x,
                                          const typename K::T* laneW, const int32_t* colIdx, int e, int stride,
                                          int lane) {
  using T = typename K::T;
  const int g = lane / 4, q = lane % 4;
  const int64_t blockElements = static_cast<int64_t>(args.blockHeight) * K::C;
  int64_t column[kBlocks];
#pragma unroll
  for (int b = 0; b < kBlocks; ++b) column[b] = static_cast<int64_t>(__ldg(colIdx + e + b * stride)) * K::C + q * K::kVec;
  WVectors<K, kBlocks> w;
  loadWVectors(w, laneW, e, stride, blockElements);
#pragma unroll
  for (int b = 0; b < kBlocks; ++b)
#pragma unroll
    for (int c = 0; c < K::kChunksPerBlock; ++c) {
      const T* xColumn = x + column[b] + c * K::kChunk;
      if constexpr (K::kTensorCores) {
#pragma unroll
        for (int tile = 0; tile < K::kTokenTiles; ++tile) {
          const int token = tile * kTokenTile + g;
          Vec<K::kWords> xv{};
          if (token < args.m) xv = loadCached<K::kWords>(xColumn + token * args.cols);
          mmaChunk<K>(acc.value[tile], w.low[b][c], w.high[b][c], xv);
        }
      } else {
#pragma unroll
        for (int token = 0; token < K::kTokens; ++token) {
          if (token >= args.m) break;
          const Vec<K::kWords> xv = loadCached<K::kWords>(xColumn + token * args.cols);
#pragma unroll
          for (int i = 0; i < K::kVec; ++i) {
            const float xi = __uint_as_float(xv.word[i]);
            acc.value[0][token] = fmaf(__uint_as_float(w.low[b][c].word[i]), xi, acc.value[0][token]);
            acc.value[1][token] = fmaf(__uint_as_float(w.high[b][c].word[i]), xi, acc.value[1][token]);
          }
        }
      }
    }
}

// On an H200 (decode.md, 32 shapes of 2048-16384 rows and columns), an eighth of L2 (7.5 MB of 60) and a sixteenth were
// best, 1.11x the launch without overlap on the geometric mean (1.03-1.21x); the launch alone 1.08x; half of L2
// 0.76-1.24x (a large W's prefetch evicted before it was read); the prefetch without the programmatic launch 1.00x.
constexpr double kPrefetchShareOfL2 = 1.0 / 8;
// CTA i of `ctas` asks L2 for the i-th share of W's bytes, all of them asking together for at most `shareOfL2` of
// L2, so a share may be cut short at its end.
inline void planPrefetch(DecodeArgs& args, const void* values, int64_t valueBytes, int64_t ctas, int l2Bytes,
                  double shareOfL2) {
  const auto base = (reinterpret_cast<uintptr_t>(values) + 15) & ~uintptr_t{15};
  const auto end = (reinterpret_cast<uintptr_t>(values) + static_cast<uintptr_t>(valueBytes)) & ~uintptr_t{15};
  if (end <= base || ctas <= 0 || l2Bytes <= 0) return;
  const int64_t bytes = static_cast<int64_t>(end - base);
  const int64_t stride = ((bytes + ctas - 1) / ctas + 15) & ~int64_t{15};
  const int64_t most = static_cast<int64_t>(shareOfL2 * l2Bytes / ctas) & ~int64_t{15};
  const int64_t share = std::min<int64_t>({stride, most, int64_t{1} << 30});
  if (share <= 0) return;
  args.prefetchBase = reinterpret_cast<const char*>(base);
  args.prefetchEnd = reinterpret_cast<const char*>(end);
  args.prefetchStride = stride;
  args.prefetchBytes = static_cast<uint32_t>(share);
}

constexpr int kStagedRangeCols = kDecodeStagedRangeCols;
// Elements of padding per staged row: 64 bytes, so that the two token rows a quarter-warp's 16-byte loads read at once
// (lanes (g, q) with g in {2i, 2i + 1}, 64 bytes of one chunk per row) fall in different halves of the 128-byte bank
// line (a 16-byte pad put them 16 bytes apart: three of the four lanes of each row shared banks with the other row).
constexpr int kStagedPad = 32;
constexpr int kStagedPitch = kStagedRangeCols + kStagedPad;

struct StagedArgs {
  int32_t groupRows;  // block rows per CTA (its warps take their 16-row slices in turn: decodeStagedWarps)
  int32_t ranges;     // CTAs along K (gridDim.y)
  float* partials;    // [ranges][m][rows] where ranges > 1 or an epilogue follows (the sum pass writes Y); else null
};

// Adds blocks e .. e + kBlocks - 1 of the warp's run to its sums, X from the staged range (colLo: its first block
// column).
template <class K, int kBlocks>
__device__ __forceinline__ void addStagedBlocks(Accumulator<K>& acc, const typename K::T* xs, const typename K::T* laneW,
                                                const int32_t* colIdx, int e, int32_t colLo, int64_t blockElements,
                                                int lane) {
  using T = typename K::T;
  const int g = lane / 4, q = lane % 4;
  int column[kBlocks];
#pragma unroll
  for (int b = 0; b < kBlocks; ++b) column[b] = (__ldg(colIdx + e + b) - colLo) * K::C + q * K::kVec;
  WVectors<K, kBlocks> w;
  loadWVectors(w, laneW, e, 1, blockElements);
#pragma unroll
  for (int b = 0; b < kBlocks; ++b)
#pragma unroll
    for (int c = 0; c < K::kChunksPerBlock; ++c) {
      const T* xColumn = xs + column[b] + c * K::kChunk;
#pragma unroll
      for (int tile = 0; tile < K::kTokenTiles; ++tile) {
        const Vec<K::kWords> xv = *reinterpret_cast<const Vec<K::kWords>*>(xColumn + (tile * kTokenTile + g) * kStagedPitch);
        mmaChunk<K>(acc.value[tile], w.low[b][c], w.high[b][c], xv);
      }
    }
}

// Narrows a block row's entries [lo, hi) to those whose columns fall in [colLo, colHi) (a row's columns are sorted:
// the warp counts those below each end, 32 at a time). Warp-wide: every lane passes the same row.
__device__ __forceinline__ void entriesInRange(const int32_t* blockColIdx, int32_t colLo, int32_t colHi, int32_t& lo,
                                               int32_t& hi, int lane) {
  int32_t below = 0, belowEnd = 0;
  for (int32_t e = lo + lane; e - lane < hi; e += 32) {
    const int32_t column = e < hi ? __ldg(blockColIdx + e) : INT32_MAX;
    below += __popc(__ballot_sync(0xffffffffu, column < colLo));
    belowEnd += __popc(__ballot_sync(0xffffffffu, column < colHi));
  }
  hi = lo + belowEnd;
  lo += below;
}

// Copies X's [kTokens x width] from column c0 into xs (rows kStagedPitch apart) with asynchronous copies, zeros past M,
// all in flight together, and commits them as one group (the caller waits and syncs the CTA).
template <class K>
__device__ __forceinline__ void copyStagedRangeAsync(const typename K::T* x, typename K::T* xs, const DecodeArgs& args,
                                                     int64_t c0, int width) {
  constexpr int kPerVector = 16 / sizeof(typename K::T);
  const int vectorsPerRow = width / kPerVector;
  for (int i = threadIdx.x; i < K::kTokens * vectorsPerRow; i += blockDim.x) {
    const int token = i / vectorsPerRow, v = i % vectorsPerRow;
    const bool real = token < args.m;
    cpAsync16(smemAddress(xs + token * kStagedPitch + v * kPerVector), real ? x + token * args.cols + c0 + v * kPerVector : x,
              real);
  }
  cpAsyncCommit();
}

// Slice s of a CTA's group of block rows from firstRow (the staged kernel): its block row's
// entries with columns in the staged range [colLo, colHi), and the lane's first element of W.
template <class K>
struct StagedSlice {
  int64_t rowBase;  // the slice's first row of W (and Y)
  const typename K::T* laneW;
  const int32_t* colIdx;
  int count;
  int32_t first;  // the slice's first entry in values
};

template <class K>
__device__ __forceinline__ StagedSlice<K> stagedSlice(const DecodeArgs& args, const typename K::T* values,
                                                      int64_t firstRow, int s, int32_t colLo, int32_t colHi,
                                                      bool wholeRow, int lane) {
  const int slicesPerRow = args.blockHeight / kSliceRows;
  const int64_t blockRow = firstRow + s / slicesPerRow;
  const int slice = s % slicesPerRow;
  int32_t lo = args.blockRowPtr[blockRow], hi = args.blockRowPtr[blockRow + 1];
  if (!wholeRow) entriesInRange(args.blockColIdx, colLo, colHi, lo, hi, lane);
  StagedSlice<K> out;
  out.rowBase = blockRow * args.blockHeight + slice * kSliceRows;
  out.laneW = values + (static_cast<int64_t>(lo) * args.blockHeight + slice * kSliceRows + lane / 4) * K::C +
              (lane % 4) * K::kVec;
  out.colIdx = args.blockColIdx + lo;
  out.count = hi - lo;
  out.first = lo;
  return out;
}

// A as the activation pass computes it from the stored Y (its limits; its fast functions in half precision).
template <typename T>
__device__ __forceinline__ T activatedFrom(const DecodeEpilogue& epilogue, T stored) {
  return fromFloat<T>(activateAs<sizeof(T) == 2, true>(epilogue.activation, toFloat<T>(stored)));
}

// Y[at] from a float32 sum with the decoding epilogue (tc_kernels.h): the residual added before Y is rounded, and
// activation(Y as stored) written beside it as the activation pass computes it (its limits; its fast functions in half
// precision), so that A is bit for bit the pass's output over Y.
template <typename T>
__device__ __forceinline__ void storeDecoded(const DecodeEpilogue& epilogue, T* y, int64_t at, float sum) {
  if (epilogue.residual != nullptr) sum += toFloat<T>(static_cast<const T*>(epilogue.residual)[at]);
  const T stored = static_cast<T>(sum);
  y[at] = stored;
  if (epilogue.activated != nullptr) static_cast<T*>(epilogue.activated)[at] = activatedFrom(epilogue, stored);
}

// Stores a warp's sums of the 16-row slice from rowBase for the tokens below M: Y where the launch gave no partials (one
// range of K and no epilogue), else the range's float32 partials [range][token][row]; the first range adds the bias.
template <class K>
__device__ __forceinline__ void storeStagedSums(const Accumulator<K>& acc, const DecodeArgs& args,
                                                const typename K::T* bias, typename K::T* y, const StagedArgs& staged,
                                                int range, int64_t rowBase, int lane) {
  const int g = lane / 4, q = lane % 4;
#pragma unroll
  for (int tile = 0; tile < K::kTokenTiles; ++tile)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int token = tile * kTokenTile + 2 * q + i % 2;
      const int64_t row = rowBase + g + 8 * (i / 2);
      if (token >= args.m) continue;
      float value = acc.value[tile][i];
      if (range == 0 && bias) value += static_cast<float>(bias[row]);
      if (staged.partials == nullptr) y[token * args.rows + row] = static_cast<typename K::T>(value);
      else staged.partials[(static_cast<int64_t>(range) * args.m + token) * args.rows + row] = value;
    }
}

constexpr int kDevices = 64;

// ask(device) for the current device, asked once per device (a negative answer counts as 0): `cache` holds each
// device's answer + 1, 0 until asked. 0 when the current device cannot be read.
template <class F>
int oncePerDevice(int (&cache)[kDevices], F&& ask) {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kDevices) {
    cudaGetLastError();
    return 0;
  }
  if (cache[device] == 0) cache[device] = std::max(ask(device), 0) + 1;
  return cache[device] - 1;
}

// Calls f(DecodeTraits<T, C, 64>{}) for the staged kernel of `dtype` (bfloat16 or float16) and `blockCols` (32, 64 or
// 128: a lane's 16-byte rows).
template <class F>
void visitStaged(DType dtype, int blockCols, F&& f) {
  const auto byColumns = [&](auto element) {
    using T = decltype(element);
    if (blockCols == 32) f(DecodeTraits<T, 32, 64>{});
    else if (blockCols == 64) f(DecodeTraits<T, 64, 64>{});
    else f(DecodeTraits<T, 128, 64>{});
  };
  if (dtype == DType::BFloat16) byColumns(__nv_bfloat16{});
  else byColumns(__half{});
}

template <class K>
constexpr size_t stagedBytes() {
  return size_t(K::kTokens) * kStagedPitch * sizeof(typename K::T);
}

}  // namespace

}  // namespace bs::tc
