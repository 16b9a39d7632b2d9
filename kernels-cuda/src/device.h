// The one device, stream and (optional) cuBLAS handle that every call uses.
#pragma once

#include "common.h"

#include <string>

namespace bs {

struct DeviceInfo {
  int index;
  std::string name;
  int computeMajor;
  int computeMinor;
  int multiprocessors;
  size_t totalMemory;
  double memoryBandwidth;  // device memory's peak, bytes per second (peakMemoryBandwidth)
  int runtimeVersion;
  int driverVersion;
};

// Device memory's peak rate in bytes per second (two transfers per memory clock over the bus), or 0 where the runtime
// does not say.
double peakMemoryBandwidth(int device);

// Starts CUDA on the given device; throws an Error saying why CUDA cannot be used.
void initDevice(int index);
bool deviceReady();
const DeviceInfo& deviceInfo();
// The single stream: every kernel, copy and cuBLAS call is ordered on it.
cudaStream_t stream();
void synchronize();
// Whether cuBLAS was found at run time (dlopen), and which file or why not.
bool haveCublas();
const std::string& cublasLibrary();
// Lets tests exercise the built-in matmul kernel where cuBLAS is present.
void setCublasEnabled(bool enabled);
bool cublasEnabled();
void* cublasHandle();
// cuBLASLt's handle (its matmul with a fused epilogue), or nullptr where libcublasLt is not found or cuBLAS is
// switched off (setCublasEnabled(false)).
void* cublasLtHandle();
const std::string& cublasLtLibrary();
void shutdownDevice();


}  // namespace bs
