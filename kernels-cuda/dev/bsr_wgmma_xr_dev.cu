// TcOptions::devVariants' X-resident tiles (src/tc/bsr_wgmma_xr.cuh) at 32x32 blocks, each the addon's with one change
// (dev_variants.h): the outputs stored from the accumulators' layout (21), the tile the addon ran before (22: those
// stores and two CTAs per SM), the lines grouped for two CTAs per SM (25) or one (26) by the plain rule instead of the
// wave model; and the wide-slab tile (bsr_wgmma_xr_wide.cuh) with 4, 5 or 3 lines per consumer (27-29). Measured on an
// H200: tc-xr.md ("Staged stores and one wave", which also has 18-20, 23 and 24, removed; "The wide-slab tile").
#include "dev_variants.h"
#include "bsr_wgmma_xr_wide.cuh"
#include "tc/bsr_wgmma_xr.cuh"

namespace bs::tc {

namespace {

// launch(T{}, std::integral_constant<Op, op>{}) for bsrLinear or bsrMatmul in bfloat16 or float16; false otherwise.
template <class F>
bool launchTyped(Op op, DType dtype, F&& launch) {
  using Linear = std::integral_constant<Op, Op::Linear>;
  using Matmul = std::integral_constant<Op, Op::Matmul>;
  if (dtype == DType::BFloat16) {
    if (op == Op::Linear) return launch(__nv_bfloat16{}, Linear{});
    if (op == Op::Matmul) return launch(__nv_bfloat16{}, Matmul{});
  } else if (dtype == DType::Float16) {
    if (op == Op::Linear) return launch(__half{}, Linear{});
    if (op == Op::Matmul) return launch(__half{}, Matmul{});
  }
  return false;
}

template <bool kStaged>
bool launchXrDev(Op op, DType dtype, const KernelArgs& args, int numSms, cudaStream_t stream, int ctasPerSm = 0) {
  return launchTyped(op, dtype, [&](auto type, auto product) {
    using Traits = sm90::XrTraits<decltype(type), decltype(product)::value, 32, kStaged>;
    return sm90::launchXr<Traits>(dtype, args, numSms, stream, ctasPerSm);
  });
}

// The wide-slab tile with kLines lines per consumer.
template <int kLines>
bool launchXrWideDev(Op op, DType dtype, const KernelArgs& args, int numSms, cudaStream_t stream) {
  return launchTyped(op, dtype, [&](auto type, auto product) {
    using Traits = sm90::XrWideTraits<decltype(type), decltype(product)::value, kLines>;
    return sm90::launchXrWide<Traits>(dtype, args, numSms, stream);
  });
}

}  // namespace

bool launchXResidentDevVariant(Op op, DType dtype, const KernelArgs& args, int blockSize, int variant, int numSms,
                               cudaStream_t stream) {
  if (blockSize != 32) return false;  // a 64x64 line's outputs do not fit a stage: direct stores only
  if (variant == kXResidentDirectStoresVariant) return launchXrDev<false>(op, dtype, args, numSms, stream);
  if (variant == kXResidentPreviousVariant) return launchXrDev<false>(op, dtype, args, numSms, stream, 2);
  if (variant == kXResidentWavesVariant) return launchXrDev<true>(op, dtype, args, numSms, stream, 2);
  if (variant == kXResidentWavesVariant + 1) return launchXrDev<true>(op, dtype, args, numSms, stream, 1);
  if (variant == kXResidentWideVariant) return launchXrWideDev<kXResidentWideLines>(op, dtype, args, numSms, stream);
  if (variant == kXResidentWideVariant + 1)
    return launchXrWideDev<kXResidentWideLines + 1>(op, dtype, args, numSms, stream);
  if (variant == kXResidentWideVariant + 2)
    return launchXrWideDev<kXResidentWideLines - 1>(op, dtype, args, numSms, stream);
  return false;
}

}  // namespace bs::tc
