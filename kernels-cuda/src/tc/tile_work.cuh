// Which part of a product one CTA computes, and the per-entry offsets it keeps in shared memory.
// Shared by the mma.sync and wgmma kernels so both walk the pattern the same way.
#pragma once

#include "../kernels/activation_math.cuh"
#include "ptx.cuh"
#include "tc_kernels.h"

namespace bs::tc {

struct TileWork {
  int64_t tokenBase;  // Linear/Matmul: first token of the tile; Sampled: first token of the split
  int64_t tokenEnd;   // Sampled: one past the split's last token
  int32_t first;      // first entry (of the block row, column, or group) in its index
  int32_t count;      // entries: blocks of the row/column, or group members
  int32_t line;       // the block row (Linear), block column (Matmul, Sampled)
  int32_t steps;      // pipeline steps
  // Sampled: which float32 partial slab this CTA writes (its token split), -1 when it writes the blocks themselves;
  // with a group list, the tail's first column-wise entry (partials are indexed from it).
  int32_t split;
  int32_t tailFirst;
};

// Linear/Matmul: pipeline steps over a line of `count` blocks, each kStep deep: a block's side along the reduction (its
// columns for Linear, rows for Matmul) in kStep slices, or kStep / side blocks per step when the side is narrower.
template <Op kOp, int R, int C, int kStep>
__device__ __forceinline__ int32_t lineSteps(int32_t count) {
  constexpr int kSide = kOp == Op::Linear ? C : R;
  if constexpr (kSide < kStep) return (count + kStep / kSide - 1) / (kStep / kSide);
  else return count * (kSide / kStep);
}

// Linear/Matmul: the tile at raster position `linear` (a CTA index, or a persistent CTA's next tile).
template <Op kOp, int R, int C, int kTileM, int kStep>
__device__ __forceinline__ void tileAt(const KernelArgs& args, int linear, TileWork& work) {
  int tileM, tileN;
  rasterTile(linear, args.tilesM, args.tilesN, args.groupM, tileM, tileN);
  const int32_t* ptr = kOp == Op::Linear ? args.blockRowPtr : args.blockColPtr;
  work.line = tileN;
  work.first = ptr[tileN];
  work.count = ptr[tileN + 1] - work.first;
  work.tokenBase = static_cast<int64_t>(tileM) * kTileM;
  work.tokenEnd = min(args.m, work.tokenBase + kTileM);
  work.steps = lineSteps<kOp, R, C, kStep>(work.count);
}

// Fills `work` for this CTA; false when the CTA has nothing to do (a Sampled group past the column's end).
template <Op kOp, int R, int C, int kTileM, int kStep, int kGroup>
__device__ __forceinline__ bool tileWork(const KernelArgs& args, TileWork& work) {
  if constexpr (kOp == Op::Sampled) {
    if (args.groupList != nullptr) {
      // Whole groups first, then the tail's pieces (KernelArgs::groupList).
      const int32_t cta = static_cast<int32_t>(blockIdx.x);
      int32_t group = cta;
      work.split = -1;
      work.tokenBase = 0;
      work.tokenEnd = args.m;
      if (cta >= args.fullGroups) {
        const int32_t piece = cta - args.fullGroups;
        group = args.fullGroups + piece / args.tailSplits;
        work.split = piece % args.tailSplits;
        work.tokenBase = static_cast<int64_t>(work.split) * args.tokensPerSplit;
        work.tokenEnd = min(args.m, work.tokenBase + args.tokensPerSplit);
        work.tailFirst = args.groupList[2 * args.fullGroups + 1];
      }
      work.line = args.groupList[2 * group];
      work.first = args.groupList[2 * group + 1];
      work.count = min(kGroup, args.blockColPtr[work.line + 1] - work.first);
    } else {
      work.line = blockIdx.x;
      work.first = args.blockColPtr[work.line] + static_cast<int32_t>(blockIdx.y) * kGroup;
      work.count = min(kGroup, args.blockColPtr[work.line + 1] - work.first);
      work.tokenBase = static_cast<int64_t>(blockIdx.z) * args.tokensPerSplit;
      work.tokenEnd = min(args.m, work.tokenBase + args.tokensPerSplit);
      work.split = args.partials != nullptr ? static_cast<int32_t>(blockIdx.z) : -1;
    }
    if (work.count <= 0 || work.tokenBase >= work.tokenEnd) return false;
    work.steps = static_cast<int32_t>((work.tokenEnd - work.tokenBase + kStep - 1) / kStep);
  } else {
    tileAt<kOp, R, C, kTileM, kStep>(args, blockIdx.x, work);
  }
  return true;
}

// Per entry: indexA = the column of A where the entry's slice starts; indexB = its value block
// (Matmul, Sampled). Linear needs no indexB: its blocks are consecutive in values.
template <Op kOp, int R, int C>
__device__ __forceinline__ void fillIndex(const KernelArgs& args, const TileWork& work, int32_t* indexA,
                                          int32_t* indexB, int tid, int threads) {
  const int cached = min(work.count, kIndexCapacity);
  for (int e = tid; e < cached; e += threads) {
    if constexpr (kOp == Op::Linear) {
      indexA[e] = args.blockColIdx[work.first + e] * C;
    } else {
      indexA[e] = args.blockRowIdx[work.first + e] * R;
      indexB[e] = args.valueIndex[work.first + e];
    }
  }
}

// The same offsets for entries past kIndexCapacity, read from global memory.
template <Op kOp, int R, int C>
__device__ __forceinline__ int32_t entryColumn(const KernelArgs& args, const TileWork& work, const int32_t* indexA,
                                               int entry) {
  if (entry < kIndexCapacity) return indexA[entry];
  if constexpr (kOp == Op::Linear) return args.blockColIdx[work.first + entry] * C;
  else return args.blockRowIdx[work.first + entry] * R;
}
__device__ __forceinline__ int32_t entryValue(const KernelArgs& args, const TileWork& work, const int32_t* indexB,
                                              int entry) {
  return entry < kIndexCapacity ? indexB[entry] : args.valueIndex[work.first + entry];
}

// dW: where member `member`'s block starts in the float32 partials of this CTA's split: [splits][nnzBlocks][R][C] by the
// block's place in the values, or with a group list [tailSplits][tailGroups * groupSize][R][C] by its column-wise entry
// from the tail's first (KernelArgs::groupList).
template <int R, int C>
__device__ __forceinline__ int64_t partialOffset(const KernelArgs& args, const TileWork& work, const int32_t* indexB,
                                                 int member) {
  if (args.groupList != nullptr)
    return (static_cast<int64_t>(work.split) * args.tailGroups * args.groupSize + (work.first + member - work.tailFirst)) *
           R * C;
  return (static_cast<int64_t>(work.split) * args.nnzBlocks + indexB[member]) * R * C;
}

// dW: outputs (row, col) and (row, col + 1) of a tile of G blocks stacked by rows: into the member's block of
// the values, or as float32 into this split's partials when the tokens are split (none past work.count).
template <typename T, int R, int C>
__device__ __forceinline__ void storeBlockPair(const KernelArgs& args, const TileWork& work, const int32_t* indexB,
                                               int row, int col, float v0, float v1) {
  const int member = row / R;
  if (member >= work.count) return;
  const int64_t at = (static_cast<int64_t>(indexB[member]) * R + row % R) * C + col;
  if (work.split >= 0) {
    float* dst = args.partials + partialOffset<R, C>(args, work, indexB, member) + (row % R) * C + col;
    *reinterpret_cast<float2*>(dst) = make_float2(v0, v1);
  } else {
    *reinterpret_cast<uint32_t*>(static_cast<T*>(args.out) + at) = packPair<T>(v0, v1);
  }
}

// dW, one output (row, col) of the tile (a feature-major tile holds no pairs along a row): as storeBlockPair.
template <typename T, int R, int C>
__device__ __forceinline__ void storeBlockValue(const KernelArgs& args, const TileWork& work, const int32_t* indexB,
                                                int row, int col, float v) {
  const int member = row / R;
  if (member >= work.count) return;
  const int64_t at = (static_cast<int64_t>(indexB[member]) * R + row % R) * C + col;
  if (work.split >= 0) args.partials[partialOffset<R, C>(args, work, indexB, member) + (row % R) * C + col] = v;
  else static_cast<T*>(args.out)[at] = static_cast<T>(v);
}

// Eight elements of dZ = dX act'(Z) (four pairs of each, dX as stored in the dtype), their float32 values added to
// `sums` column by column: the fused activation backward of the tiles' epilogues (StagedTile, the X-resident tile).
template <typename T, Activation kAct>
__device__ __forceinline__ uint4 activationGradChunk(uint4 dx, uint4 z, float (&sums)[8]) {
  const uint32_t g[4] = {dx.x, dx.y, dx.z, dx.w}, zw[4] = {z.x, z.y, z.z, z.w};
  uint32_t d[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 gk = unpackPair<T>(g[k]), zk = unpackPair<T>(zw[k]);
    const float d0 = gk.x * derivative<kAct, true>(zk.x), d1 = gk.y * derivative<kAct, true>(zk.y);
    sums[2 * k] += d0;
    sums[2 * k + 1] += d1;
    d[k] = packPair<T>(d0, d1);
  }
  return make_uint4(d[0], d[1], d[2], d[3]);
}

// The epilogue of Linear/Matmul tiles, shared by the mma.sync and wgmma kernels. A tile row (one block of
// features of one token) is 64-256 contiguous bytes of the output, but the accumulator layouts give a warp 16
// bytes of a row per store: stored directly, every 32-byte sector of the output is written twice and the
// stores queue behind each other. So the tile is staged in shared memory (the pipeline buffers, idle by then)
// as pairs, then copied out in 16-byte chunks, consecutive threads taking consecutive chunks of a row.
template <typename T, int kTileN>
struct StagedTile {
  static constexpr int kPitch = kTileN + 8;  // elements per staged row: 16 bytes of padding spread the banks
  static constexpr int kChunks = kTileN * 2 / 16;
  static_assert((kPitch * 2) % 16 == 0, "16-byte aligned staged rows");
  static constexpr int bytes(int rows) { return rows * kPitch * 2; }

  T* rows;

  // Outputs (row, col) and (row, col + 1) of the tile, plus the bias of their features (Linear).
  __device__ __forceinline__ void put(int row, int col, float v0, float v1, float2 bias) const {
    *reinterpret_cast<uint32_t*>(rows + row * kPitch + col) = packPair<T>(v0 + bias.x, v1 + bias.y);
  }

  // Copies `count` staged rows, the tokens from tokenBase on, to the output; `thread` of `threads` take part.
  // Linear with args.activated also writes the activation of each chunk there (computed in float32 from the
  // stored, rounded pre-activation, as a separate biasActivation pass over `out` would).
  // kPre false leaves out the activation backward (callers that never take it: dev's store helpers).
  template <Op kOp, bool kPre = true>
  __device__ __forceinline__ void store(int count, const KernelArgs& args, int64_t tokenBase, int line, int thread,
                                        int threads) const {
    if constexpr (kOp == Op::Matmul && kPre) {
      if (args.pre != nullptr) {
        switch (args.activation) {
          case Activation::Relu: return storeActivationGrad<Activation::Relu>(count, args, tokenBase, line, thread, threads);
          case Activation::Gelu: return storeActivationGrad<Activation::Gelu>(count, args, tokenBase, line, thread, threads);
          default: return storeActivationGrad<Activation::GeluTanh>(count, args, tokenBase, line, thread, threads);
        }
      }
    }
    const int64_t width = kOp == Op::Linear ? args.rows : args.cols;
    const int64_t offset = static_cast<int64_t>(line) * kTileN;
    T* out = static_cast<T*>(args.out) + offset;
    T* activated = kOp == Op::Linear && args.activated ? static_cast<T*>(args.activated) + offset : nullptr;
    for (int i = thread; i < count * kChunks; i += threads) {
      const int row = i / kChunks, chunk = i % kChunks;
      const int64_t token = tokenBase + row;
      if (token >= args.m) continue;
      const uint4 staged = *reinterpret_cast<const uint4*>(rows + row * kPitch + chunk * 8);
      *reinterpret_cast<uint4*>(out + token * width + chunk * 8) = staged;
      if (activated) *reinterpret_cast<uint4*>(activated + token * width + chunk * 8) = activateChunk(staged, args.activation);
    }
  }

  // Matmul with args.pre: the staged rows are dX; writes dZ = dX act'(Z) for the same elements, and this call's
  // column sums of dZ into args.columnPartials (KernelArgs::pre). `threads` is a multiple of 32 (so of kChunks):
  // each thread keeps one chunk of columns and takes rows thread / kChunks + u * (threads / kChunks), loading the Z
  // chunks of kPreBatch rows before their math; the lanes of a warp holding the same chunk then add their sums in a
  // fixed order, and each warp writes one row of partials. (Loading all of a call's Z chunks into registers before
  // the tile's products instead was measured no faster on an H200: docs/kernels.md.)
  static constexpr int kPreBatch = 8;

  // The Z chunks of kPreBatch of this thread's rows from row `first` on (rows past the call or the tokens left alone).
  __device__ __forceinline__ void loadPreRows(uint4 (&z)[kPreBatch], int first, int count, const KernelArgs& args,
                                              int64_t tokenBase, int line, int thread, int threads) const {
    const int rowStep = threads / kChunks;
    const T* pre = static_cast<const T*>(args.pre) + static_cast<int64_t>(line) * kTileN + (thread % kChunks) * 8;
#pragma unroll
    for (int u = 0; u < kPreBatch; ++u) {
      const int row = first + u * rowStep;
      const int64_t token = tokenBase + row;
      if (row < count && token < args.m) z[u] = *reinterpret_cast<const uint4*>(pre + token * args.cols);
    }
  }

  // dZ for kPreBatch of this thread's rows from row `first` on, their Z chunks in z; adds them to sums.
  template <Activation kAct>
  __device__ __forceinline__ void storeGradRows(const uint4 (&z)[kPreBatch], int first, int count,
                                                const KernelArgs& args, int64_t tokenBase, int line, int thread,
                                                int threads, float (&sums)[8]) const {
    const int rowStep = threads / kChunks, chunk = thread % kChunks;
    T* out = static_cast<T*>(args.out) + static_cast<int64_t>(line) * kTileN + chunk * 8;
#pragma unroll
    for (int u = 0; u < kPreBatch; ++u) {
      const int row = first + u * rowStep;
      const int64_t token = tokenBase + row;
      if (row >= count || token >= args.m) continue;
      const uint4 staged = *reinterpret_cast<const uint4*>(rows + row * kPitch + chunk * 8);
      *reinterpret_cast<uint4*>(out + token * args.cols) = activationGradChunk<T, kAct>(staged, z[u], sums);
    }
  }

  // The call's column sums: the lanes holding the same chunk add theirs, then lanes 0..kChunks-1 write the warp's row.
  __device__ __forceinline__ void storeColumnSums(float (&sums)[8], int count, const KernelArgs& args,
                                                  int64_t tokenBase, int line, int thread, int threads) const {
    static_assert(32 % kChunks == 0, "a warp holds whole rows of chunks");
#pragma unroll
    for (int o = kChunks; o < 32; o <<= 1)
#pragma unroll
      for (int k = 0; k < 8; ++k) sums[k] += __shfl_xor_sync(0xffffffffu, sums[k], o);
    if (thread % 32 >= kChunks || tokenBase >= args.m) return;
    const int64_t partialRow = tokenBase / count * (threads / 32) + thread / 32;
    float4* dst = reinterpret_cast<float4*>(args.columnPartials + partialRow * args.cols +
                                            static_cast<int64_t>(line) * kTileN + (thread % kChunks) * 8);
    dst[0] = make_float4(sums[0], sums[1], sums[2], sums[3]);
    dst[1] = make_float4(sums[4], sums[5], sums[6], sums[7]);
  }

  template <Activation kAct>
  __device__ __forceinline__ void storeActivationGrad(int count, const KernelArgs& args, int64_t tokenBase, int line,
                                                      int thread, int threads) const {
    float sums[8] = {};
    for (int first = thread / kChunks; first < count; first += threads / kChunks * kPreBatch) {
      uint4 z[kPreBatch];
      loadPreRows(z, first, count, args, tokenBase, line, thread, threads);
      storeGradRows<kAct>(z, first, count, args, tokenBase, line, thread, threads, sums);
    }
    storeColumnSums(sums, count, args, tokenBase, line, thread, threads);
  }

  // Eight staged elements (four pairs) through the activation.
  __device__ __forceinline__ static uint4 activateChunk(uint4 chunk, Activation activation) {
    uint32_t words[4] = {chunk.x, chunk.y, chunk.z, chunk.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 pair = unpackPair<T>(words[k]);
      words[k] = packPair<T>(activateAs<true>(activation, pair.x), activateAs<true>(activation, pair.y));
    }
    return make_uint4(words[0], words[1], words[2], words[3]);
  }
};

// The bias of features (col, col + 1) of the tile's block row (Linear with a bias), else zeros.
template <typename T, Op kOp, int kTileN>
__device__ __forceinline__ float2 tileBias(const KernelArgs& args, int line, int col) {
  if (kOp != Op::Linear || !args.bias) return make_float2(0.0f, 0.0f);
  const T* bias = static_cast<const T*>(args.bias) + static_cast<int64_t>(line) * kTileN + col;
  return unpackPair<T>(*reinterpret_cast<const uint32_t*>(bias));
}

}  // namespace bs::tc
