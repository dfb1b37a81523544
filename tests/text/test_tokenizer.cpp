// Tokenizer tests. Expected ids come only from Hugging Face `tokenizers`: the golden cases of
// tests/data/tokenizer/cases.json and the variant cases of tests/data/tokenizer/variants (see
// make_variants.py there); other tests check properties that must hold whatever the ids are.
#include <gtest/gtest.h>
#include <utf8proc.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "io/error.h"
#include "io/json.h"
#include "tests/cli.h"
#include "tests/text/tokenizer_test_util.h"
#include "text/tokenizer.h"

namespace qrwkv {
namespace {

using test::random_text;
using test::utf8;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// The Qwen tokenizer.json files are large; parse each once per test binary.
const Tokenizer& qwen25() {
  static const Tokenizer t = Tokenizer::from_dir(test::data_path("tokenizer/qwen2.5"));
  return t;
}

const Tokenizer& qwen3() {
  static const Tokenizer t = Tokenizer::from_dir(test::data_path("tokenizer/qwen3"));
  return t;
}

json golden_cases() { return load_json_file(test::data_path("tokenizer/cases.json")); }

std::vector<int32_t> ids_of(const json& j) { return j.get<std::vector<int32_t>>(); }

std::string nfc(const std::string& s) {
  utf8proc_uint8_t* out = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(s.c_str()));
  std::string r(reinterpret_cast<const char*>(out));
  std::free(out);
  return r;
}

TEST(TokenizerGolden, Qwen25CasesMatchReference) {
  const json cases = golden_cases();
  ASSERT_GE(cases["cases"].size(), 50u);
  for (const auto& c : cases["cases"]) {
    const std::string text = c["text"];
    EXPECT_EQ(qwen25().encode(text), ids_of(c["ids"])) << "text: " << text;
    EXPECT_EQ(qwen25().decode(ids_of(c["ids"])), c["decoded"].get<std::string>()) << text;
  }
}

TEST(TokenizerGolden, Qwen3SharesTheQwen25Encoding) {
  // Qwen3 keeps Qwen2.5's vocabulary and merges and only adds tokens after 151664.
  const json cases = golden_cases();
  for (const auto& c : cases["cases"]) {
    const std::string text = c["text"];
    EXPECT_EQ(qwen3().encode(text), ids_of(c["ids"])) << "text: " << text;
    EXPECT_EQ(qwen3().decode(ids_of(c["ids"])), c["decoded"].get<std::string>()) << text;
  }
  EXPECT_EQ(qwen3().token_to_id("<think>"), std::optional<int32_t>(151667));
  EXPECT_EQ(qwen3().encode("<think>\n\n</think>")[0], 151667);
}

TEST(TokenizerVariants, MatchReference) {
  // GPT-2 and LLaMA-3 style pipelines, every Split behavior, Digits, NFKC/NFD/Lowercase and
  // the added-token flags, on small vocabularies cut from Qwen2.5.
  const json all = load_json_file(test::data_path("tokenizer/variants/cases.json"));
  ASSERT_GE(all["variants"].size(), 6u);
  for (const auto& v : all["variants"]) {
    const std::string name = v["name"];
    const Tokenizer t = Tokenizer::from_dir(test::data_path("tokenizer/variants/" + name));
    int failures = 0;
    for (const auto& c : v["cases"]) {
      const std::string text = c["text"];
      const auto ids = t.encode(text);
      EncodeOptions plain;
      plain.parse_special = false;
      const auto ids_plain = t.encode(text, plain);
      const bool ok = ids == ids_of(c["ids"]) && ids_plain == ids_of(c["ids_no_special"]) &&
                      t.decode(ids_of(c["ids"])) == c["decoded"].get<std::string>();
      EXPECT_EQ(ids, ids_of(c["ids"])) << name << " text: " << text;
      EXPECT_EQ(ids_plain, ids_of(c["ids_no_special"])) << name << " (no special) text: " << text;
      EXPECT_EQ(t.decode(ids_of(c["ids"])), c["decoded"].get<std::string>()) << name << text;
      if (!ok && ++failures > 5) break;
    }
  }
}

TEST(TokenizerProperty, DecodeOfEncodeIsNfcOfInput) {
  std::mt19937 rng(12345);
  const int n = kSanitized ? 150 : 400;
  for (int i = 0; i < n; ++i) {
    const std::string s = random_text(rng);
    const auto ids = qwen25().encode(s);
    EXPECT_EQ(qwen25().decode(ids), nfc(s)) << "text: " << s;
    EncodeOptions plain;
    plain.parse_special = false;
    const auto ids_plain = qwen25().encode(s, plain);
    EXPECT_EQ(qwen25().decode(ids_plain), nfc(s)) << "text: " << s;
    for (int32_t id : ids_plain) EXPECT_FALSE(qwen25().is_special(id)) << "text: " << s;
  }
}

TEST(TokenizerProperty, StreamingDecoderEqualsWholeDecode) {
  std::mt19937 rng(777);
  for (int i = 0; i < 300; ++i) {
    std::vector<int32_t> ids;
    if (i % 2 == 0) {
      ids = qwen25().encode(random_text(rng));
    } else {
      // Arbitrary ids, including byte tokens that cut characters apart or never complete one.
      const int n = std::uniform_int_distribution<int>(1, 20)(rng);
      for (int k = 0; k < n; ++k) {
        const int32_t id = k % 3 == 0 ? std::uniform_int_distribution<int32_t>(0, 255)(rng)
                                      : std::uniform_int_distribution<int32_t>(0, 151664)(rng);
        ids.push_back(id);
      }
    }
    TokenStreamDecoder stream(qwen25());
    std::string streamed;
    for (int32_t id : ids) {
      const std::string piece = stream.push(id);
      EXPECT_TRUE(utf8_is_valid(piece));
      streamed += piece;
    }
    streamed += stream.flush();
    EXPECT_EQ(streamed, qwen25().decode(ids));
  }
}

TEST(TokenizerProperty, StreamingHoldsBackSplitCharacters) {
  // "😀" is four bytes; as single byte tokens nothing may come out before the last one.
  const std::string emoji = "\xF0\x9F\x98\x80";
  std::vector<int32_t> ids;
  // Find the single-byte tokens among the first 256 ids.
  for (unsigned char c : emoji) {
    bool found = false;
    for (int32_t id = 0; id < 256 && !found; ++id) {
      if (qwen25().token_bytes(id) == std::string(1, static_cast<char>(c))) {
        ids.push_back(id);
        found = true;
      }
    }
    ASSERT_TRUE(found);
  }
  TokenStreamDecoder stream(qwen25());
  EXPECT_EQ(stream.push(ids[0]), "");
  EXPECT_EQ(stream.push(ids[1]), "");
  EXPECT_EQ(stream.push(ids[2]), "");
  EXPECT_EQ(stream.push(ids[3]), emoji);
  EXPECT_EQ(stream.flush(), "");
  // An unfinished character at the end comes out as U+FFFD on flush.
  EXPECT_EQ(stream.push(ids[0]), "");
  EXPECT_EQ(stream.flush(), "\xEF\xBF\xBD");
  // A lead byte followed by a non-continuation is replaced as soon as that is known.
  EXPECT_EQ(stream.push(ids[0]), "");
  EXPECT_EQ(stream.push(qwen25().encode("a")[0]),
            "\xEF\xBF\xBD"
            "a");
}

TEST(TokenizerSpecial, SpecialTextIsATokenByDefaultAndPlainOnRequest) {
  const std::string text = "<|im_start|>user\nhi<|im_end|>";
  const auto ids = qwen25().encode(text);
  EXPECT_EQ(ids.front(), 151644);
  EXPECT_EQ(ids.back(), 151645);
  EncodeOptions plain;
  plain.parse_special = false;
  const auto plain_ids = qwen25().encode(text, plain);
  for (int32_t id : plain_ids) EXPECT_FALSE(qwen25().is_special(id));
  EXPECT_GT(plain_ids.size(), ids.size());
  EXPECT_EQ(qwen25().decode(plain_ids), text);
  // "<|im_start|>" as plain text is the same as the pieces "<|", "im", "_start", "|>".
  const auto a = qwen25().encode("<|", plain);
  EXPECT_EQ(plain_ids[0], a[0]);
  // Non-special added tokens are matched either way, as the reference does.
  EXPECT_EQ(qwen25().encode("<tool_call>", plain), std::vector<int32_t>{151657});
  EXPECT_EQ(qwen25().decode(ids, /*skip_special=*/true), "user\nhi");
}

TEST(TokenizerSpecial, LookupsAndConfig) {
  const Tokenizer& t = qwen25();
  EXPECT_EQ(t.vocab_size(), 151665);
  EXPECT_EQ(t.token_to_id("<|im_end|>"), std::optional<int32_t>(151645));
  EXPECT_EQ(t.token_to_id("Hello"), std::optional<int32_t>(9707));
  EXPECT_EQ(t.token_to_id("Ġworld"), std::optional<int32_t>(1879));
  EXPECT_EQ(t.id_to_token(1879), std::optional<std::string>("Ġworld"));
  EXPECT_EQ(t.token_bytes(1879), " world");
  EXPECT_FALSE(t.token_to_id("no such token").has_value());
  EXPECT_TRUE(t.is_special(151643));
  EXPECT_FALSE(t.is_special(151657));
  EXPECT_FALSE(t.is_known(151665));
  EXPECT_FALSE(t.bos_id().has_value());
  EXPECT_EQ(t.eos_id(), std::optional<int32_t>(151645));
  EXPECT_EQ(t.config().pad_token, std::optional<std::string>("<|endoftext|>"));
  EXPECT_FALSE(t.config().add_bos_token);
}

TEST(TokenizerDecode, UnknownIdsAreErrors) {
  const std::vector<int32_t> bad = {9707, 151665};
  EXPECT_THROW(qwen25().decode(bad), Error);
  EXPECT_THROW(qwen25().token_bytes(-1), Error);
  try {
    qwen25().decode(bad);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown token id 151665"), std::string::npos);
  }
}

TEST(TokenizerUtf8, LossyFollowsTheMaximalSubpartRule) {
  // The example of the Unicode standard (chapter 3, "U+FFFD Substitution of Maximal Subparts").
  EXPECT_EQ(utf8_lossy("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64"),
            "a\uFFFD\uFFFD\uFFFDb\uFFFDc\uFFFD\uFFFDd");
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), "\uFFFD\uFFFD\uFFFD");  // a surrogate is never valid
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x98"), "\uFFFD");              // a cut-off emoji is one
  EXPECT_EQ(utf8_lossy("\xC0\xAF"), "\uFFFD\uFFFD");            // overlong
  EXPECT_EQ(utf8_lossy("plain ✓"), "plain ✓");
  EXPECT_FALSE(utf8_is_valid("\xFF"));
  EXPECT_TRUE(utf8_is_valid("héllo 😀"));
}

TEST(TokenizerUtf8, InvalidInputIsEncodedAsItsLossyRepair) {
  const std::vector<std::string> bad = {"\xFF",
                                        "a\xE2\x82"
                                        "b",
                                        "\xED\xA0\x80 x",
                                        std::string("nul\0byte", 8),
                                        "\xC3",
                                        "ok\x80\x80 \xF4\x90"};
  for (const std::string& s : bad) {
    const auto ids = qwen25().encode(s);
    EXPECT_EQ(ids, qwen25().encode(utf8_lossy(s)));
    EXPECT_EQ(qwen25().decode(ids), utf8_lossy(s));
  }
}

// CPU seconds of this thread spent encoding `s`. CPU time, unlike wall time, does not grow when
// other processes compete for the cores, so the bound below holds on a busy machine.
double seconds_to_encode(const std::string& s, std::vector<int32_t>* ids) {
  auto now = [] {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  };
  const double t0 = now();
  *ids = qwen25().encode(s);
  return now() - t0;
}

// Linear time: a megabyte that is one pre-token word (a naive BPE would be quadratic on it, about
// 10^12 steps) and a megabyte line without spaces must both encode in a few CPU seconds (they
// take about 0.3 s). Sanitizer builds use a quarter of the size.
constexpr size_t kLongSize = kSanitized ? (256u << 10) : (1u << 20);
constexpr double kLongLimitSeconds = kSanitized ? 20.0 : 5.0;

TEST(TokenizerLinear, OneRepeatedCharacter) {
  for (const char* unit : {"a", " ", "\n", "7", "!", "é"}) {
    std::string s;
    while (s.size() < kLongSize) s += unit;
    std::vector<int32_t> ids;
    const double secs = seconds_to_encode(s, &ids);
    EXPECT_LT(secs, kLongLimitSeconds) << "unit '" << unit << "'";
    EXPECT_EQ(qwen25().decode(ids), s) << "unit '" << unit << "'";
  }
}

TEST(TokenizerLinear, LongLineWithoutSpaces) {
  std::mt19937 rng(99);
  const std::string alphabet =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:-_/";
  std::string s;
  s.reserve(kLongSize);
  while (s.size() < kLongSize) {
    if (rng() % 50 == 0) s += "ü中";
    s += alphabet[rng() % alphabet.size()];
  }
  std::vector<int32_t> ids;
  const double secs = seconds_to_encode(s, &ids);
  EXPECT_LT(secs, kLongLimitSeconds);
  EXPECT_EQ(qwen25().decode(ids), s);
  // A megabyte of letters only is a single pre-token word.
  std::string letters;
  while (letters.size() < kLongSize) letters += alphabet[rng() % 26];
  EXPECT_LT(seconds_to_encode(letters, &ids), kLongLimitSeconds);
  EXPECT_EQ(qwen25().decode(ids), letters);
}

TEST(TokenizerThreads, ConcurrentEncodesAgree) {
  std::mt19937 rng(5);
  std::vector<std::string> texts;
  for (int i = 0; i < 50; ++i) texts.push_back(random_text(rng));
  std::vector<std::vector<int32_t>> expected;
  for (const auto& t : texts) expected.push_back(qwen25().encode(t));
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 5; ++rep)
        for (size_t i = 0; i < texts.size(); ++i)
          if (qwen25().encode(texts[i]) != expected[i]) ++mismatches[k];
    });
  }
  for (auto& t : threads) t.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

// --- small hand-written tokenizers --------------------------------------------------------------

// The GPT-2 byte-level spelling of byte b.
std::string byte_char(int b) {
  const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
  if (printable) return utf8(static_cast<uint32_t>(b));
  int n = 0;
  for (int x = 0; x < b; ++x) {
    const bool p = (x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
    if (!p) ++n;
  }
  return utf8(static_cast<uint32_t>(256 + n));
}

// A byte-level BPE over all 256 bytes (ids 0..255 in byte order) plus `extra` tokens.
json tiny_tokenizer(const std::vector<std::string>& extra, const json& merges) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  int id = 256;
  for (const auto& e : extra) vocab[e] = id++;
  json t = {
      {"version", "1.0"},
      {"added_tokens", json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
  return t;
}

Tokenizer from(const json& j) { return Tokenizer::from_json(j.dump(), "tiny.json"); }

TEST(TokenizerBpe, MergesByRankLeftmostFirst) {
  // With only "a a", "aaa" is [aa, a]: the leftmost pair merges first.
  const Tokenizer t = from(tiny_tokenizer({"aa", "aaaa"}, {"a a", "aa aa"}));
  EXPECT_EQ(t.encode("aaa"), (std::vector<int32_t>{256, 'a'}));
  EXPECT_EQ(t.encode("aaaa"), (std::vector<int32_t>{257}));
  EXPECT_EQ(t.encode("aaaaaaa"), (std::vector<int32_t>{257, 256, 'a'}));
  // Lower rank wins over position: "b c" (rank 0) before "a b" (rank 1) in "abc".
  const Tokenizer u = from(tiny_tokenizer(
      {"bc", "ab"}, json::array({json::array({"b", "c"}), json::array({"a", "b"})})));
  EXPECT_EQ(u.encode("abc"), (std::vector<int32_t>{'a', 256}));
  EXPECT_EQ(u.encode("abd"), (std::vector<int32_t>{257, 'd'}));
}

TEST(TokenizerBpe, IgnoreMergesTakesWholeWordsFromTheVocab) {
  // "abc" is in the vocabulary but no merge produces it.
  json j = tiny_tokenizer({"ab", "abc"}, {"a b"});
  EXPECT_EQ(from(j).encode("abc"), (std::vector<int32_t>{256, 'c'}));
  j["model"]["ignore_merges"] = true;
  EXPECT_EQ(from(j).encode("abc"), (std::vector<int32_t>{257}));
}

TEST(TokenizerBpe, PrefixSpaceAndGpt2Regex) {
  json j = tiny_tokenizer({}, json::array());
  const int space = 0x20;
  EXPECT_EQ(from(j).encode("hi"), (std::vector<int32_t>{'h', 'i'}));
  j["pre_tokenizer"]["add_prefix_space"] = true;
  EXPECT_EQ(from(j).encode("hi"), (std::vector<int32_t>{space, 'h', 'i'}));
  EXPECT_EQ(from(j).decode(from(j).encode("hi")), " hi");
}

TEST(TokenizerAdded, FlagsAreHonoured) {
  json j = tiny_tokenizer({}, json::array());
  j["added_tokens"] = json::array({{{"id", 300},
                                    {"content", "<s>"},
                                    {"special", true},
                                    {"lstrip", true},
                                    {"rstrip", true},
                                    {"single_word", false},
                                    {"normalized", false}},
                                   {{"id", 301},
                                    {"content", "cat"},
                                    {"special", false},
                                    {"lstrip", false},
                                    {"rstrip", false},
                                    {"single_word", true},
                                    {"normalized", false}}});
  const Tokenizer t = from(j);
  // lstrip/rstrip swallow the whitespace around the token.
  EXPECT_EQ(t.encode("a  <s>\t b"), (std::vector<int32_t>{'a', 300, 'b'}));
  // single_word: only where no word character touches it.
  EXPECT_EQ(t.encode("cat"), (std::vector<int32_t>{301}));
  EXPECT_EQ(t.encode("a cat."), (std::vector<int32_t>{'a', 0x20, 301, '.'}));
  EXPECT_EQ(t.encode("cats"), (std::vector<int32_t>{'c', 'a', 't', 's'}));
  EXPECT_EQ(t.encode("bobcat"), (std::vector<int32_t>{'b', 'o', 'b', 'c', 'a', 't'}));
  EXPECT_EQ(t.vocab_size(), 302);
  EXPECT_EQ(t.decode(std::vector<int32_t>{300, 301}), "<s>cat");
  EncodeOptions plain;
  plain.parse_special = false;
  EXPECT_EQ(t.encode("<s>", plain), (std::vector<int32_t>{'<', 's', '>'}));
}

TEST(TokenizerAdded, NormalizedTokensMatchAfterNormalization) {
  json j = tiny_tokenizer({}, json::array());
  j["normalizer"] = {{"type", "Lowercase"}};
  j["added_tokens"] =
      json::array({{{"id", 300}, {"content", "HELLO"}, {"special", false}, {"normalized", true}},
                   {{"id", 301}, {"content", "RAW"}, {"special", false}, {"normalized", false}}});
  const Tokenizer t = from(j);
  EXPECT_EQ(t.encode("HeLLo"), (std::vector<int32_t>{300}));
  EXPECT_EQ(t.encode("RAW"), (std::vector<int32_t>{301}));
  EXPECT_EQ(t.encode("raw"), (std::vector<int32_t>{'r', 'a', 'w'}));
}

void expect_error(const json& j, const std::string& needle) {
  try {
    Tokenizer::from_json(j.dump(), "bad.json");
    ADD_FAILURE() << "no error, expected '" << needle << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_EQ(msg.rfind("bad.json: ", 0), 0u) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(TokenizerErrors, UnsupportedAndMalformedFilesAreNamed) {
  json j = tiny_tokenizer({}, json::array());
  json u = j;
  u["model"]["type"] = "Unigram";
  expect_error(u, "unsupported tokenizer model 'Unigram'");
  u["model"]["type"] = "WordPiece";
  expect_error(u, "unsupported tokenizer model 'WordPiece'");
  u = j;
  u["pre_tokenizer"] = {{"type", "Metaspace"}};
  expect_error(u, "unsupported pre-tokenizer 'Metaspace'");
  u = j;
  u["normalizer"] = {{"type", "BertNormalizer"}};
  expect_error(u, "unsupported normalizer 'BertNormalizer'");
  u = j;
  u["pre_tokenizer"] = {
      {"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  expect_error(u, "invalid regex '(unclosed'");
  u = j;
  u["pre_tokenizer"] = nullptr;
  expect_error(u, "no ByteLevel step");
  u = j;
  u["decoder"] = {{"type", "WordPiece"}};
  expect_error(u, "unsupported decoder 'WordPiece'");
  u = j;
  u["model"]["merges"] = {"a zz"};
  expect_error(u, "not in the vocab");
  u = j;
  u["model"]["vocab"] = "nope";
  expect_error(u, "vocab");
  u = j;
  u["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "x"}}}, {"behavior", "Odd"}};
  expect_error(u, "unsupported split behavior 'Odd'");
  expect_error(json::array(), "not a tokenizer.json object");
  EXPECT_THROW(Tokenizer::from_json("{not json", "bad.json"), Error);
}

TEST(TokenizerErrors, MissingFilesAreNamed) {
  try {
    Tokenizer::from_dir("/nonexistent/model");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model"), std::string::npos);
  }
  const std::string empty = test::temp_dir();
  try {
    Tokenizer::from_dir(empty);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no tokenizer.json"), std::string::npos);
  }
}

TEST(TokenizerLoading, DirectoryWithOnlyTokenizerJson) {
  const std::string dir = test::temp_dir();
  const json j = tiny_tokenizer({"ab"}, {"a b"});
  std::ofstream(dir + "/tokenizer.json") << j.dump();
  const Tokenizer t = Tokenizer::from_dir(dir);
  EXPECT_EQ(t.encode("ab"), std::vector<int32_t>{256});
  EXPECT_FALSE(t.config().eos_token.has_value());
  std::ofstream(dir + "/tokenizer_config.json")
      << R"({"eos_token": {"content": "ab", "special": true}, "add_bos_token": true})";
  const Tokenizer u = Tokenizer::from_dir(dir);
  EXPECT_EQ(u.eos_id(), std::optional<int32_t>(256));
  EXPECT_TRUE(u.config().add_bos_token);
  // A path to the file itself works too.
  EXPECT_EQ(Tokenizer::from_dir(dir + "/tokenizer.json").encode("ab"), std::vector<int32_t>{256});
}

}  // namespace
}  // namespace qrwkv
