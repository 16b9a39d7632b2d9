#include "attention_rows.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "clones.h"
#include "threads.h"

namespace bsk {
namespace {

// The largest positive float64 that rounds to 0 as a float32 (half the smallest float32 subnormal, a tie to even).
constexpr double kFloat32RoundsToZero = 0x1p-150;
// Scores per work item, about: a few rows of a long sequence, many of a short one.
constexpr int64_t kChunk = 8192;

// 2^k for an integer k in [-1022, 1023], from its exponent bits.
inline double pow2(int64_t k) {
  const int64_t bits = (k + 1023) << 52;
  double value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// e^x in float64 within about an ulp, in straight-line code the compiler vectorizes (std::exp, a libm call per score,
// took most of a softmax row's time): x = n ln 2 + r with |r| <= ln 2 / 2 and ln 2 in two parts (fdlibm's, the high
// part's low bits zero, so n ln2hi is exact), e^r by its degree-13 Taylor polynomial (truncation below 5e-18), 2^n
// applied in two halves so that results in the subnormal range underflow gradually. 0 below -746, inf above 709.79,
// NaN stays NaN.
inline double expDouble(double x) {
  const double clamped = std::min(std::max(x, -746.0), 710.0);
  // Round to nearest by the 1.5 * 2^52 trick: t's low mantissa bits hold n itself (|n| < 2^51).
  const double shifter = 6755399441055744.0;
  const double t = clamped * 1.4426950408889634074 + shifter;
  int64_t tBits, shifterBits;
  std::memcpy(&tBits, &t, sizeof tBits);
  std::memcpy(&shifterBits, &shifter, sizeof shifterBits);
  const int64_t n = tBits - shifterBits;
  const double fn = t - shifter;
  const double r = (clamped - fn * 6.93147180369123816490e-01) - fn * 1.90821492927058770002e-10;
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const int64_t half = n >> 1;
  const double value = (p * pow2(half)) * pow2(n - half);
  return x != x ? x : value;
}

// e[j] = e^(e[j] - max) over a row's kept scores.
BSK_CLONES void exponentials(double* e, int64_t count, double max) {
  for (int64_t j = 0; j < count; j++) e[j] = expDouble(e[j] - max);
}

int64_t keptKeys(int64_t i, int64_t m, int64_t n, bool causal) { return causal ? std::clamp<int64_t>(i + n - m + 1, 0, n) : n; }

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
    thread_local std::vector<double> row64;
    if (static_cast<int64_t>(row64.size()) < n) row64.resize(static_cast<size_t>(n));
    float* scores = s + r * n;
    const int64_t kept = keptKeys(first + r, m, n, causal);
    for (int64_t j = 0; j < kept; j++) {
      if (!std::isfinite(scores[j])) {
        flags[r] = kRowNonFinite;
        return;
      }
    }
    double* e = row64.data();
    double max = -INFINITY;
    for (int64_t j = 0; j < kept; j++) {
      e[j] = scale * static_cast<double>(scores[j]);
      if (e[j] > max || std::isnan(e[j])) max = e[j];
    }
    exponentials(e, kept, max);
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

void attentionScoreGradients(const float* p, float* ds, uint8_t* flags, int64_t rows, int64_t n, int64_t first, int64_t m, bool causal, double scale,
                             bool parallel) {
  eachRow(rows, n, parallel, [&](int64_t r) {
    const float* probabilities = p + r * n;
    float* d = ds + r * n;
    const int64_t kept = keptKeys(first + r, m, n, causal);
    double di = 0;
    for (int64_t j = 0; j < kept; j++) di += static_cast<double>(probabilities[j]) * static_cast<double>(d[j]);
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
