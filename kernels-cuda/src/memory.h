// A caching device allocator in the manner of PyTorch's: memory is taken from CUDA in segments (2 MiB ones for
// requests up to 1 MiB, 20 MiB ones for requests up to 10 MiB, a segment of its own, rounded to 2 MiB, above
// that), and a request gets the smallest free block of its kind that holds it, split off the rest. A freed
// block joins its free neighbours. So a new size is served from memory already held (no cudaMalloc, which
// costs about a millisecond per call on some hosts), and memory freed at one size serves another. All work is
// on one stream, so reuse is ordered.
#pragma once

#include "common.h"

#include <cstdint>

namespace bs {

using BufferId = uint64_t;

struct Buffer {
  void* data;
  size_t byteLength;  // what was asked for
  size_t blockBytes;  // what the block holds (a multiple of kBlockRound, at least byteLength)
  uint32_t pool;      // the graph pool it was allocated for, 0 for none
};

// Every block starts at a multiple of this from its segment's start (cudaMalloc's alignment or more).
constexpr size_t kBlockRound = 512;

struct MemoryStats {
  size_t bytesInUse;       // block bytes of live buffers
  size_t bytesCached;      // free block bytes kept for reuse (not those of graph pools)
  size_t buffersInUse;
  size_t buffersCached;    // free blocks kept for reuse
  size_t cudaMallocCalls;
  size_t cacheHits;        // allocations served without cudaMalloc
  size_t bytesReserved;    // segment bytes held from CUDA
  size_t segments;
  size_t bytesReleasable;  // bytes of segments wholly free, which releaseCache gives back
};

// Allocates (held memory first); on cudaMalloc failure releases the cache and retries once, then throws
// an OutOfMemory Error.
BufferId allocate(size_t byteLength);
void release(BufferId id);
// The live buffer with this id, or an InvalidArgument Error naming `what`.
const Buffer& lookup(BufferId id, const char* what);
bool isLive(BufferId id);
// Gives every wholly free segment (not a graph pool's) back to CUDA; nothing while a pool is current (a capture).
void releaseCache();
// Caps the segment bytes the allocator holds from CUDA (0: no cap, the default): a request that would take more, after
// the cache is released, fails as cudaMalloc would, with an OutOfMemory Error. Lowering it below what is held frees
// nothing; it applies to the next segment. Returns the previous cap.
size_t setMemoryLimit(size_t bytes);
size_t memoryLimit();
MemoryStats memoryStats();

// Graph pools. A captured CUDA graph keeps the addresses it was captured with, so memory it touched must never
// be handed to another tensor while it lives. While a pool is current (during a capture), allocations are taken
// for it (its own free blocks first, then the shared ones, then cudaMalloc); a block of a live pool goes back to
// that pool's free blocks when released, where only a later allocation for the same pool finds it (so a capture
// reuses its own temporaries, in stream order, as eager execution does), and joins only free neighbours of the
// same pool. Destroying the pool makes its free blocks shared; its blocks still live become shared when released.
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
