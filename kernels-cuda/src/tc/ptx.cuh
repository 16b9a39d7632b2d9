// Inline-PTX wrappers for the tensor-core kernels: cp.async, ldmatrix, mma.sync (sm_80+), and
// mbarrier, bulk tensor copies and wgmma (sm_90a). Each wrapper is one instruction, named after it.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace bs::tc {

__device__ __forceinline__ uint32_t smemAddress(const void* pointer) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(pointer));
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a swizzled panel whose rows are 128 or 64 bytes
// (64 or 32 two-byte elements). The XOR is the one the bulk tensor copy writes (SWIZZLE_128B/64B) and
// wgmma reads, and it lets ldmatrix read 8 consecutive rows of one chunk without bank conflicts.
// The panel must start on a 1024-byte boundary.
template <int kPanelWidth>
__device__ __forceinline__ uint32_t panelOffset(int row, int chunk) {
  static_assert(kPanelWidth == 64 || kPanelWidth == 32, "panels are 64 or 32 elements wide");
  if constexpr (kPanelWidth == 64) return static_cast<uint32_t>(row * 128 + ((chunk ^ (row & 7)) << 4));
  else return static_cast<uint32_t>(row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4));
}

// ---------------------------------------------------------------- sm_80: cp.async, ldmatrix, mma.sync

// Copies 16 bytes, or writes 16 zero bytes when `valid` is false (the source is then not read).
__device__ __forceinline__ void cpAsync16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
__device__ __forceinline__ void ldmatrixX4Trans(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

// Stores four 8x8 matrices of 2-byte elements held in the mma accumulator layout (a thread's register q: row
// lane / 4, columns 2 (lane % 4) and + 1 of matrix q) transposed: row i of matrix q (column i as held) goes to
// the 16 bytes at the address lane 8q + i gives. sm_90.
__device__ __forceinline__ void stmatrixX4Trans(uint32_t address, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(address), "r"(r0),
               "r"(r1), "r"(r2), "r"(r3)
               : "memory");
}

// D += A * B for one m16n8k16 tile, float32 accumulators.
template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma16816<__half>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// float32 rounded to TF32 (10-bit mantissa, to nearest, ties away from zero), as the bits of a float32.
__device__ __forceinline__ uint32_t toTf32(float value) {
  uint32_t bits;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(bits) : "f"(value));
  return bits;
}

// D += A * B for one m16n8k8 tile of TF32 operands, float32 accumulators.
__device__ __forceinline__ void mma1688Tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Two float32 values rounded into one 32-bit pair of T.
template <typename T>
__device__ __forceinline__ uint32_t packPair(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t packPair<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t packPair<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

template <typename T>
__device__ __forceinline__ float2 unpackPair(uint32_t bits);
template <>
__device__ __forceinline__ float2 unpackPair<__nv_bfloat16>(uint32_t bits) {
  return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&bits));
}
template <>
__device__ __forceinline__ float2 unpackPair<__half>(uint32_t bits) {
  return __half22float2(*reinterpret_cast<__half2*>(&bits));
}

// ---------------------------------------------------------------- sm_90a: mbarrier, TMA, wgmma

__device__ __forceinline__ void mbarrierInit(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smemAddress(bar)), "r"(count));
}
// Makes the initialised barriers visible to the bulk-copy unit.
__device__ __forceinline__ void fenceBarrierInit() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::); }

__device__ __forceinline__ void mbarrierArriveExpectTx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smemAddress(bar)), "r"(bytes)
               : "memory");
}
// Adds `bytes` to the current phase's expected transfer without arriving (a copy's issuer, before the copy).
__device__ __forceinline__ void mbarrierExpectTx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(smemAddress(bar)), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbarrierArrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smemAddress(bar)) : "memory");
}
// Spins until the phase with parity `parity` has completed.
__device__ __forceinline__ void mbarrierWait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n"
      "}\n" ::"r"(smemAddress(bar)),
      "r"(parity)
      : "memory");
}

// 2-D bulk tensor copy of one box into shared memory; completion is counted on `bar` in bytes.
__device__ __forceinline__ void tmaLoad2d(void* dst, const CUtensorMap* map, int32_t inner, int32_t outer,
                                          uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          smemAddress(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(inner), "r"(outer), "r"(smemAddress(bar))
      : "memory");
}
// 2-D bulk tensor copy of one box from shared memory to global memory (rows past the tensor's end are not
// written), counted in this thread's bulk group; the shared rows must be made visible to the async proxy first
// (fenceProxyAsync by every thread that wrote them, then a barrier).
__device__ __forceinline__ void tmaStore2d(const CUtensorMap* map, const void* src, int32_t inner, int32_t outer) {
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%2, %3}], [%1];\n" ::"l"(
                   reinterpret_cast<uint64_t>(map)),
               "r"(smemAddress(src)), "r"(inner), "r"(outer)
               : "memory");
}
__device__ __forceinline__ void bulkCommit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// Waits until at most kPending of this thread's bulk groups are still reading their shared-memory source.
template <int kPending>
__device__ __forceinline__ void bulkWaitRead() {
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(kPending) : "memory");
}
// Waits until at most kPending of this thread's bulk groups are incomplete (their writes done).
template <int kPending>
__device__ __forceinline__ void bulkWait() {
  asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(kPending) : "memory");
}
__device__ __forceinline__ void prefetchTensorMap(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// Shared-memory matrix descriptor: start, leading and stride byte offsets, swizzle (1 = 128B, 2 = 64B).
__device__ __forceinline__ uint64_t matrixDescriptor(uint32_t address, uint32_t leadingBytes, uint32_t strideBytes,
                                                     uint32_t swizzle) {
  return static_cast<uint64_t>((address & 0x3FFFF) >> 4) | (static_cast<uint64_t>((leadingBytes & 0x3FFFF) >> 4) << 16) |
         (static_cast<uint64_t>((strideBytes & 0x3FFFF) >> 4) << 32) | (static_cast<uint64_t>(swizzle) << 62);
}

// The descriptor of the matrix `bytes` (a multiple of 16) further on: only the start address field (bits 0-13,
// address >> 4) moves. A CTA's shared-memory addresses stay under 2^18 (228 KB on sm_90), so the add never carries out
// of the field, and it is one 32-bit add where matrixDescriptor masks, shifts and merges each time.
// The halves are joined by a mov.b64 (a register pair in SASS) so that the compiler does not mask and merge them again.
__device__ __forceinline__ uint64_t advanceDescriptor(uint64_t descriptor, uint32_t bytes) {
  uint64_t advanced;
  asm("mov.b64 %0, {%1, %2};\n"
      : "=l"(advanced)
      : "r"(static_cast<uint32_t>(descriptor) + (bytes >> 4)), "r"(static_cast<uint32_t>(descriptor >> 32)));
  return advanced;
}

// The warpgroup of thread `tid`, read through lane 0 so that ptxas knows it warp-uniform (a warp never straddles two
// warpgroups). Everything a kernel derives from it then stays in uniform registers, made by uniform instructions:
// a consumer's stage addresses, its stage records, each wgmma's descriptors. Computed as tid / 128 it lived in vector
// registers, and every wgmma took four R2UR and the moves of its descriptors' constant halves (the X-resident tile at
// 32x32: 183 -> 137 instructions from a line's first fence to its last wait). Every thread of the warp must call it.
__device__ __forceinline__ int warpGroupOf(int tid) { return __shfl_sync(0xffffffffu, tid / 128, 0); }

// Orders this thread's generic-proxy shared-memory writes before later async-proxy reads (wgmma, TMA).
__device__ __forceinline__ void fenceProxyAsync() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Named barrier `id` (1-15; 0 is __syncthreads) over `threads` threads, a multiple of 32.
// Thread-block clusters: this CTA's rank, the address of the same shared-memory word in CTA `rank`, a load from it.
__device__ __forceinline__ uint32_t clusterRank() {
  uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  return rank;
}
__device__ __forceinline__ uint32_t mapShared(uint32_t address, uint32_t rank) {
  uint32_t mapped;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(mapped) : "r"(address), "r"(rank));
  return mapped;
}
__device__ __forceinline__ float4 loadSharedCluster4(uint32_t address) {
  float4 v;
  asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];\n"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "r"(address)
               : "memory");
  return v;
}
// Every thread of every CTA of the cluster. Relaxed: orders nothing (a release is a MEMBAR.ALL.GPU, which at the end
// of a CTA waits for its output stores to drain); clusterSyncShared: this thread's shared-memory writes before it are
// visible to every CTA of the cluster after it.
__device__ __forceinline__ void clusterSync() {
  asm volatile("barrier.cluster.arrive.relaxed;\nbarrier.cluster.wait;\n" ::: "memory");
}
__device__ __forceinline__ void clusterSyncShared() {
  asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;\n" ::: "memory");
}

__device__ __forceinline__ void namedBarrierSync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Arrives at named barrier `id` without waiting: this thread's earlier shared-memory writes are visible to the
// threads that wait there (bar.sync) once the barrier completes.
__device__ __forceinline__ void namedBarrierArrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

__device__ __forceinline__ void wgmmaFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmmaCommit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wgmmaWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Keeps the compiler from moving accumulator accesses across the asynchronous wgmma window.
template <int kCount>
__device__ __forceinline__ void fenceRegisters(float (&d)[kCount]) {
#pragma unroll
  for (int i = 0; i < kCount; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// Zeroes a consumer's accumulator tiles, outside any wgmma's window (ptxas serializes wgmmas whose accumulators
// other instructions define while they may be in flight).
template <int kCount>
__device__ __forceinline__ void zeroAccumulators(float (&acc)[kCount]) {
#pragma unroll
  for (int j = 0; j < kCount; ++j) acc[j] = 0.0f;
}
template <int kTiles, int kCount>
__device__ __forceinline__ void zeroAccumulators(float (&acc)[kTiles][kCount]) {
#pragma unroll
  for (int i = 0; i < kTiles; ++i) zeroAccumulators(acc[i]);
}

template <int kRegisters>
__device__ __forceinline__ void setMaxRegistersIncrease() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}
template <int kRegisters>
__device__ __forceinline__ void setMaxRegistersDecrease() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}

}  // namespace bs::tc

#include "wgmma_ops.cuh"
