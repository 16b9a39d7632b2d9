// A small persistent thread pool: kernels split their work into independent items and run them
// on the pool's workers and the calling thread together.
#pragma once
#include <cstdint>
#include <functional>

namespace bsk {

// Runs body(i) for every i in [0, count), spread over the pool; returns when all are done.
// Items are handed out one at a time (dynamic scheduling), so uneven items balance. When an item
// throws, the items not yet started are skipped and the first exception is rethrown to the caller.
void parallelFor(int64_t count, const std::function<void(int64_t)>& body);

// Threads the pool runs on, the calling thread included (at least 1).
int threadCount();
// Resizes the pool; n < 1 means the hardware's thread count. Fewer run when the system refuses threads (see threadCount).
void setThreadCount(int n);
// Whether idle threads poll for the next job before sleeping: only while every thread has a core of its own.
bool threadsPoll();
// The hardware's thread count (std::thread::hardware_concurrency, at least 1).
int hardwareThreads();

}  // namespace bsk
