// wgmma variants kept only for measurement (docs/kernels.md, "Versions: prediction, measurement, why"):
// linked into tc_bench, never into the addon. tc_bench reaches them (and dev's mma.sync variant) through
// TcOptions::devVariants = launchDevVariant.
//   1: 128-token tiles at 32 and 64 blocks (the dispatched tiles hold 256 tokens there)
//   2, 3: the tiles of variants 0 and 1, persistent (one CTA per SM walks its tiles)
//   (7, the persistent tile with a staged epilogue, is dispatched: bsr_wgmma.cu, kPersistentTile)
//   10 (kStoreHelpersVariant): that tile with store helpers (three warps of the producer warpgroup) copying the
//      staged rows out instead of the consumers; measured no faster, and 2.8x slower with a fused activation
//   4, 5: grouped tiles, 8 and 4 block rows (columns) of 32, 4 and 2 of 64, sharing each dense slice
//   dW (Sampled) 1: 256-row tiles (8 blocks of 32, 4 of 64) instead of the dispatched 128
//   (6, the X-resident tile, is dispatched at 32x32: src/tc/bsr_wgmma_xr.cu, kXResidentTile)
//   11 (kMulticastVariant): clusters of four tiles sharing each dense slice by TMA multicast (bsr_wgmma_multicast.cu);
//      12 the same clusters without the sharing
//   21, 22, 25, 26: the X-resident tile with its outputs stored from the accumulators' layout (21,
//      kXResidentDirectStoresVariant), the tile the addon ran before (22, kXResidentPreviousVariant), its lines grouped
//      for two CTAs per SM (25, kXResidentWavesVariant) or one (26) (bsr_wgmma_xr_dev.cu)
//   27-29 (kXResidentWideVariant): the wide-slab X-resident tile, 4, 5 or 3 lines per consumer (bsr_wgmma_xr_wide.cuh)
//   dW 30-32 (kPatchDwTile to kPatchDwWgmmaTile, on either path): the patch tiles, mma.sync (bsr_mma_patch.cu) and wgmma
//      (bsr_wgmma_patch.cu)
#include "dev_variants.h"
#include "tc/bsr_wgmma.cuh"

namespace bs::tc {

namespace sm90 {

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

  const int warpGroup = warpGroupOf(tid);
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

}  // namespace sm90

namespace {

using sm90::GroupedTraits;
using sm90::WgmmaTraits;

template <class K>
bool launchGrouped(DType dtype, const KernelArgs& argsIn, cudaStream_t stream) {
  KernelArgs args = argsIn;
  CUtensorMap mapA, mapB;
  const int64_t valueRows = static_cast<int64_t>(args.nnzBlocks) * K::R;
  const int64_t depth = K::kOp == Op::Linear ? args.cols : args.rows;
  if (!sm90::encodeMap(&mapA, dtype, args.a, depth, args.m, K::kStep, K::kTileM) ||
      !sm90::encodeMap(&mapB, dtype, args.b, K::C, valueRows, K::kStep, K::R))
    return false;
  const int64_t lines = K::kOp == Op::Linear ? args.blockRows : args.blockCols;
  const int64_t tilesM = (args.m + K::kTileM - 1) / K::kTileM;
  const int64_t tilesN = (lines + K::kGroup - 1) / K::kGroup;
  if (tilesM * tilesN > INT32_MAX) return false;
  args.tilesM = static_cast<int32_t>(tilesM);
  args.tilesN = static_cast<int32_t>(tilesN);
  args.groupM = rasterGroup(args.tilesM, K::kTileM, depth);
  BS_CUDA_CHECK(cudaFuncSetAttribute(sm90::bsrWgmmaGroupedKernel<K>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     K::kSmemBytes));
  sm90::bsrWgmmaGroupedKernel<K><<<static_cast<unsigned>(tilesM * tilesN), K::kThreads, K::kSmemBytes, stream>>>(
      mapA, mapB, args);
  BS_LAUNCH_CHECK("bsrWgmmaGroupedKernel");
  return true;
}

template <typename T, Op kOp>
bool launchBlock(DType dtype, const KernelArgs& args, int blockSize, int variant, int numSms, cudaStream_t stream) {
  using sm90::launch;
  if constexpr (kOp == Op::Sampled) {
    // 1: dW tiles of 256 rows (8 blocks of 32, 4 of 64) sharing each X slice, against the dispatched 128.
    // kFeatureMajorDwTile: the 64x64 one feature-major (X's 64 columns as wgmma's M, each consumer's two blocks' rows
    // as N: one m64n128 product per slice).
    if (variant == kFeatureMajorDwTile && blockSize == 64)
      return launch<WgmmaTraits<T, kOp, 64, 256, 5, false, true>>(dtype, args, stream);
    if (variant != kWideTile) return false;
    if (blockSize == 32) return launch<WgmmaTraits<T, kOp, 32, 256, 6>>(dtype, args, stream);
    if (blockSize == 64) return launch<WgmmaTraits<T, kOp, 64, 256, 5>>(dtype, args, stream);
    return false;
  } else {
    switch (variant) {
      case 1:
        if (blockSize == 32) return launch<WgmmaTraits<T, kOp, 32, 128, 8>>(dtype, args, stream);
        if (blockSize == 64) return launch<WgmmaTraits<T, kOp, 64, 128, 6>>(dtype, args, stream);
        return false;
      case 2:
        if (blockSize == 32) return sm90::launchPersistent<WgmmaTraits<T, kOp, 32, 256, 8>>(dtype, args, stream, numSms);
        if (blockSize == 64) return sm90::launchPersistent<WgmmaTraits<T, kOp, 64, 256, 5>>(dtype, args, stream, numSms);
        return sm90::launchPersistent<WgmmaTraits<T, kOp, 128, 128, 6>>(dtype, args, stream, numSms);
      case 3:
        if (blockSize == 32) return sm90::launchPersistent<WgmmaTraits<T, kOp, 32, 128, 8>>(dtype, args, stream, numSms);
        if (blockSize == 64) return sm90::launchPersistent<WgmmaTraits<T, kOp, 64, 128, 6>>(dtype, args, stream, numSms);
        return sm90::launchPersistent<WgmmaTraits<T, kOp, 128, 256, 4>>(dtype, args, stream, numSms);
      case kTokenMajorPersistentVariant:
        // The persistent 64x64 tile as dispatched before it became feature-major.
        if (blockSize != 64) return false;
        return sm90::launchPersistent<WgmmaTraits<T, kOp, 64, kPersistentTileTokens, 4>,
                                      sm90::PersistentStore::Consumers>(dtype, args, stream, numSms);
      case kStoreHelpersVariant:
        // The token-major persistent 64x64 tile with the producer warpgroup's idle warps copying the staged rows
        // out (and writing a fused activation), the consumers going straight on to the next tile.
        if (blockSize != 64) return false;
        return sm90::launchPersistent<WgmmaTraits<T, kOp, 64, kPersistentTileTokens, 4>,
                                      sm90::PersistentStore::Helpers>(dtype, args, stream, numSms);
      case kPingPongVariant:
        // At 64x64 and 128x128 blocks the addon's kPingPongTile (the same number) runs first.
        if (blockSize == 32) return sm90::launchPingPong<WgmmaTraits<T, kOp, 32, 128, 16, true>>(dtype, args, stream, numSms);
        return false;
      case kPingPongVariant + 1:
        // Token-major, 256 tokens per consumer (the addon's 64x64 ping-pong tile is the same, feature-major).
        if (blockSize != 64) return false;
        return sm90::launchPingPong<WgmmaTraits<T, kOp, 64, 256, 3, true>>(dtype, args, stream, numSms);
      case kBulkStoreVariant:
        // The token-major persistent 64x64 tile with its staged rows written by bulk tensor stores.
        if (blockSize != 64) return false;
        return sm90::launchPersistent<WgmmaTraits<T, kOp, 64, kPersistentTileTokens, 4>, sm90::PersistentStore::Bulk>(
            dtype, args, stream, numSms);
      case 4:
        if (blockSize == 32) return launchGrouped<GroupedTraits<T, kOp, 32, 8, 7>>(dtype, args, stream);
        if (blockSize == 64) return launchGrouped<GroupedTraits<T, kOp, 64, 4, 4>>(dtype, args, stream);
        return false;
      case 5:
        if (blockSize == 32) return launchGrouped<GroupedTraits<T, kOp, 32, 4, 8>>(dtype, args, stream);
        if (blockSize == 64) return launchGrouped<GroupedTraits<T, kOp, 64, 2, 5>>(dtype, args, stream);
        return false;
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

bool launchDevVariant(TcPath path, Op op, DType dtype, const KernelArgs& args, int blockSize, int variant, int numSms,
                      cudaStream_t stream) {
  if (op == Op::Sampled && variant >= kPatchDwTile && variant <= kPatchDwWgmmaTile)
    return launchPatchDwVariant(dtype, args, blockSize, variant, stream);
  if (path == TcPath::Mma) return launchMmaDevVariant(op, dtype, args, blockSize, variant, stream);
  if (path != TcPath::Wgmma) return false;
  if (variant == kMulticastVariant || variant == kMulticastVariant + 1)
    return launchMulticastVariant(op, dtype, args, blockSize, variant, stream);
  if ((variant >= kXResidentDirectStoresVariant && variant <= kXResidentWavesVariant + 1) ||
      (variant >= kXResidentWideVariant && variant <= kXResidentWideVariant + 2))
    return launchXResidentDevVariant(op, dtype, args, blockSize, variant, numSms, stream);
  if (dtype == DType::BFloat16) return launchTyped<__nv_bfloat16>(op, dtype, args, blockSize, variant, numSms, stream);
  if (dtype == DType::Float16) return launchTyped<__half>(op, dtype, args, blockSize, variant, numSms, stream);
  return false;
}

}  // namespace bs::tc
