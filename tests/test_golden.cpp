// Logits and greedy tokens of every golden model against outputs of independent
// implementations (Hugging Face transformers, float64 QRWKV6 and QRWKV7 implementations); see
// tests/data/README.md. Tolerance: max |Δlogit| ≤ 1e-3 · max |logit| per position.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/kernels.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "tests/cli.h"
#include "tests/expect.h"

namespace qrwkv {
namespace {

using test::Expected;
using test::max_rel_error;

// The golden checks run on every backend: the reference, and the CPU backend at every
// instruction-set level this machine runs.
//
// Three levels compute another function than the references: at AVX512BF16 and AMX, BF16
// projections round their activations to bfloat16 and quantized projections quantize them to
// int16 per block, and at AVX512VNNI quantized projections quantize them to int8 per block
// (backend.h, ActivationRounding). How far that rounding alone
// moves the logits is measured by the reference backend computing the same rounded function; at
// such a level a model with such weights must stay within 1.25 times that distance of the
// golden logits (and at least within the usual 1e-3), and differ from the rounded reference by
// at most half of it: two evaluations of the rounded function may round a few activations
// to neighbouring values (float32 sums in another order, exp and tanh a few ulp apart), and on
// these small random models such a flip grows through the layers and the recurrence.
struct Level {
  std::string name;
  std::shared_ptr<Backend> backend;
  std::shared_ptr<Backend> rounded_reference;  // null: the level computes in float32
};

std::vector<Level> levels() {
  std::vector<Level> out;
  for (auto& b : test::every_backend())
    out.push_back({b.name, b.backend,
                   b.level && cpu::activation_rounding(*b.level) != ActivationRounding::Exact
                       ? make_reference_backend(cpu::activation_rounding(*b.level))
                       : nullptr});
  return out;
}

constexpr double kTolerance = 1e-3;

class Golden : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    expected_ = std::make_unique<Expected>(
        test::data_path("models/" + GetParam() + ".expected.safetensors"));
  }
  Model load(const std::shared_ptr<Backend>& b) const {
    return Model::load(test::data_path("models/" + GetParam()), {WeightFormat::Stored, b});
  }
  // Whether some projection of the model is held in a dtype that the bf16 level rounds for.
  static bool rounds(const Model& m) {
    for (const Tensor* t : m.weights.projections())
      if (t->dtype != DType::F32 && t->dtype != DType::F16) return true;
    return false;
  }
  // Runs `logits_of` (model → logits) on the level and checks them against `want` with
  // max_rel_error over T positions of V; returns the error.
  template <typename F>
  double check_level(const Level& lv, const float* want, int64_t T, int64_t V, F logits_of,
                     const std::string& what) const {
    const Model m = load(lv.backend);
    const std::vector<float> got = logits_of(m);
    const double err = max_rel_error(got.data(), want, T, V);
    double bound = kTolerance;
    if (lv.rounded_reference && rounds(m)) {
      const std::vector<float> same = logits_of(load(lv.rounded_reference));
      const double rounding = max_rel_error(same.data(), want, T, V);
      bound = std::max(kTolerance, 1.25 * rounding);
      EXPECT_LE(max_rel_error(got.data(), same.data(), T, V), std::max(kTolerance, 0.5 * rounding))
          << lv.name << " against the rounded reference, " << what;
    }
    EXPECT_LE(err, bound) << lv.name << ", " << what;
    return err;
  }
  std::unique_ptr<Expected> expected_;
};

TEST_P(Golden, LogitsOfBothSequences) {
  const auto ids = expected_->get<int32_t>("input_ids");
  const auto want = expected_->get<float>("logits");
  const auto shape = expected_->shape("logits");
  ASSERT_EQ(shape.size(), 3u);
  const int64_t B = shape[0], T = shape[1], V = shape[2];
  for (const Level& lv : levels()) {
    double worst = 0;
    for (int64_t b = 0; b < B; ++b) {
      auto logits_of = [&](const Model& m) {
        EXPECT_EQ(V, m.config.vocab_size);
        State st = m.new_state();
        return forward(m, st, std::span<const int32_t>(&ids[b * T], T));
      };
      worst = std::max(worst, check_level(lv, &want[b * T * V], T, V, logits_of,
                                          "sequence " + std::to_string(b)));
    }
    RecordProperty("max_rel_error", std::to_string(worst));
    // Note: qwen2_tiny_bf16's reference applied RoPE with inverse frequencies rounded to bf16 (the
    // reference framework casts that buffer with the weights); qrwkv keeps them exact in float32,
    // which puts that model at about 5e-4 instead of 1e-6, still inside the tolerance.
    std::printf("[golden] %s (%s): max relative logit error %.3g\n", GetParam().c_str(),
                lv.name.c_str(), worst);
  }
}

// The transformers' bf16 variants carry only input_ids and logits: the tests below run on the
// models whose references include the long sequence and the greedy case.
class GoldenFull : public Golden {};

TEST_P(GoldenFull, LongSequenceLastEightPositions) {
  ASSERT_TRUE(expected_->has("long_input_ids"));
  const auto ids = expected_->get<int32_t>("long_input_ids");
  const auto want = expected_->get<float>("long_logits_last8");
  const int64_t T = static_cast<int64_t>(ids.size());
  for (const Level& lv : levels()) {
    auto logits_of = [&](const Model& m) {
      State st = m.new_state();
      // Everything but the last 8 tokens without logits, then the last 8 with them.
      forward(m, st, std::span<const int32_t>(ids.data(), T - 8), false);
      return forward(m, st, std::span<const int32_t>(&ids[T - 8], 8));
    };
    const int64_t V = expected_->shape("long_logits_last8").back();
    const double err = check_level(lv, want.data(), 8, V, logits_of, "long sequence");
    std::printf("[golden] %s (%s): long sequence (%lld tokens) max relative logit error %.3g\n",
                GetParam().c_str(), lv.name.c_str(), static_cast<long long>(T), err);
  }
}

TEST_P(GoldenFull, GreedyTokens) {
  for (const Level& lv : levels()) {
    SCOPED_TRACE(lv.name);
    const Model m = load(lv.backend);
    const auto prompt = expected_->get<int32_t>("greedy_prompt");
    const auto want = expected_->get<int32_t>("greedy_output");
    State st = m.new_state();
    const auto got =
        generate_greedy(m, st, prompt, static_cast<int64_t>(want.size() - prompt.size()));
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
                                           "qwen2_tiny_bf16", "llama_tiny", "qrwkv7_tiny",
                                           "qrwkv7_tiny_balance"));
INSTANTIATE_TEST_SUITE_P(Models, GoldenFull,
                         ::testing::Values("qrwkv6_tiny", "qrwkv6_tiny_bf16", "qwen2_tiny",
                                           "llama_tiny", "qrwkv7_tiny", "qrwkv7_tiny_balance"));

}  // namespace
}  // namespace qrwkv
