// Packing into the micro-kernel's layout: strips of `width` lines, [strip][k][width], zero-padded.
#pragma once
#include <cstdint>

#include "products.h"

namespace bsk {

// Rows [row0, row0 + rows) by K range [k0, k0 + depth) of `a` into one strip of `width` rows:
// dst[k * width + i] = a(row0 + i, k0 + k), zero for i >= rows.
void packRows(MatrixView a, int64_t row0, int64_t rows, int64_t k0, int64_t depth, int width, float* dst);

// MicroKernel::packTransposed, as plain loops (any CPU) and with 8 x 8 tiles transposed in AVX
// registers (reads and writes both whole vectors).
void packTransposedPortable(const float* lines, int64_t lineStride, int64_t rows, int64_t depth, int width, float* dst);
void packTransposedAvx2(const float* lines, int64_t lineStride, int64_t rows, int64_t depth, int width, float* dst);

}  // namespace bsk
