// A caching device allocator: freed buffers go to a free list of their size class and are
// handed out again without cudaMalloc. All work is on one stream, so reuse is ordered.
#pragma once

#include "common.h"

#include <cstdint>

namespace bs {

using BufferId = uint64_t;

struct Buffer {
  void* data;
  size_t byteLength;  // what was asked for
  size_t classBytes;  // what the allocation holds
};

struct MemoryStats {
  size_t bytesInUse;     // size-class bytes of live buffers
  size_t bytesCached;    // size-class bytes of freed buffers kept for reuse
  size_t buffersInUse;
  size_t buffersCached;
  size_t cudaMallocCalls;
  size_t cacheHits;
};

// Allocates (cache first); on cudaMalloc failure releases the cache and retries once, then throws
// an OutOfMemory Error.
BufferId allocate(size_t byteLength);
void release(BufferId id);
// The live buffer with this id, or an InvalidArgument Error naming `what`.
const Buffer& lookup(BufferId id, const char* what);
bool isLive(BufferId id);
// Frees every cached (not live) allocation back to CUDA.
void releaseCache();
MemoryStats memoryStats();
size_t sizeClass(size_t byteLength);

// Scratch space for one call: freed when it goes out of scope, ordered on the stream like all else.
class Scratch {
 public:
  explicit Scratch(size_t byteLength) : id_(allocate(byteLength)), data_(lookup(id_, "scratch").data) {}
  ~Scratch() { release(id_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }

 private:
  BufferId id_;
  void* data_;
};

}  // namespace bs
