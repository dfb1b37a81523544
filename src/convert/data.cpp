#include "convert/data.h"

#include <algorithm>
#include <random>

#include "io/error.h"
#include "text/bpe_trainer.h"
#include "text/tokenizer.h"

namespace qrwkv::convert {

std::vector<std::string> read_documents(const std::string& path) {
  // The tokenizer trainer reads training text the same way, so the reader lives beside it.
  std::vector<std::string> docs = read_training_documents(path);
  if (docs.empty()) fail(path, "no documents in the training text");
  return docs;
}

int32_t document_separator(const Tokenizer& tok) {
  if (auto id = tok.token_to_id("<|endoftext|>")) return *id;
  if (auto id = tok.eos_id()) return *id;
  fail("tokenizer", "has neither <|endoftext|> nor an eos_token to separate documents");
}

PackedData pack_documents(const std::vector<std::string>& documents, const Tokenizer& tok,
                          int32_t separator, int64_t seq_len, int64_t n_heldout) {
  if (seq_len < 2) fail("--seq-len", "must be at least 2");
  PackedData d;
  d.seq_len = seq_len;
  d.n_documents = static_cast<int64_t>(documents.size());
  std::vector<int32_t> stream;
  for (const std::string& doc : documents) {
    tok.encode_into(doc, stream, EncodeOptions{.parse_special = false});
    stream.push_back(separator);
  }
  d.n_tokens = static_cast<int64_t>(stream.size());
  const int64_t n_seq = d.n_tokens / seq_len;
  if (n_heldout < 0) n_heldout = std::max<int64_t>(1, n_seq / 20);
  if (n_seq < n_heldout + 1)
    fail("training text", std::to_string(d.n_tokens) + " tokens make " + std::to_string(n_seq) +
                              " sequences of " + std::to_string(seq_len) + ", too few for " +
                              std::to_string(n_heldout) +
                              " held-out and at least one training sequence");
  const int64_t n_train = n_seq - n_heldout;
  d.train.assign(stream.begin(), stream.begin() + n_train * seq_len);
  d.heldout.assign(stream.begin() + n_train * seq_len, stream.begin() + n_seq * seq_len);
  return d;
}

int64_t SampleOrder::operator()(int64_t sample) {
  const int64_t epoch = sample / n_;
  if (epoch != epoch_) {
    // A Fisher–Yates shuffle driven by the 64-bit Mersenne Twister, whose output is fixed by the
    // C++ standard (unlike std::shuffle's use of it), so orders agree across platforms.
    std::seed_seq seq{static_cast<uint32_t>(seed_), static_cast<uint32_t>(seed_ >> 32),
                      static_cast<uint32_t>(epoch), static_cast<uint32_t>(epoch >> 32)};
    std::mt19937_64 rng(seq);
    perm_.resize(static_cast<size_t>(n_));
    for (int64_t i = 0; i < n_; ++i) perm_[static_cast<size_t>(i)] = i;
    for (int64_t i = n_ - 1; i > 0; --i) {
      const auto j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
      std::swap(perm_[static_cast<size_t>(i)], perm_[static_cast<size_t>(j)]);
    }
    epoch_ = epoch;
  }
  return perm_[static_cast<size_t>(sample % n_)];
}

}  // namespace qrwkv::convert
