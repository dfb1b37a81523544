// The conversion component: libtorch models against the engine, stage-0 initial values, losses,
// and the pretrain / convert commands end to end (loss decreasing, a conversion that beats its
// stage-0 student, resume after a kill giving the uninterrupted result).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "convert/nets.h"
#include "io/error.h"
#include "io/json.h"
#include "io/mapped_file.h"
#include "model/model.h"
#include "tests/cli.h"
#include "tests/convert/convert_util.h"
#include "tests/small_disk.h"

namespace fs = std::filesystem;
using namespace qrwkv;
using namespace qrwkv::convert;

namespace {

// Deterministic token ids [B, T] below V.
at::Tensor make_tokens(int64_t B, int64_t T, int64_t V, int64_t salt) {
  at::Tensor t = at::empty({B, T}, at::TensorOptions().dtype(at::kLong));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < T; ++i) t[b][i] = (i * 37 + b * 101 + salt * 7 + 11) % V;
  return t;
}

// Largest |Δlogit| relative to the largest |logit| of the engine, over every position of every
// sequence, comparing libtorch's logits with the engine run from an empty state per sequence.
double max_relative_error(const Model& m, const at::Tensor& tokens, const at::Tensor& logits) {
  const int64_t B = tokens.size(0), T = tokens.size(1), V = logits.size(2);
  double worst = 0;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int32_t> ids;
    for (int64_t i = 0; i < T; ++i)
      ids.push_back(static_cast<int32_t>(tokens[b][i].item<int64_t>()));
    State st = m.new_state();
    const std::vector<float> ref = forward(m, st, ids, true);
    const at::Tensor got = logits[b].contiguous();
    const float* g = got.data_ptr<float>();
    for (int64_t t = 0; t < T; ++t) {
      double diff = 0, scale = 0;
      for (int64_t v = 0; v < V; ++v) {
        diff = std::max(diff, std::abs(static_cast<double>(g[t * V + v]) - ref[t * V + v]));
        scale = std::max(scale, std::abs(static_cast<double>(ref[t * V + v])));
      }
      worst = std::max(worst, diff / scale);
    }
  }
  return worst;
}

double engine_agreement(const std::string& dir, int64_t T) {
  at::NoGradGuard no_grad;
  const Net net = load_net(dir);
  const Model m = Model::load(dir, test::float32_load());
  const at::Tensor tokens = make_tokens(2, T, m.config.vocab_size, T);
  return max_relative_error(m, tokens, forward(net, tokens));
}

using test::read_log;
using test::teacher_dir;

std::vector<double> step_losses(const std::vector<json>& log, int stage) {
  std::vector<double> out;
  for (const json& j : log)
    if (j.is_object() && j.contains("loss") && j.value("stage", -9) == stage)
      out.push_back(j["loss"].get<double>());
  return out;
}

double heldout_ppl(const std::vector<json>& log, int stage) {
  for (const json& j : log)
    if (j.is_object() && j.value("event", "") == "eval" && j.value("stage", -9) == stage)
      return j["heldout_ppl"].get<double>();
  return NAN;
}

double heldout_kl(const std::vector<json>& log, int stage) {
  for (const json& j : log)
    if (j.is_object() && j.value("event", "") == "eval" && j.value("stage", -9) == stage)
      return j["heldout_kl"].get<double>();
  return NAN;
}

double mean(const std::vector<double>& v, size_t from, size_t to) {
  double s = 0;
  for (size_t i = from; i < to; ++i) s += v[i];
  return s / static_cast<double>(to - from);
}

using test::kText;
using test::tiny_pretrain;

}  // namespace

TEST(ConvertNets, StudentMatchesEngine) {
  // 41 tokens leave a partial last chunk; 70 span several chunks of 16.
  EXPECT_LE(engine_agreement(test::data_path("models/qrwkv6_tiny"), 41), 1e-4);
  EXPECT_LE(engine_agreement(test::data_path("models/qrwkv6_tiny"), 70), 1e-4);
}

TEST(ConvertNets, Qrwkv7StudentsMatchEngine) {
  // Both trained variants (classic with GroupNorm, balance state), RoPE, GQA, tied and untied.
  for (const char* m : {"models/qrwkv7_tiny", "models/qrwkv7_tiny_balance"}) {
    EXPECT_LE(engine_agreement(test::data_path(m), 41), 1e-4) << m;
    EXPECT_LE(engine_agreement(test::data_path(m), 150), 1e-4) << m;
  }
}

TEST(ConvertNets, TeachersMatchEngine) {
  EXPECT_LE(engine_agreement(test::data_path("models/qwen2_tiny"), 41), 1e-4);
  EXPECT_LE(engine_agreement(test::data_path("models/llama_tiny"), 41), 1e-4);
}

TEST(ConvertNets, ChunkedWkvEqualsTheRecurrence) {
  // Decays from w = e^−60 (gone at once) to w ≈ 1 (kept for ever), in double precision.
  const int64_t B = 1, T = 37, H = 2, N = 4;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto rnd = [&](double lo, double hi) {
    at::Tensor x = at::empty({B, T, H, N}, at::TensorOptions().dtype(at::kDouble));
    return x.uniform_(lo, hi, gen);
  };
  const at::Tensor q = rnd(-1, 1), k = rnd(-1, 1), v = rnd(-1, 1);
  const at::Tensor log_w = -at::exp(rnd(-9, std::log(60.0)));
  const at::Tensor o = wkv_chunked(q, k, v, log_w);
  for (int64_t h = 0; h < H; ++h) {
    at::Tensor S = at::zeros({N, N}, q.options());
    for (int64_t t = 0; t < T; ++t) {
      S = log_w[0][t][h].exp().unsqueeze(1) * S + at::outer(k[0][t][h], v[0][t][h]);
      const at::Tensor ref = at::matmul(q[0][t][h].unsqueeze(0), S).squeeze(0);
      EXPECT_LE((o[0][t][h] - ref).abs().max().item<double>(), 1e-12) << "t=" << t << " h=" << h;
    }
  }
}

TEST(ConvertNets, ChunkedDeltaRuleEqualsTheRecurrence) {
  // QRWKV7's extremes: decays from the bound e^−0.607 (fast) to w ≈ 1, in-context learning rates
  // up to a ≈ 1 (the removal takes out almost all of what κ reads), normalized κ; 101 tokens
  // leave a partial last chunk. Double precision, so the comparison sees the algebra alone.
  const int64_t B = 2, T = 101, H = 3, N = 8;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  auto rnd = [&](double lo, double hi) {
    at::Tensor x = at::empty({B, T, H, N}, at::TensorOptions().dtype(at::kDouble));
    return x.uniform_(lo, hi, gen);
  };
  const at::Tensor r = rnd(-1, 1), kt = rnd(-1, 1), v = rnd(-1, 1);
  at::Tensor kap = rnd(-1, 1);
  kap = kap / kap.norm(2, -1, true);
  // Head 0: the fastest decays, head 1: the slowest, head 2: the whole range.
  at::Tensor log_w = -std::exp(-0.5) * at::sigmoid(rnd(-12, 12));
  log_w.select(2, 0).fill_(-std::exp(-0.5) * (1 - 1e-6));
  log_w.select(2, 1).mul_(1e-4);
  at::Tensor a = at::sigmoid(rnd(-4, 4));
  a.select(2, 0).fill_(1 - 1e-6);
  const at::Tensor y = wkv7_chunked(r, log_w, -kap * a, kap, kt, v);
  double worst = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      at::Tensor S = at::zeros({N, N}, r.options());
      for (int64_t t = 0; t < T; ++t) {
        const at::Tensor k_ = kap[b][t][h];
        const at::Tensor sa = at::matmul(k_.unsqueeze(0), S);  // κᵀ S before the update
        S = log_w[b][t][h].exp().unsqueeze(1) * S - at::outer(k_ * a[b][t][h], sa.squeeze(0)) +
            at::outer(kt[b][t][h], v[b][t][h]);
        const at::Tensor ref = at::matmul(S.t(), r[b][t][h]);
        worst = std::max(worst, (y[b][t][h] - ref).abs().max().item<double>() /
                                    std::max(1.0, ref.abs().max().item<double>()));
      }
    }
  EXPECT_LE(worst, 1e-11);
}

TEST(ConvertStage0, InitialValuesFollowTheRecipe) {
  const Net teacher = load_net(test::data_path("models/qwen2_tiny"));
  const Net s = make_student(teacher, 8, 16, 3);
  const int64_t C = 64, L = 3;
  EXPECT_EQ(s.config.arch, Arch::QRWKV6);
  EXPECT_FALSE(s.config.tie_word_embeddings);
  // The tied teacher's embedding becomes the student's separate lm_head.
  EXPECT_TRUE(s.p("lm_head.weight").equal(teacher.p("model.embed_tokens.weight")));
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string a = p + "self_attn.";
    for (const char* n : {"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias",
                          "v_proj.weight", "v_proj.bias", "o_proj.weight"})
      EXPECT_TRUE(s.p(a + n).equal(teacher.p(a + n))) << a + n;
    for (const char* n : {"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
                          "input_layernorm.weight", "post_attention_layernorm.weight"})
      EXPECT_TRUE(s.p(p + n).equal(teacher.p(p + n))) << p + n;
    EXPECT_TRUE(s.p(a + "time_maa_x").equal(at::ones({1, 1, C})));
    for (const char* n : {"time_maa_r", "time_maa_k", "time_maa_v", "time_maa_w", "time_maa_g"})
      EXPECT_TRUE(s.p(a + n).equal(at::zeros({1, 1, C}))) << n;
    EXPECT_TRUE(s.p(a + "time_maa_w1").equal(at::zeros({C, 5 * 8})));
    EXPECT_TRUE(s.p(a + "time_decay_w1").equal(at::zeros({C, 16})));
    EXPECT_TRUE(s.p(a + "gate.weight").equal(at::zeros({C, C})));
    for (const char* n : {"time_maa_w2", "time_decay_w2"}) {
      const at::Tensor w = s.p(a + n);
      EXPECT_LE(w.abs().max().item<double>(), 0.01) << n;
      EXPECT_GT(w.std().item<double>(), 0.004) << n;  // U(−0.01, 0.01) has std 0.0058
    }
    EXPECT_EQ(s.p(a + "time_maa_w2").sizes(), (std::vector<int64_t>{5, 8, C}));
    EXPECT_EQ(s.p(a + "time_decay_w2").sizes(), (std::vector<int64_t>{16, C}));
    const at::Tensor decay = s.p(a + "time_decay").reshape({C});
    for (int64_t n : {0, 1, 17, 40, 63}) {
      const double expect = -6.0 + 5.0 * std::pow(static_cast<double>(n) / (C - 1),
                                                  0.7 + 1.3 * static_cast<double>(l) / (L - 1));
      EXPECT_NEAR(decay[n].item<double>(), expect, 1e-5) << "layer " << l << " channel " << n;
    }
  }
  // The seed fixes the random draws.
  const Net again = make_student(teacher, 8, 16, 3), other = make_student(teacher, 8, 16, 4);
  const std::string w2 = "model.layers.1.self_attn.time_maa_w2";
  EXPECT_TRUE(again.p(w2).equal(s.p(w2)));
  EXPECT_FALSE(other.p(w2).equal(s.p(w2)));
}

TEST(ConvertStage0, SavedStudentRunsInTheEngineWithTheSameLogits) {
  Net s = make_student(load_net(test::data_path("models/llama_tiny")), 8, 16, 1);
  // Move every parameter off its initial value so that every term of the time mix matters.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(9);
  for (auto& [name, t] : s.params) t.add_(at::empty(t.sizes()).uniform_(-0.05, 0.05, gen));
  const std::string dir = test::temp_dir();
  save_net(s, dir, DType::F32);
  // config.json carries every key of the golden QRWKV6 config.
  const json got = load_json_file(dir + "/config.json");
  const json want = load_json_file(test::data_path("models/qrwkv6_tiny/config.json"));
  for (const auto& [key, value] : want.items()) EXPECT_TRUE(got.contains(key)) << key;
  EXPECT_EQ(got["model_type"], "rwkv6qwen2");
  EXPECT_EQ(got["attention_bias"], false);  // LLaMA has no q/k/v biases
  EXPECT_LE(engine_agreement(dir, 50), 1e-4);
}

TEST(ConvertStage0, Qrwkv7InitialValuesFollowTheRecipe) {
  const Net teacher = load_net(test::data_path("models/qwen2_tiny"));
  const int64_t C = 64, L = 3, H = 4, N = 16;
  Qrwkv7Options o;
  o.lora_gate = 48;
  const Net s = make_student7(teacher, o, 3);
  EXPECT_EQ(s.config.arch, Arch::QRWKV7);
  EXPECT_TRUE(s.config.use_rope);
  EXPECT_FALSE(s.config.balance_state);
  EXPECT_TRUE(s.config.groupnorm_att);
  EXPECT_FALSE(s.config.tie_word_embeddings);
  EXPECT_TRUE(s.p("lm_head.weight").equal(teacher.p("model.embed_tokens.weight")));
  // The rwkv7qwen2 default ranks max(1, round(C^e·m/32))·32 are all 32 at C = 64.
  EXPECT_EQ(default_lora7(64, 0.5, 1.8), 32);
  EXPECT_EQ(default_lora7(3584, 0.5, 1.8), 96);
  EXPECT_EQ(default_lora7(3584, 0.5, 1.3), 64);
  EXPECT_EQ(default_lora7(3584, 0.8, 0.6), 416);
  for (int64_t l = 0; l < L; ++l) {
    const std::string a = "model.layers." + std::to_string(l) + ".self_attn.";
    for (const char* n : {"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias",
                          "v_proj.weight", "v_proj.bias", "o_proj.weight"})
      EXPECT_TRUE(s.p(a + n).equal(teacher.p(a + n))) << a + n;
    EXPECT_TRUE(s.p(a + "a0").equal(at::zeros({1, 1, C})));
    EXPECT_TRUE(s.p(a + "v0").equal(at::ones({1, 1, C})));
    EXPECT_TRUE(s.p(a + "k_k").equal(at::full({1, 1, C}, 0.85f)));
    EXPECT_TRUE(s.p(a + "k_a").equal(at::ones({1, 1, C})));
    EXPECT_TRUE(s.p(a + "r_k").equal(at::zeros({H, N})));
    EXPECT_TRUE(s.p(a + "ln_x.weight").equal(at::ones({C})));
    EXPECT_TRUE(s.p(a + "ln_x.bias").equal(at::zeros({C})));
    for (const char* n : {"w1", "a1", "v1", "g1"}) {
      const int64_t D = std::string(n) == "g1" ? 48 : 32;
      EXPECT_TRUE(s.p(a + n).equal(at::zeros({C, D}))) << n;
    }
    // The second matrices are orthogonal · 0.1: their rows are orthogonal with norm 0.1.
    for (const char* n : {"w2", "a2", "v2", "g2"}) {
      const at::Tensor m = s.p(a + n).to(at::kDouble);
      const at::Tensor gram = at::matmul(m, m.t());
      EXPECT_LE((gram - 0.01 * at::eye(m.size(0), gram.options())).abs().max().item<double>(), 1e-7)
          << n;
    }
    const at::Tensor w0 = s.p(a + "w0").reshape({C});
    for (int64_t n : {0, 1, 17, 40, 63}) {
      const double expect =
          -6.5 + 5.0 * std::pow(static_cast<double>(n) / (C - 1),
                                0.85 + std::sqrt(static_cast<double>(l) / (L - 1)));
      EXPECT_NEAR(w0[n].item<double>(), expect, 1e-5) << "layer " << l << " channel " << n;
    }
  }
  // The balance variant has no GroupNorm; the seed fixes the draws.
  o.balance_state = true;
  const Net b = make_student7(teacher, o, 3), other = make_student7(teacher, o, 4);
  EXPECT_TRUE(b.config.balance_state);
  EXPECT_FALSE(b.config.groupnorm_att);
  EXPECT_EQ(b.params.count("model.layers.0.self_attn.ln_x.weight"), 0u);
  const std::string w2 = "model.layers.1.self_attn.w2";
  EXPECT_TRUE(b.p(w2).equal(s.p(w2)));
  EXPECT_FALSE(other.p(w2).equal(s.p(w2)));
}

TEST(ConvertStage0, SavedQrwkv7StudentsRunInTheEngineWithTheSameLogits) {
  for (bool balance : {false, true})
    for (bool rope : {true, false}) {
      Qrwkv7Options o;
      o.balance_state = balance;
      o.use_rope = rope;
      o.lora_decay = 8;
      o.lora_iclr = 8;
      o.lora_value = 16;
      o.lora_gate = 24;
      Net s = make_student7(
          load_net(test::data_path(rope ? "models/qwen2_tiny" : "models/llama_tiny")), o, 1);
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(9);
      for (auto& [name, t] : s.params) t.add_(at::empty(t.sizes()).uniform_(-0.05, 0.05, gen));
      const std::string dir = test::temp_dir();
      save_net(s, dir, DType::F32);
      const json got = load_json_file(dir + "/config.json");
      EXPECT_EQ(got["model_type"], "rwkv7qwen2");
      EXPECT_EQ(got["balance_state"], balance);
      EXPECT_EQ(got["groupnorm_att"], !balance);
      EXPECT_EQ(got["use_rope"], rope);
      EXPECT_EQ(got["lora_rank_decay"], 8);
      EXPECT_EQ(got["lora_rank_value_residual_mix"], 16);
      EXPECT_EQ(got["lora_rank_gate"], 24);
      // The engine reads every key it needs from it, and runs it as libtorch does.
      const Model m = Model::load(dir, test::float32_load());
      EXPECT_EQ(m.config.use_rope, rope);
      EXPECT_EQ(m.config.balance_state, balance);
      EXPECT_LE(engine_agreement(dir, 50), 1e-4) << "balance " << balance << " rope " << rope;
    }
}

TEST(ConvertLoss, KlEqualsTheHandComputedValue) {
  // Two positions, vocabulary 3. Position 0: teacher logits (0, ln 2, ln 3) → p = (1/6, 2/6, 3/6),
  // student logits 0 → q = 1/3 each: KL = Σ p ln(p/q) = (1/6) ln(1/2) + (1/3) ln 1 + (1/2) ln(3/2).
  // Position 1: identical distributions, KL 0. The loss is the mean over positions.
  const at::Tensor t =
      at::tensor({0.0, std::log(2.0), std::log(3.0), 1.0, 2.0, 3.0}).reshape({1, 2, 3});
  const at::Tensor s = at::tensor({0.0, 0.0, 0.0, 5.0, 6.0, 7.0}).reshape({1, 2, 3});
  const double kl0 = std::log(0.5) / 6.0 + 0.5 * std::log(1.5);
  EXPECT_NEAR(kl_loss(t, s).item<double>(), kl0 / 2.0, 1e-12);
  EXPECT_NEAR(kl_loss(t, t).item<double>(), 0.0, 1e-12);
  // Cross-entropy of the next token, likewise by hand: position 0 predicts token 2.
  const at::Tensor tokens = at::tensor({int64_t{1}, int64_t{2}}).reshape({1, 2});
  EXPECT_NEAR(next_token_loss(t, tokens).item<double>(), -std::log(0.5), 1e-12);
}

TEST(ConvertCli, PretrainLossDecreasesAndTheModelRuns) {
  const std::string out = test::temp_dir() + "/lm";
  std::vector<std::string> args = tiny_pretrain(out, "6400");
  args.insert(args.end(), {"-t", "1"});
  const auto r = test::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto log = read_log(out + "/train_log.jsonl");
  const auto losses = step_losses(log, 0);
  ASSERT_EQ(losses.size(), 50u);
  EXPECT_NEAR(losses[0], std::log(1000.0), 0.3);  // uniform guesses at the start
  EXPECT_LT(mean(losses, 40, 50), losses[0] - 0.8);
  EXPECT_LT(heldout_ppl(log, 0), 1000.0);
  EXPECT_FALSE(fs::exists(out + "/checkpoint.safetensors"));
  EXPECT_TRUE(fs::exists(out + "/tokenizer.json"));
  EXPECT_EQ(load_json_file(out + "/config.json")["model_type"], "qwen2");
  EXPECT_LE(engine_agreement(out, 40), 1e-4);
}

TEST(ConvertCli, Stage1AlignmentLossDecreases) {
  const std::string out = test::temp_dir() + "/student";
  const auto r = test::run_cli({"convert",
                                "-m",
                                teacher_dir("qwen2_tiny"),
                                "--data",
                                kText,
                                "-o",
                                out,
                                "--stages",
                                "1",
                                "--stage1-tokens",
                                "2560",
                                "--stage1-lr",
                                "3e-3",
                                "--seq-len",
                                "32",
                                "--batch",
                                "4",
                                "--lora-tokenshift",
                                "8",
                                "--lora-decay",
                                "16",
                                "--quiet",
                                "-t",
                                "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto log = read_log(out + "/train_log.jsonl");
  const auto losses = step_losses(log, 1);
  ASSERT_EQ(losses.size(), 20u);
  EXPECT_LT(mean(losses, 15, 20), 0.8 * losses[0]);
  // Each step logs the loss of every layer; the step's loss is their mean.
  for (const json& j : log) {
    if (!j.is_object() || !j.contains("loss")) continue;
    const auto layers = j["layer_loss"].get<std::vector<double>>();
    ASSERT_EQ(layers.size(), 3u);
    EXPECT_NEAR(mean(layers, 0, 3), j["loss"].get<double>(), 1e-6);
  }
  EXPECT_EQ(load_json_file(out + "/config.json")["model_type"], "rwkv6qwen2");
}

// A teacher that has learnt something, pretrained once per process (the conversions of both
// students in one test share it).
const std::string& trained_teacher() {
  static const std::string teacher = [] {
    const std::string dir = test::temp_dir() + "/teacher";
    const auto r = test::run_cli({"pretrain",
                                  "--tokenizer",
                                  test::data_path("tiny_chat"),
                                  "--data",
                                  kText,
                                  "-o",
                                  dir,
                                  "--hidden",
                                  "64",
                                  "--layers",
                                  "2",
                                  "--heads",
                                  "4",
                                  "--kv-heads",
                                  "2",
                                  "--intermediate",
                                  "128",
                                  "--seq-len",
                                  "64",
                                  "--batch",
                                  "8",
                                  "--tokens",
                                  "80000",
                                  "--lr",
                                  "3e-3",
                                  "--quiet",
                                  "-t",
                                  "1"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return dir;
  }();
  return teacher;
}

TEST(ConvertCli, TinyConversionBeatsItsStage0Student) {
  const std::string teacher = trained_teacher();
  ASSERT_TRUE(fs::exists(teacher + "/config.json"));
  const std::string out = test::temp_dir() + "/student";
  const auto r = test::run_cli({"convert", "-m",
                                teacher,   "--data",
                                kText,     "-o",
                                out,       "--stage1-tokens",
                                "20000",   "--stage2-tokens",
                                "40000",   "--stage2-lr",
                                "1e-3",    "--seq-len",
                                "64",      "--batch",
                                "8",       "--lora-tokenshift",
                                "16",      "--lora-decay",
                                "16",      "--dtype",
                                "bf16",    "-t",
                                "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto log = read_log(out + "/train_log.jsonl");
  const double teacher_ppl = heldout_ppl(log, -1), ppl0 = heldout_ppl(log, 0),
               ppl1 = heldout_ppl(log, 1), ppl2 = heldout_ppl(log, 2);
  std::printf("held-out perplexity: teacher %.2f, stage 0 %.2f, stage 1 %.2f, stage 2 %.2f\n",
              teacher_ppl, ppl0, ppl1, ppl2);
  // The tiny teacher leans on its MLPs more than on attention, so its stage-0 student is already
  // close; both stages must still bring the student measurably nearer to the teacher.
  EXPECT_LT(ppl1, ppl0);
  EXPECT_LT(ppl2, 0.99 * ppl0);
  const double kl0 = heldout_kl(log, 0), kl2 = heldout_kl(log, 2);
  EXPECT_LT(kl2, 0.5 * kl0);
  EXPECT_NE(r.out.find("stage 2:"), std::string::npos) << r.out;
  // The progress output names the stage, the step, the throughput and the time left.
  EXPECT_NE(r.err.find("[stage 1] step 1/"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tok/s  ETA "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[stage 2] held-out: loss"), std::string::npos) << r.err;
  // The output is a bf16 QRWKV6 checkpoint with the teacher's tokenizer, and the engine runs it
  // as libtorch does.
  EXPECT_EQ(load_json_file(out + "/config.json")["torch_dtype"], "bfloat16");
  EXPECT_TRUE(fs::exists(out + "/tokenizer_config.json"));
  EXPECT_LE(engine_agreement(out, 40), 1e-4);
  const auto gen = test::run_cli({"generate-ids", "-m", out, "--tokens", "1 2 3", "-n", "4"});
  EXPECT_EQ(gen.exit_code, 0) << gen.err;
}

TEST(ConvertCli, Qrwkv7ConversionBeatsItsStage0Student) {
  // Both QRWKV7 variants from the same teacher: each stage brings the student nearer to it, and
  // the engine runs the result as libtorch does (balance state without RoPE on the second).
  const std::string teacher = trained_teacher();
  ASSERT_TRUE(fs::exists(teacher + "/config.json"));
  for (const char* variant : {"classic", "balance"}) {
    const bool classic = std::string(variant) == "classic";
    const std::string out = test::temp_dir() + "/student";
    const auto r = test::run_cli({"convert",
                                  "-m",
                                  teacher,
                                  "--data",
                                  kText,
                                  "-o",
                                  out,
                                  "--arch",
                                  "rwkv7qwen2",
                                  "--variant",
                                  variant,
                                  "--rope",
                                  classic ? "on" : "off",
                                  "--stage1-tokens",
                                  "20000",
                                  "--stage2-tokens",
                                  "40000",
                                  "--stage2-lr",
                                  "1e-3",
                                  "--seq-len",
                                  "64",
                                  "--batch",
                                  "8",
                                  "--lora-decay",
                                  "16",
                                  "--lora-iclr",
                                  "16",
                                  "--lora-value",
                                  "16",
                                  "--lora-gate",
                                  "32",
                                  "-t",
                                  "1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto log = read_log(out + "/train_log.jsonl");
    const double ppl0 = heldout_ppl(log, 0), ppl1 = heldout_ppl(log, 1), ppl2 = heldout_ppl(log, 2);
    std::printf("%s: held-out perplexity teacher %.2f, stage 0 %.2f, stage 1 %.2f, stage 2 %.2f\n",
                variant, heldout_ppl(log, -1), ppl0, ppl1, ppl2);
    EXPECT_LT(ppl1, ppl0) << variant;
    EXPECT_LT(ppl2, 0.99 * ppl0) << variant;
    EXPECT_LT(heldout_kl(log, 2), 0.5 * heldout_kl(log, 0)) << variant;
    const json cfg = load_json_file(out + "/config.json");
    EXPECT_EQ(cfg["model_type"], "rwkv7qwen2");
    EXPECT_EQ(cfg["balance_state"], !classic);
    EXPECT_EQ(cfg["groupnorm_att"], classic);
    EXPECT_EQ(cfg["use_rope"], classic);
    EXPECT_EQ(cfg["lora_rank_gate"], 32);
    EXPECT_LE(engine_agreement(out, 40), 1e-4) << variant;
  }
}

// --eval-task: the teacher and the student after each stage scored by the engine, a table at the
// end; the last stage's column is what `qrwkv eval` gives on the saved student.
TEST(ConvertCli, EvalTaskScoresTheTeacherAndEveryStage) {
  const std::string teacher = teacher_dir("qwen2_tiny");
  const std::string dir = test::temp_dir();
  const std::string out = dir + "/student", task = dir + "/mc.jsonl";
  std::ofstream(task) << R"({"context": "a b", "choices": ["c d", "e", "f g h"], "gold": 0}
{"context": "one", "choices": ["two", "three four"], "gold": 1}
)";
  const auto r = test::run_cli({"convert",     "-m",
                                teacher,       "--data",
                                kText,         "-o",
                                out,           "--stages",
                                "1",           "--stage1-tokens",
                                "256",         "--seq-len",
                                "32",          "--batch",
                                "4",           "--lora-tokenshift",
                                "8",           "--lora-decay",
                                "8",           "--quiet",
                                "-t",          "1",
                                "--eval-task", task});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* line :
       {"eval teacher: mc  acc ", "eval stage 0: mc  acc ", "eval stage 1: mc  acc ",
        "| task | metric | teacher | stage 0 | stage 1 |"})
    EXPECT_NE(r.out.find(line), std::string::npos) << line << "\n" << r.out;
  EXPECT_FALSE(fs::exists(out + "/stage-model"));
  const auto e = test::run_cli({"eval", "-m", out, "--task", task, "-o", "json", "-q"});
  ASSERT_EQ(e.exit_code, 0) << e.err;
  const auto j = nlohmann::json::parse(e.out);
  char want[64];
  std::snprintf(want, sizeof want, "| mc | acc_norm | ");
  const size_t row = r.out.find(want);
  ASSERT_NE(row, std::string::npos) << r.out;
  const std::string line = r.out.substr(row, r.out.find('\n', row) - row);
  char last[32];
  std::snprintf(last, sizeof last, " %.4f |",
                j["student"]["tasks"]["mc"]["acc_norm"]["value"].get<double>());
  EXPECT_EQ(line.substr(line.size() - std::strlen(last)), last) << line;
}

TEST(ConvertCli, FrozenMlpAndEmbeddingsStayTheTeachers) {
  const std::string teacher = teacher_dir("qwen2_tiny");
  const std::string out = test::temp_dir() + "/student";
  const auto r = test::run_cli(
      {"convert", "-m",           teacher, "--data",           kText,     "-o",
       out,       "--stages",     "2",     "--stage2-tokens",  "640",     "--stage2-lr",
       "1e-3",    "--seq-len",    "32",    "--batch",          "4",       "--lora-tokenshift",
       "8",       "--lora-decay", "8",     "--freeze-mlp-emb", "--quiet", "-t",
       "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Net t = load_net(teacher), s = load_net(out);
  EXPECT_TRUE(s.p("model.embed_tokens.weight").equal(t.p("model.embed_tokens.weight")));
  EXPECT_TRUE(s.p("lm_head.weight").equal(t.p("model.embed_tokens.weight")));
  for (const char* n : {"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"})
    EXPECT_TRUE(
        s.p(std::string("model.layers.1.") + n).equal(t.p(std::string("model.layers.1.") + n)))
        << n;
  // The time mix and the norms did train.
  EXPECT_GT(s.p("model.layers.1.self_attn.gate.weight").abs().max().item<double>(), 0.0);
  EXPECT_FALSE(s.p("model.layers.1.self_attn.k_proj.weight")
                   .equal(t.p("model.layers.1.self_attn.k_proj.weight")));
  EXPECT_FALSE(s.p("model.norm.weight").equal(t.p("model.norm.weight")));
}

// Both students: QRWKV6 and QRWKV7.
class ConvertStudent : public ::testing::TestWithParam<const char*> {};
INSTANTIATE_TEST_SUITE_P(Arch, ConvertStudent, ::testing::Values("rwkv6qwen2", "rwkv7qwen2"));

TEST_P(ConvertStudent, ResumeAfterAKillGivesTheUninterruptedResult) {
  const std::string teacher = teacher_dir("qwen2_tiny");
  auto args = [&](const std::string& out) {
    std::vector<std::string> a{"convert", "-m",
                               teacher,   "--data",
                               kText,     "-o",
                               out,       "--stage1-tokens",
                               "1536",    "--stage2-tokens",
                               "2560",    "--stage2-lr",
                               "1e-3",    "--seq-len",
                               "32",      "--batch",
                               "4",       "--checkpoint-every",
                               "2",       "--quiet",
                               "-t",      "1"};
    for (const std::string& f : test::student_flags(GetParam())) a.push_back(f);
    return a;
  };
  const std::string whole = test::temp_dir() + "/whole";
  auto r = test::run_cli(args(whole));
  ASSERT_EQ(r.exit_code, 0) << r.err;

  // The same run, killed once it is in the middle of stage 2, then resumed.
  const std::string cut = test::temp_dir() + "/cut";
  {
    test::Process p(args(cut));
    bool reached = false;
    for (int i = 0; i < 6000 && !reached; ++i) {
      for (const json& j : read_log(cut + "/train_log.jsonl"))
        if (j.is_object() && j.value("stage", 0) == 2 && j.value("step", 0) >= 5) reached = true;
      if (!reached) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(reached);
    p.signal(SIGKILL);
    EXPECT_EQ(p.finish().exit_code, 128 + SIGKILL);
  }
  ASSERT_TRUE(fs::exists(cut + "/checkpoint.safetensors"));
  ASSERT_FALSE(fs::exists(cut + "/model.safetensors"));
  const std::string other = test::temp_dir();
  fs::copy_file(cut + "/checkpoint.safetensors", other + "/checkpoint.safetensors");
  std::vector<std::string> again = args(cut);
  again.push_back("--resume");
  r = test::run_cli(again);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_text_file(cut + "/model.safetensors"),
            read_text_file(whole + "/model.safetensors"));
  // The log shows the resume, and no step of stage 2 is missing.
  const auto log = read_log(cut + "/train_log.jsonl");
  bool resumed = false;
  for (const json& j : log) resumed |= j.is_object() && j.value("event", "") == "resume";
  EXPECT_TRUE(resumed);
  EXPECT_GE(step_losses(log, 2).size(), 20u);

  // Resuming with other options is refused rather than silently mixing two runs.
  std::vector<std::string> changed = args(other);
  changed.insert(changed.end(), {"--resume", "--seed", "5"});
  r = test::run_cli(changed);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("other options"), std::string::npos) << r.err;
}

// A disk that fills up: writing a converted model or a checkpoint there fails with a clear
// error naming the file and the cause, and the model written before stays as it was.
TEST(ConvertCli, AFullDiskIsAClearErrorAndKeepsThePreviousModel) {
  const std::string teacher = teacher_dir("qwen2_tiny");
  Net s = make_student(load_net(teacher), 8, 8, 1);
  const std::string first = test::temp_dir();
  save_net(s, first, DType::F32);
  const std::string before = test::file_bytes(first + "/model.safetensors");
  test::SmallDisk disk(before.size() * 3 / 2 + 16384);
  if (!disk.available()) GTEST_SKIP() << "cannot mount a tmpfs: " << disk.why();
  const std::string out = disk.path("student");
  fs::create_directories(out);
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(first + "/" + f, out + "/" + f);
  // The engine's save: the second copy does not fit.
  s.params.begin()->second.add_(1.0f);
  try {
    save_net(s, out, DType::F32);
    ADD_FAILURE() << "the save did not fail";
  } catch (const Error& err) {
    EXPECT_THAT(std::string(err.what()), ::testing::HasSubstr("model.safetensors"));
    EXPECT_THAT(std::string(err.what()), ::testing::HasSubstr("No space left on device"));
  }
  EXPECT_EQ(test::file_bytes(out + "/model.safetensors"), before);
  // A conversion into that directory: its checkpoint (weights and optimizer moments) does not fit.
  const auto r = test::run_cli({"convert", "-m",
                                teacher,   "--data",
                                kText,     "-o",
                                out,       "--stage1-tokens",
                                "512",     "--stage2-tokens",
                                "512",     "--seq-len",
                                "32",      "--batch",
                                "4",       "--lora-tokenshift",
                                "8",       "--lora-decay",
                                "8",       "--checkpoint-every",
                                "1",       "--quiet",
                                "-t",      "1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, ::testing::HasSubstr("checkpoint.safetensors"));
  EXPECT_THAT(r.err, ::testing::HasSubstr("No space left on device"));
  EXPECT_EQ(test::file_bytes(out + "/model.safetensors"), before);
  for (const auto& e : fs::directory_iterator(out))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(ConvertCli, BadInputIsReported) {
  const std::string out = test::temp_dir() + "/x";
  auto r =
      test::run_cli({"convert", "-m", test::temp_dir() + "/missing", "--data", kText, "-o", out});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("missing"), std::string::npos) << r.err;
  r = test::run_cli(
      {"convert", "-m", teacher_dir("qwen2_tiny"), "--data", kText, "-o", out, "--device", "tpu"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unknown device"), std::string::npos) << r.err;
  r = test::run_cli({"pretrain", "--tokenizer", test::data_path("tiny_chat"), "--data", kText, "-o",
                     out, "--batch", "0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("usage"), std::string::npos) << r.err;
  r = test::run_cli(
      {"convert", "-m", test::data_path("models/qrwkv6_tiny"), "--data", kText, "-o", out});
  EXPECT_EQ(r.exit_code, 1);
  const std::string teacher = teacher_dir("qwen2_tiny");
  r = test::run_cli({"convert", "-m", teacher, "--data", kText, "-o", teacher});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("overwrite"), std::string::npos) << r.err;
  // The student architecture's flags: unknown names and flags of the other student are usage
  // errors; a QRWKV7 model is no teacher.
  for (std::vector<std::string> extra :
       std::vector<std::vector<std::string>>{{"--arch", "rwkv8"},
                                             {"--variant", "balance"},
                                             {"--arch", "rwkv7qwen2", "--variant", "mixed"},
                                             {"--arch", "rwkv7qwen2", "--rope", "maybe"},
                                             {"--arch", "rwkv7qwen2", "--lora-tokenshift", "8"}}) {
    std::vector<std::string> args = {"convert", "-m", teacher, "--data", kText, "-o", out};
    args.insert(args.end(), extra.begin(), extra.end());
    r = test::run_cli(args);
    EXPECT_EQ(r.exit_code, 2) << extra[1];
    EXPECT_NE(r.err.find("usage"), std::string::npos) << r.err;
  }
  r = test::run_cli({"convert", "-m", teacher_dir("qrwkv7_tiny"), "--data", kText, "-o", out,
                     "--arch", "rwkv7qwen2"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("Qwen2 or LLaMA"), std::string::npos) << r.err;
}
