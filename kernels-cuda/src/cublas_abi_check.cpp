// Build-time check of the cuBLAS and cuBLASLt ABI values that src/cublas.h declares by hand (the addon opens the
// libraries at run time and needs no header to build). Compiled only where the toolkit has cublasLt.h; a value that
// differs from the header fails the build here instead of a call at run time.
#include <cublasLt.h>

#include <cstddef>

#include "cublas.h"

namespace lt = bs::cublas::lt;

static_assert(bs::cublas::kOpN == CUBLAS_OP_N && bs::cublas::kOpT == CUBLAS_OP_T);
static_assert(bs::cublas::kCompute32F == CUBLAS_COMPUTE_32F);
static_assert(bs::cublas::kGemmDefault == CUBLAS_GEMM_DEFAULT);
static_assert(bs::cublas::kSuccess == CUBLAS_STATUS_SUCCESS && bs::cublas::kAllocFailed == CUBLAS_STATUS_ALLOC_FAILED);
static_assert(lt::kDescTransA == CUBLASLT_MATMUL_DESC_TRANSA && lt::kDescTransB == CUBLASLT_MATMUL_DESC_TRANSB);
static_assert(lt::kDescEpilogue == CUBLASLT_MATMUL_DESC_EPILOGUE);
static_assert(lt::kDescBiasPointer == CUBLASLT_MATMUL_DESC_BIAS_POINTER);
static_assert(lt::kDescAuxPointer == CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER);
static_assert(lt::kDescAuxLd == CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD);
static_assert(lt::kEpilogueDefault == CUBLASLT_EPILOGUE_DEFAULT && lt::kEpilogueBias == CUBLASLT_EPILOGUE_BIAS);
static_assert(lt::kEpilogueGeluAux == CUBLASLT_EPILOGUE_GELU_AUX && lt::kEpilogueGeluAuxBias == CUBLASLT_EPILOGUE_GELU_AUX_BIAS);
static_assert(lt::kPrefMaxWorkspaceBytes == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES);
static_assert(lt::kPrefMinAlignmentA == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES &&
              lt::kPrefMinAlignmentB == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES &&
              lt::kPrefMinAlignmentC == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES &&
              lt::kPrefMinAlignmentD == CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES);
static_assert(sizeof(lt::Algo) == sizeof(cublasLtMatmulAlgo_t));
static_assert(sizeof(lt::HeuristicResult) == sizeof(cublasLtMatmulHeuristicResult_t));
static_assert(offsetof(lt::HeuristicResult, workspaceSize) == offsetof(cublasLtMatmulHeuristicResult_t, workspaceSize));
static_assert(offsetof(lt::HeuristicResult, state) == offsetof(cublasLtMatmulHeuristicResult_t, state));
