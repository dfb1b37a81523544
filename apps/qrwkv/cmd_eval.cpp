// eval: scores a model on task files the way lm-evaluation-harness does (log-likelihoods of
// continuations; acc, acc_norm, last-word accuracy and perplexity, rolling perplexities), with
// no server. --base-model prints a second model (a converted model's teacher) beside it with the
// difference per metric. Contexts are evaluated once and their state forked per continuation;
// --speedup measures that against scoring every context + continuation from scratch.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "apps/qrwkv/args.h"
#include "apps/qrwkv/command.h"
#include "runtime/eval.h"
#include "runtime/loader.h"

namespace qrwkv::app {

namespace {

using Clock = std::chrono::steady_clock;
using ojson = nlohmann::ordered_json;

struct ModelResult {
  std::string name;
  std::vector<eval::TaskRun> tasks;
  double seconds = 0;
  int64_t tokens = 0;  // tokens fed through the model
};

// A progress bar on stderr (only on a terminal): continuations scored, rate and time left.
class Progress {
 public:
  Progress(bool on, std::string label) : on_(on && ::isatty(2) != 0), label_(std::move(label)) {}
  void operator()(size_t done, size_t total) {
    if (!on_) return;
    const auto now = Clock::now();
    if (done < total && now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    const double s = std::chrono::duration<double>(now - start_).count();
    constexpr int kWidth = 30;
    const int fill = total == 0 ? kWidth : static_cast<int>(kWidth * done / total);
    const double eta =
        done == 0 ? 0 : s * static_cast<double>(total - done) / static_cast<double>(done);
    std::fprintf(stderr, "\r%s [%s%s] %zu/%zu  %.1f s  ETA %.0f s ", label_.c_str(),
                 std::string(static_cast<size_t>(fill), '#').c_str(),
                 std::string(static_cast<size_t>(kWidth - fill), '.').c_str(), done, total, s, eta);
    if (done == total) std::fprintf(stderr, "\n");
  }

 private:
  bool on_;
  std::string label_;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_{};
};

ModelResult evaluate(const LoadedModel& lm, const std::string& name,
                     const std::vector<eval::Task>& tasks, size_t max_length, size_t batch,
                     bool fork, bool progress) {
  ModelResult r;
  r.name = name;
  const int32_t prefix = eval::prefix_token(lm.tokenizer, lm.eos_ids);
  for (const eval::Task& t : tasks) {
    Progress bar(progress, name + " " + t.name);
    eval::ScoreOptions so;
    so.fork = fork;
    so.batch = batch;
    so.progress = [&bar](size_t d, size_t n) { bar(d, n); };
    eval::TaskRun tr = eval::run_task(lm.model, lm.tokenizer, prefix, t, max_length, so);
    r.seconds += tr.seconds;
    r.tokens += tr.tokens_fed;
    r.tasks.push_back(std::move(tr));
  }
  return r;
}

std::string fmt_value(const eval::Metric& m) {
  char buf[64];
  if (m.stderr_ >= 0)
    std::snprintf(buf, sizeof buf, "%.4f ± %.4f", m.value, m.stderr_);
  else
    std::snprintf(buf, sizeof buf, "%.4f", m.value);
  return buf;
}

ojson metric_json(const eval::Metric& m) {
  ojson j = {{"value", m.value}};
  j["stderr"] = m.stderr_ >= 0 ? ojson(m.stderr_) : ojson(nullptr);
  return j;
}

int run_eval(int argc, char** argv) {
  Args a(
      "eval", "-m PATH --task FILE [--task FILE ...] [--base-model PATH] [-o md|json]",
      {{{"-m", "--model"}, "PATH", "model directory or GGUF file"},
       {{"--task"},
        "FILE",
        "task file (repeatable): JSONL of {context, choices, gold} (multiple choice), {text} "
        "(last word) or {document} (perplexity), or a plain text file (perplexity); see "
        "docs/eval.md"},
       {{"--base-model"},
        "PATH",
        "a second model evaluated beside it (e.g. the teacher of a converted model), with "
        "the difference per metric"},
       {{"--limit"}, "N", "only the first N documents of each task"},
       {{"--max-length"}, "N", "tokens per perplexity window (lm-eval's max_length; default 2048)"},
       {{"-b", "--batch-size"}, "N", "continuations scored together (default 16)"},
       {{"--scratch"},
        "",
        "score every context + continuation from scratch instead of forking the context's "
        "state"},
       {{"--speedup"},
        "",
        "score the model both ways, check they agree and report the forked contexts' "
        "speed-up"},
       dtype_flag(),
       ubatch_flag(),
       {{"-t", "--threads"}, "N", "threads (default: physical cores)"},
       {{"--reference"}, "", "run on the float32 reference backend"},
       {{"-o", "--output"}, "md|json", "output format (default md)"},
       {{"-q", "--quiet"}, "", "no progress bar"}});
  a.parse(argc, argv);
  const std::vector<std::string> task_files = a.get_all("--task");
  if (task_files.empty()) throw UsageError("eval needs at least one --task FILE");
  const std::string fmt = a.get("--output", "md");
  if (fmt != "md" && fmt != "json") throw UsageError("-o must be md or json");
  const int64_t max_length = a.get_int("--max-length", 2048);
  if (max_length < 1) throw UsageError("--max-length must be at least 1");
  const int64_t batch = a.get_int("--batch-size", 16);
  if (batch < 1) throw UsageError("-b must be at least 1");
  const int64_t limit = a.get_int("--limit", -1);
  if (a.has("--limit") && limit < 1) throw UsageError("--limit must be at least 1");
  if (a.has("--scratch") && a.has("--speedup"))
    throw UsageError("--speedup runs both ways; drop --scratch");
  const bool progress = !a.has("--quiet");

  std::vector<eval::Task> tasks;
  for (const std::string& f : task_files) {
    eval::Task t = eval::load_task(f);
    if (limit > 0 && t.docs.size() > static_cast<size_t>(limit))
      t.docs.resize(static_cast<size_t>(limit));
    tasks.push_back(std::move(t));
  }

  LoadModelOptions lo;
  lo.model = load_options(a);
  const std::string dir = model_dir(a);
  const LoadedModel student = load_model(dir, lo);
  const std::string name = std::filesystem::path(dir).filename().string();
  const auto L = static_cast<size_t>(max_length);
  const auto B = static_cast<size_t>(batch);

  std::vector<ModelResult> results;
  std::optional<ModelResult> scratch;
  if (a.has("--base-model")) {
    const std::string base_dir = a.get("--base-model");
    const LoadedModel base = load_model(base_dir, lo);
    results.push_back(evaluate(base, std::filesystem::path(base_dir).filename().string(), tasks, L,
                               B, !a.has("--scratch"), progress));
  }
  results.push_back(evaluate(student, name, tasks, L, B, !a.has("--scratch"), progress));
  if (a.has("--speedup"))
    scratch = evaluate(student, name + " (scratch)", tasks, L, B, false, progress);
  const ModelResult& main = results.back();

  if (fmt == "json") {
    ojson j = ojson::object();
    for (const ModelResult& r : results) {
      ojson m = {{"seconds", r.seconds}, {"tokens_evaluated", r.tokens}};
      ojson ts = ojson::object();
      for (size_t t = 0; t < tasks.size(); ++t) {
        ojson tj = {{"kind", eval::task_kind_name(tasks[t].kind)},
                    {"docs", tasks[t].docs.size()},
                    {"requests", r.tasks[t].requests}};
        for (const auto& mt : r.tasks[t].metrics) tj[mt.name] = metric_json(mt);
        ts[tasks[t].name] = std::move(tj);
      }
      m["tasks"] = std::move(ts);
      j[r.name] = std::move(m);
    }
    if (scratch) {
      j["speedup"] = {{"forked_seconds", main.seconds},
                      {"scratch_seconds", scratch->seconds},
                      {"forked_tokens", main.tokens},
                      {"scratch_tokens", scratch->tokens},
                      {"speedup", scratch->seconds / main.seconds}};
    }
    std::printf("%s\n", j.dump(2).c_str());
  } else if (results.size() == 2) {
    const ModelResult& base = results[0];
    std::printf("| task | metric | %s | %s | Δ |\n| --- | --- | ---: | ---: | ---: |\n",
                base.name.c_str(), main.name.c_str());
    for (size_t t = 0; t < tasks.size(); ++t)
      for (size_t k = 0; k < main.tasks[t].metrics.size(); ++k) {
        const eval::Metric& mb = base.tasks[t].metrics[k];
        const eval::Metric& ms = main.tasks[t].metrics[k];
        std::printf("| %s | %s | %s | %s | %+.4f |\n", tasks[t].name.c_str(), ms.name.c_str(),
                    fmt_value(mb).c_str(), fmt_value(ms).c_str(), ms.value - mb.value);
      }
  } else {
    std::printf("| task | kind | docs | metric | value |\n| --- | --- | ---: | --- | ---: |\n");
    for (size_t t = 0; t < tasks.size(); ++t)
      for (const auto& m : main.tasks[t].metrics)
        std::printf("| %s | %s | %zu | %s | %s |\n", tasks[t].name.c_str(),
                    eval::task_kind_name(tasks[t].kind), tasks[t].docs.size(), m.name.c_str(),
                    fmt_value(m).c_str());
  }
  if (fmt == "md") {
    std::printf("\n");
    for (const ModelResult& r : results)
      std::printf("%s: %lld tokens evaluated in %.2f s (%s)\n", r.name.c_str(),
                  static_cast<long long>(r.tokens), r.seconds,
                  a.has("--scratch") ? "every continuation from scratch" : "contexts forked");
    if (scratch)
      std::printf("from scratch: %lld tokens in %.2f s; forking the contexts is %.2fx faster\n",
                  static_cast<long long>(scratch->tokens), scratch->seconds,
                  scratch->seconds / main.seconds);
  }
  if (scratch) {
    // Both ways compute the same log-likelihoods: the metrics must agree.
    for (size_t t = 0; t < tasks.size(); ++t)
      for (size_t k = 0; k < main.tasks[t].metrics.size(); ++k) {
        const double x = main.tasks[t].metrics[k].value, y = scratch->tasks[t].metrics[k].value;
        if (std::abs(x - y) > 1e-4 * std::max(1.0, std::abs(x)))
          fail(tasks[t].name, "forked and from-scratch scoring disagree on " +
                                  main.tasks[t].metrics[k].name + ": " + std::to_string(x) +
                                  " vs " + std::to_string(y));
      }
  }
  return 0;
}

CommandRegistrar eval_cmd({"eval", "score a model on task files as lm-evaluation-harness does",
                           &run_eval});

}  // namespace

}  // namespace qrwkv::app
