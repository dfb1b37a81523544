// A persistent pool of worker threads for data-parallel kernels. Threads are created once; between
// jobs they spin briefly (a decode step issues hundreds of small parallel regions back to back,
// and a condition-variable wake-up costs more than many of them) and then sleep on a condition
// variable. parallel_for splits [0, n) into one contiguous range per thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace qrwkv {

// A non-owning reference to a callable, like std::function_ref (C++26). Unlike std::function it
// never allocates, so a kernel can hand a capturing lambda to the pool inside a decode step that
// must not touch the heap. The callable must outlive the call it is passed to.
template <typename Signature>
class FunctionRef;

template <typename R, typename... Args>
class FunctionRef<R(Args...)> {
 public:
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(F&& f)  // NOLINT(google-explicit-constructor): used like a std::function parameter
      : obj_(const_cast<void*>(static_cast<const void*>(&f))), call_([](void* o, Args... a) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<Args>(a)...);
        }) {}
  R operator()(Args... a) const { return call_(obj_, std::forward<Args>(a)...); }

 private:
  void* obj_;
  R (*call_)(void*, Args...);
};

class ThreadPool {
 public:
  // n_threads counts the calling thread, which takes a share of the work too.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  using Job = FunctionRef<void(int64_t, int64_t, int)>;

  // Calls fn(begin, end, thread_index) on disjoint ranges covering [0, n), each range a multiple
  // of `grain` long (but the last), and returns when all are done. Calls from several threads
  // are serialized (one job runs at a time); a call made from inside a job of this pool runs
  // its whole range on the calling thread (as thread_index 0) instead of waiting for itself.
  void parallel_for(int64_t n, int64_t grain, Job fn);

  // As parallel_for, but [0, n) is handed out in ranges of `chunk` items, in order, to whichever
  // thread asks next, so that a thread that runs slower (a busier memory channel, another
  // process on its core) takes fewer. For memory-bound loops such as decode's matrix-vector
  // products, where an even static split leaves the faster thread waiting.
  void parallel_chunks(int64_t n, int64_t chunk, Job fn);

 private:
  void worker(int index);
  void run_share(int index);
  void start(int64_t n, int64_t grain, bool dynamic, const Job& fn);
  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // one parallel_for at a time
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const Job* job_ = nullptr;
  int64_t n_ = 0, grain_ = 1;
  bool dynamic_ = false;
  std::atomic<int64_t> next_{0};  // the next unclaimed item of a dynamic job
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

// The number of physical cores (hyperthreads not counted), at least 1.
int physical_cores();

}  // namespace qrwkv
