// A persistent pool of worker threads for data-parallel kernels. Threads are created once; between
// jobs they spin briefly (a decode step issues hundreds of small parallel regions back to back,
// and a condition-variable wake-up costs more than many of them) and then sleep on a condition
// variable. parallel_for splits [0, n) into one contiguous range per thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qrwkv {

class ThreadPool {
 public:
  // n_threads counts the calling thread, which takes a share of the work too.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end, thread_index) on disjoint ranges covering [0, n), each range a multiple
  // of `grain` long (but the last), and returns when all are done. One caller at a time: a pool
  // (and so a Model's Exec, which shares its pool with copies) must not run two parallel_for
  // calls concurrently from different threads.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn);

 private:
  void worker(int index);
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int64_t, int64_t, int)>* job_ = nullptr;
  int64_t n_ = 0, grain_ = 1;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

// The number of physical cores (hyperthreads not counted), at least 1.
int physical_cores();

}  // namespace qrwkv
