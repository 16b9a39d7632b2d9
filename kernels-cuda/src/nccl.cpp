#include "nccl.h"

#include "dynamic_library.h"

namespace bs::nccl {

namespace {
using GetUniqueIdFn = Result (*)(UniqueId*);
using CommInitRankFn = Result (*)(Comm*, int, UniqueId, int);
using CommDestroyFn = Result (*)(Comm);
using AllReduceFn = Result (*)(const void*, void*, size_t, int, int, Comm, cudaStream_t);
using BroadcastFn = Result (*)(const void*, void*, size_t, int, int, Comm, cudaStream_t);
using AllGatherFn = Result (*)(const void*, void*, size_t, int, Comm, cudaStream_t);
using GroupFn = Result (*)();
using ErrorStringFn = const char* (*)(Result);
using LastErrorFn = const char* (*)(Comm);
using GetVersionFn = Result (*)(int*);

struct Api {
  bool tried = false;
  bool loaded = false;
  std::string description;
  GetUniqueIdFn getUniqueId = nullptr;
  CommInitRankFn commInitRank = nullptr;
  CommDestroyFn commDestroy = nullptr;
  AllReduceFn allReduce = nullptr;
  BroadcastFn broadcast = nullptr;
  AllGatherFn allGather = nullptr;
  GroupFn groupStart = nullptr;
  GroupFn groupEnd = nullptr;
  ErrorStringFn errorString = nullptr;
  LastErrorFn lastError = nullptr;  // NCCL 2.13 and later; optional
};

Api api;


[[noreturn]] void fail(const char* call, Result result, Comm comm) {
  std::string message = std::string(call) + " failed: " + (api.errorString ? api.errorString(result) : "NCCL error") +
                        " (ncclResult " + std::to_string(result) + ")";
  const char* detail = api.lastError ? api.lastError(comm) : nullptr;
  if (detail != nullptr && detail[0] != '\0') message += ": " + std::string(detail);
  throw Error(ErrorKind::Nccl, message);
}

void check(const char* call, Result result, Comm comm = nullptr) {
  if (result != kSuccess) fail(call, result, comm);
}

void requireLoaded(const char* call) {
  if (!load()) throw Error(ErrorKind::Nccl, std::string(call) + ": " + api.description);
}
}  // namespace

int dataType(DType dtype) {
  switch (dtype) {
    case DType::Int32:
      return 2;  // ncclInt32
    case DType::Float16:
      return 6;  // ncclFloat16
    case DType::Float32:
      return 7;  // ncclFloat32
    case DType::BFloat16:
      return 9;  // ncclBfloat16
  }
  throwInvalid("NCCL: no NCCL data type for this dtype");
}

bool load() {
  if (api.tried) return api.loaded;
  api.tried = true;
  std::string tried;
  const OpenedLibrary opened = openFirst(
      {"libnccl.so.2", "libnccl.so"},
      [](void* library) {
        return bindSymbol(library, "ncclGetUniqueId", api.getUniqueId) &&
               bindSymbol(library, "ncclCommInitRank", api.commInitRank) &&
               bindSymbol(library, "ncclCommDestroy", api.commDestroy) && bindSymbol(library, "ncclAllReduce", api.allReduce) &&
               bindSymbol(library, "ncclBroadcast", api.broadcast) && bindSymbol(library, "ncclAllGather", api.allGather) &&
               bindSymbol(library, "ncclGroupStart", api.groupStart) && bindSymbol(library, "ncclGroupEnd", api.groupEnd) &&
               bindSymbol(library, "ncclGetErrorString", api.errorString);
      },
      tried);
  if (opened.handle == nullptr) {
    api.description = "NCCL not found (tried " + tried + "); install NCCL 2 (libnccl2) or add its lib directory to LD_LIBRARY_PATH";
    return false;
  }
  bindSymbol(opened.handle, "ncclGetLastError", api.lastError);
  GetVersionFn getVersion = nullptr;
  int version = 0;
  api.description = opened.name;
  if (bindSymbol(opened.handle, "ncclGetVersion", getVersion) && getVersion(&version) == kSuccess) {
    api.description += " (NCCL " + std::to_string(version / 10000) + "." + std::to_string(version / 100 % 100) + "." +
                       std::to_string(version % 100) + ")";
  }
  api.loaded = true;
  return true;
}

const std::string& describe() { return api.description; }

UniqueId getUniqueId() {
  requireLoaded("ncclGetUniqueId");
  UniqueId id{};
  check("ncclGetUniqueId", api.getUniqueId(&id));
  return id;
}

Comm commInitRank(int worldSize, const UniqueId& id, int rank) {
  requireLoaded("ncclCommInitRank");
  Comm comm = nullptr;
  check("ncclCommInitRank", api.commInitRank(&comm, worldSize, id, rank));
  return comm;
}

void commDestroy(Comm comm) {
  requireLoaded("ncclCommDestroy");
  check("ncclCommDestroy", api.commDestroy(comm));
}

void allReduce(const void* send, void* receive, size_t count, DType dtype, ReduceOp op, Comm comm, cudaStream_t stream) {
  requireLoaded("ncclAllReduce");
  check("ncclAllReduce", api.allReduce(send, receive, count, dataType(dtype), static_cast<int>(op), comm, stream), comm);
}

void broadcast(const void* send, void* receive, size_t count, DType dtype, int root, Comm comm, cudaStream_t stream) {
  requireLoaded("ncclBroadcast");
  check("ncclBroadcast", api.broadcast(send, receive, count, dataType(dtype), root, comm, stream), comm);
}

void allGather(const void* send, void* receive, size_t sendCount, DType dtype, Comm comm, cudaStream_t stream) {
  requireLoaded("ncclAllGather");
  check("ncclAllGather", api.allGather(send, receive, sendCount, dataType(dtype), comm, stream), comm);
}

void groupStart() {
  requireLoaded("ncclGroupStart");
  check("ncclGroupStart", api.groupStart());
}

void groupEnd() {
  requireLoaded("ncclGroupEnd");
  check("ncclGroupEnd", api.groupEnd());
}

}  // namespace bs::nccl
