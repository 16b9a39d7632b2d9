// Variant 11 (kMulticastVariant), kept for measurement: bsrLinear and bsrMatmul tiles in thread-block clusters that
// share each slice of the dense operand through TMA multicast (docs/kernels.md, "Clusters with TMA multicast").
//
// A cluster is the kScheduleGroup CTAs of one token tile over a row group (Linear: consecutive block rows; Matmul:
// block columns). Each CTA is the plain 256-token tile of one block row (column): its consumers run only its own
// blocks, one wgmma step per block, with nothing skipped inside the step. What changes is who loads the dense slice:
// the group's merged schedule (dev/group_schedule.h) numbers the union of the members' columns, step u of the union
// lives in the same pipeline slot of every CTA (the schedule's slot field, colored on the host so that a member's
// consecutive steps never share one), and one member (the issuer, rotating over the members) copies
// the slice once from L2 into the slot of every member that holds the column (the copy's CTA mask). So each slice
// crosses L2 once per cluster instead of once per member that uses it, while each SM still receives only its own.
//
// Who may overwrite a slot: each CTA's producer takes its own steps in union order and, before arming a slot for
// step u, waits until its consumers released the slot's previous contents. Once armed, a member other than the issuer
// arrives on the issuer's barrier for (slot, member), remotely; the issuer waits on those of every other member of u
// before it copies. One barrier per slot and member keeps the phases apart: a member's next arrival there is for a
// later step of the same slot, which it arms only after consuming u, so after the issuer waited for u. (A shared
// count per slot would let a member that is far ahead be counted for an earlier step it is not part of; a word of
// shared memory read across the cluster needs release and acquire fences on the producer's path: 1.7-2.2x slower
// than these barriers, benchmarks/results/gpu-nvidia-h200/tc-multicast.md.)
//
// Measured there: correct, and it cuts the bytes through L2 as the model says (42% at 32x32 density 0.5), but it is
// 0.54x (32x32) and 0.58x (64x64) the speed of what the backend dispatches: the members wait for each other, and
// four SMs are placed and held together, so L2 runs at 21-24% of its peak against 49-69% for the dispatched kernels.
#include "dev_variants.h"
#include "group_schedule.h"
#include "tc/bsr_wgmma.cuh"

namespace bs::tc {

namespace sm90 {

// Arrives on the barrier at `bar`'s offset in CTA `rank` of the cluster. The default semantics (release at CTA
// scope), as multicast pipelines use for a consumer's release: a .release.cluster arrive and the matching
// .acquire.cluster wait put a MEMBAR.ALL.GPU on the producer's path at every step, which measured 1.45x slower.
__device__ __forceinline__ void mbarrierArriveRemote(uint64_t* bar, uint32_t rank) {
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];\n" ::"r"(mapShared(smemAddress(bar), rank)) : "memory");
}
// The 2-D box into the same offset of every CTA in `mask`, each one's barrier at `bar`'s offset counting its bytes.
__device__ __forceinline__ void tmaLoad2dMulticast(void* dst, const CUtensorMap* map, int32_t inner, int32_t outer,
                                                   uint64_t* bar, uint16_t mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1, {%2, "
      "%3}], [%4], %5;\n" ::"r"(smemAddress(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(inner), "r"(outer), "r"(smemAddress(bar)), "h"(mask)
      : "memory");
}

// kShare false (variant 12, for measurement): the same clusters, schedule and slots, but each CTA loads its own
// slices with no hand-over, to tell the cost of sharing from that of the rest.
template <typename T_, Op kOp_, int kBlock_, int kStages_, bool kShare_>
struct MulticastTraits : WgmmaTraits<T_, kOp_, kBlock_, 256, kStages_> {
  using Base = WgmmaTraits<T_, kOp_, kBlock_, 256, kStages_>;
  static constexpr int kCluster = kScheduleGroup;
  static constexpr bool kShare = kShare_;
  static constexpr int kOwnCapacity = kIndexCapacity;  // own steps (blocks of the line) kept in shared memory
  static constexpr int kSmemBytes =
      1024 + kStages_ * Base::kStageBytes + (2 + kCluster) * kStages_ * 8 + 5 * kOwnCapacity * 4;
  static_assert(Base::kStep == kBlock_, "one pipeline step per block");
  static_assert(kStages_ <= 32 && kStages_ * kCluster <= 64, "a phase bit per slot, and per slot and member");
  static_assert(kSmemBytes <= 227 * 1024, "fits an H100's shared memory");
};

// The member that copies union step u: the first member at or after u % kCluster, cyclically.
template <int kCluster>
__device__ __forceinline__ uint32_t issuerOf(uint32_t mask, int u) {
  const uint32_t start = static_cast<uint32_t>(u) % kCluster;
  const uint32_t rotated = ((mask >> start) | (mask << (kCluster - start))) & ((1u << kCluster) - 1);
  return (start + __ffs(static_cast<int>(rotated)) - 1) % kCluster;
}

template <class K>
__global__ void __launch_bounds__(K::kThreads, 1)
    bsrWgmmaMulticastKernel(const __grid_constant__ CUtensorMap mapA, const __grid_constant__ CUtensorMap mapB,
                            const KernelArgs args) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint8_t smemRaw[];
  __shared__ int32_t ownCount;
  uint8_t* smem = smemRaw + ((1024 - (smemAddress(smemRaw) & 1023)) & 1023);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + K::kStages * K::kStageBytes);
  uint64_t* empty = full + K::kStages;
  uint64_t* ready = empty + K::kStages;  // [slot][member]: the member has armed the slot for the step this CTA copies
  int32_t* ownStep = reinterpret_cast<int32_t*>(ready + K::kStages * K::kCluster);  // per own step: its union step,
  int32_t* ownLine = ownStep + K::kOwnCapacity;                      // the dense slice's block column (row),
  int32_t* ownValue = ownLine + K::kOwnCapacity;                     // the value block,
  int32_t* ownMask = ownValue + K::kOwnCapacity;                     // the members that share it,
  int32_t* ownSlot = ownMask + K::kOwnCapacity;                      // and its pipeline slot
  const int tid = threadIdx.x;
  const uint32_t rank = clusterRank();
  const int group = static_cast<int>(blockIdx.x) / K::kCluster;
  const int line = group * K::kCluster + static_cast<int>(rank);
  const int lines = K::kOp == Op::Linear ? args.blockRows : args.blockCols;
  const int64_t tokenBase = static_cast<int64_t>(blockIdx.y) * K::kTileM;
  const int32_t recordFirst = args.groupPtr[group];
  const int32_t records = args.groupPtr[group + 1] - recordFirst;

  // Warp 0 keeps this CTA's records of the schedule, in union order.
  if (tid < 32) {
    int count = 0;
    for (int base = 0; base < records; base += 32) {
      const int u = base + tid;
      const int32_t* record = args.groupSteps + static_cast<int64_t>(recordFirst + min(u, records - 1)) * kScheduleRecord;
      const int32_t mask = u < records ? record[1] : 0;
      const bool own = (mask >> rank) & 1;
      const uint32_t ballot = __ballot_sync(0xffffffffu, own);
      if (own) {
        const int at = count + __popc(ballot & ((1u << tid) - 1));
        ownStep[at] = u;
        ownLine[at] = record[0];
        ownValue[at] = record[2 + rank];
        ownMask[at] = mask;
        ownSlot[at] = record[kScheduleSlotField] % K::kStages;  // any coloring is correct, a good one is fast
      }
      count += __popc(ballot);
    }
    if (tid == 0) ownCount = count;
  }
  if (tid == 0) {
    prefetchTensorMap(&mapA);
    prefetchTensorMap(&mapB);
    for (int s = 0; s < K::kStages; ++s) {
      mbarrierInit(&full[s], 1);
      mbarrierInit(&empty[s], 4 * K::kConsumers);  // one arrival per consumer warp
    }
    for (int b = 0; b < K::kStages * K::kCluster; ++b) mbarrierInit(&ready[b], 1);
    fenceBarrierInit();
  }
  __syncthreads();  // this CTA's own steps, for all its threads
  // Every CTA's barriers exist before any member copies into it or arrives on them.
  clusterSync();
  const int own = ownCount;

  const int warpGroup = warpGroupOf(tid);
  if (warpGroup == 0) {
    setMaxRegistersDecrease<40>();
    if (tid == 0) {
      uint32_t used = 0, emptyPhase = 0;
      uint64_t readyPhase = 0;
      for (int i = 0; i < own; ++i) {
        const int u = ownStep[i];
        const int s = ownSlot[i];
        if ((used >> s) & 1) {
          mbarrierWait(&empty[s], (emptyPhase >> s) & 1);
          emptyPhase ^= 1u << s;
        }
        used |= 1u << s;
        uint8_t* stageA = smem + s * K::kStageBytes;
        uint8_t* stageB = stageA + K::kABytes;
        mbarrierArriveExpectTx(&full[s], K::kStageBytes);
        const int32_t valueRow = ownValue[i] * K::R;
        if constexpr (K::kOp == Op::Linear) {
          tmaLoad2d(stageB, &mapB, 0, valueRow, &full[s]);
        } else {
#pragma unroll
          for (int p = 0; p < K::C / K::kPanelB; ++p)
            tmaLoad2d(stageB + p * K::kStep * K::kPanelB * 2, &mapB, p * K::kPanelB, valueRow, &full[s]);
        }
        const int32_t column = ownLine[i] * (K::kOp == Op::Linear ? K::C : K::R);
        if constexpr (!K::kShare) {
          tmaLoad2d(stageA, &mapA, column, static_cast<int32_t>(tokenBase), &full[s]);
          continue;
        }
        const uint32_t mask = static_cast<uint32_t>(ownMask[i]);
        const uint32_t issuer = issuerOf<K::kCluster>(mask, u);
        if (issuer != rank) {
          mbarrierArriveRemote(&ready[s * K::kCluster + rank], issuer);
        } else {
#pragma unroll
          for (int m = 0; m < K::kCluster; ++m) {
            if (m == static_cast<int>(rank) || !((mask >> m) & 1)) continue;
            const int bit = s * K::kCluster + m;
            mbarrierWait(&ready[bit], static_cast<uint32_t>(readyPhase >> bit) & 1);
            readyPhase ^= uint64_t{1} << bit;
          }
          tmaLoad2dMulticast(stageA, &mapA, column, static_cast<int32_t>(tokenBase), &full[s],
                             static_cast<uint16_t>(mask));
        }
      }
    }
  } else {
    setMaxRegistersIncrease<232>();
    const int consumer = warpGroup - 1;
    const int lane = tid % 32, warpInGroup = (tid % 128) / 32;
    typename K::Acc acc;
    zeroAccumulators(acc);
    uint32_t fullPhase = 0;
    int previous = -1;  // the slot of the step before, released once this step's products are issued
    for (int i = 0; i < own; ++i) {
      const int s = ownSlot[i];
      if (s == previous) {
        // A schedule colored for fewer slots: this step's copy waits for the previous step's release.
        wgmmaWait<0>();
#pragma unroll
        for (int m = 0; m < K::kMmaM; ++m) fenceRegisters(acc[m]);
        if (lane == 0) mbarrierArrive(&empty[previous]);
        previous = -1;
      }
      mbarrierWait(&full[s], (fullPhase >> s) & 1);
      fullPhase ^= 1u << s;
      const uint32_t stageA = smemAddress(smem + s * K::kStageBytes), stageB = stageA + K::kABytes;
#pragma unroll
      for (int m = 0; m < K::kMmaM; ++m) fenceRegisters(acc[m]);
      wgmmaFence();
      mmaStage<K>(acc, stageA, stageB, consumer);
      wgmmaCommit();
#pragma unroll
      for (int m = 0; m < K::kMmaM; ++m) fenceRegisters(acc[m]);
      // Released a step late, as in consumeSteps, unless the next step shares the slot (above).
      wgmmaWait<1>();
      if (previous >= 0 && lane == 0) mbarrierArrive(&empty[previous]);
      previous = s;
    }
    wgmmaWait<0>();
#pragma unroll
    for (int m = 0; m < K::kMmaM; ++m) fenceRegisters(acc[m]);
    if (previous >= 0 && lane == 0) mbarrierArrive(&empty[previous]);
    if (line < lines) {
      TileWork work{};
      work.line = line;
      work.tokenBase = tokenBase;
      // Every copy into this CTA was one of its own steps, all consumed: the slots are free for the staged rows.
      storeTileStaged<K>(acc, args, work, smem, consumer, lane, warpInGroup);
    }
  }
  // No CTA leaves while another may still arrive on its barriers (without the sharing, none does).
  if constexpr (K::kShare) clusterSync();
#endif
}

}  // namespace sm90

namespace {

template <class K>
bool launchMulticast(DType dtype, const KernelArgs& argsIn, cudaStream_t stream) {
  KernelArgs args = argsIn;
  if (!args.groupPtr || !args.groupSteps) return false;
  const int64_t depthBlocks = K::kOp == Op::Linear ? args.blockCols : args.blockRows;
  const int64_t lines = K::kOp == Op::Linear ? args.blockRows : args.blockCols;
  if (depthBlocks > K::kOwnCapacity) return false;
  CUtensorMap mapA, mapB;
  dim3 unused;
  if (!sm90::prepareLaunch<K>(dtype, args, mapA, mapB, unused)) return false;
  const int64_t groups = (lines + K::kCluster - 1) / K::kCluster;
  if (groups * K::kCluster > INT32_MAX || args.tilesM > 65535) return false;
  auto kernel = sm90::bsrWgmmaMulticastKernel<K>;
  BS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, K::kSmemBytes));
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>(groups * K::kCluster), static_cast<unsigned>(args.tilesM));
  config.blockDim = dim3(K::kThreads);
  config.dynamicSmemBytes = K::kSmemBytes;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeClusterDimension;
  attribute[0].val.clusterDim.x = K::kCluster;
  attribute[0].val.clusterDim.y = 1;
  attribute[0].val.clusterDim.z = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  BS_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, mapA, mapB, args));
  BS_LAUNCH_CHECK("bsrWgmmaMulticastKernel");
  return true;
}

template <typename T, Op kOp, bool kShare>
bool launchBlock(DType dtype, const KernelArgs& args, int blockSize, cudaStream_t stream) {
  if (blockSize == 32) return launchMulticast<sm90::MulticastTraits<T, kOp, 32, multicastStages(32), kShare>>(dtype, args, stream);
  if (blockSize == 64) return launchMulticast<sm90::MulticastTraits<T, kOp, 64, multicastStages(64), kShare>>(dtype, args, stream);
  return false;
}

template <typename T, bool kShare>
bool launchTyped(Op op, DType dtype, const KernelArgs& args, int blockSize, cudaStream_t stream) {
  if (op == Op::Linear) return launchBlock<T, Op::Linear, kShare>(dtype, args, blockSize, stream);
  if (op == Op::Matmul) return launchBlock<T, Op::Matmul, kShare>(dtype, args, blockSize, stream);
  return false;
}

template <bool kShare>
bool launchShared(Op op, DType dtype, const KernelArgs& args, int blockSize, cudaStream_t stream) {
  if (dtype == DType::BFloat16) return launchTyped<__nv_bfloat16, kShare>(op, dtype, args, blockSize, stream);
  if (dtype == DType::Float16) return launchTyped<__half, kShare>(op, dtype, args, blockSize, stream);
  return false;
}

}  // namespace

bool launchMulticastVariant(Op op, DType dtype, const KernelArgs& args, int blockSize, int variant,
                            cudaStream_t stream) {
  if (args.rows != int64_t{args.blockRows} * blockSize || args.cols != int64_t{args.blockCols} * blockSize)
    return false;
  if (variant == kMulticastVariant) return launchShared<true>(op, dtype, args, blockSize, stream);
  if (variant == kMulticastVariant + 1) return launchShared<false>(op, dtype, args, blockSize, stream);
  return false;
}

}  // namespace bs::tc
