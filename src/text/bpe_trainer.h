// Training of a byte-level BPE tokenizer, written as a Hugging Face tokenizer.json that
// Tokenizer (and the `tokenizers` library) load.
//
// The algorithm is that of the reference library's BpeTrainer used with a ByteLevel
// pre-tokenizer: each text is normalized (NFC), split with the Qwen2 pre-tokenizer regex and
// mapped to bytes; the unique words are counted; the alphabet is all 256 bytes; then the most
// frequent adjacent pair is merged, again and again, until the vocabulary is full or no pair is
// frequent enough. Ties go to the pair with the smaller ids, in the reference's id order (the
// byte tokens sorted by their byte-level spelling, then merged tokens in order of creation), so
// that the merges come out exactly as the reference would produce them from the same words.
// Pair counts are updated incrementally over the unique words, with a lazily refreshed priority
// queue, so a merge costs time in proportion to the words that contain the pair.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qrwkv {

// The Split pre-tokenizer pattern of Qwen2/Qwen2.5's tokenizer.json.
inline constexpr const char* kQwen2SplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct BpeTrainerOptions {
  // The size of the whole vocabulary: special tokens, the 256 byte tokens and the merged ones.
  int64_t vocab_size = 4096;
  // A pair seen fewer times than this is never merged (the reference's `min_frequency`).
  uint64_t min_frequency = 2;
  // Special tokens, given ids 0, 1, ... before the byte tokens, as the reference trainer does.
  std::vector<std::string> special_tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
};

// A trained model. Tokens are spelled as in tokenizer.json: bytes through the GPT-2 byte-level
// alphabet (a space is "Ġ").
struct BpeModel {
  std::vector<std::string> special_tokens;  // ids 0 .. special_tokens.size() - 1
  std::vector<std::string> tokens;          // the following ids: 256 byte tokens, then merges
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
};

class BpeTrainer {
 public:
  // Throws Error when the vocabulary cannot hold the special tokens and the 256 bytes, or when
  // a special token is empty, given twice or spelled like a byte token. A pair whose merged
  // token would be spelled like a special token is never merged.
  explicit BpeTrainer(BpeTrainerOptions options);
  ~BpeTrainer();
  BpeTrainer(const BpeTrainer&) = delete;
  BpeTrainer& operator=(const BpeTrainer&) = delete;

  // Counts the words of one text (a document): ill-formed UTF-8 is repaired with U+FFFD, the
  // text is normalized to NFC and split with kQwen2SplitRegex. Special-token text is not
  // treated specially, as in the reference trainer.
  void add_text(std::string_view text);
  // Counts one already pre-tokenized word (raw bytes) `count` times.
  void add_word(std::string_view bytes, uint64_t count = 1);

  size_t unique_words() const;
  uint64_t total_words() const;

  // Runs the merges. Deterministic: the same words give the same model.
  BpeModel train() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The files of a tokenizer directory for `model`. tokenizer.json: BPE with the NFC normalizer,
// the Qwen2 Split + ByteLevel pre-tokenizer, the ByteLevel decoder and the special tokens as
// added tokens. tokenizer_config.json: eos_token (<|endoftext|>, else <|im_end|>, when present),
// no BOS, and a ChatML chat_template when <|im_start|> and <|im_end|> are special tokens.
// generation_config.json: the ids that end generation.
std::string bpe_tokenizer_json(const BpeModel& model);
std::string bpe_tokenizer_config_json(const BpeModel& model);
std::string bpe_generation_config_json(const BpeModel& model);
// Creates `dir` if needed and writes the three files, each atomically (temporary + rename).
void write_bpe_tokenizer_dir(const BpeModel& model, const std::string& dir);

// The documents of a training file, with the conventions of the training data reader: a .jsonl
// file holds one JSON object with a string "text" field per line (blank lines skipped, empty
// texts dropped); any other file is text whose documents are separated by blank lines (lines
// of spaces, tabs or CR count as blank), the line breaks inside a document kept as "\n".
// Throws Error naming the file when it cannot be read or a .jsonl line is malformed.
std::vector<std::string> read_training_documents(const std::string& path);

}  // namespace qrwkv
