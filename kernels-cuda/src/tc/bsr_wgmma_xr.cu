// The X-resident tile as the addon runs it (kXResidentTile, variant 6): its instantiations at 32x32 and 64x64 blocks
// (at 32x32 the outputs staged and written as 16-byte stores). The kernel: bsr_wgmma_xr.cuh; its line grouping,
// which dispatch.cu's rule shares: tc_kernels.h's xResidentGroupLines.
#include "bsr_wgmma_xr.cuh"

namespace bs::tc {

namespace sm90 {

// A slab of kXResidentMaxSlab keeps all four consumers at 32x32; the dispatch's widest (kXResidentMaxDispatchedSlab) two.
using XrLayout32 = XrTraits<__nv_bfloat16, Op::Linear, 32>;
static_assert(XrLayout32::kMaxConsumers == kXResidentConsumers, "the dispatch's rule counts four consumers");
static_assert((XrLayout32::kSmemLimit - XrLayout32::kAlignSlack - XrLayout32::kFixedBytes -
               kXResidentMaxSlab / XrLayout32::kBoxColumns * XrLayout32::kBoxBytes) /
                      XrLayout32::kStageBytes / XrLayout32::kMaxConsumers >=
                  kXrPreferredStages,
              "four consumers of kXrPreferredStages stages beside a slab of kXResidentMaxSlab");
// Ring slots (8 KB stages) beside a slab `slab` wide, as launchXr counts them.
constexpr int64_t xrSlotsBeside(int64_t slab) {
  return (XrLayout32::kSmemLimit - XrLayout32::kAlignSlack - XrLayout32::kFixedBytes -
          (slab + XrLayout32::kBoxColumns - 1) / XrLayout32::kBoxColumns * XrLayout32::kBoxBytes) /
         XrLayout32::kStageBytes;
}
static_assert(xrSlotsBeside(kXResidentMaxDispatchedSlab) / XrLayout32::kMinConsumers >= kXrPreferredStages,
              "two consumers of kXrPreferredStages stages beside the dispatch's widest slab");

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

bool launchXResident(Op op, DType dtype, const KernelArgs& args, int blockSize, int numSms, cudaStream_t stream) {
  if (dtype == DType::BFloat16) return sm90::launchXrTyped<__nv_bfloat16>(op, dtype, args, blockSize, numSms, stream);
  if (dtype == DType::Float16) return sm90::launchXrTyped<__half>(op, dtype, args, blockSize, numSms, stream);
  return false;
}

}  // namespace bs::tc
