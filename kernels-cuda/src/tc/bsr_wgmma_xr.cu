// The X-resident tile as the addon runs it (kXResidentTile, variant 6): its instantiations at 32x32 and 64x64 blocks,
// one accumulator chain per line, and the line grouping that dispatch.cu's rule shares. The kernel: bsr_wgmma_xr.cuh.
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
  // Token tiles x groups about ctasPerSm CTAs per SM; a multiple of the consumers where more than that, so that
  // each gets as many lines.
  const int64_t tilesM = (m + 63) / 64;
  const int64_t wantedGroups =
      std::max<int64_t>(1, (int64_t{std::max(ctasPerSm, 1)} * std::max(numSms, 1) + tilesM - 1) / tilesM);
  int64_t groupLines = std::max<int64_t>(1, (lines + wantedGroups - 1) / wantedGroups);
  if (groupLines > consumers) groupLines = (groupLines + consumers - 1) / consumers * consumers;
  return groupLines;
}

bool launchXResident(Op op, DType dtype, const KernelArgs& args, int blockSize, int numSms, cudaStream_t stream) {
  if (dtype == DType::BFloat16) return sm90::launchXrTyped<__nv_bfloat16>(op, dtype, args, blockSize, numSms, stream);
  if (dtype == DType::Float16) return sm90::launchXrTyped<__half>(op, dtype, args, blockSize, numSms, stream);
  return false;
}

}  // namespace bs::tc
