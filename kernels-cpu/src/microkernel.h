// The register-tile micro-kernels every product runs on, one per instruction set, picked at runtime.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "line_dots.h"
#include "line_sums.h"

namespace bsk {

// One run of the shared K dimension: `k` steps of packed A (mr floats a step) and packed B (nr floats a step).
struct Segment {
  const float* a;
  const float* b;
  int64_t k;
};

// C[rows x cols] (= or +=) sum over segments of A_s B_s; rows <= mr and cols <= nr, the rest is padding.
struct Tile {
  const Segment* segments;
  int64_t segmentCount;
  float* c;
  int64_t ldc;
  int rows;
  int cols;
  bool accumulate;
};

// Lanes of the partial sums DecodeKernels::blockDot keeps per output (one AVX-512 register).
constexpr int64_t kDotLanes = 16;

// The few-token (decode) loops: each multiplies one R x C block, read once, into up to 8 tokens.
struct DecodeKernels {
  // For every token t and block row r, without reducing:
  // lanes[(r * tokens + t) * kDotLanes + l] += sum over c = l (mod kDotLanes) of w[r * C + c] x[t * ldx + c].
  void (*blockDot)(const float* w, int64_t R, int64_t C, const float* x, int64_t ldx, int64_t tokens, float* lanes);
  // out[t * C + c] += sum_r dy[t * lddy + r] w[r * C + c].
  void (*blockAxpy)(const float* w, int64_t R, int64_t C, const float* dy, int64_t lddy, int64_t tokens, float* out);
  // blockDot over half bits (float16, or bfloat16 when `bfloat`) widened in registers, the same sums as blockDot of the
  // widened values; null where the instruction set has no widening (the caller widens into a buffer for blockDot).
  void (*blockDotHalf)(const uint16_t* w, bool bfloat, int64_t R, int64_t C, const float* x, int64_t ldx, int64_t tokens, float* lanes) = nullptr;
};

// Token counts the decode kernels take at once (more run in groups of at most this many).
constexpr int64_t kDecodeTokens = 8;

// Runs run(std::integral_constant<int, T>{}, t0) for tokens [t0, t0 + T) in groups of about equal
// size, at most maxTokens (<= kDecodeTokens) each, so each ISA's decode loops are compiled for a fixed
// token count whose accumulators fit its registers (9 tokens: 5 + 4, not 8 + 1).
template <int maxTokens = kDecodeTokens, typename Run>
inline void forTokenGroups(int64_t tokens, Run run) {
  static_assert(maxTokens >= 1 && maxTokens <= kDecodeTokens);
  const int64_t groups = (tokens + maxTokens - 1) / maxTokens;
  for (int64_t g = 0, t0 = 0; g < groups; g++) {
    const int64_t size = (tokens - t0) / (groups - g) + ((tokens - t0) % (groups - g) != 0 ? 1 : 0);
    switch (size) {
      case 1: run(std::integral_constant<int, 1>{}, t0); break;
      case 2: run(std::integral_constant<int, 2>{}, t0); break;
      case 3: run(std::integral_constant<int, 3>{}, t0); break;
      case 4: run(std::integral_constant<int, 4>{}, t0); break;
      case 5: if constexpr (maxTokens >= 5) run(std::integral_constant<int, 5>{}, t0); break;
      case 6: if constexpr (maxTokens >= 6) run(std::integral_constant<int, 6>{}, t0); break;
      case 7: if constexpr (maxTokens >= 7) run(std::integral_constant<int, 7>{}, t0); break;
      default: if constexpr (maxTokens >= 8) run(std::integral_constant<int, 8>{}, t0); break;
    }
    t0 += size;
  }
}

// The K loop every SIMD micro-kernel shares: step(a, b) for each of the tile's K steps, segment
// by segment (a advances MR floats a step, b NR). It fetches C's rows first (a row stride apart: in
// a large output a page or more) and, during each segment, the next segment's A slice (another
// block's columns) one cache line per step.
template <int MR, int NR, typename Step>
inline void forEachStep(const Tile& tile, Step step) {
  for (int i = 0; i < tile.rows; i++) {
    __builtin_prefetch(tile.c + i * tile.ldc);
    __builtin_prefetch(tile.c + i * tile.ldc + NR - 1);
  }
  for (int64_t s = 0; s < tile.segmentCount; s++) {
    const float* a = tile.segments[s].a;
    const float* b = tile.segments[s].b;
    int64_t k = tile.segments[s].k;
    if (s + 1 < tile.segmentCount) {
      const char* next = reinterpret_cast<const char*>(tile.segments[s + 1].a);
      const int64_t lines = std::min(k, (tile.segments[s + 1].k * MR * int64_t(sizeof(float)) + 63) / 64);
      for (int64_t line = 0; line < lines; line++, k--, a += MR, b += NR) {
        __builtin_prefetch(next + line * 64);
        step(a, b);
      }
    }
    for (; k > 0; k--, a += MR, b += NR) step(a, b);
  }
}

struct MicroKernel {
  const char* name;
  int mr;
  int nr;
  void (*run)(const Tile& tile);
  DecodeKernels decode;
  // Packs K-contiguous lines into the [k][width] layout: dst[k * width + i] = lines[i * lineStride + k]
  // for i < rows <= width (the rest of each width untouched).
  void (*packTransposed)(const float* lines, int64_t lineStride, int64_t rows, int64_t depth, int width, float* dst);
  // Dot products of K-contiguous lines (line_dots.h): the sampled product's blocks too narrow for the register tile.
  void (*lineDots)(const LineDotsArgs& args);
  // Weighted sums of K-contiguous token lines (line_sums.h): bsrLinear's and bsrMatmul's blocks too narrow for it.
  void (*lineSums)(const LineSumsArgs& args);
};

MicroKernel scalarKernel();
#if defined(__x86_64__) || defined(_M_X64)
MicroKernel avx2Kernel();
MicroKernel avx512Kernel();
#endif

// The kernel in use: the fastest this CPU runs (cpuid) unless setActiveKernel chose another.
const MicroKernel& activeKernel();
// Switches kernels by name ("avx512", "avx2", "scalar"); false when this CPU cannot run it.
bool setActiveKernel(const char* name);

}  // namespace bsk
