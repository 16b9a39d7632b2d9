// A Linear layer's bias and activation in one pass (BiasActivation), and both their gradients in one pass
// over dy and x (BiasActivationBackward: dx and the bias gradient's column sums, split over rows and summed
// in a fixed order, so the result is deterministic).
#include <algorithm>

#include "../device.h"
#include "../kernels.h"
#include "../memory.h"
#include "activation_math.cuh"
#include "dtype.cuh"
#include "overlap.cuh"

namespace bs {

namespace {

// 16-byte vectors when the width allows (every row starts aligned), else one element per step.
template <typename T, Activation kAct, int kVec>
__global__ void biasActivationKernel(const T* __restrict__ x, const T* __restrict__ bias, T* __restrict__ y, int64_t n,
                                     int64_t width) {
  allowDependentLaunch();
  const int64_t vectors = n / kVec;
  for (int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; v < vectors;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = v * kVec;
    // Packed (aligned) vectors: one 16-byte load and store each, where a reinterpreted T[kVec] was stored in 4-byte pieces.
    Packed<T, kVec> in = *reinterpret_cast<const Packed<T, kVec>*>(x + i), b{}, out;
    if (bias) b = *reinterpret_cast<const Packed<T, kVec>*>(bias + i % width);
#pragma unroll
    for (int k = 0; k < kVec; ++k)
      out.v[k] = fromFloat<T>(
          activateWithLimits<kAct, sizeof(T) == 2>(toFloat<T>(in.v[k]) + (bias ? toFloat<T>(b.v[k]) : 0.0f)));
    *reinterpret_cast<Packed<T, kVec>*>(y + i) = out;
  }
}

constexpr int kTileColumns = 32;  // columns per CTA: a warp reads one row's slice
constexpr int kTileRows = 8;      // warps per CTA, each over its own rows

// One CTA: kTileColumns columns over rows [begin, end) of its split. Writes dx and the split's column sums.
template <typename T, Activation kAct>
__global__ void biasActivationBackwardKernel(const T* __restrict__ dy, const T* __restrict__ x,
                                             const T* __restrict__ bias, T* __restrict__ dx, float* __restrict__ partials,
                                             T* __restrict__ dbias, int64_t rows, int64_t width, int64_t rowsPerSplit) {
  beginOverlappedPass();  // launched with launchOverlapped
  __shared__ float sums[kTileRows][kTileColumns + 1];
  const int64_t column = blockIdx.x * static_cast<int64_t>(kTileColumns) + threadIdx.x;
  const int64_t begin = blockIdx.y * rowsPerSplit;
  const int64_t end = begin + rowsPerSplit < rows ? begin + rowsPerSplit : rows;
  float acc = 0.0f;
  if (column < width) {
    const float b = bias ? toFloat<T>(bias[column]) : 0.0f;
    for (int64_t r = begin + threadIdx.y; r < end; r += kTileRows) {
      const int64_t i = r * width + column;
      const float g = toFloat<T>(dy[i]) * derivativeWithLimits<kAct, sizeof(T) == 2>(toFloat<T>(x[i]) + b);
      dx[i] = fromFloat<T>(g);
      acc += g;
    }
  }
  sums[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || column >= width) return;
  float total = 0.0f;
#pragma unroll
  for (int k = 0; k < kTileRows; ++k) total += sums[k][threadIdx.x];
  if (partials != nullptr) partials[blockIdx.y * width + column] = total;
  else dbias[column] = fromFloat<T>(total);
}

// The same with kVec adjacent columns per lane (16-byte loads and stores): a warp covers 32 * kVec columns of a
// row, 512 contiguous bytes for half types; the CTA's warps take every kTileRows-th row of its split.
template <typename T, Activation kAct, int kVec>
__global__ void biasActivationBackwardVectorKernel(const T* __restrict__ dy, const T* __restrict__ x,
                                                   const T* __restrict__ bias, T* __restrict__ dx,
                                                   float* __restrict__ partials, T* __restrict__ dbias, int64_t rows,
                                                   int64_t width, int64_t rowsPerSplit) {
  beginOverlappedPass();  // launched with launchOverlapped
  constexpr int kColumns = 32 * kVec;
  __shared__ float sums[kTileRows][kColumns];
  const int64_t first = blockIdx.x * static_cast<int64_t>(kColumns) + threadIdx.x * kVec;
  const int64_t begin = blockIdx.y * rowsPerSplit;
  const int64_t end = begin + rowsPerSplit < rows ? begin + rowsPerSplit : rows;
  float acc[kVec] = {};
  if (first < width) {
    float b[kVec] = {};
    if (bias) {
      T raw[kVec];
      *reinterpret_cast<uint4*>(raw) = *reinterpret_cast<const uint4*>(bias + first);
#pragma unroll
      for (int k = 0; k < kVec; ++k) b[k] = toFloat<T>(raw[k]);
    }
    // kBatch rows' loads issued before any of their math or stores (dx never aliases dy or x): unrolling alone
    // left them interleaved with the previous row's stores, at 70% of the copy bandwidth on an H200. The rows of a
    // lane are still summed in order.
    constexpr int kBatch = 4;
    for (int64_t r0 = begin + threadIdx.y; r0 < end; r0 += kBatch * kTileRows) {
      Packed<T, kVec> g[kBatch], in[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int64_t r = r0 + u * kTileRows;
        if (r < end) {
          g[u] = *reinterpret_cast<const Packed<T, kVec>*>(dy + r * width + first);
          in[u] = *reinterpret_cast<const Packed<T, kVec>*>(x + r * width + first);
        }
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int64_t r = r0 + u * kTileRows;
        if (r >= end) break;
        float d[kVec];
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          d[k] = toFloat<T>(g[u].v[k]) * derivativeWithLimits<kAct, sizeof(T) == 2>(toFloat<T>(in[u].v[k]) + b[k]);
          acc[k] += d[k];
        }
        store16(dx + r * width + first, packWord<T>(d));
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kVec; ++k) sums[threadIdx.y][threadIdx.x * kVec + k] = acc[k];
  __syncthreads();
  // kTileRows * 32 threads sum the kColumns columns over the warps, in a fixed order.
  for (int c = threadIdx.y * 32 + threadIdx.x; c < kColumns; c += kTileRows * 32) {
    const int64_t column = blockIdx.x * static_cast<int64_t>(kColumns) + c;
    if (column >= width) continue;
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < kTileRows; ++w) total += sums[w][c];
    if (partials != nullptr) partials[blockIdx.y * width + column] = total;
    else dbias[column] = fromFloat<T>(total);
  }
}

template <Activation kAct>
void forward(DType dtype, const void* x, const void* bias, void* y, int64_t rows, int64_t width, cudaStream_t stream) {
  const int64_t n = rows * width;
  BS_DISPATCH_FLOAT(dtype, T, {
    constexpr int kVec = 16 / sizeof(T);
    const bool vectors = width % kVec == 0 && (reinterpret_cast<uintptr_t>(x) & 15) == 0 &&
                         (reinterpret_cast<uintptr_t>(y) & 15) == 0 && (!bias || (reinterpret_cast<uintptr_t>(bias) & 15) == 0);
    const T* in = static_cast<const T*>(x);
    const T* b = static_cast<const T*>(bias);
    T* out = static_cast<T*>(y);
    // Launched the ordinary way: between a decoding step's products (bsrLinear at a few tokens, memory-bound on many
    // resident warps) this pass, started early, sat resident beside them and took their warps: on an H200 a captured
    // 4096 <-> 16384 feed-forward block at 1-8 tokens took 4-8% longer that way (docs/kernels.md, "Kernels that
    // overlap the one before them"). It still lets the kernel after it start early.
    if (vectors) biasActivationKernel<T, kAct, kVec><<<gridFor(n / kVec), kThreads, 0, stream>>>(in, b, out, n, width);
    else biasActivationKernel<T, kAct, 1><<<gridFor(n), kThreads, 0, stream>>>(in, b, out, n, width);
  });
  BS_LAUNCH_CHECK("biasActivationKernel");
}

template <Activation kAct>
void backward(DType dtype, const void* dy, const void* x, const void* bias, void* dx, void* dbias, int64_t rows,
              int64_t width, cudaStream_t stream) {
  BS_DISPATCH_FLOAT(dtype, T, {
    constexpr int kVec = 16 / sizeof(T);
    auto aligned = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; };
    const bool vectors = width % kVec == 0 && aligned(dy) && aligned(x) && aligned(dx) && (!bias || aligned(bias));
    const int64_t columnsPerCta = vectors ? 32 * kVec : kTileColumns;
    const int64_t tiles = (width + columnsPerCta - 1) / columnsPerCta;
    // Enough CTAs to fill the device a few times over: split the rows when the columns alone are too few.
    const int64_t wanted = (4 * static_cast<int64_t>(deviceInfo().multiprocessors) + tiles - 1) / tiles;
    int64_t splits = std::max<int64_t>(1, std::min<int64_t>({wanted, rows / 64, 65535}));
    const int64_t rowsPerSplit = std::max<int64_t>(1, (rows + splits - 1) / splits);
    splits = std::max<int64_t>(1, (rows + rowsPerSplit - 1) / rowsPerSplit);
    const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(splits));
    const dim3 block(32, kTileRows);
    const T* g = static_cast<const T*>(dy);
    const T* in = static_cast<const T*>(x);
    const T* b = static_cast<const T*>(bias);
    T* out = static_cast<T*>(dx);
    auto launch = [&](float* partials, T* sums) {
      if (vectors)
        launchOverlapped("launch of biasActivationBackwardKernel", biasActivationBackwardVectorKernel<T, kAct, kVec>,
                         grid, block, 0, stream, g, in, b, out, partials, sums, rows, width, rowsPerSplit);
      else
        launchOverlapped("launch of biasActivationBackwardKernel", biasActivationBackwardKernel<T, kAct>, grid, block,
                         0, stream, g, in, b, out, partials, sums, rows, width, rowsPerSplit);
    };
    if (splits == 1) {
      launch(nullptr, static_cast<T*>(dbias));
    } else {
      Scratch partials(static_cast<size_t>(splits * width) * sizeof(float));
      launch(partials.as<float>(), nullptr);
      launchSumSplits(dtype, partials.as<float>(), static_cast<int>(splits), width, dbias, stream);
    }
  });
  BS_LAUNCH_CHECK("biasActivationBackwardKernel");
}

}  // namespace

void launchBiasActivation(Activation activation, DType dtype, const void* x, const void* bias, void* y, int64_t rows,
                          int64_t width, cudaStream_t stream) {
  if (rows * width == 0) return;
  switch (activation) {
    case Activation::Relu: return forward<Activation::Relu>(dtype, x, bias, y, rows, width, stream);
    case Activation::Gelu: return forward<Activation::Gelu>(dtype, x, bias, y, rows, width, stream);
    case Activation::GeluTanh: return forward<Activation::GeluTanh>(dtype, x, bias, y, rows, width, stream);
    default: BS_REQUIRE(false, "biasActivation: unknown activation");
  }
}

void launchBiasActivationBackward(Activation activation, DType dtype, const void* dy, const void* x, const void* bias,
                                  void* dx, void* dbias, int64_t rows, int64_t width, cudaStream_t stream) {
  if (width == 0) return;
  if (rows == 0) {
    // No rows: the bias gradient is all zeros (dx is empty).
    BS_CUDA_CHECK(cudaMemsetAsync(dbias, 0, static_cast<size_t>(width) * dtypeSize(dtype), stream));
    return;
  }
  switch (activation) {
    case Activation::Relu: return backward<Activation::Relu>(dtype, dy, x, bias, dx, dbias, rows, width, stream);
    case Activation::Gelu: return backward<Activation::Gelu>(dtype, dy, x, bias, dx, dbias, rows, width, stream);
    case Activation::GeluTanh: return backward<Activation::GeluTanh>(dtype, dy, x, bias, dx, dbias, rows, width, stream);
    default: BS_REQUIRE(false, "biasActivationBackward: unknown activation");
  }
}

}  // namespace bs
