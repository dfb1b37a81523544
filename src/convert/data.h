// Training text for pretraining and conversion: documents read from .txt (separated by blank
// lines) or .jsonl (one object per line with a "text" field), tokenized with the model's
// tokenizer, joined with an end-of-text token, and packed into sequences of a fixed length.
// The last sequences of the stream are held out for evaluation; the others are visited in an
// order shuffled per epoch from a seed, so that the n-th training sequence is a pure function
// of (seed, n) and a resumed run sees exactly the data an uninterrupted one would.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qrwkv {
class Tokenizer;
}

namespace qrwkv::convert {

// The documents of one file: .jsonl takes every line's "text"; any other file is plain text in
// which one or more blank lines separate documents. Errors name the file and line.
std::vector<std::string> read_documents(const std::string& path);

// The token that separates documents: <|endoftext|> when the tokenizer has it (the separator of
// Qwen's pretraining data), otherwise the tokenizer's eos_token.
int32_t document_separator(const Tokenizer& tok);

struct PackedData {
  int64_t seq_len = 0;
  int64_t n_documents = 0;
  int64_t n_tokens = 0;          // tokens in the stream, separators included
  std::vector<int32_t> train;    // [n_train, seq_len]
  std::vector<int32_t> heldout;  // [n_heldout, seq_len]
  int64_t n_train() const { return seq_len ? static_cast<int64_t>(train.size()) / seq_len : 0; }
  int64_t n_heldout() const { return seq_len ? static_cast<int64_t>(heldout.size()) / seq_len : 0; }
};

// Tokenizes `documents`, joins them with `separator` after each one, cuts the stream into
// sequences of `seq_len` (a short tail is dropped) and keeps the last `n_heldout` sequences for
// evaluation (n_heldout < 0: 5% of them, at least one). Fails when fewer than one training and
// one held-out sequence result.
PackedData pack_documents(const std::vector<std::string>& documents, const Tokenizer& tok,
                          int32_t separator, int64_t seq_len, int64_t n_heldout);

// The order in which training sequences are visited: epoch e is a permutation of 0..n−1 drawn
// from a generator seeded with (seed, e); sample i is sequence perm(i / n)[i % n].
class SampleOrder {
 public:
  SampleOrder(int64_t n, uint64_t seed) : n_(n), seed_(seed) {}
  int64_t operator()(int64_t sample);

 private:
  int64_t n_;
  uint64_t seed_;
  int64_t epoch_ = -1;
  std::vector<int64_t> perm_;
};

}  // namespace qrwkv::convert
