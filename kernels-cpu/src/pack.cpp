#include "pack.h"

namespace bsk {

void packRows(MatrixView a, int64_t row0, int64_t rows, int64_t k0, int64_t depth, int width, float* dst) {
  const float* base = a.data + row0 * a.rowStride + k0 * a.colStride;
  if (a.colStride == 1) {
    // K contiguous in the source: read each line forward, write with stride `width`.
    for (int64_t i = 0; i < rows; i++) {
      const float* line = base + i * a.rowStride;
      for (int64_t k = 0; k < depth; k++) dst[k * width + i] = line[k];
    }
  } else {
    for (int64_t k = 0; k < depth; k++) {
      const float* column = base + k * a.colStride;
      for (int64_t i = 0; i < rows; i++) dst[k * width + i] = column[i * a.rowStride];
    }
  }
  if (rows < width) {
    for (int64_t k = 0; k < depth; k++) {
      for (int64_t i = rows; i < width; i++) dst[k * width + i] = 0.0f;
    }
  }
}

}  // namespace bsk
