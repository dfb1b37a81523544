#include "server/http_server.h"

#include <dirent.h>
#include <httplib.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "backend/cpu/features.h"
#include "io/bytes.h"
#include "io/error.h"
#include "io/mapped_file.h"
#include "model/model.h"
#include "runtime/generator.h"
#include "runtime/limits.h"
#include "runtime/loader.h"
#include "server/api.h"
#include "server/connection_queue.h"
#include "server/scheduler.h"
#include "server/tool_calls.h"
#include "text/chat_template.h"
#include "text/tok_utf8.h"
#include "text/tokenizer.h"

namespace qrwkv::server {

namespace {

using Clock = std::chrono::steady_clock;

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string random_id(const char* prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* hex = "0123456789abcdef";
  std::string id = prefix;
  for (int i = 0; i < 24; ++i) id += hex[rng() % 16];
  return id;
}

void send_json(httplib::Response& res, int status, const ojson& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  send_json(res, e.status, error_body(e));
}

std::string sse(const ojson& j) { return "data: " + dump(j) + "\n\n"; }

// The socket of the connection a request arrived on. This cpp-httplib version does not give it
// to handlers, so it is found among the process's descriptors by its two endpoints (one scan
// per generation request). -1 when it cannot be found.
int connection_socket(const httplib::Request& req) {
  if (req.remote_port <= 0 || req.local_port <= 0) return -1;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  int found = -1;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == ::dirfd(d)) continue;
    struct stat st {};
    if (::fstat(static_cast<int>(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage peer{}, local{};
    socklen_t peer_len = sizeof peer, local_len = sizeof local;
    if (::getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0 ||
        ::getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &local_len) != 0)
      continue;
    char host[NI_MAXHOST], port[NI_MAXSERV], lport[NI_MAXSERV];
    if (::getnameinfo(reinterpret_cast<sockaddr*>(&peer), peer_len, host, sizeof host, port,
                      sizeof port, NI_NUMERICHOST | NI_NUMERICSERV) != 0 ||
        ::getnameinfo(reinterpret_cast<sockaddr*>(&local), local_len, nullptr, 0, lport,
                      sizeof lport, NI_NUMERICSERV) != 0)
      continue;
    if (req.remote_addr == host && std::atoi(port) == req.remote_port &&
        std::atoi(lport) == req.local_port) {
      found = static_cast<int>(fd);
      break;
    }
  }
  ::closedir(d);
  return found;
}

// Whether the client closed (or reset) the connection: the socket reads as end of stream or
// fails. Bytes of a next pipelined request stay in the socket (peeked, not read).
bool peer_closed(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  if ((p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) return true;
  if ((p.revents & POLLIN) == 0) return false;
  char c;
  const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

// Identifies the model for the disk tier of the state cache: a state file is only used by the
// same shapes, the same weights and the same numerics (`variant`: the --dtype format and the
// kernels' level, both of which change the states a prompt leads to). The weights are sampled
// (their sizes and first and last megabyte), which tells apart any two checkpoints met in
// practice without reading them all.
uint64_t model_key(const std::string& dir, const Config& c, const std::string& variant) {
  uint64_t h = model_fingerprint(c);
  auto mix = [&h](const void* data, size_t n) { h = fnv1a(data, n, h); };
  mix(variant.data(), variant.size());
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const std::string ext = e.path().extension().string();
    if (name == "config.json" || ext == ".safetensors" || ext == ".bin" || ext == ".gguf")
      files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  constexpr size_t kSample = size_t{1} << 20;
  std::vector<char> buf(kSample);
  for (const auto& f : files) {
    const std::string name = f.filename().string();
    mix(name.data(), name.size());
    const uint64_t size = std::filesystem::file_size(f, ec);
    mix(&size, sizeof size);
    std::ifstream in(f, std::ios::binary);
    in.read(buf.data(), static_cast<std::streamsize>(std::min<uint64_t>(size, kSample)));
    mix(buf.data(), static_cast<size_t>(in.gcount()));
    if (size > kSample) {
      in.clear();
      in.seekg(static_cast<std::streamoff>(size - kSample));
      in.read(buf.data(), static_cast<std::streamsize>(kSample));
      mix(buf.data(), static_cast<size_t>(in.gcount()));
    }
  }
  return h;
}

// A token of a logprobs object; `lp` is null for the first echoed prompt token, which nothing
// predicts.
struct LpToken {
  int32_t id;
  const TokenLogprob* lp;
};

// The legacy completions logprobs object: tokens (their text), token_logprobs, top_logprobs
// (token text → logprob; the chosen token is included, as OpenAI does) and text_offset, counted
// from `offset`, which is advanced past the tokens.
ojson completion_logprobs(const Tokenizer& tok, std::span<const LpToken> tokens, int64_t& offset) {
  ojson strs = ojson::array(), lps = ojson::array(), tops = ojson::array(),
        offsets = ojson::array();
  for (const LpToken& t : tokens) {
    const std::string text = tok.decode_bytes({&t.id, 1});
    strs.push_back(text);
    offsets.push_back(offset);
    offset += static_cast<int64_t>(tok::char_count(text));  // text_offset counts characters
    if (t.lp == nullptr) {
      lps.push_back(nullptr);
      tops.push_back(nullptr);
      continue;
    }
    lps.push_back(t.lp->logprob);
    ojson top = ojson::object();
    for (const TopLogprob& a : t.lp->top) top[tok.decode_bytes({&a.id, 1})] = a.logprob;
    if (!top.contains(text)) top[text] = t.lp->logprob;
    tops.push_back(std::move(top));
  }
  return {{"tokens", std::move(strs)},
          {"token_logprobs", std::move(lps)},
          {"top_logprobs", std::move(tops)},
          {"text_offset", std::move(offsets)}};
}

// The chat logprobs object: {"content": [{token, logprob, bytes, top_logprobs: [...]}]}.
ojson chat_logprobs(const Tokenizer& tok, const std::vector<TokenLogprob>& lps) {
  auto entry = [&tok](int32_t id, double logprob) {
    const std::string text = tok.decode_bytes({&id, 1});
    ojson bytes = ojson::array();
    for (char c : text) bytes.push_back(static_cast<unsigned char>(c));
    return ojson{{"token", text}, {"logprob", logprob}, {"bytes", std::move(bytes)}};
  };
  ojson content = ojson::array();
  for (const TokenLogprob& t : lps) {
    ojson e = entry(t.id, t.logprob);
    ojson top = ojson::array();
    for (const TopLogprob& a : t.top) top.push_back(entry(a.id, a.logprob));
    e["top_logprobs"] = std::move(top);
    content.push_back(std::move(e));
  }
  return {{"content", std::move(content)}, {"refusal", nullptr}};
}

// The prompt's tokens for an echoed logprobs object: the first unscored, the others with the
// scores of Event index -1.
std::vector<LpToken> prompt_tokens(const std::vector<int32_t>& prompt,
                                   const std::vector<TokenLogprob>& scored) {
  std::vector<LpToken> out;
  for (size_t i = 0; i < prompt.size(); ++i)
    out.push_back({prompt[i], i > 0 && i - 1 < scored.size() ? &scored[i - 1] : nullptr});
  return out;
}

std::vector<LpToken> reply_tokens(const std::vector<TokenLogprob>& lps) {
  std::vector<LpToken> out;
  for (const TokenLogprob& t : lps) out.push_back({t.id, &t});
  return out;
}

// Cancels the jobs of a request unless released: a request that fails half-way (a full queue
// after some of its prompts were queued, a client gone) leaves nothing running.
struct CancelJobs {
  std::vector<std::shared_ptr<Job>>& jobs;
  bool armed = true;
  ~CancelJobs() {
    if (armed)
      for (auto& j : jobs) j->cancel();
  }
};

// The model's loaded parts; they exist once loading is over and stay until the server ends.
struct Loaded {
  Model model;
  Tokenizer tokenizer;
  ChatTemplate chat_template;
  std::set<int32_t> eos;
};

}  // namespace

struct HttpServer::Impl {
  ServerOptions opt;
  std::string model_id;
  httplib::Server http;
  std::thread listener;
  std::atomic<bool> listener_done{false};
  std::atomic<bool> ready{false};
  std::unique_ptr<Loaded> loaded;
  std::unique_ptr<Scheduler> scheduler;
  int64_t max_prompt_tokens = 0;  // set when the model is loaded
  std::mutex template_mu;  // renders one at a time; the Jinja engine is not audited for sharing
  const Clock::time_point started = Clock::now();
  int64_t created = unix_time();

  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool stop_requested = false;

  // Request counters by route and outcome, for /metrics.
  std::mutex metrics_mu;
  std::map<std::pair<std::string, int>, int64_t> requests;

  explicit Impl(ServerOptions o) : opt(std::move(o)) {
    model_id = opt.alias;
    if (model_id.empty()) {
      std::filesystem::path p(opt.model_dir);
      if (!p.has_filename()) p = p.parent_path();
      model_id = p.filename().string();
    }
  }

  void count(const httplib::Request& req, const httplib::Response& res) {
    // Unknown paths share one label, so that clients cannot grow the table without bound.
    static const std::set<std::string> known = {
        "/health",         "/v1/health",           "/v1/models",
        "/models",         "/v1/chat/completions", "/chat/completions",
        "/v1/completions", "/completions",         "/tokenize",
        "/detokenize",     "/apply-template",      "/metrics",
        "/tokenizer_info"};
    std::lock_guard<std::mutex> lock(metrics_mu);
    ++requests[{known.count(req.path) ? req.path : "other", res.status}];
  }

  RequestLimits limits() const {
    RequestLimits l;
    l.max_n = opt.n_parallel;
    l.vocab_size = loaded->model.config.vocab_size;
    l.default_max_tokens = opt.default_max_tokens;
    return l;
  }

  void check_model(const std::string& requested) const {
    if (requested.empty() || requested == model_id || requested == opt.model_dir) return;
    throw ApiError(
        404, "invalid_request_error", "model_not_found",
        "the model '" + requested + "' does not exist; this server serves '" + model_id + "'",
        "model");
  }

  std::string render(const ojson& input) {
    try {
      std::lock_guard<std::mutex> lock(template_mu);
      return loaded->chat_template.render(input);
    } catch (const Error& e) {
      throw ApiError(400, "invalid_request_error", "template_error",
                     std::string("the chat template failed on these messages: ") + e.what(),
                     "messages");
    }
  }

  std::vector<int32_t> encode(const std::string& text) {
    std::vector<int32_t> ids = loaded->tokenizer.encode(text);
    if (ids.empty()) bad_request("prompt", "the prompt has no tokens");
    return ids;
  }

  // `param`: the request field the prompt came from, named by a limit error.
  std::shared_ptr<Job> make_job(std::vector<int32_t> prompt, const GenParams& g,
                                const char* param) {
    const std::string over =
        prompt_limit_message(static_cast<int64_t>(prompt.size()), max_prompt_tokens);
    if (!over.empty())
      throw ApiError(400, "invalid_request_error", "context_length_exceeded",
                     "this server's maximum prompt length is " + std::to_string(max_prompt_tokens) +
                         " tokens: " + over,
                     param);
    auto job = std::make_shared<Job>();
    if (opt.request_timeout_s > 0) {
      job->timeout_seconds = opt.request_timeout_s;
      job->deadline = std::chrono::steady_clock::now() +
                      std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                          std::chrono::duration<double>(opt.request_timeout_s));
    }
    job->prompt = std::move(prompt);
    job->n = g.n;
    job->sampling = g.sampling;
    if (!g.has_seed) job->sampling.seed = std::random_device{}();
    job->stop = g.stop;
    job->max_tokens = g.max_tokens;
    job->ignore_eos = g.ignore_eos;
    job->json = g.json;
    job->logprobs = g.logprobs;
    return job;
  }

  static ojson usage_json(const Usage& u) {
    return {{"prompt_tokens", u.prompt_tokens},
            {"completion_tokens", u.completion_tokens},
            {"total_tokens", u.prompt_tokens + u.completion_tokens},
            {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
  }

  // The whole output of a job: per choice its text, finish reason and reply logprobs, and the
  // prompt's scores (prompt_logprobs).
  struct Collected {
    std::vector<std::string> text, finish;
    std::vector<std::vector<TokenLogprob>> logprobs;
    std::vector<TokenLogprob> prompt_logprobs;
  };

  // What a failed job tells its client: a limit it ran into (400) or a server failure (500).
  static ApiError job_error(const Job& job, const std::string& message) {
    if (job.failed_on_limit())
      return ApiError(400, "invalid_request_error", "request_timeout", message);
    return ApiError(500, "server_error", "generation_failed", message);
  }

  // Waits for the whole output of a job. A client that hangs up meanwhile cancels the job, which
  // frees its slots at the next step (the connection is checked between waits).
  static Collected collect(const httplib::Request& req, Job& job) {
    Collected c;
    const auto n = static_cast<size_t>(job.n);
    c.text.assign(n, "");
    c.finish.assign(n, "");
    c.logprobs.assign(n, {});
    const int fd = connection_socket(req);
    std::vector<Event> ev;
    for (;;) {
      const bool over = job.wait(ev, std::chrono::milliseconds(100));
      if (!over && !job.cancelled() && fd >= 0 && peer_closed(fd)) job.cancel();
      for (auto& e : ev) {
        if (e.index < 0) {
          c.prompt_logprobs = std::move(e.logprobs);
          continue;
        }
        const auto i = static_cast<size_t>(e.index);
        c.text[i] += e.text;
        if (!e.finish_reason.empty()) c.finish[i] = e.finish_reason;
        for (auto& t : e.logprobs) c.logprobs[i].push_back(std::move(t));
      }
      ev.clear();
      if (over) break;
    }
    if (auto err = job.error()) throw job_error(job, *err);
    return c;
  }

  // Streams a job as Server-Sent Events. `chat` selects chat.completion.chunk objects, otherwise
  // text_completion ones. A client that goes away makes a write fail; the job is then cancelled
  // and its slots are free at the next step.
  // With `tools`, tool calls in the text are sent as delta.tool_calls (ToolCallStream). With
  // `echo` (completions), each choice starts with the prompt's text, and its logprobs when the
  // job scores the prompt.
  struct StreamOptions {
    bool chat = false;
    bool include_usage = false;
    bool tools = false;
    bool echo = false;
    std::string echo_text;
  };
  void stream(httplib::Response& res, std::shared_ptr<Job> job, StreamOptions so) {
    const bool chat = so.chat, include_usage = so.include_usage;
    struct StreamState {
      std::shared_ptr<Job> job;
      std::string id;
      int64_t created;
      bool started = false;
      bool finished = false;
      std::vector<ToolCallStream> tool_calls;  // per choice, with tools
      std::vector<int64_t> offsets;            // per choice: text_offset of its next token
    };
    auto st = std::make_shared<StreamState>();
    st->job = std::move(job);
    if (so.tools) st->tool_calls.resize(static_cast<size_t>(st->job->n));
    st->offsets.assign(static_cast<size_t>(st->job->n), 0);
    const Tokenizer* tok = &loaded->tokenizer;
    st->id = random_id(chat ? "chatcmpl-" : "cmpl-");
    st->created = unix_time();
    const std::string model = model_id;
    // With include_usage every chunk carries "usage": null and one more chunk, with no
    // choices, carries the usage, as OpenAI sends them.
    auto object = [st, model, chat, include_usage](ojson choices, ojson usage) {
      ojson j = {{"id", st->id},
                 {"object", chat ? "chat.completion.chunk" : "text_completion"},
                 {"created", st->created},
                 {"model", model},
                 {"system_fingerprint", nullptr},
                 {"choices", std::move(choices)}};
      if (include_usage) j["usage"] = std::move(usage);
      return j;
    };
    auto chunk = [object](ojson choices) { return sse(object(std::move(choices), nullptr)); };
    // The logprobs field of a chunk carrying these reply tokens (null when not asked for).
    auto lp_field = [st, tok, chat](int index, const std::vector<TokenLogprob>& lps) -> ojson {
      if (st->job->logprobs < 0) return nullptr;
      if (chat) return chat_logprobs(*tok, lps);
      const std::vector<LpToken> t = reply_tokens(lps);
      return completion_logprobs(*tok, t, st->offsets[static_cast<size_t>(index)]);
    };
    auto choice = [chat](int index, const std::string* text, const std::string& finish, bool role) {
      ojson c = {{"index", index}};
      if (chat) {
        ojson delta = ojson::object();
        if (role) delta["role"] = "assistant";
        if (text != nullptr) delta["content"] = *text;
        c["delta"] = std::move(delta);
      } else {
        c["text"] = text != nullptr ? *text : "";
      }
      c["logprobs"] = nullptr;
      c["finish_reason"] = finish.empty() ? ojson(nullptr) : ojson(finish);
      return c;
    };
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    res.set_chunked_content_provider(
        "text/event-stream",
        [st, object, chunk, choice, lp_field, include_usage, so, tok](size_t,
                                                                      httplib::DataSink& sink) {
          if (st->finished) return true;
          Job& j = *st->job;
          std::string out;
          if (!st->started) {
            st->started = true;
            // An echo without prompt scores is known now; with them it waits for event -1.
            const std::string first = so.echo && !j.prompt_logprobs ? so.echo_text : "";
            for (int i = 0; i < j.n; ++i) {
              out += chunk(ojson::array({choice(i, &first, "", true)}));
              st->offsets[static_cast<size_t>(i)] = static_cast<int64_t>(tok::char_count(first));
            }
          }
          std::vector<Event> ev;
          const bool over = j.wait(ev, std::chrono::milliseconds(200));
          for (const Event& e : ev) {
            if (e.index < 0) {
              if (!so.echo) continue;
              const std::vector<LpToken> t = prompt_tokens(j.prompt, e.logprobs);
              for (int i = 0; i < j.n; ++i) {
                ojson c = choice(i, &so.echo_text, "", false);
                c["logprobs"] = completion_logprobs(*tok, t, st->offsets[static_cast<size_t>(i)]);
                out += chunk(ojson::array({std::move(c)}));
              }
              continue;
            }
            if (!st->tool_calls.empty()) {
              ToolCallStream& tc = st->tool_calls[static_cast<size_t>(e.index)];
              std::vector<ojson> deltas = tc.push(e.text);
              std::string finish = e.finish_reason;
              if (!finish.empty()) {
                for (ojson& d : tc.flush()) deltas.push_back(std::move(d));
                if (finish == "stop" && tc.saw_calls()) finish = "tool_calls";
              }
              for (ojson& d : deltas) {
                ojson c = choice(e.index, nullptr, "", false);
                c["delta"] = std::move(d);
                out += chunk(ojson::array({std::move(c)}));
              }
              if (!finish.empty())
                out += chunk(ojson::array({choice(e.index, nullptr, finish, false)}));
              continue;
            }
            if (!e.text.empty() || !e.logprobs.empty()) {
              ojson c = choice(e.index, &e.text, "", false);
              c["logprobs"] = lp_field(e.index, e.logprobs);
              out += chunk(ojson::array({std::move(c)}));
            }
            if (!e.finish_reason.empty())
              out += chunk(ojson::array({choice(e.index, nullptr, e.finish_reason, false)}));
          }
          if (over) {
            if (auto err = j.error()) {
              if (!j.cancelled()) out += sse(error_body(job_error(j, *err)));
            } else {
              if (include_usage) out += sse(object(ojson::array(), usage_json(j.usage())));
              out += "data: [DONE]\n\n";
            }
          }
          if (!out.empty() && !sink.write(out.data(), out.size())) {
            j.cancel();
            return false;
          }
          if (over) {
            st->finished = true;
            sink.done();
          }
          return true;
        },
        [st](bool success) {
          // Ends the job when the stream stops early (a write failed or the server stops).
          if (!success || !st->finished) st->job->cancel();
        });
  }

  void handle_chat(const httplib::Request& req, httplib::Response& res) {
    const ChatRequest r = parse_chat_request(req.body, limits());
    check_model(r.model);
    std::shared_ptr<Job> job = make_job(encode(render(r.template_input)), r.gen, "messages");
    scheduler->submit(job);
    if (r.gen.stream) return stream(res, job, {true, r.gen.include_usage, r.tools, false, ""});
    Collected c = collect(req, *job);
    ojson choices = ojson::array();
    for (size_t i = 0; i < static_cast<size_t>(job->n); ++i) {
      ojson message = chat_message(c.text[i], r.tools, c.finish[i]);
      choices.push_back(
          {{"index", i},
           {"message", std::move(message)},
           {"logprobs",
            r.gen.logprobs >= 0 ? chat_logprobs(loaded->tokenizer, c.logprobs[i]) : ojson(nullptr)},
           {"finish_reason", c.finish[i]}});
    }
    send_json(res, 200,
              {{"id", random_id("chatcmpl-")},
               {"object", "chat.completion"},
               {"created", unix_time()},
               {"model", model_id},
               {"system_fingerprint", nullptr},
               {"choices", std::move(choices)},
               {"usage", usage_json(job->usage())}});
  }

  // Text completions. Several prompts run as separate jobs side by side; their choices are
  // numbered prompt_index * n + choice_index. With echo, each choice's text (and logprobs
  // object) starts with the prompt.
  void handle_completion(const httplib::Request& req, httplib::Response& res) {
    const CompletionRequest r = parse_completion_request(req.body, limits());
    check_model(r.model);
    std::vector<std::shared_ptr<Job>> jobs;
    for (const PromptInput& p : r.prompts) {
      jobs.push_back(make_job(p.has_ids ? p.ids : encode(p.text), r.gen, "prompt"));
      jobs.back()->prompt_logprobs = r.echo && r.gen.logprobs >= 0;
    }
    auto echo_text = [&](size_t k) {
      if (!r.echo) return std::string();
      return r.prompts[k].has_ids ? loaded->tokenizer.decode(jobs[k]->prompt) : r.prompts[k].text;
    };
    CancelJobs guard{jobs};
    for (auto& j : jobs) scheduler->submit(j);
    if (r.gen.stream) {
      guard.armed = false;  // the stream cancels its job when it ends early
      return stream(res, jobs[0], {false, r.gen.include_usage, false, r.echo, echo_text(0)});
    }
    ojson choices = ojson::array();
    Usage total;
    for (size_t k = 0; k < jobs.size(); ++k) {
      Collected c = collect(req, *jobs[k]);
      const std::string prompt_text = echo_text(k);
      for (size_t i = 0; i < static_cast<size_t>(r.gen.n); ++i) {
        ojson lp = nullptr;
        if (r.gen.logprobs >= 0) {
          std::vector<LpToken> t;
          if (r.echo) t = prompt_tokens(jobs[k]->prompt, c.prompt_logprobs);
          for (const LpToken& x : reply_tokens(c.logprobs[i])) t.push_back(x);
          int64_t offset = 0;
          lp = completion_logprobs(loaded->tokenizer, t, offset);
        }
        choices.push_back({{"text", prompt_text + c.text[i]},
                           {"index", k * static_cast<size_t>(r.gen.n) + i},
                           {"logprobs", std::move(lp)},
                           {"finish_reason", c.finish[i]}});
      }
      const Usage u = jobs[k]->usage();
      total.prompt_tokens += u.prompt_tokens;
      total.completion_tokens += u.completion_tokens;
      total.cached_tokens += u.cached_tokens;
    }
    guard.armed = false;
    send_json(res, 200,
              {{"id", random_id("cmpl-")},
               {"object", "text_completion"},
               {"created", unix_time()},
               {"model", model_id},
               {"system_fingerprint", nullptr},
               {"choices", std::move(choices)},
               {"usage", usage_json(total)}});
  }

  std::string metrics_text() {
    std::ostringstream o;
    auto metric = [&](const char* name, const char* type, const char* help, double v) {
      o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n'
        << name << ' ' << v << '\n';
    };
    {
      std::lock_guard<std::mutex> lock(metrics_mu);
      o << "# HELP qrwkv_http_requests_total HTTP requests answered, by path and status.\n"
           "# TYPE qrwkv_http_requests_total counter\n";
      for (const auto& [k, n] : requests)
        o << "qrwkv_http_requests_total{path=\"" << k.first << "\",status=\"" << k.second << "\"} "
          << n << '\n';
    }
    metric("qrwkv_connections_refused_total", "counter",
           "Connections refused with a 503 because every connection thread was busy.",
           static_cast<double>(ConnectionQueue::refused_total()));
    if (!ready.load()) return o.str();  // the scheduler is being created
    const SchedulerStats s = scheduler->stats();
    metric("qrwkv_requests_finished_total", "counter", "Generation requests completed.",
           static_cast<double>(s.requests_finished));
    metric("qrwkv_requests_cancelled_total", "counter",
           "Generation requests dropped because the client went away.",
           static_cast<double>(s.requests_cancelled));
    metric("qrwkv_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.",
           static_cast<double>(s.prompt_tokens));
    metric("qrwkv_prompt_tokens_processed_total", "counter",
           "Prompt tokens fed through the model (the others came from the state cache).",
           static_cast<double>(s.prompt_tokens_processed));
    metric("qrwkv_tokens_generated_total", "counter", "Tokens generated.",
           static_cast<double>(s.generated_tokens));
    metric("qrwkv_tokens_per_second", "gauge",
           "Generated tokens per second over the last five seconds.", s.tokens_per_second);
    metric("qrwkv_model_busy_seconds_total", "counter", "Seconds spent evaluating the model.",
           s.busy_seconds);
    metric("qrwkv_batch_steps_total", "counter", "Batched model evaluations.",
           static_cast<double>(s.steps));
    metric("qrwkv_decode_batch_size", "gauge", "Sequences decoded by the latest step.",
           static_cast<double>(s.last_batch_size));
    metric("qrwkv_queue_depth", "gauge", "Requests waiting for a free slot.",
           static_cast<double>(s.queue_depth));
    metric("qrwkv_active_sequences", "gauge", "Slots in use.",
           static_cast<double>(s.active_sequences));
    metric("qrwkv_slots", "gauge", "Parallel slots (-np).", opt.n_parallel);
    metric("qrwkv_state_cache_entries", "gauge", "Cached states.",
           static_cast<double>(s.cache_entries));
    metric("qrwkv_state_cache_bytes", "gauge", "Bytes held by cached states.",
           static_cast<double>(s.cache_bytes));
    metric("qrwkv_state_dir_entries", "gauge", "Cached states on disk (--state-dir).",
           static_cast<double>(s.disk_entries));
    metric("qrwkv_state_dir_bytes", "gauge", "Bytes of cached states on disk (--state-dir).",
           static_cast<double>(s.disk_bytes));
    metric("qrwkv_state_cache_hits_total", "counter", "Requests that started from a cached state.",
           static_cast<double>(s.cache_hits));
    metric("qrwkv_state_cache_misses_total", "counter",
           "Requests that started from the empty state.", static_cast<double>(s.cache_misses));
    return o.str();
  }

  // Every route: failures of the request become OpenAI error objects.
  template <class F>
  httplib::Server::Handler wrap(F f) {
    return [this, f](const httplib::Request& req, httplib::Response& res) {
      try {
        (this->*f)(req, res);
      } catch (const ApiError& e) {
        send_error(res, e);
      } catch (const Error& e) {
        send_error(res, ApiError(400, "invalid_request_error", "invalid_request", e.what()));
      } catch (const std::exception& e) {
        send_error(res, ApiError(500, "server_error", "internal_error", e.what()));
      }
    };
  }

  void handle_health(const httplib::Request&, httplib::Response& res) {
    if (!ready.load()) throw ApiError(503, "unavailable_error", "loading", "the model is loading");
    send_json(res, 200, {{"status", "ok"}});
  }

  void handle_models(const httplib::Request&, httplib::Response& res) {
    send_json(res, 200,
              {{"object", "list"},
               {"data", ojson::array({{{"id", model_id},
                                       {"object", "model"},
                                       {"created", created},
                                       {"owned_by", "qrwkv"}}})}});
  }

  void handle_tokenize(const httplib::Request& req, httplib::Response& res) {
    const TokenizeRequest r = parse_tokenize_request(req.body);
    std::vector<int32_t> ids = loaded->tokenizer.encode(r.content);
    if (r.add_special && loaded->tokenizer.config().add_bos_token)
      if (const auto bos = loaded->tokenizer.bos_id()) ids.insert(ids.begin(), *bos);
    ojson tokens = ojson::array();
    for (int32_t id : ids) {
      if (r.with_pieces)
        tokens.push_back({{"id", id}, {"piece", loaded->tokenizer.decode({&id, 1})}});
      else
        tokens.push_back(id);
    }
    send_json(res, 200,
              {{"tokens", std::move(tokens)},
               {"count", ids.size()},
               {"max_model_len", loaded->model.config.max_position_embeddings}});
  }

  void handle_detokenize(const httplib::Request& req, httplib::Response& res) {
    const std::vector<int32_t> ids =
        parse_detokenize_request(req.body, loaded->tokenizer.vocab_size());
    // llama.cpp answers "content", vLLM (and lm-eval's remote tokenizer) reads "prompt".
    const std::string text = loaded->tokenizer.decode(ids);
    send_json(res, 200, {{"content", text}, {"prompt", text}});
  }

  // GET /tokenizer_info (vLLM): the special tokens and the chat template. lm-evaluation-harness
  // finds a server's own tokenizer through it ("eos_token") and /tokenize.
  void handle_tokenizer_info(const httplib::Request&, httplib::Response& res) {
    const TokenizerConfig& tc = loaded->tokenizer.config();
    auto or_null = [](const std::optional<std::string>& s) {
      return s ? ojson(*s) : ojson(nullptr);
    };
    std::optional<std::string> eos = tc.eos_token;
    if (!eos && !loaded->eos.empty())
      eos = loaded->tokenizer.decode_bytes({&*loaded->eos.begin(), 1});
    send_json(res, 200,
              {{"tokenizer_class", "PreTrainedTokenizerFast"},
               {"eos_token", or_null(eos)},
               {"bos_token", or_null(tc.bos_token)},
               {"pad_token", or_null(tc.pad_token)},
               {"unk_token", or_null(tc.unk_token)},
               {"add_bos_token", tc.add_bos_token},
               {"model_max_length", loaded->model.config.max_position_embeddings},
               {"chat_template", loaded->chat_template.source()}});
  }

  void handle_apply_template(const httplib::Request& req, httplib::Response& res) {
    send_json(res, 200, {{"prompt", render(parse_template_request(req.body))}});
  }

  void handle_metrics(const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(), "text/plain; version=0.0.4");
  }

  void setup_routes() {
    // One worker per connection up to max_connections (connection_queue.h); connections beyond
    // are refused with a 503 below. Each worker waits on a silent client at most the read or
    // keep-alive timeout; request headers are bounded by cpp-httplib (8 KiB).
    const size_t threads = static_cast<size_t>(opt.max_connections);
    http.new_task_queue = [threads] { return new ConnectionQueue(threads, 64); };
    http.set_payload_max_length(opt.max_body_bytes);
    http.set_keep_alive_timeout(opt.keep_alive_timeout_s);
    http.set_read_timeout(std::chrono::duration<double>(opt.read_timeout_s));
    http.set_keep_alive_max_count(static_cast<size_t>(std::max(1, opt.keep_alive_max_requests)));
    // Streamed tokens are small writes; without this, Nagle's algorithm holds each one back
    // until the previous one is acknowledged.
    http.set_tcp_nodelay(true);
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (ConnectionQueue::refusing()) {
        send_error(res, ApiError(503, "unavailable_error", "too_many_connections",
                                 "the server has all its " + std::to_string(opt.max_connections) +
                                     " connections busy (--max-connections); try again"));
        res.set_header("Connection", "close");
        return httplib::Server::HandlerResponse::Handled;
      }
      if (req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
      if (!opt.api_key.empty()) {
        const std::string auth = req.get_header_value("Authorization");
        if (auth != "Bearer " + opt.api_key) {
          send_error(res, ApiError(401, "authentication_error", "invalid_api_key",
                                   auth.empty() ? "no API key given (Authorization: Bearer KEY)"
                                                : "invalid API key"));
          return httplib::Server::HandlerResponse::Handled;
        }
      }
      if (!ready.load() && req.path != "/metrics") {
        send_error(res, ApiError(503, "unavailable_error", "loading", "the model is loading"));
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http.set_error_handler(
        httplib::Server::HandlerWithResponse([](const httplib::Request&, httplib::Response& res) {
          // Errors raised by the HTTP layer itself (no route, body too large, unreadable request)
          // get an error object too; responses the routes built are left as they are.
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
          std::string type = "invalid_request_error", code, message;
          switch (res.status) {
            case 404:
              code = "not_found";
              message = "no such endpoint";
              break;
            case 405:
              code = "method_not_allowed";
              message = "method not allowed";
              break;
            case 413:
              code = "body_too_large";
              message = "the request body is too large";
              break;
            case 414:
              code = "uri_too_long";
              message = "the request URI is too long";
              break;
            default:
              code = "bad_request";
              message = "the request could not be read";
              if (res.status >= 500) type = "server_error";
          }
          send_error(res, ApiError(res.status, type, code, message));
          return httplib::Server::HandlerResponse::Handled;
        }));
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      count(req, res);
      if (opt.verbose)
        std::fprintf(stderr, "%s %s -> %d\n", req.method.c_str(), req.path.c_str(), res.status);
    });
    http.Get("/health", wrap(&Impl::handle_health));
    http.Get("/v1/health", wrap(&Impl::handle_health));
    http.Get("/v1/models", wrap(&Impl::handle_models));
    http.Get("/models", wrap(&Impl::handle_models));
    http.Post("/v1/chat/completions", wrap(&Impl::handle_chat));
    http.Post("/chat/completions", wrap(&Impl::handle_chat));
    http.Post("/v1/completions", wrap(&Impl::handle_completion));
    http.Post("/completions", wrap(&Impl::handle_completion));
    http.Post("/tokenize", wrap(&Impl::handle_tokenize));
    http.Post("/detokenize", wrap(&Impl::handle_detokenize));
    http.Get("/tokenizer_info", wrap(&Impl::handle_tokenizer_info));
    http.Post("/apply-template", wrap(&Impl::handle_apply_template));
    http.Get("/metrics", wrap(&Impl::handle_metrics));
  }

  void load() {
    LoadModelOptions lo;
    lo.model.format = opt.format;
    lo.model.threads = opt.threads;
    lo.model.ubatch = opt.ubatch;
    lo.chat_template = true;
    lo.chat_template_file = opt.chat_template_file;
    LoadedModel lm = load_model(opt.model_dir, lo);
    const double seconds = lm.seconds;
    std::set<int32_t> eos = lm.eos_ids;
    loaded = std::make_unique<Loaded>(
        Loaded{std::move(lm.model), std::move(lm.tokenizer), std::move(*lm.chat_template), eos});
    SchedulerOptions so;
    so.n_parallel = opt.n_parallel;
    so.cache_bytes = opt.cache_bytes;
    so.max_queue = opt.max_queue;
    so.prefill_chunk = opt.prefill_chunk;
    if (!opt.state_dir.empty()) {
      so.disk.dir = opt.state_dir;
      so.disk.budget_bytes = opt.state_dir_bytes;
      so.disk.model_key = model_key(
          opt.model_dir, loaded->model.config,
          std::string(weight_format_name(opt.format)) + " " + cpu::isa_name(cpu::default_isa()));
    }
    max_prompt_tokens = opt.max_prompt_tokens > 0
                            ? opt.max_prompt_tokens
                            : default_max_prompt_tokens(loaded->model, opt.n_parallel);
    scheduler = std::make_unique<Scheduler>(loaded->model, loaded->tokenizer, std::move(eos), so);
    std::fprintf(stderr, "model %s loaded in %.2f s (%s); %d slots, prompts up to %lld tokens\n",
                 model_id.c_str(), seconds, arch_name(loaded->model.config.arch), opt.n_parallel,
                 static_cast<long long>(max_prompt_tokens));
  }

  void shutdown() {
    // Ending the jobs first lets every handler waiting on one return, so that the HTTP
    // threads can be joined.
    if (scheduler) scheduler->stop();
    http.stop();
    if (listener.joinable()) listener.join();
  }
};

HttpServer::HttpServer(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

HttpServer::~HttpServer() { impl_->shutdown(); }

int HttpServer::start() {
  Impl& s = *impl_;
  s.setup_routes();
  // The listening socket, to widen its accept queue after binding: cpp-httplib listens with a
  // backlog of 5, so a burst of connections overflows it and each dropped SYN costs its client
  // a one-second retransmission. The options are cpp-httplib's defaults otherwise.
  int listen_fd = -1;
  s.http.set_socket_options([&listen_fd](int fd) {
    const int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listen_fd = fd;
  });
  int port = s.opt.port;
  if (port == 0) {
    port = s.http.bind_to_any_port(s.opt.host);
    if (port <= 0) fail(s.opt.host, "cannot bind a port");
  } else if (!s.http.bind_to_port(s.opt.host, port)) {
    fail(s.opt.host + ":" + std::to_string(port), "cannot bind (in use, or not a local address)");
  }
  if (listen_fd >= 0) ::listen(listen_fd, SOMAXCONN);
  s.listener = std::thread([&s] {
    s.http.listen_after_bind();
    s.listener_done.store(true);
  });
  // Server::stop() only acts on a running server: wait until it runs, so that a stop right
  // after start (a model that fails to load) cannot be lost.
  while (!s.http.is_running() && !s.listener_done.load())
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::fprintf(stderr, "listening on http://%s:%d\n", s.opt.host.c_str(), port);
  return port;
}

void HttpServer::run() {
  Impl& s = *impl_;
  try {
    s.load();
  } catch (...) {
    s.shutdown();
    throw;
  }
  s.ready.store(true);
  std::fprintf(stderr, "ready\n");
  std::unique_lock<std::mutex> lock(s.stop_mu);
  s.stop_cv.wait(lock, [&] { return s.stop_requested; });
  lock.unlock();
  s.shutdown();
}

void HttpServer::stop() {
  {
    std::lock_guard<std::mutex> lock(impl_->stop_mu);
    impl_->stop_requested = true;
  }
  impl_->stop_cv.notify_all();
}

}  // namespace qrwkv::server
