// What the tensor-core launchers share: the three products as one gathered GEMM, their arguments,
// and the tile geometry both paths (mma.sync on sm_80+, wgmma on sm_90a) agree on.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../bsr_pattern.h"
#include "../common.h"
#include "../ops.h"
#include "tc.h"

namespace bs::tc {

// Each product is out = A * B with A dense and token-major and B gathered through the pattern:
//   Linear  Y  [M, rows] = X [M, cols] * W^T + bias  (a = X,  b = values; tile = tokens x one block row)
//   Matmul  dX [M, cols] = dY[M, rows] * W           (a = dY, b = values; tile = tokens x one block column)
//   Sampled dW [blocks]  = dY^T X on W's blocks      (a = dY, b = X; tile = G blocks of one block column,
//                                                     reduced over tokens)
// (Op itself is declared in tc.h.)

struct KernelArgs {
  const void* a;
  const void* b;
  const void* bias;  // Linear only, may be null
  void* out;
  float* partials;  // Sampled with the tokens split: [splits][nnzBlocks][R][C] float32 sums
  int64_t m;        // tokens
  int64_t rows, cols;
  int32_t blockRows, blockCols, nnzBlocks;
  const int32_t* blockRowPtr;
  const int32_t* blockColIdx;
  const int32_t* blockColPtr;
  const int32_t* blockRowIdx;
  const int32_t* valueIndex;
  int32_t tilesM, tilesN, groupM;  // Linear/Matmul: token tiles x block rows (columns), raster group
  int64_t tokensPerSplit;          // Sampled: tokens each split reduces (a multiple of the step)
  // Sampled with the tokens split on the wgmma path and TcOptions::splitCluster: when above 1, the splits of one group
  // are a thread-block cluster of this many CTAs that sum their float32 accumulators through distributed shared memory
  // (no partials).
  int32_t clusterSplits;
  // Linear only, may be null: also write activation(out) here (the staged epilogue; out keeps the pre-activation).
  void* activated;
  Activation activation;
  // Matmul only, may be null: the pre-activation Z [m, cols] of the layer whose input gradient dX is. The staged
  // epilogue then writes dZ = dX act'(Z) (args.activation, dX rounded to the dtype first, as a separate
  // biasActivationBackward pass over a stored dX computes it) in place of dX, and each store call's column sums of dZ
  // (float32) into columnPartials: one row of `cols` per warp of the call, row (tokenBase / rows) * warps + warp
  // (wgmmaStoreRows gives the rows of a call).
  const void* pre;
  float* columnPartials;
  // dev's grouped tile (Linear: row groups, Matmul: column groups; dev/group_schedule.h); null without a schedule.
  const int32_t* groupPtr;
  const int32_t* groupSteps;
  // Linear/Matmul on the mma.sync tiles: when above 1, each tile's line (block row or column) is split into this many
  // runs of blocks, one CTA each (the grid's y), writing float32 partials [lineSplits][m][width] (the bias in split
  // 0's) into `partials` for a second pass to sum in split order: where the tiles are too few to fill the GPU.
  int32_t lineSplits;
  // Sampled on the wgmma path, when groupList is set (the pattern's columnGroupList of groups of groupSize blocks,
  // groupSize the tile's G): a 1D grid whose first fullGroups CTAs each reduce all tokens of one group of the list and
  // write its blocks, and whose next tailGroups x tailSplits CTAs take the list's last tailGroups groups, each split
  // into tailSplits runs of tokensPerSplit tokens, writing float32 partials [tailSplits][tailGroups * groupSize][R][C]
  // (entry e of the tail at e - the tail's first column-wise entry) for launchSumTailSplits. Whole waves of whole groups,
  // then one short wave of pieces: no last wave of a few whole groups (dispatch.cu, ruleTail).
  const int32_t* groupList;
  int32_t groupSize, fullGroups, tailGroups, tailSplits;
  // Sampled on dev's patch tile (kPatchDwTile, 32x32): the pattern's patch records (BsrPatternView::patchList; null in
  // the addon), one CTA per record and token split (the grid's x and y), the splits' float32 partials in `partials`.
  const int32_t* patchList;
  int32_t patchItems;
  // Sampled on the patch tile (kPatchPairTile, and dev's kPatchDwTile + 2): the pattern's pair records
  // (BsrPatternView::patchPairList), one CTA each and token split.
  const int32_t* patchPairList;
  int32_t patchPairItems;
};

// Tile variants the dispatch names (TcOptions::variant): each path's default tile; on the wgmma path the
// 256-token tile for Linear/Matmul with 128x128 blocks, which wins from kWideTileMinTokens tokens on, and the
// persistent 256-token tile with 64x64 blocks (one CTA per SM walking many tiles, its epilogue overlapping
// the next tile's loads), which wins when there are many tiles with short reduction lines:
// at least kPersistentMinTilesPerSm tiles per SM and at most kPersistentMaxLine blocks per line on average, or fewer
// tiles and at most kPersistentFewTilesMaxLine blocks per line.
// With 128x128 blocks, the persistent 128-token tile whose two consumer warpgroups take whole tiles in turn (each
// one's epilogue during the other's products: bsrWgmmaPingPongKernel) wins when there are many tiles with short
// reduction lines: at least kPingPongMinTilesPerSm tiles per SM and at most kPingPongMaxLine blocks per line on average
// (below kWideTileMinTokens tokens from kPingPongFewMinTilesPerSm, plain dX on lines of kPingPongDxMaxLine and plain
// Linear of kPingPongMaxLine; bsrLinearActivation:
// kPingPongForwardMaxLine128; pingPongTile128Rule).
// With 64x64 blocks the ping-pong tile (kPingPongTile64Tokens per consumer) takes dX with the activation's backward in
// its epilogue: at least kPingPongMinTilesPerSm tiles per SM, at most kPingPongBackwardMaxLine64 blocks per line; with
// 128x128 blocks it takes that dX up to kPingPongBackwardMaxLine128 blocks per line (the plain products: kPingPongMaxLine).
// The 64x64 persistent and ping-pong tiles are feature-major (WgmmaTraits::kFeatureMajor).
// With 32x32 blocks, the X-resident tile (bsr_wgmma_xr.cu: 64 tokens per CTA with the dense operand's whole slab
// in shared memory, W's blocks streamed past it) wins where the slab is at most kXResidentMaxDispatchedSlab wide (K for
// bsrLinear, N for bsrMatmul), lines hold at least kXResidentMinLine blocks on average, there are at least
// kXResidentMinTokens tokens, and each CTA streams at least kXResidentMinWeightPerSlab times its slab's bytes in W
// (its lines, xResidentGroupLines, times their blocks): below that the slab's copy costs more than it saves
// (measured on an H200: docs/kernels.md, "X-resident bsrLinear and bsrMatmul").
// (Numbers 2-5, 8-13, 15, 17, 21, 22 and 25-32 are variants kept for measurement in kernels-cuda/dev/; 14 there at 32x32.)
// dW at 32x32 blocks: kPatchDwTile, kPatchDwPairsTile and kPatchDwWgmmaTile (kept in kernels-cuda/dev/: mma.sync with
// 8 warps of up to 4 blocks or 16 of up to 2, and wgmma over pairs of blocks; the numbers here for the split rule), a
// CTA per patch of W's block rows x block columns (BsrPatternView::patchList), one CTA per SM (two stages of 208 KB in
// all); and the addon's kPatchPairTile (bsr_wgmma_patch_dw.cu), the same patches paired within columns on wgmma, fed by bulk tensor
// copies through a ring of three stages: taken (on the devices of kPatchPairMinBandwidth) from kPatchPairMinTokens tokens at densities
// above kPatchPairMinDensity and below kPatchPairMaxDensity, where it beat both the other dW tiles and the dense route
// on an H200 (docs/kernels.md, "dW's patch tile fed by bulk copies").
// dW at 64x64 blocks: kFeatureMajorDwTile (kept in kernels-cuda/dev/; the number here for the split rule's tile
// rows), four blocks of a column per CTA, feature-major: 1.06x the token-major tile of four blocks, 0.72-1.57x the
// dispatched tile of two, and no faster in the FFN step on an H200.
enum TileVariant : int {
  kDefaultTile = 0,
  kWideTile = 1,
  kXResidentTile = 6,
  kPersistentTile = 7,
  kPingPongTile = 14,
  kFeatureMajorDwTile = 16,
  kPatchDwTile = 30,
  kPatchDwPairsTile = 31,
  kPatchDwWgmmaTile = 32,
  kPatchPairTile = 33,
  kPingPong3Tile = 34,
};
// The default options dispatch the patch tile (patchDwRule) on wgmma devices whose memory peaks at this many bytes per
// second or more (2 x memory clock x bus width; an H200's 4.9 TB/s, not an H100 SXM's 3.35), unless
// BLOCKSPARSE_CUDA_PATCH_DW=1 or 0 says otherwise (patchPairDispatched, dispatch.cu). The tile re-reads its dY and X
// slices through L2 from memory, where the dense route it displaces is cuBLAS's compute-bound GEMM: on an H200 each dW
// took 83-86 us on it against 90-92 on the route, and the FFN step (32x32, 8192 tokens, captured) 0.482 ms against
// 0.492 at density 0.25 (0.451 against 0.461-0.465 at 0.2); on an H100 the tile took 90 us (96 with the sum of its two
// token splits) against 92 and the step 0.536 against 0.514 (docs/kernels.md, "dW's patch tile fed by bulk copies").
// tc_bench names it with TcOptions (variant 33) either way.
constexpr double kPatchPairMinBandwidth = 4.5e12;
constexpr int64_t kPatchPairMinTokens = 4096;
// First-use autotuning times the patch tile for dW from this many tokens (below it the tile lost to the other routes
// on an H200, or tied them: docs/kernels.md).
constexpr int64_t kPatchPairTuneMinTokens = 2048;
// ... and from this density (at 0.1 the other dW tiles were faster on an H200; the records of sparser patterns hold
// few blocks each).
constexpr double kPatchPairTuneMinDensity = 0.1;
constexpr double kPatchPairMinDensity = 0.15;
constexpr double kPatchPairMaxDensity = 0.28;
// dW on the patch tile (sm_90a; false where the pattern has no pair records, the dtype is not half precision or a split
// is not a multiple of its 64-token step).
bool launchPatchPairDw(DType dtype, const KernelArgs& args, cudaStream_t stream);
constexpr int64_t kWideTileMinTokens = 4096;
// The most token splits of a dW group reduced in a cluster (KernelArgs::clusterSplits): the portable cluster size.
constexpr int kMaxClusterSplits = 8;
constexpr int kPersistentTileTokens = 256;
constexpr int64_t kPersistentMinTilesPerSm = 3;
constexpr double kPersistentMaxLine = 16.0;
// With fewer tiles than kPersistentMinTilesPerSm per SM the persistent tile still takes lines of at most this many
// blocks on average. On an H100 (2026-12-06: 1024-4096 tokens, 768 <-> 3072, 1024 <-> 4096 and 1024 x 1024, densities
// 0.1-0.5, 0.36-2.9 tiles per SM) it took 0.72-0.99x the default tile's time on lines of 1.2-8 blocks in 45 of 48
// cases (1.00-1.03x in three), and 0.96-1.11x on lines of 12-32, where the static round-robin cannot
// balance long random lines as the hardware's CTA scheduler does (docs/kernels.md, "The staged epilogue and the
// persistent tile").
constexpr double kPersistentFewTilesMaxLine = 8.0;
constexpr int kPingPongTileTokens = 128;
constexpr int64_t kPingPongMinTilesPerSm = 2;
constexpr double kPingPongMaxLine = 4.0;
// Plain dX (bsrMatmul without the activation's backward) at width 128 with fewer than kWideTileMinTokens tokens, where
// the alternative is the default tile of 128 tokens, takes the ping-pong tile from kPingPongFewMinTilesPerSm of its
// tiles per SM on lines of at most kPingPongDxMaxLine blocks. On an H100 (two runs, 256-2048 tokens, eight shapes from
// 1024 x 1024 to 16384 -> 4096, densities 0.1-0.5) it took 0.75-0.99x the default tile's time in 47 of the 50 cases
// this adds (1.9-15.5 tiles per SM, lines of 0.8-16 blocks; a geometric mean of 0.90 in each run) and 1.04-1.09x in
// three (one pattern, 4096 -> 4096 at 2048 tokens and density 0.25, in both runs); on an H200 (two runs with the rule
// in, 256-2048 tokens, ten shapes) 0.77-1.04x in the 49 cases it adds (geometric means 0.875 and 0.889). With a tile
// per SM (0.97) it was mostly 1.00-1.08x on the H100, 0.87-1.17x on the H200; from 4096 tokens 0.98-1.18x (H100) and
// 0.88-1.11x (H200) the 256-token wide tile's time on lines of 4-16. Plain bsrLinear takes it from as few tiles but
// keeps kPingPongMaxLine: with 16 block rows and lines of 6-16 blocks at 2048 tokens it took 1.04-1.10x the default
// tile's time on the H100 (benchmarks/results/gpu-nvidia-h100-80gb-hbm3/dx-ping-pong-128-2026-12-06.md,
// gpu-nvidia-h200/few-tiles-dx-ping-pong-2026-12-06.md); with 1.5-2 tiles per SM on lines of at most 4 it took
// 0.82-1.04x the default tile's (H100, 2026-12-07, 31 cases: kLinearFewTiles128H100 in kernels-cuda/test/tile_rules_host.cpp).
constexpr double kPingPongFewMinTilesPerSm = 1.5;
constexpr double kPingPongDxMaxLine = 16.0;
constexpr int kPingPongTile64Tokens = 256;
// kPingPong3Tile: three consumer warpgroups taking tiles of this many tokens in turn, so that two epilogues run beside
// each main loop (the square-64 ping-pong tile, for the epilogues that fuse an activation or its backward). The
// dispatch takes it for dX with the activation's backward in place of kPingPongTile where that tile's backward rule
// holds and lines average at most kPingPong3MaxLine blocks: on an H100 (GELU(tanh), 2048-16384 tokens, six widths,
// densities 0.1-0.5) it took 0.92-0.98x the two consumers' time on lines of 1.2-4 blocks (1.02-1.03x in 2 cases of
// 24), 0.90-1.07x on lines of 6-6.4 and 1.06-1.15x on most longer lines, where loading each block for half the tokens
// costs more than the overlap saves (docs/kernels.md, "The activation's backward in dX's epilogue").
constexpr int kPingPong3TileTokens = 128;
constexpr double kPingPong3MaxLine = 4.0;
// bsrLinearActivation at width 64 takes the same tile, fused, wherever the ping-pong tiles' count of 256-token tiles
// holds and lines average at most this many blocks, Z in L2 or not: its epilogue writes Z and activation(Z), twice a
// plain epilogue's stores, and two of them run beside each main loop. On an H100 (GELU(tanh), 2048 and 8192 tokens,
// 768 -> 3072 to 4096 -> 4096, densities 0.1-0.5) it took 0.71-0.96x the path the dispatch ran before (the product
// and the pass where Z fits in half of L2, else the persistent tile fused) on lines of 1.2-6.4 blocks and 0.88-1.03x
// on lines of 8, and 0.96-1.07x on lines of 16-32, where fewer tokens per block load cost more than the overlap saves.
// Without the activation it lost (1.02-1.22x the persistent tile on most shapes): the overlap pays for the second
// output's stores (docs/kernels.md, "Three consumers for the fused forward").
constexpr double kPingPong3ForwardMaxLine = 8.0;
// At width 128 bsrLinearActivation takes three consumers of kPingPong3Tile128Tokens (three of 128 spill) where lines
// average at most kPingPong3ForwardMaxLine128 blocks and there is at least one 64-token tile per SM. On an H100
// (GELU(tanh), 2048 and 8192 tokens, 768 -> 3072 to 8192 -> 2048, densities 0.1-0.5) it took 0.78-1.00x the better of
// the dispatched tile fused and the product then the pass on lines of 0.6-4 blocks (22 cases), 0.87-1.06x on lines of
// 6-6.4 and 0.91-1.50x on lines of 8-32. dX with the activation's backward on the same tile took 0.85-1.22x the
// two-consumer ping-pong tile's time on lines of up to 4 and 0.91-1.41x on longer ones: it keeps two consumers.
constexpr int kPingPong3Tile128Tokens = 64;
constexpr double kPingPong3ForwardMaxLine128 = 4.0;

// The tile rules above that take counts only, for the dispatch (dispatch.cu) and the host check
// (kernels-cuda/test/tile_rules_host.cpp). `lines`: block rows (Linear) or columns (Matmul); `line`: their blocks on
// average, counted in blocks of the square's depth.
// The tiles of `tileTokens` tokens x one line that `m` tokens over `lines` lines make (the last partial tile counts).
inline int64_t tileCount(int64_t m, int64_t tileTokens, int64_t lines) {
  return (m + tileTokens - 1) / tileTokens * lines;
}
// The 64-wide persistent tile for a plain product: kPersistentMaxLine with kPersistentMinTilesPerSm tiles of
// kPersistentTileTokens per SM, kPersistentFewTilesMaxLine with fewer.
inline bool persistentTileRule(int64_t m, int64_t lines, double line, int sms) {
  const int64_t tiles = tileCount(m, kPersistentTileTokens, lines);
  return line <= kPersistentMaxLine && (tiles >= kPersistentMinTilesPerSm * sms || line <= kPersistentFewTilesMaxLine);
}
// Linear (bsrLinear and bsrLinearActivation) and plain dX (bsrMatmul without the activation's backward) on the
// three-consumer tile at `width` 64 or 128 wherever its token tiles (kPingPong3TileTokens at 64, kPingPong3Tile128Tokens
// at 128) over the product's lines (block rows for Linear, block columns for dX) are fewer than the SMs, whatever the
// lines' length: the launch then runs one CTA per tile, and the tile's tokens (half the default tile's, and at 64 wide
// the persistent tile's) make twice the CTAs. On an H100 (256-2048 tokens, eight shapes from 1024 x 1024 to
// 16384 -> 4096, densities 0.1-0.5) wherever the rule holds: Linear with GELU(tanh) (96 cases over both widths, lines of
// 0.8-128 blocks) took 0.73-1.01x the time of the route dispatched before fused (one case above 1.00x) and 0.75-1.05x
// plain, then the pass (two above); plain dX 0.80-1.07x the best other shipped tile at 64 wide (33 cases, one above
// 1.02x) and 0.77-0.88x at 128 (33). With as many tiles as SMs or more the other tiles were mostly as fast or faster
// (docs/kernels.md, "Three consumers with few tiles").
inline bool threeConsumerFewTilesRule(int width, int64_t m, int64_t lines, int sms) {
  if (sms <= 0 || lines <= 0 || m <= 0) return false;
  const int64_t tokens = width == 128 ? kPingPong3Tile128Tokens : width == 64 ? kPingPong3TileTokens : 0;
  if (tokens == 0) return false;
  return tileCount(m, tokens, lines) < sms;
}
// The three-consumer tile for bsrLinearActivation at `width` 64 (kPingPongMinTilesPerSm tiles of kPingPongTile64Tokens
// per SM, kPingPong3ForwardMaxLine) or 128 (a tile of kPingPong3Tile128Tokens per SM, kPingPong3ForwardMaxLine128), and
// at either width with fewer tiles than SMs (threeConsumerFewTilesRule).
inline bool pingPong3ForwardTileRule(int width, int64_t m, int64_t lines, double line, int sms) {
  if (sms <= 0 || lines <= 0) return false;
  if (threeConsumerFewTilesRule(width, m, lines, sms)) return true;
  if (width == 128) {
    return tileCount(m, kPingPong3Tile128Tokens, lines) >= sms && line <= kPingPong3ForwardMaxLine128;
  }
  if (width != 64) return false;
  return tileCount(m, kPingPongTile64Tokens, lines) >= kPingPongMinTilesPerSm * sms && line <= kPingPong3ForwardMaxLine;
}
// bsrLinearActivation (the activation in the forward's epilogue, writing Z and activation(Z)) on the wgmma tiles of
// width 64 and 128 (besides kPingPong3ForwardMaxLine's rule) where Z's bytes exceed this share of L2: the separate
// pass would then read Z back from device memory. On an H100 the tile the dispatch runs took 0.87-1.00x the product and the pass with Z of 33-134 MB (L2: 50 MB),
// and 0.95-1.06x with Z of 12.6-16.8 MB, where the pass finds Z in L2; on an H200 0.98-1.00x at 8192 tokens. At width
// 128 below kWideTileMinTokens tokens it fuses whatever Z's size (fusedForward128Rule, below).
constexpr double kFusedActivationMinShareOfL2 = 0.5;
// bsrLinearActivation at width 128 fuses the activation into the epilogue of whichever tile takes it below
// kWideTileMinTokens tokens, whatever Z's size. The captured FFN step (ffn.ts --graph, 128x128 blocks, two rounds,
// alternating) on an H100, 2026-12-07, over the product then the pass: 0.97-1.00x on 6 cases of the ping-pong tile's rule
// with Z inside half of L2 (1024 and 2048 tokens; kFusedInL2Step128H100 in kernels-cuda/test/tile_rules_host.cpp) and
// 0.96-0.99x on 6 other shapes at 512-2048 tokens; then 0.975-1.003x (geometric mean 0.987) on 14 cases no rule fused
// before, 256-1024 tokens, 0.97-1.94 tiles of 128 tokens per SM, lines of 6.4-32 blocks (kFusedBelowWide128StepH100).
// Not timed: the H200, and the rectangles of width 128 (128x64, on the same tiles). From 4096 tokens Z fits in half of
// L2 only under about 3200 columns, and that band was not timed: it keeps the pass.
constexpr bool fusedForward128Rule(int64_t tokens) { return tokens < kWideTileMinTokens; }
// Set at 16 and 8 on an H200, where longer lines were not measured. On an H100 (2026-12-06, 2048-8192 tokens,
// 2048 -> 8192 to 16384 -> 4096, densities 0.25 and 0.5) the fused ping-pong tile took 0.84-0.97x the time of dX and the
// pass on the tiles the rules ran them on at 64x64 on lines of 32-64 blocks, and 0.79-0.94x at 128x128 on lines of 16
// (0.94-1.03x on lines of 32, against the wide tile's dX and the pass): the pass costs per element of dX, which a longer
// line does not shrink (docs/kernels.md, "The activation's backward in dX's epilogue").
constexpr double kPingPongBackwardMaxLine64 = 64.0;
constexpr double kPingPongBackwardMaxLine128 = 16.0;
// bsrLinearActivation at width 128 takes the ping-pong tile fused (`pingPongTile128Rule`) on lines of up to this many
// blocks, with kPingPongMinTilesPerSm of its tiles per SM (below kWideTileMinTokens fused whatever Z's size:
// fusedForward128Rule), where
// the three-consumer tile's rule (lines of at most kPingPong3ForwardMaxLine128) does not take it first. Before, it ran on the wide or default tile fused, whose epilogue (Z and activation(Z): twice
// a plain epilogue's stores) the CTA waits on; the ping-pong tile runs it beside the other consumer's products. In the
// cases this takes it took 0.72-1.09x that route's time on an H100 (21 cases, 2048-8192 tokens, 2048 -> 8192 to
// 4096 -> 16384, densities 0.1-0.5; geometric mean 0.93, 0.72-0.87x at 2048 tokens; the 1.09x few long lines, 8192 ->
// 2048 at density 0.25) and 0.83-1.00x on an H200 (6 cases, geometric mean 0.87); on lines of 32 0.98-1.07x
// (docs/kernels.md, "The 128-wide ping-pong tile fused").
constexpr double kPingPongForwardMaxLine128 = 16.0;
// What pingPongTile128Rule is asked about: Linear plain, bsrLinearActivation (the activation fused), plain dX (bsrMatmul
// without the activation's backward), or dX with that backward fused.
enum class PingPongProduct { kLinear, kLinearActivation, kPlainDx, kDxBackward };
// The 128-wide ping-pong tile (kPingPongTile): kPingPongMinTilesPerSm tiles of kPingPongTileTokens per SM on lines of
// at most kPingPongMaxLine blocks (kPingPongForwardMaxLine128 with the activation fused, kPingPongBackwardMaxLine128
// with its backward), and below kWideTileMinTokens tokens also from kPingPongFewMinTilesPerSm: plain dX on lines of at
// most kPingPongDxMaxLine, plain Linear of at most kPingPongMaxLine.
inline bool pingPongTile128Rule(int64_t m, int64_t lines, double line, int sms, PingPongProduct product) {
  if (sms <= 0 || lines <= 0 || m <= 0) return false;
  const int64_t tiles = tileCount(m, kPingPongTileTokens, lines);
  const double maxLine = product == PingPongProduct::kLinearActivation ? kPingPongForwardMaxLine128
                         : product == PingPongProduct::kDxBackward     ? kPingPongBackwardMaxLine128
                                                                       : kPingPongMaxLine;
  if (tiles >= kPingPongMinTilesPerSm * sms && line <= maxLine) return true;
  if (m >= kWideTileMinTokens || double(tiles) < kPingPongFewMinTilesPerSm * sms) return false;
  return (product == PingPongProduct::kPlainDx && line <= kPingPongDxMaxLine) ||
         (product == PingPongProduct::kLinear && line <= kPingPongMaxLine);
}
constexpr int64_t kXResidentMaxSlab = 1024;
// The dispatch takes the tile up to 1408 columns, where two consumers' rings still get three stages each (four stages
// up to 1280, three consumers of three up to 1152; bsr_wgmma_xr.cu asserts two of at least three beside it). On an H200
// the FFN step with 32x32 blocks at 1152 <-> 4608 and 1280 <-> 5120, 2048-8192 tokens, densities 0.1-0.35, ran
// 1.07-1.21x faster with its wide-slab products on the tile than on mma.sync's tile
// (benchmarks/results/gpu-nvidia-h200/xr-wide-slabs-2026-12-03.md); at 1344 <-> 5376 and 1408 <-> 5632 1.03-1.13x at
// densities 0.1 and 0.25 and the same time at 0.35 (xr-slabs-1344-1408-2026-12-04.md); at 1536 <-> 6144, whose slab
// leaves two consumers two stages each, 0.91-0.97x at densities 0.25-0.35.
constexpr int64_t kXResidentMaxDispatchedSlab = 1408;
// On an H200 with the tile's staged stores and wave grouping, over 96 cases (four widths each way, 2048-16384 tokens,
// densities 0.5/0.25/0.1), the tile ran 1.03-1.51x what the dispatch ran instead wherever the rule of the time (lines
// of 2 blocks, 1.75 slabs of W per CTA) declined it, down to lines of 1.6 blocks and 0.8 slabs, and 0.96x at the one
// case below that (1024 x 1024 at 2048 tokens, density 0.1: 0.4 slabs); the bounds sit between.
constexpr double kXResidentMinLine = 1.5;
// The tile was first measured from 2048 tokens. Measured below (the FFN step, H200, 2026-12-03: 768 <-> 3072,
// 1024 <-> 4096 and 1280 <-> 5120 at 128-1536 tokens, densities 0.1-0.4, the block kernels forced, the tile's rule from
// 128 tokens against from 2048): the step ran 1.01-1.17x faster at 512-1536 tokens (0.99x at density 0.1 on the
// narrowest layer at 1000 tokens) and 1.06-1.29x at 128-256 tokens where the rule took the tile (density 0.35; at 0.1
// and 0.25 the weight-per-slab bound declines it there): benchmarks/results/gpu-nvidia-h200/xr-few-tokens-2026-12-03.md.
// The least: two token tiles.
constexpr int64_t kXResidentMinTokens = 128;
constexpr double kXResidentMinWeightPerSlab = 0.6;
// Consumer warpgroups of the X-resident tile at 32x32 with a slab of at most kXResidentMaxSlab (bsr_wgmma_xr.cu); the
// dispatch's rule groups lines by this count up to kXResidentMaxDispatchedSlab (the launcher groups them by its own).
constexpr int kXResidentConsumers = 4;
// Tokens per CTA of the X-resident tile (the M of one wgmma): a consumer stores a line's outputs for these tokens at
// once, four warps of 16 rows each (with the activation's backward fused, a row of column sums per warp).
constexpr int kXResidentTileTokens = 64;
// Tokens per tile of the mma.sync Linear/Matmul tiles (bsr_mma.cu), for the line-split rule (dispatch.cu).
constexpr int kMmaTileTokens = 128;

// Block row (column) entries whose offsets a CTA keeps in shared memory; longer rows read the rest
// from global memory.
constexpr int kIndexCapacity = 1024;

// Which tile of a tilesM x tilesN grid CTA `linear` computes: groups of groupM token tiles sweep all
// block rows, so a group's slab of the dense operand and each block row are reused from L2.
__device__ __forceinline__ void rasterTile(int linear, int tilesM, int tilesN, int groupM, int& tileM, int& tileN) {
  int perGroup = groupM * tilesN;
  int group = linear / perGroup;
  int firstM = group * groupM;
  int sizeM = min(tilesM - firstM, groupM);
  int within = linear - group * perGroup;
  tileM = firstM + within % sizeM;
  tileN = within / sizeM;
}

// Host: arguments common to both paths.
KernelArgs makeArgs(Op op, const void* a, const void* b, const void* bias, void* out, int64_t m,
                    const BsrPatternView& pattern);
// Token tiles per raster group so that the group's slab of A (tileRows x depth elements) stays near
// 16 MiB of L2.
int rasterGroup(int tilesM, int64_t tileRows, int64_t depth);

// Launchers: false when this path has no kernel for the shape (the caller falls back).
bool launchMma(Op op, DType dtype, const KernelArgs& args, int blockSize, int variant, int numSms,
               cudaStream_t stream);
bool launchWgmma(Op op, DType dtype, const KernelArgs& args, int blockSize, int variant, int numSms,
                 cudaStream_t stream);
// The X-resident tile (kXResidentTile) of bsrLinear or bsrMatmul, 32x32 or 64x64 blocks, bfloat16 or float16, on
// sm_90a; false, having launched nothing, where the slab is narrower than 64 or wider than 1536 (or not a multiple
// of 8 elements), or for any other product or block (launchWgmma takes it for variant kXResidentTile).
bool launchXResident(Op op, DType dtype, const KernelArgs& args, int blockSize, int numSms, cudaStream_t stream);
// Block rows (bsrLinear) or columns (bsrMatmul) of `lines` that each CTA of the X-resident tile takes with m tokens.
// The tile fills an SM's shared memory, so its CTAs run one per SM, in waves of numSms. By default (ctasPerSm 0) the
// grouping is the one of fewest waves x (slab + lines per consumer) per CTA, each CTA's slab load counted as one line
// of its consumers (kXResidentSlabLines): with 64-token tiles x groups each CTA pays its slab once, so fewer, longer
// CTAs win until a wave is left partly empty (measured on an H200: docs/kernels.md, "X-resident bsrLinear and
// bsrMatmul"). ctasPerSm > 0 sizes the groups for about that many CTAs per SM instead (kernels-cuda/dev/ measures it).
// mostLines caps a group, a multiple of the consumers (kernels-cuda/dev/'s wide-slab tile, whose consumers hold a few
// lines each).
constexpr int64_t kXResidentSlabLines = 1;
inline int64_t xResidentGroupLines(int64_t m, int64_t lines, int consumers, int numSms, int ctasPerSm = 0,
                                   int64_t mostLines = INT64_MAX) {
  const int64_t tilesM = (m + kXResidentTileTokens - 1) / kXResidentTileTokens;
  const int64_t sms = std::max(numSms, 1);
  const int64_t c = std::max(consumers, 1);
  if (lines <= 0) return 1;
  const int64_t cap = std::max<int64_t>(mostLines, 1);
  const int64_t fewestGroups = cap >= lines ? 1 : (lines + cap - 1) / cap;
  // A group of ceil(lines / groups) lines, a multiple of the consumers where more than that, so that each gets as many.
  auto groupLinesFor = [&](int64_t groups) {
    int64_t groupLines = (lines + groups - 1) / groups;
    if (groupLines > c) groupLines = (groupLines + c - 1) / c * c;
    return groupLines;
  };
  if (ctasPerSm > 0)
    return groupLinesFor(std::max<int64_t>(fewestGroups, (ctasPerSm * sms + tilesM - 1) / tilesM));
  // The wave model: each CTA takes its slab's load plus its lines per consumer; the CTAs run in waves of `sms`.
  // Beyond four CTAs per SM the slab loads only grow.
  const int64_t mostGroups =
      std::max(fewestGroups, std::min(lines, std::max<int64_t>(1, (4 * sms + tilesM - 1) / tilesM)));
  int64_t best = lines, bestCost = INT64_MAX;
  for (int64_t wanted = fewestGroups; wanted <= mostGroups; ++wanted) {
    const int64_t groupLines = groupLinesFor(wanted);
    const int64_t groups = (lines + groupLines - 1) / groupLines;
    const int64_t waves = (tilesM * groups + sms - 1) / sms;
    const int64_t cost = waves * (kXResidentSlabLines + (groupLines + c - 1) / c);
    if (cost < bestCost) bestCost = cost, best = groupLines;
  }
  return best;
}
// The block shapes besides the squares of 32, 64 and 128 that the mma.sync path covers in float16/bfloat16
// (bsr_mma_shapes.cu instantiates a tile for each): 16x16 and the 1:2 and 2:1 rectangles of sides 16-128.
struct MmaShape {
  int rows, cols;
};
inline constexpr MmaShape kMmaShapes[] = {{16, 16}, {16, 32}, {32, 16}, {32, 64}, {64, 32}, {64, 128}, {128, 64}};
constexpr bool mmaShapeSupported(int rows, int cols) {
  for (const MmaShape& shape : kMmaShapes)
    if (shape.rows == rows && shape.cols == cols) return true;
  return false;
}
// Their launcher: the default tile of an R x C block (mmaShapeSupported), bfloat16 or float16.
bool launchMmaShape(Op op, DType dtype, const KernelArgs& args, int rows, int cols, cudaStream_t stream);
// The rectangles that also have wgmma tiles on sm_90a (bsr_wgmma_shapes.cu), for the products whose output tile (a
// block row's R features for Linear, a block column's C for Matmul and dW: tileWidth) is at least 64 wide: at 32,
// wgmma's n32 tiles lose to mma.sync, as at 32x32 (docs/kernels.md). A rectangle's tiles are those of the square of
// its output tile's width, with the same variants where its steps are 64 deep (a 32-deep side along the reduction, as
// bsrLinear's at 64x32, takes the default tile alone). The others of its products keep the mma.sync tile.
inline constexpr MmaShape kWgmmaShapes[] = {{64, 128}, {128, 64}, {64, 32}, {32, 64}};
constexpr int tileWidth(Op op, int rows, int cols) { return op == Op::Linear ? rows : cols; }
// The block's side along the product's reduction (a Linear's block row is C deep, a Matmul's or dW's block column R).
constexpr int tileDepth(Op op, int rows, int cols) { return op == Op::Linear ? cols : rows; }
constexpr bool wgmmaShapeSupported(Op op, int rows, int cols) {
  if (tileWidth(op, rows, cols) < 64) return false;
  for (const MmaShape& shape : kWgmmaShapes)
    if (shape.rows == rows && shape.cols == cols) return true;
  return false;
}
// Whether every product of the shape has wgmma tiles (64x128 and 128x64).
constexpr bool wgmmaShapeAllProducts(int rows, int cols) {
  return wgmmaShapeSupported(Op::Linear, rows, cols) && wgmmaShapeSupported(Op::Matmul, rows, cols);
}
// Their launcher: tile `variant` (a TileVariant) of product `op` over R x C blocks (wgmmaShapeSupported), bfloat16 or
// float16; false where it has no such tile.
bool launchWgmmaShape(Op op, DType dtype, const KernelArgs& args, int rows, int cols, int variant, int numSms,
                      cudaStream_t stream);
// Decoding path of Linear (bsr_decode.cu): whether it covers the dtype, block shape, token count and
// alignments, and its launch (pointers already validated).
bool decodeSupported(DType dtype, const void* x, const void* values, const void* bias, const void* y, int64_t m,
                     const BsrPatternView& pattern);
// `variant` (TcOptions::variant, kDecodeVariants of them): 0 is the default up to 32 tokens; 1-3 aim at 2, 8 or 16 KB of
// W per warp; 4 is 0's widths without the overlap with the kernel before (no programmatic launch, no L2 prefetch); 5
// (kDecodeStagedVariant) stages X in shared memory: from 33 tokens, where decodeStagedSupported and the rule below
// (decodeStagedRule, dispatch.cu) take it.
constexpr int kDecodeVariants = 6;
constexpr int kDecodeStagedVariant = 5;
// Where the default options take the staged variant (decodeStagedRule, dispatch.cu), measured on an H100 and an H200
// (4096 <-> 16384 and 4096 x 4096, 40 and 64 tokens, 32x32 and 64x64 blocks; docs/kernels.md, "33-64 tokens with X
// staged"). Alone (tc_bench) on the 4096 <-> 16384 layers it took 0.74-0.99x variant 0's time at density 0.25 and
// 0.61-0.87x at 0.5; on 4096 x 4096 (8.4 M stored weights at 0.5) 0.92-1.24x, where a CTA's staged range serves too few
// blocks to pay for its copy. In a feed-forward decoding stack (LayerNorm, 4096 -> 16384 with GELU, 16384 -> 4096;
// H100) its pass that sums the ranges of K (4-7 us at 40 tokens) ate the products' gain at 0.25: the stack took 1.00-1.06x
// its time with variant 0, and 0.78-0.86x at 0.5. From 0.35 the products' gain, which grows with the blocks, pays for
// that pass with a margin (those figures break even near 0.27).
constexpr double kDecodeStagedMinDensity = 0.35;
constexpr double kDecodeStagedMinElements = 16.0 * 1024 * 1024;
// That rule for a pattern of `nnzBlocks` stored blocks of `blockHeight` x `blockWidth` out of `blockRows` x `blockCols`:
// the density counted as nn counts a pattern's blocks (round(density x cells)), so a layer built at the bound is taken
// whatever its block count's rounding.
inline bool decodeStagedTakes(int64_t nnzBlocks, int64_t blockRows, int64_t blockCols, int blockHeight, int blockWidth) {
  const double cells = static_cast<double>(blockRows) * static_cast<double>(blockCols);
  const double stored = static_cast<double>(nnzBlocks) * blockHeight * blockWidth;
  return cells > 0 && static_cast<double>(nnzBlocks) >= std::round(kDecodeStagedMinDensity * cells) &&
         stored >= kDecodeStagedMinElements;
}
// The staged variant's grid: CTAs of a group of block rows x one range of K of kDecodeStagedRangeCols columns (the
// last range shorter); a CTA's warps, at most kDecodeStagedMaxWarps (12: their 64 tokens' sums and a step's W fit the
// registers without spilling), take the group's 16-row slices in turn.
constexpr int kDecodeStagedRangeCols = 1024;
constexpr int kDecodeSliceRows = 16;
constexpr int kDecodeStagedMaxWarps = 12;
inline int64_t decodeStagedRangesOf(int64_t cols) {
  return (cols + kDecodeStagedRangeCols - 1) / kDecodeStagedRangeCols;
}
// Block rows per CTA for `blockRows` block rows and `ranges` ranges on `numSms` SMs: the fewest whose grid is one wave
// of at most one CTA per SM (one fits, the staged range taking most of its shared memory), so that no SM runs a second
// CTA while others idle; every block row in one group where the ranges alone are more than the SMs.
inline int decodeStagedGroupRows(int64_t blockRows, int64_t ranges, int numSms) {
  if (blockRows <= 1) return 1;
  // ceil(blockRows / group) x ranges <= SMs exactly when ceil(blockRows / group) <= floor(SMs / ranges).
  const int64_t groupsPerRange = ranges > 0 && numSms / ranges > 1 ? numSms / ranges : 1;
  const int64_t group = (blockRows + groupsPerRange - 1) / groupsPerRange;
  return static_cast<int>(group < blockRows ? group : blockRows);
}
// Warps of a CTA of `groupRows` block rows of `blockHeight` (a multiple of 16): one per 16-row slice of the group, at
// most kDecodeStagedMaxWarps.
inline int decodeStagedWarps(int groupRows, int blockHeight) {
  const int64_t slices = int64_t{groupRows} * (blockHeight / kDecodeSliceRows);
  return static_cast<int>(slices < kDecodeStagedMaxWarps ? (slices > 1 ? slices : 1) : kDecodeStagedMaxWarps);
}
bool decodeVariant(int variant);
// What the decoding kernel's epilogue does besides Y = sums + bias: add `residual` [m, rows] before Y is rounded
// (bsrLinear's residual), and write activation(Y as stored) to `activated` as the activation pass computes it
// (bsrLinearActivation); each when non-null.
struct DecodeEpilogue {
  const void* residual = nullptr;
  void* activated = nullptr;
  Activation activation = Activation::Gelu;
};
inline bool hasEpilogue(const DecodeEpilogue& epilogue) { return epilogue.residual != nullptr || epilogue.activated != nullptr; }
// `numSms` and `l2Bytes` describe the current device (0: unknown; no L2 prefetch then).
void launchDecodeLinear(DType dtype, const void* x, const void* values, const void* bias, void* y, int64_t m,
                        const BsrPatternView& pattern, int variant, int numSms, int l2Bytes, cudaStream_t stream,
                        const DecodeEpilogue& epilogue = {});
// The staged variant (bsr_decode.cu): 33-64 tokens in bfloat16/float16 over blocks 32-128 columns wide (decodeSupported
// besides); the ranges of K it splits the product into (CTAs along K). With more than one range, or an epilogue, its
// CTAs write float32 partials [ranges][m][rows] into `partials` (null otherwise: the CTAs write Y), which the launch
// then sums into Y in a second pass that also applies the epilogue (the first range carries the bias), so that the
// product's kernel keeps the epilogue's registers out of its loop.
// The launch returns false, launching nothing, where a CTA cannot have the shared memory it stages X in (about 132 KB;
// sm_86 and sm_89 give about 100): the caller then runs variant 0.
bool decodeStagedSupported(DType dtype, const BsrPatternView& pattern, int64_t m);
int64_t decodeStagedRanges(const BsrPatternView& pattern);
bool launchDecodeStaged(DType dtype, const void* x, const void* values, const void* bias, void* y, float* partials,
                        int64_t m, const BsrPatternView& pattern, int numSms, cudaStream_t stream,
                        const DecodeEpilogue& epilogue = {});
// Warps per CTA of the decoding kernel for this pattern, token count and variant on the current device, of
// `numSms` SMs (reported by the bench).
int decodeWarps(DType dtype, const BsrPatternView& pattern, int64_t m, int variant, int numSms);

// Whether this build holds sm_90a code the current device can run.
bool wgmmaAvailable();
// Rows (tokens) of one staged store call of the dispatched wgmma Matmul tile `variant` whose output tile is `width`
// features wide (the block column's C; one consumer's rows, or a ping-pong consumer's whole tile), each call's four
// warps writing a row of column partials with args.pre; 0 for a tile that has none.
int wgmmaStoreRows(int width, int variant);
// CTAs of the dispatched wgmma dW tile (the default Sampled tile) for square blocks of `block` that one SM of the current
// device holds at once (its shared memory and registers); 0 where this build has no such tile.
int wgmmaSampledCtasPerSm(int block);
// CTAs of the dispatched mma.sync dW tile in bfloat16/float16 (the default Sampled tile of bsr_mma.cu) for square blocks
// of `block` that one SM of the current device holds at once; 0 where the runtime cannot say.
int mmaSampledCtasPerSm(int block);
// The same for the dW tile of an R x C block of kMmaShapes (bsr_mma_shapes.cu); 0 for another shape, or where the
// runtime cannot say.
int mmaShapeSampledCtasPerSm(int rows, int cols);

// Sums [splits][n] float32 partials into n values of dtype, in split order (deterministic).

}  // namespace bs::tc
