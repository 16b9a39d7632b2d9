#include "pointwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <vector>

#include "clones.h"
#include "threads.h"

namespace bsk {
namespace {

// Elements per work item: enough to hide the pool's hand-off, few enough to spread a 1M-element tensor over many threads.
constexpr int64_t kChunk = 32768;
// At most this many partial bias sums per call (their memory: chunks x width doubles).
constexpr int64_t kMaxSumChunks = 64;

constexpr float kInfinity = std::numeric_limits<float>::infinity();

// 2^k for an integer k in [-126, 127], from its exponent bits.
inline float pow2(int32_t k) {
  const int32_t bits = (k + 127) << 23;
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// e^x within about 2 float32 ulps, in straight-line code the compiler vectorizes (no libm call, no branch): x = n ln 2
// + r with |r| <= ln 2 / 2, e^r by its degree-7 Taylor polynomial (truncation below 6e-9), 2^n applied in two halves
// so that results in the subnormal range underflow gradually. Overflows to inf past 88.72; NaN stays NaN.
inline float expApprox(float x) {
  const float clamped = std::min(std::max(x, -104.0f), 89.0f);
  // Round to nearest by the 1.5 * 2^23 trick (|x log2 e| < 2^22 here).
  const float shifter = 12582912.0f;
  const float fn = (clamped * 1.44269504088896341f + shifter) - shifter;
  const float r = (clamped - fn * 0.693145751953125f) - fn * 1.428606765330187045e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t n = static_cast<int32_t>(fn);
  const int32_t half = n >> 1;
  const float value = (p * pow2(half)) * pow2(n - half);
  return x != x ? x : value;
}

constexpr float kSqrtHalf = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
constexpr float kSqrt2OverPi = 0.79788456080286536f;
constexpr float kGeluC = 0.044715f;

// e^(-a^2 / 2 + extra) for a >= 0 without the rounding of a^2, which e^ would multiply by a^2 (a relative error of
// 1.5e-5 in the tail at a = 13): a = high + low with high's low 12 bits cleared, so that high^2 is exact in float32,
// and a^2 = high^2 + low (a + high), the second term small enough that its rounding is below an ulp of the result.
// Past a = 20 the result is 0: a is capped there, which keeps a = inf from giving inf - inf (NaN stays NaN).
inline float expNegHalfSquare(float a, float extra) {
  a = std::min(a, 20.0f);
  int32_t bits;
  std::memcpy(&bits, &a, sizeof bits);
  bits &= ~0xfff;
  float high;
  std::memcpy(&high, &bits, sizeof high);
  const float low = a - high;
  return expApprox(-0.5f * (high * high)) * expApprox(extra - 0.5f * (low * (a + high)));
}

// Phi(-a) = erfc(a / sqrt 2) / 2 for a >= 0 (and +inf), relative error below 5e-7 wherever it is normal: Numerical
// Recipes' Chebyshev fit erfc(z) = t e^(-z^2 + P(t)), t = 1 / (1 + z / 2) (fractional error below 1.2e-7 in exact
// arithmetic), with z^2 = a^2 / 2 taken from a itself (z's own rounding would be amplified by z^2 as well).
inline float lowerTail(float a) {
  const float t = 1.0f / (1.0f + 0.5f * (a * kSqrtHalf));
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  return 0.5f * t * expNegHalfSquare(a, p);
}

// Phi(y), the standard normal CDF, from its lower tail: accurate in both tails.
inline float normalCdf(float y) {
  const float tail = lowerTail(std::abs(y));
  return y <= 0.0f ? tail : 1.0f - tail;
}

// sigmoid(2u) for GELU's tanh form, (1 + tanh u) / 2 without tanh's cancellation.
inline float tanhGate(float y) {
  const float u = kSqrt2OverPi * (y + kGeluC * y * y * y);
  return 1.0f / (1.0f + expApprox(-2.0f * u));
}

// The activation at y and its derivative, with GELU's limits at the infinities (where the formulas give inf * 0):
// gelu(+inf) = +inf, gelu(-inf) = -0, gelu'(+inf) = 1, gelu'(-inf) = 0. NaN stays NaN; relu'(NaN) = 1, as torch's
// threshold_backward passes the gradient where the input is not <= 0.
template <Activation A>
inline float value(float y) {
  if constexpr (A == Activation::Relu) {
    return y > 0.0f ? y : (y != y ? y : 0.0f);
  } else if constexpr (A == Activation::Gelu) {
    const float v = y * normalCdf(y);
    return y == -kInfinity ? -0.0f : v;
  } else {
    const float v = y * tanhGate(y);
    return y == -kInfinity ? -0.0f : v;
  }
}

template <Activation A>
inline float derivative(float y) {
  if constexpr (A == Activation::Relu) {
    return y <= 0.0f ? 0.0f : 1.0f;
  } else if constexpr (A == Activation::Gelu) {
    const float d = normalCdf(y) + y * kInvSqrt2Pi * expNegHalfSquare(std::abs(y), 0.0f);
    return y == kInfinity ? 1.0f : (y == -kInfinity ? 0.0f : d);
  } else {
    const float s = tanhGate(y);
    // s (1 - s) is 0 where the gate saturates (|y| past about 10), and y^2 overflows past 1.8e19: inf * 0 there.
    const float w = s * (1.0f - s);
    const float d = s + (w == 0.0f ? 0.0f : 2.0f * y * w * kSqrt2OverPi * (1.0f + 3.0f * kGeluC * y * y));
    return y == kInfinity ? 1.0f : (y == -kInfinity ? 0.0f : d);
  }
}

template <Activation A>
BSK_CLONES void forwardRow(const float* x, const float* bias, int64_t width, float* out) {
  for (int64_t j = 0; j < width; j++) out[j] = value<A>(x[j] + bias[j]);
}

// GELU's derivative at y in float64, as the js kernels compute it (the limits at the infinities, NaN at NaN).
template <Activation A>
double geluDerivative64(double y) {
  if (y == static_cast<double>(kInfinity)) return 1.0;
  if (y == -static_cast<double>(kInfinity)) return 0.0;
  if constexpr (A == Activation::Gelu) {
    return 0.5 * std::erfc(-y * 0.70710678118654752440) + y * 0.39894228040143267794 * std::exp(-0.5 * y * y);
  } else {
    // The gate as the logistic, as js's: s + 2 y s (1 - s) du/dy, s where s (1 - s) is 0 (du/dy may be inf there).
    const double sqrt2OverPi = 0.79788456080286535588, c = 0.044715;
    const double s = 1.0 / (1.0 + std::exp(-2.0 * sqrt2OverPi * (y + c * y * y * y)));
    const double w = s * (1.0 - s);
    return w == 0.0 ? s : s + 2.0 * y * w * sqrt2OverPi * (1.0 + 3.0 * c * y * y);
  }
}

// GELU's dx where dy is infinite, from the float64 derivative: deep in the lower tail (y below about -14.5) the float32
// derivative is 0 and inf * 0 was NaN, where js's tiny float64 derivative gives +-inf (and 0, so NaN, past y = -38.6,
// as js's does); the tanh form's float64 derivative (its gate a logistic) is nonzero down to about -21.4, float32's
// to about -10.
template <Activation A>
void infiniteGradients(const float* dy, const float* x, const float* bias, int64_t width, float* dx) {
  if constexpr (A != Activation::Relu) {
    for (int64_t j = 0; j < width; j++) {
      if (std::isinf(dy[j])) dx[j] = static_cast<float>(static_cast<double>(dy[j]) * geluDerivative64<A>(static_cast<double>(x[j]) + static_cast<double>(bias[j])));
    }
  }
}

// One row's dx = dy act'(x + bias) (inlined into each clone below).
template <Activation A>
inline void backwardValues(const float* dy, const float* x, const float* bias, int64_t width, float* dx) {
  for (int64_t j = 0; j < width; j++) dx[j] = dy[j] * derivative<A>(x[j] + bias[j]);
  infiniteGradients<A>(dy, x, bias, width, dx);
}

template <Activation A>
BSK_CLONES void backwardRowNoSums(const float* dy, const float* x, const float* bias, int64_t width, float* dx) {
  backwardValues<A>(dy, x, bias, width, dx);
}

template <Activation A>
BSK_CLONES void backwardRow(const float* dy, const float* x, const float* bias, int64_t width, float* dx, double* sums) {
  backwardValues<A>(dy, x, bias, width, dx);
  for (int64_t j = 0; j < width; j++) sums[j] += static_cast<double>(dx[j]);
}

// Rows per work item: about kChunk elements, at least one row.
int64_t rowsPerChunk(int64_t width) { return std::max<int64_t>(1, kChunk / std::max<int64_t>(1, width)); }

// Runs row(r, sums) for every row, `sums` holding one float64 array of `width` per output in `out`, private to the row's
// chunk; then adds the chunks' partials into each output in chunk order: the same sums on any thread count.
template <typename Row>
void columnSums(int64_t rows, int64_t width, std::initializer_list<double*> out, Row row) {
  const size_t lanes = out.size();
  const int64_t step = std::max(rowsPerChunk(width), (rows + kMaxSumChunks - 1) / kMaxSumChunks);
  const int64_t chunks = (rows + step - 1) / step;
  std::vector<double> partials(static_cast<size_t>(chunks * width) * lanes, 0.0);
  parallelFor(chunks, [&](int64_t c) {
    double* sums[4];
    for (size_t l = 0; l < lanes; l++) sums[l] = partials.data() + (static_cast<size_t>(c) * lanes + l) * static_cast<size_t>(width);
    const int64_t end = std::min(rows, (c + 1) * step);
    for (int64_t r = c * step; r < end; r++) row(r, sums);
  });
  const int64_t columnsPerItem = std::max<int64_t>(1, kChunk / std::max<int64_t>(1, chunks));
  std::vector<double*> targets(out);
  parallelFor((width + columnsPerItem - 1) / columnsPerItem, [&](int64_t item) {
    const int64_t end = std::min(width, (item + 1) * columnsPerItem);
    for (size_t l = 0; l < lanes; l++) {
      for (int64_t j = item * columnsPerItem; j < end; j++) {
        double total = 0.0;
        for (int64_t c = 0; c < chunks; c++) total += partials[(static_cast<size_t>(c) * lanes + l) * static_cast<size_t>(width) + static_cast<size_t>(j)];
        targets[l][j] = total;
      }
    }
  });
}

// sum of x[0..n) in float64, in 8 independent lanes (so the loop vectorizes without reassociating one chain).
BSK_CLONES double sum64(const float* x, int64_t n) {
  double lanes[8] = {};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    for (int l = 0; l < 8; l++) lanes[l] += static_cast<double>(x[k + l]);
  }
  double total = 0.0;
  for (; k < n; k++) total += static_cast<double>(x[k]);
  for (int l = 0; l < 8; l++) total += lanes[l];
  return total;
}

// sum of (x - mu)^2 over x[0..n) in float64, as sum64.
BSK_CLONES double squares64(const float* x, double mu, int64_t n) {
  double lanes[8] = {};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    for (int l = 0; l < 8; l++) {
      const double c = static_cast<double>(x[k + l]) - mu;
      lanes[l] += c * c;
    }
  }
  double total = 0.0;
  for (; k < n; k++) {
    const double c = static_cast<double>(x[k]) - mu;
    total += c * c;
  }
  for (int l = 0; l < 8; l++) total += lanes[l];
  return total;
}

BSK_CLONES void normalizeRow(const float* x, const float* gamma, const float* beta, int64_t d, double mu, double rs, float* y) {
  for (int64_t j = 0; j < d; j++) {
    const double normalized = (static_cast<double>(x[j]) - mu) * rs;
    y[j] = static_cast<float>(normalized * static_cast<double>(gamma[j]) + static_cast<double>(beta[j]));
  }
}

// One row of LayerNorm's backward: the row's two sums, dgamma's and dbeta's partials, then dx.
BSK_CLONES void layerNormBackwardRow(const float* dy, const float* x, double mu, double rs, const float* gamma, int64_t d, float* dx, double* dgamma,
                                     double* dbeta) {
  double sums[8] = {};
  double products[8] = {};
  int64_t j = 0;
  for (; j + 8 <= d; j += 8) {
    for (int l = 0; l < 8; l++) {
      const double g = static_cast<double>(dy[j + l]);
      const double xhat = (static_cast<double>(x[j + l]) - mu) * rs;
      const double dxhat = g * static_cast<double>(gamma[j + l]);
      sums[l] += dxhat;
      products[l] += dxhat * xhat;
      dgamma[j + l] += g * xhat;
      dbeta[j + l] += g;
    }
  }
  double sumDxhat = 0.0;
  double sumDxhatXhat = 0.0;
  for (; j < d; j++) {
    const double g = static_cast<double>(dy[j]);
    const double xhat = (static_cast<double>(x[j]) - mu) * rs;
    const double dxhat = g * static_cast<double>(gamma[j]);
    sumDxhat += dxhat;
    sumDxhatXhat += dxhat * xhat;
    dgamma[j] += g * xhat;
    dbeta[j] += g;
  }
  for (int l = 0; l < 8; l++) {
    sumDxhat += sums[l];
    sumDxhatXhat += products[l];
  }
  const double meanDxhat = sumDxhat / static_cast<double>(d);
  const double meanDxhatXhat = sumDxhatXhat / static_cast<double>(d);
  for (int64_t k = 0; k < d; k++) {
    const double xhat = (static_cast<double>(x[k]) - mu) * rs;
    const double dxhat = static_cast<double>(dy[k]) * static_cast<double>(gamma[k]);
    dx[k] = static_cast<float>(rs * (dxhat - meanDxhat - xhat * meanDxhatXhat));
  }
}

template <Activation A>
void forward(const float* x, const float* bias, int64_t rows, int64_t width, float* out) {
  const int64_t step = rowsPerChunk(width);
  const int64_t chunks = (rows + step - 1) / step;
  parallelFor(chunks, [&](int64_t c) {
    const int64_t end = std::min(rows, (c + 1) * step);
    for (int64_t r = c * step; r < end; r++) forwardRow<A>(x + r * width, bias, width, out + r * width);
  });
}

template <Activation A>
void backward(const float* dy, const float* x, const float* bias, int64_t rows, int64_t width, float* dx, double* dbias) {
  if (dbias == nullptr) {
    const int64_t step = rowsPerChunk(width);
    parallelFor((rows + step - 1) / step, [&](int64_t c) {
      const int64_t end = std::min(rows, (c + 1) * step);
      for (int64_t r = c * step; r < end; r++) backwardRowNoSums<A>(dy + r * width, x + r * width, bias, width, dx + r * width);
    });
    return;
  }
  columnSums(rows, width, {dbias}, [&](int64_t r, double* const* sums) {
    backwardRow<A>(dy + r * width, x + r * width, bias, width, dx + r * width, sums[0]);
  });
}

// With `l2` false (AdamW) the gradient is read as it is: 0 * param was NaN at an infinite weight, its m and v NaN where
// the js kernel keeps them.
BSK_CLONES void adamRange(float* p, const float* g, float* m, float* v, int64_t n, double lr, double beta1, double beta2, double epsilon, double keep,
                          bool l2, double weightDecay, double inv1, double inv2) {
  for (int64_t i = 0; i < n; i++) {
    const double param = static_cast<double>(p[i]);
    const double grad = l2 ? static_cast<double>(g[i]) + weightDecay * param : static_cast<double>(g[i]);
    const double mi = beta1 * static_cast<double>(m[i]) + (1.0 - beta1) * grad;
    const double vi = beta2 * static_cast<double>(v[i]) + (1.0 - beta2) * grad * grad;
    m[i] = static_cast<float>(mi);
    v[i] = static_cast<float>(vi);
    p[i] = static_cast<float>(param * keep - (lr * (mi * inv1)) / (std::sqrt(vi * inv2) + epsilon));
  }
}

// acc[j] += row[j] over one row of a block of columns (each column's float64 sum in the rows' order).
BSK_CLONES void addRowTo(double* acc, const float* row, int64_t width) {
  for (int64_t j = 0; j < width; j++) acc[j] += static_cast<double>(row[j]);
}

}  // namespace

void biasActivation(const float* x, const float* bias, int64_t rows, int64_t width, Activation activation, float* out) {
  if (rows == 0 || width == 0) return;
  std::vector<float> zeros;
  if (bias == nullptr) {
    zeros.assign(static_cast<size_t>(width), 0.0f);
    bias = zeros.data();
  }
  switch (activation) {
    case Activation::Relu:
      return forward<Activation::Relu>(x, bias, rows, width, out);
    case Activation::Gelu:
      return forward<Activation::Gelu>(x, bias, rows, width, out);
    case Activation::GeluTanh:
      return forward<Activation::GeluTanh>(x, bias, rows, width, out);
  }
}

void biasActivationBackward(const float* dy, const float* x, const float* bias, int64_t rows, int64_t width, Activation activation, float* dx,
                            double* dbias) {
  if (width == 0) return;
  if (rows == 0) {
    if (dbias != nullptr) std::fill(dbias, dbias + width, 0.0);
    return;
  }
  std::vector<float> zeros;
  if (bias == nullptr) {
    zeros.assign(static_cast<size_t>(width), 0.0f);
    bias = zeros.data();
  }
  switch (activation) {
    case Activation::Relu:
      return backward<Activation::Relu>(dy, x, bias, rows, width, dx, dbias);
    case Activation::Gelu:
      return backward<Activation::Gelu>(dy, x, bias, rows, width, dx, dbias);
    case Activation::GeluTanh:
      return backward<Activation::GeluTanh>(dy, x, bias, rows, width, dx, dbias);
  }
}

void layerNorm(const float* x, const float* gamma, const float* beta, int64_t rows, int64_t d, double epsilon, float* y, float* mean, float* rstd) {
  if (rows == 0) return;
  std::vector<float> ones, zeros;
  if (gamma == nullptr) {
    ones.assign(static_cast<size_t>(d), 1.0f);
    gamma = ones.data();
  }
  if (beta == nullptr) {
    zeros.assign(static_cast<size_t>(d), 0.0f);
    beta = zeros.data();
  }
  const int64_t step = rowsPerChunk(d);
  parallelFor((rows + step - 1) / step, [&](int64_t c) {
    const int64_t end = std::min(rows, (c + 1) * step);
    for (int64_t r = c * step; r < end; r++) {
      const float* row = x + r * d;
      const double mu = d == 0 ? 0.0 : sum64(row, d) / static_cast<double>(d);
      const double variance = d == 0 ? 0.0 : squares64(row, mu, d) / static_cast<double>(d);
      const double rs = 1.0 / std::sqrt(variance + epsilon);
      mean[r] = static_cast<float>(mu);
      rstd[r] = static_cast<float>(rs);
      normalizeRow(row, gamma, beta, d, mu, rs, y + r * d);
    }
  });
}

void layerNormBackward(const float* dy, const float* x, const float* mean, const float* rstd, const float* gamma, int64_t rows, int64_t d, float* dx,
                       double* dgamma, double* dbeta) {
  if (d == 0) return;
  if (rows == 0) {
    std::fill(dgamma, dgamma + d, 0.0);
    std::fill(dbeta, dbeta + d, 0.0);
    return;
  }
  std::vector<float> ones;
  if (gamma == nullptr) {
    ones.assign(static_cast<size_t>(d), 1.0f);
    gamma = ones.data();
  }
  columnSums(rows, d, {dgamma, dbeta}, [&](int64_t r, double* const* sums) {
    layerNormBackwardRow(dy + r * d, x + r * d, static_cast<double>(mean[r]), static_cast<double>(rstd[r]), gamma, d, dx + r * d, sums[0], sums[1]);
  });
}

void adamUpdate(float* p, const float* g, float* m, float* v, int64_t n, const AdamStep& step) {
  // AdamW decays the weights before the update; Adam adds the L2 term to the gradient.
  const double keep = step.decoupled ? 1.0 - step.lr * step.weightDecay : 1.0;
  const double inv1 = 1.0 / step.correction1;
  const double inv2 = 1.0 / step.correction2;
  parallelFor((n + kChunk - 1) / kChunk, [&](int64_t c) {
    const int64_t begin = c * kChunk;
    const int64_t count = std::min(n, begin + kChunk) - begin;
    adamRange(p + begin, g + begin, m + begin, v + begin, count, step.lr, step.beta1, step.beta2, step.epsilon, keep, !step.decoupled, step.weightDecay, inv1, inv2);
  });
}

void sumLeading(const float* x, int64_t rows, int64_t width, double divisor, float* out) {
  constexpr int64_t kColumns = 512;
  const int64_t blocks = (width + kColumns - 1) / kColumns;
  parallelFor(blocks, [&](int64_t block) {
    const int64_t j0 = block * kColumns;
    const int64_t count = std::min(kColumns, width - j0);
    double acc[kColumns] = {};
    for (int64_t r = 0; r < rows; r++) addRowTo(acc, x + r * width + j0, count);
    for (int64_t j = 0; j < count; j++) out[j0 + j] = static_cast<float>(divisor == 1.0 ? acc[j] : acc[j] / divisor);
  });
}

}  // namespace bsk
