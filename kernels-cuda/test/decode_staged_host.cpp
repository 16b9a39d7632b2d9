// The staged decoding variant's grid (src/tc/tc_kernels.h: decodeStagedRangesOf, decodeStagedGroupRows,
// decodeStagedWarps) checked on the host: backend-cuda's decode_staged_host.test.ts compiles and runs it wherever nvcc
// is, GPU or not. Over widths, block rows, block heights and SM counts: the ranges cover K once (each
// kDecodeStagedRangeCols wide, the last shorter); a group is 1 to all block rows and the groups cover the block rows
// once; the grid is one wave (at most one CTA per SM) wherever the ranges alone leave room for it, with the fewest
// block rows per group that give that (every row in one group past that); its warps are one per slice of the group,
// at most kDecodeStagedMaxWarps; and the layers measured on an H100 and an H200 (132 SMs) get the grids they ran with.
// The default rule (decodeStagedTakes): a layer of 16 M stored weights or more at density kDecodeStagedMinDensity,
// counted as nn counts blocks (round(density x cells)), is taken whatever the rounding, one block fewer is not, and
// the measured layers are taken or not as measured. And the row order of dev's decoding kernel of rows in pairs (bsr_pattern.h: appendDecodeRowOrder): every block row
// once, by block count, most first, ties by row.
//
//   nvcc -std=c++17 -x cu -I kernels-cuda/src kernels-cuda/test/decode_staged_host.cpp -o decode_staged_host && ./decode_staged_host
#include <cmath>
#include <cstdio>
#include <vector>

#include "bsr_pattern.h"
#include "tc/tc_kernels.h"

using bs::tc::decodeStagedGroupRows;
using bs::tc::decodeStagedRangesOf;
using bs::tc::decodeStagedTakes;
using bs::tc::decodeStagedWarps;
using bs::tc::kDecodeStagedMinDensity;
using bs::tc::kDecodeStagedMinElements;
using bs::tc::kDecodeSliceRows;
using bs::tc::kDecodeStagedMaxWarps;
using bs::tc::kDecodeStagedRangeCols;

namespace {

int failures = 0;
long checks = 0;

void check(bool ok, const char* what, long long a, long long b, long long c, long long d, long long value) {
  ++checks;
  if (ok) return;
  if (++failures <= 20) std::printf("FAIL %s (%lld, %lld, %lld, %lld): %lld\n", what, a, b, c, d, value);
}

long long ctas(long long blockRows, long long group, long long ranges) { return (blockRows + group - 1) / group * ranges; }

void checkGroups() {
  const int heights[] = {16, 32, 64, 128};
  const int smCounts[] = {0, 1, 8, 46, 108, 132, 144};
  for (int height : heights) {
    const int slicesPerRow = height / kDecodeSliceRows;
    for (long long blockRows = 1; blockRows <= 1100; blockRows += blockRows < 64 ? 1 : 7)
      for (long long ranges = 1; ranges <= 300; ranges += ranges < 4 ? 1 : ranges < 40 ? 5 : 60)
        for (int sms : smCounts) {
          const int group = decodeStagedGroupRows(blockRows, ranges, sms);
          const long long groups = (blockRows + group - 1) / group;
          check(group >= 1 && group <= blockRows, "a group is 1 to all block rows", blockRows, height, ranges, sms,
                group);
          check(groups * group >= blockRows && (groups - 1) * group < blockRows, "groups cover the rows once",
                blockRows, height, ranges, sms, group);
          // One wave where the ranges leave room for it (0 and 1 SMs: one group per range).
          const long long room = sms > 1 ? sms : 1;
          if (ranges <= room)
            check(ctas(blockRows, group, ranges) <= room, "at most one CTA per SM", blockRows, height, ranges, sms,
                  group);
          else
            check(group == blockRows, "one group per range past the SMs", blockRows, height, ranges, sms, group);
          if (group > 1 && ranges <= room)
            check(ctas(blockRows, group - 1, ranges) > room, "the fewest rows per group", blockRows, height, ranges,
                  sms, group);
          const long long slices = static_cast<long long>(group) * slicesPerRow;
          const int warps = decodeStagedWarps(group, height);
          check(warps == (slices < kDecodeStagedMaxWarps ? slices : kDecodeStagedMaxWarps),
                "a warp per slice, at most kDecodeStagedMaxWarps", blockRows, height, ranges, sms, warps);
        }
  }
  // The layers measured on an H100 and an H200 (132 SMs): 4096 -> 16384 (K 4096: 4 ranges), 16384 -> 4096 (16 ranges),
  // 4096 x 4096 (4 ranges), in 128 CTAs each.
  struct Case {
    long long rows, cols;
    int height, group;
  };
  const Case layers[] = {{16384, 4096, 32, 16}, {16384, 4096, 64, 8}, {4096, 16384, 32, 16},
                         {4096, 16384, 64, 8},  {4096, 4096, 32, 4},  {4096, 4096, 64, 2}};
  for (const Case& c : layers) {
    const int group = decodeStagedGroupRows(c.rows / c.height, decodeStagedRangesOf(c.cols), 132);
    check(group == c.group, "the layers' groups on 132 SMs", c.rows, c.cols, c.height, 132, group);
  }
}

// The default rule over layer shapes: nn's block count at the bound (round(density x cells), as blockCountFor) is taken
// where the layer stores enough weights, one block fewer never; and the layers of the H100 and H200 runs.
void checkRule() {
  const int sides[][2] = {{32, 32}, {64, 64}, {16, 64}, {128, 16}};
  for (const auto& side : sides)
    for (long long blockRows = 1; blockRows <= 1100; blockRows += blockRows < 40 ? 3 : 37)
      for (long long blockCols = 1; blockCols <= 700; blockCols += blockCols < 20 ? 1 : 29) {
        const double cells = static_cast<double>(blockRows) * static_cast<double>(blockCols);
        const long long atBound = static_cast<long long>(std::llround(kDecodeStagedMinDensity * cells));
        const bool enough = static_cast<double>(atBound) * side[0] * side[1] >= kDecodeStagedMinElements;
        check(decodeStagedTakes(atBound, blockRows, blockCols, side[0], side[1]) == enough,
              "rule: nn's count at the bound taken where the layer is large enough", blockRows, blockCols, side[0],
              side[1], atBound);
        if (atBound > 0)
          check(!decodeStagedTakes(atBound - 1, blockRows, blockCols, side[0], side[1]), "rule: one block fewer is not taken",
                blockRows, blockCols, side[0], side[1], atBound - 1);
        const long long all = blockRows * blockCols;
        check(decodeStagedTakes(all, blockRows, blockCols, side[0], side[1]) ==
                  (static_cast<double>(all) * side[0] * side[1] >= kDecodeStagedMinElements),
              "rule: a dense pattern taken where it is large enough", blockRows, blockCols, side[0], side[1], all);
      }
  // The measured layers (32x32 and 64x64): 4096 <-> 16384 at densities 0.35 and 0.5 taken, at 0.25 and 0.2 not (a
  // feed-forward decoding stack ran slower with it at 0.25), 4096 x 4096 at 0.5 not (8.4 M weights).
  struct Case {
    long long rows, cols;
    int side;
    double density;
    bool taken;
  };
  const Case measured[] = {{16384, 4096, 32, 0.25, false}, {4096, 16384, 64, 0.25, false}, {16384, 4096, 64, 0.5, true},
                           {4096, 16384, 32, 0.35, true},   {16384, 4096, 64, 0.35, true},   {4096, 4096, 32, 0.5, false},
                           {4096, 4096, 64, 0.25, false},   {4096, 16384, 32, 0.2, false}};
  for (const Case& c : measured) {
    const long long blockRows = c.rows / c.side, blockCols = c.cols / c.side;
    const long long count = std::llround(c.density * static_cast<double>(blockRows * blockCols));
    check(decodeStagedTakes(count, blockRows, blockCols, c.side, c.side) == c.taken, "rule: the measured layers", c.rows,
          c.cols, c.side, static_cast<long long>(c.density * 100), count);
  }
}

// appendDecodeRowOrder over random row lengths (empty rows and ties included), appended after other words.
void checkRowOrder() {
  unsigned state = 12345;
  const auto next = [&] { return state = state * 1664525u + 1013904223u; };
  for (int trial = 0; trial < 300; ++trial) {
    const int32_t blockRows = static_cast<int32_t>(next() % 200);
    std::vector<int32_t> rowPtr{0};
    for (int32_t r = 0; r < blockRows; ++r) rowPtr.push_back(rowPtr.back() + static_cast<int32_t>(next() % (trial % 7 + 1)));
    std::vector<int32_t> packed(trial % 5, -7);
    const size_t at = bs::appendDecodeRowOrder(packed, rowPtr.data(), blockRows);
    check(at == static_cast<size_t>(trial % 5) && packed.size() == at + blockRows, "row order: appended", trial, blockRows,
          0, 0, static_cast<long long>(packed.size()));
    std::vector<int> seen(blockRows, 0);
    for (int32_t i = 0; i < blockRows; ++i) {
      const int32_t row = packed[at + i];
      const bool valid = row >= 0 && row < blockRows;
      check(valid, "row order: a block row", trial, i, 0, 0, row);
      if (!valid) continue;
      ++seen[row];
      if (i == 0) continue;
      const int32_t before = packed[at + i - 1];
      const int32_t countBefore = rowPtr[before + 1] - rowPtr[before], count = rowPtr[row + 1] - rowPtr[row];
      check(countBefore > count || (countBefore == count && before < row), "row order: most first, ties by row", trial, i,
            countBefore, count, row);
    }
    for (int32_t r = 0; r < blockRows; ++r) check(seen[r] == 1, "row order: every row once", trial, r, 0, 0, seen[r]);
  }
}

}  // namespace

int main() {
  for (long long cols = 16; cols <= 40000; cols += cols < 2200 ? 16 : 1000) {
    const long long ranges = decodeStagedRangesOf(cols);
    check(ranges >= 1 && ranges * kDecodeStagedRangeCols >= cols && (ranges - 1) * kDecodeStagedRangeCols < cols,
          "ranges cover K once", cols, 0, 0, 0, ranges);
  }
  checkGroups();
  checkRule();
  checkRowOrder();
  if (failures > 0) {
    std::printf("%d of %ld checks failed\n", failures, checks);
    return 1;
  }
  std::printf("ok: %ld checks\n", checks);
  return 0;
}
