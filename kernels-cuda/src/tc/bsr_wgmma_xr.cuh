// The X-resident wgmma tile (kXResidentTile, variant 6; docs/kernels.md, "X-resident bsrLinear and bsrMatmul"):
// bsrLinear and bsrMatmul with the dense operand resident in shared memory, dispatched at 32x32 (dispatch.cu's rule).
// For bsrLinear a CTA owns 64 tokens x a contiguous group of block rows. Its first producer warp loads the CTA's
// whole X slab [64 x K] once (TMA boxes of 64 tokens x 64 columns, 128-byte swizzle, one mbarrier per box); then 2-4
// consumer warpgroups take the group's block rows in turn (row i to consumer i mod c), each fed through its own ring
// of stages by its own producer warp, so that a consumer storing a row's outputs never holds up the W stream of the
// others. Each W element read from L2 then feeds 64 tokens and X is read once per CTA: ~64 FLOP per L2 byte at every
// block size, against T R / (T + R) for the tile kernels (25.6 for mma.sync's 128-token tile at 32x32).
// bsrMatmul (dX = dY W) is the same over block columns: the slab is dY [64 x N], a column's blocks come through the
// column-wise index (one copy per block, fed transposed: MN-major B).
// The kernel and launcher templates: instantiated by bsr_wgmma_xr.cu for the addon with XrTraits' defaults, and by
// kernels-cuda/dev/ with direct stores and other line groupings, for measurement (dev_variants.h, 21, 22, 25, 26). Two
// accumulator chains per line, each line's bias requested a line ahead and stores deferred to the next line's first
// stage were options here too, measured on an H200 and removed (tc-xr.md, "Staged stores and one wave").
#pragma once

#include <type_traits>

#include "bsr_wgmma.cuh"

namespace bs::tc {

namespace sm90 {

// What the producer tells a consumer about one stage, written before the stage's full barrier arrives.
// 16-byte aligned so that a consumer reads it in one or two shared-memory loads.
template <int kStageBlocks>
struct alignas(16) XrStage {
  uint32_t slabOffset[kStageBlocks];  // byte offset in the slab of the first column each block multiplies
  // W blocks in the stage (0 for an empty line: its outputs are the bias alone, or zeros), plus kLast when
  // the stage ends its line.
  int32_t info;
  static constexpr int32_t kLast = 1 << 16;
};

template <typename T_, Op kOp_, int kBlock_, bool kStagedStores_ = (kBlock_ == 32)>
struct XrTraits {
  using T = T_;
  // Each consumer computes one m64 tile of tokens x one block row (Linear) or column (Matmul) at a time. A "line"
  // below is that row or column.
  static constexpr Op kOp = kOp_;
  static constexpr int R = kBlock_, C = kBlock_;
  static constexpr int kTileM = kXResidentTileTokens;  // tokens per CTA: the M of one wgmma
  static constexpr int kTileN = R;
  using Acc = float[kTileN / 2];
  // Each warp's 16 output rows staged in the line's last stage slot and written as 16-byte stores (a row's 64 bytes by
  // four lanes) instead of 4-byte stores from the accumulators' layout; the slot is freed after. 32x32 only (64 rows
  // of 80 bytes, padded so that the staging writes hit every bank once, fit a stage): the addon's default there, 0.86-1.01
  // of the direct stores' time on an H200 (tc-xr.md); kernels-cuda/dev/ keeps those (kXResidentDirectStoresVariant).
  // The launcher declines an output that is not 16-byte aligned.
  static constexpr bool kStagedStores = kStagedStores_;
  static constexpr int kStagingPitch = kTileN * 2 + 16;
  // Consumer warpgroups, lines dealt in turn: chosen per launch (XrLayout::consumers) from the room the slab
  // leaves for their rings; warp w of the producer warpgroup feeds consumer w's ring.
  static constexpr int kMinConsumers = 2, kMaxConsumers = 4;
  static constexpr int kThreads = 128 * (kMaxConsumers + 1);
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
  static constexpr int kMinStages = 2, kMaxStages = 8;    // per consumer ring; fewer than 2 would serialize
  // Blocks per wgmma commit group where a stage has them: 4 wgmmas of k16 per group at both sizes, as the
  // tile kernels' steps, so that the one group left in flight while the next is issued covers its latency.
  static constexpr int kGroupBlocks = cmin(kStageBlocks, 64 / C);
  static_assert(kStageBlocks % kGroupBlocks == 0, "a stage is whole commit groups");
  using Stage = XrStage<kStageBlocks>;

  // Dynamic shared memory: alignment slack, then the fixed part (barriers, stage records) padded to 2 KB
  // so the slab and the rings start 1 KB-aligned (the 128-byte swizzle's period).
  static constexpr int kSmemLimit = 227 * 1024;
  static constexpr int kAlignSlack = 1024;
  static constexpr int kFixedBytes = 2048;
  static constexpr int kMaxBoxes =
      (kSmemLimit - kAlignSlack - kFixedBytes - kMinConsumers * kMinStages * kStageBytes) / kBoxBytes;
  static constexpr int kRingSlots = kMaxConsumers * kMaxStages;
  static constexpr int kBarrierBytes = (kMaxBoxes + 2 * kRingSlots) * 8;

  static_assert(kOp != Op::Sampled, "dW reduces over tokens: no slab to keep");
  static_assert(kTileM == 64, "one m64 wgmma per line step: four warps of 16 rows");
  static_assert(kBlock_ == 32 || kBlock_ == 64, "one wgmma N per block line; 128 would need a 64 KB ring minimum");
  static_assert(!kStagedStores || kTileM * kStagingPitch <= kStageBytes, "a line's outputs stage in one slot");
  static_assert(kStageBlocks >= 1 && kStageBytes % 1024 == 0, "stages keep the slots 1 KB-aligned");
  static_assert(kMaxBoxes <= 32, "slab readiness is a 32-bit mask");
  static_assert(kBarrierBytes + kRingSlots * sizeof(Stage) <= kFixedBytes, "barriers and stage records fit");
};

// Run-time shape of one launch: slab boxes, consumers and stages per consumer ring, the line groups.
struct XrLayout {
  int32_t boxes;       // ceil(slab width / 64): K for Linear, N for Matmul
  int32_t consumers;   // kMinConsumers..kMaxConsumers; the CTA has 128 (consumers + 1) threads
  int32_t stages;      // per consumer, kMinStages..kMaxStages
  int32_t groupLines;  // block rows (columns) per CTA
  int32_t groups;      // line groups; CTA b owns token tile b / groups, group b % groups
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

// Each ring slot's barriers: full (the producer's arrival and its copies' bytes), empty (one arrival per consumer warp).
// Shared by the X-resident tile and kernels-cuda/dev/'s wide-slab tile.
__device__ __forceinline__ void initRingBarriers(uint64_t* full, uint64_t* empty, int slots, int consumerWarps) {
  for (int s = 0; s < slots; ++s) {
    mbarrierInit(&full[s], 1);
    mbarrierInit(&empty[s], consumerWarps);
  }
}

// One commit group of an X-resident consumer: kCount blocks from `first` of the stage whose first block's descriptor is
// stageDescriptor, each against the slab (slabDescriptor: its first box) at record.slabOffset[j] (wgmma k16 steps: A the
// swizzled slab box, B the block K-major for Linear, MN-major for Matmul), into `acc`; fenced and issued straight-line
// (with a loop or a branch between the fence and a wgmma, ptxas injects fences, C7519, or serializes, C7520), then
// every group but this one waited for. Each descriptor is its base advanced by a byte offset (xrSlabDescriptor,
// xrStageDescriptor, advanceDescriptor): one add per wgmma operand. Shared by the X-resident tile and
// kernels-cuda/dev/'s wide-slab tile.
template <class K>
__device__ __forceinline__ uint64_t xrSlabDescriptor(uint32_t slabAddress) {
  return matrixDescriptor(slabAddress, 16, 8 * K::kRowBytesX, K::kSwizzleX);
}
template <class K>
__device__ __forceinline__ uint64_t xrStageDescriptor(uint32_t stageAddress) {
  return K::kBKMajor ? matrixDescriptor(stageAddress, 16, 8 * K::C * 2, K::kSwizzleW)
                     : matrixDescriptor(stageAddress, K::kBlockBytes, 8 * K::C * 2, K::kSwizzleW);
}
template <class K, int kCount, int kAcc, class Record>
__device__ __forceinline__ void xrIssueGroup(float (&acc)[kAcc], uint64_t slabDescriptor, const Record& record,
                                             uint64_t stageDescriptor, int first) {
  fenceRegisters(acc);
  wgmmaFence();
#pragma unroll
  for (int j = first; j < first + kCount; ++j) {
    const uint64_t blockA = advanceDescriptor(slabDescriptor, record.slabOffset[j]);
#pragma unroll
    for (int kk = 0; kk < K::C / 16; ++kk) {
      const uint64_t descA = advanceDescriptor(blockA, kk * 32);
      const uint64_t descB = advanceDescriptor(
          stageDescriptor, j * K::kBlockBytes + (K::kBKMajor ? kk * 32 : kk * 16 * K::C * 2));
      Wgmma<typename K::T, K::kTileN, 0, K::kBKMajor ? 0 : 1>::run(acc, descA, descB);
    }
  }
  wgmmaCommit();
  fenceRegisters(acc);
  wgmmaWait<1>();
}

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
    initRingBarriers(full, empty, K::kRingSlots, K::kConsumerWarps);
    fenceBarrierInit();
  }
  __syncthreads();
  // Launched to overlap the kernel before (launchOverlapped): its set-up above, nothing global before it has ended.
  allowDependentLaunch();
  waitForPrimary();

  const int warpGroup = warpGroupOf(tid);  // warp-uniform to ptxas: descriptors in uniform registers
  const int lane = tid % 32;
  if (warpGroup == 0) {
    // Producer warps: warp w streams the blocks of lines w, w + c, w + 2c, ... (c consumers) into consumer w's
    // ring. Warp 0 first issues the slab's copies. The work of a stage is spread over the lanes: lane l holds
    // entry l of the line's current 32 (its slab column and stored block, read in one coalesced load, the next
    // line's already requested), writes its block's record entry and issues its block's copy. A first version
    // had lane 0 do all of it with the entries fetched by shuffles: ~330 instructions a stage, so that the
    // consumers waited on their rings for a quarter of the time (Nsight Compute, tc-xr.md).
    const int warp = tid / 32;
    if (warp >= layout.consumers) return;
    if (warp == 0 && lane == 0) {
      for (int b = 0; b < layout.boxes; ++b) {
        mbarrierArriveExpectTx(&slabFull[b], K::kBoxBytes);
        tmaLoad2d(slab + b * K::kBoxBytes, &mapX, b * K::kBoxColumns, tokenBase, &slabFull[b]);
      }
    }
    const int32_t* ptr = K::kOp == Op::Linear ? args.blockRowPtr : args.blockColPtr;
    const int32_t* slabIndex = K::kOp == Op::Linear ? args.blockColIdx : args.blockRowIdx;
    const int consumer = warp;
    const int firstLine = lineFirst + warp;
    const int myLines = firstLine < lineEnd ? (lineEnd - firstLine + layout.consumers - 1) / layout.consumers : 0;
    // Lane l: the bounds of this warp's line i0 + l, 32 lines at a time.
    int32_t laneBegin = 0, laneEnd = 0;
    auto loadBounds = [&](int i0) {
      const int i = i0 + lane;
      if (i < myLines) {
        const int line = firstLine + i * layout.consumers;
        laneBegin = ptr[line];
        laneEnd = ptr[line + 1];
      }
    };
    // Lane l: entry first + l of a line ending at `end`: the slab column its block multiplies and the block's
    // row in values (Linear: the entry itself, a row's blocks being consecutive in values).
    auto loadEntry = [&](int32_t first, int32_t end, int32_t& column, int32_t& value) {
      const int32_t e = first + lane;
      column = e < end ? slabIndex[e] : 0;
      value = e;
      if constexpr (K::kOp == Op::Matmul) value = e < end ? args.valueIndex[e] : 0;
    };
    loadBounds(0);
    int32_t begin = __shfl_sync(0xffffffffu, laneBegin, 0), end = __shfl_sync(0xffffffffu, laneEnd, 0);
    int32_t column, value;
    loadEntry(begin, end, column, value);
    RingCursor mine;
    for (int i = 0; i < myLines; ++i) {
      int32_t nextBegin = 0, nextEnd = 0, nextColumn, nextValue;
      if (i + 1 < myLines) {
        if ((i + 1) % 32 == 0) loadBounds(i + 1);
        nextBegin = __shfl_sync(0xffffffffu, laneBegin, (i + 1) % 32);
        nextEnd = __shfl_sync(0xffffffffu, laneEnd, (i + 1) % 32);
      }
      loadEntry(nextBegin, nextEnd, nextColumn, nextValue);  // requested now, used by the next line
      int32_t chunk = begin;
      do {
        const int32_t slabColumn = column * (K::kOp == Op::Linear ? K::C : K::R);
        const uint32_t offset = (slabColumn / K::kBoxColumns) * K::kBoxBytes + (slabColumn % K::kBoxColumns) * 2;
        const int32_t valueRow = value * K::R;
        const int32_t chunkEnd = min(end, chunk + 32);
        int32_t first = chunk;
        do {  // one stage (an empty line: one stage with no blocks)
          const int32_t blocks = min(K::kStageBlocks, chunkEnd - first);
          const int ringSlot = consumer * K::kMaxStages + mine.slot;
          if (mine.wrapped) mbarrierWait(&empty[ringSlot], mine.phase ^ 1);
          Stage& record = records[ringSlot];
          const int j = chunk + lane - first;  // this lane's block in the stage
          const bool own = j >= 0 && j < blocks;
          if (own) record.slabOffset[j] = offset;
          if (lane == 0) record.info = blocks | (first + blocks >= end ? Stage::kLast : 0);
          __syncwarp();  // the lanes' record entries before lane 0's arrival releases them
          uint64_t* bar = &full[ringSlot];
          if (lane == 0) {
            if (blocks == 0) {
              mbarrierArrive(bar);  // an empty line: the record alone
            } else {
              mbarrierArriveExpectTx(bar, blocks * K::kBlockBytes);
            }
          }
          __syncwarp();
          uint8_t* stage = rings + (consumer * layout.stages + mine.slot) * K::kStageBytes;
          if (K::kOp == Op::Linear && blocks == K::kStageBlocks) {
            if (j == 0) tmaLoad2d(stage, &mapStage, 0, valueRow, bar);  // the stage's blocks are consecutive
          } else if (own) {
            tmaLoad2d(stage + j * K::kBlockBytes, &mapBlock, 0, valueRow, bar);
          }
          first += blocks;
          mine.advance(layout.stages);
        } while (first < chunkEnd);
        chunk = chunkEnd;
        if (chunk < end) loadEntry(chunk, end, column, value);  // a line of more than 32 blocks
      } while (chunk < end);
      begin = nextBegin;
      end = nextEnd;
      column = nextColumn;
      value = nextValue;
    }
    return;
  }

  // Consumers: warpgroup 1 + i takes the group's lines i, i + c, i + 2c, ...
  using T = typename K::T;
  const int consumer = warpGroup - 1;
  const int warpInGroup = (tid % 128) / 32;
  const uint64_t slabDescriptor = xrSlabDescriptor<K>(smemAddress(slab));
  const uint32_t ringAddress = smemAddress(rings) + consumer * layout.stages * K::kStageBytes;
  typename K::Acc acc;
  zeroAccumulators(acc);
  uint32_t boxesReady = 0;
  const uint32_t allBoxes = layout.boxes == 32 ? ~0u : (1u << layout.boxes) - 1;
  RingCursor ring;
  int pending = -1;  // the ring slot whose products may still be running
  const int g = lane >> 2, c2 = (lane & 3) * 2;  // this thread's rows 16 warpInGroup + g (+ 8), columns 8j + c2 (+ 1)
  // Bias words of a line for this thread's columns (Linear with a bias; zeros otherwise).
  uint32_t biasWords[K::kTileN / 8];
  auto requestBias = [&](int line) {
#pragma unroll
    for (int j = 0; j < K::kTileN / 8; ++j) {
      biasWords[j] = 0;
      if (K::kOp == Op::Linear && args.bias)
        biasWords[j] =
            *reinterpret_cast<const uint32_t*>(static_cast<const T*>(args.bias) + int64_t{line} * K::R + j * 8 + c2);
    }
  };
  // Matmul with the activation's backward fused (args.pre, staged stores only): the pre-activation Z of the two
  // 16-byte chunks this lane stores (rows lane / 4 and + 8 of its warp's 16, columns 8 (lane % 4) of the line's C).
  const bool grad = K::kOp == Op::Matmul && K::kStagedStores && args.pre != nullptr;
  uint4 preWords[2] = {};
  auto requestPre = [&](int line) {
#pragma unroll
    for (int pass = 0; pass < 2; ++pass) {
      const int64_t token = tokenBase + warpInGroup * 16 + lane / 4 + pass * 8;
      if (grad && token < args.m)
        preWords[pass] = *reinterpret_cast<const uint4*>(static_cast<const T*>(args.pre) + token * args.cols +
                                                         int64_t{line} * K::kTileN + (lane % 4) * 8);
    }
  };
  // One line: its stages' products, then its outputs.
  auto runLine = [&](int line) {
    // The line's bias (Linear) and Z (the fused activation backward), requested now so that their latency passes
    // during the products (the bias waited on in the epilogue took a fifth of the kernel's time: Nsight Compute,
    // tc-xr.md; a line ahead measured no faster).
    requestBias(line);
    requestPre(line);
    for (;;) {
      const int ringSlot = consumer * K::kMaxStages + ring.slot;
      mbarrierWait(&full[ringSlot], ring.phase);
      const Stage record = records[ringSlot];
      // Read through lane 0 so that ptxas knows them warp-uniform: a wgmma loop bound it cannot prove
      // uniform serializes every wgmma of the kernel (C7520).
      const int info = __shfl_sync(0xffffffffu, record.info, 0);
      const int blocks = info & (Stage::kLast - 1);
      const bool last = (info & Stage::kLast) != 0;
      if (boxesReady != allBoxes) {
#pragma unroll
        for (int j = 0; j < K::kStageBlocks; ++j) {
          const uint32_t box = record.slabOffset[j] / K::kBoxBytes;
          if (j < blocks && !((boxesReady >> box) & 1u)) {
            mbarrierWait(&slabFull[box], 0);
            boxesReady |= 1u << box;
          }
        }
      }
      const uint64_t stageDescriptor = xrStageDescriptor<K>(ringAddress + ring.slot * K::kStageBytes);
      // kGroupBlocks blocks per commit group, then one at a time for the rest, each group fenced and
      // issued straight-line as the tile kernels' steps are: with a loop or a branch between the fence and
      // a wgmma, ptxas injects fences (C7519) or serializes (C7520).
      auto issue = [&](auto count, int first) {
        xrIssueGroup<K, decltype(count)::value>(acc, slabDescriptor, record, stageDescriptor, first);
        // Every group but this one is done: the previous stage, if still held, is free.
        if (pending >= 0) {
          if (lane == 0) mbarrierArrive(&empty[pending]);
          pending = -1;
        }
      };
      // Unrolled over the stage's slots, so that the record's entries stay in registers.
#pragma unroll
      for (int j0 = 0; j0 < K::kStageBlocks; j0 += K::kGroupBlocks) {
        if (j0 + K::kGroupBlocks <= blocks) {
          issue(std::integral_constant<int, K::kGroupBlocks>{}, j0);
        } else {
#pragma unroll
          for (int j = j0; j < j0 + K::kGroupBlocks; ++j)
            if (j < blocks) issue(std::integral_constant<int, 1>{}, j);
        }
      }
      if (blocks > 0 || K::kStagedStores) {  // kStagedStores: an empty line's stage holds its outputs too
        pending = ringSlot;
      } else if (lane == 0) {
        mbarrierArrive(&empty[ringSlot]);  // an empty line's stage: nothing reads it
      }
      ring.advance(layout.stages);
      if (last) break;
    }
    wgmmaWait<0>();
    fenceRegisters(acc);
    // The output pair of this thread's row 16 warpInGroup + g + 8 half, columns 8 j + c2 and + 1, plus the bias.
    auto outputPair = [&](int half, int j) {
      float v0 = acc[4 * j + half * 2], v1 = acc[4 * j + half * 2 + 1];
      if (K::kOp == Op::Linear && args.bias) {
        const float2 bias = unpackPair<T>(biasWords[j]);
        v0 += bias.x;
        v1 += bias.y;
      }
      return packPair<T>(v0, v1);
    };
    [[maybe_unused]] const int64_t width = K::kOp == Op::Linear ? args.rows : args.cols;
    if constexpr (K::kStagedStores) {
      // Each warp stages its 16 rows in the line's last stage slot, whose blocks every product has read, then
      // writes each row's 64 bytes as four 16-byte stores, and frees the slot.
      uint8_t* staging = rings + (consumer * layout.stages + pending - consumer * K::kMaxStages) * K::kStageBytes +
                         warpInGroup * 16 * K::kStagingPitch;
#pragma unroll
      for (int half = 0; half < 2; ++half)
#pragma unroll
        for (int j = 0; j < K::kTileN / 8; ++j)
          *reinterpret_cast<uint32_t*>(staging + (g + half * 8) * K::kStagingPitch + j * 16 + c2 * 2) =
              outputPair(half, j);
      __syncwarp();
      // Linear with args.activated also writes activation(Z) from Z as stored; Matmul with args.pre writes
      // dZ = dX act'(Z) in place of dX and one row of column sums of dZ per warp and token tile (storeGrad).
      T* activated = K::kOp == Op::Linear && args.activated ? static_cast<T*>(args.activated) : nullptr;
      float sums[8] = {};
      auto storeGrad = [&](auto act) {
#pragma unroll
        for (int pass = 0; pass < 2; ++pass) {
          const int row = lane / 4 + pass * 8, chunk = lane % 4;
          const uint4 words = *reinterpret_cast<const uint4*>(staging + row * K::kStagingPitch + chunk * 16);
          const int64_t token = tokenBase + warpInGroup * 16 + row;
          if (token < args.m)
            *reinterpret_cast<uint4*>(static_cast<T*>(args.out) + token * width + int64_t{line} * K::kTileN +
                                      chunk * 8) = activationGradChunk<T, decltype(act)::value>(words, preWords[pass], sums);
        }
      };
      if (grad) {
        switch (args.activation) {
          case Activation::Relu: storeGrad(std::integral_constant<Activation, Activation::Relu>{}); break;
          case Activation::Gelu: storeGrad(std::integral_constant<Activation, Activation::Gelu>{}); break;
          default: storeGrad(std::integral_constant<Activation, Activation::GeluTanh>{}); break;
        }
      } else {
#pragma unroll
        for (int pass = 0; pass < 2; ++pass) {
          const int row = lane / 4 + pass * 8, chunk = lane % 4;
          const uint4 words = *reinterpret_cast<const uint4*>(staging + row * K::kStagingPitch + chunk * 16);
          const int64_t token = tokenBase + warpInGroup * 16 + row;
          if (token >= args.m) continue;
          const int64_t at = token * width + int64_t{line} * K::kTileN + chunk * 8;
          *reinterpret_cast<uint4*>(static_cast<T*>(args.out) + at) = words;
          if (activated) *reinterpret_cast<uint4*>(activated + at) = StagedTile<T, K::kTileN>::activateChunk(words, args.activation);
        }
      }
      fenceProxyAsync();  // the copy engine writes the slot next
      __syncwarp();
      if (lane == 0) mbarrierArrive(&empty[pending]);
      pending = -1;
      if (grad) {
        // The lanes of one chunk (lane % 4) add their rows' sums, in a fixed order; lanes 0-3 write this warp's row
        // (token tile x 4 + warp, as wgmmaStoreRows counts them: kTileM rows per store call, four warps).
#pragma unroll
        for (int o = 4; o < 32; o <<= 1)
#pragma unroll
          for (int k = 0; k < 8; ++k) sums[k] += __shfl_xor_sync(0xffffffffu, sums[k], o);
        if (lane < 4) {
          const int64_t partialRow = int64_t{tileM} * 4 + warpInGroup;
          float4* dst = reinterpret_cast<float4*>(args.columnPartials + partialRow * args.cols +
                                                  int64_t{line} * K::kTileN + lane * 8);
          dst[0] = make_float4(sums[0], sums[1], sums[2], sums[3]);
          dst[1] = make_float4(sums[4], sums[5], sums[6], sums[7]);
        }
      }
    } else {
      if (pending >= 0) {
        if (lane == 0) mbarrierArrive(&empty[pending]);
        pending = -1;
      }
      // This consumer's 64 x R outputs from its accumulators: two adjacent columns per store.
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int64_t token = tokenBase + warpInGroup * 16 + g + half * 8;
        if (token >= args.m) continue;
        T* out = static_cast<T*>(args.out) + token * width + int64_t{line} * K::kTileN + c2;
#pragma unroll
        for (int j = 0; j < K::kTileN / 8; ++j) *reinterpret_cast<uint32_t*>(out + j * 8) = outputPair(half, j);
      }
    }
    zeroAccumulators(acc);
  };
  for (int line = lineFirst + consumer; line < lineEnd; line += layout.consumers) runLine(line);
  // Every slab copy must land before the CTA exits, including boxes no block of this consumer read.
  for (int b = 0; b < layout.boxes; ++b)
    if (!((boxesReady >> b) & 1u)) mbarrierWait(&slabFull[b], 0);
#endif
}

// Stages per consumer ring worth trading a consumer for (launchXr).
constexpr int kXrPreferredStages = 3;

// ctasPerSm: 0 groups the lines by xResidentGroupLines' wave model (the addon); more, by that many CTAs per SM
// (kernels-cuda/dev/, for measurement).
template <class K>
bool launchXr(DType dtype, const KernelArgs& argsIn, int numSms, cudaStream_t stream, int ctasPerSm = 0) {
  KernelArgs args = argsIn;
  const int64_t depth = K::kOp == Op::Linear ? args.cols : args.rows;  // the slab's width
  const int64_t lines = K::kOp == Op::Linear ? args.blockRows : args.blockCols;
  if (numSms <= 0 || depth < K::kBoxColumns || lines <= 0) return false;
  // Staged outputs leave as 16-byte stores: rows of R x 2 bytes from a 16-byte aligned output.
  if (K::kStagedStores && reinterpret_cast<uintptr_t>(args.out) % 16 != 0) return false;
  // A fused activation (Linear: args.activated) or activation backward (Matmul: args.pre, with its column partials)
  // rides on the staged stores alone, from 16-byte aligned buffers.
  const bool fused = (K::kOp == Op::Linear && args.activated) || (K::kOp == Op::Matmul && args.pre);
  if (fused && (!K::kStagedStores || (reinterpret_cast<uintptr_t>(args.activated) | reinterpret_cast<uintptr_t>(args.pre)) % 16 != 0 ||
                (K::kOp == Op::Matmul && args.columnPartials == nullptr)))
    return false;
  const int64_t boxes = (depth + K::kBoxColumns - 1) / K::kBoxColumns;
  if (boxes > K::kMaxBoxes) return false;  // the slab does not fit: K (N for Matmul) above 1536
  const int64_t fixed = K::kAlignSlack + K::kFixedBytes + boxes * K::kBoxBytes;
  // The most consumers whose rings still get kXrPreferredStages each (at least the minimum): on an H200, four
  // consumers of three stages ran 1.3-1.6x faster than two of six at 32x32 (tc-xr.md).
  const int64_t slots = (K::kSmemLimit - fixed) / K::kStageBytes;
  int64_t consumers = K::kMinConsumers;
  for (int64_t c = K::kMaxConsumers; c > K::kMinConsumers; --c)
    if (slots / c >= kXrPreferredStages) {
      consumers = c;
      break;
    }
  const int64_t stages = std::min<int64_t>(K::kMaxStages, slots / consumers);
  if (stages < K::kMinStages) return false;
  const int64_t smemBytes = fixed + stages * consumers * K::kStageBytes;

  const int64_t tilesM = (args.m + K::kTileM - 1) / K::kTileM;
  const int64_t groupLines = xResidentGroupLines(args.m, lines, static_cast<int>(consumers), numSms, ctasPerSm);
  const int64_t groups = (lines + groupLines - 1) / groupLines;
  if (tilesM * groups > INT32_MAX) return false;
  const XrLayout layout{static_cast<int32_t>(boxes), static_cast<int32_t>(consumers), static_cast<int32_t>(stages),
                        static_cast<int32_t>(groupLines), static_cast<int32_t>(groups)};

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
  launchOverlapped("launch of bsrXrKernel", bsrXrKernel<K>, dim3(static_cast<unsigned>(tilesM * groups)),
                   dim3(static_cast<unsigned>(128 * (consumers + 1))), static_cast<size_t>(smemBytes), stream, mapX,
                   mapStage, mapBlock, args, layout);
  return true;
}

}  // namespace sm90

}  // namespace bs::tc
