// Reductions over the middle axis of an [outer, size, inner] view, and softmax / logSoftmax over rows.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <type_traits>

#include "../kernels.h"
#include "../memory.h"
#include "block_reduce.cuh"
#include "dtype.cuh"
#include "overlap.cuh"

namespace bs {

namespace {

// float types accumulate in float32; int32 in int64 (wrapped to 32 bits on store).
template <typename T>
struct AccumulatorOf {
  using type = float;
};
template <>
struct AccumulatorOf<int32_t> {
  using type = long long;
};

template <typename A>
struct Acc {
  A value;
  int32_t index;  // position along the axis for max/min/argmax; -1 for "nothing seen yet"
};

template <typename A>
__device__ __forceinline__ Acc<A> initAcc(ReduceOp op) {
  return {A(0), -1};
}

template <typename A>
__device__ __forceinline__ bool isNaN(A value) {
  return value != value;
}

// Max and Min: NaN wins (it propagates) and ties keep the lower index, so Argmax is the first maximum.
template <typename A>
__device__ __forceinline__ Acc<A> combine(ReduceOp op, Acc<A> a, Acc<A> b) {
  if (op == ReduceOp::Sum || op == ReduceOp::Mean) return {a.value + b.value, 0};
  if (b.index < 0) return a;
  if (a.index < 0) return b;
  bool aNaN = isNaN(a.value), bNaN = isNaN(b.value);
  if (aNaN || bNaN) return (aNaN && (!bNaN || a.index < b.index)) ? a : b;
  if (a.value != b.value) {
    bool aWins = op == ReduceOp::Min ? a.value < b.value : a.value > b.value;
    return aWins ? a : b;
  }
  return a.index < b.index ? a : b;
}

template <typename A>
__device__ __forceinline__ Acc<A> shuffleAcc(Acc<A> acc, int offset) {
  return {__shfl_xor_sync(0xffffffffu, acc.value, offset), __shfl_xor_sync(0xffffffffu, acc.index, offset)};
}

template <typename T, typename A>
__device__ __forceinline__ A loadAcc(const T* p) {
  if constexpr (std::is_same<T, int32_t>::value) return static_cast<long long>(*p);
  else return toFloat<T>(*p);
}

template <typename T, typename A>
__device__ __forceinline__ void writeResult(ReduceOp op, Acc<A> acc, int64_t size, void* y, int64_t at) {
  if (op == ReduceOp::Argmax) {
    static_cast<int32_t*>(y)[at] = acc.index < 0 ? 0 : acc.index;
  } else if constexpr (std::is_same<T, int32_t>::value) {
    static_cast<int32_t*>(y)[at] = static_cast<int32_t>(static_cast<uint32_t>(static_cast<unsigned long long>(acc.value)));
  } else {
    float value = acc.value;
    if (op == ReduceOp::Mean) value = size > 0 ? value / static_cast<float>(size) : __builtin_nanf("");
    static_cast<T*>(y)[at] = fromFloat<T>(value);
  }
}

// inner == 1: one block per row (striding over the rows). The row is read in 16-byte vectors from its first 16-byte
// aligned element, the elements before it and after the last whole vector one at a time, each thread with
// kRowLoads vectors in flight: one block then streams a long row at an SM's share of L2, where one element per load
// left a [1, 50257] argmax (a language model's greedy step) latency-bound at 44 us. Max, Min and Argmax give the
// same answer in any order (combine's order is total); Sum and Mean add in a fixed order for a given row, block size
// and alignment.
constexpr int kRowLoads = 4;

constexpr int kMaxRowThreads = 1024;

template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads) reduceRowsKernel(ReduceOp op, const T* __restrict__ x, void* __restrict__ y, int64_t outer,
                                 int64_t size) {
  using A = typename AccumulatorOf<T>::type;
  constexpr int kVector = 16 / static_cast<int>(sizeof(T));
  using Vector = Packed<T, kVector>;
  __shared__ Acc<A> shared[32];
  const int64_t threads = blockDim.x;
  for (int64_t row = blockIdx.x; row < outer; row += gridDim.x) {
    const T* rowPtr = x + row * size;
    const int64_t offset = static_cast<int64_t>((reinterpret_cast<uintptr_t>(rowPtr) % 16) / sizeof(T));
    const int64_t head = offset == 0 ? 0 : (kVector - offset < size ? kVector - offset : size);
    const int64_t vectors = (size - head) / kVector;
    const int64_t tail = head + vectors * kVector;
    Acc<A> acc = initAcc<A>(op);
    for (int64_t j = threadIdx.x; j < head; j += threads)
      acc = combine(op, acc, Acc<A>{loadAcc<T, A>(rowPtr + j), static_cast<int32_t>(j)});
    const Vector* body = reinterpret_cast<const Vector*>(rowPtr + head);
    for (int64_t first = threadIdx.x; first < vectors; first += kRowLoads * threads) {
      Vector loaded[kRowLoads];
#pragma unroll
      for (int u = 0; u < kRowLoads; ++u)
        if (first + u * threads < vectors) loaded[u] = body[first + u * threads];
#pragma unroll
      for (int u = 0; u < kRowLoads; ++u) {
        const int64_t v = first + u * threads;
        if (v >= vectors) break;
#pragma unroll
        for (int e = 0; e < kVector; ++e)
          acc = combine(op, acc, Acc<A>{loadAcc<T, A>(&loaded[u].v[e]), static_cast<int32_t>(head + v * kVector + e)});
      }
    }
    for (int64_t j = tail + threadIdx.x; j < size; j += threads)
      acc = combine(op, acc, Acc<A>{loadAcc<T, A>(rowPtr + j), static_cast<int32_t>(j)});
    for (int offset = 16; offset > 0; offset >>= 1) acc = combine(op, acc, shuffleAcc(acc, offset));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) shared[warp] = acc;
    __syncthreads();
    if (warp == 0) {
      acc = lane < static_cast<int>(blockDim.x >> 5) ? shared[lane] : initAcc<A>(op);
      for (int offset = 16; offset > 0; offset >>= 1) acc = combine(op, acc, shuffleAcc(acc, offset));
      if (lane == 0) writeResult<T, A>(op, acc, size, y, row);
    }
  }
}

// Threads per row for reduceRowsKernel: kThreads when the rows fill the device; with fewer rows than SMs (a decoding
// step's few rows of logits) enough for each thread to hold kRowLoads vectors of its row at once, up to
// kMaxRowThreads (the kernel's launch bounds hold its registers to what that many threads may use).
int rowThreads(int64_t outer, int64_t size, size_t elementSize, int sms) {
  if (outer >= sms) return kThreads;
  const int64_t vectors = size * static_cast<int64_t>(elementSize) / 16;
  int threads = kThreads;
  while (threads < kMaxRowThreads && static_cast<int64_t>(threads) * kRowLoads < vectors) threads *= 2;
  return threads;
}

// inner > 1: one thread per output, walking the reduced axis (coalesced across inner).
template <typename T>
__global__ void reduceStridedKernel(ReduceOp op, const T* __restrict__ x, void* __restrict__ y, int64_t outer,
                                    int64_t size, int64_t inner) {
  using A = typename AccumulatorOf<T>::type;
  int64_t total = outer * inner;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const T* base = x + (i / inner) * size * inner + i % inner;
    Acc<A> acc = initAcc<A>(op);
    for (int64_t j = 0; j < size; ++j)
      acc = combine(op, acc, Acc<A>{loadAcc<T, A>(base + j * inner), static_cast<int32_t>(j)});
    writeResult<T, A>(op, acc, size, y, i);
  }
}

// Sum/Mean over the middle axis when inner > 1, for long axes: a block covers 32 adjacent outputs (a warp reads
// 32 adjacent elements of a row) and one of `splits` ranges of the reduced axis, eight rows at a time; its eight
// partial sums meet in shared memory. With one split it writes the result, else float32 partials that
// columnFinishKernel adds in split order (deterministic).
constexpr int kColumnTile = 32;
constexpr int kColumnRows = 8;

// One output's sum over this block's split: into the split's float32 partials, or (one split) the output itself.
template <typename T>
__device__ __forceinline__ void writeColumnTotal(ReduceOp op, float total, void* y, float* partials, int64_t out,
                                                 int64_t outputs, int64_t size) {
  if (partials != nullptr) {
    partials[blockIdx.y * outputs + out] = total;
  } else {
    if (op == ReduceOp::Mean) total = size > 0 ? total / static_cast<float>(size) : __builtin_nanf("");
    static_cast<T*>(y)[out] = fromFloat<T>(total);
  }
}

template <typename T>
__global__ void columnSumKernel(ReduceOp op, const T* __restrict__ x, void* __restrict__ y, float* __restrict__ partials,
                                int64_t outer, int64_t size, int64_t inner, int64_t rowsPerSplit) {
  beginOverlappedPass();  // launched with launchOverlapped
  __shared__ float sums[kColumnRows][kColumnTile + 1];
  const int64_t tiles = (inner + kColumnTile - 1) / kColumnTile;
  const int64_t outerIndex = blockIdx.x / tiles;
  const int64_t column = (blockIdx.x % tiles) * kColumnTile + threadIdx.x;
  const int64_t begin = blockIdx.y * rowsPerSplit;
  const int64_t end = begin + rowsPerSplit < size ? begin + rowsPerSplit : size;
  float acc = 0.0f;
  if (column < inner) {
    const T* base = x + outerIndex * size * inner + column;
    for (int64_t j = begin + threadIdx.y; j < end; j += kColumnRows) acc += toFloat<T>(base[j * inner]);
  }
  sums[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || column >= inner) return;
  float total = 0.0f;
#pragma unroll
  for (int r = 0; r < kColumnRows; ++r) total += sums[r][threadIdx.x];
  writeColumnTotal<T>(op, total, y, partials, outerIndex * inner + column, outer * inner, size);
}

// The same over packs of eight adjacent outputs (16-byte loads of half types, two of float32) when inner is a
// multiple of eight and x is aligned: a block covers 256 adjacent outputs, each thread eight of them, with up to
// four rows' loads in flight. Each output's rows are added in the order of columnSumKernel.
constexpr int kColumnPack = 8;
constexpr int kColumnPackTile = kColumnTile * kColumnPack;


template <typename T>
__global__ void columnSumPackedKernel(ReduceOp op, const T* __restrict__ x, void* __restrict__ y,
                                      float* __restrict__ partials, int64_t outer, int64_t size, int64_t inner,
                                      int64_t rowsPerSplit) {
  beginOverlappedPass();  // launched with launchOverlapped
  __shared__ float sums[kColumnRows][kColumnPackTile + 4];
  const int64_t tiles = (inner + kColumnPackTile - 1) / kColumnPackTile;
  const int64_t outerIndex = blockIdx.x / tiles;
  const int64_t tileColumn = (blockIdx.x % tiles) * kColumnPackTile;
  const int64_t column = tileColumn + threadIdx.x * kColumnPack;
  const int64_t begin = blockIdx.y * rowsPerSplit;
  const int64_t end = begin + rowsPerSplit < size ? begin + rowsPerSplit : size;
  float acc[kColumnPack] = {};
  if (column < inner) {
    const T* base = x + outerIndex * size * inner + column;
#pragma unroll 4
    for (int64_t j = begin + threadIdx.y; j < end; j += kColumnRows) {
      const Packed<T, kColumnPack> pack = *reinterpret_cast<const Packed<T, kColumnPack>*>(base + j * inner);
#pragma unroll
      for (int k = 0; k < kColumnPack; ++k) acc[k] += toFloat<T>(pack.v[k]);
    }
  }
#pragma unroll
  for (int k = 0; k < kColumnPack; ++k) sums[threadIdx.y][threadIdx.x * kColumnPack + k] = acc[k];
  __syncthreads();
  const int mine = threadIdx.y * kColumnTile + threadIdx.x;
  const int64_t outColumn = tileColumn + mine;
  if (outColumn >= inner) return;
  float total = 0.0f;
#pragma unroll
  for (int r = 0; r < kColumnRows; ++r) total += sums[r][mine];
  writeColumnTotal<T>(op, total, y, partials, outerIndex * inner + outColumn, outer * inner, size);
}

template <typename T>
__global__ void columnFinishKernel(ReduceOp op, const float* __restrict__ partials, int splits, int64_t outputs,
                                   int64_t size, T* __restrict__ y) {
  beginOverlappedPass();  // launched with launchOverlapped
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < outputs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float total = 0.0f;
    // Unrolled so that several loads are in flight; the sum keeps split order.
#pragma unroll 8
    for (int s = 0; s < splits; ++s) total += partials[s * outputs + i];
    if (op == ReduceOp::Mean) total = total / static_cast<float>(size);
    y[i] = fromFloat<T>(total);
  }
}

// The same for kColumnPack adjacent outputs per thread: two 16-byte loads per split, of two splits at a time, and
// one 16-byte store (two for float32), for many outputs (a dW's partials: 5.1 against 7.4 us for 1 M bfloat16 outputs
// of 2 splits on an H200). Sums in split order, as above.
template <typename T>
__global__ void columnFinishPackedKernel(ReduceOp op, const float* __restrict__ partials, int splits, int64_t outputs,
                                         int64_t size, T* __restrict__ y) {
  beginOverlappedPass();  // launched with launchOverlapped
  const int64_t packs = outputs / kColumnPack;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < packs;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float4* from = reinterpret_cast<const float4*>(partials) + 2 * p;
    const int64_t stride = outputs / 4;  // float4s per split
    float total[kColumnPack] = {};
    int s = 0;
    for (; s + 1 < splits; s += 2) {
      const float4 a0 = from[s * stride], a1 = from[s * stride + 1];
      const float4 b0 = from[(s + 1) * stride], b1 = from[(s + 1) * stride + 1];
      const float a[kColumnPack] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float b[kColumnPack] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int k = 0; k < kColumnPack; ++k) total[k] = (total[k] + a[k]) + b[k];
    }
    if (s < splits) {
      const float4 a0 = from[s * stride], a1 = from[s * stride + 1];
      const float a[kColumnPack] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
#pragma unroll
      for (int k = 0; k < kColumnPack; ++k) total[k] += a[k];
    }
    Packed<T, kColumnPack> out;
#pragma unroll
    for (int k = 0; k < kColumnPack; ++k)
      out.v[k] = fromFloat<T>(op == ReduceOp::Mean ? total[k] / static_cast<float>(size) : total[k]);
    reinterpret_cast<Packed<T, kColumnPack>*>(y)[p] = out;
  }
}

// Few outputs of many splits (a bias gradient: 1024-4096 outputs of 30-70 splits): kFinishLanes threads per output
// each sum every kFinishLanes-th split, in order, and the first adds the lanes' sums in lane order, so the result is
// fixed for a given split count. One thread per output left each thread a chain of dependent loads over all splits,
// and a pack of eight per thread left most SMs idle (16 us against 4.6 for 4096 outputs of 33 splits).
constexpr int kFinishLanes = 8;
// Lanes from this many splits: a CTA per 32 outputs leaves few warps per SM (4096 outputs: 128 CTAs), so with 8 lanes
// each thread's chain of 16+ dependent loads set the time (128 splits of 4096: 11 us for 2 MB, the X-resident tile's
// fused column sums at 8192 tokens); 32 lanes keep four times the loads in flight.
constexpr int kWideFinishSplits = 64;
constexpr int kWideFinishLanes = 32;

int multiprocessors();

template <typename T, int kLanes>
__global__ void columnFinishLanesKernel(ReduceOp op, const float* __restrict__ partials, int splits, int64_t outputs,
                                        int64_t size, T* __restrict__ y) {
  beginOverlappedPass();  // launched with launchOverlapped
  __shared__ float sums[kLanes][kColumnTile + 1];
  const int64_t out = blockIdx.x * static_cast<int64_t>(kColumnTile) + threadIdx.x;
  float total = 0.0f;
  if (out < outputs) {
#pragma unroll 4
    for (int s = threadIdx.y; s < splits; s += kLanes) total += partials[s * outputs + out];
  }
  sums[threadIdx.y][threadIdx.x] = total;
  __syncthreads();
  if (threadIdx.y != 0 || out >= outputs) return;
  total = 0.0f;
#pragma unroll
  for (int lane = 0; lane < kLanes; ++lane) total += sums[lane][threadIdx.x];
  if (op == ReduceOp::Mean) total = total / static_cast<float>(size);
  y[out] = fromFloat<T>(total);
}

// dW's tail pieces (tc_kernels.h, KernelArgs::groupList): entry q of the tail (column-wise entry tailFirst + q, below
// nnz) gets the sum over the splits of partials [splits][entries][blockSize], in split order, at its value block. Four
// values per thread (blockSize is a multiple of 4, the partials 16-byte aligned).
template <typename T>
__global__ void sumTailSplitsKernel(const float* __restrict__ partials, int splits, int64_t entries, int64_t blockSize,
                                    const int32_t* __restrict__ groupList, int32_t fullGroups,
                                    const int32_t* __restrict__ valueIndex, int32_t nnz, T* __restrict__ out) {
  beginOverlappedPass();  // launched with launchOverlapped
  const int64_t tailFirst = groupList[2 * fullGroups + 1];
  const int64_t quads = entries * blockSize / 4;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < quads;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t q = i * 4 / blockSize, e = i * 4 % blockSize;
    if (tailFirst + q >= nnz) continue;
    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 4
    for (int s = 0; s < splits; ++s) {
      const float4 part = reinterpret_cast<const float4*>(partials + (s * entries + q) * blockSize)[e / 4];
      sum.x += part.x;
      sum.y += part.y;
      sum.z += part.z;
      sum.w += part.w;
    }
    T* to = out + static_cast<int64_t>(valueIndex[tailFirst + q]) * blockSize + e;
    to[0] = fromFloat<T>(sum.x);
    to[1] = fromFloat<T>(sum.y);
    to[2] = fromFloat<T>(sum.z);
    to[3] = fromFloat<T>(sum.w);
  }
}

// Sums `splits` float32 partials of `outputs` values each into y (divided by size for Mean), in an order fixed by
// the split count: packs of eight per thread when there are enough packs to give every SM 512 threads, lanes over the
// splits (8, or 32 from 64 splits) when the outputs are fewer than 1024 per SM, one thread per output otherwise.
template <typename T>
void finishSplits(ReduceOp op, const float* partials, int splits, int64_t outputs, int64_t size, T* y,
                  cudaStream_t stream) {
  const int64_t sms = multiprocessors();
  const bool aligned = outputs % kColumnPack == 0 && (reinterpret_cast<uintptr_t>(partials) & 15) == 0 &&
                       (reinterpret_cast<uintptr_t>(y) & (sizeof(T) * kColumnPack - 1)) == 0;
  if (aligned && outputs / kColumnPack >= 512 * sms) {
    launchOverlapped("launch of columnFinishPackedKernel", columnFinishPackedKernel<T>, dim3(gridFor(outputs / kColumnPack)),
                     dim3(kThreads), 0, stream, op, partials, splits, outputs, size, y);
  } else if (splits >= kFinishLanes / 2 && outputs < 1024 * sms) {
    const unsigned grid = static_cast<unsigned>((outputs + kColumnTile - 1) / kColumnTile);
    if (splits >= kWideFinishSplits)
      launchOverlapped("launch of columnFinishLanesKernel", columnFinishLanesKernel<T, kWideFinishLanes>, dim3(grid),
                       dim3(kColumnTile, kWideFinishLanes), 0, stream, op, partials, splits, outputs, size, y);
    else
      launchOverlapped("launch of columnFinishLanesKernel", columnFinishLanesKernel<T, kFinishLanes>, dim3(grid),
                       dim3(kColumnTile, kFinishLanes), 0, stream, op, partials, splits, outputs, size, y);
  } else {
    launchOverlapped("launch of columnFinishKernel", columnFinishKernel<T>, dim3(gridFor(outputs)), dim3(kThreads), 0,
                     stream, op, partials, splits, outputs, size, y);
  }
}

int multiprocessors() {
  constexpr int kMaxDevices = 64;
  static int counts[kMaxDevices] = {};
  int device = 0;
  BS_CUDA_CHECK(cudaGetDevice(&device));
  if (device < 0 || device >= kMaxDevices) return 1;
  if (counts[device] == 0) BS_CUDA_CHECK(cudaDeviceGetAttribute(&counts[device], cudaDevAttrMultiProcessorCount, device));
  return counts[device];
}

// causalRows m > 0: row r keeps its first (r mod m) + size - m + 1 entries, the rest read as -inf (written as 0,
// or -inf for log-softmax) and are never loaded. m = 0: every entry.
__device__ __forceinline__ int64_t causalKept(int64_t row, int64_t size, int64_t causalRows) {
  return causalRows > 0 ? row % causalRows + size - causalRows + 1 : size;
}

template <typename T, bool Log>
__global__ void softmaxRowsKernel(const T* __restrict__ x, T* __restrict__ y, int64_t outer, int64_t size,
                                  int64_t causalRows) {
  __shared__ float scratch[32];
  for (int64_t row = blockIdx.x; row < outer; row += gridDim.x) {
    const T* in = x + row * size;
    T* out = y + row * size;
    const int64_t kept = causalKept(row, size, causalRows);
    float localMax = -INFINITY;
    for (int64_t j = threadIdx.x; j < kept; j += blockDim.x) localMax = fmaxf(localMax, toFloat<T>(in[j]));
    float rowMax = blockMax(localMax, scratch);
    float localSum = 0.0f;
    for (int64_t j = threadIdx.x; j < kept; j += blockDim.x) localSum += expf(toFloat<T>(in[j]) - rowMax);
    float rowSum = blockSum(localSum, scratch);
    float logSum = logf(rowSum);
    for (int64_t j = threadIdx.x; j < kept; j += blockDim.x) {
      float shifted = toFloat<T>(in[j]) - rowMax;
      out[j] = fromFloat<T>(Log ? shifted - logSum : expf(shifted) / rowSum);
    }
    for (int64_t j = kept + threadIdx.x; j < size; j += blockDim.x) out[j] = fromFloat<T>(Log ? -INFINITY : 0.0f);
  }
}

// Rows of at most 32 * PerLane elements: one warp per row, the row held in registers (one read, one write),
// lane l holding elements l, l + 32, ... so that each load instruction of the warp is coalesced. Attention's
// rows (the keys of a context) are this short; the block kernels above take longer rows.
template <typename T, bool Log, int PerLane>
__global__ void softmaxWarpKernel(const T* __restrict__ x, T* __restrict__ y, int64_t outer, int size,
                                  int64_t causalRows) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  for (int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x >> 5) + (threadIdx.x >> 5); row < outer; row += warps) {
    const T* in = x + row * size;
    T* out = y + row * size;
    const int kept = static_cast<int>(causalKept(row, size, causalRows));
    float v[PerLane];
    float rowMax = -INFINITY;
#pragma unroll
    for (int k = 0; k < PerLane; ++k) {
      const int j = lane + 32 * k;
      v[k] = j < kept ? toFloat<T>(in[j]) : -INFINITY;
      rowMax = fmaxf(rowMax, v[k]);
    }
    rowMax = warpMax(rowMax);
    float rowSum = 0.0f;
#pragma unroll
    for (int k = 0; k < PerLane; ++k) {
      const int j = lane + 32 * k;
      v[k] -= rowMax;
      if (j < kept) rowSum += expf(v[k]);
    }
    rowSum = warpSum(rowSum);
    const float logSum = logf(rowSum);
#pragma unroll
    for (int k = 0; k < PerLane; ++k) {
      const int j = lane + 32 * k;
      if (j < kept) out[j] = fromFloat<T>(Log ? v[k] - logSum : expf(v[k]) / rowSum);
      else if (j < size) out[j] = fromFloat<T>(Log ? -INFINITY : 0.0f);
    }
  }
}

// dx from a softmax's (Log false) or log-softmax's (Log true) output y and its gradient dy, for rows of at most
// 32 * PerLane elements: one warp per row, dy and y held in registers.
template <typename T, bool Log, int PerLane>
__global__ void softmaxBackwardWarpKernel(const T* __restrict__ dy, const T* __restrict__ y, T* __restrict__ dx,
                                          int64_t outer, int size, int64_t causalRows) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  for (int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x >> 5) + (threadIdx.x >> 5); row < outer; row += warps) {
    const int64_t base = row * size;
    const int kept = static_cast<int>(causalKept(row, size, causalRows));
    float g[PerLane], o[PerLane];
    float total = 0.0f;
#pragma unroll
    for (int k = 0; k < PerLane; ++k) {
      const int j = lane + 32 * k;
      g[k] = j < kept ? toFloat<T>(dy[base + j]) : 0.0f;
      o[k] = j < kept ? toFloat<T>(y[base + j]) : 0.0f;
      total += Log ? g[k] : g[k] * o[k];
    }
    total = warpSum(total);
#pragma unroll
    for (int k = 0; k < PerLane; ++k) {
      const int j = lane + 32 * k;
      if (j < kept) dx[base + j] = fromFloat<T>(Log ? g[k] - expf(o[k]) * total : o[k] * (g[k] - total));
      else if (j < size) dx[base + j] = fromFloat<T>(0.0f);
    }
  }
}

// The same for rows of any length: one block per row, two passes over dy and y.
template <typename T, bool Log>
__global__ void softmaxBackwardRowsKernel(const T* __restrict__ dy, const T* __restrict__ y, T* __restrict__ dx,
                                          int64_t outer, int64_t size, int64_t causalRows) {
  __shared__ float scratch[32];
  for (int64_t row = blockIdx.x; row < outer; row += gridDim.x) {
    const int64_t base = row * size;
    const int64_t kept = causalKept(row, size, causalRows);
    float local = 0.0f;
    for (int64_t j = threadIdx.x; j < kept; j += blockDim.x) {
      const float g = toFloat<T>(dy[base + j]);
      local += Log ? g : g * toFloat<T>(y[base + j]);
    }
    const float total = blockSum(local, scratch);
    for (int64_t j = threadIdx.x; j < kept; j += blockDim.x) {
      const float g = toFloat<T>(dy[base + j]);
      const float o = toFloat<T>(y[base + j]);
      dx[base + j] = fromFloat<T>(Log ? g - expf(o) * total : o * (g - total));
    }
    for (int64_t j = kept + threadIdx.x; j < size; j += blockDim.x) dx[base + j] = fromFloat<T>(0.0f);
  }
}

// Calls fn(std::integral_constant<int, PerLane>) with the smallest PerLane (1 to 32, powers of two) whose warp
// covers `size`; false when the row is longer than 1024.
template <typename Fn>
bool withPerLane(int64_t size, Fn&& fn) {
  if (size <= 32) fn(std::integral_constant<int, 1>{});
  else if (size <= 64) fn(std::integral_constant<int, 2>{});
  else if (size <= 128) fn(std::integral_constant<int, 4>{});
  else if (size <= 256) fn(std::integral_constant<int, 8>{});
  else if (size <= 512) fn(std::integral_constant<int, 16>{});
  else if (size <= 1024) fn(std::integral_constant<int, 32>{});
  else return false;
  return true;
}

// Blocks of kThreads / 32 rows, a few waves at most.
unsigned warpRowGrid(int64_t outer) {
  const int64_t rowsPerBlock = kThreads / 32;
  const int64_t blocks = (outer + rowsPerBlock - 1) / rowsPerBlock;
  return static_cast<unsigned>(blocks < 65535 * 8 ? blocks : 65535 * 8);
}

unsigned rowGrid(int64_t outer) { return static_cast<unsigned>(outer < 65535 * 8 ? outer : 65535 * 8); }

}  // namespace

void launchSumSplits(DType dtype, const float* partials, int splits, int64_t n, void* out, cudaStream_t stream) {
  if (n == 0) return;
  BS_DISPATCH_FLOAT(dtype, T, finishSplits<T>(ReduceOp::Sum, partials, splits, n, 0, static_cast<T*>(out), stream));
  BS_LAUNCH_CHECK("columnFinishKernel");
}

void launchSumTailSplits(DType dtype, const float* partials, int splits, int64_t entries, int64_t blockSize,
                         const int32_t* groupList, int32_t fullGroups, const int32_t* valueIndex, int32_t nnz,
                         void* out, cudaStream_t stream) {
  if (entries == 0 || splits == 0) return;
  BS_DISPATCH_FLOAT(dtype, T, {
    launchOverlapped("launch of sumTailSplitsKernel", sumTailSplitsKernel<T>, dim3(gridFor(entries * blockSize / 4)),
                     dim3(kThreads), 0, stream, partials, splits, entries, blockSize, groupList, fullGroups, valueIndex,
                     nnz, static_cast<T*>(out));
  });
}

void launchReduce(ReduceOp op, DType dtype, const void* x, void* y, int64_t outer, int64_t size, int64_t inner,
                  cudaStream_t stream) {
  if (outer * inner == 0) return;
  if (inner > 1 && dtype != DType::Int32 && (op == ReduceOp::Sum || op == ReduceOp::Mean) && size >= 64) {
    // Packed when every row's start is aligned for eight outputs at once.
    const bool packed = inner % kColumnPack == 0 && reinterpret_cast<uintptr_t>(x) % (dtypeSize(dtype) * kColumnPack) == 0;
    const int64_t tileWidth = packed ? kColumnPackTile : kColumnTile;
    // Enough blocks to fill the device twice (packed: each thread keeps several loads in flight) or four times,
    // splitting the reduced axis when the outputs alone are too few; a split covers at least 64 rows (128 packed)
    // so that the partials stay small next to x.
    const int64_t tiles = outer * ((inner + tileWidth - 1) / tileWidth);
    const int64_t perSm = packed ? 2 : 4;
    const int64_t wanted = (perSm * static_cast<int64_t>(multiprocessors()) + tiles - 1) / tiles;
    int64_t splits = std::max<int64_t>(1, std::min<int64_t>({wanted, size / (packed ? 128 : 64), 65535}));
    const int64_t rowsPerSplit = (size + splits - 1) / splits;
    splits = (size + rowsPerSplit - 1) / rowsPerSplit;
    const dim3 block(kColumnTile, kColumnRows);
    const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(splits));
    std::optional<Scratch> partials;
    if (splits > 1) partials.emplace(static_cast<size_t>(splits * outer * inner) * sizeof(float));
    float* partial = splits > 1 ? partials->as<float>() : nullptr;
    BS_DISPATCH_FLOAT(dtype, T, {
      if (packed)
        launchOverlapped("launch of columnSumPackedKernel", columnSumPackedKernel<T>, grid, block, 0, stream, op,
                         static_cast<const T*>(x), y, partial, outer, size, inner, rowsPerSplit);
      else
        launchOverlapped("launch of columnSumKernel", columnSumKernel<T>, grid, block, 0, stream, op,
                         static_cast<const T*>(x), y, partial, outer, size, inner, rowsPerSplit);
      BS_LAUNCH_CHECK("columnSumKernel");
      if (splits > 1)
        finishSplits<T>(op, partial, static_cast<int>(splits), outer * inner, size, static_cast<T*>(y), stream);
    });
    BS_LAUNCH_CHECK("columnFinishKernel");
    return;
  }
  BS_DISPATCH_ANY(dtype, T, {
    if (inner == 1)
      reduceRowsKernel<T><<<rowGrid(outer), rowThreads(outer, size, sizeof(T), multiprocessors()), 0, stream>>>(
          op, static_cast<const T*>(x), y, outer, size);
    else
      reduceStridedKernel<T><<<gridFor(outer * inner), kThreads, 0, stream>>>(op, static_cast<const T*>(x), y, outer,
                                                                              size, inner);
  });
  BS_LAUNCH_CHECK("reduceKernel");
}

void launchSoftmax(bool log, DType dtype, const void* x, void* y, int64_t rows, int64_t size, int64_t causalRows,
                   cudaStream_t stream) {
  if (rows * size == 0) return;
  BS_DISPATCH_FLOAT(dtype, T, {
    const T* in = static_cast<const T*>(x);
    T* out = static_cast<T*>(y);
    const bool short_ = withPerLane(size, [&](auto perLane) {
      constexpr int P = decltype(perLane)::value;
      const int n = static_cast<int>(size);
      if (log) softmaxWarpKernel<T, true, P><<<warpRowGrid(rows), kThreads, 0, stream>>>(in, out, rows, n, causalRows);
      else softmaxWarpKernel<T, false, P><<<warpRowGrid(rows), kThreads, 0, stream>>>(in, out, rows, n, causalRows);
    });
    if (!short_) {
      if (log) softmaxRowsKernel<T, true><<<rowGrid(rows), kThreads, 0, stream>>>(in, out, rows, size, causalRows);
      else softmaxRowsKernel<T, false><<<rowGrid(rows), kThreads, 0, stream>>>(in, out, rows, size, causalRows);
    }
  });
  BS_LAUNCH_CHECK("softmaxKernel");
}

void launchSoftmaxBackward(bool log, DType dtype, const void* dy, const void* y, void* dx, int64_t rows, int64_t size,
                           int64_t causalRows, cudaStream_t stream) {
  if (rows * size == 0) return;
  BS_DISPATCH_FLOAT(dtype, T, {
    const T* g = static_cast<const T*>(dy);
    const T* o = static_cast<const T*>(y);
    T* out = static_cast<T*>(dx);
    const bool short_ = withPerLane(size, [&](auto perLane) {
      constexpr int P = decltype(perLane)::value;
      const int n = static_cast<int>(size);
      if (log) softmaxBackwardWarpKernel<T, true, P><<<warpRowGrid(rows), kThreads, 0, stream>>>(g, o, out, rows, n, causalRows);
      else softmaxBackwardWarpKernel<T, false, P><<<warpRowGrid(rows), kThreads, 0, stream>>>(g, o, out, rows, n, causalRows);
    });
    if (!short_) {
      if (log) softmaxBackwardRowsKernel<T, true><<<rowGrid(rows), kThreads, 0, stream>>>(g, o, out, rows, size, causalRows);
      else softmaxBackwardRowsKernel<T, false><<<rowGrid(rows), kThreads, 0, stream>>>(g, o, out, rows, size, causalRows);
    }
  });
  BS_LAUNCH_CHECK("softmaxBackwardKernel");
}

}  // namespace bs
