// Pointwise kernels of a training step: a bias and an activation (ReLU, GELU by erf or tanh) and their backward
// with the bias gradient, LayerNorm and its backward, and the Adam/AdamW update in place. float32 arrays, float32 math (the sums of the bias
// gradient, LayerNorm and the Adam step in float64); spread over the thread pool in fixed chunks, so results do not depend on the thread count.
#pragma once
#include <cstdint>

namespace bsk {

// The activation's code, as the binding passes it.
enum class Activation : int { Relu = 0, Gelu = 1, GeluTanh = 2 };

// out[r, j] = act(x[r, j] + bias[j]) over rows x width (row-major); bias may be null (zeros). out may be x.
void biasActivation(const float* x, const float* bias, int64_t rows, int64_t width, Activation activation, float* out);

// dx[r, j] = dy[r, j] act'(x[r, j] + bias[j]); dbias[j] = sum over r of dx[r, j], summed in float64 (null: not
// computed). dx may be dy.
void biasActivationBackward(const float* dy, const float* x, const float* bias, int64_t rows, int64_t width, Activation activation, float* dx,
                            double* dbias);

// LayerNorm over the last dim of rows x d: mean[r] and rstd[r] = 1 / sqrt(var + epsilon) (float64 sums, stored as
// float32), y = (x - mean) rstd gamma + beta (gamma, beta null: 1, 0), each element computed in float64.
void layerNorm(const float* x, const float* gamma, const float* beta, int64_t rows, int64_t d, double epsilon, float* y, float* mean, float* rstd);

// LayerNorm's gradients from the saved mean and rstd: dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) with
// dxhat = dy gamma; dgamma[j] = sum over r of dy xhat, dbeta[j] = sum over r of dy (float64; the same on any thread
// count).
void layerNormBackward(const float* dy, const float* x, const float* mean, const float* rstd, const float* gamma, int64_t rows, int64_t d, float* dx,
                       double* dgamma, double* dbeta);

// One Adam step: torch.optim.Adam (L2 added to the gradient) or AdamW (decoupled: the weights decay first). The
// settings as JavaScript numbers: 1 - beta2 taken from a float32 0.999 is off by 1.3e-5.
struct AdamStep {
  double lr, beta1, beta2, epsilon, weightDecay;
  bool decoupled;
  // 1 - beta1^step and 1 - beta2^step.
  double correction1, correction2;
};

// p, m and v updated in place from the gradient g, n elements each; each element's step in float64 (as the js
// backend's), so that a gradient past 1.8e19, whose square overflows float32, still moves its weight.
void adamUpdate(float* p, const float* g, float* m, float* v, int64_t n, const AdamStep& step);

// out[j] = (sum over the rows of x[r, j]) / divisor, rows x width: each column's float64 sum in the rows' order, as the
// js backend's Sum and Mean over leading axes add (divisor 1 for a sum, the row count for a mean: the same bits),
// rounded once; the columns spread over the pool.
void sumLeading(const float* x, int64_t rows, int64_t width, double divisor, float* out);

}  // namespace bsk
