// Index values that live in device memory (gather's indices, cross-entropy's targets, index copy's positions) are
// only seen by the kernels that read them. A kernel that meets one outside its axis skips it (reads zero, writes
// nothing) and records the first such index here; the host reports it as an IndexError at its next wait for the
// device (a read-back or a synchronize), naming the op, the index, its position and the range. That is the same
// check the host backends make before they run, made where the indices are.
#pragma once

#include "common.h"

#include <cstdint>

namespace bs {

enum class IndexFaultOp : int32_t { None = 0, Gather, ScatterAdd, IndexCopy, CrossEntropy, CrossEntropyBackward, CachedAttention };

// What the first out-of-range index was. Lives in mapped, page-locked host memory: the kernel that claims it writes
// the fields and then `reported`; the host reads them once the stream is idle.
struct IndexFault {
  int32_t reported;
  int32_t op;
  int64_t index;
  int64_t position;
  int64_t bound;
};

// Passed by value to the kernels that read indices: `claim` is a device int (0 when no fault is pending) that the
// first faulting thread takes with atomicCAS, so one thread writes `record`.
struct IndexFaultSink {
  int32_t* claim;
  IndexFault* record;
};

// The device's sink (made when the device starts).
IndexFaultSink indexFaultSink();
// After the stream is idle: throws Error(ErrorKind::Index) describing the recorded fault and clears it, if there is
// one; otherwise does nothing (a read of host memory).
void throwIfIndexFault();

#ifdef __CUDACC__
__device__ __forceinline__ void reportIndexFault(IndexFaultSink sink, IndexFaultOp op, int64_t index, int64_t position,
                                                 int64_t bound) {
  if (atomicCAS(sink.claim, 0, 1) != 0) return;
  IndexFault* record = sink.record;
  record->op = static_cast<int32_t>(op);
  record->index = index;
  record->position = position;
  record->bound = bound;
  __threadfence_system();
  *reinterpret_cast<volatile int32_t*>(&record->reported) = 1;
}
#endif

}  // namespace bs
