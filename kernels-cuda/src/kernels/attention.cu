// Attention without the scores between forward and backward: out = softmax(scale q k^T, causal mask) v per batch
// matrix, with each row's log-sum-exp (float32) saved for the backward, which recomputes the probabilities from it.
//
// Two routes, the same results up to rounding:
// - flash (float16 and bfloat16, head dims up to 128 that are multiples of 8, held in tiles 32, 64 or 128 wide, and a
//   positive scale): tiles of 64 queries x 64 keys on mma.sync m16n8k16
//   with float32 accumulators, operands in shared memory by cp.async (the next tile's copied while this one is
//   computed), the softmax online over key tiles. Nothing of size M x N exists. The backward is two kernels that
//   each recompute the probabilities: dK and dV per 64 keys over query tiles, dQ per 64 queries over key tiles (no
//   atomics: deterministic), after a pass that computes Di = sum_d dout[i, d] out[i, d].
// - cached (launchCachedAttention): a query over the keys up to a position held on the device, one block per query
//   row, for decoding over a key/value cache of fixed length.
// - math (float32, other head dims): the batched products through launchMatmul (cuBLAS where it is) into a float32
//   scratch [batch, M, N] (from float32 copies of the operands), and row kernels for the softmax and its gradient.
// Every operand's rows are found through its AttentionLayout (kernels.h): contiguous [batch, rows, D] matrices, or the
// heads of packed [B, T, 3, H, D] queries, keys and values and of [B, T, H, D] outputs, read and written in place by
// the flash kernels; the math route takes contiguous copies of other layouts.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <type_traits>

#include "../kernels.h"
#include "../memory.h"
#include "../tc/ptx.cuh"
#include "block_reduce.cuh"
#include "dtype.cuh"
#include "overlap.cuh"

namespace bs {
namespace {

constexpr int kTile = 64;             // queries (keys) per CTA and keys (queries) per step
constexpr int kWarps = kTile / 16;    // each warp owns 16 rows of the CTA's tile
constexpr int kFlashThreads = kWarps * 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Batch matrix `matrix`'s rows of an operand laid out as `rows` says (its first row; rows are rows.row apart).
template <typename T>
__device__ __forceinline__ T* matrixRows(T* base, const AttentionRows& rows, int64_t matrix) {
  return base + (matrix / rows.heads) * rows.batch + (matrix % rows.heads) * rows.head;
}

// ---------------------------------------------------------------- PTX helpers (sm_80+)

__device__ __forceinline__ uint32_t sharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared; zero-filled when `valid` is false (rows past the end), reading nothing then.
__device__ __forceinline__ void copyAsync16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sharedAddress(dst)), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
// 4 bytes global -> shared (through L1), zero-filled when `valid` is false.
__device__ __forceinline__ void copyAsync4(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(sharedAddress(dst)), "l"(src), "r"(valid ? 4 : 0)
               : "memory");
}
__device__ __forceinline__ void copyAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int Pending>
__device__ __forceinline__ void copyAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
}

__device__ __forceinline__ void loadMatrixX4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(sharedAddress(p)));
}
__device__ __forceinline__ void loadMatrixX4Trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(sharedAddress(p)));
}

// c += a (16 x 16, row) * b (16 x 8, col), float32 accumulators.
template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Two float32 values rounded into one 32-bit word of T (the first in the low half, as fragments hold them).
template <typename T>
__device__ __forceinline__ uint32_t packPair(float lo, float hi) {
  if constexpr (std::is_same_v<T, __half>) {
    const __half2 pair = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&pair);
  } else {
    const __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&pair);
  }
}

// 2^x in one MUFU instruction (exp2f adds a range fix-up for results below 2^-126; these flush to zero, which is
// nothing to a softmax). -inf gives 0.
__device__ __forceinline__ float fastExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// ---------------------------------------------------------------- tiles in shared memory

// Rows of D elements padded by 16 bytes, so that the 8 row addresses of an ldmatrix hit distinct banks.
template <int D>
constexpr int kStride = D + 8;

// Rows [row0, row0 + 64) of a [rows, width] matrix whose rows are `ld` elements apart (width <= D, a multiple of 8)
// into a [64, kStride<D>] tile by a CTA of `Threads`; rows past `rows` and columns past `width` read as zeros.
// Each thread copies the same column of rows threadIdx.x / chunks + i * Threads / chunks, i = 0, 1, ...: a fixed,
// unrolled count with the divisions done once.
template <typename T, int D, int Threads = kFlashThreads>
__device__ __forceinline__ void loadTile(T* tile, const T* matrix, int64_t ld, int row0, int rows, int width) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  static_assert(Threads % kChunks == 0 && (kTile * kChunks) % Threads == 0, "whole rows per pass");
  constexpr int kRowsPerPass = Threads / kChunks;
  const int col = (threadIdx.x % kChunks) * 8;
  const int r0 = threadIdx.x / kChunks;
  const bool columnValid = col < width;
  const T* source = matrix + static_cast<int64_t>(row0 + r0) * ld + col;
#pragma unroll
  for (int i = 0; i < kTile / kRowsPerPass; ++i) {
    const int r = r0 + i * kRowsPerPass;
    const bool valid = columnValid && row0 + r < rows;
    copyAsync16(tile + r * kStride<D> + col, valid ? source + static_cast<int64_t>(i) * kRowsPerPass * ld : matrix,
                valid);
  }
}

// A fragments of rows [row0, row0 + 16) x columns [col0, col0 + 16) of a tile (row-major: the A operand as stored).
template <int D, typename T>
__device__ __forceinline__ void loadA(uint32_t (&a)[4], const T* tile, int row0, int col0) {
  const int lane = threadIdx.x % 32;
  loadMatrixX4(a, tile + (row0 + lane % 16) * kStride<D> + col0 + (lane / 16) * 8);
}

// B fragments of two n-tiles (n0, n0 + 8) for k in [k0, k0 + 16) where the tile holds B transposed ([n][k]: keys'
// rows for q k^T): b[0], b[1] for n0, b[2], b[3] for n0 + 8.
template <int D, typename T>
__device__ __forceinline__ void loadBFromRows(uint32_t (&b)[4], const T* tile, int n0, int k0) {
  const int lane = threadIdx.x % 32;
  loadMatrixX4(b, tile + (n0 + lane % 8 + (lane / 16) * 8) * kStride<D> + k0 + ((lane / 8) % 2) * 8);
}

// The same where the tile holds B as stored ([k][n]: v's rows for p v).
template <int D, typename T>
__device__ __forceinline__ void loadBFromColumns(uint32_t (&b)[4], const T* tile, int k0, int n0) {
  const int lane = threadIdx.x % 32;
  loadMatrixX4Trans(b, tile + (k0 + lane % 8 + ((lane / 8) % 2) * 8) * kStride<D> + n0 + (lane / 16) * 8);
}

// Accumulators of a 16 x 8 NT product (NT n-tiles) as the A fragments of the next product over those columns.
template <typename T, int NT>
__device__ __forceinline__ void accumulatorsAsA(uint32_t (&a)[4], const float (&s)[NT][4], int kk) {
  a[0] = packPair<T>(s[2 * kk][0], s[2 * kk][1]);
  a[1] = packPair<T>(s[2 * kk][2], s[2 * kk][3]);
  a[2] = packPair<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
  a[3] = packPair<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

// s (16 rows x 8 NT columns of one warp) = A rows [aRow0, +16) of tileA times rows [bRow0, bRow0 + 8 NT) of tileB,
// over D.
template <typename T, int D, int NT = 8>
__device__ __forceinline__ void productRows(float (&s)[NT][4], const T* tileA, int aRow0, const T* tileB, int bRow0 = 0) {
#pragma unroll
  for (int n = 0; n < NT; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t a[4];
    loadA<D>(a, tileA, aRow0, kk * 16);
#pragma unroll
    for (int n = 0; n < NT; n += 2) {
      uint32_t b[4];
      loadBFromRows<D>(b, tileB, bRow0 + n * 8, kk * 16);
      mma16816<T>(s[n], a, b[0], b[1]);
      mma16816<T>(s[n + 1], a, b[2], b[3]);
    }
  }
}

// acc (16 x D) += P (16 x 8 NT, accumulators) times rows [kRow0, kRow0 + 8 NT) of the tile (the columns of P).
template <typename T, int D, int NT = 8>
__device__ __forceinline__ void accumulateProduct(float (&acc)[D / 8][4], const float (&p)[NT][4], const T* tile,
                                                  int kRow0 = 0) {
#pragma unroll
  for (int kk = 0; kk < NT / 2; ++kk) {
    uint32_t a[4];
    accumulatorsAsA<T, NT>(a, p, kk);
#pragma unroll
    for (int n = 0; n < D / 8; n += 2) {
      uint32_t b[4];
      loadBFromColumns<D>(b, tile, kRow0 + kk * 16, n * 8);
      mma16816<T>(acc[n], a, b[0], b[1]);
      mma16816<T>(acc[n + 1], a, b[2], b[3]);
    }
  }
}

// Stores a warp's 16 x D accumulators times `factor` (per row: [0] for row g, [1] for row g + 8) to rows
// [row0, row0 + 16) of a [rows, width] matrix whose rows are `ld` elements apart, skipping rows past `rows` and
// columns past `width`.
template <typename T, int D>
__device__ __forceinline__ void storeRows(T* matrix, int64_t ld, const float (&acc)[D / 8][4], int row0, int rows,
                                          int width, const float (&factor)[2]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = row0 + lane / 4 + half * 8;
    if (row >= rows) continue;
    T* out = matrix + static_cast<int64_t>(row) * ld + 2 * (lane % 4);
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      if (n * 8 >= width) break;
      *reinterpret_cast<uint32_t*>(out + n * 8) = packPair<T>(acc[n][2 * half] * factor[half], acc[n][2 * half + 1] * factor[half]);
    }
  }
}

// Step t of a walk over 64-key tiles of k and v in two buffers each: waits for tile t's copies (issued at the step
// before, or before the walk) and for every warp to be done with step t - 1, then copies tile t + 1 into the buffers
// step t - 1 used, in flight while tile t is used. One barrier per step.
template <typename T, int D>
__device__ __forceinline__ void advanceKeyTiles(T* sK, T* sV, const T* kb, const T* vb, const AttentionLayout& layout,
                                                int t, int tiles, int N, int width) {
  copyAsyncWait<0>();
  __syncthreads();
  if (t + 1 < tiles) {
    loadTile<T, D>(sK + ((t + 1) & 1) * kTile * kStride<D>, kb, layout.k.row, (t + 1) * kTile, N, width);
    loadTile<T, D>(sV + ((t + 1) & 1) * kTile * kStride<D>, vb, layout.v.row, (t + 1) * kTile, N, width);
  }
  copyAsyncCommit();
}

// Forward: q and two buffers each of k and v.
template <typename T, int D>
constexpr int kForwardSmem = (kTile + 4 * kTile) * kStride<D> * static_cast<int>(sizeof(T));
// dK/dV: k, v and Stages buffers each of q and dout, then Stages buffers each of lse (base 2) and Di. dQ: q, dout
// and two buffers each of k and v.
template <typename T, int D, int Stages>
constexpr int kBackwardKVSmem = (2 + 2 * Stages) * kTile * kStride<D> * static_cast<int>(sizeof(T)) +
                                2 * Stages * kTile * static_cast<int>(sizeof(float));
template <typename T, int D>
constexpr int kBackwardQSmem = 6 * kTile * kStride<D> * static_cast<int>(sizeof(T));

// ---------------------------------------------------------------- flash forward

// One key tile of the forward's online softmax for a warp's 16 query rows (row[0], row[1] = its lane's two rows):
// masks raw scores s (16 x 64, accumulator layout) past the keys or the causal diagonal, rescales acc and rowSum to
// the new row maxima (rowMax in base-2 scaled units), and leaves the probabilities' numerators in s.
template <int D>
__device__ __forceinline__ void onlineSoftmax(float (&s)[8][4], float (&acc)[D / 8][4], float (&rowMax)[2],
                                              float (&rowSum)[2], int key0, int N, bool causal, int warpRow0,
                                              int offset, const int (&row)[2], float scaleLog2) {
  const int lane = threadIdx.x % 32;
  // Masking only where this warp's tile reaches past the keys or the causal diagonal (a uniform branch).
  if (key0 + kTile > N || (causal && key0 + kTile - 1 > warpRow0 + offset)) {
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key0 + n * 8 + 2 * (lane % 4) + (e & 1);
        if (key >= N || (causal && key > row[e / 2] + offset)) s[n][e] = -INFINITY;
      }
    }
  }
  // Online softmax, base 2 (rowMax in scaled units): rescale what is accumulated to the new row maxima, unless no
  // row of the warp has a new one (a factor of exactly 1).
  float newMax[2], base[2];
  bool moved = false;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float m = -INFINITY;
#pragma unroll
    for (int n = 0; n < 8; ++n) m = fmaxf(m, fmaxf(s[n][2 * h], s[n][2 * h + 1]));
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
    newMax[h] = fmaxf(rowMax[h], m * scaleLog2);
    moved |= newMax[h] != rowMax[h];
    base[h] = newMax[h] == -INFINITY ? 0.f : newMax[h];  // a row with nothing kept yet stays at zero
  }
  if (key0 > 0 && __any_sync(0xffffffffu, moved)) {  // at key 0 nothing is accumulated yet
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float rescale = fastExp2(rowMax[h] - base[h]);
      rowSum[h] *= rescale;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        acc[n][2 * h] *= rescale;
        acc[n][2 * h + 1] *= rescale;
      }
    }
  }
  rowMax[0] = newMax[0];
  rowMax[1] = newMax[1];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      s[n][2 * h] = fastExp2(fmaf(s[n][2 * h], scaleLog2, -base[h]));
      s[n][2 * h + 1] = fastExp2(fmaf(s[n][2 * h + 1], scaleLog2, -base[h]));
      rowSum[h] += s[n][2 * h] + s[n][2 * h + 1];
    }
  }
}

// The forward's end for a warp: out = acc / rowSum and lse (natural log) of its 16 rows.
template <typename T, int D>
__device__ __forceinline__ void finishForward(T* out, const AttentionRows& outRows, float* lse,
                                              const float (&acc)[D / 8][4], const float (&rowMax)[2],
                                              const float (&rowSum)[2], int64_t matrix, int M, int width,
                                              int warpRow0, const int (&row)[2]) {
  const int lane = threadIdx.x % 32;
  float inverse[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float l = rowSum[h];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inverse[h] = 1.f / l;
    if (lane % 4 == 0 && row[h] < M) lse[matrix * M + row[h]] = (rowMax[h] + log2f(l)) * kLn2;
  }
  storeRows<T, D>(matrixRows(out, outRows, matrix), outRows.row, acc, warpRow0, M, width, inverse);
}

// grid (batch, query tiles), the last query tiles (the longest under causal masking) first; 4 warps of 16 queries.
template <typename T, int D>
__global__ void __launch_bounds__(kFlashThreads) attentionForwardKernel(const T* __restrict__ q, const T* __restrict__ k,
                                                                        const T* __restrict__ v, T* __restrict__ out,
                                                                        float* __restrict__ lse, int M, int N,
                                                                        int width, AttentionLayout layout,
                                                                        float scaleLog2, bool causal) {
  allowDependentLaunch();
  extern __shared__ __align__(16) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sK = sQ + kTile * kStride<D>;       // two buffers
  T* sV = sK + 2 * kTile * kStride<D>;   // two buffers
  const int64_t matrix = blockIdx.x;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * kTile;
  const T* qb = matrixRows(q, layout.q, matrix);
  const T* kb = matrixRows(k, layout.k, matrix);
  const T* vb = matrixRows(v, layout.v, matrix);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int offset = N - M;  // causal: query i keeps keys j <= i + offset
  const int lastRow = min(q0 + kTile, M) - 1;
  const int keyEnd = causal ? min(N, lastRow + offset + 1) : N;
  const int tiles = (keyEnd + kTile - 1) / kTile;
  const int warpRow0 = q0 + warp * 16;
  const int row[2] = {warpRow0 + lane / 4, warpRow0 + lane / 4 + 8};

  loadTile<T, D>(sQ, qb, layout.q.row, q0, M, width);
  loadTile<T, D>(sK, kb, layout.k.row, 0, N, width);
  loadTile<T, D>(sV, vb, layout.v.row, 0, N, width);
  copyAsyncCommit();

  float acc[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  float rowMax[2] = {-INFINITY, -INFINITY};
  float rowSum[2] = {0.f, 0.f};

  for (int t = 0; t < tiles; ++t) {
    advanceKeyTiles<T, D>(sK, sV, kb, vb, layout, t, tiles, N, width);
    const T* tileK = sK + (t & 1) * kTile * kStride<D>;
    const T* tileV = sV + (t & 1) * kTile * kStride<D>;

    // Raw scores; the scale (> 0, so it keeps the order) goes into each exponent's multiply-add below.
    float s[8][4];
    productRows<T, D>(s, sQ, warp * 16, tileK);
    onlineSoftmax<D>(s, acc, rowMax, rowSum, t * kTile, N, causal, warpRow0, offset, row, scaleLog2);
    accumulateProduct<T, D>(acc, s, tileV);
  }

  finishForward<T, D>(out, layout.out, lse, acc, rowMax, rowSum, matrix, M, width, warpRow0, row);
}

// ---------------------------------------------------------------- flash backward

// Di = sum_d dout[i, d] out[i, d] in float32, one warp per row; with lse, also lse2 = lse log2 e (the flash kernels'
// base 2).
template <typename T>
__global__ void rowDotKernel(const T* __restrict__ dout, const T* __restrict__ out, AttentionRows outRows,
                             float* __restrict__ di, const float* __restrict__ lse, float* __restrict__ lse2,
                             int64_t rows, int M, int D) {
  const int64_t r = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const int64_t at = (matrixRows(out, outRows, r / M) - out) + (r % M) * outRows.row;
  float sum = 0.f;
  for (int d = lane; d < D; d += 32) sum += toFloat(dout[at + d]) * toFloat(out[at + d]);
#pragma unroll
  for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (lane == 0) {
    di[r] = sum;
    if (lse != nullptr) lse2[r] = lse[r] * kLog2e;
  }
}

// The backward's probabilities and score gradients, in registers of the accumulator layout. Rows are keys in the
// dK/dV kernel (a warp's 16 keys from warpKey0 x 8 NT queries from query0, lse2 and Di of those queries in shared
// memory) and queries in the dQ kernel (16 queries from warpRow0 x 64 keys from key0, lse2 and Di of the lane's two
// rows in registers). P = exp2(scale log2e s - lse2), 0 where the causal mask drops it (a uniform branch: only tiles
// the diagonal crosses); dS = P (dP - Di).
template <int NT>
__device__ __forceinline__ void keyProbabilities(float (&p)[NT][4], const float* lse2, int query0, int warpKey0,
                                                 int offset, bool causal, float scaleLog2) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int n = 0; n < NT; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) p[n][e] = fastExp2(fmaf(p[n][e], scaleLog2, -lse2[n * 8 + 2 * (lane % 4) + (e & 1)]));
  }
  if (causal && warpKey0 + 15 > query0 + offset) {
#pragma unroll
    for (int n = 0; n < NT; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (warpKey0 + lane / 4 + (e / 2) * 8 > query0 + n * 8 + 2 * (lane % 4) + (e & 1) + offset) p[n][e] = 0.f;
      }
    }
  }
}

template <int NT>
__device__ __forceinline__ void keyScoreGradients(float (&ds)[NT][4], const float (&p)[NT][4], const float* di) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int n = 0; n < NT; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) ds[n][e] = p[n][e] * (ds[n][e] - di[n * 8 + 2 * (lane % 4) + (e & 1)]);
  }
}

__device__ __forceinline__ void queryProbabilities(float (&p)[8][4], const float (&rowLse2)[2], int key0, int warpRow0,
                                                   const int (&row)[2], int offset, bool causal, float scaleLog2) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int n = 0; n < 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) p[n][e] = fastExp2(fmaf(p[n][e], scaleLog2, -rowLse2[e / 2]));
  }
  if (causal && key0 + kTile - 1 > warpRow0 + offset) {
#pragma unroll
    for (int n = 0; n < 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (key0 + n * 8 + 2 * (lane % 4) + (e & 1) > row[e / 2] + offset) p[n][e] = 0.f;
      }
    }
  }
}

__device__ __forceinline__ void queryScoreGradients(float (&ds)[8][4], const float (&p)[8][4], const float (&rowDi)[2]) {
#pragma unroll
  for (int n = 0; n < 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) ds[n][e] = p[n][e] * (ds[n][e] - rowDi[e / 2]);
  }
}

// Query tiles split between two warps of each 16 keys in the dK/dV kernel (Halves = 2) up to head dim 64: each warp's
// scores and dS take half the registers, so nothing spills at two CTAs of 8 warps per SM (one warp of each pair adds
// its partial dK and dV to the other's through shared memory at the end). Above 64, one warp per 16 keys.
template <int D>
constexpr int kKeyHalves = D <= 64 ? 2 : 1;

// Query tiles in flight in the dK/dV kernel: three up to head dim 64, where the two CTAs per SM that the registers
// allow have the shared memory for them (the copies of tile t + 2 run while tile t is used), two above.
template <int D>
constexpr int kQueryStages = D <= 64 ? 3 : 2;

// dK and dV of 64 keys (grid (batch, key tiles)), over the query tiles that see them. Warp w owns keys
// 16 (w % 4) .. + 15 and, with Halves = 2, half of each query tile (w / 4); it works on transposed products (keys x
// queries), so its rows of dK and dV accumulate in registers. lse2 is lse in base 2 (lse log2 e).
template <typename T, int D, int Halves, int Stages>
__global__ void __launch_bounds__(kFlashThreads * Halves, Halves == 2 ? 2 : 1) attentionBackwardKVKernel(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ dout,
    const float* __restrict__ lse2, const float* __restrict__ di, T* __restrict__ dk, T* __restrict__ dv, int M, int N,
    int width, AttentionLayout layout, float scaleLog2, float scale, bool causal) {
  constexpr int kThreads = kFlashThreads * Halves;
  constexpr int NT = 8 / Halves;           // n-tiles of 8 queries per warp and query tile
  constexpr int kQueries = kTile / Halves;  // queries per warp and query tile
  extern __shared__ __align__(16) unsigned char smem[];
  T* sK = reinterpret_cast<T*>(smem);
  T* sV = sK + kTile * kStride<D>;
  T* sQ = sV + kTile * kStride<D>;             // Stages buffers
  T* sDout = sQ + Stages * kTile * kStride<D>;  // Stages buffers
  float* sLse = reinterpret_cast<float*>(sDout + Stages * kTile * kStride<D>);  // Stages buffers of 64
  float* sDi = sLse + Stages * kTile;
  const int64_t matrix = blockIdx.x;
  const int k0 = (gridDim.y - 1 - blockIdx.y) * kTile;
  const T* qb = matrixRows(q, layout.q, matrix);
  const T* kb = matrixRows(k, layout.k, matrix);
  const T* vb = matrixRows(v, layout.v, matrix);
  const T* db = matrixRows(dout, layout.out, matrix);
  const float* lb = lse2 + matrix * M;
  const float* ib = di + matrix * M;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int keyWarp = warp % kWarps;
  const int half = warp / kWarps;
  const int queryOffset = half * kQueries;  // this warp's queries within each tile
  const int offset = N - M;
  // Under causal masking, queries below k0 - offset see none of these keys.
  const int firstTile = causal ? max(0, k0 - offset) / kTile : 0;
  const int tiles = (M + kTile - 1) / kTile;
  const int warpKey0 = k0 + keyWarp * 16;

  auto loadQueries = [&](int t, int buffer) {
    loadTile<T, D, kThreads>(sQ + buffer * kTile * kStride<D>, qb, layout.q.row, t * kTile, M, width);
    loadTile<T, D, kThreads>(sDout + buffer * kTile * kStride<D>, db, layout.out.row, t * kTile, M, width);
    static_assert(kThreads >= 2 * kTile, "one thread per lse and Di value");
    if (threadIdx.x < 2 * kTile) {  // rows past M read as zeros
      const int j = threadIdx.x % kTile;
      const bool valid = t * kTile + j < M;
      const float* source = threadIdx.x < kTile ? lb : ib;
      float* target = threadIdx.x < kTile ? sLse : sDi;
      copyAsync4(target + buffer * kTile + j, source + (valid ? t * kTile + j : 0), valid);
    }
  };

  // Copies in flight: k, v and the first query tile, then the next Stages - 2 query tiles, one group each.
  loadTile<T, D, kThreads>(sK, kb, layout.k.row, k0, N, width);
  loadTile<T, D, kThreads>(sV, vb, layout.v.row, k0, N, width);
  if (firstTile < tiles) loadQueries(firstTile, 0);
  copyAsyncCommit();
#pragma unroll
  for (int s = 1; s < Stages - 1; ++s) {
    if (firstTile + s < tiles) loadQueries(firstTile + s, s);
    copyAsyncCommit();
  }

  float accK[D / 8][4];
  float accV[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    accK[n][0] = accK[n][1] = accK[n][2] = accK[n][3] = 0.f;
    accV[n][0] = accV[n][1] = accV[n][2] = accV[n][3] = 0.f;
  }

  for (int t = firstTile; t < tiles; ++t) {
    // Tile t's copies are done and every warp is done with step t - 1, whose buffers take tile t + Stages - 1.
    const int step = t - firstTile;
    const int buffer = step % Stages;
    copyAsyncWait<Stages - 2>();
    __syncthreads();
    if (t + Stages - 1 < tiles) loadQueries(t + Stages - 1, (step + Stages - 1) % Stages);
    copyAsyncCommit();
    const T* tileQ = sQ + buffer * kTile * kStride<D>;
    const T* tileDout = sDout + buffer * kTile * kStride<D>;
    const float* tileLse = sLse + buffer * kTile;
    const float* tileDi = sDi + buffer * kTile;
    const int query0 = t * kTile + queryOffset;

    // P^T (16 keys x this warp's queries) = exp2(scale log2e k q^T - log2e lse[query]), 0 where masked. Queries past
    // M hold zeros (q, dout, lse, Di), so they add nothing to dV or dK; keys past N are never stored.
    float p[NT][4];
    productRows<T, D, NT>(p, sK, keyWarp * 16, tileQ, queryOffset);
    keyProbabilities<NT>(p, tileLse + queryOffset, query0, warpKey0, offset, causal, scaleLog2);
    accumulateProduct<T, D, NT>(accV, p, tileDout, queryOffset);
    // dP^T = v dout^T, then dS^T = P^T (dP^T - Di[query]).
    float ds[NT][4];
    productRows<T, D, NT>(ds, sV, keyWarp * 16, tileDout, queryOffset);
    keyScoreGradients<NT>(ds, p, tileDi + queryOffset);
    accumulateProduct<T, D, NT>(accK, ds, tileQ, queryOffset);
  }
  copyAsyncWait<0>();

  if constexpr (Halves == 2) {
    // The second half's partial sums to the first's, through the query buffers (free now): per key warp, accK then
    // accV, each lane's values side by side across lanes.
    float* partial = reinterpret_cast<float*>(sQ);
    constexpr int kValues = D / 8 * 4;
    __syncthreads();
    if (half == 1) {
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          partial[((keyWarp * 2 + 0) * kValues + n * 4 + e) * 32 + lane] = accK[n][e];
          partial[((keyWarp * 2 + 1) * kValues + n * 4 + e) * 32 + lane] = accV[n][e];
        }
      }
    }
    __syncthreads();
    if (half == 1) return;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        accK[n][e] += partial[((keyWarp * 2 + 0) * kValues + n * 4 + e) * 32 + lane];
        accV[n][e] += partial[((keyWarp * 2 + 1) * kValues + n * 4 + e) * 32 + lane];
      }
    }
  }

  const float one[2] = {1.f, 1.f};
  const float scaled[2] = {scale, scale};
  storeRows<T, D>(matrixRows(dk, layout.k, matrix), layout.k.row, accK, warpKey0, N, width, scaled);
  storeRows<T, D>(matrixRows(dv, layout.v, matrix), layout.v.row, accV, warpKey0, N, width, one);
}

// dQ of 64 queries (grid (batch, query tiles)) over the key tiles they see.
template <typename T, int D>
__global__ void __launch_bounds__(kFlashThreads) attentionBackwardQKernel(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ dout,
    const float* __restrict__ lse2, const float* __restrict__ di, T* __restrict__ dq, int M, int N, int width,
    AttentionLayout layout, float scaleLog2, float scale, bool causal) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sDout = sQ + kTile * kStride<D>;
  T* sK = sDout + kTile * kStride<D>;  // two buffers
  T* sV = sK + 2 * kTile * kStride<D>;  // two buffers
  const int64_t matrix = blockIdx.x;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * kTile;
  const T* kb = matrixRows(k, layout.k, matrix);
  const T* vb = matrixRows(v, layout.v, matrix);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int offset = N - M;
  const int lastRow = min(q0 + kTile, M) - 1;
  const int keyEnd = causal ? min(N, lastRow + offset + 1) : N;
  const int tiles = (keyEnd + kTile - 1) / kTile;
  const int warpRow0 = q0 + warp * 16;
  const int row[2] = {warpRow0 + lane / 4, warpRow0 + lane / 4 + 8};
  float rowLse2[2], rowDi[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    rowLse2[h] = row[h] < M ? lse2[matrix * M + row[h]] : 0.f;
    rowDi[h] = row[h] < M ? di[matrix * M + row[h]] : 0.f;
  }

  loadTile<T, D>(sQ, matrixRows(q, layout.q, matrix), layout.q.row, q0, M, width);
  loadTile<T, D>(sDout, matrixRows(dout, layout.out, matrix), layout.out.row, q0, M, width);
  loadTile<T, D>(sK, kb, layout.k.row, 0, N, width);
  loadTile<T, D>(sV, vb, layout.v.row, 0, N, width);
  copyAsyncCommit();

  float acc[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

  for (int t = 0; t < tiles; ++t) {
    advanceKeyTiles<T, D>(sK, sV, kb, vb, layout, t, tiles, N, width);
    const T* tileK = sK + (t & 1) * kTile * kStride<D>;
    const T* tileV = sV + (t & 1) * kTile * kStride<D>;
    const int key0 = t * kTile;

    // Keys past N hold zeros in k and v: their dS multiplies a zero row of k, so only causal masking is needed.
    float p[8][4];
    productRows<T, D>(p, sQ, warp * 16, tileK);
    queryProbabilities(p, rowLse2, key0, warpRow0, row, offset, causal, scaleLog2);
    float ds[8][4];
    productRows<T, D>(ds, sDout, warp * 16, tileV);
    queryScoreGradients(ds, p, rowDi);
    accumulateProduct<T, D>(acc, ds, tileK);
  }
  copyAsyncWait<0>();
  const float scaled[2] = {scale, scale};
  storeRows<T, D>(matrixRows(dq, layout.q, matrix), layout.q.row, acc, warpRow0, M, width, scaled);
}

// ---------------------------------------------------------------- flash on Hopper (sm_90a: wgmma)
//
// The same kernels with the products on wgmma: a warpgroup (4 warps) multiplies a 64-row tile held in shared memory
// by another, reading both there (no ldmatrix through registers), or takes the probabilities (dS) as its A operand
// from registers. The accumulators come out in the layout the mma.sync kernels use (warp w of a warpgroup: rows
// 16 w .. + 15), so the softmax and its gradient are the same functions. Tiles are stored the way wgmma reads them:
// 64-column panels of 128-byte rows (32-column panels of 64-byte rows at head dim 32), 16-byte chunks XOR-swizzled by
// the row, 1024-byte aligned. One layout serves every operand: K-major where the product sums over the head dim
// (q k^T, dout v^T), MN-major where it sums over the tile's rows (p v, dS k, p^T dout, dS^T q).

template <int D>
constexpr int kPanelWidth = D >= 64 ? 64 : 32;
template <int D>
constexpr int kRowBytes = kPanelWidth<D> * 2;
template <int D>
constexpr int kPanelBytes = kTile * kRowBytes<D>;
template <int D>
constexpr int kTileBytes = kTile * D * 2;
template <int D>
constexpr uint32_t kSwizzle = D >= 64 ? 1 : 2;  // 128-byte or 64-byte swizzle
constexpr int kAlignSlack = 1024;               // dynamic shared memory is aligned up to 1024 bytes in the kernel

// Rows [row0, row0 + 64) of a [rows, width] matrix whose rows are `ld` elements apart into a swizzled tile at shared
// address `tile`; rows past `rows` and columns past `width` read as zeros.
template <typename T, int D, int Threads>
__device__ __forceinline__ void loadSwizzled(uint32_t tile, const T* matrix, int64_t ld, int row0, int rows,
                                             int width) {
  constexpr int kChunks = D / 8;
  constexpr int kChunksPerPanel = kPanelWidth<D> / 8;
  static_assert(Threads % kChunks == 0 && (kTile * kChunks) % Threads == 0, "whole rows per pass");
  constexpr int kRowsPerPass = Threads / kChunks;
  const int chunk = threadIdx.x % kChunks;
  const int r0 = threadIdx.x / kChunks;
  const bool columnValid = chunk * 8 < width;
  const T* source = matrix + static_cast<int64_t>(row0 + r0) * ld + chunk * 8;
  const uint32_t panel = tile + (chunk / kChunksPerPanel) * kPanelBytes<D>;
#pragma unroll
  for (int i = 0; i < kTile / kRowsPerPass; ++i) {
    const int r = r0 + i * kRowsPerPass;
    const bool valid = columnValid && row0 + r < rows;
    tc::cpAsync16(panel + tc::panelOffset<kPanelWidth<D>>(r, chunk % kChunksPerPanel),
                  valid ? source + static_cast<int64_t>(i) * kRowsPerPass * ld : matrix, valid);
  }
}

// Descriptor of a K-major operand: rows from row0 (a multiple of 8) of a tile, head-dim columns [16 kk, 16 kk + 16).
// The tile's descriptor advanced by the operand's byte offset (tc::advanceDescriptor: one add), so that a product's
// wgmmas share one descriptor per tile instead of each masking, shifting and merging its own.
template <int D>
__device__ __forceinline__ uint64_t kMajor(uint32_t tile, int row0, int kk) {
  constexpr int kStepsPerPanel = kPanelWidth<D> / 16;
  return tc::advanceDescriptor(tc::matrixDescriptor(tile, 16, 8 * kRowBytes<D>, kSwizzle<D>),
                               (kk / kStepsPerPanel) * kPanelBytes<D> + row0 * kRowBytes<D> + (kk % kStepsPerPanel) * 32);
}

// Descriptor of an MN-major operand: tile rows [row0, row0 + 16) (the sum's index), all D columns.
template <int D>
__device__ __forceinline__ uint64_t mnMajor(uint32_t tile, int row0) {
  return tc::advanceDescriptor(tc::matrixDescriptor(tile, kPanelBytes<D>, 8 * kRowBytes<D>, kSwizzle<D>),
                               row0 * kRowBytes<D>);
}

template <int Rows, int Columns>
__device__ __forceinline__ float (&flat(float (&x)[Rows][Columns]))[Rows * Columns] {
  return *reinterpret_cast<float(*)[Rows * Columns]>(&x);
}

// x (64 rows x 8 NT columns of the warpgroup) = tile a (K-major, its 64 rows) times tile b (K-major, rows from bRow0)
// over the head dim, issued and committed as one group (the first k-step writes x without reading it).
template <typename T, int D, int NT>
__device__ __forceinline__ void issueRowProduct(float (&x)[NT][4], uint32_t a, uint32_t b, int bRow0) {
  tc::Wgmma<T, 8 * NT, 0, 0>::runFirst(flat(x), kMajor<D>(a, 0, 0), kMajor<D>(b, bRow0, 0));
#pragma unroll
  for (int kk = 1; kk < D / 16; ++kk) tc::Wgmma<T, 8 * NT, 0, 0>::run(flat(x), kMajor<D>(a, 0, kk), kMajor<D>(b, bRow0, kk));
  tc::wgmmaCommit();
}

// acc (64 x D) += P (64 x 8 NT, accumulators in registers) times tile rows [row0, row0 + 8 NT) (MN-major), one group;
// acc = the product when `first` (acc is never zeroed: ptxas serializes wgmma whose accumulators other instructions
// define). P is rounded into A fragments first, then the fence orders those writes (and any to acc) before the
// products.
template <typename T, int D, int NT>
__device__ __forceinline__ void issueColumnProduct(float (&acc)[D / 8][4], const float (&p)[NT][4], uint32_t tile,
                                                   int row0, bool first) {
  uint32_t a[NT / 2][4];
#pragma unroll
  for (int kk = 0; kk < NT / 2; ++kk) accumulatorsAsA<T, NT>(a[kk], p, kk);
  tc::wgmmaFence();
#pragma unroll
  for (int kk = 0; kk < NT / 2; ++kk) {
    tc::Wgmma<T, D, 0, 1>::runRegA(flat(acc), a[kk], mnMajor<D>(tile, row0 + kk * 16), first && kk == 0 ? 0 : 1);
  }
  tc::wgmmaCommit();
}

// Waits for the copies of the step (cp.async, all but the newest Pending groups) and for this warp's products of the
// step before; then every thread (its copies visible to wgmma) and every warp (done with the buffers the next copies
// take) meet.
template <int Pending>
__device__ __forceinline__ void beginStep() {
  copyAsyncWait<Pending>();
  tc::fenceProxyAsync();
  tc::wgmmaWait<0>();
  __syncthreads();
}

// Buffers of v in the forward on wgmma: two (the next tile copied during the whole step) up to head dim 64; one at
// 128, where four 16 KB tiles instead of five let three CTAs share an SM (v's next tile then copied from the start of
// a step, once the product with the last one is done, to its middle).
template <int D>
constexpr int kValueBuffers = D >= 128 ? 1 : 2;

template <typename T, int D>
__global__ void __launch_bounds__(kFlashThreads) attentionForwardWgmmaKernel(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
    float* __restrict__ lse, int M, int N, int width, AttentionLayout layout, float scaleLog2, bool causal) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kValues = kValueBuffers<D>;
  allowDependentLaunch();
  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t sQ = (tc::smemAddress(smem) + kAlignSlack - 1) & ~static_cast<uint32_t>(kAlignSlack - 1);
  const uint32_t sK = sQ + kTileBytes<D>;      // two buffers
  const uint32_t sV = sK + 2 * kTileBytes<D>;  // kValues buffers
  const int64_t matrix = blockIdx.x;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * kTile;
  const T* kb = matrixRows(k, layout.k, matrix);
  const T* vb = matrixRows(v, layout.v, matrix);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int offset = N - M;
  const int lastRow = min(q0 + kTile, M) - 1;
  const int keyEnd = causal ? min(N, lastRow + offset + 1) : N;
  const int tiles = (keyEnd + kTile - 1) / kTile;
  const int warpRow0 = q0 + warp * 16;
  const int row[2] = {warpRow0 + lane / 4, warpRow0 + lane / 4 + 8};

  loadSwizzled<T, D, kFlashThreads>(sQ, matrixRows(q, layout.q, matrix), layout.q.row, q0, M, width);
  loadSwizzled<T, D, kFlashThreads>(sK, kb, layout.k.row, 0, N, width);
  if constexpr (kValues == 2) loadSwizzled<T, D, kFlashThreads>(sV, vb, layout.v.row, 0, N, width);
  copyAsyncCommit();

  float acc[D / 8][4];  // written by the first step's product (onlineSoftmax leaves it alone at key 0)
  float rowMax[2] = {-INFINITY, -INFINITY};
  float rowSum[2] = {0.f, 0.f};
  for (int t = 0; t < tiles; ++t) {
    beginStep<0>();
    if constexpr (kValues == 1) {  // v's tile t into the buffer the last step's product is done with
      loadSwizzled<T, D, kFlashThreads>(sV, vb, layout.v.row, t * kTile, N, width);
      copyAsyncCommit();
    }
    if (t + 1 < tiles) {
      loadSwizzled<T, D, kFlashThreads>(sK + ((t + 1) & 1) * kTileBytes<D>, kb, layout.k.row, (t + 1) * kTile, N,
                                        width);
      if constexpr (kValues == 2) {
        loadSwizzled<T, D, kFlashThreads>(sV + ((t + 1) & 1) * kTileBytes<D>, vb, layout.v.row, (t + 1) * kTile, N,
                                          width);
      }
    }
    copyAsyncCommit();
    const uint32_t tileK = sK + (t & 1) * kTileBytes<D>;
    const uint32_t tileV = sV + (kValues == 2 ? (t & 1) * kTileBytes<D> : 0);
    float s[8][4];
    tc::wgmmaFence();
    issueRowProduct<T, D, 8>(s, sQ, tileK, 0);
    tc::wgmmaWait<0>();
    tc::fenceRegisters(flat(s));
    onlineSoftmax<D>(s, acc, rowMax, rowSum, t * kTile, N, causal, warpRow0, offset, row, scaleLog2);
    if constexpr (kValues == 1) {  // v's tile t (every group but k's next one) landed, from every thread
      copyAsyncWait<1>();
      tc::fenceProxyAsync();
      __syncthreads();
    }
    issueColumnProduct<T, D, 8>(acc, s, tileV, 0, t == 0);  // waited for at the next step (or below)
  }
  tc::wgmmaWait<0>();
  tc::fenceRegisters(flat(acc));
  finishForward<T, D>(out, layout.out, lse, acc, rowMax, rowSum, matrix, M, width, warpRow0, row);
#endif
}

// The dK/dV kernel on wgmma: one warpgroup per 64 keys, its products 64 queries wide (splitting each query tile
// between two warpgroups, as the mma.sync kernel splits it between warps for its registers, measured 1.08-1.10x slower
// forward + backward), built for three CTAs per SM up to head dim 64 (at most 170 registers), one above.
template <int D>
constexpr int kKVWgmmaBlocks = D <= 64 ? 3 : 1;

template <typename T, int D, int Stages>
__global__ void __launch_bounds__(kFlashThreads, kKVWgmmaBlocks<D>) attentionBackwardKVWgmmaKernel(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ dout,
    const float* __restrict__ lse2, const float* __restrict__ di, T* __restrict__ dk, T* __restrict__ dv, int M, int N,
    int width, AttentionLayout layout, float scaleLog2, float scale, bool causal) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t sK = (tc::smemAddress(smem) + kAlignSlack - 1) & ~static_cast<uint32_t>(kAlignSlack - 1);
  const uint32_t sV = sK + kTileBytes<D>;
  const uint32_t sQ = sV + kTileBytes<D>;                 // Stages buffers
  const uint32_t sDout = sQ + Stages * kTileBytes<D>;     // Stages buffers
  unsigned char* aligned = smem + (sK - tc::smemAddress(smem));
  float* sLse = reinterpret_cast<float*>(aligned + (2 + 2 * Stages) * kTileBytes<D>);  // Stages buffers of 64
  float* sDi = sLse + Stages * kTile;
  const int64_t matrix = blockIdx.x;
  const int k0 = (gridDim.y - 1 - blockIdx.y) * kTile;
  const T* qb = matrixRows(q, layout.q, matrix);
  const T* db = matrixRows(dout, layout.out, matrix);
  const float* lb = lse2 + matrix * M;
  const float* ib = di + matrix * M;
  const int warp = threadIdx.x / 32;
  const int offset = N - M;
  const int firstTile = causal ? max(0, k0 - offset) / kTile : 0;
  const int tiles = (M + kTile - 1) / kTile;
  const int warpKey0 = k0 + warp * 16;

  auto loadQueries = [&](int t, int buffer) {
    loadSwizzled<T, D, kFlashThreads>(sQ + buffer * kTileBytes<D>, qb, layout.q.row, t * kTile, M, width);
    loadSwizzled<T, D, kFlashThreads>(sDout + buffer * kTileBytes<D>, db, layout.out.row, t * kTile, M, width);
    static_assert(kFlashThreads >= 2 * kTile, "one thread per lse and Di value");
    if (threadIdx.x < 2 * kTile) {
      const int j = threadIdx.x % kTile;
      const bool valid = t * kTile + j < M;
      const float* source = threadIdx.x < kTile ? lb : ib;
      float* target = threadIdx.x < kTile ? sLse : sDi;
      copyAsync4(target + buffer * kTile + j, source + (valid ? t * kTile + j : 0), valid);
    }
  };

  loadSwizzled<T, D, kFlashThreads>(sK, matrixRows(k, layout.k, matrix), layout.k.row, k0, N, width);
  loadSwizzled<T, D, kFlashThreads>(sV, matrixRows(v, layout.v, matrix), layout.v.row, k0, N, width);
  if (firstTile < tiles) loadQueries(firstTile, 0);
  copyAsyncCommit();
#pragma unroll
  for (int s = 1; s < Stages - 1; ++s) {
    if (firstTile + s < tiles) loadQueries(firstTile + s, s);
    copyAsyncCommit();
  }

  float accK[D / 8][4];  // written by the first step's products; a CTA always has a step (firstTile < tiles)
  float accV[D / 8][4];
  for (int t = firstTile; t < tiles; ++t) {
    const int step = t - firstTile;
    const int buffer = step % Stages;
    beginStep<Stages - 2>();
    if (t + Stages - 1 < tiles) loadQueries(t + Stages - 1, (step + Stages - 1) % Stages);
    copyAsyncCommit();
    const uint32_t tileQ = sQ + buffer * kTileBytes<D>;
    const uint32_t tileDout = sDout + buffer * kTileBytes<D>;
    const int query0 = t * kTile;

    // P^T = k q^T and dP^T = v dout^T as two groups; dV's product runs while dS is formed.
    float p[8][4], ds[8][4];
    tc::wgmmaFence();
    issueRowProduct<T, D, 8>(p, sK, tileQ, 0);
    issueRowProduct<T, D, 8>(ds, sV, tileDout, 0);
    tc::wgmmaWait<1>();
    tc::fenceRegisters(flat(p));
    keyProbabilities<8>(p, sLse + buffer * kTile, query0, warpKey0, offset, causal, scaleLog2);
    issueColumnProduct<T, D, 8>(accV, p, tileDout, 0, step == 0);
    tc::wgmmaWait<1>();
    tc::fenceRegisters(flat(ds));
    keyScoreGradients<8>(ds, p, sDi + buffer * kTile);
    issueColumnProduct<T, D, 8>(accK, ds, tileQ, 0, step == 0);
  }
  copyAsyncWait<0>();
  tc::wgmmaWait<0>();
  tc::fenceRegisters(flat(accK));
  tc::fenceRegisters(flat(accV));
  const float one[2] = {1.f, 1.f};
  const float scaled[2] = {scale, scale};
  storeRows<T, D>(matrixRows(dk, layout.k, matrix), layout.k.row, accK, warpKey0, N, width, scaled);
  storeRows<T, D>(matrixRows(dv, layout.v, matrix), layout.v.row, accV, warpKey0, N, width, one);
#endif
}

template <typename T, int D>
__global__ void __launch_bounds__(kFlashThreads) attentionBackwardQWgmmaKernel(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ dout,
    const float* __restrict__ lse2, const float* __restrict__ di, T* __restrict__ dq, int M, int N, int width,
    AttentionLayout layout, float scaleLog2, float scale, bool causal) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t sQ = (tc::smemAddress(smem) + kAlignSlack - 1) & ~static_cast<uint32_t>(kAlignSlack - 1);
  const uint32_t sDout = sQ + kTileBytes<D>;
  const uint32_t sK = sDout + kTileBytes<D>;   // two buffers
  const uint32_t sV = sK + 2 * kTileBytes<D>;  // two buffers
  const int64_t matrix = blockIdx.x;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * kTile;
  const T* kb = matrixRows(k, layout.k, matrix);
  const T* vb = matrixRows(v, layout.v, matrix);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int offset = N - M;
  const int lastRow = min(q0 + kTile, M) - 1;
  const int keyEnd = causal ? min(N, lastRow + offset + 1) : N;
  const int tiles = (keyEnd + kTile - 1) / kTile;
  const int warpRow0 = q0 + warp * 16;
  const int row[2] = {warpRow0 + lane / 4, warpRow0 + lane / 4 + 8};
  float rowLse2[2], rowDi[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    rowLse2[h] = row[h] < M ? lse2[matrix * M + row[h]] : 0.f;
    rowDi[h] = row[h] < M ? di[matrix * M + row[h]] : 0.f;
  }

  loadSwizzled<T, D, kFlashThreads>(sQ, matrixRows(q, layout.q, matrix), layout.q.row, q0, M, width);
  loadSwizzled<T, D, kFlashThreads>(sDout, matrixRows(dout, layout.out, matrix), layout.out.row, q0, M, width);
  loadSwizzled<T, D, kFlashThreads>(sK, kb, layout.k.row, 0, N, width);
  loadSwizzled<T, D, kFlashThreads>(sV, vb, layout.v.row, 0, N, width);
  copyAsyncCommit();

  float acc[D / 8][4];  // written by the first step's product
  for (int t = 0; t < tiles; ++t) {
    beginStep<0>();
    if (t + 1 < tiles) {
      loadSwizzled<T, D, kFlashThreads>(sK + ((t + 1) & 1) * kTileBytes<D>, kb, layout.k.row, (t + 1) * kTile, N,
                                        width);
      loadSwizzled<T, D, kFlashThreads>(sV + ((t + 1) & 1) * kTileBytes<D>, vb, layout.v.row, (t + 1) * kTile, N,
                                        width);
    }
    copyAsyncCommit();
    const uint32_t tileK = sK + (t & 1) * kTileBytes<D>;
    const uint32_t tileV = sV + (t & 1) * kTileBytes<D>;
    const int key0 = t * kTile;
    float p[8][4], ds[8][4];
    tc::wgmmaFence();
    issueRowProduct<T, D, 8>(p, sQ, tileK, 0);
    issueRowProduct<T, D, 8>(ds, sDout, tileV, 0);
    tc::wgmmaWait<1>();
    tc::fenceRegisters(flat(p));
    queryProbabilities(p, rowLse2, key0, warpRow0, row, offset, causal, scaleLog2);
    tc::wgmmaWait<0>();
    tc::fenceRegisters(flat(ds));
    queryScoreGradients(ds, p, rowDi);
    issueColumnProduct<T, D, 8>(acc, ds, tileK, 0, t == 0);
  }
  copyAsyncWait<0>();
  tc::wgmmaWait<0>();
  tc::fenceRegisters(flat(acc));
  const float scaled[2] = {scale, scale};
  storeRows<T, D>(matrixRows(dq, layout.q, matrix), layout.q.row, acc, warpRow0, M, width, scaled);
#endif
}

// Whether the wgmma kernels run on the current device: an sm_90 device and an sm_90a image of them in this build (a
// JIT of older PTX would run empty bodies). BLOCKSPARSE_CUDA_ATTENTION=mma picks the mma.sync kernels everywhere (to
// check them on Hopper).
bool attentionWgmma() {
  const char* choice = std::getenv("BLOCKSPARSE_CUDA_ATTENTION");
  if (choice != nullptr && std::strcmp(choice, "mma") == 0) return false;
  int device = 0;
  BS_CUDA_CHECK(cudaGetDevice(&device));
  static std::atomic<int> known[64];  // 0 unknown, 1 no, 2 yes
  if (device < 0 || device >= 64) return false;
  int state = known[device].load(std::memory_order_relaxed);
  if (state == 0) {
    cudaFuncAttributes attributes{};
    const bool ok =
        cudaFuncGetAttributes(&attributes, attentionForwardWgmmaKernel<__nv_bfloat16, 64>) == cudaSuccess &&
        attributes.ptxVersion >= 90 && attributes.binaryVersion == 90;
    if (!ok) cudaGetLastError();
    state = ok ? 2 : 1;
    known[device].store(state, std::memory_order_relaxed);
  }
  return state == 2;
}

// Above 48 KB of shared memory a kernel must opt in (per device: asked at each launch, as the tile kernels do).
template <typename Kernel>
void allowSharedMemory(Kernel kernel, int bytes) {
  BS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

template <typename T, int D>
void flashForward(const void* q, const void* k, const void* v, void* out, float* lse, int64_t batch, int M, int N,
                  int width, const AttentionLayout& layout, float scale, bool causal, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(batch), static_cast<unsigned>((M + kTile - 1) / kTile));
  const T* tq = static_cast<const T*>(q);
  const T* tk = static_cast<const T*>(k);
  const T* tv = static_cast<const T*>(v);
  if (attentionWgmma()) {
    constexpr int smem = (3 + kValueBuffers<D>) * kTileBytes<D> + kAlignSlack;
    allowSharedMemory(attentionForwardWgmmaKernel<T, D>, smem);
    attentionForwardWgmmaKernel<T, D><<<grid, kFlashThreads, smem, stream>>>(tq, tk, tv, static_cast<T*>(out), lse, M,
                                                                             N, width, layout, scale * kLog2e, causal);
    BS_LAUNCH_CHECK("attentionForwardWgmmaKernel");
    return;
  }
  constexpr int smem = kForwardSmem<T, D>;
  allowSharedMemory(attentionForwardKernel<T, D>, smem);
  attentionForwardKernel<T, D><<<grid, kFlashThreads, smem, stream>>>(tq, tk, tv, static_cast<T*>(out), lse, M, N,
                                                                      width, layout, scale * kLog2e, causal);
  BS_LAUNCH_CHECK("attentionForwardKernel");
}

template <typename T, int D>
void flashBackward(const void* dout, const void* q, const void* k, const void* v, const float* lse2, const float* di,
                   void* dq, void* dk, void* dv, int64_t batch, int M, int N, int width, const AttentionLayout& layout,
                   float scale, bool causal, cudaStream_t stream) {
  constexpr int kHalves = kKeyHalves<D>;
  constexpr int kStages = kQueryStages<D>;
  const T* tq = static_cast<const T*>(q);
  const T* tk = static_cast<const T*>(k);
  const T* tv = static_cast<const T*>(v);
  const T* tdout = static_cast<const T*>(dout);
  const dim3 gridKV(static_cast<unsigned>(batch), static_cast<unsigned>((N + kTile - 1) / kTile));
  const dim3 gridQ(static_cast<unsigned>(batch), static_cast<unsigned>((M + kTile - 1) / kTile));
  if (attentionWgmma()) {
    constexpr int smemKV =
        (2 + 2 * kStages) * kTileBytes<D> + 2 * kStages * kTile * static_cast<int>(sizeof(float)) + kAlignSlack;
    constexpr int smemQ = 6 * kTileBytes<D> + kAlignSlack;
    allowSharedMemory(attentionBackwardKVWgmmaKernel<T, D, kStages>, smemKV);
    attentionBackwardKVWgmmaKernel<T, D, kStages><<<gridKV, kFlashThreads, smemKV, stream>>>(
        tq, tk, tv, tdout, lse2, di, static_cast<T*>(dk), static_cast<T*>(dv), M, N, width, layout, scale * kLog2e,
        scale, causal);
    BS_LAUNCH_CHECK("attentionBackwardKVWgmmaKernel");
    if (M == 0) return;
    allowSharedMemory(attentionBackwardQWgmmaKernel<T, D>, smemQ);
    attentionBackwardQWgmmaKernel<T, D><<<gridQ, kFlashThreads, smemQ, stream>>>(
        tq, tk, tv, tdout, lse2, di, static_cast<T*>(dq), M, N, width, layout, scale * kLog2e, scale, causal);
    BS_LAUNCH_CHECK("attentionBackwardQWgmmaKernel");
    return;
  }
  constexpr int smemKV = kBackwardKVSmem<T, D, kStages>;
  constexpr int smemQ = kBackwardQSmem<T, D>;
  allowSharedMemory(attentionBackwardKVKernel<T, D, kHalves, kStages>, smemKV);
  attentionBackwardKVKernel<T, D, kHalves, kStages><<<gridKV, kFlashThreads * kHalves, smemKV, stream>>>(
      tq, tk, tv, tdout, lse2, di, static_cast<T*>(dk), static_cast<T*>(dv), M, N, width, layout, scale * kLog2e,
      scale, causal);
  BS_LAUNCH_CHECK("attentionBackwardKVKernel");
  if (M == 0) return;
  allowSharedMemory(attentionBackwardQKernel<T, D>, smemQ);
  attentionBackwardQKernel<T, D><<<gridQ, kFlashThreads, smemQ, stream>>>(tq, tk, tv, tdout, lse2, di,
                                                                          static_cast<T*>(dq), M, N, width, layout,
                                                                          scale * kLog2e, scale, causal);
  BS_LAUNCH_CHECK("attentionBackwardQKernel");
}

// Calls f(std::integral_constant<int, D>) with the tile width D (32, 64 or 128) that holds a head dim of `width`
// (columns past it read as zeros and are never stored).
template <typename F>
void withFlashTileWidth(int64_t width, F&& f) {
  if (width <= 32) f(std::integral_constant<int, 32>{});
  else if (width <= 64) f(std::integral_constant<int, 64>{});
  else f(std::integral_constant<int, 128>{});
}

// ---------------------------------------------------------------- math route

// The keys row r of a batch matrix keeps: all N, or under causal masking j <= i + N - M.
__device__ __forceinline__ int keptKeys(int64_t r, int M, int N, bool causal) {
  return causal ? min(N, static_cast<int>(r % M) + N - M + 1) : N;
}

// In place over raw scores s = q k^T: p = exp(scale s - lse), 0 where masked; lse computed (forward) or given.
template <typename T, bool Forward>
__global__ void probabilitiesKernel(T* __restrict__ s, float* __restrict__ lse, int64_t rows, int M, int N, float scale,
                                    bool causal) {
  const int64_t r = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  T* row = s + r * N;
  const int kept = keptKeys(r, M, N, causal);
  float rowLse;
  if constexpr (Forward) {
    float m = -INFINITY;
    for (int j = lane; j < kept; j += 32) m = fmaxf(m, toFloat(row[j]) * scale);
#pragma unroll
    for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float sum = 0.f;
    for (int j = lane; j < kept; j += 32) sum += expf(toFloat(row[j]) * scale - m);
#pragma unroll
    for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    rowLse = m + logf(sum);
    if (lane == 0) lse[r] = rowLse;
  } else {
    rowLse = lse[r];
  }
  for (int j = lane; j < N; j += 32) row[j] = fromFloat<T>(j < kept ? expf(toFloat(row[j]) * scale - rowLse) : 0.f);
}

// In place over dP = dout v^T: dS scale = P (dP - Di) scale, 0 where masked.
template <typename T>
__global__ void scoresGradientKernel(T* __restrict__ dp, const T* __restrict__ p, const float* __restrict__ di,
                                     int64_t rows, int M, int N, float scale, bool causal) {
  const int64_t r = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const int kept = keptKeys(r, M, N, causal);
  const float d = di[r];
  for (int j = lane; j < N; j += 32) {
    const int64_t at = r * N + j;
    dp[at] = fromFloat<T>(j < kept ? toFloat(p[at]) * (toFloat(dp[at]) - d) * scale : 0.f);
  }
}

unsigned rowWarpsGrid(int64_t rows) { return static_cast<unsigned>((rows * 32 + kThreads - 1) / kThreads); }

// Element i of [batch, rows, D] from src, laid out as `from`, to dst, laid out as `to`.
template <typename T>
__global__ void copyRowsKernel(T* __restrict__ dst, AttentionRows to, const T* __restrict__ src, AttentionRows from,
                               int64_t total, int rows, int D) {
  const int64_t perMatrix = static_cast<int64_t>(rows) * D;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t matrix = i / perMatrix;
    const int64_t r = i % perMatrix / D;
    const int64_t c = i % D;
    matrixRows(dst, to, matrix)[r * to.row + c] = matrixRows(src, from, matrix)[r * from.row + c];
  }
}

void copyRows(DType dtype, void* dst, const AttentionRows& to, const void* src, const AttentionRows& from,
              int64_t batch, int64_t rows, int64_t D, cudaStream_t stream) {
  const int64_t total = batch * rows * D;
  if (total == 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + kThreads - 1) / kThreads, 65536));
  BS_DISPATCH_FLOAT(dtype, T, copyRowsKernel<T><<<blocks, kThreads, 0, stream>>>(
                                  static_cast<T*>(dst), to, static_cast<const T*>(src), from, total,
                                  static_cast<int>(rows), static_cast<int>(D)));
  BS_LAUNCH_CHECK("copyRowsKernel");
}

bool sameRows(const AttentionRows& a, const AttentionRows& b) {
  return a.batch == b.batch && a.head == b.head && a.row == b.row && a.heads == b.heads;
}
bool sameLayout(const AttentionLayout& a, const AttentionLayout& b) {
  return sameRows(a.q, b.q) && sameRows(a.k, b.k) && sameRows(a.v, b.v) && sameRows(a.out, b.out);
}

// Whether the flash kernels' 16-byte copies can read every row of operands laid out as `layout` from these pointers.
bool flashAligned(const AttentionLayout& layout, std::initializer_list<const void*> pointers) {
  for (const AttentionRows* rows : {&layout.q, &layout.k, &layout.v, &layout.out}) {
    if (rows->batch % 8 != 0 || rows->head % 8 != 0 || rows->row % 8 != 0) return false;
  }
  for (const void* p : pointers) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

}  // namespace

AttentionLayout contiguousAttentionLayout(int64_t M, int64_t N, int64_t D) {
  const AttentionRows queries{M * D, 0, D, 1};
  const AttentionRows keys{N * D, 0, D, 1};
  return {queries, keys, keys, queries};
}

AttentionLayout packedAttentionLayout(int64_t heads, int64_t T, int64_t D) {
  const AttentionRows qkv{T * 3 * heads * D, D, 3 * heads * D, heads};
  const AttentionRows out{T * heads * D, D, heads * D, heads};
  return {qkv, qkv, qkv, out};
}

bool attentionUsesFlash(DType dtype, int64_t D, float scale) {
  // 16-byte copies of whole rows: D a multiple of 8 elements. The kernels take each row's maximum over raw scores,
  // which is the maximum of the scaled ones for a positive scale only.
  return (dtype == DType::Float16 || dtype == DType::BFloat16) && D % 8 == 0 && D <= 128 && scale > 0.f &&
         std::isfinite(scale);
}

namespace {

// A float32 view of a buffer of `dtype`: the buffer itself for float32, else a cast copy held by `keep`.
const float* asFloat32(DType dtype, const void* x, int64_t n, std::unique_ptr<Scratch>& keep, cudaStream_t stream) {
  if (dtype == DType::Float32) return static_cast<const float*>(x);
  keep = std::make_unique<Scratch>(static_cast<size_t>(n) * sizeof(float));
  launchCast(dtype, DType::Float32, x, keep->as<void>(), n, stream);
  return keep->as<float>();
}

// The float32 buffer in `dtype`: itself for float32, else a rounded copy held by `keep`.
const void* fromFloat32(DType dtype, const float* x, int64_t n, std::unique_ptr<Scratch>& keep, cudaStream_t stream) {
  if (dtype == DType::Float32) return x;
  keep = std::make_unique<Scratch>(static_cast<size_t>(n) * dtypeSize(dtype));
  launchCast(DType::Float32, dtype, x, keep->as<void>(), n, stream);
  return keep->as<void>();
}

// The probabilities P = exp(scale q k^T - lse) of every row in float32 (lse computed when `forward`), into `p`
// [batch, M, N]: the scores from float32 copies of q and k, so lse is float32-accurate in every dtype.
void mathProbabilities(DType dtype, const void* q, const void* k, float* p, float* lse, int64_t batch, int64_t M,
                       int64_t N, int64_t D, float scale, bool causal, bool forward, cudaStream_t stream) {
  std::unique_ptr<Scratch> q32, k32;
  const float* qf = asFloat32(dtype, q, batch * M * D, q32, stream);
  const float* kf = asFloat32(dtype, k, batch * N * D, k32, stream);
  launchMatmul(DType::Float32, qf, kf, p, batch, M, N, D, false, true, M * D, N * D, stream);
  const int64_t rows = batch * M;
  if (forward) {
    probabilitiesKernel<float, true><<<rowWarpsGrid(rows), kThreads, 0, stream>>>(p, lse, rows, static_cast<int>(M),
                                                                                 static_cast<int>(N), scale, causal);
  } else {
    probabilitiesKernel<float, false><<<rowWarpsGrid(rows), kThreads, 0, stream>>>(p, lse, rows, static_cast<int>(M),
                                                                                  static_cast<int>(N), scale, causal);
  }
  BS_LAUNCH_CHECK("probabilitiesKernel");
}

}  // namespace

void launchAttention(DType dtype, const void* q, const void* k, const void* v, void* out, float* lse, int64_t batch,
                     int64_t M, int64_t N, int64_t D, const AttentionLayout& layout, float scale, bool causal,
                     cudaStream_t stream) {
  if (batch * M == 0) return;
  if (attentionUsesFlash(dtype, D, scale) && flashAligned(layout, {q, k, v, out})) {
    BS_REQUIRE((M + kTile - 1) / kTile <= 65535, "attention: more than 4194240 queries in one matrix");
    const int m = static_cast<int>(M), n = static_cast<int>(N), width = static_cast<int>(D);
    withFlashTileWidth(D, [&](auto d) {
      constexpr int kD = decltype(d)::value;
      if (dtype == DType::Float16) {
        flashForward<__half, kD>(q, k, v, out, lse, batch, m, n, width, layout, scale, causal, stream);
      } else {
        flashForward<__nv_bfloat16, kD>(q, k, v, out, lse, batch, m, n, width, layout, scale, causal, stream);
      }
    });
    return;
  }
  const AttentionLayout dense = contiguousAttentionLayout(M, N, D);
  if (!sameLayout(layout, dense)) {
    // The math route reads contiguous matrices: copies in, the output copied back.
    const size_t size = dtypeSize(dtype);
    Scratch qc(static_cast<size_t>(batch * M * D) * size), kc(static_cast<size_t>(batch * N * D) * size),
        vc(static_cast<size_t>(batch * N * D) * size), oc(static_cast<size_t>(batch * M * D) * size);
    copyRows(dtype, qc.as<void>(), dense.q, q, layout.q, batch, M, D, stream);
    copyRows(dtype, kc.as<void>(), dense.k, k, layout.k, batch, N, D, stream);
    copyRows(dtype, vc.as<void>(), dense.v, v, layout.v, batch, N, D, stream);
    launchAttention(dtype, qc.as<void>(), kc.as<void>(), vc.as<void>(), oc.as<void>(), lse, batch, M, N, D, dense,
                    scale, causal, stream);
    copyRows(dtype, out, layout.out, oc.as<void>(), dense.out, batch, M, D, stream);
    return;
  }
  // Scores and probabilities in float32, the product with v in the dtype (P rounded once, as the flash kernels do).
  const int64_t scores = batch * M * N;
  Scratch probabilities(static_cast<size_t>(scores) * sizeof(float));
  mathProbabilities(dtype, q, k, probabilities.as<float>(), lse, batch, M, N, D, scale, causal, true, stream);
  std::unique_ptr<Scratch> rounded;
  const void* p = fromFloat32(dtype, probabilities.as<float>(), scores, rounded, stream);
  launchMatmul(dtype, p, v, out, batch, M, D, N, false, false, M * N, N * D, stream);
}

void launchAttentionBackward(DType dtype, const void* dout, const void* q, const void* k, const void* v,
                             const void* out, const float* lse, void* dq, void* dk, void* dv, int64_t batch, int64_t M,
                             int64_t N, int64_t D, const AttentionLayout& layout, float scale, bool causal,
                             cudaStream_t stream) {
  if (batch * N == 0) return;
  const int64_t rows = batch * M;
  const AttentionLayout dense = contiguousAttentionLayout(M, N, D);
  const bool flash = attentionUsesFlash(dtype, D, scale) && flashAligned(layout, {dout, q, k, v, out, dq, dk, dv});
  if ((!flash || rows == 0) && !sameLayout(layout, dense)) {
    // The math route (and the zeros of no query) reads and writes contiguous matrices: copies in, the gradients
    // copied back.
    const size_t size = dtypeSize(dtype);
    const size_t queries = static_cast<size_t>(batch * M * D) * size, keys = static_cast<size_t>(batch * N * D) * size;
    Scratch doc(queries), qc(queries), kc(keys), vc(keys), oc(queries), dqc(queries), dkc(keys), dvc(keys);
    copyRows(dtype, doc.as<void>(), dense.out, dout, layout.out, batch, M, D, stream);
    copyRows(dtype, qc.as<void>(), dense.q, q, layout.q, batch, M, D, stream);
    copyRows(dtype, kc.as<void>(), dense.k, k, layout.k, batch, N, D, stream);
    copyRows(dtype, vc.as<void>(), dense.v, v, layout.v, batch, N, D, stream);
    copyRows(dtype, oc.as<void>(), dense.out, out, layout.out, batch, M, D, stream);
    launchAttentionBackward(dtype, doc.as<void>(), qc.as<void>(), kc.as<void>(), vc.as<void>(), oc.as<void>(), lse,
                            dqc.as<void>(), dkc.as<void>(), dvc.as<void>(), batch, M, N, D, dense, scale, causal,
                            stream);
    copyRows(dtype, dq, layout.q, dqc.as<void>(), dense.q, batch, M, D, stream);
    copyRows(dtype, dk, layout.k, dkc.as<void>(), dense.k, batch, N, D, stream);
    copyRows(dtype, dv, layout.v, dvc.as<void>(), dense.v, batch, N, D, stream);
    return;
  }
  if (rows == 0) {
    // No query: the keys and values get no gradient.
    launchZero(dtype, dk, batch * N * D, stream);
    launchZero(dtype, dv, batch * N * D, stream);
    return;
  }
  BS_REQUIRE(!flash || ((M + kTile - 1) / kTile <= 65535 && (N + kTile - 1) / kTile <= 65535),
             "attentionBackward: more than 4194240 queries or keys in one matrix");
  // Di, and for the flash kernels lse in base 2 after it.
  Scratch di(static_cast<size_t>(flash ? 2 * rows : rows) * sizeof(float));
  float* lse2 = flash ? di.as<float>() + rows : nullptr;
  BS_DISPATCH_FLOAT(dtype, T, rowDotKernel<T><<<rowWarpsGrid(rows), kThreads, 0, stream>>>(
                                  static_cast<const T*>(dout), static_cast<const T*>(out), layout.out, di.as<float>(),
                                  flash ? lse : nullptr, lse2, rows, static_cast<int>(M), static_cast<int>(D)));
  BS_LAUNCH_CHECK("rowDotKernel");
  if (flash) {
    const int m = static_cast<int>(M), n = static_cast<int>(N), width = static_cast<int>(D);
    withFlashTileWidth(D, [&](auto d) {
      constexpr int kD = decltype(d)::value;
      if (dtype == DType::Float16) {
        flashBackward<__half, kD>(dout, q, k, v, lse2, di.as<float>(), dq, dk, dv, batch, m, n, width, layout, scale,
                                  causal, stream);
      } else {
        flashBackward<__nv_bfloat16, kD>(dout, q, k, v, lse2, di.as<float>(), dq, dk, dv, batch, m, n, width, layout,
                                         scale, causal, stream);
      }
    });
    return;
  }
  // Probabilities and dS in float32 (P and dS rounded once for the products in the dtype, as the flash kernels do).
  const int64_t scores = rows * N;
  Scratch probabilities(static_cast<size_t>(scores) * sizeof(float));
  mathProbabilities(dtype, q, k, probabilities.as<float>(), const_cast<float*>(lse), batch, M, N, D, scale, causal,
                    false, stream);
  {
    std::unique_ptr<Scratch> rounded;
    const void* p = fromFloat32(dtype, probabilities.as<float>(), scores, rounded, stream);
    launchMatmul(dtype, p, dout, dv, batch, N, D, M, true, false, M * N, M * D, stream);  // dv = P^T dout
  }
  Scratch gradient(static_cast<size_t>(scores) * sizeof(float));
  {
    std::unique_ptr<Scratch> dout32, v32;
    const float* doutf = asFloat32(dtype, dout, rows * D, dout32, stream);
    const float* vf = asFloat32(dtype, v, batch * N * D, v32, stream);
    launchMatmul(DType::Float32, doutf, vf, gradient.as<float>(), batch, M, N, D, false, true, M * D, N * D, stream);
  }
  scoresGradientKernel<float><<<rowWarpsGrid(rows), kThreads, 0, stream>>>(
      gradient.as<float>(), probabilities.as<float>(), di.as<float>(), rows, static_cast<int>(M), static_cast<int>(N),
      scale, causal);
  BS_LAUNCH_CHECK("scoresGradientKernel");
  std::unique_ptr<Scratch> rounded;
  const void* ds = fromFloat32(dtype, gradient.as<float>(), scores, rounded, stream);
  launchMatmul(dtype, ds, k, dq, batch, M, D, N, false, false, M * N, N * D, stream);  // dq = dS k
  launchMatmul(dtype, ds, q, dk, batch, N, D, M, true, false, M * N, M * D, stream);   // dk = dS^T q
}

// ------------------------------------------------------------------ cached attention (decoding)

namespace {

constexpr int kCachedThreads = 256;
// Keys whose probabilities one pass keeps in shared memory; longer caches take several passes, the softmax online.
constexpr int kCachedChunk = 1024;

// One block per query row (b, i): out = softmax(scale q k^T) v over the keys 0..positions[i] (and < N), in float32.
// Scores per chunk of keys (a thread per key, q scaled in shared memory), then the weighted sum of v with
// `groups` sets of D threads each taking every groups-th key (D < 256), or one set striding D (D >= 256, up to
// kMaxCachedHeadDim).
// Append (one query row, M = 1): the block first writes row b of newK and newV into k and v at positions[0] (when
// in [0, N)), and reads that key and value from newK and newV, never from the rows it writes. No other block reads
// batch b's cache, so the writes need no ordering. k and v carry no __restrict__: they are written here too.
template <typename T, bool Append>
__global__ void __launch_bounds__(kCachedThreads)
    cachedAttentionKernel(const T* __restrict__ q, T* k, T* v, const int32_t* __restrict__ positions,
                          const T* __restrict__ newK, const T* __restrict__ newV, T* __restrict__ out, int64_t M,
                          int64_t N, int D, float scale, IndexFaultSink fault) {
  extern __shared__ float shared[];
  __shared__ float scores[kCachedChunk];
  __shared__ float scratch[32];
  float* qs = shared;           // D
  float* partial = shared + D;  // kCachedThreads
  const int64_t row = blockIdx.x;
  const int64_t b = row / M, i = row % M;
  const int tid = threadIdx.x;
  T* orow = out + row * D;
  const int64_t position = positions[i];
  const T* newKey = nullptr;
  const T* newValue = nullptr;
  if constexpr (Append) {
    newKey = newK + row * D;
    newValue = newV + row * D;
    if (position >= 0 && position < N) {
      for (int d = tid; d < D; d += kCachedThreads) {
        k[(b * N + position) * D + d] = newKey[d];
        v[(b * N + position) * D + d] = newValue[d];
      }
    } else if (b == 0 && tid == 0) {
      reportIndexFault(fault, IndexFaultOp::CachedAttention, position, i, N);
    }
  }
  const int64_t count = min(position + 1, N);
  if (count <= 0) {
    for (int d = tid; d < D; d += kCachedThreads) orow[d] = fromFloat<T>(0.0f);
    return;
  }
  for (int d = tid; d < D; d += kCachedThreads) qs[d] = toFloat<T>(q[row * D + d]) * scale;
  __syncthreads();
  const T* kb = k + b * N * D;
  const T* vb = v + b * N * D;
  const bool wide = D >= kCachedThreads;
  const int groups = wide ? 1 : kCachedThreads / D;
  const int group = wide ? 0 : tid / D;
  float acc[kMaxCachedHeadDim / kCachedThreads] = {};
  float runMax = -INFINITY, runSum = 0.0f;
  for (int64_t c0 = 0; c0 < count; c0 += kCachedChunk) {
    const int len = static_cast<int>(min(static_cast<int64_t>(kCachedChunk), count - c0));
    float localMax = -INFINITY;
    for (int j = tid; j < len; j += kCachedThreads) {
      const T* key = Append && c0 + j == position ? newKey : kb + (c0 + j) * D;
      float s = 0.0f;
      for (int d = 0; d < D; ++d) s += qs[d] * toFloat<T>(key[d]);
      scores[j] = s;
      localMax = fmaxf(localMax, s);
    }
    const float newMax = fmaxf(runMax, blockMax(localMax, scratch));
    const float factor = expf(runMax - newMax);  // 0 on the first chunk (runMax = -inf)
    float localSum = 0.0f;
    for (int j = tid; j < len; j += kCachedThreads) {
      float p = expf(scores[j] - newMax);
      scores[j] = p;
      localSum += p;
    }
    runSum = runSum * factor + blockSum(localSum, scratch);  // its barriers publish scores
    runMax = newMax;
    for (float& a : acc) a *= factor;
    if (group < groups) {
      for (int j = group; j < len; j += groups) {
        const float p = scores[j];
        const T* value = Append && c0 + j == position ? newValue : vb + (c0 + j) * D;
        if (wide) {
#pragma unroll
          for (int a = 0; a < kMaxCachedHeadDim / kCachedThreads; ++a) {
            int d = tid + a * kCachedThreads;
            if (d < D) acc[a] += p * toFloat<T>(value[d]);
          }
        } else {
          acc[0] += p * toFloat<T>(value[tid - group * D]);
        }
      }
    }
    __syncthreads();  // the next chunk overwrites scores
  }
  const float inverse = 1.0f / runSum;
  if (wide) {
#pragma unroll
    for (int a = 0; a < kMaxCachedHeadDim / kCachedThreads; ++a) {
      int d = tid + a * kCachedThreads;
      if (d < D) orow[d] = fromFloat<T>(acc[a] * inverse);
    }
    return;
  }
  partial[tid] = acc[0];
  __syncthreads();
  if (tid < D) {
    float total = 0.0f;
    for (int g = 0; g < groups; ++g) total += partial[g * D + tid];
    orow[tid] = fromFloat<T>(total * inverse);
  }
}

}  // namespace

void launchCachedAttention(DType dtype, const void* q, void* k, void* v, const int32_t* positions, const void* newK,
                           const void* newV, void* out, int64_t batch, int64_t M, int64_t N, int64_t D, float scale,
                           cudaStream_t stream) {
  if (batch * M == 0) return;
  const bool append = newK != nullptr && newV != nullptr;
  if (append && M > 1) {
    // Rows of the other queries' keys are read by every block: written first, by their own launches.
    launchIndexCopy(dtype, newK, positions, k, batch, N, D, M, stream, IndexFaultOp::CachedAttention);
    launchIndexCopy(dtype, newV, positions, v, batch, N, D, M, stream, IndexFaultOp::CachedAttention);
  }
  size_t shared = sizeof(float) * (D + kCachedThreads);
  BS_DISPATCH_FLOAT(dtype, T, {
    const unsigned grid = static_cast<unsigned>(batch * M);
    if (append && M == 1)
      cachedAttentionKernel<T, true><<<grid, kCachedThreads, shared, stream>>>(
          static_cast<const T*>(q), static_cast<T*>(k), static_cast<T*>(v), positions, static_cast<const T*>(newK),
          static_cast<const T*>(newV), static_cast<T*>(out), M, N, static_cast<int>(D), scale, indexFaultSink());
    else
      cachedAttentionKernel<T, false><<<grid, kCachedThreads, shared, stream>>>(
          static_cast<const T*>(q), static_cast<T*>(k), static_cast<T*>(v), positions, nullptr, nullptr,
          static_cast<T*>(out), M, N, static_cast<int>(D), scale, IndexFaultSink{});
  });
  BS_LAUNCH_CHECK("cachedAttentionKernel");
}

}  // namespace bs
