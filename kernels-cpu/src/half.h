// float16 / bfloat16 storage to and from float32, for the kernels that compute in float32 on half tensors: the same
// bits as @blocksparse/format's conversions (every half widens exactly, a NaN keeps its payload, signaling or quiet;
// float32 rounds to nearest, ties to even, a NaN to a quiet NaN of its top payload bits), in loops the compiler
// vectorizes, spread over the thread pool in fixed chunks.
#pragma once
#include <cstdint>

namespace bsk {

// out[i] = the float32 value of half bits[i] (IEEE binary16, or bfloat16 when `bfloat`), n elements.
void widenHalf(const uint16_t* bits, int64_t n, bool bfloat, float* out);

// out[i] = the half bits of values[i], rounded to nearest, ties to even (IEEE binary16, or bfloat16 when `bfloat`).
void roundToHalf(const float* values, int64_t n, bool bfloat, uint16_t* out);

}  // namespace bsk
