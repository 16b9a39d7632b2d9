// The fused Adam / AdamW step: reads param, grad and both moments once, writes the three new tensors.
#include "../kernels.h"
#include "dtype.cuh"

namespace bs {

namespace {

// The moments may have their own float dtype, chosen at run time (one branch per load, uniform).
__device__ __forceinline__ float loadAs(DType dtype, const void* p, int64_t i) {
  switch (dtype) {
    case DType::Float16: return toFloat(static_cast<const __half*>(p)[i]);
    case DType::BFloat16: return toFloat(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ void storeAs(DType dtype, void* p, int64_t i, float value) {
  switch (dtype) {
    case DType::Float16: static_cast<__half*>(p)[i] = fromFloat<__half>(value); break;
    case DType::BFloat16: static_cast<__nv_bfloat16*>(p)[i] = fromFloat<__nv_bfloat16>(value); break;
    default: static_cast<float*>(p)[i] = value;
  }
}

// The update runs in float64: with float32 coefficients (1 - beta1 is not 0.1 in float32) a moment that
// nearly cancels loses most of its digits. The kernel is memory-bound either way.
template <typename T>
__global__ void adamKernel(const T* __restrict__ param, const T* __restrict__ grad, const void* __restrict__ m,
                           const void* __restrict__ v, T* __restrict__ paramOut, void* __restrict__ mOut,
                           void* __restrict__ vOut, DType mDtype, DType vDtype, int64_t n, AdamParams h) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    double p = toFloat<T>(param[i]);
    double g = toFloat<T>(grad[i]);
    if (h.decoupledWeightDecay) p *= 1.0 - h.lr * h.weightDecay;
    else g += h.weightDecay * p;
    double mi = h.beta1 * loadAs(mDtype, m, i) + (1.0 - h.beta1) * g;
    double vi = h.beta2 * loadAs(vDtype, v, i) + (1.0 - h.beta2) * g * g;
    double update = (mi / h.biasCorrection1) / (sqrt(vi / h.biasCorrection2) + h.eps);
    paramOut[i] = fromFloat<T>(static_cast<float>(p - h.lr * update));
    storeAs(mDtype, mOut, i, static_cast<float>(mi));
    storeAs(vDtype, vOut, i, static_cast<float>(vi));
  }
}

// The multi-tensor step: the tensors of one launch travel in the kernel's parameters, each given a run
// of CTAs (blockStart) in proportion to its size; a CTA finds its tensor by a scan of those starts.
constexpr int kAdamTensorsPerLaunch = 24;
constexpr int kAdamElementsPerCta = kThreads * 8;
constexpr int kAdamMaxCtasPerTensor = 2048;

struct AdamBatch {
  AdamTensor tensor[kAdamTensorsPerLaunch];
  int32_t blockStart[kAdamTensorsPerLaunch + 1];
  int32_t count;
  DType copyDtype;
};

// A float rounded to `dtype` and widened back: what a load of it after a store would read.
__device__ __forceinline__ float roundTo(DType dtype, float value) {
  switch (dtype) {
    case DType::Float16: return toFloat(fromFloat<__half>(value));
    case DType::BFloat16: return toFloat(fromFloat<__nv_bfloat16>(value));
    default: return value;
  }
}

__global__ void multiTensorAdamKernel(const __grid_constant__ AdamBatch batch, const AdamParams h) {
  int t = 0;
  while (t + 1 < batch.count && static_cast<int32_t>(blockIdx.x) >= batch.blockStart[t + 1]) ++t;
  const AdamTensor& x = batch.tensor[t];
  const int64_t ctas = batch.blockStart[t + 1] - batch.blockStart[t];
  const int64_t first = (blockIdx.x - batch.blockStart[t]) * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  // The bias corrections as factors: two float64 divisions fewer per element.
  const double correct1 = 1.0 / x.biasCorrection1, correct2 = 1.0 / x.biasCorrection2;
  for (int64_t i = first; i < x.n; i += ctas * blockDim.x) {
    double p = loadAs(x.paramDtype, x.param, i);
    double g = loadAs(x.gradDtype, x.grad, i);
    if (h.decoupledWeightDecay) p *= 1.0 - h.lr * h.weightDecay;
    else g += h.weightDecay * p;
    double mi = h.beta1 * loadAs(x.mDtype, x.m, i) + (1.0 - h.beta1) * g;
    double vi = h.beta2 * loadAs(x.vDtype, x.v, i) + (1.0 - h.beta2) * g * g;
    double update = (mi * correct1) / (sqrt(vi * correct2) + h.eps);
    const float next = static_cast<float>(p - h.lr * update);
    storeAs(x.paramDtype, x.paramOut, i, next);
    storeAs(x.mDtype, x.mOut, i, static_cast<float>(mi));
    storeAs(x.vDtype, x.vOut, i, static_cast<float>(vi));
    // The copy rounds the stored param, as a cast of it would (a float16 param widened exactly first),
    // computed here rather than read back: a load after the store would wait for the store.
    if (x.copy != nullptr) storeAs(batch.copyDtype, x.copy, i, roundTo(x.paramDtype, next));
  }
}

}  // namespace

void launchMultiTensorAdam(const AdamTensor* tensors, int count, DType copyDtype, const AdamParams& params,
                           cudaStream_t stream) {
  AdamBatch batch{};
  int32_t ctas = 0;
  auto flush = [&]() {
    if (batch.count > 0) {
      batch.blockStart[batch.count] = ctas;
      batch.copyDtype = copyDtype;
      multiTensorAdamKernel<<<ctas, kThreads, 0, stream>>>(batch, params);
      BS_LAUNCH_CHECK("multiTensorAdamKernel");
    }
    batch = AdamBatch{};
    ctas = 0;
  };
  for (int k = 0; k < count; ++k) {
    if (tensors[k].n == 0) continue;
    const int64_t wanted = (tensors[k].n + kAdamElementsPerCta - 1) / kAdamElementsPerCta;
    batch.tensor[batch.count] = tensors[k];
    batch.blockStart[batch.count] = ctas;
    ctas += static_cast<int32_t>(wanted < kAdamMaxCtasPerTensor ? wanted : kAdamMaxCtasPerTensor);
    if (++batch.count == kAdamTensorsPerLaunch) flush();
  }
  flush();
}

void launchAdam(DType dtype, const void* param, const void* grad, const void* m, const void* v, void* paramOut,
                void* mOut, void* vOut, DType mDtype, DType vDtype, int64_t n, const AdamParams& params,
                cudaStream_t stream) {
  if (n == 0) return;
  BS_DISPATCH_FLOAT(dtype, T, adamKernel<T><<<gridFor(n), kThreads, 0, stream>>>(
                                  static_cast<const T*>(param), static_cast<const T*>(grad), m, v,
                                  static_cast<T*>(paramOut), mOut, vOut, mDtype, vDtype, n, params));
  BS_LAUNCH_CHECK("adamKernel");
}

}  // namespace bs
