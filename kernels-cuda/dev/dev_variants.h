// Kernel variants kept only for measurement, linked into tc_bench and never into the addon.
#pragma once

#include "tc/tc_kernels.h"

namespace bs::tc {

// The persistent 64x64 wgmma tile with store helpers: the producer warpgroup's three idle warps copy the staged
// rows out (and write a fused activation) while the consumers go on to the next tile; Linear and Matmul. Measured
// on an H200 (docs/kernels.md): no faster than the dispatched tile, whose consumers store their own rows.
constexpr int kStoreHelpersVariant = 10;

// The persistent 64x64 wgmma tile whose tiles leave by bulk tensor stores: each consumer stages its rows swizzled for
// the output's tensor map (with a fused activation's rows beside them) and one of its threads issues the stores;
// Linear and Matmul. Measured on an H200 (docs/kernels.md, tc-bulk-store.md): 1.18x slower than the dispatched tile
// (geometric mean), the fused activation 1.09x slower than the dispatched tile's fused epilogue.
constexpr int kBulkStoreVariant = 13;

// The persistent wgmma tiles with the consumers in turn (bsrWgmmaPingPongKernel): each consumer warpgroup takes
// whole tiles, its epilogue running during the other's main loop; Linear and Matmul. kPingPongVariant: 128-token
// tiles at 32x32 blocks (at 64x64 and 128x128 the addon has its own: tc_kernels.h's kPingPongTile, the same number);
// kPingPongVariant + 1: 256-token tiles at 64x64, token-major (the addon's 64x64 ping-pong tile is feature-major).
// Measured on an H200 (docs/kernels.md): slower than the dispatched tiles at 32x32 (1.42x) and 64x64 (1.07x).
constexpr int kPingPongVariant = 14;
static_assert(kPingPongVariant == kPingPongTile, "dev's ping-pong tiles share the addon's variant number");

// The persistent 64x64 wgmma tile token-major (wgmma's M the tokens: two m64n64 products per consumer and k16 step),
// as dispatched before the feature-major tile replaced it (1-6% slower on an H200: docs/kernels.md).
constexpr int kTokenMajorPersistentVariant = 17;

// The X-resident tile (kXResidentTile, src/tc/bsr_wgmma_xr.cuh) at 32x32 blocks, bsrLinear and bsrMatmul in bfloat16 or
// float16 (dev/bsr_wgmma_xr_dev.cu), each the addon's tile with one change: kXResidentDirectStoresVariant with its
// outputs stored from the accumulators' layout (4-byte stores) instead of staged; kXResidentPreviousVariant the tile the
// addon ran before (those direct stores, its lines grouped for two CTAs per SM), the baseline. (18-20, 23 and 24 were
// two accumulator chains, the bias a line ahead and deferred stores: measured, no faster, removed; tc-xr.md.)
constexpr int kXResidentDirectStoresVariant = 21;
constexpr int kXResidentPreviousVariant = 22;
// The addon's X-resident tile with its line groups sized for two CTAs per SM (kXResidentWavesVariant) or one (+ 1)
// instead of by xResidentGroupLines' wave model: the model against the plain rules.
constexpr int kXResidentWavesVariant = 25;
// The wide-slab X-resident tile (dev/bsr_wgmma_xr_wide.cuh) at 32x32, bsrLinear and bsrMatmul in bfloat16 or float16,
// any slab of 64 or more (K for bsrLinear, N for bsrMatmul): the slab streamed in chunks of 512 columns and each of
// three consumers holding the accumulators of kXResidentWideLines lines (kXResidentWideVariant), one more (+ 1) or
// one fewer (+ 2). Measured on an H200 (tc-xr.md, "The wide-slab tile"): 0.56-1.00x the rate of the faster of the
// tiles dispatched at slabs of 1536-4096, and slower with five lines than four, so not dispatched.
constexpr int kXResidentWideVariant = 27;
constexpr int kXResidentWideLines = 4;
bool launchXResidentDevVariant(Op op, DType dtype, const KernelArgs& args, int blockSize, int variant, int numSms,
                               cudaStream_t stream);

// dW's patch tile at 32x32 (dev/bsr_mma_patch.cu, mma.sync on every sm_80+ device; either path's options name it): a
// CTA per record of the pattern's patch list (src/tc/patch_list.h: a few block rows x a few block columns of W), each dY
// and X slice of a 64-token step loaded once for all of the record's blocks; 8 warps of up to 4 blocks each
// (tc_kernels.h's kPatchDwTile) or 16 of up to 2 (kPatchDwPairsTile). Measured on an H200
// (docs/kernels.md, "dW's patch tile (dev variants 30, 31 and 32)"): fewer L2 bytes than mma.sync's dW tile and the
// same time, on wgmma too: how each step is fed and drained bounds them, not the traffic.
// kPatchDwWgmmaTile (dev/bsr_wgmma_patch.cu, sm_90a): the same patches on wgmma, each product m64n32k16 over two
// blocks of one column (A two of the patch's dY row slices, B the column's X slice; src/tc/patch_list.h's pair records).
// The same products fed by bulk tensor copies through a ring of mbarrier stages are the addon's tile (kPatchPairTile, 33).
bool launchPatchDwVariant(DType dtype, const KernelArgs& args, int blockSize, int variant, cudaStream_t stream);
bool launchPatchDwWgmma(DType dtype, const KernelArgs& args, cudaStream_t stream);

// A TcOptions::devVariants launcher: the wgmma variants of dev/bsr_wgmma_variants.cu (1 at 32 and 64
// blocks, dW kFeatureMajorDwTile at 64, 2-5, kTokenMajorPersistentVariant, kStoreHelpersVariant, kBulkStoreVariant,
// kPingPongVariant and the next), the X-resident 21, 22, 25 and 26, the wide-slab 27-29, dW's patch tiles 30-32 on
// either path, and the mma.sync variants of dev/bsr_mma_variants.cu (1) and dev/bsr_mma_grouped.cu (8, 9); false,
// having launched nothing, for any other path, product or variant.
bool launchDevVariant(TcPath path, Op op, DType dtype, const KernelArgs& args, int blockSize, int variant, int numSms,
                      cudaStream_t stream);

// The mma.sync variant alone (dev/bsr_mma_variants.cu).
bool launchMmaDevVariant(Op op, DType dtype, const KernelArgs& args, int blockSize, int variant, cudaStream_t stream);

// The grouped mma.sync tiles of 32x32 blocks (dev/bsr_mma_grouped.cu), bsrLinear and bsrMatmul: 128 tokens x a group
// of kScheduleGroup block rows (columns) walking their merged schedule (dev/group_schedule.h), 8 warps of 16 tokens
// (kGroupedVariant) or 4 warps of 32 (kGroupedSmallVariant). False without a schedule, for other blocks or dtypes,
// or when the groups do not tile the output's features.
constexpr int kGroupedVariant = 8;
constexpr int kGroupedSmallVariant = 9;
bool launchGroupedVariant(Op op, DType dtype, const KernelArgs& args, int variant, cudaStream_t stream);

// bsrLinear and bsrMatmul tiles of 32x32 or 64x64 blocks in clusters of kScheduleGroup CTAs (one token tile, a row
// or column group) that load each slice of the dense operand once for every member holding it, by TMA multicast
// (dev/bsr_wgmma_multicast.cu); kMulticastVariant + 1 is the same without the sharing, for measurement. False
// without a schedule, for other blocks or dtypes.
constexpr int kMulticastVariant = 11;
// Pipeline slots of the multicast tiles (the schedule's slot field is colored for them): 10 at 32x32, 5 at 64x64.
constexpr int multicastStages(int blockSize) { return blockSize == 32 ? 10 : blockSize == 64 ? 5 : 0; }
bool launchMulticastVariant(Op op, DType dtype, const KernelArgs& args, int blockSize, int variant,
                            cudaStream_t stream);

// The decoding kernel with block rows in pairs, the longest with the shortest (dev/bsr_decode_pairs.cu): bsrLinear with
// 1-16 tokens in bfloat16/float16, a CTA per 16-row slice of a pair of block rows (the p-th of
// BsrPatternView::decodeRowOrder and the p-th from its end), the addon's width rule for the pair's blocks. Needs the
// pattern's decodeRowOrder (tc_bench builds it: appendDecodeRowOrder). On an H100
// (benchmarks/results/gpu-nvidia-h100-80gb-hbm3/decode-dev-variants-2026-12-05.md, where it is variant 8): 0.85-0.90x
// variant 0's time on 4096 -> 16384 at density 0.25 with 64x64 blocks (512 pair CTAs), 0.96-1.20x where a layer's
// rows give fewer pair CTAs than SMs.
constexpr int kDecodePairsVariant = kDecodeVariants;
bool decodePairsSupported(DType dtype, const BsrPatternView& pattern, int64_t m);
int decodePairsWarps(DType dtype, const BsrPatternView& pattern, int64_t m, int numSms);
bool launchDecodePairs(DType dtype, const void* x, const void* values, const void* bias, void* y, int64_t m,
                       const BsrPatternView& pattern, int numSms, int l2Bytes, cudaStream_t stream);

// A TcOptions::devDecode (dev/decode_variants.cu): the variant above by number; false, having launched nothing, for
// any other or where the variant does not cover the call. And their warps per CTA (the bench's table; 0: none).
bool launchDecodeDevVariant(DType dtype, const void* x, const void* values, const void* bias, void* y, int64_t m,
                            const BsrPatternView& pattern, int variant, int numSms, cudaStream_t stream);
int decodeDevWarps(DType dtype, const BsrPatternView& pattern, int64_t m, int variant, int numSms);

}  // namespace bs::tc
