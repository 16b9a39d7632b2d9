// The dW patch tiles' records (src/tc/patch_list.h) checked on the host: backend-cuda's patch_list_host.test.ts
// compiles and runs it wherever nvcc is, GPU or not. Over random 32x32 patterns (1-80 block rows and columns, densities
// from one block to full, empty rows and columns) and slice caps:
// - every stored block is in exactly one record, as the value its (row, column) names;
// - the pair records (bsr_wgmma_patch_dw.cu): at most kPatchPairProducts products, rows + columns within the cap, each
//   product two blocks of one column (rows ascending) or one block whose unwritten second half reads the slice after
//   it, every slice a product reads inside the record's stage (rows + columns slices), padding as the tile expects;
// - the block records (dev's mma.sync patch tile): at most kPatchMaxBlocks blocks, slots inside the record;
// - patchSides stays within the pattern and the cap; no records for other block shapes or an empty pattern.
//
//   nvcc -std=c++17 -x cu -I kernels-cuda/src kernels-cuda/test/patch_list_host.cpp -o patch_list_host && ./patch_list_host
#include <cstdio>
#include <random>
#include <vector>

#include "tc/patch_list.h"

using bs::appendPatchList;
using bs::appendPatchPairList;
using bs::kPatchHeaderWords;
using bs::kPatchMaxBlocks;
using bs::kPatchMaxSlices;
using bs::kPatchPairMaxSlices;
using bs::kPatchPairProducts;
using bs::kPatchPairRecordWords;
using bs::kPatchRecordWords;
using bs::patchSides;

namespace {

int failures = 0;
long checks = 0;

struct Pattern {
  int32_t rows, cols;
  std::vector<int32_t> rowPtr, colIdx;
  std::vector<int32_t> rowOf, colOf;  // value p's block row and column
};

void check(bool ok, const char* what, const Pattern& p, double density, int32_t cap, int64_t at) {
  ++checks;
  if (ok) return;
  if (++failures <= 20)
    std::printf("FAIL %s: %d x %d block rows x columns, density %.3f, slice cap %d, at %lld\n", what, p.rows, p.cols,
                density, cap, static_cast<long long>(at));
}

// Each block kept with probability `density`, columns ascending in a row (as createPattern requires); value p is entry p.
Pattern randomPattern(std::mt19937& rng, int32_t rows, int32_t cols, double density) {
  Pattern p{rows, cols, {0}, {}, {}, {}};
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int32_t r = 0; r < rows; ++r) {
    for (int32_t c = 0; c < cols; ++c)
      if (u(rng) < density) {
        p.colIdx.push_back(c);
        p.rowOf.push_back(r);
        p.colOf.push_back(c);
      }
    p.rowPtr.push_back(static_cast<int32_t>(p.colIdx.size()));
  }
  return p;
}

void checkPairRecords(const Pattern& p, double density, int32_t cap) {
  const int32_t nnz = p.rowPtr.back();
  std::vector<int32_t> packed = {7, 7, 7};  // records are appended after what the buffer already holds
  const auto offsets = appendPatchPairList(packed, 32, 32, p.rows, p.cols, p.rowPtr.data(), p.colIdx.data(), cap);
  const int32_t slicesCap = std::clamp(cap, 2, kPatchMaxSlices);
  check(offsets.begin == 3, "pair records begin after the buffer's words", p, density, cap, offsets.begin);
  check(packed.size() == 3 + static_cast<size_t>(offsets.items) * kPatchPairRecordWords, "pair records' size", p, density,
        cap, packed.size());
  check((nnz == 0) == (offsets.items == 0), "records only for stored blocks", p, density, cap, offsets.items);
  check(offsets.items <= nnz, "at most one record per block", p, density, cap, offsets.items);
  std::vector<int> seen(nnz, 0);
  for (int32_t i = 0; i < offsets.items; ++i) {
    const int32_t* rec = packed.data() + offsets.begin + static_cast<size_t>(i) * kPatchPairRecordWords;
    const int32_t row0 = rec[0], col0 = rec[1], rows = rec[2] >> 16, cols = rec[2] & 0xffff, n = rec[3];
    check(row0 >= 0 && rows >= 1 && row0 + rows <= p.rows, "record rows inside W", p, density, cap, i);
    check(col0 >= 0 && cols >= 1 && col0 + cols <= p.cols, "record columns inside W", p, density, cap, i);
    check(rows + cols <= slicesCap, "record slices within the cap", p, density, cap, rows + cols);
    check(n >= 1 && n <= kPatchPairProducts, "record product count", p, density, cap, n);
    bool usesFirstRow = false, usesLastRow = false, usesFirstCol = false, usesLastCol = false;
    for (int32_t e = 0; e < kPatchPairProducts; ++e) {
      const int32_t* q = rec + kPatchHeaderWords + 4 * e;
      const int32_t first = q[0] >> 16, second = q[0] & 0xffff, column = q[1], a = q[2], b = q[3];
      // What the tile reads for every product, padding included: A two slices `first` and `second` of the stage's
      // rows + cols, B slice rows + column.
      check(first >= 0 && second > first && second < rows + cols, "A's slices inside the stage", p, density, cap, e);
      check(column >= 0 && rows + column < rows + cols, "B's slice inside the stage", p, density, cap, e);
      if (e >= n) {
        check(q[0] == 1 && column == 0 && a == -1 && b == -1, "padding product", p, density, cap, e);
        continue;
      }
      check(a >= 0 && a < nnz, "first block's value in range", p, density, cap, a);
      if (a < 0 || a >= nnz) continue;
      ++seen[a];
      check(first < rows && p.rowOf[a] == row0 + first && p.colOf[a] == col0 + column, "first block's place", p,
            density, cap, a);
      usesFirstRow |= first == 0;
      usesLastRow |= first == rows - 1;
      usesFirstCol |= column == 0;
      usesLastCol |= column == cols - 1;
      if (b == -1) {
        check(second == first + 1, "a lone block's unwritten half is the next slice", p, density, cap, e);
        continue;
      }
      check(b >= 0 && b < nnz, "second block's value in range", p, density, cap, b);
      if (b < 0 || b >= nnz) continue;
      ++seen[b];
      check(second < rows && p.rowOf[b] == row0 + second && p.colOf[b] == col0 + column, "second block's place", p,
            density, cap, b);
      usesLastRow |= second == rows - 1;
    }
    check(usesFirstRow && usesLastRow && usesFirstCol && usesLastCol, "record spans exactly its products' slices", p,
          density, cap, i);
  }
  for (int32_t v = 0; v < nnz; ++v) check(seen[v] == 1, "every block in exactly one pair record", p, density, cap, v);
}

void checkBlockRecords(const Pattern& p, double density) {
  const int32_t nnz = p.rowPtr.back();
  std::vector<int32_t> packed;
  const auto offsets = appendPatchList(packed, 32, 32, p.rows, p.cols, p.rowPtr.data(), p.colIdx.data());
  check(packed.size() == static_cast<size_t>(offsets.items) * kPatchRecordWords, "block records' size", p, density, 0,
        packed.size());
  std::vector<int> seen(nnz, 0);
  for (int32_t i = 0; i < offsets.items; ++i) {
    const int32_t* rec = packed.data() + static_cast<size_t>(i) * kPatchRecordWords;
    const int32_t row0 = rec[0], col0 = rec[1], rows = rec[2] >> 16, cols = rec[2] & 0xffff, n = rec[3];
    check(rows >= 1 && cols >= 1 && rows + cols <= kPatchMaxSlices, "block record slices", p, density, 0, i);
    check(n >= 1 && n <= kPatchMaxBlocks, "block record count", p, density, 0, n);
    for (int32_t e = 0; e < kPatchMaxBlocks; ++e) {
      const int32_t v = rec[kPatchHeaderWords + 2 * e], slot = rec[kPatchHeaderWords + 2 * e + 1];
      if (e >= n) {
        check(v == -1 && slot == 0, "block record padding", p, density, 0, e);
        continue;
      }
      const int32_t r = slot >> 16, c = slot & 0xffff;
      check(v >= 0 && v < nnz && r < rows && c < cols, "block record entry in range", p, density, 0, e);
      if (v < 0 || v >= nnz) continue;
      ++seen[v];
      check(p.rowOf[v] == row0 + r && p.colOf[v] == col0 + c, "block record entry's place", p, density, 0, v);
    }
  }
  for (int32_t v = 0; v < nnz; ++v) check(seen[v] == 1, "every block in exactly one block record", p, density, 0, v);
}

}  // namespace

int main() {
  std::mt19937 rng(20261205);
  const double densities[] = {0.0, 0.01, 0.05, 0.1, 0.16, 0.25, 0.27, 0.5, 0.9, 1.0};
  const int32_t caps[] = {kPatchPairMaxSlices, 2, 3, 13, kPatchMaxSlices, 40};
  std::uniform_int_distribution<int32_t> side(1, 80);
  for (int round = 0; round < 60; ++round) {
    const int32_t rows = round < 4 ? 1 + round % 2 : side(rng), cols = round < 4 ? 1 + round / 2 : side(rng);
    for (double density : densities) {
      const Pattern p = randomPattern(rng, rows, cols, density);
      for (int32_t cap : caps) checkPairRecords(p, density, cap);
      checkBlockRecords(p, density);
      if (p.rowPtr.back() > 0)
        for (int32_t cap : caps) {
          const auto s = patchSides(rows, cols, p.rowPtr.back(), cap);
          check(s[0] >= 1 && s[1] >= 1 && s[0] <= rows && s[1] <= cols && s[0] + s[1] <= std::clamp(cap, 2, kPatchMaxSlices),
                "patchSides within the pattern and the cap", p, density, cap, s[0] << 16 | s[1]);
        }
    }
  }
  // Other block shapes, and a pattern with no blocks, have no records.
  const Pattern full = randomPattern(rng, 8, 8, 1.0);
  for (int32_t r : {16, 64}) {
    std::vector<int32_t> packed;
    const auto o = appendPatchPairList(packed, r, r, 8, 8, full.rowPtr.data(), full.colIdx.data());
    check(o.items == 0 && packed.empty(), "no pair records but for 32x32 blocks", full, 1.0, r, o.items);
    const auto b = appendPatchList(packed, r, 32, 8, 8, full.rowPtr.data(), full.colIdx.data());
    check(b.items == 0 && packed.empty(), "no block records but for 32x32 blocks", full, 1.0, r, b.items);
  }
  if (failures > 0) {
    std::printf("%d of %ld checks failed\n", failures, checks);
    return 1;
  }
  std::printf("ok: %ld checks\n", checks);
  return 0;
}
