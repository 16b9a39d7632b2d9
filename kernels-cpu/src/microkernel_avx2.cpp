// AVX2 + FMA micro-kernel, 6x16: twelve ymm accumulators (this file is built with -mavx2 -mfma).
#include <immintrin.h>

#include <algorithm>

#include "microkernel.h"
#include "pack.h"

namespace bsk {
namespace {

constexpr int MR = 6;
constexpr int NR = 16;

void runAvx2(const Tile& tile) {
  __m256 acc[MR][2];
  for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  forEachStep<MR, NR>(tile, [&](const float* a, const float* b) {
    const __m256 b0 = _mm256_loadu_ps(b);
    const __m256 b1 = _mm256_loadu_ps(b + 8);
    for (int i = 0; i < MR; i++) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
  });
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

// Masks for the first n of 8 lanes (n in [0, 8]).
__m256i firstLanes(int64_t count) {
  const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(count, 8))), index);
}

// kDotLanes = 16 lanes as two ymm halves.
void blockDotAvx2(const float* w, int64_t R, int64_t C, const float* x, int64_t ldx, int64_t tokens, float* lanes) {
  forTokenGroups(tokens, [&](auto group, int64_t t0) {
    constexpr int T = decltype(group)::value;
    const float* xs = x + t0 * ldx;
    float* out = lanes + t0 * kDotLanes;
    const int64_t full = C / 8 * 8;
    const __m256i tail = firstLanes(C - full);
    // Full 8-wide chunks alternate between the two halves; the tail lands in the half that comes next.
    const int tailHalf = static_cast<int>((full / 8) % 2);
    for (int64_t r = 0; r < R; r++) {
      const float* row = w + r * C;
      __m256 acc[T][2];
      for (int t = 0; t < T; t++) {
        acc[t][0] = _mm256_loadu_ps(out + (r * tokens + t) * kDotLanes);
        acc[t][1] = _mm256_loadu_ps(out + (r * tokens + t) * kDotLanes + 8);
      }
      int64_t c = 0;
      for (; c + 16 <= full; c += 16) {
        const __m256 w0 = _mm256_loadu_ps(row + c);
        const __m256 w1 = _mm256_loadu_ps(row + c + 8);
        for (int t = 0; t < T; t++) {
          acc[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xs + t * ldx + c), acc[t][0]);
          acc[t][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xs + t * ldx + c + 8), acc[t][1]);
        }
      }
      if (c < full) {
        const __m256 w0 = _mm256_loadu_ps(row + c);
        for (int t = 0; t < T; t++) acc[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xs + t * ldx + c), acc[t][0]);
      }
      if (full < C) {
        const __m256 wv = _mm256_maskload_ps(row + full, tail);
        for (int t = 0; t < T; t++) {
          acc[t][tailHalf] = _mm256_fmadd_ps(wv, _mm256_maskload_ps(xs + t * ldx + full, tail), acc[t][tailHalf]);
        }
      }
      for (int t = 0; t < T; t++) {
        _mm256_storeu_ps(out + (r * tokens + t) * kDotLanes, acc[t][0]);
        _mm256_storeu_ps(out + (r * tokens + t) * kDotLanes + 8, acc[t][1]);
      }
    }
  });
}

void blockAxpyAvx2(const float* w, int64_t R, int64_t C, const float* dy, int64_t lddy, int64_t tokens, float* out) {
  forTokenGroups(tokens, [&](auto group, int64_t t0) {
    constexpr int T = decltype(group)::value;
    const float* dys = dy + t0 * lddy;
    float* o = out + t0 * C;
    for (int64_t c = 0; c < C; c += 8) {
      const __m256i mask = firstLanes(C - c);
      __m256 acc[T];
      for (int t = 0; t < T; t++) acc[t] = _mm256_maskload_ps(o + t * C + c, mask);
      for (int64_t r = 0; r < R; r++) {
        const __m256 wv = _mm256_maskload_ps(w + r * C + c, mask);
        for (int t = 0; t < T; t++) acc[t] = _mm256_fmadd_ps(_mm256_broadcast_ss(dys + t * lddy + r), wv, acc[t]);
      }
      for (int t = 0; t < T; t++) _mm256_maskstore_ps(o + t * C + c, mask, acc[t]);
    }
  });
}

}  // namespace

MicroKernel avx2Kernel() { return {"avx2", MR, NR, runAvx2, {blockDotAvx2, blockAxpyAvx2}, packTransposedAvx2}; }

}  // namespace bsk
