// End-to-end tests of the model commands: info, logits, generate-ids, and their errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/safetensors.h"
#include "model/model.h"
#include "tests/cli.h"

namespace qrwkv {
namespace {

using test::run_cli;
using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::string kRwkv = test::data_path("models/qrwkv6_tiny");
const std::string kQwen = test::data_path("models/qwen2_tiny");

TEST(CliInfo, DescribesQrwkvAndTransformer) {
  auto r = run_cli({"info", "-m", kRwkv});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("architecture:     rwkv6qwen2"));
  EXPECT_THAT(r.out, HasSubstr("parameters:       366720"));
  EXPECT_THAT(r.out, HasSubstr("storage dtype:    F32"));
  EXPECT_THAT(r.out, HasSubstr("heads:            4 (kv heads 2, head size 16)"));
  EXPECT_THAT(r.out, HasSubstr("lora ranks:       token shift 32, decay 64"));
  EXPECT_THAT(r.out, HasSubstr("state per seq:    13056 bytes"));
  r = run_cli({"info", "--model", test::data_path("models/qwen2_tiny_bf16")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("architecture:     qwen2"));
  EXPECT_THAT(r.out, HasSubstr("storage dtype:    BF16"));
  EXPECT_THAT(r.out, HasSubstr("tied embeddings:  yes"));
  // 2 (K and V) · 3 layers · 2 kv heads · 16 · 4 bytes.
  EXPECT_THAT(r.out, HasSubstr("kv cache:         768 bytes"));
}

// QRWKV_ISA sets the CPU backend's level (shown by info); an unknown level is refused by name.
TEST(CliInfo, IsaVariableSetsTheKernelLevel) {
  ::setenv("QRWKV_ISA", "portable", 1);
  auto r = run_cli({"info", "-m", kRwkv, "-t", "1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("backend:          cpu portable (1 thread)"));
  ::setenv("QRWKV_ISA", "avx9", 1);
  r = run_cli({"info", "-m", kRwkv});
  ::unsetenv("QRWKV_ISA");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("QRWKV_ISA: unknown instruction-set level 'avx9'"));
  r = run_cli({"info", "-m", kRwkv, "-t", "1"});
  EXPECT_THAT(r.out, HasSubstr("backend:          cpu "));
}

// synth --layers writes a real shape's widths with fewer layers, and refuses counts the shape does
// not have.
TEST(CliSynth, TruncatedShapeLoadsWithItsWidths) {
  const std::string dir = test::temp_dir() + "/synth";
  auto r =
      run_cli({"synth", "--shape", "qwen2.5-0.5b", "--arch", "qwen2", "--layers", "1", "-o", dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli({"info", "-m", dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("layers:           1"));
  EXPECT_THAT(r.out, HasSubstr("heads:            14 (kv heads 2, head size 64)"));
  r = run_cli({"synth", "--shape", "qwen2.5-72b", "--arch", "qwen2", "--layers", "81", "-o", dir});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--layers must be between 1 and 80 for qwen2.5-72b"));
}

// synth --arch rwkv7qwen2 writes the classic QRWKV7 variant with the default LoRA ranks of the
// width, which the engine loads and runs.
TEST(CliSynth, Qrwkv7ShapeLoadsAndRuns) {
  const std::string dir = test::temp_dir() + "/synth7";
  auto r = run_cli(
      {"synth", "--shape", "qwen2.5-0.5b", "--arch", "rwkv7qwen2", "--layers", "1", "-o", dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli({"info", "-m", dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("architecture:     rwkv7qwen2"));
  EXPECT_THAT(r.out, HasSubstr("variant:          classic (GroupNorm output), RoPE on r and k"));
  // 896^0.5·1.8/32 = 1.7 → 64; 896^0.5·1.3/32 = 1.2 → 32; 896^0.8·0.6/32 = 4.3 → 128.
  EXPECT_THAT(r.out, HasSubstr("lora ranks:       decay 64, iclr 64, value residual 32, gate 128"));
  r = run_cli({"generate-ids", "-m", dir, "--tokens", "1 2 3", "-n", "3"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// bench reports both tests with positive rates, the measured bandwidth and compute peaks, and the
// bound of prompt processing at this level.
TEST(CliBench, ReportsRatesAndTheMachinesBounds) {
  auto r = run_cli({"bench", "-m", kQwen, "-p", "16", "-n", "4", "-r", "2", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["bandwidth_gbs"].get<double>(), 0.0);
  EXPECT_GT(j["peak_gflops"]["fp32_fma"].get<double>(), 0.0);
  EXPECT_EQ(j["peak_gflops"]["bound"], "fp32 FMA");  // the F32 test model
  EXPECT_GT(j["peak_rss_bytes"].get<int64_t>(), 0);
  ASSERT_EQ(j["results"].size(), 2u);
  EXPECT_EQ(j["results"][0]["test"], "pp16");
  EXPECT_GT(j["results"][0]["tps_mean"].get<double>(), 0.0);
  EXPECT_GT(j["results"][0]["gflops"].get<double>(), 0.0);
  EXPECT_EQ(j["results"][1]["test"], "tg4");
  EXPECT_GT(j["results"][1]["gbs"].get<double>(), 0.0);
  r = run_cli({"bench", "-m", kQwen, "-p", "16", "-n", "0", "-r", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("% of "));
  EXPECT_THAT(r.out, HasSubstr("measured compute peak: fp32 FMA "));
}

// Decode speed and per-sequence memory against context depth: the rows carry depth and state
// size (a fixed QRWKV6 state, a KV cache that grows by 2·layers·Hkv·D floats per token), and
// gnuplot draws them.
TEST(CliBench, PlotsDecodeSpeedAndMemoryAgainstDepth) {
  const std::string dir = test::temp_dir();
  auto r = run_cli({"bench", "-m", kQwen, "-p", "0", "-n", "2", "-d", "0,8,32", "-r", "1", "-o",
                    "json", "--plot", dir + "/one.svg"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto qwen = nlohmann::json::parse(r.out);
  ASSERT_EQ(qwen["results"].size(), 3u);
  const Model q = Model::load(kQwen);
  const int64_t depths[] = {0, 8, 32};
  for (size_t i = 0; i < 3; ++i) {
    const int64_t depth = qwen["results"][i]["depth"];
    EXPECT_EQ(depth, depths[i]);
    EXPECT_EQ(qwen["results"][i]["state_bytes"].get<size_t>(),
              static_cast<size_t>(depth) * q.kv_bytes_per_token());
  }
  std::ifstream svg(dir + "/one.svg");
  std::stringstream text;
  text << svg.rdbuf();
  EXPECT_THAT(text.str(), HasSubstr("<svg"));
  EXPECT_THAT(text.str(), HasSubstr("context length (tokens)"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/one.svg.tmp"));

  r = run_cli({"bench", "-m", kRwkv, "-p", "0", "-n", "2", "-d", "0,32", "-r", "1", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto rwkv = nlohmann::json::parse(r.out);
  const Model m = Model::load(kRwkv);
  EXPECT_EQ(rwkv["results"][0]["state_bytes"].get<size_t>(), m.state_bytes());
  EXPECT_EQ(rwkv["results"][1]["state_bytes"].get<size_t>(), m.state_bytes());
  std::ofstream(dir + "/qwen.json") << qwen.dump();
  std::ofstream(dir + "/rwkv.json") << rwkv.dump();
  r = run_cli({"plot", "--bench", dir + "/rwkv.json", "--bench", dir + "/qwen.json", "--out",
               dir + "/both.svg"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream both(dir + "/both.svg");
  std::stringstream both_text;
  both_text << both.rdbuf();
  // One titled line per report (checked without printing the whole SVG on failure).
  EXPECT_NE(both_text.str().find("qrwkv6_tiny (rwkv6qwen2, F32)"), std::string::npos);
  EXPECT_NE(both_text.str().find("qwen2_tiny (qwen2, F32)"), std::string::npos);

  // A report without generation rows, a file that is not a report, no plotter: one-line errors.
  auto pp = run_cli({"bench", "-m", kQwen, "-p", "8", "-n", "0", "-r", "1", "-o", "json"});
  std::ofstream(dir + "/pp.json") << pp.out;
  r = run_cli({"plot", "--bench", dir + "/pp.json", "--out", dir + "/x.svg"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("no generation rows"));
  std::ofstream(dir + "/bad.json") << "[1, 2";
  r = run_cli({"plot", "--bench", dir + "/bad.json", "--out", dir + "/x.svg"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("bad.json"));
  EXPECT_EQ(run_cli({"plot", "--out", dir + "/x.svg"}).exit_code, 2);
  const std::string cmd = "env PATH=/nonexistent '" + std::string(QRWKV_BIN) + "' plot --bench '" +
                          dir + "/rwkv.json' --out '" + dir + "/x.svg' 2>'" + dir + "/err.txt'";
  EXPECT_NE(std::system(cmd.c_str()), 0);
  std::ifstream err(dir + "/err.txt");
  std::stringstream err_text;
  err_text << err.rdbuf();
  EXPECT_THAT(err_text.str(), HasSubstr("needs gnuplot"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/x.svg"));
}

TEST(CliLogits, WritesSafetensorsEqualToLibrary) {
  const std::string out = test::temp_dir() + "/logits.safetensors";
  auto r = run_cli({"logits", "-m", kRwkv, "--tokens", "5, 17,900 3", "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  SafetensorsFile f(out);
  const TensorInfo* t = f.find("logits");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::F32);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{4, 1000}));
  std::vector<float> got(4000);
  std::memcpy(got.data(), f.data(*t), got.size() * 4);
  const Model m = Model::load(kRwkv);
  State s = m.new_state();
  EXPECT_EQ(got, forward(m, s, std::vector<int32_t>{5, 17, 900, 3}));
}

TEST(CliLogits, PrintsTopFiveWithoutOut) {
  auto r = run_cli({"logits", "-m", kQwen, "--tokens", "1 2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("0 [1]: "));
  EXPECT_THAT(r.out, HasSubstr("\n1 [2]: "));
  // Five "id=value" pairs per line, in decreasing order.
  const std::string line = r.out.substr(0, r.out.find('\n'));
  EXPECT_EQ(std::count(line.begin(), line.end(), '='), 5);
}

TEST(CliLogits, StateFilesContinueASequence) {
  const std::string dir = test::temp_dir();
  const std::string state = dir + "/s.state", whole = dir + "/whole.st", part = dir + "/part.st";
  ASSERT_EQ(run_cli({"logits", "-m", kRwkv, "--tokens", "1 2 3 4 5 6", "--out", whole}).exit_code,
            0);
  auto r = run_cli({"logits", "-m", kRwkv, "--tokens", "1 2 3", "--state-out", state});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli({"logits", "-m", kRwkv, "--tokens", "4 5 6", "--state-in", state, "--out", part});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  SafetensorsFile a(whole), b(part);
  const float* wa = reinterpret_cast<const float*>(a.data(*a.find("logits")));
  std::vector<float> tail(3000), got(3000);
  std::memcpy(tail.data(), reinterpret_cast<const uint8_t*>(wa) + 3 * 1000 * 4, 3000 * 4);
  std::memcpy(got.data(), b.data(*b.find("logits")), 3000 * 4);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], tail[i], 1e-4) << i;

  // The same state file is refused by another model.
  r = run_cli({"logits", "-m", kQwen, "--tokens", "4", "--state-in", state});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("state was made for a different model"));
  // A truncated state file is refused.
  std::filesystem::resize_file(state, std::filesystem::file_size(state) - 10);
  r = run_cli({"logits", "-m", kRwkv, "--tokens", "4", "--state-in", state});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("truncated state file"));
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// Generating 6 tokens at once equals generating 3, saving the state, and continuing from it
// with the last generated token (which the saved state has not consumed yet).
TEST(CliGenerate, StateOutThenContinue) {
  const std::string state = test::temp_dir() + "/g.state";
  auto all = run_cli({"generate-ids", "-m", kRwkv, "--tokens", "10 20 30", "-n", "6"});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  const auto six = words(all.out);
  ASSERT_EQ(six.size(), 6u);
  auto first = run_cli(
      {"generate-ids", "-m", kRwkv, "--tokens", "10 20 30", "-n", "3", "--state-out", state});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const auto three = words(first.out);
  ASSERT_EQ(three, std::vector<std::string>(six.begin(), six.begin() + 3));
  auto rest =
      run_cli({"generate-ids", "-m", kRwkv, "--tokens", three[2], "-n", "3", "--state-in", state});
  ASSERT_EQ(rest.exit_code, 0) << rest.err;
  EXPECT_EQ(words(rest.out), std::vector<std::string>(six.begin() + 3, six.end()));
}

TEST(CliErrors, BadFlagsPrintUsage) {
  auto r = run_cli({"logits", "-m", kRwkv, "--bogus"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown option '--bogus'"));
  EXPECT_THAT(r.err, HasSubstr("usage: qrwkv logits"));
  r = run_cli({"logits", "-m", kRwkv});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("missing required option --tokens"));
  r = run_cli({"generate-ids", "-m", kRwkv, "--tokens", "1", "-n", "ten"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("expects an integer"));
  r = run_cli({"logits", "-m", kRwkv, "--tokens", "1 x 3"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("token list"));
  r = run_cli({"logits", "-m"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("needs a value"));
  r = run_cli({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown command 'frobnicate'"));
  r = run_cli({});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("usage: qrwkv <command>"));
}

TEST(CliErrors, HelpOnEverySubcommand) {
  for (const char* cmd : {"info", "logits", "generate-ids"}) {
    auto r = run_cli({cmd, "--help"});
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_THAT(r.out, HasSubstr(std::string("usage: qrwkv ") + cmd)) << cmd;
  }
  auto r = run_cli({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("generate-ids"));
}

TEST(CliErrors, BadModelsGiveOneLineErrors) {
  auto r = run_cli({"info", "-m", "/nonexistent"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "error: /nonexistent: model directory or GGUF file does not exist\n");
  r = run_cli({"logits", "-m", kRwkv, "--tokens", "1 1000"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "error: token id 1000 is out of range (vocabulary size 1000)\n");
  r = run_cli({"logits", "-m", kRwkv, "--tokens", "1", "--out", "/nonexistent/dir/x.safetensors"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("/nonexistent/dir/x.safetensors"));
}

}  // namespace
}  // namespace qrwkv
