// Outputs whose float32 sums overflowed, recomputed as the js backend computes them.
//
// The micro-kernels and streaming loops sum in float32, split over vector lanes, register tiles and
// K slices. When the products overflow float32 (3e38 x 1e38), one partial sum becomes +inf and another
// -inf, and their sum is NaN, where the js backend sums every output in float64 (a product of two
// float32 values is exact there and no sum of them overflows) and rounds once: +-inf, or a finite
// value when the terms cancel. A float32 partial sum can also overflow to inf on its way to a finite
// total. So after a product, each output row it wrote is checked once (a vectorized OR over the
// floats' exponents, no branch per element); only an infinite or NaN output is recomputed, in float64
// in the js backend's order of roundings, which gives NaN where js gives NaN (an inf - inf or a NaN
// among the inputs) and the js sign of an overflow.
#pragma once
#include <cstdint>
#include <cstring>

namespace bsk {

// Whether any of the n floats at p is an infinity or a NaN (all exponent bits set).
inline bool anyNonFinite(const float* p, int64_t n) {
  uint32_t hit = 0;
  for (int64_t i = 0; i < n; i++) {
    uint32_t bits;
    std::memcpy(&bits, p + i, sizeof(bits));
    hit |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return hit != 0;
}

inline bool isNonFinite(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return (bits & 0x7f800000u) == 0x7f800000u;
}

// The js backend's float32 result of sum_{p < k} term(p) (term(p) a float64 product of two floats):
// float64 sums of `slice` terms at a time (slice >= k: one sum), the first plus `add` (a float32 bias,
// 0 without) rounded to the float32 output, each later one added to it in float64 and rounded.
template <typename Term>
inline float jsSum(int64_t k, int64_t slice, double add, Term term) {
  float out = static_cast<float>(add);
  for (int64_t p0 = 0; p0 < k; p0 += slice) {
    const int64_t p1 = k - p0 < slice ? k : p0 + slice;
    double sum = 0.0;
    for (int64_t p = p0; p < p1; p++) sum += term(p);
    out = static_cast<float>((p0 == 0 ? add : static_cast<double>(out)) + sum);
  }
  return out;
}

}  // namespace bsk
