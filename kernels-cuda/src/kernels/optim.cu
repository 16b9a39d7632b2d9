// The fused Adam / AdamW step: reads param, grad and both moments once, writes the three new tensors.
#include <cstdint>
#include <vector>

#include "../kernels.h"
#include "dtype.cuh"
#include "overlap.cuh"

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

// What a tensor's update reads before its loop: the learning rate and the bias corrections as factors (two
// float64 divisions fewer per element), from the host's numbers or, for a capturable step, from the device.
struct AdamSchedule {
  double lr, correct1, correct2;
};

__device__ __forceinline__ AdamSchedule scheduleOf(const AdamTensor& x, const AdamParams& h) {
  const double lr = h.lrValue != nullptr ? h.lr * static_cast<double>(*h.lrValue) : h.lr;
  if (x.stepIn == nullptr) return {lr, 1.0 / x.biasCorrection1, 1.0 / x.biasCorrection2};
  const double step = static_cast<double>(*x.stepIn) + 1.0;
  return {lr, 1.0 / (1.0 - pow(h.beta1, step)), 1.0 / (1.0 - pow(h.beta2, step))};
}

__global__ void multiTensorAdamKernel(const __grid_constant__ AdamBatch batch, const AdamParams h) {
  beginOverlappedPass();  // launched with launchOverlapped
  int t = 0;
  while (t + 1 < batch.count && static_cast<int32_t>(blockIdx.x) >= batch.blockStart[t + 1]) ++t;
  const AdamTensor& x = batch.tensor[t];
  const int64_t ctas = batch.blockStart[t + 1] - batch.blockStart[t];
  const int64_t first = (blockIdx.x - batch.blockStart[t]) * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const AdamSchedule s = scheduleOf(x, h);
  const double correct1 = s.correct1, correct2 = s.correct2, lr = s.lr;
  for (int64_t i = first; i < x.n; i += ctas * blockDim.x) {
    double p = loadAs(x.paramDtype, x.param, i);
    double g = loadAs(x.gradDtype, x.grad, i);
    if (h.decoupledWeightDecay) p *= 1.0 - lr * h.weightDecay;
    else g += h.weightDecay * p;
    double mi = h.beta1 * loadAs(x.mDtype, x.m, i) + (1.0 - h.beta1) * g;
    double vi = h.beta2 * loadAs(x.vDtype, x.v, i) + (1.0 - h.beta2) * g * g;
    double update = (mi * correct1) / (sqrt(vi * correct2) + h.eps);
    const float next = static_cast<float>(p - lr * update);
    storeAs(x.paramDtype, x.paramOut, i, next);
    storeAs(x.mDtype, x.mOut, i, static_cast<float>(mi));
    storeAs(x.vDtype, x.vOut, i, static_cast<float>(vi));
    // The copy rounds the stored param, as a cast of it would (a float16 param widened exactly first),
    // computed here rather than read back: a load after the store would wait for the store.
    if (x.copy != nullptr) storeAs(batch.copyDtype, x.copy, i, roundTo(x.paramDtype, next));
  }
}

// The mixed-precision fast path: float32 params and moments, gradients and copies of one dtype each (TG, TC;
// TC float with no copy), every buffer aligned for four elements at once. Four elements per thread and step,
// in 16-byte loads and stores (8-byte for half gradients and copies), so each thread keeps five loads in flight
// where the general kernel keeps one element's. The moments are still formed in float64 (see adamKernel); the
// step m^ / (sqrt(v^) + eps) is one float32 square root and division, as PyTorch's fused Adam takes it, and the
// new param is p - lr * step in float64, rounded once.
constexpr int kAdamVector = 4;

template <typename T>
using Vec4 = Packed<T, kAdamVector>;

template <typename TG>
__device__ __forceinline__ float adamElement(float param, TG grad, float& m, float& v, const AdamParams& h,
                                             double lr, double decay, double correct1, double correct2) {
  double p = param, g = toFloat<TG>(grad);
  if (h.decoupledWeightDecay) p *= decay;
  else g += h.weightDecay * p;
  const double mi = h.beta1 * m + (1.0 - h.beta1) * g;
  const double vi = h.beta2 * v + (1.0 - h.beta2) * g * g;
  m = static_cast<float>(mi);
  v = static_cast<float>(vi);
  const float step = static_cast<float>(mi * correct1) / (sqrtf(static_cast<float>(vi * correct2)) + static_cast<float>(h.eps));
  return static_cast<float>(p - lr * static_cast<double>(step));
}

template <typename TG, typename TC>
__global__ void multiTensorAdamVectorKernel(const __grid_constant__ AdamBatch batch, const AdamParams h) {
  beginOverlappedPass();  // launched with launchOverlapped
  int t = 0;
  while (t + 1 < batch.count && static_cast<int32_t>(blockIdx.x) >= batch.blockStart[t + 1]) ++t;
  const AdamTensor& x = batch.tensor[t];
  const int64_t ctas = batch.blockStart[t + 1] - batch.blockStart[t];
  const int64_t cta = blockIdx.x - batch.blockStart[t];
  const AdamSchedule s = scheduleOf(x, h);
  const double correct1 = s.correct1, correct2 = s.correct2, lr = s.lr;
  const double decay = 1.0 - lr * h.weightDecay;
  const int64_t vectors = x.n / kAdamVector;
  const auto* param = static_cast<const Vec4<float>*>(x.param);
  const auto* grad = static_cast<const Vec4<TG>*>(x.grad);
  const auto* mIn = static_cast<const Vec4<float>*>(x.m);
  const auto* vIn = static_cast<const Vec4<float>*>(x.v);
  for (int64_t i = cta * blockDim.x + threadIdx.x; i < vectors; i += ctas * blockDim.x) {
    const Vec4<float> p = param[i], m = mIn[i], v = vIn[i];
    const Vec4<TG> g = grad[i];
    Vec4<float> pOut, mOut = m, vOut = v;
    Vec4<TC> copy;
#pragma unroll
    for (int k = 0; k < kAdamVector; ++k) {
      pOut.v[k] = adamElement<TG>(p.v[k], g.v[k], mOut.v[k], vOut.v[k], h, lr, decay, correct1, correct2);
      copy.v[k] = fromFloat<TC>(pOut.v[k]);
    }
    static_cast<Vec4<float>*>(x.paramOut)[i] = pOut;
    static_cast<Vec4<float>*>(x.mOut)[i] = mOut;
    static_cast<Vec4<float>*>(x.vOut)[i] = vOut;
    if (x.copy != nullptr) static_cast<Vec4<TC>*>(x.copy)[i] = copy;
  }
  // The last n % 4 elements: the tensor's first CTA, one thread each.
  const int64_t tail = vectors * kAdamVector + threadIdx.x;
  if (cta == 0 && tail < x.n) {
    float m = static_cast<const float*>(x.m)[tail], v = static_cast<const float*>(x.v)[tail];
    const float next = adamElement<TG>(static_cast<const float*>(x.param)[tail], static_cast<const TG*>(x.grad)[tail], m,
                                       v, h, lr, decay, correct1, correct2);
    static_cast<float*>(x.paramOut)[tail] = next;
    static_cast<float*>(x.mOut)[tail] = m;
    static_cast<float*>(x.vOut)[tail] = v;
    if (x.copy != nullptr) static_cast<TC*>(x.copy)[tail] = fromFloat<TC>(next);
  }
}

// The step counts of one launch's tensors, written after every update has read them: stepOut = stepIn + 1.
struct AdamCounts {
  const float* in[kAdamTensorsPerLaunch];
  float* out[kAdamTensorsPerLaunch];
  int32_t count;
};

__global__ void adamCountKernel(const __grid_constant__ AdamCounts counts) {
  const int k = threadIdx.x;
  if (k < counts.count) *counts.out[k] = *counts.in[k] + 1.0f;
}

bool alignedFor(const void* p, size_t bytes) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// The fast path's kernel for a tensor, or null when the tensor needs the general one.
using AdamKernel = void (*)(const AdamBatch, const AdamParams);

AdamKernel vectorKernelFor(const AdamTensor& x, DType copyDtype) {
  if (x.paramDtype != DType::Float32 || x.mDtype != DType::Float32 || x.vDtype != DType::Float32) return nullptr;
  for (const void* p : {x.param, x.m, x.v, static_cast<const void*>(x.paramOut), static_cast<const void*>(x.mOut),
                        static_cast<const void*>(x.vOut)})
    if (!alignedFor(p, 16)) return nullptr;
  if (!alignedFor(x.grad, dtypeSize(x.gradDtype) * kAdamVector)) return nullptr;
  if (x.copy != nullptr && !alignedFor(x.copy, dtypeSize(copyDtype) * kAdamVector)) return nullptr;
  const DType copy = x.copy != nullptr ? copyDtype : DType::Float32;
  if (copy == DType::Int32 || x.gradDtype == DType::Int32) return nullptr;
  AdamKernel kernel = nullptr;
  BS_DISPATCH_FLOAT(x.gradDtype, TG, BS_DISPATCH_FLOAT(copy, TC, kernel = multiTensorAdamVectorKernel<TG, TC>));
  return kernel;
}

}  // namespace

void launchMultiTensorAdam(const AdamTensor* tensors, int count, DType copyDtype, const AdamParams& params,
                           cudaStream_t stream) {
  // Tensors go to launches of one kernel each: the fast path's kernel for their dtypes, or the general one.
  // The order within a kernel's launches is the input order; the updates are independent, so launch order
  // does not change any result.
  struct Pending {
    AdamKernel kernel;
    AdamBatch batch;
    int32_t ctas;
  };
  std::vector<Pending> pending;
  auto flush = [&](Pending& p) {
    if (p.batch.count > 0) {
      p.batch.blockStart[p.batch.count] = p.ctas;
      p.batch.copyDtype = copyDtype;
      launchOverlapped("launch of multiTensorAdamKernel", p.kernel, dim3(static_cast<unsigned>(p.ctas)), dim3(kThreads),
                       0, stream, p.batch, params);
    }
    p.batch = AdamBatch{};
    p.ctas = 0;
  };
  for (int k = 0; k < count; ++k) {
    if (tensors[k].n == 0) continue;
    AdamKernel kernel = vectorKernelFor(tensors[k], copyDtype);
    if (kernel == nullptr) kernel = multiTensorAdamKernel;
    Pending* p = nullptr;
    for (Pending& q : pending)
      if (q.kernel == kernel) p = &q;
    if (p == nullptr) p = &pending.emplace_back(Pending{kernel, AdamBatch{}, 0});
    const int64_t wanted = (tensors[k].n + kAdamElementsPerCta - 1) / kAdamElementsPerCta;
    p->batch.tensor[p->batch.count] = tensors[k];
    p->batch.blockStart[p->batch.count] = p->ctas;
    p->ctas += static_cast<int32_t>(wanted < kAdamMaxCtasPerTensor ? wanted : kAdamMaxCtasPerTensor);
    if (++p->batch.count == kAdamTensorsPerLaunch) flush(*p);
  }
  for (Pending& p : pending) flush(p);
  // Then the step counts of the tensors that keep theirs on the device, in one launch per kAdamTensorsPerLaunch:
  // after the updates in stream order, so no update reads a count already raised (stepOut may be stepIn).
  AdamCounts counts{};
  auto flushCounts = [&]() {
    if (counts.count == 0) return;
    adamCountKernel<<<1, kAdamTensorsPerLaunch, 0, stream>>>(counts);
    BS_LAUNCH_CHECK("adamCountKernel");
    counts = AdamCounts{};
  };
  for (int k = 0; k < count; ++k) {
    if (tensors[k].stepIn == nullptr) continue;
    counts.in[counts.count] = tensors[k].stepIn;
    counts.out[counts.count] = tensors[k].stepOut;
    if (++counts.count == kAdamTensorsPerLaunch) flushCounts();
  }
  flushCounts();
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
