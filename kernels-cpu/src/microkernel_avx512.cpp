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

// A block's rows as float32 vectors: the stored floats, or half bits widened in registers (16 at a time; a tail of
// fewer goes through a zeroed copy, as masked 16-bit loads need AVX-512BW).
struct FloatWeights {
  const float* w;
  __m512 load(int64_t at, __mmask16 mask) const { return _mm512_maskz_loadu_ps(mask, w + at); }
};

template <bool Bfloat>
struct HalfWeights {
  const uint16_t* w;
  __m512 load(int64_t at, __mmask16 mask) const {
    __m256i bits;
    if (mask == __mmask16(0xffff)) {
      bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + at));
    } else {
      alignas(32) uint16_t tail[16] = {};
      std::copy(w + at, w + at + __builtin_popcount(mask), tail);
      bits = _mm256_load_si256(reinterpret_cast<const __m256i*>(tail));
    }
    if constexpr (Bfloat) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
    else return _mm512_cvtph_ps(bits);
  }
};

// Columns [c0, c0 + 16 V) of a block into T tokens: the tokens' slice of x stays in registers
// across the block's rows, so each row loads only its weights and its T partial sums (at T = 8,
// reloading x for every row made the loads, not the FMAs, the bound). The last vector is masked.
template <int T, int V, typename Weights>
void blockDotColumns(Weights w, int64_t R, int64_t C, int64_t c0, __mmask16 last, const float* x, int64_t ldx, int64_t tokens, float* lanes) {
  __m512 xv[T][V];
  for (int t = 0; t < T; t++) {
    for (int v = 0; v < V; v++) xv[t][v] = _mm512_maskz_loadu_ps(v == V - 1 ? last : __mmask16(0xffff), x + t * ldx + c0 + v * 16);
  }
  for (int64_t r = 0; r < R; r++) {
    float* out = lanes + r * tokens * kDotLanes;
    __m512 acc[T];
    for (int t = 0; t < T; t++) acc[t] = _mm512_loadu_ps(out + t * kDotLanes);
    for (int v = 0; v < V; v++) {
      const __m512 wv = w.load(r * C + c0 + v * 16, v == V - 1 ? last : __mmask16(0xffff));
      for (int t = 0; t < T; t++) acc[t] = _mm512_fmadd_ps(wv, xv[t][v], acc[t]);
    }
    for (int t = 0; t < T; t++) _mm512_storeu_ps(out + t * kDotLanes, acc[t]);
  }
}

template <typename Weights>
void blockDotWith(Weights w, int64_t R, int64_t C, const float* x, int64_t ldx, int64_t tokens, float* lanes) {
  forTokenGroups(tokens, [&](auto group, int64_t t0) {
    constexpr int T = decltype(group)::value;
    // x in T x V registers beside T accumulators; V <= 4 keeps each row's FMA chain short.
    constexpr int V = T <= 4 ? 4 : 2;
    const float* xs = x + t0 * ldx;
    float* out = lanes + t0 * kDotLanes;
    int64_t c = 0;
    for (; c + 16 * V <= C; c += 16 * V) blockDotColumns<T, V>(w, R, C, c, __mmask16(0xffff), xs, ldx, tokens, out);
    if constexpr (V > 2) {
      if (c + 32 <= C) {
        blockDotColumns<T, 2>(w, R, C, c, __mmask16(0xffff), xs, ldx, tokens, out);
        c += 32;
      }
    }
    for (; c < C; c += 16) blockDotColumns<T, 1>(w, R, C, c, firstLanes(C - c), xs, ldx, tokens, out);
  });
}

void blockDotAvx512(const float* w, int64_t R, int64_t C, const float* x, int64_t ldx, int64_t tokens, float* lanes) {
  blockDotWith(FloatWeights{w}, R, C, x, ldx, tokens, lanes);
}

void blockDotHalfAvx512(const uint16_t* w, bool bfloat, int64_t R, int64_t C, const float* x, int64_t ldx, int64_t tokens, float* lanes) {
  if (bfloat) blockDotWith(HalfWeights<true>{w}, R, C, x, ldx, tokens, lanes);
  else blockDotWith(HalfWeights<false>{w}, R, C, x, ldx, tokens, lanes);
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

MicroKernel avx512Kernel() { return {"avx512", MR, NR, runAvx512, {blockDotAvx512, blockAxpyAvx512, blockDotHalfAvx512}, packTransposedAvx2, LineDots<16, 16>::run, LineSums<16, 4>::run}; }

}  // namespace bsk
