// The three block-sparse products on the packed micro-kernel, plus streaming paths for few tokens.
//
// Y = X W^T and dX = dY W are one shape of work: the output's columns come in groups (a block row
// of W for Y, a block column for dX), and each group is a dense product whose K dimension runs
// over the group's blocks. The token operand is packed once per chunk of tokens, each group's
// blocks once per call, so a block's K segment is a contiguous slice of both. Groups narrower than
// half the register tile (1x1, 1xC, 4x4 blocks in Y, Rx1 in dX) take lines of tokens instead (groupedLines).
#include <algorithm>
#include <vector>

#include "half.h"
#include "microkernel.h"
#include "overflow.h"
#include "pack.h"
#include "products.h"
#include "scratch.h"
#include "threads.h"

namespace bsk {
namespace {

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Floats of packed token operand per chunk (2 MiB): the chunk stays in L2/L3 while groups reuse it.
constexpr int64_t kPackedTokenFloats = int64_t(1) << 19;
// Token strips per work item (with an 8-row kernel, 64 tokens).
constexpr int64_t kStripsPerItem = 8;
// Tokens per chunk of the sampled product (K of its tiles).
constexpr int64_t kSampledTokenChunk = 256;
// Tokens per K slice of the js backend's sampledMatmul (core's compute/sampled_matmul.ts, TOKEN_CHUNK),
// which rounds dW to float32 after each: the infinite or NaN outputs are recomputed so (overflow.h).
constexpr int64_t kJsSampledSlice = 128;
// K steps a register tile sums before adding to its float32 output, as the dense product adds its K slices (1024,
// not 256, so a block row of up to 1024 steps still runs once): one float32 chain over a whole block row of 2048
// blocks (65536 steps) had drifted 6e-4 from js's float64 sums.
constexpr int64_t kSliceSteps = 1024;
// Floats of token lines per chunk of the narrow groups' line route (512 KiB): each K step reads a whole line, with no
// register tile's reuse, so the chunk stays in L2 (the 2 MiB of the strips had run 1.5-2x slower from L3).
constexpr int64_t kLineTokenFloats = int64_t(1) << 17;
// Token tiles of kLineSumTokens per work item of the narrow groups' line route (128 tokens), and the output columns
// it covers at least (64 floats: whole cache lines of every output row it writes).
constexpr int64_t kLineTilesPerItem = 2;
constexpr int64_t kLineRunColumns = 64;
// Blocks of one block row per work item of the sampled product.
constexpr int64_t kSampledRun = 8;
// Outputs per work item of the sampled product's line route (4096 outputs: 1M FMAs at 256 tokens).
constexpr int64_t kSampledLineOutputs = 4096;
// Lines the line route packs per work item, and hands the line kernel per call.
constexpr int64_t kLinesPerPack = 64;
constexpr int64_t kLinesPerCall = 256;
// Work items per thread of the few-token products (contiguous stretches of the values).
constexpr int64_t kDecodeRunsPerThread = 4;
// Rows of a block row the few-token bsrLinear sums at once: its lanes stay tokens x 512 x kDotLanes floats
// (256 KiB at 8 tokens) whatever the block height (a block of 2^22 x 1 had taken 2 GiB per thread).
constexpr int64_t kDecodeRowChunk = 512;
// Floats of a half block the few-token bsrLinear widens at once (16 KiB, in L1 for the block's dot products); a row
// wider than that is widened whole.
constexpr int64_t kDecodeHalfFloats = 4096;

// Splits [0, outer) into at most `parts` runs [runs[i], runs[i + 1]) of about equal ptr counts.
std::vector<int64_t> balancedRuns(const int32_t* ptr, int64_t outer, int64_t parts) {
  std::vector<int64_t> runs{0};
  const int64_t total = ptr[outer];
  for (int64_t part = 1; part < parts; part++) {
    const int64_t target = total * part / parts;
    int64_t at = runs.back();
    while (at < outer && ptr[at] < target) at++;
    if (at > runs.back()) runs.push_back(at);
  }
  if (runs.back() < outer) runs.push_back(outer);
  return runs;
}

// Whether `width` lines fill whole strips of `lanes`: padding them to whole strips at most doubles them.
bool fillsStrips(int64_t width, int lanes) { return ceilDiv(width, lanes) * lanes <= 2 * width; }

// The token operand packed per chunk, shared by the grouped products' routes (the process keeps the larger ask).
Scratch& packedTokenScratch() {
  static Scratch packedTokens;
  return packedTokens;
}

// Column groups of one product: group g is output columns [g * width, (g + 1) * width) and sums
// the blocks at positions [groupPtr[g], groupPtr[g + 1]); the block at position p multiplies the
// token operand's K slice [segmentIndex[p] * segmentLength, ... + segmentLength).
struct ColumnGroups {
  int64_t groups;
  int64_t width;
  int64_t segmentLength;
  const int32_t* groupPtr;
  const int32_t* segmentIndex;
  // The block at position p is values[valueIndex[p]] (null: values[p]).
  const int32_t* valueIndex;
  // B(k, n) = block(n, k) when true (Y = X W^T), block(k, n) otherwise (dX = dY W).
  bool transposeBlock;
};

// Group g's outputs of tokens [i0, i1) that are infinite or NaN (a float32 partial sum that overflowed), recomputed in
// float64 over the group's blocks, as the js backend sums them (overflow.h).
void repairGroupRows(const float* a, int64_t depth, const float* values, int64_t blockHeight, int64_t blockWidth,
                     const ColumnGroups& groups, const float* bias, float* out, int64_t g, int64_t i0, int64_t i1) {
  const int64_t ldOut = groups.groups * groups.width;
  const int64_t seg = groups.segmentLength;
  const int64_t first = groups.groupPtr[g];
  const int64_t count = groups.groupPtr[g + 1] - first;
  for (int64_t i = i0; i < i1; i++) {
    float* row = out + i * ldOut + g * groups.width;
    if (!anyNonFinite(row, groups.width)) continue;
    const float* tokenRow = a + i * depth;
    for (int64_t j = 0; j < groups.width; j++) {
      if (!isNonFinite(row[j])) continue;
      const double add = bias != nullptr ? double(bias[g * groups.width + j]) : 0.0;
      row[j] = jsSum(count * seg, count * seg, add, [&](int64_t p) {
        const int64_t q = first + p / seg;
        const int64_t s = p % seg;
        const int64_t block = groups.valueIndex != nullptr ? groups.valueIndex[q] : q;
        const float* w = values + block * blockHeight * blockWidth;
        const float b = groups.transposeBlock ? w[j * blockWidth + s] : w[s * blockWidth + j];
        return double(tokenRow[groups.segmentIndex[q] * seg + s]) * double(b);
      });
    }
  }
}

void groupedProduct(const float* a, int64_t tokens, int64_t depth, const float* values, int64_t blockHeight,
                    int64_t blockWidth, const ColumnGroups& groups, const float* bias, float* out) {
  const int64_t ldOut = groups.groups * groups.width;
  const MicroKernel& kernel = activeKernel();
  const int mr = kernel.mr;
  const int nr = kernel.nr;
  const int64_t nnz = groups.groupPtr[groups.groups];
  const int64_t strips = ceilDiv(groups.width, nr);  // B strips per group
  const int64_t seg = groups.segmentLength;
  static Scratch packedBlocks;
  Scratch& packedTokens = packedTokenScratch();
  float* pb = packedBlocks.floats(static_cast<size_t>(std::max<int64_t>(1, nnz * strips * seg * nr)));
  // Group g's strip s: [position][k][nr] for the group's positions, at blockBase(g, s).
  auto blockBase = [&](int64_t g, int64_t s) {
    const int64_t first = groups.groupPtr[g];
    const int64_t count = groups.groupPtr[g + 1] - first;
    return pb + first * strips * seg * nr + s * count * seg * nr;
  };
  parallelFor(groups.groups, [&](int64_t g) {
    for (int64_t s = 0; s < strips; s++) {
      float* dst = blockBase(g, s);
      const int64_t n0 = s * nr;
      const int64_t lines = std::min<int64_t>(nr, groups.width - n0);
      for (int64_t p = groups.groupPtr[g]; p < groups.groupPtr[g + 1]; p++, dst += seg * nr) {
        const int64_t block = groups.valueIndex != nullptr ? groups.valueIndex[p] : p;
        const float* w = values + block * blockHeight * blockWidth;
        // The B operand's "rows" (n) as lines over k.
        const MatrixView lineView = groups.transposeBlock ? MatrixView{w, blockWidth, 1} : MatrixView{w, 1, blockWidth};
        packRows(lineView, n0, lines, 0, seg, nr, dst);
      }
    }
  });

  const int64_t chunk = std::max<int64_t>(mr, kPackedTokenFloats / std::max<int64_t>(depth, 1) / mr * mr);
  const int64_t segmentsPerRun = std::max<int64_t>(1, kSliceSteps / std::max<int64_t>(seg, 1));
  const MatrixView tokenRows{a, depth, 1};
  for (int64_t t0 = 0; t0 < tokens; t0 += chunk) {
    const int64_t chunkTokens = std::min(chunk, tokens - t0);
    const int64_t tokenStrips = ceilDiv(chunkTokens, mr);
    float* pa = packedTokens.floats(static_cast<size_t>(std::max<int64_t>(1, tokenStrips * mr * depth)));
    parallelFor(tokenStrips, [&](int64_t strip) {
      const int64_t i0 = strip * mr;
      packRows(tokenRows, t0 + i0, std::min<int64_t>(mr, chunkTokens - i0), 0, depth, mr, pa + strip * mr * depth);
    });
    const int64_t itemsPerGroup = ceilDiv(tokenStrips, kStripsPerItem);
    parallelFor(groups.groups * itemsPerGroup, [&](int64_t item) {
      const int64_t g = item / itemsPerGroup;
      const int64_t firstStrip = (item % itemsPerGroup) * kStripsPerItem;
      const int64_t lastStrip = std::min(tokenStrips, firstStrip + kStripsPerItem);
      const int64_t first = groups.groupPtr[g];
      const int64_t count = groups.groupPtr[g + 1] - first;
      thread_local std::vector<Segment> segments;
      segments.resize(static_cast<size_t>(count));
      for (int64_t s = 0; s < strips; s++) {
        const float* blocks = blockBase(g, s);
        const int64_t n0 = g * groups.width + s * nr;
        const int cols = static_cast<int>(std::min<int64_t>(nr, groups.width - s * nr));
        for (int64_t strip = firstStrip; strip < lastStrip; strip++) {
          const float* tokenStrip = pa + strip * mr * depth;
          for (int64_t q = 0; q < count; q++) {
            segments[q] = {tokenStrip + groups.segmentIndex[first + q] * seg * mr, blocks + q * seg * nr, seg};
          }
          const int64_t i0 = t0 + strip * mr;
          const int rows = static_cast<int>(std::min<int64_t>(mr, tokens - i0));
          float* c = out + i0 * ldOut + n0;
          // About kSliceSteps of K per run, each added to the float32 output (as the dense product's K slices).
          for (int64_t q0 = 0; q0 == 0 || q0 < count; q0 += segmentsPerRun) {
            kernel.run(Tile{segments.data() + q0, std::min(segmentsPerRun, count - q0), c, ldOut, rows, cols, q0 > 0});
          }
          if (bias != nullptr) {
            for (int i = 0; i < rows; i++) {
              for (int j = 0; j < cols; j++) c[i * ldOut + j] += bias[n0 + j];
            }
          }
        }
      }
      // The item's tokens x group columns are complete.
      repairGroupRows(a, depth, values, blockHeight, blockWidth, groups, bias, out, g, t0 + firstStrip * mr, std::min(tokens, t0 + lastStrip * mr));
    });
  }
}

// Groups narrower than half the register tile: per chunk of tokens, the token operand is packed as one line of the
// chunk's tokens per K step (zero-padded to whole kLineSumTokens), and each output column is a weighted sum of its
// group's lines, with the weights read where the blocks are stored. The scratch is the chunk of the token operand,
// whatever the block shape, where whole strips had padded every block to nr columns (32 times the weights for 1x1
// blocks with AVX-512) and run as many idle lanes.
void groupedLines(const float* a, int64_t tokens, int64_t depth, const float* values, int64_t blockHeight,
                  int64_t blockWidth, const ColumnGroups& groups, const float* bias, float* out) {
  const MicroKernel& kernel = activeKernel();
  const int64_t ldOut = groups.groups * groups.width;
  const int64_t width = groups.width;
  const int64_t seg = groups.segmentLength;
  // A block's weight for output column j at K step s is w[j * columnStride + s * stepStride].
  const int64_t columnStride = groups.transposeBlock ? blockWidth : 1;
  const int64_t stepStride = groups.transposeBlock ? 1 : blockWidth;
  const int64_t blockFloats = blockHeight * blockWidth;
  const int64_t chunk = std::max(kLineSumTokens, kLineTokenFloats / std::max<int64_t>(depth, 1) / kLineSumTokens * kLineSumTokens);
  const int64_t maxStride = ceilDiv(std::min(chunk, tokens), kLineSumTokens) * kLineSumTokens;
  float* lines = packedTokenScratch().floats(static_cast<size_t>(std::max<int64_t>(1, depth * maxStride)));
  const int64_t packs = ceilDiv(depth, kLinesPerPack);
  // Work items are runs of groups at least kLineRunColumns wide by token tiles: each output row's stretch of the run
  // is whole cache lines, written by one thread once (one group of 1 column at a time had run 5x slower).
  const int64_t groupsPerRun = ceilDiv(kLineRunColumns, width);
  const int64_t runs = ceilDiv(groups.groups, groupsPerRun);
  // About kSliceSteps of K per call, each added to the float32 sums (as the register tiles' runs of segments).
  const int64_t blocksPerRun = std::max<int64_t>(1, kSliceSteps / std::max<int64_t>(seg, 1));
  for (int64_t t0 = 0; t0 < tokens; t0 += chunk) {
    const int64_t chunkTokens = std::min(chunk, tokens - t0);
    const int64_t stride = ceilDiv(chunkTokens, kLineSumTokens) * kLineSumTokens;
    parallelFor(packs, [&](int64_t pack) {
      const int64_t l0 = pack * kLinesPerPack;
      const int64_t count = std::min(kLinesPerPack, depth - l0);
      float* dst = lines + l0 * stride;
      // The chunk's token rows are the K-contiguous lines here; line l of the pack is the operand's column l0 + l.
      kernel.packTransposed(a + t0 * depth + l0, depth, chunkTokens, count, static_cast<int>(stride), dst);
      for (int64_t l = 0; l < count; l++) std::fill(dst + l * stride + chunkTokens, dst + (l + 1) * stride, 0.0f);
    });
    const int64_t tiles = stride / kLineSumTokens;
    const int64_t itemsPerRun = ceilDiv(tiles, kLineTilesPerItem);
    parallelFor(runs * itemsPerRun, [&](int64_t item) {
      const int64_t g0 = (item / itemsPerRun) * groupsPerRun;
      const int64_t g1 = std::min(groups.groups, g0 + groupsPerRun);
      const int64_t firstTile = (item % itemsPerRun) * kLineTilesPerItem;
      const int64_t lastTile = std::min(tiles, firstTile + kLineTilesPerItem);
      const int64_t runWidth = (g1 - g0) * width;
      // Each thread's sums are Scratch (counted by scratchBytes, freed by releaseScratch): the run's columns x tokens.
      thread_local Scratch sumsScratch;
      float* sums = sumsScratch.floats(static_cast<size_t>(runWidth * kLineSumTokens));
      for (int64_t tile = firstTile; tile < lastTile; tile++) {
        const int64_t tileToken = tile * kLineSumTokens;
        for (int64_t g = g0; g < g1; g++) {
          const int64_t begin = groups.groupPtr[g];
          const int64_t end = groups.groupPtr[g + 1];
          // An empty group's call sums no block: its outputs are the bias, or zero.
          for (int64_t q0 = begin; q0 == begin || q0 < end; q0 += blocksPerRun) {
            const bool byIndex = groups.valueIndex != nullptr;
            kernel.lineSums(LineSumsArgs{lines + tileToken, stride, byIndex ? values : values + q0 * blockFloats, blockFloats,
                                         byIndex ? groups.valueIndex + q0 : nullptr, groups.segmentIndex + q0, std::min(blocksPerRun, end - q0),
                                         seg, columnStride, stepStride, width, sums + (g - g0) * width * kLineSumTokens, q0 > begin});
          }
        }
        const int64_t rows = std::min(kLineSumTokens, chunkTokens - tileToken);
        const float* runBias = bias != nullptr ? bias + g0 * width : nullptr;
        for (int64_t i = 0; i < rows; i++) {
          float* row = out + (t0 + tileToken + i) * ldOut + g0 * width;
          for (int64_t j = 0; j < runWidth; j++) row[j] = sums[j * kLineSumTokens + i] + (runBias != nullptr ? runBias[j] : 0.0f);
        }
      }
      for (int64_t g = g0; g < g1; g++) {
        repairGroupRows(a, depth, values, blockHeight, blockWidth, groups, bias, out, g, std::min(tokens, t0 + firstTile * kLineSumTokens),
                        std::min(tokens, t0 + lastTile * kLineSumTokens));
      }
    });
  }
}

// The grouped product on the route that fits its groups' width: whole strips of the register tile, or token lines.
void groupedColumns(const float* a, int64_t tokens, int64_t depth, const float* values, int64_t blockHeight,
                    int64_t blockWidth, const ColumnGroups& groups, const float* bias, float* out) {
  if (fillsStrips(groups.width, activeKernel().nr)) {
    groupedProduct(a, tokens, depth, values, blockHeight, blockWidth, groups, bias, out);
  } else {
    groupedLines(a, tokens, depth, values, blockHeight, blockWidth, groups, bias, out);
  }
}

// W's value at `index` as float32 (a half value widened): for the float64 recomputations, off the hot loops.
float valueAt(const BsrView& w, int64_t index) {
  if (w.halfValues == nullptr) return w.values[index];
  float value;
  widenHalfSerial(w.halfValues + index, 1, w.bfloat, &value);
  return value;
}

// Few tokens: each block is read once, in stored order, and multiplied into every token; the dot
// products stay as vector lanes until the block row's last block. The tokens' columns are first
// regrouped by block column ([block column][token][C]), so a block's slice of x is contiguous.
// Work items are runs of whole block rows with about equal blocks, so each thread streams a long
// contiguous stretch of the values (the hardware prefetcher follows it; software prefetch measured slower).
void bsrLinearFewTokens(const float* x, const BsrView& w, const float* bias, float* y, int64_t tokens) {
  const int64_t R = w.blockHeight;
  const int64_t C = w.blockWidth;
  const int64_t blockRows = w.rows / R;
  const int64_t blockCols = w.cols / C;
  const DecodeKernels decode = activeKernel().decode;
  static Scratch packedX;
  float* px = packedX.floats(static_cast<size_t>(std::max<int64_t>(1, tokens * w.cols)));
  for (int64_t bc = 0; bc < blockCols; bc++) {
    for (int64_t t = 0; t < tokens; t++) std::copy(x + t * w.cols + bc * C, x + t * w.cols + (bc + 1) * C, px + (bc * tokens + t) * C);
  }
  const std::vector<int64_t> runs = balancedRuns(w.blockRowPtr, blockRows, kDecodeRunsPerThread * threadCount());
  const int64_t blockFloats = R * C;
  parallelFor(static_cast<int64_t>(runs.size()) - 1, [&](int64_t run) {
    // Each thread's lanes and sums are Scratch (counted by scratchBytes, freed by releaseScratch).
    thread_local Scratch lanesScratch;
    // Each output's sum: the lanes of every kSliceSteps K steps (a run of blocks) are added to it, so no float32 lane
    // chain runs along a whole block row (one of 2^20 columns had drifted 6e-4 from js's float64 sums).
    thread_local Scratch sumsScratch;
    thread_local Scratch halfScratch;
    for (int64_t br = runs[run]; br < runs[run + 1]; br++) {
      for (int64_t r0 = 0; r0 < R; r0 += kDecodeRowChunk) {
        const int64_t rows = std::min(kDecodeRowChunk, R - r0);
        const int64_t outputs = tokens * rows;
        float* lanes = lanesScratch.floats(static_cast<size_t>(outputs * kDotLanes));
        float* sums = sumsScratch.floats(static_cast<size_t>(outputs));
        std::fill(lanes, lanes + outputs * kDotLanes, 0.0f);
        std::fill(sums, sums + outputs, 0.0f);
        int64_t steps = 0;
        for (int64_t p = w.blockRowPtr[br]; p < w.blockRowPtr[br + 1]; p++) {
          const float* xSlice = px + int64_t(w.blockColIdx[p]) * tokens * C;
          if (w.halfValues == nullptr) {
            decode.blockDot(w.values + p * blockFloats + r0 * C, rows, C, xSlice, C, tokens, lanes);
          } else if (decode.blockDotHalf != nullptr) {
            decode.blockDotHalf(w.halfValues + p * blockFloats + r0 * C, w.bfloat, rows, C, xSlice, C, tokens, lanes);
          } else {
            // Half values: a few rows at a time widened into a buffer that stays in L1, then the same dot products.
            const int64_t step = std::max<int64_t>(1, std::min(rows, kDecodeHalfFloats / C));
            float* wide = halfScratch.floats(static_cast<size_t>(step * C));
            for (int64_t r = 0; r < rows; r += step) {
              const int64_t count = std::min(step, rows - r);
              widenHalfSerial(w.halfValues + p * blockFloats + (r0 + r) * C, count * C, w.bfloat, wide);
              decode.blockDot(wide, count, C, xSlice, C, tokens, lanes + r * tokens * kDotLanes);
            }
          }
          steps += C;
          const bool last = p + 1 == w.blockRowPtr[br + 1];
          if (steps < kSliceSteps && !last) continue;
          for (int64_t i = 0; i < outputs; i++) {
            float slice = 0.0f;
            for (int l = 0; l < kDotLanes; l++) slice += lanes[i * kDotLanes + l];
            sums[i] += slice;
          }
          if (last) break;
          std::fill(lanes, lanes + outputs * kDotLanes, 0.0f);
          steps = 0;
        }
        for (int64_t t = 0; t < tokens; t++) {
          float* out = y + t * w.rows + br * R + r0;
          for (int64_t r = 0; r < rows; r++) out[r] = (bias != nullptr ? bias[br * R + r0 + r] : 0.0f) + sums[r * tokens + t];
          // Lanes of +inf and -inf (overflowing products) sum to NaN: recomputed in float64 (overflow.h).
          if (!anyNonFinite(out, rows)) continue;
          const int64_t first = w.blockRowPtr[br];
          const int64_t k = (w.blockRowPtr[br + 1] - first) * C;
          for (int64_t r = 0; r < rows; r++) {
            if (!isNonFinite(out[r])) continue;
            const double add = bias != nullptr ? double(bias[br * R + r0 + r]) : 0.0;
            out[r] = jsSum(k, k, add, [&](int64_t p) {
              const int64_t q = first + p / C;
              const int64_t c = p % C;
              return double(valueAt(w, q * blockFloats + (r0 + r) * C + c)) * double(x[t * w.cols + int64_t(w.blockColIdx[q]) * C + c]);
            });
          }
        }
      }
    }
  });
}

void bsrMatmulFewTokens(const float* dy, const BsrView& w, float* dx, int64_t tokens) {
  const int64_t R = w.blockHeight;
  const int64_t C = w.blockWidth;
  const int64_t blockCols = w.cols / C;
  const DecodeKernels decode = activeKernel().decode;
  parallelFor(blockCols, [&](int64_t bc) {
    // The first kSliceSteps rows (K steps) of blocks sum into the output's float32 sums, each later slice into a
    // partial added to them, so no float32 chain runs down a whole block column.
    // Each thread's sums and partial are Scratch (counted by scratchBytes, freed by releaseScratch).
    thread_local Scratch sumsScratch;
    thread_local Scratch partialScratch;
    float* sums = sumsScratch.floats(static_cast<size_t>(tokens * C));
    std::fill(sums, sums + tokens * C, 0.0f);
    float* acc = sums;
    int64_t steps = 0;
    for (int64_t p = w.blockColPtr[bc]; p < w.blockColPtr[bc + 1]; p++) {
      decode.blockAxpy(w.values + int64_t(w.valueIndex[p]) * R * C, R, C, dy + int64_t(w.blockRowIdx[p]) * R, w.rows, tokens, acc);
      steps += R;
      const bool last = p + 1 == w.blockColPtr[bc + 1];
      if (steps < kSliceSteps && !last) continue;
      if (acc != sums) {
        for (int64_t i = 0; i < tokens * C; i++) sums[i] += acc[i];
      }
      if (last) break;
      acc = partialScratch.floats(static_cast<size_t>(tokens * C));
      std::fill(acc, acc + tokens * C, 0.0f);
      steps = 0;
    }
    for (int64_t t = 0; t < tokens; t++) std::copy(sums + t * C, sums + (t + 1) * C, dx + t * w.cols + bc * C);
    // Infinite or NaN outputs (float32 sums that overflowed) recomputed in float64 (overflow.h).
    const int64_t first = w.blockColPtr[bc];
    const int64_t k = (w.blockColPtr[bc + 1] - first) * R;
    for (int64_t t = 0; t < tokens; t++) {
      float* out = dx + t * w.cols + bc * C;
      if (!anyNonFinite(out, C)) continue;
      for (int64_t c = 0; c < C; c++) {
        if (!isNonFinite(out[c])) continue;
        out[c] = jsSum(k, k, 0.0, [&](int64_t p) {
          const int64_t q = first + p / R;
          const int64_t r = p % R;
          return double(w.values[int64_t(w.valueIndex[q]) * R * C + r * C + c]) * double(dy[t * w.rows + int64_t(w.blockRowIdx[q]) * R + r]);
        });
      }
    }
  });
}

}  // namespace

void bsrLinear(const float* x, const BsrView& w, const float* bias, float* y, int64_t tokens) {
  if (tokens == 0 || w.rows == 0) return;
  if (tokens <= kDecodeMaxRows) {
    bsrLinearFewTokens(x, w, bias, y, tokens);
    return;
  }
  if (w.halfValues != nullptr) {
    // Many tokens reuse each value: widened once, in parallel, then the float32 product.
    static Scratch wideValues;
    const int64_t count = w.rows == 0 ? 0 : int64_t(w.blockRowPtr[w.rows / w.blockHeight]) * w.blockHeight * w.blockWidth;
    BsrView wide = w;
    float* values = wideValues.floats(static_cast<size_t>(std::max<int64_t>(1, count)));
    widenHalf(w.halfValues, count, w.bfloat, values);
    wide.values = values;
    wide.halfValues = nullptr;
    bsrLinear(x, wide, bias, y, tokens);
    return;
  }
  const ColumnGroups groups{w.rows / w.blockHeight, w.blockHeight, w.blockWidth, w.blockRowPtr, w.blockColIdx, nullptr, true};
  groupedColumns(x, tokens, w.cols, w.values, w.blockHeight, w.blockWidth, groups, bias, y);
}

void bsrMatmul(const float* dy, const BsrView& w, float* dx, int64_t tokens) {
  if (tokens == 0 || w.cols == 0) return;
  if (tokens <= kDecodeMaxRows) {
    bsrMatmulFewTokens(dy, w, dx, tokens);
    return;
  }
  const ColumnGroups groups{w.cols / w.blockWidth, w.blockWidth, w.blockHeight, w.blockColPtr, w.blockRowIdx, w.valueIndex, false};
  groupedColumns(dy, tokens, w.rows, w.values, w.blockHeight, w.blockWidth, groups, nullptr, dx);
}

namespace {

// The block's infinite or NaN outputs (a float32 sum that overflowed), recomputed over all tokens in float64, in the
// js backend's token slices (overflow.h); a finite block pays one pass over its outputs.
void repairSampledBlock(const float* dy, const float* x, const BsrView& w, int64_t br, int64_t bc, float* block, int64_t tokens) {
  const int64_t R = w.blockHeight;
  const int64_t C = w.blockWidth;
  if (!anyNonFinite(block, R * C)) return;
  for (int64_t r = 0; r < R; r++) {
    for (int64_t c = 0; c < C; c++) {
      if (!isNonFinite(block[r * C + c])) continue;
      const float* dyColumn = dy + br * R + r;
      const float* xColumn = x + bc * C + c;
      block[r * C + c] = jsSum(tokens, kJsSampledSlice, 0.0, [&](int64_t t) { return double(dyColumn[t * w.rows]) * double(xColumn[t * w.cols]); });
    }
  }
}

// Whether whole strips fit the blocks: padding each block's rows to mr and its columns to nr at most doubles either
// packed operand. Narrower blocks (1x1, 8x1, 4x4 with AVX-512's 32 columns) take the line route instead, where the
// strips had taken up to mr / R and nr / C times the operands (1x1 blocks, 4096 x 4096: 160 MiB for 8 MiB of data).
bool stripsFit(int64_t R, int64_t C, int mr, int nr) { return fillsStrips(R, mr) && fillsStrips(C, nr); }

// Per chunk of tokens, every block row of dY^T and block column of X is packed once (zero-padded to
// whole strips), then each block is a few tiles whose K runs over the chunk's tokens.
void sampledTiles(const float* dy, const float* x, const BsrView& w, const int32_t* blockRowOf, float* dw, int64_t tokens,
                  Scratch& packedDy, Scratch& packedX) {
  const int64_t R = w.blockHeight;
  const int64_t C = w.blockWidth;
  const int64_t blockRows = w.rows / R;
  const int64_t blockCols = w.cols / C;
  const MicroKernel& kernel = activeKernel();
  const int mr = kernel.mr;
  const int nr = kernel.nr;
  const int64_t rowStrips = ceilDiv(R, mr);
  const int64_t colStrips = ceilDiv(C, nr);
  // Work items are runs of up to kSampledRun blocks of one block row: a run's dY^T strips stay in
  // L1/L2 while its blocks' X strips pass.
  std::vector<int64_t> runs{0};
  for (int64_t br = 0; br < blockRows; br++) {
    for (int64_t q = w.blockRowPtr[br]; q < w.blockRowPtr[br + 1]; q += kSampledRun) runs.push_back(std::min<int64_t>(q + kSampledRun, w.blockRowPtr[br + 1]));
  }
  const int64_t chunk = kSampledTokenChunk;
  float* pdy = packedDy.floats(static_cast<size_t>(blockRows * rowStrips * mr * std::min(chunk, tokens)));
  float* px = packedX.floats(static_cast<size_t>(blockCols * colStrips * nr * std::min(chunk, tokens)));
  // dY^T's rows are dY's columns.
  const MatrixView dyColumns{dy, 1, w.rows};
  const MatrixView xColumns{x, 1, w.cols};
  for (int64_t t0 = 0; t0 < tokens; t0 += chunk) {
    const int64_t depth = std::min(chunk, tokens - t0);
    const int64_t dyStrips = blockRows * rowStrips;
    parallelFor(dyStrips + blockCols * colStrips, [&](int64_t strip) {
      if (strip < dyStrips) {
        const int64_t r0 = (strip / rowStrips) * R + (strip % rowStrips) * mr;
        const int64_t lines = std::min<int64_t>(mr, R - (strip % rowStrips) * mr);
        packRows(dyColumns, r0, lines, t0, depth, mr, pdy + strip * mr * depth);
      } else {
        const int64_t s = strip - dyStrips;
        const int64_t c0 = (s / colStrips) * C + (s % colStrips) * nr;
        const int64_t lines = std::min<int64_t>(nr, C - (s % colStrips) * nr);
        packRows(xColumns, c0, lines, t0, depth, nr, px + s * nr * depth);
      }
    });
    const bool add = t0 > 0;
    const bool lastChunk = t0 + chunk >= tokens;
    parallelFor(static_cast<int64_t>(runs.size()) - 1, [&](int64_t run) {
      for (int64_t q = runs[run]; q < runs[run + 1]; q++) {
        const int64_t br = blockRowOf[q];
        const int64_t bc = w.blockColIdx[q];
        float* block = dw + q * R * C;
        for (int64_t cs = 0; cs < colStrips; cs++) {
          for (int64_t rs = 0; rs < rowStrips; rs++) {
            const Segment segment{pdy + (br * rowStrips + rs) * mr * depth, px + (bc * colStrips + cs) * nr * depth, depth};
            kernel.run(Tile{&segment, 1, block + rs * mr * C + cs * nr, C, static_cast<int>(std::min<int64_t>(mr, R - rs * mr)),
                            static_cast<int>(std::min<int64_t>(nr, C - cs * nr)), add});
          }
        }
        if (lastChunk) repairSampledBlock(dy, x, w, br, bc, block, tokens);
      }
    });
  }
}

// Per chunk of tokens, every row of dY^T and of X^T is packed once as a line of the chunk's tokens (no padding
// beyond whole vectors), and each output is the dot product of its two lines: the scratch is the chunk of the
// inputs, whatever the block shape. The line kernel takes a block row's R lines of dY^T against the X^T lines of
// its blocks in the run (grouping 1xC blocks by block column instead measured 2x faster at C >= 16 but slower at
// C <= 8). Work items are runs of blocks with about kSampledLineOutputs outputs.
void sampledLines(const float* dy, const float* x, const BsrView& w, const int32_t* blockRowOf, float* dw, int64_t tokens,
                  Scratch& packedDy, Scratch& packedX) {
  const int64_t R = w.blockHeight;
  const int64_t C = w.blockWidth;
  const int64_t nnz = w.blockRowPtr[w.rows / R];
  const MicroKernel& kernel = activeKernel();
  const int64_t chunk = kSampledTokenChunk;
  const int64_t maxStride = ceilDiv(std::min(chunk, tokens), kLineFloats) * kLineFloats;
  float* pdy = packedDy.floats(static_cast<size_t>(w.rows * maxStride));
  float* px = packedX.floats(static_cast<size_t>(w.cols * maxStride));
  const int64_t blocksPerRun = std::max<int64_t>(1, kSampledLineOutputs / (R * C));
  const int64_t runCount = ceilDiv(nnz, blocksPerRun);
  const int64_t dyPacks = ceilDiv(w.rows, kLinesPerPack);
  const int64_t xPacks = ceilDiv(w.cols, kLinesPerPack);
  for (int64_t t0 = 0; t0 < tokens; t0 += chunk) {
    const int64_t depth = std::min(chunk, tokens - t0);
    const int64_t stride = ceilDiv(depth, kLineFloats) * kLineFloats;
    parallelFor(dyPacks + xPacks, [&](int64_t pack) {
      const bool ofDy = pack < dyPacks;
      const int64_t width = ofDy ? w.rows : w.cols;
      const int64_t l0 = (ofDy ? pack : pack - dyPacks) * kLinesPerPack;
      const int64_t lines = std::min(kLinesPerPack, width - l0);
      float* dst = (ofDy ? pdy : px) + l0 * stride;
      // The chunk's rows of dY (or X) are the K-contiguous lines here; line l of the pack is its column l0 + l.
      kernel.packTransposed((ofDy ? dy : x) + t0 * width + l0, width, depth, lines, static_cast<int>(stride), dst);
      for (int64_t l = 0; l < lines; l++) std::fill(dst + l * stride + depth, dst + (l + 1) * stride, 0.0f);
    });
    const bool add = t0 > 0;
    const bool lastChunk = t0 + chunk >= tokens;
    parallelFor(runCount, [&](int64_t run) {
      const int64_t first = run * blocksPerRun;
      const int64_t last = std::min(nnz, first + blocksPerRun);
      const float* lines[kLinesPerCall];
      float* outputs[kLinesPerCall];
      int64_t count = 0;
      int64_t br = -1;
      // The X^T lines gathered so far (of blocks of block row br) against the block row's R lines of dY^T.
      auto flush = [&] {
        if (count == 0) return;
        kernel.lineDots(LineDotsArgs{pdy + br * R * stride, stride, R, lines, outputs, C, count, stride, add});
        count = 0;
      };
      for (int64_t q = first; q < last; q++) {
        if (blockRowOf[q] != br) {
          flush();
          br = blockRowOf[q];
        }
        const int64_t c0 = int64_t(w.blockColIdx[q]) * C;
        for (int64_t c = 0; c < C; c++) {
          lines[count] = px + (c0 + c) * stride;
          outputs[count] = dw + q * R * C + c;
          if (++count == kLinesPerCall) flush();
        }
      }
      flush();
      if (!lastChunk) return;
      for (int64_t q = first; q < last; q++) repairSampledBlock(dy, x, w, blockRowOf[q], w.blockColIdx[q], dw + q * R * C, tokens);
    });
  }
}

}  // namespace

// dW_q = dY[:, block row]^T X[:, block col], on register tiles over packed strips where the blocks fill them, else
// as dot products of token lines; either way in chunks of kSampledTokenChunk tokens, each added to the float32 output.
void sampledMatmul(const float* dy, const float* x, const BsrView& w, float* dw, int64_t tokens) {
  const int64_t R = w.blockHeight;
  const int64_t C = w.blockWidth;
  const int64_t blockRows = w.rows / R;
  const int64_t nnz = w.blockRowPtr[blockRows];
  if (nnz == 0) return;
  if (tokens == 0) {
    std::fill(dw, dw + nnz * R * C, 0.0f);
    return;
  }
  std::vector<int32_t> blockRowOf(static_cast<size_t>(nnz));
  for (int64_t br = 0; br < blockRows; br++) {
    for (int64_t p = w.blockRowPtr[br]; p < w.blockRowPtr[br + 1]; p++) blockRowOf[p] = static_cast<int32_t>(br);
  }
  // One pair of buffers for both routes: the process keeps the larger of what each asked.
  static Scratch packedDy;
  static Scratch packedX;
  const MicroKernel& kernel = activeKernel();
  if (stripsFit(R, C, kernel.mr, kernel.nr)) {
    sampledTiles(dy, x, w, blockRowOf.data(), dw, tokens, packedDy, packedX);
  } else {
    sampledLines(dy, x, w, blockRowOf.data(), dw, tokens, packedDy, packedX);
  }
}

}  // namespace bsk
