#include "threads.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace bsk {
namespace {

class ThreadPool {
 public:
  explicit ThreadPool(int threads) { start(threads); }
  ~ThreadPool() { stop(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int threads) {
    stop();
    start(threads);
  }

  void run(int64_t count, const std::function<void(int64_t)>& body) {
    if (count <= 0) return;
    if (workers_.empty() || count == 1) {
      for (int64_t i = 0; i < count; i++) body(i);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      body_ = &body;
      count_ = count;
      next_.store(0);
      busyWorkers_ = static_cast<int>(workers_.size());
      unfinished_.store(busyWorkers_, std::memory_order_relaxed);
      generation_++;
      postedGeneration_.store(generation_, std::memory_order_release);
    }
    wake_.notify_all();
    runItems();
    // The last items are usually finishing on the other threads right now: poll before sleeping.
    const auto until = std::chrono::steady_clock::now() + kSpin;
    while (unfinished_.load(std::memory_order_acquire) > 0 && std::chrono::steady_clock::now() < until) pause();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return busyWorkers_ == 0; });
    body_ = nullptr;
  }

 private:
  void start(int threads) {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = false;
    // A worker must know the generation it was started in: a job posted before it first runs is still its job.
    for (int i = 1; i < threads; i++) workers_.emplace_back([this, seen = generation_] { workerLoop(seen); });
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
      const int64_t i = next_.fetch_add(1);
      if (i >= count_) return;
      (*body_)(i);
    }
  }

  // After a job a worker polls for the next one for a short while before sleeping: a product is a
  // few jobs back to back (packing, then tiles), and a sleeping worker on a busy machine may wait
  // a scheduler slice to be woken, leaving the job to the calling thread alone.
  void spinForNextJob(uint64_t seen) const {
    const auto until = std::chrono::steady_clock::now() + kSpin;
    while (postedGeneration_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < until) {
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
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
      }
      runItems();
      std::lock_guard<std::mutex> lock(mutex_);
      unfinished_.store(--busyWorkers_, std::memory_order_release);
      if (busyWorkers_ == 0) done_.notify_one();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int64_t)>* body_ = nullptr;
  int64_t count_ = 0;
  std::atomic<int64_t> next_{0};
  int busyWorkers_ = 0;
  // busyWorkers_, readable without the lock by the polling caller.
  std::atomic<int> unfinished_{0};
  uint64_t generation_ = 0;
  // generation_, readable without the lock by spinning workers.
  std::atomic<uint64_t> postedGeneration_{0};
  bool stopping_ = false;
  static constexpr std::chrono::microseconds kSpin{200};
};

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

void setThreadCount(int n) { pool().resize(n < 1 ? hardwareThreads() : n); }

}  // namespace bsk
