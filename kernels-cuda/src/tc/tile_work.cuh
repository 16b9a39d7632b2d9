// Which part of a product one CTA computes, and the per-entry offsets it keeps in shared memory.
// Shared by the mma.sync and wgmma kernels so both walk the pattern the same way.
#pragma once

#include "tc_kernels.h"

namespace bs::tc {

struct TileWork {
  int64_t tokenBase;  // Linear/Matmul: first token of the tile; Sampled: first token of the split
  int64_t tokenEnd;   // Sampled: one past the split's last token
  int32_t first;      // first entry (of the block row, column, or group) in its index
  int32_t count;      // entries: blocks of the row/column, or group members
  int32_t line;       // the block row (Linear), block column (Matmul, Sampled)
  int32_t steps;      // pipeline steps
};

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
  work.steps = work.count * ((kOp == Op::Linear ? C : R) / kStep);
}

// Fills `work` for this CTA; false when the CTA has nothing to do (a Sampled group past the column's end).
template <Op kOp, int R, int C, int kTileM, int kStep, int kGroup>
__device__ __forceinline__ bool tileWork(const KernelArgs& args, TileWork& work) {
  if constexpr (kOp == Op::Sampled) {
    work.line = blockIdx.x;
    work.first = args.blockColPtr[work.line] + static_cast<int32_t>(blockIdx.y) * kGroup;
    work.count = min(kGroup, args.blockColPtr[work.line + 1] - work.first);
    if (work.count <= 0) return false;
    work.tokenBase = static_cast<int64_t>(blockIdx.z) * args.tokensPerSplit;
    work.tokenEnd = min(args.m, work.tokenBase + args.tokensPerSplit);
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

}  // namespace bs::tc
