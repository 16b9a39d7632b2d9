// AVX2 + FMA micro-kernel, 6x16: twelve ymm accumulators (this file is built with -mavx2 -mfma).
#include <immintrin.h>

#include "microkernel.h"

namespace bsk {
namespace {

constexpr int MR = 6;
constexpr int NR = 16;

void runAvx2(const Tile& tile) {
  __m256 acc[MR][2];
  for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t s = 0; s < tile.segmentCount; s++) {
    const float* a = tile.segments[s].a;
    const float* b = tile.segments[s].b;
    for (int64_t k = tile.segments[s].k; k > 0; k--, a += MR, b += NR) {
      const __m256 b0 = _mm256_loadu_ps(b);
      const __m256 b1 = _mm256_loadu_ps(b + 8);
      for (int i = 0; i < MR; i++) {
        const __m256 ai = _mm256_broadcast_ss(a + i);
        acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
        acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
      }
    }
  }
  if (tile.rows == MR && tile.cols == NR) {
    for (int i = 0; i < MR; i++) {
      float* c = tile.c + i * tile.ldc;
      if (tile.accumulate) {
        acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_loadu_ps(c));
        acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_loadu_ps(c + 8));
      }
      _mm256_storeu_ps(c, acc[i][0]);
      _mm256_storeu_ps(c + 8, acc[i][1]);
    }
    return;
  }
  alignas(32) float out[MR][NR];
  for (int i = 0; i < MR; i++) {
    _mm256_store_ps(out[i], acc[i][0]);
    _mm256_store_ps(out[i] + 8, acc[i][1]);
  }
  for (int i = 0; i < tile.rows; i++) {
    float* c = tile.c + i * tile.ldc;
    for (int j = 0; j < tile.cols; j++) c[j] = tile.accumulate ? c[j] + out[i][j] : out[i][j];
  }
}

}  // namespace

MicroKernel avx2Kernel() { return {"avx2", MR, NR, runAvx2}; }

}  // namespace bsk
