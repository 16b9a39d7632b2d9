// Dot products of K-contiguous lines (the sampled product's narrow blocks): one template, which each
// micro-kernel file instantiates with its vector width (GCC/Clang vector extensions, lowered to that
// file's instruction set). Each output sums Width lanes over K, then its lanes pairwise.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

namespace bsk {

// Floats a packed line's length is a multiple of (zero-padded past the data): one AVX-512 vector.
constexpr int64_t kLineFloats = 16;

// out[j][r * ldOut] (=, or += when accumulate) sum over k < depth of a[r * lda + k] b[j][k], for r < rows
// and j < count; depth is a multiple of kLineFloats.
struct LineDotsArgs {
  const float* a;
  int64_t lda;
  int64_t rows;
  const float* const* b;
  float* const* out;
  int64_t ldOut;
  int64_t count;
  int64_t depth;
  bool accumulate;
};

// A vector of Width floats.
template <int Width>
struct Lanes {
  typedef float Vec __attribute__((vector_size(Width * sizeof(float))));
};

// The sum of a vector's lanes as a tree of halves (log2(Width) vector adds, not Width - 1 dependent scalar ones).
template <int Width>
inline float sumLanes(typename Lanes<Width>::Vec v) {
  if constexpr (Width == 2) {
    return v[0] + v[1];
  } else {
    typename Lanes<Width / 2>::Vec low, high;
    std::memcpy(&low, &v, sizeof(low));
    std::memcpy(&high, reinterpret_cast<const char*>(&v) + sizeof(low), sizeof(high));
    return sumLanes<Width / 2>(low + high);
  }
}

// Width: floats per vector. Accumulators: vector registers a register tile may hold as sums (about half the file's
// registers: the rest hold the tile's loads).
template <int Width, int Accumulators>
struct LineDots {
  static_assert(kLineFloats % Width == 0, "a packed line is whole vectors");
  using Vec = typename Lanes<Width>::Vec;

  static Vec load(const float* p) {
    Vec v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }

  // Lines of b a register tile takes beside `tileRows` rows of a: 8 at most (the K loop's loads stay few).
  static constexpr int columnsFor(int tileRows) { return std::max(1, std::min(8, Accumulators / tileRows)); }

  // Rows [r0, r0 + RB) of a against lines [j0, j0 + CB) of b: RB x CB vector sums, each line loaded once a K step.
  template <int RB, int CB>
  static void tile(const LineDotsArgs& args, int64_t r0, int64_t j0) {
    Vec acc[RB][CB];
    for (int i = 0; i < RB; i++) {
      for (int j = 0; j < CB; j++) acc[i][j] = Vec{};
    }
    const float* a = args.a + r0 * args.lda;
    const float* const* b = args.b + j0;
    for (int64_t k = 0; k < args.depth; k += Width) {
      Vec bv[CB];
      for (int j = 0; j < CB; j++) bv[j] = load(b[j] + k);
      for (int i = 0; i < RB; i++) {
        const Vec av = load(a + i * args.lda + k);
        for (int j = 0; j < CB; j++) acc[i][j] += av * bv[j];
      }
    }
    for (int i = 0; i < RB; i++) {
      for (int j = 0; j < CB; j++) {
        const float sum = sumLanes<Width>(acc[i][j]);
        float* o = args.out[j0 + j] + (r0 + i) * args.ldOut;
        *o = args.accumulate ? *o + sum : sum;
      }
    }
  }

  // tile<RB, n> for the n = columns <= CB left.
  template <int RB, int CB>
  static void lastColumns(const LineDotsArgs& args, int64_t r0, int64_t j0, int64_t columns) {
    if constexpr (CB > 0) {
      if (columns == CB) {
        tile<RB, CB>(args, r0, j0);
      } else {
        lastColumns<RB, CB - 1>(args, r0, j0, columns);
      }
    }
  }

  // Groups of CB lines of b (they stay in L1 while the rows of a pass), each against all rows, RB at a time.
  template <int RB>
  static void byColumns(const LineDotsArgs& args) {
    constexpr int CB = columnsFor(RB);
    for (int64_t j0 = 0; j0 < args.count; j0 += CB) {
      const int64_t columns = std::min<int64_t>(CB, args.count - j0);
      int64_t r0 = 0;
      for (; r0 + RB <= args.rows; r0 += RB) lastColumns<RB, CB>(args, r0, j0, columns);
      // Fewer than 4 rows left: a smaller tile, which takes at least as many columns (below 4 rows, RB is all of them).
      if constexpr (RB == 4) {
        switch (args.rows - r0) {
          case 1: lastColumns<1, CB>(args, r0, j0, columns); break;
          case 2: lastColumns<2, CB>(args, r0, j0, columns); break;
          case 3: lastColumns<3, CB>(args, r0, j0, columns); break;
          default: break;
        }
      }
    }
  }

  static void run(const LineDotsArgs& args) {
    switch (std::min<int64_t>(args.rows, 4)) {
      case 0: break;
      case 1: byColumns<1>(args); break;
      case 2: byColumns<2>(args); break;
      case 3: byColumns<3>(args); break;
      default: byColumns<4>(args); break;
    }
  }
};

}  // namespace bsk
