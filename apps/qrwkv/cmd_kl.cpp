// kl: how much a weight format (--dtype) changes a model's predictions. The same tokens run
// through the model as stored (or --base-dtype) and as converted; per position it compares the
// next-token distributions P (base) and Q (converted):
//
//   KL(P ‖ Q) = Σ_v P(v) · (log P(v) − log Q(v))
//
// and reports its mean and maximum over positions, how often the two agree on the most likely
// token, and, when the tokens come from a text, each model's perplexity on it. --kernels and
// --base-kernels run either side at a given kernel level, so that the same weights can be
// compared through a rounded path (bf16 or int8 activations) and the exact float32 one.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "apps/qrwkv/args.h"
#include "apps/qrwkv/command.h"
#include "backend/cpu/cpu_backend.h"
#include "io/mapped_file.h"
#include "model/model.h"
#include "runtime/logprobs.h"
#include "text/tokenizer.h"

namespace qrwkv::app {

namespace {

// log-softmax of one row of logits, in double.
std::vector<double> log_softmax(const float* z, int64_t V) {
  const double lse = log_sum_exp({z, static_cast<size_t>(V)});
  std::vector<double> out(static_cast<size_t>(V));
  for (int64_t v = 0; v < V; ++v) out[v] = z[v] - lse;
  return out;
}

int run_kl(int argc, char** argv) {
  Args a(
      "kl",
      "-m PATH (--dtype TYPE | --base-model DIR | --kernels L) [--base-dtype TYPE] [--base-kernels "
      "L] "
      "[-f TEXT | -n N] [-c CTX]",
      {{{"-m", "--model"}, "PATH", "model directory or GGUF file"},
       dtype_flag(),
       ubatch_flag(),
       {{"--base-model"},
        "DIR",
        "reference model with the same vocabulary, e.g. the teacher of a converted model "
        "(default: the model itself, in --base-dtype)"},
       {{"--base-dtype"}, "TYPE", "format of the reference model (default: as stored)"},
       {{"-f", "--file"}, "FILE", "text to evaluate (tokenized with the model's tokenizer)"},
       {{"-n", "--n-tokens"}, "N", "without -f: N pseudo-random token ids (default 512)"},
       {{"-c", "--ctx-size"}, "N", "tokens per evaluated sequence (default 512)"},
       {{"-s", "--seed"}, "N", "seed of the pseudo-random tokens (default 1)"},
       {{"--kernels"},
        "LEVEL",
        "kernel level of the compared model: portable, avx2, avx512 (float32 activations), "
        "avx512bf16, avx512vnni, amx (default: QRWKV_ISA, else the CPU's default)"},
       {{"--base-kernels"}, "LEVEL", "kernel level of the reference model (default: as --kernels)"},
       {{"-t", "--threads"}, "N", "threads (default: physical cores)"},
       {{"-o", "--output"}, "md|json", "output format (default md)"}});
  a.parse(argc, argv);
  const std::string dir = model_dir(a);
  const std::string base_dir = a.get("--base-model", dir);
  if (!a.has("--dtype") && !a.has("--base-model") && !a.has("--kernels") &&
      !a.has("--base-kernels"))
    throw UsageError("kl needs --dtype (the format to compare), --base-model or --kernels");
  const WeightFormat fq = weight_format(a);
  WeightFormat fp = WeightFormat::Stored;
  try {
    fp = parse_weight_format(a.get("--base-dtype"));
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  const int64_t ctx = a.get_int("--ctx-size", 512);
  if (ctx < 2) throw UsageError("-c must be at least 2");
  const int threads = static_cast<int>(a.get_int("--threads", 0));
  if (threads < 0) throw UsageError("-t must be positive");
  const std::string fmt = a.get("--output", "md");
  if (fmt != "md" && fmt != "json") throw UsageError("-o must be md or json");

  auto level = [&](const char* flag, cpu::Isa fallback) {
    if (!a.has(flag)) return fallback;
    const std::optional<cpu::Isa> l = cpu::parse_isa(a.get(flag));
    if (!l) throw UsageError(std::string(flag) + " must be one of " + cpu::isa_names());
    if (*l > cpu::max_isa())
      throw UsageError(std::string(flag) + " " + a.get(flag) + " is not supported by this CPU (" +
                       cpu::isa_name(cpu::max_isa()) + " is the highest)");
    return *l;
  };
  const cpu::Isa level_q = level("--kernels", cpu::default_isa());
  const cpu::Isa level_p = level("--base-kernels", level_q);

  // One backend per level; with the same level both models share it (and its threads).
  auto be_q = std::make_shared<CpuBackend>(CpuOptions{threads, level_q});
  auto be_p =
      level_p == level_q ? be_q : std::make_shared<CpuBackend>(CpuOptions{threads, level_p});
  LoadOptions lo;
  lo.backend = be_p;
  lo.format = fp;
  lo.ubatch = a.get_int("--ubatch", 0);
  if (a.has("--ubatch") && lo.ubatch < 1) throw UsageError("--ubatch must be at least 1");
  Model base = Model::load(base_dir, lo);
  lo.backend = be_q;
  lo.format = fq;
  Model quant = Model::load(dir, lo);
  const int64_t V = base.config.vocab_size;
  if (quant.config.vocab_size != V)
    fail(dir, "its vocabulary has " + std::to_string(quant.config.vocab_size) +
                  " entries but the base model " + base_dir + " has " + std::to_string(V));

  std::vector<int32_t> tokens;
  const bool from_text = a.has("--file");
  if (from_text) {
    const Tokenizer tok = Tokenizer::from_dir(dir);
    tokens = tok.encode(read_text_file(a.get("--file")));
    for (int32_t& t : tokens)
      if (t >= V)
        fail(a.get("--file"),
             "token id " + std::to_string(t) + " is outside the model's vocabulary");
  } else {
    const int64_t n = a.get_int("--n-tokens", 512);
    if (n < 2) throw UsageError("-n must be at least 2");
    uint64_t x = static_cast<uint64_t>(a.get_int("--seed", 1)) * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      tokens.push_back(static_cast<int32_t>(x % static_cast<uint64_t>(V)));
    }
  }
  if (tokens.size() < 2) fail(dir, "need at least 2 tokens to compare predictions");

  double kl_sum = 0, kl_max = 0, nll_p = 0, nll_q = 0;
  int64_t positions = 0, agree = 0, scored = 0;
  for (size_t s0 = 0; s0 + 1 < tokens.size(); s0 += static_cast<size_t>(ctx)) {
    const size_t n = std::min(tokens.size() - s0, static_cast<size_t>(ctx));
    const std::span<const int32_t> seq(tokens.data() + s0, n);
    State sp = base.new_state(), sq = quant.new_state();
    const std::vector<float> lp = forward(base, sp, seq, true);
    const std::vector<float> lq = forward(quant, sq, seq, true);
    for (size_t t = 0; t < n; ++t) {
      const auto p = log_softmax(lp.data() + t * V, V);
      const auto q = log_softmax(lq.data() + t * V, V);
      double kl = 0;
      for (int64_t v = 0; v < V; ++v) kl += std::exp(p[v]) * (p[v] - q[v]);
      kl_sum += kl;
      kl_max = std::max(kl_max, kl);
      agree += std::max_element(p.begin(), p.end()) ==
               p.begin() + (std::max_element(q.begin(), q.end()) - q.begin());
      ++positions;
      if (t + 1 < n) {
        nll_p -= p[seq[t + 1]];
        nll_q -= q[seq[t + 1]];
        ++scored;
      }
    }
  }
  const double kl_mean = kl_sum / static_cast<double>(positions);
  const double top1 = 100.0 * static_cast<double>(agree) / static_cast<double>(positions);
  const std::string name = std::filesystem::path(dir).filename().string();
  const std::string quant_name =
      fq == WeightFormat::Stored ? quant.storage_dtype() : weight_format_name(fq);
  std::string base_name =
      fp == WeightFormat::Stored ? base.storage_dtype() : weight_format_name(fp);
  const std::string kernels = cpu::isa_name(level_q), base_kernels = cpu::isa_name(level_p);
  if (base_dir != dir)
    base_name = std::filesystem::path(base_dir).filename().string() + " " + base_name;
  if (fmt == "json") {
    nlohmann::ordered_json j = {{"model", name},
                                {"base", base_name},
                                {"dtype", quant_name},
                                {"base_kernels", base_kernels},
                                {"kernels", kernels},
                                {"base_bytes_per_token", base.weights.bytes_per_token()},
                                {"bytes_per_token", quant.weights.bytes_per_token()},
                                {"positions", positions},
                                {"kl_mean", kl_mean},
                                {"kl_max", kl_max},
                                {"top1_agreement_pct", top1}};
    if (from_text) {
      j["ppl_base"] = std::exp(nll_p / static_cast<double>(scored));
      j["ppl"] = std::exp(nll_q / static_cast<double>(scored));
    }
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf(
        "| model | base | dtype | kernels | MB/token | positions | mean KL | max KL | top-1 agree "
        "|%s\n",
        from_text ? " ppl base | ppl |" : "");
    std::printf("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |%s\n",
                from_text ? " ---: | ---: |" : "");
    const std::string kcol = base_kernels == kernels ? kernels : base_kernels + " → " + kernels;
    std::printf("| %s | %s | %s | %s | %.2f | %lld | %.3g | %.3g | %.2f %% |", name.c_str(),
                base_name.c_str(), quant_name.c_str(), kcol.c_str(),
                static_cast<double>(quant.weights.bytes_per_token()) / 1e6,
                static_cast<long long>(positions), kl_mean, kl_max, top1);
    if (from_text)
      std::printf(" %.4g | %.4g |", std::exp(nll_p / static_cast<double>(scored)),
                  std::exp(nll_q / static_cast<double>(scored)));
    std::printf("\n");
  }
  return 0;
}

CommandRegistrar kl_cmd(
    {"kl", "compare a weight format's predictions with the stored model (KL divergence)", &run_kl});

}  // namespace

}  // namespace qrwkv::app
