// The three block-sparse products in float32 on the CUDA cores, register-tiled: what float32 runs when TF32 is not
// allowed (the default, as PyTorch's), for blocks whose sides are multiples of 16 (32 for dW). Exact float32 FMAs, as
// the simple kernels of bsr.cu, which keep every other shape.
//
// bsrLinear and bsrMatmul: a CTA computes 128 tokens x BN features of one line (a block row for bsrLinear, a block
// column for bsrMatmul) and walks the line's blocks 16 deep at a time. Each thread holds 8 tokens x 4 features; per
// step of depth it reads 8 values of the dense operand and 4 of the block from shared memory (three 16-byte loads) for
// 32 FMAs. The next step's tiles are loaded into registers while this step's are used (two shared buffers, one
// barrier per step). The dense operand is stored depth-major (transposed on its way into shared memory) so that a
// thread's 8 tokens are one 32-byte read.
//
// sampledMatmul: a CTA computes a 32 x 32 tile of one stored block; its 8 warps take 8 tokens each of every 64-token
// step, each warp holding the whole tile (8 rows x 4 columns a thread), and add their partial tiles through shared
// memory at the end in a fixed order.
#include <cstdint>

#include "../kernels.h"

namespace bs {

namespace {

constexpr int kSimtTokens = 128;  // tokens of a bsrLinear / bsrMatmul tile
constexpr int kSimtDepth = 16;    // depth of one step along the reduction
constexpr int kThreadTokens = 8, kThreadFeatures = 4;

constexpr int simtThreads(int features) { return (kSimtTokens / kThreadTokens) * (features / kThreadFeatures); }

__device__ __forceinline__ float4 loadOrZero(const float* p, bool inside) {
  return inside ? __ldg(reinterpret_cast<const float4*>(p)) : make_float4(0.f, 0.f, 0.f, 0.f);
}

// kLinear: Y = X W^T (+ bias), lines are block rows, the reduction runs over each block's C columns, the output is a
// block row's R features. Otherwise dX = dY W: lines are block columns (the column-wise index), the reduction runs over
// each block's R rows, the output is a block column's C features. BN features of the line per CTA.
template <int BN, bool kLinear>
__global__ void __launch_bounds__(simtThreads(BN))
    simtProductKernel(const float* __restrict__ a, const float* __restrict__ values, const float* __restrict__ bias,
                      float* __restrict__ out, int64_t m, BsrPatternView pattern) {
  constexpr int kThreads = simtThreads(BN);
  constexpr int BM = kSimtTokens, BK = kSimtDepth;
  constexpr int kLoadsA = BM * BK / 4 / kThreads;  // 16-byte loads of the dense operand per thread and step
  static_assert(BN * BK / 4 == kThreads, "one 16-byte load of the block per thread and step");
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
  const int tx = tid % (BN / kThreadFeatures), ty = tid / (BN / kThreadFeatures);

  float4 nextA[kLoadsA];
  float4 nextB;
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
    if constexpr (kLinear) {  // W's rows are the outputs: 16 consecutive floats of row o0 + n
      const int n = tid / (BK / 4), k4 = tid % (BK / 4);
      nextB = __ldg(reinterpret_cast<const float4*>(block + static_cast<int64_t>(o0 + n) * C + k0 + k4 * 4));
    } else {  // W's columns are the outputs: BN consecutive floats of block row k0 + k
      const int k = tid / (BN / 4), n4 = tid % (BN / 4);
      nextB = __ldg(reinterpret_cast<const float4*>(block + static_cast<int64_t>(k0 + k) * C + o0 + n4 * 4));
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
    if constexpr (kLinear) {
      const int n = tid / (BK / 4), k4 = tid % (BK / 4);
      tileB[buffer][k4 * 4 + 0][n] = nextB.x;
      tileB[buffer][k4 * 4 + 1][n] = nextB.y;
      tileB[buffer][k4 * 4 + 2][n] = nextB.z;
      tileB[buffer][k4 * 4 + 3][n] = nextB.w;
    } else {
      const int k = tid / (BN / 4), n4 = tid % (BN / 4);
      *reinterpret_cast<float4*>(&tileB[buffer][k][n4 * 4]) = nextB;
    }
  };

  float acc[kThreadTokens][kThreadFeatures] = {};
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
      const float4 a0 = *reinterpret_cast<const float4*>(&tileA[buffer][k][ty * kThreadTokens]);
      const float4 a1 = *reinterpret_cast<const float4*>(&tileA[buffer][k][ty * kThreadTokens + 4]);
      const float4 b = *reinterpret_cast<const float4*>(&tileB[buffer][k][tx * kThreadFeatures]);
      const float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < kThreadTokens; ++i)
#pragma unroll
        for (int j = 0; j < kThreadFeatures; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    if (s + 1 < steps) store(buffer ^ 1);
    __syncthreads();
  }

  const int64_t feature = static_cast<int64_t>(line) * outWidth + o0 + tx * kThreadFeatures;
  float4 add = make_float4(0.f, 0.f, 0.f, 0.f);
  if (kLinear && bias != nullptr) add = make_float4(bias[feature], bias[feature + 1], bias[feature + 2], bias[feature + 3]);
#pragma unroll
  for (int i = 0; i < kThreadTokens; ++i) {
    const int64_t gm = m0 + ty * kThreadTokens + i;
    if (gm >= m) break;
    *reinterpret_cast<float4*>(out + gm * outStride + feature) =
        make_float4(acc[i][0] + add.x, acc[i][1] + add.y, acc[i][2] + add.z, acc[i][3] + add.w);
  }
}

constexpr int kSampledTile = 32, kSampledStep = 64, kSampledWarps = 8;

// dW[p, r, c] = sum_m dY[m, br_p*R + r] * X[m, bc_p*C + c] over one 32 x 32 tile of stored block p.
__global__ void __launch_bounds__(kSampledWarps * 32)
    simtSampledKernel(const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ dw, int64_t m,
                      BsrPatternView pattern) {
  constexpr int kThreads = kSampledWarps * 32, T = kSampledTile;
  constexpr int kLoads = kSampledStep * T / 4 / kThreads;  // 16-byte loads of each operand per thread and step
  // [buffer][dY, X][token][feature]; reused at the end for the warps' partial tiles (8 x 32 x 32 floats).
  __shared__ __align__(16) float tiles[2][2][kSampledStep][T];
  static_assert(sizeof(tiles) == kSampledWarps * T * T * sizeof(float), "the partial tiles fill the stage buffers");

  const int R = pattern.blockHeight, C = pattern.blockWidth;
  const int tilesR = R / T, tilesC = C / T;
  const int64_t tile = blockIdx.x;
  const int64_t p = tile / (tilesR * tilesC);
  const int r0 = static_cast<int>((tile / tilesC) % tilesR) * T;
  const int c0 = static_cast<int>(tile % tilesC) * T;
  const int64_t rowBase = static_cast<int64_t>(pattern.coordBlockRow[p]) * R + r0;
  const int64_t colBase = static_cast<int64_t>(pattern.coordBlockCol[p]) * C + c0;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int ty = lane / (T / kThreadFeatures), tx = lane % (T / kThreadFeatures);  // rows ty*8.., columns tx*4..
  const int64_t steps = (m + kSampledStep - 1) / kSampledStep;

  float4 nextDy[kLoads], nextX[kLoads];
  auto load = [&](int64_t s) {
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int index = tid + i * kThreads, token = index / (T / 4), f4 = index % (T / 4);
      const int64_t gm = s * kSampledStep + token;
      nextDy[i] = loadOrZero(dy + gm * pattern.rows + rowBase + f4 * 4, gm < m);
      nextX[i] = loadOrZero(x + gm * pattern.cols + colBase + f4 * 4, gm < m);
    }
  };
  auto store = [&](int buffer) {
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int index = tid + i * kThreads, token = index / (T / 4), f4 = index % (T / 4);
      *reinterpret_cast<float4*>(&tiles[buffer][0][token][f4 * 4]) = nextDy[i];
      *reinterpret_cast<float4*>(&tiles[buffer][1][token][f4 * 4]) = nextX[i];
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
    for (int k = 0; k < kSampledStep / kSampledWarps; ++k) {
      const int token = warp * (kSampledStep / kSampledWarps) + k;
      const float4 a0 = *reinterpret_cast<const float4*>(&tiles[buffer][0][token][ty * kThreadTokens]);
      const float4 a1 = *reinterpret_cast<const float4*>(&tiles[buffer][0][token][ty * kThreadTokens + 4]);
      const float4 b = *reinterpret_cast<const float4*>(&tiles[buffer][1][token][tx * kThreadFeatures]);
      const float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < kThreadTokens; ++i)
#pragma unroll
        for (int j = 0; j < kThreadFeatures; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    if (s + 1 < steps) store(buffer ^ 1);
    __syncthreads();
  }

  // Each warp's partial tile into shared memory, then each thread adds the 8 warps' values of 4 outputs in order.
  float* partial = &tiles[0][0][0][0];
#pragma unroll
  for (int i = 0; i < kThreadTokens; ++i)
    *reinterpret_cast<float4*>(partial + (warp * T + ty * kThreadTokens + i) * T + tx * kThreadFeatures) =
        make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
  __syncthreads();
  const int e = tid * 4, r = e / T, c = e % T;
  float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
  for (int w = 0; w < kSampledWarps; ++w) {
    const float4 v = *reinterpret_cast<const float4*>(partial + (w * T + r) * T + c);
    sum.x += v.x;
    sum.y += v.y;
    sum.z += v.z;
    sum.w += v.w;
  }
  *reinterpret_cast<float4*>(dw + (p * R + r0 + r) * C + c0 + c) = sum;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Features per CTA for an output side of `width` (a multiple of 16): the widest of 64, 32, 16 that divides it.
int simtFeatures(int width) { return width % 64 == 0 ? 64 : width % 32 == 0 ? 32 : 16; }

template <bool kLinear>
void launchSimtProduct(const float* a, const float* values, const float* bias, float* out, int64_t m,
                       const BsrPatternView& pattern, cudaStream_t stream) {
  const int outWidth = kLinear ? pattern.blockHeight : pattern.blockWidth;
  const int lines = kLinear ? pattern.blockRows : pattern.blockCols;
  const int features = simtFeatures(outWidth);
  const int64_t ctas = static_cast<int64_t>(lines) * (outWidth / features);
  const int64_t tilesM = (m + kSimtTokens - 1) / kSimtTokens;
  const char* name = kLinear ? "bsrLinear" : "bsrMatmul";
  BS_REQUIRE(tilesM <= 65535, std::string(name) + ": too many input rows for one launch (at most 8388480)");
  BS_REQUIRE(ctas <= INT32_MAX, std::string(name) + ": too many output tiles");
  const dim3 grid(static_cast<unsigned>(ctas), static_cast<unsigned>(tilesM));
  switch (features) {
    case 64:
      simtProductKernel<64, kLinear><<<grid, simtThreads(64), 0, stream>>>(a, values, bias, out, m, pattern);
      break;
    case 32:
      simtProductKernel<32, kLinear><<<grid, simtThreads(32), 0, stream>>>(a, values, bias, out, m, pattern);
      break;
    default:
      simtProductKernel<16, kLinear><<<grid, simtThreads(16), 0, stream>>>(a, values, bias, out, m, pattern);
  }
  BS_LAUNCH_CHECK("simtProductKernel");
}

}  // namespace

bool simtProductsFit(const BsrPatternView& pattern) {
  return pattern.blockHeight % 16 == 0 && pattern.blockWidth % 16 == 0;
}

bool simtSampledFits(const BsrPatternView& pattern) {
  return pattern.blockHeight % kSampledTile == 0 && pattern.blockWidth % kSampledTile == 0;
}

bool launchBsrLinearSimt(const float* x, const float* values, const float* bias, float* y, int64_t m,
                         const BsrPatternView& pattern, cudaStream_t stream) {
  if (!simtProductsFit(pattern) || !aligned16(x) || !aligned16(values) || !aligned16(y)) return false;
  launchSimtProduct<true>(x, values, bias, y, m, pattern, stream);
  return true;
}

bool launchBsrMatmulSimt(const float* dy, const float* values, float* dx, int64_t m, const BsrPatternView& pattern,
                         cudaStream_t stream) {
  if (!simtProductsFit(pattern) || !aligned16(dy) || !aligned16(values) || !aligned16(dx)) return false;
  launchSimtProduct<false>(dy, values, nullptr, dx, m, pattern, stream);
  return true;
}

bool launchSampledMatmulSimt(const float* dy, const float* x, float* dw, int64_t m, const BsrPatternView& pattern,
                             cudaStream_t stream) {
  if (!simtSampledFits(pattern) || !aligned16(dy) || !aligned16(x) || !aligned16(dw)) return false;
  const int64_t tiles = static_cast<int64_t>(pattern.nnzBlocks) * (pattern.blockHeight / kSampledTile) *
                        (pattern.blockWidth / kSampledTile);
  BS_REQUIRE(tiles <= INT32_MAX, "sampledMatmul: too many output tiles");
  simtSampledKernel<<<static_cast<unsigned>(tiles), kSampledWarps * 32, 0, stream>>>(dy, x, dw, m, pattern);
  BS_LAUNCH_CHECK("simtSampledKernel");
  return true;
}

}  // namespace bs
