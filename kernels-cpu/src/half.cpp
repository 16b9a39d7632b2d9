#include "half.h"

#include <algorithm>
#include <cstring>

#include "clones.h"
#include "threads.h"

namespace bsk {
namespace {

// Elements per work item (64 KiB of halves): a 4096 x 4096 weight is 512 items; fewer than two items' worth runs on
// the calling thread alone, where handing out work costs more than converting.
constexpr int64_t kChunk = 32768;

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

// Straight-line code (selects, no branch) so that each loop below vectorizes.
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

// The selects below are on values computed on every path, so that the compiler keeps them straight-line code and
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

inline uint16_t bfloat16FromFloat32Bits(uint32_t bits) {
  const bool nan = (bits & 0x7f800000u) == 0x7f800000u && (bits & 0x7fffffu) != 0;
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(nan ? ((bits >> 16) | 0x40u) : rounded);
}

BSK_CLONES void widenRun(const uint16_t* __restrict bits, int64_t n, bool bfloat, float* __restrict out) {
  uint32_t* words = reinterpret_cast<uint32_t*>(out);
  if (bfloat) {
    for (int64_t i = 0; i < n; i++) words[i] = static_cast<uint32_t>(bits[i]) << 16;
  } else {
    for (int64_t i = 0; i < n; i++) words[i] = float16ToFloat32Bits(bits[i]);
  }
}

BSK_CLONES void roundRun(const float* __restrict values, int64_t n, bool bfloat, uint16_t* __restrict out) {
  const uint32_t* words = reinterpret_cast<const uint32_t*>(values);
  if (bfloat) {
    for (int64_t i = 0; i < n; i++) out[i] = bfloat16FromFloat32Bits(words[i]);
  } else {
    for (int64_t i = 0; i < n; i++) out[i] = static_cast<uint16_t>(float16FromFloat32Bits(words[i]));
  }
}

template <typename Run>
void inChunks(int64_t n, Run run) {
  if (n < 2 * kChunk) {
    run(0, n);
    return;
  }
  parallelFor((n + kChunk - 1) / kChunk, [&](int64_t chunk) {
    const int64_t begin = chunk * kChunk;
    run(begin, std::min(kChunk, n - begin));
  });
}

}  // namespace

void widenHalf(const uint16_t* bits, int64_t n, bool bfloat, float* out) {
  inChunks(n, [&](int64_t begin, int64_t count) { widenRun(bits + begin, count, bfloat, out + begin); });
}

void roundToHalf(const float* values, int64_t n, bool bfloat, uint16_t* out) {
  inChunks(n, [&](int64_t begin, int64_t count) { roundRun(values + begin, count, bfloat, out + begin); });
}

}  // namespace bsk
