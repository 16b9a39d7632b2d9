// N-API bindings: argument checking, buffer and pattern registries, and one function per kernel.
// Every argument is validated here, before any launch: dtypes, sizes, and that each buffer holds every
// element the kernel will touch, so a malformed call cannot reach memory outside its buffers.
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "autotune.h"
#include "device.h"
#include "index_fault.h"
#include "kernels.h"
#include "memory.h"
#include "nccl.h"
#include "tc/patch_list.h"
#include "tc/tc.h"

namespace bs {
namespace {

// ------------------------------------------------------------------ argument helpers

const char* errorCode(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::OutOfMemory: return "ERR_CUDA_OUT_OF_MEMORY";
    case ErrorKind::InvalidArgument: return "ERR_CUDA_INVALID_ARGUMENT";
    case ErrorKind::Nccl: return "ERR_NCCL";
    case ErrorKind::Index: return "ERR_CUDA_INDEX";
    default: return "ERR_CUDA";
  }
}

using Handler = Napi::Value (*)(const Napi::CallbackInfo&);

// Turns our C++ errors into JS errors carrying a `code`.
template <Handler F>
Napi::Value guarded(const Napi::CallbackInfo& info) {
  try {
    return F(info);
  } catch (const Error& error) {
    Napi::Error jsError = Napi::Error::New(info.Env(), error.what());
    jsError.Value().Set("code", Napi::String::New(info.Env(), errorCode(error.kind)));
    throw jsError;
  }
}

struct Args {
  const Napi::CallbackInfo& info;
  const char* fn;

  std::string where(size_t i) const { return std::string(fn) + ": argument " + std::to_string(i); }

  void count(size_t n) const {
    BS_REQUIRE(info.Length() == n, std::string(fn) + ": expected " + std::to_string(n) + " arguments, got " +
                                    std::to_string(info.Length()));
  }

  double number(size_t i) const {
    BS_REQUIRE(info[i].IsNumber(), where(i) + " must be a number");
    return info[i].As<Napi::Number>().DoubleValue();
  }

  // A non-negative integer below 2^53.
  int64_t size(size_t i) const {
    double value = number(i);
    BS_REQUIRE(std::isfinite(value) && value >= 0 && std::floor(value) == value && value <= 9007199254740991.0,
            where(i) + " must be a non-negative integer, got " + std::to_string(value));
    return static_cast<int64_t>(value);
  }

  bool boolean(size_t i) const {
    BS_REQUIRE(info[i].IsBoolean(), where(i) + " must be a boolean");
    return info[i].As<Napi::Boolean>().Value();
  }

  DType dtype(size_t i) const {
    int64_t code = size(i);
    BS_REQUIRE(code <= static_cast<int64_t>(DType::Int32), where(i) + ": unknown dtype code " + std::to_string(code));
    return static_cast<DType>(code);
  }

  DType floatDtype(size_t i) const {
    DType d = dtype(i);
    BS_REQUIRE(isFloat(d), where(i) + ": expected a float dtype, got " + dtypeName(d));
    return d;
  }

  const Buffer& buffer(size_t i) const {
    const auto id = static_cast<BufferId>(size(i));
    // The label is built only for the error.
    if (!isLive(id)) lookup(id, where(i).c_str());
    return lookup(id, fn);
  }

  bool isAbsent(size_t i) const { return info[i].IsNull() || info[i].IsUndefined(); }

  std::vector<int64_t> sizes(size_t i) const {
    BS_REQUIRE(info[i].IsArray(), where(i) + " must be an array of integers");
    Napi::Array array = info[i].As<Napi::Array>();
    std::vector<int64_t> out(array.Length());
    for (uint32_t k = 0; k < array.Length(); ++k) {
      Napi::Value v = array.Get(k);
      BS_REQUIRE(v.IsNumber(), where(i) + "[" + std::to_string(k) + "] must be a number");
      double d = v.As<Napi::Number>().DoubleValue();
      BS_REQUIRE(std::isfinite(d) && d >= 0 && std::floor(d) == d && d <= 9007199254740991.0,
              where(i) + "[" + std::to_string(k) + "] must be a non-negative integer");
      out[k] = static_cast<int64_t>(d);
    }
    return out;
  }

  // A Float64Array of non-negative integers below 2^53, read in place (no per-element N-API call).
  std::vector<int64_t> integers(size_t i) const {
    BS_REQUIRE(info[i].IsTypedArray() && info[i].As<Napi::TypedArray>().TypedArrayType() == napi_float64_array,
               where(i) + " must be a Float64Array");
    Napi::Float64Array array = info[i].As<Napi::Float64Array>();
    std::vector<int64_t> out(array.ElementLength());
    const double* data = array.Data();
    for (size_t k = 0; k < out.size(); ++k) {
      const double d = data[k];
      BS_REQUIRE(std::isfinite(d) && d >= 0 && std::floor(d) == d && d <= 9007199254740991.0,
                 where(i) + "[" + std::to_string(k) + "] must be a non-negative integer, got " + std::to_string(d));
      out[k] = static_cast<int64_t>(d);
    }
    return out;
  }

  Napi::TypedArray typedArray(size_t i) const {
    BS_REQUIRE(info[i].IsTypedArray(), where(i) + " must be a typed array");
    return info[i].As<Napi::TypedArray>();
  }
};

void* bytesOf(Napi::TypedArray array) {
  return static_cast<uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset();
}

// The buffer must hold `elements` elements of `dtype`.
void requireElements(const Buffer& buffer, DType dtype, int64_t elements, const char* what) {
  size_t needed = static_cast<size_t>(elements) * dtypeSize(dtype);
  BS_REQUIRE(buffer.byteLength >= needed, std::string(what) + ": buffer of " + std::to_string(buffer.byteLength) + " bytes is too small for " +
                                           std::to_string(elements) + " " + dtypeName(dtype) + " elements (" +
                                           std::to_string(needed) + " bytes)");
}

// Product of dims, refusing overflow of 2^53.
int64_t product(const std::vector<int64_t>& dims, const std::string& what) {
  double p = 1;
  for (int64_t d : dims) p *= static_cast<double>(d);
  BS_REQUIRE(p <= 9007199254740991.0, what + ": too many elements");
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

StridedShape toShape(const std::vector<int64_t>& dims, const std::string& what) {
  BS_REQUIRE(dims.size() <= static_cast<size_t>(kMaxRank), what + ": rank " + std::to_string(dims.size()) +
                                                            " exceeds the maximum of " + std::to_string(kMaxRank));
  StridedShape shape{};
  shape.rank = static_cast<int32_t>(dims.size());
  for (size_t d = 0; d < dims.size(); ++d) shape.shape[d] = dims[d];
  return shape;
}

// Strides of one operand over `dims`; returns the largest element offset they reach (plus 1), refusing one past 2^53
// (summed in int64 it could wrap to a small extent that a small buffer passes, and the kernel then reads far outside it).
Strides toStrides(const std::vector<int64_t>& strides, const std::vector<int64_t>& dims, int64_t& extent,
                  const std::string& what) {
  BS_REQUIRE(strides.size() == dims.size(), what + ": " + std::to_string(strides.size()) + " strides for rank " +
                                             std::to_string(dims.size()));
  Strides out{};
  extent = 1;
  for (size_t d = 0; d < dims.size(); ++d) {
    out.stride[d] = strides[d];
    if (dims[d] == 0) extent = 0;
  }
  if (extent == 0) return out;
  double reach = 1;
  for (size_t d = 0; d < dims.size(); ++d) reach += static_cast<double>(dims[d] - 1) * static_cast<double>(strides[d]);
  BS_REQUIRE(reach <= 9007199254740991.0, what + ": the strides reach past 2^53 elements");
  for (size_t d = 0; d < dims.size(); ++d) extent += (dims[d] - 1) * strides[d];
  return out;
}

Napi::Value undefinedOf(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }

// ------------------------------------------------------------------ device and memory

Napi::Value init(const Napi::CallbackInfo& info) {
  Args args{info, "init"};
  args.count(1);
  const int64_t index = args.size(0);
  // Checked before the cast to int, which would turn 2^32 into device 0.
  BS_REQUIRE(index <= INT32_MAX, "init: CUDA device index " + std::to_string(index) + " is out of range");
  initDevice(static_cast<int>(index));
  const DeviceInfo& device = deviceInfo();
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("index", device.index);
  out.Set("name", device.name);
  out.Set("computeCapability", std::to_string(device.computeMajor) + "." + std::to_string(device.computeMinor));
  out.Set("multiprocessors", device.multiprocessors);
  out.Set("totalMemory", static_cast<double>(device.totalMemory));
  out.Set("memoryBandwidth", device.memoryBandwidth);
  out.Set("runtimeVersion", device.runtimeVersion);
  out.Set("driverVersion", device.driverVersion);
  return out;
}

Napi::Value buildInfo(const Napi::CallbackInfo& info) {
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("cublas", haveCublas());
  out.Set("cublasLibrary", cublasLibrary());
  out.Set("cublasLtLibrary", cublasLtLibrary());
  out.Set("cudaVersion", CUDART_VERSION);
  out.Set("architectures", BLOCKSPARSE_CUDA_ARCHITECTURES);
  return out;
}

Napi::Value alloc(const Napi::CallbackInfo& info) {
  Args args{info, "alloc"};
  args.count(1);
  return Napi::Number::New(info.Env(), static_cast<double>(allocate(static_cast<size_t>(args.size(0)))));
}

Napi::Value freeBuffer(const Napi::CallbackInfo& info) {
  Args args{info, "free"};
  args.count(1);
  release(static_cast<BufferId>(args.size(0)));
  return undefinedOf(info);
}

// write(id, values): copies the whole typed array to the start of the buffer.
Napi::Value write(const Napi::CallbackInfo& info) {
  Args args{info, "write"};
  args.count(2);
  const Buffer& buffer = args.buffer(0);
  Napi::TypedArray values = args.typedArray(1);
  BS_REQUIRE(values.ByteLength() <= buffer.byteLength, "write: " + std::to_string(values.ByteLength()) +
                                                        " bytes do not fit a buffer of " +
                                                        std::to_string(buffer.byteLength) + " bytes");
  if (values.ByteLength() == 0) return undefinedOf(info);
  BS_CUDA_CHECK(cudaMemcpyAsync(buffer.data, bytesOf(values), values.ByteLength(), cudaMemcpyHostToDevice, stream()));
  return undefinedOf(info);
}

// read(id, out): fills the typed array from the start of the buffer, waiting for queued work.
Napi::Value read(const Napi::CallbackInfo& info) {
  Args args{info, "read"};
  args.count(2);
  const Buffer& buffer = args.buffer(0);
  Napi::TypedArray out = args.typedArray(1);
  BS_REQUIRE(out.ByteLength() <= buffer.byteLength, "read: " + std::to_string(out.ByteLength()) +
                                                     " bytes asked of a buffer of " + std::to_string(buffer.byteLength) +
                                                     " bytes");
  if (out.ByteLength() > 0)
    BS_CUDA_CHECK(cudaMemcpyAsync(bytesOf(out), buffer.data, out.ByteLength(), cudaMemcpyDeviceToHost, stream()));
  BS_CUDA_CHECK(cudaStreamSynchronize(stream()));
  throwIfIndexFault();
  return undefinedOf(info);
}

Napi::Value memory(const Napi::CallbackInfo& info) {
  MemoryStats stats = memoryStats();
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("bytesInUse", static_cast<double>(stats.bytesInUse));
  out.Set("bytesCached", static_cast<double>(stats.bytesCached));
  out.Set("buffersInUse", static_cast<double>(stats.buffersInUse));
  out.Set("buffersCached", static_cast<double>(stats.buffersCached));
  out.Set("cudaMallocCalls", static_cast<double>(stats.cudaMallocCalls));
  out.Set("cacheHits", static_cast<double>(stats.cacheHits));
  out.Set("bytesReserved", static_cast<double>(stats.bytesReserved));
  out.Set("segments", static_cast<double>(stats.segments));
  out.Set("bytesReleasable", static_cast<double>(stats.bytesReleasable));
  out.Set("bytesInGraphPools", static_cast<double>(pooledBytes()));
  if (deviceReady()) {
    size_t freeBytes = 0, totalBytes = 0;
    BS_CUDA_CHECK(cudaMemGetInfo(&freeBytes, &totalBytes));
    out.Set("deviceFreeBytes", static_cast<double>(freeBytes));
    out.Set("deviceTotalBytes", static_cast<double>(totalBytes));
  }
  return out;
}

Napi::Value releaseCacheFn(const Napi::CallbackInfo& info) {
  if (deviceReady()) releaseCache();
  return undefinedOf(info);
}

// setMemoryLimit(bytes): caps the segment bytes the allocator holds (0: none); returns the previous cap.
Napi::Value setMemoryLimitFn(const Napi::CallbackInfo& info) {
  Args args{info, "setMemoryLimit"};
  args.count(1);
  return Napi::Number::New(info.Env(), static_cast<double>(setMemoryLimit(static_cast<size_t>(args.size(0)))));
}

Napi::Value synchronizeFn(const Napi::CallbackInfo& info) {
  synchronize();
  throwIfIndexFault();
  return undefinedOf(info);
}

Napi::Value setCublasEnabledFn(const Napi::CallbackInfo& info) {
  Args args{info, "setCublasEnabled"};
  args.count(1);
  setCublasEnabled(args.boolean(0));
  return Napi::Boolean::New(info.Env(), cublasEnabled());
}

// setDenseSampledMode(mode): 0 auto, 1 never, 2 always take sampledMatmul through the dense GEMM; returns the previous mode.
Napi::Value setDenseSampledModeFn(const Napi::CallbackInfo& info) {
  Args args{info, "setDenseSampledMode"};
  args.count(1);
  const int64_t mode = args.size(0);
  BS_REQUIRE(mode <= 2, "setDenseSampledMode: mode must be 0 (auto), 1 (never) or 2 (always), got " + std::to_string(mode));
  return Napi::Number::New(info.Env(), static_cast<double>(setDenseSampledMode(static_cast<DenseSampledMode>(mode))));
}

// setDenseProductMode(mode): 0 auto, 1 never, 2 always take bsrLinear and bsrMatmul through the dense GEMM; returns
// the previous mode.
Napi::Value setDenseProductModeFn(const Napi::CallbackInfo& info) {
  Args args{info, "setDenseProductMode"};
  args.count(1);
  const int64_t mode = args.size(0);
  BS_REQUIRE(mode <= 2, "setDenseProductMode: mode must be 0 (auto), 1 (never) or 2 (always), got " + std::to_string(mode));
  return Napi::Number::New(info.Env(), static_cast<double>(setDenseProductMode(static_cast<DenseProductMode>(mode))));
}

// setAllowTf32(allow): float32 block-sparse products may use TF32 tensor cores; returns the setting.
Napi::Value setAllowTf32Fn(const Napi::CallbackInfo& info) {
  Args args{info, "setAllowTf32"};
  args.count(1);
  setAllowTf32(args.boolean(0));
  return Napi::Boolean::New(info.Env(), allowTf32());
}

Napi::Value allowTf32Fn(const Napi::CallbackInfo& info) {
  Args{info, "allowTf32"}.count(0);
  return Napi::Boolean::New(info.Env(), allowTf32());
}

// ------------------------------------------------------------------ autotuning (autotune.h)

std::vector<TunedRoute> tcRoutes(tc::Op product, DType dtype, const BsrPatternView& pattern, int64_t m) {
  std::vector<TunedRoute> routes;
  for (const TcOptions& options : tcTuneCandidates(product, dtype, pattern, m)) routes.push_back(TunedRoute{false, options});
  return routes;
}

// setAutotune(on): first-use autotuning of the block-sparse products; returns the previous setting.
Napi::Value setAutotuneFn(const Napi::CallbackInfo& info) {
  Args args{info, "setAutotune"};
  args.count(1);
  return Napi::Boolean::New(info.Env(), setAutotune(args.boolean(0)));
}

Napi::Value clearAutotuneFn(const Napi::CallbackInfo& info) {
  Args{info, "clearAutotune"}.count(0);
  clearAutotune();
  return undefinedOf(info);
}

// autotuneRecords(): [{product, dtype, blockShape, m, rows, cols, nnzBlocks, bias, epilogue, route, choice,
// timings: [{route, ms}]}], epilogue "none", "activation" or "activationBackward" (TuneEpilogue), choice = {dense, path,
// variant, splits}: the chosen route as importAutotune takes it back.
Napi::Value autotuneRecordsFn(const Napi::CallbackInfo& info) {
  Args{info, "autotuneRecords"}.count(0);
  Napi::Env env = info.Env();
  const std::vector<TuneRecord> records = autotuneRecords();
  Napi::Array out = Napi::Array::New(env, records.size());
  static const char* const kProducts[] = {"bsrLinear", "bsrMatmul", "sampledMatmul"};
  for (size_t i = 0; i < records.size(); ++i) {
    const TuneRecord& r = records[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("product", kProducts[static_cast<int>(r.product)]);
    o.Set("dtype", dtypeName(r.dtype));
    Napi::Array block = Napi::Array::New(env, 2);
    block.Set(uint32_t{0}, r.blockHeight);
    block.Set(uint32_t{1}, r.blockWidth);
    o.Set("blockShape", block);
    o.Set("m", static_cast<double>(r.m));
    o.Set("rows", static_cast<double>(r.rows));
    o.Set("cols", static_cast<double>(r.cols));
    o.Set("nnzBlocks", r.nnzBlocks);
    o.Set("bias", r.bias);
    o.Set("epilogue", tuneEpilogueName(r.epilogue));
    o.Set("route", tunedRouteName(r.product, r.chosen));
    Napi::Object choice = Napi::Object::New(env);
    choice.Set("dense", r.chosen.dense);
    choice.Set("path", tcPathName(r.chosen.tc.path));
    choice.Set("variant", r.chosen.tc.variant);
    choice.Set("splits", r.chosen.tc.splits);
    o.Set("choice", choice);
    Napi::Array timings = Napi::Array::New(env, r.timings.size());
    for (size_t k = 0; k < r.timings.size(); ++k) {
      Napi::Object t = Napi::Object::New(env);
      t.Set("route", tunedRouteName(r.product, r.timings[k].first));
      t.Set("ms", r.timings[k].second);
      timings.Set(static_cast<uint32_t>(k), t);
    }
    o.Set("timings", timings);
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

// importAutotune(product, dtype, blockHeight, blockWidth, m, rows, cols, nnzBlocks, bias, dense, path, variant + 1,
// splits, epilogue): one choice saved by an earlier process (autotune.h: importAutotuneRecord), for the current device.
// product 0-2 (bsrLinear, bsrMatmul, sampledMatmul), path 0-3 (TcPath: auto, mma, wgmma, decode), epilogue 0-2
// (TuneEpilogue: none, activation, activationBackward). Returns whether it was added.
Napi::Value importAutotuneFn(const Napi::CallbackInfo& info) {
  Args args{info, "importAutotune"};
  args.count(14);
  const int64_t product = args.size(0);
  BS_REQUIRE(product <= 2, "importAutotune: product must be 0-2, got " + std::to_string(product));
  const DType dtype = args.floatDtype(1);
  const int64_t blockHeight = args.size(2), blockWidth = args.size(3);
  BS_REQUIRE(blockHeight >= 1 && blockWidth >= 1 && blockHeight <= 65536 && blockWidth <= 65536,
             "importAutotune: block shape must be 1-65536 on each side");
  const int64_t nnzBlocks = args.size(7);
  BS_REQUIRE(nnzBlocks <= INT32_MAX, "importAutotune: nnzBlocks must fit int32");
  const int64_t path = args.size(10), variant = args.size(11) - 1, splits = args.size(12);
  BS_REQUIRE(path <= 3, "importAutotune: path must be 0-3, got " + std::to_string(path));
  BS_REQUIRE(variant <= 255 && splits <= 65535, "importAutotune: variant must be -1-255 and splits 0-65535");
  TuneRecord record{};
  record.product = static_cast<tc::Op>(product);
  record.dtype = dtype;
  record.blockHeight = static_cast<int>(blockHeight);
  record.blockWidth = static_cast<int>(blockWidth);
  record.m = args.size(4);
  record.rows = args.size(5);
  record.cols = args.size(6);
  record.nnzBlocks = static_cast<int32_t>(nnzBlocks);
  record.bias = args.boolean(8);
  record.chosen.dense = args.boolean(9);
  record.chosen.tc.path = static_cast<TcPath>(path);
  record.chosen.tc.variant = static_cast<int>(variant);
  record.chosen.tc.splits = static_cast<int>(splits);
  const int64_t epilogue = args.size(13);
  BS_REQUIRE(epilogue <= 2, "importAutotune: epilogue must be 0-2, got " + std::to_string(epilogue));
  // A fused epilogue follows bsrLinear (the activation) or bsrMatmul (its backward) only.
  BS_REQUIRE(epilogue == 0 || product == epilogue - 1,
             "importAutotune: epilogue " + std::to_string(epilogue) + " does not go with product " + std::to_string(product));
  record.epilogue = static_cast<TuneEpilogue>(epilogue);
  return Napi::Boolean::New(info.Env(), importAutotuneRecord(std::move(record)));
}

// ------------------------------------------------------------------ block-sparse patterns

struct PatternRecord {
  BufferId buffer;
  BsrPatternView view;
};
std::unordered_map<uint64_t, PatternRecord> patterns;
uint64_t nextPatternId = 1;

Napi::Int32Array int32Field(const Napi::Object& object, const char* name, size_t length) {
  Napi::Value value = object.Get(name);
  BS_REQUIRE(value.IsTypedArray() && value.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array,
          std::string("createPattern: ") + name + " must be an Int32Array");
  Napi::Int32Array array = value.As<Napi::Int32Array>();
  BS_REQUIRE(array.ElementLength() == length, std::string("createPattern: ") + name + " has " +
                                               std::to_string(array.ElementLength()) + " entries, expected " +
                                               std::to_string(length));
  return array;
}

int64_t intField(const Napi::Object& object, const char* name) {
  Napi::Value value = object.Get(name);
  BS_REQUIRE(value.IsNumber(), std::string("createPattern: ") + name + " must be a number");
  double d = value.As<Napi::Number>().DoubleValue();
  BS_REQUIRE(std::isfinite(d) && d >= 0 && std::floor(d) == d && d <= 2147483647.0,
          std::string("createPattern: ") + name + " must be an integer in [0, 2^31)");
  return static_cast<int64_t>(d);
}

// A CSR-style pointer array: starts at 0, never decreases, ends at nnz.
void checkPointers(const int32_t* ptr, int64_t segments, int64_t nnz, const char* name) {
  BS_REQUIRE(ptr[0] == 0, std::string("createPattern: ") + name + "[0] must be 0");
  for (int64_t i = 0; i < segments; ++i)
    BS_REQUIRE(ptr[i + 1] >= ptr[i], std::string("createPattern: ") + name + " decreases at " + std::to_string(i + 1));
  BS_REQUIRE(ptr[segments] == nnz, std::string("createPattern: ") + name + " must end at nnzBlocks (" +
                                    std::to_string(nnz) + "), ends at " + std::to_string(ptr[segments]));
}

// createPattern({rows, cols, blockHeight, blockWidth, blockRows, blockCols, nnzBlocks, blockRowPtr,
// blockColIdx, blockColPtr, blockRowIdx, valueIndex, coordBlockRow, coordBlockCol}): validates every index
// on the host and uploads them once; the returned id is what the block-sparse kernels take.
Napi::Value createPattern(const Napi::CallbackInfo& info) {
  Args args{info, "createPattern"};
  args.count(1);
  BS_REQUIRE(info[0].IsObject(), "createPattern: argument 0 must be an object");
  Napi::Object desc = info[0].As<Napi::Object>();
  int64_t rows = intField(desc, "rows"), cols = intField(desc, "cols");
  int64_t R = intField(desc, "blockHeight"), C = intField(desc, "blockWidth");
  int64_t blockRows = intField(desc, "blockRows"), blockCols = intField(desc, "blockCols");
  int64_t nnz = intField(desc, "nnzBlocks");
  BS_REQUIRE(R >= 1 && C >= 1, "createPattern: block shape must be at least 1x1");
  BS_REQUIRE(blockRows * R == rows && blockCols * C == cols,
          "createPattern: shape [" + std::to_string(rows) + ", " + std::to_string(cols) + "] is not blockRows x R = " +
              std::to_string(blockRows) + " x " + std::to_string(R) + " by blockCols x C = " + std::to_string(blockCols) +
              " x " + std::to_string(C));
  BS_REQUIRE(nnz <= blockRows * blockCols, "createPattern: more blocks than the grid holds");
  BS_REQUIRE(nnz * R * C <= 2147483647LL * 64, "createPattern: pattern too large");
  Napi::Int32Array rowPtr = int32Field(desc, "blockRowPtr", blockRows + 1);
  Napi::Int32Array colIdx = int32Field(desc, "blockColIdx", nnz);
  Napi::Int32Array colPtr = int32Field(desc, "blockColPtr", blockCols + 1);
  Napi::Int32Array rowIdx = int32Field(desc, "blockRowIdx", nnz);
  Napi::Int32Array valueIdx = int32Field(desc, "valueIndex", nnz);
  Napi::Int32Array coordRow = int32Field(desc, "coordBlockRow", nnz);
  Napi::Int32Array coordCol = int32Field(desc, "coordBlockCol", nnz);
  const int32_t *rp = rowPtr.Data(), *ci = colIdx.Data(), *cp = colPtr.Data(), *ri = rowIdx.Data(),
                *vi = valueIdx.Data(), *cr = coordRow.Data(), *cc = coordCol.Data();

  checkPointers(rp, blockRows, nnz, "blockRowPtr");
  checkPointers(cp, blockCols, nnz, "blockColPtr");
  for (int64_t r = 0; r < blockRows; ++r) {
    for (int64_t p = rp[r]; p < rp[r + 1]; ++p) {
      BS_REQUIRE(ci[p] >= 0 && ci[p] < blockCols, "createPattern: blockColIdx[" + std::to_string(p) + "] = " +
                                                   std::to_string(ci[p]) + " is outside [0, " +
                                                   std::to_string(blockCols) + ")");
      BS_REQUIRE(p == rp[r] || ci[p] > ci[p - 1],
              "createPattern: blockColIdx is not strictly increasing within block row " + std::to_string(r));
      BS_REQUIRE(cr[p] == r && cc[p] == ci[p],
              "createPattern: coordinates of block " + std::to_string(p) + " disagree with the row-wise index");
    }
  }
  std::vector<uint8_t> seen(static_cast<size_t>(nnz), 0);
  for (int64_t c = 0; c < blockCols; ++c) {
    for (int64_t q = cp[c]; q < cp[c + 1]; ++q) {
      BS_REQUIRE(vi[q] >= 0 && vi[q] < nnz && !seen[vi[q]],
              "createPattern: valueIndex[" + std::to_string(q) + "] is out of range or repeated");
      seen[vi[q]] = 1;
      BS_REQUIRE(ri[q] >= 0 && ri[q] < blockRows && cr[vi[q]] == ri[q] && ci[vi[q]] == c,
              "createPattern: column-wise entry " + std::to_string(q) + " disagrees with the row-wise index");
    }
  }

  // One allocation: rowPtr, colIdx, colPtr, rowIdx, valueIndex, coordRow, coordCol.
  std::vector<int32_t> packed;
  packed.reserve(static_cast<size_t>(blockRows + 1 + blockCols + 1 + 5 * nnz));
  auto append = [&packed](const int32_t* p, int64_t n) { packed.insert(packed.end(), p, p + n); };
  append(rp, blockRows + 1);
  append(ci, nnz);
  append(cp, blockCols + 1);
  append(ri, nnz);
  append(vi, nnz);
  append(cr, nnz);
  append(cc, nnz);
  const auto groupLists = appendColumnGroupLists(packed, cp, static_cast<int32_t>(blockCols));
  // The pair records of the dW patch tile (32x32 blocks on a wgmma device, where the dispatch may take the tile, or for
  // autotuning's candidates when it is on at upload; tc/patch_list.h): about four words per block.
  PatchListOffsets patchPairs;
  if (R == 32 && C == 32 && tcBuildsPatchRecords(blockRows, blockCols, nnz, autotuneEnabled()))
    patchPairs = appendPatchPairList(packed, 32, 32, static_cast<int32_t>(blockRows), static_cast<int32_t>(blockCols),
                                     rp, ci);
  BufferId buffer = allocate(packed.size() * sizeof(int32_t));
  const int32_t* base = static_cast<const int32_t*>(lookup(buffer, "pattern").data);
  try {
    BS_CUDA_CHECK(cudaMemcpyAsync(const_cast<int32_t*>(base), packed.data(), packed.size() * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, stream()));
    // The host vector dies here: wait for the copy to finish reading it.
    BS_CUDA_CHECK(cudaStreamSynchronize(stream()));
  } catch (...) {
    release(buffer);
    throw;
  }
  BsrPatternView view{};
  view.rows = rows;
  view.cols = cols;
  view.blockHeight = static_cast<int32_t>(R);
  view.blockWidth = static_cast<int32_t>(C);
  view.blockRows = static_cast<int32_t>(blockRows);
  view.blockCols = static_cast<int32_t>(blockCols);
  view.nnzBlocks = static_cast<int32_t>(nnz);
  const int32_t* at = base;
  view.blockRowPtr = at, at += blockRows + 1;
  view.blockColIdx = at, at += nnz;
  view.blockColPtr = at, at += blockCols + 1;
  view.blockRowIdx = at, at += nnz;
  view.valueIndex = at, at += nnz;
  view.coordBlockRow = at, at += nnz;
  view.coordBlockCol = at;
  bindColumnGroupLists(view, base, groupLists);
  bindPatchPairList(view, base, patchPairs);
  uint64_t id = nextPatternId++;
  patterns.emplace(id, PatternRecord{buffer, view});
  return Napi::Number::New(info.Env(), static_cast<double>(id));
}

Napi::Value freePattern(const Napi::CallbackInfo& info) {
  Args args{info, "freePattern"};
  args.count(1);
  auto it = patterns.find(static_cast<uint64_t>(args.size(0)));
  BS_REQUIRE(it != patterns.end(), "freePattern: unknown or already freed pattern");
  release(it->second.buffer);
  patterns.erase(it);
  return undefinedOf(info);
}

const BsrPatternView& patternArg(const Args& args, size_t i);

// sampledPlan(pattern, m, dtype): how the tensor-core dW kernels split the tokens of this product under the default
// options ("1 split", "2 splits", "2 splits on the patch tile", or the whole groups and the tail's pieces; "declined" where
// they do not run).
Napi::Value sampledPlan(const Napi::CallbackInfo& info) {
  Args args{info, "sampledPlan"};
  args.count(3);
  const BsrPatternView& pattern = patternArg(args, 0);
  return Napi::String::New(info.Env(), tcSampledPlan(args.floatDtype(2), pattern, args.size(1)));
}

const BsrPatternView& patternArg(const Args& args, size_t i) {
  auto it = patterns.find(static_cast<uint64_t>(args.size(i)));
  BS_REQUIRE(it != patterns.end(), args.where(i) + ": unknown or freed pattern");
  return it->second.view;
}

// ------------------------------------------------------------------ elementwise

// fillBits(elementBytes, out, n, bits)
Napi::Value fillBits(const Napi::CallbackInfo& info) {
  Args args{info, "fillBits"};
  args.count(4);
  int64_t elementBytes = args.size(0);
  BS_REQUIRE(elementBytes == 2 || elementBytes == 4, "fillBits: element size must be 2 or 4 bytes");
  const Buffer& out = args.buffer(1);
  int64_t n = args.size(2);
  BS_REQUIRE(static_cast<size_t>(n * elementBytes) <= out.byteLength, "fillBits: buffer too small");
  double bits = args.number(3);
  BS_REQUIRE(bits >= 0 && bits <= 4294967295.0 && std::floor(bits) == bits, "fillBits: bits must be a uint32");
  launchFillBits(static_cast<size_t>(elementBytes), out.data, n, static_cast<uint32_t>(bits), stream());
  return undefinedOf(info);
}

// unary(op, dtype, x, y, n)
Napi::Value unary(const Napi::CallbackInfo& info) {
  Args args{info, "unary"};
  args.count(5);
  int64_t op = args.size(0);
  BS_REQUIRE(op < static_cast<int64_t>(UnaryOp::Count), "unary: unknown op " + std::to_string(op));
  DType dtype = args.dtype(1);
  int64_t n = args.size(4);
  requireElements(args.buffer(2), dtype, n, "unary x");
  requireElements(args.buffer(3), dtype, n, "unary y");
  if (dtype == DType::Int32) {
    UnaryOp u = static_cast<UnaryOp>(op);
    BS_REQUIRE(u == UnaryOp::Neg || u == UnaryOp::Abs || u == UnaryOp::Relu || u == UnaryOp::Square,
            "unary: op " + std::to_string(op) + " takes float dtypes only");
  }
  launchUnary(static_cast<UnaryOp>(op), dtype, args.buffer(2).data, args.buffer(3).data, n, stream());
  return undefinedOf(info);
}

// binary(op, dtype, a, aStrides, b, bStrides, y, shape)
Napi::Value binary(const Napi::CallbackInfo& info) {
  Args args{info, "binary"};
  args.count(8);
  int64_t op = args.size(0);
  BS_REQUIRE(op < static_cast<int64_t>(BinaryOp::Count), "binary: unknown op " + std::to_string(op));
  BinaryOp b = static_cast<BinaryOp>(op);
  DType dtype = args.dtype(1);
  bool comparison = b >= BinaryOp::Equal && b <= BinaryOp::GreaterEqual;
  if (dtype == DType::Int32)
    BS_REQUIRE(comparison || b == BinaryOp::Add || b == BinaryOp::Sub || b == BinaryOp::Mul || b == BinaryOp::Maximum ||
                b == BinaryOp::Minimum,
            "binary: op " + std::to_string(op) + " takes float dtypes only");
  std::vector<int64_t> dims = args.sizes(7);
  StridedShape shape = toShape(dims, "binary");
  int64_t n = product(dims, "binary");
  int64_t aExtent, bExtent;
  Strides aStrides = toStrides(args.sizes(3), dims, aExtent, "binary a");
  Strides bStrides = toStrides(args.sizes(5), dims, bExtent, "binary b");
  requireElements(args.buffer(2), dtype, aExtent, "binary a");
  requireElements(args.buffer(4), dtype, bExtent, "binary b");
  requireElements(args.buffer(6), comparison ? DType::Int32 : dtype, n, "binary y");
  launchBinary(b, dtype, args.buffer(2).data, aStrides, args.buffer(4).data, bStrides, args.buffer(6).data, shape, n,
               stream());
  return undefinedOf(info);
}

// where(dtype, cond, condStrides, a, aStrides, b, bStrides, y, shape)
Napi::Value where(const Napi::CallbackInfo& info) {
  Args args{info, "where"};
  args.count(9);
  DType dtype = args.dtype(0);
  std::vector<int64_t> dims = args.sizes(8);
  StridedShape shape = toShape(dims, "where");
  int64_t n = product(dims, "where");
  int64_t cExtent, aExtent, bExtent;
  Strides cStrides = toStrides(args.sizes(2), dims, cExtent, "where condition");
  Strides aStrides = toStrides(args.sizes(4), dims, aExtent, "where a");
  Strides bStrides = toStrides(args.sizes(6), dims, bExtent, "where b");
  requireElements(args.buffer(1), DType::Int32, cExtent, "where condition");
  requireElements(args.buffer(3), dtype, aExtent, "where a");
  requireElements(args.buffer(5), dtype, bExtent, "where b");
  requireElements(args.buffer(7), dtype, n, "where y");
  launchWhere(dtype, static_cast<const int32_t*>(args.buffer(1).data), cStrides, args.buffer(3).data, aStrides,
              args.buffer(5).data, bStrides, args.buffer(7).data, shape, n, stream());
  return undefinedOf(info);
}

// cast(from, to, x, y, n)
Napi::Value cast(const Napi::CallbackInfo& info) {
  Args args{info, "cast"};
  args.count(5);
  DType from = args.dtype(0), to = args.dtype(1);
  int64_t n = args.size(4);
  requireElements(args.buffer(2), from, n, "cast x");
  requireElements(args.buffer(3), to, n, "cast y");
  launchCast(from, to, args.buffer(2).data, args.buffer(3).data, n, stream());
  return undefinedOf(info);
}

// copyStrided(dtype, src, srcOffset, srcStrides, dst, dstOffset, dstStrides, shape)
Napi::Value copyStrided(const Napi::CallbackInfo& info) {
  Args args{info, "copyStrided"};
  args.count(8);
  DType dtype = args.dtype(0);
  std::vector<int64_t> dims = args.sizes(7);
  StridedShape shape = toShape(dims, "copyStrided");
  int64_t n = product(dims, "copyStrided");
  int64_t srcOffset = args.size(2), dstOffset = args.size(5);
  int64_t srcExtent, dstExtent;
  Strides srcStrides = toStrides(args.sizes(3), dims, srcExtent, "copyStrided src");
  Strides dstStrides = toStrides(args.sizes(6), dims, dstExtent, "copyStrided dst");
  const Buffer& src = args.buffer(1);
  const Buffer& dst = args.buffer(4);
  if (n == 0) return undefinedOf(info);
  requireElements(src, dtype, srcOffset + srcExtent, "copyStrided src");
  requireElements(dst, dtype, dstOffset + dstExtent, "copyStrided dst");
  size_t width = dtypeSize(dtype);
  launchCopyStrided(dtype, static_cast<const char*>(src.data) + srcOffset * width, srcStrides,
                    static_cast<char*>(dst.data) + dstOffset * width, dstStrides, shape, n, stream());
  return undefinedOf(info);
}

// ------------------------------------------------------------------ reductions, softmax, norms, losses

// reduce(op, dtype, x, y, outer, size, inner)
Napi::Value reduce(const Napi::CallbackInfo& info) {
  Args args{info, "reduce"};
  args.count(7);
  int64_t op = args.size(0);
  BS_REQUIRE(op < static_cast<int64_t>(ReduceOp::Count), "reduce: unknown op " + std::to_string(op));
  ReduceOp r = static_cast<ReduceOp>(op);
  DType dtype = args.dtype(1);
  BS_REQUIRE(!(r == ReduceOp::Mean && dtype == DType::Int32), "reduce: mean takes float dtypes only");
  int64_t outer = args.size(4), size = args.size(5), inner = args.size(6);
  BS_REQUIRE(size <= 2147483647, "reduce: reduced extent above 2^31");
  requireElements(args.buffer(2), dtype, product({outer, size, inner}, "reduce"), "reduce x");
  requireElements(args.buffer(3), r == ReduceOp::Argmax ? DType::Int32 : dtype, outer * inner, "reduce y");
  launchReduce(r, dtype, args.buffer(2).data, args.buffer(3).data, outer, size, inner, stream());
  return undefinedOf(info);
}

// Causal masking over trailing [causalRows, size] matrices: 0 (none), or a row count dividing `rows`, at most `size`.
void requireCausalRows(const char* op, int64_t causalRows, int64_t rows, int64_t size) {
  BS_REQUIRE(causalRows == 0 || (causalRows <= size && rows % causalRows == 0),
             std::string(op) + ": causal rows " + std::to_string(causalRows) + " must divide the " +
                 std::to_string(rows) + " rows and be at most the row length " + std::to_string(size));
}

// softmax(log, dtype, x, y, rows, size, causalRows): causalRows 0, or m (dividing rows, at most size) for causal
// masking over each trailing [m, size] matrix.
Napi::Value softmax(const Napi::CallbackInfo& info) {
  Args args{info, "softmax"};
  args.count(7);
  bool log = args.boolean(0);
  DType dtype = args.floatDtype(1);
  int64_t rows = args.size(4), size = args.size(5), causalRows = args.size(6);
  int64_t n = product({rows, size}, "softmax");
  requireCausalRows("softmax", causalRows, rows, size);
  requireElements(args.buffer(2), dtype, n, "softmax x");
  requireElements(args.buffer(3), dtype, n, "softmax y");
  launchSoftmax(log, dtype, args.buffer(2).data, args.buffer(3).data, rows, size, causalRows, stream());
  return undefinedOf(info);
}

// softmaxBackward(log, dtype, dy, y, dx, rows, size, causalRows): causalRows as softmax's.
Napi::Value softmaxBackward(const Napi::CallbackInfo& info) {
  Args args{info, "softmaxBackward"};
  args.count(8);
  bool log = args.boolean(0);
  DType dtype = args.floatDtype(1);
  int64_t rows = args.size(5), size = args.size(6), causalRows = args.size(7);
  int64_t n = product({rows, size}, "softmaxBackward");
  requireCausalRows("softmaxBackward", causalRows, rows, size);
  requireElements(args.buffer(2), dtype, n, "softmaxBackward dy");
  requireElements(args.buffer(3), dtype, n, "softmaxBackward y");
  requireElements(args.buffer(4), dtype, n, "softmaxBackward dx");
  launchSoftmaxBackward(log, dtype, args.buffer(2).data, args.buffer(3).data, args.buffer(4).data, rows, size, causalRows,
                        stream());
  return undefinedOf(info);
}

// Attention's shapes: batch matrices of q [M, D], k and v [N, D]; causal needs M <= N; a row needs a key.
void requireAttentionShape(const char* op, int64_t M, int64_t N, int64_t D, bool causal, float scale) {
  BS_REQUIRE(M <= 2147483647 && N <= 2147483647, std::string(op) + ": query and key counts must be below 2^31, got M=" +
                                                     std::to_string(M) + " N=" + std::to_string(N));
  BS_REQUIRE(D >= 1, std::string(op) + ": head dim must be at least 1, got " + std::to_string(D));
  BS_REQUIRE(M == 0 || N >= 1, std::string(op) + ": " + std::to_string(M) + " queries need at least one key, got N=0");
  BS_REQUIRE(!causal || M <= N, std::string(op) + ": causal masking needs M <= N, got M=" + std::to_string(M) +
                                    " N=" + std::to_string(N));
  // Any finite scale, as the ops take: one that is not positive takes the math route (attentionUsesFlash).
  BS_REQUIRE(std::isfinite(scale), std::string(op) + ": scale must be a finite number, got " + std::to_string(scale));
}

// q [batch, M, D] at argument `at`, k and v [batch, N, D] the two after it; returns q's element count (the output's).
int64_t requireQkv(Args& args, const std::string& op, DType dtype, int at, int64_t batch, int64_t M, int64_t N,
                   int64_t D) {
  const int64_t queries = product({batch, M, D}, op);
  const int64_t keys = product({batch, N, D}, op);
  requireElements(args.buffer(at), dtype, queries, (op + " q").c_str());
  requireElements(args.buffer(at + 1), dtype, keys, (op + " k").c_str());
  requireElements(args.buffer(at + 2), dtype, keys, (op + " v").c_str());
  return queries;
}

// attention(dtype, q, k, v, out, lse, batch, M, N, D, scale, causal): lse float32 [batch, M].
Napi::Value attention(const Napi::CallbackInfo& info) {
  Args args{info, "attention"};
  args.count(12);
  DType dtype = args.floatDtype(0);
  int64_t batch = args.size(6), M = args.size(7), N = args.size(8), D = args.size(9);
  float scale = static_cast<float>(args.number(10));
  bool causal = args.boolean(11);
  requireAttentionShape("attention", M, N, D, causal, scale);
  const int64_t queries = requireQkv(args, "attention", dtype, 1, batch, M, N, D);
  requireElements(args.buffer(4), dtype, queries, "attention out");
  requireElements(args.buffer(5), DType::Float32, batch * M, "attention lse");
  launchAttention(dtype, args.buffer(1).data, args.buffer(2).data, args.buffer(3).data, args.buffer(4).data,
                  static_cast<float*>(args.buffer(5).data), batch, M, N, D, contiguousAttentionLayout(M, N, D), scale,
                  causal, stream());
  return undefinedOf(info);
}

// q, k and v inside qkv [batch, T, 3, heads, D] (argument `at`): qkv's pointer and those of its k and v parts.
struct PackedQkv {
  char* q;
  char* k;
  char* v;
};
PackedQkv packedParts(Args& args, int at, DType dtype, int64_t heads, int64_t D) {
  char* q = static_cast<char*>(args.buffer(at).data);
  const int64_t part = heads * D * static_cast<int64_t>(dtypeSize(dtype));
  return {q, q + part, q + 2 * part};
}

// packedAttention's and its backward's checks: batch sequences of T positions, heads of D; returns out's element
// count ([batch, T, heads, D]; qkv holds three times it).
int64_t requirePackedAttention(Args& args, const char* op, DType dtype, int qkvAt, int64_t batch, int64_t heads,
                               int64_t T, int64_t D, bool causal, float scale) {
  requireAttentionShape(op, T, T, D, causal, scale);
  BS_REQUIRE(heads >= 1, std::string(op) + ": heads must be at least 1, got " + std::to_string(heads));
  const int64_t out = product({batch, T, heads, D}, op);
  requireElements(args.buffer(qkvAt), dtype, product({3, out}, op), (std::string(op) + " qkv").c_str());
  return out;
}

// packedAttention(dtype, qkv, out, lse, batch, heads, T, D, scale, causal): self-attention of each sequence's
// positions, their queries, keys and values side by side in qkv [batch, T, 3, heads, D]; out [batch, T, heads, D],
// lse float32 [batch, heads, T].
Napi::Value packedAttention(const Napi::CallbackInfo& info) {
  Args args{info, "packedAttention"};
  args.count(10);
  DType dtype = args.floatDtype(0);
  int64_t batch = args.size(4), heads = args.size(5), T = args.size(6), D = args.size(7);
  float scale = static_cast<float>(args.number(8));
  bool causal = args.boolean(9);
  const int64_t out = requirePackedAttention(args, "packedAttention", dtype, 1, batch, heads, T, D, causal, scale);
  requireElements(args.buffer(2), dtype, out, "packedAttention out");
  requireElements(args.buffer(3), DType::Float32, product({batch, heads, T}, "packedAttention"), "packedAttention lse");
  const PackedQkv qkv = packedParts(args, 1, dtype, heads, D);
  launchAttention(dtype, qkv.q, qkv.k, qkv.v, args.buffer(2).data, static_cast<float*>(args.buffer(3).data),
                  batch * heads, T, T, D, packedAttentionLayout(heads, T, D), scale, causal, stream());
  return undefinedOf(info);
}

// cachedAttention(dtype, q, k, v, positions, out, batch, M, N, D, scale, newK | null, newV | null): positions int32
// [M]; newK and newV [batch, M, D], both or neither, written into k and v at the positions first (k and v in place).
Napi::Value cachedAttention(const Napi::CallbackInfo& info) {
  Args args{info, "cachedAttention"};
  args.count(13);
  DType dtype = args.floatDtype(0);
  int64_t batch = args.size(6), M = args.size(7), N = args.size(8), D = args.size(9);
  float scale = static_cast<float>(args.number(10));
  requireAttentionShape("cachedAttention", M, N, D, false, scale);
  BS_REQUIRE(D <= kMaxCachedHeadDim, "cachedAttention: head dims up to " + std::to_string(kMaxCachedHeadDim) +
                                         " on cuda, got D=" + std::to_string(D));
  BS_REQUIRE(batch * M <= 2147483647, "cachedAttention: batch x M must be below 2^31, got " + std::to_string(batch * M));
  const int64_t queries = requireQkv(args, "cachedAttention", dtype, 1, batch, M, N, D);
  requireElements(args.buffer(4), DType::Int32, M, "cachedAttention positions");
  requireElements(args.buffer(5), dtype, queries, "cachedAttention out");
  BS_REQUIRE(args.isAbsent(11) == args.isAbsent(12), "cachedAttention: newK and newV go together, got only one");
  const void* newK = nullptr;
  const void* newV = nullptr;
  if (!args.isAbsent(11)) {
    requireElements(args.buffer(11), dtype, queries, "cachedAttention newK");
    requireElements(args.buffer(12), dtype, queries, "cachedAttention newV");
    newK = args.buffer(11).data;
    newV = args.buffer(12).data;
    BS_REQUIRE(args.buffer(2).data != args.buffer(3).data,
               "cachedAttention: k and v must be buffers of their own when newK and newV are written into them");
  }
  launchCachedAttention(dtype, args.buffer(1).data, args.buffer(2).data, args.buffer(3).data,
                        static_cast<const int32_t*>(args.buffer(4).data), newK, newV, args.buffer(5).data, batch, M, N,
                        D, scale, stream());
  return undefinedOf(info);
}

// attentionBackward(dtype, dout, q, k, v, out, lse, dq, dk, dv, batch, M, N, D, scale, causal)
Napi::Value attentionBackward(const Napi::CallbackInfo& info) {
  Args args{info, "attentionBackward"};
  args.count(16);
  DType dtype = args.floatDtype(0);
  int64_t batch = args.size(10), M = args.size(11), N = args.size(12), D = args.size(13);
  float scale = static_cast<float>(args.number(14));
  bool causal = args.boolean(15);
  requireAttentionShape("attentionBackward", M, N, D, causal, scale);
  const int64_t queries = requireQkv(args, "attentionBackward", dtype, 2, batch, M, N, D);
  const int64_t keys = product({batch, N, D}, "attentionBackward");
  requireElements(args.buffer(1), dtype, queries, "attentionBackward dout");
  requireElements(args.buffer(5), dtype, queries, "attentionBackward out");
  requireElements(args.buffer(6), DType::Float32, batch * M, "attentionBackward lse");
  requireElements(args.buffer(7), dtype, queries, "attentionBackward dq");
  requireElements(args.buffer(8), dtype, keys, "attentionBackward dk");
  requireElements(args.buffer(9), dtype, keys, "attentionBackward dv");
  launchAttentionBackward(dtype, args.buffer(1).data, args.buffer(2).data, args.buffer(3).data, args.buffer(4).data,
                          args.buffer(5).data, static_cast<const float*>(args.buffer(6).data), args.buffer(7).data,
                          args.buffer(8).data, args.buffer(9).data, batch, M, N, D, contiguousAttentionLayout(M, N, D),
                          scale, causal, stream());
  return undefinedOf(info);
}

// packedAttentionBackward(dtype, dout, qkv, out, lse, dqkv, batch, heads, T, D, scale, causal): dqkv [batch, T, 3,
// heads, D] (every element written) from dout and out [batch, T, heads, D] and lse [batch, heads, T].
Napi::Value packedAttentionBackward(const Napi::CallbackInfo& info) {
  Args args{info, "packedAttentionBackward"};
  args.count(12);
  DType dtype = args.floatDtype(0);
  int64_t batch = args.size(6), heads = args.size(7), T = args.size(8), D = args.size(9);
  float scale = static_cast<float>(args.number(10));
  bool causal = args.boolean(11);
  const char* op = "packedAttentionBackward";
  const int64_t out = requirePackedAttention(args, op, dtype, 2, batch, heads, T, D, causal, scale);
  requireElements(args.buffer(1), dtype, out, "packedAttentionBackward dout");
  requireElements(args.buffer(3), dtype, out, "packedAttentionBackward out");
  requireElements(args.buffer(4), DType::Float32, product({batch, heads, T}, op), "packedAttentionBackward lse");
  requireElements(args.buffer(5), dtype, product({3, out}, op), "packedAttentionBackward dqkv");
  const PackedQkv qkv = packedParts(args, 2, dtype, heads, D);
  const PackedQkv dqkv = packedParts(args, 5, dtype, heads, D);
  launchAttentionBackward(dtype, args.buffer(1).data, qkv.q, qkv.k, qkv.v, args.buffer(3).data,
                          static_cast<const float*>(args.buffer(4).data), dqkv.q, dqkv.k, dqkv.v, batch * heads, T, T,
                          D, packedAttentionLayout(heads, T, D), scale, causal, stream());
  return undefinedOf(info);
}

// layerNorm(dtype, x, gamma|null, beta|null, y, mean, rstd, rows, width, epsilon)
Napi::Value layerNorm(const Napi::CallbackInfo& info) {
  Args args{info, "layerNorm"};
  args.count(10);
  DType dtype = args.floatDtype(0);
  int64_t rows = args.size(7), width = args.size(8);
  float eps = static_cast<float>(args.number(9));
  int64_t n = product({rows, width}, "layerNorm");
  requireElements(args.buffer(1), dtype, n, "layerNorm x");
  const void* gamma = nullptr;
  const void* beta = nullptr;
  if (!args.isAbsent(2)) {
    requireElements(args.buffer(2), dtype, width, "layerNorm gamma");
    gamma = args.buffer(2).data;
  }
  if (!args.isAbsent(3)) {
    requireElements(args.buffer(3), dtype, width, "layerNorm beta");
    beta = args.buffer(3).data;
  }
  requireElements(args.buffer(4), dtype, n, "layerNorm y");
  requireElements(args.buffer(5), DType::Float32, rows, "layerNorm mean");
  requireElements(args.buffer(6), DType::Float32, rows, "layerNorm rstd");
  launchLayerNorm(dtype, args.buffer(1).data, gamma, beta, args.buffer(4).data, static_cast<float*>(args.buffer(5).data),
                  static_cast<float*>(args.buffer(6).data), rows, width, eps, stream());
  return undefinedOf(info);
}

// layerNormBackward(dtype, dy, x, mean, rstd, gamma|null, dx, dgamma, dbeta, rows, width)
Napi::Value layerNormBackward(const Napi::CallbackInfo& info) {
  Args args{info, "layerNormBackward"};
  args.count(11);
  DType dtype = args.floatDtype(0);
  int64_t rows = args.size(9), width = args.size(10);
  int64_t n = product({rows, width}, "layerNormBackward");
  requireElements(args.buffer(1), dtype, n, "layerNormBackward dy");
  requireElements(args.buffer(2), dtype, n, "layerNormBackward x");
  requireElements(args.buffer(3), DType::Float32, rows, "layerNormBackward mean");
  requireElements(args.buffer(4), DType::Float32, rows, "layerNormBackward rstd");
  const void* gamma = nullptr;
  if (!args.isAbsent(5)) {
    requireElements(args.buffer(5), dtype, width, "layerNormBackward gamma");
    gamma = args.buffer(5).data;
  }
  requireElements(args.buffer(6), dtype, n, "layerNormBackward dx");
  requireElements(args.buffer(7), dtype, width, "layerNormBackward dgamma");
  requireElements(args.buffer(8), dtype, width, "layerNormBackward dbeta");
  launchLayerNormBackward(dtype, args.buffer(1).data, args.buffer(2).data, static_cast<const float*>(args.buffer(3).data),
                      static_cast<const float*>(args.buffer(4).data), gamma, args.buffer(6).data, args.buffer(7).data,
                      args.buffer(8).data, rows, width, stream());
  return undefinedOf(info);
}

// A cross-entropy's ignoreIndex: a negative int32, or 0 for none (0 is a class, never out of range).
int32_t ignoreIndexArg(const Args& args, size_t i) {
  const double value = args.number(i);
  BS_REQUIRE(std::floor(value) == value && value <= 0 && value >= -2147483648.0,
             args.where(i) + " (ignoreIndex) must be a negative int32 or 0 for none");
  return static_cast<int32_t>(value);
}

// crossEntropy(dtype, logits, targets, loss, rows, classes, ignoreIndex): loss float32 whatever the logits' dtype
Napi::Value crossEntropy(const Napi::CallbackInfo& info) {
  Args args{info, "crossEntropy"};
  args.count(7);
  DType dtype = args.floatDtype(0);
  int64_t rows = args.size(4), classes = args.size(5);
  requireElements(args.buffer(1), dtype, product({rows, classes}, "crossEntropy"), "crossEntropy logits");
  requireElements(args.buffer(2), DType::Int32, rows, "crossEntropy targets");
  requireElements(args.buffer(3), DType::Float32, rows, "crossEntropy loss");
  launchCrossEntropy(dtype, args.buffer(1).data, static_cast<const int32_t*>(args.buffer(2).data),
                     static_cast<float*>(args.buffer(3).data), rows, classes, ignoreIndexArg(args, 6), stream());
  return undefinedOf(info);
}

// crossEntropyBackward(dtype, logits, targets, dy, dlogits, rows, classes, ignoreIndex): dy float32
Napi::Value crossEntropyBackward(const Napi::CallbackInfo& info) {
  Args args{info, "crossEntropyBackward"};
  args.count(8);
  DType dtype = args.floatDtype(0);
  int64_t rows = args.size(5), classes = args.size(6);
  int64_t n = product({rows, classes}, "crossEntropyBackward");
  requireElements(args.buffer(1), dtype, n, "crossEntropyBackward logits");
  requireElements(args.buffer(2), DType::Int32, rows, "crossEntropyBackward targets");
  requireElements(args.buffer(3), DType::Float32, rows, "crossEntropyBackward dy");
  requireElements(args.buffer(4), dtype, n, "crossEntropyBackward dlogits");
  launchCrossEntropyBackward(dtype, args.buffer(1).data, static_cast<const int32_t*>(args.buffer(2).data),
                         static_cast<const float*>(args.buffer(3).data), args.buffer(4).data, rows, classes,
                         ignoreIndexArg(args, 7), stream());
  return undefinedOf(info);
}

// ------------------------------------------------------------------ indexing

// gather(dtype, x, indices, y, outer, axisSize, inner, count)
Napi::Value gather(const Napi::CallbackInfo& info) {
  Args args{info, "gather"};
  args.count(8);
  DType dtype = args.dtype(0);
  int64_t outer = args.size(4), axisSize = args.size(5), inner = args.size(6), count = args.size(7);
  requireElements(args.buffer(1), dtype, product({outer, axisSize, inner}, "gather"), "gather x");
  requireElements(args.buffer(2), DType::Int32, count, "gather indices");
  requireElements(args.buffer(3), dtype, product({outer, count, inner}, "gather"), "gather y");
  launchGather(dtype, args.buffer(1).data, static_cast<const int32_t*>(args.buffer(2).data), args.buffer(3).data, outer,
               axisSize, inner, count, stream());
  return undefinedOf(info);
}

// Rows of source [outer, count, inner] into y [outer, axisSize, inner] at int32 indices [count] along the middle axis,
// by `launch` (added: scatterAdd; written in place: indexCopy). Args (dtype, source, indices, y, outer, axisSize,
// inner, count), validated.
using IndexedRowsLaunch = void (*)(DType, const void*, const int32_t*, void*, int64_t, int64_t, int64_t, int64_t,
                                   cudaStream_t);
Napi::Value indexedRows(const Napi::CallbackInfo& info, const std::string& name, const char* sourceName,
                        IndexedRowsLaunch launch) {
  Args args{info, name.c_str()};
  args.count(8);
  DType dtype = args.dtype(0);
  int64_t outer = args.size(4), axisSize = args.size(5), inner = args.size(6), count = args.size(7);
  requireElements(args.buffer(1), dtype, product({outer, count, inner}, name), (name + " " + sourceName).c_str());
  requireElements(args.buffer(2), DType::Int32, count, (name + " indices").c_str());
  requireElements(args.buffer(3), dtype, product({outer, axisSize, inner}, name), (name + " y").c_str());
  launch(dtype, args.buffer(1).data, static_cast<const int32_t*>(args.buffer(2).data), args.buffer(3).data, outer,
         axisSize, inner, count, stream());
  return undefinedOf(info);
}

// scatterAdd(dtype, updates, indices, y, outer, axisSize, inner, count): y[o, indices[j], k] += updates[o, j, k]
Napi::Value scatterAdd(const Napi::CallbackInfo& info) { return indexedRows(info, "scatterAdd", "updates", launchScatterAdd); }

// indexCopy(dtype, source, indices, y, outer, axisSize, inner, count): y[o, indices[j], k] = source[o, j, k], in place
Napi::Value indexCopy(const Napi::CallbackInfo& info) {
  return indexedRows(info, "indexCopy", "source",
                     [](DType dtype, const void* source, const int32_t* indices, void* y, int64_t outer, int64_t axisSize,
                        int64_t inner, int64_t count, cudaStream_t stream) {
                       launchIndexCopy(dtype, source, indices, y, outer, axisSize, inner, count, stream);
                     });
}

// oneHot(dtype, indices, y, count, depth)
Napi::Value oneHot(const Napi::CallbackInfo& info) {
  Args args{info, "oneHot"};
  args.count(5);
  DType dtype = args.dtype(0);
  int64_t count = args.size(3), depth = args.size(4);
  requireElements(args.buffer(1), DType::Int32, count, "oneHot indices");
  requireElements(args.buffer(2), dtype, product({count, depth}, "oneHot"), "oneHot y");
  launchOneHot(dtype, static_cast<const int32_t*>(args.buffer(1).data), args.buffer(2).data, count, depth, stream());
  return undefinedOf(info);
}

// ------------------------------------------------------------------ products

// matmul(dtype, a, b, c, batch, m, n, k, transA, transB, strideA, strideB)
Napi::Value matmul(const Napi::CallbackInfo& info) {
  Args args{info, "matmul"};
  args.count(12);
  DType dtype = args.floatDtype(0);
  int64_t batch = args.size(4), m = args.size(5), n = args.size(6), k = args.size(7);
  bool transA = args.boolean(8), transB = args.boolean(9);
  int64_t strideA = args.size(10), strideB = args.size(11);
  if (batch > 0) {
    // product() refuses a batch stride past 2^53, which in int64 could wrap to a small extent.
    requireElements(args.buffer(1), dtype, product({batch - 1, strideA}, "matmul a") + product({m, k}, "matmul"), "matmul a");
    requireElements(args.buffer(2), dtype, product({batch - 1, strideB}, "matmul b") + product({k, n}, "matmul"), "matmul b");
  }
  requireElements(args.buffer(3), dtype, product({batch, m, n}, "matmul"), "matmul c");
  launchMatmul(dtype, args.buffer(1).data, args.buffer(2).data, args.buffer(3).data, batch, m, n, k, transA, transB,
               strideA, strideB, stream());
  return undefinedOf(info);
}

// linearBackward(dtype, dy, x, w, dx, dw, m, n, k): dx [m, k] = dy [m, n] w [n, k], dw [n, k] = dy^T x [m, k].
Napi::Value linearBackward(const Napi::CallbackInfo& info) {
  Args args{info, "linearBackward"};
  args.count(9);
  DType dtype = args.floatDtype(0);
  int64_t m = args.size(6), n = args.size(7), k = args.size(8);
  const char* name = "linearBackward";
  requireElements(args.buffer(1), dtype, product({m, n}, name), "linearBackward dy");
  requireElements(args.buffer(2), dtype, product({m, k}, name), "linearBackward x");
  requireElements(args.buffer(3), dtype, product({n, k}, name), "linearBackward w");
  requireElements(args.buffer(4), dtype, product({m, k}, name), "linearBackward dx");
  requireElements(args.buffer(5), dtype, product({n, k}, name), "linearBackward dw");
  launchLinearBackward(dtype, args.buffer(1).data, args.buffer(2).data, args.buffer(3).data, args.buffer(4).data,
                       args.buffer(5).data, m, n, k, stream());
  return undefinedOf(info);
}

int64_t valuesLength(const BsrPatternView& p) {
  return static_cast<int64_t>(p.nnzBlocks) * p.blockHeight * p.blockWidth;
}

Activation activationArg(const Args& args, size_t i);

// A dense layer's inputs at args first..first+2: x [m, k], w [n, k], bias (null or [n]); validated.
struct DenseOperands {
  const void* x;
  const void* w;
  const void* bias;
};

DenseOperands denseOperands(Args& args, size_t first, DType dtype, int64_t m, int64_t n, int64_t k, const std::string& name) {
  requireElements(args.buffer(first), dtype, product({m, k}, name), (name + " x").c_str());
  requireElements(args.buffer(first + 1), dtype, product({n, k}, name), (name + " w").c_str());
  const void* bias = nullptr;
  if (!args.isAbsent(first + 2)) {
    requireElements(args.buffer(first + 2), dtype, n, (name + " bias").c_str());
    bias = args.buffer(first + 2).data;
  }
  return {args.buffer(first).data, args.buffer(first + 1).data, bias};
}

// linear(dtype, x, w, bias | null, residual | null, y, m, n, k) -> whether it ran: y [m, n] = x [m, k] w [n, k]^T
// + bias [n] + residual [m, n] in one cuBLASLt call (launchLinear). False where cuBLASLt cannot run it, nothing
// launched: the caller composes matmul and the adds. y must not be x, w, bias or residual.
Napi::Value linear(const Napi::CallbackInfo& info) {
  Args args{info, "linear"};
  args.count(9);
  DType dtype = args.floatDtype(0);
  int64_t m = args.size(6), n = args.size(7), k = args.size(8);
  const DenseOperands o = denseOperands(args, 1, dtype, m, n, k, "linear");
  const void* residual = nullptr;
  if (!args.isAbsent(4)) {
    requireElements(args.buffer(4), dtype, product({m, n}, "linear"), "linear residual");
    residual = args.buffer(4).data;
  }
  requireElements(args.buffer(5), dtype, product({m, n}, "linear"), "linear y");
  void* y = args.buffer(5).data;
  BS_REQUIRE(y != o.x && y != o.w && y != o.bias && y != residual,
             "linear: y must be a buffer of its own (not x, w, bias or residual)");
  return Napi::Boolean::New(info.Env(), launchLinear(dtype, o.x, o.w, o.bias, residual, y, m, n, k, stream()));
}

// linearActivation(activation, dtype, x, w, bias | null, y, pre, m, n, k) -> whether it ran: pre = x w^T + bias and
// y = activation(pre), [m, n] each, from one cuBLASLt call (launchLinearActivation: GELU's tanh form, n a multiple of
// 8). False where it cannot, nothing launched: the caller composes linear and the activation pass.
Napi::Value linearActivation(const Napi::CallbackInfo& info) {
  Args args{info, "linearActivation"};
  args.count(10);
  const Activation activation = activationArg(args, 0);
  DType dtype = args.floatDtype(1);
  int64_t m = args.size(7), n = args.size(8), k = args.size(9);
  const DenseOperands o = denseOperands(args, 2, dtype, m, n, k, "linearActivation");
  requireElements(args.buffer(5), dtype, product({m, n}, "linearActivation"), "linearActivation y");
  requireElements(args.buffer(6), dtype, product({m, n}, "linearActivation"), "linearActivation pre");
  void* y = args.buffer(5).data;
  void* pre = args.buffer(6).data;
  BS_REQUIRE(y != pre && y != o.x && y != o.w && y != o.bias && pre != o.x && pre != o.w && pre != o.bias,
             "linearActivation: y and pre must be buffers of their own (not each other, x, w or bias)");
  return Napi::Boolean::New(info.Env(), launchLinearActivation(dtype, o.x, o.w, o.bias, y, pre, m, n, k, activation, stream()));
}

// Whether bsrLinear / bsrMatmul are autotuned: on, and the dense route not forced either way (setDenseProductMode).
bool tuneProduct() { return autotuneEnabled() && getDenseProductMode() == DenseProductMode::Auto; }

// The routes autotuning times for a block-sparse product: the tensor-core routes, and cuBLAS's dense product (over the
// scattered blocks, or dW's with its blocks sampled out) where it may run. None (the fixed rules then) where the
// tensor-core kernels have no route for the shape.
std::vector<TunedRoute> tunedRoutes(tc::Op product, DType dtype, const BsrPatternView& pattern, int64_t m) {
  std::vector<TunedRoute> list = tcRoutes(product, dtype, pattern, m);
  if (!list.empty() && cublasEnabled() && denseSampledFits(dtype, pattern)) list.push_back(TunedRoute{true, {}});
  return list;
}

// Y = X W^T + bias through the dense GEMM: W's blocks into a dense [rows, cols] scratch, then cuBLASLt with the bias in
// its epilogue (or cuBLAS, then the bias).
void denseBsrLinear(DType dtype, const BsrPatternView& pattern, const void* x, const void* values, const void* bias,
                    void* y, int64_t m) {
  Scratch dense(static_cast<size_t>(pattern.rows * pattern.cols) * dtypeSize(dtype));
  launchScatterBlocks(dtype, values, dense.as<void>(), pattern, stream());
  // The bias in cuBLASLt's epilogue where it runs; else the GEMM, then a bias pass.
  if (launchLinear(dtype, x, dense.as<void>(), bias, nullptr, y, m, pattern.rows, pattern.cols, stream())) return;
  if (bias == nullptr || m == 0) {
    launchMatmul(dtype, x, dense.as<void>(), y, 1, m, pattern.rows, pattern.cols, false, true, 0, 0, stream());
    return;
  }
  // The product into scratch, then y = product + bias (the elementwise kernels do not take y aliasing an input).
  Scratch product(static_cast<size_t>(m * pattern.rows) * dtypeSize(dtype));
  launchMatmul(dtype, x, dense.as<void>(), product.as<void>(), 1, m, pattern.rows, pattern.cols, false, true, 0, 0, stream());
  StridedShape shape{};
  shape.rank = 2;
  shape.shape[0] = m;
  shape.shape[1] = pattern.rows;
  Strides rowMajor{}, broadcast{};
  rowMajor.stride[0] = pattern.rows;
  rowMajor.stride[1] = 1;
  broadcast.stride[1] = 1;
  launchBinary(BinaryOp::Add, dtype, product.as<void>(), rowMajor, bias, broadcast, y, shape, m * pattern.rows, stream());
}

// z = X W^T + bias and a = activation(z) through the dense GEMM with the activation in cuBLASLt's epilogue (GELU's tanh
// form, rows a multiple of 8: launchLinearActivation); false where that epilogue does not apply, and the caller then
// runs the product and the pass.
bool denseLinearActivation(DType dtype, const BsrPatternView& pattern, const void* x, const void* values, const void* bias,
                           void* z, void* a, int64_t m, Activation activation) {
  if (activation != Activation::GeluTanh || pattern.rows % 8 != 0 || dtype == DType::Float32) return false;
  Scratch dense(static_cast<size_t>(pattern.rows * pattern.cols) * dtypeSize(dtype));
  launchScatterBlocks(dtype, values, dense.as<void>(), pattern, stream());
  return launchLinearActivation(dtype, x, dense.as<void>(), bias, a, z, m, pattern.rows, pattern.cols, activation, stream());
}

// y += residual, [m, rows] each: a product's residual where its kernel does not add it.
void addResidual(DType dtype, void* y, const void* residual, int64_t m, int64_t rows) {
  if (residual == nullptr || m * rows == 0) return;
  StridedShape shape{};
  shape.rank = 2;
  shape.shape[0] = m;
  shape.shape[1] = rows;
  Strides rowMajor{};
  rowMajor.stride[0] = rows;
  rowMajor.stride[1] = 1;
  launchBinary(BinaryOp::Add, dtype, y, rowMajor, residual, rowMajor, y, shape, m * rows, stream());
}

// Y = X W^T + bias (+ residual) on the tuned route when autotuning (where the shape has routes to time), else through
// the dense GEMM where it wins, else the tensor-core kernels (src/tc) first and the CUDA-core kernels
// (src/kernels/bsr.cu) when they decline the shape. The decoding kernel adds the residual in its epilogue
// (tcBsrLinearResidual); every other route adds it after, in place. Arguments already validated.
void runBsrLinear(DType dtype, const BsrPatternView& pattern, const void* x, const void* values, const void* bias,
                  void* y, int64_t m, const void* residual = nullptr) {
  auto tensorCores = [&](const TcOptions& options) {
    if (residual != nullptr && tcBsrLinearResidual(dtype, x, values, bias, residual, y, m, pattern, stream(), options))
      return true;
    if (!tcBsrLinear(dtype, x, values, bias, y, m, pattern, stream(), options)) return false;
    addResidual(dtype, y, residual, m, pattern.rows);
    return true;
  };
  if (tuneProduct() &&
      runTuned(tc::Op::Linear, dtype, pattern, m, bias != nullptr, TuneEpilogue::None,
               [&] { return tunedRoutes(tc::Op::Linear, dtype, pattern, m); },
               [&](const TunedRoute& route) {
                 if (!route.dense) return tensorCores(route.tc);
                 denseBsrLinear(dtype, pattern, x, values, bias, y, m);
                 addResidual(dtype, y, residual, m, pattern.rows);
                 return true;
               },
               stream()))
    return;
  if (denseProductWins(tc::Op::Linear, dtype, pattern, m, cublasEnabled())) {
    denseBsrLinear(dtype, pattern, x, values, bias, y, m);
  } else if (tensorCores(TcOptions{})) {
    return;
  } else {
    launchBsrLinear(dtype, x, values, bias, y, m, pattern, stream());
  }
  addResidual(dtype, y, residual, m, pattern.rows);
}

// The bias argument at `index` of a product over `pattern`: null, or validated as [rows] of the dtype.
const void* biasArg(Args& args, size_t index, DType dtype, const BsrPatternView& pattern, const char* what) {
  if (args.isAbsent(index)) return nullptr;
  requireElements(args.buffer(index), dtype, pattern.rows, what);
  return args.buffer(index).data;
}

// A Linear product's operands at args first..first+3: x [m, cols], the pattern's values, bias (null or [rows]) and
// the output [m, rows], named `output` in errors; validated.
struct LinearOperands {
  const void* x;
  const void* values;
  const void* bias;
  void* y;
};
LinearOperands linearOperands(Args& args, size_t first, DType dtype, const BsrPatternView& pattern, int64_t m,
                              const std::string& name, const char* output) {
  requireElements(args.buffer(first), dtype, product({m, pattern.cols}, name), (name + " x").c_str());
  requireElements(args.buffer(first + 1), dtype, valuesLength(pattern), (name + " values").c_str());
  const void* bias = biasArg(args, first + 2, dtype, pattern, (name + " bias").c_str());
  requireElements(args.buffer(first + 3), dtype, product({m, pattern.rows}, name), (name + " " + output).c_str());
  return {args.buffer(first).data, args.buffer(first + 1).data, bias, args.buffer(first + 3).data};
}

// bsrLinear(dtype, pattern, x, values, bias|null, y, m, residual|null): y = x W^T + bias + residual
Napi::Value bsrLinear(const Napi::CallbackInfo& info) {
  Args args{info, "bsrLinear"};
  args.count(8);
  DType dtype = args.floatDtype(0);
  const BsrPatternView& pattern = patternArg(args, 1);
  int64_t m = args.size(6);
  const LinearOperands o = linearOperands(args, 2, dtype, pattern, m, "bsrLinear", "y");
  const void* residual = nullptr;
  if (!args.isAbsent(7)) {
    requireElements(args.buffer(7), dtype, product({m, pattern.rows}, "bsrLinear"), "bsrLinear residual");
    residual = args.buffer(7).data;
    // Every route but the decoding kernel writes y before it adds the residual. With no rows both are empty (they may
    // share the empty buffer's address) and nothing is written.
    BS_REQUIRE(m == 0 || residual != o.y, "bsrLinear: y must be a buffer of its own (not the residual)");
  }
  runBsrLinear(dtype, pattern, o.x, o.values, o.bias, o.y, m, residual);
  return undefinedOf(info);
}

// bsrLinearActivation(activation, dtype, pattern, x, values, bias | null, z, a, m): z = x W^T + bias (bsrLinear's
// route), then a = activation(z) by the activation pass, in one call. Where the default options run the product on the
// X-resident tile (32x32), that tile writes both from its epilogue (tcBsrLinearActivation), saving the pass's read of
// z; so does the decoding path with few tokens (the staged variant too), saving the pass's launch, which is most of
// its cost there; and so do the wgmma tiles at 64 and 128 wide where z outgrows half of L2 (tcFusesActivation), so
// that the pass would read it from device memory. Where z stays in L2 the pass stays at 64 wide except on the
// three-consumer tiles (short lines, few tiles), which measured faster fused; at 128 wide every tile fuses below 4096
// tokens, which measured at par or faster in the training step (tc_kernels.h, fusedForward128Rule). Where the fixed
// rules send the product to the dense GEMM and the activation is GELU's tanh form, cuBLASLt writes both from its
// epilogue, as a dense Linear + GELU does (launchLinearActivation over W's blocks scattered into a dense scratch): no
// pass over z.
Napi::Value bsrLinearActivation(const Napi::CallbackInfo& info) {
  Args args{info, "bsrLinearActivation"};
  args.count(9);
  const Activation activation = activationArg(args, 0);
  DType dtype = args.floatDtype(1);
  const BsrPatternView& pattern = patternArg(args, 2);
  int64_t m = args.size(8);
  const LinearOperands o = linearOperands(args, 3, dtype, pattern, m, "bsrLinearActivation", "z");
  const int64_t outputs = m * pattern.rows;
  requireElements(args.buffer(7), dtype, outputs, "bsrLinearActivation a");
  BS_REQUIRE(o.y != args.buffer(7).data || outputs == 0, "bsrLinearActivation: z and a must be different buffers");
  void* a = args.buffer(7).data;
  auto pass = [&] { launchBiasActivation(activation, dtype, o.y, nullptr, a, m, pattern.rows, stream()); };
  // Autotuning times each route with the activation, under a key of its own (TuneEpilogue::Activation): the tile's
  // epilogue where the route has one (the X-resident tile; cuBLASLt's for the dense route), else the route, then the pass.
  if (m > 0 && tuneProduct() &&
      runTuned(tc::Op::Linear, dtype, pattern, m, o.bias != nullptr, TuneEpilogue::Activation,
               [&] { return tunedRoutes(tc::Op::Linear, dtype, pattern, m); },
               [&](const TunedRoute& route) {
                 if (route.dense) {
                   if (!denseLinearActivation(dtype, pattern, o.x, o.values, o.bias, o.y, a, m, activation)) {
                     denseBsrLinear(dtype, pattern, o.x, o.values, o.bias, o.y, m);
                     pass();
                   }
                   return true;
                 }
                 if (tcBsrLinearActivation(dtype, o.x, o.values, o.bias, o.y, a, activation, m, pattern, stream(), route.tc))
                   return true;
                 if (!tcBsrLinear(dtype, o.x, o.values, o.bias, o.y, m, pattern, stream(), route.tc)) return false;
                 pass();
                 return true;
               },
               stream()))
    return undefinedOf(info);
  // The fixed rules (also while autotuning, for a key not yet tuned inside a graph capture).
  const bool denseRoute = m > 0 && denseProductWins(tc::Op::Linear, dtype, pattern, m, cublasEnabled());
  if (m > 0 && !denseRoute && (m <= decodeMaxTokens(dtype) || tcFusesActivation(dtype, pattern, m)) &&
      tcBsrLinearActivation(dtype, o.x, o.values, o.bias, o.y, a, activation, m, pattern, stream()))
    return undefinedOf(info);
  if (denseRoute && denseLinearActivation(dtype, pattern, o.x, o.values, o.bias, o.y, a, m, activation))
    return undefinedOf(info);
  runBsrLinear(dtype, pattern, o.x, o.values, o.bias, o.y, m);
  pass();
  return undefinedOf(info);
}

// dX = dY W through the dense GEMM, with W's blocks in a dense [rows, cols] scratch.
void denseBsrMatmul(DType dtype, const BsrPatternView& pattern, const void* dy, const void* values, void* dx, int64_t m) {
  Scratch dense(static_cast<size_t>(pattern.rows * pattern.cols) * dtypeSize(dtype));
  launchScatterBlocks(dtype, values, dense.as<void>(), pattern, stream());
  launchMatmul(dtype, dy, dense.as<void>(), dx, 1, m, pattern.cols, pattern.rows, false, false, 0, 0, stream());
}

// dX = dY W on the tuned route when autotuning (where the shape has routes to time), else through the dense GEMM where
// it wins, else the tensor-core kernels (src/tc) first and the simple kernel when they decline the shape. Arguments already validated.
void runBsrMatmul(DType dtype, const BsrPatternView& pattern, const void* dy, const void* values, void* dx, int64_t m) {
  auto denseRoute = [&] { denseBsrMatmul(dtype, pattern, dy, values, dx, m); };
  if (tuneProduct() &&
      runTuned(tc::Op::Matmul, dtype, pattern, m, false, TuneEpilogue::None,
               [&] { return tunedRoutes(tc::Op::Matmul, dtype, pattern, m); },
               [&](const TunedRoute& route) {
                 if (!route.dense) return tcBsrMatmul(dtype, dy, values, dx, m, pattern, stream(), route.tc);
                 denseRoute();
                 return true;
               },
               stream()))
    return;
  if (denseProductWins(tc::Op::Matmul, dtype, pattern, m, cublasEnabled())) {
    denseRoute();
    return;
  }
  if (!tcBsrMatmul(dtype, dy, values, dx, m, pattern, stream())) launchBsrMatmul(dtype, dy, values, dx, m, pattern, stream());
}

// bsrMatmul(dtype, pattern, dy, values, dx, m)
Napi::Value bsrMatmul(const Napi::CallbackInfo& info) {
  Args args{info, "bsrMatmul"};
  args.count(6);
  DType dtype = args.floatDtype(0);
  const BsrPatternView& pattern = patternArg(args, 1);
  int64_t m = args.size(5);
  requireElements(args.buffer(2), dtype, product({m, pattern.rows}, "bsrMatmul"), "bsrMatmul dy");
  requireElements(args.buffer(3), dtype, valuesLength(pattern), "bsrMatmul values");
  requireElements(args.buffer(4), dtype, product({m, pattern.cols}, "bsrMatmul"), "bsrMatmul dx");
  runBsrMatmul(dtype, pattern, args.buffer(2).data, args.buffer(3).data, args.buffer(4).data, m);
  return undefinedOf(info);
}

// bsrMatmulActivationBackward(activation, dtype, pattern, dy, values, pre, dpre, dbias, m): the input gradient of a
// layer whose input was act(pre), taken on through the activation: dpre = (dy W) act'(pre) and dbias = the column
// sums of dpre (float32, in the dtype), as bsrMatmul then biasActivationBackward(dx, pre) compute them. The wgmma
// tiles do it in dX's epilogue (tcBsrMatmulActivationBackward: dX is never stored); elsewhere (mma.sync, float32,
// the dense-GEMM route) bsrMatmul's route into a scratch, then the backward pass.
Napi::Value bsrMatmulActivationBackward(const Napi::CallbackInfo& info) {
  Args args{info, "bsrMatmulActivationBackward"};
  args.count(9);
  const Activation activation = activationArg(args, 0);
  const DType dtype = args.floatDtype(1);
  const BsrPatternView& pattern = patternArg(args, 2);
  const int64_t m = args.size(8);
  const char* name = "bsrMatmulActivationBackward";
  const int64_t inputs = product({m, pattern.cols}, name);
  requireElements(args.buffer(3), dtype, product({m, pattern.rows}, name), "bsrMatmulActivationBackward dy");
  requireElements(args.buffer(4), dtype, valuesLength(pattern), "bsrMatmulActivationBackward values");
  requireElements(args.buffer(5), dtype, inputs, "bsrMatmulActivationBackward pre");
  requireElements(args.buffer(6), dtype, inputs, "bsrMatmulActivationBackward dpre");
  requireElements(args.buffer(7), dtype, pattern.cols, "bsrMatmulActivationBackward dbias");
  const void* dy = args.buffer(3).data;
  const void* values = args.buffer(4).data;
  const void* pre = args.buffer(5).data;
  void* dpre = args.buffer(6).data;
  void* dbias = args.buffer(7).data;
  BS_REQUIRE(inputs == 0 || (dpre != pre && dpre != dy), "bsrMatmulActivationBackward: dpre must not share a buffer with pre or dy");
  const size_t dxBytes = static_cast<size_t>(std::max<int64_t>(inputs, 1)) * dtypeSize(dtype);
  auto pass = [&](const void* dx) {
    launchBiasActivationBackward(activation, dtype, dx, pre, nullptr, dpre, dbias, m, pattern.cols, stream());
  };
  // Autotuning times each route with the activation's backward, under a key of its own
  // (TuneEpilogue::ActivationBackward): in dX's epilogue where the route's tile has it, else dX into a scratch, then
  // the pass.
  if (m > 0 && tuneProduct() &&
      runTuned(tc::Op::Matmul, dtype, pattern, m, false, TuneEpilogue::ActivationBackward,
               [&] { return tunedRoutes(tc::Op::Matmul, dtype, pattern, m); },
               [&](const TunedRoute& route) {
                 if (!route.dense && tcBsrMatmulActivationBackward(dtype, dy, values, pre, dpre, dbias, activation, m,
                                                                   pattern, stream(), route.tc))
                   return true;
                 Scratch dx(dxBytes);
                 if (route.dense) {
                   denseBsrMatmul(dtype, pattern, dy, values, dx.as<void>(), m);
                 } else if (!tcBsrMatmul(dtype, dy, values, dx.as<void>(), m, pattern, stream(), route.tc)) {
                   return false;
                 }
                 pass(dx.as<void>());
                 return true;
               },
               stream()))
    return undefinedOf(info);
  // The fixed rules (also while autotuning, for a key not yet tuned inside a graph capture).
  if (m > 0 && !denseProductWins(tc::Op::Matmul, dtype, pattern, m, cublasEnabled()) &&
      tcBsrMatmulActivationBackward(dtype, dy, values, pre, dpre, dbias, activation, m, pattern, stream()))
    return undefinedOf(info);
  Scratch dx(dxBytes);
  if (m > 0) runBsrMatmul(dtype, pattern, dy, values, dx.as<void>(), m);
  pass(dx.as<void>());
  return undefinedOf(info);
}

// sampledMatmul(dtype, pattern, dy, x, dw, m)
Napi::Value sampledMatmul(const Napi::CallbackInfo& info) {
  Args args{info, "sampledMatmul"};
  args.count(6);
  DType dtype = args.floatDtype(0);
  const BsrPatternView& pattern = patternArg(args, 1);
  int64_t m = args.size(5);
  requireElements(args.buffer(2), dtype, product({m, pattern.rows}, "sampledMatmul"), "sampledMatmul dy");
  requireElements(args.buffer(3), dtype, product({m, pattern.cols}, "sampledMatmul"), "sampledMatmul x");
  requireElements(args.buffer(4), dtype, valuesLength(pattern), "sampledMatmul dw");
  const void* dy = args.buffer(2).data;
  const void* x = args.buffer(3).data;
  void* dw = args.buffer(4).data;
  // Dense dY^T X [rows, cols] through cuBLAS, then the pattern's blocks copied out.
  auto denseRoute = [&]() {
    Scratch dense(static_cast<size_t>(pattern.rows * pattern.cols) * dtypeSize(dtype));
    launchMatmul(dtype, dy, x, dense.as<void>(), 1, pattern.rows, pattern.cols, m, true, false, 0, 0, stream());
    launchSampleBlocks(dtype, dense.as<void>(), dw, pattern, stream());
  };
  // Autotuned when on and the route is not forced: the tensor-core routes, and the dense one where it may run.
  if (autotuneEnabled() && getDenseSampledMode() == DenseSampledMode::Auto) {
    if (runTuned(tc::Op::Sampled, dtype, pattern, m, false, TuneEpilogue::None,
                 [&] { return tunedRoutes(tc::Op::Sampled, dtype, pattern, m); },
                 [&](const TunedRoute& route) {
                   if (!route.dense) return tcSampledMatmul(dtype, dy, x, dw, m, pattern, stream(), route.tc);
                   denseRoute();
                   return true;
                 },
                 stream()))
      return undefinedOf(info);
  }
  if (denseSampledWins(dtype, pattern, m, cublasEnabled())) {
    denseRoute();
    return undefinedOf(info);
  }
  // Tensor-core kernels (src/tc) first; the simple kernel when they decline the shape.
  if (!tcSampledMatmul(dtype, dy, x, dw, m, pattern, stream())) launchSampledMatmul(dtype, dy, x, dw, m, pattern, stream());
  return undefinedOf(info);
}

// blockNorms(dtype, values, norms, nnzBlocks, blockSize)
Napi::Value blockNorms(const Napi::CallbackInfo& info) {
  Args args{info, "blockNorms"};
  args.count(5);
  DType dtype = args.floatDtype(0);
  int64_t nnz = args.size(3), blockSize = args.size(4);
  requireElements(args.buffer(1), dtype, product({nnz, blockSize}, "blockNorms"), "blockNorms values");
  requireElements(args.buffer(2), DType::Float32, nnz, "blockNorms norms");
  launchBlockNorms(dtype, args.buffer(1).data, static_cast<float*>(args.buffer(2).data), nnz, blockSize, stream());
  return undefinedOf(info);
}

Activation activationArg(const Args& args, size_t i) {
  const int64_t code = args.size(i);
  BS_REQUIRE(code < static_cast<int64_t>(Activation::Count), args.where(i) + ": unknown activation code " + std::to_string(code));
  return static_cast<Activation>(code);
}

// biasActivation(activation, dtype, x, bias | null, y, rows, width)
Napi::Value biasActivation(const Napi::CallbackInfo& info) {
  Args args{info, "biasActivation"};
  args.count(7);
  const Activation activation = activationArg(args, 0);
  const DType dtype = args.floatDtype(1);
  const int64_t rows = args.size(5), width = args.size(6);
  const int64_t n = product({rows, width}, "biasActivation");
  requireElements(args.buffer(2), dtype, n, "biasActivation x");
  const void* bias = nullptr;
  if (!args.isAbsent(3)) {
    requireElements(args.buffer(3), dtype, width, "biasActivation bias");
    bias = args.buffer(3).data;
  }
  requireElements(args.buffer(4), dtype, n, "biasActivation y");
  launchBiasActivation(activation, dtype, args.buffer(2).data, bias, args.buffer(4).data, rows, width, stream());
  return undefinedOf(info);
}

// biasActivationBackward(activation, dtype, dy, x, bias | null, dx, dbias, rows, width)
Napi::Value biasActivationBackward(const Napi::CallbackInfo& info) {
  Args args{info, "biasActivationBackward"};
  args.count(9);
  const Activation activation = activationArg(args, 0);
  const DType dtype = args.floatDtype(1);
  const int64_t rows = args.size(7), width = args.size(8);
  const int64_t n = product({rows, width}, "biasActivationBackward");
  requireElements(args.buffer(2), dtype, n, "biasActivationBackward dy");
  requireElements(args.buffer(3), dtype, n, "biasActivationBackward x");
  const void* bias = nullptr;
  if (!args.isAbsent(4)) {
    requireElements(args.buffer(4), dtype, width, "biasActivationBackward bias");
    bias = args.buffer(4).data;
  }
  requireElements(args.buffer(5), dtype, n, "biasActivationBackward dx");
  requireElements(args.buffer(6), dtype, width, "biasActivationBackward dbias");
  launchBiasActivationBackward(activation, dtype, args.buffer(2).data, args.buffer(3).data, bias, args.buffer(5).data,
                               args.buffer(6).data, rows, width, stream());
  return undefinedOf(info);
}

// The hyperparameters object {lr, beta1, beta2, epsilon, weightDecay, decoupledWeightDecay} at argument i,
// checked; the bias corrections are left to the caller (they depend on each tensor's step).
AdamParams adamParams(const Args& args, size_t i) {
  BS_REQUIRE(args.info[i].IsObject(), args.where(i) + " must be an object of hyperparameters");
  Napi::Object h = args.info[i].As<Napi::Object>();
  auto field = [&](const char* name) {
    Napi::Value v = h.Get(name);
    BS_REQUIRE(v.IsNumber(), std::string(args.fn) + ": " + name + " must be a number");
    double d = v.As<Napi::Number>().DoubleValue();
    BS_REQUIRE(std::isfinite(d), std::string(args.fn) + ": " + name + " must be finite");
    return d;
  };
  AdamParams params{};
  params.lr = field("lr");
  params.beta1 = field("beta1");
  params.beta2 = field("beta2");
  params.eps = field("epsilon");
  params.weightDecay = field("weightDecay");
  BS_REQUIRE(params.beta1 >= 0 && params.beta1 < 1 && params.beta2 >= 0 && params.beta2 < 1,
             std::string(args.fn) + ": beta1 and beta2 must be in [0, 1)");
  Napi::Value decoupled = h.Get("decoupledWeightDecay");
  BS_REQUIRE(decoupled.IsBoolean(), std::string(args.fn) + ": decoupledWeightDecay must be a boolean");
  params.decoupledWeightDecay = decoupled.As<Napi::Boolean>().Value();
  return params;
}

// adamUpdate(dtype, param, grad, mDtype, m, vDtype, v, paramOut, mOut, vOut, n, {lr, beta1, beta2, epsilon,
// weightDecay, decoupledWeightDecay, step})
Napi::Value adamUpdate(const Napi::CallbackInfo& info) {
  Args args{info, "adamUpdate"};
  args.count(12);
  DType dtype = args.floatDtype(0);
  DType mDtype = args.floatDtype(3), vDtype = args.floatDtype(5);
  int64_t n = args.size(10);
  requireElements(args.buffer(1), dtype, n, "adamUpdate param");
  requireElements(args.buffer(2), dtype, n, "adamUpdate grad");
  requireElements(args.buffer(4), mDtype, n, "adamUpdate m");
  requireElements(args.buffer(6), vDtype, n, "adamUpdate v");
  requireElements(args.buffer(7), dtype, n, "adamUpdate paramOut");
  requireElements(args.buffer(8), mDtype, n, "adamUpdate mOut");
  requireElements(args.buffer(9), vDtype, n, "adamUpdate vOut");
  AdamParams params = adamParams(args, 11);
  Napi::Value stepValue = info[11].As<Napi::Object>().Get("step");
  BS_REQUIRE(stepValue.IsNumber(), "adamUpdate: step must be a number");
  double step = stepValue.As<Napi::Number>().DoubleValue();
  BS_REQUIRE(step >= 1, "adamUpdate: step counts from 1");
  params.biasCorrection1 = 1.0 - std::pow(params.beta1, step);
  params.biasCorrection2 = 1.0 - std::pow(params.beta2, step);
  launchAdam(dtype, args.buffer(1).data, args.buffer(2).data, args.buffer(4).data, args.buffer(6).data,
             args.buffer(7).data, args.buffer(8).data, args.buffer(9).data, mDtype, vDtype, n, params, stream());
  return undefinedOf(info);
}

// multiTensorAdamUpdate(table, copyDtype | null, {lr, beta1, beta2, epsilon, weightDecay, decoupledWeightDecay},
// lrValue | null): table holds kAdamEntry numbers per tensor: n, step, param/grad/m/v dtypes, then the buffers
// param, grad, m, v, paramOut, mOut, vOut and copyOut (0 when copyDtype is null), stepIn and stepOut (float32
// step counts on the device, 0 when step is given; step is then 0). lrValue: a float32 buffer whose value times
// lr is the learning rate. Every buffer is checked before any launch.
constexpr size_t kAdamEntry = 16;
Napi::Value multiTensorAdamUpdate(const Napi::CallbackInfo& info) {
  Args args{info, "multiTensorAdamUpdate"};
  args.count(4);
  std::vector<int64_t> table = args.integers(0);
  BS_REQUIRE(table.size() % kAdamEntry == 0, "multiTensorAdamUpdate: the table's length " +
                                                  std::to_string(table.size()) + " is not a multiple of " +
                                                  std::to_string(kAdamEntry));
  const bool copies = !args.isAbsent(1);
  const DType copyDtype = copies ? args.floatDtype(1) : DType::Float32;
  AdamParams params = adamParams(args, 2);
  if (!args.isAbsent(3)) {
    requireElements(args.buffer(3), DType::Float32, 1, "multiTensorAdamUpdate lrValue");
    params.lrValue = static_cast<const float*>(args.buffer(3).data);
  }
  const size_t count = table.size() / kAdamEntry;
  std::vector<AdamTensor> tensors(count);
  for (size_t k = 0; k < count; ++k) {
    const int64_t* e = table.data() + k * kAdamEntry;
    // Messages are built only on failure: this runs for every parameter of every step.
    auto at = [k]() { return "multiTensorAdamUpdate: tensor " + std::to_string(k); };
    auto floatDtype = [&](int64_t code, const char* what) {
      BS_REQUIRE(code <= static_cast<int64_t>(DType::Int32) && isFloat(static_cast<DType>(code)),
                 at() + " " + what + ": expected a float dtype code, got " + std::to_string(code));
      return static_cast<DType>(code);
    };
    auto buffer = [&](int64_t id, DType dtype, int64_t n, const char* what) -> void* {
      const BufferId bufferId = static_cast<BufferId>(id);
      if (!isLive(bufferId)) lookup(bufferId, (at() + " " + what).c_str());  // throws, naming the argument
      const Buffer& b = lookup(bufferId, "multiTensorAdamUpdate");
      if (b.byteLength < static_cast<size_t>(n) * dtypeSize(dtype)) requireElements(b, dtype, n, (at() + " " + what).c_str());
      return b.data;
    };
    AdamTensor& t = tensors[k];
    t.n = e[0];
    const bool counted = e[14] != 0;
    BS_REQUIRE(counted == (e[15] != 0), at() + ": stepIn and stepOut must be given together");
    if (counted) {
      BS_REQUIRE(e[1] == 0, at() + ": step must be 0 when the step count is on the device");
      t.stepIn = static_cast<const float*>(buffer(e[14], DType::Float32, 1, "stepIn"));
      t.stepOut = static_cast<float*>(buffer(e[15], DType::Float32, 1, "stepOut"));
    } else {
      BS_REQUIRE(e[1] >= 1, at() + ": step counts from 1");
      t.biasCorrection1 = 1.0 - std::pow(params.beta1, static_cast<double>(e[1]));
      t.biasCorrection2 = 1.0 - std::pow(params.beta2, static_cast<double>(e[1]));
    }
    t.paramDtype = floatDtype(e[2], "param");
    t.gradDtype = floatDtype(e[3], "grad");
    t.mDtype = floatDtype(e[4], "m");
    t.vDtype = floatDtype(e[5], "v");
    t.param = buffer(e[6], t.paramDtype, t.n, "param");
    t.grad = buffer(e[7], t.gradDtype, t.n, "grad");
    t.m = buffer(e[8], t.mDtype, t.n, "m");
    t.v = buffer(e[9], t.vDtype, t.n, "v");
    t.paramOut = buffer(e[10], t.paramDtype, t.n, "paramOut");
    t.mOut = buffer(e[11], t.mDtype, t.n, "mOut");
    t.vOut = buffer(e[12], t.vDtype, t.n, "vOut");
    BS_REQUIRE(copies == (e[13] != 0), at() + ": copyOut must be given exactly when copyDtype is");
    t.copy = copies ? buffer(e[13], copyDtype, t.n, "copyOut") : nullptr;
  }
  launchMultiTensorAdam(tensors.data(), static_cast<int>(count), copyDtype, params, stream());
  return undefinedOf(info);
}

// ------------------------------------------------------------------ NCCL communicators

// Collectives of data-parallel training, on the backend's stream. NCCL is opened at run time (nccl.cpp).
struct Communicator {
  nccl::Comm comm;
  int64_t worldSize;
  int64_t rank;
};
std::unordered_map<uint64_t, Communicator> communicators;
uint64_t nextCommunicatorId = 1;

const Communicator& communicatorArg(const Args& args, size_t i) {
  const uint64_t id = static_cast<uint64_t>(args.size(i));
  auto found = communicators.find(id);
  BS_REQUIRE(found != communicators.end(), args.where(i) + ": no live NCCL communicator " + std::to_string(id));
  return found->second;
}

// ncclInfo(): whether NCCL can be opened here, and which library or why not.
Napi::Value ncclInfo(const Napi::CallbackInfo& info) {
  Args{info, "ncclInfo"}.count(0);
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("available", nccl::load());
  out.Set("library", nccl::describe());
  return out;
}

// ncclGetUniqueId(): the 128 bytes rank 0 hands to every rank (through the rendezvous store).
Napi::Value ncclGetUniqueId(const Napi::CallbackInfo& info) {
  Args{info, "ncclGetUniqueId"}.count(0);
  nccl::UniqueId id = nccl::getUniqueId();
  Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), nccl::kUniqueIdBytes);
  std::memcpy(out.Data(), id.internal, nccl::kUniqueIdBytes);
  return out;
}

// ncclCommInitRank(worldSize, uniqueId, rank): blocks until every rank has called it; returns the communicator id.
Napi::Value ncclCommInitRank(const Napi::CallbackInfo& info) {
  Args args{info, "ncclCommInitRank"};
  args.count(3);
  const int64_t worldSize = args.size(0), rank = args.size(2);
  BS_REQUIRE(worldSize >= 1 && worldSize <= 65536, "ncclCommInitRank: worldSize must be in [1, 65536], got " + std::to_string(worldSize));
  BS_REQUIRE(rank < worldSize, "ncclCommInitRank: rank " + std::to_string(rank) + " is out of range for worldSize " + std::to_string(worldSize));
  Napi::TypedArray bytes = args.typedArray(1);
  BS_REQUIRE(bytes.TypedArrayType() == napi_uint8_array && bytes.ByteLength() == nccl::kUniqueIdBytes,
             "ncclCommInitRank: uniqueId must be the Uint8Array of " + std::to_string(nccl::kUniqueIdBytes) + " bytes ncclGetUniqueId gave");
  BS_REQUIRE(deviceReady(), "ncclCommInitRank: the CUDA device is not initialised (start the cuda backend first)");
  nccl::UniqueId id{};
  std::memcpy(id.internal, bytesOf(bytes), nccl::kUniqueIdBytes);
  nccl::Comm comm = nccl::commInitRank(static_cast<int>(worldSize), id, static_cast<int>(rank));
  const uint64_t handle = nextCommunicatorId++;
  communicators.emplace(handle, Communicator{comm, worldSize, rank});
  return Napi::Number::New(info.Env(), static_cast<double>(handle));
}

// ncclCommDestroy(comm): waits for the stream, then frees the communicator.
Napi::Value ncclCommDestroy(const Napi::CallbackInfo& info) {
  Args args{info, "ncclCommDestroy"};
  args.count(1);
  const Communicator& communicator = communicatorArg(args, 0);
  const uint64_t handle = static_cast<uint64_t>(args.size(0));
  BS_CUDA_CHECK(cudaStreamSynchronize(stream()));
  nccl::Comm comm = communicator.comm;
  communicators.erase(handle);
  nccl::commDestroy(comm);
  return undefinedOf(info);
}

// ncclAllReduce(comm, dtype, send, receive, count, op): op 0 sums, 4 averages (NCCL's codes).
Napi::Value ncclAllReduce(const Napi::CallbackInfo& info) {
  Args args{info, "ncclAllReduce"};
  args.count(6);
  const Communicator& communicator = communicatorArg(args, 0);
  DType dtype = args.floatDtype(1);
  const int64_t count = args.size(4), op = args.size(5);
  BS_REQUIRE(op == static_cast<int64_t>(nccl::ReduceOp::Sum) || op == static_cast<int64_t>(nccl::ReduceOp::Avg),
             "ncclAllReduce: op must be 0 (sum) or 4 (avg), got " + std::to_string(op));
  requireElements(args.buffer(2), dtype, count, "ncclAllReduce send");
  requireElements(args.buffer(3), dtype, count, "ncclAllReduce receive");
  nccl::allReduce(args.buffer(2).data, args.buffer(3).data, static_cast<size_t>(count), dtype, static_cast<nccl::ReduceOp>(op),
                  communicator.comm, stream());
  return undefinedOf(info);
}

// ncclBroadcast(comm, dtype, send, receive, count, root): send is read on the root only.
Napi::Value ncclBroadcast(const Napi::CallbackInfo& info) {
  Args args{info, "ncclBroadcast"};
  args.count(6);
  const Communicator& communicator = communicatorArg(args, 0);
  DType dtype = args.dtype(1);
  const int64_t count = args.size(4), root = args.size(5);
  BS_REQUIRE(root < communicator.worldSize, "ncclBroadcast: root " + std::to_string(root) + " is out of range for worldSize " +
                                                std::to_string(communicator.worldSize));
  requireElements(args.buffer(2), dtype, count, "ncclBroadcast send");
  requireElements(args.buffer(3), dtype, count, "ncclBroadcast receive");
  nccl::broadcast(args.buffer(2).data, args.buffer(3).data, static_cast<size_t>(count), dtype, static_cast<int>(root),
                  communicator.comm, stream());
  return undefinedOf(info);
}

// ncclAllGather(comm, dtype, send, receive, sendCount): receive holds worldSize x sendCount, in rank order.
Napi::Value ncclAllGather(const Napi::CallbackInfo& info) {
  Args args{info, "ncclAllGather"};
  args.count(5);
  const Communicator& communicator = communicatorArg(args, 0);
  DType dtype = args.dtype(1);
  const int64_t sendCount = args.size(4);
  requireElements(args.buffer(2), dtype, sendCount, "ncclAllGather send");
  requireElements(args.buffer(3), dtype, product({sendCount, communicator.worldSize}, "ncclAllGather"), "ncclAllGather receive");
  nccl::allGather(args.buffer(2).data, args.buffer(3).data, static_cast<size_t>(sendCount), dtype, communicator.comm, stream());
  return undefinedOf(info);
}

// ncclGroupStart() / ncclGroupEnd(): collectives between them are launched together.
Napi::Value ncclGroupStart(const Napi::CallbackInfo& info) {
  Args{info, "ncclGroupStart"}.count(0);
  nccl::groupStart();
  return undefinedOf(info);
}

Napi::Value ncclGroupEnd(const Napi::CallbackInfo& info) {
  Args{info, "ncclGroupEnd"}.count(0);
  nccl::groupEnd();
  return undefinedOf(info);
}

// ------------------------------------------------------------------ CUDA graphs
// One capture at a time, on the backend's stream: every launch between beginCapture and endCapture is recorded
// into a graph instead of running, and the allocations made meanwhile come from the graph's own pool (memory.h),
// which keeps them out of every other tensor's reach for as long as the graph lives. Relaxed mode: an allocation
// that misses the caches may still cudaMalloc during the capture (it is not part of the graph).

struct GraphRecord {
  cudaGraphExec_t exec;
  uint32_t pool;
};
std::unordered_map<uint64_t, GraphRecord> graphs;
uint64_t nextGraphId = 1;
uint32_t capturePool = 0;

// Ends a capture that failed or was abandoned: drops what was recorded and the pool's memory.
void endFailedCapture() {
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(stream(), &graph);
  if (graph != nullptr) cudaGraphDestroy(graph);
  cudaGetLastError();
  setCurrentPool(0);
  destroyPool(capturePool);
  capturePool = 0;
}

// beginCapture(): starts recording the stream's work into a graph.
Napi::Value beginCapture(const Napi::CallbackInfo& info) {
  Args{info, "beginCapture"}.count(0);
  BS_REQUIRE(capturePool == 0, "beginCapture: a capture is already in progress");
  uint32_t pool = createPool();
  cudaError_t status = cudaStreamBeginCapture(stream(), cudaStreamCaptureModeRelaxed);
  if (status != cudaSuccess) {
    cudaGetLastError();
    destroyPool(pool);
    throwCuda(status, "cudaStreamBeginCapture");
  }
  capturePool = pool;
  setCurrentPool(pool);
  return undefinedOf(info);
}

// endCapture() -> graph id: stops recording and instantiates the graph. A capture that something invalidated
// (a host read or a synchronisation while recording) throws and leaves nothing behind.
Napi::Value endCapture(const Napi::CallbackInfo& info) {
  Args{info, "endCapture"}.count(0);
  BS_REQUIRE(capturePool != 0, "endCapture: no capture in progress");
  cudaGraph_t graph = nullptr;
  cudaError_t status = cudaStreamEndCapture(stream(), &graph);
  setCurrentPool(0);
  if (status == cudaSuccess && graph != nullptr) {
    cudaGraphExec_t exec = nullptr;
    status = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (status == cudaSuccess) {
      uint64_t id = nextGraphId++;
      graphs.emplace(id, GraphRecord{exec, capturePool});
      capturePool = 0;
      return Napi::Number::New(info.Env(), static_cast<double>(id));
    }
  } else if (graph != nullptr) {
    cudaGraphDestroy(graph);
  }
  cudaGetLastError();
  destroyPool(capturePool);
  capturePool = 0;
  throwCuda(status == cudaSuccess ? cudaErrorStreamCaptureInvalidated : status, "endCapture");
}

// abortCapture(): ends a capture in progress without a graph (after an error in the captured work); no-op if none.
Napi::Value abortCapture(const Napi::CallbackInfo& info) {
  Args{info, "abortCapture"}.count(0);
  if (capturePool != 0) endFailedCapture();
  return undefinedOf(info);
}

const GraphRecord& graphRecord(const Args& args, int index, const char* what) {
  auto found = graphs.find(static_cast<uint64_t>(args.size(index)));
  if (found == graphs.end()) throwInvalid(std::string(what) + ": unknown or destroyed graph");
  return found->second;
}

// launchGraph(id): queues one replay of the graph on the stream.
Napi::Value launchGraph(const Napi::CallbackInfo& info) {
  Args args{info, "launchGraph"};
  args.count(1);
  BS_REQUIRE(capturePool == 0, "launchGraph: not while a capture is in progress");
  BS_CUDA_CHECK(cudaGraphLaunch(graphRecord(args, 0, "launchGraph").exec, stream()));
  return undefinedOf(info);
}

// destroyGraph(id): frees the graph; its pool's memory returns to the shared cache (later work on the stream is
// ordered after any replay still queued).
Napi::Value destroyGraph(const Napi::CallbackInfo& info) {
  Args args{info, "destroyGraph"};
  args.count(1);
  const GraphRecord record = graphRecord(args, 0, "destroyGraph");
  graphs.erase(static_cast<uint64_t>(args.size(0)));
  BS_CUDA_CHECK(cudaGraphExecDestroy(record.exec));
  destroyPool(record.pool);
  return undefinedOf(info);
}

// copyBuffer(src, dst): dst's bytes = src's (same length), ordered on the stream.
Napi::Value copyBuffer(const Napi::CallbackInfo& info) {
  Args args{info, "copyBuffer"};
  args.count(2);
  const Buffer& src = args.buffer(0);
  const Buffer& dst = args.buffer(1);
  BS_REQUIRE(src.byteLength == dst.byteLength, "copyBuffer: " + std::to_string(src.byteLength) + " bytes into a buffer of " +
                                                   std::to_string(dst.byteLength));
  if (src.byteLength > 0)
    BS_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, src.byteLength, cudaMemcpyDeviceToDevice, stream()));
  return undefinedOf(info);
}

// ------------------------------------------------------------------ module

Napi::Object initModule(Napi::Env env, Napi::Object exports) {
  auto add = [&](const char* name, Napi::Function fn) { exports.Set(name, fn); };
#define BS_EXPORT(name, fn) add(name, Napi::Function::New<guarded<fn>>(env, name))
  BS_EXPORT("init", init);
  BS_EXPORT("buildInfo", buildInfo);
  BS_EXPORT("alloc", alloc);
  BS_EXPORT("free", freeBuffer);
  BS_EXPORT("write", write);
  BS_EXPORT("read", read);
  BS_EXPORT("memory", memory);
  BS_EXPORT("releaseCache", releaseCacheFn);
  BS_EXPORT("synchronize", synchronizeFn);
  BS_EXPORT("setMemoryLimit", setMemoryLimitFn);
  BS_EXPORT("setCublasEnabled", setCublasEnabledFn);
  BS_EXPORT("setAllowTf32", setAllowTf32Fn);
  BS_EXPORT("setDenseSampledMode", setDenseSampledModeFn);
  BS_EXPORT("sampledPlan", sampledPlan);
  BS_EXPORT("setDenseProductMode", setDenseProductModeFn);
  BS_EXPORT("setAutotune", setAutotuneFn);
  BS_EXPORT("clearAutotune", clearAutotuneFn);
  BS_EXPORT("autotuneRecords", autotuneRecordsFn);
  BS_EXPORT("importAutotune", importAutotuneFn);
  BS_EXPORT("allowTf32", allowTf32Fn);
  BS_EXPORT("createPattern", createPattern);
  BS_EXPORT("freePattern", freePattern);
  BS_EXPORT("fillBits", fillBits);
  BS_EXPORT("beginCapture", beginCapture);
  BS_EXPORT("endCapture", endCapture);
  BS_EXPORT("abortCapture", abortCapture);
  BS_EXPORT("launchGraph", launchGraph);
  BS_EXPORT("destroyGraph", destroyGraph);
  BS_EXPORT("copyBuffer", copyBuffer);
  BS_EXPORT("unary", unary);
  BS_EXPORT("binary", binary);
  BS_EXPORT("where", where);
  BS_EXPORT("cast", cast);
  BS_EXPORT("copyStrided", copyStrided);
  BS_EXPORT("reduce", reduce);
  BS_EXPORT("softmax", softmax);
  BS_EXPORT("softmaxBackward", softmaxBackward);
  BS_EXPORT("attention", attention);
  BS_EXPORT("attentionBackward", attentionBackward);
  BS_EXPORT("linearBackward", linearBackward);
  BS_EXPORT("packedAttention", packedAttention);
  BS_EXPORT("packedAttentionBackward", packedAttentionBackward);
  BS_EXPORT("cachedAttention", cachedAttention);
  BS_EXPORT("layerNorm", layerNorm);
  BS_EXPORT("layerNormBackward", layerNormBackward);
  BS_EXPORT("crossEntropy", crossEntropy);
  BS_EXPORT("crossEntropyBackward", crossEntropyBackward);
  BS_EXPORT("gather", gather);
  BS_EXPORT("scatterAdd", scatterAdd);
  BS_EXPORT("indexCopy", indexCopy);
  BS_EXPORT("oneHot", oneHot);
  BS_EXPORT("matmul", matmul);
  BS_EXPORT("linear", linear);
  BS_EXPORT("linearActivation", linearActivation);
  BS_EXPORT("bsrLinear", bsrLinear);
  BS_EXPORT("bsrLinearActivation", bsrLinearActivation);
  BS_EXPORT("bsrMatmul", bsrMatmul);
  BS_EXPORT("bsrMatmulActivationBackward", bsrMatmulActivationBackward);
  BS_EXPORT("sampledMatmul", sampledMatmul);
  BS_EXPORT("blockNorms", blockNorms);
  BS_EXPORT("biasActivation", biasActivation);
  BS_EXPORT("biasActivationBackward", biasActivationBackward);
  BS_EXPORT("adamUpdate", adamUpdate);
  BS_EXPORT("multiTensorAdamUpdate", multiTensorAdamUpdate);
  BS_EXPORT("ncclInfo", ncclInfo);
  BS_EXPORT("ncclGetUniqueId", ncclGetUniqueId);
  BS_EXPORT("ncclCommInitRank", ncclCommInitRank);
  BS_EXPORT("ncclCommDestroy", ncclCommDestroy);
  BS_EXPORT("ncclAllReduce", ncclAllReduce);
  BS_EXPORT("ncclBroadcast", ncclBroadcast);
  BS_EXPORT("ncclAllGather", ncclAllGather);
  BS_EXPORT("ncclGroupStart", ncclGroupStart);
  BS_EXPORT("ncclGroupEnd", ncclGroupEnd);
#undef BS_EXPORT
  return exports;
}

}  // namespace
}  // namespace bs

static Napi::Object InitBlocksparseCuda(Napi::Env env, Napi::Object exports) { return bs::initModule(env, exports); }

NODE_API_MODULE(blocksparse_cuda, InitBlocksparseCuda)
