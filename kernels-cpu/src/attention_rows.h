// The row-wise steps of attention between its products: the softmax of each query row's scores, and dS from P and dP.
// float64 math on float32 rows, as the js backend computes them; each row on its own, so results do not depend on the
// thread count. `parallel` false runs the rows on the calling thread alone (inside a pool's item).
#pragma once
#include <cstdint>

namespace bsk {

// Keys [0, kept) of query row i of an m x n batch matrix: all n, or under causal masking j <= i + n - m.
int64_t keptKeys(int64_t i, int64_t m, int64_t n, bool causal);

// e[j] = e^(e[j] - max) over a row's kept scores, in float64 within about an ulp (vectorized).
void shiftedExponentials(double* e, int64_t count, double max);

// What attentionSoftmax found in a row (flags[r]).
enum AttentionRowFlag : uint8_t { kRowDone = 0, kRowUnderflow = 1, kRowNonFinite = 2 };

// Row r (of `rows` from query row `first` of an m x n batch matrix) keeps keys [0, kept): all n, or under causal masking
// j <= first + r + n - m. Over the scores s (rows x n, in place): a row whose kept scores are all finite becomes
// P = exp(scale s - max) / sum (float64, rounded once), 0 past kept, and lse[r] (when lse is not null) max + log(sum);
// flags[r] is kRowUnderflow when a probability rounds to 0 in float32 but not in float64, else kRowDone. A row with a
// NaN or an infinite kept score is left as it is, lse[r] unwritten, flags[r] kRowNonFinite.
void attentionSoftmax(float* s, float* lse, uint8_t* flags, int64_t rows, int64_t n, int64_t first, int64_t m, bool causal, double scale, bool parallel = true);

// dS = P (dP - Di) scale over each row's kept keys, 0 past them, in place over dP (rows x n), with Di = sum_j P dP in
// float64 plus shift[r] where shift is not null (the saved output's rounding, dout . (out - P v): Di is then dout . out
// as the kernel's contract has it); flags[r] is kRowNonFinite when the float64 sum of the row's float32 dS is not
// finite, else kRowDone.
void attentionScoreGradients(const float* p, float* ds, const double* shift, uint8_t* flags, int64_t rows, int64_t n, int64_t first, int64_t m, bool causal,
                             double scale, bool parallel = true);

}  // namespace bsk
