// Dense batched matmul C[b] = op(A[b]) op(B[b]): cuBLAS where it is installed (loaded at run time), else a shared-memory
// tiled kernel (also used when cuBLAS is switched off, so both paths stay tested).
#include "../device.h"
#include "../kernels.h"
#include "dtype.cuh"

#include "../cublas.h"

namespace bs {

namespace {

constexpr int kTileM = 64, kTileN = 64, kTileK = 16;

// 256 threads, each computing a 4x4 subset of the 64x64 tile (rows ty + 16i, cols tx + 16j).
template <typename T>
__global__ void __launch_bounds__(256) matmulTiledKernel(const T* __restrict__ a, const T* __restrict__ b,
                                                         T* __restrict__ c, int64_t m, int64_t n, int64_t k,
                                                         bool transA, bool transB, int64_t strideA, int64_t strideB,
                                                         int64_t strideC) {
  __shared__ float tileA[kTileK][kTileM + 4];
  __shared__ float tileB[kTileK][kTileN + 4];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t batch = blockIdx.z;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTileM, col0 = static_cast<int64_t>(blockIdx.x) * kTileN;
  a += batch * strideA;
  b += batch * strideB;
  c += batch * strideC;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < k; k0 += kTileK) {
    // Each operand is read along its contiguous axis so that a warp's loads coalesce.
    for (int e = tid; e < kTileM * kTileK; e += 256) {
      int mm, kk;
      if (transA) { kk = e / kTileM; mm = e % kTileM; } else { mm = e / kTileK; kk = e % kTileK; }
      int64_t gm = row0 + mm, gk = k0 + kk;
      float value = 0.0f;
      if (gm < m && gk < k) value = toFloat<T>(transA ? a[gk * m + gm] : a[gm * k + gk]);
      tileA[kk][mm] = value;
    }
    for (int e = tid; e < kTileN * kTileK; e += 256) {
      int nn, kk;
      if (transB) { nn = e / kTileK; kk = e % kTileK; } else { kk = e / kTileN; nn = e % kTileN; }
      int64_t gn = col0 + nn, gk = k0 + kk;
      float value = 0.0f;
      if (gn < n && gk < k) value = toFloat<T>(transB ? b[gn * k + gk] : b[gk * n + gn]);
      tileB[kk][nn] = value;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      float av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = tileA[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = tileB[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    int64_t gm = row0 + ty + 16 * i;
    if (gm >= m) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      int64_t gn = col0 + tx + 16 * j;
      if (gn < n) c[gm * n + gn] = fromFloat<T>(acc[i][j]);
    }
  }
}

cudaDataType_t cudaType(DType dtype) {
  switch (dtype) {
    case DType::Float16: return CUDA_R_16F;
    case DType::BFloat16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
  }
}

void checkCublas(cublas::Status status, const char* call) {
  if (status != cublas::kSuccess)
    throw Error(status == cublas::kAllocFailed ? ErrorKind::OutOfMemory : ErrorKind::Cuda,
                std::string(call) + " failed: " + cublas::statusString(status));
}

// Row-major C = A B is column-major C^T = B^T A^T: swap the operands and the roles of m and n.
void matmulCublas(DType dtype, const void* a, const void* b, void* c, int64_t batch, int64_t m, int64_t n, int64_t k,
                  bool transA, bool transB, int64_t strideA, int64_t strideB, int64_t strideC) {
  BS_REQUIRE(m <= INT32_MAX && n <= INT32_MAX && k <= INT32_MAX && batch <= INT32_MAX,
          "matmul: dimensions exceed cuBLAS's 32-bit limits");
  const float alpha = 1.0f, beta = 0.0f;
  cudaDataType_t type = cudaType(dtype);
  int lda = static_cast<int>(transA ? m : k);
  int ldb = static_cast<int>(transB ? k : n);
  checkCublas(cublas::gemmStridedBatchedEx(cublasHandle(), transB ? cublas::kOpT : cublas::kOpN,
                                           transA ? cublas::kOpT : cublas::kOpN, static_cast<int>(n), static_cast<int>(m),
                                           static_cast<int>(k), &alpha, b, type, ldb, strideB, a, type, lda, strideA, &beta,
                                           c, type, static_cast<int>(n), strideC, static_cast<int>(batch),
                                           cublas::kCompute32F, cublas::kGemmDefault),
              "cublasGemmStridedBatchedEx");
}

}  // namespace

void launchMatmul(DType dtype, const void* a, const void* b, void* c, int64_t batch, int64_t m, int64_t n, int64_t k,
                  bool transA, bool transB, int64_t strideA, int64_t strideB, cudaStream_t stream) {
  const int64_t strideC = m * n;  // the output is contiguous
  if (batch * m * n == 0) return;
  if (k == 0) {
    launchZero(dtype, c, batch * m * n, stream);  // an empty sum
    return;
  }
  if (cublasEnabled()) {
    matmulCublas(dtype, a, b, c, batch, m, n, k, transA, transB, strideA, strideB, strideC);
    return;
  }
  BS_REQUIRE(batch <= 65535, "matmul: batch count above 65535 is not supported by the tiled kernel");
  dim3 grid(static_cast<unsigned>((n + kTileN - 1) / kTileN), static_cast<unsigned>((m + kTileM - 1) / kTileM),
            static_cast<unsigned>(batch));
  BS_REQUIRE(grid.y <= 65535, "matmul: too many rows for the tiled kernel");
  BS_DISPATCH_FLOAT(dtype, T, matmulTiledKernel<T><<<grid, 256, 0, stream>>>(
                                  static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(c), m, n, k,
                                  transA, transB, strideA, strideB, strideC));
  BS_LAUNCH_CHECK("matmulTiledKernel");
}

}  // namespace bs
