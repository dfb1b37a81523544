// The byte-level BPE trainer (src/text/bpe_trainer.h) and `qrwkv train-tokenizer`.
#include <gtest/gtest.h>
#include <utf8proc.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "io/error.h"
#include "io/json.h"
#include "io/mapped_file.h"
#include "tests/cli.h"
#include "tests/text/tokenizer_test_util.h"
#include "text/bpe_trainer.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace qrwkv {
namespace {

using Merges = std::vector<std::pair<std::string, std::string>>;

BpeTrainerOptions options(int64_t vocab_size, uint64_t min_frequency,
                          std::vector<std::string> specials = {}) {
  BpeTrainerOptions o;
  o.vocab_size = vocab_size;
  o.min_frequency = min_frequency;
  o.special_tokens = std::move(specials);
  return o;
}

// The two small training texts: English prose (the Brown Corpus slice of the training tests)
// and a file of many scripts, emoji, combining marks, tabs, space runs and CR/CRLF endings.
std::vector<std::string> training_files() {
  return {test::data_path("convert/brown_slice.txt"), test::data_path("bpe_trainer/mixed.txt")};
}

std::vector<std::string> training_documents() {
  std::vector<std::string> docs;
  for (const auto& f : training_files())
    for (auto& d : read_training_documents(f)) docs.push_back(std::move(d));
  return docs;
}

BpeModel train_on_documents(const BpeTrainerOptions& o) {
  BpeTrainer trainer(o);
  for (const auto& d : training_documents()) trainer.add_text(d);
  return trainer.train();
}

// ---------------------------------------------------------------------------------------------
// The algorithm on examples worked out by hand

TEST(BpeTrainer, HandComputedMerges) {
  // Pair counts: h-u 15, u-g 20, p-u 17, u-n 16, b-u 4, g-s 5.
  //  1. u+g (20). Then h-ug 15, p-ug 5, p-u 12, u-n 16, b-u 4, ug-s 5.
  //  2. u+n (16). Then h-ug 15, p-ug 5, p-un 12, b-un 4, ug-s 5.
  //  3. h+ug (15). Then p-ug 5, p-un 12, b-un 4, hug-s 5.
  //  4. p+un (12). Then p-ug 5, b-un 4, hug-s 5.
  //  5. p+ug (5): ties with hug+s (5) and wins, as the byte token p has a smaller id than the
  //     merged token hug.
  //  6. hug+s (5).  7. b+un (4). Every word is then a single token.
  auto train = [](const BpeTrainerOptions& o) {
    BpeTrainer t(o);
    t.add_word("hug", 10);
    t.add_word("pug", 5);
    t.add_word("pun", 12);
    t.add_word("bun", 4);
    t.add_word("hugs", 5);
    EXPECT_EQ(t.unique_words(), 5u);
    EXPECT_EQ(t.total_words(), 36u);
    return t.train();
  };
  const Merges all = {{"u", "g"},  {"u", "n"},   {"h", "ug"}, {"p", "un"},
                      {"p", "ug"}, {"hug", "s"}, {"b", "un"}};
  const BpeModel m = train(options(1000, 0));
  EXPECT_EQ(m.merges, all);
  ASSERT_EQ(m.tokens.size(), 256u + 7u);
  EXPECT_EQ(std::vector<std::string>(m.tokens.begin() + 256, m.tokens.end()),
            (std::vector<std::string>{"ug", "un", "hug", "pun", "pug", "hugs", "bun"}));

  // min_frequency 5 stops before b+un (4); a vocabulary of 3 specials + 256 + 4 stops after 4.
  EXPECT_EQ(train(options(1000, 5)).merges, Merges(all.begin(), all.begin() + 6));
  const BpeModel small = train(options(263, 0, {"<a>", "<b>", "<c>"}));
  EXPECT_EQ(small.merges, Merges(all.begin(), all.begin() + 4));
  EXPECT_EQ(small.special_tokens, (std::vector<std::string>{"<a>", "<b>", "<c>"}));
}

TEST(BpeTrainer, TiesFollowTheReferenceIdOrder) {
  // " a" and "ab" are equally frequent. By raw bytes the pair (space, a) would come first, but the
  // reference numbers the byte tokens by their byte-level spelling, in which a space is "Ġ"
  // (U+0120), after every printable ASCII character: (a, b) wins the tie.
  BpeTrainer t(options(1000, 0));
  t.add_word(" a", 3);
  t.add_word("ab", 3);
  EXPECT_EQ(t.train().merges, (Merges{{"a", "b"}, {"Ġ", "a"}}));
}

TEST(BpeTrainer, RepeatedSymbolsMergeLeftToRight) {
  // "aaaa" has three (a, a) windows. Merging pairs left to right gives [aa, aa]; the new pairs
  // are (aa, a) +1 and then (aa, a) -1 and (aa, aa) +1, so the second merge is aa+aa.
  BpeTrainer t(options(1000, 0));
  t.add_word("aaaa", 1);
  const BpeModel m = t.train();
  EXPECT_EQ(m.merges, (Merges{{"a", "a"}, {"aa", "aa"}}));
  EXPECT_EQ(m.tokens.back(), "aaaa");
}

TEST(BpeTrainer, PreTokenizesWithTheQwen2PatternAndNormalizesToNfc) {
  BpeTrainer t(options(1000, 0));
  // Words: "Hello", " world", "'s", " e\u0301" (NFC: " é"), " ", " ", "12" as "1" and "2".
  t.add_text("Hello world's e\u0301   12");
  EXPECT_EQ(t.total_words(), 8u);
  const BpeModel m = t.train();
  std::vector<std::string> merged(m.tokens.begin() + 256, m.tokens.end());
  // The digits are separate words and never merge; NFC makes "é" one two-byte character.
  for (const auto& tok : merged) EXPECT_EQ(tok.find("12"), std::string::npos) << tok;
  EXPECT_NE(std::find(merged.begin(), merged.end(), "ĠÃ©"), merged.end());
  EXPECT_NE(std::find(merged.begin(), merged.end(), "Hello"), merged.end());
  EXPECT_NE(std::find(merged.begin(), merged.end(), "Ġworld"), merged.end());
  EXPECT_NE(std::find(merged.begin(), merged.end(), "'s"), merged.end());
  // The three spaces before "12" split as "  " (\s+ not followed by non-space) and " ".
  EXPECT_NE(std::find(merged.begin(), merged.end(), "ĠĠ"), merged.end());
}

TEST(BpeTrainer, RejectsAVocabularyTooSmallForBytesAndSpecials) {
  EXPECT_THROW(BpeTrainer(options(258, 0, {"<a>", "<b>", "<c>"})), Error);
  EXPECT_NO_THROW(BpeTrainer(options(259, 0, {"<a>", "<b>", "<c>"})));
  EXPECT_THROW(BpeTrainer(options(1000, 0, {"<a>", "<a>"})), Error);
  EXPECT_THROW(BpeTrainer(options(1000, 0, {""})), Error);
  EXPECT_THROW(BpeTrainer(options(1000, 0, {"a"})), Error);
  EXPECT_THROW(BpeTrainer(options(1000, 0, {"Ġ"})), Error);
}

TEST(BpeTrainer, NeverMergesIntoTheSpellingOfASpecialToken) {
  // "ab" would be the first merge, but a special token is spelled "ab": the vocabulary could not
  // hold both, so the pair is skipped and the next one merged.
  BpeTrainer t(options(1000, 0, {"ab"}));
  t.add_word("ab", 5);
  t.add_word("cd", 2);
  const BpeModel m = t.train();
  EXPECT_EQ(m.merges, (Merges{{"c", "d"}}));
  const std::string dir = test::temp_dir();
  write_bpe_tokenizer_dir(m, dir);
  const Tokenizer tok = Tokenizer::from_dir(dir);
  EXPECT_EQ(tok.encode("ab"), std::vector<int32_t>{0});
  EXPECT_EQ(tok.decode(tok.encode("cd ab")), "cd ab");
}

TEST(BpeTrainer, Deterministic) {
  const BpeTrainerOptions o = options(700, 2, {"<|endoftext|>"});
  const std::string first = bpe_tokenizer_json(train_on_documents(o));
  // The same words fed in another order give the same file.
  std::vector<std::string> docs = training_documents();
  std::reverse(docs.begin(), docs.end());
  BpeTrainer t(o);
  for (const auto& d : docs) t.add_text(d);
  EXPECT_EQ(bpe_tokenizer_json(t.train()), first);
  EXPECT_EQ(bpe_tokenizer_json(train_on_documents(o)), first);
}

TEST(BpeTrainer, ReadsDocumentsLikeTheTrainingDataReader) {
  const std::string dir = test::temp_dir();
  std::ofstream(dir + "/a.txt") << "one\ntwo\n\n \t\nthree\r\n\n\nfour";
  EXPECT_EQ(read_training_documents(dir + "/a.txt"),
            (std::vector<std::string>{"one\ntwo", "three\r", "four"}));
  std::ofstream(dir + "/b.jsonl")
      << "{\"text\": \"x\\ny\"}\n\n{\"text\": \"\"}\n{\"text\": \"z\"}\n";
  EXPECT_EQ(read_training_documents(dir + "/b.jsonl"), (std::vector<std::string>{"x\ny", "z"}));
  std::ofstream(dir + "/c.jsonl") << "{\"text\": 1}\n";
  EXPECT_THROW(read_training_documents(dir + "/c.jsonl"), Error);
  EXPECT_THROW(read_training_documents(dir + "/missing.txt"), Error);
}

// ---------------------------------------------------------------------------------------------
// The trained tokenizer with the project's Tokenizer

class BpeTrainedTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(test::temp_dir());
    model_ = new BpeModel(train_on_documents(options(1000, 2, BpeTrainerOptions{}.special_tokens)));
    write_bpe_tokenizer_dir(*model_, *dir_);
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete model_;
  }
  static std::string* dir_;
  static BpeModel* model_;
};
std::string* BpeTrainedTokenizer::dir_ = nullptr;
BpeModel* BpeTrainedTokenizer::model_ = nullptr;

TEST_F(BpeTrainedTokenizer, LoadsWithTheFullVocabulary) {
  const Tokenizer t = Tokenizer::from_dir(*dir_);
  EXPECT_EQ(t.vocab_size(), 1000);
  EXPECT_GE(model_->merges.size(), 1000u - 3 - 256);
  for (int32_t id = 0; id < 1000; ++id) EXPECT_TRUE(t.is_known(id)) << id;
  // Byte tokens in the reference's order: "!" is the first, "Ġ" (space) after all printables.
  EXPECT_EQ(t.token_to_id("!"), 3);
  EXPECT_EQ(t.token_bytes(3), "!");
  EXPECT_EQ(t.token_bytes(*t.token_to_id("Ġ")), " ");
}

TEST_F(BpeTrainedTokenizer, RoundTripsVariedText) {
  const Tokenizer t = Tokenizer::from_dir(*dir_);
  std::vector<std::string> texts = {
      "",
      "The jury said it did find that many of Georgia's registration laws are outmoded.",
      "   leading, trailing and inner   runs of spaces   ",
      "\t\ttabs\tand\nnew\n\n\nlines\r\nwith CRLF\rand CR\n",
      "naïve café, Zürich; Ελληνικά, Русский, 日本語, 한국어, emoji "
      "😀👍🏽👨‍👩‍👧 "
      "🇺🇸",
      "numbers 3.14159 1,000,000 and symbols <>{}[]()!?@#$%^&*_+=|\\/~`",
      "\u00a0\u3000\u2028\u2009 odd spaces",
  };
  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) texts.push_back(test::random_text(rng));
  for (const auto& text : texts) {
    // The normalizer makes the text NFC first, so that is what comes back (most of these texts
    // are NFC already).
    utf8proc_uint8_t* nfc = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(text.c_str()));
    ASSERT_NE(nfc, nullptr);
    const std::string expected(reinterpret_cast<const char*>(nfc));
    std::free(nfc);
    EXPECT_EQ(t.decode(t.encode(text, {.parse_special = false})), expected);
    EXPECT_EQ(t.decode(t.encode(text)), expected);
  }
}

TEST_F(BpeTrainedTokenizer, TrainingWordsTakeFewTokens) {
  const Tokenizer t = Tokenizer::from_dir(*dir_);
  for (const char* word : {" the", " of", " and", " jury", " said", "The", " election"})
    EXPECT_EQ(t.encode(word).size(), 1u) << word;
  // Over the whole English training text, far fewer tokens than bytes.
  const std::string text = read_text_file(test::data_path("convert/brown_slice.txt"));
  const double chars_per_token =
      static_cast<double>(text.size()) / static_cast<double>(t.encode(text).size());
  EXPECT_GT(chars_per_token, 2.5);
}

TEST_F(BpeTrainedTokenizer, SpecialTokensAreSingleIds) {
  const Tokenizer t = Tokenizer::from_dir(*dir_);
  EXPECT_EQ(t.encode("<|endoftext|>"), std::vector<int32_t>{0});
  EXPECT_EQ(t.encode("<|im_start|>"), std::vector<int32_t>{1});
  EXPECT_EQ(t.encode("<|im_end|>"), std::vector<int32_t>{2});
  for (int32_t id : {0, 1, 2}) EXPECT_TRUE(t.is_special(id));
  const std::vector<int32_t> ids = t.encode("<|im_start|>user\nhi<|im_end|>");
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  EXPECT_EQ(t.decode(ids), "<|im_start|>user\nhi<|im_end|>");
  EXPECT_GT(t.encode("<|im_end|>", {.parse_special = false}).size(), 1u);
  EXPECT_EQ(t.eos_id(), 0);
  EXPECT_EQ(t.bos_id(), std::nullopt);
  EXPECT_FALSE(t.config().add_bos_token);
  const json gen = load_json_file(*dir_ + "/generation_config.json");
  EXPECT_EQ(gen["eos_token_id"], json::array({0, 2}));
}

TEST_F(BpeTrainedTokenizer, ChatTemplateIsChatMl) {
  const ChatTemplate tpl = ChatTemplate::load(*dir_);
  nlohmann::ordered_json request;
  request["messages"] = {{{"role", "user"}, {"content", "Hi"}}};
  request["add_generation_prompt"] = true;
  EXPECT_EQ(tpl.render(request), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

// ---------------------------------------------------------------------------------------------
// Against Hugging Face `tokenizers` (its Node binding in tests/js), skipped when missing

bool reference_available() {
  const std::string module = test::data_path("../js/node_modules/tokenizers/package.json");
  return std::filesystem::exists(module) && std::system("node --version >/dev/null 2>&1") == 0;
}

// The file as the reference's train_from_files reads it: each line with its "\n" ending.
std::vector<std::string> lines_with_endings(const std::string& path) {
  const std::string text = read_text_file(path);
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    end = end == std::string::npos ? text.size() : end + 1;
    lines.push_back(text.substr(start, end - start));
    start = end;
  }
  return lines;
}

TEST(BpeTrainerReference, MergesMatchHuggingFaceTrainer) {
  if (!reference_available()) GTEST_SKIP() << "node or tests/js/node_modules/tokenizers missing";
  // The reference trains the pipeline of a tokenizer.json written by us, with an empty model,
  // using the binding's default trainer: no special tokens, min_frequency 0, up to 30000 tokens
  // (far more than these texts can make, so both run until every word is one token).
  const std::string dir = test::temp_dir();
  json spec = json::parse(bpe_tokenizer_json(BpeModel{}));
  spec["model"]["vocab"] = json::object();
  spec["model"]["merges"] = json::array();
  std::ofstream(dir + "/spec.json") << spec.dump();
  std::string cmd = "node '" + test::data_path("../js/bpe_train_reference.js") + "' '" + dir +
                    "/spec.json' '" + dir + "/hf.json'";
  for (const auto& f : training_files()) cmd += " '" + f + "'";
  cmd += " >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const json hf = load_json_file(dir + "/hf.json");

  BpeTrainer trainer(options(30000, 0));
  for (const auto& f : training_files())
    for (const auto& line : lines_with_endings(f)) trainer.add_text(line);
  const BpeModel ours = trainer.train();

  Merges hf_merges;
  for (const auto& m : hf["model"]["merges"]) {
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      hf_merges.emplace_back(s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1));
    } else {
      hf_merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    }
  }
  ASSERT_GT(hf_merges.size(), 1000u);
  ASSERT_EQ(ours.merges.size(), hf_merges.size());
  for (size_t i = 0; i < hf_merges.size(); ++i)
    ASSERT_EQ(ours.merges[i], hf_merges[i]) << "first difference at merge " << i;
  // The merged tokens come in the same order (the reference's alphabet holds only the
  // characters seen, ours all 256 bytes).
  std::vector<std::string> hf_tokens(hf["model"]["vocab"].size());
  for (const auto& [tok, id] : hf["model"]["vocab"].items()) hf_tokens.at(id.get<size_t>()) = tok;
  const size_t hf_alphabet = hf_tokens.size() - (ours.tokens.size() - 256);
  EXPECT_EQ(std::vector<std::string>(hf_tokens.begin() + static_cast<ptrdiff_t>(hf_alphabet),
                                     hf_tokens.end()),
            std::vector<std::string>(ours.tokens.begin() + 256, ours.tokens.end()));
}

TEST_F(BpeTrainedTokenizer, EncodingsMatchHuggingFace) {
  if (!reference_available()) GTEST_SKIP() << "node or tests/js/node_modules/tokenizers missing";
  std::vector<std::string> texts;
  for (const auto& f : training_files())
    for (const auto& line : lines_with_endings(f)) texts.push_back(line);
  std::mt19937 rng(99);
  for (int i = 0; i < 300; ++i) texts.push_back(test::random_text(rng, /*old_unicode_only=*/true));
  const std::string tmp = test::temp_dir();
  {
    std::ofstream in(tmp + "/in.jsonl", std::ios::binary);
    for (const auto& t : texts) in << json{{"text", t}}.dump() << "\n";
  }
  const std::string cmd = "node '" + test::data_path("../js/tokenizer_reference.js") + "' '" +
                          *dir_ + "/tokenizer.json' encode < '" + tmp + "/in.jsonl' > '" + tmp +
                          "/out.jsonl'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream out(tmp + "/out.jsonl", std::ios::binary);
  const Tokenizer t = Tokenizer::from_dir(*dir_);
  std::string line;
  size_t i = 0;
  int failures = 0;
  while (std::getline(out, line) && failures < 5) {
    ASSERT_LT(i, texts.size());
    const auto expected = json::parse(line).get<std::vector<int32_t>>();
    const auto ids = t.encode(texts[i]);
    EXPECT_EQ(ids, expected) << "text: " << texts[i];
    failures += ids != expected;
    ++i;
  }
  EXPECT_EQ(i, texts.size());
}

// ---------------------------------------------------------------------------------------------
// The command line

TEST(BpeTrainerCli, TrainsAndWritesALoadableDirectory) {
  const std::string out = test::temp_dir() + "/tok";
  const std::string dir = test::temp_dir();
  std::ofstream(dir + "/docs.jsonl") << "{\"text\": \"the cat sat on the mat\"}\n"
                                        "{\"text\": \"the dog sat on the log\"}\n";
  const test::CliResult r =
      test::run_cli({"train-tokenizer", "--data", training_files()[0], "--data",
                     dir + "/docs.jsonl", "--vocab-size", "600", "-o", out, "--special",
                     "<|endoftext|>", "--special", "<|pad|>", "--min-frequency", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("merges in"), std::string::npos) << r.err;
  const Tokenizer t = Tokenizer::from_dir(out);
  EXPECT_EQ(t.vocab_size(), 600);
  EXPECT_EQ(t.encode("<|pad|>"), std::vector<int32_t>{1});
  EXPECT_EQ(t.eos_id(), 0);
  // No ChatML special tokens, so no chat template.
  EXPECT_FALSE(load_json_file(out + "/tokenizer_config.json").contains("chat_template"));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"})
    EXPECT_TRUE(std::filesystem::is_regular_file(out + "/" + f)) << f;
  // Nothing but the three files (no temporary left behind).
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(out),
                          std::filesystem::directory_iterator()),
            3);
}

TEST(BpeTrainerCli, ErrorsAreOneLineWithUsageAndExitTwo) {
  const std::string out = test::temp_dir() + "/tok";
  const std::string data = training_files()[1];
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"train-tokenizer", "--vocab-size", "1000", "-o", out}, "missing required option --data"},
      {{"train-tokenizer", "--data", data, "-o", out}, "missing required option --vocab-size"},
      {{"train-tokenizer", "--data", data, "--vocab-size", "1000"},
       "missing required option --output"},
      {{"train-tokenizer", "--data", data, "--vocab-size", "258", "-o", out},
       "--vocab-size 258 is below 259 (256 byte tokens + 3 special tokens)"},
      {{"train-tokenizer", "--data", data, "--vocab-size", "300", "-o", out, "--special", "<a>",
        "--special", "<a>"},
       "special token '<a>' is given twice"},
      {{"train-tokenizer", "--data", data, "--data", "/nonexistent/file.txt", "--vocab-size",
        "1000", "-o", out},
       "cannot read --data file '/nonexistent/file.txt'"},
      {{"train-tokenizer", "--data", data, "--vocab-size", "lots", "-o", out}, "--vocab-size"},
  };
  for (const auto& c : cases) {
    const test::CliResult r = test::run_cli(c.args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    const std::string first_line = r.err.substr(0, r.err.find('\n'));
    EXPECT_EQ(first_line.rfind("error: ", 0), 0u) << r.err;
    EXPECT_NE(first_line.find(c.message), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("usage: qrwkv train-tokenizer"), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(out));
  }
}

}  // namespace
}  // namespace qrwkv
