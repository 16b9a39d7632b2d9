// Tensor-core kernels for the block-sparse products (bfloat16 and float16 storage, float32 accumulation;
// float32 storage in TF32 only when allowed), and the decoding path of bsrLinear (1-16 tokens, every
// float dtype, float32 exact).
// Each entry point returns false, having launched nothing, when it has no kernel for the dtype, block
// shape, alignment or device; the caller then runs the simple kernel. Arguments are the same device
// pointers, already validated, that the simple launchers in kernels/bsr.cu take.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../bsr_pattern.h"
#include "../common.h"
#include "../ops.h"

namespace bs {

// Which path runs: Auto picks the decoding kernel for bsrLinear with at most kDecodeMaxTokens tokens,
// else wgmma on sm_90a and mma.sync on other sm_80+ devices. Decode forces the decoding kernel (bsrLinear
// only; it declines what it cannot run).
enum class TcPath : int { Auto = 0, Mma = 1, Wgmma = 2, Decode = 3 };

// Token counts up to which bsrLinear reads W once with the decoding kernel (bfloat16/float16; float32 up to 16): up
// to 16 tokens the product costs little more than streaming the weight; from 17 to 64 X's columns, read once per
// block, and the token tiles' products weigh more, but the kernel still beat the tiles, whose few CTAs walk whole
// block rows, in 30 of 36 cases measured at 40-64 tokens (1.28x on the geometric mean; docs/kernels.md, "Decoding").
constexpr int64_t kDecodeMaxTokens = 64;
constexpr int64_t kDecodeMaxTokensFloat32 = 16;
inline int64_t decodeMaxTokens(DType dtype) {
  return dtype == DType::Float32 ? kDecodeMaxTokensFloat32 : kDecodeMaxTokens;
}

namespace tc {
// The three products (tc_kernels.h says how each maps onto one gathered GEMM).
enum class Op : int { Linear = 0, Matmul = 1, Sampled = 2 };
struct KernelArgs;
}  // namespace tc

// Launches a variant kept only for measurement (kernels-cuda/dev/); false when it has none for the case.
using DevVariantLauncher = bool (*)(TcPath path, tc::Op op, DType dtype, const tc::KernelArgs& args, int blockSize,
                                    int variant, int numSms, cudaStream_t stream);

// Launches a decoding variant of bsrLinear kept only for measurement (kernels-cuda/dev/), named by
// TcOptions{TcPath::Decode, variant} past the shipped ones (tc_kernels.h's kDecodeVariants); false when it has none
// for the case.
using DevDecodeLauncher = bool (*)(DType dtype, const void* x, const void* values, const void* bias, void* y, int64_t m,
                                   const BsrPatternView& pattern, int variant, int numSms, cudaStream_t stream);

struct TcOptions {
  TcPath path = TcPath::Auto;
  int variant = -1;  // tile-shape variant within the path; -1: the measured best for the shape
  // dW: the number of token splits (each at least one 64-token step); Linear/Matmul on a named mma.sync default tile:
  // the number of runs each line is split into (KernelArgs::lineSplits). 0: the dispatch's rule.
  int splits = 0;
  // dW on the wgmma path with 2 to kMaxClusterSplits token splits: the splits of a group as one thread-block cluster
  // that sums its float32 accumulators through distributed shared memory, instead of writing float32 partials for a
  // second pass. Kept for measurement: on an H200 it measured 0.67-1.21x the partial pass (docs/kernels.md).
  bool splitCluster = false;
  // dW on the wgmma path's default tile with square blocks and the rule's splits (splits 0): 0 lets the rule decide
  // whether the groups past the last whole wave run as a tail of pieces (tc_kernels.h, KernelArgs::groupList), -1
  // never, and a count above 0 takes the tail with that many pieces per group wherever there is one (measurement).
  int tailSplits = 0;
  // Tried when the shipped kernels have no such variant: the bench passes dev's launcher, the addon none.
  DevVariantLauncher devVariants = nullptr;
  // The same for the decoding path: tried for a decoding variant the addon does not have.
  DevDecodeLauncher devDecode = nullptr;
};

// Y = X W^T + bias (bias may be null). x [m, cols], y [m, rows].
bool tcBsrLinear(DType dtype, const void* x, const void* values, const void* bias, void* y, int64_t m,
                 const BsrPatternView& pattern, cudaStream_t stream, const TcOptions& options = {});
// Z = X W^T + bias and A = activation(Z) in one pass: the tile's epilogue writes both (A from Z as stored, in
// float32). bfloat16/float16 with more than kDecodeMaxTokens tokens on the shipped tiles, and up to kDecodeMaxTokens
// the decoding path (every float dtype it covers; the staged variant in its stores or its sum pass: A as the
// activation pass computes it);
// false, having launched nothing, otherwise (the caller then runs tcBsrLinear and the activation apart). z and a
// [m, rows].
bool tcBsrLinearActivation(DType dtype, const void* x, const void* values, const void* bias, void* z, void* a,
                           Activation activation, int64_t m, const BsrPatternView& pattern, cudaStream_t stream,
                           const TcOptions& options = {});
// Y = X W^T + bias + residual (residual [m, rows]) in one pass: the decoding path adds the residual in its epilogue
// (one rounding of the float32 sum; the staged variant's in its stores or its sum pass). Up to kDecodeMaxTokens tokens
// where the decoding path covers the call; false, having launched nothing, otherwise (the caller then runs tcBsrLinear
// and the add apart).
bool tcBsrLinearResidual(DType dtype, const void* x, const void* values, const void* bias, const void* residual, void* y,
                         int64_t m, const BsrPatternView& pattern, cudaStream_t stream, const TcOptions& options = {});
// dZ = (dY W) act'(Z) and dbias = the column sums of dZ, in one pass: dX's tile epilogue reads the pre-activation Z
// of the layer before (whose output act(Z) was this product's input) and writes dZ in place of dX, as
// tcBsrMatmul followed by biasActivationBackward(dX, Z) computes them (dX rounded to the dtype first; the sums in
// float32, in a fixed order). bfloat16/float16 on the shipped wgmma tiles that the options name, and under the
// default options on the ping-pong and X-resident tiles only (where it measured faster: dispatch.cu); false, having
// launched nothing, otherwise (the caller then runs the two apart). dy [m, rows], pre and dpre [m, cols], dbias [cols].
bool tcBsrMatmulActivationBackward(DType dtype, const void* dy, const void* values, const void* pre, void* dpre,
                                   void* dbias, Activation activation, int64_t m, const BsrPatternView& pattern,
                                   cudaStream_t stream, const TcOptions& options = {});
// dX = dY W. dy [m, rows], dx [m, cols].
bool tcBsrMatmul(DType dtype, const void* dy, const void* values, void* dx, int64_t m, const BsrPatternView& pattern,
                 cudaStream_t stream, const TcOptions& options = {});
// dW = dY^T X on W's blocks, written as values [nnzBlocks, R, C].
bool tcSampledMatmul(DType dtype, const void* dy, const void* x, void* dw, int64_t m, const BsrPatternView& pattern,
                     cudaStream_t stream, const TcOptions& options = {});

// Whether float32 products may run on the tensor cores in TF32 (inputs rounded to a 10-bit mantissa,
// float32 accumulation). Process-wide, off by default: float32 then declines and stays exact.
void setAllowTf32(bool allow);
bool allowTf32();

// The path the default options take on the current device for this dtype and block shape (Auto when none).
TcPath tcPathFor(DType dtype, const BsrPatternView& pattern);
// dW under the default options: how the dispatch splits the tokens for this pattern and token count ("2 splits", or
// the whole groups and the tail's pieces), or "declined" where the tensor-core kernels decline (for the bench).
std::string tcSampledPlan(DType dtype, const BsrPatternView& pattern, int64_t m);
// Whether a 32x32 pattern's upload builds the dW patch tile's pair records: on a wgmma device, where the dispatch may
// take the tile (a device the rule dispatches it on, tc_kernels.h's kPatchPairMinBandwidth, and a density in its
// band), and while first-use autotuning is on (`tuning`) for densities from tc::kPatchPairTuneMinDensity, where
// autotuning times the tile as a dW candidate.
bool tcBuildsPatchRecords(int64_t blockRows, int64_t blockCols, int64_t nnzBlocks, bool tuning);
// Whether the default options run dW (sampledMatmul) on the patch tile on the current device: 32x32 blocks in
// bfloat16/float16 on sm_90a with the pattern's pair records, within that tile's rule (tc_kernels.h).
bool tcTakesPatchDw(DType dtype, const BsrPatternView& pattern, int64_t m);
// Whether the default options run bsrLinear / bsrMatmul (op) on the X-resident tile on the current device: 32x32
// blocks in bfloat16/float16 on sm_90a, within that tile's rule (tc_kernels.h).
bool tcTakesXResident(tc::Op op, DType dtype, const BsrPatternView& pattern, int64_t m);
// Whether the default options write bsrLinearActivation's activation from the tile's epilogue (tcBsrLinearActivation)
// rather than run the product and then the activation pass, for more than kDecodeMaxTokens tokens: on the X-resident
// tile, on the three-consumer tiles where their forward rule holds (pingPong3ForwardTileRule: short lines, or fewer
// tiles than SMs), on every 128-wide tile below kWideTileMinTokens tokens (fusedForward128Rule), and on the wgmma tiles
// of width 64 and 128 where Z outgrows kFusedActivationMinShareOfL2 of L2 (tc_kernels.h).
bool tcFusesActivation(DType dtype, const BsrPatternView& pattern, int64_t m);
// The blocks each SM walks for bsrLinear / bsrMatmul (op) on mma.sync's tile (128-token tiles x lines, each line split
// into runs as the dispatch's rule splits it) on the current device: a CTA's blocks, times the CTAs per SM past one.
double tcMmaTileBlocksPerSm(tc::Op op, const BsrPatternView& pattern, int64_t m);

// The tensor-core routes worth timing for a product on the current device, for first-use autotuning
// (src/autotune.h): each path's tiles, and for dW a few token splits beside the dispatch's own count. Empty for
// float32, for shapes without tensor-core kernels, and for bsrLinear with at most kDecodeMaxTokens tokens.
std::vector<TcOptions> tcTuneCandidates(tc::Op op, DType dtype, const BsrPatternView& pattern, int64_t m);
// A route's name as the tuning records report it, e.g. "wgmma persistent" or "mma tile, 2 splits".
std::string tcRouteName(const TcOptions& options);
// A path's name: "auto", "mma", "wgmma" or "decode" (what the tuning records' choice names).
const char* tcPathName(TcPath path);

}  // namespace bs
