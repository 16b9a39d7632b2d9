// First-use autotuning of the block-sparse products: see autotune.h.
#include "autotune.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <unordered_map>

#include "device.h"
#include "kernels.h"

namespace bs {

namespace {

// Each candidate is timed kTimedPasses times over the candidates in turn, kTimedRuns calls each time, and keeps its
// fastest pass: a GPU whose clocks are still rising when the first candidates run, or a pass another process's work
// slowed, does not decide the choice.
constexpr int kTimedRuns = 3;
constexpr int kTimedPasses = 2;
// How long the hold on the stream waits for the host at most (a route that waited on the stream itself would
// otherwise stall until then; none does).
constexpr uint64_t kHoldTimeoutNs = 50'000'000;

struct Key {
  int product, dtype, blockHeight, blockWidth;
  int64_t m, rows, cols;
  int32_t nnzBlocks;
  bool bias;
  int epilogue;
  int device;
  bool operator==(const Key& o) const {
    return product == o.product && dtype == o.dtype && blockHeight == o.blockHeight && blockWidth == o.blockWidth &&
           m == o.m && rows == o.rows && cols == o.cols && nnzBlocks == o.nnzBlocks && bias == o.bias &&
           epilogue == o.epilogue && device == o.device;
  }
};

struct KeyHash {
  size_t operator()(const Key& k) const {
    uint64_t h = 1469598103934665603ull;
    auto mix = [&h](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    mix(static_cast<uint64_t>(k.product));
    mix(static_cast<uint64_t>(k.dtype));
    mix(static_cast<uint64_t>(k.blockHeight));
    mix(static_cast<uint64_t>(k.blockWidth));
    mix(static_cast<uint64_t>(k.m));
    mix(static_cast<uint64_t>(k.rows));
    mix(static_cast<uint64_t>(k.cols));
    mix(static_cast<uint64_t>(k.nnzBlocks));
    mix(static_cast<uint64_t>(k.bias));
    mix(static_cast<uint64_t>(k.epilogue));
    mix(static_cast<uint64_t>(k.device));
    return static_cast<size_t>(h);
  }
};

std::atomic<bool> enabled{false};
std::mutex mutex;
std::unordered_map<Key, TuneRecord, KeyHash> records;

// Two events for the timing, made on first use (on the device current then: one device per process).
struct Events {
  cudaEvent_t start = nullptr, stop = nullptr;
};
Events& events() {
  static Events e;
  if (e.start == nullptr) {
    BS_CUDA_CHECK(cudaEventCreate(&e.start));
    BS_CUDA_CHECK(cudaEventCreate(&e.stop));
  }
  return e;
}

// The host-mapped word that releases the stream's hold (launchHoldStream), made on first use. Where the host memory
// cannot be mapped (host == nullptr after the attempt) the candidates are timed as they are queued, unheld.
struct HoldWord {
  bool tried = false;
  int* host = nullptr;
  int* device = nullptr;
};
HoldWord& holdWord() {
  static HoldWord word;
  if (!word.tried) {
    word.tried = true;
    if (cudaHostAlloc(&word.host, sizeof(int), cudaHostAllocMapped) != cudaSuccess) {
      cudaGetLastError();
      word.host = nullptr;
    } else if (cudaHostGetDevicePointer(&word.device, word.host, 0) != cudaSuccess) {
      cudaGetLastError();
      cudaFreeHost(word.host);
      word.host = nullptr;
    }
  }
  return word;
}

// Releases the hold when it goes out of scope, also when a run throws.
class HoldRelease {
 public:
  explicit HoldRelease(int* word) : word_(word) {}
  ~HoldRelease() {
    if (word_ == nullptr) return;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    *static_cast<volatile int*>(word_) = 1;
  }
  HoldRelease(const HoldRelease&) = delete;
  HoldRelease& operator=(const HoldRelease&) = delete;

 private:
  int* word_;
};

// Milliseconds per call of kTimedRuns calls of one route. The stream is held while they are queued and released once
// they and the stop event are, so the events time the calls back to back on the device: timed as they were queued, a
// product of a few microseconds measured the host's time to queue it (the launches, the scratch), and autotuning chose
// against the routes with the fastest host side (on an H100, a 768 <-> 3072 FFN step at 2048 tokens, 32x32, density
// 0.1, ran 0.147 ms tuned against 0.101 with the fixed rules).
double timeRoute(const std::function<bool(const TunedRoute&)>& run, const TunedRoute& route, cudaStream_t stream) {
  Events& timer = events();
  HoldWord& word = holdWord();
  if (word.host != nullptr) {
    *static_cast<volatile int*>(word.host) = 0;
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  {
    HoldRelease release(word.host);
    if (word.host != nullptr) launchHoldStream(word.device, kHoldTimeoutNs, stream);
    BS_CUDA_CHECK(cudaEventRecord(timer.start, stream));
    for (int i = 0; i < kTimedRuns; ++i) run(route);
    BS_CUDA_CHECK(cudaEventRecord(timer.stop, stream));
  }
  BS_CUDA_CHECK(cudaEventSynchronize(timer.stop));
  float ms = 0.0f;
  BS_CUDA_CHECK(cudaEventElapsedTime(&ms, timer.start, timer.stop));
  return static_cast<double>(ms) / kTimedRuns;
}

// Runs one candidate; an out-of-memory failure (the dense route's scratch, the split partials) skips it.
bool tryRun(const std::function<bool(const TunedRoute&)>& run, const TunedRoute& route) {
  try {
    return run(route);
  } catch (const Error& error) {
    if (error.kind != ErrorKind::OutOfMemory) throw;
    cudaGetLastError();
    return false;
  }
}

}  // namespace

std::string tunedRouteName(tc::Op product, const TunedRoute& route) {
  if (!route.dense) return tcRouteName(route.tc);
  return product == tc::Op::Sampled ? "dense product, sampled" : "dense product, scattered blocks";
}

const char* tuneEpilogueName(TuneEpilogue epilogue) {
  switch (epilogue) {
    case TuneEpilogue::Activation: return "activation";
    case TuneEpilogue::ActivationBackward: return "activationBackward";
    case TuneEpilogue::None: break;
  }
  return "none";
}

bool setAutotune(bool on) { return enabled.exchange(on); }

bool autotuneEnabled() { return enabled.load(std::memory_order_relaxed); }

void clearAutotune() {
  std::lock_guard<std::mutex> lock(mutex);
  records.clear();
}

std::vector<TuneRecord> autotuneRecords() {
  std::lock_guard<std::mutex> lock(mutex);
  std::vector<TuneRecord> out;
  out.reserve(records.size());
  for (const auto& entry : records) out.push_back(entry.second);
  return out;
}

bool importAutotuneRecord(TuneRecord record) {
  record.device = deviceInfo().index;
  record.timings.clear();
  const Key key{static_cast<int>(record.product), static_cast<int>(record.dtype), record.blockHeight, record.blockWidth,
                record.m, record.rows, record.cols, record.nnzBlocks, record.bias, static_cast<int>(record.epilogue),
                record.device};
  std::lock_guard<std::mutex> lock(mutex);
  return records.emplace(key, std::move(record)).second;
}

bool runTuned(tc::Op product, DType dtype, const BsrPatternView& pattern, int64_t m, bool bias, TuneEpilogue epilogue,
              const std::function<std::vector<TunedRoute>()>& candidates,
              const std::function<bool(const TunedRoute&)>& run, cudaStream_t stream) {
  const Key key{static_cast<int>(product), static_cast<int>(dtype), pattern.blockHeight, pattern.blockWidth, m,
                pattern.rows, pattern.cols, pattern.nnzBlocks, bias, static_cast<int>(epilogue), deviceInfo().index};
  {
    std::unique_lock<std::mutex> lock(mutex);
    auto found = records.find(key);
    if (found != records.end()) {
      const TunedRoute chosen = found->second.chosen;
      lock.unlock();
      if (run(chosen)) return true;
      lock.lock();
      records.erase(key);
      return false;
    }
  }
  // Not timed while the stream is captured into a graph: the routes would only be recorded (each of them into the
  // graph, several times), and waiting on the timing events fails there. The caller's fixed rules run it; the shape
  // tunes at its first call outside a capture.
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  BS_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone) return false;
  const std::vector<TunedRoute> routes = candidates();
  if (routes.empty()) return false;
  TuneRecord record{product, dtype, pattern.blockHeight, pattern.blockWidth, m, pattern.rows, pattern.cols,
                    pattern.nnzBlocks, bias, epilogue, key.device, {}, {}};
  // Each candidate run once (its first call: one-time costs, and whether it declines), then the passes.
  for (const TunedRoute& route : routes)
    if (tryRun(run, route)) record.timings.emplace_back(route, std::numeric_limits<double>::infinity());
  if (record.timings.empty()) return false;  // every route declined (or ran out of memory)
  for (int pass = 0; pass < kTimedPasses; ++pass)
    for (auto& [route, ms] : record.timings) ms = std::min(ms, timeRoute(run, route, stream));
  double best = std::numeric_limits<double>::infinity();
  for (const auto& [route, ms] : record.timings) {
    if (ms < best) {
      best = ms;
      record.chosen = route;
    }
  }
  // This call's output comes from the chosen route, as every later call's will.
  if (!run(record.chosen)) return false;
  std::lock_guard<std::mutex> lock(mutex);
  records.emplace(key, std::move(record));
  return true;
}

}  // namespace bs
