// Types and error handling shared by the host code and the kernels.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace bs {

// Element types a buffer can hold; the numbering is part of the JS interface.
enum class DType : int32_t { Float32 = 0, Float16 = 1, BFloat16 = 2, Int32 = 3 };

// A switch in the environment, read by the caller once per process: 1 for "1", 0 for "0", -1 for anything else or
// unset (the default or the rule decides).
inline int environmentSwitch(const char* name) {
  const char* value = std::getenv(name);
  if (value != nullptr && std::strcmp(value, "1") == 0) return 1;
  if (value != nullptr && std::strcmp(value, "0") == 0) return 0;
  return -1;
}

inline size_t dtypeSize(DType dtype) {
  switch (dtype) {
    case DType::Float32:
    case DType::Int32:
      return 4;
    case DType::Float16:
    case DType::BFloat16:
      return 2;
  }
  return 0;
}

inline const char* dtypeName(DType dtype) {
  switch (dtype) {
    case DType::Float32:
      return "float32";
    case DType::Float16:
      return "float16";
    case DType::BFloat16:
      return "bfloat16";
    case DType::Int32:
      return "int32";
  }
  return "unknown";
}

inline bool isFloat(DType dtype) {
  return dtype == DType::Float32 || dtype == DType::Float16 || dtype == DType::BFloat16;
}

// Error kinds become the JS error's `code`.
enum class ErrorKind { Cuda, OutOfMemory, InvalidArgument, Nccl, Index };

struct Error : std::runtime_error {
  ErrorKind kind;
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind(kind) {}
};

[[noreturn]] inline void throwCuda(cudaError_t status, const char* call) {
  throw Error(status == cudaErrorMemoryAllocation ? ErrorKind::OutOfMemory : ErrorKind::Cuda,
              std::string(call) + " failed: " + cudaGetErrorString(status) + " (" + cudaGetErrorName(status) + ")");
}

[[noreturn]] inline void throwInvalid(const std::string& message) { throw Error(ErrorKind::InvalidArgument, message); }

// Throws InvalidArgument with `message` when `condition` is false; the message is only built then, so
// that validating every argument of every call costs no string work on the fast path.
#define BS_REQUIRE(condition, message)               \
  do {                                               \
    if (!(condition)) ::bs::throwInvalid(message);   \
  } while (0)

}  // namespace bs

// Every CUDA runtime call goes through this: a failure names the call and CUDA's message.
#define BS_CUDA_CHECK(call)                               \
  do {                                                    \
    cudaError_t bs_status_ = (call);                      \
    if (bs_status_ != cudaSuccess) bs::throwCuda(bs_status_, #call); \
  } while (0)

// After every launch: configuration errors surface here, named by the kernel.
#define BS_LAUNCH_CHECK(kernelName)                       \
  do {                                                    \
    cudaError_t bs_status_ = cudaGetLastError();          \
    if (bs_status_ != cudaSuccess) bs::throwCuda(bs_status_, "launch of " kernelName); \
  } while (0)
