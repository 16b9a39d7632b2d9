#include "pack.h"

#include <algorithm>

#include "microkernel.h"

namespace bsk {

void packTransposedPortable(const float* lines, int64_t lineStride, int64_t rows, int64_t depth, int width, float* dst) {
  for (int64_t i = 0; i < rows; i++) {
    const float* line = lines + i * lineStride;
    for (int64_t k = 0; k < depth; k++) dst[k * width + i] = line[k];
  }
}

void packRows(MatrixView a, int64_t row0, int64_t rows, int64_t k0, int64_t depth, int width, float* dst) {
  const float* base = a.data + row0 * a.rowStride + k0 * a.colStride;
  if (a.rowStride == 1) {
    // The strip's lines are adjacent in memory: each k is one contiguous run of `rows` floats.
    for (int64_t k = 0; k < depth; k++) std::copy(base + k * a.colStride, base + k * a.colStride + rows, dst + k * width);
  } else if (a.colStride == 1) {
    activeKernel().packTransposed(base, a.rowStride, rows, depth, width, dst);
  } else {
    for (int64_t k = 0; k < depth; k++) {
      const float* column = base + k * a.colStride;
      for (int64_t i = 0; i < rows; i++) dst[k * width + i] = column[i * a.rowStride];
    }
  }
  if (rows < width) {
    for (int64_t k = 0; k < depth; k++) std::fill(dst + k * width + rows, dst + (k + 1) * width, 0.0f);
  }
}

}  // namespace bsk
