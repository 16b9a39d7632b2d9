// Elementwise kernels: unary, broadcast binary and comparisons, where, cast, fill and strided copy.
#include <cstdint>
#include <type_traits>

#include "../kernels.h"
#include "dtype.cuh"

namespace bs {

namespace {

constexpr float kNaN = __builtin_nanf("");

__device__ __forceinline__ float geluErf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

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
    case UnaryOp::Gelu: return geluErf(x);
    case UnaryOp::GeluTanh: {
      float inner = 0.7978845608028654f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.0f + tanhf(inner));
    }
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
    case BinaryOp::GeluBackward: {
      // d/dx x Phi(x) = Phi(x) + x phi(x)
      float cdf = 0.5f * (1.0f + erff(b * 0.70710678118654752f));
      float pdf = 0.3989422804014327f * expf(-0.5f * b * b);
      return a * (cdf + b * pdf);
    }
    case BinaryOp::GeluTanhBackward: {
      float inner = 0.7978845608028654f * (b + 0.044715f * b * b * b);
      float t = tanhf(inner);
      float dInner = 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * b * b);
      return a * (0.5f * (1.0f + t) + 0.5f * b * (1.0f - t * t) * dInner);
    }
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
struct OperandIndex {
  int32_t rank;
  int64_t shape[kMaxRank];
  int64_t stride[3][kMaxRank];

  template <int Operands>
  __device__ __forceinline__ void offsets(int64_t i, int64_t* out) const {
#pragma unroll
    for (int k = 0; k < Operands; ++k) out[k] = 0;
    for (int d = rank - 1; d >= 0; --d) {
      int64_t coord = i % shape[d];
      i /= shape[d];
#pragma unroll
      for (int k = 0; k < Operands; ++k) out[k] += coord * stride[k][d];
    }
  }
};

OperandIndex makeIndex(const StridedShape& shape, const Strides* strides, int operands) {
  OperandIndex index{};
  index.rank = shape.rank;
  for (int d = 0; d < shape.rank; ++d) {
    index.shape[d] = shape.shape[d];
    for (int k = 0; k < operands; ++k) index.stride[k][d] = strides[k].stride[d];
  }
  return index;
}

#define BS_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

template <typename T>
__global__ void unaryKernel(UnaryOp op, const T* __restrict__ x, T* __restrict__ y, int64_t n) {
  BS_GRID_STRIDE(i, n) {
    if constexpr (std::is_same<T, int32_t>::value) y[i] = applyUnaryInt(op, x[i]);
    else y[i] = fromFloat<T>(applyUnary(op, toFloat<T>(x[i])));
  }
}

// TOut is T, or int32 for comparisons.
template <typename T, typename TOut>
__global__ void binaryKernel(BinaryOp op, const T* __restrict__ a, const T* __restrict__ b, TOut* __restrict__ y,
                             int64_t n, OperandIndex index, bool contiguous) {
  BS_GRID_STRIDE(i, n) {
    int64_t off[2] = {i, i};
    if (!contiguous) index.offsets<2>(i, off);
    if constexpr (std::is_same<T, int32_t>::value) {
      y[i] = applyBinaryInt(op, a[off[0]], b[off[1]]);
    } else {
      float r = applyBinary(op, toFloat<T>(a[off[0]]), toFloat<T>(b[off[1]]));
      if constexpr (std::is_same<TOut, int32_t>::value) y[i] = r != 0.0f;
      else y[i] = fromFloat<TOut>(r);
    }
  }
}

template <typename T>
__global__ void whereKernel(const int32_t* __restrict__ cond, const T* __restrict__ a, const T* __restrict__ b,
                            T* __restrict__ y, int64_t n, OperandIndex index) {
  BS_GRID_STRIDE(i, n) {
    int64_t off[3];
    index.offsets<3>(i, off);
    y[i] = cond[off[0]] != 0 ? a[off[1]] : b[off[2]];
  }
}

template <typename TIn, typename TOut>
__global__ void castKernel(const TIn* __restrict__ x, TOut* __restrict__ y, int64_t n) {
  BS_GRID_STRIDE(i, n) {
    if constexpr (std::is_same<TIn, int32_t>::value && std::is_same<TOut, int32_t>::value) y[i] = x[i];
    else if constexpr (std::is_same<TIn, int32_t>::value) y[i] = fromFloat<TOut>(static_cast<float>(x[i]));
    else y[i] = fromFloat<TOut>(toFloat<TIn>(x[i]));
  }
}

template <typename T>
__global__ void fillKernel(T* __restrict__ y, int64_t n, T value) {
  BS_GRID_STRIDE(i, n) y[i] = value;
}

// A copy moves elements as unsigned integers of their width.
template <typename T>
__global__ void copyStridedKernel(const T* __restrict__ src, T* __restrict__ dst, int64_t n, OperandIndex index) {
  BS_GRID_STRIDE(i, n) {
    int64_t off[2];
    index.offsets<2>(i, off);
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

// y = op(a, b) with a contiguous [rows, cols] and b either contiguous too (rowBroadcast false) or one row of
// `cols` repeated on every row (a bias); cols % kPack == 0 when b is broadcast.
template <typename T, typename TOut>
__global__ void binaryPackedKernel(BinaryOp op, const T* __restrict__ a, const T* __restrict__ b, TOut* __restrict__ y,
                                   int64_t n, int64_t cols, bool rowBroadcast, bool bIsA) {
  const int64_t packs = n / kPack;
  BS_GRID_STRIDE(p, packs) {
    const Pack<T> pa = reinterpret_cast<const Pack<T>*>(a)[p];
    const int64_t bPack = rowBroadcast ? (p * kPack % cols) / kPack : p;
    const Pack<T> pb = reinterpret_cast<const Pack<T>*>(b)[bPack];
    Pack<TOut> r;
#pragma unroll
    for (int k = 0; k < kPack; ++k) {
      // bIsA: the broadcast operand is the left one (b holds a's row, a holds the full tensor).
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
    const int64_t jb = rowBroadcast ? j % cols : j;
    const float left = toFloat<T>(bIsA ? b[jb] : a[j]);
    const float right = toFloat<T>(bIsA ? a[j] : b[jb]);
    const float value = applyBinary(op, left, right);
    if constexpr (std::is_same<TOut, int32_t>::value) y[j] = value != 0.0f;
    else y[j] = fromFloat<TOut>(value);
  }
}

template <typename TIn, typename TOut>
__global__ void castPackedKernel(const TIn* __restrict__ x, TOut* __restrict__ y, int64_t n) {
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

void launchBinary(BinaryOp op, DType dtype, const void* a, const Strides& aStrides, const void* b,
                  const Strides& bStrides, void* y, const StridedShape& shape, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  Strides strides[2] = {aStrides, bStrides};
  OperandIndex index = makeIndex(shape, strides, 2);
  // Same-shape contiguous operands skip the index arithmetic.
  bool contiguous = true;
  int64_t expected = 1;
  for (int d = shape.rank - 1; d >= 0; --d) {
    if (shape.shape[d] != 1 && (aStrides.stride[d] != expected || bStrides.stride[d] != expected)) contiguous = false;
    expected *= shape.shape[d];
  }
  bool comparison = op >= BinaryOp::Equal && op <= BinaryOp::GreaterEqual;
  // Packed paths: same-shape contiguous operands, or a contiguous [rows, cols] operand with one row of the
  // other repeated on every row (a bias add, its gradient's scaling...).
  const bool aligned = packAligned(a) && packAligned(b) && packAligned(y);
  const bool bRow = shape.rank == 2 && aStrides.stride[0] == shape.shape[1] && aStrides.stride[1] == 1 &&
                    bStrides.stride[0] == 0 && bStrides.stride[1] == 1 && shape.shape[1] % kPack == 0;
  const bool aRow = shape.rank == 2 && bStrides.stride[0] == shape.shape[1] && bStrides.stride[1] == 1 &&
                    aStrides.stride[0] == 0 && aStrides.stride[1] == 1 && shape.shape[1] % kPack == 0;
  if (dtype != DType::Int32 && aligned && (contiguous || bRow || aRow)) {
    const int64_t cols = contiguous ? n : shape.shape[1];
    // With aRow the broadcast row is a: pass the full tensor first and flag the swap.
    const void* full = aRow ? b : a;
    const void* row = aRow ? a : b;
    if (comparison) {
      BS_DISPATCH_FLOAT(dtype, T, binaryPackedKernel<T, int32_t><<<packGrid(n / kPack), kThreads, 0, stream>>>(
                                      op, static_cast<const T*>(full), static_cast<const T*>(row),
                                      static_cast<int32_t*>(y), n, cols, !contiguous, aRow));
    } else {
      BS_DISPATCH_FLOAT(dtype, T, binaryPackedKernel<T, T><<<packGrid(n / kPack), kThreads, 0, stream>>>(
                                      op, static_cast<const T*>(full), static_cast<const T*>(row), static_cast<T*>(y),
                                      n, cols, !contiguous, aRow));
    }
    BS_LAUNCH_CHECK("binaryKernel");
    return;
  }
  if (dtype == DType::Int32) {
    binaryKernel<int32_t, int32_t><<<gridFor(n), kThreads, 0, stream>>>(
        op, static_cast<const int32_t*>(a), static_cast<const int32_t*>(b), static_cast<int32_t*>(y), n, index,
        contiguous);
  } else if (comparison) {
    BS_DISPATCH_FLOAT(dtype, T, binaryKernel<T, int32_t><<<gridFor(n), kThreads, 0, stream>>>(
                                    op, static_cast<const T*>(a), static_cast<const T*>(b), static_cast<int32_t*>(y), n,
                                    index, contiguous));
  } else {
    BS_DISPATCH_FLOAT(dtype, T, binaryKernel<T, T><<<gridFor(n), kThreads, 0, stream>>>(
                                    op, static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(y), n,
                                    index, contiguous));
  }
  BS_LAUNCH_CHECK("binaryKernel");
}

void launchWhere(DType dtype, const int32_t* cond, const Strides& condStrides, const void* a, const Strides& aStrides,
                 const void* b, const Strides& bStrides, void* y, const StridedShape& shape, int64_t n,
                 cudaStream_t stream) {
  if (n == 0) return;
  Strides strides[3] = {condStrides, aStrides, bStrides};
  OperandIndex index = makeIndex(shape, strides, 3);
  switch (dtypeSize(dtype)) {
    case 4:
      whereKernel<uint32_t><<<gridFor(n), kThreads, 0, stream>>>(cond, static_cast<const uint32_t*>(a),
                                                                 static_cast<const uint32_t*>(b),
                                                                 static_cast<uint32_t*>(y), n, index);
      break;
    default:
      whereKernel<uint16_t><<<gridFor(n), kThreads, 0, stream>>>(cond, static_cast<const uint16_t*>(a),
                                                                 static_cast<const uint16_t*>(b),
                                                                 static_cast<uint16_t*>(y), n, index);
  }
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
  if (elementSize == 4)
    fillKernel<uint32_t><<<gridFor(n), kThreads, 0, stream>>>(static_cast<uint32_t*>(y), n, bits);
  else
    fillKernel<uint16_t><<<gridFor(n), kThreads, 0, stream>>>(static_cast<uint16_t*>(y), n, static_cast<uint16_t>(bits));
  BS_LAUNCH_CHECK("fillKernel");
}

void launchZero(DType dtype, void* y, int64_t n, cudaStream_t stream) { launchFillBits(dtypeSize(dtype), y, n, 0u, stream); }

void launchCopyStrided(DType dtype, const void* src, const Strides& srcStrides, void* dst, const Strides& dstStrides,
                       const StridedShape& shape, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  Strides strides[2] = {srcStrides, dstStrides};
  OperandIndex index = makeIndex(shape, strides, 2);
  if (dtypeSize(dtype) == 4)
    copyStridedKernel<uint32_t><<<gridFor(n), kThreads, 0, stream>>>(static_cast<const uint32_t*>(src),
                                                                     static_cast<uint32_t*>(dst), n, index);
  else
    copyStridedKernel<uint16_t><<<gridFor(n), kThreads, 0, stream>>>(static_cast<const uint16_t*>(src),
                                                                     static_cast<uint16_t*>(dst), n, index);
  BS_LAUNCH_CHECK("copyStridedKernel");
}

}  // namespace bs
