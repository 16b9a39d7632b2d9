// e^x in float64 for the attention rows: straight-line code the compiler vectorizes, within about an ulp.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

namespace bsk {

// 2^k for an integer k in [-1022, 1023], from its exponent bits.
inline double pow2Double(int64_t k) {
  const int64_t bits = (k + 1023) << 52;
  double value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// e^x in float64 within about an ulp, in straight-line code the compiler vectorizes (std::exp, a libm call per score,
// took most of a softmax row's time): x = n ln 2 + r with |r| <= ln 2 / 2 and ln 2 in two parts (fdlibm's, the high
// part's low bits zero, so n ln2hi is exact), e^r by its degree-13 Taylor polynomial (truncation below 5e-18), 2^n
// applied in two halves so that results in the subnormal range underflow gradually. 0 below -746, inf above 709.79,
// NaN stays NaN.
inline double expDouble(double x) {
  const double clamped = std::min(std::max(x, -746.0), 710.0);
  // Round to nearest by the 1.5 * 2^52 trick: t's low mantissa bits hold n itself (|n| < 2^51).
  const double shifter = 6755399441055744.0;
  const double t = clamped * 1.4426950408889634074 + shifter;
  int64_t tBits, shifterBits;
  std::memcpy(&tBits, &t, sizeof tBits);
  std::memcpy(&shifterBits, &shifter, sizeof shifterBits);
  const int64_t n = tBits - shifterBits;
  const double fn = t - shifter;
  const double r = (clamped - fn * 6.93147180369123816490e-01) - fn * 1.90821492927058770002e-10;
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const int64_t half = n >> 1;
  const double value = (p * pow2Double(half)) * pow2Double(n - half);
  return x != x ? x : value;
}

}  // namespace bsk
