// The training-data pipeline: documents from .txt and .jsonl, packing with separators, the
// held-out slice and the seeded sample order.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "convert/data.h"
#include "io/error.h"
#include "tests/cli.h"
#include "text/tokenizer.h"

namespace fs = std::filesystem;
using namespace qrwkv;
using namespace qrwkv::convert;

namespace {

std::string write_temp(const std::string& name, const std::string& text) {
  static const std::string dir = test::temp_dir();
  const fs::path p = fs::path(dir) / name;
  std::ofstream(p, std::ios::binary) << text;
  return p.string();
}

}  // namespace

TEST(ConvertData, TextDocumentsAreSeparatedByBlankLines) {
  const auto docs = read_documents(write_temp("a.txt", "one\nstill one\n\n\n  \ntwo\n\nthree"));
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0], "one\nstill one");
  EXPECT_EQ(docs[1], "two");
  EXPECT_EQ(docs[2], "three");
}

TEST(ConvertData, JsonlTakesTheTextField) {
  const auto docs = read_documents(
      write_temp("a.jsonl", "{\"text\": \"a b\"}\n\n{\"text\": \"c\\nd\", \"id\": 3}\n"));
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0], "a b");
  EXPECT_EQ(docs[1], "c\nd");
  try {
    read_documents(write_temp("bad.jsonl", "{\"text\": \"a\"}\n{\"body\": 1}\n"));
    FAIL() << "a line without text was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_documents(write_temp("empty.txt", "\n\n")), Error);
}

TEST(ConvertData, PackingJoinsDocumentsWithTheSeparatorAndHoldsOutTheTail) {
  const Tokenizer tok = Tokenizer::from_dir(test::data_path("tiny_chat"));
  const int32_t sep = document_separator(tok);
  EXPECT_EQ(sep, *tok.token_to_id("<|endoftext|>"));
  const std::vector<std::string> docs = {"Hello world. ", "The jury said <|endoftext|> nothing.",
                                         "A third document, a little longer than the others."};
  std::vector<int32_t> stream;
  for (const auto& d : docs) {
    tok.encode_into(d, stream, EncodeOptions{.parse_special = false});
    stream.push_back(sep);
  }
  const PackedData p = pack_documents(docs, tok, sep, 4, 2);
  EXPECT_EQ(p.n_tokens, static_cast<int64_t>(stream.size()));
  const int64_t n_seq = p.n_tokens / 4;
  EXPECT_EQ(p.n_heldout(), 2);
  EXPECT_EQ(p.n_train(), n_seq - 2);
  // Training sequences are the head of the stream and the held-out ones follow them.
  EXPECT_TRUE(std::equal(p.train.begin(), p.train.end(), stream.begin()));
  EXPECT_TRUE(std::equal(p.heldout.begin(), p.heldout.end(), stream.begin() + p.n_train() * 4));
  // Special-token text inside a document stays plain text: one separator per document.
  EXPECT_EQ(std::count(stream.begin(), stream.end(), sep), 3);
  EXPECT_THROW(pack_documents(docs, tok, sep, 1000, 1), Error);
}

TEST(ConvertData, SampleOrderIsASeededPermutationPerEpoch) {
  SampleOrder a(10, 7), b(10, 7), c(10, 8);
  std::vector<int64_t> ea, eb, ec, e2;
  for (int i = 0; i < 10; ++i) ea.push_back(a(i));
  for (int i = 0; i < 10; ++i) ec.push_back(c(i));
  for (int i = 10; i < 20; ++i) e2.push_back(a(i));
  for (int i = 0; i < 10; ++i) eb.push_back(b(i));
  EXPECT_EQ(ea, eb);  // same seed, same order, however it is reached
  EXPECT_NE(ea, ec);
  EXPECT_NE(ea, e2);  // a new order every epoch
  EXPECT_EQ(std::set<int64_t>(ea.begin(), ea.end()).size(), 10u);
  EXPECT_EQ(std::set<int64_t>(e2.begin(), e2.end()).size(), 10u);
  // Jumping straight to a later sample gives what walking there gives.
  SampleOrder d(10, 7);
  EXPECT_EQ(d(13), e2[3]);
}
