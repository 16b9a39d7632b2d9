// The transposing pack on AVX2 (this file is built with -mavx2): 8 x 8 tiles transposed in ymm registers.
#include <immintrin.h>

#include "pack.h"

namespace bsk {

void packTransposedAvx2(const float* lines, int64_t lineStride, int64_t rows, int64_t depth, int width, float* dst) {
  const int64_t fullRows = rows / 8 * 8;
  const int64_t fullDepth = depth / 8 * 8;
  for (int64_t i0 = 0; i0 < fullRows; i0 += 8) {
    const float* src = lines + i0 * lineStride;
    for (int64_t k0 = 0; k0 < fullDepth; k0 += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * lineStride + k0);
      // Interleave pairs, then quads, then halves: row i of the result is column i of the tile.
      __m256 t[8];
      for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
      }
      __m256 q[8];
      for (int i = 0; i < 8; i += 4) {
        q[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        q[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        q[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        q[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
      }
      float* out = dst + k0 * width + i0;
      for (int i = 0; i < 4; i++) {
        _mm256_storeu_ps(out + i * width, _mm256_permute2f128_ps(q[i], q[i + 4], 0x20));
        _mm256_storeu_ps(out + (i + 4) * width, _mm256_permute2f128_ps(q[i], q[i + 4], 0x31));
      }
    }
    for (int64_t k = fullDepth; k < depth; k++) {
      for (int i = 0; i < 8; i++) dst[k * width + i0 + i] = src[i * lineStride + k];
    }
  }
  for (int64_t i = fullRows; i < rows; i++) {
    const float* line = lines + i * lineStride;
    for (int64_t k = 0; k < depth; k++) dst[k * width + i] = line[k];
  }
}

}  // namespace bsk
