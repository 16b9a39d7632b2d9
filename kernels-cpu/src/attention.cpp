#include "attention.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "attention_rows.h"
#include "clones.h"
#include "overflow.h"
#include "products.h"
#include "scratch.h"
#include "threads.h"

namespace bsk {
namespace {

// Scores a thread holds per buffer when the heads run side by side (1 MiB): a block of query rows of a long sequence
// (64 rows of 4096 keys) stays in the core's L2 with its products' packed operands.
constexpr int64_t kHeadScores = int64_t(1) << 18;

// Each thread's scores, score gradients and partial key sums, kept for the next call (Scratch: released with the
// products' scratch), and its rows' flags.
struct Buffers {
  Scratch scores;
  Scratch gradients;
  Scratch share;
  // P v of a block (rows x d) and each row's Di shift (doubles), for a backward given the saved output.
  Scratch recomputed;
  Scratch shifts;
  std::vector<uint8_t> flags;
  std::vector<uint8_t> gradientFlags;
};

Buffers& buffers() {
  thread_local Buffers own;
  return own;
}

// C = A B on this thread alone (Serial: a head of many run side by side) or over the pool (one head at a time).
template <bool Serial>
void product(MatrixView a, MatrixView b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k) {
  if constexpr (Serial) {
    gemmSerial(a, b, c, ldc, m, n, k, false);
  } else {
    gemm(a, b, c, ldc, m, n, k, false);
  }
}

bool anyFlagged(const uint8_t* flags, int64_t rows, uint8_t flag) {
  for (int64_t r = 0; r < rows; r++) {
    if (flags[r] == flag) return true;
  }
  return false;
}

// Whether any of `rows` rows of d floats, rowStride apart, holds a NaN or an infinity.
bool anyNonFiniteRows(const float* x, int64_t rows, int64_t d, int64_t rowStride) {
  for (int64_t i = 0; i < rows; i++) {
    if (anyNonFinite(x + i * rowStride, d)) return true;
  }
  return false;
}

// Rows of dst (rowStride apart) += the contiguous rows x d src.
void addRows(float* dst, int64_t rowStride, const float* src, int64_t rows, int64_t d) {
  for (int64_t i = 0; i < rows; i++) {
    for (int64_t c = 0; c < d; c++) dst[i * rowStride + c] += src[i * d + c];
  }
}

// One head, its operands' rows `qs`, `ks`, ... apart: its output and lse; false where it needs the exact path.
template <bool Serial>
bool forwardHead(const float* q, int64_t qs, const float* k, int64_t ks, const float* v, int64_t vs, float* out, int64_t os, float* lse, const AttentionShape& shape,
                 int64_t blockRows) {
  const int64_t m = shape.m, n = shape.n, d = shape.d;
  if (anyNonFiniteRows(q, m, d, qs) || anyNonFiniteRows(k, n, d, ks) || anyNonFiniteRows(v, n, d, vs)) return false;
  Buffers& own = buffers();
  float* scores = own.scores.floats(static_cast<size_t>(std::max<int64_t>(1, blockRows * n)));
  if (static_cast<int64_t>(own.flags.size()) < blockRows) own.flags.resize(static_cast<size_t>(blockRows));
  uint8_t* flags = own.flags.data();
  for (int64_t i0 = 0; i0 < m; i0 += blockRows) {
    const int64_t rows = std::min(blockRows, m - i0);
    product<Serial>(MatrixView{q + i0 * qs, qs, 1}, MatrixView{k, 1, ks}, scores, n, rows, n, d);
    attentionSoftmax(scores, lse + i0, flags, rows, n, i0, m, shape.causal, shape.scale, !Serial);
    if (anyFlagged(flags, rows, kRowNonFinite)) return false;
    product<Serial>(MatrixView{scores, n, 1}, MatrixView{v, vs, 1}, out + i0 * os, os, rows, d, n);
    // A probability that rounded to 0 in float32 times an infinite sum: js's tiny probability gives +-inf, not NaN.
    for (int64_t r = 0; r < rows; r++) {
      if (flags[r] == kRowUnderflow && anyNonFinite(out + (i0 + r) * os, d)) return false;
    }
  }
  return true;
}

// One head's dq, dk and dv; false where it needs the exact path.
template <bool Serial>
bool backwardHead(const float* g, int64_t gs, const float* q, int64_t qs, const float* k, int64_t ks, const float* v, int64_t vs, const float* o, int64_t os,
                  float* dq, int64_t dqs, float* dk, int64_t dks, float* dv, int64_t dvs, const AttentionShape& shape, int64_t blockRows) {
  const int64_t m = shape.m, n = shape.n, d = shape.d;
  if (m == 0) {
    // No query: the keys and values get no gradient.
    for (int64_t j = 0; j < n; j++) {
      std::fill(dk + j * dks, dk + j * dks + d, 0.0f);
      std::fill(dv + j * dvs, dv + j * dvs + d, 0.0f);
    }
    return true;
  }
  if (anyNonFiniteRows(g, m, d, gs) || anyNonFiniteRows(q, m, d, qs) || anyNonFiniteRows(k, n, d, ks) || anyNonFiniteRows(v, n, d, vs)) return false;
  if (o != nullptr && anyNonFiniteRows(o, m, d, os)) return false;
  Buffers& own = buffers();
  const size_t scoreFloats = static_cast<size_t>(std::max<int64_t>(1, blockRows * n));
  float* p = own.scores.floats(scoreFloats);
  float* ds = own.gradients.floats(scoreFloats);
  // A later block's share of dk and dv ([n, d]), added to the first block's.
  float* share = blockRows < m ? own.share.floats(static_cast<size_t>(std::max<int64_t>(1, n * d))) : nullptr;
  if (static_cast<int64_t>(own.flags.size()) < blockRows) own.flags.resize(static_cast<size_t>(blockRows));
  if (static_cast<int64_t>(own.gradientFlags.size()) < blockRows) own.gradientFlags.resize(static_cast<size_t>(blockRows));
  uint8_t* flags = own.flags.data();
  uint8_t* gradientFlags = own.gradientFlags.data();
  for (int64_t i0 = 0; i0 < m; i0 += blockRows) {
    const int64_t rows = std::min(blockRows, m - i0);
    const MatrixView qRows{q + i0 * qs, qs, 1};
    const MatrixView gRows{g + i0 * gs, gs, 1};
    const bool first = i0 == 0;
    product<Serial>(qRows, MatrixView{k, 1, ks}, p, n, rows, n, d);
    attentionSoftmax(p, nullptr, flags, rows, n, i0, m, shape.causal, shape.scale, !Serial);
    if (anyFlagged(flags, rows, kRowNonFinite)) return false;
    product<Serial>(gRows, MatrixView{v, 1, vs}, ds, n, rows, n, d);
    double* shift = nullptr;
    if (o != nullptr) {
      // Di's shift dout . (out - P v) per row, in float64, from P v recomputed as the forward computed it.
      float* recomputed = own.recomputed.floats(static_cast<size_t>(rows * d));
      product<Serial>(MatrixView{p, n, 1}, MatrixView{v, vs, 1}, recomputed, d, rows, d, n);
      shift = reinterpret_cast<double*>(own.shifts.floats(static_cast<size_t>(2 * rows)));
      for (int64_t r = 0; r < rows; r++) {
        const float* gRow = g + (i0 + r) * gs;
        const float* oRow = o + (i0 + r) * os;
        double sum = 0;
        for (int64_t c = 0; c < d; c++) sum += static_cast<double>(gRow[c]) * (static_cast<double>(oRow[c]) - static_cast<double>(recomputed[r * d + c]));
        shift[r] = sum;
      }
    }
    attentionScoreGradients(p, ds, shift, gradientFlags, rows, n, i0, m, shape.causal, shape.scale, !Serial);
    if (anyFlagged(gradientFlags, rows, kRowNonFinite)) return false;
    // dv = P^T dout, dq = dS k, dk = dS^T q (dS carries the scale).
    product<Serial>(MatrixView{p, 1, n}, gRows, first ? dv : share, first ? dvs : d, n, d, rows);
    if (!first) addRows(dv, dvs, share, n, d);
    product<Serial>(MatrixView{ds, n, 1}, MatrixView{k, ks, 1}, dq + i0 * dqs, dqs, rows, d, n);
    product<Serial>(MatrixView{ds, 1, n}, qRows, first ? dk : share, first ? dks : d, n, d, rows);
    if (!first) addRows(dk, dks, share, n, d);
  }
  return true;
}

// Runs head(b, serial, blockRows) -> done for every head: side by side on the pool's threads when there are at least as
// many heads as threads, each head's products and rows then on its own thread; else one head at a time, its products
// and rows over the pool. Either way in the same blocks of query rows, at most the caller's blockRows, at most m (a
// larger blockRows asks for no scratch past m rows: 2^40 had asked for 2^40 n floats) and at most kHeadScores scores:
// a block's share of dk and dv is a float32 sum of its own, so blocks that followed the path (the pool's blockRows
// rows, a thread's kHeadScores) had made dk and dv depend on the thread count.
template <typename Head>
void eachHead(const AttentionShape& shape, uint8_t* exact, Head head) {
  const int threads = threadCount();
  const int64_t blockRows = std::max<int64_t>(1, std::min({shape.blockRows, shape.m, kHeadScores / std::max<int64_t>(1, shape.n)}));
  if (threads > 1 && shape.heads >= threads) {
    parallelFor(shape.heads, [&](int64_t b) { exact[b] = head(b, std::true_type{}, blockRows) ? 0 : 1; });
    return;
  }
  for (int64_t b = 0; b < shape.heads; b++) exact[b] = head(b, std::false_type{}, blockRows) ? 0 : 1;
}

// sum_c a[c] b[c] in float64, in four interleaved partial sums (vectorized) added pairwise at the end.
BSK_CLONES double dot64(const float* a, const float* b, int64_t d) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t c = 0;
  for (; c + 4 <= d; c += 4) {
    s0 += static_cast<double>(a[c]) * static_cast<double>(b[c]);
    s1 += static_cast<double>(a[c + 1]) * static_cast<double>(b[c + 1]);
    s2 += static_cast<double>(a[c + 2]) * static_cast<double>(b[c + 2]);
    s3 += static_cast<double>(a[c + 3]) * static_cast<double>(b[c + 3]);
  }
  for (; c < d; c++) s0 += static_cast<double>(a[c]) * static_cast<double>(b[c]);
  return (s0 + s1) + (s2 + s3);
}

// acc[c] += p0 v0[c] + p1 v1[c] over d values (the js kernel's pairs of keys).
BSK_CLONES void addTwoRows(double* acc, double p0, const float* v0, double p1, const float* v1, int64_t d) {
  for (int64_t c = 0; c < d; c++) acc[c] += p0 * static_cast<double>(v0[c]) + p1 * static_cast<double>(v1[c]);
}

BSK_CLONES void addRow(double* acc, double p, const float* v, int64_t d) {
  for (int64_t c = 0; c < d; c++) acc[c] += p * static_cast<double>(v[c]);
}

}  // namespace

void attentionForward(AttentionOperand q, AttentionOperand k, AttentionOperand v, AttentionOutput out, float* lse, uint8_t* exact, const AttentionShape& shape) {
  if (shape.d == 0) {
    // Every kept score is an exact 0 (scale 0, NaN for a NaN or infinite scale): lse = log(kept), -inf with no key kept,
    // the softmax's own values; out has no elements. No block of n scores per row is made: with d = 0 no array bounds n.
    const double zero = shape.scale * 0.0;
    for (int64_t b = 0; b < shape.heads; b++) {
      for (int64_t i = 0; i < shape.m; i++) {
        const int64_t kept = keptKeys(i, shape.m, shape.n, shape.causal);
        lse[b * shape.m + i] = kept == 0 ? -INFINITY : static_cast<float>(zero + std::log(static_cast<double>(kept)));
      }
      exact[b] = 0;
    }
    return;
  }
  eachHead(shape, exact, [&](int64_t b, auto serial, int64_t blockRows) {
    return forwardHead<decltype(serial)::value>(q.data + q.layout.at(b), q.layout.rowStride, k.data + k.layout.at(b), k.layout.rowStride, v.data + v.layout.at(b),
                                                v.layout.rowStride, out.data + out.layout.at(b), out.layout.rowStride, lse + b * shape.m, shape, blockRows);
  });
}

void attentionBackward(AttentionOperand dout, AttentionOperand q, AttentionOperand k, AttentionOperand v, AttentionOperand out, AttentionOutput dq,
                       AttentionOutput dk, AttentionOutput dv, uint8_t* exact, const AttentionShape& shape) {
  if (shape.d == 0) {
    // dq, dk and dv have no elements: nothing to compute (and with d = 0 no array bounds m or n).
    std::fill(exact, exact + shape.heads, uint8_t{0});
    return;
  }
  eachHead(shape, exact, [&](int64_t b, auto serial, int64_t blockRows) {
    return backwardHead<decltype(serial)::value>(dout.data + dout.layout.at(b), dout.layout.rowStride, q.data + q.layout.at(b), q.layout.rowStride,
                                                 k.data + k.layout.at(b), k.layout.rowStride, v.data + v.layout.at(b), v.layout.rowStride,
                                                 out.data == nullptr ? nullptr : out.data + out.layout.at(b), out.layout.rowStride, dq.data + dq.layout.at(b),
                                                 dq.layout.rowStride, dk.data + dk.layout.at(b), dk.layout.rowStride, dv.data + dv.layout.at(b), dv.layout.rowStride,
                                                 shape, blockRows);
  });
}

void cachedAttention(const float* q, const float* k, const float* v, const int32_t* positions, float* out, int64_t heads, int64_t m, int64_t n, int64_t d,
                     double scale) {
  // out has no elements: nothing to compute. With d = 0 no array bounds heads or n: a row per head of 2^40 heads had
  // hung the pool (its item count past 2^40), and a position of 2^31 - 1 over as many keys took 16 GiB of scores.
  if (d == 0) return;
  // Every row's buffers are sized for the call's longest row: rows of one call never shrink what another just grew.
  int64_t longest = 0;
  for (int64_t i = 0; i < m; i++) longest = std::max(longest, std::clamp<int64_t>(static_cast<int64_t>(positions[i]) + 1, 0, n));
  parallelFor(heads * m, [&](int64_t item) {
    const int64_t b = item / m, i = item % m;
    const int64_t kept = std::clamp<int64_t>(static_cast<int64_t>(positions[i]) + 1, 0, n);
    float* row = out + item * d;
    if (kept == 0) {
      std::fill(row, row + d, 0.0f);
      return;
    }
    // Scratch, not vectors that only grow: a long context's scores were held by each thread for the life of the process,
    // uncounted by scratchBytes and kept over releaseScratch.
    thread_local Scratch scoreScratch, accScratch;
    double* scores = scoreScratch.boundedDoubles(static_cast<size_t>(longest));
    double* acc = accScratch.boundedDoubles(static_cast<size_t>(d));
    const float* query = q + item * d;
    const float* keys = k + b * n * d;
    const float* values = v + b * n * d;
    double max = -INFINITY;
    for (int64_t j = 0; j < kept; j++) {
      const double s = scale * dot64(query, keys + j * d, d);
      scores[j] = s;
      if (s > max || std::isnan(s)) max = s;
    }
    shiftedExponentials(scores, kept, max);
    std::fill(acc, acc + d, 0.0);
    double sum = 0;
    int64_t j = 0;
    for (; j + 2 <= kept; j += 2) {
      sum += scores[j] + scores[j + 1];
      addTwoRows(acc, scores[j], values + j * d, scores[j + 1], values + (j + 1) * d, d);
    }
    if (j < kept) {
      sum += scores[j];
      addRow(acc, scores[j], values + j * d, d);
    }
    for (int64_t c = 0; c < d; c++) row[c] = static_cast<float>(acc[c] / sum);
  });
}

}  // namespace bsk
