// wgmma variant 6, kept for measurement: bsrLinear and bsrMatmul with the dense operand resident in shared
// memory ("X-resident", docs/kernels.md). For bsrLinear a CTA owns 64 tokens x a contiguous group of block
// rows. Its producer loads the CTA's whole X slab [64 x K] once (TMA boxes of 64 tokens x 64 columns,
// 128-byte swizzle, one mbarrier per box), then streams the group's W blocks in storage order through two
// rings of stages, one per consumer warpgroup; the consumers take alternate block rows, so one stores a
// row's outputs while the other computes. Each W element read from L2 then feeds 64 tokens and X is read
// once per CTA: ~64 FLOP per L2 byte at every block size, against T R / (T + R) for the tile kernels.
// bsrMatmul (dX = dY W) is the same over block columns: the slab is dY [64 x N], a column's blocks come
// through the column-wise index (one copy per block, fed transposed: MN-major B).
#include "dev_variants.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "tc/bsr_wgmma.cuh"

namespace bs::tc {

namespace sm90 {

// What the producer tells a consumer about one stage, written before the stage's full barrier arrives.
template <int kStageBlocks>
struct XrStage {
  int32_t blocks;  // W blocks in the stage: 0 for an empty line (its outputs are the bias alone, or zeros)
  int32_t last;    // the stage ends its line
  uint32_t slabOffset[kStageBlocks];  // byte offset in the slab of the first column each block multiplies
};

template <typename T_, Op kOp_, int kBlock_>
struct XrTraits {
  using T = T_;
  // storeTile's view of the tile: one m64 tile of tokens x one block row (Linear) or column (Matmul) per
  // consumer. A "line" below is that row or column.
  static constexpr Op kOp = kOp_;
  static constexpr int R = kBlock_, C = kBlock_;
  static constexpr int kTileM = 64;  // tokens per CTA: the M of one wgmma
  static constexpr int kTileN = R;
  static constexpr int kMmaM = 1;
  static constexpr bool kFeatureMajor = false;
  using Acc = float[kMmaM][kTileN / 2];
  static constexpr int kConsumers = 2;  // consumer warpgroups, alternate lines
  static constexpr int kThreads = 128 * (kConsumers + 1);
  static constexpr int kConsumerWarps = 4;  // arrivals on a stage's empty barrier

  // The slab: boxes of 64 tokens x 64 columns, 128-byte rows with the 128-byte swizzle; a 32-column block
  // starts half-way into a box row.
  static constexpr int kBoxColumns = 64;
  static constexpr int kBoxBytes = kTileM * kBoxColumns * 2;
  static constexpr uint32_t kSwizzleX = 1;  // descriptor code: 128B
  static constexpr uint32_t kRowBytesX = kBoxColumns * 2;

  // W stages: 8 KB, whole blocks of one line (4 of 32x32, 1 of 64x64), rows C elements wide: K-major for
  // Linear (W's rows are Y's features), MN-major for Matmul (W's columns are dX's).
  static constexpr bool kBKMajor = kOp == Op::Linear;
  static constexpr int kBlockBytes = R * C * 2;
  static constexpr int kStageTargetBytes = 8192;
  static constexpr int kStageBlocks = kStageTargetBytes / kBlockBytes;
  static constexpr int kStageBytes = kStageBlocks * kBlockBytes;
  static constexpr uint32_t kSwizzleW = C == 64 ? 1 : 2;  // 128B or 64B, as wide as a block's row
  static constexpr int kMinStages = 2, kMaxStages = 4;    // per consumer ring; fewer than 2 would serialize
  // Blocks per wgmma commit group where a stage has them: 4 wgmmas of k16 per group at both sizes, as the
  // tile kernels' steps, so that the one group left in flight while the next is issued covers its latency.
  static constexpr int kGroupBlocks = cmin(kStageBlocks, 64 / C);
  using Stage = XrStage<kStageBlocks>;

  // Dynamic shared memory: alignment slack, then the fixed part (barriers, stage records) padded to 1 KB
  // so the slab and the rings start 1 KB-aligned (the 128-byte swizzle's period).
  static constexpr int kSmemLimit = 227 * 1024;
  static constexpr int kAlignSlack = 1024;
  static constexpr int kFixedBytes = 1024;
  static constexpr int kMaxBoxes =
      (kSmemLimit - kAlignSlack - kFixedBytes - kConsumers * kMinStages * kStageBytes) / kBoxBytes;
  static constexpr int kRingSlots = kConsumers * kMaxStages;
  static constexpr int kBarrierBytes = (kMaxBoxes + 2 * kRingSlots) * 8;

  static_assert(kOp != Op::Sampled, "dW reduces over tokens: no slab to keep");
  static_assert(kBlock_ == 32 || kBlock_ == 64, "one wgmma N per block line; 128 would need a 64 KB ring minimum");
  static_assert(kStageBlocks >= 1 && kStageBytes % 1024 == 0, "stages keep the slots 1 KB-aligned");
  static_assert(kMaxBoxes <= 32, "slab readiness is a 32-bit mask");
  static_assert(kBarrierBytes + kRingSlots * sizeof(Stage) <= kFixedBytes, "barriers and stage records fit");
};

// Run-time shape of one launch: slab boxes, stages per consumer ring, the line groups.
struct XrLayout {
  int32_t boxes;       // ceil(slab width / 64): K for Linear, N for Matmul
  int32_t stages;      // per consumer, kMinStages..kMaxStages
  int32_t groupLines;  // block rows (columns) per CTA
  int32_t groups;      // line groups; CTA b owns token tile b / groups, group b % groups
};

// 32 consecutive int32 values of an index array, one per lane, with the next 32 already requested, read
// at non-decreasing positions by the whole warp alike: one global latency per 32 entries, overlapped.
struct WarpWindow {
  const int32_t* data;
  int32_t end, base, mine, next;
  __device__ __forceinline__ void start(const int32_t* from, int32_t first, int32_t stop, int lane) {
    data = from;
    end = stop;
    base = first;
    mine = first + lane < stop ? from[first + lane] : 0;
    next = first + 32 + lane < stop ? from[first + 32 + lane] : 0;
  }
  __device__ __forceinline__ int32_t at(int32_t position, int lane) {
    while (position >= base + 32) {
      base += 32;
      mine = next;
      next = base + 32 + lane < end ? data[base + 32 + lane] : 0;
    }
    return __shfl_sync(0xffffffffu, mine, position - base);
  }
};

// One consumer's ring position: the slot and the parity of the phase that fills it this round.
struct RingCursor {
  int32_t slot = 0;
  uint32_t phase = 0;
  bool wrapped = false;  // a full round issued: the producer waits for a slot to be emptied first
  __device__ __forceinline__ void advance(int stages) {
    if (++slot == stages) {
      slot = 0;
      phase ^= 1;
      wrapped = true;
    }
  }
};

template <class K>
__global__ void __launch_bounds__(K::kThreads, 1)
    bsrXrKernel(const __grid_constant__ CUtensorMap mapX, const __grid_constant__ CUtensorMap mapStage,
                const __grid_constant__ CUtensorMap mapBlock, const KernelArgs args, const XrLayout layout) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Stage = typename K::Stage;
  extern __shared__ uint8_t smemRaw[];
  // Aligned by pointer arithmetic on the shared array itself, so accesses stay shared-memory instructions.
  uint8_t* smem = smemRaw + ((1024 - (smemAddress(smemRaw) & 1023)) & 1023);
  uint64_t* slabFull = reinterpret_cast<uint64_t*>(smem);
  uint64_t* full = slabFull + K::kMaxBoxes;  // [consumer][stage]
  uint64_t* empty = full + K::kRingSlots;
  Stage* records = reinterpret_cast<Stage*>(empty + K::kRingSlots);
  uint8_t* slab = smem + K::kFixedBytes;
  uint8_t* rings = slab + layout.boxes * K::kBoxBytes;  // [consumer][stage] of kStageBytes
  const int tid = threadIdx.x;

  const int tileM = static_cast<int>(blockIdx.x / layout.groups);
  const int group = static_cast<int>(blockIdx.x % layout.groups);
  const int lines = K::kOp == Op::Linear ? args.blockRows : args.blockCols;
  const int lineFirst = group * layout.groupLines;
  const int lineEnd = min(lines, lineFirst + layout.groupLines);
  const int32_t tokenBase = tileM * K::kTileM;

  if (tid == 0) {
    prefetchTensorMap(&mapX);
    prefetchTensorMap(&mapStage);
    prefetchTensorMap(&mapBlock);
    for (int b = 0; b < layout.boxes; ++b) mbarrierInit(&slabFull[b], 1);
    for (int s = 0; s < K::kRingSlots; ++s) {
      mbarrierInit(&full[s], 1);
      mbarrierInit(&empty[s], K::kConsumerWarps);
    }
    fenceBarrierInit();
  }
  __syncthreads();

  const int warpGroup = tid / 128;
  const int lane = tid % 32;
  if (warpGroup == 0) {
    if (tid >= 32) return;
    // Producer warp: lane 0 issues every copy; all lanes read the pattern's indices (WarpWindow).
    if (lane == 0) {
      for (int b = 0; b < layout.boxes; ++b) {
        mbarrierArriveExpectTx(&slabFull[b], K::kBoxBytes);
        tmaLoad2d(slab + b * K::kBoxBytes, &mapX, b * K::kBoxColumns, tokenBase, &slabFull[b]);
      }
    }
    // Per entry of the group's lines in index order: the slab column its block multiplies and where the
    // block is stored (Linear: the entry itself, a row's blocks being consecutive in values).
    const int32_t* ptr = K::kOp == Op::Linear ? args.blockRowPtr : args.blockColPtr;
    const int32_t* slabIndex = K::kOp == Op::Linear ? args.blockColIdx : args.blockRowIdx;
    const int32_t entryFirst = ptr[lineFirst], entryEnd = ptr[lineEnd];
    WarpWindow lineEnds, slabColumns, values;
    lineEnds.start(ptr, lineFirst + 1, lineEnd + 1, lane);
    slabColumns.start(slabIndex, entryFirst, entryEnd, lane);
    if constexpr (K::kOp == Op::Matmul) values.start(args.valueIndex, entryFirst, entryEnd, lane);
    RingCursor mine, other;  // the ring of this line's consumer, and of the next line's
    int32_t entry = entryFirst;
    for (int line = lineFirst; line < lineEnd; ++line) {
      const int consumer = (line - lineFirst) & 1;
      const int32_t end = lineEnds.at(line + 1, lane);
      do {
        const int32_t blocks = min(K::kStageBlocks, end - entry);
        const int ringSlot = consumer * K::kMaxStages + mine.slot;
        if (mine.wrapped) mbarrierWait(&empty[ringSlot], mine.phase ^ 1);
        uint32_t offsets[K::kStageBlocks];
        int32_t valueRows[K::kStageBlocks];
#pragma unroll
        for (int j = 0; j < K::kStageBlocks; ++j) {
          int32_t column = 0, value = 0;
          if (j < blocks) {
            column = slabColumns.at(entry + j, lane) * (K::kOp == Op::Linear ? K::C : K::R);
            value = entry + j;
            if constexpr (K::kOp == Op::Matmul) value = values.at(entry + j, lane);
          }
          offsets[j] = (column / K::kBoxColumns) * K::kBoxBytes + (column % K::kBoxColumns) * 2;
          valueRows[j] = value * K::R;
        }
        if (lane == 0) {
          Stage& record = records[ringSlot];
          record.blocks = blocks;
          record.last = entry + blocks >= end;
#pragma unroll
          for (int j = 0; j < K::kStageBlocks; ++j) record.slabOffset[j] = offsets[j];
          uint64_t* bar = &full[ringSlot];
          uint8_t* stage = rings + (consumer * layout.stages + mine.slot) * K::kStageBytes;
          if (blocks == 0) {
            mbarrierArrive(bar);  // an empty line: the record alone
          } else {
            mbarrierArriveExpectTx(bar, blocks * K::kBlockBytes);
            if (K::kOp == Op::Linear && blocks == K::kStageBlocks) {
              tmaLoad2d(stage, &mapStage, 0, valueRows[0], bar);
            } else {
#pragma unroll
              for (int j = 0; j < K::kStageBlocks; ++j)
                if (j < blocks) tmaLoad2d(stage + j * K::kBlockBytes, &mapBlock, 0, valueRows[j], bar);
            }
          }
        }
        __syncwarp();
        entry += blocks;
        mine.advance(layout.stages);
      } while (entry < end);
      const RingCursor next = other;
      other = mine;
      mine = next;
    }
    return;
  }

  // Consumers: warpgroup 1 takes the group's lines 0, 2, 4, ..., warpgroup 2 lines 1, 3, 5, ...
  using T = typename K::T;
  const int consumer = warpGroup - 1;
  const int warpInGroup = (tid % 128) / 32;
  const uint32_t slabAddress = smemAddress(slab);
  const uint32_t ringAddress = smemAddress(rings) + consumer * layout.stages * K::kStageBytes;
  typename K::Acc acc;
#pragma unroll
  for (int j = 0; j < K::kTileN / 2; ++j) acc[0][j] = 0.0f;
  uint32_t boxesReady = 0;
  RingCursor ring;
  int pending = -1;  // the ring slot whose products may still be running
  for (int line = lineFirst + consumer; line < lineEnd; line += K::kConsumers) {
    for (;;) {
      const int ringSlot = consumer * K::kMaxStages + ring.slot;
      mbarrierWait(&full[ringSlot], ring.phase);
      const Stage& record = records[ringSlot];
      // Read through lane 0 so that ptxas knows them warp-uniform: a wgmma loop bound it cannot prove
      // uniform serializes every wgmma of the kernel (C7520).
      const int blocks = __shfl_sync(0xffffffffu, record.blocks, 0);
      const bool last = __shfl_sync(0xffffffffu, record.last, 0) != 0;
      for (int j = 0; j < blocks; ++j) {
        const uint32_t box = record.slabOffset[j] / K::kBoxBytes;
        if (!((boxesReady >> box) & 1u)) {
          mbarrierWait(&slabFull[box], 0);
          boxesReady |= 1u << box;
        }
      }
      const uint32_t stageAddress = ringAddress + ring.slot * K::kStageBytes;
      // kGroupBlocks blocks per commit group, then one at a time for the rest, each group fenced and
      // issued straight-line as the tile kernels' steps are: with a loop or a branch between the fence and
      // a wgmma, ptxas injects fences (C7519) or serializes (C7520).
      auto issue = [&](auto count, int first) {
        fenceRegisters(acc[0]);
        wgmmaFence();
#pragma unroll
        for (int j = first; j < first + decltype(count)::value; ++j) {
          const uint32_t a = slabAddress + record.slabOffset[j], b = stageAddress + j * K::kBlockBytes;
#pragma unroll
          for (int kk = 0; kk < K::C / 16; ++kk) {
            const uint64_t descA = matrixDescriptor(a + kk * 32, 16, 8 * K::kRowBytesX, K::kSwizzleX);
            // B as the tile kernels read it: K-major rows of C, or MN-major with K = the block's rows.
            const uint64_t descB =
                K::kBKMajor ? matrixDescriptor(b + kk * 32, 16, 8 * K::C * 2, K::kSwizzleW)
                            : matrixDescriptor(b + kk * 16 * K::C * 2, K::kBlockBytes, 8 * K::C * 2, K::kSwizzleW);
            Wgmma<T, K::kTileN, 0, K::kBKMajor ? 0 : 1>::run(acc[0], descA, descB);
          }
        }
        wgmmaCommit();
        fenceRegisters(acc[0]);
        // Every group but this one is done: the previous stage, if still held, is free.
        wgmmaWait<1>();
        if (pending >= 0) {
          if (lane == 0) mbarrierArrive(&empty[pending]);
          pending = -1;
        }
      };
      int j = 0;
      for (; j + K::kGroupBlocks <= blocks; j += K::kGroupBlocks)
        issue(std::integral_constant<int, K::kGroupBlocks>{}, j);
      for (; j < blocks; ++j) issue(std::integral_constant<int, 1>{}, j);
      if (blocks > 0) {
        pending = ringSlot;
      } else if (lane == 0) {
        mbarrierArrive(&empty[ringSlot]);  // an empty line's stage: nothing reads it
      }
      ring.advance(layout.stages);
      if (last) break;
    }
    wgmmaWait<0>();
    fenceRegisters(acc[0]);
    if (pending >= 0) {
      if (lane == 0) mbarrierArrive(&empty[pending]);
      pending = -1;
    }
    TileWork work{};
    work.tokenBase = tokenBase;
    work.line = line;
    storeTile<K>(acc, args, work, nullptr, 0, lane, warpInGroup);
#pragma unroll
    for (int j = 0; j < K::kTileN / 2; ++j) acc[0][j] = 0.0f;
  }
  // Every slab copy must land before the CTA exits, including boxes no block of this consumer read.
  for (int b = 0; b < layout.boxes; ++b)
    if (!((boxesReady >> b) & 1u)) mbarrierWait(&slabFull[b], 0);
#endif
}

// Lines per CTA so that token tiles x groups gives about kXrCtasPerSm CTAs per SM; even when more than
// one, so both consumers get as many lines.
constexpr int kXrCtasPerSm = 2;

template <class K>
bool launchXr(DType dtype, const KernelArgs& argsIn, int numSms, cudaStream_t stream) {
  KernelArgs args = argsIn;
  const int64_t depth = K::kOp == Op::Linear ? args.cols : args.rows;  // the slab's width
  const int64_t lines = K::kOp == Op::Linear ? args.blockRows : args.blockCols;
  if (numSms <= 0 || depth < K::kBoxColumns || lines <= 0) return false;
  const int64_t boxes = (depth + K::kBoxColumns - 1) / K::kBoxColumns;
  if (boxes > K::kMaxBoxes) return false;  // the slab does not fit: K (N for Matmul) above 1536
  const int64_t fixed = K::kAlignSlack + K::kFixedBytes + boxes * K::kBoxBytes;
  const int64_t stages =
      std::min<int64_t>(K::kMaxStages, (K::kSmemLimit - fixed) / (K::kConsumers * K::kStageBytes));
  if (stages < K::kMinStages) return false;
  const int64_t smemBytes = fixed + stages * K::kConsumers * K::kStageBytes;

  const int64_t tilesM = (args.m + K::kTileM - 1) / K::kTileM;
  const int64_t wantedGroups = std::max<int64_t>(1, (int64_t{kXrCtasPerSm} * numSms + tilesM - 1) / tilesM);
  int64_t groupLines = (lines + wantedGroups - 1) / wantedGroups;
  if (groupLines > 1 && groupLines % 2 == 1) ++groupLines;
  const int64_t groups = (lines + groupLines - 1) / groupLines;
  if (tilesM * groups > INT32_MAX) return false;
  const XrLayout layout{static_cast<int32_t>(boxes), static_cast<int32_t>(stages),
                        static_cast<int32_t>(groupLines), static_cast<int32_t>(groups)};

  if (std::getenv("TC_BENCH_XR_LAYOUT")) {
    // What the launch chose, once per change (tc_bench repeats each problem), for reading timings.
    static XrLayout printed{};
    if (std::memcmp(&printed, &layout, sizeof layout) != 0) {
      printed = layout;
      std::printf("xr layout: %s R=%d M=%lld slab boxes %d, %d stages per ring, %d lines per CTA, %lld CTAs, %lld B smem\n",
                  K::kOp == Op::Linear ? "linear" : "matmul", K::R, static_cast<long long>(args.m), layout.boxes,
                  layout.stages, layout.groupLines, static_cast<long long>(tilesM * groups),
                  static_cast<long long>(smemBytes));
    }
  }
  CUtensorMap mapX, mapStage, mapBlock;
  const int64_t valueRows = static_cast<int64_t>(args.nnzBlocks) * K::R;
  if (!encodeMap(&mapX, dtype, args.a, depth, args.m, K::kBoxColumns, K::kTileM) ||
      !encodeMap(&mapBlock, dtype, args.b, K::C, valueRows, K::C, K::R))
    return false;
  // A whole-stage copy (Linear) needs a row of kStageBlocks blocks, so fewer stored blocks never use it.
  if (K::kOp == Op::Linear && args.nnzBlocks >= K::kStageBlocks) {
    if (!encodeMap(&mapStage, dtype, args.b, K::C, valueRows, K::C, K::kStageBlocks * K::R)) return false;
  } else {
    mapStage = mapBlock;
  }
  BS_CUDA_CHECK(cudaFuncSetAttribute(bsrXrKernel<K>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(smemBytes)));
  bsrXrKernel<K><<<static_cast<unsigned>(tilesM * groups), K::kThreads, static_cast<size_t>(smemBytes), stream>>>(
      mapX, mapStage, mapBlock, args, layout);
  BS_LAUNCH_CHECK("bsrXrKernel");
  return true;
}

template <typename T, Op kOp>
bool launchXrBlock(DType dtype, const KernelArgs& args, int blockSize, int numSms, cudaStream_t stream) {
  if (blockSize == 32) return launchXr<XrTraits<T, kOp, 32>>(dtype, args, numSms, stream);
  if (blockSize == 64) return launchXr<XrTraits<T, kOp, 64>>(dtype, args, numSms, stream);
  return false;
}

template <typename T>
bool launchXrTyped(Op op, DType dtype, const KernelArgs& args, int blockSize, int numSms, cudaStream_t stream) {
  if (op == Op::Linear) return launchXrBlock<T, Op::Linear>(dtype, args, blockSize, numSms, stream);
  if (op == Op::Matmul) return launchXrBlock<T, Op::Matmul>(dtype, args, blockSize, numSms, stream);
  return false;
}

}  // namespace sm90

bool launchXrVariant(Op op, DType dtype, const KernelArgs& args, int blockSize, int numSms, cudaStream_t stream) {
  if (dtype == DType::BFloat16) return sm90::launchXrTyped<__nv_bfloat16>(op, dtype, args, blockSize, numSms, stream);
  if (dtype == DType::Float16) return sm90::launchXrTyped<__half>(op, dtype, args, blockSize, numSms, stream);
  return false;
}

}  // namespace bs::tc
