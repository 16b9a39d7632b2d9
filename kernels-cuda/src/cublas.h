// cuBLAS loaded at run time (dlopen): one binary runs with cuBLAS where it is installed and with the
// built-in tiled matmul where it is not, and needs no cuBLAS to build. These are the few declarations
// of cublas_api.h the addon calls, with cuBLAS's ABI values (stable across cuBLAS 11-13).
#pragma once

#include <cuda_runtime.h>
#include <library_types.h>

#include <string>

namespace bs::cublas {

using Handle = void*;
using Status = int;
constexpr Status kSuccess = 0;
constexpr Status kAllocFailed = 3;
constexpr int kOpN = 0;
constexpr int kOpT = 1;
constexpr int kCompute32F = 68;   // CUBLAS_COMPUTE_32F
constexpr int kGemmDefault = -1;  // CUBLAS_GEMM_DEFAULT

// Loads the library once (libcublas.so.13, .12, .11, then libcublas.so); false when none loads.
bool load();
// The file that was loaded, or why none was (after load()).
const std::string& describe();

Status create(Handle* handle);
Status destroy(Handle handle);
Status setStream(Handle handle, cudaStream_t stream);
Status gemmStridedBatchedEx(Handle handle, int transa, int transb, int m, int n, int k, const void* alpha, const void* a,
                            cudaDataType_t aType, int lda, long long strideA, const void* b, cudaDataType_t bType, int ldb,
                            long long strideB, const void* beta, void* c, cudaDataType_t cType, int ldc, long long strideC,
                            int batchCount, int computeType, int algo);
std::string statusString(Status status);

}  // namespace bs::cublas
