// The patch records of dev's dW patch tile (bsr_mma_patch.cu, kPatchDwVariant), built on the host by tc_bench when it
// uploads a pattern (bench/bench_pattern.h), never by the addon.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "bsr_pattern.h"

namespace bs {

// dW's patch tile (32x32 blocks): a CTA takes the stored blocks of a patch of W, a few consecutive block rows x a few
// consecutive block columns, and for each 64-token step loads the patch's dY slices (one per block row) and X slices
// (one per block column) once for all of its blocks. So it moves 32 n / (rows + columns) FLOP per L2 byte for n blocks,
// where a tile of one column's blocks stays under 32 (docs/kernels.md, "dW's patch tile (dev variants 30 and 31)").
// A record (one CTA's work):
//   word 0: the first block row, word 1: the first block column, word 2: rows << 16 | columns (its slices),
//   word 3: its block count n (1..kPatchMaxBlocks), then per block 2 words: the block's place in the values and
//   its row << 16 | column within the patch (entries past n: -1, 0).
constexpr int kPatchMaxBlocks = 32;   // 8 warps of up to 4 blocks' accumulators
constexpr int kPatchMaxSlices = 26;   // rows + columns: two stages of 64 tokens x 26 slices of 64 bytes in shared memory
constexpr int kPatchHeaderWords = 4;
constexpr int kPatchRecordWords = kPatchHeaderWords + 2 * kPatchMaxBlocks;
// The blocks a patch holds on average, under kPatchMaxBlocks so that a random pattern's patches seldom overflow into a
// second record.
constexpr double kPatchTargetBlocks = 24.0;

// The patch's sides for a pattern of this density: about kPatchTargetBlocks blocks, rows + columns within
// kPatchMaxSlices.
inline std::array<int32_t, 2> patchSides(int32_t blockRows, int32_t blockCols, int64_t nnz) {
  const double density = static_cast<double>(nnz) / (static_cast<double>(blockRows) * static_cast<double>(blockCols));
  const int32_t side = std::clamp(static_cast<int32_t>(std::lround(std::sqrt(kPatchTargetBlocks / density))), 1,
                                  kPatchMaxSlices / 2);
  const int32_t rows = std::min(blockRows, side);
  const int32_t wanted = static_cast<int32_t>(std::ceil(kPatchTargetBlocks / (rows * density)));
  const int32_t cols = std::max(1, std::min({blockCols, std::max(side, wanted), kPatchMaxSlices - rows}));
  return {rows, cols};
}

// Appends the patch records of a 32x32 pattern (row-wise index blockRowPtr [blockRows + 1], blockColIdx [nnz], whose
// entry p is value p) to `packed`, patch by patch in row-major order; a patch of more than kPatchMaxBlocks blocks
// becomes ceil(n / kPatchMaxBlocks) records of as many blocks each, in row-major order, each with the rows and
// columns its own blocks span. Returns where they start in `packed` and how many there are (none for other blocks).
struct PatchListOffsets {
  size_t begin = 0;
  int32_t items = 0;
};
inline PatchListOffsets appendPatchList(std::vector<int32_t>& packed, int32_t blockHeight, int32_t blockWidth,
                                        int32_t blockRows, int32_t blockCols, const int32_t* blockRowPtr,
                                        const int32_t* blockColIdx) {
  PatchListOffsets offsets;
  offsets.begin = packed.size();
  const int64_t nnz = blockRows > 0 ? blockRowPtr[blockRows] : 0;
  if (blockHeight != 32 || blockWidth != 32 || nnz <= 0 || blockCols <= 0) return offsets;
  const auto sides = patchSides(blockRows, blockCols, nnz);
  const int32_t g = sides[0], h = sides[1];
  std::vector<int32_t> cursor(blockRowPtr, blockRowPtr + blockRows);  // each row's next entry, columns ascending
  std::vector<int32_t> entries;                                        // the patch's row-wise entries, row-major
  for (int32_t r0 = 0; r0 < blockRows; r0 += g) {
    const int32_t r1 = std::min(blockRows, r0 + g);
    for (int32_t c0 = 0; c0 < blockCols; c0 += h) {
      const int32_t c1 = std::min(blockCols, c0 + h);
      entries.clear();
      for (int32_t r = r0; r < r1; ++r)
        for (; cursor[r] < blockRowPtr[r + 1] && blockColIdx[cursor[r]] < c1; ++cursor[r]) entries.push_back(cursor[r]);
      const int64_t n = static_cast<int64_t>(entries.size());
      if (n == 0) continue;
      const int64_t parts = (n + kPatchMaxBlocks - 1) / kPatchMaxBlocks;
      for (int64_t part = 0; part < parts; ++part) {
        const int64_t first = part * n / parts, last = (part + 1) * n / parts;
        auto rowOf = [&](int32_t p) {
          return static_cast<int32_t>(std::upper_bound(blockRowPtr + r0, blockRowPtr + r1 + 1, p) - blockRowPtr - 1);
        };
        const int32_t rowFirst = rowOf(entries[first]), rowLast = rowOf(entries[last - 1]);
        int32_t colFirst = c1, colLast = c0;
        for (int64_t e = first; e < last; ++e) {
          colFirst = std::min(colFirst, blockColIdx[entries[e]]);
          colLast = std::max(colLast, blockColIdx[entries[e]]);
        }
        packed.push_back(rowFirst);
        packed.push_back(colFirst);
        packed.push_back((rowLast - rowFirst + 1) << 16 | (colLast - colFirst + 1));
        packed.push_back(static_cast<int32_t>(last - first));
        for (int64_t e = first; e < first + kPatchMaxBlocks; ++e) {
          if (e < last) {
            packed.push_back(entries[e]);
            packed.push_back((rowOf(entries[e]) - rowFirst) << 16 | (blockColIdx[entries[e]] - colFirst));
          } else {
            packed.push_back(-1);
            packed.push_back(0);
          }
        }
        ++offsets.items;
      }
    }
  }
  return offsets;
}

// Points view.patchList at the uploaded records (base: the device copy of `packed`).
inline void bindPatchList(BsrPatternView& view, const int32_t* base, const PatchListOffsets& offsets) {
  view.patchItems = offsets.items;
  view.patchList = offsets.items > 0 ? base + offsets.begin : nullptr;
}

}  // namespace bs
