// sm_80+ path: the dispatched mma.sync tiles (bsr_mma.cuh holds the kernel; the variant kept only for
// measurement is in kernels-cuda/dev/), and float32 storage (only when TF32 is allowed): mma.sync m16n8k8
// .tf32 from padded float32 tiles.
#include "bsr_mma.cuh"

namespace bs::tc {

namespace {

using sm80::cmin;
using sm80::MmaTraits;

// The dispatched tiles per block size: MmaTraits<T, op, block, tokens (dW: rows) per tile, warps along
// tokens, warps along features, pipeline stages>, measured best on an H100 (docs/kernels.md).
template <typename T, Op kOp> using Tile32 = MmaTraits<T, kOp, 32, kMmaTileTokens, 4, 1, 4>;
template <typename T, Op kOp> using Tile64 = MmaTraits<T, kOp, 64, kMmaTileTokens, 2, 2, 4>;
template <typename T, Op kOp> using Tile128 = MmaTraits<T, kOp, 128, kMmaTileTokens, 2, 4, 3>;
template <typename T> using SampledTile128 = MmaTraits<T, Op::Sampled, 128, 128, 2, 4, 4>;

template <typename T, Op kOp>
bool launchBlock(const KernelArgs& args, int blockSize, int variant, cudaStream_t stream) {
  using sm80::launch;
  if (variant != kDefaultTile) return false;
  switch (blockSize) {
    case 32: return launch<Tile32<T, kOp>>(args, stream);
    case 64: return launch<Tile64<T, kOp>>(args, stream);
    case 128:
      if constexpr (kOp == Op::Sampled) return launch<SampledTile128<T>>(args, stream);
      else return launch<Tile128<T, kOp>>(args, stream);
  }
  return false;
}

template <typename T>
bool launchTyped(Op op, const KernelArgs& args, int blockSize, int variant, cudaStream_t stream) {
  switch (op) {
    case Op::Linear: return launchBlock<T, Op::Linear>(args, blockSize, variant, stream);
    case Op::Matmul: return launchBlock<T, Op::Matmul>(args, blockSize, variant, stream);
    case Op::Sampled: return launchBlock<T, Op::Sampled>(args, blockSize, variant, stream);
  }
  return false;
}

// ---------------------------------------------------------------- float32 in TF32: mma.sync m16n8k8
// The same walk over the pattern with float32 tiles. Shared memory rows are padded instead of swizzled
// (4 floats for K-major tiles, 8 for MN-major ones) so that the scalar fragment loads of a warp hit 32
// distinct banks; each element is rounded to TF32 (cvt.rna) as it is loaded into a fragment.

template <Op kOp_, int kBlock_, int kWarpsM_, int kWarpsN_, int kStages_>
struct Tf32Traits {
  static constexpr Op kOp = kOp_;
  static constexpr int R = kBlock_, C = kBlock_;
  static constexpr int kTileM = 128;  // Linear/Matmul: tokens; Sampled: G * R output rows
  static constexpr int kTileN = kOp == Op::Linear ? R : C;
  static constexpr int kStep = 32;  // floats of K per pipeline step (a slice of a block, or 32 tokens)
  static constexpr int kGroup = kOp == Op::Sampled ? kTileM / R : 1;
  static constexpr bool kAKMajor = kOp != Op::Sampled;
  static constexpr bool kBKMajor = kOp == Op::Linear;
  // Row strides in floats: K-major tiles are [MN][kStep + 4], MN-major tiles [kStep][MN + 8].
  static constexpr int kStrideA = kAKMajor ? kStep + 4 : kTileM + 8;
  static constexpr int kStrideB = kBKMajor ? kStep + 4 : kTileN + 8;
  static constexpr int kWarpsM = kWarpsM_, kWarpsN = kWarpsN_, kStages = kStages_;
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kWarpM = kTileM / kWarpsM, kWarpN = kTileN / kWarpsN;
  static constexpr int kMmaM = kWarpM / 16, kMmaN = kWarpN / 8;
  static constexpr int kABytes = (kAKMajor ? kTileM : kStep) * kStrideA * 4;
  static constexpr int kBBytes = (kBKMajor ? kTileN : kStep) * kStrideB * 4;
  static constexpr int kStageBytes = kABytes + kBBytes;
  static constexpr int kSmemBytes = 128 + kStages * kStageBytes + 2 * kIndexCapacity * 4;

  static_assert(kTileM % R == 0 && (kOp == Op::Sampled || (kOp == Op::Linear ? C : R) % kStep == 0),
                "steps cover whole blocks");
  static_assert(kWarpM % 16 == 0 && kWarpN % 8 == 0, "warp tiles are whole m16n8 tiles");
  static_assert((kTileM * kStep / 4) % kThreads == 0 && (kTileN * kStep / 4) % kThreads == 0,
                "every thread copies the same number of chunks");
};

// Loads the A and B tiles of pipeline step `step` into one stage (16-byte chunks of 4 floats).
template <class K>
struct Tf32StepLoader {
  const KernelArgs& args;
  const TileWork& work;
  const int32_t* indexA;
  const int32_t* indexB;

  __device__ __forceinline__ void operator()(int step, uint8_t* stage, int tid) const {
    const float* a = static_cast<const float*>(args.a);
    const float* b = static_cast<const float*>(args.b);
    const uint32_t aSmem = smemAddress(stage), bSmem = aSmem + K::kABytes;
    constexpr int kChunksPerStep = K::kStep / 4;
    if constexpr (K::kOp == Op::Linear || K::kOp == Op::Matmul) {
      constexpr int kStepsPerBlock = (K::kOp == Op::Linear ? K::C : K::R) / K::kStep;
      const int entry = step / kStepsPerBlock, slice = (step % kStepsPerBlock) * K::kStep;
      const int64_t aColumn = entryColumn<K::kOp, K::R, K::C>(args, work, indexA, entry) + slice;
      const int64_t lda = K::kOp == Op::Linear ? args.cols : args.rows;
#pragma unroll
      for (int it = 0; it < K::kTileM * kChunksPerStep / K::kThreads; ++it) {
        int id = tid + it * K::kThreads, row = id / kChunksPerStep, chunk = id % kChunksPerStep;
        int64_t token = work.tokenBase + row;
        bool valid = token < args.m;
        const float* src = a + (valid ? token * lda + aColumn + chunk * 4 : 0);
        cpAsync16(aSmem + (row * K::kStrideA + chunk * 4) * 4, src, valid);
      }
      if constexpr (K::kOp == Op::Linear) {
        // B: the R x kStep slice of block (first + entry), K-major.
        const float* block = b + static_cast<int64_t>(work.first + entry) * K::R * K::C + slice;
#pragma unroll
        for (int it = 0; it < K::R * kChunksPerStep / K::kThreads; ++it) {
          int id = tid + it * K::kThreads, row = id / kChunksPerStep, chunk = id % kChunksPerStep;
          cpAsync16(bSmem + (row * K::kStrideB + chunk * 4) * 4, block + row * K::C + chunk * 4, true);
        }
      } else {
        // B: rows [slice, slice + kStep) of the entry's value block, all C columns, N-major.
        const float* block = b + (static_cast<int64_t>(entryValue(args, work, indexB, entry)) * K::R + slice) * K::C;
        constexpr int kChunksPerK = K::C / 4;
#pragma unroll
        for (int it = 0; it < K::kStep * kChunksPerK / K::kThreads; ++it) {
          int id = tid + it * K::kThreads, krow = id / kChunksPerK, chunk = id % kChunksPerK;
          cpAsync16(bSmem + (krow * K::kStrideB + chunk * 4) * 4, block + krow * K::C + chunk * 4, true);
        }
      }
    } else {
      // Sampled: A = dY^T (G*R rows, M-major), B = X (C columns, N-major), kStep tokens deep.
      const int64_t token0 = work.tokenBase + static_cast<int64_t>(step) * K::kStep;
      constexpr int kChunksPerKA = K::kTileM / 4;
#pragma unroll
      for (int it = 0; it < K::kStep * kChunksPerKA / K::kThreads; ++it) {
        int id = tid + it * K::kThreads, krow = id / kChunksPerKA, chunk = id % kChunksPerKA;
        int member = chunk * 4 / K::R, within = chunk * 4 % K::R;
        int64_t token = token0 + krow;
        bool valid = token < work.tokenEnd && member < work.count;
        const float* src = a + (valid ? token * args.rows + indexA[member] + within : 0);
        cpAsync16(aSmem + (krow * K::kStrideA + chunk * 4) * 4, src, valid);
      }
      constexpr int kChunksPerKB = K::C / 4;
      const int64_t bColumn = static_cast<int64_t>(work.line) * K::C;
#pragma unroll
      for (int it = 0; it < K::kStep * kChunksPerKB / K::kThreads; ++it) {
        int id = tid + it * K::kThreads, krow = id / kChunksPerKB, chunk = id % kChunksPerKB;
        int64_t token = token0 + krow;
        bool valid = token < work.tokenEnd;
        const float* src = b + (valid ? token * args.cols + bColumn + chunk * 4 : 0);
        cpAsync16(bSmem + (krow * K::kStrideB + chunk * 4) * 4, src, valid);
      }
    }
  }
};

// One warp's share of a stage: per k8 slice, the TF32 fragments (rows g, g+8 / k t, t+4) and the mma grid.
template <class K>
__device__ __forceinline__ void computeTf32Stage(const float* aTile, const float* bTile, int warpM, int warpN, int lane,
                                                 float (&acc)[K::kMmaM][K::kMmaN][4]) {
  const int g = lane >> 2, t = lane & 3;
  auto aAt = [&](int m, int k) { return aTile[K::kAKMajor ? m * K::kStrideA + k : k * K::kStrideA + m]; };
  auto bAt = [&](int k, int n) { return bTile[K::kBKMajor ? n * K::kStrideB + k : k * K::kStrideB + n]; };
#pragma unroll
  for (int kk = 0; kk < K::kStep / 8; ++kk) {
    const int k0 = kk * 8 + t;
    uint32_t af[K::kMmaM][4], bf[K::kMmaN][2];
#pragma unroll
    for (int mt = 0; mt < K::kMmaM; ++mt) {
      const int m0 = warpM * K::kWarpM + mt * 16 + g;
      af[mt][0] = toTf32(aAt(m0, k0));
      af[mt][1] = toTf32(aAt(m0 + 8, k0));
      af[mt][2] = toTf32(aAt(m0, k0 + 4));
      af[mt][3] = toTf32(aAt(m0 + 8, k0 + 4));
    }
#pragma unroll
    for (int nt = 0; nt < K::kMmaN; ++nt) {
      const int n0 = warpN * K::kWarpN + nt * 8 + g;
      bf[nt][0] = toTf32(bAt(k0, n0));
      bf[nt][1] = toTf32(bAt(k0 + 4, n0));
    }
#pragma unroll
    for (int mt = 0; mt < K::kMmaM; ++mt)
#pragma unroll
      for (int nt = 0; nt < K::kMmaN; ++nt) mma1688Tf32(acc[mt][nt], af[mt], bf[nt]);
  }
}

template <class K>
__global__ void __launch_bounds__(K::kThreads) bsrMmaTf32Kernel(const KernelArgs args) {
  extern __shared__ uint8_t smemRaw[];
  // Aligned through an integer, which makes the accesses below generic rather than shared-memory ones. The
  // shared-space form (offsetting smemRaw itself, as the wgmma kernel does) measured 2-7% slower here on an
  // H200 (docs/kernels.md), so this kernel keeps the form it was tuned with.
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smemRaw) + 127) & ~uintptr_t(127));
  int32_t* indexA = reinterpret_cast<int32_t*>(smem + K::kStages * K::kStageBytes);
  int32_t* indexB = indexA + kIndexCapacity;
  const int tid = threadIdx.x;

  TileWork work;
  if (!tileWork<K::kOp, K::R, K::C, K::kTileM, K::kStep, K::kGroup>(args, work)) return;
  fillIndex<K::kOp, K::R, K::C>(args, work, indexA, indexB, tid, K::kThreads);
  __syncthreads();
  const Tf32StepLoader<K> load{args, work, indexA, indexB};
  const int steps = work.steps;

  const int warp = tid / 32, lane = tid % 32;
  const int warpM = warp % K::kWarpsM, warpN = warp / K::kWarpsM;
  float acc[K::kMmaM][K::kMmaN][4];
#pragma unroll
  for (int i = 0; i < K::kMmaM; ++i)
#pragma unroll
    for (int j = 0; j < K::kMmaN; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < K::kStages - 1; ++s) {
    if (s < steps) load(s, smem + s * K::kStageBytes, tid);
    cpAsyncCommit();
  }
  for (int step = 0; step < steps; ++step) {
    cpAsyncWait<K::kStages - 2>();
    __syncthreads();  // stage `step` landed for every thread; stage `step - 1` is free again
    const int next = step + K::kStages - 1;
    if (next < steps) load(next, smem + (next % K::kStages) * K::kStageBytes, tid);
    cpAsyncCommit();
    const uint8_t* stage = smem + (step % K::kStages) * K::kStageBytes;
    computeTf32Stage<K>(reinterpret_cast<const float*>(stage), reinterpret_cast<const float*>(stage + K::kABytes),
                        warpM, warpN, lane, acc);
  }
  cpAsyncWait<0>();

  // Epilogue: each thread holds rows g and g+8 of every m16n8 tile, two adjacent columns each.
  const int g = lane >> 2, c2 = (lane & 3) * 2;
  float* out = static_cast<float*>(args.out);
#pragma unroll
  for (int mt = 0; mt < K::kMmaM; ++mt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = warpM * K::kWarpM + mt * 16 + g + half * 8;
#pragma unroll
      for (int nt = 0; nt < K::kMmaN; ++nt) {
        const int col = warpN * K::kWarpN + nt * 8 + c2;
        float2 v = make_float2(acc[mt][nt][half * 2], acc[mt][nt][half * 2 + 1]);
        if constexpr (K::kOp == Op::Sampled) {
          const int member = row / K::R;
          if (member >= work.count) continue;
          const int64_t at = (static_cast<int64_t>(indexB[member]) * K::R + row % K::R) * K::C + col;
          float* dst = args.partials ? args.partials + static_cast<int64_t>(blockIdx.z) * args.nnzBlocks * K::R * K::C
                                     : out;
          *reinterpret_cast<float2*>(dst + at) = v;
        } else {
          const int64_t token = work.tokenBase + row;
          if (token >= args.m) continue;
          if constexpr (K::kOp == Op::Linear) {
            const int64_t feature = static_cast<int64_t>(work.line) * K::R + col;
            if (args.bias) {
              const float* bias = static_cast<const float*>(args.bias) + feature;
              v.x += bias[0];
              v.y += bias[1];
            }
            *reinterpret_cast<float2*>(out + token * args.rows + feature) = v;
          } else {
            *reinterpret_cast<float2*>(out + token * args.cols + static_cast<int64_t>(work.line) * K::C + col) = v;
          }
        }
      }
    }
  }
}

template <class K>
bool launchTf32Kernel(const KernelArgs& argsIn, cudaStream_t stream) {
  KernelArgs args = argsIn;
  dim3 grid;
  if constexpr (K::kOp == Op::Sampled) {
    if (args.groupList != nullptr) return false;  // the tail's pieces are the wgmma tile's
    const int64_t splits = (args.m + args.tokensPerSplit - 1) / args.tokensPerSplit;
    const int64_t groups = (args.blockRows + K::kGroup - 1) / K::kGroup;
    if (groups > 65535 || splits > 65535) return false;
    grid = dim3(static_cast<unsigned>(args.blockCols), static_cast<unsigned>(groups), static_cast<unsigned>(splits));
  } else {
    const int64_t tilesM = (args.m + K::kTileM - 1) / K::kTileM;
    const int64_t tilesN = K::kOp == Op::Linear ? args.blockRows : args.blockCols;
    if (tilesM * tilesN > INT32_MAX) return false;
    args.tilesM = static_cast<int32_t>(tilesM);
    args.tilesN = static_cast<int32_t>(tilesN);
    // Twice the depth: the slab heuristic counts 2-byte elements.
    args.groupM = rasterGroup(args.tilesM, K::kTileM, 2 * (K::kOp == Op::Linear ? args.cols : args.rows));
    grid = dim3(static_cast<unsigned>(tilesM * tilesN));
  }
  auto kernel = bsrMmaTf32Kernel<K>;
  BS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, K::kSmemBytes));
  kernel<<<grid, K::kThreads, K::kSmemBytes, stream>>>(args);
  BS_LAUNCH_CHECK("bsrMmaTf32Kernel");
  return true;
}

template <Op kOp>
bool launchTf32Block(const KernelArgs& args, int blockSize, cudaStream_t stream) {
  switch (blockSize) {
    case 32: return launchTf32Kernel<Tf32Traits<kOp, 32, 4, 1, 4>>(args, stream);
    case 64: return launchTf32Kernel<Tf32Traits<kOp, 64, 2, 2, 3>>(args, stream);
    case 128: return launchTf32Kernel<Tf32Traits<kOp, 128, 2, 4, 3>>(args, stream);
  }
  return false;
}

bool launchTf32(Op op, const KernelArgs& args, int blockSize, cudaStream_t stream) {
  switch (op) {
    case Op::Linear: return launchTf32Block<Op::Linear>(args, blockSize, stream);
    case Op::Matmul: return launchTf32Block<Op::Matmul>(args, blockSize, stream);
    case Op::Sampled: return launchTf32Block<Op::Sampled>(args, blockSize, stream);
  }
  return false;
}


}  // namespace

int mmaSampledCtasPerSm(int block) {
  auto resident = [](auto traits) {
    using K = decltype(traits);
    return residentCtas(sm80::bsrMmaKernel<K>, K::kThreads, K::kSmemBytes);
  };
  using T = __nv_bfloat16;
  switch (block) {
    case 32: return resident(Tile32<T, Op::Sampled>{});
    case 64: return resident(Tile64<T, Op::Sampled>{});
    case 128: return resident(SampledTile128<T>{});
  }
  return 0;
}

bool launchMma(Op op, DType dtype, const KernelArgs& args, int blockSize, int variant, int /*numSms*/,
               cudaStream_t stream) {
  if (dtype == DType::BFloat16) return launchTyped<__nv_bfloat16>(op, args, blockSize, variant, stream);
  if (dtype == DType::Float16) return launchTyped<__half>(op, args, blockSize, variant, stream);
  if (dtype == DType::Float32) return variant == kDefaultTile && launchTf32(op, args, blockSize, stream);
  return false;
}

}  // namespace bs::tc
