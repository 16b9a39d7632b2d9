// The X-resident tile as the addon runs it (kXResidentTile, variant 6): its instantiations at 32x32 and 64x64 blocks
// (one accumulator chain per line; at 32x32 the outputs staged and written as 16-byte stores), and the line grouping
// that dispatch.cu's rule shares. The kernel: bsr_wgmma_xr.cuh.
#include <algorithm>
#include <cstdint>

#include "bsr_wgmma_xr.cuh"

namespace bs::tc {

namespace sm90 {

// The dispatch's widest slab (kXResidentMaxSlab) keeps all four consumers at 32x32.
using XrLayout32 = XrTraits<__nv_bfloat16, Op::Linear, 32>;
static_assert(XrLayout32::kMaxConsumers == kXResidentConsumers, "the dispatch's rule counts four consumers");
static_assert((XrLayout32::kSmemLimit - XrLayout32::kAlignSlack - XrLayout32::kFixedBytes -
               kXResidentMaxSlab / XrLayout32::kBoxColumns * XrLayout32::kBoxBytes) /
                      XrLayout32::kStageBytes / XrLayout32::kMaxConsumers >=
                  kXrPreferredStages,
              "four consumers of kXrPreferredStages stages beside the dispatch's widest slab");

template <typename T, Op kOp>
bool launchXrBlock(DType dtype, const KernelArgs& args, int blockSize, int numSms, cudaStream_t stream) {
  if (blockSize == 32) return launchXr<XrTraits<T, kOp, 32>>(dtype, args, numSms, stream);
  if (blockSize == 64) return launchXr<XrTraits<T, kOp, 64>>(dtype, args, numSms, stream);
  return false;
}

template <typename T>
bool launchXrTyped(Op op, DType dtype, const KernelArgs& args, int blockSize, int numSms, cudaStream_t stream) {
  if (op == Op::Linear) return launchXrBlock<T, Op::Linear>(dtype, args, blockSize, numSms, stream);
  if (op == Op::Matmul) return launchXrBlock<T, Op::Matmul>(dtype, args, blockSize, numSms, stream);
  return false;
}

}  // namespace sm90

int64_t xResidentGroupLines(int64_t m, int64_t lines, int consumers, int numSms, int ctasPerSm) {
  const int64_t tilesM = (m + 63) / 64;
  const int64_t sms = std::max(numSms, 1);
  const int64_t c = std::max(consumers, 1);
  if (lines <= 0) return 1;
  // A group of ceil(lines / groups) lines, a multiple of the consumers where more than that, so that each gets as many.
  auto groupLinesFor = [&](int64_t groups) {
    int64_t groupLines = (lines + groups - 1) / groups;
    if (groupLines > c) groupLines = (groupLines + c - 1) / c * c;
    return groupLines;
  };
  if (ctasPerSm > 0) return groupLinesFor(std::max<int64_t>(1, (ctasPerSm * sms + tilesM - 1) / tilesM));
  // The wave model: each CTA takes its slab's load plus its lines per consumer; the CTAs run in waves of `sms`.
  // Beyond four CTAs per SM the slab loads only grow.
  const int64_t mostGroups = std::min(lines, std::max<int64_t>(1, (4 * sms + tilesM - 1) / tilesM));
  int64_t best = lines, bestCost = INT64_MAX;
  for (int64_t wanted = 1; wanted <= mostGroups; ++wanted) {
    const int64_t groupLines = groupLinesFor(wanted);
    const int64_t groups = (lines + groupLines - 1) / groupLines;
    const int64_t waves = (tilesM * groups + sms - 1) / sms;
    const int64_t cost = waves * (kXResidentSlabLines + (groupLines + c - 1) / c);
    if (cost < bestCost) bestCost = cost, best = groupLines;
  }
  return best;
}

bool launchXResident(Op op, DType dtype, const KernelArgs& args, int blockSize, int numSms, cudaStream_t stream) {
  if (dtype == DType::BFloat16) return sm90::launchXrTyped<__nv_bfloat16>(op, dtype, args, blockSize, numSms, stream);
  if (dtype == DType::Float16) return sm90::launchXrTyped<__half>(op, dtype, args, blockSize, numSms, stream);
  return false;
}

}  // namespace bs::tc
