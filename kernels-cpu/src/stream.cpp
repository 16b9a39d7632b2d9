#include "stream.h"

#include "clones.h"

namespace bsk {

// 64 partial sums (four vector registers), so the loop vectorizes without reassociating
// floating-point adds and no one register's add chain bounds a stream from cache.
BSK_CLONES float dot(const float* a, const float* b, int64_t n) {
  float lanes[64] = {};
  int64_t k = 0;
  for (; k + 64 <= n; k += 64) {
    for (int l = 0; l < 64; l++) lanes[l] += a[k + l] * b[k + l];
  }
  for (; k + 16 <= n; k += 16) {
    for (int l = 0; l < 16; l++) lanes[l] += a[k + l] * b[k + l];
  }
  float sum = 0.0f;
  for (; k < n; k++) sum += a[k] * b[k];
  for (int l = 0; l < 64; l++) sum += lanes[l];
  return sum;
}

BSK_CLONES void axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t k = 0; k < n; k++) y[k] += alpha * x[k];
}

}  // namespace bsk
