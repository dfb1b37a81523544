// Loading everything a text command or the server needs from a model directory: the model, its
// tokenizer, its end-of-generation ids and (when asked for) its chat template, with the checks
// between them. The CLI and the server both load through here.
#pragma once

#include <functional>
#include <optional>
#include <set>
#include <string>

#include "model/model.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace qrwkv {

struct LoadModelOptions {
  LoadOptions model;  // --dtype, backend, threads
  // Load the chat template too; `chat_template_file` (if set) replaces the model's own.
  bool chat_template = false;
  std::string chat_template_file;
  // Checkpoints larger than this are read in once after mapping, so that the first tokens do
  // not wait on page faults; `progress` (if set) receives the fraction read.
  size_t prefetch_above_bytes = size_t{256} << 20;
  std::function<void(double)> progress;
};

struct LoadedModel {
  Model model;
  Tokenizer tokenizer;
  std::optional<ChatTemplate> chat_template;
  std::set<int32_t> eos_ids;  // end_of_generation_ids()
  double seconds = 0;         // time the load took
};

// Throws Error naming the directory or file at fault, e.g. when the tokenizer has more ids than
// the model's vocabulary.
LoadedModel load_model(const std::string& dir, const LoadModelOptions& options = {});

// Every end-of-generation id the model declares: config.json eos_token_id (an id or a list),
// generation_config.json eos_token_id, tokenizer_config.json eos_token, and for ChatML models
// <|im_end|> and <|endoftext|>.
std::set<int32_t> end_of_generation_ids(const std::string& model_dir, const Config& config,
                                        const Tokenizer& tokenizer);

}  // namespace qrwkv
