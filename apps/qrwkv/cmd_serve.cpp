// `qrwkv serve`: the OpenAI-compatible HTTP server (src/server). SIGINT and SIGTERM stop it
// cleanly: requests in flight end, threads are joined, and the process exits with status 0.
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <thread>

#include "apps/qrwkv/args.h"
#include "apps/qrwkv/command.h"
#include "server/http_server.h"

namespace qrwkv::app {

namespace {

int run_serve(int argc, char** argv) {
  Args a(
      "serve", "-m PATH [--host 127.0.0.1] [--port 8080] [-np N] [--api-key KEY] [options]",
      {
          {{"-m", "--model"}, "PATH", "model directory (weights, config, tokenizer) or GGUF file"},
          {{"--host"}, "ADDR", "address to listen on (default 127.0.0.1)"},
          {{"--port"}, "N", "port to listen on; 0 = any free port (default 8080)"},
          {{"-np", "--parallel"}, "N", "sequences generated together at most (default 4)"},
          {{"--api-key"}, "KEY", "require 'Authorization: Bearer KEY' on every request"},
          dtype_flag(),
          ubatch_flag(),
          {{"-t", "--threads"}, "N", "threads (default: one per physical core)"},
          {{"-n", "--n-predict"},
           "N",
           "max_tokens of a request that gives none; -1 = until a stop (default 2048)"},
          {{"--state-cache-mb"},
           "MB",
           "memory for cached prompt/reply states; 0 = no cache (default 1024)"},
          {{"--state-dir"},
           "DIR",
           "keep cached states on disk too: evicted ones and all at exit, reused after a "
           "restart"},
          {{"--state-dir-mb"}, "MB", "disk space for --state-dir (default 10240)"},
          {{"--max-body-mb"}, "MB", "largest request body accepted (default 16)"},
          {{"--max-queue"}, "N", "requests allowed to wait for a slot (default 256)"},
          {{"--prefill-chunk"},
           "N",
           "prompt tokens evaluated per step, all requests together (default 256)"},
          {{"--max-connections", "--http-threads"},
           "N",
           "connections served at once, one thread each; more get a 503 (default 512)"},
          {{"--read-timeout"},
           "S",
           "seconds a client may take to send a request before it is dropped (default 5)"},
          {{"--keep-alive-timeout"},
           "S",
           "seconds an idle keep-alive connection is kept (default 5)"},
          {{"--max-prompt-tokens"},
           "N",
           "longest prompt accepted, longer ones get a 400 (default: 131072 for QRWKV; for "
           "transformers what the KV caches of every slot fit in half the free memory)"},
          {{"--request-timeout"},
           "S",
           "seconds a request may take: a reply still going then ends with finish_reason "
           "\"length\", one still waiting or reading its prompt gets a 400 (default 600; 0: none)"},
          {{"--alias"}, "NAME", "model id reported and accepted (default: directory name)"},
          {{"--chat-template-file"}, "FILE", "use this Jinja chat template"},
          {{"-v", "--verbose"}, "", "log every request"},
      });
  a.parse(argc, argv);
  server::ServerOptions o;
  o.model_dir = model_dir(a);
  o.host = a.get("--host", o.host);
  const int64_t port = a.get_int("--port", o.port);
  if (port < 0 || port > 65535) throw UsageError("--port must be between 0 and 65535");
  o.port = static_cast<int>(port);
  const int64_t np = a.get_int("--parallel", o.n_parallel);
  if (np < 1 || np > 256) throw UsageError("-np must be between 1 and 256");
  o.n_parallel = static_cast<int>(np);
  o.api_key = a.get("--api-key");
  const int64_t threads = a.get_int("--threads", 0);
  if (threads < 0) throw UsageError("-t must be positive");
  o.threads = static_cast<int>(threads);
  o.format = weight_format(a);
  o.ubatch = load_options(a).ubatch;
  o.default_max_tokens = a.get_int("--n-predict", o.default_max_tokens);
  if (o.default_max_tokens < -1) throw UsageError("-n must be -1 or more");
  const int64_t cache_mb = a.get_int("--state-cache-mb", 1024);
  if (cache_mb < 0) throw UsageError("--state-cache-mb must not be negative");
  o.cache_bytes = static_cast<size_t>(cache_mb) << 20;
  o.state_dir = a.get("--state-dir");
  const int64_t dir_mb = a.get_int("--state-dir-mb", 10240);
  if (dir_mb < 1) throw UsageError("--state-dir-mb must be at least 1");
  o.state_dir_bytes = static_cast<size_t>(dir_mb) << 20;
  const int64_t body_mb = a.get_int("--max-body-mb", 16);
  if (body_mb < 1) throw UsageError("--max-body-mb must be at least 1");
  o.max_body_bytes = static_cast<size_t>(body_mb) << 20;
  const int64_t queue = a.get_int("--max-queue", 256);
  if (queue < 0) throw UsageError("--max-queue must not be negative");
  o.max_queue = static_cast<size_t>(queue);
  o.max_prompt_tokens = a.get_int("--max-prompt-tokens", 0);
  if (a.has("--max-prompt-tokens") && o.max_prompt_tokens < 1)
    throw UsageError("--max-prompt-tokens must be at least 1");
  o.request_timeout_s = a.get_double("--request-timeout", o.request_timeout_s);
  if (!(o.request_timeout_s >= 0)) throw UsageError("--request-timeout must not be negative");
  o.prefill_chunk = a.get_int("--prefill-chunk", o.prefill_chunk);
  if (o.prefill_chunk < 1) throw UsageError("--prefill-chunk must be at least 1");
  const int64_t conns = a.get_int("--max-connections", o.max_connections);
  if (conns < 1 || conns > 65536) throw UsageError("--max-connections must be between 1 and 65536");
  o.max_connections = static_cast<int>(conns);
  o.read_timeout_s = a.get_double("--read-timeout", o.read_timeout_s);
  if (!(o.read_timeout_s >= 0.01 && o.read_timeout_s <= 3600))
    throw UsageError("--read-timeout must be between 0.01 and 3600");
  const int64_t keep_s = a.get_int("--keep-alive-timeout", o.keep_alive_timeout_s);
  if (keep_s < 1 || keep_s > 3600)
    throw UsageError("--keep-alive-timeout must be between 1 and 3600");
  o.keep_alive_timeout_s = static_cast<int>(keep_s);
  o.alias = a.get("--alias");
  o.chat_template_file = a.get("--chat-template-file");
  o.verbose = a.has("--verbose");

  // The signals are blocked in every thread (threads inherit the mask) and taken by one
  // waiting thread, which can then stop the server with ordinary locking.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client that disconnects must not end the process

  server::HttpServer srv(o);
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&set, &sig);
    srv.stop();
  });
  struct StopWaiter {
    std::thread& t;
    ~StopWaiter() {
      // Wakes the waiter when the server ends for another reason (a load failure).
      pthread_kill(t.native_handle(), SIGTERM);
      t.join();
    }
  } stop_waiter{waiter};
  srv.start();
  srv.run();
  std::fprintf(stderr, "server stopped\n");
  return 0;
}

CommandRegistrar serve_cmd({"serve", "OpenAI-compatible HTTP server with batching and state cache",
                            &run_serve});

}  // namespace

}  // namespace qrwkv::app
