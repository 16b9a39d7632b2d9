// Grow-only aligned scratch buffers for packed operands (kernels run one at a time, from the JS thread).
#pragma once
#include <cstddef>
#include <cstdlib>
#include <new>

namespace bsk {

class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(data_); }

  // At least `count` floats, 64-byte aligned; contents unspecified.
  float* floats(size_t count) {
    if (count > capacity_) {
      std::free(data_);
      const size_t bytes = ((count * sizeof(float) + 63) / 64) * 64;
      data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (data_ == nullptr) {
        capacity_ = 0;
        throw std::bad_alloc();
      }
      capacity_ = count;
    }
    return data_;
  }

 private:
  float* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace bsk
