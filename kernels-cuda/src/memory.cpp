#include "memory.h"

#include "device.h"

#include <unordered_map>
#include <vector>

namespace bs {

namespace {
std::unordered_map<BufferId, Buffer> live;
std::unordered_map<size_t, std::vector<void*>> cache;
BufferId nextId = 1;
MemoryStats stats{};
// Live graph pools and their free lists; currentPool takes the allocations (0: none).
std::unordered_map<uint32_t, std::unordered_map<size_t, std::vector<void*>>> pools;
uint32_t nextPool = 1;
uint32_t currentPool = 0;
size_t pooled = 0;

// A free buffer of `bytes` from a free list, or nullptr.
void* takeFrom(std::unordered_map<size_t, std::vector<void*>>& lists, size_t bytes) {
  auto found = lists.find(bytes);
  if (found == lists.end() || found->second.empty()) return nullptr;
  void* ptr = found->second.back();
  found->second.pop_back();
  return ptr;
}

void* mallocOrNull(size_t bytes) {
  void* ptr = nullptr;
  cudaError_t status = cudaMalloc(&ptr, bytes);
  if (status == cudaSuccess) {
    stats.cudaMallocCalls++;
    return ptr;
  }
  // A failed cudaMalloc leaves its error as the "last error"; clear it so a later launch check is not blamed.
  cudaGetLastError();
  if (status != cudaErrorMemoryAllocation) throwCuda(status, "cudaMalloc");
  return nullptr;
}
}  // namespace

size_t sizeClass(size_t byteLength) {
  // 256-byte minimum, then four classes per power of two: at most 25% slack.
  if (byteLength <= 256) return 256;
  size_t power = 256;
  while (power * 2 < byteLength) power *= 2;
  size_t step = power / 4;
  return (byteLength + step - 1) / step * step;
}

BufferId allocate(size_t byteLength) {
  BufferId id = nextId++;
  if (byteLength == 0) {
    live.emplace(id, Buffer{nullptr, 0, 0, 0});
    stats.buffersInUse++;
    return id;
  }
  size_t bytes = sizeClass(byteLength);
  void* ptr = currentPool != 0 ? takeFrom(pools[currentPool], bytes) : nullptr;
  if (ptr != nullptr) {
    pooled -= bytes;
    stats.cacheHits++;
  } else if ((ptr = takeFrom(cache, bytes)) != nullptr) {
    stats.bytesCached -= bytes;
    stats.buffersCached--;
    stats.cacheHits++;
  } else {
    stream();  // throws if the device is not initialised
    ptr = mallocOrNull(bytes);
    if (ptr == nullptr) {
      releaseCache();
      ptr = mallocOrNull(bytes);
    }
    if (ptr == nullptr) {
      size_t freeBytes = 0, totalBytes = 0;
      cudaMemGetInfo(&freeBytes, &totalBytes);
      cudaGetLastError();
      throw Error(ErrorKind::OutOfMemory,
                  "CUDA out of memory: cudaMalloc of " + std::to_string(bytes) + " bytes failed after releasing the cache (" +
                      std::to_string(stats.bytesInUse) + " bytes in use by blocksparse, " + std::to_string(freeBytes) +
                      " of " + std::to_string(totalBytes) + " bytes free on the device)");
    }
  }
  live.emplace(id, Buffer{ptr, byteLength, bytes, currentPool});
  stats.bytesInUse += bytes;
  stats.buffersInUse++;
  return id;
}

void release(BufferId id) {
  auto it = live.find(id);
  BS_REQUIRE(it != live.end(), "free of an unknown or already freed buffer (id " + std::to_string(id) + ")");
  Buffer buffer = it->second;
  live.erase(it);
  stats.buffersInUse--;
  if (buffer.data == nullptr) return;
  stats.bytesInUse -= buffer.classBytes;
  auto pool = buffer.pool != 0 ? pools.find(buffer.pool) : pools.end();
  if (pool != pools.end()) {
    pool->second[buffer.classBytes].push_back(buffer.data);
    pooled += buffer.classBytes;
    return;
  }
  cache[buffer.classBytes].push_back(buffer.data);
  stats.bytesCached += buffer.classBytes;
  stats.buffersCached++;
}

uint32_t createPool() {
  uint32_t pool = nextPool++;
  pools[pool];
  return pool;
}

void setCurrentPool(uint32_t pool) {
  BS_REQUIRE(pool == 0 || pools.count(pool) != 0, "setCurrentPool: unknown pool " + std::to_string(pool));
  currentPool = pool;
}

void destroyPool(uint32_t pool) {
  auto found = pools.find(pool);
  if (found == pools.end()) return;
  if (currentPool == pool) currentPool = 0;
  for (auto& entry : found->second) {
    for (void* ptr : entry.second) {
      cache[entry.first].push_back(ptr);
      pooled -= entry.first;
      stats.bytesCached += entry.first;
      stats.buffersCached++;
    }
  }
  pools.erase(found);
}

size_t pooledBytes() { return pooled; }

const Buffer& lookup(BufferId id, const char* what) {
  auto it = live.find(id);
  if (it == live.end())
    throwInvalid(std::string(what) + ": unknown or freed buffer (id " + std::to_string(id) + ")");
  return it->second;
}

bool isLive(BufferId id) { return live.count(id) != 0; }

void releaseCache() {
  if (stats.buffersCached == 0) return;
  // Kernels queued before a free may still use the memory: wait for them.
  BS_CUDA_CHECK(cudaStreamSynchronize(stream()));
  for (auto& entry : cache) {
    for (void* ptr : entry.second) BS_CUDA_CHECK(cudaFree(ptr));
    entry.second.clear();
  }
  cache.clear();
  stats.bytesCached = 0;
  stats.buffersCached = 0;
}

MemoryStats memoryStats() { return stats; }

}  // namespace bs
