// Text generation on top of the forward pass: prefill, the sample-feed loop with stop
// conditions, and streaming of complete UTF-8 text.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/model.h"
#include "runtime/sampler.h"
#include "text/tokenizer.h"

namespace qrwkv {

// Every end-of-generation id the model declares: config.json eos_token_id (an id or a list),
// generation_config.json eos_token_id, tokenizer_config.json eos_token, and for ChatML models
// <|im_end|> and <|endoftext|>.
std::set<int32_t> end_of_generation_ids(const std::string& model_dir, const Config& config,
                                        const Tokenizer& tokenizer);

struct GenerateOptions {
  int64_t n_predict = -1;  // maximum new tokens; -1: until a stop
  std::vector<std::string> stop_strings;
  bool ignore_eos = false;
  std::set<int32_t> eos_ids;
  const std::atomic<bool>* interrupt = nullptr;  // checked before every token
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated tokens, end-of-generation token excluded
  std::string text;             // the text emitted (stop string and what follows excluded)
  std::string finish_reason;    // "stop", "length" or "interrupted"
  double seconds = 0;
};

// Feeds `tokens` into `state` and returns the logits of the last one ([V]).
std::vector<float> prefill(const Model& m, State& state, std::span<const int32_t> tokens);

// Generates from `logits` (those after the context held in `state`). Every generated token
// except an end-of-generation token is fed into `state`, so afterwards the state holds the
// context plus the whole reply. `on_text` receives the reply as it is produced, in complete
// UTF-8 characters, never containing a stop string.
GenerateResult generate(const Model& m, const Tokenizer& tok, State& state,
                        std::vector<float> logits, Sampler& sampler, const GenerateOptions& opt,
                        const std::function<void(std::string_view)>& on_text);

}  // namespace qrwkv
