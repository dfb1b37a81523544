#include "server/connection_queue.h"

#include <algorithm>

namespace qrwkv::server {

namespace {
thread_local bool t_refusing = false;
std::atomic<uint64_t> g_refused{0};
}  // namespace

ConnectionQueue::ConnectionQueue(size_t threads, size_t max_refusing)
    : max_refusing_(max_refusing) {
  workers_.reserve(threads);
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < threads; ++i) {
    workers_.push_back(std::make_unique<Worker>());
    Worker& w = *workers_.back();
    idle_.push_back(&w);
    w.thread = std::thread([this, &w] { work(w); });
  }
}

ConnectionQueue::~ConnectionQueue() { shutdown(); }

bool ConnectionQueue::refusing() { return t_refusing; }

uint64_t ConnectionQueue::refused_total() { return g_refused.load(); }

void ConnectionQueue::enqueue(std::function<void()> fn) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!idle_.empty()) {
    Worker* w = idle_.back();
    idle_.pop_back();
    w->job = std::move(fn);
    lock.unlock();
    w->cv.notify_one();
    return;
  }
  // Every worker is busy: refuse, unless too many refusals run already (then wait for one).
  if (refusing_now_ >= max_refusing_ || stop_) {
    waiting_.push_back(std::move(fn));
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

// A worker is on the idle stack while it waits (the constructor puts it there before it runs).
void ConnectionQueue::work(Worker& w) {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    w.cv.wait(lock, [&] { return static_cast<bool>(w.job) || stop_; });
    if (!w.job) {  // stopping while idle
      idle_.erase(std::find(idle_.begin(), idle_.end(), &w));
      return;
    }
    // Its connection, then any that waited for a free worker.
    while (w.job) {
      std::function<void()> fn = std::move(w.job);
      w.job = nullptr;
      lock.unlock();
      fn();
      lock.lock();
      if (!waiting_.empty()) {
        w.job = std::move(waiting_.front());
        waiting_.pop_front();
      }
    }
    if (stop_) return;
    idle_.push_back(&w);
  }
}

void ConnectionQueue::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ && workers_.empty()) return;
    stop_ = true;
    for (auto& w : workers_) w->cv.notify_one();
  }
  for (auto& w : workers_) w->thread.join();
  workers_.clear();
  // The refusing threads use this object until they end.
  std::unique_lock<std::mutex> lock(mu_);
  drained_.wait(lock, [&] { return refusing_now_ == 0; });
}

}  // namespace qrwkv::server
