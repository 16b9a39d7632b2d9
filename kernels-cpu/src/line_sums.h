// Weighted sums of token lines (bsrLinear's and bsrMatmul's blocks too narrow for the register tile): one template,
// which each micro-kernel file instantiates with its vector width, as line_dots.h. An output column's tokens are
// adjacent lanes, so each K step is one line of tokens times a scalar weight, and the columns of one block share the
// line: no operand is padded to the tile's width.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "line_dots.h"

namespace bsk {

// Tokens a call sums per output column: a packed line's length is a multiple of it (zero-padded past the data).
constexpr int64_t kLineSumTokens = 64;

// out[j * kLineSumTokens + t] (=, or += when accumulate) = sum over blocks b < blockCount and steps s < steps of
// w_b[j * columnStride + s * stepStride] * lines[(segmentIndex[b] * steps + s) * lineStride + t],
// for columns j < columns and tokens t < kLineSumTokens, where block b's values w_b start at
// values + valueIndex[b] * blockFloats (values + b * blockFloats when valueIndex is null).
struct LineSumsArgs {
  const float* lines;
  int64_t lineStride;
  const float* values;
  int64_t blockFloats;
  const int32_t* valueIndex;
  const int32_t* segmentIndex;
  int64_t blockCount;
  int64_t steps;
  int64_t columnStride;
  int64_t stepStride;
  int64_t columns;
  float* out;
  bool accumulate;
};

// Width: floats per vector. MaxColumns: columns a register tile sums at once (MaxColumns x 4 vector sums, beside the
// step's 4 token vectors and a weight: they fit the file's registers).
template <int Width, int MaxColumns>
struct LineSums {
  using Vec = typename Lanes<Width>::Vec;
  // Token vectors per register tile: a line's tokens come in tiles of kTileTokens.
  static constexpr int kVectors = 4;
  static constexpr int64_t kTileTokens = int64_t(Width) * kVectors;
  static_assert(kLineSumTokens % kTileTokens == 0, "a call's tokens are whole register tiles");

  static Vec load(const float* p) {
    Vec v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }

  static void store(float* p, Vec v) { std::memcpy(p, &v, sizeof(v)); }

  // Columns [j0, j0 + CB) by tokens [t0, t0 + kTileTokens): each step's token vectors are loaded once for CB columns.
  // (Two interleaved sets of blocks, 8 chains for 1 column instead of 4, measured the same: the loads bound it.)
  template <int CB>
  static void tile(const LineSumsArgs& args, int64_t j0, int64_t t0) {
    Vec acc[CB][kVectors];
    for (int j = 0; j < CB; j++) {
      for (int v = 0; v < kVectors; v++) acc[j][v] = Vec{};
    }
    for (int64_t b = 0; b < args.blockCount; b++) {
      const int64_t block = args.valueIndex != nullptr ? int64_t(args.valueIndex[b]) : b;
      const float* w = args.values + block * args.blockFloats + j0 * args.columnStride;
      const float* line = args.lines + int64_t(args.segmentIndex[b]) * args.steps * args.lineStride + t0;
      for (int64_t s = 0; s < args.steps; s++, w += args.stepStride, line += args.lineStride) {
        Vec x[kVectors];
        for (int v = 0; v < kVectors; v++) x[v] = load(line + v * Width);
        for (int j = 0; j < CB; j++) {
          const float weight = w[j * args.columnStride];
          for (int v = 0; v < kVectors; v++) acc[j][v] += x[v] * weight;
        }
      }
    }
    for (int j = 0; j < CB; j++) {
      for (int v = 0; v < kVectors; v++) {
        float* o = args.out + (j0 + j) * kLineSumTokens + t0 + v * Width;
        store(o, args.accumulate ? load(o) + acc[j][v] : acc[j][v]);
      }
    }
  }

  // tile<n> for the n = columns <= CB left.
  template <int CB>
  static void lastColumns(const LineSumsArgs& args, int64_t j0, int64_t t0, int64_t columns) {
    if constexpr (CB > 0) {
      if (columns == CB) {
        tile<CB>(args, j0, t0);
      } else {
        lastColumns<CB - 1>(args, j0, t0, columns);
      }
    }
  }

  static void run(const LineSumsArgs& args) {
    for (int64_t t0 = 0; t0 < kLineSumTokens; t0 += kTileTokens) {
      for (int64_t j0 = 0; j0 < args.columns; j0 += MaxColumns) {
        lastColumns<MaxColumns>(args, j0, t0, std::min<int64_t>(MaxColumns, args.columns - j0));
      }
    }
  }
};

}  // namespace bsk
