// Operation codes of the generic elementwise and reduction kernels; the numbering is part of the
// JS interface (packages/backend-cuda/src/native.ts mirrors it; its test/native_interface.test.ts checks they agree).
#pragma once

#include <cstdint>

namespace bs {

enum class UnaryOp : int32_t { Neg = 0, Abs, Exp, Log, Sqrt, Rsqrt, Tanh, Sigmoid, Relu, Square, Gelu, GeluTanh, Count };

// GeluBackward / GeluTanhBackward take a = dy, b = x.
enum class BinaryOp : int32_t {
  Add = 0, Sub, Mul, Div, Maximum, Minimum, Pow,
  Equal, NotEqual, Less, LessEqual, Greater, GreaterEqual,
  GeluBackward, GeluTanhBackward,
  Count
};

enum class ReduceOp : int32_t { Sum = 0, Mean, Max, Min, Argmax, Count };

// The activations of biasActivation / biasActivationBackward.
enum class Activation : int32_t { Relu = 0, Gelu, GeluTanh, Count };

constexpr int kMaxRank = 8;

// The iteration shape of a strided or broadcast elementwise operation.
struct StridedShape {
  int32_t rank;
  int64_t shape[kMaxRank];
};

// One operand's element strides over that shape (0 along broadcast dims).
struct Strides {
  int64_t stride[kMaxRank];
};

}  // namespace bs
