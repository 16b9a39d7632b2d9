// The activations of biasActivation (and of the block-sparse forward's fused epilogue, tc/tile_work.cuh) and
// their derivatives, in float32: one definition, so the fused and unfused paths compute the same values.
#pragma once

#include <type_traits>

#include "../ops.h"

namespace bs {

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluC = 0.044715f;

// The MUFU's base-2 exponential and reciprocal, flushing denormals: one instruction each, where ex2.approx.f32 and
// div.approx.f32 without .ftz (what exp2f-style intrinsics give without -ftz=true) wrap theirs in a denormal fix-up.
// For float16/bfloat16 results only: an input or output below float32's normal range reads as zero, far below
// their rounding.
__device__ __forceinline__ float ex2Ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float rcpFtz(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

constexpr float kLog2E = 1.4426950408889634f;

// The exponential: expf for float32 results; for float16/bfloat16 results (kFast) the MUFU's __expf, whose error
// (a few units of float32's last place) is far below their rounding.
template <bool kFast>
__device__ __forceinline__ float expOf(float x) {
  if constexpr (kFast) return __expf(x);
  else return expf(x);
}

// erf for float16/bfloat16 results: Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7) with the MUFU's
// reciprocal and exponential, a dozen instructions where erff takes about thirty: erf(x) = sign(x) (1 - p e) for the
// polynomial p and e = exp(-x^2), which erfFastParts returns apart: p e is erfc(|x|), which GELU's gate takes without
// the cancellation of 1 - p e, and GELU's derivative reads e again.
struct ErfParts {
  float p, e;
};
__device__ __forceinline__ ErfParts erfFastParts(float x) {
  const float a = fabsf(x);
  const float t = rcpFtz(fmaf(0.3275911f, a, 1.0f));
  const float p = t * fmaf(t, fmaf(t, fmaf(t, fmaf(t, 1.061405429f, -1.453152027f), 1.421413741f), -0.284496736f),
                           0.254829592f);
  return {p, ex2Ftz(a * -kLog2E * a)};
}

// GELU(tanh)'s gate 0.5 (1 + tanh(u)) at u = sqrt(2 / pi) (x + 0.044715 x^3), as the logistic 1 / (1 + exp(-2u)):
// no cancellation where tanh(u) is near -1 (0.5 (1 + tanhf(u)) loses every digit there, x <~ -4).
// kFast: the MUFU's exponential and reciprocal, with the constants folded: exp(-2u) = 2^(x (a0 + a1 x^2)) for
// a0 = -2 sqrt(2 / pi) log2(e), a1 = 0.044715 a0 (four float32 operations with x^2 and two MUFU ones, where the
// unfolded form took seven and the MUFU's denormal fix-ups). x2 is x * x, which the derivative reads again.
constexpr float kGeluTanhA0 = -2.0f * kSqrt2OverPi * kLog2E;
constexpr float kGeluTanhA1 = kGeluC * kGeluTanhA0;
__device__ __forceinline__ float geluTanhGateFast(float x, float x2) {
  return rcpFtz(1.0f + ex2Ftz(x * fmaf(kGeluTanhA1, x2, kGeluTanhA0)));
}
template <bool kFast>
__device__ __forceinline__ float geluTanhGate(float x) {
  if constexpr (kFast) {
    return geluTanhGateFast(x, x * x);
  } else {
    const float u = kSqrt2OverPi * fmaf(kGeluC * x, x * x, x);
    return 1.0f / (1.0f + expf(-2.0f * u));
  }
}

// GELU's gate, the normal CDF Phi(x) = 0.5 (1 + erf(x / sqrt 2)). float32: as 0.5 erfc(-x / sqrt 2), accurate in the
// negative tail where 1 + erf(x / sqrt 2) cancels (at x = -4.4 erff's last place is 0.7% of the gate). kFast: from
// erfFastParts' erfc(|x| / sqrt 2) = p e, Phi = 0.5 p e for x < 0 and 1 - 0.5 p e above: no cancellation in the
// negative tail either (1 + erf as 1 - p e there lost the gate's digits from x = -4, all of them below x = -5.4, where
// bfloat16 still holds x Phi(x)).
template <bool kFast>
__device__ __forceinline__ float geluGate(float x) {
  if constexpr (kFast) {
    const ErfParts parts = erfFastParts(x * kInvSqrt2);
    const float tail = 0.5f * parts.p * parts.e;
    return x < 0.0f ? tail : 1.0f - tail;
  } else {
    return 0.5f * erfcf(-x * kInvSqrt2);
  }
}

// kFast: the result is rounded to float16/bfloat16 (biasActivation in those dtypes, the tile kernels' fused
// epilogue), so the MUFU's exponential, reciprocal and erfFastParts stand in for the accurate float32 functions.
template <Activation kAct, bool kFast = false>
__device__ __forceinline__ float activate(float x) {
  if constexpr (kAct == Activation::Relu) return x > 0.0f ? x : (x != x ? x : 0.0f);
  else if constexpr (kAct == Activation::Gelu) return x * geluGate<kFast>(x);
  else return x * geluTanhGate<kFast>(x);
}

template <Activation kAct, bool kFast = false>
__device__ __forceinline__ float derivative(float x) {
  if constexpr (kAct == Activation::Relu) {
    // 1 at NaN, as torch's threshold_backward: the gradient is zeroed only where x <= 0.
    return x <= 0.0f ? 0.0f : 1.0f;
  } else if constexpr (kAct == Activation::Gelu) {
    if constexpr (kFast) {
      // Phi(x) + x phi(x) with one exponential: erfFastParts' exp(-(x / sqrt 2)^2) is exp(-x^2 / 2), phi's own. In the
      // tile kernels' fused backward this math is most of the epilogue's time at 64x64 blocks.
      const ErfParts parts = erfFastParts(x * kInvSqrt2);
      const float tail = 0.5f * parts.p * parts.e;  // the gate without cancellation, as geluGate
      return fmaf(x * kInvSqrt2Pi, parts.e, x < 0.0f ? tail : 1.0f - tail);
    } else {
      return geluGate<kFast>(x) + x * kInvSqrt2Pi * expOf<kFast>(-0.5f * x * x);
    }
  } else {
    // d/dx x s(x), s the gate: s + x s (1 - s) 2 du/dx, 2 du/dx = 2 sqrt(2 / pi) (1 + 3 0.044715 x^2).
    if constexpr (kFast) {
      // Folded (the tile kernels' fused backward spends most of its epilogue here at 64x64 blocks): eight float32
      // operations and two MUFU ones. x s (1 - s) as q - q s for q = x s.
      const float x2 = x * x;
      const float s = geluTanhGateFast(x, x2);
      const float q = x * s;
      return fmaf(fmaf(-q, s, q), fmaf(6.0f * kSqrt2OverPi * kGeluC, x2, 2.0f * kSqrt2OverPi), s);
    } else {
      const float s = geluTanhGate<kFast>(x);
      return s + x * s * (1.0f - s) * 2.0f * kSqrt2OverPi * fmaf(3.0f * kGeluC * x, x, 1.0f);
    }
  }
}

// GELU's limits where its formulas give infinity times zero: gelu(-inf) = -0 (the sign of the finite tail),
// gelu'(+inf) = 1 and gelu'(-inf) = 0, as the host backends give; NaN stays NaN. The passes (elementwise.cu,
// activation.cu) take these: they are memory-bound, so the compare and select cost nothing there. The tile kernels'
// fused epilogues call activate and derivative directly and leave an infinite pre-activation to IEEE arithmetic
// (NaN): in the fused backward the check made the whole FFN training step 9-10% slower on an H200.
template <Activation kAct, bool kFast = false>
__device__ __forceinline__ float activateWithLimits(float x) {
  if constexpr (kAct == Activation::Relu) return activate<kAct, kFast>(x);
  else return x == -INFINITY ? -0.0f : activate<kAct, kFast>(x);
}

template <Activation kAct, bool kFast = false>
__device__ __forceinline__ float derivativeWithLimits(float x) {
  if constexpr (kAct == Activation::Relu) return derivative<kAct, kFast>(x);
  else return fabsf(x) == INFINITY ? (x > 0.0f ? 1.0f : 0.0f) : derivative<kAct, kFast>(x);
}

// The activation chosen at run time (uniform across a launch), for epilogues shared by every activation; with kLimits,
// the passes' limits above, for an epilogue that must write what the activation pass would (the decoding kernel's,
// tc/bsr_decode.cu).
template <bool kFast = false, bool kLimits = false>
__device__ __forceinline__ float activateAs(Activation activation, float x) {
  const auto as = [x](auto act) {
    constexpr Activation kAct = decltype(act)::value;
    if constexpr (kLimits) return activateWithLimits<kAct, kFast>(x);
    else return activate<kAct, kFast>(x);
  };
  switch (activation) {
    case Activation::Relu: return as(std::integral_constant<Activation, Activation::Relu>{});
    case Activation::Gelu: return as(std::integral_constant<Activation, Activation::Gelu>{});
    default: return as(std::integral_constant<Activation, Activation::GeluTanh>{});
  }
}

}  // namespace bs
