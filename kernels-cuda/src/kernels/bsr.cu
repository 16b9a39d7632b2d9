// Block-sparse kernels for any block shape R x C. W is [rows, cols] stored as values[nnzBlocks, R, C]
// (blocks row-major). Products are tiled through shared memory with the sparse dimension flattened. float32 with block
// sides that are multiples of 16 goes to the register-tiled kernels of bsr_simt.cu first (the launchers below).
#include <algorithm>

#include "../kernels.h"
#include "../tc/tc_kernels.h"
#include "block_reduce.cuh"
#include "dtype.cuh"

namespace bs {

namespace {

constexpr int kTM = 64, kTN = 32, kTK = 32;
// Tokens per launch of the simple products at most: 65535 token tiles, the grid's y limit.
constexpr int64_t kMaxLaunchTokens = int64_t{65535} * kTM;

// Y[m, br*R + r] = sum over blocks p of row br, c < C: X[m, bc_p*C + c] * V[p, r, c]  (+ bias)
// One CTA: 64 rows of X by 32 outputs of one block row; K runs over the row's blocks times C.
template <typename T>
__global__ void __launch_bounds__(256) bsrLinearKernel(const T* __restrict__ x, const T* __restrict__ values,
                                                       const T* __restrict__ bias, T* __restrict__ y, int64_t m,
                                                       BsrPatternView pattern) {
  __shared__ float tileX[kTM][kTK + 1];
  __shared__ float tileW[kTN][kTK + 1];
  __shared__ int64_t columnOfK[kTK];
  __shared__ int64_t valueOfK[kTK];
  const int R = pattern.blockHeight, C = pattern.blockWidth;
  const int chunksPerRow = (R + kTN - 1) / kTN;
  const int blockRow = blockIdx.x / chunksPerRow;
  const int r0 = (blockIdx.x % chunksPerRow) * kTN;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTM;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t cols = pattern.cols;
  const int32_t first = pattern.blockRowPtr[blockRow];
  const int64_t kTotal = static_cast<int64_t>(pattern.blockRowPtr[blockRow + 1] - first) * C;
  float acc[4][2] = {};
  for (int64_t k0 = 0; k0 < kTotal; k0 += kTK) {
    if (tid < kTK) {
      int64_t kf = k0 + tid;
      if (kf < kTotal) {
        int64_t p = first + kf / C, c = kf % C;
        columnOfK[tid] = static_cast<int64_t>(pattern.blockColIdx[p]) * C + c;
        valueOfK[tid] = p * R * C + c;
      } else {
        columnOfK[tid] = -1;
      }
    }
    __syncthreads();
    for (int e = tid; e < kTM * kTK; e += 256) {
      int mm = e / kTK, kk = e % kTK;
      int64_t gm = m0 + mm, column = columnOfK[kk];
      tileX[mm][kk] = (gm < m && column >= 0) ? toFloat<T>(x[gm * cols + column]) : 0.0f;
    }
    for (int e = tid; e < kTN * kTK; e += 256) {
      int nn = e / kTK, kk = e % kTK;
      int r = r0 + nn;
      tileW[nn][kk] = (r < R && columnOfK[kk] >= 0) ? toFloat<T>(values[valueOfK[kk] + static_cast<int64_t>(r) * C]) : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kTK; ++kk) {
      float wv[2] = {tileW[tx][kk], tileW[tx + 16][kk]};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        float xv = tileX[ty + 16 * i][kk];
        acc[i][0] += xv * wv[0];
        acc[i][1] += xv * wv[1];
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    int64_t gm = m0 + ty + 16 * i;
    if (gm >= m) continue;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      int r = r0 + tx + 16 * j;
      if (r >= R) continue;
      int64_t out = static_cast<int64_t>(blockRow) * R + r;
      float value = acc[i][j] + (bias ? toFloat<T>(bias[out]) : 0.0f);
      y[gm * pattern.rows + out] = fromFloat<T>(value);
    }
  }
}

// dX[m, bc*C + c] = sum over blocks q of column bc (column index), r < R: dY[m, br_q*R + r] * V[vi_q, r, c]
template <typename T>
__global__ void __launch_bounds__(256) bsrMatmulKernel(const T* __restrict__ dy, const T* __restrict__ values,
                                                       T* __restrict__ dx, int64_t m, BsrPatternView pattern) {
  __shared__ float tileA[kTM][kTK + 1];
  __shared__ float tileW[kTN][kTK + 1];
  __shared__ int64_t columnOfK[kTK];
  __shared__ int64_t valueOfK[kTK];
  const int R = pattern.blockHeight, C = pattern.blockWidth;
  const int chunksPerCol = (C + kTN - 1) / kTN;
  const int blockCol = blockIdx.x / chunksPerCol;
  const int c0 = (blockIdx.x % chunksPerCol) * kTN;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTM;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t rows = pattern.rows;
  const int32_t first = pattern.blockColPtr[blockCol];
  const int64_t kTotal = static_cast<int64_t>(pattern.blockColPtr[blockCol + 1] - first) * R;
  float acc[4][2] = {};
  for (int64_t k0 = 0; k0 < kTotal; k0 += kTK) {
    if (tid < kTK) {
      int64_t kf = k0 + tid;
      if (kf < kTotal) {
        int64_t q = first + kf / R, r = kf % R;
        columnOfK[tid] = static_cast<int64_t>(pattern.blockRowIdx[q]) * R + r;
        valueOfK[tid] = static_cast<int64_t>(pattern.valueIndex[q]) * R * C + r * C;
      } else {
        columnOfK[tid] = -1;
      }
    }
    __syncthreads();
    for (int e = tid; e < kTM * kTK; e += 256) {
      int mm = e / kTK, kk = e % kTK;
      int64_t gm = m0 + mm, column = columnOfK[kk];
      tileA[mm][kk] = (gm < m && column >= 0) ? toFloat<T>(dy[gm * rows + column]) : 0.0f;
    }
    // A block row of W is contiguous along c: let neighbouring threads read neighbouring c.
    for (int e = tid; e < kTN * kTK; e += 256) {
      int kk = e / kTN, nn = e % kTN;
      int c = c0 + nn;
      tileW[nn][kk] = (c < C && columnOfK[kk] >= 0) ? toFloat<T>(values[valueOfK[kk] + c]) : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kTK; ++kk) {
      float wv[2] = {tileW[tx][kk], tileW[tx + 16][kk]};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        float av = tileA[ty + 16 * i][kk];
        acc[i][0] += av * wv[0];
        acc[i][1] += av * wv[1];
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    int64_t gm = m0 + ty + 16 * i;
    if (gm >= m) continue;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      int c = c0 + tx + 16 * j;
      if (c < C) dx[gm * pattern.cols + static_cast<int64_t>(blockCol) * C + c] = fromFloat<T>(acc[i][j]);
    }
  }
}

constexpr int kSR = 32, kSC = 32, kSK = 32;

// dW[p, r, c] = sum_m dY[m, br_p*R + r] * X[m, bc_p*C + c]: one CTA per 32x32 tile of one stored block.
template <typename T>
__global__ void __launch_bounds__(256) sampledMatmulKernel(const T* __restrict__ dy, const T* __restrict__ x,
                                                           T* __restrict__ dw, int64_t m, BsrPatternView pattern) {
  __shared__ float tileA[kSK][kSR];
  __shared__ float tileB[kSK][kSC];
  const int R = pattern.blockHeight, C = pattern.blockWidth;
  const int tilesR = (R + kSR - 1) / kSR, tilesC = (C + kSC - 1) / kSC;
  const int64_t tile = blockIdx.x;
  const int64_t p = tile / (tilesR * tilesC);
  const int r0 = static_cast<int>((tile / tilesC) % tilesR) * kSR;
  const int c0 = static_cast<int>(tile % tilesC) * kSC;
  const int64_t rowBase = static_cast<int64_t>(pattern.coordBlockRow[p]) * R + r0;
  const int64_t colBase = static_cast<int64_t>(pattern.coordBlockCol[p]) * C + c0;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  float acc[2][2] = {};
  for (int64_t m0 = 0; m0 < m; m0 += kSK) {
    for (int e = tid; e < kSK * kSR; e += 256) {
      int kk = e / kSR, rr = e % kSR;
      int64_t gm = m0 + kk;
      tileA[kk][rr] = (gm < m && r0 + rr < R) ? toFloat<T>(dy[gm * pattern.rows + rowBase + rr]) : 0.0f;
    }
    for (int e = tid; e < kSK * kSC; e += 256) {
      int kk = e / kSC, cc = e % kSC;
      int64_t gm = m0 + kk;
      tileB[kk][cc] = (gm < m && c0 + cc < C) ? toFloat<T>(x[gm * pattern.cols + colBase + cc]) : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kSK; ++kk) {
      float av[2] = {tileA[kk][ty], tileA[kk][ty + 16]};
      float bv[2] = {tileB[kk][tx], tileB[kk][tx + 16]};
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) acc[i][j] += av[i] * bv[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    int r = r0 + ty + 16 * i;
    if (r >= R) continue;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      int c = c0 + tx + 16 * j;
      if (c < C) dw[(p * R + r) * C + c] = fromFloat<T>(acc[i][j]);
    }
  }
}

// norms[p] = sqrt(sum of squares of block p), float32: one warp per block.
template <typename T>
__global__ void blockNormsKernel(const T* __restrict__ values, float* __restrict__ norms, int64_t nnzBlocks,
                                 int64_t blockSize) {
  int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;
  int lane = threadIdx.x & 31;
  int64_t warps = (int64_t)gridDim.x * blockDim.x / 32;
  for (int64_t p = warp; p < nnzBlocks; p += warps) {
    const T* block = values + p * blockSize;
    float sum = 0.0f;
    for (int64_t i = lane; i < blockSize; i += 32) {
      float v = toFloat<T>(block[i]);
      sum += v * v;
    }
    sum = warpSum(sum);
    if (lane == 0) norms[p] = sqrtf(sum);
  }
}

}  // namespace

void launchBsrLinear(DType dtype, const void* x, const void* values, const void* bias, void* y, int64_t m,
                     const BsrPatternView& pattern, cudaStream_t stream) {
  if (m == 0 || pattern.rows == 0) return;
  if (dtype == DType::Float32 && launchBsrLinearSimt(static_cast<const float*>(x), static_cast<const float*>(values),
                                                     static_cast<const float*>(bias), static_cast<float*>(y), m,
                                                     pattern, stream))
    return;
  int64_t chunks = static_cast<int64_t>(pattern.blockRows) * ((pattern.blockHeight + kTN - 1) / kTN);
  BS_REQUIRE(chunks <= INT32_MAX, "bsrLinear: too many output tiles");
  const int64_t element = static_cast<int64_t>(dtypeSize(dtype));
  // The token tiles ride in the grid's y (at most 65535 a launch): more tokens run as several launches.
  for (int64_t first = 0; first < m; first += kMaxLaunchTokens) {
    const int64_t count = std::min(kMaxLaunchTokens, m - first);
    dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>((count + kTM - 1) / kTM));
    const void* xFirst = static_cast<const char*>(x) + first * pattern.cols * element;
    void* yFirst = static_cast<char*>(y) + first * pattern.rows * element;
    BS_DISPATCH_FLOAT(dtype, T, bsrLinearKernel<T><<<grid, 256, 0, stream>>>(
                                    static_cast<const T*>(xFirst), static_cast<const T*>(values),
                                    static_cast<const T*>(bias), static_cast<T*>(yFirst), count, pattern));
    BS_LAUNCH_CHECK("bsrLinearKernel");
  }
}

void launchBsrMatmul(DType dtype, const void* dy, const void* values, void* dx, int64_t m,
                     const BsrPatternView& pattern, cudaStream_t stream) {
  if (m == 0 || pattern.cols == 0) return;
  if (dtype == DType::Float32 && launchBsrMatmulSimt(static_cast<const float*>(dy), static_cast<const float*>(values),
                                                     static_cast<float*>(dx), m, pattern, stream))
    return;
  int64_t chunks = static_cast<int64_t>(pattern.blockCols) * ((pattern.blockWidth + kTN - 1) / kTN);
  BS_REQUIRE(chunks <= INT32_MAX, "bsrMatmul: too many output tiles");
  const int64_t element = static_cast<int64_t>(dtypeSize(dtype));
  for (int64_t first = 0; first < m; first += kMaxLaunchTokens) {  // as launchBsrLinear
    const int64_t count = std::min(kMaxLaunchTokens, m - first);
    dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>((count + kTM - 1) / kTM));
    const void* dyFirst = static_cast<const char*>(dy) + first * pattern.rows * element;
    void* dxFirst = static_cast<char*>(dx) + first * pattern.cols * element;
    BS_DISPATCH_FLOAT(dtype, T, bsrMatmulKernel<T><<<grid, 256, 0, stream>>>(
                                    static_cast<const T*>(dyFirst), static_cast<const T*>(values),
                                    static_cast<T*>(dxFirst), count, pattern));
    BS_LAUNCH_CHECK("bsrMatmulKernel");
  }
}

void launchSampledMatmul(DType dtype, const void* dy, const void* x, void* dw, int64_t m,
                         const BsrPatternView& pattern, cudaStream_t stream) {
  int64_t blockSize = static_cast<int64_t>(pattern.blockHeight) * pattern.blockWidth;
  if (pattern.nnzBlocks == 0) return;
  if (m == 0) {
    launchZero(dtype, dw, pattern.nnzBlocks * blockSize, stream);
    return;
  }
  if (dtype == DType::Float32 && launchSampledMatmulSimt(static_cast<const float*>(dy), static_cast<const float*>(x),
                                                         static_cast<float*>(dw), m, pattern, stream))
    return;
  int64_t tiles = static_cast<int64_t>(pattern.nnzBlocks) * ((pattern.blockHeight + kSR - 1) / kSR) *
                  ((pattern.blockWidth + kSC - 1) / kSC);
  BS_REQUIRE(tiles <= INT32_MAX, "sampledMatmul: too many output tiles");
  BS_DISPATCH_FLOAT(dtype, T, sampledMatmulKernel<T><<<static_cast<unsigned>(tiles), 256, 0, stream>>>(
                                  static_cast<const T*>(dy), static_cast<const T*>(x), static_cast<T*>(dw), m, pattern));
  BS_LAUNCH_CHECK("sampledMatmulKernel");
}

namespace {

// Copies each stored block between the values ([nnzBlocks, R, C], contiguous) and its place in dense [rows, cols]:
// kToValues samples dense into values (the weight gradient's dense route), else scatters values into dense (the
// products' dense route). A CTA moves one block at a time, its threads over the block's rows in words of kVec
// elements (16 bytes where the rows and the pointers allow it), with 32-bit index math inside a block: one element per
// thread with 64-bit divisions (copyElementsKernel, below) took 12 us to sample a million values of 32x32 blocks.
template <typename T, int kVec, bool kToValues>
__global__ void copyBlocksKernel(const T* __restrict__ src, T* __restrict__ dst, BsrPatternView pattern) {
  using Word = Packed<T, kVec>;
  const int C = pattern.blockWidth;
  const int wordsPerRow = C / kVec, wordsPerBlock = pattern.blockHeight * wordsPerRow;
  const int64_t blockSize = static_cast<int64_t>(pattern.blockHeight) * C;
  for (int64_t k = blockIdx.x; k < pattern.nnzBlocks; k += gridDim.x) {
    const int64_t corner =
        static_cast<int64_t>(pattern.coordBlockRow[k]) * pattern.blockHeight * pattern.cols +
        static_cast<int64_t>(pattern.coordBlockCol[k]) * C;
    for (int j = threadIdx.x; j < wordsPerBlock; j += blockDim.x) {
      const int r = j / wordsPerRow, w = j - r * wordsPerRow;
      const int64_t denseAt = corner + r * pattern.cols + w * kVec, valuesAt = k * blockSize + static_cast<int64_t>(j) * kVec;
      if constexpr (kToValues)
        *reinterpret_cast<Word*>(dst + valuesAt) = *reinterpret_cast<const Word*>(src + denseAt);
      else
        *reinterpret_cast<Word*>(dst + denseAt) = *reinterpret_cast<const Word*>(src + valuesAt);
    }
  }
}

// The same one element per thread over all blocks: for blocks of fewer than 32 words (1x1, 2x3, ...), where a CTA per
// block would leave most of its warp idle and launch a CTA per few elements.
template <typename T, bool kToValues>
__global__ void copyElementsKernel(const T* __restrict__ src, T* __restrict__ dst, BsrPatternView pattern) {
  const int64_t R = pattern.blockHeight, C = pattern.blockWidth, blockSize = R * C;
  const int64_t total = static_cast<int64_t>(pattern.nnzBlocks) * blockSize;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = i / blockSize, r = (i % blockSize) / C, c = i % C;
    const int64_t denseAt = (pattern.coordBlockRow[k] * R + r) * pattern.cols + pattern.coordBlockCol[k] * C + c;
    if constexpr (kToValues) dst[i] = src[denseAt];
    else dst[denseAt] = src[i];
  }
}

template <typename T, bool kToValues>
void launchCopyBlocks(const T* src, T* dst, const BsrPatternView& pattern, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const bool aligned = reinterpret_cast<uintptr_t>(src) % 16 == 0 && reinterpret_cast<uintptr_t>(dst) % 16 == 0;
  const bool vector = aligned && pattern.blockWidth % kVec == 0 && pattern.cols % kVec == 0;
  const int64_t words = static_cast<int64_t>(pattern.blockHeight) * pattern.blockWidth / (vector ? kVec : 1);
  if (words < 32) {
    const int64_t total = static_cast<int64_t>(pattern.nnzBlocks) * pattern.blockHeight * pattern.blockWidth;
    copyElementsKernel<T, kToValues><<<gridFor(total), kThreads, 0, stream>>>(src, dst, pattern);
    return;
  }
  const int threads = static_cast<int>(std::min<int64_t>(kThreads, (words + 31) / 32 * 32));
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(pattern.nnzBlocks, int64_t{1} << 20));
  if (vector) copyBlocksKernel<T, kVec, kToValues><<<grid, threads, 0, stream>>>(src, dst, pattern);
  else copyBlocksKernel<T, 1, kToValues><<<grid, threads, 0, stream>>>(src, dst, pattern);
}

// The products' dense route in one pass: a CTA writes rowsPerCta rows of one block row's band of dense [rows, cols],
// each word the stored block's or zero, so each word of the scratch is written once. Filling the scratch with zeros and
// then copying the blocks over them wrote the stored blocks' words twice in two launches (2.2-2.6 + 3.3-4.2 us for a
// bfloat16 1024 x 4096 at density 0.5 on an H200). The CTA first lays its block row out in shared memory (each block
// column's entry in the values, or -1), so a word costs one shared read and, where stored, one load: a lookup through
// the row's entries in global memory before every store (three dependent loads) measured slower than the two passes.
// Word is the 16-byte vector (kElems elements) where the block width, the columns and both pointers allow it, else
// one element's bits. A thread loads its kScatterBandWordsPerThread words before it stores any: one word per thread
// in turn left each thread waiting on every load (6.8 us a scratch with four words each, the two passes 8.7).
constexpr int kScatterBandWordsPerThread = 2;
template <typename Word, int kElems>
__global__ void scatterBandKernel(const Word* __restrict__ values, Word* __restrict__ dense, BsrPatternView pattern,
                                  int rowsPerCta) {
  extern __shared__ int32_t entryOf[];  // [blockCols]
  const int blockRow = blockIdx.x;
  const int32_t first = pattern.blockRowPtr[blockRow], last = pattern.blockRowPtr[blockRow + 1];
  for (int c = threadIdx.x; c < pattern.blockCols; c += blockDim.x) entryOf[c] = -1;
  __syncthreads();
  for (int32_t p = first + threadIdx.x; p < last; p += blockDim.x) entryOf[pattern.blockColIdx[p]] = p;
  __syncthreads();
  const int R = pattern.blockHeight;
  const int r0 = blockIdx.y * rowsPerCta, rowsHere = min(rowsPerCta, R - r0);
  const int wordsPerRow = static_cast<int>(pattern.cols / kElems), wordsPerBlockRow = pattern.blockWidth / kElems;
  const int words = rowsHere * wordsPerRow;
  Word* out = dense + (static_cast<int64_t>(blockRow) * R + r0) * wordsPerRow;
  constexpr int kPer = kScatterBandWordsPerThread;
  for (int base = threadIdx.x; base < words; base += kPer * blockDim.x) {
    Word word[kPer];
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int i = base + u * blockDim.x;
      word[u] = Word{};
      if (i < words) {
        const int rr = i / wordsPerRow, w = i - rr * wordsPerRow;
        const int c = w / wordsPerBlockRow, inBlock = w - c * wordsPerBlockRow;
        const int32_t p = entryOf[c];
        if (p >= 0) word[u] = values[(static_cast<int64_t>(p) * R + r0 + rr) * wordsPerBlockRow + inBlock];
      }
    }
#pragma unroll
    for (int u = 0; u < kPer; ++u)
      if (base + u * blockDim.x < words) out[base + u * blockDim.x] = word[u];
  }
}

// The band kernel's limit: a block row's layout in shared memory (kScatterBandMaxBlockCols entries). A CTA takes
// whole rows, about kThreads x kScatterBandWordsPerThread words (at least one row).
constexpr int kScatterBandMaxBlockCols = 8192;

// Writes the scratch in one pass with scatterBandKernel; false (nothing launched) where the pattern is past its limits.
bool launchScatterBand(const void* values, void* dense, int64_t elementBytes, const BsrPatternView& pattern,
                       cudaStream_t stream) {
  const int64_t elems = 16 / elementBytes;
  const bool vector = reinterpret_cast<uintptr_t>(values) % 16 == 0 && reinterpret_cast<uintptr_t>(dense) % 16 == 0 &&
                      pattern.blockWidth % elems == 0 && pattern.cols % elems == 0;
  const int64_t wordsPerRow = vector ? pattern.cols / elems : pattern.cols;
  if (pattern.blockCols > kScatterBandMaxBlockCols || wordsPerRow > (int64_t{1} << 24)) return false;
  const int64_t R = pattern.blockHeight;
  const int64_t rowsPerCta = std::clamp<int64_t>(int64_t{kThreads} * kScatterBandWordsPerThread / wordsPerRow, 1, R);
  const int64_t bands = (R + rowsPerCta - 1) / rowsPerCta;
  if (bands > 65535) return false;
  const dim3 grid(static_cast<unsigned>(pattern.blockRows), static_cast<unsigned>(bands));
  const size_t shared = static_cast<size_t>(pattern.blockCols) * sizeof(int32_t);
  const int rows = static_cast<int>(rowsPerCta);
  if (vector && elementBytes == 4)
    scatterBandKernel<uint4, 4><<<grid, kThreads, shared, stream>>>(static_cast<const uint4*>(values), static_cast<uint4*>(dense), pattern, rows);
  else if (vector)
    scatterBandKernel<uint4, 8><<<grid, kThreads, shared, stream>>>(static_cast<const uint4*>(values), static_cast<uint4*>(dense), pattern, rows);
  else if (elementBytes == 4)
    scatterBandKernel<uint32_t, 1><<<grid, kThreads, shared, stream>>>(static_cast<const uint32_t*>(values), static_cast<uint32_t*>(dense), pattern, rows);
  else
    scatterBandKernel<uint16_t, 1><<<grid, kThreads, shared, stream>>>(static_cast<const uint16_t*>(values), static_cast<uint16_t*>(dense), pattern, rows);
  return true;
}

DenseSampledMode denseSampledMode = DenseSampledMode::Auto;
DenseProductMode denseProductMode = DenseProductMode::Auto;

}  // namespace

void launchSampleBlocks(DType dtype, const void* dense, void* values, const BsrPatternView& pattern, cudaStream_t stream) {
  if (pattern.nnzBlocks == 0 || pattern.blockHeight == 0 || pattern.blockWidth == 0) return;
  BS_DISPATCH_FLOAT(dtype, T, (launchCopyBlocks<T, true>(static_cast<const T*>(dense), static_cast<T*>(values), pattern, stream)));
  BS_LAUNCH_CHECK("copyBlocksKernel (sample)");
}

DenseSampledMode setDenseSampledMode(DenseSampledMode mode) {
  const DenseSampledMode previous = denseSampledMode;
  denseSampledMode = mode;
  return previous;
}

DenseSampledMode getDenseSampledMode() { return denseSampledMode; }

void launchScatterBlocks(DType dtype, const void* values, void* dense, const BsrPatternView& pattern, cudaStream_t stream) {
  if (pattern.rows == 0 || pattern.cols == 0) return;
  if (launchScatterBand(values, dense, dtypeSize(dtype), pattern, stream)) {
    BS_LAUNCH_CHECK("scatterBandKernel");
    return;
  }
  launchZero(dtype, dense, pattern.rows * pattern.cols, stream);
  if (pattern.nnzBlocks == 0 || pattern.blockHeight == 0 || pattern.blockWidth == 0) return;
  BS_DISPATCH_FLOAT(dtype, T, (launchCopyBlocks<T, false>(static_cast<const T*>(values), static_cast<T*>(dense), pattern, stream)));
  BS_LAUNCH_CHECK("copyBlocksKernel (scatter)");
}

DenseProductMode setDenseProductMode(DenseProductMode mode) {
  const DenseProductMode previous = denseProductMode;
  denseProductMode = mode;
  return previous;
}

DenseProductMode getDenseProductMode() { return denseProductMode; }

namespace {

double patternDensity(const BsrPatternView& pattern) {
  return static_cast<double>(pattern.nnzBlocks) / (static_cast<double>(pattern.blockRows) * pattern.blockCols);
}

// A rectangle that runs the wgmma tiles on this device (64x128 and 128x64 on sm_90a).
bool wgmmaRectangle(DType dtype, const BsrPatternView& pattern) {
  return pattern.blockHeight != pattern.blockWidth &&
         tc::wgmmaShapeAllProducts(pattern.blockHeight, pattern.blockWidth) && tcPathFor(dtype, pattern) == TcPath::Wgmma;
}

// The density from which the dense route runs bsrLinear and bsrMatmul faster than the block kernels, in
// float16/bfloat16 (above 1: never). The route costs the GEMM at cuBLAS's rate plus the scatter (a pass over W's dense
// size), so it wins where the density is above the block kernels' rate on the non-zero work as a fraction of cuBLAS's,
// with some margin for the scatter. Measured on an H200 (docs/kernels.md, "bsrLinear and bsrMatmul through the dense
// GEMM"; `tc_bench --mode time`, the FFN step with `ffn.ts --dense-products`):
// - 32x32: the kernels reach 0.17-0.27 of cuBLAS; the FFN step gained at density 0.5 and 8192 tokens, lost at 2048.
//   Measured again (2026-12-01, the route forced each way, the copy of 16-byte words): at 8192 tokens the route lost 5%
//   at density 0.2 and won 8% at 0.3; at 2048 tokens the block kernels won at both (7-17%): from 0.25 with 8192 tokens.
//   Measured at 2048 and 4096 tokens (2026-12-02, densities 0.3-0.5, 1024 <-> 4096 and 768 <-> 3072): at 4096 the route
//   won 6-8% at 0.5 and lost 0-2% at 0.4 (from 0.45 there); at 2048 it lost or tied everywhere. Measured at 1000-3000
//   tokens (2026-12-03, 768 <-> 3072, 1024 <-> 4096 and 1536 <-> 6144): at 3000 the route won 6-22% at 0.5, at 2048
//   it won on the widest only, at 1000 it tied or won by up to 16%: from 0.45 with 2560 tokens (never below). With the
//   scratch zeroed in 16-byte words (2026-12-03, later) it won at 1000 and 2048 tokens too at 0.5 (6-33%): from 0.45
//   with 1000 tokens. At 128-768 tokens (2026-12-03, last; the scratch written in one pass) it won at 0.5 and 0.4
//   nearly everywhere, lost at 0.3 on the widest: from 0.35 with 128 tokens. At 72-120 tokens (2026-12-03) it won on
//   768 <-> 3072 at 0.25-0.5 and lost 5% at 0.35 on 1536 <-> 6144 (tied at 0.5): from 0.35 with 65 tokens. Timed per
//   product at 96-512 tokens on wider layers too (2048 x 8192 both ways: the route up to 1.9x slower at 0.35), the band
//   now takes a model of both times (denseRouteWinsFewTokens). Since the X-resident tile runs from 128 tokens
//   (2026-12-03, last), a product on it takes the route from 0.35 below 8192 tokens, and mma.sync's tile from 0.25 at
//   1000 tokens and more (kernels.h, kDenseProductMinDensity32Mid: measured each way at 128-4096 tokens).
// - 64x64, 128x128 (wgmma tiles, half of cuBLAS's rate and more): never; nor 64x128 and 128x64 where they run the
//   wgmma tiles too (tc::wgmmaShapeSupported on sm_90a: the tiles of the square of their output's width).
// - The other shapes of the mma.sync tiles (tc::mmaShapeSupported) reach 0.07-0.11 of cuBLAS at 16x16, 0.09-0.19 with a
//   side of 16, 0.10-0.34 with sides 32 and 64, 0.12-0.35 with 64 and 128. The FFN step at 8192 tokens (1024 <-> 4096)
//   put the break-even between 0.1 and 0.25 with a side of 16 (below 0.1 at 16x16), at 0.25-0.5 with sides 32 and 64
//   (0.25 even at 32x64, the block kernels 6% faster at 64x32) and 64 and 128 (the route 5% faster at 0.5).
// - Any other shape runs the simple kernel, 0.01-0.02 of cuBLAS: the dense route from a low density, once the product
//   is large enough that its device time outweighs a GEMM call's host cost (kDenseSampledMinFlops), past decoding
//   sizes. At 8x32 and density 0.1 the FFN step took 0.64 ms through it against 4.96 ms on the simple kernel.
// 32x32 with kDenseProductFewTokens to kDenseProductMidTokens tokens on mma.sync's tile: whether the route's modelled
// time is below the tile's (kernels.h).
bool denseRouteWinsFewTokens(tc::Op op, const BsrPatternView& pattern, int64_t m) {
  const double tileUs = kFewTileUs + kFewTileUsPerBlock * tcMmaTileBlocksPerSm(op, pattern, m);
  const double weights = static_cast<double>(pattern.rows) * static_cast<double>(pattern.cols) / 1e6;
  const double routeUs = kFewRouteUs + kFewRouteUsPerMWeight * weights * (1.0 + static_cast<double>(m) / kFewRouteTokens);
  return routeUs < tileUs;
}

double denseProductBreakEven(tc::Op op, DType dtype, const BsrPatternView& pattern, int64_t m) {
  const int rows = pattern.blockHeight, cols = pattern.blockWidth;
  // 32x32 here only below kDenseProductFewTokens (from there denseProductWins decides it by the tile the product runs
  // on); 64x64 and 128x128 run the wgmma tiles: never.
  if (rows == cols && (rows == 32 || rows == 64 || rows == 128)) return 2.0;
  if (wgmmaRectangle(dtype, pattern)) return 2.0;
  if (tc::mmaShapeSupported(rows, cols)) {
    if (m < kDenseProductShapeMinTokens) return 2.0;
    const int side = std::min(rows, cols);
    return rows == 16 && cols == 16 ? 0.08 : side == 16 ? 0.15 : side == 32 ? 0.3 : 0.4;
  }
  // A decoding-sized call (up to 64 tokens) keeps the simple kernel, which reads only the stored blocks where the route
  // writes and reads W's whole dense size (not measured either way there).
  if (m <= 64 || 2.0 * static_cast<double>(m) * pattern.rows * pattern.cols < kDenseSampledMinFlops) return 2.0;
  return kDenseProductMinDensitySimple;
}

}  // namespace

bool denseProductWins(tc::Op op, DType dtype, const BsrPatternView& pattern, int64_t m, bool haveDenseGemm) {
  if (!haveDenseGemm || m == 0 || pattern.nnzBlocks == 0) return false;
  if (denseProductMode != DenseProductMode::Auto) return denseProductMode == DenseProductMode::Always;
  // float32 stays on the exact block kernels; few tokens stay on the decoding and tile kernels, which read only the
  // stored blocks where the dense GEMM would read all of W.
  if (dtype == DType::Float32 || !denseSampledFits(dtype, pattern)) return false;
  // Within half a block of the break-even counts as at it: a pattern drawn at a density holds the nearest whole
  // number of blocks, which may fall a fraction of a block short (0.35 of 768 x 3072 in 32x32 blocks is 806 of 2304).
  const double grid = static_cast<double>(pattern.blockRows) * pattern.blockCols;
  const double density = (pattern.nnzBlocks + 0.5) / grid;
  if (pattern.blockHeight == 32 && pattern.blockWidth == 32 && m >= kDenseProductFewTokens) {
    // 32x32 by the tile the product runs on (its rule evaluated once): the X-resident tile's break-even, mma.sync's, or
    // with few tokens on mma.sync's tile a model of both routes' times, not a density.
    const bool xResident = tcTakesXResident(op, dtype, pattern, m);
    if (m >= kDenseProductMinTokens)
      return density >= (xResident ? kDenseProductMinDensity32XResident : kDenseProductMinDensity32);
    if (xResident) return density >= kDenseProductMinDensity32XResidentMid;
    if (m < kDenseProductMidTokens) return denseRouteWinsFewTokens(op, pattern, m);
    return density >= kDenseProductMinDensity32Mid;
  }
  return density >= denseProductBreakEven(op, dtype, pattern, m);
}

bool denseSampledFits(DType dtype, const BsrPatternView& pattern) {
  // The dense scratch [rows, cols] must stay modest next to the tensors themselves.
  return pattern.rows * pattern.cols * static_cast<int64_t>(dtypeSize(dtype)) <= (int64_t{512} << 20);
}

bool denseSampledWins(DType dtype, const BsrPatternView& pattern, int64_t m, bool haveDenseGemm) {
  if (!haveDenseGemm || m == 0 || pattern.nnzBlocks == 0) return false;
  if (denseSampledMode != DenseSampledMode::Auto) return denseSampledMode == DenseSampledMode::Always;
  // float32 stays on the exact block kernels (TF32 only when the user allows it there).
  if (dtype == DType::Float32) return false;
  if (!denseSampledFits(dtype, pattern)) return false;
  if (2.0 * static_cast<double>(m) * pattern.rows * pattern.cols < kDenseSampledMinFlops) return false;
  // Dense GEMM work is 1/density times the sampled work, at the GEMM's rate, so the block kernels win while the
  // density is below their rate on the non-zero work as a fraction of the GEMM's. That fraction grows with the
  // block and with the tokens (fewer token splits, longer reductions per block); measured on an H200 at layer
  // widths 1024-8192 (docs/kernels.md, "The weight gradient through the dense GEMM"): 0.11-0.18 at 32x32,
  // 0.17-0.18 at 64x64 with 2048 tokens and 0.26-0.40 with 4096 or more, 0.3-0.4 at 128x128 with 2048 tokens and
  // 0.42-0.74 with more. The other shapes of the mma.sync tiles (tc::mmaShapeSupported) reach 0.05-0.10 at 16x16,
  // 0.06-0.18 with a side of 16, and 0.06-0.25 with sides of 32 and more, much as 32x32 does. Any other shape runs the
  // simple kernel, far slower: dense wins above 0.05.
  // 64x128 and 128x64 on the wgmma path (sm_90a) run the dW tile of 128 rows of blocks at 0.38-0.60 of cuBLAS at
  // density 0.5 and 0.28-0.37 at 0.25 (2048 and 8192 tokens); in the FFN step at 8192 tokens the block kernels were
  // faster at both densities (0.567 against 0.611 ms at 64x128, density 0.5): dense from 0.6, or 0.5 below 4096 tokens.
  // The squares' rules were measured again with the block copy of 16-byte words (2026-12-01, the FFN step with the
  // route forced each way, 2048 and 8192 tokens; `tc_bench --ops sampled` at 768-8192 wide, 2048-16384 tokens):
  // 128x128's dW tile reaches 0.42-0.75 of cuBLAS at densities 0.5-0.65, and the step was 10-11% faster on the block
  // kernels at density 0.5 and 1-3% slower at 0.65-0.8, at either token count: dense from 0.6 with 2048 tokens or
  // more. 64x64 reaches 0.25-0.38 with 2048 tokens: there the step was 5% faster on the block kernels at density 0.25,
  // tied at 0.35, and 8% faster on the route at 0.5: dense from 0.33 with 2048 tokens or more, as from 4096. Below
  // 2048 tokens, and where the squares run mma.sync's tile (no wgmma: Ampere), the older measurements stand.
  const bool square = pattern.blockHeight == pattern.blockWidth;
  const int block = pattern.blockHeight;
  const bool manyTokens = m >= 4096;
  // On wgmma: 64x64, 128x128 and the rectangles with wgmma tiles for every product (tcPathFor).
  const bool onWgmma = tcPathFor(dtype, pattern) == TcPath::Wgmma;
  const bool wgmmaSquare = square && onWgmma && m >= 2048;
  double breakEven = 0.05;
  if (square && block == 32) breakEven = manyTokens ? 0.18 : 0.12;
  // 32x32 where the patch tile takes dW (sm_90a, kPatchPairMinTokens tokens and more, densities in its band): it beat
  // the route there (docs/kernels.md, "dW's patch tile fed by bulk copies"), so the route from its band's top.
  if (square && block == 32 && tcTakesPatchDw(dtype, pattern, m)) breakEven = tc::kPatchPairMaxDensity;
  if (square && block == 64) breakEven = wgmmaSquare || manyTokens ? 0.33 : 0.18;
  if (square && block == 128) breakEven = wgmmaSquare ? 0.6 : manyTokens ? 0.5 : 0.35;
  if (!square && onWgmma) breakEven = manyTokens ? 0.6 : 0.5;
  else if (!square && tc::mmaShapeSupported(pattern.blockHeight, pattern.blockWidth))
    breakEven = pattern.blockHeight == 16 && pattern.blockWidth == 16        ? 0.05
                : std::min(pattern.blockHeight, pattern.blockWidth) == 16 ? 0.1
                : manyTokens                                              ? 0.18
                                                                          : 0.12;
  return patternDensity(pattern) >= breakEven;
}

void launchBlockNorms(DType dtype, const void* values, float* norms, int64_t nnzBlocks, int64_t blockSize,
                      cudaStream_t stream) {
  if (nnzBlocks == 0) return;
  BS_DISPATCH_FLOAT(dtype, T, blockNormsKernel<T><<<gridFor(nnzBlocks * 32), kThreads, 0, stream>>>(
                                  static_cast<const T*>(values), norms, nnzBlocks, blockSize));
  BS_LAUNCH_CHECK("blockNormsKernel");
}

}  // namespace bs
