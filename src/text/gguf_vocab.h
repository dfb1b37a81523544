// The tokenizer.json text and special-token settings of a GGUF file's vocabulary
// (gguf_vocab.cpp); Tokenizer::from_gguf builds on it.
#pragma once

#include <string>

#include "text/tokenizer.h"

namespace qrwkv {

struct GgufVocab {
  std::string tokenizer_json;
  TokenizerConfig config;
};
GgufVocab gguf_vocab(const std::string& path);

// The split regexes of the pre-tokenizers llama.cpp calls "qwen2" and "llama-bpe" (LLaMA 3), as
// the tokenizer.json files of those families spell them.
extern const char* const kQwen2SplitRegex;
extern const char* const kLlama3SplitRegex;

}  // namespace qrwkv
