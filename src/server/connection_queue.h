// The connection threads of the HTTP layer (cpp-httplib serves each connection on one thread,
// blocking on its client). A fixed set of `threads` workers serves that many connections at
// once, so idle, half-sent or slow clients below that count cannot hold up anyone else; each
// occupies its worker at most the read or keep-alive timeout per request. A connection that
// arrives when every worker is busy is refused: it runs on a short-lived thread on which
// refusing() is true, where the server answers its request with a 503 and closes it. At most
// `max_refusing` such threads run at a time; beyond that, connections wait for a worker.
// The most recently idle worker takes the next connection, so that a few workers (their stacks
// and allocator caches) serve a light load instead of all of them in turn.
#pragma once

#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace qrwkv::server {

class ConnectionQueue final : public httplib::TaskQueue {
 public:
  ConnectionQueue(size_t threads, size_t max_refusing);
  ~ConnectionQueue() override;

  void enqueue(std::function<void()> fn) override;
  void shutdown() override;

  // True on a thread that serves a refused connection.
  static bool refusing();
  // Connections refused so far (the server's metrics).
  static uint64_t refused_total();

 private:
  struct Worker {
    std::thread thread;
    std::condition_variable cv;  // a connection for this worker, or shutdown
    std::function<void()> job;
  };
  void work(Worker& w);

  const size_t max_refusing_;
  std::mutex mu_;
  std::condition_variable drained_;            // a refusing thread ended
  std::deque<std::function<void()>> waiting_;  // connections no worker was free for
  std::vector<Worker*> idle_;                  // a stack: the last to become idle on top
  size_t refusing_now_ = 0;
  bool stop_ = false;
  std::vector<std::unique_ptr<Worker>> workers_;
};

}  // namespace qrwkv::server
