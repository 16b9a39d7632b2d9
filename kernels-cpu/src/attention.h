// Attention over many batch matrices (heads) at once: the products and the rows of each head run on one thread, the
// heads spread over the pool, where one product per head had split sizes of a few MFLOP over every thread (a hand-off
// per product, and the packing of B done once per thread-job). With fewer heads than threads each head's products
// and rows take the pool in turn instead. The same products, rows and blocks as the binding's matmul, attentionSoftmax
// and attentionScoreGradients run one by one (the same bits). The heads are read and written where they lie: packed
// attention's rows need no copies.
#pragma once
#include <cstdint>

namespace bsk {

// Where each head's rows of one operand lie: row i of head b at (b / group) groupStride + (b % group) headStride +
// i rowStride, its d values contiguous. Contiguous [heads, rows, d] matrices are {1, rows d, 0, d}; packed attention's
// qkv [sequences, t, 3, h, d] holds part p (q, k, v) from p h d as {h, t 3 h d, d, 3 h d}, and its output and dout
// [sequences, t, h, d] are {h, t h d, d, h d}.
struct HeadLayout {
  int64_t group, groupStride, headStride, rowStride;
  int64_t at(int64_t b) const { return (b / group) * groupStride + (b % group) * headStride; }
  static HeadLayout contiguous(int64_t rows, int64_t d) { return HeadLayout{1, rows * d, 0, d}; }
};

struct AttentionOperand {
  const float* data;
  HeadLayout layout;
};

struct AttentionOutput {
  float* data;
  HeadLayout layout;
};

// `heads` batch matrices of q [m, d] against k and v [n, d]; lse [heads, m] contiguous. Query rows are taken
// `blockRows` at a time (>= 1; at most m, and at most 2^18 scores, on any thread count: the same blocks, so the same
// bits), so the scores of a block, blockRows x n floats, are what a thread holds (two such for the backward, and n x d
// for dk's and dv's partial sums past the first block). Under causal masking row i keeps keys j <= i + n - m. With
// d = 0 no scores are made: lse is log of each row's kept keys (-inf for none), and the backward has nothing to write.
struct AttentionShape {
  int64_t heads, m, n, d, blockRows;
  bool causal;
  double scale;
};

// exact[b] = 1 where head b holds what the float32 path cannot compute as the js backend does (a NaN or an infinity
// among its inputs, a score whose float32 product overflowed), its outputs left unspecified for the caller to compute;
// 0 where they are done.
void attentionForward(AttentionOperand q, AttentionOperand k, AttentionOperand v, AttentionOutput out, float* lse, uint8_t* exact, const AttentionShape& shape);

// dq, dk and dv from the output gradient dout and q, k, v; P recomputed from q and k (no lse). Di = sum_j P dP over the
// float32 dP it is subtracted from (its rounding cancels in dP - Di, so a one-hot row's dS is 0): that is dout . out
// for the forward's float32 out = P v. With out (its data not null: the saved output, rounded to a half dtype) Di also
// takes dout . (out - P v), P v recomputed, and is dout . out as the contract has it. exact as the forward's, a dS row
// whose float32 values sum to a non-finite value and an out holding a NaN or an infinity too. With m = 0 dk and dv are 0.
void attentionBackward(AttentionOperand dout, AttentionOperand q, AttentionOperand k, AttentionOperand v, AttentionOperand out, AttentionOutput dq,
                       AttentionOutput dk, AttentionOutput dv, uint8_t* exact, const AttentionShape& shape);

}  // namespace bsk

namespace bsk {

// Attention of each query row over the first keys of a cache, as the js backend's CachedAttention computes it: row i of
// head b attends keys [0, kept), kept = positions[i] + 1 clamped to [0, n] (a row that keeps none gets zeros), out_i =
// softmax(scale q_i k^T) v over them, scores, exponentials and sums in float64, rounded once. q and out [heads, m, d],
// k and v [heads, n, d], contiguous; positions [m]. The rows spread over the pool.
void cachedAttention(const float* q, const float* k, const float* v, const int32_t* positions, float* out, int64_t heads, int64_t m, int64_t n, int64_t d,
                     double scale);

}  // namespace bsk
