// sm_90a path: the dispatched wgmma tiles (bsr_wgmma.cuh holds the kernel); the variants kept only for
// measurement are in kernels-cuda/dev/ and linked into tc_bench alone.
#include "bsr_wgmma.cuh"

namespace bs::tc {

namespace {

using sm90::WgmmaTraits;

// The dispatched tiles per block size (tokens or dW rows per tile, pipeline stages), measured best on an
// H100 (docs/kernels.md): Linear/Matmul 256 tokens at 32 and 64 (persistent with kPersistentTile), 128 or
// (kWideTile) 256 at 128 (persistent, ping-pong, with kPingPongTile); dW 128 rows.
template <typename T, Op kOp> using Tile32 = WgmmaTraits<T, kOp, 32, 256, 8>;
template <typename T, Op kOp> using Tile64 = WgmmaTraits<T, kOp, 64, 256, 5>;
template <typename T, Op kOp> using Tile128 = WgmmaTraits<T, kOp, 128, 128, 6>;
template <typename T, Op kOp> using WideTile128 = WgmmaTraits<T, kOp, 128, 256, 4>;
template <typename T> using SampledTile32 = WgmmaTraits<T, Op::Sampled, 32, 128, 8>;
template <typename T> using SampledTile64 = WgmmaTraits<T, Op::Sampled, 64, 128, 7>;
template <typename T> using SampledTile128 = WgmmaTraits<T, Op::Sampled, 128, 128, 6>;

// The persistent tile at 64x64 blocks: 256 tokens, four stages beside the staged rows' buffer, feature-major (one
// m64n128 product per consumer and k16 step; measured 1-8% faster than the same tile token-major, kept in dev as
// variant 17).
template <typename T, Op kOp> using PersistentTile64 = WgmmaTraits<T, kOp, 64, kPersistentTileTokens, 4, false, true>;
// The ping-pong tile at 128x128 blocks: 128 tokens per consumer, four stages of 32 KB beside each consumer's staged
// rows.
template <typename T, Op kOp> using PingPongTile128 = WgmmaTraits<T, kOp, 128, kPingPongTileTokens, 4, true>;
// The ping-pong tile at 64x64 blocks, feature-major: 256 tokens per consumer (one m64n256 product per k16 step), three
// stages beside the two consumers' staged rows. Dispatched for dX with the activation's backward in its epilogue.
template <typename T, Op kOp> using PingPongTile64 = WgmmaTraits<T, kOp, 64, kPingPongTile64Tokens, 3, true, true>;

template <typename T, Op kOp>
bool launchBlock(DType dtype, const KernelArgs& args, int blockSize, int variant, int numSms, cudaStream_t stream) {
  using sm90::launch;
  if constexpr (kOp == Op::Sampled) {
    if (variant != kDefaultTile) return false;
    switch (blockSize) {
      case 32: return launch<SampledTile32<T>>(dtype, args, stream);
      case 64: return launch<SampledTile64<T>>(dtype, args, stream);
      case 128: return launch<SampledTile128<T>>(dtype, args, stream);
    }
  } else {
    switch (blockSize) {
      case 32: return variant == kDefaultTile && launch<Tile32<T, kOp>>(dtype, args, stream);
      case 64:
        if (variant == kPersistentTile)
          return sm90::launchPersistent<PersistentTile64<T, kOp>, sm90::PersistentStore::Consumers>(dtype, args, stream,
                                                                                                     numSms);
        if (variant == kPingPongTile) return sm90::launchPingPong<PingPongTile64<T, kOp>>(dtype, args, stream, numSms);
        return variant == kDefaultTile && launch<Tile64<T, kOp>>(dtype, args, stream);
      case 128:
        if (variant == kDefaultTile) return launch<Tile128<T, kOp>>(dtype, args, stream);
        if (variant == kPingPongTile) return sm90::launchPingPong<PingPongTile128<T, kOp>>(dtype, args, stream, numSms);
        return variant == kWideTile && launch<WideTile128<T, kOp>>(dtype, args, stream);
    }
  }
  return false;
}

template <typename T>
bool launchTyped(Op op, DType dtype, const KernelArgs& args, int blockSize, int variant, int numSms,
                 cudaStream_t stream) {
  switch (op) {
    case Op::Linear: return launchBlock<T, Op::Linear>(dtype, args, blockSize, variant, numSms, stream);
    case Op::Matmul: return launchBlock<T, Op::Matmul>(dtype, args, blockSize, variant, numSms, stream);
    case Op::Sampled: return launchBlock<T, Op::Sampled>(dtype, args, blockSize, variant, numSms, stream);
  }
  return false;
}

}  // namespace

bool wgmmaAvailable() {
  cudaFuncAttributes attributes{};
  if (cudaFuncGetAttributes(&attributes, sm90::bsrWgmmaKernel<Tile64<__nv_bfloat16, Op::Linear>>) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  // Only an sm_90a image holds the kernel body; a JIT of older PTX would run an empty kernel.
  return attributes.ptxVersion >= 90 && attributes.binaryVersion == 90;
}

int wgmmaStoreRows(int blockSize, int variant) {
  using T = __nv_bfloat16;
  auto rows = [](auto traits) { return decltype(traits)::kTileM / decltype(traits)::kTileConsumers; };
  switch (blockSize) {
    case 32: return variant == kDefaultTile ? rows(Tile32<T, Op::Matmul>{}) : 0;
    case 64:
      if (variant == kPersistentTile) return rows(PersistentTile64<T, Op::Matmul>{});
      if (variant == kPingPongTile) return rows(PingPongTile64<T, Op::Matmul>{});
      return variant == kDefaultTile ? rows(Tile64<T, Op::Matmul>{}) : 0;
    case 128:
      if (variant == kDefaultTile) return rows(Tile128<T, Op::Matmul>{});
      if (variant == kPingPongTile) return rows(PingPongTile128<T, Op::Matmul>{});
      return variant == kWideTile ? rows(WideTile128<T, Op::Matmul>{}) : 0;
  }
  return 0;
}

bool launchWgmma(Op op, DType dtype, const KernelArgs& args, int blockSize, int variant, int numSms,
                 cudaStream_t stream) {
  if (dtype == DType::BFloat16) return launchTyped<__nv_bfloat16>(op, dtype, args, blockSize, variant, numSms, stream);
  if (dtype == DType::Float16) return launchTyped<__half>(op, dtype, args, blockSize, variant, numSms, stream);
  return false;
}

}  // namespace bs::tc
