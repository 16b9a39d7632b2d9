// The activations of biasActivation (and of the block-sparse forward's fused epilogue, tc/tile_work.cuh) and
// their derivatives, in float32: one definition, so the fused and unfused paths compute the same values.
#pragma once

#include "../ops.h"

namespace bs {

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluC = 0.044715f;

template <Activation kAct>
__device__ __forceinline__ float activate(float x) {
  if constexpr (kAct == Activation::Relu) return x > 0.0f ? x : (x != x ? x : 0.0f);
  else if constexpr (kAct == Activation::Gelu) return 0.5f * x * (1.0f + erff(x * kInvSqrt2));
  else return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + kGeluC * x * x * x)));
}

template <Activation kAct>
__device__ __forceinline__ float derivative(float x) {
  if constexpr (kAct == Activation::Relu) {
    return x > 0.0f ? 1.0f : 0.0f;
  } else if constexpr (kAct == Activation::Gelu) {
    return 0.5f * (1.0f + erff(x * kInvSqrt2)) + x * kInvSqrt2Pi * expf(-0.5f * x * x);
  } else {
    const float t = tanhf(kSqrt2OverPi * (x + kGeluC * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * kGeluC * x * x);
  }
}

// The activation chosen at run time (uniform across a launch): for epilogues shared by every activation.
__device__ __forceinline__ float activateAs(Activation activation, float x) {
  switch (activation) {
    case Activation::Relu: return activate<Activation::Relu>(x);
    case Activation::Gelu: return activate<Activation::Gelu>(x);
    default: return activate<Activation::GeluTanh>(x);
  }
}

}  // namespace bs
