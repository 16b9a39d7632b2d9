// The three block-sparse products in float32 on the CUDA cores, register-tiled: what float32 runs when TF32 is not
// allowed (the default, as PyTorch's), for blocks whose sides are multiples of 16. Exact float32 FMAs, as the simple
// kernels of bsr.cu, which keep every other shape.
//
// bsrLinear and bsrMatmul: a CTA computes 128 tokens x BN features of one line (a block row for bsrLinear, a block
// column for bsrMatmul) and walks the line's blocks 16 deep at a time. Each thread holds 8 tokens x 4 features; per
// step of depth it reads 8 values of the dense operand and 4 of the block from shared memory (three 16-byte loads) for
// 32 FMAs (bsrMatmul's 64-feature tiles: 8 x 8, four loads for 64 FMAs). The next step's tiles are loaded into
// registers while this step's are used (two shared buffers, one barrier per step). The dense operand is stored
// depth-major (transposed on its way into shared memory) so that a thread's 8 tokens are one 32-byte read.
//
// sampledMatmul: a CTA of 256 threads computes a 32 x 32 tile (16 x 16, 16 x 32, 32 x 16 where a side is not a
// multiple of 32) of one stored block. Groups of threads each hold the whole tile (8 rows x 4 columns a thread: a warp
// at 32 x 32) and take their share of every 64-token step; the groups' partial tiles are added through shared memory
// at the end in a fixed order.
#include <algorithm>
#include <cstdint>

#include "../kernels.h"

namespace bs {

namespace {

constexpr int kSimtTokens = 128;  // tokens of a bsrLinear / bsrMatmul tile
constexpr int kSimtDepth = 16;    // depth of one step along the reduction
constexpr int kThreadTokens = 8, kThreadFeatures = 4;

// Threads of a bsrLinear / bsrMatmul tile of `features` features with `perThread` features a thread.
constexpr int simtThreads(int features, int perThread) {
  return (kSimtTokens / kThreadTokens) * (features / perThread);
}

__device__ __forceinline__ float4 loadOrZero(const float* p, bool inside) {
  return inside ? __ldg(reinterpret_cast<const float4*>(p)) : make_float4(0.f, 0.f, 0.f, 0.f);
}

// acc += a b^T for one step of depth: a = 8 consecutive floats of shared memory (a thread's tokens or rows), b = TF
// (its features or columns) as runs of 4 consecutive floats kRunStride apart, all 16-byte aligned; 2 + TF / 4 16-byte
// loads, 8 TF FMAs.
template <int TF, int kRunStride>
__device__ __forceinline__ void accumulate(float (&acc)[kThreadTokens][TF], const float* a, const float* b) {
  const float4 a0 = *reinterpret_cast<const float4*>(a);
  const float4 a1 = *reinterpret_cast<const float4*>(a + 4);
  const float av[kThreadTokens] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
  float bv[TF];
#pragma unroll
  for (int run = 0; run < TF / 4; ++run) {
    const float4 b0 = *reinterpret_cast<const float4*>(b + run * kRunStride);
    bv[run * 4 + 0] = b0.x;
    bv[run * 4 + 1] = b0.y;
    bv[run * 4 + 2] = b0.z;
    bv[run * 4 + 3] = b0.w;
  }
#pragma unroll
  for (int i = 0; i < kThreadTokens; ++i)
#pragma unroll
    for (int j = 0; j < TF; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
}

// kLinear: Y = X W^T (+ bias), lines are block rows, the reduction runs over each block's C columns, the output is a
// block row's R features. Otherwise dX = dY W: lines are block columns (the column-wise index), the reduction runs over
// each block's R rows, the output is a block column's C features. BN features of the line per CTA, TF (4 or 8) a
// thread: with 8, two runs of 4 half the tile apart, so that a quarter-warp's 16-byte shared reads fall in distinct
// banks.
template <int BN, int TF, bool kLinear>
__global__ void __launch_bounds__(simtThreads(BN, TF))
    simtProductKernel(const float* __restrict__ a, const float* __restrict__ values, const float* __restrict__ bias,
                      float* __restrict__ out, int64_t m, BsrPatternView pattern) {
  constexpr int kThreads = simtThreads(BN, TF), kRuns = TF / 4, kRunStride = BN / kRuns;
  constexpr int BM = kSimtTokens, BK = kSimtDepth;
  constexpr int kLoadsA = BM * BK / 4 / kThreads;  // 16-byte loads of the dense operand per thread and step
  constexpr int kLoadsB = BN * BK / 4 / kThreads;  // and of the block
  __shared__ __align__(16) float tileA[2][BK][BM + 4];
  __shared__ __align__(16) float tileB[2][BK][BN + 4];

  const int R = pattern.blockHeight, C = pattern.blockWidth;
  const int outWidth = kLinear ? R : C, depth = kLinear ? C : R;
  const int chunks = outWidth / BN;
  const int line = static_cast<int>(blockIdx.x) / chunks;
  const int o0 = (static_cast<int>(blockIdx.x) % chunks) * BN;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * BM;
  const int32_t first = kLinear ? pattern.blockRowPtr[line] : pattern.blockColPtr[line];
  const int32_t last = kLinear ? pattern.blockRowPtr[line + 1] : pattern.blockColPtr[line + 1];
  const int stepsPerBlock = depth / BK;
  const int steps = (last - first) * stepsPerBlock;
  const int64_t aStride = kLinear ? pattern.cols : pattern.rows;
  const int64_t outStride = kLinear ? pattern.rows : pattern.cols;
  const int64_t blockSize = static_cast<int64_t>(R) * C;
  const int tid = threadIdx.x;
  const int tx = tid % (BN / TF), ty = tid / (BN / TF);  // features run * kRunStride + tx*4.., tokens ty*8..

  float4 nextA[kLoadsA];
  float4 nextB[kLoadsB];
  // Loads step s's tiles into registers: the dense operand's 128 x 16 slice at the block's place along the reduction,
  // and the block's 16 x BN slice.
  auto load = [&](int s) {
    const int32_t entry = first + s / stepsPerBlock;
    const int k0 = (s % stepsPerBlock) * BK;
    int64_t aColumn;
    const float* block;
    if constexpr (kLinear) {
      aColumn = static_cast<int64_t>(pattern.blockColIdx[entry]) * C + k0;
      block = values + entry * blockSize;
    } else {
      aColumn = static_cast<int64_t>(pattern.blockRowIdx[entry]) * R + k0;
      block = values + static_cast<int64_t>(pattern.valueIndex[entry]) * blockSize;
    }
#pragma unroll
    for (int i = 0; i < kLoadsA; ++i) {
      const int index = tid + i * kThreads, token = index / (BK / 4), k4 = index % (BK / 4);
      const int64_t gm = m0 + token;
      nextA[i] = loadOrZero(a + gm * aStride + aColumn + k4 * 4, gm < m);
    }
#pragma unroll
    for (int i = 0; i < kLoadsB; ++i) {
      const int index = tid + i * kThreads;
      if constexpr (kLinear) {  // W's rows are the outputs: 16 consecutive floats of row o0 + n
        const int n = index / (BK / 4), k4 = index % (BK / 4);
        nextB[i] = __ldg(reinterpret_cast<const float4*>(block + static_cast<int64_t>(o0 + n) * C + k0 + k4 * 4));
      } else {  // W's columns are the outputs: BN consecutive floats of block row k0 + k
        const int k = index / (BN / 4), n4 = index % (BN / 4);
        nextB[i] = __ldg(reinterpret_cast<const float4*>(block + static_cast<int64_t>(k0 + k) * C + o0 + n4 * 4));
      }
    }
  };
  auto store = [&](int buffer) {
#pragma unroll
    for (int i = 0; i < kLoadsA; ++i) {
      const int index = tid + i * kThreads, token = index / (BK / 4), k4 = index % (BK / 4);
      tileA[buffer][k4 * 4 + 0][token] = nextA[i].x;
      tileA[buffer][k4 * 4 + 1][token] = nextA[i].y;
      tileA[buffer][k4 * 4 + 2][token] = nextA[i].z;
      tileA[buffer][k4 * 4 + 3][token] = nextA[i].w;
    }
#pragma unroll
    for (int i = 0; i < kLoadsB; ++i) {
      const int index = tid + i * kThreads;
      if constexpr (kLinear) {
        const int n = index / (BK / 4), k4 = index % (BK / 4);
        tileB[buffer][k4 * 4 + 0][n] = nextB[i].x;
        tileB[buffer][k4 * 4 + 1][n] = nextB[i].y;
        tileB[buffer][k4 * 4 + 2][n] = nextB[i].z;
        tileB[buffer][k4 * 4 + 3][n] = nextB[i].w;
      } else {
        const int k = index / (BN / 4), n4 = index % (BN / 4);
        *reinterpret_cast<float4*>(&tileB[buffer][k][n4 * 4]) = nextB[i];
      }
    }
  };

  float acc[kThreadTokens][TF] = {};
  if (steps > 0) {
    load(0);
    store(0);
  }
  __syncthreads();
  for (int s = 0; s < steps; ++s) {
    const int buffer = s & 1;
    if (s + 1 < steps) load(s + 1);
#pragma unroll
    for (int k = 0; k < BK; ++k) {
      accumulate<TF, kRunStride>(acc, &tileA[buffer][k][ty * kThreadTokens], &tileB[buffer][k][tx * 4]);
    }
    if (s + 1 < steps) store(buffer ^ 1);
    __syncthreads();
  }

#pragma unroll
  for (int run = 0; run < kRuns; ++run) {
    const int64_t feature = static_cast<int64_t>(line) * outWidth + o0 + run * kRunStride + tx * 4;
    float4 add = make_float4(0.f, 0.f, 0.f, 0.f);
    if (kLinear && bias != nullptr)
      add = make_float4(bias[feature], bias[feature + 1], bias[feature + 2], bias[feature + 3]);
#pragma unroll
    for (int i = 0; i < kThreadTokens; ++i) {
      const int64_t gm = m0 + ty * kThreadTokens + i;
      if (gm >= m) break;
      *reinterpret_cast<float4*>(out + gm * outStride + feature) =
          make_float4(acc[i][run * 4] + add.x, acc[i][run * 4 + 1] + add.y, acc[i][run * 4 + 2] + add.z,
                      acc[i][run * 4 + 3] + add.w);
    }
  }
}

constexpr int kSampledThreads = 256, kSampledStep = 64;

// dW[p, r, c] = sum_m dY[m, br_p*R + r] * X[m, bc_p*C + c] over one TR x TC tile (16 or 32 each) of stored block p.
// The tile takes (TR / 8) x (TC / 4) threads; the CTA's threads form as many such groups, each taking its share of
// every 64-token step, and the groups' partial tiles are added in a fixed order at the end.
template <int TR, int TC>
__global__ void __launch_bounds__(kSampledThreads)
    simtSampledKernel(const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ dw, int64_t m,
                      BsrPatternView pattern) {
  constexpr int kLanes = (TR / kThreadTokens) * (TC / kThreadFeatures);  // threads of one tile
  constexpr int kGroups = kSampledThreads / kLanes, kGroupTokens = kSampledStep / kGroups;
  constexpr int kLoadsDy = kSampledStep * TR / 4 / kSampledThreads, kLoadsX = kSampledStep * TC / 4 / kSampledThreads;
  static_assert(kLoadsDy >= 1 && kLoadsX >= 1 && kGroupTokens >= 1, "tile too small for the step");
  // Two stages of dY's and X's slices; at the end the groups' partial tiles (kGroups x TR x TC = 8192 floats) in the
  // same memory.
  constexpr int kStageFloats = 2 * kSampledStep * (TR + TC), kPartialFloats = kGroups * TR * TC;
  __shared__ __align__(16) float shared[kStageFloats > kPartialFloats ? kStageFloats : kPartialFloats];
  auto tileDy = reinterpret_cast<float(*)[kSampledStep][TR]>(shared);
  auto tileX = reinterpret_cast<float(*)[kSampledStep][TC]>(shared + 2 * kSampledStep * TR);
  float* partial = shared;

  const int R = pattern.blockHeight, C = pattern.blockWidth;
  const int tilesR = R / TR, tilesC = C / TC;
  const int64_t tile = blockIdx.x;
  const int64_t p = tile / (tilesR * tilesC);
  const int r0 = static_cast<int>((tile / tilesC) % tilesR) * TR;
  const int c0 = static_cast<int>(tile % tilesC) * TC;
  const int64_t rowBase = static_cast<int64_t>(pattern.coordBlockRow[p]) * R + r0;
  const int64_t colBase = static_cast<int64_t>(pattern.coordBlockCol[p]) * C + c0;
  const int tid = threadIdx.x, group = tid / kLanes, lane = tid % kLanes;
  const int ty = lane / (TC / kThreadFeatures), tx = lane % (TC / kThreadFeatures);  // rows ty*8.., columns tx*4..
  const int64_t steps = (m + kSampledStep - 1) / kSampledStep;

  float4 nextDy[kLoadsDy], nextX[kLoadsX];
  auto load = [&](int64_t s) {
#pragma unroll
    for (int i = 0; i < kLoadsDy; ++i) {
      const int index = tid + i * kSampledThreads, token = index / (TR / 4), f4 = index % (TR / 4);
      const int64_t gm = s * kSampledStep + token;
      nextDy[i] = loadOrZero(dy + gm * pattern.rows + rowBase + f4 * 4, gm < m);
    }
#pragma unroll
    for (int i = 0; i < kLoadsX; ++i) {
      const int index = tid + i * kSampledThreads, token = index / (TC / 4), f4 = index % (TC / 4);
      const int64_t gm = s * kSampledStep + token;
      nextX[i] = loadOrZero(x + gm * pattern.cols + colBase + f4 * 4, gm < m);
    }
  };
  auto store = [&](int buffer) {
#pragma unroll
    for (int i = 0; i < kLoadsDy; ++i) {
      const int index = tid + i * kSampledThreads, token = index / (TR / 4), f4 = index % (TR / 4);
      *reinterpret_cast<float4*>(&tileDy[buffer][token][f4 * 4]) = nextDy[i];
    }
#pragma unroll
    for (int i = 0; i < kLoadsX; ++i) {
      const int index = tid + i * kSampledThreads, token = index / (TC / 4), f4 = index % (TC / 4);
      *reinterpret_cast<float4*>(&tileX[buffer][token][f4 * 4]) = nextX[i];
    }
  };

  float acc[kThreadTokens][kThreadFeatures] = {};
  load(0);
  store(0);
  __syncthreads();
  for (int64_t s = 0; s < steps; ++s) {
    const int buffer = static_cast<int>(s & 1);
    if (s + 1 < steps) load(s + 1);
#pragma unroll
    for (int k = 0; k < kGroupTokens; ++k) {
      const int token = group * kGroupTokens + k;
      accumulate<kThreadFeatures, 0>(acc, &tileDy[buffer][token][ty * kThreadTokens],
                                     &tileX[buffer][token][tx * kThreadFeatures]);
    }
    if (s + 1 < steps) store(buffer ^ 1);
    __syncthreads();
  }

  // Each group's partial tile into shared memory, then each thread adds the groups' values of its outputs in order.
#pragma unroll
  for (int i = 0; i < kThreadTokens; ++i)
    *reinterpret_cast<float4*>(&partial[(group * TR + ty * kThreadTokens + i) * TC + tx * kThreadFeatures]) =
        make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
  __syncthreads();
  for (int e = tid * 4; e < TR * TC; e += kSampledThreads * 4) {
    const int r = e / TC, c = e % TC;
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
    for (int g = 0; g < kGroups; ++g) {
      const float4 v = *reinterpret_cast<const float4*>(&partial[(g * TR + r) * TC + c]);
      sum.x += v.x;
      sum.y += v.y;
      sum.z += v.z;
      sum.w += v.w;
    }
    *reinterpret_cast<float4*>(dw + (p * R + r0 + r) * C + c0 + c) = sum;
  }
}

// The tile side for a block side (a multiple of 16): 32 where it divides it, else 16.
int sampledSide(int side) { return side % 32 == 0 ? 32 : 16; }

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Block sides the tiles divide: multiples of 16.
bool simtFits(const BsrPatternView& pattern) { return pattern.blockHeight % 16 == 0 && pattern.blockWidth % 16 == 0; }

// Features per CTA for an output side of `width` (a multiple of 16): the widest of 64, 32, 16 that divides it.
int simtFeatures(int width) { return width % 64 == 0 ? 64 : width % 32 == 0 ? 32 : 16; }

template <bool kLinear>
void launchSimtProduct(const float* a, const float* values, const float* bias, float* out, int64_t m,
                       const BsrPatternView& pattern, cudaStream_t stream) {
  const int outWidth = kLinear ? pattern.blockHeight : pattern.blockWidth;
  const int lines = kLinear ? pattern.blockRows : pattern.blockCols;
  const int features = simtFeatures(outWidth);
  const int64_t ctas = static_cast<int64_t>(lines) * (outWidth / features);
  const char* name = kLinear ? "bsrLinear" : "bsrMatmul";
  BS_REQUIRE(ctas <= INT32_MAX, std::string(name) + ": too many output tiles");
  // The token tiles ride in the grid's y, at most 65535 a launch: more tokens run as several launches.
  constexpr int64_t kMaxLaunchTokens = int64_t{65535} * kSimtTokens;
  if (m > kMaxLaunchTokens) {
    const int64_t inWidth = kLinear ? pattern.cols : pattern.rows, outStride = kLinear ? pattern.rows : pattern.cols;
    for (int64_t first = 0; first < m; first += kMaxLaunchTokens)
      launchSimtProduct<kLinear>(a + first * inWidth, values, bias, out + first * outStride,
                                 std::min(kMaxLaunchTokens, m - first), pattern, stream);
    return;
  }
  const int64_t tilesM = (m + kSimtTokens - 1) / kSimtTokens;
  const dim3 grid(static_cast<unsigned>(ctas), static_cast<unsigned>(tilesM));
  // 8 features a thread only for bsrMatmul's 64-feature tiles: measured 1.01-1.15x there on an H200, slower for the
  // forward and at 32 features (docs/kernels.md, "float32 on the CUDA cores").
  switch (features) {
    case 64:
      if constexpr (kLinear)
        simtProductKernel<64, 4, true><<<grid, simtThreads(64, 4), 0, stream>>>(a, values, bias, out, m, pattern);
      else
        simtProductKernel<64, 8, false><<<grid, simtThreads(64, 8), 0, stream>>>(a, values, bias, out, m, pattern);
      break;
    case 32:
      simtProductKernel<32, 4, kLinear><<<grid, simtThreads(32, 4), 0, stream>>>(a, values, bias, out, m, pattern);
      break;
    default:
      simtProductKernel<16, 4, kLinear><<<grid, simtThreads(16, 4), 0, stream>>>(a, values, bias, out, m, pattern);
  }
  BS_LAUNCH_CHECK("simtProductKernel");
}

}  // namespace

bool launchBsrLinearSimt(const float* x, const float* values, const float* bias, float* y, int64_t m,
                         const BsrPatternView& pattern, cudaStream_t stream) {
  if (!simtFits(pattern) || !aligned16(x) || !aligned16(values) || !aligned16(y)) return false;
  launchSimtProduct<true>(x, values, bias, y, m, pattern, stream);
  return true;
}

bool launchBsrMatmulSimt(const float* dy, const float* values, float* dx, int64_t m, const BsrPatternView& pattern,
                         cudaStream_t stream) {
  if (!simtFits(pattern) || !aligned16(dy) || !aligned16(values) || !aligned16(dx)) return false;
  launchSimtProduct<false>(dy, values, nullptr, dx, m, pattern, stream);
  return true;
}

bool launchSampledMatmulSimt(const float* dy, const float* x, float* dw, int64_t m, const BsrPatternView& pattern,
                             cudaStream_t stream) {
  if (!simtFits(pattern) || !aligned16(dy) || !aligned16(x) || !aligned16(dw)) return false;
  const int tr = sampledSide(pattern.blockHeight), tc = sampledSide(pattern.blockWidth);
  const int64_t tiles =
      static_cast<int64_t>(pattern.nnzBlocks) * (pattern.blockHeight / tr) * (pattern.blockWidth / tc);
  BS_REQUIRE(tiles <= INT32_MAX, "sampledMatmul: too many output tiles");
  const unsigned grid = static_cast<unsigned>(tiles);
  if (tr == 32 && tc == 32)
    simtSampledKernel<32, 32><<<grid, kSampledThreads, 0, stream>>>(dy, x, dw, m, pattern);
  else if (tr == 32)
    simtSampledKernel<32, 16><<<grid, kSampledThreads, 0, stream>>>(dy, x, dw, m, pattern);
  else if (tc == 32)
    simtSampledKernel<16, 32><<<grid, kSampledThreads, 0, stream>>>(dy, x, dw, m, pattern);
  else
    simtSampledKernel<16, 16><<<grid, kSampledThreads, 0, stream>>>(dy, x, dw, m, pattern);
  BS_LAUNCH_CHECK("simtSampledKernel");
  return true;
}

}  // namespace bs
