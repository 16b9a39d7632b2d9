// The bench programs' patterns: random block-sparse patterns built on the host (CSR, the transpose, coordinates) and
// uploaded as a BsrPatternView (with kernels-cuda/dev/, the grouped tiles' schedules too).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../src/bsr_pattern.h"
#include "../src/tc/patch_list.h"
#include "check_cuda.h"
#ifndef TC_BENCH_NO_DEV
#include "../dev/dev_variants.h"
#include "../dev/group_schedule.h"
#endif

namespace {

using bs::BsrPatternView;

// splitmix64: seeds for the device fills and the host's choices.
struct Rng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }
};

// A block shape R x C (rows x columns of W), written R or RxC.
struct BlockShape {
  int r, c;
  std::string label() const { return r == c ? std::to_string(r) : std::to_string(r) + "x" + std::to_string(c); }
};

struct HostPattern {
  int64_t rows, cols;
  int r, c, blockRows, blockCols, nnz;
  std::vector<int32_t> rowPtr, colIdx, colPtr, rowIdx, valueIndex, coordRow, coordCol;
};

// Each block present with probability `density` (rows of unequal length, as in real patterns), or with `equalRows`
// round(density x block columns) blocks at random columns in every block row (rows of equal length).
HostPattern makePattern(int64_t rows, int64_t cols, BlockShape block, double density, Rng& rng, bool equalRows = false) {
  HostPattern p;
  p.rows = rows;
  p.cols = cols;
  p.r = block.r;
  p.c = block.c;
  p.blockRows = static_cast<int>(rows / block.r);
  p.blockCols = static_cast<int>(cols / block.c);
  p.rowPtr.push_back(0);
  const int perRow = std::max(1, static_cast<int>(std::lround(std::min(density, 1.0) * p.blockCols)));
  std::vector<int32_t> columns(p.blockCols);
  for (int br = 0; br < p.blockRows; ++br) {
    if (equalRows) {
      // The first perRow of a partial Fisher-Yates shuffle, in column order.
      for (int bc = 0; bc < p.blockCols; ++bc) columns[bc] = bc;
      for (int i = 0; i < perRow; ++i) {
        const int j = i + std::min(p.blockCols - 1 - i, static_cast<int>(rng.uniform() * (p.blockCols - i)));
        std::swap(columns[i], columns[j]);
      }
      std::sort(columns.begin(), columns.begin() + perRow);
      p.colIdx.insert(p.colIdx.end(), columns.begin(), columns.begin() + perRow);
    } else {
      for (int bc = 0; bc < p.blockCols; ++bc)
        if (density >= 1.0 || rng.uniform() < density) p.colIdx.push_back(bc);
    }
    p.rowPtr.push_back(static_cast<int32_t>(p.colIdx.size()));
  }
  p.nnz = static_cast<int>(p.colIdx.size());
  for (int br = 0; br < p.blockRows; ++br)
    for (int e = p.rowPtr[br]; e < p.rowPtr[br + 1]; ++e) {
      p.coordRow.push_back(br);
      p.coordCol.push_back(p.colIdx[e]);
    }
  p.colPtr.assign(p.blockCols + 1, 0);
  for (int c : p.colIdx) p.colPtr[c + 1]++;
  for (int c = 0; c < p.blockCols; ++c) p.colPtr[c + 1] += p.colPtr[c];
  p.rowIdx.resize(p.nnz);
  p.valueIndex.resize(p.nnz);
  std::vector<int32_t> fill(p.colPtr.begin(), p.colPtr.end() - 1);
  for (int br = 0; br < p.blockRows; ++br)
    for (int e = p.rowPtr[br]; e < p.rowPtr[br + 1]; ++e) {
      int at = fill[p.colIdx[e]]++;
      p.rowIdx[at] = br;
      p.valueIndex[at] = e;
    }
  return p;
}

struct DevicePattern {
  int32_t* buffer = nullptr;
  BsrPatternView view{};
  DevicePattern() = default;
  DevicePattern(const DevicePattern&) = delete;
  ~DevicePattern() { cudaFree(buffer); }
};

void upload(const HostPattern& p, DevicePattern& d) {
  std::vector<int32_t> packed;
  std::vector<size_t> at;
  for (const std::vector<int32_t>* part : {&p.rowPtr, &p.colIdx, &p.colPtr, &p.rowIdx, &p.valueIndex, &p.coordRow,
                                           &p.coordCol}) {
    at.push_back(packed.size());
    packed.insert(packed.end(), part->begin(), part->end());
  }
  const auto groupLists = bs::appendColumnGroupLists(packed, p.colPtr.data(), p.blockCols);
  // The pair records of the addon's dW patch tile at 32x32 (and dev's variant 32), as the addon builds them on a wgmma
  // device; TC_BENCH_PATCH_SLICES caps their rows + columns otherwise (measurement).
  const char* pairSlices = std::getenv("TC_BENCH_PATCH_SLICES");
  const auto patchPairList =
      bs::appendPatchPairList(packed, p.r, p.c, p.blockRows, p.blockCols, p.rowPtr.data(), p.colIdx.data(),
                              pairSlices != nullptr ? std::atoi(pairSlices) : bs::kPatchPairMaxSlices);
#ifndef TC_BENCH_NO_DEV
  // The block records of dev's mma.sync patch tiles (variants 30 and 31).
  const auto patchList =
      bs::appendPatchList(packed, p.r, p.c, p.blockRows, p.blockCols, p.rowPtr.data(), p.colIdx.data());
  // The rows by block count of dev's decoding kernel of rows in pairs (decoding variant 8).
  const size_t rowOrder = bs::appendDecodeRowOrder(packed, p.rowPtr.data(), p.blockRows);
  // The schedules of dev's grouped tiles (variants 8 and 9 on the mma path, 11 and 12 on wgmma).
  const bool scheduled = p.r == p.c && bs::tc::wantsGroupSchedules(p.r, p.c);
  bs::tc::GroupScheduleOffsets schedules;
  if (scheduled)
    schedules = bs::tc::appendGroupSchedules(packed, p.blockRows, p.blockCols, p.rowPtr.data(), p.colIdx.data(),
                                             p.colPtr.data(), p.rowIdx.data(), p.valueIndex.data(),
                                             bs::tc::multicastStages(p.r));
#endif
  CHECK_CUDA(cudaMalloc(&d.buffer, std::max<size_t>(packed.size(), 1) * 4));
  CHECK_CUDA(cudaMemcpy(d.buffer, packed.data(), packed.size() * 4, cudaMemcpyHostToDevice));
  BsrPatternView& v = d.view;
  v.rows = p.rows;
  v.cols = p.cols;
  v.blockHeight = p.r;
  v.blockWidth = p.c;
  v.blockRows = p.blockRows;
  v.blockCols = p.blockCols;
  v.nnzBlocks = p.nnz;
  v.blockRowPtr = d.buffer + at[0];
  v.blockColIdx = d.buffer + at[1];
  v.blockColPtr = d.buffer + at[2];
  v.blockRowIdx = d.buffer + at[3];
  v.valueIndex = d.buffer + at[4];
  v.coordBlockRow = d.buffer + at[5];
  v.coordBlockCol = d.buffer + at[6];
  bs::bindColumnGroupLists(v, d.buffer, groupLists);
  bs::bindPatchPairList(v, d.buffer, patchPairList);
#ifndef TC_BENCH_NO_DEV
  bs::bindPatchList(v, d.buffer, patchList);
  v.decodeRowOrder = d.buffer + rowOrder;
  if (scheduled) bs::tc::bindGroupSchedules(v, d.buffer, schedules);
#endif
}

}  // namespace
