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
  uint32_t pool;      // the graph pool it was allocated for, 0 for none
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

// Graph pools. A captured CUDA graph keeps the addresses it was captured with, so memory it touched must never
// be handed to another tensor while it lives. While a pool is current (during a capture), allocations are taken
// for it (its own free list first, then the shared cache, then cudaMalloc); a buffer of a live pool goes back to
// that pool's free list when released, where only a later allocation for the same pool finds it (so a capture
// reuses its own temporaries, in stream order, as eager execution does). Destroying the pool moves its free list
// to the shared cache; its buffers still live go there when released.
uint32_t createPool();
void setCurrentPool(uint32_t pool);  // 0: none
void destroyPool(uint32_t pool);
size_t pooledBytes();  // size-class bytes on the free lists of live pools

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
