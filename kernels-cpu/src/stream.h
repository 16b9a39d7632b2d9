// Vector loops for the few-row (decode) paths: they stream each weight once, so memory, not
// arithmetic, bounds them. Built for several x86-64 levels and picked at load time where the
// toolchain supports it (target_clones); plain loops elsewhere.
#pragma once
#include <cstdint>

namespace bsk {

// sum_k a[k] b[k]
float dot(const float* a, const float* b, int64_t n);
// dot with b as float16 (bfloat16 when `bfloat`) bits widened in registers: the same lanes and the same bits as dot of
// the widened values.
float dotHalf(const float* a, const uint16_t* b, int64_t n, bool bfloat);
// y[k] += alpha x[k]
void axpy(float alpha, const float* x, float* y, int64_t n);

}  // namespace bsk
