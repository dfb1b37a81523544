// `qrwkv tokenize` / `qrwkv detokenize` as a user runs them.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "tests/cli.h"

namespace qrwkv::test {
namespace {

std::string qwen_dir() { return data_path("tokenizer/qwen2.5"); }

TEST(TokenizerCli, TokenizeTextPrintsACompactJsonArray) {
  const CliResult r = run_cli({"tokenize", "-m", qwen_dir(), "--text", "Hello world"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[9707,1879]\n");
  const CliResult empty = run_cli({"tokenize", "-m", qwen_dir(), "--text", ""});
  EXPECT_EQ(empty.out, "[]\n");
}

TEST(TokenizerCli, SpecialTokensAndNoSpecial) {
  const CliResult r = run_cli({"tokenize", "-m", qwen_dir(), "--text", "<|im_start|>user"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[151644,872]\n");
  const CliResult p =
      run_cli({"tokenize", "-m", qwen_dir(), "--no-special", "--text", "<|im_start|>user"});
  EXPECT_EQ(p.exit_code, 0) << p.err;
  EXPECT_EQ(p.out.find("151644"), std::string::npos) << p.out;
  EXPECT_EQ(p.out.rfind("[", 0), 0u);
}

TEST(TokenizerCli, TokenizeJsonlPrintsOneArrayPerLine) {
  const std::string dir = temp_dir();
  const std::string file = dir + "/in.jsonl";
  std::ofstream(file) << "{\"text\": \"Hello world\"}\n"
                         "{\"text\": \"<|endoftext|>\", \"id\": 7}\n"
                         "{\"text\": \"\"}\n"
                         "{\"text\": \"line1\\nline2\"}\n";
  const CliResult r = run_cli({"tokenize", "-m", qwen_dir(), "--jsonl", file});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[9707,1879]\n[151643]\n[]\n[1056,16,198,1056,17]\n");
  const CliResult p = run_cli({"tokenize", "-m", qwen_dir(), "--jsonl", file, "--no-special"});
  EXPECT_EQ(p.exit_code, 0) << p.err;
  EXPECT_EQ(p.out.find("151643"), std::string::npos) << p.out;
  // Standard input works as "-".
  const CliResult s =
      run_cli({"tokenize", "-m", qwen_dir(), "--jsonl", "-"}, "{\"text\": \"Hello world\"}\n");
  EXPECT_EQ(s.out, "[9707,1879]\n");
}

TEST(TokenizerCli, TokenizeFileAndCount) {
  const std::string file = temp_dir() + "/in.txt";
  std::ofstream(file) << "Hello world";
  const CliResult r = run_cli({"tokenize", "-m", qwen_dir(), "-f", file});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[9707,1879]\n");
  const CliResult c = run_cli({"tokenize", "-m", qwen_dir(), "-f", file, "--count"});
  EXPECT_EQ(c.out, "2\n");
  const CliResult t = run_cli({"tokenize", "-m", qwen_dir(), "--text", "line1\nline2", "--count"});
  EXPECT_EQ(t.out, "5\n");
  const CliResult both = run_cli({"tokenize", "-m", qwen_dir(), "-f", file, "--text", "x"});
  EXPECT_EQ(both.exit_code, 2);
  const CliResult missing = run_cli({"tokenize", "-m", qwen_dir(), "-f", file + ".none"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find(file + ".none"), std::string::npos) << missing.err;
}

TEST(TokenizerCli, BadJsonlLinesAreNamed) {
  const std::string dir = temp_dir();
  const std::string file = dir + "/bad.jsonl";
  std::ofstream(file) << "{\"text\": \"ok\"}\n{\"nope\": 1}\n";
  const CliResult r = run_cli({"tokenize", "-m", qwen_dir(), "--jsonl", file});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(file + ":2"), std::string::npos) << r.err;
  const CliResult missing = run_cli({"tokenize", "-m", qwen_dir(), "--jsonl", dir + "/none"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("none"), std::string::npos) << missing.err;
}

TEST(TokenizerCli, DetokenizePrintsExactlyTheText) {
  const CliResult r = run_cli({"detokenize", "-m", qwen_dir(), "--ids", "9707 1879"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "Hello world");
  const CliResult n = run_cli({"detokenize", "-m", qwen_dir(), "--ids", "1056,16,198"});
  EXPECT_EQ(n.out, "line1\n");
  const CliResult s =
      run_cli({"detokenize", "-m", qwen_dir(), "--ids", "151644 872", "--skip-special"});
  EXPECT_EQ(s.out, "user");
}

TEST(TokenizerCli, DetokenizeUnknownIdIsAnError) {
  const CliResult r = run_cli({"detokenize", "-m", qwen_dir(), "--ids", "9707 999999"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unknown token id 999999"), std::string::npos) << r.err;
  const CliResult bad = run_cli({"detokenize", "-m", qwen_dir(), "--ids", "12 x"});
  EXPECT_EQ(bad.exit_code, 2);
}

TEST(TokenizerCli, BadFlagsPrintUsage) {
  const CliResult r = run_cli({"tokenize", "-m", qwen_dir(), "--bogus"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("usage: qrwkv tokenize"), std::string::npos) << r.err;
  const CliResult both = run_cli({"tokenize", "-m", qwen_dir()});
  EXPECT_EQ(both.exit_code, 2);
  EXPECT_NE(both.err.find("--text"), std::string::npos) << both.err;
  // Without -m the default model is used; when it does not exist, that is a usage error.
  ::setenv("QRWKV_MODEL", "/nonexistent/qrwkv-model", 1);
  const CliResult no_model = run_cli({"detokenize", "--ids", "1"});
  ::unsetenv("QRWKV_MODEL");
  EXPECT_EQ(no_model.exit_code, 2);
  EXPECT_NE(no_model.err.find("usage: qrwkv detokenize"), std::string::npos) << no_model.err;
  const CliResult help = run_cli({"detokenize", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("no newline added"), std::string::npos) << help.out;
}

TEST(TokenizerCli, MissingModelDirectoryIsAnError) {
  const CliResult r = run_cli({"tokenize", "-m", "/nonexistent/dir", "--text", "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("error: /nonexistent/dir"), std::string::npos) << r.err;
  const std::string empty = temp_dir();
  const CliResult e = run_cli({"detokenize", "-m", empty, "--ids", "1"});
  EXPECT_EQ(e.exit_code, 1);
  EXPECT_NE(e.err.find("no tokenizer.json"), std::string::npos) << e.err;
}

}  // namespace
}  // namespace qrwkv::test
