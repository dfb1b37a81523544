// Tokenizers and chat templates from GGUF metadata. A GGUF file carries a byte-level BPE
// vocabulary as tokenizer.ggml.{tokens, token_type, merges, pre}: the tokens in the byte-level
// alphabet (control and user-defined tokens as plain text), the merges as "a b" strings, and
// `pre` naming the pre-tokenizer. They are turned into the tokenizer.json the same model
// carries on Hugging Face, so that one tokenizer implementation serves both.
#include "text/gguf_vocab.h"

#include <set>

#include "io/error.h"
#include "io/gguf.h"
#include "io/json.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace qrwkv {

namespace {

// llama.cpp's token types.
constexpr int64_t kNormal = 1, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6;

// The split regex of a llama.cpp pre-tokenizer name, in the spelling of the tokenizer.json of
// its model family; `gpt2` is GPT-2's own (ByteLevel with use_regex).
struct PreTokenizer {
  const char* regex;  // nullptr: ByteLevel's GPT-2 regex
  bool nfc;           // the family's tokenizer.json normalizes to NFC
  bool ignore_merges;
};

PreTokenizer pre_tokenizer(const std::string& pre, const std::string& where) {
  if (pre == "qwen2" || pre == "deepseek-r1-qwen" || pre == "megrez" || pre == "stablelm2")
    return {kQwen2SplitRegex, pre == "qwen2" || pre == "deepseek-r1-qwen", false};
  if (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe" || pre == "falcon3" ||
      pre == "dbrx" || pre == "smaug-bpe")
    return {kLlama3SplitRegex, false, true};
  if (pre == "gpt-2" || pre == "gpt2" || pre == "phi-2" || pre == "roberta-bpe" || pre == "mpt" ||
      pre == "olmo" || pre == "jais")
    return {nullptr, false, false};
  fail(where, "tokenizer.ggml.pre '" + pre +
                  "' is not supported (qwen2, llama-bpe/llama3, gpt-2 and their aliases are)");
}

std::string token_text(const std::vector<std::string>& tokens, uint64_t id) {
  return id < tokens.size() ? tokens[id] : std::string();
}

}  // namespace

const char* const kLlama3SplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2SplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

GgufVocab gguf_vocab(const std::string& path) {
  const GgufFile f(path);
  const std::string model = f.get_string("tokenizer.ggml.model");
  if (model != "gpt2")
    fail(path,
         "tokenizer.ggml.model '" + model + "' is not supported (only byte-level BPE, 'gpt2', is)");
  const std::vector<std::string> tokens = f.get_strings("tokenizer.ggml.tokens");
  std::vector<int64_t> types;
  if (f.has("tokenizer.ggml.token_type")) {
    types = f.get_ints("tokenizer.ggml.token_type");
    if (types.size() != tokens.size())
      fail(path, "tokenizer.ggml.token_type has " + std::to_string(types.size()) + " entries for " +
                     std::to_string(tokens.size()) + " tokens");
  }
  const std::vector<std::string> merges = f.get_strings("tokenizer.ggml.merges");
  const std::string pre_name =
      f.has("tokenizer.ggml.pre") ? f.get_string("tokenizer.ggml.pre") : std::string("gpt-2");
  const PreTokenizer pre = pre_tokenizer(pre_name.empty() ? "gpt-2" : pre_name, path);

  json vocab = json::object();
  json added = json::array();
  std::set<std::string> seen;
  for (size_t id = 0; id < tokens.size(); ++id) {
    const int64_t type = types.empty() ? kNormal : types[id];
    if (type == kControl || type == kUserDefined) {
      added.push_back({{"id", id},
                       {"content", tokens[id]},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", type == kUserDefined},
                       {"special", type == kControl}});
    } else if (type == kByte) {
      fail(path,
           "byte tokens (<0xXX>, SentencePiece style) are not supported in a gpt2 vocabulary");
    } else if (!tokens[id].empty() && seen.insert(tokens[id]).second && type != kUnused) {
      vocab[tokens[id]] = id;
    }
  }
  json merge_list = json::array();
  for (const std::string& m : merges) {
    // "a b": split at the first space after the first character.
    const size_t sp = m.find(' ', 1);
    if (sp == std::string::npos || sp + 1 >= m.size())
      fail(path, "tokenizer.ggml.merges holds '" + m + "', not two tokens separated by a space");
    merge_list.push_back(json::array({m.substr(0, sp), m.substr(sp + 1)}));
  }
  json byte_level = {{"type", "ByteLevel"},
                     {"add_prefix_space", false},
                     {"trim_offsets", false},
                     {"use_regex", pre.regex == nullptr}};
  json pre_tok;
  if (pre.regex == nullptr) {
    pre_tok = byte_level;
  } else {
    pre_tok = {{"type", "Sequence"},
               {"pretokenizers", json::array({{{"type", "Split"},
                                               {"pattern", {{"Regex", pre.regex}}},
                                               {"behavior", "Isolated"},
                                               {"invert", false}},
                                              byte_level})}};
  }
  json tj = {{"version", "1.0"},
             {"added_tokens", added},
             {"normalizer", pre.nfc ? json{{"type", "NFC"}} : json()},
             {"pre_tokenizer", pre_tok},
             {"post_processor", nullptr},
             {"decoder", byte_level},
             {"model",
              {{"type", "BPE"},
               {"dropout", nullptr},
               {"unk_token", nullptr},
               {"continuing_subword_prefix", nullptr},
               {"end_of_word_suffix", nullptr},
               {"fuse_unk", false},
               {"byte_fallback", false},
               {"ignore_merges", pre.ignore_merges},
               {"vocab", vocab},
               {"merges", merge_list}}}};
  GgufVocab out;
  out.tokenizer_json = tj.dump();
  TokenizerConfig& c = out.config;
  auto token_of = [&](const char* key) -> std::optional<std::string> {
    if (!f.has(key)) return std::nullopt;
    const uint64_t id = f.get_uint(key);
    if (id >= tokens.size()) return std::nullopt;  // llama.cpp ignores such ids too
    return tokens[id];
  };
  c.bos_token = token_of("tokenizer.ggml.bos_token_id");
  c.eos_token = token_of("tokenizer.ggml.eos_token_id");
  c.pad_token = token_of("tokenizer.ggml.padding_token_id");
  c.unk_token = token_of("tokenizer.ggml.unknown_token_id");
  if (f.has("tokenizer.ggml.add_bos_token"))
    c.add_bos_token = f.get_bool("tokenizer.ggml.add_bos_token");
  if (f.has("tokenizer.ggml.add_eos_token"))
    c.add_eos_token = f.get_bool("tokenizer.ggml.add_eos_token");
  return out;
}

ChatTemplate ChatTemplate::load_gguf(const std::string& path) {
  const GgufFile f(path);
  ChatTemplate t;
  std::vector<std::string> tokens;
  if (f.has("tokenizer.ggml.tokens")) tokens = f.get_strings("tokenizer.ggml.tokens");
  const std::pair<const char*, const char*> specials[] = {
      {"bos_token", "tokenizer.ggml.bos_token_id"},
      {"eos_token", "tokenizer.ggml.eos_token_id"},
      {"unk_token", "tokenizer.ggml.unknown_token_id"},
      {"sep_token", "tokenizer.ggml.seperator_token_id"},
      {"pad_token", "tokenizer.ggml.padding_token_id"},
      {"cls_token", "tokenizer.ggml.cls_token_id"},
      {"mask_token", "tokenizer.ggml.mask_token_id"}};
  for (const auto& [name, key] : specials)
    if (f.has(key))
      if (const std::string text = token_text(tokens, f.get_uint(key)); !text.empty())
        t.special_tokens_[name] = text;
  auto add = [&](const std::string& name, const std::string& source, const std::string& where) {
    t.add_template(name, source, where);
  };
  if (f.has("tokenizer.chat_template")) {
    add("default", f.get_string("tokenizer.chat_template"), path + " (tokenizer.chat_template)");
    t.where_ = path;
  }
  if (f.has("tokenizer.chat_templates"))
    for (const std::string& name : f.get_strings("tokenizer.chat_templates")) {
      const std::string key = "tokenizer.chat_template." + name;
      add(name, f.get_string(key), path + " (" + key + ")");
      if (t.where_.empty()) t.where_ = path;
    }
  if (t.templates_.empty()) {
    add("default", chatml_source(), "built-in ChatML");
    t.where_ = "built-in ChatML";
  }
  return t;
}

}  // namespace qrwkv
