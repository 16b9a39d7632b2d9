#include "cublas.h"

#include "dynamic_library.h"

namespace bs::cublas {

namespace {
using CreateFn = Status (*)(Handle*);
using DestroyFn = Status (*)(Handle);
using SetStreamFn = Status (*)(Handle, cudaStream_t);
using GemmFn = Status (*)(Handle, int, int, int, int, int, const void*, const void*, cudaDataType_t, int, long long,
                          const void*, cudaDataType_t, int, long long, const void*, void*, cudaDataType_t, int, long long,
                          int, int, int);
using StatusStringFn = const char* (*)(Status);

struct Api {
  bool tried = false;
  bool loaded = false;
  std::string description;
  CreateFn create = nullptr;
  DestroyFn destroy = nullptr;
  SetStreamFn setStream = nullptr;
  GemmFn gemm = nullptr;
  StatusStringFn statusString = nullptr;
};

Api api;

}  // namespace

bool load() {
  if (api.tried) return api.loaded;
  api.tried = true;
  std::string tried;
  const OpenedLibrary opened = openFirst(
      {"libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"},
      [](void* library) {
        return bindSymbol(library, "cublasCreate_v2", api.create) && bindSymbol(library, "cublasDestroy_v2", api.destroy) &&
               bindSymbol(library, "cublasSetStream_v2", api.setStream) &&
               bindSymbol(library, "cublasGemmStridedBatchedEx", api.gemm) &&
               bindSymbol(library, "cublasGetStatusString", api.statusString);
      },
      tried);
  api.loaded = opened.handle != nullptr;
  api.description = api.loaded ? opened.name : "cuBLAS not found (tried " + tried + ")";
  return api.loaded;
}

const std::string& describe() { return api.description; }

Status create(Handle* handle) { return api.create(handle); }
Status destroy(Handle handle) { return api.destroy(handle); }
Status setStream(Handle handle, cudaStream_t stream) { return api.setStream(handle, stream); }
Status gemmStridedBatchedEx(Handle handle, int transa, int transb, int m, int n, int k, const void* alpha, const void* a,
                            cudaDataType_t aType, int lda, long long strideA, const void* b, cudaDataType_t bType, int ldb,
                            long long strideB, const void* beta, void* c, cudaDataType_t cType, int ldc, long long strideC,
                            int batchCount, int computeType, int algo) {
  return api.gemm(handle, transa, transb, m, n, k, alpha, a, aType, lda, strideA, b, bType, ldb, strideB, beta, c, cType,
                  ldc, strideC, batchCount, computeType, algo);
}
std::string statusString(Status status) {
  const char* text = api.statusString ? api.statusString(status) : nullptr;
  return text ? text : "cuBLAS status " + std::to_string(status);
}

namespace lt {

namespace {
struct LtApi {
  bool tried = false;
  bool loaded = false;
  std::string description;
  Status (*create)(Handle*) = nullptr;
  Status (*destroy)(Handle) = nullptr;
  Status (*descCreate)(MatmulDesc*, int, cudaDataType_t) = nullptr;
  Status (*descSetAttribute)(MatmulDesc, int, const void*, size_t) = nullptr;
  Status (*descDestroy)(MatmulDesc) = nullptr;
  Status (*layoutCreate)(MatrixLayout*, cudaDataType_t, uint64_t, uint64_t, int64_t) = nullptr;
  Status (*layoutDestroy)(MatrixLayout) = nullptr;
  Status (*preferenceCreate)(Preference*) = nullptr;
  Status (*preferenceSetAttribute)(Preference, int, const void*, size_t) = nullptr;
  Status (*preferenceDestroy)(Preference) = nullptr;
  Status (*algoGetHeuristic)(Handle, MatmulDesc, MatrixLayout, MatrixLayout, MatrixLayout, MatrixLayout, Preference, int,
                             HeuristicResult*, int*) = nullptr;
  Status (*matmul)(Handle, MatmulDesc, const void*, const void*, MatrixLayout, const void*, MatrixLayout, const void*,
                   const void*, MatrixLayout, void*, MatrixLayout, const Algo*, void*, size_t, cudaStream_t) = nullptr;
  const char* (*statusString)(Status) = nullptr;
};

LtApi ltApi;
}  // namespace

bool load() {
  if (ltApi.tried) return ltApi.loaded;
  ltApi.tried = true;
  std::string tried;
  const OpenedLibrary opened = openFirst(
      {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11", "libcublasLt.so"},
      [](void* library) {
        return bindSymbol(library, "cublasLtCreate", ltApi.create) && bindSymbol(library, "cublasLtDestroy", ltApi.destroy) &&
               bindSymbol(library, "cublasLtMatmulDescCreate", ltApi.descCreate) &&
               bindSymbol(library, "cublasLtMatmulDescSetAttribute", ltApi.descSetAttribute) &&
               bindSymbol(library, "cublasLtMatmulDescDestroy", ltApi.descDestroy) &&
               bindSymbol(library, "cublasLtMatrixLayoutCreate", ltApi.layoutCreate) &&
               bindSymbol(library, "cublasLtMatrixLayoutDestroy", ltApi.layoutDestroy) &&
               bindSymbol(library, "cublasLtMatmulPreferenceCreate", ltApi.preferenceCreate) &&
               bindSymbol(library, "cublasLtMatmulPreferenceSetAttribute", ltApi.preferenceSetAttribute) &&
               bindSymbol(library, "cublasLtMatmulPreferenceDestroy", ltApi.preferenceDestroy) &&
               bindSymbol(library, "cublasLtMatmulAlgoGetHeuristic", ltApi.algoGetHeuristic) &&
               bindSymbol(library, "cublasLtMatmul", ltApi.matmul) &&
               bindSymbol(library, "cublasLtGetStatusString", ltApi.statusString);
      },
      tried);
  ltApi.loaded = opened.handle != nullptr;
  ltApi.description = ltApi.loaded ? opened.name : "cuBLASLt not found (tried " + tried + ")";
  return ltApi.loaded;
}

const std::string& describe() { return ltApi.description; }

Status create(Handle* handle) { return ltApi.create(handle); }
Status destroy(Handle handle) { return ltApi.destroy(handle); }
Status descCreate(MatmulDesc* desc, int computeType, cudaDataType_t scaleType) {
  return ltApi.descCreate(desc, computeType, scaleType);
}
Status descSetAttribute(MatmulDesc desc, int attribute, const void* value, size_t size) {
  return ltApi.descSetAttribute(desc, attribute, value, size);
}
Status descDestroy(MatmulDesc desc) { return ltApi.descDestroy(desc); }
Status layoutCreate(MatrixLayout* layout, cudaDataType_t type, uint64_t rows, uint64_t cols, int64_t ld) {
  return ltApi.layoutCreate(layout, type, rows, cols, ld);
}
Status layoutDestroy(MatrixLayout layout) { return ltApi.layoutDestroy(layout); }
Status preferenceCreate(Preference* preference) { return ltApi.preferenceCreate(preference); }
Status preferenceSetAttribute(Preference preference, int attribute, const void* value, size_t size) {
  return ltApi.preferenceSetAttribute(preference, attribute, value, size);
}
Status preferenceDestroy(Preference preference) { return ltApi.preferenceDestroy(preference); }
Status algoGetHeuristic(Handle handle, MatmulDesc desc, MatrixLayout a, MatrixLayout b, MatrixLayout c, MatrixLayout d,
                        Preference preference, int requested, HeuristicResult* results, int* returned) {
  return ltApi.algoGetHeuristic(handle, desc, a, b, c, d, preference, requested, results, returned);
}
Status matmul(Handle handle, MatmulDesc desc, const void* alpha, const void* a, MatrixLayout aLayout, const void* b,
              MatrixLayout bLayout, const void* beta, const void* c, MatrixLayout cLayout, void* d, MatrixLayout dLayout,
              const Algo* algo, void* workspace, size_t workspaceSize, cudaStream_t stream) {
  return ltApi.matmul(handle, desc, alpha, a, aLayout, b, bLayout, beta, c, cLayout, d, dLayout, algo, workspace,
                      workspaceSize, stream);
}
std::string statusString(Status status) {
  const char* text = ltApi.statusString ? ltApi.statusString(status) : nullptr;
  return text ? text : "cuBLASLt status " + std::to_string(status);
}

}  // namespace lt

}  // namespace bs::cublas
