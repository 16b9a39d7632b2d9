// Chooses a tensor-core path for each block-sparse product, or declines so the simple kernel runs.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <optional>
#include <string>

#include "ptx.cuh"
#include "tc_kernels.h"
#include "../kernels.h"
#include "../memory.h"

namespace bs {

namespace tc {

KernelArgs makeArgs(Op op, const void* a, const void* b, const void* bias, void* out, int64_t m,
                    const BsrPatternView& pattern) {
  KernelArgs args{};
  args.a = a;
  args.b = b;
  args.bias = bias;
  args.out = out;
  args.m = m;
  args.rows = pattern.rows;
  args.cols = pattern.cols;
  args.blockRows = pattern.blockRows;
  args.blockCols = pattern.blockCols;
  args.nnzBlocks = pattern.nnzBlocks;
  args.blockRowPtr = pattern.blockRowPtr;
  args.blockColIdx = pattern.blockColIdx;
  args.blockColPtr = pattern.blockColPtr;
  args.blockRowIdx = pattern.blockRowIdx;
  args.valueIndex = pattern.valueIndex;
  args.tokensPerSplit = m;
  args.activated = nullptr;
  args.activation = Activation::Gelu;
  args.pre = nullptr;
  args.columnPartials = nullptr;
  args.groupPtr = op == Op::Linear ? pattern.rowGroupPtr : op == Op::Matmul ? pattern.colGroupPtr : nullptr;
  args.groupSteps = op == Op::Linear ? pattern.rowGroupSteps : op == Op::Matmul ? pattern.colGroupSteps : nullptr;
  args.lineSplits = 1;
  args.patchList = op == Op::Sampled ? pattern.patchList : nullptr;
  args.patchItems = op == Op::Sampled ? pattern.patchItems : 0;
  args.patchPairList = op == Op::Sampled ? pattern.patchPairList : nullptr;
  args.patchPairItems = op == Op::Sampled ? pattern.patchPairItems : 0;
  return args;
}

int rasterGroup(int tilesM, int64_t tileRows, int64_t depth) {
  const int64_t slabBytes = std::max<int64_t>(1, tileRows * depth * 2);
  const int64_t group = std::max<int64_t>(1, (int64_t{16} << 20) / slabBytes);
  return static_cast<int>(std::min<int64_t>(group, std::max(tilesM, 1)));
}

namespace {

}  // namespace


}  // namespace tc

// device.h's (not included here: its DeviceInfo is the started device's, this file's the current one's).
double peakMemoryBandwidth(int device);

namespace {

// Off by default: float32 then stays exact (the simple kernels).
std::atomic<bool> tf32Allowed{false};

struct DeviceInfo {
  int major = 0;
  int sms = 0;
  int l2Bytes = 0;  // 0 when the runtime cannot say
  double memoryBandwidth = 0;  // device memory's peak, bytes per second (0 when the runtime cannot say)
  bool wgmma = false;
  // CTAs of the wgmma dW tile one SM holds, per square block of 32, 64 and 128 (wgmma devices; 1 where unknown).
  int sampledCtas[3] = {1, 1, 1};
  int sampledCtasPerSm(int block) const {
    return block == 32 ? sampledCtas[0] : block == 64 ? sampledCtas[1] : block == 128 ? sampledCtas[2] : 1;
  }
  // CTAs of mma.sync's dW tile (bfloat16/float16) one SM holds, per square block of 32, 64 and 128 (sm_80+; 0 where
  // unknown).
  int mmaSampledCtas[3] = {0, 0, 0};
  int mmaSampledCtasPerSm(int block) const {
    return block == 32 ? mmaSampledCtas[0] : block == 64 ? mmaSampledCtas[1] : block == 128 ? mmaSampledCtas[2] : 0;
  }
  // The same for the other block shapes mma.sync covers, in tc::kMmaShapes' order.
  int mmaShapeCtas[std::size(tc::kMmaShapes)] = {};
  // mma.sync's dW tile for R x C blocks, square or not: its CTAs per SM, 0 for a shape it does not cover.
  int mmaDwCtasPerSm(int rows, int cols) const {
    if (rows == cols && (rows == 32 || rows == 64 || rows == 128)) return mmaSampledCtasPerSm(rows);
    for (size_t i = 0; i < std::size(tc::kMmaShapes); ++i)
      if (tc::kMmaShapes[i].rows == rows && tc::kMmaShapes[i].cols == cols) return mmaShapeCtas[i];
    return 0;
  }
};

// Properties of the current device, read once per device.
const DeviceInfo& currentDevice() {
  constexpr int kMaxDevices = 64;
  static DeviceInfo infos[kMaxDevices];
  static bool known[kMaxDevices] = {};
  int device = 0;
  BS_CUDA_CHECK(cudaGetDevice(&device));
  if (device < 0 || device >= kMaxDevices) {
    static DeviceInfo none;
    return none;
  }
  if (!known[device]) {
    DeviceInfo info;
    BS_CUDA_CHECK(cudaDeviceGetAttribute(&info.major, cudaDevAttrComputeCapabilityMajor, device));
    int minor = 0;
    BS_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    BS_CUDA_CHECK(cudaDeviceGetAttribute(&info.sms, cudaDevAttrMultiProcessorCount, device));
    if (cudaDeviceGetAttribute(&info.l2Bytes, cudaDevAttrL2CacheSize, device) != cudaSuccess) {
      cudaGetLastError();
      info.l2Bytes = 0;
    }
    info.memoryBandwidth = peakMemoryBandwidth(device);
    info.wgmma = info.major == 9 && minor == 0 && tc::wgmmaAvailable();
    if (info.wgmma)
      for (int i = 0; i < 3; ++i) info.sampledCtas[i] = std::max(1, tc::wgmmaSampledCtasPerSm(32 << i));
    if (info.major >= 8) {
      for (int i = 0; i < 3; ++i) info.mmaSampledCtas[i] = std::max(0, tc::mmaSampledCtasPerSm(32 << i));
      for (size_t i = 0; i < std::size(tc::kMmaShapes); ++i)
        info.mmaShapeCtas[i] = std::max(0, tc::mmaShapeSampledCtasPerSm(tc::kMmaShapes[i].rows, tc::kMmaShapes[i].cols));
    }
    infos[device] = info;
    known[device] = true;
  }
  return infos[device];
}

bool aligned16(const void* pointer) { return (reinterpret_cast<uintptr_t>(pointer) & 15) == 0; }

// The squares of 32, 64 and 128, which both paths cover with tiles tuned per product; the other supported shapes
// (tc::mmaShapeSupported) run the mma.sync default tile alone.
bool squareBlocks(const BsrPatternView& pattern) {
  const int block = pattern.blockHeight;
  return pattern.blockWidth == block && (block == 32 || block == 64 || block == 128);
}

// The block shapes, dtypes and sizes the kernels cover.
bool supported(DType dtype, const BsrPatternView& pattern, int64_t m) {
  const bool tf32 = dtype == DType::Float32 && tf32Allowed.load(std::memory_order_relaxed);
  if (dtype != DType::BFloat16 && dtype != DType::Float16 && !tf32) return false;
  const int block = pattern.blockHeight;
  // Other shapes: the mma.sync tiles of bsr_mma_shapes.cu, half precision only (TF32 has the squares).
  if (!squareBlocks(pattern) &&
      (dtype == DType::Float32 || !tc::mmaShapeSupported(pattern.blockHeight, pattern.blockWidth)))
    return false;
  // Bulk-copy coordinates are int32: tokens and rows of the values viewed as [nnzBlocks * R, C].
  if (m <= 0 || m > INT32_MAX || pattern.nnzBlocks <= 0) return false;
  if (static_cast<int64_t>(pattern.nnzBlocks) * block > INT32_MAX) return false;
  return pattern.rows <= INT32_MAX && pattern.cols <= INT32_MAX;
}

TcPath resolvePath(const DeviceInfo& device, TcPath requested) {
  if (device.major < 8) return TcPath::Auto;
  if (requested == TcPath::Auto) return device.wgmma ? TcPath::Wgmma : TcPath::Mma;
  if (requested == TcPath::Wgmma && !device.wgmma) return TcPath::Auto;
  return requested;
}

// dW: each CTA reduces all tokens for a group of up to 128 rows of blocks (128 / R blocks of one block column; 256 rows
// for the wide and the feature-major dW tiles, named only); when that leaves SMs idle, split the tokens and sum the
// float32 partials in a second, deterministic pass. The groups are the pattern's own count (a column of k blocks makes
// ceil(k / G) groups of up to G: BsrPatternView::columnGroups), not nnz / G, which undercounts them by up to one per
// column and hid a last wave of a few CTAs.
// - wgmma: the tile's CTAs resident per SM (one at 32x32, 64x64 and 128x128 on an H200: its shared memory) make the
//   wave; every CTA of a split count runs the same number of token steps, so the product takes ceil(CTAs / wave)
//   waves of 1/s of the tokens each. Among the counts, the one that minimises that plus the splits' cost, about
//   600/m of the product per split (float32 partials written and read again, a prologue and an epilogue per CTA;
//   measured on an H200: benchmarks/results/gpu-nvidia-h200/step-kernels.md). Each split keeps at least 1024 tokens.
// - mma.sync in bfloat16/float16 (several CTAs resident per SM: four at 32x32 and three at 64x64 and 128x128 on an
//   H200, as the runtime's occupancy says): the same waves with the wave the tile's resident CTAs on every SM, but
//   the splits' cost scaled by the groups over the wave (the partials are the pattern's values once per split, so
//   their pass grows with the blocks where the product's waves do not), from 2048 tokens with splits of at least
//   512: mmaSplits. Measured on an H200 (docs/kernels.md, "mma.sync's dW splits"; 32x32, 64x64 and 128x128 at 1024-16384
//   tokens, widths 768-4096, densities 0.1-0.5): 1.19x the rule before (two CTAs per SM, no waves) on the geometric
//   mean and within 1.00x of the best of 1-12 splits (at most 1.21x off). The other block shapes of tc::kMmaShapes
//   take it with their own tile's resident CTAs (1.14x the older rule over 72 cases of 16x16, 16x32, 32x16 and 64x32
//   on an H200, within 1.01x of the best count on unfitted shapes). float32 (TF32, two CTAs per SM) keeps that older
//   rule.
int64_t columnGroupCount(const BsrPatternView& pattern, int64_t tileRows) {
  const int64_t perGroup = std::max<int64_t>(1, tileRows / pattern.blockHeight);
  for (int i = 0; i < kColumnGroupSizes; ++i)
    if (perGroup == (int64_t{1} << i) && pattern.columnGroups[i] > 0) return pattern.columnGroups[i];
  // Not counted: nnz / G, plus half a group for every column (each column's last group is half full on average).
  return std::max<int64_t>(1, (pattern.nnzBlocks + perGroup - 1) / perGroup + (perGroup > 1 ? pattern.blockCols / 2 : 0));
}

// The wgmma dW tile's CTAs that run at once on the device.
int64_t sampledWave(const BsrPatternView& pattern, const DeviceInfo& device) {
  return std::max<int64_t>(1, int64_t{device.sampledCtasPerSm(pattern.blockHeight)} * device.sms);
}

// The splits' cost in the models of dW's split count and tail, in tokens: a split costs about kSplitCostTokens / m of a
// wave (its float32 partials written and read again, a prologue and an epilogue per CTA), the tail's pieces about
// kTailCostTokens / m of one (their sum pass and short pipelines); each split keeps at least kSplitMinTokens tokens.
// Measured on an H200 (above, and "dW's last wave" in docs/kernels.md).
constexpr double kSplitCostTokens = 600.0;
constexpr double kTailCostTokens = 800.0;
constexpr int64_t kSplitMinTokens = 1024;
// The most token splits of a dW: at least kSplitMinTokens each, at most 64.
int64_t mostSplits(int64_t m) { return std::max<int64_t>(1, std::min<int64_t>(m / kSplitMinTokens, 64)); }

// The model's time of `groups` groups in `splits` token splits, in waves of whole-token groups, each split costing
// kSplitCostTokens / m of a wave times `scale` (1 on wgmma; see ruleSplits).
double uniformSplitCost(int64_t groups, int64_t splits, int64_t wave, int64_t m, double scale = 1.0) {
  const double waves = static_cast<double>((groups * splits + wave - 1) / wave);
  return waves / static_cast<double>(splits) +
         (splits > 1 ? static_cast<double>(splits) * kSplitCostTokens * scale / static_cast<double>(m) : 0.0);
}

// Tokens of each of about `splits` splits of m: a multiple of the 64-token step.
int64_t splitTokens(int64_t m, int64_t splits) { return ((m + splits - 1) / splits + 63) / 64 * 64; }

// The split count of `groups` CTAs' worth of work in waves of `wave` CTAs with the least uniformSplitCost, up to `most`;
// with `exactCounts`, only the counts splitTokens' rounding leaves as they are. `scale` scales the cost per split.
int64_t wavedSplits(int64_t groups, int64_t wave, int64_t m, int64_t most, double scale = 1.0, bool exactCounts = false) {
  int64_t splits = 1;
  double best = 0.0;
  for (int64_t s = 1; s <= most; ++s) {
    if (exactCounts && (m + splitTokens(m, s) - 1) / splitTokens(m, s) != s) continue;
    const double cost = uniformSplitCost(groups, s, wave, m, scale);
    if (s == 1 || cost < best - 1e-9) {
      best = cost;
      splits = s;
    }
  }
  return splits;
}

// mma.sync's dW split count (see above): waves of `wave` resident CTAs, the wgmma rule's cost per split scaled by the
// groups over the wave, from kMmaSplitMinTokens with splits of at least kMmaSplitTokens.
constexpr int64_t kMmaSplitMinTokens = 2048;
constexpr int64_t kMmaSplitTokens = 512;
int64_t mmaSplits(int64_t groups, int64_t wave, int64_t m) {
  if (m < kMmaSplitMinTokens) return 1;
  const int64_t most = std::max<int64_t>(1, std::min<int64_t>(m / kMmaSplitTokens, 64));
  return wavedSplits(groups, wave, m, most, static_cast<double>(groups) / static_cast<double>(wave), true);
}

int64_t ruleSplits(TcPath path, DType dtype, const BsrPatternView& pattern, int64_t m, int variant,
                   const DeviceInfo& device) {
  const int64_t most = mostSplits(m);
  // The patch tiles (dev's mma.sync with 8 or 16 warps and wgmma, the addon's kPatchPairTile): one CTA per record, one
  // CTA per SM (their stages fill shared memory).
  const bool pairRecords = variant == tc::kPatchDwWgmmaTile || variant == tc::kPatchPairTile;
  if (pairRecords || variant == tc::kPatchDwTile || variant == tc::kPatchDwPairsTile)
    return wavedSplits(std::max<int64_t>(1, pairRecords ? pattern.patchPairItems : pattern.patchItems),
                       std::max<int64_t>(1, device.sms), m, most);
  const int64_t tileRows = variant == tc::kWideTile || variant == tc::kFeatureMajorDwTile ? 256 : 128;
  const int64_t groups = columnGroupCount(pattern, tileRows);
  if (path != TcPath::Wgmma) {
    const int resident = dtype != DType::Float32 && variant == tc::kDefaultTile
                             ? device.mmaDwCtasPerSm(pattern.blockHeight, pattern.blockWidth)
                             : 0;
    if (resident > 0) return mmaSplits(groups, int64_t{resident} * device.sms, m);
    const int64_t slots = std::max<int64_t>(1, 2 * int64_t{device.sms});
    return std::min<int64_t>((slots + groups - 1) / groups, most);
  }
  return wavedSplits(groups, sampledWave(pattern, device), m, most);
}

// dW on the wgmma path: when the groups fill at least one wave and their last wave would hold only a few of them, the
// whole waves run whole groups (no split, no partials) and the rest, the tail, run as pieces of fewer tokens (each at
// least kTailMinSteps steps), tailSplits per group, about one piece per free slot: one short wave after the whole
// ones, where a uniform split (ruleSplits) must split every group and still leaves a last wave part empty. Measured on
// an H200 (docs/kernels.md, "dW's last wave"): a column of 64x64 blocks at 8192 tokens made 133 groups on 132 SMs, 89 us
// unsplit (two waves, the second of one CTA) and 76 us at the best uniform split. Taken when the model's time, the
// whole waves plus 1/tailSplits of one plus about 800/m of one for the pieces' pass and their short pipelines, is
// below ruleSplits' own.
constexpr int64_t kTailMinSteps = 4;
struct TailPlan {
  int64_t fullGroups = 0, tailGroups = 0, tailSplits = 0;  // tailSplits 0: no tail
};
TailPlan ruleTail(const BsrPatternView& pattern, int64_t m, int64_t uniformSplits, const DeviceInfo& device,
                  int forced) {
  TailPlan plan;
  const int64_t groups = columnGroupCount(pattern, 128);
  const int64_t wave = sampledWave(pattern, device);
  const int64_t steps = (m + 63) / 64;
  const int64_t full = groups / wave * wave, tail = groups - full;
  if (full == 0 || tail == 0) return plan;
  const int64_t pieces = forced > 0 ? std::min<int64_t>(forced, steps)
                                    : std::min<int64_t>(wave / tail, steps / kTailMinSteps);
  if (pieces < 2) return plan;
  if (forced == 0) {
    const double tailed = static_cast<double>(full / wave) + 1.0 / static_cast<double>(pieces) + kTailCostTokens / static_cast<double>(m);
    if (tailed >= uniformSplitCost(groups, uniformSplits, wave, m)) return plan;
  }
  plan.fullGroups = full;
  plan.tailGroups = tail;
  plan.tailSplits = pieces;
  return plan;
}

// dW with 32x32 blocks on a wgmma device: the wgmma dW tile (four blocks of a column per CTA, with ruleTail's tail)
// where the pattern is sparse and the tokens 2048 to 6143, mma.sync's tile otherwise. Measured on an H200 against
// mma.sync's tile with its wave rule (docs/kernels.md, "mma.sync's dW splits"; 1024 <-> 4096 and 768 -> 3072, densities
// 0.08-0.22): at 2048 tokens the wgmma tile 1.0-1.44x faster at densities up to 0.15, at 4096 0.88-1.20x (1.05x on the
// geometric mean), at 8192 0.81-1.08x and at 16384 0.81-0.99x: mma.sync's tile from 8192. (Against the rule before,
// of two mma.sync CTAs per SM, the wgmma tile had won at density 0.1 in all 13 cases measured, 1.14-1.81x.) Above
// 0.12-0.18 the addon's dense route takes dW anyway (denseSampledWins). Those layers held at most 614 blocks; on larger
// ones (4096 x 4096 and 2048 -> 8192, measured on an H100 at 2048 and 4096 tokens) the two tiles were within
// 0.94-1.09x of each other at about 7.4 blocks per SM (density 0.06), and mma.sync's tile 1.14-1.41x faster at
// 12.4-14.7 (0.10-0.12), where the wgmma tile's CTAs of four blocks run in more waves. So the wgmma tile only up to
// kWgmmaDw32MaxBlocksPerSm blocks per SM.
constexpr double kWgmmaDw32MaxDensity = 0.15;
constexpr int64_t kWgmmaDw32MinTokens = 2048;
constexpr int64_t kWgmmaDw32MaxTokens = 6144;  // exclusive
constexpr int64_t kWgmmaDw32MaxBlocksPerSm = 10;
bool wgmmaDw32Rule(const BsrPatternView& pattern, int64_t m, int sms) {
  const double cells = double(pattern.blockRows) * double(pattern.blockCols);
  return squareBlocks(pattern) && pattern.blockHeight == 32 && m >= kWgmmaDw32MinTokens && m < kWgmmaDw32MaxTokens &&
         cells > 0 && double(pattern.nnzBlocks) / cells <= kWgmmaDw32MaxDensity &&
         pattern.nnzBlocks <= kWgmmaDw32MaxBlocksPerSm * std::max(1, sms);
}

// Whether patchDwRule may take the patch tile on the current device: BLOCKSPARSE_CUDA_PATCH_DW "1" (on) or "0" (off),
// read once per process, so that one build measures both dispatches; otherwise on wgmma devices whose memory peaks at
// tc::kPatchPairMinBandwidth or more. Per device, as the pair records are (tcBuildsPatchRecords asks the same when a
// pattern is uploaded), so the records and the rule agree.
bool patchPairDispatched() {
  static const int forced = environmentSwitch("BLOCKSPARSE_CUDA_PATCH_DW");
  if (forced >= 0) return forced == 1;
  const DeviceInfo& device = currentDevice();
  return device.wgmma && device.memoryBandwidth >= tc::kPatchPairMinBandwidth;
}

// Whether a pattern's density is in the band where patchDwRule takes the tile.
bool patchPairInBand(double density) {
  return density > tc::kPatchPairMinDensity && density < tc::kPatchPairMaxDensity;
}

// Whether first-use autotuning times the patch tile for a pattern of this density (from kPatchPairTuneMinDensity; within
// half a block of it counts as at it: a pattern drawn at 0.1 holds the nearest whole number of blocks).
bool patchPairTunable(int64_t blockRows, int64_t blockCols, int64_t nnzBlocks) {
  const double cells = double(blockRows) * double(blockCols);
  return cells > 0 && (double(nnzBlocks) + 0.5) / cells >= tc::kPatchPairTuneMinDensity;
}

// dW with 32x32 blocks on a wgmma device, half precision: the patch tile (kPatchPairTile) from kPatchPairMinTokens
// tokens at densities in (kPatchPairMinDensity, kPatchPairMaxDensity), where the pattern has its pair records (built
// at upload on a wgmma device). Measured on an H200 against the dispatched tiles and the dense route (docs/kernels.md,
// "dW's patch tile fed by bulk copies"; 768 -> 3072, 1024 <-> 4096 and 4096 x 4096, 2048-16384 tokens): at density
// 0.25 and 8192-16384 tokens 83-162 us against 119-860 for the tiles and 1.07-1.16x faster than the dense route; at
// 2048 tokens tied with the route; at 0.1 slower than the wgmma and mma.sync tiles, at 0.35-0.5 than the route.
bool patchDwRule(DType dtype, const BsrPatternView& pattern, int64_t m) {
  const double cells = double(pattern.blockRows) * double(pattern.blockCols);
  if (!patchPairDispatched() || (dtype != DType::BFloat16 && dtype != DType::Float16) || !squareBlocks(pattern) ||
      pattern.blockHeight != 32 || pattern.patchPairList == nullptr || pattern.patchPairItems <= 0 ||
      m < tc::kPatchPairMinTokens || cells <= 0)
    return false;
  return patchPairInBand(double(pattern.nnzBlocks) / cells);
}

// How dW splits its tokens on `path` with tile `variant`: a uniform split count (the options' or ruleSplits'), and on
// the default wgmma tile of a square block, with the rule's count and the group lists there, perhaps a tail (ruleTail)
// in place of the split. run() launches it; tcSampledPlan reports it.
struct SampledPlan {
  int64_t splits = 1;          // uniform token splits (1 with a tail)
  int64_t tokensPerSplit = 0;  // tokens of each split, or of each tail piece
  int groupLog = 0;            // log2 of the blocks per group of the default tile (its column group list)
  TailPlan tail;
};
SampledPlan planSampled(TcPath path, DType dtype, const BsrPatternView& pattern, int64_t m, int variant,
                        const DeviceInfo& device,
                        const TcOptions& options) {
  SampledPlan plan;
  plan.splits = options.splits > 0 ? std::min<int64_t>(options.splits, std::max<int64_t>(1, (m + 63) / 64))
                                   : ruleSplits(path, dtype, pattern, m, variant, device);
  plan.tokensPerSplit = splitTokens(m, plan.splits);
  plan.splits = (m + plan.tokensPerSplit - 1) / plan.tokensPerSplit;
  const int block = pattern.blockHeight;
  plan.groupLog = block == 32 ? 2 : block == 64 ? 1 : 0;
  if (path != TcPath::Wgmma || !squareBlocks(pattern) || variant != tc::kDefaultTile || options.splits != 0 ||
      options.splitCluster || options.tailSplits < 0 || pattern.columnGroupList[plan.groupLog] == nullptr)
    return plan;
  plan.tail = ruleTail(pattern, m, plan.splits, device, options.tailSplits);
  if (plan.tail.tailSplits > 0) {
    plan.splits = 1;
    plan.tokensPerSplit = splitTokens(m, plan.tail.tailSplits);
    plan.tail.tailSplits = (m + plan.tokensPerSplit - 1) / plan.tokensPerSplit;
  }
  return plan;
}

// Linear/Matmul with 32x32 blocks and too few tiles to fill the GPU (a few hundred tokens or fewer), on lines of at
// least kLineSplitMinLine blocks: the mma.sync tile with each line split into runs of blocks, one CTA each, and a second
// pass summing the float32 partials. The split count brings the CTAs to about kLineSplitCtasPerSm per SM, each run
// keeping at least kLineSplitMinBlocks blocks and the partials under kLineSplitMostBytes; 1 (no split) otherwise.
// Measured on an H200 (docs/kernels.md, "Few token tiles"): 1.03-1.73x the unsplit tile on lines of 64 blocks at 65-512
// tokens, but 0.78-1.23x on lines of 32, and 0.27-1.26x (0.76x on the geometric mean with 32x32) where 64x64 and
// 128x128 blocks left their wgmma tiles for it.
constexpr int kLineSplitCtasPerSm = 2;
constexpr double kLineSplitMinLine = 48.0;
constexpr double kLineSplitMinBlocks = 2.0;
constexpr int kLineSplitMost = 16;
constexpr int64_t kLineSplitMostBytes = int64_t{32} << 20;
int ruleLineSplits(tc::Op op, const BsrPatternView& pattern, int64_t m, int sms) {
  if (op == tc::Op::Sampled || sms <= 0 || pattern.blockHeight != 32 || pattern.blockWidth != 32) return 1;
  const int64_t lines = op == tc::Op::Linear ? pattern.blockRows : pattern.blockCols;
  const int64_t width = op == tc::Op::Linear ? pattern.rows : pattern.cols;
  if (lines <= 0) return 1;
  const int64_t tiles = (m + tc::kMmaTileTokens - 1) / tc::kMmaTileTokens * lines;
  const double line = double(pattern.nnzBlocks) / double(lines);
  if (tiles >= sms || line < kLineSplitMinLine) return 1;
  const int64_t wanted = (int64_t{kLineSplitCtasPerSm} * sms + tiles - 1) / tiles;
  const int64_t byLine = static_cast<int64_t>(line / kLineSplitMinBlocks);
  const int64_t byBytes = kLineSplitMostBytes / std::max<int64_t>(1, m * width * int64_t{sizeof(float)});
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({wanted, byLine, byBytes, kLineSplitMost})));
}

// Whether bsrLinear / bsrMatmul with 32x32 blocks take the X-resident tile under the default options on a wgmma
// device with `sms` SMs (tc_kernels.h's rule): a slab of at most kXResidentMaxDispatchedSlab (K for Linear, N for Matmul), at
// least kXResidentMinLine blocks per line on average, at least kXResidentMinTokens tokens, and W's bytes per CTA at
// least kXResidentMinWeightPerSlab times the slab's (64 tokens x the slab's width).
bool xResidentRule(tc::Op op, const BsrPatternView& pattern, int64_t m, int sms) {
  if (op == tc::Op::Sampled || !squareBlocks(pattern) || pattern.blockHeight != 32 || m < tc::kXResidentMinTokens)
    return false;
  const int64_t slab = op == tc::Op::Linear ? pattern.cols : pattern.rows;
  const int64_t lines = op == tc::Op::Linear ? pattern.blockRows : pattern.blockCols;
  if (slab > tc::kXResidentMaxDispatchedSlab || slab % 8 != 0 || lines <= 0) return false;
  const double line = double(pattern.nnzBlocks) / double(lines);
  if (line < tc::kXResidentMinLine) return false;
  // W's elements per CTA against the slab's (the same element size).
  const double weight = double(tc::xResidentGroupLines(m, lines, tc::kXResidentConsumers, sms)) * line * 32 * 32;
  return weight >= tc::kXResidentMinWeightPerSlab * 64.0 * double(slab);
}

// bsrLinearActivation's line on the wgmma tiles of `width`: W's blocks per block row, counted in blocks of the square's
// depth (a rectangle's blocks of blockWidth columns against the tile's `width`).
double forwardLine(const BsrPatternView& pattern, int width) {
  return double(pattern.nnzBlocks) / double(pattern.blockRows) * pattern.blockWidth / width;
}

// Whether bsrLinearActivation takes the three-consumer ping-pong tile (kPingPong3Tile) under the default options on a
// wgmma device with `sms` SMs (tc_kernels.h's rules), for a pattern on the wgmma tiles of `width` (the squares of 64 and
// 128 and the rectangles on their tiles, 64 or more deep; the callers check that), lines counted in blocks of the
// square's depth. Width 64: enough 256-token tiles for the ping-pong tiles' rule, lines of at most
// kPingPong3ForwardMaxLine blocks; width 128: a 64-token tile per SM, lines of at most kPingPong3ForwardMaxLine128.
bool pingPong3ForwardRule(const BsrPatternView& pattern, int64_t m, int sms, int width) {
  if (pattern.blockRows <= 0) return false;
  return tc::pingPong3ForwardTileRule(width, m, pattern.blockRows, forwardLine(pattern, width), sms);
}

// What a product fuses into its staged epilogue, beside its output: Linear the activation's second output
// (`activated`), Matmul the activation's backward through the next layer's pre-activation (`pre`, with the bias
// gradient's column sums into `dbias`).
struct Fused {
  void* activated = nullptr;
  const void* pre = nullptr;
  void* dbias = nullptr;
  Activation activation = Activation::Gelu;
};

// Float32 scratch of `count` values into `slot` from the caching allocator (memory.h: held memory, reused in stream
// order, a graph pool's during a capture); false when the memory is not there (the caller then declines, and the
// simple kernel runs). Not cudaMallocAsync: its pool gives memory back at every synchronize (its release threshold is
// 0), and the next call maps it again, about 60 us on an H200's host against under 1 for the caching allocator.
bool floatScratch(std::optional<Scratch>& slot, int64_t count) {
  try {
    slot.emplace(static_cast<size_t>(count) * sizeof(float));
    return true;
  } catch (const Error& error) {
    if (error.kind != ErrorKind::OutOfMemory) throw;
    return false;
  }
}

bool run(tc::Op op, DType dtype, const void* a, const void* b, const void* bias, void* out, int64_t m,
         const BsrPatternView& pattern, cudaStream_t stream, const TcOptions& options, const Fused& fused = {}) {
  if (options.path == TcPath::Decode || !supported(dtype, pattern, m)) return false;
  // The fused activation: half-precision Linear on the shipped tiles only (their staged epilogue writes it).
  void* activated = fused.activated;
  if (activated != nullptr && (op != tc::Op::Linear || dtype == DType::Float32 || !aligned16(activated))) return false;
  // The fused activation backward: half-precision Matmul on the shipped wgmma tiles only (mma.sync's dX stores from
  // its registers).
  const bool backward = fused.pre != nullptr;
  if (backward && (op != tc::Op::Matmul || dtype == DType::Float32 || !aligned16(fused.pre) || fused.dbias == nullptr))
    return false;
  if (!aligned16(a) || !aligned16(b) || !aligned16(out) || (bias && (reinterpret_cast<uintptr_t>(bias) & 3)))
    return false;
  const DeviceInfo& device = currentDevice();
  TcPath path = resolvePath(device, options.path);
  if (path == TcPath::Auto) return false;
  const int block = pattern.blockHeight;
  const bool square = squareBlocks(pattern);
  // The rectangles of kWgmmaShapes take the wgmma tiles of the square of their output tile's width on sm_90a (the
  // products whose output tile is at least 64 wide): `width` and `line` (blocks per line on average) below are in that
  // square's terms, the line counted in blocks of the square's depth (a 64x128 block row is two 64x64 blocks deep), so
  // the squares' rules apply to them unchanged; a 32-deep side (64x32's bsrLinear, 32x64's bsrMatmul) has the default
  // tile alone.
  const bool wgmmaShape = !square && path == TcPath::Wgmma &&
                          tc::wgmmaShapeSupported(op, pattern.blockHeight, pattern.blockWidth);
  const int width = tc::tileWidth(op, pattern.blockHeight, pattern.blockWidth);
  const int depth = tc::tileDepth(op, pattern.blockHeight, pattern.blockWidth);
  int variant = options.variant;
  if (!square && !wgmmaShape) {
    // One tile per shape, on the mma.sync path (which every sm_80+ device has).
    if (options.path == TcPath::Wgmma || variant > tc::kDefaultTile) return false;
    path = TcPath::Mma;
    variant = tc::kDefaultTile;
  } else if (dtype == DType::Float32) {
    // TF32 has one kernel per block size, on the mma.sync path on every sm_80+ device.
    if (options.path == TcPath::Wgmma || variant > tc::kDefaultTile) return false;
    path = TcPath::Mma;
    variant = tc::kDefaultTile;
  } else if (options.path == TcPath::Auto && variant < 0) {
    // Measured on an H100 (docs/kernels.md): with 32x32 blocks mma.sync beats wgmma's tiles, whose n32 tiles
    // wait on shared memory, except the X-resident tile where its rule holds (measured on an H200); with 128x128
    // blocks and many tokens the 256-token wgmma tile wins.
    const bool xResident = path == TcPath::Wgmma && xResidentRule(op, pattern, m, device.sms);
    const bool patchDw = path == TcPath::Wgmma && op == tc::Op::Sampled && patchDwRule(dtype, pattern, m);
    const bool wgmmaDw = path == TcPath::Wgmma && op == tc::Op::Sampled && !patchDw && wgmmaDw32Rule(pattern, m, device.sms);
    if (square && block == 32 && !xResident && !wgmmaDw && !patchDw) path = TcPath::Mma;
    const bool wide = path == TcPath::Wgmma && width == 128 && op != tc::Op::Sampled && m >= tc::kWideTileMinTokens;
    variant = xResident ? tc::kXResidentTile : patchDw ? tc::kPatchPairTile : wide ? tc::kWideTile : tc::kDefaultTile;
    // At width 64, many tiles with short lines go to the persistent tile, at width 128 to the ping-pong tile
    // (measured on an H200 with square blocks: docs/kernels.md, "The staged epilogue and the persistent tile" and
    // "Consumers in turn"), where plain dX below kWideTileMinTokens tokens takes it from fewer tiles and on longer lines
    // (pingPongTile128Rule), and bsrLinearActivation (fused) on longer lines ("The 128-wide ping-pong tile fused"). dX
    // with the activation's backward in its epilogue goes to the ping-pong tile at width 64 too, and at width 128 on
    // longer lines, by its own rules ("The activation's backward in dX's epilogue"). Linear
    // and plain dX with fewer three-consumer tiles than SMs go to that tile at either width ("Three consumers with few
    // tiles").
    if (path == TcPath::Wgmma && (width == 64 || width == 128) && depth >= 64 && op != tc::Op::Sampled &&
        device.sms > 0) {
      const int64_t lines = op == tc::Op::Linear ? pattern.blockRows : pattern.blockCols;
      const double line = lines > 0 ? double(pattern.nnzBlocks) / double(lines) * depth / width : 0.0;
      auto tiles = [&](int64_t tileTokens) { return tc::tileCount(m, tileTokens, lines); };
      if (width == 64 && tc::persistentTileRule(m, lines, line, device.sms)) variant = tc::kPersistentTile;
      if (width == 64 && backward && tiles(tc::kPingPongTile64Tokens) >= tc::kPingPongMinTilesPerSm * device.sms &&
          line <= tc::kPingPongBackwardMaxLine64)
        variant = line <= tc::kPingPong3MaxLine ? tc::kPingPong3Tile : tc::kPingPongTile;
      const tc::PingPongProduct product = op == tc::Op::Linear
                                              ? (activated != nullptr ? tc::PingPongProduct::kLinearActivation
                                                                      : tc::PingPongProduct::kLinear)
                                              : (backward ? tc::PingPongProduct::kDxBackward : tc::PingPongProduct::kPlainDx);
      if (width == 128 && tc::pingPongTile128Rule(m, lines, line, device.sms, product)) variant = tc::kPingPongTile;
      // The three-consumer tile: Linear fused (`activated`, Linear's only) by its forward's rule, which holds with few
      // tiles too; Linear plain and dX without the activation's backward with fewer of its token tiles than SMs
      // (tc_kernels.h).
      if (activated != nullptr ? tc::pingPong3ForwardTileRule(width, m, lines, line, device.sms)
                               : !backward && tc::threeConsumerFewTilesRule(width, m, lines, device.sms))
        variant = tc::kPingPong3Tile;
    }
  }
  variant = std::max(variant, int{tc::kDefaultTile});
  // Too few tiles to fill the GPU (Linear/Matmul, half precision, nothing fused): the mma.sync tile with its lines
  // split (ruleLineSplits) in auto mode; a named mma.sync default tile takes options.splits (measurement).
  int lineSplits = 1;
  if (op != tc::Op::Sampled && activated == nullptr && !backward && dtype != DType::Float32) {
    if (options.path == TcPath::Auto && options.variant < 0 && path == TcPath::Mma)
      lineSplits = ruleLineSplits(op, pattern, m, device.sms);
    else if (path == TcPath::Mma && variant == tc::kDefaultTile && options.splits > 1)
      lineSplits = options.splits;
  }
  if ((activated != nullptr || backward) && variant != tc::kDefaultTile && variant != tc::kWideTile &&
      variant != tc::kPersistentTile && variant != tc::kPingPongTile && variant != tc::kXResidentTile &&
      variant != tc::kPingPong3Tile)
    return false;
  // The default options take the fused backward on the ping-pong tiles only, whose epilogue runs during the other
  // consumer's products: on an H200 it measured 0.89-0.98x dX and the separate pass at 128x128 and 2048-4096 tokens
  // (one case of 12 at 1.08x), 0.97-1.02x at 8192-16384, and 0.92-0.97x at 64x64 where the rule above takes it, while
  // the other tiles' consumers wait on the pre-activation's loads and lose (1.04-1.11x at 8192 tokens;
  // docs/kernels.md, "The activation's backward in dX's epilogue"). Options that name a path or tile (tc_bench) take
  // it on any shipped wgmma tile.
  // The X-resident tile (32x32) takes it too: its consumers request Z when a line starts, as they do its bias, and
  // store the line while the other consumers compute (docs/kernels.md, "X-resident bsrLinear and bsrMatmul").
  const bool named = options.path != TcPath::Auto || options.variant >= 0;
  if (backward && !named && variant != tc::kPingPongTile && variant != tc::kPingPong3Tile &&
      variant != tc::kXResidentTile)
    return false;
  const int storeRows = backward && path == TcPath::Wgmma ? tc::wgmmaStoreRows(width, variant) : 0;
  if (backward && storeRows == 0) return false;
  tc::KernelArgs args = tc::makeArgs(op, a, b, bias, out, m, pattern);
  args.activated = activated;
  args.activation = fused.activation;
  args.pre = fused.pre;

  // dW: the token splits, or whole waves and a tail of pieces (planSampled); each split's tokens a multiple of the
  // 64-token step.
  int64_t splits = 1;
  TailPlan tail;
  int groupLog = 0;
  if (op == tc::Op::Sampled) {
    const SampledPlan plan = planSampled(path, dtype, pattern, m, variant, device, options);
    splits = plan.splits;
    args.tokensPerSplit = plan.tokensPerSplit;
    tail = plan.tail;
    groupLog = plan.groupLog;
    if (tail.tailSplits > 0) {
      args.groupList = pattern.columnGroupList[groupLog];
      args.groupSize = 1 << groupLog;
      args.fullGroups = static_cast<int32_t>(tail.fullGroups);
      args.tailGroups = static_cast<int32_t>(tail.tailGroups);
      args.tailSplits = static_cast<int32_t>(tail.tailSplits);
    }
  }
  const int64_t tailEntries = tail.tailGroups << groupLog;
  const int64_t blockSize = int64_t{pattern.blockHeight} * pattern.blockWidth;
  const int64_t valueCount = static_cast<int64_t>(pattern.nnzBlocks) * pattern.blockHeight * pattern.blockWidth;
  // With options.splitCluster (wgmma, up to the portable cluster size) a group's splits are one thread-block cluster
  // that sums its float32 accumulators through distributed shared memory, in split order: no partials written and read
  // again, no second pass; otherwise the partial pass sums them.
  const bool clusterSum = op == tc::Op::Sampled && path == TcPath::Wgmma && splits > 1 &&
                          splits <= tc::kMaxClusterSplits && options.splitCluster;
  if (clusterSum) args.clusterSplits = static_cast<int32_t>(splits);
  // The float32 scratch (dW's split partials or the split lines' [lineSplits][m][width], the activation backward's
  // column partials), released when this call returns: later work on the stream reuses it in order.
  std::optional<Scratch> partials, columnPartials;
  if (tail.tailSplits > 0) {
    if (!floatScratch(partials, tail.tailSplits * tailEntries * blockSize)) return false;
    args.partials = partials->as<float>();
  } else if (splits > 1 && !clusterSum) {
    if (!floatScratch(partials, splits * valueCount)) return false;
    args.partials = partials->as<float>();
  }
  const int64_t outputs = m * (op == tc::Op::Linear ? pattern.rows : pattern.cols);
  if (lineSplits > 1) {
    args.lineSplits = lineSplits;
    if (!floatScratch(partials, lineSplits * outputs)) return false;
    args.partials = partials->as<float>();
  }
  // The activation backward's column partials: four rows (one per warp) per store call of storeRows tokens.
  const int64_t partialRows = backward ? (m + storeRows - 1) / storeRows * 4 : 0;
  if (backward) {
    if (!floatScratch(columnPartials, partialRows * pattern.cols)) return false;
    args.columnPartials = columnPartials->as<float>();
  }
  bool launched = wgmmaShape ? tc::launchWgmmaShape(op, dtype, args, pattern.blockHeight, pattern.blockWidth, variant,
                                                   device.sms, stream)
                  : !square  ? tc::launchMmaShape(op, dtype, args, pattern.blockHeight, pattern.blockWidth, stream)
                  : path == TcPath::Wgmma ? tc::launchWgmma(op, dtype, args, block, variant, device.sms, stream)
                                          : tc::launchMma(op, dtype, args, block, variant, device.sms, stream);
  // The X-resident tile declines what its slab cannot hold (launchXResident); the rule keeps within it, and
  // should it decline anyway the default options fall back to mma.sync's tile (whose dX stores from its registers:
  // not with the activation's backward, which the caller then runs apart).
  if (!launched && variant == tc::kXResidentTile && !named && !backward)
    launched = tc::launchMma(op, dtype, args, block, tc::kDefaultTile, device.sms, stream);
  // The patch tile declines what it cannot launch (no records, splits past its grid): mma.sync's dW tile takes the same
  // splits and partials.
  if (!launched && variant == tc::kPatchPairTile && !named)
    launched = tc::launchMma(op, dtype, args, block, tc::kDefaultTile, device.sms, stream);
  // Dev's variants fuse nothing: they never stand in for a shipped tile that declined a fused epilogue.
  if (!launched && square && options.devVariants && activated == nullptr && !backward)
    launched = options.devVariants(path, op, dtype, args, block, variant, device.sms, stream);
  if (launched && splits > 1 && !clusterSum)
    launchSumSplits(dtype, args.partials, static_cast<int>(splits), valueCount, out, stream);
  if (launched && tail.tailSplits > 0)
    launchSumTailSplits(dtype, args.partials, static_cast<int>(tail.tailSplits), tailEntries, blockSize, args.groupList,
                        args.fullGroups, pattern.valueIndex, pattern.nnzBlocks, out, stream);
  if (launched && lineSplits > 1) launchSumSplits(dtype, args.partials, lineSplits, outputs, out, stream);
  if (launched && backward)
    launchSumSplits(dtype, args.columnPartials, static_cast<int>(partialRows), pattern.cols, fused.dbias, stream);
  return launched;
}

// Whether bsrLinear with 33-64 tokens (half precision) takes the staged decoding variant under the default options
// (tc::decodeStagedTakes: from density tc::kDecodeStagedMinDensity on layers storing at least
// tc::kDecodeStagedMinElements weights), unless BLOCKSPARSE_CUDA_DECODE_STAGED is "1" (wherever it covers the call) or
// "0" (never); read once per process.
bool decodeStagedRule(const BsrPatternView& pattern) {
  static const int forced = environmentSwitch("BLOCKSPARSE_CUDA_DECODE_STAGED");
  if (forced >= 0) return forced == 1;
  return tc::decodeStagedTakes(pattern.nnzBlocks, pattern.blockRows, pattern.blockCols, pattern.blockHeight,
                               pattern.blockWidth);
}

// Whether bsrLinear's decoding path covers the call under `options` (the default options, or a decoding variant the
// addon has named), and whether it takes the staged variant there: from 33 tokens where its rule takes it, or when named.
struct DecodeChoice {
  bool covered = false, staged = false;
};
DecodeChoice decodeChoice(DType dtype, const void* x, const void* values, const void* bias, const void* y, int64_t m,
                          const BsrPatternView& pattern, const TcOptions& options) {
  const bool decode = options.path == TcPath::Auto ? options.variant < 0
                                                   : options.path == TcPath::Decode && tc::decodeVariant(options.variant);
  DecodeChoice choice;
  choice.covered = decode && m <= decodeMaxTokens(dtype) && currentDevice().major >= 8 &&
                   tc::decodeSupported(dtype, x, values, bias, y, m, pattern);
  choice.staged = choice.covered &&
                  (options.variant == tc::kDecodeStagedVariant || (options.variant < 0 && decodeStagedRule(pattern))) &&
                  tc::decodeStagedSupported(dtype, pattern, m);
  return choice;
}

// The decoding kernel's variant under `options` (the width variants 1-4 as named, the default's otherwise).
int decodeKernelVariant(const TcOptions& options) {
  return options.variant == tc::kDecodeStagedVariant ? 0 : std::max(options.variant, 0);
}

// bsrLinear on the decoding path `decode` names, with `epilogue` (empty: Y alone): the staged variant where it takes
// the call (its ranges' partials in scratch, released when this returns: later work on the stream reuses it in order),
// else the decoding kernel, also where the staged launch declines (a GPU whose CTAs get too little shared memory).
void runDecode(DType dtype, const void* x, const void* values, const void* bias, void* y, int64_t m,
               const BsrPatternView& pattern, cudaStream_t stream, const TcOptions& options, const DecodeChoice& decode,
               const tc::DecodeEpilogue& epilogue) {
  const DeviceInfo& device = currentDevice();
  if (decode.staged) {
    const int64_t ranges = tc::decodeStagedRanges(pattern);
    std::optional<Scratch> partials;
    if (((ranges == 1 && !tc::hasEpilogue(epilogue)) || floatScratch(partials, ranges * m * pattern.rows)) &&
        tc::launchDecodeStaged(dtype, x, values, bias, y, partials ? partials->as<float>() : nullptr, m, pattern,
                               device.sms, stream, epilogue))
      return;
  }
  tc::launchDecodeLinear(dtype, x, values, bias, y, m, pattern, decodeKernelVariant(options), device.sms, device.l2Bytes,
                         stream, epilogue);
}

// bsrLinear on the decoding path with `epilogue` (a residual, an activation's second output), where that path covers the
// call: the decoding kernel's epilogue, or the staged variant's (in its stores with one range of K, in its sum pass with
// more); false, launching nothing, where it does not cover the call or BLOCKSPARSE_CUDA_DECODE_EPILOGUE is "0" (read
// once per process: the unfused kernels, for measurement).
bool decodeWithEpilogue(DType dtype, const void* x, const void* values, const void* bias, void* y, int64_t m,
                        const BsrPatternView& pattern, cudaStream_t stream, const TcOptions& options,
                        const tc::DecodeEpilogue& epilogue) {
  static const bool off = environmentSwitch("BLOCKSPARSE_CUDA_DECODE_EPILOGUE") == 0;
  if (off) return false;
  const DecodeChoice decode = decodeChoice(dtype, x, values, bias, y, m, pattern, options);
  const uintptr_t element = dtypeSize(dtype);
  if (!decode.covered || reinterpret_cast<uintptr_t>(epilogue.residual) % element != 0 ||
      reinterpret_cast<uintptr_t>(epilogue.activated) % element != 0)
    return false;
  runDecode(dtype, x, values, bias, y, m, pattern, stream, options, decode, epilogue);
  return true;
}

}  // namespace

bool tcBsrLinear(DType dtype, const void* x, const void* values, const void* bias, void* y, int64_t m,
                 const BsrPatternView& pattern, cudaStream_t stream, const TcOptions& options) {
  const DeviceInfo& device = currentDevice();
  const DecodeChoice decode = decodeChoice(dtype, x, values, bias, y, m, pattern, options);
  if (decode.covered) {
    runDecode(dtype, x, values, bias, y, m, pattern, stream, options, decode, {});
    return true;
  }
  // A decoding variant the addon does not have: dev's, where the bench passed its launcher.
  if (options.path == TcPath::Decode && options.devDecode != nullptr && options.variant >= tc::kDecodeVariants &&
      m <= decodeMaxTokens(dtype) && device.major >= 8 && tc::decodeSupported(dtype, x, values, bias, y, m, pattern))
    return options.devDecode(dtype, x, values, bias, y, m, pattern, options.variant, device.sms, stream);
  if (options.path == TcPath::Decode) return false;
  return run(tc::Op::Linear, dtype, x, values, bias, y, m, pattern, stream, options);
}

bool tcBsrLinearActivation(DType dtype, const void* x, const void* values, const void* bias, void* z, void* a,
                           Activation activation, int64_t m, const BsrPatternView& pattern, cudaStream_t stream,
                           const TcOptions& options) {
  if (a == nullptr) return false;
  if (m <= decodeMaxTokens(dtype)) {
    tc::DecodeEpilogue epilogue;
    epilogue.activated = a;
    epilogue.activation = activation;
    return decodeWithEpilogue(dtype, x, values, bias, z, m, pattern, stream, options, epilogue);
  }
  if (options.path == TcPath::Decode) return false;
  Fused fused;
  fused.activated = a;
  fused.activation = activation;
  return run(tc::Op::Linear, dtype, x, values, bias, z, m, pattern, stream, options, fused);
}

bool tcBsrLinearResidual(DType dtype, const void* x, const void* values, const void* bias, const void* residual, void* y,
                         int64_t m, const BsrPatternView& pattern, cudaStream_t stream, const TcOptions& options) {
  if (residual == nullptr || m > decodeMaxTokens(dtype)) return false;
  tc::DecodeEpilogue epilogue;
  epilogue.residual = residual;
  return decodeWithEpilogue(dtype, x, values, bias, y, m, pattern, stream, options, epilogue);
}

bool tcBsrMatmulActivationBackward(DType dtype, const void* dy, const void* values, const void* pre, void* dpre,
                                   void* dbias, Activation activation, int64_t m, const BsrPatternView& pattern,
                                   cudaStream_t stream, const TcOptions& options) {
  if (pre == nullptr || dbias == nullptr) return false;
  Fused fused;
  fused.pre = pre;
  fused.dbias = dbias;
  fused.activation = activation;
  return run(tc::Op::Matmul, dtype, dy, values, nullptr, dpre, m, pattern, stream, options, fused);
}

bool tcBsrMatmul(DType dtype, const void* dy, const void* values, void* dx, int64_t m, const BsrPatternView& pattern,
                 cudaStream_t stream, const TcOptions& options) {
  return run(tc::Op::Matmul, dtype, dy, values, nullptr, dx, m, pattern, stream, options);
}

bool tcSampledMatmul(DType dtype, const void* dy, const void* x, void* dw, int64_t m, const BsrPatternView& pattern,
                     cudaStream_t stream, const TcOptions& options) {
  return run(tc::Op::Sampled, dtype, dy, x, nullptr, dw, m, pattern, stream, options);
}

TcPath tcPathFor(DType dtype, const BsrPatternView& pattern) {
  if (!supported(dtype, pattern, 1)) return TcPath::Auto;
  const TcPath path = resolvePath(currentDevice(), TcPath::Auto);
  const bool wgmmaTiles = squareBlocks(pattern) ? pattern.blockHeight != 32
                                               : tc::wgmmaShapeAllProducts(pattern.blockHeight, pattern.blockWidth);
  return path != TcPath::Auto && (dtype == DType::Float32 || !wgmmaTiles) ? TcPath::Mma : path;
}

std::string tcSampledPlan(DType dtype, const BsrPatternView& pattern, int64_t m) {
  if (!supported(dtype, pattern, m)) return "declined";
  TcPath path = tcPathFor(dtype, pattern);
  if (path == TcPath::Auto) return "declined";
  const DeviceInfo& device = currentDevice();
  if (device.wgmma && patchDwRule(dtype, pattern, m)) {
    const SampledPlan plan = planSampled(TcPath::Wgmma, dtype, pattern, m, tc::kPatchPairTile, device, TcOptions{});
    return std::to_string(plan.splits) + (plan.splits == 1 ? " split" : " splits") + " on the patch tile";
  }
  if (path == TcPath::Mma && device.wgmma && dtype != DType::Float32 && wgmmaDw32Rule(pattern, m, device.sms))
    path = TcPath::Wgmma;
  const SampledPlan plan = planSampled(path, dtype, pattern, m, tc::kDefaultTile, device, TcOptions{});
  if (plan.tail.tailSplits > 0)
    return std::to_string(plan.tail.fullGroups) + " whole groups, then " + std::to_string(plan.tail.tailGroups) +
           " in " + std::to_string(plan.tail.tailSplits) + " pieces each";
  return std::to_string(plan.splits) + (plan.splits == 1 ? " split" : " splits");
}

// Where the rule may take the tile, and for first-use autotuning, which times it as a dW candidate (tcTuneCandidates) so
// that a GPU where it wins gets it without a rule for that GPU, from kPatchPairTuneMinDensity: below it the tile lost,
// and a record holding few blocks costs more memory per block (a record is 68 words however few it holds).
bool tcBuildsPatchRecords(int64_t blockRows, int64_t blockCols, int64_t nnzBlocks, bool tuning) {
  if (!currentDevice().wgmma) return false;
  const double cells = double(blockRows) * double(blockCols);
  if (patchPairDispatched() && cells > 0 && patchPairInBand(double(nnzBlocks) / cells)) return true;
  return tuning && patchPairTunable(blockRows, blockCols, nnzBlocks);
}

bool tcTakesPatchDw(DType dtype, const BsrPatternView& pattern, int64_t m) {
  // The rule first: it is off (patchPairDispatched) or fails on most patterns at its cheapest checks.
  return patchDwRule(dtype, pattern, m) && supported(dtype, pattern, m) &&
         resolvePath(currentDevice(), TcPath::Auto) == TcPath::Wgmma;
}

bool tcTakesXResident(tc::Op op, DType dtype, const BsrPatternView& pattern, int64_t m) {
  return (dtype == DType::BFloat16 || dtype == DType::Float16) && supported(dtype, pattern, m) &&
         resolvePath(currentDevice(), TcPath::Auto) == TcPath::Wgmma && xResidentRule(op, pattern, m, currentDevice().sms);
}

bool tcFusesActivation(DType dtype, const BsrPatternView& pattern, int64_t m) {
  if (tcTakesXResident(tc::Op::Linear, dtype, pattern, m)) return true;
  // BLOCKSPARSE_CUDA_FUSED_ACTIVATION=0 leaves the activation to the pass on the wgmma tiles, =1 fuses it whatever Z's
  // size (read once, for measurement).
  static const int forced = environmentSwitch("BLOCKSPARSE_CUDA_FUSED_ACTIVATION");
  if (forced == 0) return false;
  const DeviceInfo& device = currentDevice();
  if ((dtype != DType::BFloat16 && dtype != DType::Float16) || !supported(dtype, pattern, m) || device.l2Bytes <= 0 ||
      resolvePath(device, TcPath::Auto) != TcPath::Wgmma)
    return false;
  // The squares of 64 and 128 and the rectangles on their tiles (a 32-deep side has the default tile alone).
  const int width = tc::tileWidth(tc::Op::Linear, pattern.blockHeight, pattern.blockWidth);
  if ((width != 64 && width != 128) || tc::tileDepth(tc::Op::Linear, pattern.blockHeight, pattern.blockWidth) < 64 ||
      !(squareBlocks(pattern) || tc::wgmmaShapeSupported(tc::Op::Linear, pattern.blockHeight, pattern.blockWidth)))
    return false;
  // The three consumers' tile wins wherever its rule holds, Z in L2 or not, and every 128-wide tile below
  // kWideTileMinTokens tokens (tc_kernels.h, fusedForward128Rule).
  if (forced == 1 || pingPong3ForwardRule(pattern, m, device.sms, width)) return true;
  if (width == 128 && tc::fusedForward128Rule(m)) return true;
  const double z = static_cast<double>(m) * static_cast<double>(pattern.rows) * static_cast<double>(dtypeSize(dtype));
  return z > tc::kFusedActivationMinShareOfL2 * device.l2Bytes;
}

double tcMmaTileBlocksPerSm(tc::Op op, const BsrPatternView& pattern, int64_t m) {
  const int sms = std::max(1, currentDevice().sms);
  const int64_t lines = op == tc::Op::Linear ? pattern.blockRows : pattern.blockCols;
  if (lines <= 0 || m <= 0) return 0.0;
  const int64_t splits = ruleLineSplits(op, pattern, m, sms);
  const int64_t ctas = (m + tc::kMmaTileTokens - 1) / tc::kMmaTileTokens * lines * splits;
  const double perCta = double(pattern.nnzBlocks) / double(lines * splits);
  return perCta * std::max(1.0, double(ctas) / double(sms));
}

std::vector<TcOptions> tcTuneCandidates(tc::Op op, DType dtype, const BsrPatternView& pattern, int64_t m) {
  std::vector<TcOptions> out;
  if ((dtype != DType::BFloat16 && dtype != DType::Float16) || !supported(dtype, pattern, m)) return out;
  if (op == tc::Op::Linear && m <= decodeMaxTokens(dtype)) return out;
  const DeviceInfo& device = currentDevice();
  if (device.major < 8) return out;
  // The wgmma tiles' width (a rectangle's are those of the square of its output tile's width) and depth (a 32-deep
  // side has the default tile alone).
  const int width = tc::tileWidth(op, pattern.blockHeight, pattern.blockWidth);
  const int depth = tc::tileDepth(op, pattern.blockHeight, pattern.blockWidth);
  std::vector<TcPath> paths{TcPath::Mma};
  if (device.wgmma && (squareBlocks(pattern) || tc::wgmmaShapeSupported(op, pattern.blockHeight, pattern.blockWidth)))
    paths.push_back(TcPath::Wgmma);
  for (TcPath path : paths) {
    if (op != tc::Op::Sampled) {
      out.push_back({path, tc::kDefaultTile});
      if (path == TcPath::Wgmma && width == 128) out.push_back({path, tc::kWideTile});
      if (path == TcPath::Wgmma && width == 128) out.push_back({path, tc::kPingPongTile});
      if (path == TcPath::Wgmma && width == 64 && depth >= 64) out.push_back({path, tc::kPersistentTile});
      // Three consumers: Linear's (bsrLinearActivation's fused epilogue, tc_kernels.h's kPingPong3ForwardMaxLine and
      // kPingPong3ForwardMaxLine128; and any Linear or dX with few tiles, threeConsumerFewTilesRule).
      if (path == TcPath::Wgmma && (width == 64 || width == 128) && depth >= 64)
        out.push_back({path, tc::kPingPong3Tile});
      if (path == TcPath::Wgmma && squareBlocks(pattern) && pattern.blockHeight == 32 &&
          (op == tc::Op::Linear ? pattern.cols : pattern.rows) <= tc::kXResidentMaxDispatchedSlab)
        out.push_back({path, tc::kXResidentTile});
      continue;
    }
    // dW: the rule's split count and a few others, each split keeping at least 1024 tokens; on wgmma also the rule
    // itself, which may run a tail of pieces (ruleTail).
    if (path == TcPath::Wgmma && squareBlocks(pattern)) out.push_back({path, tc::kDefaultTile});
    // The patch tile (32x32, where the pattern has its pair records), with its own wave rule for the splits: off in the
    // fixed rules (an H100's step ran slower with it, an H200's kernels faster: docs/kernels.md), so timed here.
    if (path == TcPath::Wgmma && squareBlocks(pattern) && pattern.blockHeight == 32 && pattern.patchPairList != nullptr &&
        pattern.patchPairItems > 0 && m >= tc::kPatchPairTuneMinTokens &&
        patchPairTunable(pattern.blockRows, pattern.blockCols, pattern.nnzBlocks))
      out.push_back({path, tc::kPatchPairTile});
    const int64_t most = mostSplits(m);
    std::vector<int64_t> counts{ruleSplits(path, dtype, pattern, m, tc::kDefaultTile, device), 1, 2, 4};
    std::sort(counts.begin(), counts.end());
    counts.erase(std::unique(counts.begin(), counts.end()), counts.end());
    for (int64_t count : counts) {
      if (count > most) continue;
      TcOptions options{path, tc::kDefaultTile};
      options.splits = static_cast<int>(count);
      out.push_back(options);
    }
  }
  return out;
}

const char* tcPathName(TcPath path) {
  switch (path) {
    case TcPath::Mma: return "mma";
    case TcPath::Wgmma: return "wgmma";
    case TcPath::Decode: return "decode";
    default: return "auto";
  }
}

std::string tcRouteName(const TcOptions& options) {
  std::string name = tcPathName(options.path);
  if (options.variant == tc::kDefaultTile) name += " tile";
  else if (options.variant == tc::kWideTile) name += " wide tile";
  else if (options.variant == tc::kPersistentTile) name += " persistent";
  else if (options.variant == tc::kPingPongTile) name += " ping-pong";
  else if (options.variant == tc::kPingPong3Tile) name += " ping-pong, three consumers";
  else if (options.variant == tc::kXResidentTile) name += " X-resident";
  else if (options.variant == tc::kPatchPairTile) name += " patch tile";
  else if (options.variant > 0) name += " variant " + std::to_string(options.variant);
  if (options.splits > 0) name += ", " + std::to_string(options.splits) + (options.splits == 1 ? " split" : " splits");
  return name;
}

void setAllowTf32(bool allow) { tf32Allowed.store(allow, std::memory_order_relaxed); }

bool allowTf32() { return tf32Allowed.load(std::memory_order_relaxed); }

}  // namespace bs
