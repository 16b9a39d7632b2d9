// float16 / bfloat16 storage to and from float32, for the kernels that compute in float32 on half tensors: the same
// bits as @blocksparse/format's conversions (every half widens exactly, a NaN keeps its payload, signaling or quiet;
// float32 rounds to nearest, ties to even, a NaN to a quiet NaN of its top payload bits), in loops the compiler
// vectorizes, spread over the thread pool in fixed chunks.
#pragma once
#include <cstdint>
#include <cstring>

namespace bsk {

// A float32's bits and back.
inline uint32_t bitsOf(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

inline float floatOf(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// The float32 bits of float16 bits, exact. Straight-line code (selects, no branch), so that loops over it vectorize.
[[gnu::always_inline]] inline uint32_t float16ToFloat32Bits(uint32_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  const uint32_t normal = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  const uint32_t special = sign | 0x7f800000u | (mantissa << 13);
  // A subnormal half is mantissa x 2^-24: exact in float32 (a normal float32 from 2^-24 up), zero for a zero mantissa.
  const uint32_t subnormal = sign | bitsOf(static_cast<float>(static_cast<int32_t>(mantissa)) * 5.9604644775390625e-8f);
  return exponent == 0x1fu ? special : exponent == 0 ? subnormal : normal;
}

// The float16 bits of float32 bits, rounded to nearest, ties to even. The selects below are on values computed on every path, so that the compiler keeps them straight-line code and
// vectorizes the loop (an integer shift by a per-element count for the subnormal halves had turned it into branches).
[[gnu::always_inline]] inline uint32_t float16FromFloat32Bits(uint32_t bits) {
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const int32_t exponent = static_cast<int32_t>((bits >> 23) & 0xffu);
  const uint32_t mantissa = bits & 0x7fffffu;
  const uint32_t nanOrInf = mantissa == 0 ? 0x7c00u : (0x7e00u | (mantissa >> 13));
  const int32_t unbiased = exponent - 127;
  // A normal half: the top 10 mantissa bits, rounded on the 13 below (a carry runs into the exponent, up to infinity).
  const uint32_t normalHalf = (static_cast<uint32_t>(unbiased + 15) << 10) | (mantissa >> 13);
  const uint32_t normalRest = mantissa & 0x1fffu;
  const uint32_t roundUp = (static_cast<uint32_t>(normalRest > 0x1000u) | (static_cast<uint32_t>(normalRest == 0x1000u) & normalHalf)) & 1u;
  const uint32_t normal = normalHalf + roundUp;
  // Below 2^-14 the half is |x| 2^24 rounded to an integer, ties to even: adding 2^23 rounds it so (the float32 sum's
  // ulp is 1) and leaves the integer in the sum's low mantissa bits; 0 below 2^-25, 0x400 (2^-14, normal) at the top.
  const uint32_t subnormal = bitsOf(floatOf(bits & 0x7fffffffu) * 16777216.0f + 8388608.0f) - 0x4b000000u;
  uint32_t magnitude = unbiased < -14 ? subnormal : normal;
  magnitude = unbiased > 15 ? 0x7c00u : magnitude;
  magnitude = exponent == 0xff ? nanOrInf : magnitude;
  return sign | magnitude;
}

// The bfloat16 bits of float32 bits, rounded to nearest, ties to even; a NaN stays a quiet NaN.
inline uint16_t bfloat16FromFloat32Bits(uint32_t bits) {
  const bool nan = (bits & 0x7f800000u) == 0x7f800000u && (bits & 0x7fffffu) != 0;
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(nan ? ((bits >> 16) | 0x40u) : rounded);
}

// out[i] = the float32 value of half bits[i] (IEEE binary16, or bfloat16 when `bfloat`), n elements.
void widenHalf(const uint16_t* bits, int64_t n, bool bfloat, float* out);

// widenHalf on the calling thread alone: what a pool's item runs.
void widenHalfSerial(const uint16_t* bits, int64_t n, bool bfloat, float* out);

// out[i] = the half bits of values[i], rounded to nearest, ties to even (IEEE binary16, or bfloat16 when `bfloat`).
void roundToHalf(const float* values, int64_t n, bool bfloat, uint16_t* out);

}  // namespace bsk
