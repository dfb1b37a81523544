// End-to-end tests of `qrwkv run` and `qrwkv chat` on a golden QRWKV6 model paired with the
// tiny ChatML tokenizer (tests/data/tiny_chat).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "model/model.h"
#include "tests/cli.h"
#include "text/tokenizer.h"

namespace qrwkv {
namespace {

using test::run_cli;
using ::testing::HasSubstr;

// A model directory as users have them: weights, config and tokenizer files together.
const std::string& chat_model() {
  static const std::string dir = [] {
    namespace fs = std::filesystem;
    const std::string d = test::temp_dir();
    for (const auto& e : fs::directory_iterator(test::data_path("models/qrwkv6_tiny")))
      fs::copy_file(e.path(), d + "/" + e.path().filename().string());
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
      fs::copy_file(test::data_path(std::string("tiny_chat/") + f), d + "/" + f);
    return d;
  }();
  return dir;
}

// The text that `run` streamed: stdout without the final newline it adds.
std::string streamed(const test::CliResult& r) {
  EXPECT_FALSE(r.out.empty());
  return r.out.substr(0, r.out.size() - 1);
}

TEST(CliRun, SameSeedSameOutputAndTimingLine) {
  const std::vector<std::string> args = {"run", "-m", chat_model(), "-p", "Once upon a time",
                                         "-n",  "24", "-s",         "7"};
  const auto a = run_cli(args), b = run_cli(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  const Tokenizer tok = Tokenizer::from_dir(chat_model());
  EXPECT_THAT(a.err, HasSubstr("prompt: " + std::to_string(tok.encode("Once upon a time").size()) +
                               " tokens"));
  EXPECT_THAT(a.err, HasSubstr("generated: 24 tokens"));
  const auto c =
      run_cli({"run", "-m", chat_model(), "-p", "Once upon a time", "-n", "24", "-s", "8"});
  EXPECT_NE(a.out, c.out);
}

TEST(CliRun, GreedyMatchesTheLibrary) {
  const Model m = Model::load(chat_model());
  const Tokenizer tok = Tokenizer::from_dir(chat_model());
  const std::string prompt = "The quick brown fox";
  State s = m.new_state();
  const auto ids = generate_greedy(m, s, tok.encode(prompt), 12);
  const auto r =
      run_cli({"run", "-m", chat_model(), "-p", prompt, "-n", "12", "--temp", "0", "--ignore-eos"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(streamed(r), tok.decode(ids));
}

TEST(CliRun, StopStringEndsTheTextAndIsNotShown) {
  const std::vector<std::string> base = {"run", "-m", chat_model(), "-p", "In the beginning",
                                         "-n",  "40", "--temp",     "0",  "--ignore-eos"};
  const auto full = run_cli(base);
  ASSERT_EQ(full.exit_code, 0) << full.err;
  const std::string text = streamed(full);
  ASSERT_GT(text.size(), 20u);
  // A stop string taken from the middle of the greedy text: output ends right before it.
  const std::string stop = text.substr(10, 3);
  auto args = base;
  args.insert(args.end(), {"-r", stop});
  const auto r = run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(streamed(r), text.substr(0, text.find(stop)));
}

TEST(CliRun, CompletionsForkOnePrefill) {
  const auto r = run_cli(
      {"run", "-m", chat_model(), "-p", "Hello", "-n", "10", "-s", "5", "--n-completions", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("--- completion 1 ---\n"));
  EXPECT_THAT(r.out, HasSubstr("--- completion 3 ---\n"));
  const Tokenizer tok = Tokenizer::from_dir(chat_model());
  // Prefilled once: one prompt count, three completions' tokens together.
  EXPECT_THAT(r.err,
              HasSubstr("prompt: " + std::to_string(tok.encode("Hello").size()) + " tokens"));
  EXPECT_THAT(r.err, HasSubstr("generated: 30 tokens"));
  // Completion k uses seed + k - 1: the second equals a single run with seed 6.
  const auto single = run_cli({"run", "-m", chat_model(), "-p", "Hello", "-n", "10", "-s", "6"});
  const std::string second = r.out.substr(r.out.find("--- completion 2 ---\n") + 21);
  EXPECT_EQ(second.substr(0, second.find("\n--- completion 3")), streamed(single));
}

TEST(CliRun, StateFilesRoundTrip) {
  const std::string state = test::temp_dir() + "/run.state";
  auto r =
      run_cli({"run", "-m", chat_model(), "-p", "Hello world.", "-n", "0", "--state-out", state});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli({"run", "-m", chat_model(), "-p", " The end", "--state-in", state, "-n", "10",
               "--temp", "0", "--ignore-eos"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto whole = run_cli({"run", "-m", chat_model(), "-p", "Hello world. The end", "-n", "10",
                              "--temp", "0", "--ignore-eos"});
  EXPECT_EQ(r.out, whole.out);
}

TEST(CliRun, ChatFormattingAndErrors) {
  auto r = run_cli({"run", "-m", chat_model(), "-p", "Hi", "--chat", "-sys", "Be brief.", "-n", "4",
                    "-s", "1", "-v"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("end-of-generation ids: 1 997 999"));
  // Without -m the model comes from $QRWKV_MODEL (else the built-in demo model); one that does
  // not exist is a usage error that names it.
  ::setenv("QRWKV_MODEL", "/nonexistent/qrwkv-model", 1);
  r = run_cli({"run", "-p", "Hi"});
  ::unsetenv("QRWKV_MODEL");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("no model given: pass a model with -m PATH"));
  EXPECT_THAT(r.err, HasSubstr("the default model /nonexistent/qrwkv-model does not exist"));
  r = run_cli({"run", "-m", chat_model()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("give exactly one of -p and -f"));
  r = run_cli({"run", "-m", chat_model(), "-p", "x", "--top-p", "2"});
  EXPECT_EQ(r.exit_code, 2);
  r = run_cli({"run", "-m", chat_model(), "-p", "x", "-l", "12x3"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--logit-bias"));
  // A big positive bias makes greedy decoding repeat that token.
  r = run_cli({"run", "-m", chat_model(), "-p", "x", "-n", "3", "--temp", "0", "-l", "88+100",
               "--ignore-eos"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Tokenizer tok = Tokenizer::from_dir(chat_model());
  EXPECT_EQ(streamed(r), tok.decode(std::vector<int32_t>{88, 88, 88}));
}

TEST(CliChat, MultiTurnSaveLoadReset) {
  const std::string dir = test::temp_dir();
  const auto r = run_cli({"chat", "-m", chat_model(), "-n", "6", "-s", "3"},
                         "Hello!\nHow are you?\n/save " + dir + "/s1\n/reset\nNew topic.\n/load " +
                             dir + "/s1\nBack again.\n/bogus\n/exit\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("(saved to " + dir + "/s1)"));
  EXPECT_THAT(r.out, HasSubstr("(conversation reset)"));
  EXPECT_THAT(r.out, HasSubstr("(loaded " + dir + "/s1: 4 messages)"));
  EXPECT_THAT(r.out, HasSubstr("(commands: /save FILE, /load FILE, /reset, /exit)"));
  // The second turn reuses the first turn's state.
  EXPECT_THAT(r.err, HasSubstr("(reused 0 tokens of state)"));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '|'), 4);  // four replies, four timing lines
  EXPECT_TRUE(std::filesystem::exists(dir + "/s1"));
}

TEST(CliChat, SessionPersistsAcrossRunsAndEofExits) {
  const std::string session = test::temp_dir() + "/chat.session";
  auto r = run_cli({"chat", "-m", chat_model(), "-n", "5", "--session", session}, "First.\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;  // EOF ends the chat cleanly
  ASSERT_TRUE(std::filesystem::exists(session));
  r = run_cli({"chat", "-m", chat_model(), "-n", "5", "--session", session}, "Second.\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("resumed session " + session + " (2 messages"));
  EXPECT_THAT(r.err, ::testing::Not(HasSubstr("(reused 0 tokens")));
}

TEST(CliChat, CtrlCStopsTheReplyNotTheSession) {
  test::Process p({"chat", "-m", chat_model(), "-n", "-1", "--ignore-eos", "-s", "1"});
  p.write("Tell me a very long story.\n");
  // Let the reply start, then interrupt it.
  ASSERT_TRUE(p.wait_for_output("", 0.1));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  p.signal(SIGINT);
  ASSERT_TRUE(p.wait_for_output("[interrupted]", 10)) << "reply was not interrupted";
  // The session is alive: it still takes commands, and keeps the partial reply.
  const std::string saved = test::temp_dir() + "/after-interrupt";
  p.write("/save " + saved + "\n/exit\n");
  const auto r = p.finish();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("(saved to " + saved + ")"));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '|'), 1);  // the interrupted reply's timing
}

}  // namespace
}  // namespace qrwkv
