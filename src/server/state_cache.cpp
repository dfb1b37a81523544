#include "server/state_cache.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <utility>

#include "io/bytes.h"
#include "io/error.h"
#include "io/mapped_file.h"
#include "model/state.h"

namespace qrwkv::server {

namespace fs = std::filesystem;

namespace {

// A disk-tier file (little-endian):
//   "QRWKVPFX" | u32 version | u64 model key | u64 n_tokens | u64 n_logits |
//   i32 tokens[n_tokens] | f32 logits[n_logits] | serialized State (its own format and
//   checksum) | u64 FNV-1a checksum of everything before it.
constexpr char kMagic[8] = {'Q', 'R', 'W', 'K', 'V', 'P', 'F', 'X'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 8 + 4 + 8 + 8 + 8;
constexpr const char* kExtension = ".qrwkvstate";

size_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

void log_line(const std::string& s) { std::fprintf(stderr, "state-dir: %s\n", s.c_str()); }

std::string encode_file(uint64_t model_key, const std::vector<int32_t>& tokens,
                        const std::vector<float>& logits, const State& state) {
  std::string out(kMagic, sizeof kMagic);
  put_le<uint32_t>(out, kVersion);
  put_le<uint64_t>(out, model_key);
  put_le<uint64_t>(out, tokens.size());
  put_le<uint64_t>(out, logits.size());
  put_array(out, tokens.data(), tokens.size());
  put_array(out, logits.data(), logits.size());
  out += serialize_state(state);
  put_le<uint64_t>(out, fnv1a(out.data(), out.size()));
  return out;
}

}  // namespace

// The background thread that encodes and writes files and removes evicted ones, in the order
// they were asked for (so that a removal never overtakes the write of the same file).
class StateCache::Writer {
 public:
  struct Done {
    uint64_t id;
    bool ok;
    size_t bytes;
  };
  explicit Writer(uint64_t model_key) : key_(model_key), thread_([this] { run(); }) {}
  ~Writer() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  // Queues a write. When much is waiting already (a disk slower than evictions), waits for
  // it, which bounds the memory that states waiting to be written hold.
  void write(uint64_t id, std::string path, std::shared_ptr<const Entry> e) {
    std::unique_lock<std::mutex> lock(mu_);
    idle_cv_.wait(lock,
                  [&] { return queued_bytes_ == 0 || queued_bytes_ + e->bytes <= kMaxQueued; });
    queued_bytes_ += e->bytes;
    ops_.push_back({id, std::move(path), std::move(e)});
    cv_.notify_all();
  }
  void remove(std::string path) {
    std::lock_guard<std::mutex> lock(mu_);
    ops_.push_back({0, std::move(path), nullptr});
    cv_.notify_all();
  }
  void wait_idle() {
    std::unique_lock<std::mutex> lock(mu_);
    idle_cv_.wait(lock, [&] { return ops_.empty() && !busy_; });
  }
  std::vector<Done> take_done() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(done_, {});
  }

 private:
  static constexpr size_t kMaxQueued = size_t{1} << 30;
  struct Op {
    uint64_t id;
    std::string path;
    std::shared_ptr<const Entry> entry;  // null: remove the file
  };
  void run() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !ops_.empty(); });
      if (ops_.empty()) return;  // stopping, and everything is written
      Op op = std::move(ops_.front());
      ops_.pop_front();
      busy_ = true;
      lock.unlock();
      Done d{op.id, true, 0};
      if (op.entry == nullptr) {
        std::error_code ec;
        fs::remove(op.path, ec);
      } else {
        try {
          const std::string bytes =
              encode_file(key_, op.entry->tokens, op.entry->logits, op.entry->state);
          // Not flushed to the disk: a file that a crash leaves damaged fails its checksum and
          // costs a cache miss, while an fsync of a large state on every eviction would stall
          // every sequence the scheduler is decoding.
          write_file_atomic(op.path, bytes.data(), bytes.size(), /*sync=*/false);
          d.bytes = bytes.size();
        } catch (const std::exception& ex) {
          // A full or read-only disk costs the cached state, not the request.
          log_line(std::string("cannot write a state: ") + ex.what());
          d.ok = false;
        }
      }
      const size_t entry_bytes = op.entry != nullptr ? op.entry->bytes : 0;
      op.entry.reset();
      lock.lock();
      if (d.id != 0) done_.push_back(d);
      queued_bytes_ -= entry_bytes;
      busy_ = false;
      idle_cv_.notify_all();
    }
  }

  const uint64_t key_;
  std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<Op> ops_;
  std::vector<Done> done_;
  size_t queued_bytes_ = 0;
  bool busy_ = false;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

StateCache::StateCache(const Config& config, size_t budget_bytes, DiskTierOptions disk)
    : config_(&config), budget_(budget_bytes), disk_opt_(std::move(disk)) {
  if (disk_opt_.dir.empty()) return;
  index_dir();
  if (!disk_opt_.dir.empty()) writer_ = std::make_unique<Writer>(disk_opt_.model_key);
}

// The writer finishes what is queued before it stops.
StateCache::~StateCache() = default;

void StateCache::collect_writes() {
  if (!writer_) return;
  for (const Writer::Done& d : writer_->take_done()) {
    for (auto it = disk_.begin(); it != disk_.end(); ++it) {
      if (it->write_id != d.id) continue;
      if (d.ok) {
        it->pending.reset();
        disk_bytes_ = disk_bytes_ - it->bytes + d.bytes;
        it->bytes = d.bytes;
      } else {
        disk_bytes_ -= it->bytes;
        disk_.erase(it);
      }
      break;
    }
  }
}

// How many prompt tokens an entry holding `tokens` can cover.
size_t StateCache::usable(const std::vector<int32_t>& tokens, bool has_logits,
                          std::span<const int32_t> prompt) const {
  const bool recurrent = !states_can_truncate(*config_);
  const size_t lcp = common_prefix(tokens, prompt);
  if (lcp == tokens.size()) {
    // The whole entry is a prefix of the prompt. When it is the whole prompt, its logits are
    // those of the prompt's last token and nothing needs to be fed; without them, a KV cache
    // is cut one token short so that feeding that token gives the logits.
    if (lcp < prompt.size() || has_logits) return lcp;
    return recurrent ? 0 : lcp - 1;
  }
  // At least one prompt token must be fed after a cut, to produce logits.
  return recurrent ? 0 : std::min(lcp, prompt.size() - 1);
}

CacheHit StateCache::make_hit(const Entry& e, size_t n, std::span<const int32_t> prompt) const {
  CacheHit hit;
  hit.state = e.state;
  hit.n_tokens = n;
  if (n == e.tokens.size()) {
    if (n == prompt.size()) hit.logits = e.logits;
  } else {
    truncate_state(hit.state, *config_, static_cast<int64_t>(n));
  }
  return hit;
}

std::optional<CacheHit> StateCache::lookup(std::span<const int32_t> prompt) {
  if (prompt.empty()) return std::nullopt;
  collect_writes();
  auto best = entries_.end();
  size_t best_n = 0;
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    const size_t n = usable(it->tokens, !it->logits.empty(), prompt);
    if (n > best_n) {
      best_n = n;
      best = it;
    }
  }
  // A file covering more of the prompt than memory does is loaded (into memory, where it
  // then counts as recently used). A damaged file is dropped and the next best one tried.
  for (;;) {
    auto disk_best = disk_.end();
    size_t disk_n = best_n;
    for (auto it = disk_.begin(); it != disk_.end(); ++it) {
      const size_t n = usable(it->tokens, it->has_logits, prompt);
      if (n > disk_n) {
        disk_n = n;
        disk_best = it;
      }
    }
    if (disk_best == disk_.end()) break;
    std::optional<Entry> e = load_from_disk(*disk_best);
    if (!e) continue;  // load_from_disk dropped it from the index
    // Recently used files are the last to be evicted from the directory too.
    disk_.splice(disk_.end(), disk_, disk_best);
    std::error_code ec;
    fs::last_write_time(disk_best->path, fs::file_time_type::clock::now(), ec);
    CacheHit hit = make_hit(*e, disk_n, prompt);
    if (e->bytes <= budget_) {
      evict_to(budget_ - e->bytes);
      bytes_ += e->bytes;
      entries_.push_front(std::move(*e));
    }
    return hit;
  }
  if (best == entries_.end() || best_n == 0) return std::nullopt;
  entries_.splice(entries_.begin(), entries_, best);  // now the most recently used
  return make_hit(*best, best_n, prompt);
}

void StateCache::insert(std::vector<int32_t> tokens, State state, std::vector<float> logits) {
  if (tokens.empty() || budget_ == 0) return;
  collect_writes();
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
  entries_.push_front({std::move(tokens), std::move(state), std::move(logits), bytes, false});
  bytes_ += bytes;
}

void StateCache::evict_to(size_t limit) {
  while (!entries_.empty() && bytes_ > limit) {
    bytes_ -= entries_.back().bytes;
    if (!entries_.back().on_disk && writer_)
      write_to_disk(std::make_shared<const Entry>(std::move(entries_.back())));
    entries_.pop_back();
  }
}

void StateCache::persist() {
  // Least recently used first, so that the most recent entries are the newest files, the
  // last to be evicted from the directory.
  if (!writer_) return;
  for (auto it = entries_.rbegin(); it != entries_.rend(); ++it) {
    if (it->on_disk) continue;
    write_to_disk(std::make_shared<const Entry>(*it));
    it->on_disk = true;
  }
  writer_->wait_idle();
  collect_writes();
}

std::string StateCache::path_for(const std::vector<int32_t>& tokens) const {
  const uint64_t h = fnv1a(tokens.data(), tokens.size() * sizeof(int32_t),
                           fnv1a(&disk_opt_.model_key, sizeof disk_opt_.model_key));
  char name[32];
  std::snprintf(name, sizeof name, "%016llx", static_cast<unsigned long long>(h));
  return (fs::path(disk_opt_.dir) / (std::string(name) + kExtension)).string();
}

void StateCache::drop_disk_path(const std::string& path) {
  for (auto it = disk_.begin(); it != disk_.end(); ++it) {
    if (it->path == path) {
      disk_bytes_ -= it->bytes;
      disk_.erase(it);
      return;
    }
  }
}

void StateCache::write_to_disk(std::shared_ptr<const Entry> e) {
  // The file's size to within its small headers, until the writer reports it.
  const size_t bytes = e->bytes + 256;
  if (bytes > disk_opt_.budget_bytes) return;
  std::string path = path_for(e->tokens);
  drop_disk_path(path);  // the same tokens (or a hash twin) were there before
  const uint64_t id = next_write_id_++;
  disk_.push_back({e->tokens, path, bytes, !e->logits.empty(), e, id});
  disk_bytes_ += bytes;
  writer_->write(id, std::move(path), std::move(e));
  while (disk_bytes_ > disk_opt_.budget_bytes && disk_.size() > 1) {
    writer_->remove(disk_.front().path);
    disk_bytes_ -= disk_.front().bytes;
    disk_.pop_front();
  }
}

std::optional<StateCache::Entry> StateCache::load_from_disk(const DiskEntry& d) {
  const std::string path = d.path;
  if (d.pending) {
    Entry e = *d.pending;
    e.on_disk = true;
    return e;
  }
  try {
    const std::string bytes = read_text_file(path);
    if (bytes.size() < kHeaderBytes + 8 || std::memcmp(bytes.data(), kMagic, 8) != 0)
      fail(path, "not a state-dir file");
    const size_t end = bytes.size() - 8;
    if (get_le<uint64_t>(bytes.data() + end) != fnv1a(bytes.data(), end))
      fail(path, "checksum mismatch (damaged file)");
    const uint64_t n_tokens = get_le<uint64_t>(bytes.data() + 20);
    const uint64_t n_logits = get_le<uint64_t>(bytes.data() + 28);
    if (get_le<uint64_t>(bytes.data() + 12) != disk_opt_.model_key || n_tokens != d.tokens.size() ||
        n_logits > (end - kHeaderBytes) / sizeof(float) ||
        n_tokens * sizeof(int32_t) > end - kHeaderBytes - n_logits * sizeof(float))
      fail(path, "the file changed since it was indexed");
    Entry e;
    e.tokens = d.tokens;
    size_t off = kHeaderBytes + n_tokens * sizeof(int32_t);
    if (std::memcmp(bytes.data() + kHeaderBytes, e.tokens.data(), n_tokens * sizeof(int32_t)) != 0)
      fail(path, "the file changed since it was indexed");
    e.logits.resize(n_logits);
    if (n_logits > 0) std::memcpy(e.logits.data(), bytes.data() + off, n_logits * sizeof(float));
    off += n_logits * sizeof(float);
    if (n_logits != 0 && n_logits != static_cast<uint64_t>(config_->vocab_size))
      fail(path, "logits of another vocabulary size");
    e.state = deserialize_state(bytes.substr(off, end - off), path);
    check_state_matches(e.state, *config_, path);
    if (e.state.n_tokens != static_cast<int64_t>(n_tokens))
      fail(path, "the state does not hold the file's tokens");
    e.bytes = e.state.bytes() + e.logits.size() * sizeof(float) + n_tokens * sizeof(int32_t);
    e.on_disk = true;
    return e;
  } catch (const std::exception& ex) {
    log_line(std::string("skipping a state: ") + ex.what());
    drop_disk_path(path);
    return std::nullopt;
  }
}

void StateCache::index_dir() {
  std::error_code ec;
  fs::create_directories(disk_opt_.dir, ec);
  if (ec) {
    log_line("cannot create " + disk_opt_.dir + ": " + ec.message() + "; states stay in memory");
    disk_opt_.dir.clear();
    return;
  }
  struct Found {
    fs::file_time_type time;
    DiskEntry entry;
  };
  std::vector<Found> found;
  size_t other_model = 0;
  for (fs::directory_iterator it(disk_opt_.dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path p = it->path();
    // A temporary file of a write that never finished (the process was killed) is removed
    // once it is old enough not to be a write in progress of another server on this directory.
    if (p.filename().string().find(std::string(kExtension) + ".tmp.") != std::string::npos) {
      const auto age = fs::file_time_type::clock::now() - it->last_write_time(ec);
      if (!ec && age > std::chrono::minutes(10)) fs::remove(p, ec);
      continue;
    }
    if (p.extension() != kExtension || !it->is_regular_file(ec)) continue;
    const size_t size = static_cast<size_t>(it->file_size(ec));
    if (ec) continue;
    // Only the header and the tokens are read now; the rest is checked when a request needs
    // the file.
    std::ifstream f(p, std::ios::binary);
    char head[kHeaderBytes];
    if (!f.read(head, sizeof head) || std::memcmp(head, kMagic, 8) != 0 ||
        get_le<uint32_t>(head + 8) != kVersion) {
      log_line("skipping " + p.string() + ": not a state file of this version");
      continue;
    }
    if (get_le<uint64_t>(head + 12) != disk_opt_.model_key) {
      ++other_model;
      continue;
    }
    const uint64_t n_tokens = get_le<uint64_t>(head + 20);
    const uint64_t n_logits = get_le<uint64_t>(head + 28);
    if (size < kHeaderBytes + 8 || n_tokens == 0 ||
        n_tokens > (size - kHeaderBytes - 8) / sizeof(int32_t) ||
        n_logits > (size - kHeaderBytes - 8 - n_tokens * sizeof(int32_t)) / sizeof(float)) {
      log_line("skipping " + p.string() + ": damaged header");
      continue;
    }
    DiskEntry d;
    d.tokens.resize(n_tokens);
    if (!f.read(reinterpret_cast<char*>(d.tokens.data()),
                static_cast<std::streamsize>(n_tokens * sizeof(int32_t)))) {
      log_line("skipping " + p.string() + ": truncated");
      continue;
    }
    d.path = p.string();
    d.bytes = size;
    d.has_logits = n_logits > 0;
    found.push_back({it->last_write_time(ec), std::move(d)});
  }
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) {
    return a.time != b.time ? a.time < b.time : a.entry.path < b.entry.path;
  });
  for (auto& f : found) {
    disk_bytes_ += f.entry.bytes;
    disk_.push_back(std::move(f.entry));
  }
  if (other_model > 0)
    log_line("skipping " + std::to_string(other_model) + " files of another model in " +
             disk_opt_.dir);
  while (disk_bytes_ > disk_opt_.budget_bytes && !disk_.empty()) {
    fs::remove(disk_.front().path, ec);
    disk_bytes_ -= disk_.front().bytes;
    disk_.pop_front();
  }
  log_line(std::to_string(disk_.size()) + " cached states (" + std::to_string(disk_bytes_ >> 20) +
           " MiB) in " + disk_opt_.dir);
}

}  // namespace qrwkv::server
