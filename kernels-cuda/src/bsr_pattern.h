// A block-sparse pattern as the kernels see it: validated on the host once, then uploaded.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace bs {

// Group sizes 1, 2, 4 and 8 blocks (BsrPatternView::columnGroups).
constexpr int kColumnGroupSizes = 4;

struct BsrPatternView {
  int64_t rows, cols;            // dense shape of the matrix
  int32_t blockHeight;           // R: rows of one block
  int32_t blockWidth;            // C: columns of one block
  int32_t blockRows, blockCols;  // rows / R, cols / C
  int32_t nnzBlocks;
  // Row-wise index (CSR over blocks).
  const int32_t* blockRowPtr;  // [blockRows + 1]
  const int32_t* blockColIdx;  // [nnzBlocks]
  // Column-wise index (the transpose) with each entry's place in the values.
  const int32_t* blockColPtr;  // [blockCols + 1]
  const int32_t* blockRowIdx;  // [nnzBlocks]
  const int32_t* valueIndex;   // [nnzBlocks]
  // Coordinates of each stored block, in values order.
  const int32_t* coordBlockRow;  // [nnzBlocks]
  const int32_t* coordBlockCol;  // [nnzBlocks]
  // Merged schedules of groups of block rows and of block columns for the grouped tile kept for measurement
  // (kernels-cuda/dev/group_schedule.h): tc_bench builds them; null in the addon.
  const int32_t* rowGroupPtr;
  const int32_t* rowGroupSteps;
  const int32_t* colGroupPtr;
  const int32_t* colGroupSteps;
  // Counted on the host when the pattern is uploaded (bindColumnGroupLists): columnGroups[i] is the number of groups of
  // up to 2^i blocks the block columns split into, the sum over columns of ceil(k / 2^i) for a column of k blocks, i.e.
  // the CTAs a dW tile of 2^i blocks per column launches work for. 0 when not counted (the dispatch then estimates).
  int32_t columnGroups[kColumnGroupSizes];
  // Device lists of those groups, column by column (appendColumnGroupLists): per group of up to 2^i blocks, its block
  // column and its first column-wise entry, [columnGroups[i]][2]; null when not built (dW's tail splits need them).
  const int32_t* columnGroupList[kColumnGroupSizes];
  // The records of dev's mma.sync dW patch tiles at 32x32 (tc/patch_list.h, appendPatchList): tc_bench builds them;
  // 0 and null in the addon.
  int32_t patchItems;
  const int32_t* patchList;
  // The patches as pairs of blocks of a column (appendPatchPairList) for the dW patch tile (kPatchPairTile): built when
  // a 32x32 pattern is uploaded on a wgmma device while that tile is dispatched (tc_kernels.h); 0 and null otherwise.
  int32_t patchPairItems;
  const int32_t* patchPairList;
  // The block rows ordered by their block count, most first (ties by row), for dev's decoding kernel of rows in pairs
  // (kernels-cuda/dev/bsr_decode_pairs.cu, appendDecodeRowOrder): tc_bench builds it; null in the addon.
  const int32_t* decodeRowOrder;
};

// Appends to `packed` the block rows of a pattern (the host copy of blockRowPtr, [blockRows + 1]) ordered by their block
// count, most first, ties by row; returns where they start.
inline size_t appendDecodeRowOrder(std::vector<int32_t>& packed, const int32_t* blockRowPtr, int32_t blockRows) {
  const size_t at = packed.size();
  for (int32_t r = 0; r < blockRows; ++r) packed.push_back(r);
  std::stable_sort(packed.begin() + static_cast<std::ptrdiff_t>(at), packed.end(), [&](int32_t a, int32_t b) {
    return blockRowPtr[a + 1] - blockRowPtr[a] > blockRowPtr[b + 1] - blockRowPtr[b];
  });
  return at;
}

// Where each list of view.columnGroupList starts in the words a pattern uploads, and where the last one ends.
using ColumnGroupOffsets = std::array<size_t, kColumnGroupSizes + 1>;

// Appends the lists of view.columnGroupList, built from the host copy of blockColPtr ([blockCols + 1]), to the
// words `packed` uploads (bindColumnGroupLists points a view there once they are on the device).
inline ColumnGroupOffsets appendColumnGroupLists(std::vector<int32_t>& packed, const int32_t* blockColPtr,
                                                 int32_t blockCols) {
  ColumnGroupOffsets offsets{};
  for (int i = 0; i < kColumnGroupSizes; ++i) {
    offsets[i] = packed.size();
    for (int32_t c = 0; c < blockCols; ++c)
      for (int32_t first = blockColPtr[c]; first < blockColPtr[c + 1]; first += 1 << i) {
        packed.push_back(c);
        packed.push_back(first);
      }
  }
  offsets[kColumnGroupSizes] = packed.size();
  return offsets;
}

// Points view.columnGroupList at the uploaded lists (base: the device copy of `packed`) and sets view.columnGroups to
// their lengths.
inline void bindColumnGroupLists(BsrPatternView& view, const int32_t* base, const ColumnGroupOffsets& offsets) {
  for (int i = 0; i < kColumnGroupSizes; ++i) {
    view.columnGroupList[i] = base + offsets[i];
    view.columnGroups[i] = static_cast<int32_t>((offsets[i + 1] - offsets[i]) / 2);
  }
}

}  // namespace bs
