// TcOptions::devVariants' kXResidentChainsVariant: the X-resident tile (src/tc/bsr_wgmma_xr.cuh) with two
// accumulator chains per line, at 32x32 blocks. Not yet measured.
#include "dev_variants.h"
#include "tc/bsr_wgmma_xr.cuh"

namespace bs::tc {

bool launchXResidentChains(Op op, DType dtype, const KernelArgs& args, int blockSize, int numSms, cudaStream_t stream) {
  using sm90::XrTraits;
  if (blockSize != 32) return false;  // a 64x64 stage holds one block: one chain
  if (dtype == DType::BFloat16) {
    if (op == Op::Linear) return sm90::launchXr<XrTraits<__nv_bfloat16, Op::Linear, 32, 2>>(dtype, args, numSms, stream);
    if (op == Op::Matmul) return sm90::launchXr<XrTraits<__nv_bfloat16, Op::Matmul, 32, 2>>(dtype, args, numSms, stream);
  } else if (dtype == DType::Float16) {
    if (op == Op::Linear) return sm90::launchXr<XrTraits<__half, Op::Linear, 32, 2>>(dtype, args, numSms, stream);
    if (op == Op::Matmul) return sm90::launchXr<XrTraits<__half, Op::Matmul, 32, 2>>(dtype, args, numSms, stream);
  }
  return false;
}

}  // namespace bs::tc
