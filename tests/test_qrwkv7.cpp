// QRWKV7 beyond the golden logits (test_golden.cpp): the variant switches checked against the
// tensors, a state that continues across calls (RoPE positions from its token count), forks,
// batches whose sequences share the layer-to-layer v_first buffer, and what is refused.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "io/json.h"
#include "model/model.h"
#include "tests/cli.h"
#include "tests/expect.h"

namespace qrwkv {
namespace {

namespace fs = std::filesystem;

const std::string kClassic = test::data_path("models/qrwkv7_tiny");
const std::string kBalance = test::data_path("models/qrwkv7_tiny_balance");

// A copy of a model directory with config.json keys replaced.
std::string with_config(const std::string& src, const json& changes) {
  const std::string dir = test::temp_dir();
  for (const auto& e : fs::directory_iterator(src))
    fs::copy_file(e.path(), dir + "/" + e.path().filename().string());
  std::ifstream in(dir + "/config.json");
  json j = json::parse(in);
  j.update(changes);
  std::ofstream(dir + "/config.json") << j.dump(2);
  return dir;
}

std::vector<int32_t> ids(int n, int salt) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back((i * 37 + salt * 11 + 5) % 512);
  return out;
}

TEST(Qrwkv7, ConfigSwitchesMustMatchTheTensors) {
  const Model m = Model::load(kClassic);
  EXPECT_EQ(m.config.arch, Arch::QRWKV7);
  EXPECT_FALSE(m.config.balance_state);
  EXPECT_TRUE(m.config.groupnorm_att);
  EXPECT_TRUE(m.config.use_rope);
  EXPECT_EQ(m.config.lora_rank_decay, 16);
  EXPECT_EQ(m.config.lora_rank_iclr, 16);
  EXPECT_EQ(m.config.lora_rank_value_residual_mix, 8);
  EXPECT_EQ(m.config.lora_rank_gate, 32);
  EXPECT_EQ(m.state_bytes(), 3u * 4 * 16 * 16 * sizeof(float));
  test::expect_error(
      [] {
        Model::load(with_config(kClassic, {{"groupnorm_att", false}}));
      },
      {"groupnorm_att", "ln_x"});
  test::expect_error(
      [] {
        Model::load(with_config(kBalance, {{"groupnorm_att", 1}}));
      },
      {"groupnorm_att", "ln_x"});
  test::expect_error(
      [] {
        Model::load(with_config(kClassic, {{"num_attention_layers", 2}}));
      },
      {"num_attention_layers"});
  test::expect_error(
      [] {
        Model::load(with_config(kClassic, {{"balance_state", "no"}}));
      },
      {"balance_state"});
  // The configuration file's defaults (balance state, no GroupNorm, no RoPE) for a config that
  // names none: the balance checkpoint without its switches loads, and computes without RoPE.
  const Model plain =
      Model::load(with_config(kBalance, {{"balance_state", nullptr}, {"use_rope", nullptr}}));
  EXPECT_TRUE(plain.config.balance_state);
  EXPECT_FALSE(plain.config.use_rope);
  const Model roped = Model::load(kBalance);
  State a = plain.new_state(), b = roped.new_state();
  EXPECT_NE(forward(plain, a, ids(6, 1)), forward(roped, b, ids(6, 1)));
}

TEST(Qrwkv7, StateContinuesForksAndBatches) {
  for (const std::string& dir : {kClassic, kBalance}) {
    const Model m = Model::load(dir, test::float32_load(2));
    const std::vector<int32_t> all = ids(30, 2);
    State whole = m.new_state();
    const std::vector<float> want = forward(m, whole, all);
    const auto V = static_cast<size_t>(m.config.vocab_size);
    // 12 tokens, then the other 18 from the saved and restored state (RoPE at 12..29).
    State s = m.new_state();
    forward(m, s, std::span<const int32_t>(all.data(), 12), false);
    State restored = deserialize_state(serialize_state(s), "state");
    State fork = restored;
    const std::vector<float> rest =
        forward(m, restored, std::span<const int32_t>(all.data() + 12, 18));
    const double err =
        test::max_rel_error(rest.data(), want.data() + 12 * V, 18, static_cast<int64_t>(V));
    EXPECT_LT(err, 1e-5) << dir;
    EXPECT_EQ(forward(m, fork, std::span<const int32_t>(all.data() + 12, 18)), rest);
    // Two sequences of different lengths in one batch: each as alone.
    const std::vector<int32_t> other = ids(7, 3);
    State s1 = m.new_state(), s2 = m.new_state(), alone = m.new_state();
    std::vector<float> l1(all.size() * V), l2(other.size() * V);
    SequenceInput batch[] = {{&s1, all, l1.data(), true}, {&s2, other, l2.data(), true}};
    forward_batch(m, batch);
    EXPECT_LT(test::max_rel_error(l1.data(), want.data(), 30, static_cast<int64_t>(V)), 1e-5);
    const std::vector<float> o = forward(m, alone, other);
    EXPECT_LT(test::max_rel_error(l2.data(), o.data(), 7, static_cast<int64_t>(V)), 1e-5);
  }
}

TEST(Qrwkv7, CommandsRunItAndExportRefusesIt) {
  auto r = test::run_cli({"info", "-m", kClassic});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::HasSubstr("architecture:     rwkv7qwen2"));
  EXPECT_THAT(r.out, ::testing::HasSubstr("variant:          classic (GroupNorm output), RoPE"));
  EXPECT_THAT(r.out, ::testing::HasSubstr("state per seq:    12288 bytes"));
  r = test::run_cli({"export-gguf", "-m", kClassic, "-o", test::temp_dir() + "/x.gguf"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, ::testing::HasSubstr("rwkv7qwen2"));
}

}  // namespace
}  // namespace qrwkv
