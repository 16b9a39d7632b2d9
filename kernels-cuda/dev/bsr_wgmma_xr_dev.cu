// TcOptions::devVariants' X-resident tiles (src/tc/bsr_wgmma_xr.cuh) at 32x32 blocks, each the addon's with one change
// (dev_variants.h): two accumulator chains per line (18), each line's bias requested a line ahead (19), both (20), the
// outputs stored from the accumulators' layout (21), the tile the addon ran before (22: those stores and two CTAs per
// SM), a line's stores deferred to the next line's first stage (23), that with two chains and the bias a line ahead
// (24), the lines grouped for two CTAs per SM (25) or one (26). Measured on an H200: tc-xr.md.
#include "dev_variants.h"
#include "tc/bsr_wgmma_xr.cuh"

namespace bs::tc {

namespace {

template <int kChains, bool kBiasAhead, bool kStaged = true, bool kDeferred = false>
bool launchXrDev(Op op, DType dtype, const KernelArgs& args, int numSms, cudaStream_t stream, int ctasPerSm = 0) {
  auto launch = [&](auto type, auto product) {
    using Traits = sm90::XrTraits<decltype(type), decltype(product)::value, 32, kChains, kBiasAhead, kStaged, kDeferred>;
    return sm90::launchXr<Traits>(dtype, args, numSms, stream, ctasPerSm);
  };
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

}  // namespace

bool launchXResidentDevVariant(Op op, DType dtype, const KernelArgs& args, int blockSize, int variant, int numSms,
                               cudaStream_t stream) {
  if (blockSize != 32) return false;  // a 64x64 stage holds one block: one chain
  if (variant == kXResidentChainsVariant) return launchXrDev<2, false>(op, dtype, args, numSms, stream);
  if (variant == kXResidentBiasAheadVariant) return launchXrDev<1, true>(op, dtype, args, numSms, stream);
  if (variant == kXResidentChainsVariant + 2) return launchXrDev<2, true>(op, dtype, args, numSms, stream);
  if (variant == kXResidentDirectStoresVariant) return launchXrDev<1, false, false>(op, dtype, args, numSms, stream);
  if (variant == kXResidentPreviousVariant) return launchXrDev<1, false, false>(op, dtype, args, numSms, stream, 2);
  if (variant == kXResidentDeferredStoresVariant)
    return launchXrDev<1, false, false, true>(op, dtype, args, numSms, stream);
  if (variant == kXResidentDeferredStoresVariant + 1)
    return launchXrDev<2, true, false, true>(op, dtype, args, numSms, stream);
  if (variant == kXResidentWavesVariant) return launchXrDev<1, false>(op, dtype, args, numSms, stream, 2);
  if (variant == kXResidentWavesVariant + 1) return launchXrDev<1, false>(op, dtype, args, numSms, stream, 1);
  return false;
}

}  // namespace bs::tc
