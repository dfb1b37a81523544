#include "text/tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "io/error.h"
#include "io/json.h"
#include "text/gguf_vocab.h"
#include "text/tok_regex.h"
#include "text/tok_utf8.h"

namespace qrwkv {

namespace {

using tok::Pattern;

// GPT-2's pre-tokenizer regex, used by the ByteLevel pre-tokenizer when `use_regex` is set.
constexpr const char* kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// ---------------------------------------------------------------------------------------------
// Hashing

uint64_t hash_bytes(std::string_view s) {
  // A simple multiply-xorshift hash over 8-byte words; quality is ample for hash tables.
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (s.size() * 0xC2B2AE3D27D4EB4Full);
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
  }
  uint64_t w = 0;
  if (i < s.size()) std::memcpy(&w, s.data() + i, s.size() - i);
  h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
  h ^= h >> 29;
  return h;
}

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return hash_bytes(s); }
  size_t operator()(const std::string& s) const { return hash_bytes(s); }
};

template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// Pair of token ids -> (rank, merged id), open addressing. Read-only after loading.
class MergeMap {
 public:
  struct Slot {
    uint64_t key = kEmpty;
    uint32_t rank = 0;
    int32_t id = -1;
  };
  static constexpr uint64_t kEmpty = ~0ull;

  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
  }
  // A later duplicate replaces the earlier one, as in the reference's HashMap collect.
  void insert(int32_t a, int32_t b, uint32_t rank, int32_t id) {
    const uint64_t key = make_key(a, b);
    size_t i = index(key);
    while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
    slots_[i] = Slot{key, rank, id};
  }
  const Slot* find(int32_t a, int32_t b) const {
    if (slots_.empty()) return nullptr;
    const uint64_t key = make_key(a, b);
    size_t i = index(key);
    while (true) {
      const Slot& s = slots_[i];
      if (s.key == key) return &s;
      if (s.key == kEmpty) return nullptr;
      i = (i + 1) & mask_;
    }
  }

 private:
  static uint64_t make_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  size_t index(uint64_t key) const { return ((key * 0x9E3779B97F4A7C15ull) >> 20) & mask_; }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

// ---------------------------------------------------------------------------------------------
// GPT-2 byte-level alphabet: every byte is shown as a printable character.

struct ByteAlphabet {
  std::array<uint32_t, 256> byte_to_cp{};
  std::unordered_map<uint32_t, uint8_t> cp_to_byte;
  ByteAlphabet() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      byte_to_cp[b] = printable ? b : 256 + n++;
      cp_to_byte[byte_to_cp[b]] = static_cast<uint8_t>(b);
    }
  }
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet a;
  return a;
}

// The ByteLevel decoder's view of a token: its characters mapped back to bytes, or its own
// UTF-8 when one of them is outside the alphabet (the reference's fallback).
std::string byte_level_decode(std::string_view token, bool* in_alphabet = nullptr) {
  const ByteAlphabet& a = byte_alphabet();
  std::string out;
  out.reserve(token.size());
  size_t i = 0;
  while (i < token.size()) {
    uint32_t cp;
    i += tok::decode_char(token, i, cp);
    auto it = a.cp_to_byte.find(cp);
    if (it == a.cp_to_byte.end()) {
      if (in_alphabet) *in_alphabet = false;
      return std::string(token);
    }
    out += static_cast<char>(it->second);
  }
  if (in_alphabet) *in_alphabet = true;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Loaded pieces of the pipeline

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = true;
};

// Leftmost-longest, non-overlapping matching of a set of literal strings (the reference uses an
// Aho-Corasick automaton with the same match kind). Candidates are bucketed by first byte and
// sorted longest first, so the first hit at a position is the longest one there.
class LiteralSet {
 public:
  void add(std::string pattern, int index) { items_.push_back({std::move(pattern), index}); }
  void build() {
    std::stable_sort(items_.begin(), items_.end(),
                     [](const Item& a, const Item& b) { return a.text.size() > b.text.size(); });
    for (auto& b : buckets_) b.clear();
    for (size_t i = 0; i < items_.size(); ++i)
      buckets_[static_cast<unsigned char>(items_[i].text[0])].push_back(static_cast<int>(i));
  }
  bool empty() const { return items_.empty(); }
  // Finds the leftmost-longest match at or after `from`.
  bool find(std::string_view s, size_t from, size_t& start, size_t& len, int& index) const {
    for (size_t p = from; p < s.size(); ++p) {
      const auto& bucket = buckets_[static_cast<unsigned char>(s[p])];
      for (int i : bucket) {
        const std::string& t = items_[i].text;
        if (t.size() <= s.size() - p && std::memcmp(s.data() + p, t.data(), t.size()) == 0) {
          start = p;
          len = t.size();
          index = items_[i].index;
          return true;
        }
      }
    }
    return false;
  }

 private:
  struct Item {
    std::string text;
    int index;
  };
  std::vector<Item> items_;
  std::array<std::vector<int>, 256> buckets_;
};

enum class NormKind { kNfc, kNfd, kNfkc, kNfkd, kLowercase, kPrepend, kReplace, kStrip };

struct NormStep {
  NormKind kind;
  std::string text;    // Prepend: what to prepend; Replace: the replacement
  Pattern pattern;     // Replace: what to replace
  bool left = false;   // Strip
  bool right = false;  // Strip
};

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

enum class PreKind { kSplit, kPrefixSpace, kDigits };

struct PreStep {
  PreKind kind;
  Pattern pattern;
  Behavior behavior = Behavior::kIsolated;
  bool invert = false;
  bool individual_digits = false;
};

bool is_word_char(uint32_t cp) {
  // Rust regex's \w: letters, marks, decimal numbers, connector punctuation.
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return cp == 0x200C || cp == 0x200D;
  }
}

bool is_numeric(uint32_t cp) {
  const auto c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

// Start of the character that ends at `end` (valid UTF-8).
size_t prev_char_start(std::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

// Per-call scratch space, so that encoding a word allocates nothing in the common case.
struct Scratch {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  struct Candidate {
    uint32_t rank;
    int32_t pos;
    int32_t id;
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
  std::vector<std::string> prefixed;  // per pre-tokenizer depth, for ByteLevel's prefix space
  std::string normalized;
  std::string normalized2;
  pcre2_real_match_data_8* md = nullptr;
  Scratch() : md(Pattern::new_match_data()) {}
  ~Scratch() { Pattern::free_match_data(md); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

// Words already merged, with their ids in one pool: an open-addressing table whose keys and
// values live in two flat arrays, so that a lookup costs one probe into memory that is mostly
// in cache (a node-based map was the hot spot of encoding).
class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 128;

  // The ids of `word` (hash `h`) into `out`; false when it is not cached.
  bool get(std::string_view word, uint64_t h, std::vector<int32_t>& out) const {
    if (slots_.empty()) return false;
    for (size_t i = h & kMask;; i = (i + 1) & kMask) {
      const Slot& s = slots_[i];
      if (s.hash == 0) return false;
      if (s.hash == h && s.key_len == word.size() &&
          std::memcmp(keys_.data() + s.key_off, word.data(), word.size()) == 0) {
        out.insert(out.end(), ids_.begin() + s.ids_off, ids_.begin() + s.ids_off + s.ids_len);
        return true;
      }
    }
  }

  void put(std::string_view word, uint64_t h, const int32_t* ids, size_t n) {
    if (slots_.empty()) slots_.resize(kSlots);
    if (count_ >= kSlots / 2) clear();
    size_t i = h & kMask;
    while (slots_[i].hash != 0) i = (i + 1) & kMask;
    slots_[i] = Slot{h, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(word.size()),
                     static_cast<uint32_t>(ids_.size()), static_cast<uint32_t>(n)};
    keys_.append(word);
    ids_.insert(ids_.end(), ids, ids + n);
    ++count_;
  }

  static uint64_t hash(std::string_view word) { return hash_bytes(word) | 1; }  // 0 marks empty

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_off = 0;
    uint32_t key_len = 0;
    uint32_t ids_off = 0;
    uint32_t ids_len = 0;
  };
  static constexpr size_t kSlots = size_t{1} << 18;
  static constexpr size_t kMask = kSlots - 1;

  void clear() {
    std::fill(slots_.begin(), slots_.end(), Slot{});
    keys_.clear();
    ids_.clear();
    count_ = 0;
  }

  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> ids_;
  size_t count_ = 0;
};

}  // namespace

// ---------------------------------------------------------------------------------------------

struct Tokenizer::Impl {
  std::string where;

  // Model (BPE).
  StringMap<int32_t> vocab_bytes;      // token bytes -> id (byte-level tokens only)
  StringMap<int32_t> vocab_strings;    // tokenizer.json spelling -> id
  std::vector<std::string> id_string;  // id -> tokenizer.json spelling ("" when unused)
  std::vector<std::string> id_bytes;   // id -> the bytes it decodes to
  std::vector<uint8_t> id_known;
  std::vector<uint8_t> id_special;
  std::array<int32_t, 256> byte_id{};
  std::array<int32_t, 256> fallback_id{};  // "<0xXX>" tokens, for byte_fallback
  MergeMap merges;
  bool ignore_merges = false;
  bool byte_fallback = false;
  bool fuse_unk = false;
  int32_t unk_id = -1;

  // Added tokens.
  std::vector<AddedToken> added;
  StringMap<int32_t> added_by_content;
  LiteralSet raw_set;         // tokens matched before normalization
  LiteralSet normalized_set;  // tokens matched in the normalized text

  std::vector<NormStep> normalizers;
  std::vector<PreStep> pre_steps;

  TokenizerConfig config;
  int32_t size = 0;

  mutable std::mutex cache_mutex;
  mutable WordCache word_cache;

  // --- encoding ---

  void encode(std::string_view text, std::vector<int32_t>& out, bool parse_special) const;
  template <class OnToken, class OnText>
  void split_added(std::string_view s, const LiteralSet& set, bool parse_special,
                   OnToken&& on_token, OnText&& on_text) const;
  std::string_view normalize(std::string_view s, Scratch& sc) const;
  void pre_tokenize(size_t step, std::string_view piece, Scratch& sc, WordCache* cache,
                    std::vector<int32_t>& out) const;
  void bpe(std::string_view word, Scratch& sc, WordCache* cache, std::vector<int32_t>& out) const;
  void bpe_merge(std::string_view word, Scratch& sc, std::vector<int32_t>& out) const;

  const std::string& bytes_of(int32_t id) const {
    if (id < 0 || id >= size || !id_known[id])
      throw Error("unknown token id " + std::to_string(id) + " (the vocabulary has ids 0.." +
                  std::to_string(size - 1) + ")");
    return id_bytes[id];
  }
};

// ---------------------------------------------------------------------------------------------
// Loading

namespace {

[[noreturn]] void bad(const std::string& where, const std::string& what) { fail(where, what); }

bool get_bool(const json& obj, const char* key, bool fallback) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) throw Error(std::string("'") + key + "' must be true or false");
  return it->get<bool>();
}

std::string type_of(const json& obj) {
  if (!obj.is_object()) throw Error("expected an object with a \"type\"");
  auto it = obj.find("type");
  if (it == obj.end() || !it->is_string()) throw Error("object without a \"type\" string");
  return it->get<std::string>();
}

Pattern parse_pattern(const json& p, const std::string& where) {
  if (!p.is_object()) throw Error("'pattern' must be an object with \"String\" or \"Regex\"");
  if (auto it = p.find("Regex"); it != p.end() && it->is_string())
    return Pattern::regex(it->get<std::string>(), where);
  if (auto it = p.find("String"); it != p.end() && it->is_string())
    return Pattern::literal(it->get<std::string>());
  throw Error("'pattern' must be an object with \"String\" or \"Regex\"");
}

void load_normalizer(const json& n, std::vector<NormStep>& steps, const std::string& where) {
  if (n.is_null()) return;
  const std::string type = type_of(n);
  NormStep s{};
  if (type == "Sequence") {
    auto it = n.find("normalizers");
    if (it == n.end() || !it->is_array()) throw Error("Sequence normalizer without 'normalizers'");
    for (const auto& child : *it) load_normalizer(child, steps, where);
    return;
  } else if (type == "NFC") {
    s.kind = NormKind::kNfc;
  } else if (type == "NFD") {
    s.kind = NormKind::kNfd;
  } else if (type == "NFKC") {
    s.kind = NormKind::kNfkc;
  } else if (type == "NFKD") {
    s.kind = NormKind::kNfkd;
  } else if (type == "Lowercase") {
    s.kind = NormKind::kLowercase;
  } else if (type == "Prepend") {
    s.kind = NormKind::kPrepend;
    s.text = n.at("prepend").get<std::string>();
  } else if (type == "Replace") {
    s.kind = NormKind::kReplace;
    s.pattern = parse_pattern(n.at("pattern"), where);
    s.text = n.at("content").get<std::string>();
  } else if (type == "Strip") {
    s.kind = NormKind::kStrip;
    s.left = get_bool(n, "strip_left", true);
    s.right = get_bool(n, "strip_right", true);
  } else {
    throw Error("unsupported normalizer '" + type + "'");
  }
  steps.push_back(std::move(s));
}

Behavior parse_behavior(const json& n) {
  auto it = n.find("behavior");
  if (it == n.end() || it->is_null()) return Behavior::kIsolated;
  const std::string b = it->get<std::string>();
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  throw Error("unsupported split behavior '" + b + "'");
}

void load_pre_tokenizer(const json& n, std::vector<PreStep>& steps, bool& byte_level,
                        const std::string& where) {
  if (n.is_null()) return;
  const std::string type = type_of(n);
  if (type == "Sequence") {
    auto it = n.find("pretokenizers");
    if (it == n.end() || !it->is_array())
      throw Error("Sequence pre-tokenizer without 'pretokenizers'");
    for (const auto& child : *it) load_pre_tokenizer(child, steps, byte_level, where);
  } else if (type == "Split") {
    PreStep s{};
    s.kind = PreKind::kSplit;
    s.pattern = parse_pattern(n.at("pattern"), where);
    s.behavior = parse_behavior(n);
    s.invert = get_bool(n, "invert", false);
    steps.push_back(std::move(s));
  } else if (type == "ByteLevel") {
    byte_level = true;
    if (get_bool(n, "add_prefix_space", true)) steps.push_back(PreStep{PreKind::kPrefixSpace, {}});
    if (get_bool(n, "use_regex", true)) {
      PreStep s{};
      s.kind = PreKind::kSplit;
      s.pattern = Pattern::regex(kGpt2Regex, where);
      steps.push_back(std::move(s));
    }
  } else if (type == "Digits") {
    PreStep s{};
    s.kind = PreKind::kDigits;
    s.individual_digits = get_bool(n, "individual_digits", false);
    steps.push_back(std::move(s));
  } else {
    throw Error("unsupported pre-tokenizer '" + type + "'");
  }
}

std::optional<std::string> config_token(const json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  return std::nullopt;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open file");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(path, "read error");
  return ss.str();
}

// The first n bytes of a file (fewer if it is shorter).
std::string read_file_prefix(const std::string& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open file");
  std::string out(n, '\0');
  in.read(out.data(), static_cast<std::streamsize>(n));
  out.resize(static_cast<size_t>(in.gcount()));
  return out;
}

void load_model(Tokenizer::Impl& t, const json& model) {
  if (!model.is_object()) throw Error("'model' must be an object");
  std::string type = "BPE";
  if (auto it = model.find("type"); it != model.end() && !it->is_null()) {
    if (!it->is_string()) throw Error("model 'type' must be a string");
    type = it->get<std::string>();
  }
  if (type != "BPE") throw Error("unsupported tokenizer model '" + type + "'");
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 0.0)
      throw Error("BPE dropout is not supported (encoding must be deterministic)");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(key);
    if (it != model.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty()))
      throw Error(std::string("BPE '") + key + "' is not supported");
  }
  t.ignore_merges = get_bool(model, "ignore_merges", false);
  t.byte_fallback = get_bool(model, "byte_fallback", false);
  t.fuse_unk = get_bool(model, "fuse_unk", false);

  auto vit = model.find("vocab");
  if (vit == model.end() || !vit->is_object()) throw Error("BPE model without a 'vocab' object");
  int32_t max_id = -1;
  t.vocab_strings.reserve(vit->size());
  t.vocab_bytes.reserve(vit->size());
  std::vector<std::pair<int32_t, const std::string*>> entries;
  entries.reserve(vit->size());
  for (auto it = vit->begin(); it != vit->end(); ++it) {
    if (!it.value().is_number_integer()) throw Error("vocab entry '" + it.key() + "' is not an id");
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || id >= (1 << 24)) throw Error("vocab id " + std::to_string(id) + " out of range");
    t.vocab_strings[it.key()] = static_cast<int32_t>(id);
    entries.emplace_back(static_cast<int32_t>(id), &it.key());
    max_id = std::max<int32_t>(max_id, static_cast<int32_t>(id));
  }
  // Real vocabularies are dense; a sparse one would only make the id tables huge.
  if (max_id >= 2 * static_cast<int64_t>(entries.size()) + 65536)
    throw Error("vocab ids are too sparse (largest id " + std::to_string(max_id) + " for " +
                std::to_string(entries.size()) + " entries)");
  t.size = max_id + 1;
  t.id_string.assign(t.size, std::string());
  t.id_bytes.assign(t.size, std::string());
  t.id_known.assign(t.size, 0);
  t.id_special.assign(t.size, 0);
  for (const auto& [id, key] : entries) {
    bool in_alphabet = false;
    std::string bytes = byte_level_decode(*key, &in_alphabet);
    if (in_alphabet) t.vocab_bytes.emplace(bytes, id);
    t.id_string[id] = *key;
    t.id_bytes[id] = std::move(bytes);
    t.id_known[id] = 1;
  }
  t.byte_id.fill(-1);
  t.fallback_id.fill(-1);
  for (int b = 0; b < 256; ++b) {
    const std::string one(1, static_cast<char>(b));
    if (auto it = t.vocab_bytes.find(one); it != t.vocab_bytes.end()) t.byte_id[b] = it->second;
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    if (auto it = t.vocab_strings.find(std::string_view(name)); it != t.vocab_strings.end())
      t.fallback_id[b] = it->second;
  }
  if (auto it = model.find("unk_token"); it != model.end() && it->is_string()) {
    auto u = t.vocab_strings.find(it->get<std::string>());
    if (u != t.vocab_strings.end()) t.unk_id = u->second;
  }

  auto mit = model.find("merges");
  if (mit == model.end() || mit->is_null()) return;
  if (!mit->is_array()) throw Error("BPE 'merges' must be an array");
  t.merges.reserve(mit->size());
  std::string a, b;
  for (size_t rank = 0; rank < mit->size(); ++rank) {
    const json& m = (*mit)[rank];
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos)
        throw Error("merge " + std::to_string(rank) + " '" + s + "' is not two tokens");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      throw Error("merge " + std::to_string(rank) + " is neither \"a b\" nor [\"a\", \"b\"]");
    }
    auto ia = t.vocab_strings.find(a);
    auto ib = t.vocab_strings.find(b);
    auto iab = t.vocab_strings.find(a + b);
    if (ia == t.vocab_strings.end() || ib == t.vocab_strings.end() || iab == t.vocab_strings.end())
      throw Error("merge " + std::to_string(rank) + " ('" + a + "', '" + b +
                  "') uses a token that is not in the vocab");
    t.merges.insert(ia->second, ib->second, static_cast<uint32_t>(rank), iab->second);
  }
}

std::unique_ptr<Tokenizer::Impl> load(std::string_view text, const std::string& where) {
  const json root = parse_json(text, where);
  auto t = std::make_unique<Tokenizer::Impl>();
  t->where = where;
  try {
    if (!root.is_object()) throw Error("not a tokenizer.json object");
    auto model = root.find("model");
    if (model == root.end()) throw Error("no 'model'");
    load_model(*t, *model);

    if (auto n = root.find("normalizer"); n != root.end())
      load_normalizer(*n, t->normalizers, where);
    bool byte_level = false;
    if (auto p = root.find("pre_tokenizer"); p != root.end())
      load_pre_tokenizer(*p, t->pre_steps, byte_level, where);
    if (!byte_level)
      throw Error("the pre-tokenizer has no ByteLevel step; only byte-level BPE is supported");
    auto d = root.find("decoder");
    if (d == root.end() || d->is_null())
      throw Error("no decoder; byte-level BPE needs the ByteLevel decoder");
    if (const std::string dt = type_of(*d); dt != "ByteLevel")
      throw Error("unsupported decoder '" + dt + "'");

    if (auto at = root.find("added_tokens"); at != root.end() && !at->is_null()) {
      if (!at->is_array()) throw Error("'added_tokens' must be an array");
      for (const auto& e : *at) {
        AddedToken a;
        if (!e.is_object() || !e.contains("id") || !e["id"].is_number_integer() ||
            !e.contains("content") || !e["content"].is_string())
          throw Error("an added token needs an integer 'id' and a string 'content'");
        const int64_t id = e["id"].get<int64_t>();
        if (id < 0 || id >= static_cast<int64_t>(t->size) + 65536)
          throw Error("added token id " + std::to_string(id) + " is far beyond the vocabulary");
        a.id = static_cast<int32_t>(id);
        a.content = e["content"].get<std::string>();
        a.special = get_bool(e, "special", false);
        a.lstrip = get_bool(e, "lstrip", false);
        a.rstrip = get_bool(e, "rstrip", false);
        a.single_word = get_bool(e, "single_word", false);
        a.normalized = get_bool(e, "normalized", !a.special);
        if (a.content.empty()) continue;  // the reference ignores empty added tokens
        t->added.push_back(std::move(a));
      }
    }
    for (size_t i = 0; i < t->added.size(); ++i) {
      const AddedToken& a = t->added[i];
      if (a.id >= t->size) {
        t->size = a.id + 1;
        t->id_string.resize(t->size);
        t->id_bytes.resize(t->size);
        t->id_known.resize(t->size, 0);
        t->id_special.resize(t->size, 0);
      }
      t->id_string[a.id] = a.content;
      t->id_bytes[a.id] = byte_level_decode(a.content);
      t->id_known[a.id] = 1;
      t->id_special[a.id] = a.special ? 1 : 0;
      t->added_by_content[a.content] = a.id;
    }
    for (size_t i = 0; i < t->added.size(); ++i) {
      const AddedToken& a = t->added[i];
      if (!a.normalized) {
        t->raw_set.add(a.content, static_cast<int>(i));
      } else {
        // Normalized tokens are looked for in normalized text, so normalize them the same way.
        // The reference also decodes such a token from its normalized form.
        Scratch sc;
        std::string content(t->normalize(a.content, sc));
        t->id_bytes[a.id] = byte_level_decode(content);
        if (!content.empty()) t->normalized_set.add(std::move(content), static_cast<int>(i));
      }
    }
    t->raw_set.build();
    t->normalized_set.build();
  } catch (const Error& e) {
    // Messages from the pieces above carry no file name; add it once here.
    const std::string msg = e.what();
    if (msg.rfind(where + ":", 0) == 0) throw;
    bad(where, msg);
  } catch (const json::exception& e) {
    bad(where, std::string("malformed tokenizer.json (") + e.what() + ")");
  }
  return t;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Encoding

template <class OnToken, class OnText>
void Tokenizer::Impl::split_added(std::string_view s, const LiteralSet& set, bool parse_special,
                                  OnToken&& on_token, OnText&& on_text) const {
  if (set.empty()) {
    if (!s.empty()) on_text(s);
    return;
  }
  size_t start_offset = 0;
  size_t pos = 0;
  size_t mstart, mlen;
  int index;
  while (pos < s.size() && set.find(s, pos, mstart, mlen, index)) {
    pos = mstart + mlen;
    const AddedToken& a = added[index];
    if (a.special && !parse_special) continue;
    size_t start = mstart;
    size_t stop = mstart + mlen;
    if (a.single_word) {
      bool start_space = true;
      if (start > 0) {
        uint32_t cp;
        tok::decode_char(s, prev_char_start(s, start), cp);
        start_space = !is_word_char(cp);
      }
      bool stop_space = true;
      if (stop < s.size()) {
        uint32_t cp;
        tok::decode_char(s, stop, cp);
        stop_space = !is_word_char(cp);
      }
      if (!start_space || !stop_space) continue;
    }
    if (a.lstrip) {
      size_t newstart = start;
      while (newstart > 0) {
        const size_t p = prev_char_start(s, newstart);
        uint32_t cp;
        tok::decode_char(s, p, cp);
        if (!tok::is_white_space(cp)) break;
        newstart = p;
      }
      start = std::max(newstart, start_offset);
    }
    if (a.rstrip) {
      while (stop < s.size()) {
        uint32_t cp;
        const size_t len = tok::decode_char(s, stop, cp);
        if (!tok::is_white_space(cp)) break;
        stop += len;
      }
    }
    if (start_offset < start) on_text(s.substr(start_offset, start - start_offset));
    on_token(a.id);
    start_offset = stop;
  }
  if (start_offset < s.size()) on_text(s.substr(start_offset));
}

namespace {

// Applies one utf8proc normalization; `s` is valid UTF-8.
void utf8proc_normalize(std::string_view s, int options, std::string& out) {
  utf8proc_uint8_t* result = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(
      reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()),
      &result, static_cast<utf8proc_option_t>(options | UTF8PROC_STABLE));
  if (n < 0) {
    std::free(result);
    throw Error(std::string("normalization failed: ") + utf8proc_errmsg(n));
  }
  out.assign(reinterpret_cast<const char*>(result), static_cast<size_t>(n));
  std::free(result);
}

// True when every character is below U+0300: such text is already in NFC (no character there
// has a decomposition that NFC would change, and none combines with a preceding one).
bool below_combining_marks(std::string_view s) {
  for (unsigned char c : s) {
    if (c >= 0xCC) return false;  // leads of U+0300 and above
  }
  return true;
}

// NFC of mostly-ASCII text without sending all of it through utf8proc. Cutting the text just
// before an ASCII character never changes the result: an ASCII character is a starter (nothing
// is reordered across it) and is never the second half of a composition. So only the regions
// around characters from U+0300 up, widened to the ASCII character before them (which may be
// their base, as in "e" + U+0301), are normalized.
void nfc_by_regions(std::string_view s, std::string& out) {
  out.clear();
  size_t i = 0;
  const size_t n = s.size();
  std::string region;
  while (i < n) {
    size_t j = i;
    while (j < n && static_cast<unsigned char>(s[j]) < 0xCC) ++j;
    if (j == n) break;
    size_t b = j;
    while (b > i && static_cast<unsigned char>(s[b - 1]) >= 0x80) --b;
    if (b > i) --b;
    size_t e = j;
    while (e < n && static_cast<unsigned char>(s[e]) >= 0x80) ++e;
    out.append(s.data() + i, b - i);
    utf8proc_normalize(s.substr(b, e - b), UTF8PROC_COMPOSE, region);
    out += region;
    i = e;
  }
  out.append(s.data() + i, n - i);
}

bool is_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

}  // namespace

std::string_view Tokenizer::Impl::normalize(std::string_view s, Scratch& sc) const {
  if (normalizers.empty()) return s;
  std::string_view cur = s;
  std::string* bufs[2] = {&sc.normalized, &sc.normalized2};
  int which = 0;
  auto emit = [&](auto&& produce) {
    std::string& dst = *bufs[which];
    which ^= 1;
    produce(dst);
    cur = dst;
  };
  for (const NormStep& n : normalizers) {
    switch (n.kind) {
      case NormKind::kNfc:
        if (below_combining_marks(cur)) break;
        emit([&](std::string& d) { nfc_by_regions(cur, d); });
        break;
      case NormKind::kNfd:
        if (is_ascii(cur)) break;
        emit([&](std::string& d) { utf8proc_normalize(cur, UTF8PROC_DECOMPOSE, d); });
        break;
      case NormKind::kNfkc:
        if (is_ascii(cur)) break;
        emit([&](std::string& d) {
          utf8proc_normalize(cur, UTF8PROC_COMPOSE | UTF8PROC_COMPAT, d);
        });
        break;
      case NormKind::kNfkd:
        if (is_ascii(cur)) break;
        emit([&](std::string& d) {
          utf8proc_normalize(cur, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, d);
        });
        break;
      case NormKind::kLowercase:
        emit([&](std::string& d) {
          d.clear();
          // Character by character, like Rust's char::to_lowercase: the simple mapping, except
          // that U+0130 (capital I with dot above) becomes two characters.
          for (size_t i = 0; i < cur.size();) {
            uint32_t cp;
            i += tok::decode_char(cur, i, cp);
            if (cp == 0x130) {
              d.append("i\xCC\x87");
              continue;
            }
            tok::append_utf8(d, static_cast<uint32_t>(utf8proc_tolower(static_cast<int32_t>(cp))));
          }
        });
        break;
      case NormKind::kPrepend:
        if (cur.empty()) break;
        emit([&](std::string& d) {
          d.assign(n.text);
          d.append(cur);
        });
        break;
      case NormKind::kReplace:
        emit([&](std::string& d) {
          d.clear();
          size_t prev = 0;
          n.pattern.find_iter(cur, sc.md, [&](size_t b, size_t e) {
            d.append(cur.substr(prev, b - prev));
            d.append(n.text);
            prev = e;
          });
          d.append(cur.substr(prev));
        });
        break;
      case NormKind::kStrip: {
        size_t b = 0, e = cur.size();
        while (n.left && b < e) {
          uint32_t cp;
          const size_t len = tok::decode_char(cur, b, cp);
          if (!tok::is_white_space(cp)) break;
          b += len;
        }
        while (n.right && e > b) {
          const size_t p = prev_char_start(cur, e);
          uint32_t cp;
          tok::decode_char(cur, p, cp);
          if (!tok::is_white_space(cp)) break;
          e = p;
        }
        cur = cur.substr(b, e - b);
        break;
      }
    }
  }
  return cur;
}

void Tokenizer::Impl::pre_tokenize(size_t step, std::string_view piece, Scratch& sc,
                                   WordCache* cache, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (step == pre_steps.size()) {
    bpe(piece, sc, cache, out);
    return;
  }
  const PreStep& p = pre_steps[step];
  if (p.kind == PreKind::kPrefixSpace) {
    if (piece[0] == ' ') {
      pre_tokenize(step + 1, piece, sc, cache, out);
      return;
    }
    std::string& buf = sc.prefixed[step];
    buf.assign(1, ' ');
    buf.append(piece);
    pre_tokenize(step + 1, buf, sc, cache, out);
    return;
  }

  const bool isolated_fast =
      p.kind == PreKind::kSplit && !p.invert && p.behavior == Behavior::kIsolated;
  if (isolated_fast) {
    // The common case (every real byte-level tokenizer): stream the pieces without storing them.
    size_t prev = 0;
    p.pattern.find_iter(piece, sc.md, [&](size_t b, size_t e) {
      if (prev < b) pre_tokenize(step + 1, piece.substr(prev, b - prev), sc, cache, out);
      pre_tokenize(step + 1, piece.substr(b, e - b), sc, cache, out);
      prev = e;
    });
    if (prev < piece.size()) pre_tokenize(step + 1, piece.substr(prev), sc, cache, out);
    return;
  }

  // General case: the whole piece as alternating (range, is_match) parts, then the behavior.
  struct Part {
    size_t b, e;
    bool match;
  };
  std::vector<Part> parts;
  size_t prev = 0;
  auto on_match = [&](size_t b, size_t e) {
    if (prev != b) parts.push_back({prev, b, false});
    parts.push_back({b, e, true});
    prev = e;
  };
  Behavior behavior = p.behavior;
  if (p.kind == PreKind::kSplit) {
    p.pattern.find_iter(piece, sc.md, on_match);
  } else {  // Digits: each numeric character is a match
    behavior = p.individual_digits ? Behavior::kIsolated : Behavior::kContiguous;
    for (size_t i = 0; i < piece.size();) {
      uint32_t cp;
      const size_t len = tok::decode_char(piece, i, cp);
      if (is_numeric(cp)) on_match(i, i + len);
      i += len;
    }
  }
  if (prev != piece.size()) parts.push_back({prev, piece.size(), false});
  if (p.invert)
    for (auto& x : parts) x.match = !x.match;

  std::vector<std::pair<size_t, size_t>> splits;
  switch (behavior) {
    case Behavior::kIsolated:
      for (const auto& x : parts) splits.emplace_back(x.b, x.e);
      break;
    case Behavior::kRemoved:
      for (const auto& x : parts)
        if (!x.match) splits.emplace_back(x.b, x.e);
      break;
    case Behavior::kContiguous: {
      bool previous_match = false;
      for (const auto& x : parts) {
        if (x.match == previous_match && !splits.empty())
          splits.back().second = x.e;
        else
          splits.emplace_back(x.b, x.e);
        previous_match = x.match;
      }
      break;
    }
    case Behavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const auto& x : parts) {
        if (x.match && !previous_match && !splits.empty())
          splits.back().second = x.e;
        else
          splits.emplace_back(x.b, x.e);
        previous_match = x.match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->match && !previous_match && !splits.empty())
          splits.back().first = it->b;
        else
          splits.emplace_back(it->b, it->e);
        previous_match = it->match;
      }
      std::reverse(splits.begin(), splits.end());
      break;
    }
  }
  for (const auto& [b, e] : splits)
    if (b < e) pre_tokenize(step + 1, piece.substr(b, e - b), sc, cache, out);
}

void Tokenizer::Impl::bpe(std::string_view word, Scratch& sc, WordCache* cache,
                          std::vector<int32_t>& out) const {
  if (word.size() == 1 && byte_id[static_cast<unsigned char>(word[0])] >= 0) {
    out.push_back(byte_id[static_cast<unsigned char>(word[0])]);
    return;
  }
  if (ignore_merges) {
    if (auto it = vocab_bytes.find(word); it != vocab_bytes.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (cache == nullptr || word.size() > WordCache::kMaxWordBytes) {
    bpe_merge(word, sc, out);
    return;
  }
  const uint64_t h = WordCache::hash(word);
  if (cache->get(word, h, out)) return;
  const size_t before = out.size();
  bpe_merge(word, sc, out);
  cache->put(word, h, out.data() + before, out.size() - before);
}

void Tokenizer::Impl::bpe_merge(std::string_view word, Scratch& sc,
                                std::vector<int32_t>& out) const {
  auto& sym = sc.symbols;
  sym.clear();
  const ByteAlphabet& alphabet = byte_alphabet();
  auto add = [&](int32_t id) {
    const auto n = static_cast<int32_t>(sym.size());
    sym.push_back({id, n - 1, n + 1, true});
  };
  // Pending unknown run, as the reference keeps it: added when a known symbol follows.
  bool unk_pending = false;
  for (unsigned char b : word) {
    const int32_t id = byte_id[b];
    if (id >= 0) {
      if (unk_pending) {
        add(unk_id);
        unk_pending = false;
      }
      add(id);
      continue;
    }
    if (byte_fallback) {
      // The character here is the byte's byte-level stand-in; its UTF-8 bytes are looked up.
      std::string ch;
      tok::append_utf8(ch, alphabet.byte_to_cp[b]);
      bool all = true;
      for (unsigned char c : ch) all = all && fallback_id[c] >= 0;
      if (all) {
        for (unsigned char c : ch) add(fallback_id[c]);
        continue;
      }
    }
    if (unk_id >= 0) {
      if (unk_pending && !fuse_unk) add(unk_id);
      unk_pending = true;
    }
    // Without an unknown token the character is dropped, as in the reference.
  }
  if (unk_pending) add(unk_id);
  if (sym.empty()) return;
  sym.back().next = -1;

  auto& heap = sc.heap;
  heap.clear();
  auto worse = [](const Scratch::Candidate& x, const Scratch::Candidate& y) {
    return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
  };
  auto push = [&](int32_t pos) {
    const int32_t next = sym[pos].next;
    if (next < 0) return;
    if (const MergeMap::Slot* m = merges.find(sym[pos].id, sym[next].id)) {
      heap.push_back({m->rank, pos, m->id});
      std::push_heap(heap.begin(), heap.end(), worse);
    }
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(sym.size()); ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), worse);
    const Scratch::Candidate top = heap.back();
    heap.pop_back();
    Scratch::Symbol& left = sym[top.pos];
    if (!left.alive || left.next < 0) continue;
    Scratch::Symbol& right = sym[left.next];
    const MergeMap::Slot* m = merges.find(left.id, right.id);
    if (m == nullptr || m->id != top.id) continue;  // stale: the pair has changed since
    left.id = top.id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) sym[left.next].prev = top.pos;
    if (left.prev >= 0) push(left.prev);
    push(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

void Tokenizer::Impl::encode(std::string_view text, std::vector<int32_t>& out,
                             bool parse_special) const {
  std::string repaired;
  if (!tok::is_valid(text)) {
    tok::append_lossy(repaired, text, true);
    text = repaired;
  }
  Scratch sc;
  // Sized once: resizing later would move buffers that outer steps still point into.
  sc.prefixed.resize(pre_steps.size());
  std::unique_lock<std::mutex> lock(cache_mutex, std::try_to_lock);
  WordCache* wc = lock.owns_lock() ? &word_cache : nullptr;  // another thread has it: go uncached

  auto on_token = [&](int32_t id) { out.push_back(id); };
  auto pre = [&](std::string_view piece) { pre_tokenize(0, piece, sc, wc, out); };
  split_added(text, raw_set, parse_special, on_token, [&](std::string_view segment) {
    std::string_view norm = normalize(segment, sc);
    if (normalized_set.empty()) {
      pre(norm);
      return;
    }
    // The pre-tokenizer may reuse the normalization buffers, so keep this text apart.
    const std::string owned(norm);
    split_added(owned, normalized_set, parse_special, on_token, pre);
  });
}

// ---------------------------------------------------------------------------------------------
// Public API

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json(std::string_view json_text, const std::string& where) {
  return Tokenizer(load(json_text, where));
}

Tokenizer Tokenizer::from_file(const std::string& path) { return from_json(read_file(path), path); }

Tokenizer Tokenizer::from_gguf(const std::string& path) {
  GgufVocab v = gguf_vocab(path);
  Tokenizer t = from_json(v.tokenizer_json, path);
  t.impl_->config = std::move(v.config);
  return t;
}

Tokenizer Tokenizer::from_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(dir, ec)) {
    // A GGUF model file, or a tokenizer.json given directly.
    std::string head = read_file_prefix(dir, 4);
    return head == "GGUF" ? from_gguf(dir) : from_file(dir);
  }
  if (!fs::is_directory(dir, ec)) fail(dir, "no such directory");
  const std::string path = (fs::path(dir) / "tokenizer.json").string();
  if (!fs::is_regular_file(path, ec)) fail(dir, "no tokenizer.json in this directory");
  Tokenizer t = from_file(path);
  const std::string cfg_path = (fs::path(dir) / "tokenizer_config.json").string();
  if (fs::is_regular_file(cfg_path, ec)) {
    const json cfg = load_json_file(cfg_path);
    if (!cfg.is_object()) fail(cfg_path, "not a JSON object");
    TokenizerConfig& c = t.impl_->config;
    c.bos_token = config_token(cfg, "bos_token");
    c.eos_token = config_token(cfg, "eos_token");
    c.pad_token = config_token(cfg, "pad_token");
    c.unk_token = config_token(cfg, "unk_token");
    try {
      c.add_bos_token = get_bool(cfg, "add_bos_token", false);
      c.add_eos_token = get_bool(cfg, "add_eos_token", false);
    } catch (const Error& e) {
      fail(cfg_path, e.what());
    }
  }
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  impl_->encode(text, out, options.parse_special);
  return out;
}

void Tokenizer::encode_into(std::string_view text, std::vector<int32_t>& out,
                            const EncodeOptions& options) const {
  impl_->encode(text, out, options.parse_special);
}

std::string Tokenizer::decode_bytes(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    const std::string& b = impl_->bytes_of(id);
    if (skip_special && impl_->id_special[id]) continue;
    out += b;
  }
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  const std::string bytes = decode_bytes(ids, skip_special);
  std::string out;
  out.reserve(bytes.size());
  tok::append_lossy(out, bytes, true);
  return out;
}

const std::string& Tokenizer::token_bytes(int32_t id) const { return impl_->bytes_of(id); }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_by_content.find(token); it != impl_->added_by_content.end())
    return it->second;
  if (auto it = impl_->vocab_strings.find(token); it != impl_->vocab_strings.end())
    return it->second;
  return std::nullopt;
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (!is_known(id)) return std::nullopt;
  return impl_->id_string[id];
}

bool Tokenizer::is_known(int32_t id) const {
  return id >= 0 && id < impl_->size && impl_->id_known[id];
}

bool Tokenizer::is_special(int32_t id) const { return is_known(id) && impl_->id_special[id]; }

int32_t Tokenizer::vocab_size() const { return impl_->size; }

const TokenizerConfig& Tokenizer::config() const { return impl_->config; }

std::optional<int32_t> Tokenizer::bos_id() const {
  return impl_->config.bos_token ? token_to_id(*impl_->config.bos_token) : std::nullopt;
}

std::optional<int32_t> Tokenizer::eos_id() const {
  return impl_->config.eos_token ? token_to_id(*impl_->config.eos_token) : std::nullopt;
}

// ---------------------------------------------------------------------------------------------

TokenStreamDecoder::TokenStreamDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(&tokenizer), skip_special_(skip_special) {}

std::string TokenStreamDecoder::push(int32_t id) {
  const std::string& b = tokenizer_->token_bytes(id);
  if (skip_special_ && tokenizer_->is_special(id)) return {};
  pending_ += b;
  std::string out;
  const size_t used = tok::append_lossy(out, pending_, false);
  pending_.erase(0, used);
  return out;
}

std::string TokenStreamDecoder::flush() {
  std::string out;
  tok::append_lossy(out, pending_, true);
  pending_.clear();
  return out;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  tok::append_lossy(out, bytes, true);
  return out;
}

bool utf8_is_valid(std::string_view bytes) { return tok::is_valid(bytes); }

}  // namespace qrwkv
