#include "runtime/limits.h"

#include <algorithm>

#include "io/mapped_file.h"

namespace qrwkv {

int64_t default_max_prompt_tokens(const Model& m, int sequences, uint64_t available_bytes) {
  if (m.arch().recurrent()) return kRecurrentMaxPromptTokens;
  const uint64_t avail = available_bytes > 0 ? available_bytes : available_memory_bytes();
  const uint64_t per_token = std::max<uint64_t>(1, m.kv_bytes_per_token());
  const uint64_t seqs = static_cast<uint64_t>(std::max(1, sequences));
  int64_t n = avail > 0 ? static_cast<int64_t>(
                              std::min<uint64_t>(avail / 2 / seqs / per_token, uint64_t{1} << 40))
                        : kRecurrentMaxPromptTokens;
  if (m.config.max_position_embeddings > 0) n = std::min(n, m.config.max_position_embeddings);
  return std::max<int64_t>(1, n);
}

std::string prompt_limit_message(int64_t tokens, int64_t limit) {
  if (tokens <= limit) return {};
  return "the prompt has " + std::to_string(tokens) + " tokens, more than the limit of " +
         std::to_string(limit) + " (--max-prompt-tokens)";
}

}  // namespace qrwkv
