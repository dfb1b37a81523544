// Weight formats chosen with --dtype: every format runs the golden models through the fast
// kernels in agreement with the reference kernels on the same converted weights, prefill agrees
// with token-by-token decoding, and the 4-bit format's mix of Q4_0 and Q8_0 earns its place.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kernels.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "tests/cli.h"

namespace qrwkv {
namespace {

std::vector<int32_t> golden_long_ids(size_t n) {
  SafetensorsFile e(test::data_path("models/qrwkv6_tiny.expected.safetensors"));
  const TensorInfo* t = e.find("long_input_ids");
  std::vector<int32_t> ids(n);
  std::memcpy(ids.data(), e.data(*t), n * 4);
  return ids;
}

double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0, d = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    m = std::max(m, std::fabs(double{b[i]}));
    d = std::max(d, std::fabs(double{a[i]} - b[i]));
  }
  return d / m;
}

struct FormatCase {
  WeightFormat format;
  cpu::Isa isa;
};

std::string case_name(const ::testing::TestParamInfo<FormatCase>& p) {
  return std::string(weight_format_name(p.param.format)) + "_" + cpu::isa_name(p.param.isa);
}

class FormatsBase : public ::testing::TestWithParam<FormatCase> {
 protected:
  void SetUp() override {
    if (GetParam().isa > cpu::max_isa()) GTEST_SKIP() << "level not supported here";
  }
  // The model in this case's format on a CPU backend at this case's level, or (reference) on
  // the reference backend.
  Model load(const std::string& name, int threads = 2, bool reference = false) {
    LoadOptions o;
    o.format = GetParam().format;
    o.backend = reference ? make_reference_backend()
                          : std::make_shared<CpuBackend>(CpuOptions{threads, GetParam().isa});
    return Model::load(test::data_path("models/" + name), o);
  }
  // A 512-token prefill against token-by-token decoding, last logits and every layer's state.
  // The float32 levels agree to rounding (1e-5). The rounded levels (bf16 or int8 activations)
  // may round a few activations differently in the two evaluations (float32 sums in another
  // order), and such a flip grows through the layers and the recurrence like the rounding
  // itself: there the bound is half of what the rounding moves the same quantity (the
  // reference with the same rounding against the exact reference), and never below 1e-4.
  void prefill_equals_token_by_token() {
    // One thread: 512 single-token steps are mostly synchronization on a busy machine.
    Model m = load("qrwkv6_tiny", 1);
    const auto ids = golden_long_ids(512);
    State whole = m.new_state(), steps = m.new_state();
    const auto lw = forward(m, whole, ids, false);
    std::vector<float> ls;
    for (int32_t id : ids) ls = forward(m, steps, std::span<const int32_t>(&id, 1), false);
    const ActivationRounding rounding = cpu::activation_rounding(GetParam().isa);
    std::vector<double> bounds(whole.layers.size() + 1, 1e-5);  // logits, then each layer
    if (rounding != ActivationRounding::Exact) {
      auto run = [&](ActivationRounding r, State& st) {
        LoadOptions o;
        o.format = GetParam().format;
        o.backend = make_reference_backend(r);
        Model ref = Model::load(test::data_path("models/qrwkv6_tiny"), o);
        st = ref.new_state();
        return forward(ref, st, ids, false);
      };
      State sr, se;
      const auto lr = run(rounding, sr), le = run(ActivationRounding::Exact, se);
      bounds[0] = std::max(1e-4, 0.5 * max_rel(lr, le));
      for (size_t l = 0; l < whole.layers.size(); ++l)
        bounds[l + 1] = std::max(1e-4, 0.5 * max_rel(sr.layers[l].wkv, se.layers[l].wkv));
    }
    EXPECT_LT(max_rel(ls, lw), bounds[0]);
    for (size_t l = 0; l < whole.layers.size(); ++l)
      EXPECT_LT(max_rel(steps.layers[l].wkv, whole.layers[l].wkv), bounds[l + 1]) << "layer " << l;
  }
};

// Float32 levels: the fast kernels compute the reference function on the converted weights.
class Formats : public FormatsBase {};
// The bf16 and int8 dot-product levels round activations (backend.h, ActivationRounding); their
// kernels are checked against a reference with the same rounding in test_backend.cpp, and here
// for self-consistency and, through whole models, against that reference.
class FormatsRounded : public FormatsBase {};

// The same converted weights through the reference kernels and the fast ones.
TEST_P(Formats, FastPathMatchesReferenceOnConvertedWeights) {
  for (const char* name : {"qrwkv6_tiny", "qwen2_tiny"}) {
    Model fast_m = load(name);
    Model ref_m = load(name, 1, true);
    const auto ids = golden_long_ids(40);
    State a = fast_m.new_state(), b = ref_m.new_state();
    const auto lf = forward(fast_m, a, ids, true);
    const auto lr = forward(ref_m, b, ids, true);
    EXPECT_LT(max_rel(lf, lr), 1e-4) << name;
  }
}

// A 512-token prefill (packed GEMM) against token-by-token decoding (row-dot kernels).
TEST_P(Formats, PrefillEqualsTokenByToken) { prefill_equals_token_by_token(); }
TEST_P(FormatsRounded, PrefillEqualsTokenByToken) { prefill_equals_token_by_token(); }

// The converted golden models through the level, through the reference computing the same
// rounded function (RefBackend(activation_rounding(level))) and through the exact reference.
// Two evaluations of a rounded function may round a few activations to neighbouring values
// (float32 sums in another order) and such a flip grows through the layers like the rounding
// itself, so the level must be closer to the rounded reference than the rounding moves the
// logits away from the exact ones (a level that skipped the rounding would be as far), and never
// needs to be closer than 1e-4.
TEST_P(FormatsRounded, MatchesTheReferenceWithTheSameRounding) {
  for (const char* name : {"qrwkv6_tiny", "qwen2_tiny"}) {
    auto logits = [&](std::shared_ptr<Backend> be) {
      LoadOptions o;
      o.format = GetParam().format;
      o.backend = std::move(be);
      Model m = Model::load(test::data_path("models/") + name, o);
      State st = m.new_state();
      return forward(m, st, golden_long_ids(40), true);
    };
    const auto fast = logits(std::make_shared<CpuBackend>(CpuOptions{2, GetParam().isa}));
    const auto rounded = logits(make_reference_backend(cpu::activation_rounding(GetParam().isa)));
    const auto exact = logits(make_reference_backend());
    const double rounding = max_rel(rounded, exact);
    EXPECT_GT(rounding, 0.0) << name;
    EXPECT_LT(max_rel(fast, rounded), std::max(1e-4, rounding)) << name;
    RecordProperty(
        name, std::to_string(max_rel(fast, rounded)) + " of rounding " + std::to_string(rounding));
  }
}

INSTANTIATE_TEST_SUITE_P(AllFormats, Formats,
                         ::testing::Values(FormatCase{WeightFormat::BF16, cpu::Isa::AVX512},
                                           FormatCase{WeightFormat::F16, cpu::Isa::AVX512},
                                           FormatCase{WeightFormat::Q8_0, cpu::Isa::AVX512},
                                           FormatCase{WeightFormat::Q4_0, cpu::Isa::AVX512},
                                           FormatCase{WeightFormat::Q4_0_PURE, cpu::Isa::AVX512},
                                           FormatCase{WeightFormat::Q8_0, cpu::Isa::AVX2},
                                           FormatCase{WeightFormat::Q4_0, cpu::Isa::Portable}),
                         case_name);
INSTANTIATE_TEST_SUITE_P(AllFormats, FormatsRounded,
                         ::testing::Values(FormatCase{WeightFormat::BF16, cpu::Isa::AVX512BF16},
                                           FormatCase{WeightFormat::Q8_0, cpu::Isa::AVX512BF16},
                                           FormatCase{WeightFormat::Q4_0, cpu::Isa::AVX512BF16},
                                           FormatCase{WeightFormat::Q8_0, cpu::Isa::AVX512VNNI},
                                           FormatCase{WeightFormat::Q4_0, cpu::Isa::AVX512VNNI},
                                           FormatCase{WeightFormat::BF16, cpu::Isa::AMX},
                                           FormatCase{WeightFormat::Q8_0, cpu::Isa::AMX},
                                           FormatCase{WeightFormat::Q4_0, cpu::Isa::AMX}),
                         case_name);

// Mean KL(P_stored ‖ P_format) of the next-token distributions over a golden sequence.
double mean_kl(const std::string& name, WeightFormat f) {
  const Model base = Model::load(test::data_path("models/" + name));
  const Model q = Model::load(test::data_path("models/" + name), {f});
  const auto ids = golden_long_ids(256);
  State a = base.new_state(), b = q.new_state();
  const auto lp = forward(base, a, ids, true), lq = forward(q, b, ids, true);
  const int64_t V = base.config.vocab_size;
  double total = 0;
  for (size_t t = 0; t < ids.size(); ++t) {
    const float* p = lp.data() + t * V;
    const float* r = lq.data() + t * V;
    double mp = p[0], mq = r[0];
    for (int64_t v = 0; v < V; ++v)
      mp = std::max(mp, double{p[v]}), mq = std::max(mq, double{r[v]});
    double sp = 0, sq = 0;
    for (int64_t v = 0; v < V; ++v) sp += std::exp(p[v] - mp), sq += std::exp(r[v] - mq);
    for (int64_t v = 0; v < V; ++v) {
      const double lpv = p[v] - mp - std::log(sp), lqv = r[v] - mq - std::log(sq);
      total += std::exp(lpv) * (lpv - lqv);
    }
  }
  return total / static_cast<double>(ids.size());
}

// On QRWKV6, 4-bit time-mix projections compound through the state: q4_0 (MLP only in 4 bits)
// stays close to q8_0, while q4_0_pure drifts far away. The transformer tolerates both.
TEST(FormatQuality, FourBitTimeMixIsWhatHurtsQrwkv6) {
  const double q8 = mean_kl("qrwkv6_tiny", WeightFormat::Q8_0);
  const double q4 = mean_kl("qrwkv6_tiny", WeightFormat::Q4_0);
  const double pure = mean_kl("qrwkv6_tiny", WeightFormat::Q4_0_PURE);
  EXPECT_LT(q8, 0.02);
  EXPECT_LT(q4, 3 * q8);
  EXPECT_GT(pure, 10 * q4);
  EXPECT_LT(mean_kl("qwen2_tiny", WeightFormat::Q4_0_PURE), 0.05);
  EXPECT_LT(mean_kl("qwen2_tiny", WeightFormat::BF16), 1e-4);
}

// Projections whose rows are whole 32-element blocks take the block format's size; the MLP's
// down_proj of the test model (rows of 176) stays in float32.
TEST(FormatQuality, ConvertedSizesFollowTheFormat) {
  const Model f32 = Model::load(test::data_path("models/qrwkv6_tiny"));
  const Model q8 = Model::load(test::data_path("models/qrwkv6_tiny"), {WeightFormat::Q8_0});
  const Model q4 = Model::load(test::data_path("models/qrwkv6_tiny"), {WeightFormat::Q4_0_PURE});
  int64_t f32_bytes = 0, q8_bytes = 0, q4_bytes = 0, kept = 0;
  for (const Tensor* t : f32.weights.projections()) {
    f32_bytes += t->numel() * 4;
    const bool whole_blocks = t->cols() % 32 == 0;
    kept += !whole_blocks;
    q8_bytes += whole_blocks ? t->numel() / 32 * 34 : t->numel() * 4;
    q4_bytes += whole_blocks ? t->numel() / 32 * 18 : t->numel() * 4;
  }
  EXPECT_EQ(kept, f32.config.num_layers);  // one down_proj per layer
  const int64_t others = f32.weights.bytes_per_token() - f32_bytes;
  EXPECT_EQ(q8.weights.bytes_per_token() - others, q8_bytes);
  EXPECT_EQ(q4.weights.bytes_per_token() - others, q4_bytes);
  EXPECT_EQ(q8.storage_dtype(), "F32+Q8_0");
}

TEST(FormatCli, DtypeFlagConvertsAndBadNamesPrintUsage) {
  const auto ok =
      test::run_cli({"info", "-m", test::data_path("models/qrwkv6_tiny"), "--dtype", "q4_0"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("Q4_0+Q8_0"), std::string::npos) << ok.out;
  const auto bad = test::run_cli({"generate-ids", "-m", test::data_path("models/qrwkv6_tiny"),
                                  "--tokens", "1 2", "--dtype", "q3_k"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("unknown weight format 'q3_k'"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("--dtype"), std::string::npos) << bad.err;
  const auto kl = test::run_cli({"kl", "-m", test::data_path("models/qwen2_tiny"), "--dtype",
                                 "q8_0", "-n", "64", "-o", "json"});
  ASSERT_EQ(kl.exit_code, 0) << kl.err;
  const auto j = json::parse(kl.out);
  EXPECT_EQ(j["positions"], 64);
  EXPECT_GT(j["kl_mean"].get<double>(), 0.0);
  EXPECT_LT(j["kl_mean"].get<double>(), 1e-3);
}

// --base-model compares two checkpoints, as between a teacher and its converted student: a
// model against itself gives exactly zero, against its bf16 copy a small positive KL.
TEST(FormatCli, KlAgainstAnotherModel) {
  const std::string f32 = test::data_path("models/qwen2_tiny");
  const std::string bf16 = test::data_path("models/qwen2_tiny_bf16");
  const auto same = test::run_cli({"kl", "-m", f32, "--base-model", f32, "-n", "64", "-o", "json"});
  ASSERT_EQ(same.exit_code, 0) << same.err;
  EXPECT_EQ(json::parse(same.out)["kl_mean"].get<double>(), 0.0);
  const auto other =
      test::run_cli({"kl", "-m", bf16, "--base-model", f32, "-n", "64", "-o", "json"});
  ASSERT_EQ(other.exit_code, 0) << other.err;
  const auto j = json::parse(other.out);
  EXPECT_GT(j["kl_mean"].get<double>(), 0.0);
  EXPECT_LT(j["kl_mean"].get<double>(), 1e-2);
  EXPECT_NE(j["base"].get<std::string>().find("qwen2_tiny"), std::string::npos) << other.out;
  const auto neither = test::run_cli({"kl", "-m", f32, "-n", "8"});
  EXPECT_EQ(neither.exit_code, 2);
}

// --kernels and --base-kernels compare the same weights through two kernel levels: two float32
// levels agree to rounding, an unknown level prints usage.
TEST(FormatCli, KlBetweenKernelLevels) {
  const std::string m = test::data_path("models/qwen2_tiny");
  const auto f32 =
      test::run_cli({"kl", "-m", m, "--dtype", "q8_0", "--base-dtype", "q8_0", "--kernels", "avx2",
                     "--base-kernels", "portable", "-n", "64", "-o", "json"});
  ASSERT_EQ(f32.exit_code, 0) << f32.err;
  const auto j = json::parse(f32.out);
  EXPECT_EQ(j["kernels"], "avx2");
  EXPECT_EQ(j["base_kernels"], "portable");
  EXPECT_LT(j["kl_mean"].get<double>(), 1e-8);
  EXPECT_EQ(j["top1_agreement_pct"].get<double>(), 100.0);
  const auto bad = test::run_cli({"kl", "-m", m, "--kernels", "sse9", "-n", "8"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--kernels must be one of portable"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace qrwkv
