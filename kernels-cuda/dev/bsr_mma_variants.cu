// The mma.sync variant kept only for measurement: variant 1, larger tiles for Linear/Matmul (256 tokens
// at 32 and 64 blocks, a 2 x 2 warp grid at 128). Linked into tc_bench, never into the addon.
#include "dev_variants.h"
#include "tc/bsr_mma.cuh"

namespace bs::tc {

namespace {

using sm80::MmaTraits;

template <typename T, Op kOp>
bool launchBlock(const KernelArgs& args, int blockSize, int variant, cudaStream_t stream) {
  using sm80::launch;
  if (kOp == Op::Sampled || variant != 1) return false;
  switch (blockSize) {
    case 32: return launch<MmaTraits<T, kOp, 32, 256, 4, 1, 4>>(args, stream);
    case 64: return launch<MmaTraits<T, kOp, 64, 256, 4, 2, 3>>(args, stream);
    case 128: return launch<MmaTraits<T, kOp, 128, 128, 2, 2, 4>>(args, stream);
  }
  return false;
}

template <typename T>
bool launchTyped(Op op, const KernelArgs& args, int blockSize, int variant, cudaStream_t stream) {
  switch (op) {
    case Op::Linear: return launchBlock<T, Op::Linear>(args, blockSize, variant, stream);
    case Op::Matmul: return launchBlock<T, Op::Matmul>(args, blockSize, variant, stream);
    case Op::Sampled: return false;
  }
  return false;
}

}  // namespace

bool launchMmaDevVariant(Op op, DType dtype, const KernelArgs& args, int blockSize, int variant, cudaStream_t stream) {
  if (variant == kGroupedVariant || variant == kGroupedSmallVariant)
    return blockSize == 32 && launchGroupedVariant(op, dtype, args, variant, stream);
  if (dtype == DType::BFloat16) return launchTyped<__nv_bfloat16>(op, args, blockSize, variant, stream);
  if (dtype == DType::Float16) return launchTyped<__half>(op, args, blockSize, variant, stream);
  return false;
}

}  // namespace bs::tc
