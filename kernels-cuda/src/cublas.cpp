#include "cublas.h"

#include <dlfcn.h>

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

template <typename Fn>
bool bind(void* library, const char* name, Fn& out) {
  out = reinterpret_cast<Fn>(dlsym(library, name));
  return out != nullptr;
}
}  // namespace

bool load() {
  if (api.tried) return api.loaded;
  api.tried = true;
  std::string tried;
  for (const char* name : {"libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"}) {
    tried += std::string(tried.empty() ? "" : ", ") + name;
    void* library = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) continue;
    if (bind(library, "cublasCreate_v2", api.create) && bind(library, "cublasDestroy_v2", api.destroy) &&
        bind(library, "cublasSetStream_v2", api.setStream) && bind(library, "cublasGemmStridedBatchedEx", api.gemm) &&
        bind(library, "cublasGetStatusString", api.statusString)) {
      api.loaded = true;
      api.description = name;
      return true;
    }
    tried += " (lacks a function the addon calls)";
    dlclose(library);
  }
  api.description = "cuBLAS not found (tried " + tried + ")";
  return false;
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

}  // namespace bs::cublas
