// The staged decoding variant with W copied into shared memory ahead of its products (kDecodeRingVariant, kept for
// measurement: TcOptions::devDecode = launchDecodeDevVariant). bsrLinear with 33-64 tokens in bfloat16/float16.
//
// Under Nsight Compute the staged kernels (the addon's variant 5, dev's 6 and 7) are latency-bound: DRAM at 40%, 65% of
// cycles with no eligible warp, the wait on global loads first. A warp loads one step of W into registers (8 vectors a
// lane), waits for all of it, then computes, so an SM has at most its warps' steps in flight and none while they
// compute. Here each warp streams its blocks through a ring of kRingStages slots in shared memory with cp.async: the
// copies of the next stages are in flight while it computes one, about 8-10 KB a warp, 56-80 KB an SM, continuously.
//
// The grid is dev's one-wave grid (decodeTurnsGroupRows) and X's range is staged as in variant 5. A warp's stream is its
// slices in a fixed order (warp, warp + warps, ...: the copies run ahead across slices, which taking them in turn from
// a counter would not allow without a queue), each slice's blocks in the range in order. A slot is one block's
// 16-row slab; each lane copies and reads back its own 16-byte vectors of it (slot layout [vector][lane]: a quarter-warp
// reads 128 contiguous bytes), so a lane needs no other lane's copies and the ring needs no barrier.
#include <optional>

#include "../src/kernels.h"
#include "../src/memory.h"
#include "../src/tc/bsr_decode.cuh"
#include "dev_variants.h"

namespace bs::tc {

namespace {

// Slots per warp, about 8-12 KB of W each warp: 11 of 1 KB at 32 columns, 5 of 2 KB at 64, 3 of 4 KB at 128 (so that
// with X's staged range, 132 KB, 8 warps fit the 227 KB a CTA may ask on sm_90, 7 at 128 columns).
template <class K>
constexpr int kRingStages = K::C == 32 ? 11 : K::C == 64 ? 5 : 3;
template <class K>
constexpr int kSlotBytes = kSliceRows * K::C * static_cast<int>(sizeof(typename K::T));
template <class K>
constexpr int kRingBytes = kRingStages<K> * kSlotBytes<K>;

// A warp's place in its stream: slice s (of the CTA's group; past the group when done) and its entry e of count.
template <class K>
struct Cursor {
  int s, e;
  StagedSlice<K> run;
};

template <class K>
__device__ __forceinline__ void openSlice(Cursor<K>& cursor, int s, int slices, const DecodeArgs& args,
                                          const typename K::T* values, int64_t firstRow, int32_t colLo, int32_t colHi,
                                          bool wholeRow, int lane) {
  cursor.s = s;
  cursor.e = 0;
  if (s < slices) cursor.run = stagedSlice<K>(args, values, firstRow, s, colLo, colHi, wholeRow, lane);
  else cursor.run.count = 0;
}

template <class K>
__global__ void __launch_bounds__(32 * kDecodeRingMaxWarps, 1) bsrDecodeRingKernel(const typename K::T* __restrict__ x,
                                                                                 const typename K::T* __restrict__ values,
                                                                                 const typename K::T* __restrict__ bias,
                                                                                 typename K::T* __restrict__ y,
                                                                                 DecodeArgs args, StagedArgs staged) {
  using T = typename K::T;
  static_assert(K::kTensorCores && K::kVecBytes == 16, "16-byte rows of half-precision X");
  constexpr int R = kRingStages<K>;
  static_assert(R >= 2, "a slot in flight while one is read");
  constexpr int kChunks = K::kChunksPerBlock;
  extern __shared__ __align__(16) unsigned char smem[];
  T* xs = reinterpret_cast<T*>(smem);  // [kTokens][kStagedPitch], then the warps' rings
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const int g = lane / 4, q = lane % 4;
  // This lane's 16 bytes of vector v of slot i: ring + i * kSlotBytes + v * 512.
  const uint32_t ring = smemAddress(smem + stagedBytes<K>() + warp * kRingBytes<K>) + lane * 16;
  overlapWithNeighbours(args);
  const int range = blockIdx.y;
  const int64_t c0 = static_cast<int64_t>(range) * kStagedRangeCols;
  const int width = static_cast<int>(std::min<int64_t>(kStagedRangeCols, args.cols - c0));
  copyStagedRangeAsync<K>(x, xs, args, c0, width);

  const int64_t blockRows = args.rows / args.blockHeight;
  const int64_t firstRow = static_cast<int64_t>(blockIdx.x) * staged.groupRows;
  const int slices =
      static_cast<int>(std::min<int64_t>(staged.groupRows, blockRows - firstRow)) * (args.blockHeight / kSliceRows);
  const int32_t colLo = static_cast<int32_t>(c0 / K::C), colHi = static_cast<int32_t>((c0 + width) / K::C);
  const bool wholeRow = staged.ranges == 1;
  const int64_t blockElements = static_cast<int64_t>(args.blockHeight) * K::C;

  // The producer copies block p of the stream into slot p % R, one commit group per call (empty past the stream's
  // end), so that group p holds block p and waiting until R - 2 groups are pending leaves the oldest one's block here.
  Cursor<K> producer, consumer;
  openSlice(producer, warp, slices, args, values, firstRow, colLo, colHi, wholeRow, lane);
  int producerSlot = 0;
  auto issue = [&] {
    while (producer.s < slices && producer.e == producer.run.count)
      openSlice(producer, producer.s + warps, slices, args, values, firstRow, colLo, colHi, wholeRow, lane);
    if (producer.s < slices) {
      const T* from = producer.run.laneW + producer.e * blockElements;
      const uint32_t slot = ring + producerSlot * kSlotBytes<K>;
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        cpAsync16(slot + (2 * c) * 512, from + c * K::kChunk, true);
        cpAsync16(slot + (2 * c + 1) * 512, from + c * K::kChunk + 8 * K::C, true);
      }
      ++producer.e;
    }
    cpAsyncCommit();
    producerSlot = producerSlot + 1 == R ? 0 : producerSlot + 1;
  };
#pragma unroll
  for (int i = 0; i < R - 1; ++i) issue();
  cpAsyncWait<R - 1>();  // X's range (the first group) has landed; the warps' blocks may not have
  __syncthreads();

  openSlice(consumer, warp, slices, args, values, firstRow, colLo, colHi, wholeRow, lane);
  Accumulator<K> acc{};
  int consumerSlot = 0;  // block k of the stream is in slot k % R
  while (consumer.s < slices) {
    if (consumer.e == consumer.run.count) {
      storeStagedSums<K>(acc, args, bias, y, staged, range, consumer.run.rowBase, lane);
      acc = Accumulator<K>{};
      openSlice(consumer, consumer.s + warps, slices, args, values, firstRow, colLo, colHi, wholeRow, lane);
      continue;
    }
    cpAsyncWait<R - 2>();
    const uint32_t slot = ring + consumerSlot * kSlotBytes<K>;
    Vec<K::kWords> low[kChunks], high[kChunks];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(low[c].word[0]), "=r"(low[c].word[1]), "=r"(low[c].word[2]), "=r"(low[c].word[3])
                   : "r"(slot + (2 * c) * 512));
      asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(high[c].word[0]), "=r"(high[c].word[1]), "=r"(high[c].word[2]), "=r"(high[c].word[3])
                   : "r"(slot + (2 * c + 1) * 512));
    }
    const int column = (__ldg(consumer.run.colIdx + consumer.e) - colLo) * K::C + q * K::kVec;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const T* xColumn = xs + column + c * K::kChunk;
#pragma unroll
      for (int tile = 0; tile < K::kTokenTiles; ++tile) {
        const Vec<K::kWords> xv = *reinterpret_cast<const Vec<K::kWords>*>(xColumn + (tile * kTokenTile + g) * kStagedPitch);
        mmaChunk<K>(acc.value[tile], low[c], high[c], xv);
      }
    }
    ++consumer.e;
    consumerSlot = consumerSlot + 1 == R ? 0 : consumerSlot + 1;
    // The block's slot is free again (this lane read its own vectors of it above): the next block goes there.
    issue();
  }
  cpAsyncWait<0>();
}

// The warps of a CTA for `groupRows` block rows of `blockHeight`, at most kDecodeRingMaxWarps and as many rings as the
// device's shared memory per CTA holds beside X's range; 0 when not even one fits.
template <class K>
int ringWarps(int groupRows, int blockHeight, int sharedPerCta) {
  const int fit = (sharedPerCta - static_cast<int>(stagedBytes<K>())) / kRingBytes<K>;
  if (fit < 1) return 0;
  return decodeTurnsWarps(groupRows, blockHeight, std::min(fit, kDecodeRingMaxWarps));
}

int sharedPerCtaOfDevice() {
  int device = 0, bytes = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return bytes;
}

}  // namespace

int decodeRingDevWarps(DType dtype, const BsrPatternView& pattern, int64_t m, int numSms) {
  if (!decodeStagedSupported(dtype, pattern, m)) return 0;
  const int group = decodeTurnsGroupRows(pattern.blockRows, decodeStagedRanges(pattern), numSms);
  int warps = 0;
  visitStaged(dtype, pattern.blockWidth, [&](auto traits) {
    warps = ringWarps<decltype(traits)>(group, pattern.blockHeight, sharedPerCtaOfDevice());
  });
  return warps;
}

bool launchDecodeRing(DType dtype, const void* x, const void* values, const void* bias, void* y, int64_t m,
                      const BsrPatternView& pattern, int numSms, cudaStream_t stream) {
  if (!decodeStagedSupported(dtype, pattern, m)) return false;
  DecodeArgs args{m, pattern.rows, pattern.cols, pattern.blockHeight, pattern.blockRowPtr, pattern.blockColIdx,
                  nullptr, nullptr, 0, 0};
  const int64_t ranges = decodeStagedRanges(pattern);
  const int group = decodeTurnsGroupRows(pattern.blockRows, ranges, numSms);
  const dim3 grid(static_cast<unsigned>((pattern.blockRows + group - 1) / group), static_cast<unsigned>(ranges));
  const int sharedPerCta = sharedPerCtaOfDevice();
  bool launched = false;
  std::optional<Scratch> partials;
  visitStaged(dtype, pattern.blockWidth, [&](auto traits) {
    using K = decltype(traits);
    using T = typename K::T;
    const int warps = ringWarps<K>(group, pattern.blockHeight, sharedPerCta);
    if (warps == 0) return;  // a GPU whose CTAs get less shared memory
    const size_t bytes = stagedBytes<K>() + static_cast<size_t>(warps) * kRingBytes<K>;
    static int sized[kDevices] = {};
    const int most = oncePerDevice(sized, [&](int) {
      if (cudaFuncSetAttribute(bsrDecodeRingKernel<K>, cudaFuncAttributeMaxDynamicSharedMemorySize, sharedPerCta) ==
          cudaSuccess)
        return sharedPerCta;
      cudaGetLastError();
      return 0;
    });
    if (static_cast<int>(bytes) > most) return;
    if (ranges > 1) partials.emplace(static_cast<size_t>(ranges * m * pattern.rows) * sizeof(float));
    const StagedArgs staged{group, static_cast<int32_t>(ranges), partials ? partials->as<float>() : nullptr};
    launchOverlapped("launch of bsrDecodeRingKernel", bsrDecodeRingKernel<K>, grid, dim3(32 * warps), bytes, stream,
                     static_cast<const T*>(x), static_cast<const T*>(values), static_cast<const T*>(bias),
                     static_cast<T*>(y), args, staged);
    launched = true;
  });
  if (launched && ranges > 1) launchSumSplits(dtype, partials->as<float>(), static_cast<int>(ranges), m * pattern.rows, y, stream);
  return launched;
}

}  // namespace bs::tc
