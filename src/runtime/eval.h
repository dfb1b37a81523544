// Evaluation as lm-evaluation-harness defines it, without a server: log-likelihood requests,
// three task shapes and their metrics.
//
// Every metric reduces to log-likelihood requests: log P(continuation | context), summed over
// the continuation's tokens, and whether each of those tokens was the most likely one (greedy).
// Requests that share a context form a group; the context is evaluated once and its state
// copied for every continuation (the state is a value: a QRWKV6 state is a fixed-size copy, a
// transformer's is its KV cache), which is where scoring multiple choices costs little more
// than scoring one. `fork = false` scores every context + continuation from scratch instead,
// for comparison; the results are the same.
//
// Task files (JSON Lines, one document per line; docs/eval.md):
//   {"context": "...", "choices": ["...", ...], "gold": i}  multiple choice → acc, acc_norm
//     (each choice follows the context after "target_delimiter", default " ", as in lm-eval)
//   {"text": "..."}                                          last word (LAMBADA) → acc, perplexity
//   {"document": "..."} (or a plain-text file: one document) rolling perplexity → word_perplexity,
//                                                            byte_perplexity, bits_per_byte
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/model.h"
#include "text/tokenizer.h"

namespace qrwkv::eval {

// Continuations scored after one shared context (never empty: an empty text context is the
// prefix token, as lm-eval does).
struct Group {
  std::vector<int32_t> context;
  std::vector<std::vector<int32_t>> continuations;
};

struct Score {
  double logprob = 0;  // Σ log P(token | everything before it) over the continuation
  bool greedy = true;  // every continuation token was the argmax (lowest id among ties)
};

struct ScoreOptions {
  bool fork = true;    // evaluate each context once and copy its state per continuation
  size_t batch = 16;   // continuations evaluated together (their contexts too)
  size_t chunk = 256;  // tokens per sequence per forward pass (bounds the logits' memory)
  // Called after each batch with the continuations done so far and their total.
  std::function<void(size_t, size_t)> progress;
};

// Scores every continuation of every group: result[g][c].
std::vector<std::vector<Score>> score(const Model& m, std::span<const Group> groups,
                                      const ScoreOptions& options = {});

enum class TaskKind { MultipleChoice, LastWord, Perplexity };
const char* task_kind_name(TaskKind k);

struct Doc {
  std::string context;               // multiple choice; last word: the text before the word
  std::vector<std::string> choices;  // multiple choice; last word: {" " + the last word}
  // Between the context and a choice (lm-eval's target_delimiter); not part of the choice's
  // length for acc_norm.
  std::string delimiter = " ";
  int gold = 0;
  std::string text;  // perplexity: the document
};

struct Task {
  std::string name;  // the file's name without its extension
  TaskKind kind = TaskKind::MultipleChoice;
  std::vector<Doc> docs;
};

// Reads a task file; Error naming the file and line for anything malformed.
Task load_task(const std::string& path);
// The same from the file's text: JSON Lines, or (jsonl false) one plain-text document; `path`
// names it in errors.
Task parse_task(std::string_view text, const std::string& name, bool jsonl,
                const std::string& path);

// The token that conditions the first token of a text: BOS when the tokenizer has one, else its
// EOS, else the model's first end-of-generation id (lm-eval's prefix_token_id).
int32_t prefix_token(const Tokenizer& tok, const std::set<int32_t>& eos_ids);

// lm-eval's pair encoding: trailing spaces of the context move to the continuation, the
// continuation's tokens are those of context + continuation after the context's tokens; an
// empty context is the prefix token.
std::pair<std::vector<int32_t>, std::vector<int32_t>> encode_pair(const Tokenizer& tok,
                                                                  const std::string& context,
                                                                  const std::string& continuation,
                                                                  int32_t prefix);

// lm-eval's rolling windows (context_len 1): the tokens split into windows of at most
// max_length predicted tokens, each conditioned on the token before it (the prefix token for
// the first).
std::vector<Group> rolling_windows(std::span<const int32_t> tokens, int32_t prefix,
                                   size_t max_length);

struct Metric {
  std::string name;
  double value = 0;
  double stderr_ = -1;  // < 0: none (lm-eval gives none for the perplexities)
};

// The requests of a task, and its metrics from their scores.
struct TaskRequests {
  std::vector<Group> groups;
  // For perplexity: which document each group belongs to.
  std::vector<size_t> doc_of_group;
};
TaskRequests task_requests(const Task& t, const Tokenizer& tok, int32_t prefix, size_t max_length);
std::vector<Metric> task_metrics(const Task& t, const TaskRequests& r,
                                 const std::vector<std::vector<Score>>& scores);

// Tokens a scoring run feeds through the model: each context once (forked) or once per
// continuation (from scratch), and every continuation token but the last.
int64_t fed_tokens(std::span<const Group> groups, bool fork);

// One task on one model: its requests scored and its metrics.
struct TaskRun {
  std::vector<Metric> metrics;
  size_t requests = 0;     // continuations scored
  int64_t tokens_fed = 0;  // fed_tokens()
  double seconds = 0;      // scoring time
};
TaskRun run_task(const Model& m, const Tokenizer& tok, int32_t prefix, const Task& t,
                 size_t max_length, const ScoreOptions& options = {});

// Mean and lm-eval's standard error of the mean (sample standard deviation / √n).
std::pair<double, double> mean_stderr(std::span<const double> x);

// Words as lm-eval counts them: len(re.split(r"\s+", text)).
size_t count_words(std::string_view s);

}  // namespace qrwkv::eval
