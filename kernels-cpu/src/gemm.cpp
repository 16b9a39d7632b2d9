// Dense C = A B, BLIS-style: B is packed once per panel of columns (all of K, kept in L3), then
// each work item packs its own block of A rows one K slice at a time (in its core's L2) and runs
// the micro-kernel over its columns of the panel, a B micro-panel (kKc x nr) staying in L1 while the
// A strips pass. Items are row blocks, split by columns too when there are few rows, so every
// thread has work; one barrier per B panel.
#include <algorithm>
#include <vector>

#include "half.h"
#include "microkernel.h"
#include "overflow.h"
#include "pack.h"
#include "products.h"
#include "scratch.h"
#include "stream.h"
#include "threads.h"

namespace bsk {
namespace {

// K slice: a packed B micro-panel (kKc x nr floats, 32 KiB with nr = 32) fits L1.
constexpr int64_t kKc = 256;
// Rows per A block: kMc x kKc floats (128 KiB) stay in L2.
constexpr int64_t kMc = 128;
// Floats of one packed B panel (K x columns): 4 MiB, shared by all threads from L3.
constexpr int64_t kPanelFloats = int64_t(1) << 20;
// Columns per work item at least, when row blocks are split by columns.
constexpr int64_t kMinItemColumns = 128;
// Columns per work item of the few-row path.
constexpr int64_t kStreamColumns = 256;

// K steps of one dot product of the few-row path with B's columns contiguous, each slice's sum added to a float32 total:
// one dot over a K of 2^20 (64 float32 lanes of 16384 steps each) had drifted 1.5e-4 from js's float64 sums.
constexpr int64_t kDotSlice = 4096;

// K slice of the js backend's tiled matmul (core's compute/matmul.ts, KC), which rounds C to float32
// after each, and the rows from which it tiles (FEW_ROWS; fewer sum all of K in float64).
constexpr int64_t kJsSlice = 512;
constexpr int64_t kJsFewRows = 8;

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Recomputes the infinite or NaN outputs among rows [i0, i1) and columns [j0, j1) of C = A B as the
// js backend does (overflow.h): one check per row, so a finite product pays one pass over its output.
void repairOverflow(MatrixView a, MatrixView b, float* c, int64_t ldc, int64_t m, int64_t k, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  const int64_t slice = m < kJsFewRows ? k : kJsSlice;
  for (int64_t i = i0; i < i1; i++) {
    float* row = c + i * ldc;
    if (!anyNonFinite(row + j0, j1 - j0)) continue;
    const float* ai = a.data + i * a.rowStride;
    for (int64_t j = j0; j < j1; j++) {
      if (!isNonFinite(row[j])) continue;
      const float* bj = b.data + j * b.colStride;
      row[j] = jsSum(k, slice, 0.0, [&](int64_t p) { return double(ai[p * a.colStride]) * double(bj[p * b.rowStride]); });
    }
  }
}

// sum_p a[p] b[p] over k steps, in slices of kDotSlice added to a float32 total.
float slicedDot(const float* a, const float* b, int64_t k) {
  float total = 0.0f;
  for (int64_t p0 = 0; p0 < k; p0 += kDotSlice) total += dot(a + p0, b + p0, std::min(kDotSlice, k - p0));
  return total;
}

// slicedDot with b as half bits widened in registers (dotHalf): the same slices and lanes, the same bits.
float slicedDotHalf(const float* a, const uint16_t* b, int64_t k, bool bfloat) {
  float total = 0.0f;
  for (int64_t p0 = 0; p0 < k; p0 += kDotSlice) total += dotHalf(a + p0, b + p0, std::min(kDotSlice, k - p0), bfloat);
  return total;
}

void zeroRows(float* c, int64_t ldc, int64_t m, int64_t n) {
  for (int64_t i = 0; i < m; i++) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
}

// Runs body(i) for i in [0, count): over the pool, or on the calling thread alone (gemmSerial: inside a pool's item).
struct PoolItems {
  static constexpr bool kSerial = false;
  template <typename Body>
  void operator()(int64_t count, const Body& body) const {
    parallelFor(count, body);
  }
  int threads() const { return threadCount(); }
};
struct CallerItems {
  static constexpr bool kSerial = true;
  template <typename Body>
  void operator()(int64_t count, const Body& body) const {
    for (int64_t i = 0; i < count; i++) body(i);
  }
  int threads() const { return 1; }
};

// m <= kDecodeMaxRows: every element of B is read once, from memory, in its stored order.
template <typename Items>
void gemmFewRows(MatrixView a, MatrixView b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k, bool accumulate, Items forEach) {
  // A is tiny: a contiguous copy makes every row a stride-1 vector.
  std::vector<float> rowsOfA(static_cast<size_t>(m * k));
  for (int64_t i = 0; i < m; i++) {
    for (int64_t p = 0; p < k; p++) rowsOfA[i * k + p] = a.data[i * a.rowStride + p * a.colStride];
  }
  const int64_t items = ceilDiv(n, kStreamColumns);
  if (b.rowStride == 1) {
    // B's columns are contiguous (B = W^T of a row-major W): one dot product per output.
    forEach(items, [&](int64_t item) {
      const int64_t j0 = item * kStreamColumns;
      const int64_t j1 = std::min(n, j0 + kStreamColumns);
      for (int64_t j = j0; j < j1; j++) {
        const float* column = b.data + j * b.colStride;
        for (int64_t i = 0; i < m; i++) {
          const float value = slicedDot(rowsOfA.data() + i * k, column, k);
          c[i * ldc + j] = accumulate ? c[i * ldc + j] + value : value;
        }
      }
      if (!accumulate) repairOverflow(a, b, c, ldc, m, k, 0, m, j0, j1);
    });
    return;
  }
  forEach(items, [&](int64_t item) {
    const int64_t j0 = item * kStreamColumns;
    const int64_t width = std::min(n, j0 + kStreamColumns) - j0;
    // Each K slice of kKc sums into its own partial, then into the output's: one float32 chain over all of K
    // (a million steps) had drifted 1% from js's float64 sums, where slices keep it as close as the tiled path.
    float sums[kDecodeMaxRows][kStreamColumns] = {};
    float slice[kDecodeMaxRows][kStreamColumns];
    for (int64_t k0 = 0; k0 < k; k0 += kKc) {
      float(*acc)[kStreamColumns] = k0 == 0 ? sums : slice;
      if (k0 > 0) {
        for (int64_t i = 0; i < m; i++) std::fill(slice[i], slice[i] + width, 0.0f);
      }
      for (int64_t p = k0; p < std::min(k, k0 + kKc); p++) {
        const float* line = b.data + p * b.rowStride + j0 * b.colStride;
        for (int64_t i = 0; i < m; i++) {
          if (b.colStride == 1) {
            axpy(rowsOfA[i * k + p], line, acc[i], width);
          } else {
            for (int64_t j = 0; j < width; j++) acc[i][j] += rowsOfA[i * k + p] * line[j * b.colStride];
          }
        }
      }
      if (k0 > 0) {
        for (int64_t i = 0; i < m; i++) {
          for (int64_t j = 0; j < width; j++) sums[i][j] += slice[i][j];
        }
      }
    }
    for (int64_t i = 0; i < m; i++) {
      float* out = c + i * ldc + j0;
      for (int64_t j = 0; j < width; j++) out[j] = accumulate ? out[j] + sums[i][j] : sums[i][j];
    }
    if (!accumulate) repairOverflow(a, b, c, ldc, m, k, 0, m, j0, j0 + width);
  });
}

// Every element of C is summed by the same micro-kernel calls, in the same K slices, whichever items and threads
// compute it: gemm and gemmSerial give the same bits.
template <typename Items>
void gemmOn(MatrixView a, MatrixView b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k, bool accumulate, Items forEach) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate) zeroRows(c, ldc, m, n);
    return;
  }
  if (m <= kDecodeMaxRows) {
    gemmFewRows(a, b, c, ldc, m, n, k, accumulate, forEach);
    return;
  }
  const MicroKernel& kernel = activeKernel();
  const int mr = kernel.mr;
  const int nr = kernel.nr;
  const int64_t mc = std::max<int64_t>(mr, kMc / mr * mr);
  const int64_t mBlocks = ceilDiv(m, mc);
  const int64_t kSlices = ceilDiv(k, kKc);
  const int64_t panelColumns = std::min(ceilDiv(n, nr) * nr, std::max<int64_t>(nr, kPanelFloats / k / nr * nr));
  // The pool's product packs B once for all threads; a serial one, run by each thread at once, packs its own.
  static Scratch sharedPackedB;
  thread_local Scratch ownPackedB;
  Scratch& packedB = Items::kSerial ? ownPackedB : sharedPackedB;
  float* pb = packedB.floats(static_cast<size_t>(ceilDiv(panelColumns, nr) * nr * k));
  const MatrixView bColumns{b.data, b.colStride, b.rowStride};  // B^T: its rows are B's columns
  for (int64_t j0 = 0; j0 < n; j0 += panelColumns) {
    const int64_t strips = ceilDiv(std::min(panelColumns, n - j0), nr);
    // Slice s of strip js: depth x nr floats at pb + s * kKc * strips * nr + js * depth * nr.
    forEach(strips, [&](int64_t js) {
      const int64_t first = j0 + js * nr;
      const int64_t lines = std::min<int64_t>(nr, n - first);
      for (int64_t k0 = 0; k0 < k; k0 += kKc) {
        const int64_t depth = std::min(kKc, k - k0);
        packRows(bColumns, first, lines, k0, depth, nr, pb + k0 * strips * nr + js * depth * nr);
      }
    });
    const int64_t wantedParts = ceilDiv(2 * forEach.threads(), mBlocks);
    const int64_t maxParts = std::max<int64_t>(1, strips * nr / kMinItemColumns);
    const int64_t stripsPerPart = ceilDiv(strips, std::min(wantedParts, maxParts));
    const int64_t parts = ceilDiv(strips, stripsPerPart);
    forEach(mBlocks * parts, [&](int64_t item) {
      const int64_t i0 = (item / parts) * mc;
      const int64_t rows = std::min(mc, m - i0);
      const int64_t aStrips = ceilDiv(rows, mr);
      const int64_t js0 = (item % parts) * stripsPerPart;
      const int64_t js1 = std::min(strips, js0 + stripsPerPart);
      thread_local Scratch packedA;
      float* pa = packedA.floats(static_cast<size_t>(aStrips * mr * kKc));
      for (int64_t slice = 0; slice < kSlices; slice++) {
        const int64_t k0 = slice * kKc;
        const int64_t depth = std::min(kKc, k - k0);
        for (int64_t s = 0; s < aStrips; s++) {
          packRows(a, i0 + s * mr, std::min<int64_t>(mr, rows - s * mr), k0, depth, mr, pa + s * mr * depth);
        }
        const bool add = accumulate || slice > 0;
        for (int64_t js = js0; js < js1; js++) {
          const float* bStrip = pb + k0 * strips * nr + js * depth * nr;
          const int64_t column = j0 + js * nr;
          const int cols = static_cast<int>(std::min<int64_t>(nr, n - column));
          for (int64_t s = 0; s < aStrips; s++) {
            const Segment segment{pa + s * mr * depth, bStrip, depth};
            kernel.run(Tile{&segment, 1, c + (i0 + s * mr) * ldc + column, ldc, static_cast<int>(std::min<int64_t>(mr, rows - s * mr)), cols, add});
          }
        }
      }
      // This item's block of C is complete (every K slice added).
      if (!accumulate) repairOverflow(a, b, c, ldc, m, k, i0, i0 + rows, j0 + js0 * nr, std::min(n, j0 + js1 * nr));
    });
  }
}

}  // namespace

void gemm(MatrixView a, MatrixView b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k, bool accumulate) {
  gemmOn(a, b, c, ldc, m, n, k, accumulate, PoolItems{});
}

void gemmSerial(MatrixView a, MatrixView b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k, bool accumulate) {
  gemmOn(a, b, c, ldc, m, n, k, accumulate, CallerItems{});
}

void linearHalf(const float* x, const uint16_t* w, bool bfloat, float* y, int64_t m, int64_t n, int64_t k) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    zeroRows(y, n, m, n);
    return;
  }
  if (m > kDecodeMaxRows) {
    // Many rows reuse each weight: widened once, in parallel, then the float32 product.
    static Scratch wideWeights;
    float* wide = wideWeights.floats(static_cast<size_t>(n * k));
    widenHalf(w, n * k, bfloat, wide);
    gemm(MatrixView{x, k, 1}, MatrixView{wide, 1, k}, y, n, m, n, k, false);
    return;
  }
  // Few rows, as gemmFewRows with W's rows contiguous: each row of W read once from memory and dotted with every row of
  // x, in the lanes and slices of slicedDot (the same bits as on the widened weights). One row of x: widened in
  // registers inside the dot; more: widened once into a buffer in L1 that each dot reads (widening it again for every
  // row of x had made 4 rows of float16 slower than float32's).
  parallelFor(ceilDiv(n, kStreamColumns), [&](int64_t item) {
    thread_local Scratch rowScratch;
    float* wide = m > 1 ? rowScratch.floats(static_cast<size_t>(k)) : nullptr;
    const int64_t j0 = item * kStreamColumns;
    const int64_t j1 = std::min(n, j0 + kStreamColumns);
    for (int64_t j = j0; j < j1; j++) {
      const uint16_t* row = w + j * k;
      if (m > 1) widenHalfSerial(row, k, bfloat, wide);
      bool overflowed = false;
      for (int64_t i = 0; i < m; i++) {
        const float total = m == 1 ? slicedDotHalf(x, row, k, bfloat) : slicedDot(x + i * k, wide, k);
        y[i * n + j] = total;
        overflowed = overflowed || isNonFinite(total);
      }
      if (!overflowed) continue;
      // An infinite or NaN output (a float32 partial sum that overflowed) recomputed as the js backend sums (overflow.h).
      if (m == 1) {
        wide = rowScratch.floats(static_cast<size_t>(k));
        widenHalfSerial(row, k, bfloat, wide);
      }
      const int64_t slice = m < kJsFewRows ? k : kJsSlice;
      for (int64_t i = 0; i < m; i++) {
        if (isNonFinite(y[i * n + j])) y[i * n + j] = jsSum(k, slice, 0.0, [&](int64_t p) { return double(x[i * k + p]) * double(wide[p]); });
      }
    }
  });
}

}  // namespace bsk
