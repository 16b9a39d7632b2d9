// Dense batched matmul C[b] = op(A[b]) op(B[b]): cuBLAS where it is installed (loaded at run time), else a shared-memory
// tiled kernel (also used when cuBLAS is switched off, so both paths stay tested).
#include "../device.h"
#include "../kernels.h"
#include "dtype.cuh"

#include "../cublas.h"
#include "../memory.h"

#include <algorithm>
#include <map>
#include <optional>
#include <tuple>

namespace bs {

namespace {

constexpr int kTileM = 64, kTileN = 64, kTileK = 16;
// A launch's grid y (row tiles) and z (matrices of the batch) at most.
constexpr int64_t kMaxGridYZ = 65535;

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

// ---- Linear through cuBLASLt: one plan (descriptor, layouts, the heuristic's algorithm) per shape and alignment

// The largest power of two (up to 256) dividing the address: what the heuristic may assume of an operand.
uint32_t alignmentOf(const void* pointer) {
  const auto address = reinterpret_cast<uintptr_t>(pointer);
  uint32_t alignment = 1;
  while (alignment < 256 && address % (alignment * 2) == 0) alignment *= 2;
  return alignment;
}

struct LinearKey {
  DType dtype;
  int64_t m, n, k;
  int64_t ldY;  // y's (and the residual's) row pitch in elements (runLinear's split parts may differ from n)
  bool bias, residual, gelu;  // gelu: the GELU epilogue, the pre-activation written as its auxiliary output
  uint32_t alignX, alignW, alignC, alignY, alignBias, alignAux;
  // How x and w lie in memory: x [m, k] (or [k, m] with transX), w [n, k] (or [k, n] without transW). A Linear's
  // y = x w^T is the default; launchMatmul's products set both (its A is x, its B is w).
  bool transX = false, transW = true;
  bool operator<(const LinearKey& o) const {
    return std::tie(dtype, m, n, k, ldY, bias, residual, gelu, alignX, alignW, alignC, alignY, alignBias, alignAux, transX,
                    transW) < std::tie(o.dtype, o.m, o.n, o.k, o.ldY, o.bias, o.residual, o.gelu, o.alignX, o.alignW,
                                       o.alignC, o.alignY, o.alignBias, o.alignAux, o.transX, o.transW);
  }
};

struct LinearPlan {
  cublas::lt::MatmulDesc desc = nullptr;
  cublas::lt::MatrixLayout w = nullptr, x = nullptr, y = nullptr;
  cublas::lt::HeuristicResult result{};
  bool found = false;
};

// Plans live for the process; past this many shapes the cache starts over (a few hundred bytes each).
constexpr size_t kMaxLinearPlans = 1024;
// The most workspace an algorithm may ask for (split-K's partial sums); taken from the allocator per call.
constexpr uint64_t kLinearMaxWorkspace = 32ull << 20;

std::map<LinearKey, LinearPlan>& linearPlans() {
  static std::map<LinearKey, LinearPlan> plans;
  return plans;
}

void destroyPlan(LinearPlan& plan) {
  if (plan.desc != nullptr) cublas::lt::descDestroy(plan.desc);
  for (auto layout : {plan.w, plan.x, plan.y})
    if (layout != nullptr) cublas::lt::layoutDestroy(layout);
  plan = LinearPlan{};
}

void checkLt(cublas::Status status, const char* call) {
  if (status != cublas::kSuccess)
    throw Error(status == cublas::kAllocFailed ? ErrorKind::OutOfMemory : ErrorKind::Cuda,
                std::string(call) + " failed: " + cublas::lt::statusString(status));
}

// Row-major y [m, n] = x [m, k] w^T is column-major y^T [n, m] = (w as k x n)^T (x as k x m): A = w transposed,
// B = x, C = D = y, the bias along D's rows (n). A w stored [k, n] (not transposed) is column-major n x k, taken as it
// is; an x stored [k, m] is column-major m x k, taken transposed.
LinearPlan makePlan(cublas::lt::Handle handle, const LinearKey& key, const void* bias, void* aux) {
  namespace lt = cublas::lt;
  LinearPlan plan;
  const cudaDataType_t type = cudaType(key.dtype);
  try {
    checkLt(lt::descCreate(&plan.desc, cublas::kCompute32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    const int32_t transA = key.transW ? cublas::kOpT : cublas::kOpN, transB = key.transX ? cublas::kOpT : cublas::kOpN;
    const uint32_t epilogue = key.gelu ? (key.bias ? lt::kEpilogueGeluAuxBias : lt::kEpilogueGeluAux)
                                       : (key.bias ? lt::kEpilogueBias : lt::kEpilogueDefault);
    checkLt(lt::descSetAttribute(plan.desc, lt::kDescTransA, &transA, sizeof transA), "cublasLtMatmulDescSetAttribute");
    checkLt(lt::descSetAttribute(plan.desc, lt::kDescTransB, &transB, sizeof transB), "cublasLtMatmulDescSetAttribute");
    checkLt(lt::descSetAttribute(plan.desc, lt::kDescEpilogue, &epilogue, sizeof epilogue), "cublasLtMatmulDescSetAttribute");
    // The heuristic reads the bias pointer's alignment from it.
    if (key.bias) checkLt(lt::descSetAttribute(plan.desc, lt::kDescBiasPointer, &bias, sizeof bias), "cublasLtMatmulDescSetAttribute");
    if (key.gelu) {
      const int64_t auxLd = key.n;
      checkLt(lt::descSetAttribute(plan.desc, lt::kDescAuxPointer, &aux, sizeof aux), "cublasLtMatmulDescSetAttribute");
      checkLt(lt::descSetAttribute(plan.desc, lt::kDescAuxLd, &auxLd, sizeof auxLd), "cublasLtMatmulDescSetAttribute");
    }
    const uint64_t m = static_cast<uint64_t>(key.m), n = static_cast<uint64_t>(key.n), k = static_cast<uint64_t>(key.k);
    if (key.transW)
      checkLt(lt::layoutCreate(&plan.w, type, k, n, key.k), "cublasLtMatrixLayoutCreate");
    else
      checkLt(lt::layoutCreate(&plan.w, type, n, k, key.n), "cublasLtMatrixLayoutCreate");
    if (key.transX)
      checkLt(lt::layoutCreate(&plan.x, type, m, k, key.m), "cublasLtMatrixLayoutCreate");
    else
      checkLt(lt::layoutCreate(&plan.x, type, k, m, key.k), "cublasLtMatrixLayoutCreate");
    checkLt(lt::layoutCreate(&plan.y, type, static_cast<uint64_t>(key.n), static_cast<uint64_t>(key.m), key.ldY), "cublasLtMatrixLayoutCreate");
    lt::Preference preference = nullptr;
    checkLt(lt::preferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
    const uint32_t alignments[4] = {key.alignW, key.alignX, key.alignC, key.alignY};
    const int attributes[4] = {lt::kPrefMinAlignmentA, lt::kPrefMinAlignmentB, lt::kPrefMinAlignmentC, lt::kPrefMinAlignmentD};
    cublas::Status status = lt::preferenceSetAttribute(preference, lt::kPrefMaxWorkspaceBytes, &kLinearMaxWorkspace,
                                                       sizeof kLinearMaxWorkspace);
    for (int i = 0; i < 4 && status == cublas::kSuccess; ++i)
      status = lt::preferenceSetAttribute(preference, attributes[i], &alignments[i], sizeof alignments[i]);
    int returned = 0;
    if (status == cublas::kSuccess)
      status = lt::algoGetHeuristic(handle, plan.desc, plan.w, plan.x, plan.y, plan.y, preference, 1, &plan.result, &returned);
    lt::preferenceDestroy(preference);
    // No algorithm (CUBLAS_STATUS_NOT_SUPPORTED, or none returned) is an answer, not an error: the caller composes.
    plan.found = status == cublas::kSuccess && returned > 0 && plan.result.state == cublas::kSuccess;
  } catch (...) {
    destroyPlan(plan);
    throw;
  }
  return plan;
}

}  // namespace

namespace {

// The plan for one product shape and its operands' alignments, made on first use; null when cuBLASLt has no algorithm.
LinearPlan* planFor(cublas::lt::Handle handle, DType dtype, const void* x, const void* w, const void* bias, const void* c,
                    const void* out, void* pre, bool residual, int64_t m, int64_t n, int64_t k, int64_t ldY,
                    bool transX = false, bool transW = true) {
  const LinearKey key{dtype,
                      m,
                      n,
                      k,
                      ldY,
                      bias != nullptr,
                      residual,
                      pre != nullptr,
                      alignmentOf(x),
                      alignmentOf(w),
                      alignmentOf(c),
                      alignmentOf(out),
                      bias != nullptr ? alignmentOf(bias) : 0,
                      pre != nullptr ? alignmentOf(pre) : 0,
                      transX,
                      transW};
  auto& plans = linearPlans();
  auto found = plans.find(key);
  if (found == plans.end()) {
    if (plans.size() >= kMaxLinearPlans) {
      for (auto& entry : plans) destroyPlan(entry.second);
      plans.clear();
    }
    found = plans.emplace(key, makePlan(handle, key, bias, pre)).first;
  }
  return found->second.found ? &found->second : nullptr;
}

// Runs a plan: out = epilogue(x w^T + bias) + beta c, pre = the GELU epilogue's input.
void runPlan(cublas::lt::Handle handle, LinearPlan& plan, const void* x, const void* w, const void* bias, const void* c,
             void* out, void* pre, float beta, cudaStream_t stream) {
  namespace lt = cublas::lt;
  if (bias != nullptr)
    checkLt(lt::descSetAttribute(plan.desc, lt::kDescBiasPointer, &bias, sizeof bias), "cublasLtMatmulDescSetAttribute");
  if (pre != nullptr)
    checkLt(lt::descSetAttribute(plan.desc, lt::kDescAuxPointer, &pre, sizeof pre), "cublasLtMatmulDescSetAttribute");
  const float alpha = 1.0f;
  const size_t workspaceBytes = plan.result.workspaceSize;
  std::optional<Scratch> workspace;
  if (workspaceBytes > 0) workspace.emplace(workspaceBytes);
  checkLt(lt::matmul(handle, plan.desc, &alpha, w, plan.w, x, plan.x, &beta, c, plan.y, out, plan.y, &plan.result.algo,
                     workspaceBytes > 0 ? workspace->as<void>() : nullptr, workspaceBytes, stream),
          "cublasLtMatmul");
}

// cuBLASLt's fast kernels want y's width (the rows of y^T, its contiguous dimension) a multiple of 16 bytes. Past
// that it falls to kernels 3-8x slower where the product is bound by its multiply-adds (H200, bf16, captured;
// results/gpu-nvidia-h200/linear-widths.md): [8, 768] x [50257, 768]^T 107 us against 28 at 50264 columns,
// [2048, 768] x [50257, 768]^T 1681 against 225, [2048, 4096] x [50257, 4096]^T 8.8 ms against 1.1 (PyTorch's
// F.linear the same). Padding y's pitch alone does not help (nor does it for cublasGemmEx: bench/lt_probe.cu --gemm).
// So such a product runs as two: the widest aligned head of the columns, and the last few columns (1 to 7 in half
// types) apart. With one row both write y directly; with more, y's pitch is not aligned either, so both write an
// aligned-pitch scratch of at most kMaxPitchScratch and one strided copy moves it to y, a chunk of rows at a time
// (there is then no residual: it would be read at y's pitch). The copy moves y twice more, so the split pays where
// the slow kernel's lost multiply-adds cost more than that: K of kMinSplitDepth or more (at K = 64 the product is
// bound by writing y and the one call measured faster: 234 against 288 us at 2048 x 50257), and kMinSplitWork
// multiply-adds or more (below, a second launch and the copy cost more than the slow kernel loses).
constexpr int64_t kMaxPitchScratch = 64ll << 20;
constexpr int64_t kMinSplitWork = 1ll << 25;
constexpr int64_t kMinSplitDepth = 128;

// One cuBLASLt product, or the two above: y = epilogue(x w^T + bias) + residual, pre = the GELU epilogue's input
// (gelu only). False, launching nothing, when cuBLASLt is missing or has no algorithm.
bool runLinear(DType dtype, const void* x, const void* w, const void* bias, const void* residual, void* y, void* pre,
               int64_t m, int64_t n, int64_t k, cudaStream_t stream) {
  auto handle = static_cast<cublas::lt::Handle>(cublasLtHandle());
  if (handle == nullptr || m <= 0 || n <= 0 || k <= 0 || m > INT32_MAX || n > INT32_MAX || k > INT32_MAX) return false;
  const float beta = residual != nullptr ? 1.0f : 0.0f;
  const int64_t element = static_cast<int64_t>(dtypeSize(dtype));
  const int64_t vector = 16 / element;
  const int64_t tail = n % vector, head = n - tail;
  const int64_t padded = head + (tail > 0 ? vector : 0);
  const bool split = pre == nullptr && tail > 0 && head > 0 && (residual == nullptr || m == 1) && k >= kMinSplitDepth &&
                     static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) >= kMinSplitWork;
  auto oneCall = [&] {
    const void* c = residual != nullptr ? residual : y;
    LinearPlan* plan = planFor(handle, dtype, x, w, bias, c, y, pre, residual != nullptr, m, n, k, n);
    if (plan == nullptr) return false;
    runPlan(handle, *plan, x, w, bias, c, y, pre, beta, stream);
    return true;
  };
  if (!split) return oneCall();
  const auto* w8 = static_cast<const char*>(w);
  const void* wTail = w8 + head * k * element;
  const void* biasTail = bias != nullptr ? static_cast<const char*>(bias) + head * element : nullptr;
  if (m == 1) {  // both parts write y directly; each part's pitch is its width (never used)
    const void* cHead = residual != nullptr ? residual : y;
    const void* cTail = residual != nullptr ? static_cast<const char*>(residual) + head * element
                                            : static_cast<const void*>(static_cast<char*>(y) + head * element);
    void* yTail = static_cast<char*>(y) + head * element;
    LinearPlan* headPlan = planFor(handle, dtype, x, w, bias, cHead, y, nullptr, residual != nullptr, 1, head, k, head);
    LinearPlan* tailPlan = planFor(handle, dtype, x, wTail, biasTail, cTail, yTail, nullptr, residual != nullptr, 1, tail, k, tail);
    if (headPlan == nullptr || tailPlan == nullptr) return false;
    runPlan(handle, *headPlan, x, w, bias, cHead, y, nullptr, beta, stream);
    runPlan(handle, *tailPlan, x, wTail, biasTail, cTail, yTail, nullptr, beta, stream);
    return true;
  }
  // Chunks of a multiple of 128 rows start 256-byte multiples into x, so each chunk's x has x's alignment and the
  // plans checked below are the ones that run. (Chunks under 128 rows, for widths past 256K columns, may start at
  // another alignment; should one find no plan, false makes the caller's composed route write all of y.)
  int64_t chunkRows = std::max<int64_t>(1, std::min<int64_t>(m, kMaxPitchScratch / (padded * element)));
  if (chunkRows < m && chunkRows > 128) chunkRows -= chunkRows % 128;
  std::optional<Scratch> pitched;
  try {
    pitched.emplace(static_cast<size_t>(chunkRows * padded * element));
  } catch (const Error& error) {
    if (error.kind != ErrorKind::OutOfMemory) throw;
    return oneCall();  // no room for the scratch: the one call, slower, needs none
  }
  auto* out = pitched->as<char>();
  void* outTail = out + head * element;
  // Both plans first (at most two row counts: the full chunk and the last), so that nothing launches if one is missing.
  const int64_t lastRows = m - (m - 1) / chunkRows * chunkRows;
  for (const int64_t rows : {chunkRows, lastRows})
    if (planFor(handle, dtype, x, w, bias, out, out, nullptr, false, rows, head, k, padded) == nullptr ||
        planFor(handle, dtype, x, wTail, biasTail, outTail, outTail, nullptr, false, rows, tail, k, padded) == nullptr)
      return false;
  for (int64_t row = 0; row < m; row += chunkRows) {
    const int64_t rows = std::min(chunkRows, m - row);
    const void* xRows = static_cast<const char*>(x) + row * k * element;
    LinearPlan* headPlan = planFor(handle, dtype, xRows, w, bias, out, out, nullptr, false, rows, head, k, padded);
    LinearPlan* tailPlan = planFor(handle, dtype, xRows, wTail, biasTail, outTail, outTail, nullptr, false, rows, tail, k, padded);
    if (headPlan == nullptr || tailPlan == nullptr) return false;  // see above: only for chunks under 128 rows
    runPlan(handle, *headPlan, xRows, w, bias, out, out, nullptr, 0.0f, stream);
    runPlan(handle, *tailPlan, xRows, wTail, biasTail, outTail, outTail, nullptr, 0.0f, stream);
    BS_CUDA_CHECK(cudaMemcpy2DAsync(static_cast<char*>(y) + row * n * element, static_cast<size_t>(n * element), out,
                                    static_cast<size_t>(padded * element), static_cast<size_t>(n * element),
                                    static_cast<size_t>(rows), cudaMemcpyDeviceToDevice, stream));
  }
  return true;
}

}  // namespace

bool launchLinear(DType dtype, const void* x, const void* w, const void* bias, const void* residual, void* y, int64_t m,
                  int64_t n, int64_t k, cudaStream_t stream) {
  return runLinear(dtype, x, w, bias, residual, y, nullptr, m, n, k, stream);
}

bool launchLinearActivation(DType dtype, const void* x, const void* w, const void* bias, void* y, void* pre, int64_t m,
                            int64_t n, int64_t k, Activation activation, cudaStream_t stream) {
  // cuBLASLt's GELU is the tanh form; its auxiliary output's leading dimension must be a multiple of 8.
  if (activation != Activation::GeluTanh || n % 8 != 0 || pre == nullptr) return false;
  return runLinear(dtype, x, w, bias, nullptr, y, pre, m, n, k, stream);
}

namespace {

// cublasGemmEx in half types falls to kernels 3-9x slower when a pitch (A's, B's or C's rows) is not a multiple of 16
// bytes, also with the pitches alone padded (H200, bf16, bench/lt_probe.cu --gemm): a dense layer of GPT-2's 50257
// outputs at 2048 tokens and 768 inputs took 1671 / 1132 / 1102 us for y, dX and dW against 213 / 185 / 189 at a
// padded width. So such a product (one matrix, not batched) runs on copies padded to aligned sizes: each operand whose
// layout changes is copied into an aligned scratch with zeros in the padding (zeros along K add nothing; padded rows
// of M and N give outputs that are dropped), the GEMM runs there, and C's [m, n] corner is copied back. The copies
// move the operands and C once more, so this runs where the product's lost multiply-adds outweigh them: at least
// kMinPadWork multiply-adds, and kPadWorkPerByte per byte copied (the slow kernels ran at 90-180 TFLOP/s against
// ~700 padded, a copy at ~3 TB/s: break-even near 30 multiply-adds a byte, taken at twice that). Where the copies do
// not fit in memory the one call runs.
constexpr double kMinPadWork = static_cast<double>(1ll << 25);
constexpr double kPadWorkPerByte = 64.0;

struct PaddedOperand {
  int64_t rows, cols, paddedRows, paddedCols;
  bool copied() const { return rows != paddedRows || cols != paddedCols; }
  int64_t bytes(int64_t element) const { return copied() ? paddedRows * paddedCols * element : 0; }
};

// Copies a [rows, cols] matrix into scratch at [paddedRows, paddedCols], zeros in the padding.
void copyPadded(const PaddedOperand& shape, const void* from, void* to, int64_t element, cudaStream_t stream) {
  auto* out = static_cast<char*>(to);
  const size_t pitch = static_cast<size_t>(shape.paddedCols * element), width = static_cast<size_t>(shape.cols * element);
  if (shape.paddedCols > shape.cols)
    BS_CUDA_CHECK(cudaMemset2DAsync(out + width, pitch, 0, pitch - width, static_cast<size_t>(shape.rows), stream));
  if (shape.paddedRows > shape.rows)
    BS_CUDA_CHECK(cudaMemsetAsync(out + shape.rows * pitch, 0, (shape.paddedRows - shape.rows) * pitch, stream));
  BS_CUDA_CHECK(cudaMemcpy2DAsync(out, pitch, from, width, width, static_cast<size_t>(shape.rows), cudaMemcpyDeviceToDevice,
                                  stream));
}

// The padded route above; false (nothing launched) where it does not apply or would not pay.
bool matmulPadded(DType dtype, const void* a, const void* b, void* c, int64_t m, int64_t n, int64_t k, bool transA,
                  bool transB, cudaStream_t stream) {
  if (dtype != DType::BFloat16 && dtype != DType::Float16) return false;
  const int64_t element = static_cast<int64_t>(dtypeSize(dtype)), vector = 16 / element;
  auto up = [&](int64_t size) { return (size + vector - 1) / vector * vector; };
  // A dimension is padded where it is some matrix's pitch: M is A's when A is transposed, K A's when it is not and
  // B's when B is, N C's always (and B's when B is not transposed).
  const int64_t mp = transA ? up(m) : m, np = up(n), kp = (!transA || transB) ? up(k) : k;
  const PaddedOperand shapeA = transA ? PaddedOperand{k, m, kp, mp} : PaddedOperand{m, k, mp, kp};
  const PaddedOperand shapeB = transB ? PaddedOperand{n, k, np, kp} : PaddedOperand{k, n, kp, np};
  const PaddedOperand shapeC{m, n, mp, np};
  if (!shapeA.copied() && !shapeB.copied() && !shapeC.copied()) return false;
  const double work = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const double copiedBytes = static_cast<double>(shapeA.bytes(element) + shapeB.bytes(element) + shapeC.bytes(element));
  if (work < kMinPadWork || work < kPadWorkPerByte * copiedBytes) return false;
  // All scratch first: where it does not fit, the one call (slower, no memory of its own) runs instead of failing.
  std::optional<Scratch> paddedA, paddedB, paddedC;
  try {
    if (shapeA.copied()) paddedA.emplace(static_cast<size_t>(shapeA.bytes(element)));
    if (shapeB.copied()) paddedB.emplace(static_cast<size_t>(shapeB.bytes(element)));
    if (shapeC.copied()) paddedC.emplace(static_cast<size_t>(shapeC.bytes(element)));
  } catch (const Error& error) {
    if (error.kind != ErrorKind::OutOfMemory) throw;
    return false;
  }
  const void *aUsed = a, *bUsed = b;
  void* cUsed = c;
  if (paddedA) {
    copyPadded(shapeA, a, paddedA->as<void>(), element, stream);
    aUsed = paddedA->as<void>();
  }
  if (paddedB) {
    copyPadded(shapeB, b, paddedB->as<void>(), element, stream);
    bUsed = paddedB->as<void>();
  }
  if (paddedC) cUsed = paddedC->as<void>();
  matmulCublas(dtype, aUsed, bUsed, cUsed, 1, mp, np, kp, transA, transB, 0, 0, mp * np);
  if (paddedC)
    BS_CUDA_CHECK(cudaMemcpy2DAsync(c, static_cast<size_t>(n * element), cUsed, static_cast<size_t>(np * element),
                                    static_cast<size_t>(n * element), static_cast<size_t>(m), cudaMemcpyDeviceToDevice,
                                    stream));
  return true;
}

// One matrix's product through cuBLASLt with the plan cached per shape, transposes and alignments (as a Linear's), so
// that a call pays no heuristic and no descriptor: what cublasGemmStridedBatchedEx does inside on every call. False,
// launching nothing, where cuBLASLt is missing or has no algorithm; BLOCKSPARSE_CUDA_MATMUL_LT=0 turns it off.
bool matmulLt(DType dtype, const void* a, const void* b, void* c, int64_t m, int64_t n, int64_t k, bool transA,
              bool transB, cudaStream_t stream) {
  static const bool enabled = environmentSwitch("BLOCKSPARSE_CUDA_MATMUL_LT") != 0;
  if (!enabled || m > INT32_MAX || n > INT32_MAX || k > INT32_MAX) return false;
  auto handle = static_cast<cublas::lt::Handle>(cublasLtHandle());
  if (handle == nullptr) return false;
  LinearPlan* plan = planFor(handle, dtype, a, b, nullptr, c, c, nullptr, false, m, n, k, n, transA, transB);
  if (plan == nullptr) return false;
  runPlan(handle, *plan, a, b, nullptr, c, c, nullptr, 0.0f, stream);
  return true;
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
    if (batch == 1 && matmulPadded(dtype, a, b, c, m, n, k, transA, transB, stream)) return;
    if (batch == 1 && matmulLt(dtype, a, b, c, m, n, k, transA, transB, stream)) return;
    matmulCublas(dtype, a, b, c, batch, m, n, k, transA, transB, strideA, strideB, strideC);
    return;
  }
  const int64_t tilesM = (m + kTileM - 1) / kTileM;
  BS_REQUIRE(tilesM <= kMaxGridYZ, "matmul: " + std::to_string(m) + " rows are more than the tiled kernel's " +
                                       std::to_string(kMaxGridYZ * kTileM) + " (without cuBLAS)");
  // The batch rides in the grid's z, at most kMaxGridYZ matrices a launch: more run as several launches.
  const int64_t element = static_cast<int64_t>(dtypeSize(dtype));
  for (int64_t first = 0; first < batch; first += kMaxGridYZ) {
    const int64_t count = std::min<int64_t>(kMaxGridYZ, batch - first);
    dim3 grid(static_cast<unsigned>((n + kTileN - 1) / kTileN), static_cast<unsigned>(tilesM),
              static_cast<unsigned>(count));
    const void* aFirst = static_cast<const char*>(a) + first * strideA * element;
    const void* bFirst = static_cast<const char*>(b) + first * strideB * element;
    void* cFirst = static_cast<char*>(c) + first * strideC * element;
    BS_DISPATCH_FLOAT(dtype, T, matmulTiledKernel<T><<<grid, 256, 0, stream>>>(
                                    static_cast<const T*>(aFirst), static_cast<const T*>(bFirst),
                                    static_cast<T*>(cFirst), m, n, k, transA, transB, strideA, strideB, strideC));
    BS_LAUNCH_CHECK("matmulTiledKernel");
  }
}

void launchLinearBackward(DType dtype, const void* dy, const void* x, const void* w, void* dx, void* dw, int64_t m,
                          int64_t n, int64_t k, cudaStream_t stream) {
  // dy [m, n] is both products' A: dx = dy w (its rows the reduction) and dw = dy^T x (its rows the output's columns).
  // With n off the aligned pitch each product alone would copy dy (matmulPadded); here it is copied once, with w's rows
  // padded to match (zeros: they add nothing to dx), and dw's first n rows taken from an [np, k] product.
  const int64_t element = static_cast<int64_t>(dtypeSize(dtype)), vector = 16 / element;
  const int64_t np = (n + vector - 1) / vector * vector;
  const double work = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const bool share = cublasEnabled() && (dtype == DType::BFloat16 || dtype == DType::Float16) && np != n && m > 0 &&
                     k > 0 && work >= kMinPadWork && work >= kPadWorkPerByte * static_cast<double>(m * np * element);
  if (share) {
    std::optional<Scratch> paddedDy, paddedW, paddedDw;
    try {
      paddedDy.emplace(static_cast<size_t>(m * np * element));
      paddedW.emplace(static_cast<size_t>(np * k * element));
      paddedDw.emplace(static_cast<size_t>(np * k * element));
    } catch (const Error& error) {
      if (error.kind != ErrorKind::OutOfMemory) throw;
      paddedDy.reset();
    }
    if (paddedDy) {
      copyPadded(PaddedOperand{m, n, m, np}, dy, paddedDy->as<void>(), element, stream);
      copyPadded(PaddedOperand{n, k, np, k}, w, paddedW->as<void>(), element, stream);
      launchMatmul(dtype, paddedDy->as<void>(), paddedW->as<void>(), dx, 1, m, k, np, false, false, 0, 0, stream);
      launchMatmul(dtype, paddedDy->as<void>(), x, paddedDw->as<void>(), 1, np, k, m, true, false, 0, 0, stream);
      BS_CUDA_CHECK(cudaMemcpyAsync(dw, paddedDw->as<void>(), static_cast<size_t>(n * k * element),
                                    cudaMemcpyDeviceToDevice, stream));
      return;
    }
  }
  launchMatmul(dtype, dy, w, dx, 1, m, k, n, false, false, 0, 0, stream);
  launchMatmul(dtype, dy, x, dw, 1, n, k, m, true, false, 0, 0, stream);
}

}  // namespace bs
