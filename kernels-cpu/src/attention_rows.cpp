#include "attention_rows.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "clones.h"
#include "exp_double.h"
#include "scratch.h"
#include "threads.h"

namespace bsk {
namespace {

// The largest positive float64 that rounds to 0 as a float32 (half the smallest float32 subnormal, a tie to even).
constexpr double kFloat32RoundsToZero = 0x1p-150;
// Scores per work item, about: a few rows of a long sequence, many of a short one.
constexpr int64_t kChunk = 8192;

}  // namespace

BSK_CLONES void shiftedExponentials(double* e, int64_t count, double max) {
  for (int64_t j = 0; j < count; j++) e[j] = expDouble(e[j] - max);
}

int64_t keptKeys(int64_t i, int64_t m, int64_t n, bool causal) { return causal ? std::clamp<int64_t>(i + n - m + 1, 0, n) : n; }

namespace {

// Runs row(r) for every r in [0, rows) in chunks of about kChunk scores over the pool, or in turn on this thread.
template <typename Row>
void eachRow(int64_t rows, int64_t n, bool parallel, Row row) {
  if (!parallel) {
    for (int64_t r = 0; r < rows; r++) row(r);
    return;
  }
  const int64_t step = std::max<int64_t>(1, kChunk / std::max<int64_t>(1, n));
  parallelFor((rows + step - 1) / step, [&](int64_t c) {
    const int64_t end = std::min(rows, (c + 1) * step);
    for (int64_t r = c * step; r < end; r++) row(r);
  });
}

}  // namespace

void attentionSoftmax(float* s, float* lse, uint8_t* flags, int64_t rows, int64_t n, int64_t first, int64_t m, bool causal, double scale, bool parallel) {
  eachRow(rows, n, parallel, [&](int64_t r) {
    // Scratch, not a vector that only grows: the longest sequence's row was held by each thread for good.
    thread_local Scratch row64;
    double* e = row64.boundedDoubles(static_cast<size_t>(n));
    float* scores = s + r * n;
    const int64_t kept = keptKeys(first + r, m, n, causal);
    for (int64_t j = 0; j < kept; j++) {
      if (!std::isfinite(scores[j])) {
        flags[r] = kRowNonFinite;
        return;
      }
    }
    double max = -INFINITY;
    for (int64_t j = 0; j < kept; j++) {
      e[j] = scale * static_cast<double>(scores[j]);
      if (e[j] > max || std::isnan(e[j])) max = e[j];
    }
    shiftedExponentials(e, kept, max);
    double sum = 0;
    for (int64_t j = 0; j < kept; j++) sum += e[j];
    if (lse != nullptr) lse[r] = static_cast<float>(max + std::log(sum));
    const double inverse = 1 / sum;
    bool underflow = false;
    for (int64_t j = 0; j < kept; j++) {
      const double p = e[j] * inverse;
      scores[j] = static_cast<float>(p);
      if (p <= kFloat32RoundsToZero && p > 0) underflow = true;
    }
    std::fill(scores + kept, scores + n, 0.0f);
    flags[r] = underflow ? kRowUnderflow : kRowDone;
  });
}

void attentionScoreGradients(const float* p, float* ds, const double* shift, uint8_t* flags, int64_t rows, int64_t n, int64_t first, int64_t m, bool causal,
                             double scale, bool parallel) {
  eachRow(rows, n, parallel, [&](int64_t r) {
    const float* probabilities = p + r * n;
    float* d = ds + r * n;
    const int64_t kept = keptKeys(first + r, m, n, causal);
    double di = 0;
    for (int64_t j = 0; j < kept; j++) di += static_cast<double>(probabilities[j]) * static_cast<double>(d[j]);
    if (shift != nullptr) di += shift[r];
    double sum = 0;
    for (int64_t j = 0; j < kept; j++) {
      d[j] = static_cast<float>(static_cast<double>(probabilities[j]) * (static_cast<double>(d[j]) - di) * scale);
      sum += static_cast<double>(d[j]);
    }
    std::fill(d + kept, d + n, 0.0f);
    flags[r] = std::isfinite(sum) ? kRowDone : kRowNonFinite;
  });
}

}  // namespace bsk
