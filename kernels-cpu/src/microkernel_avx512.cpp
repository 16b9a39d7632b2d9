// AVX-512 micro-kernel, 8x32: sixteen zmm accumulators, masked stores at the edges
// (this file is built with -mavx512f -mfma).
#include <immintrin.h>

#include <algorithm>

#include "microkernel.h"
#include "pack.h"

namespace bsk {
namespace {

constexpr int MR = 8;
constexpr int NR = 32;

void runAvx512(const Tile& tile) {
  __m512 acc[MR][2];
  for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  forEachStep<MR, NR>(tile, [&](const float* a, const float* b) {
    const __m512 b0 = _mm512_loadu_ps(b);
    const __m512 b1 = _mm512_loadu_ps(b + 16);
    for (int i = 0; i < MR; i++) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  });
  const int cols = tile.cols;
  const __mmask16 mask0 = cols >= 16 ? __mmask16(0xffff) : __mmask16((1u << cols) - 1);
  const __mmask16 mask1 = cols >= 32 ? __mmask16(0xffff) : cols <= 16 ? __mmask16(0) : __mmask16((1u << (cols - 16)) - 1);
  for (int i = 0; i < tile.rows; i++) {
    float* c = tile.c + i * tile.ldc;
    if (tile.accumulate) {
      acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_maskz_loadu_ps(mask0, c));
      acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_maskz_loadu_ps(mask1, c + 16));
    }
    _mm512_mask_storeu_ps(c, mask0, acc[i][0]);
    _mm512_mask_storeu_ps(c + 16, mask1, acc[i][1]);
  }
}

__mmask16 firstLanes(int64_t count) { return count >= 16 ? __mmask16(0xffff) : __mmask16((1u << count) - 1); }

void blockDotAvx512(const float* w, int64_t R, int64_t C, const float* x, int64_t ldx, int64_t tokens, float* lanes) {
  forTokenGroups(tokens, [&](auto group, int64_t t0) {
    constexpr int T = decltype(group)::value;
    const float* xs = x + t0 * ldx;
    float* out = lanes + t0 * kDotLanes;
    const int64_t full = C / 16 * 16;
    const __mmask16 tail = firstLanes(C - full);
    for (int64_t r = 0; r < R; r++) {
      const float* row = w + r * C;
      __m512 acc[T];
      for (int t = 0; t < T; t++) acc[t] = _mm512_loadu_ps(out + (r * tokens + t) * kDotLanes);
      for (int64_t c = 0; c < full; c += 16) {
        const __m512 wv = _mm512_loadu_ps(row + c);
        for (int t = 0; t < T; t++) acc[t] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(xs + t * ldx + c), acc[t]);
      }
      if (full < C) {
        const __m512 wv = _mm512_maskz_loadu_ps(tail, row + full);
        for (int t = 0; t < T; t++) acc[t] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(tail, xs + t * ldx + full), acc[t]);
      }
      for (int t = 0; t < T; t++) _mm512_storeu_ps(out + (r * tokens + t) * kDotLanes, acc[t]);
    }
  });
}

void blockAxpyAvx512(const float* w, int64_t R, int64_t C, const float* dy, int64_t lddy, int64_t tokens, float* out) {
  forTokenGroups(tokens, [&](auto group, int64_t t0) {
    constexpr int T = decltype(group)::value;
    const float* dys = dy + t0 * lddy;
    float* o = out + t0 * C;
    for (int64_t c = 0; c < C; c += 16) {
      const __mmask16 mask = firstLanes(C - c);
      __m512 acc[T];
      for (int t = 0; t < T; t++) acc[t] = _mm512_maskz_loadu_ps(mask, o + t * C + c);
      for (int64_t r = 0; r < R; r++) {
        const __m512 wv = _mm512_maskz_loadu_ps(mask, w + r * C + c);
        for (int t = 0; t < T; t++) acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(dys[t * lddy + r]), wv, acc[t]);
      }
      for (int t = 0; t < T; t++) _mm512_mask_storeu_ps(o + t * C + c, mask, acc[t]);
    }
  });
}

}  // namespace

MicroKernel avx512Kernel() { return {"avx512", MR, NR, runAvx512, {blockDotAvx512, blockAxpyAvx512}, packTransposedAvx2}; }

}  // namespace bsk
