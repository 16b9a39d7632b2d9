// Vector loops for the few-row (decode) paths: they stream each weight once, so memory, not
// arithmetic, bounds them. Built for several x86-64 levels and picked at load time where the
// toolchain supports it (target_clones); plain loops elsewhere.
#pragma once
#include <cstdint>

namespace bsk {

// sum_k a[k] b[k]
float dot(const float* a, const float* b, int64_t n);
// y[k] += alpha x[k]
void axpy(float alpha, const float* x, float* y, int64_t n);

}  // namespace bsk
