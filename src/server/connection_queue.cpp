#include "server/connection_queue.h"

namespace qrwkv::server {

namespace {
thread_local bool t_refusing = false;
std::atomic<uint64_t> g_refused{0};
}  // namespace

ConnectionQueue::ConnectionQueue(size_t threads, size_t max_refusing)
    : max_refusing_(max_refusing) {
  workers_.reserve(threads);
  for (size_t i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
}

ConnectionQueue::~ConnectionQueue() { shutdown(); }

bool ConnectionQueue::refusing() { return t_refusing; }

uint64_t ConnectionQueue::refused_total() { return g_refused.load(); }

void ConnectionQueue::enqueue(std::function<void()> fn) {
  std::unique_lock<std::mutex> lock(mu_);
  // A worker is free for this connection (the queue holds at most what idle workers are about
  // to take), or too many refusals run already: the connection waits for a worker.
  if (idle_ > jobs_.size() || refusing_now_ >= max_refusing_ || stop_) {
    jobs_.push_back(std::move(fn));
    lock.unlock();
    cv_.notify_one();
    return;
  }
  ++refusing_now_;
  g_refused.fetch_add(1);
  lock.unlock();
  std::thread([this, fn = std::move(fn)] {
    t_refusing = true;
    fn();
    std::lock_guard<std::mutex> l(mu_);
    --refusing_now_;
    drained_.notify_all();
  }).detach();
}

void ConnectionQueue::work() {
  for (;;) {
    std::function<void()> fn;
    {
      std::unique_lock<std::mutex> lock(mu_);
      ++idle_;
      cv_.wait(lock, [&] { return !jobs_.empty() || stop_; });
      --idle_;
      if (jobs_.empty()) return;  // stopping, and nothing left
      fn = std::move(jobs_.front());
      jobs_.pop_front();
    }
    fn();
  }
}

void ConnectionQueue::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ && workers_.empty()) return;
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  // The refusing threads use this object until they end.
  std::unique_lock<std::mutex> lock(mu_);
  drained_.wait(lock, [&] { return refusing_now_ == 0; });
}

}  // namespace qrwkv::server
