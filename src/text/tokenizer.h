// Hugging Face tokenizer.json byte-level BPE (Qwen2/2.5/3, LLaMA-3, GPT-2 style files), producing
// the same ids as the Rust `tokenizers` library's encode(text, add_special_tokens=False).
//
// Pipeline, in the reference's order: added tokens are cut out of the raw text first (never
// split, `lstrip`/`rstrip`/`single_word` honoured); the remaining pieces are normalized (NFC,
// ...), searched for added tokens marked `normalized`, split by the pre-tokenizers (Split regex,
// ByteLevel, Digits) and each resulting word is merged by BPE rank.
//
// Invalid UTF-8 in the input is not an error: every maximal ill-formed subsequence is replaced
// by U+FFFD before encoding, exactly as Rust's String::from_utf8_lossy does, so the result is
// the encoding of that repaired text. Decoding likewise turns the concatenated token bytes into
// text with the same lossy rule (as the reference's ByteLevel decoder does).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace qrwkv {

struct EncodeOptions {
  // True: text spelling a special added token (such as "<|im_start|>") becomes that token.
  // False: special tokens are not matched and their text is encoded as ordinary text, which is
  // what untrusted user content needs. Non-special added tokens are matched either way, as in
  // the reference's `encode_special_tokens` switch.
  bool parse_special = true;
};

// What tokenizer_config.json says about the special tokens, when the file is present.
struct TokenizerConfig {
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<std::string> pad_token;
  std::optional<std::string> unk_token;
  bool add_bos_token = false;
  bool add_eos_token = false;
};

class Tokenizer {
 public:
  // Parses the contents of a tokenizer.json; `where` names it in error messages.
  static Tokenizer from_json(std::string_view json_text, const std::string& where);
  static Tokenizer from_file(const std::string& tokenizer_json_path);
  // Loads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json. The directory needs
  // no weights. A path to a tokenizer.json file is accepted too.
  static Tokenizer from_dir(const std::string& dir);
  // The vocabulary of a GGUF file (tokenizer.ggml.*, byte-level BPE): the same ids as the
  // tokenizer.json of the same model. from_dir() takes GGUF files too.
  static Tokenizer from_gguf(const std::string& path);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options = {}) const;
  // Appends the ids of `text` to `out`.
  void encode_into(std::string_view text, std::vector<int32_t>& out,
                   const EncodeOptions& options = {}) const;

  // The text of `ids`: token bytes concatenated, then made valid UTF-8 with U+FFFD replacing
  // ill-formed bytes. Unknown ids throw Error. `skip_special` drops special added tokens.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // The raw bytes of `ids` concatenated, possibly not valid UTF-8.
  std::string decode_bytes(std::span<const int32_t> ids, bool skip_special = false) const;
  // The bytes one token stands for; throws Error for an unknown id.
  const std::string& token_bytes(int32_t id) const;

  // Looks a token up by its tokenizer.json spelling (added tokens first, then the vocabulary,
  // whose entries are in the byte-level alphabet, e.g. "Ġhello").
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;
  bool is_known(int32_t id) const;
  // One past the largest id of the vocabulary and the added tokens.
  int32_t vocab_size() const;

  const TokenizerConfig& config() const;
  // Ids of config().bos_token / eos_token when they are tokens of this tokenizer.
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Decodes a stream of ids piece by piece (e.g. while generating) and only ever returns complete
// UTF-8 characters: a character whose bytes are split across tokens is held back until its last
// byte arrives. Bytes that can never form a character become U+FFFD as soon as that is certain.
// The concatenation of every push() and the final flush() equals Tokenizer::decode of all ids.
class TokenStreamDecoder {
 public:
  explicit TokenStreamDecoder(const Tokenizer& tokenizer, bool skip_special = false);
  // Returns the text that became complete with this token (possibly empty).
  std::string push(int32_t id);
  // Returns what is still held back (as U+FFFD, since it is an incomplete character) and resets.
  std::string flush();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;
};

// `bytes` with each maximal ill-formed UTF-8 subsequence replaced by U+FFFD (Rust's
// String::from_utf8_lossy rule).
std::string utf8_lossy(std::string_view bytes);
bool utf8_is_valid(std::string_view bytes);

}  // namespace qrwkv
