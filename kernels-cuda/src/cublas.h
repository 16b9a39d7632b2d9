// cuBLAS loaded at run time (dlopen): one binary runs with cuBLAS where it is installed and with the
// built-in tiled matmul where it is not, and needs no cuBLAS to build. These are the few declarations
// of cublas_api.h the addon calls, with cuBLAS's ABI values (stable across cuBLAS 11-13).
#pragma once

#include <cuda_runtime.h>
#include <library_types.h>

#include <cstddef>
#include <cstdint>
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

// cuBLASLt (libcublasLt, loaded the same way): the matmul whose epilogue adds a bias, and C with beta = 1, in the
// GEMM's own kernel. Declarations and ABI values of cublasLt.h (stable across cuBLAS 11-13); when the toolkit has the
// header, src/cublas_abi_check.cpp asserts each against it at build time.
namespace lt {

using Handle = void*;
using MatmulDesc = void*;
using MatrixLayout = void*;
using Preference = void*;
struct Algo {
  uint64_t data[8];
};
struct HeuristicResult {
  Algo algo;
  size_t workspaceSize;
  Status state;
  float wavesCount;
  int reserved[4];
};

constexpr int kDescTransA = 3;          // CUBLASLT_MATMUL_DESC_TRANSA (int32_t)
constexpr int kDescTransB = 4;          // CUBLASLT_MATMUL_DESC_TRANSB (int32_t)
constexpr int kDescEpilogue = 7;        // CUBLASLT_MATMUL_DESC_EPILOGUE (uint32_t)
constexpr int kDescBiasPointer = 8;     // CUBLASLT_MATMUL_DESC_BIAS_POINTER (const void*)
constexpr int kDescAuxPointer = 11;     // CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER (void*)
constexpr int kDescAuxLd = 12;          // CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD (int64_t, a multiple of 8 for GELU)
constexpr uint32_t kEpilogueDefault = 1;  // CUBLASLT_EPILOGUE_DEFAULT
constexpr uint32_t kEpilogueBias = 4;     // CUBLASLT_EPILOGUE_BIAS: D = alpha A B + beta C + bias (per row of D)
constexpr uint32_t kEpilogueGeluAux = 160;      // CUBLASLT_EPILOGUE_GELU_AUX: aux = the product, D = GELU(aux)
constexpr uint32_t kEpilogueGeluAuxBias = 164;  // CUBLASLT_EPILOGUE_GELU_AUX_BIAS: aux = product + bias, D = GELU(aux)
constexpr int kPrefMaxWorkspaceBytes = 1;  // CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES (uint64_t)
constexpr int kPrefMinAlignmentA = 5;      // CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES (uint32_t); B, C, D follow
constexpr int kPrefMinAlignmentB = 6;
constexpr int kPrefMinAlignmentC = 7;
constexpr int kPrefMinAlignmentD = 8;

// Loads libcublasLt once (.so.13, .12, .11, then unversioned); false when none has every function used here.
bool load();
const std::string& describe();

Status create(Handle* handle);
Status destroy(Handle handle);
Status descCreate(MatmulDesc* desc, int computeType, cudaDataType_t scaleType);
Status descSetAttribute(MatmulDesc desc, int attribute, const void* value, size_t size);
Status descDestroy(MatmulDesc desc);
Status layoutCreate(MatrixLayout* layout, cudaDataType_t type, uint64_t rows, uint64_t cols, int64_t ld);
Status layoutDestroy(MatrixLayout layout);
Status preferenceCreate(Preference* preference);
Status preferenceSetAttribute(Preference preference, int attribute, const void* value, size_t size);
Status preferenceDestroy(Preference preference);
Status algoGetHeuristic(Handle handle, MatmulDesc desc, MatrixLayout a, MatrixLayout b, MatrixLayout c, MatrixLayout d,
                        Preference preference, int requested, HeuristicResult* results, int* returned);
Status matmul(Handle handle, MatmulDesc desc, const void* alpha, const void* a, MatrixLayout aLayout, const void* b,
              MatrixLayout bLayout, const void* beta, const void* c, MatrixLayout cLayout, void* d, MatrixLayout dLayout,
              const Algo* algo, void* workspace, size_t workspaceSize, cudaStream_t stream);
std::string statusString(Status status);

}  // namespace lt

}  // namespace bs::cublas
