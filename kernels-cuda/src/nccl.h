// NCCL loaded at run time (dlopen("libnccl.so.2")): the addon builds where NCCL's header and library are
// absent, and a process that never asks for a communicator never loads it. These are the few
// declarations of nccl.h the addon calls, with NCCL 2's ABI values (stable since NCCL 2.0; avg since 2.10).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "common.h"

namespace bs::nccl {

using Comm = void*;
using Result = int;
constexpr Result kSuccess = 0;

// ncclUniqueId: 128 opaque bytes, passed by value to ncclCommInitRank.
constexpr size_t kUniqueIdBytes = 128;
struct UniqueId {
  char internal[kUniqueIdBytes];
};

// ncclRedOp_t values the addon uses.
enum class ReduceOp : int32_t { Sum = 0, Avg = 4 };

// ncclDataType_t of each of our dtypes.
int dataType(DType dtype);

// Loads the library once (libnccl.so.2, then libnccl.so); false when none loads.
bool load();
// The file that was loaded (with NCCL's version), or why none was (after load()).
const std::string& describe();

// Each throws an Error of kind Nccl naming the call and NCCL's reason (with ncclGetLastError's detail when
// the library has it) when NCCL returns a failure.
UniqueId getUniqueId();
Comm commInitRank(int worldSize, const UniqueId& id, int rank);
void commDestroy(Comm comm);
void allReduce(const void* send, void* receive, size_t count, DType dtype, ReduceOp op, Comm comm, cudaStream_t stream);
void broadcast(const void* send, void* receive, size_t count, DType dtype, int root, Comm comm, cudaStream_t stream);
void allGather(const void* send, void* receive, size_t sendCount, DType dtype, Comm comm, cudaStream_t stream);
void groupStart();
void groupEnd();

}  // namespace bs::nccl
