// A cache of model states keyed by the tokens they hold, within a memory budget (least recently
// used entries go first). The server keeps the state at the end of each prompt and at the end of
// each reply; a later request whose prompt starts with the same tokens (the next turn of a chat
// sends the whole history again) continues from the snapshot and only feeds what is new.
//
// For a QRWKV6 state only an entry whose tokens are a prefix of the prompt can be used, since a
// recurrent state cannot be cut back. A transformer's state is a KV cache, which can: any entry
// sharing a common prefix with the prompt is cut to that prefix.
//
// Not thread-safe: the scheduler thread owns it.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <vector>

#include "model/model.h"

namespace qrwkv::server {

struct CacheHit {
  State state;
  std::vector<float> logits;  // after the last cached token; empty when more tokens must follow
  size_t n_tokens = 0;        // prompt tokens covered by the state
};

class StateCache {
 public:
  StateCache(const Config& config, size_t budget_bytes);

  // The longest usable entry for `prompt`; it covers at most prompt.size() tokens, and fewer
  // when no logits are known for its end. nullopt when nothing is usable.
  std::optional<CacheHit> lookup(std::span<const int32_t> prompt);

  // Stores `state` (holding exactly `tokens`) and the logits after its last token. Entries
  // larger than the whole budget are not kept; older entries are dropped to make room.
  void insert(std::vector<int32_t> tokens, State state, std::vector<float> logits);

  size_t entries() const { return entries_.size(); }
  size_t bytes() const { return bytes_; }
  size_t budget() const { return budget_; }

 private:
  struct Entry {
    std::vector<int32_t> tokens;
    State state;
    std::vector<float> logits;
    size_t bytes = 0;
  };
  void evict_to(size_t limit);

  const Config* config_;
  size_t budget_;
  size_t bytes_ = 0;
  std::list<Entry> entries_;  // most recently used first
};

}  // namespace qrwkv::server
