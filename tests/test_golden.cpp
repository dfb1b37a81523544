// Logits and greedy tokens of every golden model against outputs of independent
// implementations (Hugging Face transformers, a float64 QRWKV6 implementation); see
// tests/data/README.md. Tolerance: max |Δlogit| ≤ 1e-3 · max |logit| per position.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "io/safetensors.h"
#include "model/model.h"
#include "tests/cli.h"

namespace qrwkv {
namespace {

struct Expected {
  explicit Expected(const std::string& path) : file(path) {}
  SafetensorsFile file;

  bool has(const std::string& name) const { return file.find(name) != nullptr; }
  std::vector<int64_t> shape(const std::string& name) const { return file.find(name)->shape; }
  template <typename T>
  std::vector<T> get(const std::string& name) const {
    const TensorInfo* t = file.find(name);
    EXPECT_NE(t, nullptr) << name;
    std::vector<T> out(static_cast<size_t>(t->numel()));
    EXPECT_EQ(dtype_size(t->dtype), sizeof(T)) << name;
    std::memcpy(out.data(), file.data(*t), out.size() * sizeof(T));
    return out;
  }
};

// Largest |Δ| / max|expected| over the positions of a [T, V] block.
double max_rel_error(const float* got, const float* want, int64_t T, int64_t V) {
  double worst = 0;
  for (int64_t t = 0; t < T; ++t) {
    double max_abs = 0, max_diff = 0;
    for (int64_t v = 0; v < V; ++v) {
      max_abs = std::max(max_abs, std::fabs(static_cast<double>(want[t * V + v])));
      max_diff =
          std::max(max_diff, std::fabs(static_cast<double>(got[t * V + v]) - want[t * V + v]));
    }
    worst = std::max(worst, max_diff / max_abs);
  }
  return worst;
}

class Golden : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    model_ = std::make_unique<Model>(Model::load(test::data_path("models/" + GetParam())));
    expected_ = std::make_unique<Expected>(
        test::data_path("models/" + GetParam() + ".expected.safetensors"));
  }
  std::unique_ptr<Model> model_;
  std::unique_ptr<Expected> expected_;
};

// The golden checks run on both execution paths: the float32 reference kernels and the
// optimized multithreaded ones.
std::vector<std::pair<const char*, Exec>> exec_modes() {
  return {{"reference", Exec::make_reference()}, {"fast", Exec::make_fast(2)}};
}

TEST_P(Golden, LogitsOfBothSequences) {
  for (auto& [mode, exec] : exec_modes()) {
    model_->exec = exec;
    const auto ids = expected_->get<int32_t>("input_ids");
    const auto want = expected_->get<float>("logits");
    const auto shape = expected_->shape("logits");
    ASSERT_EQ(shape.size(), 3u);
    const int64_t B = shape[0], T = shape[1], V = shape[2];
    ASSERT_EQ(V, model_->config.vocab_size);
    double worst = 0;
    for (int64_t b = 0; b < B; ++b) {
      State st = model_->new_state();
      const auto got = forward(*model_, st, std::span<const int32_t>(&ids[b * T], T));
      const double err = max_rel_error(got.data(), &want[b * T * V], T, V);
      EXPECT_LE(err, 1e-3) << "sequence " << b;
      worst = std::max(worst, err);
    }
    RecordProperty("max_rel_error", std::to_string(worst));
    // Note: qwen2_tiny_bf16's reference applied RoPE with inverse frequencies rounded to bf16 (the
    // reference framework casts that buffer with the weights); qrwkv keeps them exact in float32,
    // which puts that model at about 5e-4 instead of 1e-6, still inside the tolerance.
    std::printf("[golden] %s (%s): max relative logit error %.3g\n", GetParam().c_str(), mode,
                worst);
  }
}

// The transformers' bf16 variants carry only input_ids and logits: the tests below run on the
// models whose references include the long sequence and the greedy case.
class GoldenFull : public Golden {};

TEST_P(GoldenFull, LongSequenceLastEightPositions) {
  for (auto& [mode, exec] : exec_modes()) {
    model_->exec = exec;
    ASSERT_TRUE(expected_->has("long_input_ids"));
    const auto ids = expected_->get<int32_t>("long_input_ids");
    const auto want = expected_->get<float>("long_logits_last8");
    const int64_t T = static_cast<int64_t>(ids.size()), V = model_->config.vocab_size;
    State st = model_->new_state();
    // Everything but the last 8 tokens without logits, then the last 8 with them.
    forward(*model_, st, std::span<const int32_t>(ids.data(), T - 8), false);
    const auto got = forward(*model_, st, std::span<const int32_t>(&ids[T - 8], 8));
    const double err = max_rel_error(got.data(), want.data(), 8, V);
    EXPECT_LE(err, 1e-3);
    std::printf("[golden] %s (%s): long sequence (%lld tokens) max relative logit error %.3g\n",
                GetParam().c_str(), mode, static_cast<long long>(T), err);
  }
}

TEST_P(GoldenFull, GreedyTokens) {
  for (auto& [mode, exec] : exec_modes()) {
    SCOPED_TRACE(mode);
    model_->exec = exec;
    const auto prompt = expected_->get<int32_t>("greedy_prompt");
    const auto want = expected_->get<int32_t>("greedy_output");
    State st = model_->new_state();
    const auto got =
        generate_greedy(*model_, st, prompt, static_cast<int64_t>(want.size() - prompt.size()));
    const std::vector<int32_t> want_new(want.begin() + static_cast<long>(prompt.size()),
                                        want.end());
    EXPECT_EQ(got, want_new);
  }
}

// The command line gives the same greedy tokens as the library (and as the reference).
TEST_P(GoldenFull, GenerateIdsCommand) {
  const auto prompt = expected_->get<int32_t>("greedy_prompt");
  const auto want = expected_->get<int32_t>("greedy_output");
  std::string p, w;
  for (int32_t t : prompt) p += std::to_string(t) + " ";
  for (size_t i = prompt.size(); i < want.size(); ++i)
    w += (i > prompt.size() ? " " : "") + std::to_string(want[i]);
  const auto r = test::run_cli({"generate-ids", "-m", test::data_path("models/" + GetParam()),
                                "--tokens", p, "-n", std::to_string(want.size() - prompt.size())});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, w + "\n");
}

INSTANTIATE_TEST_SUITE_P(Models, Golden,
                         ::testing::Values("qrwkv6_tiny", "qrwkv6_tiny_bf16", "qwen2_tiny",
                                           "qwen2_tiny_bf16", "llama_tiny"));
INSTANTIATE_TEST_SUITE_P(Models, GoldenFull,
                         ::testing::Values("qrwkv6_tiny", "qrwkv6_tiny_bf16", "qwen2_tiny",
                                           "llama_tiny"));

}  // namespace
}  // namespace qrwkv
