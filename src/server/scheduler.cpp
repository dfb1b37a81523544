#include "server/scheduler.h"

#include <algorithm>
#include <cstdio>

#include "io/error.h"
#include "runtime/stop.h"
#include "server/api.h"

namespace qrwkv::server {

using Clock = std::chrono::steady_clock;

// ---- Job ----------------------------------------------------------------------------------

bool Job::wait(std::vector<Event>& out, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return !events_.empty() || over_; });
  while (!events_.empty()) {
    out.push_back(std::move(events_.front()));
    events_.pop_front();
  }
  return over_;
}

Usage Job::usage() const {
  std::lock_guard<std::mutex> lock(mu_);
  return usage_;
}

std::optional<std::string> Job::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

void Job::push(Event e) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(e));
  }
  cv_.notify_all();
}

void Job::finish(const Usage& u) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    usage_ = u;
    over_ = true;
  }
  cv_.notify_all();
}

bool Job::failed_on_limit() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_.has_value() && limit_;
}

void Job::fail(const std::string& message, bool limit) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (over_) return;
    error_ = message;
    limit_ = limit;
    over_ = true;
  }
  cv_.notify_all();
}

// ---- Scheduler ----------------------------------------------------------------------------

struct Scheduler::Choice {
  Choice(const Tokenizer& tok, const SamplerParams& p, const GenerateOptions& opt)
      : sampler(p), reply(tok, sampler, opt) {}
  int index = 0;
  State state;
  Sampler sampler;
  Reply reply;
  std::vector<float> logits;           // after the last token in `state`
  std::vector<TokenLogprob> logprobs;  // of reply tokens not yet sent in an event
  size_t fed = 0;                      // reply tokens fed into `state`
  bool pending = false;                // the reply's last token is to be fed at the next step
  bool done = false;
};

struct Scheduler::Active {
  std::shared_ptr<Job> job;
  GenerateOptions options;  // the job's limits, as every choice's Reply reads them
  int slots = 1;
  // Prompt phase: the state and how many prompt tokens it holds.
  bool prefilling = true;
  State state;
  size_t fed = 0;
  std::vector<float> logits;
  // With prompt_logprobs: the logits of every position of the chunk in flight [n, V], and the
  // scores of prompt tokens 1..fed.
  std::vector<float> chunk_logits;
  std::vector<TokenLogprob> prompt_logprobs;
  // Reply phase.
  std::vector<std::unique_ptr<Choice>> choices;
  Usage usage;
};

Scheduler::Scheduler(const Model& model, const Tokenizer& tokenizer, std::set<int32_t> eos_ids,
                     SchedulerOptions options)
    : model_(&model),
      tokenizer_(&tokenizer),
      eos_ids_(std::move(eos_ids)),
      options_(options),
      cache_(model.config, options.cache_bytes, options.disk) {
  options_.n_parallel = std::max(1, options_.n_parallel);
  options_.prefill_chunk = std::max<int64_t>(1, options_.prefill_chunk);
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() { stop(); }

void Scheduler::submit(const std::shared_ptr<Job>& job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) throw ApiError(503, "server_error", "shutting_down", "the server is stopping");
    if (queue_.size() >= options_.max_queue)
      throw ApiError(503, "server_error", "overloaded",
                     "the server is overloaded: " + std::to_string(queue_.size()) +
                         " requests are waiting; retry later");
    queue_.push_back(job);
  }
  cv_.notify_all();
}

void Scheduler::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  return stats_;
}

void Scheduler::loop() {
  for (;;) {
    std::vector<std::shared_ptr<Job>> admitted;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !active_.empty() || !queue_.empty(); });
      if (stopping_) {
        for (auto& j : queue_) j->fail("the server is stopping");
        queue_.clear();
        break;
      }
      admit(admitted);
    }
    try {
      for (auto& j : admitted) start(j);
      retire_finished();
      if (!active_.empty()) step();
      retire_finished();
    } catch (const std::exception& e) {
      // Nothing here should throw; if something does, the requests in flight end with the
      // error and the server goes on with the next ones.
      for (auto& a : active_) a->job->fail(std::string("internal error: ") + e.what());
      for (auto& j : admitted) j->fail(std::string("internal error: ") + e.what());
      active_.clear();
      slots_used_ = 0;
    }
    {
      std::lock_guard<std::mutex> lock(stats_mu_);
      stats_.active_sequences = slots_used_;
      stats_.cache_entries = static_cast<int64_t>(cache_.entries());
      stats_.cache_bytes = static_cast<int64_t>(cache_.bytes());
      stats_.disk_entries = static_cast<int64_t>(cache_.disk_entries());
      stats_.disk_bytes = static_cast<int64_t>(cache_.disk_bytes());
    }
    // A queue that cannot be admitted yet (no free slot) waits for the next step, which the
    // active sequences guarantee; an idle scheduler sleeps in the wait above.
  }
  for (auto& a : active_) a->job->fail("the server is stopping");
  active_.clear();
  // What the memory tier holds goes to the disk tier, for the next start.
  try {
    cache_.persist();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "state-dir: cannot save the cached states: %s\n", e.what());
  }
}

// Takes jobs from the head of the queue while their choices fit in the free slots (mu_ held).
// Cancelled jobs leave the queue without running.
void Scheduler::admit(std::vector<std::shared_ptr<Job>>& admitted) {
  int64_t cancelled = 0;
  for (auto it = queue_.begin(); it != queue_.end();) {
    if ((*it)->cancelled()) {
      (*it)->fail("cancelled");
      it = queue_.erase(it);
      ++cancelled;
    } else {
      ++it;
    }
  }
  while (!queue_.empty()) {
    const int need = std::min(queue_.front()->n, options_.n_parallel);
    if (slots_used_ + need > options_.n_parallel) break;
    slots_used_ += need;
    admitted.push_back(queue_.front());
    queue_.pop_front();
  }
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.queue_depth = static_cast<int64_t>(queue_.size());
  stats_.requests_cancelled += cancelled;
}

void Scheduler::start(const std::shared_ptr<Job>& job) {
  auto a = std::make_unique<Active>();
  a->job = job;
  a->slots = std::min(job->n, options_.n_parallel);
  a->usage.prompt_tokens = static_cast<int64_t>(job->prompt.size());
  a->options.n_predict = job->max_tokens;
  a->options.stop_strings = job->stop;
  a->options.ignore_eos = job->ignore_eos;
  a->options.eos_ids = eos_ids_;
  a->options.json = job->json;
  std::optional<CacheHit> hit;
  if (!job->prompt_logprobs) hit = cache_.lookup(job->prompt);
  if (hit) {
    a->state = std::move(hit->state);
    a->fed = hit->n_tokens;
    a->logits = std::move(hit->logits);
    a->usage.cached_tokens = static_cast<int64_t>(hit->n_tokens);
  } else {
    a->state = model_->new_state();
  }
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.prompt_tokens += a->usage.prompt_tokens;
    stats_.prompt_tokens_processed += a->usage.prompt_tokens - a->usage.cached_tokens;
    (a->usage.cached_tokens > 0 ? stats_.cache_hits : stats_.cache_misses) += 1;
  }
  if (a->fed == job->prompt.size()) fork_choices(*a);
  active_.push_back(std::move(a));
}

// Jobs past their deadline: replies end as if they had reached max_tokens; a job still reading
// its prompt fails with a limit error (its client gets a 400, or an error event when streaming).
void Scheduler::end_overdue() {
  const auto now = Clock::now();
  for (auto& a : active_) {
    Job& job = *a->job;
    if (job.cancelled() || now < job.deadline) continue;
    if (a->prefilling) {
      char msg[200];
      std::snprintf(msg, sizeof msg,
                    "the request ran past its time limit of %g s (--request-timeout) with %zu of "
                    "its %zu prompt tokens read",
                    job.timeout_seconds, a->fed, job.prompt.size());
      job.fail(msg, true);
      job.cancel();
      continue;
    }
    for (auto& c : a->choices) {
      if (c->done) continue;
      c->reply.finish("length");
      finish_choice(*a, *c, c->reply.take_text());
    }
  }
}

void Scheduler::step() {
  end_overdue();
  std::vector<SequenceInput> batch;
  // Where each batch row's logits go, and who to hand them to afterwards.
  struct Row {
    Active* active;
    Choice* choice;  // null for a prompt chunk
    size_t n_tokens;
    bool last_chunk;
  };
  std::vector<Row> rows;
  std::vector<std::vector<float>> prompt_logits;
  const int64_t V = model_->config.vocab_size;
  int64_t decode_rows = 0;
  // Prompt tokens are evaluated at most prefill_chunk per step, over all sequences together, so
  // that a burst of new prompts delays the decoding sequences by one bounded step at a time.
  size_t prefill_budget = static_cast<size_t>(options_.prefill_chunk);
  for (auto& a : active_) {
    if (a->job->cancelled()) continue;
    if (a->prefilling) {
      const auto& prompt = a->job->prompt;
      const size_t n = std::min(prompt.size() - a->fed, prefill_budget);
      if (n == 0) continue;
      prefill_budget -= n;
      const bool last = a->fed + n == prompt.size();
      if (last) a->logits.assign(static_cast<size_t>(V), 0.0f);
      const std::span<const int32_t> chunk(prompt.data() + a->fed, n);
      if (a->job->prompt_logprobs) {
        a->chunk_logits.resize(n * static_cast<size_t>(V));
        batch.push_back({&a->state, chunk, a->chunk_logits.data(), true});
      } else {
        batch.push_back({&a->state, chunk, last ? a->logits.data() : nullptr, false});
      }
      rows.push_back({a.get(), nullptr, n, last});
    } else {
      for (auto& c : a->choices) {
        if (c->done || !c->pending) continue;
        batch.push_back({&c->state, std::span<const int32_t>(&c->reply.tokens().back(), 1),
                         c->logits.data(), false});
        rows.push_back({a.get(), c.get(), 1, true});
        ++decode_rows;
      }
    }
  }
  if (batch.empty()) return;
  const auto t0 = Clock::now();
  try {
    forward_batch(*model_, batch);
  } catch (const std::exception& e) {
    // Inputs are validated before they are queued, so this is an internal failure; the jobs of
    // this batch cannot continue, but the server can.
    for (const Row& r : rows) {
      r.active->job->fail(std::string("generation failed: ") + e.what());
      r.active->job->cancel();
    }
    return;
  }
  const auto t1 = Clock::now();
  int64_t generated_before = 0;
  for (const auto& a : active_) generated_before += a->usage.completion_tokens;
  for (const Row& r : rows) {
    if (r.choice == nullptr) {
      if (r.active->job->prompt_logprobs) score_prompt(*r.active, r.n_tokens, r.last_chunk);
      r.active->fed += r.n_tokens;
      if (r.last_chunk) fork_choices(*r.active);
    } else {
      r.choice->pending = false;
      ++r.choice->fed;
      sample(*r.active, *r.choice);
    }
  }
  int64_t generated_after = 0;
  for (const auto& a : active_) generated_after += a->usage.completion_tokens;
  const int64_t generated = generated_after - generated_before;

  std::lock_guard<std::mutex> lock(stats_mu_);
  ++stats_.steps;
  stats_.busy_seconds += std::chrono::duration<double>(t1 - t0).count();
  stats_.last_batch_size = decode_rows;
  stats_.generated_tokens += generated;
  // Throughput over a sliding window of the last few seconds.
  constexpr auto kWindow = std::chrono::seconds(5);
  recent_.emplace_back(t1, generated);
  while (!recent_.empty() && t1 - recent_.front().first > kWindow) recent_.pop_front();
  int64_t sum = 0;
  for (const auto& e : recent_) sum += e.second;
  const double span =
      std::max(1e-3, std::chrono::duration<double>(t1 - recent_.front().first).count());
  stats_.tokens_per_second = recent_.size() > 1 ? static_cast<double>(sum) / span : 0.0;
}

// Scores the prompt tokens that the chunk just evaluated predicts: row i of the chunk's logits
// predicts prompt token fed + i + 1. The last row of the prompt's last chunk is its logits.
void Scheduler::score_prompt(Active& a, size_t n, bool last_chunk) {
  const auto V = static_cast<size_t>(model_->config.vocab_size);
  const auto& prompt = a.job->prompt;
  for (size_t i = 0; i < n; ++i) {
    const size_t next = a.fed + i + 1;
    if (next >= prompt.size()) break;
    const std::span<const float> row(a.chunk_logits.data() + i * V, V);
    a.prompt_logprobs.push_back(token_logprob(row, prompt[next], std::max(0, a.job->logprobs)));
  }
  if (last_chunk) std::copy_n(a.chunk_logits.data() + (n - 1) * V, V, a.logits.begin());
}

// The prompt is in a->state and its last logits in a->logits: keep a snapshot, then give every
// choice its own copy of both and draw its first token.
void Scheduler::fork_choices(Active& a) {
  a.prefilling = false;
  const Job& job = *a.job;
  if (a.usage.cached_tokens < static_cast<int64_t>(job.prompt.size()))
    cache_.insert(job.prompt, a.state, a.logits);
  for (int i = 0; i < job.n; ++i) {
    SamplerParams p = job.sampling;
    p.seed = job.sampling.seed + static_cast<uint64_t>(i);
    auto c = std::make_unique<Choice>(*tokenizer_, p, a.options);
    c->index = i;
    // The last choice takes the prompt's state itself instead of a copy.
    c->state = i + 1 == job.n ? std::move(a.state) : a.state;
    c->logits = i + 1 == job.n ? std::move(a.logits) : a.logits;
    for (int32_t t : job.prompt) c->sampler.accept(t);
    a.choices.push_back(std::move(c));
  }
  if (job.prompt_logprobs) {
    a.job->push({-1, "", "", std::move(a.prompt_logprobs)});
    a.chunk_logits = {};
  }
  for (auto& c : a.choices) sample(a, *c);
}

// Draws the next token of a choice from its logits and decides whether it goes on.
void Scheduler::sample(Active& a, Choice& c) {
  if (const std::optional<int32_t> t = c.reply.next(c.logits)) {
    ++a.usage.completion_tokens;
    if (a.job->logprobs >= 0) c.logprobs.push_back(token_logprob(c.logits, *t, a.job->logprobs));
  }
  std::string text = c.reply.take_text();
  if (c.reply.done()) {
    finish_choice(a, c, std::move(text));
    return;
  }
  if (!text.empty() || !c.logprobs.empty())
    a.job->push({c.index, std::move(text), "", std::move(c.logprobs)});
  c.logprobs.clear();
  c.pending = true;
}

void Scheduler::finish_choice(Active& a, Choice& c, std::string rest) {
  a.job->push({c.index, std::move(rest), c.reply.finish_reason(), std::move(c.logprobs)});
  c.logprobs.clear();
  c.done = true;
  c.pending = false;
  // The state at the end of the reply: the next turn of a conversation starts with these
  // tokens. One choice is enough to keep.
  if (c.index == 0 && c.fed > 0 && !a.job->cancelled()) {
    std::vector<int32_t> tokens = a.job->prompt;
    const auto& reply = c.reply.tokens();
    tokens.insert(tokens.end(), reply.begin(), reply.begin() + static_cast<long>(c.fed));
    cache_.insert(std::move(tokens), std::move(c.state), std::move(c.logits));
  }
  c.state = State();
  c.logits.clear();
}

void Scheduler::retire_finished() {
  bool freed = false;
  for (auto it = active_.begin(); it != active_.end();) {
    Active& a = **it;
    const bool all_done = !a.prefilling && std::all_of(a.choices.begin(), a.choices.end(),
                                                       [](const auto& c) { return c->done; });
    const bool cancelled = a.job->cancelled();
    if (!cancelled && !all_done) {
      ++it;
      continue;
    }
    // The counters move before the client is told, so that what it reads next includes it.
    {
      std::lock_guard<std::mutex> lock(stats_mu_);
      ++(cancelled ? stats_.requests_cancelled : stats_.requests_finished);
    }
    if (cancelled)
      a.job->fail("cancelled");
    else
      a.job->finish(a.usage);
    slots_used_ -= a.slots;
    it = active_.erase(it);
    freed = true;
  }
  // Freed slots may let queued jobs in.
  if (freed) cv_.notify_all();
}

}  // namespace qrwkv::server
