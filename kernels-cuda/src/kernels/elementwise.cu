// Elementwise kernels: unary, broadcast binary and comparisons, where, cast, fill and strided copy.
#include <cstdint>
#include <type_traits>

#include "../kernels.h"
#include "activation_math.cuh"
#include "dtype.cuh"
#include "overlap.cuh"

namespace bs {

namespace {

constexpr float kNaN = __builtin_nanf("");

__device__ __forceinline__ float applyUnary(UnaryOp op, float x) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Abs: return fabsf(x);
    case UnaryOp::Exp: return expf(x);
    case UnaryOp::Log: return logf(x);
    case UnaryOp::Sqrt: return sqrtf(x);
    case UnaryOp::Rsqrt: return rsqrtf(x);
    case UnaryOp::Tanh: return tanhf(x);
    case UnaryOp::Sigmoid: return 1.0f / (1.0f + expf(-x));
    case UnaryOp::Relu: return x > 0.0f ? x : (x != x ? x : 0.0f);
    case UnaryOp::Square: return x * x;
    // GELU and its derivative: the float32 definitions biasActivation and the fused epilogues use.
    case UnaryOp::Gelu: return activateWithLimits<Activation::Gelu>(x);
    case UnaryOp::GeluTanh: return activateWithLimits<Activation::GeluTanh>(x);
    default: return kNaN;
  }
}

// int32 arithmetic wraps modulo 2^32, like JavaScript's Int32Array stores.
__device__ __forceinline__ int32_t applyUnaryInt(UnaryOp op, int32_t x) {
  uint32_t u = static_cast<uint32_t>(x);
  switch (op) {
    case UnaryOp::Neg: return static_cast<int32_t>(0u - u);
    case UnaryOp::Abs: return x < 0 ? static_cast<int32_t>(0u - u) : x;
    case UnaryOp::Relu: return x > 0 ? x : 0;
    case UnaryOp::Square: return static_cast<int32_t>(u * u);
    default: return 0;
  }
}

__device__ __forceinline__ float applyBinary(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
    case BinaryOp::Maximum: return (a != a || b != b) ? kNaN : fmaxf(a, b);
    case BinaryOp::Minimum: return (a != a || b != b) ? kNaN : fminf(a, b);
    case BinaryOp::Pow: return powf(a, b);
    case BinaryOp::Equal: return a == b;
    case BinaryOp::NotEqual: return a != b;
    case BinaryOp::Less: return a < b;
    case BinaryOp::LessEqual: return a <= b;
    case BinaryOp::Greater: return a > b;
    case BinaryOp::GreaterEqual: return a >= b;
    case BinaryOp::GeluBackward: return a * derivativeWithLimits<Activation::Gelu>(b);  // d/dx x Phi(x) = Phi(x) + x phi(x)
    case BinaryOp::GeluTanhBackward: return a * derivativeWithLimits<Activation::GeluTanh>(b);
    default: return kNaN;
  }
}

__device__ __forceinline__ int32_t applyBinaryInt(BinaryOp op, int32_t a, int32_t b) {
  uint32_t ua = static_cast<uint32_t>(a), ub = static_cast<uint32_t>(b);
  switch (op) {
    case BinaryOp::Add: return static_cast<int32_t>(ua + ub);
    case BinaryOp::Sub: return static_cast<int32_t>(ua - ub);
    case BinaryOp::Mul: return static_cast<int32_t>(ua * ub);
    case BinaryOp::Maximum: return a > b ? a : b;
    case BinaryOp::Minimum: return a < b ? a : b;
    case BinaryOp::Equal: return a == b;
    case BinaryOp::NotEqual: return a != b;
    case BinaryOp::Less: return a < b;
    case BinaryOp::LessEqual: return a <= b;
    case BinaryOp::Greater: return a > b;
    case BinaryOp::GreaterEqual: return a >= b;
    default: return 0;
  }
}

// Maps an output element's linear index to the element offsets of up to three operands.
// The iteration shape and each operand's strides, simplified on the host: size-1 dims dropped and neighbours
// merged where every operand (and the row-major output) steps through them as one dim, so a broadcast or a
// permutation is indexed over the fewest dims. An out-of-place elementwise result is row-major over the shape.
struct Layout {
  int rank;
  int64_t shape[kMaxRank];
  int64_t stride[3][kMaxRank];
};

Layout simplify(const StridedShape& shape, const Strides* strides, int operands) {
  Layout out{};
  for (int d = 0; d < shape.rank; ++d) {
    if (shape.shape[d] == 1) continue;
    if (out.rank > 0) {
      const int last = out.rank - 1;
      bool merge = true;
      for (int k = 0; k < operands; ++k) merge = merge && out.stride[k][last] == strides[k].stride[d] * shape.shape[d];
      if (merge) {
        out.shape[last] *= shape.shape[d];
        for (int k = 0; k < operands; ++k) out.stride[k][last] = strides[k].stride[d];
        continue;
      }
    }
    out.shape[out.rank] = shape.shape[d];
    for (int k = 0; k < operands; ++k) out.stride[k][out.rank] = strides[k].stride[d];
    ++out.rank;
  }
  if (out.rank == 0) {  // every dim of size 1: one element
    out.rank = 1;
    out.shape[0] = 1;
  }
  return out;
}

// Whether every index (n elements) and every operand's offsets fit 32 bits: the kernels then divide in 32 bits,
// several times cheaper than 64-bit division on the GPU.
bool fits32(const Layout& layout, int operands, int64_t n) {
  if (n >= (int64_t{1} << 31)) return false;
  for (int k = 0; k < operands; ++k) {
    int64_t extent = 0;
    for (int d = 0; d < layout.rank; ++d) extent += (layout.shape[d] - 1) * (layout.stride[k][d] < 0 ? -layout.stride[k][d] : layout.stride[k][d]);
    if (extent >= (int64_t{1} << 31)) return false;
  }
  return true;
}

// The device view of a Layout, in I (uint32_t when fits32, else int64_t) arithmetic.
template <typename I>
struct OperandIndex {
  int32_t rank;
  I shape[kMaxRank];
  I stride[3][kMaxRank];

  template <int Operands>
  __device__ __forceinline__ void offsets(I i, I* out) const {
#pragma unroll
    for (int k = 0; k < Operands; ++k) out[k] = 0;
    for (int d = rank - 1; d >= 0; --d) {
      const I coord = i % shape[d];
      i /= shape[d];
#pragma unroll
      for (int k = 0; k < Operands; ++k) out[k] += coord * stride[k][d];
    }
  }
};

template <typename I>
OperandIndex<I> makeIndex(const Layout& layout, int operands) {
  OperandIndex<I> index{};
  index.rank = layout.rank;
  for (int d = 0; d < layout.rank; ++d) {
    index.shape[d] = static_cast<I>(layout.shape[d]);
    for (int k = 0; k < operands; ++k) index.stride[k][d] = static_cast<I>(layout.stride[k][d]);
  }
  return index;
}

#define BS_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

template <typename T>
__global__ void unaryKernel(UnaryOp op, const T* __restrict__ x, T* __restrict__ y, int64_t n) {
  allowDependentLaunch();
  BS_GRID_STRIDE(i, n) {
    if constexpr (std::is_same<T, int32_t>::value) y[i] = applyUnaryInt(op, x[i]);
    else y[i] = fromFloat<T>(applyUnary(op, toFloat<T>(x[i])));
  }
}

// TOut is T, or int32 for comparisons. I: the index arithmetic's type (see fits32).
template <typename T, typename TOut, typename I>
__global__ void binaryKernel(BinaryOp op, const T* __restrict__ a, const T* __restrict__ b, TOut* __restrict__ y,
                             int64_t n, OperandIndex<I> index, bool contiguous) {
  allowDependentLaunch();
  BS_GRID_STRIDE(i, n) {
    I off[2] = {static_cast<I>(i), static_cast<I>(i)};
    if (!contiguous) index.template offsets<2>(static_cast<I>(i), off);
    if constexpr (std::is_same<T, int32_t>::value) {
      y[i] = applyBinaryInt(op, a[off[0]], b[off[1]]);
    } else {
      float r = applyBinary(op, toFloat<T>(a[off[0]]), toFloat<T>(b[off[1]]));
      if constexpr (std::is_same<TOut, int32_t>::value) y[i] = r != 0.0f;
      else y[i] = fromFloat<TOut>(r);
    }
  }
}

template <typename T, typename I>
__global__ void whereKernel(const int32_t* __restrict__ cond, const T* __restrict__ a, const T* __restrict__ b,
                            T* __restrict__ y, int64_t n, OperandIndex<I> index) {
  BS_GRID_STRIDE(i, n) {
    I off[3];
    index.template offsets<3>(static_cast<I>(i), off);
    y[i] = cond[off[0]] != 0 ? a[off[1]] : b[off[2]];
  }
}

template <typename TIn, typename TOut>
__global__ void castKernel(const TIn* __restrict__ x, TOut* __restrict__ y, int64_t n) {
  allowDependentLaunch();
  BS_GRID_STRIDE(i, n) {
    if constexpr (std::is_same<TIn, int32_t>::value && std::is_same<TOut, int32_t>::value) y[i] = x[i];
    else if constexpr (std::is_same<TIn, int32_t>::value) y[i] = fromFloat<TOut>(static_cast<float>(x[i]));
    else y[i] = fromFloat<TOut>(toFloat<TIn>(x[i]));
  }
}

// y[0, n) = value (T: the 2- or 4-byte pattern) as 16-byte stores: the elements before y's first 16-byte boundary and
// after its last whole word are written one by one. One element per thread moved 8 MB of bfloat16 zeros in 13.6 us on
// an H200 (0.6 TB/s: a 2-byte store per thread), which the dense route's scatter paid on every call.
template <typename T>
__global__ void fillKernel(T* __restrict__ y, int64_t n, T value) {
  constexpr int64_t kPerWord = 16 / sizeof(T);
  const int64_t misalign = static_cast<int64_t>(reinterpret_cast<uintptr_t>(y) % 16) / static_cast<int64_t>(sizeof(T));
  const int64_t head = misalign == 0 ? 0 : (n < kPerWord - misalign ? n : kPerWord - misalign);
  const int64_t words = (n - head) / kPerWord, done = head + words * kPerWord;
  const uint32_t bits = sizeof(T) == 4 ? static_cast<uint32_t>(value) : static_cast<uint32_t>(value) * 0x10001u;
  const uint4 word{bits, bits, bits, bits};
  T* body = y + head;
  BS_GRID_STRIDE(i, words) store16(body + i * kPerWord, word);
  BS_GRID_STRIDE(i, head) y[i] = value;
  BS_GRID_STRIDE(i, n - done) y[done + i] = value;
}

// A copy moves elements as unsigned integers of their width, or as vectors of several elements (uint2, uint4)
// when the innermost dim is contiguous on both sides (see launchCopyStrided).
template <typename T, typename I>
__global__ void copyStridedKernel(const T* __restrict__ src, T* __restrict__ dst, int64_t n, OperandIndex<I> index) {
  allowDependentLaunch();
  BS_GRID_STRIDE(i, n) {
    I off[2];
    index.template offsets<2>(static_cast<I>(i), off);
    dst[off[1]] = src[off[0]];
  }
}

// Eight elements moved as one aligned pack: 16-byte loads for half types, two for float32.
constexpr int kPack = 8;

template <typename T>
using Pack = Packed<T, kPack>;

bool packAligned(const void* p) { return (reinterpret_cast<uintptr_t>(p) % 32) == 0; }

// Threads for `packs` packs plus a scalar tail, a few waves deep at most.
unsigned packGrid(int64_t packs) { return gridFor(packs > 0 ? packs : 1); }

// y = op(x) over n contiguous elements: packs of eight, then the tail one by one.
template <typename T>
__global__ void unaryPackedKernel(UnaryOp op, const T* __restrict__ x, T* __restrict__ y, int64_t n) {
  allowDependentLaunch();
  const int64_t packs = n / kPack;
  const Pack<T>* in = reinterpret_cast<const Pack<T>*>(x);
  Pack<T>* out = reinterpret_cast<Pack<T>*>(y);
  BS_GRID_STRIDE(p, packs) {
    Pack<T> a = in[p], r;
#pragma unroll
    for (int k = 0; k < kPack; ++k) r.v[k] = fromFloat<T>(applyUnary(op, toFloat<T>(a.v[k])));
    out[p] = r;
  }
  BS_GRID_STRIDE(i, n - packs * kPack) {
    const int64_t j = packs * kPack + i;
    y[j] = fromFloat<T>(applyUnary(op, toFloat<T>(x[j])));
  }
}

// How the packed binary kernel reads its second operand against the contiguous first one, viewed as
// [rows, cols]: the same shape, one row of `cols` repeated on every row (a bias), one value (a scalar), or one
// value per row (a row statistic such as a softmax's sum, cols % kPack == 0 so that a pack lies in one row).
enum class Broadcast : int { None = 0, Row, Scalar, Column };

// y = op(a, b) with a contiguous and b read as `mode` says; bIsA: the broadcast operand is the left one (b holds
// it, a holds the full tensor). cols % kPack == 0 for Row and Column.
template <typename T, typename TOut>
__global__ void binaryPackedKernel(BinaryOp op, const T* __restrict__ a, const T* __restrict__ b, TOut* __restrict__ y,
                                   int64_t n, int64_t cols, Broadcast mode, bool bIsA) {
  allowDependentLaunch();
  const int64_t packs = n / kPack;
  BS_GRID_STRIDE(p, packs) {
    const Pack<T> pa = reinterpret_cast<const Pack<T>*>(a)[p];
    Pack<T> pb;
    if (mode == Broadcast::None || mode == Broadcast::Row) {
      pb = reinterpret_cast<const Pack<T>*>(b)[mode == Broadcast::Row ? (p * kPack % cols) / kPack : p];
    } else {
      const T value = b[mode == Broadcast::Scalar ? 0 : p * kPack / cols];
#pragma unroll
      for (int k = 0; k < kPack; ++k) pb.v[k] = value;
    }
    Pack<TOut> r;
#pragma unroll
    for (int k = 0; k < kPack; ++k) {
      const float left = toFloat<T>(bIsA ? pb.v[k] : pa.v[k]);
      const float right = toFloat<T>(bIsA ? pa.v[k] : pb.v[k]);
      const float value = applyBinary(op, left, right);
      if constexpr (std::is_same<TOut, int32_t>::value) r.v[k] = value != 0.0f;
      else r.v[k] = fromFloat<TOut>(value);
    }
    reinterpret_cast<Pack<TOut>*>(y)[p] = r;
  }
  BS_GRID_STRIDE(i, n - packs * kPack) {
    const int64_t j = packs * kPack + i;
    const int64_t jb = mode == Broadcast::None ? j : mode == Broadcast::Row ? j % cols : mode == Broadcast::Scalar ? 0 : j / cols;
    const float left = toFloat<T>(bIsA ? b[jb] : a[j]);
    const float right = toFloat<T>(bIsA ? a[j] : b[jb]);
    const float value = applyBinary(op, left, right);
    if constexpr (std::is_same<TOut, int32_t>::value) y[j] = value != 0.0f;
    else y[j] = fromFloat<TOut>(value);
  }
}

template <typename TIn, typename TOut>
__global__ void castPackedKernel(const TIn* __restrict__ x, TOut* __restrict__ y, int64_t n) {
  allowDependentLaunch();
  const int64_t packs = n / kPack;
  BS_GRID_STRIDE(p, packs) {
    const Pack<TIn> a = reinterpret_cast<const Pack<TIn>*>(x)[p];
    Pack<TOut> r;
#pragma unroll
    for (int k = 0; k < kPack; ++k) r.v[k] = fromFloat<TOut>(toFloat<TIn>(a.v[k]));
    reinterpret_cast<Pack<TOut>*>(y)[p] = r;
  }
  BS_GRID_STRIDE(i, n - packs * kPack) {
    const int64_t j = packs * kPack + i;
    y[j] = fromFloat<TOut>(toFloat<TIn>(x[j]));
  }
}

}  // namespace

void launchUnary(UnaryOp op, DType dtype, const void* x, void* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (dtype != DType::Int32 && packAligned(x) && packAligned(y)) {
    BS_DISPATCH_FLOAT(dtype, T, unaryPackedKernel<T><<<packGrid(n / kPack), kThreads, 0, stream>>>(
                                    op, static_cast<const T*>(x), static_cast<T*>(y), n));
  } else {
    BS_DISPATCH_ANY(dtype, T, unaryKernel<T><<<gridFor(n), kThreads, 0, stream>>>(op, static_cast<const T*>(x),
                                                                                  static_cast<T*>(y), n));
  }
  BS_LAUNCH_CHECK("unaryKernel");
}

namespace {

// The packed binary path for a simplified layout, if one applies: `full` is the contiguous operand (0 = a, 1 = b),
// the other is read as `mode` says.
struct PackedPlan {
  bool ok = false;
  Broadcast mode = Broadcast::None;
  int full = 0;
  int64_t cols = 1;
};

PackedPlan packedPlan(const Layout& l) {
  PackedPlan plan;
  if (l.rank == 1) {
    const int64_t sa = l.stride[0][0], sb = l.stride[1][0];
    if (sa == 1 && sb == 1) plan = {true, Broadcast::None, 0, l.shape[0]};
    else if (sa == 1 && sb == 0) plan = {true, Broadcast::Scalar, 0, l.shape[0]};
    else if (sa == 0 && sb == 1) plan = {true, Broadcast::Scalar, 1, l.shape[0]};
    return plan;
  }
  if (l.rank != 2 || l.shape[1] % kPack != 0) return plan;
  const int64_t cols = l.shape[1];
  for (int full = 0; full < 2; ++full) {
    const int64_t* f = l.stride[full];
    const int64_t* o = l.stride[1 - full];
    if (f[0] != cols || f[1] != 1) continue;
    if (o[0] == 0 && o[1] == 1) return {true, Broadcast::Row, full, cols};
    if (o[0] == 1 && o[1] == 0) return {true, Broadcast::Column, full, cols};
  }
  return plan;
}

}  // namespace

void launchBinary(BinaryOp op, DType dtype, const void* a, const Strides& aStrides, const void* b,
                  const Strides& bStrides, void* y, const StridedShape& shape, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  Strides strides[2] = {aStrides, bStrides};
  const Layout layout = simplify(shape, strides, 2);
  const bool comparison = op >= BinaryOp::Equal && op <= BinaryOp::GreaterEqual;
  // Packed paths: a contiguous operand read in aligned packs of eight, the other the same shape, a repeated row
  // (a bias), a scalar or one value per row (a row statistic).
  const PackedPlan plan = packedPlan(layout);
  const void* full = plan.full == 0 ? a : b;
  const void* other = plan.full == 0 ? b : a;
  const bool otherPacked = plan.mode == Broadcast::None || plan.mode == Broadcast::Row;
  if (dtype != DType::Int32 && plan.ok && packAligned(full) && packAligned(y) && (!otherPacked || packAligned(other))) {
    const bool bIsA = plan.full == 1;
    if (comparison) {
      BS_DISPATCH_FLOAT(dtype, T, binaryPackedKernel<T, int32_t><<<packGrid(n / kPack), kThreads, 0, stream>>>(
                                      op, static_cast<const T*>(full), static_cast<const T*>(other),
                                      static_cast<int32_t*>(y), n, plan.cols, plan.mode, bIsA));
    } else {
      BS_DISPATCH_FLOAT(dtype, T, binaryPackedKernel<T, T><<<packGrid(n / kPack), kThreads, 0, stream>>>(
                                      op, static_cast<const T*>(full), static_cast<const T*>(other), static_cast<T*>(y),
                                      n, plan.cols, plan.mode, bIsA));
    }
    BS_LAUNCH_CHECK("binaryKernel");
    return;
  }
  // Same-shape contiguous operands skip the index arithmetic.
  const bool contiguous = layout.rank == 1 && layout.stride[0][0] == 1 && layout.stride[1][0] == 1;
  auto run = [&](auto index) {
    if (dtype == DType::Int32) {
      binaryKernel<<<gridFor(n), kThreads, 0, stream>>>(op, static_cast<const int32_t*>(a), static_cast<const int32_t*>(b),
                                                        static_cast<int32_t*>(y), n, index, contiguous);
    } else if (comparison) {
      BS_DISPATCH_FLOAT(dtype, T, binaryKernel<<<gridFor(n), kThreads, 0, stream>>>(
                                      op, static_cast<const T*>(a), static_cast<const T*>(b), static_cast<int32_t*>(y), n,
                                      index, contiguous));
    } else {
      BS_DISPATCH_FLOAT(dtype, T, binaryKernel<<<gridFor(n), kThreads, 0, stream>>>(
                                      op, static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(y), n,
                                      index, contiguous));
    }
  };
  if (fits32(layout, 2, n)) run(makeIndex<uint32_t>(layout, 2));
  else run(makeIndex<int64_t>(layout, 2));
  BS_LAUNCH_CHECK("binaryKernel");
}

void launchWhere(DType dtype, const int32_t* cond, const Strides& condStrides, const void* a, const Strides& aStrides,
                 const void* b, const Strides& bStrides, void* y, const StridedShape& shape, int64_t n,
                 cudaStream_t stream) {
  if (n == 0) return;
  Strides strides[3] = {condStrides, aStrides, bStrides};
  const Layout layout = simplify(shape, strides, 3);
  auto run = [&](auto index) {
    if (dtypeSize(dtype) == 4)
      whereKernel<<<gridFor(n), kThreads, 0, stream>>>(cond, static_cast<const uint32_t*>(a),
                                                       static_cast<const uint32_t*>(b), static_cast<uint32_t*>(y), n,
                                                       index);
    else
      whereKernel<<<gridFor(n), kThreads, 0, stream>>>(cond, static_cast<const uint16_t*>(a),
                                                       static_cast<const uint16_t*>(b), static_cast<uint16_t*>(y), n,
                                                       index);
  };
  if (fits32(layout, 3, n)) run(makeIndex<uint32_t>(layout, 3));
  else run(makeIndex<int64_t>(layout, 3));
  BS_LAUNCH_CHECK("whereKernel");
}

void launchCast(DType from, DType to, const void* x, void* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (from != DType::Int32 && to != DType::Int32 && packAligned(x) && packAligned(y)) {
    BS_DISPATCH_FLOAT(from, TIn, BS_DISPATCH_FLOAT(to, TOut, castPackedKernel<TIn, TOut><<<packGrid(n / kPack), kThreads, 0, stream>>>(
                                                                 static_cast<const TIn*>(x), static_cast<TOut*>(y), n)));
  } else {
    BS_DISPATCH_ANY(from, TIn, BS_DISPATCH_ANY(to, TOut, castKernel<TIn, TOut><<<gridFor(n), kThreads, 0, stream>>>(
                                                            static_cast<const TIn*>(x), static_cast<TOut*>(y), n)));
  }
  BS_LAUNCH_CHECK("castKernel");
}

void launchFillBits(size_t elementSize, void* y, int64_t n, uint32_t bits, cudaStream_t stream) {
  if (n == 0) return;
  // Threads for the 16-byte words (and at least the 1-7 elements of a head or tail).
  const unsigned grid = gridFor(n * static_cast<int64_t>(elementSize) / 16 + 8);
  if (elementSize == 4)
    fillKernel<uint32_t><<<grid, kThreads, 0, stream>>>(static_cast<uint32_t*>(y), n, bits);
  else
    fillKernel<uint16_t><<<grid, kThreads, 0, stream>>>(static_cast<uint16_t*>(y), n, static_cast<uint16_t>(bits));
  BS_LAUNCH_CHECK("fillKernel");
}

void launchZero(DType dtype, void* y, int64_t n, cudaStream_t stream) { launchFillBits(dtypeSize(dtype), y, n, 0u, stream); }

void launchCopyStrided(DType dtype, const void* src, const Strides& srcStrides, void* dst, const Strides& dstStrides,
                       const StridedShape& shape, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  Strides strides[2] = {srcStrides, dstStrides};
  Layout layout = simplify(shape, strides, 2);
  // Move several elements per thread as one 16-, 8- or 4-byte word when the innermost dim is contiguous on both
  // sides, its length and every other stride are multiples of the word and both pointers are aligned to it: a
  // permutation that keeps the last dim (attention's head split and merge) then copies in 16-byte transactions.
  const int64_t width = dtypeSize(dtype);
  const int last = layout.rank - 1;
  int64_t word = width;
  if (layout.stride[0][last] == 1 && layout.stride[1][last] == 1) {
    for (int64_t bytes : {int64_t{16}, int64_t{8}, int64_t{4}}) {
      const int64_t k = bytes / width;
      if (k <= 1) break;
      bool ok = layout.shape[last] % k == 0 && reinterpret_cast<uintptr_t>(src) % bytes == 0 &&
                reinterpret_cast<uintptr_t>(dst) % bytes == 0;
      for (int d = 0; d < last && ok; ++d) ok = layout.stride[0][d] % k == 0 && layout.stride[1][d] % k == 0;
      if (ok) {
        word = bytes;
        break;
      }
    }
  }
  const int64_t k = word / width;
  if (k > 1) {
    layout.shape[last] /= k;
    for (int d = 0; d < last; ++d) {
      layout.stride[0][d] /= k;
      layout.stride[1][d] /= k;
    }
  }
  const int64_t words = n / k;
  auto run = [&](auto index) {
    switch (word) {
      case 16:
        copyStridedKernel<<<gridFor(words), kThreads, 0, stream>>>(static_cast<const uint4*>(src), static_cast<uint4*>(dst), words, index);
        break;
      case 8:
        copyStridedKernel<<<gridFor(words), kThreads, 0, stream>>>(static_cast<const uint2*>(src), static_cast<uint2*>(dst), words, index);
        break;
      case 4:
        copyStridedKernel<<<gridFor(words), kThreads, 0, stream>>>(static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), words, index);
        break;
      default:
        copyStridedKernel<<<gridFor(words), kThreads, 0, stream>>>(static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst), words, index);
    }
  };
  if (fits32(layout, 2, words)) run(makeIndex<uint32_t>(layout, 2));
  else run(makeIndex<int64_t>(layout, 2));
  BS_LAUNCH_CHECK("copyStridedKernel");
}

}  // namespace bs
