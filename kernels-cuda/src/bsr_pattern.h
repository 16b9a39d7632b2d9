// A block-sparse pattern as the kernels see it: validated on the host once, then uploaded.
#pragma once

#include <cstdint>

namespace bs {

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
};

}  // namespace bs
