#include "memory.h"

#include "device.h"

#include <set>
#include <vector>
#include <unordered_map>
#include <unordered_set>

namespace bs {

namespace {

// Requests up to kSmallRequest bytes take blocks of 2 MiB segments; larger ones take blocks of 20 MiB segments up
// to kMidRequest, and a segment of their own (rounded to kSegmentRound) above it. Small and large blocks never
// share a segment, so small allocations do not fragment the large ones' memory.
constexpr size_t kSmallRequest = size_t{1} << 20;
constexpr size_t kSmallSegment = size_t{2} << 20;
constexpr size_t kMidRequest = size_t{10} << 20;
constexpr size_t kMidSegment = size_t{20} << 20;
constexpr size_t kSegmentRound = size_t{2} << 20;

// A run of bytes of one segment, live or free; prev and next are its neighbours in the segment.
struct Block {
  char* ptr;
  size_t size;
  Block* prev;
  Block* next;
  bool free;
  bool small;     // of a small segment
  uint32_t pool;  // the graph pool that owns it (0: shared)
};

struct BySizeThenAddress {
  bool operator()(const Block* a, const Block* b) const { return a->size != b->size ? a->size < b->size : a->ptr < b->ptr; }
};
using FreeSet = std::set<Block*, BySizeThenAddress>;

// The free blocks of one owner (the shared cache, or a graph pool), by kind.
struct FreeBlocks {
  FreeSet small, large;
  FreeSet& of(bool small_) { return small_ ? small : large; }
};

std::unordered_map<BufferId, Buffer> live;
std::unordered_map<BufferId, Block*> liveBlocks;
FreeBlocks shared;                                    // the shared cache's free blocks
std::unordered_map<uint32_t, FreeBlocks> poolBlocks;  // each live graph pool's
std::vector<Block*> spare;                            // Block records to reuse (every allocation and free makes or drops one)
std::unordered_set<uint32_t> livePools;
BufferId nextId = 1;
MemoryStats stats{};
uint32_t nextPool = 1;
uint32_t currentPool = 0;
size_t pooled = 0;
size_t limitBytes = 0;  // setMemoryLimit's cap on bytesReserved, 0 for none

size_t roundUp(size_t value, size_t step) { return (value + step - 1) / step * step; }

FreeBlocks& freeBlocksOf(uint32_t owner) { return owner == 0 ? shared : poolBlocks[owner]; }

Block* newBlock(const Block& value) {
  if (spare.empty()) return new Block(value);
  Block* b = spare.back();
  spare.pop_back();
  *b = value;
  return b;
}

void dropBlock(Block* b) { spare.push_back(b); }

// Bookkeeping of a block entering or leaving an owner's free blocks.
void addFree(Block* b) {
  freeBlocksOf(b->pool).of(b->small).insert(b);
  if (b->pool == 0) {
    stats.bytesCached += b->size;
    stats.buffersCached++;
  } else {
    pooled += b->size;
  }
}

void removeFree(Block* b) {
  freeBlocksOf(b->pool).of(b->small).erase(b);
  if (b->pool == 0) {
    stats.bytesCached -= b->size;
    stats.buffersCached--;
  } else {
    pooled -= b->size;
  }
}

// The smallest free block of `owner` of the kind that holds `bytes`, taken out of the free blocks; or null.
Block* takeFree(uint32_t owner, bool small, size_t bytes) {
  FreeBlocks* blocks = &shared;
  if (owner != 0) {
    auto found = poolBlocks.find(owner);
    if (found == poolBlocks.end()) return nullptr;
    blocks = &found->second;
  }
  FreeSet& set = blocks->of(small);
  Block key{nullptr, bytes, nullptr, nullptr, true, small, owner};
  auto it = set.lower_bound(&key);
  if (it == set.end()) return nullptr;
  Block* b = *it;
  removeFree(b);
  return b;
}

// Joins a free block with free neighbours of the same owner; returns the joined block (not yet in a free set).
Block* joinNeighbours(Block* b) {
  for (Block* n : {b->prev, b->next}) {
    if (n == nullptr || !n->free || n->pool != b->pool) continue;
    removeFree(n);
    if (n == b->prev) {
      n->size += b->size;
      n->next = b->next;
      if (b->next != nullptr) b->next->prev = n;
      dropBlock(b);
      b = n;
    } else {
      b->size += n->size;
      b->next = n->next;
      if (n->next != nullptr) n->next->prev = b;
      dropBlock(n);
    }
  }
  return b;
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

size_t segmentBytes(size_t bytes) {
  if (bytes <= kSmallRequest) return kSmallSegment;
  if (bytes <= kMidRequest) return kMidSegment;
  return roundUp(bytes, kSegmentRound);
}

// A new segment for a request of `bytes`, as one free-standing block (in no free set); or null when CUDA has no
// memory for it even after the cache is released.
Block* newSegment(size_t bytes, bool small) {
  stream();  // throws if the device is not initialised
  const size_t size = segmentBytes(bytes);
  auto underLimit = [&] { return limitBytes == 0 || stats.bytesReserved + size <= limitBytes; };
  void* ptr = underLimit() ? mallocOrNull(size) : nullptr;
  if (ptr == nullptr) {
    releaseCache();
    ptr = underLimit() ? mallocOrNull(size) : nullptr;
  }
  if (ptr == nullptr) return nullptr;
  stats.bytesReserved += size;
  stats.segments++;
  return newBlock(Block{static_cast<char*>(ptr), size, nullptr, nullptr, true, small, 0});
}

bool wholeSegment(const Block* b) { return b->prev == nullptr && b->next == nullptr; }
}  // namespace

BufferId allocate(size_t byteLength) {
  BufferId id = nextId++;
  if (byteLength == 0) {
    live.emplace(id, Buffer{nullptr, 0, 0, 0});
    stats.buffersInUse++;
    return id;
  }
  const size_t bytes = roundUp(byteLength, kBlockRound);
  const bool small = bytes <= kSmallRequest;
  Block* b = currentPool != 0 ? takeFree(currentPool, small, bytes) : nullptr;
  if (b == nullptr) b = takeFree(0, small, bytes);
  if (b != nullptr) {
    stats.cacheHits++;
  } else {
    b = newSegment(bytes, small);
    if (b == nullptr) {
      size_t freeBytes = 0, totalBytes = 0;
      cudaMemGetInfo(&freeBytes, &totalBytes);
      cudaGetLastError();
      const std::string limit = limitBytes == 0 ? ""
                                                : ", under a memory limit of " + std::to_string(limitBytes) + " bytes (" +
                                                      std::to_string(stats.bytesReserved) + " held)";
      throw Error(ErrorKind::OutOfMemory,
                  "CUDA out of memory: cudaMalloc of " + std::to_string(segmentBytes(bytes)) + " bytes (for " +
                      std::to_string(byteLength) + ") failed " +
                      (currentPool != 0 ? "during a graph capture, which keeps the cache (" : "after releasing the cache (") +
                      std::to_string(stats.bytesInUse) +
                      " bytes in use by blocksparse, " + std::to_string(freeBytes) + " of " + std::to_string(totalBytes) +
                      " bytes free on the device" + limit + ")");
    }
  }
  const uint32_t owner = b->pool;
  b->free = false;
  b->pool = currentPool;
  // Split off what the request does not need when it is worth a block of its own (a large block keeps a remainder
  // of 1 MiB or less rather than leave a sliver that only small requests, which never use it, would fit). The
  // remainder stays with the owner the block had.
  const size_t rest = b->size - bytes;
  if (small ? rest >= kBlockRound : rest > kSmallRequest) {
    Block* r = newBlock(Block{b->ptr + bytes, rest, b, b->next, true, small, owner});
    if (b->next != nullptr) b->next->prev = r;
    b->next = r;
    b->size = bytes;
    addFree(joinNeighbours(r));
  }
  live.emplace(id, Buffer{b->ptr, byteLength, b->size, currentPool});
  liveBlocks.emplace(id, b);
  stats.bytesInUse += b->size;
  stats.buffersInUse++;
  return id;
}

void release(BufferId id) {
  auto it = live.find(id);
  BS_REQUIRE(it != live.end(), "free of an unknown or already freed buffer (id " + std::to_string(id) + ")");
  live.erase(it);
  stats.buffersInUse--;
  auto found = liveBlocks.find(id);
  if (found == liveBlocks.end()) return;  // an empty buffer
  Block* b = found->second;
  liveBlocks.erase(found);
  stats.bytesInUse -= b->size;
  b->free = true;
  // A block of a destroyed pool is shared from now on.
  if (b->pool != 0 && livePools.count(b->pool) == 0) b->pool = 0;
  addFree(joinNeighbours(b));
}

uint32_t createPool() {
  uint32_t pool = nextPool++;
  livePools.insert(pool);
  return pool;
}

void setCurrentPool(uint32_t pool) {
  BS_REQUIRE(pool == 0 || livePools.count(pool) != 0, "setCurrentPool: unknown pool " + std::to_string(pool));
  currentPool = pool;
}

void destroyPool(uint32_t pool) {
  if (livePools.erase(pool) == 0) return;
  if (currentPool == pool) currentPool = 0;
  auto found = poolBlocks.find(pool);
  if (found == poolBlocks.end()) return;
  std::vector<Block*> blocks(found->second.small.begin(), found->second.small.end());
  blocks.insert(blocks.end(), found->second.large.begin(), found->second.large.end());
  for (Block* b : blocks) removeFree(b);
  poolBlocks.erase(found);
  // Shared now: each joins its free shared neighbours. A block already joined into a neighbour is skipped by
  // looking it up again after each join.
  std::unordered_set<Block*> pending(blocks.begin(), blocks.end());
  for (Block* b : blocks) {
    if (pending.count(b) == 0) continue;
    pending.erase(b);
    b->pool = 0;
    for (Block* n : {b->prev, b->next})
      if (n != nullptr && pending.count(n) != 0) {
        pending.erase(n);
        n->pool = 0;
        addFree(n);
      }
    addFree(joinNeighbours(b));
  }
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
  // Not while a graph is captured (a pool is current): the stream cannot be synchronised then (that fails and ends the
  // capture), so an allocation that misses fails as out of memory instead, as PyTorch's allocator does.
  if (currentPool != 0) return;
  std::vector<Block*> whole;
  for (FreeSet* set : {&shared.small, &shared.large})
    for (Block* b : *set)
      if (wholeSegment(b)) whole.push_back(b);
  if (whole.empty()) return;
  // Kernels queued before a free may still use the memory: wait for them.
  BS_CUDA_CHECK(cudaStreamSynchronize(stream()));
  for (Block* b : whole) {
    removeFree(b);
    BS_CUDA_CHECK(cudaFree(b->ptr));
    stats.bytesReserved -= b->size;
    stats.segments--;
    dropBlock(b);
  }
}

size_t setMemoryLimit(size_t bytes) {
  const size_t previous = limitBytes;
  limitBytes = bytes;
  return previous;
}

size_t memoryLimit() { return limitBytes; }

MemoryStats memoryStats() {
  MemoryStats out = stats;
  out.bytesReleasable = 0;
  for (FreeSet* set : {&shared.small, &shared.large})
    for (Block* b : *set)
      if (wholeSegment(b)) out.bytesReleasable += b->size;
  return out;
}

}  // namespace bs
