#include "ops/threadpool.h"

#include <pthread.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <set>
#include <string>

namespace qrwkv {

namespace {

// The pool whose job the current thread is running, if any (see parallel_for).
thread_local const ThreadPool* t_running = nullptr;

// The share of [0, n) that thread t of T handles, in whole grains.
std::pair<int64_t, int64_t> share(int64_t n, int64_t grain, int t, int T) {
  const int64_t chunks = (n + grain - 1) / grain;
  const int64_t b = chunks * t / T, e = chunks * (t + 1) / T;
  return {std::min(n, b * grain), std::min(n, e * grain)};
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  for (int i = 1; i < std::max(1, n_threads); ++i) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  start_cv_.notify_all();
  for (auto& w : workers_) w.join();
}

namespace {
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}
// About 50 µs of spinning before a worker sleeps.
constexpr int kSpins = 20000;
}  // namespace

void ThreadPool::worker(int index) {
  // Signals (Ctrl-C) go to the application's own threads, never to a worker.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  uint64_t seen = 0;
  for (;;) {
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen && !stop_.load() && spins < kSpins) {
      cpu_relax();
      ++spins;
    }
    if (generation_.load(std::memory_order_acquire) == seen && !stop_.load()) {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return stop_.load() || generation_.load() != seen; });
    }
    if (stop_.load()) return;
    seen = generation_.load(std::memory_order_acquire);
    t_running = this;
    run_share(index);
    t_running = nullptr;  // a worker runs nothing else
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_one();
    }
  }
}

void ThreadPool::run_share(int index) {
  if (!dynamic_) {
    const auto [b, e] = share(n_, grain_, index, size());
    if (b < e) (*job_)(b, e, index);
    return;
  }
  for (;;) {
    const int64_t b = next_.fetch_add(grain_, std::memory_order_relaxed);
    if (b >= n_) return;
    (*job_)(b, std::min(n_, b + grain_), index);
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, Job fn) { start(n, grain, false, fn); }

void ThreadPool::parallel_chunks(int64_t n, int64_t chunk, Job fn) { start(n, chunk, true, fn); }

void ThreadPool::start(int64_t n, int64_t grain, bool dynamic, const Job& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  if (workers_.empty() || n <= grain || t_running == this) {
    fn(0, n, 0);
    return;
  }
  std::lock_guard<std::mutex> call(call_mu_);
  struct Running {
    explicit Running(const ThreadPool* p) : outer(t_running) { t_running = p; }
    ~Running() { t_running = outer; }
    const ThreadPool* outer;  // a job of another pool this call is made from
  } running(this);
  job_ = &fn;
  n_ = n;
  grain_ = grain;
  dynamic_ = dynamic;
  next_.store(0, std::memory_order_relaxed);
  pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  {
    // Publishing under the mutex pairs with the sleeping workers' predicate check.
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  start_cv_.notify_all();
  run_share(0);
  for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < kSpins) {
      cpu_relax();
    } else {
      std::unique_lock<std::mutex> lock(mu_);
      done_cv_.wait_for(lock, std::chrono::milliseconds(1),
                        [&] { return pending_.load(std::memory_order_acquire) == 0; });
    }
  }
  job_ = nullptr;
}

int physical_cores() {
  // Distinct (physical id, core id) pairs; falls back to the logical count.
  std::ifstream in("/proc/cpuinfo");
  std::set<std::pair<std::string, std::string>> cores;
  std::string line, phys = "0";
  while (std::getline(in, line)) {
    if (line.rfind("physical id", 0) == 0) phys = line.substr(line.find(':') + 1);
    if (line.rfind("core id", 0) == 0) cores.insert({phys, line.substr(line.find(':') + 1)});
  }
  if (!cores.empty()) return static_cast<int>(cores.size());
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

}  // namespace qrwkv
