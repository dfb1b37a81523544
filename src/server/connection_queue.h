// The connection threads of the HTTP layer (cpp-httplib serves each connection on one thread,
// blocking on its client). A fixed set of `threads` workers serves that many connections at
// once, so idle, half-sent or slow clients below that count cannot hold up anyone else; each
// occupies its worker at most the read or keep-alive timeout per request. A connection that
// arrives when every worker is busy is refused: it runs on a short-lived thread on which
// refusing() is true, where the server answers its request with a 503 and closes it. At most
// `max_refusing` such threads run at a time; beyond that, connections wait for a worker.
#pragma once

#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
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
  void work();

  const size_t max_refusing_;
  std::mutex mu_;
  std::condition_variable cv_;       // work for the workers, or shutdown
  std::condition_variable drained_;  // a refusing thread ended
  std::deque<std::function<void()>> jobs_;
  size_t idle_ = 0;
  size_t refusing_now_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace qrwkv::server
