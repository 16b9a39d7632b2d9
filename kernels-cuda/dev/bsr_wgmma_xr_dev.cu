// TcOptions::devVariants' X-resident tiles (src/tc/bsr_wgmma_xr.cuh) at 32x32 blocks with what the addon's lacks
// (dev_variants.h): two accumulator chains per line (18), each line's bias requested a line ahead (19), both (20),
// outputs staged in shared memory and written as 16-byte stores (21), all three (22), a line's stores deferred to the
// next line's first stage (23), that with two chains and the bias a line ahead (24), the addon's tile at one CTA per SM
// (25) or four (26). Not yet measured.
#include "dev_variants.h"
#include "tc/bsr_wgmma_xr.cuh"

namespace bs::tc {

namespace {

template <int kChains, bool kBiasAhead, bool kStaged = false, bool kDeferred = false>
bool launchXrDev(Op op, DType dtype, const KernelArgs& args, int numSms, cudaStream_t stream,
                 int ctasPerSm = kXResidentCtasPerSm) {
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
  if (variant == kXResidentStagedStoresVariant) return launchXrDev<1, false, true>(op, dtype, args, numSms, stream);
  if (variant == kXResidentStagedStoresVariant + 1) return launchXrDev<2, true, true>(op, dtype, args, numSms, stream);
  if (variant == kXResidentDeferredStoresVariant) return launchXrDev<1, false, false, true>(op, dtype, args, numSms, stream);
  if (variant == kXResidentDeferredStoresVariant + 1)
    return launchXrDev<2, true, false, true>(op, dtype, args, numSms, stream);
  // The addon's tile with its lines grouped for one CTA per SM (one wave, each slab loaded once where the token tiles
  // fill the GPU) or four (four waves of shorter CTAs).
  if (variant == kXResidentWavesVariant) return launchXrDev<1, false>(op, dtype, args, numSms, stream, 1);
  if (variant == kXResidentWavesVariant + 1) return launchXrDev<1, false>(op, dtype, args, numSms, stream, 4);
  return false;
}

}  // namespace bs::tc
