// Dense C = A B: GotoBLAS-style blocking over packed panels (K in slices of kKc, B packed per
// slice, A per slice and row chunk), tiles of kMc x kNc spread over the thread pool; the
// micro-kernel keeps a B strip in L1 while A strips stream from L2.
#include <algorithm>
#include <vector>

#include "microkernel.h"
#include "pack.h"
#include "products.h"
#include "scratch.h"
#include "stream.h"
#include "threads.h"

namespace bsk {
namespace {

constexpr int64_t kKc = 256;
constexpr int64_t kMc = 128;
constexpr int64_t kNc = 512;
constexpr int64_t kRowChunk = 2048;
// Columns per work item of the few-row path.
constexpr int64_t kStreamColumns = 256;

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

void zeroRows(float* c, int64_t ldc, int64_t m, int64_t n) {
  for (int64_t i = 0; i < m; i++) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
}

// m <= kDecodeMaxRows: every element of B is read once, from memory, in its stored order.
void gemmFewRows(MatrixView a, MatrixView b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k, bool accumulate) {
  // A is tiny: a contiguous copy makes every row a stride-1 vector.
  std::vector<float> rowsOfA(static_cast<size_t>(m * k));
  for (int64_t i = 0; i < m; i++) {
    for (int64_t p = 0; p < k; p++) rowsOfA[i * k + p] = a.data[i * a.rowStride + p * a.colStride];
  }
  const int64_t items = ceilDiv(n, kStreamColumns);
  if (b.rowStride == 1) {
    // B's columns are contiguous (B = W^T of a row-major W): one dot product per output.
    parallelFor(items, [&](int64_t item) {
      const int64_t j0 = item * kStreamColumns;
      const int64_t j1 = std::min(n, j0 + kStreamColumns);
      for (int64_t j = j0; j < j1; j++) {
        const float* column = b.data + j * b.colStride;
        for (int64_t i = 0; i < m; i++) {
          const float value = dot(rowsOfA.data() + i * k, column, k);
          c[i * ldc + j] = accumulate ? c[i * ldc + j] + value : value;
        }
      }
    });
    return;
  }
  parallelFor(items, [&](int64_t item) {
    const int64_t j0 = item * kStreamColumns;
    const int64_t width = std::min(n, j0 + kStreamColumns) - j0;
    float sums[kDecodeMaxRows][kStreamColumns] = {};
    for (int64_t p = 0; p < k; p++) {
      const float* line = b.data + p * b.rowStride + j0 * b.colStride;
      for (int64_t i = 0; i < m; i++) {
        if (b.colStride == 1) {
          axpy(rowsOfA[i * k + p], line, sums[i], width);
        } else {
          for (int64_t j = 0; j < width; j++) sums[i][j] += rowsOfA[i * k + p] * line[j * b.colStride];
        }
      }
    }
    for (int64_t i = 0; i < m; i++) {
      float* out = c + i * ldc + j0;
      for (int64_t j = 0; j < width; j++) out[j] = accumulate ? out[j] + sums[i][j] : sums[i][j];
    }
  });
}

}  // namespace

void gemm(MatrixView a, MatrixView b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k, bool accumulate) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate) zeroRows(c, ldc, m, n);
    return;
  }
  if (m <= kDecodeMaxRows) {
    gemmFewRows(a, b, c, ldc, m, n, k, accumulate);
    return;
  }
  const MicroKernel& kernel = activeKernel();
  const int mr = kernel.mr;
  const int nr = kernel.nr;
  const int64_t mc = std::max<int64_t>(mr, kMc / mr * mr);
  const int64_t nc = std::max<int64_t>(nr, kNc / nr * nr);
  static Scratch packedA;
  static Scratch packedB;
  const MatrixView bColumns{b.data, b.colStride, b.rowStride};  // B^T: its rows are B's columns
  const int64_t bStrips = ceilDiv(n, nr);
  for (int64_t row0 = 0; row0 < m; row0 += kRowChunk) {
    const int64_t rows = std::min(kRowChunk, m - row0);
    const int64_t aStrips = ceilDiv(rows, mr);
    for (int64_t k0 = 0; k0 < k; k0 += kKc) {
      const int64_t depth = std::min(kKc, k - k0);
      float* pa = packedA.floats(static_cast<size_t>(aStrips * mr * depth));
      float* pb = packedB.floats(static_cast<size_t>(bStrips * nr * depth));
      parallelFor(aStrips + bStrips, [&](int64_t strip) {
        if (strip < aStrips) {
          const int64_t i0 = strip * mr;
          packRows(a, row0 + i0, std::min<int64_t>(mr, rows - i0), k0, depth, mr, pa + strip * mr * depth);
        } else {
          const int64_t j0 = (strip - aStrips) * nr;
          packRows(bColumns, j0, std::min<int64_t>(nr, n - j0), k0, depth, nr, pb + (strip - aStrips) * nr * depth);
        }
      });
      const int64_t rowBlocks = ceilDiv(rows, mc);
      const int64_t columnBlocks = ceilDiv(n, nc);
      const bool add = accumulate || k0 > 0;
      parallelFor(rowBlocks * columnBlocks, [&](int64_t item) {
        const int64_t i0 = (item % rowBlocks) * mc;
        const int64_t j0 = (item / rowBlocks) * nc;
        const int64_t i1 = std::min(rows, i0 + mc);
        const int64_t j1 = std::min(n, j0 + nc);
        for (int64_t j = j0; j < j1; j += nr) {
          for (int64_t i = i0; i < i1; i += mr) {
            const Segment segment{pa + (i / mr) * mr * depth, pb + (j / nr) * nr * depth, depth};
            const Tile tile{&segment, 1, c + (row0 + i) * ldc + j, ldc, static_cast<int>(std::min<int64_t>(mr, i1 - i)),
                            static_cast<int>(std::min<int64_t>(nr, j1 - j)), add};
            kernel.run(tile);
          }
        }
      });
    }
  }
}

}  // namespace bsk
