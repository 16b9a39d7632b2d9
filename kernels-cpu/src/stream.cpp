#include "stream.h"

#include "clones.h"
#include "half.h"

namespace bsk {

// 64 partial sums (four vector registers), so the loop vectorizes without reassociating
// floating-point adds and no one register's add chain bounds a stream from cache. `load(k)` is b's element k as float32.
template <typename Load>
[[gnu::always_inline]] inline float dotOf(const float* a, Load load, int64_t n) {
  float lanes[64] = {};
  int64_t k = 0;
  for (; k + 64 <= n; k += 64) {
    for (int l = 0; l < 64; l++) lanes[l] += a[k + l] * load(k + l);
  }
  for (; k + 16 <= n; k += 16) {
    for (int l = 0; l < 16; l++) lanes[l] += a[k + l] * load(k + l);
  }
  float sum = 0.0f;
  for (; k < n; k++) sum += a[k] * load(k);
  for (int l = 0; l < 64; l++) sum += lanes[l];
  return sum;
}

BSK_CLONES float dot(const float* a, const float* b, int64_t n) {
  return dotOf(a, [b](int64_t k) { return b[k]; }, n);
}

BSK_CLONES float dotHalf(const float* a, const uint16_t* b, int64_t n, bool bfloat) {
  if (bfloat) return dotOf(a, [b](int64_t k) { return floatOf(static_cast<uint32_t>(b[k]) << 16); }, n);
  return dotOf(a, [b](int64_t k) { return floatOf(float16ToFloat32Bits(b[k])); }, n);
}

BSK_CLONES void axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t k = 0; k < n; k++) y[k] += alpha * x[k];
}

}  // namespace bsk
