// Portable micro-kernel: plain loops the compiler vectorizes for the baseline target (SSE2, NEON).
#include "microkernel.h"
#include "pack.h"

namespace bsk {
namespace {

constexpr int MR = 4;
constexpr int NR = 16;

void runScalar(const Tile& tile) {
  float acc[MR][NR] = {};
  for (int64_t s = 0; s < tile.segmentCount; s++) {
    const float* a = tile.segments[s].a;
    const float* b = tile.segments[s].b;
    for (int64_t k = 0; k < tile.segments[s].k; k++, a += MR, b += NR) {
      for (int i = 0; i < MR; i++) {
        for (int j = 0; j < NR; j++) acc[i][j] += a[i] * b[j];
      }
    }
  }
  for (int i = 0; i < tile.rows; i++) {
    float* c = tile.c + i * tile.ldc;
    if (tile.accumulate) {
      for (int j = 0; j < tile.cols; j++) c[j] += acc[i][j];
    } else {
      for (int j = 0; j < tile.cols; j++) c[j] = acc[i][j];
    }
  }
}

void blockDotScalar(const float* w, int64_t R, int64_t C, const float* x, int64_t ldx, int64_t tokens, float* lanes) {
  for (int64_t r = 0; r < R; r++) {
    for (int64_t t = 0; t < tokens; t++) {
      float* acc = lanes + (r * tokens + t) * kDotLanes;
      for (int64_t c = 0; c < C; c++) acc[c % kDotLanes] += w[r * C + c] * x[t * ldx + c];
    }
  }
}

void blockAxpyScalar(const float* w, int64_t R, int64_t C, const float* dy, int64_t lddy, int64_t tokens, float* out) {
  for (int64_t r = 0; r < R; r++) {
    for (int64_t t = 0; t < tokens; t++) {
      const float alpha = dy[t * lddy + r];
      for (int64_t c = 0; c < C; c++) out[t * C + c] += alpha * w[r * C + c];
    }
  }
}

}  // namespace

MicroKernel scalarKernel() { return {"scalar", MR, NR, runScalar, {blockDotScalar, blockAxpyScalar}, packTransposedPortable, LineDots<4, 8>::run, LineSums<4, 2>::run}; }

}  // namespace bsk
