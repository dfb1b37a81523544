// Text generation on top of the forward pass. `Reply` is the one generation loop body of the
// engine: it draws each token from the logits, decides when the reply ends (end-of-generation
// token, stop string, token limit, complete JSON document) and turns tokens into text. It never
// evaluates the model: `generate()` below drives it one sequence at a time (the CLI), the
// server's scheduler drives many of them in batches.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/model.h"
#include "runtime/json_prefix.h"
#include "runtime/sampler.h"
#include "runtime/stop.h"
#include "text/tokenizer.h"

namespace qrwkv {

struct GenerateOptions {
  int64_t n_predict = -1;  // maximum new tokens; -1: until a stop
  std::vector<std::string> stop_strings;
  bool ignore_eos = false;
  std::set<int32_t> eos_ids;
  // Constrains the reply to one JSON document with this top level (response_format); the reply
  // ends when the document is complete.
  std::optional<JsonPrefixValidator::TopLevel> json;
  const std::atomic<bool>* interrupt = nullptr;  // generate(): checked before every token
};

class Reply {
 public:
  // `sampler` and `opt` must outlive the reply. The sampler should have accepted the context's
  // tokens already (for its penalties).
  Reply(const Tokenizer& tok, Sampler& sampler, const GenerateOptions& opt);

  // Draws the next token from `logits` (those after the context and the reply so far). Returns
  // it, or nothing when the reply ended without one (end-of-generation token, token limit
  // reached before, no token can continue a JSON document). A returned token is part of the
  // reply; the reply may have ended with it (done()), in which case the caller need not feed it.
  std::optional<int32_t> next(std::span<const float> logits);
  // Ends the reply now with `reason` (e.g. "interrupted"), unless it has ended already.
  void finish(const std::string& reason);

  bool done() const { return !finish_reason_.empty(); }
  // "stop", "length" or what finish() was given; empty while the reply goes on.
  const std::string& finish_reason() const { return finish_reason_; }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  // Text produced since the last call, in complete UTF-8 characters, never containing a stop
  // string; what was held back is released when the reply ends.
  std::string take_text();

 private:
  int32_t sample_json(std::span<const float> logits);
  void end(const std::string& reason);

  const Tokenizer* tok_;
  Sampler* sampler_;
  const GenerateOptions* opt_;
  TokenStreamDecoder decoder_;
  StopStrings stops_;
  std::optional<JsonPrefixValidator> json_;
  std::vector<float> masked_;  // sample_json's copy of the logits
  std::vector<int32_t> tokens_;
  std::string text_;
  std::string finish_reason_;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated tokens, end-of-generation token excluded
  std::string text;             // the text emitted (stop string and what follows excluded)
  std::string finish_reason;    // "stop", "length" or "interrupted"
  double seconds = 0;
};

// Feeds `tokens` into `state` and returns the logits of the last one ([V]).
std::vector<float> prefill(const Model& m, State& state, std::span<const int32_t> tokens);

// Generates from `logits` (those after the context held in `state`). Every token of the reply is
// fed into `state`, so afterwards the state holds the context plus the whole reply. `on_text`
// receives the reply as it is produced (Reply::take_text).
GenerateResult generate(const Model& m, const Tokenizer& tok, State& state,
                        std::vector<float> logits, Sampler& sampler, const GenerateOptions& opt,
                        const std::function<void(std::string_view)>& on_text);

}  // namespace qrwkv
