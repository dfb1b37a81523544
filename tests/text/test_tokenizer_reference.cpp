// Differential test against Hugging Face `tokenizers` itself (its Node binding, installed by
// `npm install` in tests/js). Skipped when node or that package is missing.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "io/json.h"
#include "tests/cli.h"
#include "tests/text/tokenizer_test_util.h"
#include "text/tokenizer.h"

namespace qrwkv {
namespace {

bool reference_available() {
  const std::string module = test::data_path("../js/node_modules/tokenizers/package.json");
  return std::filesystem::exists(module) && std::system("node --version >/dev/null 2>&1") == 0;
}

// Runs the reference on `texts`; returns one id list per text.
std::vector<std::vector<int32_t>> reference_encode(const std::string& tokenizer_json,
                                                   const std::vector<std::string>& texts,
                                                   bool no_special) {
  const std::string dir = test::temp_dir();
  {
    std::ofstream in(dir + "/in.jsonl", std::ios::binary);
    for (const auto& t : texts) in << json{{"text", t}}.dump() << "\n";
  }
  const std::string cmd = "node '" + test::data_path("../js/tokenizer_reference.js") + "' '" +
                          tokenizer_json + "' encode" + (no_special ? " --no-special" : "") +
                          " < '" + dir + "/in.jsonl' > '" + dir + "/out.jsonl'";
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("reference failed: " + cmd);
  std::ifstream out(dir + "/out.jsonl", std::ios::binary);
  std::vector<std::vector<int32_t>> ids;
  std::string line;
  while (std::getline(out, line)) ids.push_back(json::parse(line).get<std::vector<int32_t>>());
  return ids;
}

TEST(TokenizerReference, RandomTextMatchesHuggingFace) {
  if (!reference_available()) GTEST_SKIP() << "node or tests/js/node_modules/tokenizers missing";
  const std::string dir = test::data_path("tokenizer/qwen2.5");
  const Tokenizer t = Tokenizer::from_dir(dir);
  std::mt19937 rng(4242);
  std::vector<std::string> texts;
  for (int i = 0; i < 300; ++i) texts.push_back(test::random_text(rng, /*old_unicode_only=*/true));
  for (bool no_special : {false, true}) {
    const auto expected = reference_encode(dir + "/tokenizer.json", texts, no_special);
    ASSERT_EQ(expected.size(), texts.size());
    EncodeOptions options;
    options.parse_special = !no_special;
    int failures = 0;
    for (size_t i = 0; i < texts.size() && failures < 5; ++i) {
      const auto ids = t.encode(texts[i], options);
      EXPECT_EQ(ids, expected[i]) << "text: " << texts[i] << " no_special=" << no_special;
      if (ids != expected[i]) ++failures;
    }
  }
}

}  // namespace
}  // namespace qrwkv
