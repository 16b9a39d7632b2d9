// sm_90a path: the dispatched wgmma tiles for the square blocks of 32, 64 and 128 (bsr_wgmma.cuh holds the kernels and
// WgmmaTiles, the tile of each block shape and variant; bsr_wgmma_shapes.cu the rectangles, bsr_wgmma_xr.cu the
// X-resident tile); the variants kept only for measurement are in kernels-cuda/dev/ and linked into tc_bench alone.
#include "bsr_wgmma.cuh"

namespace bs::tc {

namespace {

using sm90::WgmmaTiles;

template <typename T, Op kOp>
bool launchBlock(DType dtype, const KernelArgs& args, int blockSize, int variant, int numSms, cudaStream_t stream) {
  switch (blockSize) {
    case 32:
      // Only the default tile at 32x32 (the dispatch runs mma.sync there; tc_bench names this one).
      return variant == kDefaultTile && sm90::launchTile<T, kOp, 32, 32>(dtype, args, variant, numSms, stream);
    case 64: return sm90::launchTile<T, kOp, 64, 64>(dtype, args, variant, numSms, stream);
    case 128: return sm90::launchTile<T, kOp, 128, 128>(dtype, args, variant, numSms, stream);
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
  using Probe = WgmmaTiles<__nv_bfloat16, Op::Linear, 64, 64>::Default;
  if (cudaFuncGetAttributes(&attributes, sm90::bsrWgmmaKernel<Probe>) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  // Only an sm_90a image holds the kernel body; a JIT of older PTX would run an empty kernel.
  return attributes.ptxVersion >= 90 && attributes.binaryVersion == 90;
}

int wgmmaStoreRows(int width, int variant) {
  using T = __nv_bfloat16;
  auto rows = [](auto traits) { return decltype(traits)::kTileM / decltype(traits)::kTileConsumers; };
  switch (width) {
    case 32:
      // The X-resident tile: each consumer's 64 tokens of a line per store, a row of sums per warp.
      if (variant == kXResidentTile) return kXResidentTileTokens;
      return variant == kDefaultTile ? rows(WgmmaTiles<T, Op::Matmul, 32, 32>::Default{}) : 0;
    case 64: {
      using Tiles = WgmmaTiles<T, Op::Matmul, 64, 64>;
      if (variant == kPersistentTile) return rows(Tiles::Persistent{});
      if (variant == kPingPongTile) return rows(Tiles::PingPong64{});
      if (variant == kPingPong3Tile) return rows(Tiles::PingPong64x3{});
      return variant == kDefaultTile ? rows(Tiles::Default{}) : 0;
    }
    case 128: {
      using Tiles = WgmmaTiles<T, Op::Matmul, 128, 128>;
      if (variant == kDefaultTile) return rows(Tiles::Default{});
      if (variant == kPingPongTile) return rows(Tiles::PingPong128{});
      return variant == kWideTile ? rows(Tiles::Wide{}) : 0;
    }
  }
  return 0;
}

int wgmmaSampledCtasPerSm(int block) {
  auto resident = [](auto traits) {
    using K = decltype(traits);
    return residentCtas(sm90::bsrWgmmaKernel<K>, K::kThreads, K::kSmemBytes);
  };
  using T = __nv_bfloat16;
  switch (block) {
    case 32: return resident(typename WgmmaTiles<T, Op::Sampled, 32, 32>::Default{});
    case 64: return resident(typename WgmmaTiles<T, Op::Sampled, 64, 64>::Default{});
    case 128: return resident(typename WgmmaTiles<T, Op::Sampled, 128, 128>::Default{});
  }
  return 0;
}

bool launchWgmma(Op op, DType dtype, const KernelArgs& args, int blockSize, int variant, int numSms,
                 cudaStream_t stream) {
  if (variant == kXResidentTile) return launchXResident(op, dtype, args, blockSize, numSms, stream);
  if (variant == kPatchPairTile) return op == Op::Sampled && blockSize == 32 && launchPatchPairDw(dtype, args, stream);
  if (dtype == DType::BFloat16) return launchTyped<__nv_bfloat16>(op, dtype, args, blockSize, variant, numSms, stream);
  if (dtype == DType::Float16) return launchTyped<__half>(op, dtype, args, blockSize, variant, numSms, stream);
  return false;
}

}  // namespace bs::tc
