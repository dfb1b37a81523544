// The scheduler: one thread that owns the model and runs every generation request of the
// server with continuous batching.
//
// HTTP threads never touch the model (its thread pool takes one caller at a time); they hand a
// Job to submit() and read its events. The scheduler thread admits queued jobs while fewer than
// n_parallel sequences are active (a job with n choices takes n of them), and then loops: one
// forward_batch per step evaluates, for every active sequence, either the next chunk of its
// prompt or the one token it sampled last. A new job therefore joins between two steps, a
// finished or cancelled one leaves between two steps, and nobody waits for a whole other
// request to end.
//
// Each job owns its state: it starts from a copy of a cached snapshot or from the empty state,
// and its choices are copies of the state after the prompt. The kernels compute every token of a
// batch exactly as they would alone, so a seeded request gives the same bytes whether it runs
// alone or among others.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "model/model.h"
#include "runtime/generator.h"
#include "runtime/json_prefix.h"
#include "runtime/logprobs.h"
#include "runtime/sampler.h"
#include "server/state_cache.h"
#include "text/tokenizer.h"

namespace qrwkv::server {

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // over all choices
  int64_t cached_tokens = 0;      // prompt tokens taken from the state cache
};

// A piece of one choice's output. The last event of a choice has a finish_reason
// ("stop" or "length"). With Job::logprobs, an event carries the log-probabilities of the reply
// tokens drawn since the choice's previous event (the text may lag behind them: a possible stop
// string is held back). A job with prompt_logprobs gets one event with index -1 before any
// choice's output, carrying the prompt's tokens 1.. scored.
struct Event {
  int index = 0;
  std::string text;
  std::string finish_reason;
  std::vector<TokenLogprob> logprobs;
};

// One request: its inputs (set before submit, then read-only) and the channel its output
// travels through, from the scheduler thread to the HTTP thread that serves it.
class Job {
 public:
  std::vector<int32_t> prompt;
  int n = 1;
  SamplerParams sampling;  // choice i uses seed sampling.seed + i
  std::vector<std::string> stop;
  int64_t max_tokens = -1;  // -1: until a stop
  bool ignore_eos = false;
  // Constrains every choice to a JSON document with this top level (response_format); the
  // choice ends when the document is complete.
  std::optional<JsonPrefixValidator::TopLevel> json;
  // Log-probabilities (log-softmax of the raw logits): `logprobs` >= 0 scores every reply token,
  // with that many most likely alternatives; `prompt_logprobs` scores the prompt's tokens too
  // (the state cache is then bypassed, since every prompt position must be evaluated).
  int logprobs = -1;
  bool prompt_logprobs = false;
  // The time by which the job must be over (--request-timeout): a reply still going then ends
  // with finish_reason "length"; a job still waiting or reading its prompt fails with a limit
  // error. `timeout_seconds` is what the messages quote.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  double timeout_seconds = 0;

  // Waits up to `timeout` for output and moves what arrived into `out`. Returns true once the
  // job is over (finished, failed or cancelled) and everything has been taken.
  bool wait(std::vector<Event>& out, std::chrono::milliseconds timeout);
  // Asks the scheduler to drop the job (the client went away); its slots are freed at the next
  // step.
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }
  // Valid once wait() returned true.
  Usage usage() const;
  std::optional<std::string> error() const;
  // Whether error() is a request limit the client can act on (a 400), not a server failure.
  bool failed_on_limit() const;

  // Producer side, used by the scheduler thread.
  void push(Event e);
  void finish(const Usage& u);
  void fail(const std::string& message, bool limit = false);

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
  bool over_ = false;
  Usage usage_;
  std::optional<std::string> error_;
  bool limit_ = false;
  std::atomic<bool> cancelled_{false};
};

struct SchedulerOptions {
  int n_parallel = 4;                // sequences decoded together at most
  size_t cache_bytes = 1024u << 20;  // state cache budget; 0 disables the cache
  size_t max_queue = 256;            // jobs waiting beyond this are refused (503)
  int64_t prefill_chunk = 256;       // prompt tokens evaluated per step, all sequences together
  DiskTierOptions disk;              // the state cache's disk tier (--state-dir)
};

// Counters for /metrics; read under the scheduler's stats lock.
struct SchedulerStats {
  int64_t requests_finished = 0;
  int64_t requests_cancelled = 0;
  int64_t requests_failed = 0;
  int64_t prompt_tokens = 0;            // prompt tokens of admitted jobs
  int64_t prompt_tokens_processed = 0;  // of those, fed through the model (the rest was cached)
  int64_t generated_tokens = 0;
  int64_t cache_hits = 0;
  int64_t cache_misses = 0;
  int64_t steps = 0;
  double busy_seconds = 0;       // time spent in forward_batch
  double tokens_per_second = 0;  // generated tokens per second over the last few seconds
  int64_t queue_depth = 0;
  int64_t active_sequences = 0;
  int64_t last_batch_size = 0;
  int64_t cache_entries = 0;
  int64_t cache_bytes = 0;
  int64_t disk_entries = 0;
  int64_t disk_bytes = 0;
};

class Scheduler {
 public:
  Scheduler(const Model& model, const Tokenizer& tokenizer, std::set<int32_t> eos_ids,
            SchedulerOptions options);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a job. Throws ApiError 503 when the queue is full or the scheduler is stopping.
  void submit(const std::shared_ptr<Job>& job);
  // Ends every job (with an error) and joins the thread.
  void stop();

  SchedulerStats stats() const;
  const SchedulerOptions& options() const { return options_; }

 private:
  struct Choice;
  struct Active;
  void loop();
  void admit(std::vector<std::shared_ptr<Job>>& admitted);
  void start(const std::shared_ptr<Job>& job);
  void step();
  void score_prompt(Active& a, size_t n, bool last_chunk);
  void fork_choices(Active& a);
  void sample(Active& a, Choice& c);
  void finish_choice(Active& a, Choice& c, std::string rest);
  void retire_finished();
  void end_overdue();

  const Model* model_;
  const Tokenizer* tokenizer_;
  std::set<int32_t> eos_ids_;
  SchedulerOptions options_;
  StateCache cache_;

  std::mutex mu_;  // guards queue_, stopping_
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stopping_ = false;

  // Owned by the scheduler thread.
  std::list<std::unique_ptr<Active>> active_;
  int slots_used_ = 0;

  mutable std::mutex stats_mu_;
  SchedulerStats stats_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, int64_t>> recent_;

  std::thread thread_;
};

}  // namespace qrwkv::server
