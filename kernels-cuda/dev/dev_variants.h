// Kernel variants kept only for measurement, linked into tc_bench and never into the addon.
#pragma once

#include "tc/tc_kernels.h"

namespace bs::tc {

// A TcOptions::devVariants launcher: the wgmma variants of dev/bsr_wgmma_variants.cu (1 at 32 and 64
// blocks, 2-5) and dev/bsr_wgmma_xr.cu (kXrVariant) and the mma.sync variant of dev/bsr_mma_variants.cu
// (1); false, having launched nothing, for any other path, product or variant.
bool launchDevVariant(TcPath path, Op op, DType dtype, const KernelArgs& args, int blockSize, int variant, int numSms,
                      cudaStream_t stream);

// The wgmma variant that keeps the dense operand resident in shared memory (dev/bsr_wgmma_xr.cu): bsrLinear
// with K up to 1536 and bsrMatmul with N up to 1536, 32x32 or 64x64 blocks; false for anything else.
constexpr int kXrVariant = 6;
bool launchXrVariant(Op op, DType dtype, const KernelArgs& args, int blockSize, int numSms, cudaStream_t stream);

// The mma.sync variant alone (dev/bsr_mma_variants.cu).
bool launchMmaDevVariant(Op op, DType dtype, const KernelArgs& args, int blockSize, int variant, cudaStream_t stream);

}  // namespace bs::tc
