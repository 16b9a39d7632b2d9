// tc_bench: checks and times the tensor-core block-sparse kernels (src/tc).
//
// check:  for each product, block size, density, token count and (K, N) shape, on fresh random inputs
//         with poisoned outputs, compares every variant with the simple kernel (src/kernels/bsr.cu, every
//         element) and with float64 host math (every element of small outputs, else a random sample).
// time:   median time of each variant and of cuBLAS dense (cublasGemmEx, bf16/f16 in with float32
//         compute, or float32 in with CUBLAS_COMPUTE_32F_FAST_TF32) on the same shape in the same run, with
//         CUDA events over batches that rotate input sets, after at least kWarmUpMs of launches; throughput is counted
//         on the non-zero work (2 * M * nnzBlocks * R * C).
// decode: bsrLinear with few tokens: measures the device's copy bandwidth (a device-to-device cudaMemcpy,
//         read + write counted), then per case checks each path as `check` does and times it against
//         cuBLAS dense, reporting the weight's bytes per second and its fraction of the copy bandwidth.
//         Input sets rotate through more than twice the L2 cache, so the weight comes from memory.
//
// Usage: tc_bench [--mode check|time|decode] [--ops linear,matmul,sampled] [--paths auto,decode,wgmma,mma,simple]
//                 [--blocks 32,64,128,16x32] [--quick] [--dtype bf16|f16|f32|f32x] [--variants 0,1] [--tokens 8192,512]
//                 [--shapes 4096x4096,4096x16384 (K x N)] [--densities 0.25,0.5] [--sets 3] [--rows random|equal]
//                 [--splits 0,1,2,4] [--tail -1,0,16]
// --variants applies to each of the wgmma and mma paths named (wgmma/v6 is the X-resident tile, v21, v22, v25 and v26 dev's
// variants of it, dev/bsr_wgmma_xr_dev.cu, v27-v29 dev's wide-slab tile for slabs of any width at 32x32; for dW at 32x32
// v30-v32 dev's patch tiles, v30 and v31 on mma.sync and v32 on wgmma, named on either path); a variant
// written with a trailing c (0c) sums dW's token splits in thread-block clusters instead of the float32 partial pass
// (TcOptions::splitCluster, kept for measurement); with --paths decode, the decoding variants besides the default (1-4
// measurement widths, 5 the staged variant, 6 dev's kernel of block rows in pairs for 1-16 tokens,
// dev/bsr_decode_pairs.cu);
// --paths simple times (and checks) the simple kernel of src/kernels/bsr.cu (float32: its register-tiled kernels of
// bsr_simt.cu where the block's sides are multiples of 16), which runs where the tensor-core entry
// points decline. --blocks takes square sides (32) or R x C shapes (16x32: W's blocks 16 rows by 32 columns).
// --tokens, --shapes and --densities replace each mode's defaults. --sets (time mode, default 3) is how many input
// sets the launches rotate through: 1 keeps the inputs in L2 between launches, as in a training step.
// --splits runs each variant once per count: dW's token splits (TcOptions::splits; 0 is the dispatch's rule), or the
// runs each line is split into on a named mma.sync default tile. Time mode prints each dW case's groups per tile size.
// --tail runs each variant with the rule's splits once per setting of dW's tail (TcOptions::tailSplits: -1 never,
// 0 the rule, n pieces per tail group wherever the groups leave a tail).
// --rows equal gives every block row the same number of blocks (round(density x block columns)) instead of each
// block present with probability density (random, the default): what a row-balanced schedule could reach.
// --activation relu|gelu|gelu_tanh runs bsrLinear with the activation fused into the tile's epilogue
// (tcBsrLinearActivation: Z and activation(Z) both written), and bsrMatmul with the activation's backward fused into
// dX's epilogue (tcBsrMatmulActivationBackward: dZ = dX act'(Z) for a random Z, and the column sums of dZ): check
// compares both outputs, time puts each variant fused beside the same variant followed by the separate pass
// (biasActivation, biasActivationBackward: the unfused path).
// --dtype f32x keeps TF32 off, as the addon does by default: float32 runs the CUDA-core kernels (--paths simple: the
// register-tiled ones of src/kernels/bsr_simt.cu where they fit) against cuBLAS's plain float32 GEMM.
// --dtype f32 allows TF32 (bs::setAllowTf32) in check and time, so float32 runs on the TF32 mma.sync
// kernels; decode keeps float32 exact (its kernel and cuBLAS both run plain float32).
// Built without cuBLAS (TC_BENCH_NO_CUBLAS, bench/build.sh when the toolkit has none) the dense times read n/a;
// built without kernels-cuda/dev/ (TC_BENCH_NO_DEV, bench/build.sh with DEV=0) variants kept only for
// measurement decline.
#ifndef TC_BENCH_NO_CUBLAS
#include <cublas_v2.h>
#endif
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "../src/device.h"
#include "../src/kernels.h"
#include "../src/tc/tc.h"
#include "../src/tc/tc_kernels.h"
#include "bench_pattern.h"
#include "check_cuda.h"
#ifndef TC_BENCH_NO_DEV
#include "../dev/dev_variants.h"
#include "../dev/group_schedule.h"
#endif

namespace {

using bs::BsrPatternView;
using bs::DType;


#ifndef TC_BENCH_NO_CUBLAS
#define CHECK_CUBLAS(call)                                                                   \
  do {                                                                                       \
    cublasStatus_t status_ = (call);                                                         \
    if (status_ != CUBLAS_STATUS_SUCCESS) {                                                  \
      std::fprintf(stderr, "%s:%d %s failed: %d\n", __FILE__, __LINE__, #call, int(status_)); \
      std::exit(2);                                                                          \
    }                                                                                        \
  } while (0)
#else
using cublasHandle_t = void*;
#endif

enum class Product { Linear, Matmul, Sampled };
const char* productName(Product p) {
  return p == Product::Linear ? "linear" : p == Product::Matmul ? "matmul" : "sampled";
}

struct Variant {
  bs::TcPath path;
  int variant;
  bool cluster = false;  // TcOptions::splitCluster
  bool simple = false;   // --paths simple: the simple kernel (src/kernels/bsr.cu), what runs where no tile does
  int splits = 0;        // --splits: TcOptions::splits (0: the dispatch's rule)
  int tail = 0;          // --tail: TcOptions::tailSplits (0: the rule, -1: never, n: n pieces)
  std::string name() const {
    if (simple) return "simple";
    const std::string count = (splits > 0 ? " s" + std::to_string(splits) : "") +
                              (tail < 0 ? " no tail" : tail > 0 ? " tail " + std::to_string(tail) : "");
    if (path == bs::TcPath::Auto) return "auto" + count;
    if (path == bs::TcPath::Decode) return variant == 0 ? "decode" : "decode/v" + std::to_string(variant);
    return std::string(path == bs::TcPath::Wgmma ? "wgmma" : "mma") + "/v" + std::to_string(variant) +
           (cluster ? " cluster" : "") + count;
  }
};

// ------------------------------------------------------------------------------------------ data

__device__ __forceinline__ uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform values in [-1, 1), rounded to T.
template <typename T>
__global__ void fillUniformKernel(T* data, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    float u = static_cast<float>(mix(seed + 0x9E3779B97F4A7C15ull * (i + 1)) >> 40) * (1.0f / 16777216.0f);
    data[i] = static_cast<T>(2.0f * u - 1.0f);
  }
}

__global__ void fillBitsKernel(uint16_t* data, int64_t n, uint16_t bits) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    data[i] = bits;
}

void fillUniform(DType dtype, void* data, int64_t n, uint64_t seed) {
  if (dtype == DType::Float32)
    fillUniformKernel<<<4096, 256>>>(static_cast<float*>(data), n, seed);
  else if (dtype == DType::BFloat16)
    fillUniformKernel<<<4096, 256>>>(static_cast<__nv_bfloat16*>(data), n, seed);
  else
    fillUniformKernel<<<4096, 256>>>(static_cast<__half*>(data), n, seed);
  CHECK_CUDA(cudaGetLastError());
}

// NaN in every float format (all bits set): an element the kernel never writes fails the check.
void poison(DType dtype, void* data, int64_t n) {
  fillBitsKernel<<<4096, 256>>>(static_cast<uint16_t*>(data), n * int64_t(bs::dtypeSize(dtype) / 2), 0xFFFF);
  CHECK_CUDA(cudaGetLastError());
}

double decode(DType dtype, uint16_t bits) {
  if (dtype == DType::BFloat16) {
    uint32_t wide = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &wide, 4);
    return f;
  }
  __half_raw raw;
  raw.x = bits;
  return static_cast<double>(__half2float(__half(raw)));
}

// Every 16-bit pattern decoded once: the checks read hundreds of millions of elements.
double toDouble(DType dtype, uint16_t bits) {
  static std::vector<double> tables[2];
  std::vector<double>& table = tables[dtype == DType::BFloat16 ? 0 : 1];
  if (table.empty()) {
    table.resize(65536);
    for (int i = 0; i < 65536; ++i) table[i] = decode(dtype, static_cast<uint16_t>(i));
  }
  return table[bits];
}

// A host copy of n elements of dtype, read as float64.
struct HostArray {
  DType dtype = DType::BFloat16;
  std::vector<uint16_t> halves;
  std::vector<float> singles;
  bool empty() const { return halves.empty() && singles.empty(); }
  size_t size() const { return dtype == DType::Float32 ? singles.size() : halves.size(); }
  double operator[](int64_t i) const { return dtype == DType::Float32 ? singles[i] : toDouble(dtype, halves[i]); }
};

HostArray download(DType dtype, const void* data, int64_t n) {
  HostArray host;
  host.dtype = dtype;
  void* target;
  if (dtype == DType::Float32) {
    host.singles.resize(n);
    target = host.singles.data();
  } else {
    toDouble(dtype, 0);  // builds the decode table before threads read it
    host.halves.resize(n);
    target = host.halves.data();
  }
  CHECK_CUDA(cudaMemcpy(target, data, n * bs::dtypeSize(dtype), cudaMemcpyDeviceToHost));
  return host;
}

// ------------------------------------------------------------------------------------------ one problem

// Device buffers of one product on one pattern: `sets` input sets to rotate through.
struct Problem {
  Product product;
  DType dtype;
  int64_t m, cols, rows;  // tokens, K (W's columns), N (W's rows)
  const HostPattern* pattern;
  DevicePattern device;
  int sets = 1;
  std::vector<void*> a, b;  // linear: X, values; matmul: dY, values; sampled: dY, X
  void* bias = nullptr;
  void* out = nullptr;
  int64_t aCount = 0, bCount = 0, outCount = 0;
  // Linear with --activation: the fused epilogue also writes activation(out) here. Matmul with --activation: out is
  // dZ for the pre-activation `pre` [m, cols], dbias its column sums, and `activated` the unfused pass's dZ.
  void* activated = nullptr;
  void* pre = nullptr;
  void* dbias = nullptr;
  bs::Activation activation = bs::Activation::Gelu;

  Problem(Product product, DType dtype, int64_t m, int64_t cols, int64_t rows, const HostPattern& pattern, int sets,
          uint64_t seed)
      : product(product), dtype(dtype), m(m), cols(cols), rows(rows), pattern(&pattern), sets(sets) {
    upload(pattern, device);
    const int64_t values = int64_t(pattern.nnz) * pattern.r * pattern.c;
    aCount = m * (product == Product::Linear ? cols : rows);
    bCount = product == Product::Sampled ? m * cols : values;
    outCount = product == Product::Linear ? m * rows : product == Product::Matmul ? m * cols : values;
    for (int s = 0; s < sets; ++s) {
      void *pa, *pb;
      CHECK_CUDA(cudaMalloc(&pa, std::max<int64_t>(aCount, 1) * bs::dtypeSize(dtype)));
      CHECK_CUDA(cudaMalloc(&pb, std::max<int64_t>(bCount, 1) * bs::dtypeSize(dtype)));
      fillUniform(dtype, pa, aCount, seed + 1000 * s + 1);
      fillUniform(dtype, pb, bCount, seed + 1000 * s + 2);
      a.push_back(pa);
      b.push_back(pb);
    }
    if (product == Product::Linear) {
      CHECK_CUDA(cudaMalloc(&bias, rows * bs::dtypeSize(dtype)));
      fillUniform(dtype, bias, rows, seed + 7);
    }
    CHECK_CUDA(cudaMalloc(&out, std::max<int64_t>(outCount, 1) * bs::dtypeSize(dtype)));
  }
  ~Problem() {
    for (void* p : a) cudaFree(p);
    for (void* p : b) cudaFree(p);
    cudaFree(bias);
    cudaFree(out);
    cudaFree(activated);
    cudaFree(pre);
    cudaFree(dbias);
  }
  void enableActivation(bs::Activation act) {
    if (product == Product::Sampled) return;
    activation = act;
    CHECK_CUDA(cudaMalloc(&activated, std::max<int64_t>(outCount, 1) * bs::dtypeSize(dtype)));
    if (product == Product::Matmul) {
      CHECK_CUDA(cudaMalloc(&pre, std::max<int64_t>(outCount, 1) * bs::dtypeSize(dtype)));
      fillUniform(dtype, pre, outCount, 99);
      CHECK_CUDA(cudaMalloc(&dbias, cols * bs::dtypeSize(dtype)));
    }
  }
  // The unfused path after runFast(..., fuse = false) into out: the separate activation (backward) pass.
  void runUnfusedPass() const {
    if (product == Product::Linear)
      bs::launchBiasActivation(activation, dtype, out, nullptr, activated, m, rows, 0);
    else
      bs::launchBiasActivationBackward(activation, dtype, out, pre, nullptr, activated, dbias, m, cols, 0);
  }
  double nonzeroFlops() const {
    return 2.0 * m * double(pattern->nnz) * pattern->r * pattern->c;
  }

  // fuse: with an activation, the fused entry point (false: bsrLinear alone, as the unfused path's first pass).
  bool runFast(int set, const Variant& v, void* target, bool fuse = true) const {
    if (v.simple) {
      if (activated != nullptr && fuse) return false;  // the simple kernel fuses nothing
      runSimple(set, target);
      return true;
    }
    bs::TcOptions options;
    options.path = v.path;
    options.variant = v.variant;
    options.splitCluster = v.cluster;
    options.splits = v.splits;
    options.tailSplits = v.tail;
#ifndef TC_BENCH_NO_DEV
    options.devVariants = bs::tc::launchDevVariant;
    options.devDecode = bs::tc::launchDecodeDevVariant;
#endif
    switch (product) {
      case Product::Linear:
        if (activated != nullptr && fuse)
          return bs::tcBsrLinearActivation(dtype, a[set], b[set], bias, target, activated, activation, m, device.view, 0,
                                           options);
        return bs::tcBsrLinear(dtype, a[set], b[set], bias, target, m, device.view, 0, options);
      case Product::Matmul:
        if (pre != nullptr && fuse)
          return bs::tcBsrMatmulActivationBackward(dtype, a[set], b[set], pre, target, dbias, activation, m, device.view,
                                                   0, options);
        return bs::tcBsrMatmul(dtype, a[set], b[set], target, m, device.view, 0, options);
      case Product::Sampled:
        return bs::tcSampledMatmul(dtype, a[set], b[set], target, m, device.view, 0, options);
    }
    return false;
  }
  void runSimple(int set, void* target) const {
    switch (product) {
      case Product::Linear:
        bs::launchBsrLinear(dtype, a[set], b[set], bias, target, m, device.view, 0);
        break;
      case Product::Matmul:
        bs::launchBsrMatmul(dtype, a[set], b[set], target, m, device.view, 0);
        break;
      case Product::Sampled:
        bs::launchSampledMatmul(dtype, a[set], b[set], target, m, device.view, 0);
        break;
    }
  }
};

// float64 value of output element `index` of set 0, from host copies of the inputs.
struct HostReference {
  const Problem& problem;
  HostArray a, b, bias;
  explicit HostReference(const Problem& p) : problem(p) {
    a = download(p.dtype, p.a[0], p.aCount);
    b = download(p.dtype, p.b[0], p.bCount);
    if (p.bias) bias = download(p.dtype, p.bias, p.rows);
  }
  double at(int64_t index) const {
    const HostPattern& pat = *problem.pattern;
    const int R = pat.r, C = pat.c;
    double sum = 0.0;
    if (problem.product == Product::Linear) {
      int64_t token = index / problem.rows, feature = index % problem.rows;
      int br = static_cast<int>(feature / R), r = static_cast<int>(feature % R);
      for (int e = pat.rowPtr[br]; e < pat.rowPtr[br + 1]; ++e)
        for (int c = 0; c < C; ++c)
          sum += a[token * problem.cols + int64_t(pat.colIdx[e]) * C + c] *
                 b[(int64_t(e) * R + r) * C + c];
      if (!bias.empty()) sum += bias[feature];
    } else if (problem.product == Product::Matmul) {
      int64_t token = index / problem.cols, column = index % problem.cols;
      int bc = static_cast<int>(column / C), c = static_cast<int>(column % C);
      for (int q = pat.colPtr[bc]; q < pat.colPtr[bc + 1]; ++q)
        for (int r = 0; r < R; ++r)
          sum += a[token * problem.rows + int64_t(pat.rowIdx[q]) * R + r] *
                 b[(int64_t(pat.valueIndex[q]) * R + r) * C + c];
    } else {
      int64_t p = index / (R * C);
      int r = static_cast<int>(index / C % R), c = static_cast<int>(index % C);
      int64_t row = int64_t(pat.coordRow[p]) * R + r, column = int64_t(pat.coordCol[p]) * C + c;
      for (int64_t token = 0; token < problem.m; ++token)
        sum += a[token * problem.rows + row] * b[token * problem.cols + column];
    }
    return sum;
  }
};

struct CheckResult {
  bool finite;
  double relSimple, relHost;
};

// Runs body(begin, end) over [0, n) on every hardware thread.
template <typename Body>
void parallelFor(int64_t n, Body body) {
  const int64_t workers = std::max(1u, std::min(32u, std::thread::hardware_concurrency()));
  std::vector<std::thread> threads;
  for (int64_t w = 0; w < workers; ++w)
    threads.emplace_back([&, w] { body(n * w / workers, n * (w + 1) / workers); });
  for (auto& t : threads) t.join();
}

CheckResult compare(const HostArray& out, const HostArray& simple, const std::vector<int64_t>& samples,
                    const std::vector<double>& exact) {
  CheckResult r{true, 0, 0};
  std::mutex lock;
  double diff = 0, norm = 0;
  parallelFor(static_cast<int64_t>(out.size()), [&](int64_t begin, int64_t end) {
    double d = 0, s2 = 0;
    bool finite = true;
    for (int64_t i = begin; i < end; ++i) {
      double o = out[i], s = simple[i];
      if (!std::isfinite(o)) finite = false;
      d += (o - s) * (o - s);
      s2 += s * s;
    }
    std::lock_guard<std::mutex> guard(lock);
    diff += d;
    norm += s2;
    r.finite = r.finite && finite;
  });
  r.relSimple = norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
  diff = norm = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    double o = out[samples[i]];
    diff += (o - exact[i]) * (o - exact[i]);
    norm += exact[i] * exact[i];
  }
  r.relHost = norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
  if (!r.finite) r.relSimple = r.relHost = NAN;
  return r;
}

// ------------------------------------------------------------------------------------------ timing

// The GPU kept busy this long before each timing: after the host's set-up of a case (patterns, uploads: up to seconds
// at the largest shapes) the clocks have dropped, and the first variant timed read up to 25% slower than the same
// kernel timed next on an H100 (benchmarks/results/gpu-nvidia-h100-80gb-hbm3/dx-three-consumers-few-tiles-2026-12-06.md).
constexpr double kWarmUpMs = 10.0;

// Median over samples of the mean time of `batch` back-to-back launches (rotating input sets), ms, after at least three
// launches and kWarmUpMs of launches.
template <typename Launch>
double medianMs(Launch launch, int sets, int batch, int samples) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  const auto warmStart = std::chrono::steady_clock::now();
  for (int w = 0; w < 3; ++w) launch(w % sets);
  for (;;) {
    CHECK_CUDA(cudaDeviceSynchronize());
    const std::chrono::duration<double, std::milli> spent = std::chrono::steady_clock::now() - warmStart;
    if (spent.count() >= kWarmUpMs) break;
    for (int w = 0; w < batch; ++w) launch(w % sets);  // a batch between checks keeps the GPU busy
  }
  std::vector<double> times;
  int counter = 0;
  for (int s = 0; s < samples; ++s) {
    CHECK_CUDA(cudaEventRecord(start));
    for (int i = 0; i < batch; ++i) launch(counter++ % sets);
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms / batch);
  }
  CHECK_CUDA(cudaGetLastError());
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// cuBLAS dense on the same product's shape: column-major views of the row-major tensors.
struct DenseProblem {
  Product product;
  DType dtype;
  int64_t m, cols, rows;
  int sets;
  bool fastTf32;  // float32: CUBLAS_COMPUTE_32F_FAST_TF32 (else plain float32)
  std::vector<void*> a, b;
  void* c = nullptr;
  DenseProblem(Product product, DType dtype, int64_t m, int64_t cols, int64_t rows, int sets, bool fastTf32 = true)
      : product(product), dtype(dtype), m(m), cols(cols), rows(rows), sets(sets), fastTf32(fastTf32) {
    const size_t bytes = bs::dtypeSize(dtype);
    // linear: A = X [m, cols], B = W [rows, cols], C = Y [m, rows]
    // matmul: A = dY [m, rows], B = W, C = dX [m, cols];  sampled: A = dY, B = X [m, cols], C = dW [rows, cols]
    int64_t aCount = m * (product == Product::Linear ? cols : rows);
    int64_t bCount = product == Product::Sampled ? m * cols : rows * cols;
    int64_t cCount = product == Product::Linear ? m * rows : product == Product::Matmul ? m * cols : rows * cols;
    for (int s = 0; s < sets; ++s) {
      void *pa, *pb;
      CHECK_CUDA(cudaMalloc(&pa, aCount * bytes));
      CHECK_CUDA(cudaMalloc(&pb, bCount * bytes));
      fillUniform(dtype, pa, aCount, 91 + s);
      fillUniform(dtype, pb, bCount, 97 + s);
      a.push_back(pa);
      b.push_back(pb);
    }
    CHECK_CUDA(cudaMalloc(&c, cCount * bytes));
  }
  ~DenseProblem() {
    for (void* p : a) cudaFree(p);
    for (void* p : b) cudaFree(p);
    cudaFree(c);
  }
  void run(cublasHandle_t handle, int set) const {
#ifdef TC_BENCH_NO_CUBLAS
    (void)handle, (void)set;
#else
    const float one = 1.0f, zero = 0.0f;
    const auto bf = dtype == DType::Float32 ? CUDA_R_32F : dtype == DType::Float16 ? CUDA_R_16F : CUDA_R_16BF;
    const auto compute = dtype == DType::Float32 && fastTf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    if (product == Product::Linear)  // Y^T [rows, m] = W [rows, cols] . X^T
      CHECK_CUBLAS(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, rows, m, cols, &one, b[set], bf, cols, a[set], bf,
                                cols, &zero, c, bf, rows, compute, CUBLAS_GEMM_DEFAULT));
    else if (product == Product::Matmul)  // dX^T [cols, m] = W^T . dY^T
      CHECK_CUBLAS(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, cols, m, rows, &one, b[set], bf, cols, a[set], bf,
                                rows, &zero, c, bf, cols, compute, CUBLAS_GEMM_DEFAULT));
    else  // dW^T [cols, rows] = X^T . dY
      CHECK_CUBLAS(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_T, cols, rows, m, &one, b[set], bf, cols, a[set], bf,
                                rows, &zero, c, bf, cols, compute, CUBLAS_GEMM_DEFAULT));
#endif
  }
};

#ifdef TC_BENCH_NO_CUBLAS
constexpr bool kHaveBlas = false;
cublasHandle_t createBlas() { return nullptr; }
void destroyBlas(cublasHandle_t) {}
#else
constexpr bool kHaveBlas = true;
cublasHandle_t createBlas() {
  cublasHandle_t handle;
  CHECK_CUBLAS(cublasCreate(&handle));
  return handle;
}
void destroyBlas(cublasHandle_t handle) { cublasDestroy(handle); }
#endif

// Median time of the dense product on cuBLAS, ms (NaN without cuBLAS).
double denseMs(cublasHandle_t handle, const DenseProblem& dense, int batch) {
  if (!kHaveBlas) return NAN;
  return medianMs([&](int set) { dense.run(handle, set); }, dense.sets, batch, 15);
}

// ------------------------------------------------------------------------------------------ driver

struct Options {
  std::string mode = "check";
  std::vector<Product> products = {Product::Linear, Product::Matmul, Product::Sampled};
  std::vector<Variant> variants;
  std::vector<BlockShape> blocks = {{32, 32}, {64, 64}, {128, 128}};
  bool quick = false;
  bool exactF32 = false;  // --dtype f32x: float32 with TF32 off, against cuBLAS's plain float32 GEMM
  // time mode: input sets the launches rotate through (1: the inputs stay in L2 between launches, as an
  // operand just written by the previous op of a training step does).
  int sets = 3;
  bool blocksGiven = false, productsGiven = false, pathsGiven = false, variantsGiven = false;
  DType dtype = DType::BFloat16;
  std::vector<int64_t> tokens;                        // empty: the mode's defaults
  std::vector<std::pair<int64_t, int64_t>> shapes;    // (K, N); empty: the mode's defaults
  std::vector<double> densities;                      // empty: the mode's defaults
  bool activate = false;                              // --activation given (linear and matmul)
  bool equalRows = false;                             // --rows equal: every block row as long as the others
  bs::Activation activation = bs::Activation::Gelu;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    if (end > start) parts.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

[[noreturn]] void usageError(const std::string& message) {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::exit(1);
}

Options parse(int argc, char** argv) {
  Options o;
  std::vector<std::string> paths = {"auto", "wgmma", "mma"}, variantIds = {"0", "1"};
  std::vector<int> splitCounts = {0}, tailCounts = {0};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usageError(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--mode") o.mode = value();
    else if (arg == "--quick") o.quick = true;
    else if (arg == "--rows") {
      const std::string kind = value();
      if (kind != "random" && kind != "equal") usageError("--rows is random or equal, got " + kind);
      o.equalRows = kind == "equal";
    } else if (arg == "--sets") {
      o.sets = std::atoi(value().c_str());
      if (o.sets < 1 || o.sets > 16) usageError("--sets takes 1 to 16 input sets");
    }
    else if (arg == "--tokens") {
      for (auto& t : split(value())) o.tokens.push_back(std::atoll(t.c_str()));
    } else if (arg == "--shapes") {
      for (auto& shape : split(value())) {
        long long k = 0, n = 0;
        if (std::sscanf(shape.c_str(), "%lldx%lld", &k, &n) != 2 || k <= 0 || n <= 0)
          usageError("--shapes takes KxN pairs (W is N x K), got " + shape);
        o.shapes.push_back({k, n});
      }
    } else if (arg == "--densities") {
      for (auto& d : split(value())) o.densities.push_back(std::atof(d.c_str()));
    } else if (arg == "--paths") {
      paths = split(value());
      o.pathsGiven = true;
    } else if (arg == "--variants") {
      variantIds = split(value());
      o.variantsGiven = true;
    }
    else if (arg == "--dtype") {
      std::string name = value();
      if (name != "f32" && name != "f32x" && name != "f16" && name != "bf16")
        usageError("--dtype is bf16, f16, f32 or f32x, got " + name);
      o.dtype = name == "f32" || name == "f32x" ? DType::Float32 : name == "f16" ? DType::Float16 : DType::BFloat16;
      o.exactF32 = name == "f32x";
    } else if (arg == "--blocks") {
      o.blocks.clear();
      o.blocksGiven = true;
      for (auto& b : split(value())) {
        int r = 0, c = 0;
        const int read = std::sscanf(b.c_str(), "%dx%d", &r, &c);
        if (read == 1) c = r;
        if (read < 1 || r < 1 || c < 1) usageError("--blocks takes block sides R or shapes RxC, got " + b);
        o.blocks.push_back({r, c});
      }
    } else if (arg == "--activation") {
      std::string name = value();
      if (name != "relu" && name != "gelu" && name != "gelu_tanh") usageError("--activation is relu, gelu or gelu_tanh, got " + name);
      o.activate = true;
      o.activation = name == "relu" ? bs::Activation::Relu : name == "gelu" ? bs::Activation::Gelu : bs::Activation::GeluTanh;
    } else if (arg == "--splits") {
      splitCounts.clear();
      for (auto& c : split(value())) {
        const int count = std::atoi(c.c_str());
        if (count < 0 || count > 64) usageError("--splits takes counts from 0 (the rule) to 64, got " + c);
        splitCounts.push_back(count);
      }
    } else if (arg == "--tail") {
      tailCounts.clear();
      for (auto& c : split(value())) {
        const int count = std::atoi(c.c_str());
        if (count < -1 || count > 4096) usageError("--tail takes -1 (never), 0 (the rule) or a piece count, got " + c);
        tailCounts.push_back(count);
      }
    } else if (arg == "--ops") {
      o.products.clear();
      o.productsGiven = true;
      for (auto& p : split(value()))
        o.products.push_back(p == "linear" ? Product::Linear : p == "matmul" ? Product::Matmul : Product::Sampled);
    } else {
      usageError("unknown argument " + arg);
    }
  }
  // decode: bsrLinear only, what it dispatches to and the decoding kernel itself, 32 and 64 blocks.
  if (o.mode == "decode") {
    if (!o.pathsGiven) paths = {"auto", "decode"};
    if (!o.blocksGiven) o.blocks = {{32, 32}, {64, 64}};
    o.products = {Product::Linear};
  }
  for (auto& p : paths) {
    if (p == "auto") {  // what the product entry points dispatch to by default
      o.variants.push_back({bs::TcPath::Auto, -1});
    } else if (p == "simple") {  // the simple kernel, where the entry points decline
      Variant simple{bs::TcPath::Auto, -1};
      simple.simple = true;
      o.variants.push_back(simple);
    } else if (p == "decode") {  // the default, and with --variants the others too (tc_kernels.h, dev_variants.h)
      o.variants.push_back({bs::TcPath::Decode, 0});
      if (o.variantsGiven)
        for (auto& v : variantIds)
          if (std::atoi(v.c_str()) > 0) o.variants.push_back({bs::TcPath::Decode, std::atoi(v.c_str())});
    } else if (p == "wgmma" || p == "mma") {
      for (auto& v : variantIds)
        o.variants.push_back({p == "wgmma" ? bs::TcPath::Wgmma : bs::TcPath::Mma, std::atoi(v.c_str()),
                              !v.empty() && v.back() == 'c'});
    } else {
      usageError("--paths takes auto, decode, wgmma, mma, simple; got " + p);
    }
  }
  // --splits: each tile variant once per split count (the simple kernel and decoding take none).
  // --tail: each of those once per tail setting (where the split count is the rule's).
  if (splitCounts != std::vector<int>{0} || tailCounts != std::vector<int>{0}) {
    std::vector<Variant> expanded;
    for (const Variant& v : o.variants) {
      if (v.simple || v.path == bs::TcPath::Decode) {
        expanded.push_back(v);
        continue;
      }
      for (int count : splitCounts)
        for (int tail : tailCounts) {
          if (count > 0 && tail != 0) continue;
          Variant each = v;
          each.splits = count;
          each.tail = tail;
          expanded.push_back(each);
        }
    }
    o.variants = expanded;
  }
  return o;
}

const char* dtypeLabel(DType dtype) {
  return dtype == DType::Float32 ? "f32" : dtype == DType::Float16 ? "f16" : "bf16";
}

struct ShapeCase {
  int64_t m, cols, rows;
};

// One variant's check on one problem.
struct VariantCheck {
  bool ran = false;  // false: the entry point declined (nothing launched)
  bool ok = false;
  CheckResult result{};
  double relActivated = 0;  // with --activation: activated vs the activation of the simple kernel's output
};

double hostActivation(bs::Activation activation, double x) {
  if (activation == bs::Activation::Relu) return x > 0 ? x : 0;
  if (activation == bs::Activation::Gelu) return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
  // GELU(tanh)'s gate 0.5 (1 + tanh u) as the logistic 1 / (1 + e^(-2u)), without 1 + tanh u's cancellation.
  return x / (1.0 + std::exp(-2.0 * std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

double hostDerivative(bs::Activation activation, double x) {
  if (activation == bs::Activation::Relu) return x > 0 ? 1 : 0;
  if (activation == bs::Activation::Gelu)
    return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
  const double k = std::sqrt(2.0 / M_PI), s = 1.0 / (1.0 + std::exp(-2.0 * k * (x + 0.044715 * x * x * x)));
  const double w = s * (1.0 - s);
  return w == 0.0 ? s : s + 2.0 * x * w * k * (1.0 + 3.0 * 0.044715 * x * x);
}

// ||got - want|| / ||want|| (inf if any of got is not finite).
double relativeError(const HostArray& got, const std::vector<double>& want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = got[static_cast<int64_t>(i)];
    if (!std::isfinite(g)) return INFINITY;
    diff += (g - want[i]) * (g - want[i]);
    norm += want[i] * want[i];
  }
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

// ||activated - activation(simple)|| / ||activation(simple)|| over every element (inf if any is not finite).
double compareActivated(const HostArray& activated, const HostArray& simple, bs::Activation activation) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < simple.size(); ++i) {
    const double want = hostActivation(activation, simple[static_cast<int64_t>(i)]);
    const double got = activated[static_cast<int64_t>(i)];
    if (!std::isfinite(got)) return INFINITY;
    diff += (got - want) * (got - want);
    norm += want * want;
  }
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

// Runs each variant on set 0 of `problem` into a NaN-poisoned output and compares it with the simple
// kernel (every element) and float64 host math (every element of outputs up to 2^18, else a sample).
// Exits with a message on a CUDA error.
std::vector<VariantCheck> checkProblem(const Problem& problem, const std::vector<Variant>& variants, Rng& rng) {
  const DType dtype = problem.dtype;
  void* simpleOut;
  CHECK_CUDA(cudaMalloc(&simpleOut, problem.outCount * bs::dtypeSize(dtype)));
  poison(dtype, simpleOut, problem.outCount);
  problem.runSimple(0, simpleOut);
  CHECK_CUDA(cudaDeviceSynchronize());
  HostArray simple = download(dtype, simpleOut, problem.outCount);
  cudaFree(simpleOut);
  HostReference host(problem);
  // Matmul with --activation: the simple kernel's dX (as stored) through act'(Z), and the column sums of that.
  HostArray pre;
  std::vector<double> wantBias;
  if (problem.pre != nullptr) {
    pre = download(dtype, problem.pre, problem.outCount);
    wantBias.assign(static_cast<size_t>(problem.cols), 0.0);
    HostArray dz;
    dz.dtype = DType::Float32;
    dz.singles.resize(static_cast<size_t>(problem.outCount));
    for (int64_t i = 0; i < problem.outCount; ++i) {
      const double d = simple[i] * hostDerivative(problem.activation, pre[i]);
      dz.singles[static_cast<size_t>(i)] = static_cast<float>(d);
      wantBias[static_cast<size_t>(i % problem.cols)] += d;
    }
    simple = std::move(dz);
  }
  std::vector<int64_t> samples;
  if (problem.outCount <= (int64_t{1} << 18)) {
    for (int64_t i = 0; i < problem.outCount; ++i) samples.push_back(i);
  } else {
    const int count = problem.product == Product::Sampled ? 512 : 2048;
    for (int i = 0; i < count; ++i) samples.push_back(static_cast<int64_t>(rng.next() % problem.outCount));
  }
  std::vector<double> exact(samples.size());
  parallelFor(static_cast<int64_t>(samples.size()), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      exact[i] = host.at(samples[i]) * (problem.pre != nullptr ? hostDerivative(problem.activation, pre[samples[i]]) : 1.0);
  });
  std::vector<VariantCheck> checks;
  for (const Variant& v : variants) {
    VariantCheck check;
    poison(dtype, problem.out, problem.outCount);
    if (problem.activated) poison(dtype, problem.activated, problem.outCount);
    if (problem.dbias) poison(dtype, problem.dbias, problem.cols);
    check.ran = problem.runFast(0, v, problem.out);
    cudaError_t status = cudaDeviceSynchronize();
    if (status != cudaSuccess) {
      std::printf("CHECK %s %s R=%s M=%ld K=%ld N=%ld: CUDA error %s\n", productName(problem.product),
                  v.name().c_str(), BlockShape{problem.pattern->r, problem.pattern->c}.label().c_str(), long(problem.m),
                  long(problem.cols), long(problem.rows),
                  cudaGetErrorString(status));
      std::fflush(stdout);
      std::exit(3);
    }
    if (check.ran) {
      check.result = compare(download(dtype, problem.out, problem.outCount), simple, samples, exact);
      check.ok = check.result.finite && check.result.relSimple < 1e-2 && check.result.relHost < 1e-2;
      if (problem.pre != nullptr) {
        check.relActivated = relativeError(download(dtype, problem.dbias, problem.cols), wantBias);
        check.ok = check.ok && check.relActivated < 1e-2;
      } else if (problem.activated) {
        check.relActivated = compareActivated(download(dtype, problem.activated, problem.outCount), simple, problem.activation);
        check.ok = check.ok && check.relActivated < 1e-2;
      }
    }
    checks.push_back(check);
  }
  return checks;
}

int runChecks(const Options& o) {
  std::vector<ShapeCase> shapes;
  std::vector<int64_t> tokens = !o.tokens.empty() ? o.tokens
                                : o.quick       ? std::vector<int64_t>{64, 200, 1000}
                                                : std::vector<int64_t>{512, 1000, 8192};
  std::vector<std::pair<int64_t, int64_t>> kn = !o.shapes.empty() ? o.shapes
                                                : o.quick ? std::vector<std::pair<int64_t, int64_t>>{{256, 384}, {512, 256}}
                                                          : std::vector<std::pair<int64_t, int64_t>>{
                                                                {4096, 4096}, {4096, 16384}, {16384, 4096}};
  for (auto m : tokens)
    for (auto [k, n] : kn) shapes.push_back({m, k, n});
  const std::vector<double> densities = !o.densities.empty() ? o.densities : std::vector<double>{0.1, 0.25, 0.5, 1.0};
  Rng rng{12345};
  int pass = 0, fail = 0, declined = 0;
  std::map<std::string, double> worst;
  for (Product product : o.products)
    for (BlockShape block : o.blocks)
      for (double density : densities)
        for (const ShapeCase& s : shapes) {
          if (s.rows % block.r != 0 || s.cols % block.c != 0) continue;
          HostPattern pattern = makePattern(s.rows, s.cols, block, density, rng, o.equalRows);
          if (pattern.nnz == 0) continue;
          Problem problem(product, o.dtype, s.m, s.cols, s.rows, pattern, 1, rng.next());
          if (o.activate) problem.enableActivation(o.activation);
          std::vector<VariantCheck> checks = checkProblem(problem, o.variants, rng);
          for (size_t i = 0; i < checks.size(); ++i) {
            const Variant& v = o.variants[i];
            const VariantCheck& c = checks[i];
            if (!c.ran) {
              ++declined;
              std::printf("CHECK %-7s %-8s R=%-3s d=%.2f M=%-5ld K=%-5ld N=%-5ld declined\n", productName(product),
                          v.name().c_str(), block.label().c_str(), density, long(s.m), long(s.cols), long(s.rows));
              continue;
            }
            c.ok ? ++pass : ++fail;
            std::string key = std::string(productName(product)) + " " + v.name() + " R=" + block.label();
            double w = std::isfinite(c.result.relHost) ? std::max(c.result.relSimple, c.result.relHost) : 1e9;
            worst[key] = std::max(worst[key], w);
            std::printf("CHECK %-7s %-8s R=%-3s d=%.2f M=%-5ld K=%-5ld N=%-5ld nnzb=%-6d vs simple %.2e  vs f64 %.2e%s  %s\n",
                        productName(product), v.name().c_str(), block.label().c_str(), density, long(s.m), long(s.cols),
                        long(s.rows), pattern.nnz, c.result.relSimple, c.result.relHost,
                        problem.activated ? ((problem.pre ? "  dbias " : "  activated ") + std::to_string(c.relActivated)).c_str() : "",
                        c.ok ? "PASS" : "FAIL");
            std::fflush(stdout);
          }
        }
  std::printf("\n| product | variant | block | worst rel. error (max of vs simple, vs float64) |\n|---|---|---|---|\n");
  for (auto& [key, value] : worst) {
    char p[16], v[16], b[16];
    std::sscanf(key.c_str(), "%15s %15s %15s", p, v, b);
    std::printf("| %s | %s | %s | %.2e |\n", p, v, b + 2, value);
  }
  std::printf("\nchecks: %d pass, %d fail, %d declined\n", pass, fail, declined);
  return fail == 0 ? 0 : 1;
}

// Device copy bandwidth, bytes/s: a device-to-device cudaMemcpy of 1 GiB (or what fits), read + write.
double copyBandwidth() {
  size_t freeBytes = 0, totalBytes = 0;
  CHECK_CUDA(cudaMemGetInfo(&freeBytes, &totalBytes));
  const size_t bytes = std::min<size_t>(size_t{1} << 30, freeBytes / 4);
  void *from, *to;
  CHECK_CUDA(cudaMalloc(&from, bytes));
  CHECK_CUDA(cudaMalloc(&to, bytes));
  CHECK_CUDA(cudaMemset(from, 1, bytes));
  const double ms =
      medianMs([&](int) { CHECK_CUDA(cudaMemcpyAsync(to, from, bytes, cudaMemcpyDeviceToDevice)); }, 1, 3, 9);
  cudaFree(from);
  cudaFree(to);
  return 2.0 * bytes / (ms * 1e-3);
}

// Input sets whose weights together exceed twice the L2 cache, so each launch reads its weight from memory.
int setsBeyondL2(double bytesPerSet, int l2Bytes) {
  return static_cast<int>(std::clamp(std::ceil(2.0 * l2Bytes / std::max(bytesPerSet, 1.0)), 2.0, 64.0));
}

// Warps per CTA of decoding variant `variant` (dev's past the addon's kDecodeVariants).
int decodeWarpsOf(DType dtype, const BsrPatternView& pattern, int64_t m, int variant, int numSms) {
#ifndef TC_BENCH_NO_DEV
  if (variant >= bs::tc::kDecodeVariants) return bs::tc::decodeDevWarps(dtype, pattern, m, variant, numSms);
#endif
  return bs::tc::decodeWarps(dtype, pattern, m, std::max(variant, 0), numSms);
}

// bsrLinear with few tokens against cuBLAS dense, every case checked before it is timed.
int runDecode(const Options& o) {
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const double bandwidth = copyBandwidth();
  std::printf("copy bandwidth (device-to-device cudaMemcpy of 1 GiB, read + write): %.0f GB/s; L2 %d MB\n",
              bandwidth / 1e9, prop.l2CacheSize >> 20);
  cublasHandle_t handle = createBlas();
  const std::vector<int64_t> tokens = !o.tokens.empty() ? o.tokens : std::vector<int64_t>{1, 2, 4, 8, 16};
  const std::vector<std::pair<int64_t, int64_t>> kn =
      !o.shapes.empty() ? o.shapes : std::vector<std::pair<int64_t, int64_t>>{{4096, 4096}, {4096, 16384}};
  const std::vector<double> densities = !o.densities.empty() ? o.densities : std::vector<double>{0.25, 0.5};
  const size_t element = bs::dtypeSize(o.dtype);
  Rng rng{4242};
  int pass = 0, fail = 0, declined = 0;
  std::vector<std::string> rows;
  for (auto [k, n] : kn)
    for (int64_t m : tokens) {
      const double denseBytes = double(n) * k * element;
      DenseProblem dense(Product::Linear, o.dtype, m, k, n, setsBeyondL2(denseBytes, prop.l2CacheSize), false);
      const double denseUs = denseMs(handle, dense, 20) * 1e3;
      for (BlockShape block : o.blocks)
        for (double density : densities) {
          if (n % block.r != 0 || k % block.c != 0) continue;
          HostPattern pattern = makePattern(n, k, block, density, rng, o.equalRows);
          const double weightBytes = double(pattern.nnz) * block.r * block.c * element;
          Problem problem(Product::Linear, o.dtype, m, k, n, pattern, setsBeyondL2(weightBytes, prop.l2CacheSize),
                          rng.next());
          std::vector<VariantCheck> checks = checkProblem(problem, o.variants, rng);
          for (size_t i = 0; i < checks.size(); ++i) {
            const Variant& v = o.variants[i];
            const VariantCheck& c = checks[i];
            if (!c.ran) {
              ++declined;
              std::printf("DECODE %-4s R=%-3s d=%.2f M=%-2ld K=%-5ld N=%-5ld %-7s declined\n", dtypeLabel(o.dtype),
                          block.label().c_str(), density, long(m), long(k), long(n), v.name().c_str());
              continue;
            }
            c.ok ? ++pass : ++fail;
            const double us =
                medianMs([&](int set) { problem.runFast(set, v, problem.out); }, problem.sets, 20, 15) * 1e3;
            const double rate = weightBytes / (us * 1e-6);
            char line[320];
            std::snprintf(line, sizeof line,
                          "| %s | %s | %.2f | %ld | %ld | %ld | %s | %d | %.2f | %.2f | %.2f | %.1f | %.2f | %.0f | "
                          "%.2f | %.2e | %s |",
                          dtypeLabel(o.dtype), block.label().c_str(), density, long(m), long(k), long(n), v.name().c_str(),
                          decodeWarpsOf(o.dtype, problem.device.view, m, v.variant, prop.multiProcessorCount),
                          weightBytes / bandwidth * 1e6, us,
                          denseUs, denseUs / us, weightBytes / 1e6, rate / 1e9, rate / bandwidth,
                          std::max(c.result.relSimple, c.result.relHost), c.ok ? "PASS" : "FAIL");
            std::printf("%s\n", line);
            std::fflush(stdout);
            rows.push_back(line);
          }
        }
    }
  std::printf("\n| dtype | block | density | M | K | N | path | warps/CTA | model us (weight / copy bw) | us | "
              "cuBLAS dense us | speedup vs dense | weight MB | weight GB/s | fraction of copy bw | worst rel. error | "
              "check |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (auto& r : rows) std::printf("%s\n", r.c_str());
  std::printf("\ndecode checks: %d pass, %d fail, %d declined; copy bandwidth %.0f GB/s\n", pass, fail, declined,
              bandwidth / 1e9);
  destroyBlas(handle);
  return fail == 0 ? 0 : 1;
}

int runTiming(const Options& o) {
  cublasHandle_t handle = createBlas();
  std::vector<int64_t> tokens = !o.tokens.empty() ? o.tokens
                                : o.quick      ? std::vector<int64_t>{512}
                                               : std::vector<int64_t>{8192, 512};
  std::vector<std::pair<int64_t, int64_t>> kn = !o.shapes.empty() ? o.shapes
                                                : o.quick ? std::vector<std::pair<int64_t, int64_t>>{{4096, 4096}}
                                                          : std::vector<std::pair<int64_t, int64_t>>{
                                                                {4096, 4096}, {4096, 16384}, {16384, 4096}};
  const std::vector<double> densities = !o.densities.empty() ? o.densities : std::vector<double>{0.5, 0.25, 0.1};
  const int sets = o.sets;
  Rng rng{777};
  std::vector<std::string> rows;
  for (Product product : o.products)
    for (int64_t m : tokens)
      for (auto [k, n] : kn) {
        double dense;
        {
          DenseProblem problem(product, o.dtype, m, k, n, sets, !o.exactF32);
          dense = denseMs(handle, problem, m >= 4096 ? 5 : 20);
        }
        const double denseTflops = 2.0 * m * k * n / dense / 1e9;
        std::printf("cuBLAS %-7s M=%-5ld K=%-5ld N=%-5ld %.4f ms  %.1f TFLOP/s\n", productName(product), long(m),
                    long(k), long(n), dense, denseTflops);
        for (BlockShape block : o.blocks)
          for (double density : densities) {
            if (n % block.r != 0 || k % block.c != 0) continue;
            HostPattern pattern = makePattern(n, k, block, density, rng, o.equalRows);
            Problem problem(product, o.dtype, m, k, n, pattern, sets, rng.next());
            if (o.activate) problem.enableActivation(o.activation);
            if (product == Product::Sampled) {
              const int32_t* g = problem.device.view.columnGroups;
              std::printf("dW %s d=%.2f M=%ld K=%ld N=%ld: groups of 1/2/4/8 blocks per column %d/%d/%d/%d; the rule: %s\n",
                          block.label().c_str(), density, long(m), long(k), long(n), g[0], g[1], g[2], g[3],
                          bs::tcSampledPlan(o.dtype, problem.device.view, m).c_str());
            }
            for (const Variant& v : o.variants) {
              if (!problem.runFast(0, v, problem.out)) continue;
              CHECK_CUDA(cudaDeviceSynchronize());
              double work = problem.nonzeroFlops();
              int batch = work > 2e10 ? 5 : 20;
              auto report = [&](const std::string& name, double ms) {
                double tflops = work / ms / 1e9;
                char line[256];
                std::snprintf(line, sizeof line, "| %s | %s | %.2f | %ld | %ld | %ld | %s | %.4f | %.1f | %.1f | %.2f |",
                              productName(product), block.label().c_str(), density, long(m), long(k), long(n), name.c_str(), ms,
                              tflops, denseTflops, tflops / denseTflops);
                std::printf("%s\n", line);
                std::fflush(stdout);
                rows.push_back(line);
              };
              if (problem.activated) {
                report(v.name() + (product == Product::Linear ? " fused activation" : " fused backward"),
                       medianMs([&](int set) { problem.runFast(set, v, problem.out); }, sets, batch, 15));
                report(v.name() + (product == Product::Linear ? " then biasActivation" : " then its backward"),
                       medianMs([&](int set) {
                         problem.runFast(set, v, problem.out, false);
                         problem.runUnfusedPass();
                       }, sets, batch, 15));
              } else {
                report(v.name(), medianMs([&](int set) { problem.runFast(set, v, problem.out); }, sets, batch, 15));
              }
            }
          }
      }
  std::printf("\n| product | block | density | M | K | N | variant | ms | TFLOP/s (non-zero) | cuBLAS dense TFLOP/s | ratio |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (auto& r : rows) std::printf("%s\n", r.c_str());
  destroyBlas(handle);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  // The unfused activation backward (--activation with matmul) takes scratch from the addon's allocator, which
  // needs the device started; every launch here still goes to the legacy stream 0.
  bs::initDevice(0);
  if (o.dtype == DType::Float32 && o.mode != "decode" && !o.exactF32) bs::setAllowTf32(true);
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs, cc %d.%d; path for 32x32 blocks: %d (1 = mma, 2 = wgmma); dtype %s\n", prop.name,
              prop.multiProcessorCount, prop.major, prop.minor,
              int(bs::tcPathFor(o.dtype, BsrPatternView{4096, 4096, 32, 32, 128, 128, 1})),
              o.dtype == DType::Float32 ? (o.exactF32 ? "f32 (TF32 off)" : "f32 (TF32 allowed)")
              : o.dtype == DType::Float16 ? "f16"
                                          : "bf16");
  if (o.mode == "check") return runChecks(o);
  if (o.mode == "time") return runTiming(o);
  if (o.mode == "decode") return runDecode(o);
  std::fprintf(stderr, "unknown mode %s\n", o.mode.c_str());
  return 1;
}
