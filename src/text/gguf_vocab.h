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

}  // namespace qrwkv
