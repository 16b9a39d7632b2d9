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
    live.emplace(id, Buffer{nullptr, 0, 0});
    stats.buffersInUse++;
    return id;
  }
  size_t bytes = sizeClass(byteLength);
  void* ptr = nullptr;
  auto cached = cache.find(bytes);
  if (cached != cache.end() && !cached->second.empty()) {
    ptr = cached->second.back();
    cached->second.pop_back();
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
  live.emplace(id, Buffer{ptr, byteLength, bytes});
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
  cache[buffer.classBytes].push_back(buffer.data);
  stats.bytesCached += buffer.classBytes;
  stats.buffersCached++;
}

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
