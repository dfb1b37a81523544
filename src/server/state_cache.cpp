#include "server/state_cache.h"

#include <algorithm>

#include "runtime/chat.h"

namespace qrwkv::server {

namespace {

size_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

}  // namespace

StateCache::StateCache(const Config& config, size_t budget_bytes)
    : config_(&config), budget_(budget_bytes) {}

std::optional<CacheHit> StateCache::lookup(std::span<const int32_t> prompt) {
  if (prompt.empty()) return std::nullopt;
  const bool recurrent = config_->arch == Arch::QRWKV6;
  auto best = entries_.end();
  size_t best_n = 0;
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    const size_t lcp = common_prefix(it->tokens, prompt);
    size_t usable = 0;
    if (lcp == it->tokens.size()) {
      // The whole entry is a prefix of the prompt. When it is the whole prompt, its logits are
      // those of the prompt's last token and nothing needs to be fed; without them, a KV cache
      // is cut one token short so that feeding that token gives the logits.
      if (lcp < prompt.size() || !it->logits.empty())
        usable = lcp;
      else if (!recurrent)
        usable = lcp - 1;
    } else if (!recurrent) {
      // At least one prompt token must be fed after a cut, to produce logits.
      usable = std::min(lcp, prompt.size() - 1);
    }
    if (usable > best_n) {
      best_n = usable;
      best = it;
    }
  }
  if (best == entries_.end() || best_n == 0) return std::nullopt;
  entries_.splice(entries_.begin(), entries_, best);  // now the most recently used
  CacheHit hit;
  hit.state = best->state;
  hit.n_tokens = best_n;
  if (best_n == best->tokens.size()) {
    if (best_n == prompt.size()) hit.logits = best->logits;
  } else {
    truncate_kv_state(hit.state, *config_, static_cast<int64_t>(best_n));
  }
  return hit;
}

void StateCache::insert(std::vector<int32_t> tokens, State state, std::vector<float> logits) {
  if (tokens.empty() || budget_ == 0) return;
  const size_t bytes =
      state.bytes() + logits.size() * sizeof(float) + tokens.size() * sizeof(int32_t);
  if (bytes > budget_) return;
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->tokens == tokens) {
      bytes_ -= it->bytes;
      entries_.erase(it);
      break;
    }
  }
  evict_to(budget_ - bytes);
  entries_.push_front({std::move(tokens), std::move(state), std::move(logits), bytes});
  bytes_ += bytes;
}

void StateCache::evict_to(size_t limit) {
  while (!entries_.empty() && bytes_ > limit) {
    bytes_ -= entries_.back().bytes;
    entries_.pop_back();
  }
}

}  // namespace qrwkv::server
