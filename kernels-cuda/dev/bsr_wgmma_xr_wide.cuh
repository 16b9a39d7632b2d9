// The wide-slab X-resident wgmma tile (dev variants 27-29, dev_variants.h; docs/kernels.md, "X-resident bsrLinear and
// bsrMatmul"): 32x32 bsrLinear and bsrMatmul whose slab (K for Linear, N for Matmul) is too wide for the X-resident
// tile (src/tc/bsr_wgmma_xr.cuh), a down-projection's forward and an up-projection's dX. A CTA owns 64 tokens x a group
// of up to kConsumers x kLines block rows (columns). The slab streams through shared memory in chunks of 512 columns,
// two buffers deep, loaded by the producer warpgroup's last warp; each consumer warpgroup holds the accumulators of its
// kLines lines at once and takes, chunk by chunk, its lines' blocks that fall in the chunk, packed four to a stage
// whatever their line, fed through its own ring by its own producer warp. So each chunk of the slab is read once for
// all of the CTA's lines and no line drains its products until the end: 64 / (1 + 64 / (G R d)) FLOP per L2 byte for
// G lines at density d, as the X-resident tile, at any slab width. Measured on an H200 (tc-xr.md, "The wide-slab
// tile"): correct, but 0.56-1.00x the rate of the faster dispatched tile at slabs of 1536-4096 and slower with more
// lines per consumer (three lines 0.85-1.18x the rate of four, five 0.70-0.94x); Nsight Compute: the L2 at 25% of its
// peak, issue slots 40% busy, about 1.37x the X-resident tile's instructions for the same work. Its limit is the
// consumers' latency and instructions per block, not the L2 traffic the model counts; kept for measurement.
#pragma once

#include <climits>
#include <utility>

#include "tc/bsr_wgmma_xr.cuh"

namespace bs::tc {

namespace sm90 {

// What the producer tells a consumer about one stage: up to four blocks, each of any of the consumer's lines.
struct alignas(16) XrWideStage {
  uint32_t slabOffset[4];  // byte offset in the chunk buffer of the first column each block multiplies
  union {
    uint8_t line[4];  // the consumer's line (0..kLines - 1) each block adds to
    uint32_t lines;
  };
  // Blocks in the stage, plus kLast when the stage ends the consumer's chunk (an empty one where it has no block).
  int32_t info;
  static constexpr int32_t kLast = 1 << 16;
};

template <typename T_, Op kOp_, int kLines_ = 4>
struct XrWideTraits {
  using T = T_;
  static constexpr Op kOp = kOp_;
  static constexpr int R = 32, C = 32;
  static constexpr int kTileM = 64;  // tokens per CTA: the M of one wgmma
  static constexpr int kTileN = R;
  // Lines whose accumulators a consumer holds (16 registers each), and the consumer warpgroups: three, so that the
  // producer warpgroup's fourth warp loads the slab and the consumers keep 128 registers each.
  static constexpr int kLines = kLines_;
  static constexpr int kConsumers = 3;
  static constexpr int kThreads = 128 * (kConsumers + 1);
  static constexpr int kLoaderWarp = kConsumers;
  static constexpr int kConsumerWarps = 4;  // arrivals on a stage's empty barrier, per consumer on a chunk's
  static constexpr int kStagingPitch = kTileN * 2 + 16;

  // The slab: boxes of 64 tokens x 64 columns with the 128-byte swizzle, as the X-resident tile's, 8 to a chunk.
  static constexpr int kBoxColumns = 64;
  static constexpr int kBoxBytes = kTileM * kBoxColumns * 2;
  static constexpr uint32_t kSwizzleX = 1;
  static constexpr uint32_t kRowBytesX = kBoxColumns * 2;
  static constexpr int kChunkBoxes = 8;
  static constexpr int kChunkBytes = kChunkBoxes * kBoxBytes;
  static constexpr int kChunkBuffers = 2;
  static constexpr int kChunkLines = kChunkBoxes * kBoxColumns / C;  // slab blocks (W's block columns) per chunk

  // W stages: 8 KB, 4 blocks of one line, as the X-resident tile's.
  static constexpr bool kBKMajor = kOp == Op::Linear;
  static constexpr int kBlockBytes = R * C * 2;
  static constexpr int kStageBlocks = 4;
  static constexpr int kStageBytes = kStageBlocks * kBlockBytes;
  static constexpr uint32_t kSwizzleW = 2;  // 64B: a block's row
  static constexpr int kStages = 4;
  // Blocks per wgmma commit group: two consecutive blocks of the same line (4 wgmmas of k16), else one.
  static constexpr int kGroupBlocks = 2;
  using Stage = XrWideStage;

  static constexpr int kAlignSlack = 1024;
  static constexpr int kFixedBytes = 2048;
  static constexpr int kRingSlots = kConsumers * kStages;
  static constexpr int kBoxBarriers = kChunkBuffers * kChunkBoxes;
  static constexpr int kBarrierBytes = (kBoxBarriers + kChunkBuffers + 2 * kRingSlots) * 8;
  static constexpr int kSmemBytes = kAlignSlack + kFixedBytes + kChunkBuffers * kChunkBytes + kRingSlots * kStageBytes;

  static_assert(kOp != Op::Sampled, "dW reduces over tokens: no slab to keep");
  static_assert(kLines >= 1 && kLines <= 32, "a producer lane holds each line's bounds");
  static_assert(kSmemBytes <= 227 * 1024, "the chunks and the rings fit an SM");
  static_assert(kBarrierBytes + kRingSlots * sizeof(Stage) <= kFixedBytes, "barriers and stage records fit");
  static_assert(kTileM * kStagingPitch <= kStageBytes, "a line's outputs stage in one slot");
  static_assert(kStageBytes % 1024 == 0 && kChunkBytes % 1024 == 0, "slots and chunks stay 1 KB-aligned");
};

struct XrWideLayout {
  int32_t boxes;       // ceil(slab width / 64)
  int32_t chunks;      // ceil(boxes / kChunkBoxes)
  int32_t groupLines;  // block rows (columns) per CTA, at most kConsumers x kLines
  int32_t groups;      // CTA b owns token tile b / groups, group b % groups
};

// A mark that differs per line in each branch that issues into line l's accumulators, so that the compiler cannot
// merge the branches into one indexing the accumulator array at run time (which puts the array in local memory and
// serializes every wgmma: ptxas C7518, seen with 2 and 3 lines).
template <int l>
__device__ __forceinline__ void keepBranch() {
  asm volatile("// line %0" ::"n"(l));
}
template <int kCount, class F, int... I>
__device__ __forceinline__ void forEachLineOf(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
// f(std::integral_constant<int, l>) for each line l below kCount, in order.
template <int kCount, class F>
__device__ __forceinline__ void forEachLine(F&& f) {
  forEachLineOf<kCount>(f, std::make_integer_sequence<int, kCount>{});
}

template <class K>
__global__ void __launch_bounds__(K::kThreads, 1)
    bsrXrWideKernel(const __grid_constant__ CUtensorMap mapX, const __grid_constant__ CUtensorMap mapBlock,
                    const KernelArgs args, const XrWideLayout layout) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Stage = typename K::Stage;
  constexpr int L = K::kLines;
  extern __shared__ uint8_t smemRaw[];
  uint8_t* smem = smemRaw + ((1024 - (smemAddress(smemRaw) & 1023)) & 1023);
  uint64_t* boxFull = reinterpret_cast<uint64_t*>(smem);  // [buffer][box]
  uint64_t* chunkEmpty = boxFull + K::kBoxBarriers;        // [buffer]
  uint64_t* full = chunkEmpty + K::kChunkBuffers;          // [consumer][stage]
  uint64_t* empty = full + K::kRingSlots;
  Stage* records = reinterpret_cast<Stage*>(empty + K::kRingSlots);
  uint8_t* chunks = smem + K::kFixedBytes;
  uint8_t* rings = chunks + K::kChunkBuffers * K::kChunkBytes;  // [consumer][stage] of kStageBytes
  const int tid = threadIdx.x;

  const int tileM = static_cast<int>(blockIdx.x / layout.groups);
  const int group = static_cast<int>(blockIdx.x % layout.groups);
  const int lines = K::kOp == Op::Linear ? args.blockRows : args.blockCols;
  const int lineFirst = group * layout.groupLines;
  const int lineEnd = min(lines, lineFirst + layout.groupLines);
  const int32_t tokenBase = tileM * K::kTileM;
  // Consumer c's lines: lineFirst + c + l kConsumers for l below this.
  auto linesOf = [&](int consumer) {
    const int first = lineFirst + consumer;
    return first < lineEnd ? (lineEnd - first + K::kConsumers - 1) / K::kConsumers : 0;
  };
  auto boxesIn = [&](int chunk) { return min(K::kChunkBoxes, layout.boxes - chunk * K::kChunkBoxes); };

  if (tid == 0) {
    prefetchTensorMap(&mapX);
    prefetchTensorMap(&mapBlock);
    for (int b = 0; b < K::kBoxBarriers; ++b) mbarrierInit(&boxFull[b], 1);
    for (int b = 0; b < K::kChunkBuffers; ++b) mbarrierInit(&chunkEmpty[b], K::kConsumers * K::kConsumerWarps);
    initRingBarriers(full, empty, K::kRingSlots, K::kConsumerWarps);
    fenceBarrierInit();
  }
  __syncthreads();

  const int warpGroup = warpGroupOf(tid);
  const int lane = tid % 32;
  if (warpGroup == 0) {
    const int warp = tid / 32;
    if (warp == K::kLoaderWarp) {
      // The slab, chunk by chunk into the two buffers: a buffer is loaded again once every consumer gave it back.
      if (lane == 0) {
        for (int c = 0; c < layout.chunks; ++c) {
          const int buffer = c % K::kChunkBuffers;
          if (c >= K::kChunkBuffers) mbarrierWait(&chunkEmpty[buffer], (c / K::kChunkBuffers - 1) & 1);
          for (int b = 0; b < boxesIn(c); ++b) {
            uint64_t* bar = &boxFull[buffer * K::kChunkBoxes + b];
            mbarrierArriveExpectTx(bar, K::kBoxBytes);
            tmaLoad2d(chunks + buffer * K::kChunkBytes + b * K::kBoxBytes, &mapX,
                      (c * K::kChunkBoxes + b) * K::kBoxColumns, tokenBase, bar);
          }
        }
      }
      return;
    }
    // Producer warp w feeds consumer w: for each chunk, each of its lines' blocks in the chunk, packed four to a stage
    // whatever their line (a stage's record says each block's line); the chunk's last stage says so (a consumer with
    // no block in the chunk gets an empty one). Lane i holds entry base + i of each line's current window of 32
    // entries, and of the next, requested as the window before it starts; a line's blocks in a chunk are consecutive
    // entries (ascending slab index). Each block's lane expects its bytes on the stage's barrier and issues its copy;
    // lane 0 arrives once the stage is full or the chunk ends.
    const int consumer = warp;
    const int myLines = linesOf(consumer);
    const int32_t* ptr = K::kOp == Op::Linear ? args.blockRowPtr : args.blockColPtr;
    const int32_t* slabIndex = K::kOp == Op::Linear ? args.blockColIdx : args.blockRowIdx;
    int32_t laneBegin = 0, laneEnd = 0;
    if (lane < myLines) {
      const int line = lineFirst + consumer + lane * K::kConsumers;
      laneBegin = ptr[line];
      laneEnd = ptr[line + 1];
    }
    int32_t base[L], end[L], pos[L], column[L], value[L], nextColumn[L], nextValue[L];
    auto loadWindow = [&](int32_t first, int32_t lineEnd_, int32_t& col, int32_t& val) {
      const int32_t e = first + lane;
      col = e < lineEnd_ ? slabIndex[e] : INT_MAX;
      val = e;
      if constexpr (K::kOp == Op::Matmul) val = e < lineEnd_ ? args.valueIndex[e] : 0;
    };
#pragma unroll
    for (int l = 0; l < L; ++l) {
      base[l] = pos[l] = __shfl_sync(0xffffffffu, laneBegin, l);
      end[l] = __shfl_sync(0xffffffffu, laneEnd, l);
      loadWindow(base[l], end[l], column[l], value[l]);
      loadWindow(base[l] + 32, end[l], nextColumn[l], nextValue[l]);
    }
    RingCursor mine;
    bool open = false;  // a stage is being filled
    int filled = 0;     // its blocks
    auto openStage = [&] {
      if (mine.wrapped) mbarrierWait(&empty[consumer * K::kStages + mine.slot], mine.phase ^ 1);
      open = true;
      filled = 0;
    };
    auto publish = [&](bool last) {
      const int ringSlot = consumer * K::kStages + mine.slot;
      if (lane == 0) records[ringSlot].info = filled | (last ? Stage::kLast : 0);
      __syncwarp();  // the lanes' record entries and expected bytes before lane 0's arrival releases them
      if (lane == 0) mbarrierArrive(&full[ringSlot]);
      mine.advance(K::kStages);
      open = false;
    };
    // Line l's `count` blocks on lanes first.. (this lane's entry: col, val) into the open stages.
    auto place = [&](int l, int first, int count, int32_t col, int32_t val, int32_t chunkBase) {
      for (int s = 0; s < count;) {
        if (open && filled == K::kStageBlocks) publish(false);
        if (!open) openStage();
        const int take = min(K::kStageBlocks - filled, count - s);
        const int ringSlot = consumer * K::kStages + mine.slot;
        const int j = lane - first - s;
        if (j >= 0 && j < take) {
          const int p = filled + j;
          Stage& record = records[ringSlot];
          const int32_t slabColumn = (col - chunkBase) * (K::kOp == Op::Linear ? K::C : K::R);
          record.slabOffset[p] = (slabColumn / K::kBoxColumns) * K::kBoxBytes + (slabColumn % K::kBoxColumns) * 2;
          record.line[p] = static_cast<uint8_t>(l);
          mbarrierExpectTx(&full[ringSlot], K::kBlockBytes);
          tmaLoad2d(rings + ringSlot * K::kStageBytes + p * K::kBlockBytes, &mapBlock, 0, val * K::R, &full[ringSlot]);
        }
        filled += take;
        s += take;
      }
    };
    for (int c = 0; c < layout.chunks; ++c) {
      const int32_t chunkBase = c * K::kChunkLines, limit = chunkBase + K::kChunkLines;
#pragma unroll
      for (int l = 0; l < L; ++l) {
        for (;;) {
          const int rel = pos[l] - base[l];
          const bool in = lane >= rel && base[l] + lane < end[l] && column[l] < limit;
          const int count = __popc(__ballot_sync(0xffffffffu, in));
          if (count == 0) break;
          place(l, rel, count, column[l], value[l], chunkBase);
          pos[l] += count;
          if (pos[l] < base[l] + 32 || pos[l] >= end[l]) break;
          // The window is spent and the line goes on: the next may hold more of the chunk's blocks.
          base[l] += 32;
          column[l] = nextColumn[l];
          value[l] = nextValue[l];
          loadWindow(base[l] + 32, end[l], nextColumn[l], nextValue[l]);
        }
      }
      if (!open) openStage();  // no block in the chunk: an empty stage ends it
      publish(true);
    }
    return;
  }

  // Consumers: warpgroup 1 + i holds lines i, i + kConsumers, ... of the group.
  using T = typename K::T;
  const int consumer = warpGroup - 1;
  const int warpInGroup = (tid % 128) / 32;
  const uint32_t chunksAddress = smemAddress(chunks);
  const uint32_t ringAddress = smemAddress(rings);
  float acc[L][K::kTileN / 2];
  zeroAccumulators(acc);
  RingCursor ring;
  int pending = -1;       // the ring slot whose products may still be running (held for the staged outputs)
  int pendingChunk = -1;  // the chunk buffer whose products may still be running
  for (int c = 0; c < layout.chunks; ++c) {
    const int buffer = c % K::kChunkBuffers;
    const uint32_t parity = (c / K::kChunkBuffers) & 1;
    const uint64_t chunkDescriptor = xrSlabDescriptor<K>(chunksAddress + buffer * K::kChunkBytes);
    uint64_t* boxBars = &boxFull[buffer * K::kChunkBoxes];
    uint32_t boxesReady = 0;
    for (;;) {
      const int ringSlot = consumer * K::kStages + ring.slot;
      mbarrierWait(&full[ringSlot], ring.phase);
      const Stage record = records[ringSlot];
      // Read through lane 0 so that ptxas knows them warp-uniform (C7520, as the X-resident tile).
      const int info = __shfl_sync(0xffffffffu, record.info, 0);
      const uint32_t lineWord = __shfl_sync(0xffffffffu, record.lines, 0);
      const int blocks = info & (Stage::kLast - 1);
      const bool last = (info & Stage::kLast) != 0;
      auto lineOf = [&](int j) { return static_cast<int>((lineWord >> (8 * j)) & 0xffu); };
#pragma unroll
      for (int j = 0; j < K::kStageBlocks; ++j) {
        const uint32_t box = record.slabOffset[j] / K::kBoxBytes;
        if (j < blocks && !((boxesReady >> box) & 1u)) {
          mbarrierWait(&boxBars[box], parity);
          boxesReady |= 1u << box;
        }
      }
      const uint64_t stageDescriptor = xrStageDescriptor<K>(ringAddress + ringSlot * K::kStageBytes);
      // The X-resident tile's commit group (straight-line; the branches on a block's line outside it).
      auto issue = [&](float(&a)[K::kTileN / 2], auto count, int first) {
        xrIssueGroup<K, decltype(count)::value>(a, chunkDescriptor, record, stageDescriptor, first);
        // Every group but this one is done: the previous stage and the previous chunk, if still held, are free.
        if (pending >= 0) {
          if (lane == 0) mbarrierArrive(&empty[pending]);
          pending = -1;
        }
        if (pendingChunk >= 0) {
          if (lane == 0) mbarrierArrive(&chunkEmpty[pendingChunk]);
          pendingChunk = -1;
        }
      };
      // Blocks j0 and j0 + 1 in one group where they add to the same line, else one at a time.
#pragma unroll
      for (int j0 = 0; j0 < K::kStageBlocks; j0 += K::kGroupBlocks) {
        const int line0 = lineOf(j0);
        if (j0 + 1 < blocks && line0 == lineOf(j0 + 1)) {
          forEachLine<L>([&](auto index) {
            constexpr int l = decltype(index)::value;
            if (l == line0) {
              keepBranch<l>();
              issue(acc[l], std::integral_constant<int, K::kGroupBlocks>{}, j0);
            }
          });
        } else {
#pragma unroll
          for (int j = j0; j < j0 + K::kGroupBlocks; ++j)
            forEachLine<L>([&](auto index) {
              constexpr int l = decltype(index)::value;
              if (j < blocks && l == lineOf(j)) {
                keepBranch<l>();
                issue(acc[l], std::integral_constant<int, 1>{}, j);
              }
            });
        }
      }
      if (blocks == 0 && pending >= 0) {
        // An empty stage ends the chunk: it is held instead (the outputs stage in the last held slot), the one held
        // before freed once its products are done, so that a run of empty stages never holds the whole ring.
        wgmmaWait<0>();
        if (lane == 0) mbarrierArrive(&empty[pending]);
      }
      pending = ringSlot;
      ring.advance(K::kStages);
      if (last) break;
    }
    // Every box of the chunk has landed (this consumer may not have read them all) before the buffer goes back.
    for (int b = 0; b < boxesIn(c); ++b)
      if (!((boxesReady >> b) & 1u)) mbarrierWait(&boxBars[b], parity);
    if (pendingChunk >= 0) {
      // No product in this chunk released the previous one: its products may still be running.
      wgmmaWait<0>();
      if (lane == 0) mbarrierArrive(&chunkEmpty[pendingChunk]);
    }
    pendingChunk = buffer;
  }
  wgmmaWait<0>();
#pragma unroll
  for (int l = 0; l < L; ++l) fenceRegisters(acc[l]);

  // The outputs, line by line: each warp stages its 16 rows in the held slot (its blocks all read) and writes each
  // row's 64 bytes as four 16-byte stores.
  const int myLines = linesOf(consumer);
  const int g = lane >> 2, c2 = (lane & 3) * 2;  // this thread's rows 16 warpInGroup + g (+ 8), columns 8j + c2 (+ 1)
  const int64_t width = K::kOp == Op::Linear ? args.rows : args.cols;
  uint32_t biasWords[L][K::kTileN / 8];
#pragma unroll
  for (int l = 0; l < L; ++l)
#pragma unroll
    for (int j = 0; j < K::kTileN / 8; ++j) {
      biasWords[l][j] = 0;
      if (K::kOp == Op::Linear && args.bias && l < myLines)
        biasWords[l][j] = *reinterpret_cast<const uint32_t*>(
            static_cast<const T*>(args.bias) + int64_t{lineFirst + consumer + l * K::kConsumers} * K::R + j * 8 + c2);
    }
  uint8_t* staging = rings + pending * K::kStageBytes + warpInGroup * 16 * K::kStagingPitch;
#pragma unroll
  for (int l = 0; l < L; ++l) {
    if (l >= myLines) break;
    const int line = lineFirst + consumer + l * K::kConsumers;
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int j = 0; j < K::kTileN / 8; ++j) {
        float v0 = acc[l][4 * j + half * 2], v1 = acc[l][4 * j + half * 2 + 1];
        const float2 bias = unpackPair<T>(biasWords[l][j]);
        *reinterpret_cast<uint32_t*>(staging + (g + half * 8) * K::kStagingPitch + j * 16 + c2 * 2) =
            packPair<T>(v0 + bias.x, v1 + bias.y);
      }
    __syncwarp();
#pragma unroll
    for (int pass = 0; pass < 2; ++pass) {
      const int row = lane / 4 + pass * 8, part = lane % 4;
      const uint4 words = *reinterpret_cast<const uint4*>(staging + row * K::kStagingPitch + part * 16);
      const int64_t token = tokenBase + warpInGroup * 16 + row;
      if (token < args.m)
        *reinterpret_cast<uint4*>(static_cast<T*>(args.out) + token * width + int64_t{line} * K::kTileN + part * 8) =
            words;
    }
    __syncwarp();
  }
#endif
}

// The wide-slab tile's launch: false, having launched nothing, for a slab narrower than a box, an output not 16-byte
// aligned, or no lines.
template <class K>
bool launchXrWide(DType dtype, const KernelArgs& args, int numSms, cudaStream_t stream) {
  const int64_t depth = K::kOp == Op::Linear ? args.cols : args.rows;  // the slab's width
  const int64_t lines = K::kOp == Op::Linear ? args.blockRows : args.blockCols;
  if (numSms <= 0 || depth < K::kBoxColumns || lines <= 0) return false;
  if (reinterpret_cast<uintptr_t>(args.out) % 16 != 0) return false;
  const int64_t boxes = (depth + K::kBoxColumns - 1) / K::kBoxColumns;
  const int64_t chunks = (boxes + K::kChunkBoxes - 1) / K::kChunkBoxes;
  const int64_t tilesM = (args.m + K::kTileM - 1) / K::kTileM;
  const int64_t groupLines =
      xResidentGroupLines(args.m, lines, K::kConsumers, numSms, 0, int64_t{K::kConsumers} * K::kLines);
  const int64_t groups = (lines + groupLines - 1) / groupLines;
  if (tilesM * groups > INT32_MAX || boxes > INT32_MAX) return false;
  const XrWideLayout layout{static_cast<int32_t>(boxes), static_cast<int32_t>(chunks),
                            static_cast<int32_t>(groupLines), static_cast<int32_t>(groups)};

  CUtensorMap mapX, mapBlock;
  const int64_t valueRows = static_cast<int64_t>(args.nnzBlocks) * K::R;
  if (!encodeMap(&mapX, dtype, args.a, depth, args.m, K::kBoxColumns, K::kTileM) ||
      !encodeMap(&mapBlock, dtype, args.b, K::C, valueRows, K::C, K::R))
    return false;
  BS_CUDA_CHECK(cudaFuncSetAttribute(bsrXrWideKernel<K>, cudaFuncAttributeMaxDynamicSharedMemorySize, K::kSmemBytes));
  bsrXrWideKernel<K><<<static_cast<unsigned>(tilesM * groups), K::kThreads, K::kSmemBytes, stream>>>(
      mapX, mapBlock, args, layout);
  BS_LAUNCH_CHECK("bsrXrWideKernel");
  return true;
}

}  // namespace sm90

}  // namespace bs::tc
