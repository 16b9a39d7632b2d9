// The caching allocator (src/memory.cpp) checked on the host: cudaMalloc and friends replaced by the host heap, so
// it runs without a GPU (backend-cuda's allocator_host.test.ts compiles and runs it where nvcc is). Random
// allocations of every size (0 bytes to 40 MiB), frees, graph pools made, made current and destroyed, and cache
// releases; after them the invariants: every live buffer keeps what was written to it (no two overlap),
// blocks are aligned, a buffer allocated outside a pool never overlaps memory a live pool freed, and the byte
// counts add up to what was taken from the fake CUDA.
//
//   nvcc -std=c++17 -x cu -I kernels-cuda/src kernels-cuda/test/memory_host.cpp -o memory_host && ./memory_host 20000
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <map>
#include <set>
#include <random>
#include <vector>
static size_t fakeCap = size_t(1) << 31, fakeUsed = 0;
static std::map<void*, size_t> fakeLive;
static cudaError_t fakeMalloc(void** p, size_t n) {
  if (fakeUsed + n > fakeCap) { *p = nullptr; return cudaErrorMemoryAllocation; }
  *p = aligned_alloc(4096, (n + 4095) / 4096 * 4096); fakeUsed += n; fakeLive[*p] = n; return cudaSuccess;
}
static cudaError_t fakeFree(void* p) { fakeUsed -= fakeLive.at(p); fakeLive.erase(p); free(p); return cudaSuccess; }
// As CUDA: synchronising a stream that is being captured fails (and would end the capture).
static bool fakeCapturing = false;
static cudaError_t fakeSync(cudaStream_t) { return fakeCapturing ? cudaErrorStreamCaptureUnsupported : cudaSuccess; }
static cudaError_t fakeInfo(size_t* f, size_t* t) { *f = fakeCap - fakeUsed; *t = fakeCap; return cudaSuccess; }
static cudaError_t fakeLast() { return cudaSuccess; }
#define cudaMalloc fakeMalloc
#define cudaFree fakeFree
#define cudaStreamSynchronize fakeSync
#define cudaMemGetInfo fakeInfo
#define cudaGetLastError fakeLast
#include "memory.cpp"
namespace bs { cudaStream_t stream() { return nullptr; } }
using namespace bs;
// A tag every 64 KiB (a prime stride, so tags fall at every offset within a page over the run) and at each end:
// writing every page of buffers up to 40 MiB made the host's page faults most of the run's time.
constexpr size_t kTagStride = 65521;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "FAIL line %d: %s\n", __LINE__, #c); std::exit(1); } } while (0)

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 20000;
  std::mt19937_64 rng(7);
  struct L { BufferId id; size_t n; uint32_t pool; uint8_t tag; };
  std::vector<L> alive;
  std::vector<uint32_t> pools;
  std::map<uint32_t, std::set<char*>> poolFreed;  // addresses a live pool freed
  auto sizeOf = [&]() -> size_t {
    switch (rng() % 4) {
      case 0: return 1 + rng() % 4096;
      case 1: return 1 + rng() % (1 << 20);
      case 2: return (1 << 20) + rng() % (12 << 20);
      default: return (rng() % 3 == 0) ? 0 : (1 + rng() % (40 << 20));
    }
  };
  for (int step = 0; step < steps; ++step) {
    int op = rng() % 10;
    if ((op < 5 && alive.size() < 40) || alive.empty()) {
      size_t n = sizeOf();
      BufferId id;
      try { id = allocate(n); } catch (const Error& e) {
        MemoryStats s = memoryStats();
        fprintf(stderr, "OOM at step %d: n=%zu inUse=%zu cached=%zu pooled=%zu reserved=%zu segments=%zu pools=%zu live=%zu\n", step, n, s.bytesInUse, s.bytesCached, pooledBytes(), s.bytesReserved, s.segments, pools.size(), alive.size());
        exit(1);
      }
      const Buffer& b = lookup(id, "t");
      CHECK(b.byteLength == n && b.blockBytes >= n && (n == 0 || b.pool == currentPool));
      CHECK(reinterpret_cast<uintptr_t>(b.data) % kBlockRound == 0);
      // Outside a pool, never an address a live pool freed.
      if (currentPool == 0 && n > 0)
        for (auto& [p, freed] : poolFreed) {
          auto a = freed.lower_bound(static_cast<char*>(b.data));
          CHECK(a == freed.end() || *a >= static_cast<char*>(b.data) + n);
        }
      uint8_t tag = static_cast<uint8_t>(rng());
      // Tags every kTagStride bytes and at the end (a full write of tens of MiB per step would make the check slow).
      for (size_t i = 0; i < n; i += kTagStride) static_cast<uint8_t*>(b.data)[i] = tag;
      if (n) static_cast<uint8_t*>(b.data)[n - 1] = tag;
      alive.push_back({id, n, currentPool, tag});
    } else if (op < 9) {
      size_t k = rng() % alive.size();
      const Buffer& b = lookup(alive[k].id, "t");
      for (size_t i = 0; i < alive[k].n; i += kTagStride) CHECK(((uint8_t*)b.data)[i] == alive[k].tag);
      if (alive[k].n) CHECK(((uint8_t*)b.data)[alive[k].n - 1] == alive[k].tag);
      if (b.pool != 0 && std::find(pools.begin(), pools.end(), b.pool) != pools.end()) poolFreed[b.pool].insert(static_cast<char*>(b.data));
      release(alive[k].id);
      alive.erase(alive.begin() + k);
    } else {
      int what = rng() % 4;
      if (what == 0 && pools.size() < 3) { uint32_t p = createPool(); pools.push_back(p); setCurrentPool(p); }
      else if (what == 1) setCurrentPool(0);
      else if (what == 2 && !pools.empty()) { size_t k = rng() % pools.size(); destroyPool(pools[k]); poolFreed.erase(pools[k]); pools.erase(pools.begin() + k); }
      else releaseCache();
    }
    {  // every step: the counts add up and no two live buffers overlap (the tags above sample every 64 KiB)
      MemoryStats s = memoryStats();
      size_t inUse = 0;
      for (auto& l : alive) inUse += lookup(l.id, "t").blockBytes;
      CHECK(s.bytesInUse == inUse);
      CHECK(s.bytesInUse + s.bytesCached + pooledBytes() == s.bytesReserved);
      CHECK(s.bytesReserved == fakeUsed);
      // Live buffers never overlap.
      std::map<char*, size_t> ranges;
      for (auto& l : alive) if (l.n) ranges[(char*)lookup(l.id, "t").data] = lookup(l.id, "t").blockBytes;
      char* end = nullptr;
      for (auto& [p, n] : ranges) { CHECK(p >= end || end == nullptr || p >= end); end = p + n; }
      char* prevEnd = nullptr;
      for (auto& [p, n] : ranges) { if (prevEnd) CHECK(p >= prevEnd); prevEnd = p + n; }
    }
  }
  // Everything freed, every pool destroyed: all memory is releasable and goes back.
  for (auto& l : alive) release(l.id);
  for (uint32_t p : pools) destroyPool(p);
  setCurrentPool(0);
  MemoryStats s = memoryStats();
  CHECK(s.bytesInUse == 0 && pooledBytes() == 0);
  CHECK(s.bytesReleasable == s.bytesReserved);
  releaseCache();
  CHECK(memoryStats().bytesReserved == 0 && fakeUsed == 0 && memoryStats().segments == 0);
  // A new size from a held segment: no cudaMalloc.
  BufferId a = allocate(3 << 20); release(a);
  size_t calls = memoryStats().cudaMallocCalls;
  BufferId b = allocate(5 << 20); BufferId c = allocate(7 << 20);
  // Both fit the freed 3 MiB block's 20 MiB segment.
  CHECK(memoryStats().cudaMallocCalls == calls);
  release(b); release(c);
  // Out of memory: a cap smaller than what is asked.
  fakeCap = fakeUsed + (64 << 20);
  bool threw = false;
  try { allocate(size_t(1) << 30); } catch (const Error&) { threw = true; }
  CHECK(threw);
  // setMemoryLimit: a segment past the cap fails as cudaMalloc would (after the cache is released, which then lets
  // a request that fits under the cap through); lifting the cap allows again.
  fakeCap = SIZE_MAX;
  releaseCache();
  const size_t held = memoryStats().bytesReserved;
  CHECK(setMemoryLimit(held + (64 << 20)) == 0 && memoryLimit() == held + (64 << 20));
  BufferId d = allocate(32 << 20);
  threw = false;
  try { allocate(48 << 20); } catch (const Error& e) { threw = e.kind == ErrorKind::OutOfMemory && std::string(e.what()).find("memory limit") != std::string::npos; }
  CHECK(threw);
  CHECK(memoryStats().bytesReserved <= held + (64 << 20));
  release(d);
  BufferId e = allocate(48 << 20);  // the freed 32 MiB segment released on the way: fits under the cap
  CHECK(memoryStats().bytesReserved <= held + (64 << 20));
  release(e);
  CHECK(setMemoryLimit(0) == held + (64 << 20));
  release(allocate(256 << 20));
  releaseCache();
  // During a capture (a pool current) the cache is kept: the stream cannot be synchronised then. A request that misses
  // fails as out of memory, not as a failed synchronisation, and releaseCache does nothing; both work after it.
  release(allocate(32 << 20));  // a wholly free segment in the cache
  const size_t cached = memoryStats().bytesReserved;
  CHECK(cached == (32 << 20) && setMemoryLimit(cached + (16 << 20)) == 0);
  const uint32_t capture = createPool();
  setCurrentPool(capture);
  fakeCapturing = true;
  threw = false;
  try { allocate(48 << 20); } catch (const Error& e) { threw = e.kind == ErrorKind::OutOfMemory && std::string(e.what()).find("graph capture") != std::string::npos; }
  CHECK(threw);
  releaseCache();
  CHECK(memoryStats().bytesReserved == cached);
  fakeCapturing = false;
  setCurrentPool(0);
  destroyPool(capture);
  release(allocate(48 << 20));  // the cached segment released on the way: fits under the cap
  CHECK(setMemoryLimit(0) == cached + (16 << 20));
  releaseCache();
  std::printf("ok: %d steps, %zu segments, %zu cudaMalloc calls, %zu cache hits\n", steps, memoryStats().segments, memoryStats().cudaMallocCalls, memoryStats().cacheHits);
}
