// GGUF models through the command line (every command takes -m FILE.gguf) and the one-line
// errors for files that are well-formed GGUF but not a model qrwkv can run.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>

#include "io/error.h"
#include "io/gguf.h"
#include "model/model.h"
#include "tests/cli.h"
#include "tests/expect.h"
#include "text/tokenizer.h"

namespace qrwkv {
namespace {

using test::expect_error;

using ::testing::HasSubstr;

std::string gguf_path(const std::string& name) { return test::data_path("gguf/" + name); }

// A copy of a GGUF file with its metadata edited and tensors dropped, renamed or re-typed.
struct TensorEdit {
  std::string name;
  GgmlType type;
  std::vector<int64_t> ne;
  const uint8_t* data;
};
std::string rewritten(const std::string& src, const std::function<void(GgufWriter&)>& edit_kv,
                      const std::function<bool(TensorEdit&)>& edit_tensor = nullptr) {
  static int counter = 0;
  const GgufFile f(gguf_path(src));
  GgufWriter w;
  for (const auto& [k, v] : f.header().metadata) w.set_value(k, v);
  edit_kv(w);
  for (const GgufTensorInfo& g : f.header().tensors) {
    TensorEdit t{g.name, g.type, g.ne, f.data(g)};
    if (edit_tensor && !edit_tensor(t)) continue;
    w.add_tensor(t.name, t.type, t.ne, t.data);
  }
  const std::string out = test::temp_dir() + "/edited" + std::to_string(counter++) + ".gguf";
  w.write(out);
  return out;
}

Model load(const std::string& path) {
  return Model::load(path, {WeightFormat::Stored, make_reference_backend()});
}

TEST(GgufModelFile, UnchangedCopyLoadsAndComputesTheSame) {
  // The copy goes through the writer: metadata and tensors re-encoded.
  const std::string copy = rewritten("qwen2-tiny-Q4_K_M.gguf", [](GgufWriter&) {});
  const Model a = load(copy), b = load(gguf_path("qwen2-tiny-Q4_K_M.gguf"));
  const std::vector<int32_t> ids = {5, 99, 1000, 7};
  State sa = a.new_state(), sb = b.new_state();
  EXPECT_EQ(forward(a, sa, ids), forward(b, sb, ids));
}

TEST(GgufModelFile, ErrorsNameTheFileAndTheProblem) {
  const std::string src = "rwkv6qwen2-tiny-Q4_K_M.gguf";
  expect_error(
      [&] {
        load(rewritten(src, [](GgufWriter& w) { w.set_string("general.architecture", "mamba"); }));
      },
      {".gguf", "architecture 'mamba' is not supported"});
  expect_error(
      [&] { load(rewritten(src, [](GgufWriter& w) { w.remove("rwkv6qwen2.wkv.head_size"); })); },
      {".gguf", "missing metadata key 'rwkv6qwen2.wkv.head_size'"});
  expect_error(
      [&] {
        load(rewritten(src, [](GgufWriter& w) { w.set_string("rwkv6qwen2.block_count", "2"); }));
      },
      {"'rwkv6qwen2.block_count' is string, expected an integer"});
  expect_error(
      [&] {
        load(rewritten(
            src, [](GgufWriter&) {},
            [](TensorEdit& t) { return t.name != "blk.1.ffn_up.weight"; }));
      },
      {".gguf", "missing tensor 'blk.1.ffn_up.weight'", "model.layers.1.mlp.up_proj.weight"});
  expect_error(
      [&] {
        load(rewritten(
            src, [](GgufWriter&) {},
            [](TensorEdit& t) {
              if (t.name == "blk.0.time_mix_w1.weight") t.ne = {256, 16 * 4};
              return true;
            }));
      },
      {"blk.0.time_mix_w1.weight", "has shape [64, 256], expected [80, 256]"});
  // A type ggml has but qrwkv does not compute (IQ4_XS: 136 bytes per 256, fewer than the
  // Q4_0 bytes it relabels).
  expect_error(
      [&] {
        load(rewritten(
            "rwkv6qwen2-tiny-Q4_0.gguf", [](GgufWriter&) {},
            [](TensorEdit& t) {
              if (t.name == "blk.0.ffn_up.weight") t.type = GgmlType::IQ4_XS;
              return true;
            }));
      },
      {"blk.0.ffn_up.weight", "type IQ4_XS", "does not compute"});
  std::vector<float> first(256, 1.0f);
  expect_error(
      [&] {
        load(rewritten(
            src, [](GgufWriter&) {},
            [&](TensorEdit& t) {
              if (t.name == "blk.0.time_mix_decay.weight") {
                // Not a real time_mix_first: only its presence matters.
                t.name = "blk.0.time_mix_first.weight";
              }
              return true;
            }));
      },
      {"time_mix_first", "not QRWKV6"});
}

TEST(GgufModelFile, TokenizerErrors) {
  const std::string src = "qrwkv6-demo-F16.gguf";
  expect_error(
      [&] {
        Tokenizer::from_dir(
            rewritten(src, [](GgufWriter& w) { w.set_string("tokenizer.ggml.pre", "tekken"); }));
      },
      {".gguf", "tokenizer.ggml.pre 'tekken' is not supported"});
  expect_error(
      [&] {
        Tokenizer::from_dir(
            rewritten(src, [](GgufWriter& w) { w.set_string("tokenizer.ggml.model", "llama"); }));
      },
      {".gguf", "tokenizer.ggml.model 'llama' is not supported"});
  expect_error(
      [&] {
        Tokenizer::from_dir(
            rewritten(src, [](GgufWriter& w) { w.set_strings("tokenizer.ggml.merges", {"abc"}); }));
      },
      {".gguf", "'abc', not two tokens"});
}

TEST(GgufCli, EveryCommandTakesAGgufFile) {
  const std::string gguf = gguf_path("qrwkv6-demo-F16.gguf");
  const std::string dir = test::data_path("../../models/qrwkv6-demo");
  const auto info = test::run_cli({"info", "-m", gguf});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_THAT(info.out, HasSubstr("architecture:     rwkv6qwen2"));
  EXPECT_THAT(info.out, HasSubstr("gguf types:       F16: 49×F32, 34×F16"));
  // Greedy continuations of the bf16 directory and its float16 GGUF conversion agree.
  const auto a =
      test::run_cli({"generate-ids", "-m", gguf, "--tokens", "785 3166 566 429", "-n", "24"});
  const auto b =
      test::run_cli({"generate-ids", "-m", dir, "--tokens", "785 3166 566 429", "-n", "24"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  const auto r =
      test::run_cli({"run", "-m", gguf, "-p", "The jury said that", "-n", "8", "-s", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(r.out.empty());
  const auto t = test::run_cli({"tokenize", "-m", gguf, "--text", "The jury said"});
  const auto u = test::run_cli({"tokenize", "-m", dir, "--text", "The jury said"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_EQ(t.out, u.out);
  const auto bench = test::run_cli({"bench", "-m", gguf, "-p", "16", "-n", "4", "-r", "1"});
  ASSERT_EQ(bench.exit_code, 0) << bench.err;
  EXPECT_THAT(bench.out, HasSubstr("qrwkv6-demo-F16.gguf"));
  const auto bad = test::run_cli({"info", "-m", test::data_path("gguf/DEQ/DEQ-Q4_K.gguf")});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr("DEQ-Q4_K.gguf"));
}

}  // namespace
}  // namespace qrwkv
