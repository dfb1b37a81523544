// The OpenAI-compatible HTTP server (`qrwkv serve`), on cpp-httplib.
//
// Routes: GET /health, GET /v1/models, POST /v1/chat/completions, POST /v1/completions,
// POST /tokenize, POST /detokenize, POST /apply-template, GET /metrics. The socket is bound and
// answering before the model is loaded, so /health can report 503 while loading. HTTP threads
// parse, render and tokenize requests themselves; generation goes through the Scheduler, the
// only thread that runs the model.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "backend/backend.h"

namespace qrwkv::server {

struct ServerOptions {
  std::string model_dir;
  std::string alias;  // the model id clients use; default: the directory's name
  std::string chat_template_file;
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (the one chosen is printed and returned by bind())
  int n_parallel = 4;
  int threads = 0;                             // kernel threads; 0 = one per physical core
  WeightFormat format = WeightFormat::Stored;  // --dtype
  int64_t ubatch = 0;                          // -ub: tokens per forward pass; 0 = default
  // Connections served at once (--max-connections), one thread each; more are refused with a
  // 503. A silent client holds its thread at most read_timeout_s (a request being read) or
  // keep_alive_timeout_s (between requests).
  int max_connections = 512;
  double read_timeout_s = 5;
  int keep_alive_timeout_s = 5;
  int keep_alive_max_requests = 100;  // requests per connection before the server closes it
  std::string api_key;                // empty: no authentication
  size_t cache_bytes = size_t{1024} << 20;
  std::string state_dir;  // empty: cached states are not kept on disk
  size_t state_dir_bytes = size_t{10} << 30;
  size_t max_body_bytes = size_t{16} << 20;
  size_t max_queue = 256;
  int64_t default_max_tokens = 2048;
  int64_t prefill_chunk = 256;  // prompt tokens evaluated per step, over all requests
  // The longest prompt accepted (--max-prompt-tokens); 0: default_max_prompt_tokens for the
  // model and the slots (runtime/limits.h). Longer prompts get a 400 context_length_exceeded.
  int64_t max_prompt_tokens = 0;
  // The time a request may take from its arrival (--request-timeout); 0: no limit. A reply
  // still going then ends with finish_reason "length"; a request still waiting or reading its
  // prompt gets a 400 request_timeout error.
  double request_timeout_s = 600;
  bool verbose = false;
};

class HttpServer {
 public:
  explicit HttpServer(ServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the listening socket and starts answering (503 until the model is loaded); returns
  // the port. Throws Error when the address cannot be bound.
  int start();
  // Loads the model, serves until stop() is called, then shuts down cleanly (every request in
  // flight ends). Throws Error when the model cannot be loaded.
  void run();
  // Asks run() to return; safe from any thread.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qrwkv::server
