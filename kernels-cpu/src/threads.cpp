#include "threads.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

namespace bsk {
namespace {

// A job's items are claimed from one word, (generation << kIndexBits) | next index, so a worker that
// wakes after its job ended cannot claim an item of it, nor one of a later job with a stale count
// (short of 2^24 jobs passing between its two reads, when the 24-bit generation wraps).
constexpr int kIndexBits = 40;
constexpr uint64_t kIndexMask = (uint64_t(1) << kIndexBits) - 1;

int availableCores();

class ThreadPool {
 public:
  explicit ThreadPool(int threads) { start(threads); }
  ~ThreadPool() { stop(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  bool polls() const { return spin_; }

  void resize(int threads) {
    stop();
    start(threads);
  }

  // The caller runs items too and returns once every item is done: it never waits for a worker that
  // has not started (on a busy machine a sleeping worker can take a scheduler slice to wake). An item
  // that throws (std::bad_alloc) ends the job: the items not started are skipped, and the first error is
  // rethrown here once no thread runs an item (thrown on a worker, it would have aborted the process).
  void run(int64_t count, const std::function<void(int64_t)>& body) {
    if (count <= 0) return;
    // The job word holds at most 2^40 - 1 items: a larger count would spill into the generation (and its caller wait
    // for ever), so it runs as jobs of that many.
    if (static_cast<uint64_t>(count) > kIndexMask) {
      for (int64_t start = 0; start < count; start += static_cast<int64_t>(kIndexMask)) {
        run(std::min(static_cast<int64_t>(kIndexMask), count - start), [&](int64_t i) { body(start + i); });
      }
      return;
    }
    if (workers_.empty() || count == 1) {
      for (int64_t i = 0; i < count; i++) body(i);
      return;
    }
    const uint64_t generation = (posted_.load(std::memory_order_relaxed) + 1) & ((uint64_t(1) << (64 - kIndexBits)) - 1);
    body_ = &body;
    error_ = nullptr;
    failed_.store(false, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    job_.store(generation << kIndexBits | static_cast<uint64_t>(count), std::memory_order_release);
    next_.store(generation << kIndexBits, std::memory_order_release);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      posted_.store(generation, std::memory_order_release);
    }
    // Only as many sleepers as there are items beside the caller's: with more threads than cores, waking every one
    // for a job of a few items cost more context switches than the items' work.
    if (count - 1 >= static_cast<int64_t>(workers_.size())) {
      wake_.notify_all();
    } else {
      for (int64_t i = 0; i < count - 1; i++) wake_.notify_one();
    }
    runItems();
    // The last items are usually finishing on the other threads right now: poll before sleeping (when threads poll).
    const uint64_t total = static_cast<uint64_t>(count);
    const auto until = std::chrono::steady_clock::now() + (spin_ ? kSpin : std::chrono::microseconds(0));
    while (done_.load(std::memory_order_acquire) != total && std::chrono::steady_clock::now() < until) pause();
    if (done_.load(std::memory_order_acquire) != total) {
      std::unique_lock<std::mutex> lock(mutex_);
      finished_.wait(lock, [&] { return done_.load(std::memory_order_acquire) == total; });
    }
    if (failed_.load(std::memory_order_acquire)) std::rethrow_exception(error_);
  }

 private:
  void start(int threads) {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = false;
    // Polling only pays while every thread has a core: past that a polling thread takes the core of one with work.
    spin_ = threads <= availableCores();
    // A worker must know the job posted when it was started: a job posted before it first runs is still its job.
    const uint64_t seen = posted_.load(std::memory_order_relaxed);
    for (int i = 1; i < threads; i++) {
      // The system may refuse a thread (a pids limit, no memory for its stack): the pool runs on those that started.
      try {
        workers_.emplace_back([this, seen] { workerLoop(seen); });
      } catch (const std::system_error&) {
        return;
      }
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& worker : workers_) worker.join();
    workers_.clear();
  }

  void runItems() {
    for (;;) {
      uint64_t claim = next_.load(std::memory_order_acquire);
      const uint64_t job = job_.load(std::memory_order_acquire);
      if ((claim >> kIndexBits) != (job >> kIndexBits) || (claim & kIndexMask) >= (job & kIndexMask)) return;
      if (!next_.compare_exchange_weak(claim, claim + 1, std::memory_order_acq_rel)) continue;
      // Item claimed: the job cannot end (nor body_ change) before this item is counted done.
      if (!failed_.load(std::memory_order_relaxed)) {
        try {
          (*body_)(static_cast<int64_t>(claim & kIndexMask));
        } catch (...) {
          std::lock_guard<std::mutex> lock(mutex_);
          if (!failed_.load(std::memory_order_relaxed)) error_ = std::current_exception();
          failed_.store(true, std::memory_order_release);
        }
      }
      if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == (job & kIndexMask)) {
        { std::lock_guard<std::mutex> lock(mutex_); }
        finished_.notify_one();
      }
    }
  }

  // After a job a worker polls for the next one for a short while before sleeping: a product is a
  // few jobs back to back (packing, then tiles), and a sleeping worker on a busy machine may wait
  // a scheduler slice to be woken, leaving the job to the calling thread alone.
  void spinForNextJob(uint64_t seen) const {
    if (!spin_) return;
    const auto until = std::chrono::steady_clock::now() + kSpin;
    while (posted_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < until) {
      for (int i = 0; i < 64; i++) pause();
    }
  }

  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
  }

  void workerLoop(uint64_t seen) {
    for (;;) {
      spinForNextJob(seen);
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || posted_.load(std::memory_order_relaxed) != seen; });
        if (stopping_) return;
        seen = posted_.load(std::memory_order_relaxed);
      }
      runItems();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable finished_;
  // The running job's body; written by the caller before it publishes the job in next_.
  const std::function<void(int64_t)>* body_ = nullptr;
  // The first error an item of the running job threw (set under mutex_, read by the caller once every item is done).
  std::exception_ptr error_;
  std::atomic<bool> failed_{false};
  // (generation << kIndexBits) | item count, and | next unclaimed item, of the latest job.
  std::atomic<uint64_t> job_{0};
  std::atomic<uint64_t> next_{0};
  // Items of the latest job done.
  std::atomic<uint64_t> done_{0};
  // The latest job's generation, polled by spinning workers.
  std::atomic<uint64_t> posted_{0};
  bool stopping_ = false;
  // Whether waiting threads poll before sleeping (set by start, read by the workers it starts).
  bool spin_ = true;
  static constexpr std::chrono::microseconds kSpin{200};
};

// The CPUs this process may run on (its affinity mask on Linux), at least 1.
int availableCores() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
  return hardwareThreads();
}

ThreadPool& pool() {
  static ThreadPool instance(hardwareThreads());
  return instance;
}

}  // namespace

int hardwareThreads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

void parallelFor(int64_t count, const std::function<void(int64_t)>& body) { pool().run(count, body); }

int threadCount() { return pool().size(); }

bool threadsPoll() { return pool().polls(); }

void setThreadCount(int n) { pool().resize(n < 1 ? hardwareThreads() : n); }

}  // namespace bsk
