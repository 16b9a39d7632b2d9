// Grow-only aligned scratch buffers for packed operands (kernels run one at a time: the binding serializes calls).
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace bsk {

// Bytes every Scratch of the process holds now (each keeps its buffer for the next product).
inline std::atomic<int64_t>& scratchBytesHeld() {
  static std::atomic<int64_t> bytes{0};
  return bytes;
}

class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { release(); }

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
