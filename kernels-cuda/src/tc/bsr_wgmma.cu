// sm_90a path: wgmma with both operands in shared memory, staged by the bulk tensor copy engine (TMA)
// through a multi-stage mbarrier pipeline. One producer warpgroup issues the copies (one thread), two
// consumer warpgroups each own half of the tile's rows. The gather through the pattern is just the
// coordinate of each copy: a block's slice of the dense operand is a box at a column the index names.
#include <cudaTypedefs.h>

#include <algorithm>

#include "ptx.cuh"
#include "tc_kernels.h"
#include "tile_work.cuh"

namespace bs::tc {

// Tile geometry (outside the anonymous namespace: the sm_80 pass compiles the kernels empty and would
// call these members unused).
namespace sm90 {

constexpr int cmin(int a, int b) { return a < b ? a : b; }

template <typename T_, Op kOp_, int kBlock_, int kTileM_, int kStages_>
struct WgmmaTraits {
  using T = T_;
  static constexpr Op kOp = kOp_;
  static constexpr int R = kBlock_, C = kBlock_;
  static constexpr int kTileM = kTileM_;  // Linear/Matmul: tokens; Sampled: G * R output rows
  static constexpr int kTileN = kOp == Op::Linear ? R : C;
  static constexpr int kStep = kOp == Op::Linear ? cmin(C, 64) : kOp == Op::Matmul ? cmin(R, 64) : 64;
  static constexpr int kGroup = kOp == Op::Sampled ? kTileM / R : 1;
  static constexpr bool kAKMajor = kOp != Op::Sampled;
  static constexpr bool kBKMajor = kOp == Op::Linear;
  static constexpr int kPanelA = kAKMajor ? kStep : cmin(R, 64);
  static constexpr int kPanelB = kBKMajor ? kStep : cmin(C, 64);
  static constexpr int kStages = kStages_;
  static constexpr int kConsumers = 2;                          // consumer warpgroups
  static constexpr int kThreads = 128 * (kConsumers + 1);
  static constexpr int kMmaM = kTileM / (64 * kConsumers);      // m64 tiles per consumer
  static constexpr int kABytes = kTileM * kStep * 2, kBBytes = kTileN * kStep * 2;
  static constexpr int kStageBytes = kABytes + kBBytes;
  static constexpr int kSmemBytes = 1024 + kStages * kStageBytes + 2 * kStages * 8 + 2 * kIndexCapacity * 4;
  static constexpr uint32_t kSwizzleA = kPanelA == 64 ? 1 : 2;  // descriptor codes: 1 = 128B, 2 = 64B
  static constexpr uint32_t kSwizzleB = kPanelB == 64 ? 1 : 2;

  static_assert(kMmaM >= 1 && kTileM == 64 * kConsumers * kMmaM, "each consumer owns whole m64 tiles");
  static_assert(kSmemBytes <= 227 * 1024, "fits an H100's shared memory");
};


// Grouped Linear/Matmul tile: 128 tokens x kGroup consecutive block rows (Linear) or block columns
// (Matmul) of kBlock (32 or 64). The CTA walks the union of its members' block columns (rows) in order:
// each step loads the dense operand's slice for one such column once and the block of every member
// that has it, side by side, so one wgmma of N = kGroup * kBlock covers all members (a member without
// the column has zeros in its place) and each slice read from L2 feeds every member that uses it.
template <typename T_, Op kOp_, int kBlock_, int kGroup_, int kStages_>
struct GroupedTraits {
  using T = T_;
  static constexpr Op kOp = kOp_;
  static constexpr int R = kBlock_, C = kBlock_;
  static constexpr int kBlock = kBlock_;
  static constexpr int kGroup = kGroup_;
  static constexpr int kTileM = 128;
  static constexpr int kTileN = kGroup * kBlock;  // the wgmma's N
  static constexpr int kStep = kBlock_;          // one union entry per step
  static constexpr bool kBKMajor = kOp == Op::Linear;
  static constexpr int kStages = kStages_;
  static constexpr int kConsumers = 2;  // consumer warpgroups, 64 tokens each
  static constexpr int kThreads = 128 * (kConsumers + 1);
  static constexpr int kABytes = kTileM * kStep * 2;
  static constexpr int kSlotBytes = kBlock * kStep * 2;  // one member's block
  static constexpr int kStageBytes = kABytes + kGroup * kSlotBytes;
  static constexpr int kIndexCap = kBlock == 32 ? 4096 : 2048;  // group entries whose indices stay in smem
  static constexpr int kIndexArrays = kOp == Op::Matmul ? 2 : 1;
  static constexpr int kSmemBytes =
      1024 + kStages * kStageBytes + 2 * kStages * 8 + kStages * 4 + kIndexArrays * kIndexCap * 4;
  static constexpr uint32_t kSwizzle = kStep * 2 == 128 ? 1 : 2;  // descriptor codes: 1 = 128B, 2 = 64B

  static_assert(kBlock == 32 || kBlock == 64, "one step per block");
  static_assert(kTileN == 64 || kTileN == 128 || kTileN == 256, "a wgmma N with generated ops");
  static_assert(kStages * kGroup <= 64, "a dirty bit per stage and member");
  static_assert(kSmemBytes <= 227 * 1024, "fits an H100's shared memory");
};

}  // namespace sm90

namespace {

using sm90::WgmmaTraits;

// One pipeline stage's products into this consumer warpgroup's accumulators.
template <class K>
__device__ __forceinline__ void mmaStage(float (&acc)[K::kMmaM][K::kTileN / 2], uint32_t stageA, uint32_t stageB,
                                         int consumer) {
  using T = typename K::T;
#pragma unroll
  for (int kk = 0; kk < K::kStep / 16; ++kk) {
    uint64_t descB;
    if constexpr (K::kBKMajor)
      descB = matrixDescriptor(stageB + kk * 32, 16, 8 * K::kStep * 2, K::kSwizzleB);
    else
      descB = matrixDescriptor(stageB + kk * 16 * K::kPanelB * 2, K::kStep * K::kPanelB * 2, 8 * K::kPanelB * 2,
                               K::kSwizzleB);
#pragma unroll
    for (int mi = 0; mi < K::kMmaM; ++mi) {
      uint64_t descA;
      if constexpr (K::kAKMajor) {
        descA = matrixDescriptor(stageA + (consumer * K::kMmaM + mi) * 64 * K::kStep * 2 + kk * 32, 16,
                                 8 * K::kStep * 2, K::kSwizzleA);
      } else {
        const int panel = (consumer * K::kMmaM + mi) * 64 / K::kPanelA;
        descA = matrixDescriptor(stageA + panel * K::kStep * K::kPanelA * 2 + kk * 16 * K::kPanelA * 2,
                                 K::kStep * K::kPanelA * 2, 8 * K::kPanelA * 2, K::kSwizzleA);
      }
      Wgmma<T, K::kTileN, K::kAKMajor ? 0 : 1, K::kBKMajor ? 0 : 1>::run(acc[mi], descA, descB);
    }
  }
}

// Writes this consumer's rows of the tile: per m64 tile, warp w of the group holds rows 16w + lane/4 (+8),
// two columns per 8.
template <class K>
__device__ __forceinline__ void storeTile(float (&acc)[K::kMmaM][K::kTileN / 2], const KernelArgs& args,
                                          const TileWork& work, const int32_t* indexB, int consumer, int lane,
                                          int warpInGroup) {
  using T = typename K::T;
  const int g = lane >> 2, c2 = (lane & 3) * 2;
#pragma unroll
  for (int mi = 0; mi < K::kMmaM; ++mi) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = (consumer * K::kMmaM + mi) * 64 + warpInGroup * 16 + g + half * 8;
#pragma unroll
      for (int j = 0; j < K::kTileN / 8; ++j) {
        const int col = j * 8 + c2;
        float v0 = acc[mi][4 * j + half * 2], v1 = acc[mi][4 * j + half * 2 + 1];
        if constexpr (K::kOp == Op::Sampled) {
          const int member = row / K::R;
          if (member >= work.count) continue;
          const int64_t at = (static_cast<int64_t>(indexB[member]) * K::R + row % K::R) * K::C + col;
          if (args.partials) {
            float* dst = args.partials + static_cast<int64_t>(blockIdx.z) * args.nnzBlocks * K::R * K::C + at;
            *reinterpret_cast<float2*>(dst) = make_float2(v0, v1);
          } else {
            *reinterpret_cast<uint32_t*>(static_cast<T*>(args.out) + at) = packPair<T>(v0, v1);
          }
        } else {
          const int64_t token = work.tokenBase + row;
          if (token >= args.m) continue;
          if constexpr (K::kOp == Op::Linear) {
            const int64_t feature = static_cast<int64_t>(work.line) * K::R + col;
            if (args.bias) {
              float2 bias = unpackPair<T>(*reinterpret_cast<const uint32_t*>(static_cast<const T*>(args.bias) + feature));
              v0 += bias.x;
              v1 += bias.y;
            }
            *reinterpret_cast<uint32_t*>(static_cast<T*>(args.out) + token * args.rows + feature) = packPair<T>(v0, v1);
          } else {
            const int64_t feature = static_cast<int64_t>(work.line) * K::C + col;
            *reinterpret_cast<uint32_t*>(static_cast<T*>(args.out) + token * args.cols + feature) = packPair<T>(v0, v1);
          }
        }
      }
    }
  }
}

template <class K>
__global__ void __launch_bounds__(K::kThreads, 1)
    bsrWgmmaKernel(const __grid_constant__ CUtensorMap mapA, const __grid_constant__ CUtensorMap mapB,
                   const KernelArgs args) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint8_t smemRaw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smemRaw) + 1023) & ~uintptr_t(1023));
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + K::kStages * K::kStageBytes);
  uint64_t* empty = full + K::kStages;
  int32_t* indexA = reinterpret_cast<int32_t*>(empty + K::kStages);
  int32_t* indexB = indexA + kIndexCapacity;
  const int tid = threadIdx.x;

  TileWork work;
  if (!tileWork<K::kOp, K::R, K::C, K::kTileM, K::kStep, K::kGroup>(args, work)) return;
  fillIndex<K::kOp, K::R, K::C>(args, work, indexA, indexB, tid, K::kThreads);
  if (tid == 0) {
    prefetchTensorMap(&mapA);
    prefetchTensorMap(&mapB);
    for (int s = 0; s < K::kStages; ++s) {
      mbarrierInit(&full[s], 1);
      mbarrierInit(&empty[s], 4 * K::kConsumers);  // one arrival per consumer warp
    }
    fenceBarrierInit();
  }
  __syncthreads();

  const int warpGroup = tid / 128;
  if (warpGroup == 0) {
    setMaxRegistersDecrease<40>();
    if (tid != 0) return;
    // Producer: one thread issues every copy, up to kStages steps ahead of the consumers.
    for (int step = 0; step < work.steps; ++step) {
      const int s = step % K::kStages;
      if (step >= K::kStages) mbarrierWait(&empty[s], ((step / K::kStages) + 1) & 1);
      uint8_t* stageA = smem + s * K::kStageBytes;
      uint8_t* stageB = stageA + K::kABytes;
      const int32_t tokenBase = static_cast<int32_t>(work.tokenBase);
      if constexpr (K::kOp == Op::Linear || K::kOp == Op::Matmul) {
        constexpr int kStepsPerBlock = (K::kOp == Op::Linear ? K::C : K::R) / K::kStep;
        const int entry = step / kStepsPerBlock, slice = (step % kStepsPerBlock) * K::kStep;
        const int32_t aColumn = entryColumn<K::kOp, K::R, K::C>(args, work, indexA, entry) + slice;
        mbarrierArriveExpectTx(&full[s], K::kStageBytes);
        tmaLoad2d(stageA, &mapA, aColumn, tokenBase, &full[s]);
        if constexpr (K::kOp == Op::Linear) {
          tmaLoad2d(stageB, &mapB, slice, (work.first + entry) * K::R, &full[s]);
        } else {
          const int32_t valueRow = entryValue(args, work, indexB, entry) * K::R + slice;
#pragma unroll
          for (int p = 0; p < K::C / K::kPanelB; ++p)
            tmaLoad2d(stageB + p * K::kStep * K::kPanelB * 2, &mapB, p * K::kPanelB, valueRow, &full[s]);
        }
      } else {
        const int32_t token0 = tokenBase + step * K::kStep;
        constexpr int kPanelsPerBlock = K::R / K::kPanelA;
        mbarrierArriveExpectTx(&full[s], work.count * K::R * K::kStep * 2 + K::kBBytes);
        for (int member = 0; member < work.count; ++member) {
#pragma unroll
          for (int p = 0; p < kPanelsPerBlock; ++p)
            tmaLoad2d(stageA + (member * kPanelsPerBlock + p) * K::kStep * K::kPanelA * 2, &mapA,
                      indexA[member] + p * K::kPanelA, token0, &full[s]);
        }
#pragma unroll
        for (int p = 0; p < K::C / K::kPanelB; ++p)
          tmaLoad2d(stageB + p * K::kStep * K::kPanelB * 2, &mapB, work.line * K::C + p * K::kPanelB, token0,
                    &full[s]);
      }
    }
    return;
  }

  setMaxRegistersIncrease<232>();
  const int consumer = warpGroup - 1;
  const int lane = tid % 32, warpInGroup = (tid % 128) / 32;
  float acc[K::kMmaM][K::kTileN / 2];
#pragma unroll
  for (int i = 0; i < K::kMmaM; ++i)
#pragma unroll
    for (int j = 0; j < K::kTileN / 2; ++j) acc[i][j] = 0.0f;

  for (int step = 0; step < work.steps; ++step) {
    const int s = step % K::kStages;
    mbarrierWait(&full[s], (step / K::kStages) & 1);
    const uint32_t stageA = smemAddress(smem + s * K::kStageBytes), stageB = stageA + K::kABytes;
#pragma unroll
    for (int i = 0; i < K::kMmaM; ++i) fenceRegisters(acc[i]);
    wgmmaFence();
    mmaStage<K>(acc, stageA, stageB, consumer);
    wgmmaCommit();
#pragma unroll
    for (int i = 0; i < K::kMmaM; ++i) fenceRegisters(acc[i]);
    // The previous step's products are done once at most this step's group is pending: free its stage.
    wgmmaWait<1>();
    if (step > 0 && lane == 0) mbarrierArrive(&empty[(step - 1) % K::kStages]);
  }
  wgmmaWait<0>();
#pragma unroll
  for (int i = 0; i < K::kMmaM; ++i) fenceRegisters(acc[i]);

  storeTile<K>(acc, args, work, indexB, consumer, lane, warpInGroup);
#endif
}

// Linear/Matmul, persistent: one CTA per SM walks tiles blockIdx.x, + gridDim.x, ... with one pipeline
// that runs on across tiles, so the producer loads the next tile while the consumers store this one.
// The producer warp reads each tile's block offsets itself, 32 at a time, one per lane.
template <class K>
__global__ void __launch_bounds__(K::kThreads, 1)
    bsrWgmmaPersistentKernel(const __grid_constant__ CUtensorMap mapA, const __grid_constant__ CUtensorMap mapB,
                             const KernelArgs args) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(K::kOp != Op::Sampled, "Sampled tiles are not persistent");
  extern __shared__ uint8_t smemRaw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smemRaw) + 1023) & ~uintptr_t(1023));
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + K::kStages * K::kStageBytes);
  uint64_t* empty = full + K::kStages;
  const int tid = threadIdx.x;
  const int tiles = args.tilesM * args.tilesN;
  constexpr int kStepsPerBlock = (K::kOp == Op::Linear ? K::C : K::R) / K::kStep;
  if (tid == 0) {
    prefetchTensorMap(&mapA);
    prefetchTensorMap(&mapB);
    for (int s = 0; s < K::kStages; ++s) {
      mbarrierInit(&full[s], 1);
      mbarrierInit(&empty[s], 4 * K::kConsumers);
    }
    fenceBarrierInit();
  }
  __syncthreads();

  const int warpGroup = tid / 128;
  if (warpGroup == 0) {
    setMaxRegistersDecrease<40>();
    if (tid >= 32) return;
    const int lane = tid;
    const int32_t* index = K::kOp == Op::Linear ? args.blockColIdx : args.blockRowIdx;
    constexpr int kScale = K::kOp == Op::Linear ? K::C : K::R;
    int it = 0;
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
      TileWork work;
      tileAt<K::kOp, K::R, K::C, K::kTileM, K::kStep>(args, tile, work);
      const int32_t tokenBase = static_cast<int32_t>(work.tokenBase);
      for (int e0 = 0; e0 < work.count; e0 += 32) {
        int32_t columnMine = 0, valueMine = 0;
        if (e0 + lane < work.count) {
          columnMine = index[work.first + e0 + lane] * kScale;
          if constexpr (K::kOp == Op::Matmul) valueMine = args.valueIndex[work.first + e0 + lane];
        }
        const int n = min(32, work.count - e0);
        for (int j = 0; j < n; ++j) {
          const int32_t column = __shfl_sync(0xffffffffu, columnMine, j);
          const int32_t value = __shfl_sync(0xffffffffu, valueMine, j);
          for (int part = 0; part < kStepsPerBlock; ++part, ++it) {
            const int s = it % K::kStages;
            if (it >= K::kStages) mbarrierWait(&empty[s], ((it / K::kStages) + 1) & 1);
            if (lane == 0) {
              uint8_t* stageA = smem + s * K::kStageBytes;
              uint8_t* stageB = stageA + K::kABytes;
              const int slice = part * K::kStep;
              mbarrierArriveExpectTx(&full[s], K::kStageBytes);
              tmaLoad2d(stageA, &mapA, column + slice, tokenBase, &full[s]);
              if constexpr (K::kOp == Op::Linear) {
                tmaLoad2d(stageB, &mapB, slice, (work.first + e0 + j) * K::R, &full[s]);
              } else {
#pragma unroll
                for (int p = 0; p < K::C / K::kPanelB; ++p)
                  tmaLoad2d(stageB + p * K::kStep * K::kPanelB * 2, &mapB, p * K::kPanelB, value * K::R + slice,
                            &full[s]);
              }
            }
            __syncwarp();
          }
        }
      }
    }
    return;
  }

  setMaxRegistersIncrease<232>();
  const int consumer = warpGroup - 1;
  const int lane = tid % 32, warpInGroup = (tid % 128) / 32;
  float acc[K::kMmaM][K::kTileN / 2];
  int it = 0;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    TileWork work;
    tileAt<K::kOp, K::R, K::C, K::kTileM, K::kStep>(args, tile, work);
#pragma unroll
    for (int i = 0; i < K::kMmaM; ++i)
#pragma unroll
      for (int j = 0; j < K::kTileN / 2; ++j) acc[i][j] = 0.0f;
    for (int step = 0; step < work.steps; ++step, ++it) {
      const int s = it % K::kStages;
      mbarrierWait(&full[s], (it / K::kStages) & 1);
      const uint32_t stageA = smemAddress(smem + s * K::kStageBytes), stageB = stageA + K::kABytes;
#pragma unroll
      for (int i = 0; i < K::kMmaM; ++i) fenceRegisters(acc[i]);
      wgmmaFence();
      mmaStage<K>(acc, stageA, stageB, consumer);
      wgmmaCommit();
#pragma unroll
      for (int i = 0; i < K::kMmaM; ++i) fenceRegisters(acc[i]);
      wgmmaWait<1>();
      if (step > 0 && lane == 0) mbarrierArrive(&empty[(it - 1) % K::kStages]);
    }
    wgmmaWait<0>();
#pragma unroll
    for (int i = 0; i < K::kMmaM; ++i) fenceRegisters(acc[i]);
    // This tile's last stage is free once its products are done.
    if (work.steps > 0 && lane == 0) mbarrierArrive(&empty[(it - 1) % K::kStages]);
    storeTile<K>(acc, args, work, nullptr, consumer, lane, warpInGroup);
  }
#endif
}

// Member `member`'s 64 tokens x kBlock outputs of a grouped tile (accumulator layout as in storeTile).
template <class K>
__device__ __forceinline__ void storeMember(const float (&acc)[K::kTileN / 2], int member, const KernelArgs& args,
                                            int64_t tokenBase, int line, int consumer, int lane, int warpInGroup) {
  using T = typename K::T;
  const int g = lane >> 2, c2 = (lane & 3) * 2;
  const int64_t width = K::kOp == Op::Linear ? args.rows : args.cols;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t token = tokenBase + consumer * 64 + warpInGroup * 16 + g + half * 8;
    if (token >= args.m) continue;
#pragma unroll
    for (int j = 0; j < K::kBlock / 8; ++j) {
      const int64_t feature = static_cast<int64_t>(line) * K::kBlock + j * 8 + c2;
      const int at = 4 * (member * K::kBlock / 8 + j) + half * 2;
      float v0 = acc[at], v1 = acc[at + 1];
      if (K::kOp == Op::Linear && args.bias) {
        float2 bias = unpackPair<T>(*reinterpret_cast<const uint32_t*>(static_cast<const T*>(args.bias) + feature));
        v0 += bias.x;
        v1 += bias.y;
      }
      *reinterpret_cast<uint32_t*>(static_cast<T*>(args.out) + token * width + feature) = packPair<T>(v0, v1);
    }
  }
}

template <class K>
__global__ void __launch_bounds__(K::kThreads, 1)
    bsrWgmmaGroupedKernel(const __grid_constant__ CUtensorMap mapA, const __grid_constant__ CUtensorMap mapB,
                          const KernelArgs args) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint8_t smemRaw[];
  // Aligned by pointer arithmetic on the shared array itself, so the compiler keeps the address space and
  // every access below is a shared-memory instruction rather than a generic one.
  uint8_t* smem = smemRaw + ((1024 - (smemAddress(smemRaw) & 1023)) & 1023);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + K::kStages * K::kStageBytes);
  uint64_t* empty = full + K::kStages;
  volatile uint32_t* meta = reinterpret_cast<uint32_t*>(empty + K::kStages);  // per stage: the members' mask
  int32_t* indexA = reinterpret_cast<int32_t*>(const_cast<uint32_t*>(meta) + K::kStages);
  int32_t* indexB = indexA + K::kIndexCap;
  const int tid = threadIdx.x;

  int tileM, tileN;
  rasterTile(blockIdx.x, args.tilesM, args.tilesN, args.groupM, tileM, tileN);
  const int32_t* ptr = K::kOp == Op::Linear ? args.blockRowPtr : args.blockColPtr;
  const int32_t* index = K::kOp == Op::Linear ? args.blockColIdx : args.blockRowIdx;
  const int lines = K::kOp == Op::Linear ? args.blockRows : args.blockCols;
  const int lineFirst = tileN * K::kGroup;
  const int lineEnd = min(lines, lineFirst + K::kGroup);
  const int32_t first = ptr[lineFirst];
  const int32_t count = ptr[lineEnd] - first;
  const int64_t tokenBase = static_cast<int64_t>(tileM) * K::kTileM;
  for (int e = tid; e < min(count, K::kIndexCap); e += K::kThreads) {
    indexA[e] = index[first + e];
    if constexpr (K::kOp == Op::Matmul) indexB[e] = args.valueIndex[first + e];
  }
  // Every member slot starts as zeros; afterwards the producer re-zeroes a slot only when a step leaves
  // it out after an earlier step in that stage filled it.
  for (int s = 0; s < K::kStages; ++s) {
    uint4* slots = reinterpret_cast<uint4*>(smem + s * K::kStageBytes + K::kABytes);
    for (int i = tid; i < K::kGroup * K::kSlotBytes / 16; i += K::kThreads) slots[i] = make_uint4(0, 0, 0, 0);
  }
  fenceProxyAsync();  // written by threads, read by wgmma
  if (tid == 0) {
    prefetchTensorMap(&mapA);
    prefetchTensorMap(&mapB);
    for (int s = 0; s < K::kStages; ++s) {
      mbarrierInit(&full[s], 1);
      mbarrierInit(&empty[s], 4 * K::kConsumers);  // one arrival per consumer warp
    }
    fenceBarrierInit();
  }
  __syncthreads();

  const int warpGroup = tid / 128;
  if (warpGroup == 0) {
    setMaxRegistersDecrease<56>();  // the merge keeps three values per member
    if (tid >= 32) return;
    // Producer warp: a kGroup-way merge of the members' sorted index lists, run by every lane alike.
    // Each step names one column (row) of the union and the members that have it; a mask of 0 tells the
    // consumers to stop. The lanes zero the slots that step leaves out; lane 0 issues the copies.
    const int lane = tid;
    auto lineOf = [&](int32_t entry) {
      const int32_t local = entry - first;
      return local < K::kIndexCap ? indexA[local] : index[entry];
    };
    int32_t cursor[K::kGroup], stop[K::kGroup], at[K::kGroup];
#pragma unroll
    for (int r = 0; r < K::kGroup; ++r) {
      const bool member = lineFirst + r < lineEnd;
      cursor[r] = member ? ptr[lineFirst + r] : 0;
      stop[r] = member ? ptr[lineFirst + r + 1] : 0;
      at[r] = cursor[r] < stop[r] ? lineOf(cursor[r]) : INT32_MAX;
    }
    uint64_t dirty = 0;  // bit s * kGroup + r: stage s's slot r holds a block
    const int32_t tokens = static_cast<int32_t>(tokenBase);
    for (int step = 0;; ++step) {
      int32_t next = INT32_MAX;
#pragma unroll
      for (int r = 0; r < K::kGroup; ++r) next = min(next, at[r]);
      const int s = step % K::kStages;
      if (step >= K::kStages) mbarrierWait(&empty[s], ((step / K::kStages) + 1) & 1);
      if (next == INT32_MAX) {
        if (lane == 0) {
          meta[s] = 0;
          mbarrierArrive(&full[s]);
        }
        break;
      }
      uint32_t mask = 0;
#pragma unroll
      for (int r = 0; r < K::kGroup; ++r) mask |= at[r] == next ? 1u << r : 0u;
      uint8_t* stageA = smem + s * K::kStageBytes;
      uint8_t* stageB = stageA + K::kABytes;
      const uint32_t stale = static_cast<uint32_t>(dirty >> (s * K::kGroup)) & ~mask & ((1u << K::kGroup) - 1);
      if (stale) {
#pragma unroll
        for (int r = 0; r < K::kGroup; ++r) {
          if (!(stale & (1u << r))) continue;
          uint4* slot = reinterpret_cast<uint4*>(stageB + r * K::kSlotBytes);
#pragma unroll
          for (int i = lane; i < K::kSlotBytes / 16; i += 32) slot[i] = make_uint4(0, 0, 0, 0);
        }
        fenceProxyAsync();
        __syncwarp();
      }
      dirty = (dirty & ~(uint64_t((1u << K::kGroup) - 1) << (s * K::kGroup))) | (uint64_t(mask) << (s * K::kGroup));
      if (lane == 0) {
        meta[s] = mask;
        mbarrierArriveExpectTx(&full[s], K::kABytes + __popc(mask) * K::kSlotBytes);
        tmaLoad2d(stageA, &mapA, next * K::kBlock, tokens, &full[s]);
      }
#pragma unroll
      for (int r = 0; r < K::kGroup; ++r) {
        if (!(mask & (1u << r))) continue;
        const int32_t entry = cursor[r]++;
        if (lane == 0) {
          int32_t value = entry;
          if constexpr (K::kOp == Op::Matmul) {
            const int32_t local = entry - first;
            value = local < K::kIndexCap ? indexB[local] : args.valueIndex[entry];
          }
          tmaLoad2d(stageB + r * K::kSlotBytes, &mapB, 0, value * K::kBlock, &full[s]);
        }
        at[r] = cursor[r] < stop[r] ? lineOf(cursor[r]) : INT32_MAX;
      }
      __syncwarp();
    }
    return;
  }

  setMaxRegistersIncrease<224>();
  using T = typename K::T;
  const int consumer = warpGroup - 1;
  const int lane = tid % 32, warpInGroup = (tid % 128) / 32;
  float acc[K::kTileN / 2];
#pragma unroll
  for (int j = 0; j < K::kTileN / 2; ++j) acc[j] = 0.0f;

  // This warp's 16 rows of the A tile are read once per step into registers (ldmatrix, undoing the copy's
  // swizzle). Two register sets alternate between steps: a set is reloaded only after the wgmmas reading
  // it are done.
  constexpr int kK16 = K::kStep / 16;
  uint32_t aFirst[kK16][4], aSecond[kK16][4];
  const int aRow = consumer * 64 + warpInGroup * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
  const int swizzle = K::kSwizzle == 1 ? (aRow & 7) : ((aRow >> 1) & 3);
  // One step into the accumulators with A in `a`; false at the end marker.
  auto runStep = [&](int step, uint32_t(&a)[kK16][4]) -> bool {
    const int s = step % K::kStages;
    mbarrierWait(&full[s], (step / K::kStages) & 1);
    if (meta[s] == 0) return false;
    const uint32_t stageA = smemAddress(smem + s * K::kStageBytes), stageB = stageA + K::kABytes;
#pragma unroll
    for (int kk = 0; kk < kK16; ++kk)
      ldmatrixX4(a[kk], stageA + aRow * K::kStep * 2 + (((kk * 2 + (lane >> 4)) ^ swizzle) << 4));
    fenceRegisters(acc);
    wgmmaFence();
#pragma unroll
    for (int kk = 0; kk < kK16; ++kk) {
      uint64_t descB;
      if constexpr (K::kBKMajor)
        descB = matrixDescriptor(stageB + kk * 32, 16, 8 * K::kStep * 2, K::kSwizzle);
      else  // kGroup panels of kBlock columns, one per member slot
        descB = matrixDescriptor(stageB + kk * 16 * K::kBlock * 2, K::kSlotBytes, 8 * K::kBlock * 2, K::kSwizzle);
      Wgmma<T, K::kTileN, 0, K::kBKMajor ? 0 : 1>::runRegA(acc, a[kk], descB);
    }
    wgmmaCommit();
    fenceRegisters(acc);
    // The previous step's products are done once at most this step's group is pending: free its stage.
    wgmmaWait<1>();
    if (step > 0 && lane == 0) mbarrierArrive(&empty[(step - 1) % K::kStages]);
    return true;
  };
  for (int step = 0;; step += 2) {
    if (!runStep(step, aFirst) || !runStep(step + 1, aSecond)) break;
  }
  wgmmaWait<0>();
  fenceRegisters(acc);
#pragma unroll
  for (int r = 0; r < K::kGroup; ++r)
    if (lineFirst + r < lineEnd) storeMember<K>(acc, r, args, tokenBase, lineFirst + r, consumer, lane, warpInGroup);
#endif
}

// cuTensorMapEncodeTiled through the runtime, so the addon needs no link to the driver library.
PFN_cuTensorMapEncodeTiled_v12000 encodeTiled() {
  static PFN_cuTensorMapEncodeTiled_v12000 function = [] {
    void* pointer = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &pointer, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return static_cast<PFN_cuTensorMapEncodeTiled_v12000>(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(pointer);
  }();
  return function;
}

// A row-major [outer, inner] tensor of 2-byte elements, copied in boxes of boxOuter rows x boxInner
// elements, swizzled as wide as a box row (64 or 128 bytes).
bool encodeMap(CUtensorMap* map, DType dtype, const void* base, int64_t inner, int64_t outer, int boxInner,
               int boxOuter) {
  auto encode = encodeTiled();
  if (!encode) return false;
  cuuint64_t dims[2] = {static_cast<cuuint64_t>(inner), static_cast<cuuint64_t>(outer)};
  cuuint64_t strides[1] = {static_cast<cuuint64_t>(inner) * 2};
  cuuint32_t box[2] = {static_cast<cuuint32_t>(boxInner), static_cast<cuuint32_t>(boxOuter)};
  cuuint32_t elementStrides[2] = {1, 1};
  CUresult status = encode(map, dtype == DType::BFloat16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                           2, const_cast<void*>(base), dims, strides, box, elementStrides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                           boxInner * 2 == 128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B,
                           CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return status == CUDA_SUCCESS;
}

template <class K, bool kPersistent = false>
bool launch(DType dtype, const KernelArgs& argsIn, cudaStream_t stream, int numSms = 0) {
  KernelArgs args = argsIn;
  CUtensorMap mapA, mapB;
  dim3 grid;
  const int64_t valueRows = static_cast<int64_t>(args.nnzBlocks) * K::R;
  if constexpr (K::kOp == Op::Sampled) {
    if (!encodeMap(&mapA, dtype, args.a, args.rows, args.m, K::kPanelA, K::kStep) ||
        !encodeMap(&mapB, dtype, args.b, args.cols, args.m, K::kPanelB, K::kStep))
      return false;
    const int64_t splits = (args.m + args.tokensPerSplit - 1) / args.tokensPerSplit;
    const int64_t groups = (args.blockRows + K::kGroup - 1) / K::kGroup;
    if (groups > 65535 || splits > 65535) return false;
    grid = dim3(static_cast<unsigned>(args.blockCols), static_cast<unsigned>(groups), static_cast<unsigned>(splits));
  } else {
    const int64_t depth = K::kOp == Op::Linear ? args.cols : args.rows;
    if (!encodeMap(&mapA, dtype, args.a, depth, args.m, K::kStep, K::kTileM)) return false;
    if (K::kOp == Op::Linear ? !encodeMap(&mapB, dtype, args.b, K::C, valueRows, K::kStep, K::R)
                             : !encodeMap(&mapB, dtype, args.b, K::C, valueRows, K::kPanelB, K::kStep))
      return false;
    const int64_t tilesM = (args.m + K::kTileM - 1) / K::kTileM;
    const int64_t tilesN = K::kOp == Op::Linear ? args.blockRows : args.blockCols;
    if (tilesM * tilesN > INT32_MAX) return false;
    args.tilesM = static_cast<int32_t>(tilesM);
    args.tilesN = static_cast<int32_t>(tilesN);
    args.groupM = rasterGroup(args.tilesM, K::kTileM, depth);
    grid = dim3(static_cast<unsigned>(kPersistent ? std::min<int64_t>(tilesM * tilesN, numSms) : tilesM * tilesN));
  }
  auto kernel = [] {
    if constexpr (kPersistent) return bsrWgmmaPersistentKernel<K>;
    else return bsrWgmmaKernel<K>;
  }();
  BS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, K::kSmemBytes));
  kernel<<<grid, K::kThreads, K::kSmemBytes, stream>>>(mapA, mapB, args);
  BS_LAUNCH_CHECK("bsrWgmmaKernel");
  return true;
}

template <class K>
bool launchGrouped(DType dtype, const KernelArgs& argsIn, cudaStream_t stream) {
  KernelArgs args = argsIn;
  CUtensorMap mapA, mapB;
  const int64_t valueRows = static_cast<int64_t>(args.nnzBlocks) * K::R;
  const int64_t depth = K::kOp == Op::Linear ? args.cols : args.rows;
  if (!encodeMap(&mapA, dtype, args.a, depth, args.m, K::kStep, K::kTileM) ||
      !encodeMap(&mapB, dtype, args.b, K::C, valueRows, K::kStep, K::R))
    return false;
  const int64_t lines = K::kOp == Op::Linear ? args.blockRows : args.blockCols;
  const int64_t tilesM = (args.m + K::kTileM - 1) / K::kTileM;
  const int64_t tilesN = (lines + K::kGroup - 1) / K::kGroup;
  if (tilesM * tilesN > INT32_MAX) return false;
  args.tilesM = static_cast<int32_t>(tilesM);
  args.tilesN = static_cast<int32_t>(tilesN);
  args.groupM = rasterGroup(args.tilesM, K::kTileM, depth);
  BS_CUDA_CHECK(cudaFuncSetAttribute(bsrWgmmaGroupedKernel<K>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     K::kSmemBytes));
  bsrWgmmaGroupedKernel<K><<<static_cast<unsigned>(tilesM * tilesN), K::kThreads, K::kSmemBytes, stream>>>(
      mapA, mapB, args);
  BS_LAUNCH_CHECK("bsrWgmmaGroupedKernel");
  return true;
}

// Tile shapes per block size; variant 1 is an alternative kept for measurement.
template <typename T, Op kOp>
bool launchBlock(DType dtype, const KernelArgs& args, int blockSize, int variant, int numSms, cudaStream_t stream) {
  if constexpr (kOp == Op::Sampled) {
    if (variant > 1) return false;
    switch (blockSize) {
      case 32: return launch<WgmmaTraits<T, kOp, 32, 128, 8>>(dtype, args, stream);
      case 64: return launch<WgmmaTraits<T, kOp, 64, 128, 7>>(dtype, args, stream);
      case 128: return launch<WgmmaTraits<T, kOp, 128, 128, 6>>(dtype, args, stream);
    }
  } else {
    if (variant > 5 || numSms <= 0) return false;
    // Variants 4 and 5: grouped tiles (GroupedTraits), 8 and 4 block rows (columns) of 32, 4 and 2 of 64.
    if (variant >= 4) {
      using sm90::GroupedTraits;
      const bool wide = variant == 4;
      if (blockSize == 32)
        return wide ? launchGrouped<GroupedTraits<T, kOp, 32, 8, 7>>(dtype, args, stream)
                    : launchGrouped<GroupedTraits<T, kOp, 32, 4, 8>>(dtype, args, stream);
      if (blockSize == 64)
        return wide ? launchGrouped<GroupedTraits<T, kOp, 64, 4, 4>>(dtype, args, stream)
                    : launchGrouped<GroupedTraits<T, kOp, 64, 2, 5>>(dtype, args, stream);
      return false;
    }
    // Variants 2 and 3: the tiles of variants 0 and 1, persistent.
    switch (blockSize) {
      case 32:
        if (variant == 2) return launch<WgmmaTraits<T, kOp, 32, 256, 8>, true>(dtype, args, stream, numSms);
        if (variant == 3) return launch<WgmmaTraits<T, kOp, 32, 128, 8>, true>(dtype, args, stream, numSms);
        if (variant == 1) return launch<WgmmaTraits<T, kOp, 32, 128, 8>>(dtype, args, stream);
        return launch<WgmmaTraits<T, kOp, 32, 256, 8>>(dtype, args, stream);
      case 64:
        if (variant == 2) return launch<WgmmaTraits<T, kOp, 64, 256, 5>, true>(dtype, args, stream, numSms);
        if (variant == 3) return launch<WgmmaTraits<T, kOp, 64, 128, 6>, true>(dtype, args, stream, numSms);
        if (variant == 1) return launch<WgmmaTraits<T, kOp, 64, 128, 6>>(dtype, args, stream);
        return launch<WgmmaTraits<T, kOp, 64, 256, 5>>(dtype, args, stream);
      case 128:
        if (variant == 2) return launch<WgmmaTraits<T, kOp, 128, 128, 6>, true>(dtype, args, stream, numSms);
        if (variant == 3) return launch<WgmmaTraits<T, kOp, 128, 256, 4>, true>(dtype, args, stream, numSms);
        if (variant == 1) return launch<WgmmaTraits<T, kOp, 128, 256, 4>>(dtype, args, stream);
        return launch<WgmmaTraits<T, kOp, 128, 128, 6>>(dtype, args, stream);
    }
  }
  return false;
}

template <typename T>
bool launchTyped(Op op, DType dtype, const KernelArgs& args, int blockSize, int variant, int numSms,
                 cudaStream_t stream) {
  switch (op) {
    case Op::Linear: return launchBlock<T, Op::Linear>(dtype, args, blockSize, variant, numSms, stream);
    case Op::Matmul: return launchBlock<T, Op::Matmul>(dtype, args, blockSize, variant, numSms, stream);
    case Op::Sampled: return launchBlock<T, Op::Sampled>(dtype, args, blockSize, variant, numSms, stream);
  }
  return false;
}

}  // namespace

bool wgmmaAvailable() {
  cudaFuncAttributes attributes{};
  if (cudaFuncGetAttributes(&attributes, bsrWgmmaKernel<WgmmaTraits<__nv_bfloat16, Op::Linear, 64, 256, 5>>) !=
      cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  // Only an sm_90a image holds the kernel body; a JIT of older PTX would run an empty kernel.
  return attributes.ptxVersion >= 90 && attributes.binaryVersion == 90;
}

bool launchWgmma(Op op, DType dtype, const KernelArgs& args, int blockSize, int variant, int numSms,
                 cudaStream_t stream) {
  if (dtype == DType::BFloat16) return launchTyped<__nv_bfloat16>(op, dtype, args, blockSize, variant, numSms, stream);
  if (dtype == DType::Float16) return launchTyped<__half>(op, dtype, args, blockSize, variant, numSms, stream);
  return false;
}

}  // namespace bs::tc
