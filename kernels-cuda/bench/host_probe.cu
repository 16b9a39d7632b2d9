// host_probe: what the tensor-core entry points cost the host per call, and the CUDA calls their launches make.
//
// For small products (whose kernels take a few microseconds, so the host is what bounds back-to-back calls) it
// issues N calls of tcBsrLinear, tcBsrMatmul and tcSampledMatmul with the default options and reports the host's
// time per call (issue only) and the wall time per call once the GPU has finished. Then the calls the wgmma launches
// make, each alone: cuTensorMapEncodeTiled, cudaFuncSetAttribute, cudaMallocAsync + cudaFreeAsync (in a warm pool
// and after a synchronize), an empty kernel's launch and cudaGetDevice.
//
//   host_probe [--calls 2000]
// Built beside tc_bench by bench/build.sh (from tc_bench's objects but its main).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "bench_pattern.h"
#include "check_cuda.h"
#include "device.h"
#include "tc/bsr_wgmma.cuh"
#include "tc/tc.h"

namespace {

using Clock = std::chrono::steady_clock;
double usSince(Clock::time_point start, int calls) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count() / calls;
}

__global__ void emptyKernel() {}

}  // namespace

int main(int argc, char** argv) {
  int calls = 2000;
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::strcmp(argv[i], "--calls") == 0) calls = std::atoi(argv[i + 1]);
  // The entry points' scratch comes from the addon's caching allocator, which needs the device started.
  bs::initDevice(0);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs; %d calls per row\n", prop.name, prop.multiProcessorCount, calls);
  {
    // What kernels/overlap.cuh's programmaticLaunchBuilt reads: programmatic launches need both versions at 90+.
    cudaFuncAttributes attributes{};
    CHECK_CUDA(cudaFuncGetAttributes(&attributes, emptyKernel));
    std::printf("an empty kernel's code: binaryVersion %d, ptxVersion %d\n\n", attributes.binaryVersion,
                attributes.ptxVersion);
  }
  const bs::DType dtype = bs::DType::BFloat16;

  std::printf("| op | block | M | K -> N | density | host us per call (issue) | wall us per call |\n|---|---|---|---|---|---|---|\n");
  struct Case {
    int block;
    int64_t m, k, n;
    double density;
  };
  for (const Case& c : {Case{64, 64, 512, 512, 0.5}, Case{64, 256, 512, 512, 0.5}, Case{64, 2048, 768, 3072, 0.1},
                        Case{128, 256, 512, 512, 0.5}, Case{32, 256, 512, 512, 0.5}, Case{32, 2048, 1024, 1024, 0.1}}) {
    Rng rng{7};
    const HostPattern host = makePattern(c.n, c.k, BlockShape{c.block, c.block}, c.density, rng);
    DevicePattern p;
    upload(host, p);
    const int64_t valueCount = static_cast<int64_t>(p.view.nnzBlocks) * c.block * c.block;
    void *x, *dy, *values, *y, *dx, *dw;
    CHECK_CUDA(cudaMalloc(&x, c.m * c.k * 2));
    CHECK_CUDA(cudaMalloc(&dy, c.m * c.n * 2));
    CHECK_CUDA(cudaMalloc(&values, valueCount * 2));
    CHECK_CUDA(cudaMalloc(&y, c.m * c.n * 2));
    CHECK_CUDA(cudaMalloc(&dx, c.m * c.k * 2));
    CHECK_CUDA(cudaMalloc(&dw, valueCount * 2));
    CHECK_CUDA(cudaMemset(x, 0, c.m * c.k * 2));
    CHECK_CUDA(cudaMemset(dy, 0, c.m * c.n * 2));
    CHECK_CUDA(cudaMemset(values, 0, valueCount * 2));
    const char* names[3] = {"bsrLinear", "bsrMatmul", "sampledMatmul"};
    for (int op = 0; op < 3; ++op) {
      auto call = [&] {
        bool ok = op == 0   ? bs::tcBsrLinear(dtype, x, values, nullptr, y, c.m, p.view, 0)
                  : op == 1 ? bs::tcBsrMatmul(dtype, dy, values, dx, c.m, p.view, 0)
                            : bs::tcSampledMatmul(dtype, dy, x, dw, c.m, p.view, 0);
        if (!ok) {
          std::fprintf(stderr, "%s declined\n", names[op]);
          std::exit(1);
        }
      };
      for (int w = 0; w < 20; ++w) call();
      CHECK_CUDA(cudaDeviceSynchronize());
      const auto start = Clock::now();
      for (int i = 0; i < calls; ++i) call();
      const double issue = usSince(start, calls);
      CHECK_CUDA(cudaDeviceSynchronize());
      const double wall = usSince(start, calls);
      std::printf("| %s | %d | %lld | %lld -> %lld | %.2f | %.2f | %.2f |\n", names[op], c.block,
                  static_cast<long long>(c.m), static_cast<long long>(c.k), static_cast<long long>(c.n), c.density,
                  issue, wall);
    }
    for (void* ptr : {x, dy, values, y, dx, dw}) CHECK_CUDA(cudaFree(ptr));
  }

  std::printf("\n| call | us per call |\n|---|---|\n");
  {
    void* base;
    CHECK_CUDA(cudaMalloc(&base, 64 << 20));
    CUtensorMap map;
    auto start = Clock::now();
    for (int i = 0; i < calls; ++i)
      bs::tc::sm90::encodeMap(&map, bs::DType::BFloat16, static_cast<char*>(base) + (i % 7) * 256, 4096, 2048, 64, 64);
    std::printf("| cuTensorMapEncodeTiled (encodeMap) | %.2f |\n", usSince(start, calls));
    start = Clock::now();
    for (int i = 0; i < calls; ++i)
      CHECK_CUDA(cudaFuncSetAttribute(emptyKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 100000 + (i % 2) * 1024));
    std::printf("| cudaFuncSetAttribute (max dynamic shared memory) | %.2f |\n", usSince(start, calls));
    start = Clock::now();
    for (int i = 0; i < calls; ++i) emptyKernel<<<1, 32>>>();
    std::printf("| empty kernel launch | %.2f |\n", usSince(start, calls));
    CHECK_CUDA(cudaDeviceSynchronize());
    start = Clock::now();
    for (int i = 0; i < calls; ++i) {
      void* scratch;
      CHECK_CUDA(cudaMallocAsync(&scratch, 8 << 20, 0));
      CHECK_CUDA(cudaFreeAsync(scratch, 0));
    }
    std::printf("| cudaMallocAsync + cudaFreeAsync, 8 MiB, warm pool | %.2f |\n", usSince(start, calls));
    CHECK_CUDA(cudaDeviceSynchronize());
    double afterSync = 0;
    const int rounds = 100;
    for (int i = 0; i < rounds; ++i) {
      CHECK_CUDA(cudaDeviceSynchronize());
      const auto one = Clock::now();
      void* scratch;
      CHECK_CUDA(cudaMallocAsync(&scratch, 8 << 20, 0));
      CHECK_CUDA(cudaFreeAsync(scratch, 0));
      afterSync += usSince(one, 1);
    }
    std::printf("| cudaMallocAsync + cudaFreeAsync, 8 MiB, after a synchronize | %.2f |\n", afterSync / rounds);
    start = Clock::now();
    int device = 0;
    for (int i = 0; i < calls; ++i) CHECK_CUDA(cudaGetDevice(&device));
    std::printf("| cudaGetDevice | %.3f |\n", usSince(start, calls));
    CHECK_CUDA(cudaFree(base));
  }
  return 0;
}
