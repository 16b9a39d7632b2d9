// sm_80+ path for the block shapes besides the squares of 32, 64 and 128 (tc_kernels.h's mmaShapeSupported): the
// mma.sync tile of bsr_mma.cuh with R x C blocks, in a file of its own so that it compiles beside bsr_mma.cu.
#include <iterator>
#include <utility>

#include "bsr_mma.cuh"

namespace bs::tc {

namespace {

using sm80::MmaShapeTraits;

// The output tile's width: a block row's R features (Linear) or a block column's C (Matmul, dW).
template <Op kOp, int R, int C>
constexpr int kShapeTileN = kOp == Op::Linear ? R : C;
// Warps along the features: one per 32 of them, up to 4 (16- and 32-wide tiles take one, as the 32x32 tile does);
// along the tokens, 4 warps of 32 tokens, or 2 of 64 beside 2 or 4 along the features (as the 64x64 and 128x128
// tiles).
template <Op kOp, int R, int C>
constexpr int kShapeWarpsN = kShapeTileN<kOp, R, C> >= 128 ? 4 : kShapeTileN<kOp, R, C> >= 64 ? 2 : 1;
template <Op kOp, int R, int C>
constexpr int kShapeWarpsM = kShapeWarpsN<kOp, R, C> == 1 ? 4 : 2;
// 128 tokens (dW: 128 rows of blocks) per tile; four stages, or three where a stage passes 24 KB.
template <typename T, Op kOp, int R, int C, int kStages>
using ShapeTileOf = MmaShapeTraits<T, kOp, R, C, 128, kShapeWarpsM<kOp, R, C>, kShapeWarpsN<kOp, R, C>, kStages>;
template <typename T, Op kOp, int R, int C>
using ShapeTile = ShapeTileOf<T, kOp, R, C, ShapeTileOf<T, kOp, R, C, 4>::kStageBytes <= 24 * 1024 ? 4 : 3>;

// The tile of kMmaShapes' entry that is rows x cols (each entry instantiated once).
template <typename T, Op kOp, size_t... kIndex>
bool launchShape(const KernelArgs& args, int rows, int cols, cudaStream_t stream, std::index_sequence<kIndex...>) {
  bool launched = false;
  ((rows == kMmaShapes[kIndex].rows && cols == kMmaShapes[kIndex].cols &&
    (launched = sm80::launch<ShapeTile<T, kOp, kMmaShapes[kIndex].rows, kMmaShapes[kIndex].cols>>(args, stream), true)) ||
   ...);
  return launched;
}

template <typename T, Op kOp>
bool launchShape(const KernelArgs& args, int rows, int cols, cudaStream_t stream) {
  return launchShape<T, kOp>(args, rows, cols, stream, std::make_index_sequence<std::size(kMmaShapes)>{});
}

template <typename T>
bool launchShapeTyped(Op op, const KernelArgs& args, int rows, int cols, cudaStream_t stream) {
  switch (op) {
    case Op::Linear: return launchShape<T, Op::Linear>(args, rows, cols, stream);
    case Op::Matmul: return launchShape<T, Op::Matmul>(args, rows, cols, stream);
    case Op::Sampled: return launchShape<T, Op::Sampled>(args, rows, cols, stream);
  }
  return false;
}

// CTAs of kMmaShapes' entry kIndex's dW tile one SM holds (residentCtas: 0 where the runtime cannot say).
template <size_t kIndex>
int shapeSampledCtas() {
  using K = ShapeTile<__nv_bfloat16, Op::Sampled, kMmaShapes[kIndex].rows, kMmaShapes[kIndex].cols>;
  return residentCtas(sm80::bsrMmaKernel<K>, K::kThreads, K::kSmemBytes);
}

template <size_t... kIndex>
int shapeSampledCtas(int rows, int cols, std::index_sequence<kIndex...>) {
  int ctas = 0;
  ((rows == kMmaShapes[kIndex].rows && cols == kMmaShapes[kIndex].cols && (ctas = shapeSampledCtas<kIndex>(), true)) ||
   ...);
  return ctas;
}

}  // namespace

int mmaShapeSampledCtasPerSm(int rows, int cols) {
  return shapeSampledCtas(rows, cols, std::make_index_sequence<std::size(kMmaShapes)>{});
}

bool launchMmaShape(Op op, DType dtype, const KernelArgs& args, int rows, int cols, cudaStream_t stream) {
  if (!mmaShapeSupported(rows, cols)) return false;
  if (dtype == DType::BFloat16) return launchShapeTyped<__nv_bfloat16>(op, args, rows, cols, stream);
  if (dtype == DType::Float16) return launchShapeTyped<__half>(op, args, rows, cols, stream);
  return false;
}

}  // namespace bs::tc
