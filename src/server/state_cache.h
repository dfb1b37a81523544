// A cache of model states keyed by the tokens they hold, within a memory budget (least recently
// used entries go first). The server keeps the state at the end of each prompt and at the end of
// each reply; a later request whose prompt starts with the same tokens (the next turn of a chat
// sends the whole history again) continues from the snapshot and only feeds what is new.
//
// For a QRWKV6 state only an entry whose tokens are a prefix of the prompt can be used, since a
// recurrent state cannot be cut back. A transformer's state is a KV cache, which can: any entry
// sharing a common prefix with the prompt is cut to that prefix.
//
// Optionally the cache has a second tier on disk (`qrwkv serve --state-dir`): entries evicted
// from memory, and every entry when the server stops (persist()), are written to files in a
// directory, each holding the token prefix, the logits after it and the serialized state. The
// directory is indexed when the cache is created, so that a restarted server continues cached
// conversations. Files are encoded and written by a background thread, so that an eviction
// does not stall the sequences being decoded; until a file is written, its entry is served
// from the data waiting to be written. Files are written atomically (a temporary file renamed over
// the name), a file made for another model (another model key) is skipped, and a damaged one is
// skipped with a log line when it is indexed or loaded. The directory has its own budget; the
// oldest files go first.
//
// Not thread-safe: the scheduler thread owns it (the writer thread is internal to it).
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "model/model.h"

namespace qrwkv::server {

struct CacheHit {
  State state;
  std::vector<float> logits;  // after the last cached token; empty when more tokens must follow
  size_t n_tokens = 0;        // prompt tokens covered by the state
};

struct DiskTierOptions {
  std::string dir;  // empty: no disk tier
  size_t budget_bytes = size_t{10} << 30;
  // Identifies the model (its shapes and weights); files with another key are not used.
  uint64_t model_key = 0;
};

class StateCache {
 public:
  StateCache(const Config& config, size_t budget_bytes, DiskTierOptions disk = {});

  // The longest usable entry for `prompt`, in memory or on disk; it covers at most
  // prompt.size() tokens, and fewer when no logits are known for its end. nullopt when
  // nothing is usable.
  std::optional<CacheHit> lookup(std::span<const int32_t> prompt);

  // Stores `state` (holding exactly `tokens`) and the logits after its last token. Entries
  // larger than the whole budget are not kept; older entries are dropped (to disk, when there
  // is a disk tier) to make room.
  void insert(std::vector<int32_t> tokens, State state, std::vector<float> logits);

  // Writes every entry held only in memory to the disk tier (at shutdown).
  void persist();

  size_t entries() const { return entries_.size(); }
  size_t bytes() const { return bytes_; }
  size_t budget() const { return budget_; }
  size_t disk_entries() const { return disk_.size(); }
  size_t disk_bytes() const { return disk_bytes_; }

 private:
  struct Entry {
    std::vector<int32_t> tokens;
    State state;
    std::vector<float> logits;
    size_t bytes = 0;
    bool on_disk = false;  // the disk tier has a file with these tokens
  };
  struct DiskEntry {
    std::vector<int32_t> tokens;
    std::string path;
    size_t bytes = 0;
    bool has_logits = false;
    // Queued for writing: the data (served from here until the file exists) and the write's id.
    std::shared_ptr<const Entry> pending;
    uint64_t write_id = 0;
  };
  class Writer;
  size_t usable(const std::vector<int32_t>& tokens, bool has_logits,
                std::span<const int32_t> prompt) const;
  CacheHit make_hit(const Entry& e, size_t n, std::span<const int32_t> prompt) const;
  void evict_to(size_t limit);
  void index_dir();
  void write_to_disk(std::shared_ptr<const Entry> e);
  void collect_writes();
  std::optional<Entry> load_from_disk(const DiskEntry& d);
  void drop_disk_path(const std::string& path);
  std::string path_for(const std::vector<int32_t>& tokens) const;

  const Config* config_;
  size_t budget_;
  size_t bytes_ = 0;
  std::list<Entry> entries_;  // most recently used first
  DiskTierOptions disk_opt_;
  std::list<DiskEntry> disk_;  // oldest first
  size_t disk_bytes_ = 0;
  uint64_t next_write_id_ = 1;
  std::unique_ptr<Writer> writer_;  // with a disk tier

 public:
  ~StateCache();
  StateCache(const StateCache&) = delete;
  StateCache& operator=(const StateCache&) = delete;
};

}  // namespace qrwkv::server
