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

// Eight columns a chunk: chunk j adds into half j % 2 of the kDotLanes = 16 lanes (two ymm halves).
// V chunks of one half, j0, j0 + 2, ..., into T tokens: the tokens' slice of x stays in registers
// across the block's rows, so each row loads only its weights and its T partial sums (reloading x
// for every row made the loads, not the FMAs, the bound). With maskedLast, the last chunk is C's tail.
template <int T, int V, bool maskedLast>
void blockDotChunks(const float* w, int64_t R, int64_t C, int64_t j0, __m256i tail, const float* x, int64_t ldx, int64_t tokens, float* lanes) {
  const auto load = [&](const float* p, int v) { return maskedLast && v == V - 1 ? _mm256_maskload_ps(p, tail) : _mm256_loadu_ps(p); };
  __m256 xv[T][V];
  for (int t = 0; t < T; t++) {
    for (int v = 0; v < V; v++) xv[t][v] = load(x + t * ldx + (j0 + 2 * v) * 8, v);
  }
  const int64_t half = (j0 % 2) * 8;
  for (int64_t r = 0; r < R; r++) {
    const float* row = w + r * C + j0 * 8;
    float* out = lanes + r * tokens * kDotLanes + half;
    __m256 acc[T];
    for (int t = 0; t < T; t++) acc[t] = _mm256_loadu_ps(out + t * kDotLanes);
    for (int v = 0; v < V; v++) {
      const __m256 wv = load(row + v * 16, v);
      for (int t = 0; t < T; t++) acc[t] = _mm256_fmadd_ps(wv, xv[t][v], acc[t]);
    }
    for (int t = 0; t < T; t++) _mm256_storeu_ps(out + t * kDotLanes, acc[t]);
  }
}

// At most 4 tokens at once: T x V registers of x, T accumulators and a weight vector fit the 16 ymm registers.
void blockDotAvx2(const float* w, int64_t R, int64_t C, const float* x, int64_t ldx, int64_t tokens, float* lanes) {
  forTokenGroups<4>(tokens, [&](auto group, int64_t t0) {
    constexpr int T = decltype(group)::value;
    constexpr int V = T <= 2 ? 4 : 2;
    const float* xs = x + t0 * ldx;
    float* out = lanes + t0 * kDotLanes;
    const int64_t chunks = (C + 7) / 8;
    const __m256i tail = firstLanes(C - (chunks - 1) * 8);
    const bool ragged = C % 8 != 0;
    for (int64_t j0 = 0; j0 < 2; j0++) {
      int64_t j = j0;
      for (; j + 2 * (V - 1) < chunks; j += 2 * V) {
        if (ragged && j + 2 * (V - 1) == chunks - 1) {
          blockDotChunks<T, V, true>(w, R, C, j, tail, xs, ldx, tokens, out);
        } else {
          blockDotChunks<T, V, false>(w, R, C, j, tail, xs, ldx, tokens, out);
        }
      }
      for (; j < chunks; j += 2) {
        if (ragged && j == chunks - 1) {
          blockDotChunks<T, 1, true>(w, R, C, j, tail, xs, ldx, tokens, out);
        } else {
          blockDotChunks<T, 1, false>(w, R, C, j, tail, xs, ldx, tokens, out);
        }
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

MicroKernel avx2Kernel() { return {"avx2", MR, NR, runAvx2, {blockDotAvx2, blockAxpyAvx2}, packTransposedAvx2, LineDots<8, 8>::run, LineSums<8, 2>::run}; }

}  // namespace bsk
