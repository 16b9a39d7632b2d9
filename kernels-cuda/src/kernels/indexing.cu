// Index-driven kernels: gather, scatter-add, index copy, oneHot and cross-entropy. Index values live in device
// memory and are not checked on the host: each is range-checked here, and an index outside its axis
// reads nothing (the output is zero) and writes nothing (the update is skipped). Gather, scatter-add, index copy and
// cross-entropy (a target other than ignoreIndex) also record the first such index, which the host reports as an
// IndexError at its next wait for the device (index_fault.h); oneHot's out-of-range rows are zero by definition.
#include "../index_fault.h"
#include "../kernels.h"
#include "../memory.h"
#include "activation_math.cuh"
#include "block_reduce.cuh"
#include "dtype.cuh"
#include "row_pass.cuh"

namespace bs {

namespace {

__device__ __forceinline__ bool inRange(int32_t index, int64_t limit) { return index >= 0 && index < limit; }

// out[o, j, k] = x[o, indices[j], k]
template <typename T>
__global__ void gatherKernel(const T* __restrict__ x, const int32_t* __restrict__ indices, T* __restrict__ y,
                             int64_t outer, int64_t axisSize, int64_t inner, int64_t count, IndexFaultSink fault) {
  int64_t total = outer * count * inner;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t k = i % inner, j = (i / inner) % count, o = i / (inner * count);
    int32_t index = indices[j];
    const bool valid = inRange(index, axisSize);
    y[i] = valid ? x[(o * axisSize + index) * inner + k] : T(0);
    if (!valid && k == 0 && o == 0) reportIndexFault(fault, IndexFaultOp::Gather, index, j, axisSize);
  }
}

// y[o, indices[j], k] = source[o, j, k]; y holds the rest already (in place, or a copy of the target).
template <typename T>
__global__ void indexCopyKernel(const T* __restrict__ source, const int32_t* __restrict__ indices, T* __restrict__ y,
                                int64_t outer, int64_t axisSize, int64_t inner, int64_t count,
                                IndexFaultSink fault, IndexFaultOp op) {
  int64_t total = outer * count * inner;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t k = i % inner, j = (i / inner) % count, o = i / (inner * count);
    int32_t index = indices[j];
    if (inRange(index, axisSize))
      y[(o * axisSize + index) * inner + k] = source[i];
    else if (k == 0 && o == 0)
      reportIndexFault(fault, op, index, j, axisSize);
  }
}

// acc[o, indices[j], k] += updates[o, j, k], in float32.
template <typename T>
__global__ void scatterAddFloatKernel(const T* __restrict__ updates, const int32_t* __restrict__ indices,
                                      float* __restrict__ acc, int64_t outer, int64_t axisSize, int64_t inner,
                                      int64_t count, IndexFaultSink fault) {
  int64_t total = outer * count * inner;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t k = i % inner, j = (i / inner) % count, o = i / (inner * count);
    int32_t index = indices[j];
    if (inRange(index, axisSize))
      atomicAdd(&acc[(o * axisSize + index) * inner + k], toFloat<T>(updates[i]));
    else if (k == 0 && o == 0)
      reportIndexFault(fault, IndexFaultOp::ScatterAdd, index, j, axisSize);
  }
}

// int32 sums wrap modulo 2^32, whatever the order of the atomic adds.
__global__ void scatterAddIntKernel(const int32_t* __restrict__ updates, const int32_t* __restrict__ indices,
                                    int32_t* __restrict__ out, int64_t outer, int64_t axisSize, int64_t inner,
                                    int64_t count, IndexFaultSink fault) {
  int64_t total = outer * count * inner;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t k = i % inner, j = (i / inner) % count, o = i / (inner * count);
    int32_t index = indices[j];
    if (inRange(index, axisSize))
      atomicAdd(reinterpret_cast<unsigned*>(&out[(o * axisSize + index) * inner + k]), static_cast<unsigned>(updates[i]));
    else if (k == 0 && o == 0)
      reportIndexFault(fault, IndexFaultOp::ScatterAdd, index, j, axisSize);
  }
}

template <typename T>
__global__ void storeKernel(const float* __restrict__ acc, T* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = fromFloat<T>(acc[i]);
}

template <typename T>
__global__ void oneHotKernel(const int32_t* __restrict__ indices, T* __restrict__ y, int64_t count, int64_t depth) {
  int64_t total = count * depth;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int32_t index = indices[i / depth];
    y[i] = fromFloat<T>(index == i % depth ? 1.0f : 0.0f);
  }
}

__global__ void oneHotIntKernel(const int32_t* __restrict__ indices, int32_t* __restrict__ y, int64_t count,
                                int64_t depth) {
  int64_t total = count * depth;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = indices[i / depth] == i % depth ? 1 : 0;
}

// The exponential of cross-entropy's rows: expf for float32 logits; the MUFU's __expf for float16/bfloat16 ones
// (activation_math.cuh's expOf: its error is far below their rounding). Three exponentials per logit (one forward,
// two backward) over a [8192, 50257] batch would otherwise take as long as reading it.
template <typename T>
__device__ __forceinline__ float rowExp(float x) {
  return expOf<sizeof(T) == 2>(x);
}

// Row r's largest logit and sum of exp(logit - largest), with every thread of the block getting them, in one
// read of the row (an online sum: a thread rescales its running sum when its running maximum grows) in 16-byte
// vectors. A row of a language model's vocabulary (50257 classes, 100 KB in bf16) is read from memory once here.
template <typename T>
__device__ __forceinline__ void rowLogSumExp(const T* row, int64_t classes, float* scratch, float& rowMax,
                                             float& rowSum) {
  float localMax = -INFINITY, localSum = 0.0f;
  const T* in[1] = {row};
  rowPass<T, 1, false>(in, nullptr, classes, threadIdx.x, blockDim.x, [&](int64_t, const float (&v)[1]) {
    const float x = v[0];
    if (x > localMax) {
      localSum = localSum * rowExp<T>(localMax - x) + 1.0f;  // exp(-inf) = 0 for the first finite logit
      localMax = x;
    } else if (x != -INFINITY) {
      localSum += rowExp<T>(x - localMax);  // NaN stays NaN; -inf adds nothing
    }
    return 0.0f;
  });
  rowMax = blockMax(localMax, scratch);
  // A thread that saw only -inf (or nothing) adds 0; NaN in any thread makes the row's sum NaN.
  rowSum = blockSum(localMax == -INFINITY ? 0.0f : localSum * rowExp<T>(localMax - rowMax), scratch);
}

// loss[n] = logsumexp(logits[n]) - logits[n, targets[n]] in float32 whatever T is; one block per row.
template <typename T>
__global__ void crossEntropyKernel(const T* __restrict__ logits, const int32_t* __restrict__ targets,
                                   float* __restrict__ loss, int64_t rows, int64_t classes, int32_t ignoreIndex,
                                   IndexFaultSink fault) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = logits + r * classes;
    float rowMax, rowSum;
    rowLogSumExp(row, classes, scratch, rowMax, rowSum);
    if (threadIdx.x == 0) {
      int32_t target = targets[r];
      const bool valid = inRange(target, classes);
      loss[r] = valid ? (rowMax - toFloat<T>(row[target])) + logf(rowSum) : 0.0f;  // log(sum) last: kept beside a large max
      if (!valid && target != ignoreIndex) reportIndexFault(fault, IndexFaultOp::CrossEntropy, target, r, classes);
    }
  }
}

// dlogits[n, c] = (softmax(logits[n])[c] - [c == targets[n]]) * dy[n], dy float32: the row read twice (its
// log-sum-exp, then the gradient), both in 16-byte vectors where the rows allow.
template <typename T>
__global__ void crossEntropyBackwardKernel(const T* __restrict__ logits, const int32_t* __restrict__ targets,
                                       const float* __restrict__ dy, T* __restrict__ dlogits, int64_t rows,
                                       int64_t classes, int32_t ignoreIndex, IndexFaultSink fault) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = logits + r * classes;
    T* out = dlogits + r * classes;
    int32_t target = targets[r];
    if (!inRange(target, classes)) {
      if (threadIdx.x == 0 && target != ignoreIndex)
        reportIndexFault(fault, IndexFaultOp::CrossEntropyBackward, target, r, classes);
      for (int64_t c = threadIdx.x; c < classes; c += blockDim.x) out[c] = fromFloat<T>(0.0f);
      continue;  // uniform across the block: no thread reaches the reductions below
    }
    float rowMax, rowSum;
    rowLogSumExp(row, classes, scratch, rowMax, rowSum);
    const float upstream = dy[r], scale = upstream / rowSum;
    const T* in[1] = {row};
    rowPass<T, 1, true>(in, out, classes, threadIdx.x, blockDim.x, [&](int64_t c, const float (&v)[1]) {
      const float g = rowExp<T>(v[0] - rowMax) * scale;
      return c == target ? g - upstream : g;
    });
  }
}

unsigned rowGrid(int64_t rows) { return static_cast<unsigned>(rows < 65535 * 8 ? rows : 65535 * 8); }

}  // namespace

void launchGather(DType dtype, const void* x, const int32_t* indices, void* y, int64_t outer, int64_t axisSize,
                  int64_t inner, int64_t count, cudaStream_t stream) {
  int64_t total = outer * count * inner;
  if (total == 0) return;
  const IndexFaultSink fault = indexFaultSink();
  // Gather moves bits: elements travel as unsigned integers of their width.
  if (dtypeSize(dtype) == 4)
    gatherKernel<uint32_t><<<gridFor(total), kThreads, 0, stream>>>(
        static_cast<const uint32_t*>(x), indices, static_cast<uint32_t*>(y), outer, axisSize, inner, count, fault);
  else
    gatherKernel<uint16_t><<<gridFor(total), kThreads, 0, stream>>>(
        static_cast<const uint16_t*>(x), indices, static_cast<uint16_t*>(y), outer, axisSize, inner, count, fault);
  BS_LAUNCH_CHECK("gatherKernel");
}

void launchIndexCopy(DType dtype, const void* source, const int32_t* indices, void* y, int64_t outer,
                     int64_t axisSize, int64_t inner, int64_t count, cudaStream_t stream, IndexFaultOp op) {
  int64_t total = outer * count * inner;
  if (total == 0) return;
  const IndexFaultSink fault = indexFaultSink();
  // Like gather, a copy of bits.
  if (dtypeSize(dtype) == 4)
    indexCopyKernel<uint32_t><<<gridFor(total), kThreads, 0, stream>>>(
        static_cast<const uint32_t*>(source), indices, static_cast<uint32_t*>(y), outer, axisSize, inner, count, fault,
        op);
  else
    indexCopyKernel<uint16_t><<<gridFor(total), kThreads, 0, stream>>>(
        static_cast<const uint16_t*>(source), indices, static_cast<uint16_t*>(y), outer, axisSize, inner, count, fault,
        op);
  BS_LAUNCH_CHECK("indexCopyKernel");
}

void launchScatterAdd(DType dtype, const void* updates, const int32_t* indices, void* y, int64_t outer,
                      int64_t axisSize, int64_t inner, int64_t count, cudaStream_t stream) {
  int64_t outTotal = outer * axisSize * inner, updateTotal = outer * count * inner;
  if (outTotal == 0) return;
  const IndexFaultSink fault = indexFaultSink();
  if (dtype == DType::Int32) {
    launchZero(dtype, y, outTotal, stream);
    if (updateTotal > 0) {
      scatterAddIntKernel<<<gridFor(updateTotal), kThreads, 0, stream>>>(
          static_cast<const int32_t*>(updates), indices, static_cast<int32_t*>(y), outer, axisSize, inner, count, fault);
      BS_LAUNCH_CHECK("scatterAddIntKernel");
    }
    return;
  }
  Scratch acc(sizeof(float) * outTotal);
  launchZero(DType::Float32, acc.as<float>(), outTotal, stream);
  BS_DISPATCH_FLOAT(dtype, T, {
    if (updateTotal > 0) {
      scatterAddFloatKernel<T><<<gridFor(updateTotal), kThreads, 0, stream>>>(
          static_cast<const T*>(updates), indices, acc.as<float>(), outer, axisSize, inner, count, fault);
      BS_LAUNCH_CHECK("scatterAddFloatKernel");
    }
    storeKernel<T><<<gridFor(outTotal), kThreads, 0, stream>>>(acc.as<float>(), static_cast<T*>(y), outTotal);
  });
  BS_LAUNCH_CHECK("storeKernel");
}

void launchOneHot(DType dtype, const int32_t* indices, void* y, int64_t count, int64_t depth, cudaStream_t stream) {
  int64_t total = count * depth;
  if (total == 0) return;
  if (dtype == DType::Int32) {
    oneHotIntKernel<<<gridFor(total), kThreads, 0, stream>>>(indices, static_cast<int32_t*>(y), count, depth);
  } else {
    BS_DISPATCH_FLOAT(dtype, T, oneHotKernel<T><<<gridFor(total), kThreads, 0, stream>>>(indices, static_cast<T*>(y),
                                                                                         count, depth));
  }
  BS_LAUNCH_CHECK("oneHotKernel");
}

void launchCrossEntropy(DType dtype, const void* logits, const int32_t* targets, float* loss, int64_t rows,
                        int64_t classes, int32_t ignoreIndex, cudaStream_t stream) {
  if (rows == 0) return;
  const IndexFaultSink fault = indexFaultSink();
  BS_DISPATCH_FLOAT(dtype, T, crossEntropyKernel<T><<<rowGrid(rows), kThreads, 0, stream>>>(
                                  static_cast<const T*>(logits), targets, loss, rows, classes, ignoreIndex, fault));
  BS_LAUNCH_CHECK("crossEntropyKernel");
}

void launchCrossEntropyBackward(DType dtype, const void* logits, const int32_t* targets, const float* dy, void* dlogits,
                            int64_t rows, int64_t classes, int32_t ignoreIndex, cudaStream_t stream) {
  if (rows * classes == 0) return;
  const IndexFaultSink fault = indexFaultSink();
  BS_DISPATCH_FLOAT(dtype, T, crossEntropyBackwardKernel<T><<<rowGrid(rows), kThreads, 0, stream>>>(
                                  static_cast<const T*>(logits), targets, dy,
                                  static_cast<T*>(dlogits), rows, classes, ignoreIndex, fault));
  BS_LAUNCH_CHECK("crossEntropyBackwardKernel");
}

}  // namespace bs
