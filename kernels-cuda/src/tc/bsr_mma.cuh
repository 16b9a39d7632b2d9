// The sm_80+ path's parts shared by the dispatched tiles (bsr_mma.cu) and the variant kept for
// measurement (kernels-cuda/dev/): mma.sync m16n8k16 with float32 accumulators, operands staged through
// a multi-stage cp.async pipeline into swizzled shared memory and read with ldmatrix (.trans for MN-major
// operands). One kernel template serves the three products; see tc_kernels.h for how each maps onto A and B.
#pragma once

#include <algorithm>

#include "../kernels/overlap.cuh"
#include "ptx.cuh"
#include "tc_kernels.h"
#include "tile_work.cuh"

namespace bs::tc::sm80 {

constexpr int cmin(int a, int b) { return a < b ? a : b; }

constexpr int cmax(int a, int b) { return a > b ? a : b; }
constexpr int roundUp(int a, int b) { return (a + b - 1) / b * b; }

// A tile of R x C blocks: kTileM tokens (dW: G * R output rows) x one block row (Linear) or column (Matmul, dW), a
// kWarpsM x kWarpsN grid of warps and kStages pipeline stages.
template <typename T_, Op kOp_, int kR_, int kC_, int kTileM_, int kWarpsM_, int kWarpsN_, int kStages_>
struct MmaShapeTraits {
  using T = T_;
  static constexpr Op kOp = kOp_;
  static constexpr int R = kR_, C = kC_;
  static constexpr int kTileM = kTileM_;  // Linear/Matmul: tokens; Sampled: G * R output rows
  static constexpr int kTileN = kOp == Op::Linear ? R : C;
  // The side of a block the reduction walks: its columns (Linear) or rows (Matmul); dW walks the tokens.
  static constexpr int kSide = kOp == Op::Linear ? C : kOp == Op::Matmul ? R : 0;
  // Depth of one pipeline step: a slice of a block (Linear/Matmul) or 32 tokens (Sampled). Blocks narrower than 32
  // along the reduction share a 32-deep step, kEntries of them (the last step of a line zero-filled past its end).
  static constexpr int kEntries = kOp != Op::Sampled && kSide < 32 ? 32 / kSide : 1;
  static constexpr int kStep = kOp == Op::Sampled ? 32 : kSide < 32 ? 32 : cmin(kSide, 64);
  static constexpr int kGroup = kOp == Op::Sampled ? kTileM / R : 1;
  static constexpr bool kAKMajor = kOp != Op::Sampled;
  static constexpr bool kBKMajor = kOp == Op::Linear;
  // Panel widths (elements per swizzled row): K-major operands are one panel kStep wide, MN-major ones panels of
  // 32 or 64 (an operand 16 wide fills half of a 32-wide panel).
  static constexpr int kPanelA = kAKMajor ? kStep : cmax(cmin(R, 64), 32);
  static constexpr int kPanelB = kBKMajor ? kStep : cmax(cmin(C, 64), 32);
  static constexpr int kWarpsM = kWarpsM_, kWarpsN = kWarpsN_, kStages = kStages_;
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kWarpM = kTileM / kWarpsM, kWarpN = kTileN / kWarpsN;
  static constexpr int kMmaM = kWarpM / 16, kMmaN = kWarpN / 8;
  static constexpr int kABytes = (kAKMajor ? kTileM : roundUp(kTileM, kPanelA)) * kStep * 2;
  static constexpr int kBBytes = (kBKMajor ? kTileN : roundUp(kTileN, kPanelB)) * kStep * 2;
  static constexpr int kStageBytes = kABytes + kBBytes;
  static constexpr int kSmemBytes = 1024 + kStages * kStageBytes + 2 * kIndexCapacity * 4;

  static_assert(kOp != Op::Sampled || kTileM % R == 0, "a Sampled tile holds whole blocks");
  static_assert(kWarpM % 16 == 0 && kWarpN % 16 == 0, "warp tiles are multiples of 16");
  static_assert(kOp == Op::Sampled || kSide % 16 == 0, "blocks are multiples of 16 along the reduction");
  static_assert(kStageBytes % 1024 == 0, "every stage's panels start on a 1024-byte boundary");
};

// The square tiles (R = C = kBlock).
template <typename T, Op kOp, int kBlock, int kTileM, int kWarpsM, int kWarpsN, int kStages>
using MmaTraits = MmaShapeTraits<T, kOp, kBlock, kBlock, kTileM, kWarpsM, kWarpsN, kStages>;

// Calls body(id) for id = tid, tid + threads, ... below kTotal: each thread's share of a copy of kTotal chunks (the
// last round partial when kTotal is not a multiple of the threads).
template <int kTotal, int kThreads, class Body>
__device__ __forceinline__ void forChunks(int tid, Body&& body) {
#pragma unroll
  for (int it = 0; it < (kTotal + kThreads - 1) / kThreads; ++it) {
    const int id = tid + it * kThreads;
    if (kTotal % kThreads != 0 && id >= kTotal) break;
    body(id);
  }
}

// Loads the A and B tiles of pipeline step `step` into one stage.
template <class K>
struct StepLoader {
  using T = typename K::T;
  const KernelArgs& args;
  const TileWork& work;
  const int32_t* indexA;
  const int32_t* indexB;

  __device__ __forceinline__ void operator()(int step, uint8_t* stage, int tid) const {
    const T* a = static_cast<const T*>(args.a);
    const T* b = static_cast<const T*>(args.b);
    const uint32_t aSmem = smemAddress(stage), bSmem = aSmem + K::kABytes;
    if constexpr (K::kOp == Op::Linear || K::kOp == Op::Matmul) {
      const int64_t lda = K::kOp == Op::Linear ? args.cols : args.rows;
      constexpr int kChunksPerRow = K::kStep / 8;
      if constexpr (K::kEntries == 1) {
        constexpr int kStepsPerBlock = K::kSide / K::kStep;
        const int entry = step / kStepsPerBlock, slice = (step % kStepsPerBlock) * K::kStep;
        const int64_t aColumn = entryColumn<K::kOp, K::R, K::C>(args, work, indexA, entry) + slice;
        // A: tokens x kStep, K-major.
        forChunks<K::kTileM * kChunksPerRow, K::kThreads>(tid, [&](int id) {
          const int row = id / kChunksPerRow, chunk = id % kChunksPerRow;
          const int64_t token = work.tokenBase + row;
          const bool valid = token < args.m;
          const T* src = a + (valid ? token * lda + aColumn + chunk * 8 : 0);
          cpAsync16(aSmem + panelOffset<K::kPanelA>(row, chunk), src, valid);
        });
        if constexpr (K::kOp == Op::Linear) {
          // B: the R x kStep slice of block (first + entry), K-major.
          const T* block = b + static_cast<int64_t>(work.first + entry) * K::R * K::C + slice;
          forChunks<K::R * kChunksPerRow, K::kThreads>(tid, [&](int id) {
            const int row = id / kChunksPerRow, chunk = id % kChunksPerRow;
            cpAsync16(bSmem + panelOffset<K::kPanelB>(row, chunk), block + row * K::C + chunk * 8, true);
          });
        } else {
          // B: rows [slice, slice + kStep) of the entry's value block, all C columns, N-major panels.
          const int64_t valueBlock = entryValue(args, work, indexB, entry);
          const T* block = b + (valueBlock * K::R + slice) * K::C;
          constexpr int kChunksPerK = K::C / 8, kPanelChunks = K::kPanelB / 8;
          forChunks<K::kStep * kChunksPerK, K::kThreads>(tid, [&](int id) {
            const int krow = id / kChunksPerK, chunk = id % kChunksPerK;
            const uint32_t offset = (chunk / kPanelChunks) * (K::kStep * K::kPanelB * 2) +
                                    panelOffset<K::kPanelB>(krow, chunk % kPanelChunks);
            cpAsync16(bSmem + offset, block + krow * K::C + chunk * 8, true);
          });
        }
      } else {
        // kEntries blocks per step, kSide deep each: K-major chunk c belongs to entry step * kEntries + c /
        // kChunksPerSide. Entries past the line's end read as zeros in both operands (a stale stage's value times a
        // zero could be NaN).
        constexpr int kChunksPerSide = K::kSide / 8;
        const int first = step * K::kEntries;
        // A: tokens x kStep, K-major, each entry's kSide columns (rows of dY) where its block sits.
        forChunks<K::kTileM * kChunksPerRow, K::kThreads>(tid, [&](int id) {
          const int row = id / kChunksPerRow, chunk = id % kChunksPerRow, entry = first + chunk / kChunksPerSide;
          const int64_t token = work.tokenBase + row;
          const bool valid = token < args.m && entry < work.count;
          const T* src =
              a + (valid ? token * lda + entryColumn<K::kOp, K::R, K::C>(args, work, indexA, entry) +
                               (chunk % kChunksPerSide) * 8
                         : 0);
          cpAsync16(aSmem + panelOffset<K::kPanelA>(row, chunk), src, valid);
        });
        if constexpr (K::kOp == Op::Linear) {
          // B: R rows x kStep, K-major; row r's chunks from row r of each entry's block (consecutive in values).
          forChunks<K::R * kChunksPerRow, K::kThreads>(tid, [&](int id) {
            const int row = id / kChunksPerRow, chunk = id % kChunksPerRow, entry = first + chunk / kChunksPerSide;
            const bool valid = entry < work.count;
            const T* src =
                b + (valid ? (static_cast<int64_t>(work.first + entry) * K::R + row) * K::C + (chunk % kChunksPerSide) * 8
                           : 0);
            cpAsync16(bSmem + panelOffset<K::kPanelB>(row, chunk), src, valid);
          });
        } else {
          // B: kStep rows (the R rows of each entry's value block) x C columns, N-major panels.
          constexpr int kChunksPerK = K::C / 8, kPanelChunks = K::kPanelB / 8;
          forChunks<K::kStep * kChunksPerK, K::kThreads>(tid, [&](int id) {
            const int krow = id / kChunksPerK, chunk = id % kChunksPerK, entry = first + krow / K::R;
            const bool valid = entry < work.count;
            const T* src =
                b + (valid ? (static_cast<int64_t>(entryValue(args, work, indexB, entry)) * K::R + krow % K::R) * K::C +
                                 chunk * 8
                           : 0);
            const uint32_t offset = (chunk / kPanelChunks) * (K::kStep * K::kPanelB * 2) +
                                    panelOffset<K::kPanelB>(krow, chunk % kPanelChunks);
            cpAsync16(bSmem + offset, src, valid);
          });
        }
      }
    } else {
      // Sampled: A = dY^T (G*R rows, M-major), B = X (C columns, N-major), kStep tokens deep.
      const int64_t token0 = work.tokenBase + static_cast<int64_t>(step) * K::kStep;
      constexpr int kChunksPerKA = K::kTileM / 8, kPanelChunksA = K::kPanelA / 8;
      forChunks<K::kStep * kChunksPerKA, K::kThreads>(tid, [&](int id) {
        const int krow = id / kChunksPerKA, chunk = id % kChunksPerKA;
        const int member = chunk * 8 / K::R, within = chunk * 8 % K::R;
        const int64_t token = token0 + krow;
        const bool valid = token < work.tokenEnd && member < work.count;
        const T* src = a + (valid ? token * args.rows + indexA[member] + within : 0);
        const uint32_t offset = (chunk / kPanelChunksA) * (K::kStep * K::kPanelA * 2) +
                                panelOffset<K::kPanelA>(krow, chunk % kPanelChunksA);
        cpAsync16(aSmem + offset, src, valid);
      });
      constexpr int kChunksPerKB = K::C / 8, kPanelChunksB = K::kPanelB / 8;
      const int64_t bColumn = static_cast<int64_t>(work.line) * K::C;
      forChunks<K::kStep * kChunksPerKB, K::kThreads>(tid, [&](int id) {
        const int krow = id / kChunksPerKB, chunk = id % kChunksPerKB;
        const int64_t token = token0 + krow;
        const bool valid = token < work.tokenEnd;
        const T* src = b + (valid ? token * args.cols + bColumn + chunk * 8 : 0);
        const uint32_t offset = (chunk / kPanelChunksB) * (K::kStep * K::kPanelB * 2) +
                                panelOffset<K::kPanelB>(krow, chunk % kPanelChunksB);
        cpAsync16(bSmem + offset, src, valid);
      });
    }
  }
};

// One warp's share of a stage: ldmatrix the fragments of each k16 slice, then the mma grid.
template <class K>
__device__ __forceinline__ void computeStage(uint32_t aSmem, uint32_t bSmem, int warpM, int warpN, int lane,
                                             float (&acc)[K::kMmaM][K::kMmaN][4]) {
  const int quad = lane >> 3, r8 = lane & 7;
#pragma unroll
  for (int kk = 0; kk < K::kStep / 16; ++kk) {
    uint32_t af[K::kMmaM][4], bf[K::kMmaN][2];
#pragma unroll
    for (int mt = 0; mt < K::kMmaM; ++mt) {
      const int m0 = warpM * K::kWarpM + mt * 16;
      if constexpr (K::kAKMajor) {
        ldmatrixX4(af[mt], aSmem + panelOffset<K::kPanelA>(m0 + (lane & 15), kk * 2 + (lane >> 4)));
      } else {
        constexpr int kPanelChunks = K::kPanelA / 8;
        int k = kk * 16 + r8 + (quad >> 1) * 8, chunk = m0 / 8 + (quad & 1);
        ldmatrixX4Trans(af[mt], aSmem + (chunk / kPanelChunks) * (K::kStep * K::kPanelA * 2) +
                                    panelOffset<K::kPanelA>(k, chunk % kPanelChunks));
      }
    }
#pragma unroll
    for (int np = 0; np < K::kMmaN / 2; ++np) {
      const int n0 = warpN * K::kWarpN + np * 16;
      uint32_t r[4];
      if constexpr (K::kBKMajor) {
        ldmatrixX4(r, bSmem + panelOffset<K::kPanelB>(n0 + r8 + (quad >> 1) * 8, kk * 2 + (quad & 1)));
      } else {
        constexpr int kPanelChunks = K::kPanelB / 8;
        int k = kk * 16 + r8 + (quad & 1) * 8, chunk = n0 / 8 + (quad >> 1);
        ldmatrixX4Trans(r, bSmem + (chunk / kPanelChunks) * (K::kStep * K::kPanelB * 2) +
                               panelOffset<K::kPanelB>(k, chunk % kPanelChunks));
      }
      bf[2 * np][0] = r[0];
      bf[2 * np][1] = r[1];
      bf[2 * np + 1][0] = r[2];
      bf[2 * np + 1][1] = r[3];
    }
#pragma unroll
    for (int mt = 0; mt < K::kMmaM; ++mt)
#pragma unroll
      for (int nt = 0; nt < K::kMmaN; ++nt) mma16816<typename K::T>(acc[mt][nt], af[mt], bf[nt]);
  }
}

template <class K>
__global__ void __launch_bounds__(K::kThreads) bsrMmaKernel(const KernelArgs args) {
  using T = typename K::T;
  extern __shared__ uint8_t smemRaw[];
  // Aligned through an integer, which makes the accesses below generic rather than shared-memory ones. The
  // shared-space form (offsetting smemRaw itself, as the wgmma kernel does) measured 2-7% slower here on an
  // H200 (docs/kernels.md), so this kernel keeps the form it was tuned with.
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smemRaw) + 1023) & ~uintptr_t(1023));
  int32_t* indexA = reinterpret_cast<int32_t*>(smem + K::kStages * K::kStageBytes);
  int32_t* indexB = indexA + kIndexCapacity;
  const int tid = threadIdx.x;
  // Launched to overlap the kernel before (launchOverlapped; sm_90+): nothing global is read before it has ended.
  allowDependentLaunch();
  waitForPrimary();

  TileWork work;
  if (!tileWork<K::kOp, K::R, K::C, K::kTileM, K::kStep, K::kGroup>(args, work)) return;
  // A split line: this CTA takes the blockIdx.y-th run of the line's blocks (possibly none: it writes zeros).
  const bool split = K::kOp != Op::Sampled && args.lineSplits > 1;
  if (split) {
    const int per = (work.count + args.lineSplits - 1) / args.lineSplits;
    const int begin = min(work.count, static_cast<int>(blockIdx.y) * per);
    const int end = min(work.count, begin + per);
    work.first += begin;
    work.count = end - begin;
    work.steps = lineSteps<K::kOp, K::R, K::C, K::kStep>(work.count);
  }
  fillIndex<K::kOp, K::R, K::C>(args, work, indexA, indexB, tid, K::kThreads);
  __syncthreads();
  const StepLoader<K> load{args, work, indexA, indexB};
  const int steps = work.steps;

  const int warp = tid / 32, lane = tid % 32;
  const int warpM = warp % K::kWarpsM, warpN = warp / K::kWarpsM;
  float acc[K::kMmaM][K::kMmaN][4];
#pragma unroll
  for (int i = 0; i < K::kMmaM; ++i)
#pragma unroll
    for (int j = 0; j < K::kMmaN; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < K::kStages - 1; ++s) {
    if (s < steps) load(s, smem + s * K::kStageBytes, tid);
    cpAsyncCommit();
  }
  for (int step = 0; step < steps; ++step) {
    cpAsyncWait<K::kStages - 2>();
    __syncthreads();  // stage `step` landed for every thread; stage `step - 1` is free again
    const int next = step + K::kStages - 1;
    if (next < steps) load(next, smem + (next % K::kStages) * K::kStageBytes, tid);
    cpAsyncCommit();
    uint8_t* stage = smem + (step % K::kStages) * K::kStageBytes;
    computeStage<K>(smemAddress(stage), smemAddress(stage) + K::kABytes, warpM, warpN, lane, acc);
  }
  cpAsyncWait<0>();

  // Epilogue: each thread holds rows g and g+8 of every m16n8 tile, two adjacent columns each.
  const int g = lane >> 2, c2 = (lane & 3) * 2;
  if constexpr (K::kOp != Op::Sampled) {
    if (split) {
      // This split's float32 sums (split 0 with the bias) into its slice of the partials.
      const int64_t width = K::kOp == Op::Linear ? args.rows : args.cols;
      float* partial = args.partials + static_cast<int64_t>(blockIdx.y) * args.m * width;
#pragma unroll
      for (int nt = 0; nt < K::kMmaN; ++nt) {
        const int col = warpN * K::kWarpN + nt * 8 + c2;
        const float2 bias = blockIdx.y == 0 ? tileBias<T, K::kOp, K::kTileN>(args, work.line, col) : make_float2(0.f, 0.f);
        const int64_t feature = static_cast<int64_t>(work.line) * K::kTileN + col;
#pragma unroll
        for (int mt = 0; mt < K::kMmaM; ++mt)
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            const int64_t token = work.tokenBase + warpM * K::kWarpM + mt * 16 + g + half * 8;
            if (token < args.m)
              *reinterpret_cast<float2*>(partial + token * width + feature) =
                  make_float2(acc[mt][nt][half * 2] + bias.x, acc[mt][nt][half * 2 + 1] + bias.y);
          }
      }
      return;
    }
  }
  // Linear stages its tile (StagedTile); dX (Matmul) and dW store from registers: on an H200 the staged
  // epilogue made this kernel's Linear 1.02-1.29x faster at densities 0.1-0.25 but its Matmul 2-13% slower
  // (docs/kernels.md), and dW's rows are whole blocks of the values, written by the fragment layout below.
  if constexpr (K::kOp != Op::Linear) {
#pragma unroll
    for (int mt = 0; mt < K::kMmaM; ++mt) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int row = warpM * K::kWarpM + mt * 16 + g + half * 8;
#pragma unroll
        for (int nt = 0; nt < K::kMmaN; ++nt) {
          const int col = warpN * K::kWarpN + nt * 8 + c2;
          const float v0 = acc[mt][nt][half * 2], v1 = acc[mt][nt][half * 2 + 1];
          if constexpr (K::kOp == Op::Sampled) {
            storeBlockPair<T, K::R, K::C>(args, work, indexB, row, col, v0, v1);
          } else {
            const int64_t token = work.tokenBase + row;
            if (token >= args.m) continue;
            const int64_t feature = static_cast<int64_t>(work.line) * K::C + col;
            *reinterpret_cast<uint32_t*>(static_cast<T*>(args.out) + token * args.cols + feature) = packPair<T>(v0, v1);
          }
        }
      }
    }
  } else {
    using Staged = StagedTile<T, K::kTileN>;
    static_assert(Staged::bytes(K::kTileM) <= K::kStages * K::kStageBytes, "the staged tile fits the stages");
    __syncthreads();  // every warp is done reading the stages
    const Staged staged{reinterpret_cast<T*>(smem)};
#pragma unroll
    for (int nt = 0; nt < K::kMmaN; ++nt) {
      const int col = warpN * K::kWarpN + nt * 8 + c2;
      const float2 bias = tileBias<T, K::kOp, K::kTileN>(args, work.line, col);
#pragma unroll
      for (int mt = 0; mt < K::kMmaM; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half)
          staged.put(warpM * K::kWarpM + mt * 16 + g + half * 8, col, acc[mt][nt][half * 2],
                     acc[mt][nt][half * 2 + 1], bias);
    }
    __syncthreads();
    staged.template store<K::kOp>(K::kTileM, args, work.tokenBase, work.line, tid, K::kThreads);
  }
}

template <class K>
// One CTA per tile of bsrMmaKernel.
bool launch(const KernelArgs& argsIn, cudaStream_t stream) {
  KernelArgs args = argsIn;
  dim3 grid;
  if constexpr (K::kOp == Op::Sampled) {
    if (args.groupList != nullptr) return false;  // the tail's pieces are the wgmma tile's
    const int64_t splits = (args.m + args.tokensPerSplit - 1) / args.tokensPerSplit;
    const int64_t groups = (args.blockRows + K::kGroup - 1) / K::kGroup;
    if (groups > 65535 || splits > 65535) return false;
    grid = dim3(static_cast<unsigned>(args.blockCols), static_cast<unsigned>(groups), static_cast<unsigned>(splits));
  } else {
    const int64_t tilesM = (args.m + K::kTileM - 1) / K::kTileM;
    const int64_t tilesN = K::kOp == Op::Linear ? args.blockRows : args.blockCols;
    if (tilesM * tilesN > INT32_MAX) return false;
    args.tilesM = static_cast<int32_t>(tilesM);
    args.tilesN = static_cast<int32_t>(tilesN);
    args.groupM = rasterGroup(args.tilesM, K::kTileM, K::kOp == Op::Linear ? args.cols : args.rows);
    if (args.lineSplits > 1 && (args.partials == nullptr || args.lineSplits > 65535)) return false;
    grid = dim3(static_cast<unsigned>(tilesM * tilesN), static_cast<unsigned>(std::max(args.lineSplits, 1)));
  }
  auto kernel = bsrMmaKernel<K>;
  BS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, K::kSmemBytes));
  launchOverlapped("launch of bsrMmaKernel", kernel, grid, dim3(K::kThreads), K::kSmemBytes, stream, args);
  return true;
}

}  // namespace bs::tc::sm80
