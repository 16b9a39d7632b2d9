// sm_90a path for the rectangles of kWgmmaShapes (tc_kernels.h): bsr_wgmma.cuh's tiles with R x C blocks for the
// products whose output tile is at least 64 wide, in a file of its own so that it compiles beside bsr_wgmma.cu.
#include <iterator>
#include <utility>

#include "bsr_wgmma.cuh"

namespace bs::tc {

namespace {

// Tile `variant` of product kOp over R x C blocks, instantiated only where the product has wgmma tiles.
template <typename T, Op kOp, int R, int C>
bool launchIfSupported(DType dtype, const KernelArgs& args, int variant, int numSms, cudaStream_t stream) {
  if constexpr (wgmmaShapeSupported(kOp, R, C)) return sm90::launchTile<T, kOp, R, C>(dtype, args, variant, numSms, stream);
  return false;
}

// Tile `variant` of kWgmmaShapes' entry that is rows x cols (each entry instantiated once).
template <typename T, Op kOp, size_t... kIndex>
bool launchShape(DType dtype, const KernelArgs& args, int rows, int cols, int variant, int numSms, cudaStream_t stream,
                 std::index_sequence<kIndex...>) {
  bool launched = false;
  ((rows == kWgmmaShapes[kIndex].rows && cols == kWgmmaShapes[kIndex].cols &&
    (launched = launchIfSupported<T, kOp, kWgmmaShapes[kIndex].rows, kWgmmaShapes[kIndex].cols>(dtype, args, variant,
                                                                                                  numSms, stream),
     true)) ||
   ...);
  return launched;
}

template <typename T>
bool launchShapeTyped(Op op, DType dtype, const KernelArgs& args, int rows, int cols, int variant, int numSms,
                      cudaStream_t stream) {
  constexpr auto kAll = std::make_index_sequence<std::size(kWgmmaShapes)>{};
  switch (op) {
    case Op::Linear: return launchShape<T, Op::Linear>(dtype, args, rows, cols, variant, numSms, stream, kAll);
    case Op::Matmul: return launchShape<T, Op::Matmul>(dtype, args, rows, cols, variant, numSms, stream, kAll);
    case Op::Sampled: return launchShape<T, Op::Sampled>(dtype, args, rows, cols, variant, numSms, stream, kAll);
  }
  return false;
}

}  // namespace

bool launchWgmmaShape(Op op, DType dtype, const KernelArgs& args, int rows, int cols, int variant, int numSms,
                      cudaStream_t stream) {
  if (!wgmmaShapeSupported(op, rows, cols)) return false;
  if (dtype == DType::BFloat16) return launchShapeTyped<__nv_bfloat16>(op, dtype, args, rows, cols, variant, numSms, stream);
  if (dtype == DType::Float16) return launchShapeTyped<__half>(op, dtype, args, rows, cols, variant, numSms, stream);
  return false;
}

}  // namespace bs::tc
