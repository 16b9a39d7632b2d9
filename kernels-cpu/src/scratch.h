// Aligned scratch buffers for packed operands and per-thread sums, each kept at the largest size asked for until
// releaseScratch frees them all (kernels run one at a time: the binding serializes calls).
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace bsk {

// Bytes every Scratch of the process holds now (each keeps its buffer for the next product).
inline std::atomic<int64_t>& scratchBytesHeld() {
  static std::atomic<int64_t> bytes{0};
  return bytes;
}

class Scratch;

// Every Scratch of the process (the static ones and each thread's own), so their memory can be given back between
// products. Never destroyed: a thread_local Scratch may be destroyed after the process's statics.
struct ScratchRegistry {
  std::mutex mutex;
  std::vector<Scratch*> all;
};

inline ScratchRegistry& scratchRegistry() {
  static ScratchRegistry* registry = new ScratchRegistry();
  return *registry;
}

class Scratch {
 public:
  Scratch() {
    ScratchRegistry& registry = scratchRegistry();
    const std::lock_guard<std::mutex> lock(registry.mutex);
    registry.all.push_back(this);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    ScratchRegistry& registry = scratchRegistry();
    const std::lock_guard<std::mutex> lock(registry.mutex);
    registry.all.erase(std::find(registry.all.begin(), registry.all.end(), this));
    release();
  }

  // Frees every Scratch's buffer (each grows again on its next product). Only while no product runs (under the
  // binding's lock): a buffer is written by the thread that owns it during a product only.
  static void releaseAll() {
    ScratchRegistry& registry = scratchRegistry();
    const std::lock_guard<std::mutex> lock(registry.mutex);
    for (Scratch* scratch : registry.all) scratch->release();
  }

  // At least `count` floats, 64-byte aligned; contents unspecified.
  float* floats(size_t count) {
    if (count > capacity_) {
      release();
      // A buffer of 2 MiB or more (a packed panel) is placed on whole huge pages: fewer TLB misses.
      const size_t align = count * sizeof(float) >= kHugePage ? kHugePage : 64;
      const size_t bytes = ((count * sizeof(float) + align - 1) / align) * align;
      data_ = static_cast<float*>(std::aligned_alloc(align, bytes));
      if (data_ == nullptr) throw std::bad_alloc();
      bytes_ = bytes;
      scratchBytesHeld() += static_cast<int64_t>(bytes);
#if defined(__linux__)
      if (align == kHugePage) madvise(data_, bytes, MADV_HUGEPAGE);
#endif
      capacity_ = count;
    }
    return data_;
  }

  // At least `count` floats, as floats(), for a buffer whose need changes from call to call (a row of scores as long as
  // the context): held at a power of two, so a need growing one by one (decoding) reallocates only when it doubles,
  // and given back once the need falls to a quarter of it, so one long context does not keep its size for the life of
  // the thread. Callers ask for the same count on every item of one call, so no call reallocates twice.
  float* boundedFloats(size_t count) {
    size_t want = 64;
    while (want < count) want *= 2;
    if (capacity_ > 2 * want) release();
    return floats(want);
  }

  // At least `count` doubles, held as boundedFloats holds its floats (64-byte aligned).
  double* boundedDoubles(size_t count) { return reinterpret_cast<double*>(boundedFloats(2 * count)); }

 private:
  void release() {
    std::free(data_);
    scratchBytesHeld() -= static_cast<int64_t>(bytes_);
    data_ = nullptr;
    capacity_ = 0;
    bytes_ = 0;
  }

  static constexpr size_t kHugePage = size_t(2) << 20;
  float* data_ = nullptr;
  size_t capacity_ = 0;
  size_t bytes_ = 0;
};

}  // namespace bsk
