// The longest prompt a process accepts (--max-prompt-tokens of run, chat and serve), and the
// check that names the limit when a prompt is longer.
#pragma once

#include <cstdint>
#include <string>

#include "model/model.h"

namespace qrwkv {

// Recurrent models (QRWKV6, QRWKV7): memory does not grow with the prompt (it runs in
// micro-batches against a fixed-size state), only time does; 128k tokens is what the
// conversions were trained to reach and a bound on one request's prefill.
constexpr int64_t kRecurrentMaxPromptTokens = 131072;

// The default limit: kRecurrentMaxPromptTokens for recurrent models; for transformers, the
// length whose KV caches for `sequences` sequences fit in half of the memory available now
// (`available_bytes`, MemAvailable when 0), and no more than max_position_embeddings when the
// config gives it. At least 1.
int64_t default_max_prompt_tokens(const Model& m, int sequences, uint64_t available_bytes = 0);

// The message for a prompt of `tokens` tokens over `limit`; empty when it is within.
std::string prompt_limit_message(int64_t tokens, int64_t limit);

}  // namespace qrwkv
