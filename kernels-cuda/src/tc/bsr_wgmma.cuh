// The sm_90a path's parts shared by the dispatched tiles (bsr_wgmma.cu) and the variants kept for
// measurement (kernels-cuda/dev/): tile traits, the tile kernel, tensor maps and the launch.
//
// wgmma with both operands in shared memory, staged by the bulk tensor copy engine (TMA) through a
// multi-stage mbarrier pipeline. One producer warpgroup issues the copies (one thread), two consumer
// warpgroups each own half of the tile's rows. The gather through the pattern is just the coordinate of
// each copy: a block's slice of the dense operand is a box at a column the index names.
// (A named namespace: the sm_80 pass compiles the kernels empty and would warn of unused members.)
#pragma once

#include <cudaTypedefs.h>

#include <algorithm>

#include "../kernels/overlap.cuh"
#include "ptx.cuh"
#include "tc_kernels.h"
#include "tile_work.cuh"

namespace bs::tc::sm90 {

constexpr int cmin(int a, int b) { return a < b ? a : b; }

// kPingPong_: the consumers take whole tiles in turn (bsrWgmmaPingPongKernel) instead of half the rows of each.
// kFeatureMajor_ (Linear/Matmul, 64-wide blocks): wgmma's M is the tile's 64 features and its N the consumer's
// tokens (one m64nN product per k16 step, reading the block once and each token row once) instead of M = tokens,
// N = features (kMmaM m64n64 products, each reading the block again). The accumulators then hold the tile
// transposed; stageAccumulators writes it back token-major with stmatrix.trans.
// kConsumers_: consumer warpgroups (two, or three in the ping-pong tile of kPingPong3Tile).
// R x C blocks (kRows_ x kCols_); WgmmaTraits below is the square case.
template <typename T_, Op kOp_, int kRows_, int kCols_, int kTileM_, int kStages_, bool kPingPong_ = false,
          bool kFeatureMajor_ = false, int kConsumers_ = 2>
struct WgmmaShapeTraits {
  using T = T_;
  static constexpr Op kOp = kOp_;
  static constexpr int R = kRows_, C = kCols_;
  static constexpr int kTileM = kTileM_;  // Linear/Matmul: tokens; Sampled: G * R output rows
  static constexpr int kTileN = kOp == Op::Linear ? R : C;
  static constexpr int kStep = kOp == Op::Linear ? cmin(C, 64) : kOp == Op::Matmul ? cmin(R, 64) : 64;
  static constexpr int kGroup = kOp == Op::Sampled ? kTileM / R : 1;
  static constexpr bool kAKMajor = kOp != Op::Sampled;
  static constexpr bool kBKMajor = kOp == Op::Linear;
  static constexpr int kPanelA = kAKMajor ? kStep : cmin(R, 64);
  static constexpr int kPanelB = kBKMajor ? kStep : cmin(C, 64);
  static constexpr int kStages = kStages_;
  static constexpr int kConsumers = kConsumers_;                // consumer warpgroups
  static constexpr int kThreads = 128 * (kConsumers + 1);
  static constexpr bool kPingPong = kPingPong_;
  static constexpr int kTileConsumers = kPingPong ? 1 : kConsumers;  // consumers sharing one tile's rows
  static constexpr int kMmaM = kTileM / (64 * kTileConsumers);  // m64 tiles per consumer
  static constexpr int kConsumerTokens = kTileM / kTileConsumers;
  static constexpr bool kFeatureMajor = kFeatureMajor_;
  // A consumer's accumulators: kMmaM tiles of m64 tokens x kTileN features, or (kFeatureMajor) one tile of m64
  // features x kConsumerTokens tokens.
  static constexpr int kAccTiles = kFeatureMajor ? 1 : kMmaM;
  static constexpr int kAccRegs = kFeatureMajor ? kConsumerTokens / 2 : kTileN / 2;
  using Acc = float[kAccTiles][kAccRegs];
  static constexpr int kEmptyArrivals = 4 * kTileConsumers;     // arrivals that free a stage: its consumers' warps
  static constexpr int kABytes = kTileM * kStep * 2, kBBytes = kTileN * kStep * 2;
  static constexpr int kStageBytes = kABytes + kBBytes;
  static constexpr int kSmemBytes = 1024 + kStages * kStageBytes + 2 * kStages * 8 + 2 * kIndexCapacity * 4;
  static constexpr uint32_t kSwizzleA = kPanelA == 64 ? 1 : 2;  // descriptor codes: 1 = 128B, 2 = 64B
  static constexpr uint32_t kSwizzleB = kPanelB == 64 ? 1 : 2;

  static_assert(kMmaM >= 1 && kTileM == 64 * kTileConsumers * kMmaM, "each consumer owns whole m64 tiles");
  static_assert(kSmemBytes <= 227 * 1024, "fits an H100's shared memory");
  static_assert(!kFeatureMajor || (kTileN == 64 && kStep == 64 &&
                                   (kConsumerTokens == 64 || kConsumerTokens == 128 || kConsumerTokens == 256)),
                "feature-major tiles: 64 features (dW: 64 columns), a consumer's tokens (dW: rows) an m64nN width");
  static_assert(R % 32 == 0 && C % 32 == 0 && (R % 64 == 0 || R == 32) && (C % 64 == 0 || C == 32),
                "sides of 32 (one 64-byte swizzled panel) or multiples of the 64-wide (128-byte) panel");
};

template <typename T, Op kOp, int kBlock, int kTileM, int kStages, bool kPingPong = false, bool kFeatureMajor = false>
using WgmmaTraits = WgmmaShapeTraits<T, kOp, kBlock, kBlock, kTileM, kStages, kPingPong, kFeatureMajor>;

// Thread 0 prefetches both tensor maps and initializes the ring's barriers: a full barrier completes on the
// producer's arrival and its copies' bytes, an empty one on K::kEmptyArrivals (one per warp of the consumers that read
// the stage). The CTA then waits for it.
template <class K>
__device__ __forceinline__ void initPipeline(const CUtensorMap& mapA, const CUtensorMap& mapB, uint64_t* full,
                                             uint64_t* empty) {
  if (threadIdx.x == 0) {
    prefetchTensorMap(&mapA);
    prefetchTensorMap(&mapB);
    for (int s = 0; s < K::kStages; ++s) {
      mbarrierInit(&full[s], 1);
      mbarrierInit(&empty[s], K::kEmptyArrivals);
    }
    fenceBarrierInit();
  }
  __syncthreads();
}

// One pipeline stage's products into this consumer warpgroup's accumulators. Each operand's descriptor is built once
// per stage and advanced by a constant per wgmma (advanceDescriptor: one add, where matrixDescriptor masks, shifts and
// merges).
template <class K>
__device__ __forceinline__ void mmaStage(typename K::Acc& acc, uint32_t stageA, uint32_t stageB, int consumer) {
  using T = typename K::T;
  // The stage's B (the dense slice's panel) and A (the blocks) descriptors at their first byte.
  const uint64_t baseB = K::kBKMajor ? matrixDescriptor(stageB, 16, 8 * K::kStep * 2, K::kSwizzleB)
                                     : matrixDescriptor(stageB, K::kStep * K::kPanelB * 2, 8 * K::kPanelB * 2,
                                                        K::kSwizzleB);
  const uint64_t baseA = K::kAKMajor ? matrixDescriptor(stageA, 16, 8 * K::kStep * 2, K::kSwizzleA)
                                     : matrixDescriptor(stageA, K::kStep * K::kPanelA * 2, 8 * K::kPanelA * 2,
                                                        K::kSwizzleA);
  if constexpr (K::kFeatureMajor) {
    // A: the block's 64 features x the step, as the stage holds it (K-major for Linear; for Matmul the step's rows
    // of the block, features contiguous: MN-major; for dW the step's tokens of X's 64 columns, MN-major). B: this
    // consumer's token rows of the dense slice (K-major), or for dW its members' dY panels side by side (MN-major,
    // the panels kStep x 64 apart).
    const uint32_t mine = consumer * K::kConsumerTokens * K::kStep * 2;
#pragma unroll
    for (int kk = 0; kk < K::kStep / 16; ++kk) {
      const uint64_t descA = advanceDescriptor(baseB, K::kBKMajor ? kk * 32 : kk * 16 * K::kPanelB * 2);
      const uint64_t descB = advanceDescriptor(baseA, mine + (K::kAKMajor ? kk * 32 : kk * 16 * K::kPanelA * 2));
      Wgmma<T, K::kConsumerTokens, K::kBKMajor ? 0 : 1, K::kAKMajor ? 0 : 1>::run(acc[0], descA, descB);
    }
  } else {
#pragma unroll
    for (int kk = 0; kk < K::kStep / 16; ++kk) {
      const uint64_t descB = advanceDescriptor(baseB, K::kBKMajor ? kk * 32 : kk * 16 * K::kPanelB * 2);
#pragma unroll
      for (int mi = 0; mi < K::kMmaM; ++mi) {
        uint32_t offsetA;
        if constexpr (K::kAKMajor) {
          offsetA = (consumer * K::kMmaM + mi) * 64 * K::kStep * 2 + kk * 32;
        } else {
          const int panel = (consumer * K::kMmaM + mi) * 64 / K::kPanelA;
          offsetA = panel * K::kStep * K::kPanelA * 2 + kk * 16 * K::kPanelA * 2;
        }
        Wgmma<T, K::kTileN, K::kAKMajor ? 0 : 1, K::kBKMajor ? 0 : 1>::run(acc[mi], advanceDescriptor(baseA, offsetA),
                                                                           descB);
      }
    }
  }
}

// A consumer warpgroup's products for one tile: zeroes `acc`, then runs `steps` pipeline steps, the first
// being the pipeline's step `first` (0 for a tile per CTA; a persistent CTA's steps run on across tiles).
// Each step's stage is released once the next step's products are issued; the last one is left to the caller.
template <class K>
__device__ __forceinline__ void consumeSteps(typename K::Acc& acc, uint8_t* smem, uint64_t* full, uint64_t* empty,
                                             int first, int steps, int consumer, int lane) {
  zeroAccumulators(acc);
  for (int step = 0; step < steps; ++step) {
    const int it = first + step;
    const int s = it % K::kStages;
    mbarrierWait(&full[s], (it / K::kStages) & 1);
    const uint32_t stageA = smemAddress(smem + s * K::kStageBytes), stageB = stageA + K::kABytes;
#pragma unroll
    for (int i = 0; i < K::kAccTiles; ++i) fenceRegisters(acc[i]);
    wgmmaFence();
    mmaStage<K>(acc, stageA, stageB, consumer);
    wgmmaCommit();
#pragma unroll
    for (int i = 0; i < K::kAccTiles; ++i) fenceRegisters(acc[i]);
    // The previous step's products are done once at most this step's group is pending: free its stage.
    wgmmaWait<1>();
    if (step > 0 && lane == 0) mbarrierArrive(&empty[(it - 1) % K::kStages]);
  }
  wgmmaWait<0>();
#pragma unroll
  for (int i = 0; i < K::kAccTiles; ++i) fenceRegisters(acc[i]);
}

// dW feature-major: fn(row, col, value) for each of this consumer's sums its thread holds, columns c and c + 8
// (c = 16 warpInGroup + g) of the consumer's rows 8j + c2 and + 1 (its members' rows, stacked).
template <class K, class Fn>
__device__ __forceinline__ void forFeatureMajorSums(typename K::Acc& acc, int consumer, int lane, int warpInGroup,
                                                    Fn&& fn) {
  const int g = lane >> 2, c2 = (lane & 3) * 2;
#pragma unroll
  for (int j = 0; j < K::kConsumerTokens / 8; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int e = 0; e < 2; ++e)
        fn(consumer * K::kConsumerTokens + j * 8 + c2 + e, warpInGroup * 16 + g + half * 8, acc[0][4 * j + 2 * half + e]);
}

// Writes this consumer's rows of the tile: per m64 tile, warp w of the group holds rows 16w + lane/4 (+8),
// two columns per 8.
template <class K>
__device__ __forceinline__ void storeTile(typename K::Acc& acc, const KernelArgs& args,
                                          const TileWork& work, const int32_t* indexB, int consumer, int lane,
                                          int warpInGroup) {
  using T = typename K::T;
  const int g = lane >> 2, c2 = (lane & 3) * 2;
  if constexpr (K::kFeatureMajor) {
    static_assert(K::kOp == Op::Sampled, "feature-major Linear/Matmul tiles are staged");
    forFeatureMajorSums<K>(acc, consumer, lane, warpInGroup, [&](int row, int col, float v) {
      storeBlockValue<T, K::R, K::C>(args, work, indexB, row, col, v);
    });
  } else {
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
            storeBlockPair<T, K::R, K::C>(args, work, indexB, row, col, v0, v1);
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
}

// Puts this consumer's accumulators (plus the bias, Linear) into its staged rows.
template <class K>
__device__ __forceinline__ void stageAccumulators(typename K::Acc& acc,
                                                  const StagedTile<typename K::T, K::kTileN>& staged,
                                                  const KernelArgs& args, int line, int lane, int warpInGroup) {
  using T = typename K::T;
  const int g = lane >> 2, c2 = (lane & 3) * 2;
  if constexpr (K::kFeatureMajor) {
    // This thread holds features f and f + 8 (f = 16 warpInGroup + g) of tokens 8j + c2 and + 1: per pair of j, four
    // 8x8 matrices ((j, f), (j, f + 8), (j + 1, f), (j + 1, f + 8)) that stmatrix.trans writes as token rows of 8
    // features, lane 8q + i giving row i of matrix q (8 rows 144 bytes apart fall in 32 different banks).
    const int f = warpInGroup * 16 + g;
    float bias0 = 0.0f, bias8 = 0.0f;
    if (K::kOp == Op::Linear && args.bias) {
      const T* bias = static_cast<const T*>(args.bias) + static_cast<int64_t>(line) * K::kTileN;
      bias0 = static_cast<float>(bias[f]);
      bias8 = static_cast<float>(bias[f + 8]);
    }
    const int q = lane >> 3;
    constexpr int kPitch = StagedTile<T, K::kTileN>::kPitch;
    const uint32_t base =
        smemAddress(staged.rows) + (((q >> 1) * 8 + (lane & 7)) * kPitch + warpInGroup * 16 + (q & 1) * 8) * 2;
    auto pair = [&](int j, int half) {
      const float bias = half ? bias8 : bias0;
      return packPair<T>(acc[0][4 * j + 2 * half] + bias, acc[0][4 * j + 2 * half + 1] + bias);
    };
#pragma unroll
    for (int j = 0; j < K::kConsumerTokens / 8; j += 2)
      stmatrixX4Trans(base + j * 8 * kPitch * 2, pair(j, 0), pair(j, 1), pair(j + 1, 0), pair(j + 1, 1));
  } else {
#pragma unroll
    for (int j = 0; j < K::kTileN / 8; ++j) {
      const int col = j * 8 + c2;
      const float2 bias = tileBias<T, K::kOp, K::kTileN>(args, line, col);
#pragma unroll
      for (int mi = 0; mi < K::kMmaM; ++mi)
#pragma unroll
        for (int half = 0; half < 2; ++half)
          staged.put(mi * 64 + warpInGroup * 16 + g + half * 8, col, acc[mi][4 * j + half * 2],
                     acc[mi][4 * j + half * 2 + 1], bias);
    }
  }
}

// Puts this consumer's accumulators (plus the bias, Linear) into its rows for a bulk tensor store: kTileN = 64
// elements (128 bytes) per row, 16-byte chunk c of row r at chunk c ^ (r % 8) (the 128-byte swizzle of the store's
// tensor map; the eight rows of a warp's store then fall in different banks). With `activated`, activation(Z) too,
// from Z as rounded to T (as a separate biasActivation pass over Z would compute it).
template <class K>
__device__ __forceinline__ void stageSwizzled(typename K::Acc& acc, typename K::T* z,
                                              typename K::T* activated, const KernelArgs& args, int line, int lane,
                                              int warpInGroup) {
  using T = typename K::T;
  static_assert(K::kTileN * 2 == 128, "rows of one 128-byte swizzle span");
  static_assert(!K::kFeatureMajor, "token-major accumulators");
  const int g = lane >> 2, c2 = (lane & 3) * 2;
#pragma unroll
  for (int j = 0; j < K::kTileN / 8; ++j) {
    const float2 bias = tileBias<T, K::kOp, K::kTileN>(args, line, j * 8 + c2);
#pragma unroll
    for (int mi = 0; mi < K::kMmaM; ++mi)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int row = mi * 64 + warpInGroup * 16 + g + half * 8;
        const int at = row * K::kTileN + ((j ^ (row & 7)) * 8) + c2;
        const uint32_t word = packPair<T>(acc[mi][4 * j + half * 2] + bias.x, acc[mi][4 * j + half * 2 + 1] + bias.y);
        *reinterpret_cast<uint32_t*>(z + at) = word;
        if (activated != nullptr) {
          const float2 pair = unpackPair<T>(word);
          *reinterpret_cast<uint32_t*>(activated + at) =
              packPair<T>(activateAs<true>(args.activation, pair.x), activateAs<true>(args.activation, pair.y));
        }
      }
  }
}

// Linear/Matmul: this consumer's rows of the tile through shared memory (StagedTile), in the pipeline
// buffers once both consumers are past their last product (both read every stage).
template <class K>
__device__ __forceinline__ void storeTileStaged(typename K::Acc& acc, const KernelArgs& args,
                                                const TileWork& work, uint8_t* smem, int consumer, int lane,
                                                int warpInGroup) {
  using T = typename K::T;
  using Staged = StagedTile<T, K::kTileN>;
  constexpr int kRows = K::kMmaM * 64;  // this consumer's rows (tokens)
  static_assert(Staged::bytes(K::kTileM) <= K::kStages * K::kStageBytes, "the staged tile fits the pipeline buffers");
  namedBarrierSync(1, 128 * K::kConsumers);
  const Staged staged{reinterpret_cast<T*>(smem) + consumer * kRows * Staged::kPitch};
  stageAccumulators<K>(acc, staged, args, work.line, lane, warpInGroup);
  namedBarrierSync(2 + consumer, 128);
  staged.template store<K::kOp>(kRows, args, work.tokenBase + consumer * kRows, work.line, threadIdx.x % 128, 128);
}

// dW with the tokens split over a cluster: this CTA's float32 sums of the tile (G blocks stacked by rows), rows of
// C + 4 floats in its pipeline buffers (kSplitPitch: 16-byte aligned rows, the float2 writes of a warp's 8 rows
// spread over the banks).
template <class K>
constexpr int kSplitPitch = K::C + 4;

template <class K>
__device__ __forceinline__ void stageSplitSums(typename K::Acc& acc, uint8_t* smem, int consumer, int lane,
                                               int warpInGroup) {
  static_assert(K::kOp == Op::Sampled, "dW tiles");
  static_assert(K::kTileM * kSplitPitch<K> * 4 <= K::kStages * K::kStageBytes, "the sums fit the pipeline buffers");
  float* sums = reinterpret_cast<float*>(smem);
  const int g = lane >> 2, c2 = (lane & 3) * 2;
  if constexpr (K::kFeatureMajor) {
    forFeatureMajorSums<K>(acc, consumer, lane, warpInGroup,
                           [&](int row, int col, float v) { sums[row * kSplitPitch<K> + col] = v; });
  } else {
#pragma unroll
    for (int mi = 0; mi < K::kMmaM; ++mi)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int row = (consumer * K::kMmaM + mi) * 64 + warpInGroup * 16 + g + half * 8;
#pragma unroll
        for (int j = 0; j < K::kTileN / 8; ++j)
          *reinterpret_cast<float2*>(sums + row * kSplitPitch<K> + j * 8 + c2) =
              make_float2(acc[mi][4 * j + half * 2], acc[mi][4 * j + half * 2 + 1]);
      }
  }
}

// Every thread of every CTA of the cluster (the split's CTAs of one group): once all have staged their sums, each CTA
// adds up its share of the tile's 16-byte chunks (chunk i goes to rank i % splits) over the cluster's CTAs in rank
// order, the split order of the float32 partial pass, and writes them to the group's blocks (none past work.count);
// then waits until no CTA reads its sums any more.
template <class K>
__device__ __forceinline__ void sumSplitsInCluster(const KernelArgs& args, const TileWork& work, uint8_t* smem,
                                                   const int32_t* indexB) {
  using T = typename K::T;
  constexpr int kChunksPerRow = K::C / 4;
  clusterSyncShared();
  const int splits = args.clusterSplits;
  const int rank = static_cast<int>(clusterRank());
  const uint32_t base = smemAddress(smem);
  for (int i = rank + splits * static_cast<int>(threadIdx.x); i < K::kTileM * kChunksPerRow;
       i += splits * K::kThreads) {
    const int row = i / kChunksPerRow, col = (i % kChunksPerRow) * 4;
    const int member = row / K::R;
    if (member >= work.count) continue;
    const uint32_t at = base + (row * kSplitPitch<K> + col) * 4;
    float4 sum = loadSharedCluster4(mapShared(at, 0));
    for (int q = 1; q < splits; ++q) {
      const float4 part = loadSharedCluster4(mapShared(at, q));
      sum.x += part.x;
      sum.y += part.y;
      sum.z += part.z;
      sum.w += part.w;
    }
    T* out = static_cast<T*>(args.out) + (static_cast<int64_t>(indexB[member]) * K::R + row % K::R) * K::C + col;
    *reinterpret_cast<uint2*>(out) = make_uint2(packPair<T>(sum.x, sum.y), packPair<T>(sum.z, sum.w));
  }
  clusterSyncShared();
}

template <class K>
__global__ void __launch_bounds__(K::kThreads, 1)
    bsrWgmmaKernel(const __grid_constant__ CUtensorMap mapA, const __grid_constant__ CUtensorMap mapB,
                   const KernelArgs args) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint8_t smemRaw[];
  // Aligned by offsetting the shared array itself: the compiler keeps the shared address space, so the
  // accesses below are shared-memory instructions, not generic ones.
  uint8_t* smem = smemRaw + ((1024 - (smemAddress(smemRaw) & 1023)) & 1023);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + K::kStages * K::kStageBytes);
  uint64_t* empty = full + K::kStages;
  int32_t* indexA = reinterpret_cast<int32_t*>(empty + K::kStages);
  int32_t* indexB = indexA + kIndexCapacity;
  const int tid = threadIdx.x;
  // Launched to overlap the kernel before (launchOverlapped): nothing global is read before it has ended.
  allowDependentLaunch();
  waitForPrimary();

  TileWork work;
  if (!tileWork<K::kOp, K::R, K::C, K::kTileM, K::kStep, K::kGroup>(args, work)) return;
  fillIndex<K::kOp, K::R, K::C>(args, work, indexA, indexB, tid, K::kThreads);
  initPipeline<K>(mapA, mapB, full, empty);

  // Sampled with the splits in a cluster: every thread of the CTA takes part in the sum through the cluster.
  const bool clusterSum = K::kOp == Op::Sampled && args.clusterSplits > 1;
  const int warpGroup = warpGroupOf(tid);
  if (warpGroup == 0) {
    setMaxRegistersDecrease<40>();
    if (tid != 0) {
      if constexpr (K::kOp == Op::Sampled)
        if (clusterSum) sumSplitsInCluster<K>(args, work, smem, indexB);
      return;
    }
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
    if constexpr (K::kOp == Op::Sampled)
      if (clusterSum) sumSplitsInCluster<K>(args, work, smem, indexB);
    return;
  }

  setMaxRegistersIncrease<232>();
  const int consumer = warpGroup - 1;
  const int lane = tid % 32, warpInGroup = (tid % 128) / 32;
  typename K::Acc acc;
  consumeSteps<K>(acc, smem, full, empty, 0, work.steps, consumer, lane);

  if constexpr (K::kOp == Op::Sampled) {
    if (clusterSum) {
      // Both consumers are past their last product (both read every stage): the stages take the accumulators.
      namedBarrierSync(1, 128 * K::kConsumers);
      stageSplitSums<K>(acc, smem, consumer, lane, warpInGroup);
      sumSplitsInCluster<K>(args, work, smem, indexB);
    } else {
      storeTile<K>(acc, args, work, indexB, consumer, lane, warpInGroup);
    }
  } else {
    storeTileStaged<K>(acc, args, work, smem, consumer, lane, warpInGroup);
  }
#endif
}

// cuTensorMapEncodeTiled through the runtime, so the addon needs no link to the driver library.
inline PFN_cuTensorMapEncodeTiled_v12000 encodeTiled() {
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
inline bool encodeMap(CUtensorMap* map, DType dtype, const void* base, int64_t inner, int64_t outer, int boxInner,
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

// Encodes both tensor maps and sets the tile fields of `args` for a tile kernel of traits K; `grid` gets one
// CTA per tile. False when a map cannot be encoded or the grid is too large.
template <class K>
bool prepareLaunch(DType dtype, KernelArgs& args, CUtensorMap& mapA, CUtensorMap& mapB, dim3& grid) {
  const int64_t valueRows = static_cast<int64_t>(args.nnzBlocks) * K::R;
  if constexpr (K::kOp == Op::Sampled) {
    if (!encodeMap(&mapA, dtype, args.a, args.rows, args.m, K::kPanelA, K::kStep) ||
        !encodeMap(&mapB, dtype, args.b, args.cols, args.m, K::kPanelB, K::kStep))
      return false;
    const int64_t splits = (args.m + args.tokensPerSplit - 1) / args.tokensPerSplit;
    if (args.groupList != nullptr) {
      // Whole groups, then the tail's pieces, in one dimension (KernelArgs::groupList).
      const int64_t ctas = int64_t{args.fullGroups} + int64_t{args.tailGroups} * args.tailSplits;
      if (args.groupSize != K::kGroup || args.clusterSplits > 1 || args.tailSplits < 1 || args.tailSplits > splits ||
          (args.tailGroups > 0 && args.partials == nullptr) || ctas < 1 || ctas > INT32_MAX)
        return false;
      grid = dim3(static_cast<unsigned>(ctas));
      return true;
    }
    const int64_t groups = (args.blockRows + K::kGroup - 1) / K::kGroup;
    if (groups > 65535 || splits > 65535) return false;
    if (args.clusterSplits > 1 && splits != args.clusterSplits) return false;
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
    grid = dim3(static_cast<unsigned>(tilesM * tilesN));
  }
  return true;
}

// Launches `kernel`, a tile kernel of traits K, with its dynamic shared memory.
// dW's splits in clusters (args.clusterSplits > 1, the grid's z the split count): one cluster per group.
template <class K, class Kernel>
void launchKernel(Kernel kernel, dim3 grid, const CUtensorMap& mapA, const CUtensorMap& mapB, const KernelArgs& args,
                  cudaStream_t stream) {
  BS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, K::kSmemBytes));
  if (K::kOp == Op::Sampled && args.clusterSplits > 1) {
    cudaLaunchConfig_t config{};
    config.gridDim = grid;
    config.blockDim = dim3(K::kThreads);
    config.dynamicSmemBytes = K::kSmemBytes;
    config.stream = stream;
    cudaLaunchAttribute attribute[1];
    attribute[0].id = cudaLaunchAttributeClusterDimension;
    attribute[0].val.clusterDim.x = 1;
    attribute[0].val.clusterDim.y = 1;
    attribute[0].val.clusterDim.z = static_cast<unsigned>(args.clusterSplits);
    config.attrs = attribute;
    config.numAttrs = 1;
    BS_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, mapA, mapB, args));
    BS_LAUNCH_CHECK("bsrWgmmaKernel");
  } else {
    launchOverlapped("launch of bsrWgmmaKernel", kernel, grid, dim3(K::kThreads), K::kSmemBytes, stream, mapA, mapB,
                     args);
  }
}

// One CTA per tile of bsrWgmmaKernel.
template <class K>
bool launch(DType dtype, const KernelArgs& argsIn, cudaStream_t stream) {
  KernelArgs args = argsIn;
  CUtensorMap mapA, mapB;
  dim3 grid;
  if (!prepareLaunch<K>(dtype, args, mapA, mapB, grid)) return false;
  launchKernel<K>(bsrWgmmaKernel<K>, grid, mapA, mapB, args, stream);
  return true;
}

// How a persistent CTA's tiles leave it: from the consumers' registers (storeTile), staged in shared memory and
// copied out by the consumers (the dispatched tile), staged by the consumers and copied out by the producer
// warpgroup's three idle warps (the store helpers) while the consumers go on to the next tile's products, or
// staged by the consumers (swizzled, with a fused activation's second output beside) and written by bulk tensor
// stores that one thread per consumer issues (Bulk: the copy engine takes both output streams off the consumers'
// path; 64x64 blocks). The last three are kept for measurement (dev variants 2, 3, 10 and 13): on an H200 none was
// faster (docs/kernels.md).
enum class PersistentStore { Registers, Consumers, Helpers, Bulk };

// The output's tensor maps of a Bulk store (Z, and activation(Z) when args.activated is set); unused otherwise.
struct StoreMaps {
  CUtensorMap out;
  CUtensorMap activated;
};

// Named barriers of the helpers' hand-over, per consumer: its rows are staged (the consumer arrives, the helpers
// wait), and its buffer is free again (the helpers arrive, the consumer waits before staging the next tile).
constexpr int kStagedBarrier = 4, kFreeBarrier = 6;
constexpr int kHelperThreads = 96;

// The producer warp of the persistent kernels: for each of this CTA's tiles (blockIdx.x, + gridDim.x, ...) in turn,
// every step's copies into the ring of stages, once the stage is free. It reads each tile's block offsets itself,
// 32 at a time, one per lane; lane 0 issues the copies.
template <class K>
__device__ __forceinline__ void persistentProducer(const CUtensorMap& mapA, const CUtensorMap& mapB,
                                                   const KernelArgs& args, uint8_t* smem, uint64_t* full,
                                                   uint64_t* empty, int lane) {
  const int tiles = args.tilesM * args.tilesN;
  constexpr int kStepsPerBlock = (K::kOp == Op::Linear ? K::C : K::R) / K::kStep;
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
}

// Linear/Matmul, persistent: one CTA per SM walks tiles blockIdx.x, + gridDim.x, ... with one pipeline
// that runs on across tiles, so the producer loads the next tile while this one is stored. With a staged store
// each consumer stages its rows in a buffer of its own past the barriers (the pipeline buffers are taking the
// next tile's loads); the Helpers store hands that buffer to the store helpers, so the copy out of it (and, for
// Linear with args.activated, the activation's second output) is off the consumers' path.
// The producer warp is persistentProducer.
template <class K, PersistentStore kStore>
__global__ void __launch_bounds__(K::kThreads, 1)
    bsrWgmmaPersistentKernel(const __grid_constant__ CUtensorMap mapA, const __grid_constant__ CUtensorMap mapB,
                             const KernelArgs args, const __grid_constant__ StoreMaps storeMaps) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(K::kOp != Op::Sampled, "Sampled tiles are not persistent");
  static_assert(K::kConsumers == 2, "the helpers' barriers are laid out for two consumers");
  constexpr bool kStaged = kStore == PersistentStore::Consumers || kStore == PersistentStore::Helpers;
  using Staged = StagedTile<typename K::T, K::kTileN>;
  constexpr int kRows = K::kMmaM * 64;  // one consumer's rows (tokens) of a tile
  extern __shared__ uint8_t smemRaw[];
  // Aligned by offsetting the shared array itself: the compiler keeps the shared address space, so the
  // accesses below are shared-memory instructions, not generic ones.
  uint8_t* smem = smemRaw + ((1024 - (smemAddress(smemRaw) & 1023)) & 1023);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + K::kStages * K::kStageBytes);
  uint64_t* empty = full + K::kStages;
  const int tid = threadIdx.x;
  const int tiles = args.tilesM * args.tilesN;
  initPipeline<K>(mapA, mapB, full, empty);
  // Launched to overlap the kernel before (launchOverlapped): its set-up above, nothing global before it has ended.
  allowDependentLaunch();
  waitForPrimary();

  // Consumer c's staged rows: past the barriers, in place of the (unused) index arrays and more.
  auto stagedRows = [&](int c) {
    return Staged{reinterpret_cast<typename K::T*>(empty + K::kStages) + c * kRows * Staged::kPitch};
  };
  // Bulk: consumer c's rows of Z (which = 0) and of the activation (1), 1024-byte aligned past the barriers.
  auto bulkRows = [&](int c, int which) {
    return reinterpret_cast<typename K::T*>(smem + K::kStages * K::kStageBytes + 1024) +
           (2 * c + which) * kRows * K::kTileN;
  };
  const int warpGroup = warpGroupOf(tid);
  if (warpGroup == 0) {
    setMaxRegistersDecrease<40>();
    if (tid >= 32) {
      if constexpr (kStore == PersistentStore::Helpers) {
        // The store helpers: for each tile, each consumer's rows once staged, then its buffer handed back (but
        // for the CTA's last tile, whose buffer no one takes again).
        for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
          TileWork work;
          tileAt<K::kOp, K::R, K::C, K::kTileM, K::kStep>(args, tile, work);
#pragma unroll 1
          for (int c = 0; c < K::kConsumers; ++c) {
            namedBarrierSync(kStagedBarrier + c, 128 + kHelperThreads);
            stagedRows(c).template store<K::kOp, false>(kRows, args, work.tokenBase + c * kRows, work.line, tid - 32,
                                                        kHelperThreads);
            if (tile + static_cast<int>(gridDim.x) < tiles) namedBarrierArrive(kFreeBarrier + c, 128 + kHelperThreads);
          }
        }
      }
      return;
    }
    persistentProducer<K>(mapA, mapB, args, smem, full, empty, tid);
    return;
  }

  setMaxRegistersIncrease<232>();
  const int consumer = warpGroup - 1;
  const int lane = tid % 32, warpInGroup = (tid % 128) / 32;
  typename K::Acc acc;
  int it = 0;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    TileWork work;
    tileAt<K::kOp, K::R, K::C, K::kTileM, K::kStep>(args, tile, work);
    consumeSteps<K>(acc, smem, full, empty, it, work.steps, consumer, lane);
    it += work.steps;
    // This tile's last stage is free once its products are done.
    if (work.steps > 0 && lane == 0) mbarrierArrive(&empty[(it - 1) % K::kStages]);
    if constexpr (kStore == PersistentStore::Helpers) {
      // The helpers copied the previous tile's rows out of this buffer (none before the first tile), then take
      // this tile's once all 128 threads have staged theirs.
      const Staged staged = stagedRows(consumer);
      if (tile != static_cast<int>(blockIdx.x)) namedBarrierSync(kFreeBarrier + consumer, 128 + kHelperThreads);
      stageAccumulators<K>(acc, staged, args, work.line, lane, warpInGroup);
      namedBarrierArrive(kStagedBarrier + consumer, 128 + kHelperThreads);
    } else if constexpr (kStore == PersistentStore::Bulk) {
      // One thread per consumer issues its bulk stores; its buffers are free once the previous tile's stores
      // have read them (long done by now: a tile's products ran since).
      const bool leader = threadIdx.x % 128 == 0;
      typename K::T* z = bulkRows(consumer, 0);
      typename K::T* activated = args.activated ? bulkRows(consumer, 1) : nullptr;
      if (leader) bulkWaitRead<0>();
      namedBarrierSync(2 + consumer, 128);
      stageSwizzled<K>(acc, z, activated, args, work.line, lane, warpInGroup);
      fenceProxyAsync();
      namedBarrierSync(2 + consumer, 128);
      const int64_t token0 = work.tokenBase + consumer * kRows;
      if (leader && token0 < args.m) {
        const int32_t feature = work.line * K::kTileN;
        tmaStore2d(&storeMaps.out, z, feature, static_cast<int32_t>(token0));
        if (activated != nullptr) tmaStore2d(&storeMaps.activated, activated, feature, static_cast<int32_t>(token0));
        bulkCommit();
      }
    } else if constexpr (kStaged) {
      // Each consumer stages its rows in its own buffer, then stores whole rows.
      const Staged staged = stagedRows(consumer);
      namedBarrierSync(2 + consumer, 128);  // the previous tile's rows are out
      stageAccumulators<K>(acc, staged, args, work.line, lane, warpInGroup);
      namedBarrierSync(2 + consumer, 128);
      staged.template store<K::kOp>(kRows, args, work.tokenBase + consumer * kRows, work.line, threadIdx.x % 128,
                                    128);
    } else {
      storeTile<K>(acc, args, work, nullptr, consumer, lane, warpInGroup);
    }
  }
  // The CTA's shared memory must outlive its last bulk stores.
  if constexpr (kStore == PersistentStore::Bulk)
    if (threadIdx.x % 128 == 0) bulkWait<0>();
#endif
}

// Named barriers that order the ping-pong consumers' main loops: consumer c waits on kOrderBarrier + c for the other
// consumer's arrival.
constexpr int kOrderBarrier = 8;

// Linear/Matmul, persistent, with the consumers in turn ("ping-pong"): one CTA per SM walks tiles blockIdx.x,
// + gridDim.x, ... as bsrWgmmaPersistentKernel does, but each tile of kTileM tokens belongs to one consumer
// warpgroup, the CTA's tiles alternating between the two. A consumer's main loop starts once the other's previous
// one is done, so the tensor cores serve one consumer at a time and each consumer's epilogue (staging and storing its
// rows) runs during the other's main loop: the stages keep draining and the producer keeps loading while a tile is
// stored. The order also keeps every stage a consumer waits on in the phase it expects (the steps of the other's
// tiles before it have been consumed). Traits with kPingPong.
template <class K>
__global__ void __launch_bounds__(K::kThreads, 1)
    bsrWgmmaPingPongKernel(const __grid_constant__ CUtensorMap mapA, const __grid_constant__ CUtensorMap mapB,
                           const KernelArgs args) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(K::kPingPong && K::kOp != Op::Sampled && (K::kConsumers == 2 || K::kConsumers == 3),
                "two or three consumers taking whole tiles");
  using T = typename K::T;
  using Staged = StagedTile<T, K::kTileN>;
  extern __shared__ uint8_t smemRaw[];
  uint8_t* smem = smemRaw + ((1024 - (smemAddress(smemRaw) & 1023)) & 1023);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + K::kStages * K::kStageBytes);
  uint64_t* empty = full + K::kStages;
  const int tid = threadIdx.x;
  const int tiles = args.tilesM * args.tilesN;
  initPipeline<K>(mapA, mapB, full, empty);
  // Launched to overlap the kernel before (launchOverlapped): its set-up above, nothing global before it has ended.
  allowDependentLaunch();
  waitForPrimary();

  const int warpGroup = warpGroupOf(tid);
  if (warpGroup == 0) {
    setMaxRegistersDecrease<40>();
    if (tid < 32) persistentProducer<K>(mapA, mapB, args, smem, full, empty, tid);
    return;
  }

  // Three consumers share what two have: (65536 - 128 x 40) / 384 registers, rounded down to a multiple of 8.
  setMaxRegistersIncrease<K::kConsumers == 2 ? 232 : 152>();
  const int consumer = warpGroup - 1;
  const int lane = tid % 32, warpInGroup = (tid % 128) / 32;
  // This consumer's staged rows, past the barriers.
  const Staged staged{reinterpret_cast<T*>(empty + K::kStages) + consumer * K::kTileM * Staged::kPitch};
  typename K::Acc acc;
  int it = 0, local = 0;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, ++local) {
    TileWork work;
    tileAt<K::kOp, K::R, K::C, K::kTileM, K::kStep>(args, tile, work);
    if (local % K::kConsumers != consumer) {
      it += work.steps;
      continue;
    }
    if (local > 0) namedBarrierSync(kOrderBarrier + consumer, 256);
    consumeSteps<K>(acc, smem, full, empty, it, work.steps, 0, lane);
    it += work.steps;
    if (tile + static_cast<int>(gridDim.x) < tiles)
      namedBarrierArrive(kOrderBarrier + (consumer + 1) % K::kConsumers, 256);
    // This tile's last stage is free once its products are done.
    if (work.steps > 0 && lane == 0) mbarrierArrive(&empty[(it - 1) % K::kStages]);
    namedBarrierSync(2 + consumer, 128);  // this consumer's previous rows are out
    stageAccumulators<K>(acc, staged, args, work.line, lane, warpInGroup);
    namedBarrierSync(2 + consumer, 128);
    staged.template store<K::kOp>(K::kTileM, args, work.tokenBase, work.line, tid % 128, 128);
  }
#endif
}

// A ping-pong launch: one CTA per SM (or per tile, when there are fewer).
template <class K>
bool launchPingPong(DType dtype, const KernelArgs& argsIn, cudaStream_t stream, int numSms) {
  KernelArgs args = argsIn;
  CUtensorMap mapA, mapB;
  dim3 grid;
  if (numSms <= 0 || !prepareLaunch<K>(dtype, args, mapA, mapB, grid)) return false;
  grid.x = std::min<unsigned>(grid.x, static_cast<unsigned>(numSms));
  // The stages, their barriers, then each consumer's staged rows.
  constexpr int kBytes = 1024 + K::kStages * (K::kStageBytes + 16) +
                         K::kConsumers * StagedTile<typename K::T, K::kTileN>::bytes(K::kTileM);
  static_assert(kBytes <= 227 * 1024, "fits an H100's shared memory");
  auto kernel = bsrWgmmaPingPongKernel<K>;
  BS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes));
  launchOverlapped("launch of bsrWgmmaPingPongKernel", kernel, grid, dim3(K::kThreads), kBytes, stream, mapA, mapB,
                   args);
  return true;
}

// A persistent launch: one CTA per SM (or per tile, when there are fewer).
template <class K, PersistentStore kStore = PersistentStore::Registers>
bool launchPersistent(DType dtype, const KernelArgs& argsIn, cudaStream_t stream, int numSms) {
  KernelArgs args = argsIn;
  CUtensorMap mapA, mapB;
  dim3 grid;
  if (numSms <= 0 || !prepareLaunch<K>(dtype, args, mapA, mapB, grid)) return false;
  grid.x = std::min<unsigned>(grid.x, static_cast<unsigned>(numSms));
  StoreMaps storeMaps{};
  constexpr int kRows = K::kMmaM * 64;
  if constexpr (kStore == PersistentStore::Bulk) {
    // Each consumer's rows as one box of the output: kRows tokens x the tile's 64 features (columns).
    const int64_t width = K::kOp == Op::Linear ? args.rows : args.cols;
    if (!encodeMap(&storeMaps.out, dtype, args.out, width, args.m, K::kTileN, kRows)) return false;
    if (args.activated && !encodeMap(&storeMaps.activated, dtype, args.activated, width, args.m, K::kTileN, kRows))
      return false;
  }
  // Registers: the pipeline and index arrays alone. Staged rows take the place of the (unused) index arrays and
  // more; Bulk's rows (Z and the activation, per consumer) start at the next 1024 bytes past the barriers.
  constexpr int kBytes =
      kStore == PersistentStore::Registers ? K::kSmemBytes
      : kStore == PersistentStore::Bulk    ? 1024 + K::kStages * K::kStageBytes + 1024 + 2 * K::kConsumers * kRows * K::kTileN * 2
                                           : K::kSmemBytes + StagedTile<typename K::T, K::kTileN>::bytes(K::kTileM);
  static_assert(kBytes <= 227 * 1024, "fits an H100's shared memory");
  static_assert(2 * K::kStages * 8 <= 1024, "the barriers fit before the bulk rows");
  auto kernel = bsrWgmmaPersistentKernel<K, kStore>;
  BS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes));
  launchOverlapped("launch of bsrWgmmaPersistentKernel", kernel, grid, dim3(K::kThreads), kBytes, stream, mapA, mapB,
                   args, storeMaps);
  return true;
}


// The dispatched tiles for R x C blocks (the squares of 32, 64 and 128 in bsr_wgmma.cu; the rectangles of
// kWgmmaShapes in bsr_wgmma_shapes.cu), chosen by the output tile's width kWidth: a block row's R features (Linear),
// a block column's C (Matmul, dW). A rectangle's tile is the square's of its width in tokens, stages and shared memory
// where its reduction side is 64 or more (steps 64 deep, two per block where that side is 128).
// Measured best on an H100 and an H200 for the squares (docs/kernels.md):
// - Linear/Matmul: 256 tokens at widths 32 and 64, 128 at 128 (kWideTile: 256); at width 64 the persistent
//   feature-major tile (kPersistentTile) and the feature-major ping-pong tile of 256 tokens per consumer
//   (kPingPongTile, three stages beside both consumers' staged rows); at 128 the ping-pong tile of 128 tokens per
//   consumer (four stages).
// - dW: 128 rows of blocks (128 / R blocks of a column per CTA).
// A rectangle whose side along the reduction is 32 (bsrLinear at 64x32, bsrMatmul at 32x64) steps 32 deep, as 32x32
// does: the default tile alone (the persistent and ping-pong tiles at width 64 are feature-major, 64 deep), with
// 32x32's eight stages.
template <typename T, Op kOp, int R, int C>
struct WgmmaTiles {
  static constexpr int kWidth = kOp == Op::Linear ? R : C;
  static constexpr int kStep = kOp == Op::Linear ? cmin(C, 64) : kOp == Op::Matmul ? cmin(R, 64) : 64;
  static constexpr int kDefaultTokens = kOp == Op::Sampled || kWidth == 128 ? 128 : 256;
  static constexpr int kDefaultStages =
      kWidth == 32 || kStep == 32 ? 8 : kWidth == 64 ? (kOp == Op::Sampled ? 7 : 5) : 6;
  using Default = WgmmaShapeTraits<T, kOp, R, C, kDefaultTokens, kDefaultStages>;
  using Wide = WgmmaShapeTraits<T, kOp, R, C, 256, 4>;
  using Persistent = WgmmaShapeTraits<T, kOp, R, C, kPersistentTileTokens, 4, false, true>;
  using PingPong64 = WgmmaShapeTraits<T, kOp, R, C, kPingPongTile64Tokens, 3, true, true>;
  using PingPong128 = WgmmaShapeTraits<T, kOp, R, C, kPingPongTileTokens, 4, true>;
  using PingPong64x3 = WgmmaShapeTraits<T, kOp, R, C, kPingPong3TileTokens, 4, true, true, 3>;
  // Three consumers of kPingPong3Tile128Tokens at width 128 (six stages and three staged rows, 196 KB; three of 128
  // tokens spill), for bsrLinearActivation's fused epilogue and for Linear and plain dX with few tiles.
  using PingPong128x3 = WgmmaShapeTraits<T, kOp, R, C, kPingPong3Tile128Tokens, 6, true, false, 3>;
};

// Launches tile `variant` (a TileVariant) of WgmmaTiles<T, kOp, R, C>; false when it has no such tile.
template <typename T, Op kOp, int R, int C>
bool launchTile(DType dtype, const KernelArgs& args, int variant, int numSms, cudaStream_t stream) {
  using Tiles = WgmmaTiles<T, kOp, R, C>;
  if (variant == kDefaultTile) return launch<typename Tiles::Default>(dtype, args, stream);
  if constexpr (kOp != Op::Sampled && Tiles::kWidth == 64 && Tiles::kStep == 64) {
    if (variant == kPersistentTile)
      return launchPersistent<typename Tiles::Persistent, PersistentStore::Consumers>(dtype, args, stream, numSms);
    if (variant == kPingPongTile) return launchPingPong<typename Tiles::PingPong64>(dtype, args, stream, numSms);
    if (variant == kPingPong3Tile) return launchPingPong<typename Tiles::PingPong64x3>(dtype, args, stream, numSms);
  }
  if constexpr (kOp != Op::Sampled && Tiles::kWidth == 128) {
    if (variant == kWideTile) return launch<typename Tiles::Wide>(dtype, args, stream);
    if (variant == kPingPongTile) return launchPingPong<typename Tiles::PingPong128>(dtype, args, stream, numSms);
    // Linear, and plain dX (with the activation's backward in dX's epilogue it lost to the two consumers on most
    // shapes, so it has no store rows there: wgmmaStoreRows).
    if (variant == kPingPong3Tile) return launchPingPong<typename Tiles::PingPong128x3>(dtype, args, stream, numSms);
  }
  return false;
}

}  // namespace bs::tc::sm90
