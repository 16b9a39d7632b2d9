// lt_probe: what cuBLASLt offers for `linear`'s product at a grid of shapes, and what each candidate costs.
//
// For y [m, n] = x [m, k] w^T (+ bias), laid out exactly as launchLinear lays it out (kernels/matmul.cu: A = w
// transposed, B = x, D = y^T, bias along D's rows), it asks the heuristic for up to 8 algorithms under a few
// workspace limits, times each candidate and cublasGemmEx (the plain GEMM, no bias) on the same operands, and prints
// one line per shape: the GEMM, the heuristic's first choice under each limit, the fastest candidate, and the
// configuration (tile, stages, split-K, swizzle) of the first choice and of the fastest. Plain CUDA C++; cuBLAS is
// opened at run time (src/cublas.cpp), so it builds without cuBLAS and reads "n/a" there.
//
// With --gemm it times cublasGemmEx instead for the three products of a linear layer (forward y = x w^T, dX = dY w,
// dW = dY^T x) at each width as given, with only the pitches of y / dY padded to 16 bytes, and with the width padded:
// what a width off 16-byte alignment costs each product and which of the two paddings takes the cost away.
//
//   lt_probe [--rows 64,512,2048,8192] [--features 64,768,4096] [--widths 1008,4104,50264] [--bias 0,1]
//            [--iterations 20] [--gemm]
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "check_cuda.h"
#include "cublas.h"

namespace {

using namespace bs;
namespace lt = cublas::lt;


std::vector<long> parseList(const char* text) {
  std::vector<long> values;
  for (const char* p = text; *p != '\0';) {
    char* end = nullptr;
    values.push_back(std::strtol(p, &end, 10));
    p = *end == ',' ? end + 1 : end;
    if (end == p && *p != '\0') break;
  }
  return values;
}

// cublasLtMatmulAlgoConfigGetAttribute, found beside the functions src/cublas.cpp binds (not needed by the addon).
using ConfigGetFn = cublas::Status (*)(const lt::Algo*, int, void*, size_t, size_t*);
ConfigGetFn configGet() {
  static ConfigGetFn fn = [] {
    for (const char* name : {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11", "libcublasLt.so"}) {
      void* library = dlopen(name, RTLD_NOW | RTLD_NOLOAD);
      if (library == nullptr) continue;
      return reinterpret_cast<ConfigGetFn>(dlsym(library, "cublasLtMatmulAlgoConfigGetAttribute"));
    }
    return static_cast<ConfigGetFn>(nullptr);
  }();
  return fn;
}

// "tile T stages S splitK K swizzle W" from the algorithm's configuration (the raw cublasLt enum values).
std::string describeAlgo(const lt::HeuristicResult& result) {
  ConfigGetFn get = configGet();
  if (get == nullptr) return "?";
  // CUBLASLT_ALGO_CONFIG_ID 0 (int32), TILE_ID 1, SPLITK_NUM 2, REDUCTION_SCHEME 3, CTA_SWIZZLING 4, STAGES_ID 6
  // (uint32), CLUSTER_SHAPE_ID 8 (uint16).
  auto read32 = [&](int attribute) {
    uint32_t value = 0;
    size_t written = 0;
    return get(&result.algo, attribute, &value, sizeof value, &written) == cublas::kSuccess ? static_cast<long>(value) : -1L;
  };
  uint16_t cluster = 0;
  size_t written = 0;
  const long clusterId = get(&result.algo, 8, &cluster, sizeof cluster, &written) == cublas::kSuccess ? cluster : -1;
  char text[160];
  std::snprintf(text, sizeof text, "id%ld tile%ld st%ld sk%ld red%ld sw%ld cl%ld ws%zuK", read32(0), read32(1), read32(6),
                read32(2), read32(3), read32(4), clusterId, result.workspaceSize >> 10);
  return text;
}

struct Operands {
  void *x, *w, *y, *bias, *workspace;
  size_t workspaceBytes;
};

template <typename Fn>
double timeUs(Fn&& fn, int iterations) {
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  CHECK_CUDA(cudaEventRecord(start));
  for (int i = 0; i < iterations; ++i) fn();
  CHECK_CUDA(cudaEventRecord(stop));
  CHECK_CUDA(cudaEventSynchronize(stop));
  float ms = 0;
  CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  return 1000.0 * ms / iterations;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<long> rows{64, 512, 2048, 8192}, features{64, 768, 4096}, widths{1008, 4104, 50264}, biases{0, 1};
  int iterations = 20;
  bool gemmMode = false;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--gemm") {
      gemmMode = true;
      --i;
      continue;
    }
    if (i + 1 >= argc) break;
    if (flag == "--rows") rows = parseList(argv[i + 1]);
    else if (flag == "--features") features = parseList(argv[i + 1]);
    else if (flag == "--widths") widths = parseList(argv[i + 1]);
    else if (flag == "--bias") biases = parseList(argv[i + 1]);
    else if (flag == "--iterations") iterations = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (!cublas::load() || !lt::load()) {
    std::printf("cuBLAS/cuBLASLt not found: n/a (%s; %s)\n", cublas::describe().c_str(), lt::describe().c_str());
    return 0;
  }
  cublas::Handle blas = nullptr;
  lt::Handle handle = nullptr;
  if (cublas::create(&blas) != cublas::kSuccess || lt::create(&handle) != cublas::kSuccess) {
    std::fprintf(stderr, "handle creation failed\n");
    return 1;
  }
  const long maxM = *std::max_element(rows.begin(), rows.end()), maxK = *std::max_element(features.begin(), features.end()),
             maxN = (*std::max_element(widths.begin(), widths.end()) + 7) / 8 * 8;
  Operands ops{};
  ops.workspaceBytes = 32ull << 20;
  CHECK_CUDA(cudaMalloc(&ops.x, maxM * maxK * 2));
  CHECK_CUDA(cudaMalloc(&ops.w, maxN * maxK * 2));
  CHECK_CUDA(cudaMalloc(&ops.y, maxM * maxN * 2));
  CHECK_CUDA(cudaMalloc(&ops.bias, maxN * 2));
  CHECK_CUDA(cudaMalloc(&ops.workspace, ops.workspaceBytes));
  CHECK_CUDA(cudaMemset(ops.x, 0x3c, maxM * maxK * 2));  // bf16 ~0.0115: finite values, no denormals
  CHECK_CUDA(cudaMemset(ops.w, 0x3c, maxN * maxK * 2));
  CHECK_CUDA(cudaMemset(ops.y, 0x3c, maxM * maxN * 2));
  CHECK_CUDA(cudaMemset(ops.bias, 0, maxN * 2));
  if (gemmMode) {
    const float alpha = 1.0f, beta = 0.0f;
    std::printf("m\tk\tn\tproduct\tas_is_us\tpitch_padded_us\twidth_padded_us\n");
    for (long m : rows)
      for (long k : features)
        for (long n : widths) {
          const long padded = (n + 7) / 8 * 8;
          double us[3][3];
          for (int variant = 0; variant < 3; ++variant) {
            const long width = variant == 2 ? padded : n, pitch = variant == 0 ? n : padded;
            auto gemm = [&](int product) {
              return timeUs(
                  [&] {
                    if (product == 0)  // y^T [width, m] = w (k x width)^T x (k x m), y's pitch `pitch`
                      cublas::gemmStridedBatchedEx(blas, cublas::kOpT, cublas::kOpN, width, m, k, &alpha, ops.w, CUDA_R_16BF, k, 0,
                                                   ops.x, CUDA_R_16BF, k, 0, &beta, ops.y, CUDA_R_16BF, pitch, 0, 1,
                                                   cublas::kCompute32F, cublas::kGemmDefault);
                    else if (product == 1)  // dX^T [k, m] = w^T (k x width) dY^T (width x m), dY's pitch `pitch`
                      cublas::gemmStridedBatchedEx(blas, cublas::kOpN, cublas::kOpN, k, m, width, &alpha, ops.w, CUDA_R_16BF, k, 0,
                                                   ops.y, CUDA_R_16BF, pitch, 0, &beta, ops.x, CUDA_R_16BF, k, 0, 1,
                                                   cublas::kCompute32F, cublas::kGemmDefault);
                    else  // dW^T [k, width] = x^T (k x m) dY (m x width), dY's pitch `pitch`
                      cublas::gemmStridedBatchedEx(blas, cublas::kOpN, cublas::kOpT, k, width, m, &alpha, ops.x, CUDA_R_16BF, k, 0,
                                                   ops.y, CUDA_R_16BF, pitch, 0, &beta, ops.w, CUDA_R_16BF, k, 0, 1,
                                                   cublas::kCompute32F, cublas::kGemmDefault);
                  },
                  iterations);
            };
            for (int product = 0; product < 3; ++product) us[product][variant] = gemm(product);
          }
          CHECK_CUDA(cudaGetLastError());
          const char* names[3] = {"forward", "dX", "dW"};
          for (int product = 0; product < 3; ++product)
            std::printf("%ld\t%ld\t%ld\t%s\t%.1f\t%.1f\t%.1f\n", m, k, n, names[product], us[product][0], us[product][1],
                        us[product][2]);
          std::fflush(stdout);
        }
    CHECK_CUDA(cudaDeviceSynchronize());
    return 0;
  }
  const uint64_t limits[3] = {0, 4ull << 20, 32ull << 20};
  std::printf("m\tk\tn\tbias\tgemmEx_us\tlt_ws0_us\tlt_ws4M_us\tlt_ws32M_us\tbest_us\tbest_index\tcandidates\tfirst\tbest\n");
  for (long bias : biases)
    for (long m : rows)
      for (long k : features)
        for (long n : widths) {
          const float alpha = 1.0f, beta = 0.0f;
          double gemmUs = -1;
          if (bias == 0)
            gemmUs = timeUs(
                [&] {
                  cublas::gemmStridedBatchedEx(blas, cublas::kOpT, cublas::kOpN, n, m, k, &alpha, ops.w, CUDA_R_16BF, k, 0, ops.x,
                                               CUDA_R_16BF, k, 0, &beta, ops.y, CUDA_R_16BF, n, 0, 1, cublas::kCompute32F,
                                               cublas::kGemmDefault);
                },
                iterations);
          lt::MatmulDesc desc = nullptr;
          lt::MatrixLayout a = nullptr, b = nullptr, d = nullptr;
          lt::descCreate(&desc, cublas::kCompute32F, CUDA_R_32F);
          const int32_t transA = cublas::kOpT, transB = cublas::kOpN;
          const uint32_t epilogue = bias ? lt::kEpilogueBias : lt::kEpilogueDefault;
          lt::descSetAttribute(desc, lt::kDescTransA, &transA, sizeof transA);
          lt::descSetAttribute(desc, lt::kDescTransB, &transB, sizeof transB);
          lt::descSetAttribute(desc, lt::kDescEpilogue, &epilogue, sizeof epilogue);
          if (bias) lt::descSetAttribute(desc, lt::kDescBiasPointer, &ops.bias, sizeof ops.bias);
          lt::layoutCreate(&a, CUDA_R_16BF, k, n, k);
          lt::layoutCreate(&b, CUDA_R_16BF, k, m, k);
          lt::layoutCreate(&d, CUDA_R_16BF, n, m, n);
          double firstUs[3] = {-1, -1, -1}, bestUs = -1;
          int bestIndex = -1, count = 0;
          lt::HeuristicResult results[8]{}, firstResult{};
          for (int l = 0; l < 3; ++l) {
            lt::Preference preference = nullptr;
            lt::preferenceCreate(&preference);
            lt::preferenceSetAttribute(preference, lt::kPrefMaxWorkspaceBytes, &limits[l], sizeof limits[l]);
            const uint32_t alignment = 256;
            for (int attribute : {lt::kPrefMinAlignmentA, lt::kPrefMinAlignmentB, lt::kPrefMinAlignmentC, lt::kPrefMinAlignmentD})
              lt::preferenceSetAttribute(preference, attribute, &alignment, sizeof alignment);
            int returned = 0;
            const int requested = l == 2 ? 8 : 1;
            lt::HeuristicResult found[8]{};
            if (lt::algoGetHeuristic(handle, desc, a, b, d, d, preference, requested, found, &returned) != cublas::kSuccess)
              returned = 0;
            lt::preferenceDestroy(preference);
            auto run = [&](const lt::HeuristicResult& result) {
              return timeUs(
                  [&] {
                    lt::matmul(handle, desc, &alpha, ops.w, a, ops.x, b, &beta, ops.y, d, ops.y, d, &result.algo,
                               ops.workspace, result.workspaceSize, nullptr);
                  },
                  iterations);
            };
            if (returned > 0) firstUs[l] = run(found[0]);
            if (l == 2) {
              count = returned;
              for (int i = 0; i < returned; ++i) {
                results[i] = found[i];
                const double us = i == 0 ? firstUs[2] : run(found[i]);
                if (bestUs < 0 || us < bestUs) {
                  bestUs = us;
                  bestIndex = i;
                }
              }
              firstResult = found[0];
            }
          }
          CHECK_CUDA(cudaGetLastError());
          std::printf("%ld\t%ld\t%ld\t%ld\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%d\t%d\t%s\t%s\n", m, k, n, bias, gemmUs, firstUs[0],
                      firstUs[1], firstUs[2], bestUs, bestIndex, count, count > 0 ? describeAlgo(firstResult).c_str() : "-",
                      bestIndex >= 0 ? describeAlgo(results[bestIndex]).c_str() : "-");
          std::fflush(stdout);
          lt::descDestroy(desc);
          for (auto layout : {a, b, d}) lt::layoutDestroy(layout);
        }
  CHECK_CUDA(cudaDeviceSynchronize());
  return 0;
}
