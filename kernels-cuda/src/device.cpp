#include "device.h"

#include "cublas.h"
#include "index_fault.h"

namespace bs {

namespace {
bool ready = false;
DeviceInfo info{};
cudaStream_t theStream = nullptr;
bool useCublas = true;
cublas::Handle theCublas = nullptr;
cublas::lt::Handle theCublasLt = nullptr;
int32_t* faultClaim = nullptr;       // device memory
IndexFault* faultRecord = nullptr;   // mapped page-locked host memory
IndexFaultSink faultSink{};          // the two as the kernels see them

std::string unavailableReason(cudaError_t status) {
  switch (status) {
    case cudaErrorNoDevice:
      return "no CUDA-capable GPU was found (cudaErrorNoDevice)";
    case cudaErrorInsufficientDriver:
      return "no usable NVIDIA driver: it is missing or older than the CUDA runtime the addon was built with "
             "(cudaErrorInsufficientDriver)";
    default:
      return std::string("CUDA could not start: ") + cudaGetErrorString(status) + " (" + cudaGetErrorName(status) + ")";
  }
}
}  // namespace

double peakMemoryBandwidth(int device) {
  int clockKhz = 0, busBits = 0;
  if (cudaDeviceGetAttribute(&clockKhz, cudaDevAttrMemoryClockRate, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&busBits, cudaDevAttrGlobalMemoryBusWidth, device) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return 2.0 * 1e3 * double(clockKhz) * double(busBits) / 8.0;
}

void initDevice(int index) {
  if (ready) {
    BS_REQUIRE(index == info.index, "the CUDA device is already initialised as device " + std::to_string(info.index));
    return;
  }
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw Error(ErrorKind::Cuda, unavailableReason(status));
  }
  if (count == 0) throw Error(ErrorKind::Cuda, unavailableReason(cudaErrorNoDevice));
  BS_REQUIRE(index >= 0 && index < count,
          "CUDA device index " + std::to_string(index) + " is out of range: " + std::to_string(count) + " device(s)");
  BS_CUDA_CHECK(cudaSetDevice(index));
  cudaDeviceProp prop{};
  BS_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  info.index = index;
  info.name = prop.name;
  info.computeMajor = prop.major;
  info.computeMinor = prop.minor;
  info.multiprocessors = prop.multiProcessorCount;
  info.totalMemory = prop.totalGlobalMem;
  info.memoryBandwidth = peakMemoryBandwidth(index);
  BS_CUDA_CHECK(cudaRuntimeGetVersion(&info.runtimeVersion));
  BS_CUDA_CHECK(cudaDriverGetVersion(&info.driverVersion));
  BS_CUDA_CHECK(cudaStreamCreateWithFlags(&theStream, cudaStreamNonBlocking));
  BS_CUDA_CHECK(cudaMalloc(&faultClaim, sizeof(int32_t)));
  BS_CUDA_CHECK(cudaMemset(faultClaim, 0, sizeof(int32_t)));
  BS_CUDA_CHECK(cudaHostAlloc(&faultRecord, sizeof(IndexFault), cudaHostAllocMapped));
  *faultRecord = IndexFault{};
  IndexFault* mapped = nullptr;
  BS_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&mapped), faultRecord, 0));
  faultSink = IndexFaultSink{faultClaim, mapped};
  if (cublas::load()) {
    cublas::Status blas = cublas::create(&theCublas);
    if (blas != cublas::kSuccess)
      throw Error(ErrorKind::Cuda, "cublasCreate failed: " + cublas::statusString(blas));
    blas = cublas::setStream(theCublas, theStream);
    if (blas != cublas::kSuccess)
      throw Error(ErrorKind::Cuda, "cublasSetStream failed: " + cublas::statusString(blas));
  }
  if (cublas::lt::load()) {
    cublas::Status lt = cublas::lt::create(&theCublasLt);
    if (lt != cublas::kSuccess)
      throw Error(ErrorKind::Cuda, "cublasLtCreate failed: " + cublas::lt::statusString(lt));
  }
  ready = true;
}

bool deviceReady() { return ready; }

const DeviceInfo& deviceInfo() {
  if (!ready) throw Error(ErrorKind::Cuda, "the CUDA device is not initialised");
  return info;
}

cudaStream_t stream() {
  if (!ready) throw Error(ErrorKind::Cuda, "the CUDA device is not initialised");
  return theStream;
}

void synchronize() { BS_CUDA_CHECK(cudaStreamSynchronize(stream())); }

bool haveCublas() { return cublas::load(); }

const std::string& cublasLibrary() {
  cublas::load();
  return cublas::describe();
}

void setCublasEnabled(bool enabled) { useCublas = enabled; }
bool cublasEnabled() { return haveCublas() && useCublas; }

void* cublasHandle() { return theCublas; }

void* cublasLtHandle() { return useCublas ? theCublasLt : nullptr; }

const std::string& cublasLtLibrary() {
  cublas::lt::load();
  return cublas::lt::describe();
}

void shutdownDevice() {
  if (!ready) return;
  cudaStreamSynchronize(theStream);
  if (theCublas != nullptr) cublas::destroy(theCublas);
  theCublas = nullptr;
  if (theCublasLt != nullptr) cublas::lt::destroy(theCublasLt);
  theCublasLt = nullptr;
  cudaStreamDestroy(theStream);
  theStream = nullptr;
  cudaFree(faultClaim);
  faultClaim = nullptr;
  cudaFreeHost(faultRecord);
  faultRecord = nullptr;
  faultSink = IndexFaultSink{};
  ready = false;
}

IndexFaultSink indexFaultSink() {
  if (!ready) throw Error(ErrorKind::Cuda, "the CUDA device is not initialised");
  return faultSink;
}

void throwIfIndexFault() {
  if (faultRecord == nullptr || *reinterpret_cast<volatile int32_t*>(&faultRecord->reported) == 0) return;
  const IndexFault fault = *faultRecord;
  *faultRecord = IndexFault{};
  // The claim is device memory: clear it in order, after everything queued, so that a later fault is recorded too.
  BS_CUDA_CHECK(cudaMemsetAsync(faultClaim, 0, sizeof(int32_t), theStream));
  BS_CUDA_CHECK(cudaStreamSynchronize(theStream));
  const char* names[] = {"an index op", "gather", "scatterAdd", "indexCopy", "crossEntropy", "crossEntropyBackward",
                         "cachedAttention"};
  const bool known = fault.op > 0 && fault.op < static_cast<int32_t>(sizeof(names) / sizeof(names[0]));
  const bool target = fault.op == static_cast<int32_t>(IndexFaultOp::CrossEntropy) ||
                      fault.op == static_cast<int32_t>(IndexFaultOp::CrossEntropyBackward);
  throw Error(ErrorKind::Index, std::string(names[known ? fault.op : 0]) + ": " + (target ? "target " : "index ") +
                                    std::to_string(fault.index) + " at " + (target ? "row " : "position ") +
                                    std::to_string(fault.position) + " is out of range [0, " +
                                    std::to_string(fault.bound) +
                                    ") (found by the device in an op queued earlier; reported at this wait for the "
                                    "device, and that op's output is not to be trusted)");
}

}  // namespace bs
