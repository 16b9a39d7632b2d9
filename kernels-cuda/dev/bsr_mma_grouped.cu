// The grouped tile of 32x32 blocks (sm_80+, mma.sync), kept for measurement: variants 8 and 9 of the mma path,
// linked into tc_bench, never into the addon. A CTA owns 128 tokens x a group of kScheduleGroup block rows
// (bsrLinear) or block columns (bsrMatmul) and walks the group's merged schedule (group_schedule.h): each step
// loads one 32-wide slice of the dense operand once, with the block of every member that has one there, and each
// warp multiplies its tokens' slice by each present member's block. The tile kernels of bsr_mma.cuh re-read the
// slice for every block row that uses it: T R / (T + R) FLOP per L2 byte, 26 at 128 x 32. Here a step brings one
// slice and p present blocks for p blocks' work; at density 0.25 with 4 members p is 1.47 on average, about 35
// FLOP per byte (a model the measurement did not reach: docs/kernels.md, "Grouped mma.sync tiles").
//
// Warps split the tokens only, so every warp has the same work whatever the mask. The mask of a step is the same
// for the whole CTA, so the branch on a member is uniform. A CTA keeps the first kRecordCapacity records of its
// schedule in shared memory. The tile is staged through shared memory and stored in whole 16-byte chunks.
#include "dev_variants.h"
#include "group_schedule.h"
#include "tc/bsr_mma.cuh"

namespace bs::tc {

namespace {

// Records of a group's schedule a CTA keeps in shared memory (6 KB): the loader reads each step's record there,
// off the critical path; a longer schedule (over 256 block columns or rows) reads the rest from global memory.
constexpr int kRecordCapacity = 256;

template <typename T_, Op kOp_, int kTileM_, int kWarps_, int kStages_>
struct GroupedTraits {
  using T = T_;
  static constexpr Op kOp = kOp_;
  static constexpr int kBlock = 32;
  static constexpr int kMembers = kScheduleGroup;
  static constexpr int kTileM = kTileM_;
  static constexpr int kTileN = kMembers * kBlock;  // features of the output tile
  static constexpr int kWarps = kWarps_, kThreads = 32 * kWarps, kStages = kStages_;
  static constexpr int kWarpM = kTileM / kWarps;  // tokens per warp
  static constexpr int kMmaM = kWarpM / 16;
  static constexpr int kMinCtas = 2;  // CTAs per SM the registers must allow
  static constexpr int kABytes = kTileM * kBlock * 2;    // the dense slice: tokens x 32, one 64-byte panel
  static constexpr int kSlotBytes = kBlock * kBlock * 2;  // one member's block
  static constexpr int kStageBytes = kABytes + kMembers * kSlotBytes;
  static constexpr int kMaskOffset = kStages * kStageBytes;
  static constexpr int kRecordOffset = kMaskOffset + kStages * 4;
  static constexpr int kSmemBytes = 1024 + kRecordOffset + kRecordCapacity * kScheduleRecord * 4;

  static_assert(kWarpM % 16 == 0, "warp tiles are whole m16 tiles");
  static_assert((kTileM * 4) % kThreads == 0, "every thread copies the same number of slice chunks");
  static_assert(kThreads % (kBlock * 4) == 0 && kMembers % (kThreads / (kBlock * 4)) == 0,
                "each pass of the threads copies whole blocks");
  static_assert(StagedTile<T, kTileN>::bytes(kTileM) <= kStages * kStageBytes, "the staged tile fits the stages");
};

// 8 warps of 16 tokens (about 124 registers, two CTAs per SM) and 4 warps of 32 (about 215, two CTAs per SM).
template <typename T, Op kOp> using GroupedTile = GroupedTraits<T, kOp, 128, 8, 4>;
template <typename T, Op kOp> using GroupedSmallTile = GroupedTraits<T, kOp, 128, 4, 4>;

struct GroupWork {
  int64_t tokenBase;
  int32_t first;  // the group's first record
  int32_t steps;
  int32_t group;
};

// Loads step `step` of the group into a stage: the dense slice, the present members' blocks, and the step's mask.
template <class K>
__device__ __forceinline__ void loadStep(const KernelArgs& args, const GroupWork& work, const int32_t* records,
                                         int step, uint8_t* stage, int32_t* mask, int tid) {
  using T = typename K::T;
  const int32_t* record = step < kRecordCapacity
                              ? records + step * kScheduleRecord
                              : args.groupSteps + static_cast<int64_t>(work.first + step) * kScheduleRecord;
  const int32_t line = record[0], present = record[1];
  const T* a = static_cast<const T*>(args.a);
  const T* b = static_cast<const T*>(args.b);
  const int64_t lda = K::kOp == Op::Linear ? args.cols : args.rows;
  const int64_t column = static_cast<int64_t>(line) * K::kBlock;
  const uint32_t aSmem = smemAddress(stage);
#pragma unroll
  for (int it = 0; it < K::kTileM * 4 / K::kThreads; ++it) {
    const int id = tid + it * K::kThreads, row = id / 4, chunk = id % 4;
    const int64_t token = work.tokenBase + row;
    const bool valid = token < args.m;
    cpAsync16(aSmem + panelOffset<32>(row, chunk), a + (valid ? token * lda + column + chunk * 8 : 0), valid);
  }
  // A block as stored, 32 rows of 4 chunks, into its member's slot: K-major for Linear (rows are features),
  // MN-major for Matmul (rows are the reduction); the ldmatrix below reads it either way. Each pass of the threads
  // copies kMembersPerPass members' blocks, thread t chunk t % 128 of member t / 128 of the pass.
  constexpr int kMembersPerPass = K::kThreads / (K::kBlock * 4);
  const int row = (tid % 128) / 4, chunk = tid % 4;
#pragma unroll
  for (int pass = 0; pass < K::kMembers / kMembersPerPass; ++pass) {
    const int k = pass * kMembersPerPass + tid / 128;
    if (present & (1 << k)) {
      const T* block = b + static_cast<int64_t>(record[2 + k]) * K::kBlock * K::kBlock;
      cpAsync16(aSmem + K::kABytes + k * K::kSlotBytes + panelOffset<32>(row, chunk), block + row * 32 + chunk * 8,
                true);
    }
  }
  if (tid == 0) *mask = present;
}

// One warp's share of a stage: its tokens' slice fragments once, then each present member's block.
template <class K>
__device__ __forceinline__ void computeStep(uint32_t aSmem, int32_t present, int warp, int lane,
                                            float (&acc)[K::kMembers][K::kMmaM][4][4]) {
  const int quad = lane >> 3, r8 = lane & 7;
  // The slice's fragments for the whole 32-deep step, then per present member one branch: its block's
  // fragments, then every mma of the member (2 x kMmaM x 4, two deep per accumulator).
  uint32_t af[2][K::kMmaM][4];
#pragma unroll
  for (int kk = 0; kk < 2; ++kk)
#pragma unroll
    for (int mt = 0; mt < K::kMmaM; ++mt)
      ldmatrixX4(af[kk][mt], aSmem + panelOffset<32>(warp * K::kWarpM + mt * 16 + (lane & 15), kk * 2 + (lane >> 4)));
#pragma unroll
  for (int k = 0; k < K::kMembers; ++k) {
    if (!(present & (1 << k))) continue;
    const uint32_t slot = aSmem + K::kABytes + k * K::kSlotBytes;
    uint32_t bf[2][4][2];
#pragma unroll
    for (int kk = 0; kk < 2; ++kk)
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        uint32_t r[4];
        if constexpr (K::kOp == Op::Linear) {
          ldmatrixX4(r, slot + panelOffset<32>(np * 16 + r8 + (quad >> 1) * 8, kk * 2 + (quad & 1)));
        } else {
          ldmatrixX4Trans(r, slot + panelOffset<32>(kk * 16 + r8 + (quad & 1) * 8, np * 2 + (quad >> 1)));
        }
        bf[kk][2 * np][0] = r[0];
        bf[kk][2 * np][1] = r[1];
        bf[kk][2 * np + 1][0] = r[2];
        bf[kk][2 * np + 1][1] = r[3];
      }
#pragma unroll
    for (int kk = 0; kk < 2; ++kk)
#pragma unroll
      for (int mt = 0; mt < K::kMmaM; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) mma16816<typename K::T>(acc[k][mt][nt], af[kk][mt], bf[kk][nt]);
  }
}

template <class K>
__global__ void __launch_bounds__(K::kThreads, K::kMinCtas) bsrGroupedKernel(const KernelArgs args) {
  using T = typename K::T;
  extern __shared__ uint8_t smemRaw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smemRaw) + 1023) & ~uintptr_t(1023));
  int32_t* masks = reinterpret_cast<int32_t*>(smem + K::kMaskOffset);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  GroupWork work;
  int tileM, tileN;
  rasterTile(blockIdx.x, args.tilesM, args.tilesN, args.groupM, tileM, tileN);
  work.group = tileN;
  work.first = args.groupPtr[tileN];
  work.steps = args.groupPtr[tileN + 1] - work.first;
  work.tokenBase = static_cast<int64_t>(tileM) * K::kTileM;
  int32_t* records = reinterpret_cast<int32_t*>(smem + K::kRecordOffset);
  const int cached = min(work.steps, kRecordCapacity) * kScheduleRecord;
  for (int i = tid; i < cached; i += K::kThreads)
    records[i] = args.groupSteps[static_cast<int64_t>(work.first) * kScheduleRecord + i];
  __syncthreads();

  float acc[K::kMembers][K::kMmaM][4][4];
#pragma unroll
  for (int k = 0; k < K::kMembers; ++k)
#pragma unroll
    for (int mt = 0; mt < K::kMmaM; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[k][mt][nt][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < K::kStages - 1; ++s) {
    if (s < work.steps) loadStep<K>(args, work, records, s, smem + s * K::kStageBytes, masks + s, tid);
    cpAsyncCommit();
  }
  for (int step = 0; step < work.steps; ++step) {
    cpAsyncWait<K::kStages - 2>();
    __syncthreads();  // stage `step` (and its mask) landed for every thread; stage `step - 1` is free again
    const int next = step + K::kStages - 1;
    if (next < work.steps)
      loadStep<K>(args, work, records, next, smem + (next % K::kStages) * K::kStageBytes, masks + next % K::kStages,
                  tid);
    cpAsyncCommit();
    const int slot = step % K::kStages;
    computeStep<K>(smemAddress(smem + slot * K::kStageBytes), masks[slot], warp, lane, acc);
  }
  cpAsyncWait<0>();

  using Staged = StagedTile<T, K::kTileN>;
  __syncthreads();  // every warp is done reading the stages
  const Staged staged{reinterpret_cast<T*>(smem)};
  const int g = lane >> 2, c2 = (lane & 3) * 2;
#pragma unroll
  for (int k = 0; k < K::kMembers; ++k)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      const int col = k * K::kBlock + nt * 8 + c2;
      const float2 bias = tileBias<T, K::kOp, K::kTileN>(args, work.group, col);
#pragma unroll
      for (int mt = 0; mt < K::kMmaM; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half)
          staged.put(warp * K::kWarpM + mt * 16 + g + half * 8, col, acc[k][mt][nt][half * 2],
                     acc[k][mt][nt][half * 2 + 1], bias);
    }
  __syncthreads();
  staged.template store<K::kOp>(K::kTileM, args, work.tokenBase, work.group, tid, K::kThreads);
}

template <class K>
bool launchTile(const KernelArgs& argsIn, cudaStream_t stream) {
  KernelArgs args = argsIn;
  const int64_t features = K::kOp == Op::Linear ? args.rows : args.cols;
  const int64_t tilesM = (args.m + K::kTileM - 1) / K::kTileM;
  const int64_t groups = features / K::kTileN;
  if (tilesM * groups > INT32_MAX || groups == 0) return false;
  args.tilesM = static_cast<int32_t>(tilesM);
  args.tilesN = static_cast<int32_t>(groups);
  args.groupM = rasterGroup(args.tilesM, K::kTileM, K::kOp == Op::Linear ? args.cols : args.rows);
  auto kernel = bsrGroupedKernel<K>;
  BS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, K::kSmemBytes));
  kernel<<<static_cast<unsigned>(tilesM * groups), K::kThreads, K::kSmemBytes, stream>>>(args);
  BS_LAUNCH_CHECK("bsrGroupedKernel");
  return true;
}

template <typename T, Op kOp>
bool launchTyped(const KernelArgs& args, int variant, cudaStream_t stream) {
  return variant == kGroupedVariant ? launchTile<GroupedTile<T, kOp>>(args, stream)
                                    : launchTile<GroupedSmallTile<T, kOp>>(args, stream);
}

}  // namespace

bool launchGroupedVariant(Op op, DType dtype, const KernelArgs& args, int variant, cudaStream_t stream) {
  if ((variant != kGroupedVariant && variant != kGroupedSmallVariant) || op == Op::Sampled || !args.groupPtr ||
      !args.groupSteps)
    return false;
  if (dtype != DType::BFloat16 && dtype != DType::Float16) return false;
  if (args.rows != int64_t{args.blockRows} * 32 || args.cols != int64_t{args.blockCols} * 32) return false;
  const int64_t features = op == Op::Linear ? args.rows : args.cols;
  if (features % (kScheduleGroup * 32) != 0) return false;
  const bool bf16 = dtype == DType::BFloat16;
  if (op == Op::Linear)
    return bf16 ? launchTyped<__nv_bfloat16, Op::Linear>(args, variant, stream)
                : launchTyped<__half, Op::Linear>(args, variant, stream);
  return bf16 ? launchTyped<__nv_bfloat16, Op::Matmul>(args, variant, stream)
              : launchTyped<__half, Op::Matmul>(args, variant, stream);
}

}  // namespace bs::tc
