// Layer normalisation over the last axis: forward (saving float32 mean and 1/std) and backward from
// those saved statistics.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../kernels.h"
#include "../memory.h"
#include "block_reduce.cuh"
#include "dtype.cuh"
#include "overlap.cuh"
#include "row_pass.cuh"

namespace bs {

namespace {

// One block per row; two passes over the row for the variance (no cancellation for large means).
template <typename T>
__global__ void layerNormForwardKernel(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                                       T* __restrict__ y, float* __restrict__ meanOut, float* __restrict__ rstdOut,
                                       int64_t rows, int64_t width, float eps) {
  allowDependentLaunch();
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = x + r * width;
    float local = 0.0f;
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) local += toFloat<T>(row[j]);
    float mean = blockSum(local, scratch) / static_cast<float>(width);
    float localVar = 0.0f;
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      float d = toFloat<T>(row[j]) - mean;
      localVar += d * d;
    }
    float rstd = rsqrtf(blockSum(localVar, scratch) / static_cast<float>(width) + eps);
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      float value = (toFloat<T>(row[j]) - mean) * rstd;
      if (gamma) value *= toFloat<T>(gamma[j]);
      if (beta) value += toFloat<T>(beta[j]);
      y[r * width + j] = fromFloat<T>(value);
    }
    if (threadIdx.x == 0) {
      meanOut[r] = mean;
      rstdOut[r] = rstd;
    }
  }
}

// g = dy * gamma, rounded once: an FMA contracting `g - mean(g)` would keep the product's unrounded bits, and
// a row of one element (where dx is exactly 0) would come out nonzero.
template <typename T>
__device__ __forceinline__ float upstreamOf(float dyValue, const T* gamma, int64_t j) {
  return gamma ? __fmul_rn(dyValue, toFloat<T>(gamma[j])) : dyValue;
}

template <typename T>
__device__ __forceinline__ float upstream(const T* dyRow, const T* gamma, int64_t j) {
  return upstreamOf(toFloat<T>(dyRow[j]), gamma, j);
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with xhat from the saved stats.
template <typename T>
__global__ void layerNormBackwardKernel(const T* __restrict__ dy, const T* __restrict__ x,
                                        const float* __restrict__ mean, const float* __restrict__ rstd,
                                        const T* __restrict__ gamma, T* __restrict__ dx, int64_t rows, int64_t width) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = x + r * width;
    const T* dyRow = dy + r * width;
    const float mu = mean[r], rs = rstd[r];
    float localG = 0.0f, localGX = 0.0f;
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      float g = upstream(dyRow, gamma, j);
      localG += g;
      localGX += g * (toFloat<T>(row[j]) - mu) * rs;
    }
    float meanG = blockSum(localG, scratch) / static_cast<float>(width);
    float meanGX = blockSum(localGX, scratch) / static_cast<float>(width);
    for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      float g = upstream(dyRow, gamma, j);
      float xhat = (toFloat<T>(row[j]) - mu) * rs;
      dx[r * width + j] = fromFloat<T>(rs * (g - meanG - xhat * meanGX));
    }
  }
}

// Rows up to this wide take a warp each (kRowsPerBlock to a block of kThreads): at transformer widths (768-8192) a
// block per row spends its time in __syncthreads and two-byte loads, a warp moves its row in 16-byte vectors and
// reduces with shuffles. Wider rows keep the block-per-row kernels above.
constexpr int64_t kWarpRowMaxWidth = 8192;
constexpr int kRowsPerBlock = kThreads / 32;

// The forward, a warp per row: the same three passes (mean, then the variance about it, then y) as the block kernel.
template <typename T>
__global__ void layerNormForwardWarpKernel(const T* __restrict__ x, const T* __restrict__ gamma,
                                           const T* __restrict__ beta, T* __restrict__ y, float* __restrict__ meanOut,
                                           float* __restrict__ rstdOut, int64_t rows, int64_t width, float eps) {
  allowDependentLaunch();
  const int lane = threadIdx.x & 31;
  const float invWidth = 1.0f / static_cast<float>(width);
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + (threadIdx.x >> 5); r < rows;
       r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const T* in[1] = {x + r * width};
    float local = 0.0f;
    rowPass<T, 1, false>(in, nullptr, width, lane, 32, [&](int64_t, const float (&v)[1]) {
      local += v[0];
      return 0.0f;
    });
    const float mean = warpSum(local) * invWidth;
    float localVar = 0.0f;
    rowPass<T, 1, false>(in, nullptr, width, lane, 32, [&](int64_t, const float (&v)[1]) {
      const float d = v[0] - mean;
      localVar += d * d;
      return 0.0f;
    });
    const float rstd = rsqrtf(warpSum(localVar) * invWidth + eps);
    rowPass<T, 1, true>(in, y + r * width, width, lane, 32, [&](int64_t j, const float (&v)[1]) {
      float value = (v[0] - mean) * rstd;
      if (gamma) value *= toFloat<T>(gamma[j]);
      if (beta) value += toFloat<T>(beta[j]);
      return value;
    });
    if (lane == 0) {
      meanOut[r] = mean;
      rstdOut[r] = rstd;
    }
  }
}

// The forward with each row held in registers, for rows of whole 16-byte vectors (the row's start, Y's, gamma's and
// beta's 16-byte aligned): `rowThreads` threads (32-256, a power of two) take a row, each loading its kV or fewer
// vectors of it all at once, then the mean, the variance about it and y from those registers. The warp kernel above
// loads one vector at a time in each of its three passes; where rows are few (decoding: 1-64 tokens) nothing hides
// those loads' latency, and on an H100 it took 14-21 us for 40 rows of 4096 (a decoding block's whole LayerNorm, for
// 320 KB). With 32 threads per row each lane sums its values in the warp kernel's order, so y, mean and rstd are the
// same bits; wider groups add their warps' sums in warp order.
template <typename T, int kV>
__global__ void __launch_bounds__(kThreads) layerNormForwardHeldKernel(const T* __restrict__ x, const T* __restrict__ gamma,
                                                                       const T* __restrict__ beta, T* __restrict__ y,
                                                                       float* __restrict__ meanOut,
                                                                       float* __restrict__ rstdOut, int64_t rows,
                                                                       int64_t width, float eps, int rowThreads) {
  allowDependentLaunch();
  constexpr int kN = kRowVector<T>;
  __shared__ float warpSums[kThreads / 32];
  const int rowsPerBlock = kThreads / rowThreads, warpsPerRow = rowThreads / 32;
  const int slot = threadIdx.x / rowThreads, tid = threadIdx.x % rowThreads, warp = threadIdx.x / 32;
  const int64_t vecs = width / kN;
  const float invWidth = 1.0f / static_cast<float>(width);
  // Sum over the row's threads, every one of them getting it (a block-uniform branch: rowThreads is the launch's).
  auto rowSum = [&](float value) {
    value = warpSum(value);
    if (warpsPerRow == 1) return value;
    __syncthreads();  // warpSums may still be read for the previous sum
    if ((threadIdx.x & 31) == 0) warpSums[warp] = value;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < warpsPerRow; ++w) total += warpSums[slot * warpsPerRow + w];
    return total;
  };
  // The loop's bounds are the block's, so that every thread reaches rowSum's barriers; rows past the end hold zeros.
  for (int64_t first = static_cast<int64_t>(blockIdx.x) * rowsPerBlock; first < rows;
       first += static_cast<int64_t>(gridDim.x) * rowsPerBlock) {
    const int64_t r = first + slot;
    const bool live = r < rows;
    uint4 raw[kV];
#pragma unroll
    for (int i = 0; i < kV; ++i) {
      const int64_t q = tid + static_cast<int64_t>(i) * rowThreads;
      raw[i] = live && q < vecs ? *reinterpret_cast<const uint4*>(x + r * width + q * kN) : make_uint4(0, 0, 0, 0);
    }
    auto value = [&](int i, int k) { return toFloat<T>(reinterpret_cast<const T*>(&raw[i])[k]); };
    auto held = [&](int i) { return live && tid + static_cast<int64_t>(i) * rowThreads < vecs; };
    float local = 0.0f;
#pragma unroll
    for (int i = 0; i < kV; ++i)
      if (held(i)) {
#pragma unroll
        for (int k = 0; k < kN; ++k) local += value(i, k);
      }
    const float mean = rowSum(local) * invWidth;
    float localVar = 0.0f;
#pragma unroll
    for (int i = 0; i < kV; ++i)
      if (held(i)) {
#pragma unroll
        for (int k = 0; k < kN; ++k) {
          const float d = value(i, k) - mean;
          localVar += d * d;
        }
      }
    const float rstd = rsqrtf(rowSum(localVar) * invWidth + eps);
#pragma unroll
    for (int i = 0; i < kV; ++i) {
      if (!held(i)) continue;
      const int64_t j0 = (tid + static_cast<int64_t>(i) * rowThreads) * kN;
      uint4 g = make_uint4(0, 0, 0, 0), b = make_uint4(0, 0, 0, 0), packed;
      if (gamma) g = *reinterpret_cast<const uint4*>(gamma + j0);
      if (beta) b = *reinterpret_cast<const uint4*>(beta + j0);
#pragma unroll
      for (int k = 0; k < kN; ++k) {
        float v = (value(i, k) - mean) * rstd;
        if (gamma) v *= toFloat<T>(reinterpret_cast<const T*>(&g)[k]);
        if (beta) v += toFloat<T>(reinterpret_cast<const T*>(&b)[k]);
        reinterpret_cast<T*>(&packed)[k] = fromFloat<T>(v);
      }
      *reinterpret_cast<uint4*>(y + r * width + j0) = packed;
    }
    if (live && tid == 0) {
      meanOut[r] = mean;
      rstdOut[r] = rstd;
    }
  }
}

// Vectors per thread the held kernel aims at (rowThreads the fewest that hold the row at about this many), and the
// most it holds.
constexpr int64_t kHeldTargetVectors = 4;
constexpr int kHeldMostVectors = 8;

// dx, a warp per row (layerNormBackwardKernel's math): one pass for the two sums, one for dx.
template <typename T>
__global__ void layerNormBackwardWarpKernel(const T* __restrict__ dy, const T* __restrict__ x,
                                            const float* __restrict__ mean, const float* __restrict__ rstd,
                                            const T* __restrict__ gamma, T* __restrict__ dx, int64_t rows,
                                            int64_t width) {
  const int lane = threadIdx.x & 31;
  const float invWidth = 1.0f / static_cast<float>(width);
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + (threadIdx.x >> 5); r < rows;
       r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const T* in[2] = {dy + r * width, x + r * width};
    const float mu = mean[r], rs = rstd[r];
    float localG = 0.0f, localGX = 0.0f;
    rowPass<T, 2, false>(in, nullptr, width, lane, 32, [&](int64_t j, const float (&v)[2]) {
      const float g = upstreamOf(v[0], gamma, j);
      localG += g;
      localGX += g * (v[1] - mu) * rs;
      return 0.0f;
    });
    const float meanG = warpSum(localG) * invWidth;
    const float meanGX = warpSum(localGX) * invWidth;
    rowPass<T, 2, true>(in, dx + r * width, width, lane, 32, [&](int64_t j, const float (&v)[2]) {
      const float xhat = (v[1] - mu) * rs;
      return rs * (upstreamOf(v[0], gamma, j) - meanG - xhat * meanGX);
    });
  }
}

unsigned warpRowGrid(int64_t rows) {
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  return static_cast<unsigned>(blocks < 65535 * 8 ? blocks : 65535 * 8);
}

// Rows per chunk of the parameter gradients' partial sums (more where 65535 chunks would not hold the rows).
constexpr int64_t kRowsPerChunk = 32;

// V consecutive elements of T from p as one aligned load (Packed: a 16-byte vector for V = kRowVector<T>).
template <typename T, int V>
__device__ __forceinline__ void loadColumns(float (&v)[V], const T* p) {
  const Packed<T, V> in = *reinterpret_cast<const Packed<T, V>*>(p);
#pragma unroll
  for (int k = 0; k < V; ++k) v[k] = toFloat<T>(in.v[k]);
}

// Columns [j0, j0 + V) of one chunk of rows: the sums of dy * xhat (dgamma) and of dy (dbeta) per column, into the
// chunk's partials; a second pass adds the chunks in order, so the result does not depend on scheduling. V =
// kRowVector<T> reads each row's columns in 16-byte vectors (every row 16-byte aligned), V = 1 element by element.
template <typename T, int V>
__global__ void paramGradPartialKernel(const T* __restrict__ dy, const T* __restrict__ x,
                                       const float* __restrict__ mean, const float* __restrict__ rstd,
                                       float* __restrict__ partialGamma, float* __restrict__ partialBeta, int64_t rows,
                                       int64_t width, int64_t rowsPerChunk) {
  const int64_t j0 = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * V;
  const int64_t chunk = blockIdx.y;
  if (j0 >= width) return;
  const int64_t start = chunk * rowsPerChunk, end = min(rows, start + rowsPerChunk);
  float sumGamma[V], sumBeta[V];
#pragma unroll
  for (int k = 0; k < V; ++k) sumGamma[k] = sumBeta[k] = 0.0f;
#pragma unroll 4
  for (int64_t r = start; r < end; ++r) {
    float g[V], xs[V];
    loadColumns<T, V>(g, dy + r * width + j0);
    loadColumns<T, V>(xs, x + r * width + j0);
    const float m = mean[r], s = rstd[r];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      sumGamma[k] += g[k] * (xs[k] - m) * s;
      sumBeta[k] += g[k];
    }
  }
#pragma unroll
  for (int k = 0; k < V; ++k) {
    partialGamma[chunk * width + j0 + k] = sumGamma[k];
    partialBeta[chunk * width + j0 + k] = sumBeta[k];
  }
}

// The chunks' partials added per column: a block of kFinalColumns columns x kFinalLanes lanes, lane l summing chunks
// l, l + kFinalLanes, ... in order, then lane 0 adding the lanes' sums in order (deterministic).
constexpr int kFinalColumns = 32;
constexpr int kFinalLanes = 8;

template <typename T>
__global__ void __launch_bounds__(kFinalColumns* kFinalLanes)
    paramGradFinalKernel(const float* __restrict__ partialGamma, const float* __restrict__ partialBeta,
                         T* __restrict__ dgamma, T* __restrict__ dbeta, int64_t chunks, int64_t width) {
  __shared__ float laneGamma[kFinalLanes][kFinalColumns];
  __shared__ float laneBeta[kFinalLanes][kFinalColumns];
  const int64_t j = blockIdx.x * static_cast<int64_t>(kFinalColumns) + threadIdx.x;
  float sumGamma = 0.0f, sumBeta = 0.0f;
  if (j < width) {
    for (int64_t c = threadIdx.y; c < chunks; c += kFinalLanes) {
      sumGamma += partialGamma[c * width + j];
      sumBeta += partialBeta[c * width + j];
    }
  }
  laneGamma[threadIdx.y][threadIdx.x] = sumGamma;
  laneBeta[threadIdx.y][threadIdx.x] = sumBeta;
  __syncthreads();
  if (threadIdx.y != 0 || j >= width) return;
#pragma unroll
  for (int l = 1; l < kFinalLanes; ++l) {
    sumGamma += laneGamma[l][threadIdx.x];
    sumBeta += laneBeta[l][threadIdx.x];
  }
  dgamma[j] = fromFloat<T>(sumGamma);
  dbeta[j] = fromFloat<T>(sumBeta);
}

unsigned rowGrid(int64_t rows) { return static_cast<unsigned>(rows < 65535 * 8 ? rows : 65535 * 8); }

}  // namespace

void launchLayerNorm(DType dtype, const void* x, const void* gamma, const void* beta, void* y, float* mean, float* rstd,
                     int64_t rows, int64_t width, float eps, cudaStream_t stream) {
  if (rows == 0) return;
  if (width == 0) {
    // Statistics of an empty row, as the float32 arithmetic gives them: mean NaN, rstd NaN.
    launchFillBits(4, mean, rows, 0x7fc00000u, stream);
    launchFillBits(4, rstd, rows, 0x7fc00000u, stream);
    return;
  }
  const int64_t vector = 16 / static_cast<int64_t>(dtypeSize(dtype));
  const auto aligned = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; };
  if (width % vector == 0 && width / vector <= int64_t{kThreads} * kHeldMostVectors && aligned(x) && aligned(y) &&
      aligned(gamma) && aligned(beta)) {
    const int64_t vecs = width / vector;
    int rowThreads = 32;
    while (rowThreads < kThreads && rowThreads * kHeldTargetVectors < vecs) rowThreads *= 2;
    const int64_t perThread = (vecs + rowThreads - 1) / rowThreads;
    const int64_t rowsPerBlock = kThreads / rowThreads;
    const int64_t blocks = std::min<int64_t>((rows + rowsPerBlock - 1) / rowsPerBlock, 65535 * 8);
    const auto launch = [&](auto held) {
      constexpr int kV = decltype(held)::value;
      BS_DISPATCH_FLOAT(dtype, T, layerNormForwardHeldKernel<T, kV><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
                                      static_cast<const T*>(x), static_cast<const T*>(gamma), static_cast<const T*>(beta),
                                      static_cast<T*>(y), mean, rstd, rows, width, eps, rowThreads));
    };
    if (perThread <= 1) launch(std::integral_constant<int, 1>{});
    else if (perThread <= 2) launch(std::integral_constant<int, 2>{});
    else if (perThread <= 4) launch(std::integral_constant<int, 4>{});
    else launch(std::integral_constant<int, kHeldMostVectors>{});
    BS_LAUNCH_CHECK("layerNormForwardHeldKernel");
    return;
  }
  if (width <= kWarpRowMaxWidth) {
    BS_DISPATCH_FLOAT(dtype, T, layerNormForwardWarpKernel<T><<<warpRowGrid(rows), kThreads, 0, stream>>>(
                                    static_cast<const T*>(x), static_cast<const T*>(gamma),
                                    static_cast<const T*>(beta), static_cast<T*>(y), mean, rstd, rows, width, eps));
    BS_LAUNCH_CHECK("layerNormForwardWarpKernel");
    return;
  }
  BS_DISPATCH_FLOAT(dtype, T, layerNormForwardKernel<T><<<rowGrid(rows), kThreads, 0, stream>>>(
                                  static_cast<const T*>(x), static_cast<const T*>(gamma), static_cast<const T*>(beta),
                                  static_cast<T*>(y), mean, rstd, rows, width, eps));
  BS_LAUNCH_CHECK("layerNormForwardKernel");
}

void launchLayerNormBackward(DType dtype, const void* dy, const void* x, const float* mean, const float* rstd,
                         const void* gamma, void* dx, void* dgamma, void* dbeta, int64_t rows, int64_t width,
                         cudaStream_t stream) {
  if (width == 0) return;
  if (rows == 0) {
    launchZero(dtype, dgamma, width, stream);
    launchZero(dtype, dbeta, width, stream);
    return;
  }
  if (width <= kWarpRowMaxWidth) {
    BS_DISPATCH_FLOAT(dtype, T, layerNormBackwardWarpKernel<T><<<warpRowGrid(rows), kThreads, 0, stream>>>(
                                    static_cast<const T*>(dy), static_cast<const T*>(x), mean, rstd,
                                    static_cast<const T*>(gamma), static_cast<T*>(dx), rows, width));
    BS_LAUNCH_CHECK("layerNormBackwardWarpKernel");
  } else {
    BS_DISPATCH_FLOAT(dtype, T, layerNormBackwardKernel<T><<<rowGrid(rows), kThreads, 0, stream>>>(
                                    static_cast<const T*>(dy), static_cast<const T*>(x), mean, rstd,
                                    static_cast<const T*>(gamma), static_cast<T*>(dx), rows, width));
    BS_LAUNCH_CHECK("layerNormBackwardKernel");
  }
  const int64_t rowsPerChunk = std::max(kRowsPerChunk, (rows + 65534) / 65535);
  const int64_t chunks = (rows + rowsPerChunk - 1) / rowsPerChunk;
  Scratch partial(sizeof(float) * 2 * chunks * width);
  float* partialGamma = partial.as<float>();
  float* partialBeta = partialGamma + chunks * width;
  const unsigned finalGrid = static_cast<unsigned>((width + kFinalColumns - 1) / kFinalColumns);
  BS_DISPATCH_FLOAT(dtype, T, {
    // 16-byte vectors when every row of dy and x starts on a 16-byte boundary.
    constexpr int kV = kRowVector<T>;
    const bool vectors = width % kV == 0 && reinterpret_cast<uintptr_t>(dy) % 16 == 0 &&
                         reinterpret_cast<uintptr_t>(x) % 16 == 0;
    const int64_t perThread = vectors ? kV : 1;
    const dim3 grid(static_cast<unsigned>((width / perThread + kThreads - 1) / kThreads), static_cast<unsigned>(chunks));
    if (vectors) {
      paramGradPartialKernel<T, kV><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(dy), static_cast<const T*>(x),
                                                                    mean, rstd, partialGamma, partialBeta, rows, width,
                                                                    rowsPerChunk);
    } else {
      paramGradPartialKernel<T, 1><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(dy), static_cast<const T*>(x),
                                                                   mean, rstd, partialGamma, partialBeta, rows, width,
                                                                   rowsPerChunk);
    }
    BS_LAUNCH_CHECK("paramGradPartialKernel");
    paramGradFinalKernel<T><<<finalGrid, dim3(kFinalColumns, kFinalLanes), 0, stream>>>(
        partialGamma, partialBeta, static_cast<T*>(dgamma), static_cast<T*>(dbeta), chunks, width);
  });
  BS_LAUNCH_CHECK("paramGradFinalKernel");
}

}  // namespace bs
