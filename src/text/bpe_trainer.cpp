#include "text/bpe_trainer.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "io/error.h"
#include "io/json.h"
#include "io/mapped_file.h"
#include "text/tok_regex.h"
#include "text/tok_utf8.h"
#include "text/tokenizer.h"

namespace qrwkv {

namespace {

// ---------------------------------------------------------------------------------------------
// Byte-level alphabet

// GPT-2's byte-to-character table: printable bytes stand for themselves, the others are moved
// to U+0100 and up, so that every byte has a visible spelling.
struct ByteLevel {
  std::array<std::string, 256> spelling;
  // The bytes in the order of their spelling's code point. The reference trainer gives the
  // alphabet ids in this order, and ties between equally frequent pairs are broken by ids, so
  // the trainer numbers its byte symbols the same way.
  std::array<uint8_t, 256> by_rank{};

  ByteLevel() {
    std::array<uint32_t, 256> cp{};
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      cp[b] = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
      tok::append_utf8(spelling[b], cp[b]);
    }
    for (int b = 0; b < 256; ++b) by_rank[b] = static_cast<uint8_t>(b);
    std::sort(by_rank.begin(), by_rank.end(), [&](uint8_t x, uint8_t y) { return cp[x] < cp[y]; });
  }

  std::string spell(std::string_view bytes) const {
    std::string s;
    for (unsigned char c : bytes) s += spelling[c];
    return s;
  }
};

const ByteLevel& byte_level() {
  static const ByteLevel b;
  return b;
}

// ---------------------------------------------------------------------------------------------
// Normalization

// NFC through utf8proc. Text whose bytes are all below 0xCC has only characters below U+0300,
// which NFC leaves alone, so most English text skips utf8proc entirely.
void nfc(std::string_view s, std::string& out) {
  if (std::all_of(s.begin(), s.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0xCC; })) {
    out.assign(s);
    return;
  }
  utf8proc_uint8_t* result = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(
      reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()),
      &result, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) {
    std::free(result);
    throw Error(std::string("normalization failed: ") + utf8proc_errmsg(n));
  }
  out.assign(reinterpret_cast<const char*>(result), static_cast<size_t>(n));
  std::free(result);
}

// ---------------------------------------------------------------------------------------------
// Merging

using Symbol = uint32_t;
using PairKey = uint64_t;

PairKey pair_key(Symbol a, Symbol b) { return (static_cast<uint64_t>(a) << 32) | b; }
Symbol pair_left(PairKey k) { return static_cast<Symbol>(k >> 32); }
Symbol pair_right(PairKey k) { return static_cast<Symbol>(k & 0xFFFFFFFFu); }

// A candidate merge in the priority queue. `count` is the pair's count when it was queued; it
// may have dropped since (counts are refreshed when the entry comes to the top). `words` are
// the unique words the pair was seen in when it was queued; only those are merged, as in the
// reference.
struct Candidate {
  uint64_t count;
  PairKey pair;
  std::vector<uint32_t> words;
};

// Heap order: the largest count first, then the smallest pair (left id, then right id).
bool lower_priority(const Candidate& x, const Candidate& y) {
  if (x.count != y.count) return x.count < y.count;
  return x.pair > y.pair;
}

struct PairChange {
  PairKey pair;
  int delta;
};

// Replaces every non-overlapping occurrence of (a, b) in `word`, left to right, by `merged`, and
// reports the neighbouring pairs that disappear (-1) or appear (+1). The pair itself is not
// reported, as in the reference, whose count for it is then never looked at again unless the
// merged token already existed under another merge.
void merge_word(std::vector<Symbol>& word, Symbol a, Symbol b, Symbol merged,
                std::vector<PairChange>& changes) {
  size_t out = 0;
  size_t i = 0;
  const size_t n = word.size();
  while (i < n) {
    if (word[i] == a && i + 1 < n && word[i + 1] == b) {
      // The left neighbour is the symbol already written (possibly merged just before); the
      // right neighbour is still the original one.
      if (out > 0) {
        changes.push_back({pair_key(word[out - 1], a), -1});
        changes.push_back({pair_key(word[out - 1], merged), +1});
      }
      if (i + 2 < n) {
        changes.push_back({pair_key(b, word[i + 2]), -1});
        changes.push_back({pair_key(merged, word[i + 2]), +1});
      }
      word[out++] = merged;
      i += 2;
    } else {
      word[out++] = word[i++];
    }
  }
  word.resize(out);
}

void sort_unique(std::vector<uint32_t>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool blank(const std::string& line) {
  return std::all_of(line.begin(), line.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// BpeTrainer

struct BpeTrainer::Impl {
  BpeTrainerOptions options;
  tok::Pattern split;
  pcre2_real_match_data_8* md = nullptr;
  std::unordered_map<std::string, uint64_t> word_counts;
  uint64_t total = 0;
  std::string repaired, normalized;

  ~Impl() {
    if (md != nullptr) tok::Pattern::free_match_data(md);
  }
};

BpeTrainer::BpeTrainer(BpeTrainerOptions options) : impl_(std::make_unique<Impl>()) {
  std::unordered_set<std::string> seen;
  for (const auto& s : options.special_tokens) {
    if (s.empty()) throw Error("special tokens must not be empty");
    if (!seen.insert(s).second) throw Error("special token '" + s + "' is given twice");
    // A special token spelled like a byte token would share its vocabulary entry.
    for (const auto& b : byte_level().spelling)
      if (s == b) throw Error("special token '" + s + "' is spelled like the token of a byte");
  }
  const int64_t minimum = 256 + static_cast<int64_t>(options.special_tokens.size());
  if (options.vocab_size < minimum)
    throw Error("vocab size " + std::to_string(options.vocab_size) + " is below " +
                std::to_string(minimum) + " (256 byte tokens + " +
                std::to_string(options.special_tokens.size()) + " special tokens)");
  impl_->options = std::move(options);
  impl_->split = tok::Pattern::regex(kQwen2SplitRegex, "pre-tokenizer");
  impl_->md = tok::Pattern::new_match_data();
}

BpeTrainer::~BpeTrainer() = default;

void BpeTrainer::add_word(std::string_view bytes, uint64_t count) {
  if (bytes.empty() || count == 0) return;
  auto it = impl_->word_counts.find(std::string(bytes));
  if (it == impl_->word_counts.end()) it = impl_->word_counts.emplace(bytes, 0).first;
  it->second += count;
  impl_->total += count;
}

void BpeTrainer::add_text(std::string_view text) {
  Impl& t = *impl_;
  std::string_view s = text;
  if (!utf8_is_valid(text)) {
    t.repaired = utf8_lossy(text);
    s = t.repaired;
  }
  nfc(s, t.normalized);
  const std::string_view n = t.normalized;
  // The Split pre-tokenizer with the Isolated behaviour keeps both the matches and the text
  // between them as words (the Qwen2 pattern leaves no such gaps, but another might).
  size_t last = 0;
  t.split.find_iter(n, t.md, [&](size_t b, size_t e) {
    if (b > last) add_word(n.substr(last, b - last));
    add_word(n.substr(b, e - b));
    last = e;
  });
  if (last < n.size()) add_word(n.substr(last));
}

size_t BpeTrainer::unique_words() const { return impl_->word_counts.size(); }
uint64_t BpeTrainer::total_words() const { return impl_->total; }

BpeModel BpeTrainer::train() const {
  const BpeTrainerOptions& opt = impl_->options;
  const ByteLevel& bl = byte_level();

  // Symbols 0..255 are the bytes in the reference's alphabet order; merged tokens follow.
  // Special tokens take the ids before them in the output and never take part in merges.
  std::vector<std::string> symbol_bytes;
  std::unordered_map<std::string, Symbol> symbol_of;
  std::array<Symbol, 256> byte_symbol{};
  for (int r = 0; r < 256; ++r) {
    const uint8_t b = bl.by_rank[r];
    byte_symbol[b] = static_cast<Symbol>(r);
    symbol_bytes.emplace_back(1, static_cast<char>(b));
    symbol_of.emplace(symbol_bytes.back(), static_cast<Symbol>(r));
  }

  // The unique words, sorted so that everything below is independent of hash-table order.
  std::vector<std::pair<std::string_view, uint64_t>> entries;
  entries.reserve(impl_->word_counts.size());
  for (const auto& [w, c] : impl_->word_counts) entries.emplace_back(w, c);
  std::sort(entries.begin(), entries.end());
  std::vector<std::vector<Symbol>> words(entries.size());
  std::vector<uint64_t> counts(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    counts[i] = entries[i].second;
    words[i].reserve(entries[i].first.size());
    for (unsigned char c : entries[i].first) words[i].push_back(byte_symbol[c]);
  }

  std::unordered_map<PairKey, int64_t> pair_counts;
  std::unordered_map<PairKey, std::vector<uint32_t>> where;
  for (size_t i = 0; i < words.size(); ++i) {
    const auto& w = words[i];
    for (size_t j = 0; j + 1 < w.size(); ++j) {
      const PairKey p = pair_key(w[j], w[j + 1]);
      pair_counts[p] += static_cast<int64_t>(counts[i]);
      auto& pos = where[p];
      if (pos.empty() || pos.back() != i) pos.push_back(static_cast<uint32_t>(i));
    }
  }
  const std::unordered_set<std::string> special_spellings(opt.special_tokens.begin(),
                                                          opt.special_tokens.end());
  std::unordered_set<PairKey> banned;
  std::vector<Candidate> heap;
  heap.reserve(where.size());
  auto push = [&](Candidate c) {
    heap.push_back(std::move(c));
    std::push_heap(heap.begin(), heap.end(), lower_priority);
  };
  auto queue_new_pairs = [&] {
    // Sorted so that equal candidates enter the heap in a fixed order.
    std::vector<std::pair<PairKey, std::vector<uint32_t>>> fresh(
        std::make_move_iterator(where.begin()), std::make_move_iterator(where.end()));
    where.clear();
    std::sort(fresh.begin(), fresh.end(),
              [](const auto& x, const auto& y) { return x.first < y.first; });
    for (auto& [p, pos] : fresh) {
      const int64_t count = pair_counts[p];
      if (count <= 0 || banned.count(p) != 0) continue;
      sort_unique(pos);
      push(Candidate{static_cast<uint64_t>(count), p, std::move(pos)});
    }
  };
  queue_new_pairs();

  const int64_t n_special = static_cast<int64_t>(opt.special_tokens.size());
  std::vector<std::pair<Symbol, Symbol>> merges;
  std::vector<PairChange> changes;
  while (n_special + static_cast<int64_t>(symbol_bytes.size()) < opt.vocab_size && !heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), lower_priority);
    Candidate top = std::move(heap.back());
    heap.pop_back();
    const int64_t current = pair_counts[top.pair];
    if (static_cast<int64_t>(top.count) != current) {
      // Stale: the pair's count changed since it was queued (merges elsewhere took some of
      // its occurrences). Requeue it with its true count, as the reference does.
      top.count = static_cast<uint64_t>(std::max<int64_t>(current, 0));
      push(std::move(top));
      continue;
    }
    if (top.count < 1 || top.count < opt.min_frequency) break;

    const Symbol a = pair_left(top.pair), b = pair_right(top.pair);
    std::string merged_bytes = symbol_bytes[a] + symbol_bytes[b];
    if (!special_spellings.empty() && special_spellings.count(bl.spell(merged_bytes)) != 0) {
      // A merged token spelled like a special token would share its vocabulary entry (the
      // reference would silently reuse the special id). Such a pair is never merged.
      banned.insert(top.pair);
      continue;
    }
    Symbol merged;
    // Two different merges can spell the same token ("a"+"bc" and "ab"+"c"); the second one
    // reuses the token's id and does not grow the vocabulary, as in the reference.
    if (auto it = symbol_of.find(merged_bytes); it != symbol_of.end()) {
      merged = it->second;
    } else {
      merged = static_cast<Symbol>(symbol_bytes.size());
      symbol_of.emplace(merged_bytes, merged);
      symbol_bytes.push_back(std::move(merged_bytes));
    }
    merges.emplace_back(a, b);

    for (uint32_t wi : top.words) {
      changes.clear();
      merge_word(words[wi], a, b, merged, changes);
      const auto count = static_cast<int64_t>(counts[wi]);
      for (const PairChange& c : changes) {
        pair_counts[c.pair] += c.delta * count;
        if (c.delta > 0) {
          auto& pos = where[c.pair];
          if (pos.empty() || pos.back() != wi) pos.push_back(wi);
        }
      }
    }
    queue_new_pairs();
  }

  BpeModel model;
  model.special_tokens = opt.special_tokens;
  model.tokens.reserve(symbol_bytes.size());
  for (const auto& s : symbol_bytes) model.tokens.push_back(bl.spell(s));
  // When the same pair is merged twice (possible only after a reused token id), the reference
  // keeps the later rank; do the same.
  std::unordered_map<PairKey, size_t> last_rank;
  for (size_t r = 0; r < merges.size(); ++r)
    last_rank[pair_key(merges[r].first, merges[r].second)] = r;
  for (size_t r = 0; r < merges.size(); ++r) {
    if (last_rank[pair_key(merges[r].first, merges[r].second)] != r) continue;
    model.merges.emplace_back(model.tokens[merges[r].first], model.tokens[merges[r].second]);
  }
  return model;
}

// ---------------------------------------------------------------------------------------------
// Output files

namespace {

// Plain ChatML, Qwen2's template without a default system message.
constexpr const char* kChatMlTemplate =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

bool has_special(const BpeModel& m, const std::string& s) {
  return std::find(m.special_tokens.begin(), m.special_tokens.end(), s) != m.special_tokens.end();
}

std::optional<std::string> eos_token(const BpeModel& m) {
  // A model trained on documents ending in <|endoftext|> emits it at the end of a text; a chat
  // turn's <|im_end|> stops generation anyway (the runtime always stops on both).
  for (const char* t : {"<|endoftext|>", "<|im_end|>"})
    if (has_special(m, t)) return std::string(t);
  return std::nullopt;
}

int32_t special_id(const BpeModel& m, const std::string& s) {
  return static_cast<int32_t>(std::find(m.special_tokens.begin(), m.special_tokens.end(), s) -
                              m.special_tokens.begin());
}

}  // namespace

std::string bpe_tokenizer_json(const BpeModel& m) {
  // The pieces are written by hand, in the reference's key order and with the vocabulary in id
  // order, so that the file reads like one the reference saves; nlohmann's dump() does the
  // string escaping.
  auto q = [](const std::string& s) { return json(s).dump(); };
  const auto n_special = static_cast<int32_t>(m.special_tokens.size());
  std::string out = "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n";
  out += "  \"added_tokens\": [";
  for (int32_t i = 0; i < n_special; ++i) {
    out += i ? ",\n" : "\n";
    out += "    {\"id\": " + std::to_string(i) + ", \"content\": " + q(m.special_tokens[i]) +
           ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false,"
           " \"special\": true}";
  }
  out += n_special ? "\n  ],\n" : "],\n";
  out += "  \"normalizer\": {\"type\": \"NFC\"},\n";
  out +=
      "  \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
      "\"pattern\": {\"Regex\": " +
      q(kQwen2SplitRegex) +
      "}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", "
      "\"add_prefix_space\": false, \"trim_offsets\": false, \"use_regex\": false}]},\n";
  out +=
      "  \"post_processor\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
      "\"trim_offsets\": false, \"use_regex\": false},\n";
  out +=
      "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": "
      "false, \"use_regex\": false},\n";
  out +=
      "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
      "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
      "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n"
      "    \"vocab\": {";
  // The special tokens are in the vocabulary too, as the reference trainer writes them: the
  // reference gives an added token the id of the vocabulary entry with its content, and one
  // that has none the next id after the vocabulary, whatever "id" the file says.
  for (int32_t i = 0; i < n_special; ++i) {
    out += i ? ",\n      " : "\n      ";
    out += q(m.special_tokens[i]) + ": " + std::to_string(i);
  }
  for (size_t i = 0; i < m.tokens.size(); ++i) {
    out += (i || n_special) ? ",\n      " : "\n      ";
    out += q(m.tokens[i]) + ": " + std::to_string(n_special + static_cast<int64_t>(i));
  }
  out += "\n    },\n    \"merges\": [";
  for (size_t i = 0; i < m.merges.size(); ++i) {
    out += i ? ",\n      " : "\n      ";
    out += "[" + q(m.merges[i].first) + ", " + q(m.merges[i].second) + "]";
  }
  out += m.merges.empty() ? "]\n  }\n}\n" : "\n    ]\n  }\n}\n";
  return out;
}

std::string bpe_tokenizer_config_json(const BpeModel& m) {
  nlohmann::ordered_json cfg;
  cfg["add_bos_token"] = false;
  cfg["add_eos_token"] = false;
  cfg["bos_token"] = nullptr;
  const auto eos = eos_token(m);
  cfg["eos_token"] = eos ? json(*eos) : json(nullptr);
  cfg["pad_token"] = has_special(m, "<|endoftext|>") ? json("<|endoftext|>") : json(nullptr);
  cfg["unk_token"] = nullptr;
  cfg["model_max_length"] = 32768;
  cfg["clean_up_tokenization_spaces"] = false;
  nlohmann::ordered_json decoder = nlohmann::ordered_json::object();
  for (size_t i = 0; i < m.special_tokens.size(); ++i)
    decoder[std::to_string(i)] = {{"content", m.special_tokens[i]},
                                  {"lstrip", false},
                                  {"normalized", false},
                                  {"rstrip", false},
                                  {"single_word", false},
                                  {"special", true}};
  cfg["added_tokens_decoder"] = decoder;
  if (has_special(m, "<|im_start|>") && has_special(m, "<|im_end|>"))
    cfg["chat_template"] = kChatMlTemplate;
  cfg["tokenizer_class"] = "PreTrainedTokenizerFast";
  return cfg.dump(2) + "\n";
}

std::string bpe_generation_config_json(const BpeModel& m) {
  nlohmann::ordered_json g;
  g["bos_token_id"] = nullptr;
  json eos = json::array();
  for (const char* t : {"<|endoftext|>", "<|im_end|>"})
    if (has_special(m, t)) eos.push_back(special_id(m, t));
  g["eos_token_id"] = eos;
  if (has_special(m, "<|endoftext|>")) g["pad_token_id"] = special_id(m, "<|endoftext|>");
  return g.dump(2) + "\n";
}

void write_bpe_tokenizer_dir(const BpeModel& model, const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(dir, "cannot create directory: " + ec.message());
  const std::pair<const char*, std::string> files[] = {
      {"tokenizer.json", bpe_tokenizer_json(model)},
      {"tokenizer_config.json", bpe_tokenizer_config_json(model)},
      {"generation_config.json", bpe_generation_config_json(model)}};
  for (const auto& [name, text] : files)
    write_file_atomic((fs::path(dir) / name).string(), text.data(), text.size());
}

std::vector<std::string> read_training_documents(const std::string& path) {
  const std::string text = read_text_file(path);
  std::vector<std::string> docs;
  std::istringstream in(text);
  std::string line;
  if (ends_with(path, ".jsonl")) {
    int64_t n = 0;
    while (std::getline(in, line)) {
      ++n;
      if (blank(line)) continue;
      const std::string where = path + ":" + std::to_string(n);
      const json j = parse_json(line, where);
      auto it = j.is_object() ? j.find("text") : j.end();
      if (!j.is_object() || it == j.end() || !it->is_string())
        fail(where, "a .jsonl line must be an object with a string field \"text\"");
      if (!it->get_ref<const std::string&>().empty()) docs.push_back(it->get<std::string>());
    }
    return docs;
  }
  std::string doc;
  while (std::getline(in, line)) {
    if (blank(line)) {
      if (!doc.empty()) docs.push_back(std::move(doc));
      doc.clear();
      continue;
    }
    if (!doc.empty()) doc += '\n';
    doc += line;
  }
  if (!doc.empty()) docs.push_back(std::move(doc));
  return docs;
}

}  // namespace qrwkv
