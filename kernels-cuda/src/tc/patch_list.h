// The patch records of the dW patch tiles at 32x32: the pair records of the addon's tile (bsr_wgmma_patch_dw.cu,
// kPatchPairTile), built when a 32x32 pattern is uploaded on a wgmma device (addon.cpp's createPattern; tc_bench's
// bench_pattern.h), and the block records of dev's mma.sync patch tiles (kernels-cuda/dev/bsr_mma_patch.cu), built by
// tc_bench alone.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../bsr_pattern.h"

namespace bs {

// dW's patch tile (32x32 blocks): a CTA takes the stored blocks of a patch of W, a few consecutive block rows x a few
// consecutive block columns, and for each 64-token step loads the patch's dY slices (one per block row) and X slices
// (one per block column) once for all of its blocks. So it moves 32 n / (rows + columns) FLOP per L2 byte for n blocks,
// where a tile of one column's blocks stays under 32 (docs/kernels.md, "dW's patch tile (dev variants 30, 31 and 32)").
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

// The patch's sides for a pattern of this density: about kPatchTargetBlocks blocks, rows + columns within maxSlices
// (at most kPatchMaxSlices).
inline std::array<int32_t, 2> patchSides(int32_t blockRows, int32_t blockCols, int64_t nnz,
                                         int32_t maxSlices = kPatchMaxSlices) {
  maxSlices = std::clamp(maxSlices, 2, kPatchMaxSlices);
  const double density = static_cast<double>(nnz) / (static_cast<double>(blockRows) * static_cast<double>(blockCols));
  const int32_t side = std::clamp(static_cast<int32_t>(std::lround(std::sqrt(kPatchTargetBlocks / density))), 1,
                                  maxSlices / 2);
  const int32_t rows = std::min(blockRows, side);
  const int32_t wanted = static_cast<int32_t>(std::ceil(kPatchTargetBlocks / (rows * density)));
  const int32_t cols = std::max(1, std::min({blockCols, std::max(side, wanted), maxSlices - rows}));
  return {rows, cols};
}

struct PatchListOffsets {
  size_t begin = 0;
  int32_t items = 0;
};

// One block of a patch record (rowB -1), or one product of a pair record: two blocks of column `col`, rows rowA < rowB.
struct PatchItem {
  int32_t rowA, rowB, col, valueA, valueB;
};

// Appends the records of a 32x32 pattern (row-wise index blockRowPtr [blockRows + 1], blockColIdx [nnz], whose entry p
// is value p) to `packed`: patch by patch in row-major order, `itemsOf(blocks, items)` turning a patch's blocks (row-major)
// into its items, which make ceil(n / cap) records of as many items each, in order, each record spanning the rows and
// columns of its own items: the header, then `write(item, firstRow, firstColumn)` per item and `pad()` past them.
// A patch's rows + columns are at most maxSlices (patchSides).
template <class ItemsOf, class Write, class Pad>
PatchListOffsets appendPatchRecords(std::vector<int32_t>& packed, int32_t blockHeight, int32_t blockWidth,
                                    int32_t blockRows, int32_t blockCols, const int32_t* blockRowPtr,
                                    const int32_t* blockColIdx, int64_t cap, int32_t maxSlices, ItemsOf itemsOf,
                                    Write write, Pad pad) {
  PatchListOffsets offsets;
  offsets.begin = packed.size();
  const int64_t nnz = blockRows > 0 ? blockRowPtr[blockRows] : 0;
  if (blockHeight != 32 || blockWidth != 32 || nnz <= 0 || blockCols <= 0) return offsets;
  const auto sides = patchSides(blockRows, blockCols, nnz, maxSlices);
  const int32_t g = sides[0], h = sides[1];
  std::vector<int32_t> cursor(blockRowPtr, blockRowPtr + blockRows);  // each row's next entry, columns ascending
  std::vector<PatchItem> blocks, items;
  for (int32_t r0 = 0; r0 < blockRows; r0 += g) {
    const int32_t r1 = std::min(blockRows, r0 + g);
    for (int32_t c0 = 0; c0 < blockCols; c0 += h) {
      const int32_t c1 = std::min(blockCols, c0 + h);
      blocks.clear();
      for (int32_t r = r0; r < r1; ++r)
        for (; cursor[r] < blockRowPtr[r + 1] && blockColIdx[cursor[r]] < c1; ++cursor[r])
          blocks.push_back({r, -1, blockColIdx[cursor[r]], cursor[r], -1});
      items.clear();
      itemsOf(blocks, items);
      const int64_t n = static_cast<int64_t>(items.size());
      const int64_t parts = (n + cap - 1) / cap;
      for (int64_t part = 0; part < parts; ++part) {
        const int64_t first = part * n / parts, last = (part + 1) * n / parts;
        int32_t rowFirst = r1, rowLast = r0, colFirst = c1, colLast = c0;
        for (int64_t e = first; e < last; ++e) {
          const PatchItem& q = items[static_cast<size_t>(e)];
          rowFirst = std::min(rowFirst, q.rowA);
          rowLast = std::max({rowLast, q.rowA, q.rowB});
          colFirst = std::min(colFirst, q.col);
          colLast = std::max(colLast, q.col);
        }
        packed.push_back(rowFirst);
        packed.push_back(colFirst);
        packed.push_back((rowLast - rowFirst + 1) << 16 | (colLast - colFirst + 1));
        packed.push_back(static_cast<int32_t>(last - first));
        for (int64_t e = first; e < first + cap; ++e) {
          if (e < last) write(items[static_cast<size_t>(e)], rowFirst, colFirst);
          else pad();
        }
        ++offsets.items;
      }
    }
  }
  return offsets;
}

// The patch records (bsr_mma_patch.cu): a patch of more than kPatchMaxBlocks blocks becomes ceil(n / kPatchMaxBlocks)
// records of as many blocks each, in row-major order. Returns where they start in `packed` and how many there are
// (none for blocks other than 32x32).
inline PatchListOffsets appendPatchList(std::vector<int32_t>& packed, int32_t blockHeight, int32_t blockWidth,
                                        int32_t blockRows, int32_t blockCols, const int32_t* blockRowPtr,
                                        const int32_t* blockColIdx) {
  return appendPatchRecords(
      packed, blockHeight, blockWidth, blockRows, blockCols, blockRowPtr, blockColIdx, kPatchMaxBlocks, kPatchMaxSlices,
      [](const std::vector<PatchItem>& blocks, std::vector<PatchItem>& items) { items = blocks; },
      [&](const PatchItem& q, int32_t rowFirst, int32_t colFirst) {
        packed.push_back(q.valueA);
        packed.push_back((q.rowA - rowFirst) << 16 | (q.col - colFirst));
      },
      [&] {
        packed.push_back(-1);
        packed.push_back(0);
      });
}

// Points view.patchList at the uploaded records (base: the device copy of `packed`).
inline void bindPatchList(BsrPatternView& view, const int32_t* base, const PatchListOffsets& offsets) {
  view.patchItems = offsets.items;
  view.patchList = offsets.items > 0 ? base + offsets.begin : nullptr;
}

// Pair records for the wgmma patch tiles (the addon's bsr_wgmma_patch_dw.cu, dev's bsr_wgmma_patch.cu): the same patches, each patch's blocks paired within a
// column (its rows ascending: the first with the second, the third with the fourth, a last odd block alone), each pair
// one m64n32k16 product (A two row slices, B the column's slice). A record holds up to kPatchPairProducts products:
//   words 0-3 as a patch record's (word 3 the product count), then per product 4 words: its first block's row slot
//   << 16 | its second's (the first's + 1 for a block alone, whose second half of the product is not written), its
//   column slot, and the two blocks' places in the values (the second -1 when alone); products past the count: 0, 1,
//   0, -1, -1.
// Patches of at most maxSlices rows + columns: fewer slices make smaller stages, so that the bulk-copy tile
// (bsr_wgmma_patch_dw.cu) fits more of them in its ring. kPatchPairMaxSlices (17) gives it three stages of 64 tokens;
// on an H200 the 26 of the block records left it two at densities 0.1-0.25 and ran 1.0-1.9x slower there, 13 cost
// blocks per record and ran 1.1-1.6x slower (docs/kernels.md, "dW's patch tile fed by bulk copies").
constexpr int kPatchPairProducts = 16;  // two consumer warpgroups of 8 m64n32 accumulators (128 registers a thread)
constexpr int32_t kPatchPairMaxSlices = 17;
constexpr int kPatchPairRecordWords = kPatchHeaderWords + 4 * kPatchPairProducts;
inline PatchListOffsets appendPatchPairList(std::vector<int32_t>& packed, int32_t blockHeight, int32_t blockWidth,
                                            int32_t blockRows, int32_t blockCols, const int32_t* blockRowPtr,
                                            const int32_t* blockColIdx, int32_t maxSlices = kPatchPairMaxSlices) {
  return appendPatchRecords(
      packed, blockHeight, blockWidth, blockRows, blockCols, blockRowPtr, blockColIdx, kPatchPairProducts, maxSlices,
      [](const std::vector<PatchItem>& blocks, std::vector<PatchItem>& items) {
        // Column by column, the column's blocks (rows ascending) in pairs.
        std::vector<PatchItem> byColumn = blocks;
        std::stable_sort(byColumn.begin(), byColumn.end(),
                         [](const PatchItem& a, const PatchItem& b) { return a.col < b.col; });
        for (size_t i = 0; i < byColumn.size(); ++i) {
          const bool pair = i + 1 < byColumn.size() && byColumn[i + 1].col == byColumn[i].col;
          items.push_back({byColumn[i].rowA, pair ? byColumn[i + 1].rowA : -1, byColumn[i].col, byColumn[i].valueA,
                           pair ? byColumn[i + 1].valueA : -1});
          if (pair) ++i;
        }
      },
      [&](const PatchItem& q, int32_t rowFirst, int32_t colFirst) {
        const int32_t slotA = q.rowA - rowFirst, slotB = q.rowB >= 0 ? q.rowB - rowFirst : slotA + 1;
        packed.push_back(slotA << 16 | slotB);
        packed.push_back(q.col - colFirst);
        packed.push_back(q.valueA);
        packed.push_back(q.valueB);
      },
      [&] {
        packed.push_back(0 << 16 | 1);
        packed.push_back(0);
        packed.push_back(-1);
        packed.push_back(-1);
      });
}

inline void bindPatchPairList(BsrPatternView& view, const int32_t* base, const PatchListOffsets& offsets) {
  view.patchPairItems = offsets.items;
  view.patchPairList = offsets.items > 0 ? base + offsets.begin : nullptr;
}

}  // namespace bs
