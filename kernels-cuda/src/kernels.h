// Launchers for every kernel. Arguments are device pointers whose extents the caller (addon.cpp) has
// already checked against the buffers; each launcher checks its launch and names the kernel in any error.
#pragma once

#include "bsr_pattern.h"
#include "common.h"
#include "index_fault.h"
#include "ops.h"

namespace bs::tc {
enum class Op : int;  // tc/tc.h
}

namespace bs {

// ---- elementwise (elementwise.cu)
void launchUnary(UnaryOp op, DType dtype, const void* x, void* y, int64_t n, cudaStream_t stream);
// Comparisons write int32 0/1; everything else writes `dtype`.
void launchBinary(BinaryOp op, DType dtype, const void* a, const Strides& aStrides, const void* b,
                  const Strides& bStrides, void* y, const StridedShape& shape, int64_t n, cudaStream_t stream);
void launchWhere(DType dtype, const int32_t* cond, const Strides& condStrides, const void* a, const Strides& aStrides,
                 const void* b, const Strides& bStrides, void* y, const StridedShape& shape, int64_t n,
                 cudaStream_t stream);
void launchCast(DType from, DType to, const void* x, void* y, int64_t n, cudaStream_t stream);
// Fills n elements of 2 or 4 bytes with a bit pattern.
void launchFillBits(size_t elementSize, void* y, int64_t n, uint32_t bits, cudaStream_t stream);
void launchZero(DType dtype, void* y, int64_t n, cudaStream_t stream);
// dst[offsets by dstStrides] = src[offsets by srcStrides] over every index of `shape`.
void launchCopyStrided(DType dtype, const void* src, const Strides& srcStrides, void* dst, const Strides& dstStrides,
                       const StridedShape& shape, int64_t n, cudaStream_t stream);

// ---- holding a stream (hold.cu)
// Holds the stream until the host writes a non-zero int to `release` (a device pointer to host-mapped memory), or
// timeoutNs after the kernel starts: the launches queued behind it then run back to back, so that events around them
// time the device's work, not the host's rate of queueing it (first-use autotuning, autotune.cpp).
void launchHoldStream(const int* release, uint64_t timeoutNs, cudaStream_t stream);

// ---- reductions and softmax (reduce.cu)
// Reduces the middle axis of an [outer, size, inner] view; Argmax writes int32.
void launchReduce(ReduceOp op, DType dtype, const void* x, void* y, int64_t outer, int64_t size, int64_t inner,
                  cudaStream_t stream);
// causalRows m > 0: causal masking over each trailing [m, size] matrix (row r keeps entries j <= r mod m + size - m).
void launchSoftmax(bool log, DType dtype, const void* x, void* y, int64_t rows, int64_t size, int64_t causalRows,
                   cudaStream_t stream);
// dx from a softmax's (log false) or log-softmax's (log true) output y and its gradient dy, rows of `size`, causal
// masking as launchSoftmax's (masked entries get 0, unread).
void launchSoftmaxBackward(bool log, DType dtype, const void* dy, const void* y, void* dx, int64_t rows, int64_t size,
                           int64_t causalRows, cudaStream_t stream);

// ---- attention (attention.cu): per batch matrix, q [M, D], k and v [N, D], out [M, D], lse float32 [M] (natural
// log-sum-exp of each row's kept scale q k^T); causal keeps keys j <= i + N - M (M <= N). Flash kernels for float16
// and bfloat16 with D a multiple of 8 up to 128 and a positive scale (attentionUsesFlash), batched products and row
// kernels otherwise.
bool attentionUsesFlash(DType dtype, int64_t D, float scale);
// Where an operand's rows lie, in elements: batch matrix m = b * heads + h starts at b * batch + h * head from the
// operand's pointer, and its rows are `row` apart. A contiguous [matrices, rows, D] operand is {rows * D, 0, D, 1}.
struct AttentionRows {
  int64_t batch;
  int64_t head;
  int64_t row;
  int64_t heads;
};
// The rows of q (and dq), k (dk), v (dv) and out (dout). The flash kernels read any layout whose strides are
// multiples of 8 elements from 16-byte aligned pointers; others go through contiguous copies.
struct AttentionLayout {
  AttentionRows q, k, v, out;
};
// q [batch, M, D], k and v [batch, N, D], out [batch, M, D], each contiguous.
AttentionLayout contiguousAttentionLayout(int64_t M, int64_t N, int64_t D);
// q, k and v packed as qkv [B, T, 3, heads, D] (q = qkv, k = qkv + heads D, v = qkv + 2 heads D), out [B, T, heads,
// D]; batch matrix b * heads + h is head h of sequence b (lse [B, heads, T]).
AttentionLayout packedAttentionLayout(int64_t heads, int64_t T, int64_t D);
void launchAttention(DType dtype, const void* q, const void* k, const void* v, void* out, float* lse, int64_t batch,
                     int64_t M, int64_t N, int64_t D, const AttentionLayout& layout, float scale, bool causal,
                     cudaStream_t stream);
// Decoding over a key/value cache: row i of each [M, D] matrix attends the keys 0..positions[i] (and < N; none:
// zeros), softmax(scale q k^T) v in float32. One block per row; head dims up to kMaxCachedHeadDim. With newK and
// newV ([batch, M, D] each, or both null) they are first written into k and v at the positions (in place, as
// launchIndexCopy; an out-of-range position skips the write and is reported, index_fault.h): in the attention kernel
// itself for one query row (a decoding step), by launchIndexCopy before it for more.
constexpr int64_t kMaxCachedHeadDim = 1024;
void launchCachedAttention(DType dtype, const void* q, void* k, void* v, const int32_t* positions, const void* newK,
                           const void* newV, void* out, int64_t batch, int64_t M, int64_t N, int64_t D, float scale,
                           cudaStream_t stream);
// dq, dk, dv from dout and the forward's inputs, out and lse (probabilities recomputed; nothing of size M x N kept
// on the flash route).
void launchAttentionBackward(DType dtype, const void* dout, const void* q, const void* k, const void* v,
                             const void* out, const float* lse, void* dq, void* dk, void* dv, int64_t batch, int64_t M,
                             int64_t N, int64_t D, const AttentionLayout& layout, float scale, bool causal,
                             cudaStream_t stream);

// ---- layer norm (layer_norm.cu)
void launchLayerNorm(DType dtype, const void* x, const void* gamma, const void* beta, void* y, float* mean, float* rstd,
                     int64_t rows, int64_t width, float eps, cudaStream_t stream);
void launchLayerNormBackward(DType dtype, const void* dy, const void* x, const float* mean, const float* rstd,
                         const void* gamma, void* dx, void* dgamma, void* dbeta, int64_t rows, int64_t width,
                         cudaStream_t stream);

// ---- index-driven (indexing.cu): out-of-range indices read zeros and skip updates, and are reported (index_fault.h)
void launchGather(DType dtype, const void* x, const int32_t* indices, void* y, int64_t outer, int64_t axisSize,
                  int64_t inner, int64_t count, cudaStream_t stream);
void launchScatterAdd(DType dtype, const void* updates, const int32_t* indices, void* y, int64_t outer,
                      int64_t axisSize, int64_t inner, int64_t count, cudaStream_t stream);
// y[o, indices[j], k] = source[o, j, k] over y's own values (index_copy, in place); `op` names the op an index out of
// range is reported for (cachedAttention copies its new keys with it).
void launchIndexCopy(DType dtype, const void* source, const int32_t* indices, void* y, int64_t outer,
                     int64_t axisSize, int64_t inner, int64_t count, cudaStream_t stream,
                     IndexFaultOp op = IndexFaultOp::IndexCopy);
void launchOneHot(DType dtype, const int32_t* indices, void* y, int64_t count, int64_t depth, cudaStream_t stream);
// Cross-entropy rows: logits [rows, classes] in dtype, the loss (and its gradient dy) float32 [rows].
// A target outside [0, classes) gives a row of 0 (loss and gradient); one other than ignoreIndex (a negative int32,
// or 0 for none) is also reported (index_fault.h).
void launchCrossEntropy(DType dtype, const void* logits, const int32_t* targets, float* loss, int64_t rows,
                        int64_t classes, int32_t ignoreIndex, cudaStream_t stream);
void launchCrossEntropyBackward(DType dtype, const void* logits, const int32_t* targets, const float* dy, void* dlogits,
                            int64_t rows, int64_t classes, int32_t ignoreIndex, cudaStream_t stream);

// ---- dense matmul (matmul.cu): c is contiguous [batch, m, n]; strideA/B 0 broadcasts an operand
void launchMatmul(DType dtype, const void* a, const void* b, void* c, int64_t batch, int64_t m, int64_t n, int64_t k,
                  bool transA, bool transB, int64_t strideA, int64_t strideB, cudaStream_t stream);
// A dense layer's input and weight gradients: dx [m, k] = dy [m, n] w [n, k] and dw [n, k] = dy^T x [m, k]. Where dy's
// rows (n wide) are off the 16-byte pitch cuBLAS's fast half-precision kernels need, dy is copied once to an aligned
// pitch for both products (each alone would copy it).
void launchLinearBackward(DType dtype, const void* dy, const void* x, const void* w, void* dx, void* dw, int64_t m,
                          int64_t n, int64_t k, cudaStream_t stream);
// y [m, n] = x [m, k] w [n, k]^T + bias [n] (optional) + residual [m, n] (optional) in one cuBLASLt call, the bias
// and the residual added in the GEMM's epilogue; all contiguous. Returns false, launching nothing, where cuBLASLt
// cannot (not installed or switched off, an empty dimension, or no algorithm for the shape and alignments): the
// caller then composes launchMatmul and the adds.
bool launchLinear(DType dtype, const void* x, const void* w, const void* bias, const void* residual, void* y,
                  int64_t m, int64_t n, int64_t k, cudaStream_t stream);
// pre [m, n] = x w^T + bias and y = activation(pre) from one cuBLASLt call (its GELU epilogue writes pre as the
// auxiliary output). Only GELU's tanh form (cuBLASLt's GELU) with n a multiple of 8; false otherwise, as launchLinear.
bool launchLinearActivation(DType dtype, const void* x, const void* w, const void* bias, void* y, void* pre, int64_t m,
                            int64_t n, int64_t k, Activation activation, cudaStream_t stream);

// ---- block-sparse (bsr.cu): m is the number of rows of x / dy (leading dims flattened)
void launchBsrLinear(DType dtype, const void* x, const void* values, const void* bias, void* y, int64_t m,
                     const BsrPatternView& pattern, cudaStream_t stream);
void launchBsrMatmul(DType dtype, const void* dy, const void* values, void* dx, int64_t m,
                     const BsrPatternView& pattern, cudaStream_t stream);
// dW sampled from a dense product: when the dense GEMM beats the block kernels (see denseSampledWins) the addon
// runs dY^T X into scratch and copies the pattern's blocks out.
enum class DenseSampledMode : int32_t { Auto = 0, Never = 1, Always = 2 };
DenseSampledMode setDenseSampledMode(DenseSampledMode mode);
DenseSampledMode getDenseSampledMode();
// Whether the dense route's scratch [rows, cols] is small enough to take (at most 512 MiB).
bool denseSampledFits(DType dtype, const BsrPatternView& pattern);
// Below this many FLOPs in the dense product dY^T X (2 m rows cols), auto mode keeps the block kernel: its one launch
// costs the host less than the dense route's GEMM call and copy, and the device time either saves is a few
// microseconds (an H200 runs 2^28 FLOPs of GEMM in about 1 us).
constexpr double kDenseSampledMinFlops = 268435456.0;  // 2^28
bool denseSampledWins(DType dtype, const BsrPatternView& pattern, int64_t m, bool haveDenseGemm);
void launchSampleBlocks(DType dtype, const void* dense, void* values, const BsrPatternView& pattern, cudaStream_t stream);
// bsrLinear and bsrMatmul through the dense GEMM: where the block kernels lose to cuBLAS (denseProductWins: 32x32 blocks
// from density 0.25 with at least kDenseProductMinTokens tokens, where at 2048 tokens it measured slower, and from 0.3
// for a product on the X-resident tile; below that, from 0.35 on the X-resident tile, from 0.25 on mma.sync's tile with 1000
// tokens or more and by a model of both routes' times with 65 up to 1000; the other shapes
// of the mma.sync tiles from their break-even density with at least kDenseProductShapeMinTokens; the simple kernel's
// shapes from kDenseProductMinDensitySimple) the addon writes the pattern's blocks into a dense [rows, cols] scratch,
// zeros elsewhere (one pass: launchScatterBlocks), and runs the dense product.
enum class DenseProductMode : int32_t { Auto = 0, Never = 1, Always = 2 };
constexpr int64_t kDenseProductMinTokens = 8192;
constexpr double kDenseProductMinDensity32 = 0.25;
// With kDenseProductMidTokens to kDenseProductMinTokens tokens the route wins for 32x32 on mma.sync's tile from
// kDenseProductMinDensity32Mid, and on the X-resident tile (from kXResidentMinTokens tokens, few or not) from
// kDenseProductMinDensity32XResidentMid. Measured on an H200 (the FFN step, each route forced, 2026-12-03, last;
// benchmarks/results/gpu-nvidia-h200/xr-few-tokens-2026-12-03.md): against mma.sync's tile at 1000 and 1536 tokens
// (768 <-> 3072 up to 2048 <-> 8192) the route ran 1.01-1.13x faster at density 0.3, more at 0.35-0.4, and 1.02-1.07x
// at 0.25 (1000 tokens); against the X-resident tile, 128-4096 tokens, 768 <-> 3072 up to 1280 <-> 5120, the two were
// within 10% of each other at 0.35 either way (on the geometric mean a tie), the tile 0.99-1.08x the route's speed
// at 0.25-0.3 and the route 0.99-1.14x the tile's at 0.4-0.45. (Before the tile ran below 2048 tokens the band took the route from 0.45: the
// step at 1000-1536 tokens and density 0.35-0.4 was 0.83-1.01x the dense step on 768 <-> 3072 and 1024 <-> 4096.)
constexpr int64_t kDenseProductMidTokens = 1000;
constexpr double kDenseProductMinDensity32Mid = 0.25;
constexpr double kDenseProductMinDensity32XResidentMid = 0.35;
// With kDenseProductFewTokens to kDenseProductMidTokens tokens, where mma.sync's tiles are few and each CTA's line a
// chain of latency-bound steps, neither route wins by density alone: per product (bsrLinear and bsrMatmul timed each way
// on W of 768-8192 x 768-8192, 96-512 tokens, densities 0.25-0.5, H200, 2026-12-03) the route ran up to 1.66x faster
// where the tile's grid had a few dozen CTAs (lines of a narrow layer's short side) and up to 1.9x slower on the wide
// layers, whose tiles fill the GPU while the route reads and writes all of W. A model of both times decides:
// mma.sync's tile about kFewTileUs + kFewTileUsPerBlock x the blocks each SM walks (tcMmaTileBlocksPerSm), the route
// about kFewRouteUs + kFewRouteUsPerMWeight x W's millions of elements x (1 + tokens / kFewRouteTokens) (the scatter and
// a GEMM of W's dense size). Fitted there: 1.01x the better route's time on the geometric mean over the 192 products
// (the 0.35 rule before it: 1.08x, at worst 1.72x). bsrLinear up to kDecodeMaxTokens (64) runs the decoding kernel,
// which reads only the stored blocks; below kDenseProductFewTokens the block kernels stay.
constexpr int64_t kDenseProductFewTokens = 65;
constexpr double kFewTileUs = 7.0;
constexpr double kFewTileUsPerBlock = 0.3;
constexpr double kFewRouteUs = 2.0;
constexpr double kFewRouteUsPerMWeight = 1.8;
constexpr double kFewRouteTokens = 512.0;
// The same for a product that runs on the X-resident tile (tcTakesXResident), which reaches about 0.25-0.35 of
// cuBLAS's rate on the non-zero work at 8192 tokens where mma.sync's tile reached 0.17-0.27.
constexpr double kDenseProductMinDensity32XResident = 0.3;
constexpr int64_t kDenseProductShapeMinTokens = 2048;
constexpr double kDenseProductMinDensitySimple = 0.05;
DenseProductMode setDenseProductMode(DenseProductMode mode);
DenseProductMode getDenseProductMode();
bool denseProductWins(tc::Op op, DType dtype, const BsrPatternView& pattern, int64_t m, bool haveDenseGemm);
void launchScatterBlocks(DType dtype, const void* values, void* dense, const BsrPatternView& pattern, cudaStream_t stream);
void launchSampledMatmul(DType dtype, const void* dy, const void* x, void* dw, int64_t m,
                         const BsrPatternView& pattern, cudaStream_t stream);
// float32 on the CUDA cores, register-tiled (bsr_simt.cu): the launchers above run these when the block fits (sides
// multiples of 16) and the pointers are 16-byte aligned; false, having launched nothing, otherwise.
bool launchBsrLinearSimt(const float* x, const float* values, const float* bias, float* y, int64_t m,
                         const BsrPatternView& pattern, cudaStream_t stream);
bool launchBsrMatmulSimt(const float* dy, const float* values, float* dx, int64_t m, const BsrPatternView& pattern,
                         cudaStream_t stream);
bool launchSampledMatmulSimt(const float* dy, const float* x, float* dw, int64_t m, const BsrPatternView& pattern,
                             cudaStream_t stream);
void launchBlockNorms(DType dtype, const void* values, float* norms, int64_t nnzBlocks, int64_t blockSize,
                      cudaStream_t stream);

// out[i] = sum over s of partials[s * n + i] (float32 sums in split order, rounded to dtype): the second,
// deterministic pass of every kernel that splits a reduction (reduce.cu).
void launchSumSplits(DType dtype, const float* partials, int splits, int64_t n, void* out, cudaStream_t stream);
// dW's tail pieces (tc_kernels.h, KernelArgs::groupList): the blocks of the list's groups from fullGroups on (entries
// allocated, of blockSize values each, a multiple of 4) get the sums of their float32 partials
// [splits][entries][blockSize] in split order, written at their places in out (values).
void launchSumTailSplits(DType dtype, const float* partials, int splits, int64_t entries, int64_t blockSize,
                         const int32_t* groupList, int32_t fullGroups, const int32_t* valueIndex, int32_t nnz,
                         void* out, cudaStream_t stream);

// ---- bias + activation (activation.cu)
// y = act(x + bias) over [rows, width], bias [width] or null.
void launchBiasActivation(Activation activation, DType dtype, const void* x, const void* bias, void* y, int64_t rows,
                          int64_t width, cudaStream_t stream);
// dx = dy * act'(x + bias); dbias [width] = dx summed over the rows (float32 sums, fixed order).
void launchBiasActivationBackward(Activation activation, DType dtype, const void* dy, const void* x, const void* bias,
                                  void* dx, void* dbias, int64_t rows, int64_t width, cudaStream_t stream);

// ---- optimizer (optim.cu)
struct AdamParams {
  double lr, beta1, beta2, eps, weightDecay;
  double biasCorrection1, biasCorrection2;  // 1 - beta^step
  bool decoupledWeightDecay;
  // When set (multi-tensor only): a float32 on the device read when the kernel runs; the learning rate is lr
  // times its value.
  const float* lrValue = nullptr;
};
void launchAdam(DType dtype, const void* param, const void* grad, const void* m, const void* v, void* paramOut,
                void* mOut, void* vOut, DType mDtype, DType vDtype, int64_t n, const AdamParams& params,
                cudaStream_t stream);

// One tensor of a multi-tensor Adam step: its buffers, dtypes, size and bias corrections (1 - beta^step).
// copy (may be null) receives the new param rounded to the launch's copy dtype. With stepIn (a float32 count
// of the steps taken, on the device) the step is *stepIn + 1, read when the kernel runs, and stepOut (may be
// stepIn) receives it after every update of the launch; the bias corrections are then unused.
struct AdamTensor {
  const void* param;
  const void* grad;
  const void* m;
  const void* v;
  void* paramOut;
  void* mOut;
  void* vOut;
  void* copy;
  const float* stepIn;
  float* stepOut;
  int64_t n;
  double biasCorrection1, biasCorrection2;
  DType paramDtype, gradDtype, mDtype, vDtype;
};
// Every tensor's step in as few launches as the kernel parameter space allows (kAdamTensorsPerLaunch each).
// params.biasCorrection1/2 are unused (each tensor has its own).
void launchMultiTensorAdam(const AdamTensor* tensors, int count, DType copyDtype, const AdamParams& params,
                           cudaStream_t stream);

}  // namespace bs
