// Benchmark commands: synth (random-weight checkpoints of real shapes) and bench (llama-bench
// style prompt-processing and generation speed, with achieved bandwidth or FLOP/s against the
// machine's measured memory bandwidth).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <tuple>

#include "apps/qrwkv/args.h"
#include "apps/qrwkv/command.h"
#include "apps/qrwkv/plot.h"
#include "backend/cpu/cpu_backend.h"
#include "io/json.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "ops/panel.h"

namespace qrwkv::app {

namespace {

struct Shape {
  const char* name;
  int64_t C, L, H, Hkv, F, V;
  double eps;
  bool tied;  // the transformer's tying; the conversions untie
};

constexpr Shape kShapes[] = {
    {"qwen2.5-0.5b", 896, 24, 14, 2, 4864, 151936, 1e-6, true},
    {"qwen2.5-1.5b", 1536, 28, 12, 2, 8960, 151936, 1e-6, true},
    {"qwen2.5-7b", 3584, 28, 28, 4, 18944, 152064, 1e-6, false},
    {"qwen2.5-14b", 5120, 48, 40, 8, 13824, 152064, 1e-5, false},
    {"qwen2.5-32b", 5120, 64, 40, 8, 27648, 152064, 1e-5, false},
    {"qwen2.5-72b", 8192, 80, 64, 8, 29568, 152064, 1e-6, false},
};

// A fast deterministic generator: weights need variety, not statistical quality.
struct XorShift {
  uint64_t s;
  float uniform() {  // in [-1, 1)
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return static_cast<float>(static_cast<int64_t>(s >> 11) - (int64_t{1} << 52)) /
           static_cast<float>(int64_t{1} << 52);
  }
};

struct Spec {
  std::string name;
  std::vector<int64_t> shape;
  enum Fill { Random, Ones, Zeros, Decay, Decay7 } fill = Random;
  float scale = 0.02f;
};

// The architectures synth writes.
enum class SynthArch { Qwen2, Qrwkv6, Qrwkv7 };

// QRWKV7's LoRA ranks for width C: max(1, round(C^e·m/32))·32 (configuration_rwkv7qwen2.py).
int64_t lora7(int64_t C, double e, double m) {
  return std::max<int64_t>(1, std::llround(std::pow(static_cast<double>(C), e) * m / 32.0)) * 32;
}

// Dm, Dd: QRWKV6's token-shift and decay LoRA ranks; QRWKV7's come from lora7.
std::vector<Spec> tensor_specs(const Shape& s, SynthArch arch, int64_t Dm, int64_t Dd) {
  const int64_t C = s.C, KV = s.Hkv * (s.C / s.H), F = s.F, V = s.V;
  const bool rwkv = arch == SynthArch::Qrwkv6, rwkv7 = arch == SynthArch::Qrwkv7;
  std::vector<Spec> t;
  t.push_back({"model.embed_tokens.weight", {V, C}});
  t.push_back({"model.norm.weight", {C}, Spec::Ones});
  if (rwkv || rwkv7 || !s.tied) t.push_back({"lm_head.weight", {V, C}});
  for (int64_t l = 0; l < s.L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string a = p + "self_attn.";
    t.push_back({p + "input_layernorm.weight", {C}, Spec::Ones});
    t.push_back({p + "post_attention_layernorm.weight", {C}, Spec::Ones});
    t.push_back({a + "q_proj.weight", {C, C}});
    t.push_back({a + "q_proj.bias", {C}});
    t.push_back({a + "k_proj.weight", {KV, C}});
    t.push_back({a + "k_proj.bias", {KV}});
    t.push_back({a + "v_proj.weight", {KV, C}});
    t.push_back({a + "v_proj.bias", {KV}});
    t.push_back({a + "o_proj.weight", {C, C}});
    if (rwkv) {
      for (const char* n :
           {"time_maa_x", "time_maa_r", "time_maa_k", "time_maa_v", "time_maa_w", "time_maa_g"})
        t.push_back({a + n, {1, 1, C}, Spec::Random, 0.5f});
      t.push_back({a + "time_maa_w1", {C, 5 * Dm}, Spec::Random, 0.01f});
      t.push_back({a + "time_maa_w2", {5, Dm, C}, Spec::Random, 0.01f});
      t.push_back({a + "time_decay", {1, 1, C}, Spec::Decay});
      t.push_back({a + "time_decay_w1", {C, Dd}, Spec::Random, 0.01f});
      t.push_back({a + "time_decay_w2", {Dd, C}, Spec::Random, 0.01f});
      t.push_back({a + "gate.weight", {C, C}});
    }
    if (rwkv7) {
      // The classic variant (k_k, k_a, GroupNorm) with the LoRA gate.
      const int64_t Dw = lora7(C, 0.5, 1.8), Da = lora7(C, 0.5, 1.8), Dv = lora7(C, 0.5, 1.3),
                    Dg = lora7(C, 0.8, 0.6);
      t.push_back({a + "w0", {1, 1, C}, Spec::Decay7});
      t.push_back({a + "a0", {1, 1, C}, Spec::Random, 0.5f});
      t.push_back({a + "v0", {1, 1, C}, Spec::Random, 0.5f});
      for (auto [n1, n2, D] : {std::tuple{"w1", "w2", Dw}, std::tuple{"a1", "a2", Da},
                               std::tuple{"v1", "v2", Dv}, std::tuple{"g1", "g2", Dg}}) {
        t.push_back({a + n1, {C, D}, Spec::Random, 0.01f});
        t.push_back({a + n2, {D, C}, Spec::Random, 0.01f});
      }
      t.push_back({a + "k_k", {1, 1, C}, Spec::Random, 0.5f});
      t.push_back({a + "k_a", {1, 1, C}, Spec::Ones});
      t.push_back({a + "r_k", {s.H, C / s.H}, Spec::Zeros});
      t.push_back({a + "ln_x.weight", {C}, Spec::Ones});
      t.push_back({a + "ln_x.bias", {C}, Spec::Zeros});
    }
    t.push_back({p + "mlp.gate_proj.weight", {F, C}});
    t.push_back({p + "mlp.up_proj.weight", {F, C}});
    t.push_back({p + "mlp.down_proj.weight", {C, F}});
  }
  return t;
}

int run_synth(int argc, char** argv) {
  Args a("synth",
         "--shape NAME --arch rwkv6qwen2|rwkv7qwen2|qwen2 [--dtype bf16|f16|f32] [--layers N] -o "
         "DIR",
         {{{"--shape"},
           "NAME",
           "qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-7b, qwen2.5-14b, qwen2.5-32b or qwen2.5-72b"},
          {{"--arch"},
           "ARCH",
           "rwkv6qwen2 (QRWKV6), rwkv7qwen2 (QRWKV7: classic, RoPE; both untied) or qwen2"},
          {{"--layers"}, "N", "only the first N layers (a truncated model; default all)"},
          {{"--dtype"}, "TYPE", "storage dtype: bf16 (default), f16 or f32"},
          {{"-s", "--seed"}, "N", "random seed (default 1)"},
          {{"-o", "--output"}, "DIR", "output model directory (created)"}});
  a.parse(argc, argv);
  const std::string shape_name = a.require("--shape"), arch = a.require("--arch");
  const std::string out = a.require("--output"), dts = a.get("--dtype", "bf16");
  const Shape* found = nullptr;
  for (const auto& s : kShapes)
    if (shape_name == s.name) found = &s;
  if (found == nullptr) throw UsageError("unknown --shape '" + shape_name + "'");
  Shape truncated = *found;
  if (a.has("--layers")) {
    const int64_t n = a.get_int("--layers", 0);
    if (n < 1 || n > found->L)
      throw UsageError("--layers must be between 1 and " + std::to_string(found->L) + " for " +
                       shape_name);
    truncated.L = n;
  }
  const Shape* shape = &truncated;
  if (arch != "rwkv6qwen2" && arch != "rwkv7qwen2" && arch != "qwen2")
    throw UsageError("unknown --arch '" + arch + "'");
  DType dt = DType::BF16;
  if (dts == "f16")
    dt = DType::F16;
  else if (dts == "f32")
    dt = DType::F32;
  else if (dts != "bf16")
    throw UsageError("unknown --dtype '" + dts + "'");
  const bool rwkv = arch == "rwkv6qwen2", rwkv7 = arch == "rwkv7qwen2";
  const SynthArch sa = rwkv ? SynthArch::Qrwkv6 : rwkv7 ? SynthArch::Qrwkv7 : SynthArch::Qwen2;
  // The historical LoRA ranks of QRWKV6 conversions for this width.
  const int64_t Dm = shape->C < 4096 ? 32 : 64, Dd = shape->C < 4096 ? 64 : 128;

  std::filesystem::create_directories(out);
  nlohmann::ordered_json cfg = {
      {"architectures",
       {rwkv    ? "RWKV6Qwen2ForCausalLM"
        : rwkv7 ? "RWKV7Qwen2ForCausalLM"
                : "Qwen2ForCausalLM"}},
      {"model_type", arch},
      {"hidden_size", shape->C},
      {"num_hidden_layers", shape->L},
      {"num_attention_heads", shape->H},
      {"num_key_value_heads", shape->Hkv},
      {"intermediate_size", shape->F},
      {"vocab_size", shape->V},
      {"rms_norm_eps", shape->eps},
      {"hidden_act", "silu"},
      {"rope_theta", 1000000.0},
      {"max_position_embeddings", 32768},
      {"tie_word_embeddings", rwkv || rwkv7 ? false : shape->tied},
      {"torch_dtype", dts == "bf16"  ? "bfloat16"
                      : dts == "f16" ? "float16"
                                     : "float32"},
      {"eos_token_id", 151643},
  };
  if (rwkv) {
    cfg["attention_bias"] = true;
    cfg["attention_output_bias"] = false;
    cfg["lora_rank_tokenshift"] = Dm;
    cfg["lora_rank_decay"] = Dd;
  }
  if (rwkv7) {
    cfg["head_dim"] = shape->C / shape->H;
    cfg["attention_bias"] = true;
    cfg["attention_output_bias"] = false;
    cfg["use_rope"] = true;
    cfg["balance_state"] = false;
    cfg["groupnorm_att"] = true;
    cfg["gate_rank_type"] = 2;
    cfg["num_attention_layers"] = 0;
  }
  {
    const std::string text = cfg.dump(2) + "\n";
    write_file_atomic(out + "/config.json", text.data(), text.size());
  }

  // Streams the tensors into the file one at a time: a 7B checkpoint never sits in memory.
  const auto specs = tensor_specs(*shape, sa, Dm, Dd);
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  uint64_t offset = 0;
  for (const auto& s : specs) {
    uint64_t n = 1;
    for (int64_t d : s.shape) n *= static_cast<uint64_t>(d);
    header[s.name] = {{"dtype", dtype_name(dt)},
                      {"shape", s.shape},
                      {"data_offsets", {offset, offset + n * dtype_size(dt)}}};
    offset += n * dtype_size(dt);
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8 != 0) h.push_back(' ');
  const std::string path = out + "/model.safetensors", tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw Error(tmp + ": cannot create");
    const uint64_t len = h.size();
    f.write(reinterpret_cast<const char*>(&len), 8);
    f.write(h.data(), static_cast<std::streamsize>(h.size()));
    XorShift rng{static_cast<uint64_t>(a.get_int("--seed", 1)) * 0x9E3779B97F4A7C15ull + 1};
    std::vector<uint8_t> buf;
    for (const auto& s : specs) {
      uint64_t n = 1;
      for (int64_t d : s.shape) n *= static_cast<uint64_t>(d);
      buf.resize(n * dtype_size(dt));
      for (uint64_t i = 0; i < n; ++i) {
        float v = 0;
        switch (s.fill) {
          case Spec::Random:
            v = s.scale * rng.uniform();
            break;
          case Spec::Ones:
            v = 1.0f;
            break;
          case Spec::Zeros:
            v = 0.0f;
            break;
          case Spec::Decay: {
            // The conversion's initial decay curve (docs/model.md, "Conversion"), spanning fast to
            // slow channels.
            const double x = static_cast<double>(i) / static_cast<double>(n - 1);
            v = static_cast<float>(-6.0 + 5.0 * std::pow(x, 0.7 + 1.3 * 0.5));
            break;
          }
          case Spec::Decay7: {
            // QRWKV7's initial decay pre-activations (nets.h, make_student7), a middle layer's.
            const double x = static_cast<double>(i) / static_cast<double>(n - 1);
            v = static_cast<float>(-6.5 + 5.0 * std::pow(x, 0.85 + std::sqrt(0.5)));
            break;
          }
        }
        if (dt == DType::F32)
          std::memcpy(&buf[i * 4], &v, 4);
        else if (dt == DType::BF16) {
          const uint16_t b = f32_to_bf16(v);
          std::memcpy(&buf[i * 2], &b, 2);
        } else {
          const _Float16 b = static_cast<_Float16>(v);
          std::memcpy(&buf[i * 2], &b, 2);
        }
      }
      f.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(buf.size()));
      if (!f) throw Error(tmp + ": write failed");
    }
    f.flush();
    if (!f) throw Error(tmp + ": write failed");
  }
  std::filesystem::rename(tmp, path);
  // Proves the checkpoint loads (through the reference backend, which keeps the weights mapped
  // as stored: a checkpoint larger than memory is checked without holding it).
  LoadOptions check;
  check.backend = make_reference_backend();
  const Model m = Model::load(out, check);
  std::printf("wrote %s: %s %s, %lld parameters, %s\n", out.c_str(), arch.c_str(), shape->name,
              static_cast<long long>(m.n_params()), dtype_name(dt));
  return 0;
}

// ---- bench -------------------------------------------------------------------------------

struct Stats {
  double mean = 0, sd = 0;
};

Stats stats(const std::vector<double>& v) {
  Stats s;
  if (v.empty()) return s;
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  double ss = 0;
  for (double x : v) ss += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(ss / static_cast<double>(v.size() - 1)) : 0.0;
  return s;
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Memory read bandwidth with the backend's threads: summing a 512 MiB buffer, best of 5. The
// buffer is allocated as weights are (alloc_weight_bytes: aligned, huge pages where allowed), so
// that the probe and the decode kernels read memory the same way.
double measure_bandwidth(CpuBackend& cpu) {
  const size_t n = size_t{512} << 20 >> 2;
  const std::shared_ptr<uint8_t> bytes = alloc_weight_bytes(n * sizeof(float));
  float* buf = reinterpret_cast<float*>(bytes.get());
  std::fill(buf, buf + n, 1.0f);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const double t0 = now();
    const double total = cpu.sum(buf, static_cast<int64_t>(n));
    const double dt = now() - t0;
    if (total != static_cast<double>(n)) throw Error("bandwidth probe summed wrongly");
    best = std::max(best, static_cast<double>(n * 4) / dt / 1e9);
  }
  return best;
}

// The process's peak resident memory since the last reset_peak_rss() (VmHWM), so that the
// bandwidth probe's buffer, measured first, does not count; getrusage's maximum where /proc is
// not there.
int64_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;
}

void reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
}

int run_bench(int argc, char** argv) {
  Args a("bench", "-m PATH [-p 512] [-n 128] [-d 0,4096] [-b 1,8] [-r 5] [-t N] [-o md|json]",
         {{{"-m", "--model"}, "PATH", "model directory or GGUF file"},
          dtype_flag(),
          ubatch_flag(),
          {{"-p", "--n-prompt"}, "N", "prompt-processing test of N tokens; 0 = none (default 512)"},
          {{"-n", "--n-gen"}, "N", "generation test of N tokens; 0 = none (default 128)"},
          {{"-d", "--n-depth"}, "LIST", "context depths for the generation test (default 0)"},
          {{"-b", "--batch"},
           "LIST",
           "sequences decoded together in the generation test, as the server batches them; "
           "t/s counts every sequence's tokens (default 1)"},
          {{"-r", "--repetitions"}, "N", "repetitions of each test (default 5)"},
          {{"-t", "--threads"}, "N", "threads (default: physical cores)"},
          {{"--reference"}, "", "use the float32 reference kernels"},
          {{"-o", "--output"}, "md|json", "output format (default md)"},
          {{"--plot"},
           "FILE.svg",
           "also draw decode t/s and memory per sequence against -d depths (needs gnuplot); "
           "`qrwkv plot` draws several models' reports together"}});
  a.parse(argc, argv);
  const int64_t n_prompt = a.get_int("--n-prompt", 512), n_gen = a.get_int("--n-gen", 128);
  const int64_t reps = a.get_int("--repetitions", 5);
  const int threads = static_cast<int>(a.get_int("--threads", physical_cores()));
  const std::string fmt = a.get("--output", "md");
  if (fmt != "md" && fmt != "json") throw UsageError("-o must be md or json");
  if (reps < 1 || threads < 1 || n_prompt < 0 || n_gen < 0)
    throw UsageError("counts must be positive");
  auto list = [&](const char* flag, const char* fallback, int64_t min) {
    std::vector<int64_t> v;
    std::stringstream ss(a.get(flag, fallback));
    for (std::string d; std::getline(ss, d, ',');) {
      try {
        size_t used = 0;
        v.push_back(std::stoll(d, &used));
        if (used != d.size() || v.back() < min) throw std::invalid_argument(d);
      } catch (const std::exception&) {
        throw UsageError(std::string(flag) + " expects comma-separated counts of at least " +
                         std::to_string(min));
      }
    }
    return v;
  };
  const std::vector<int64_t> depths = list("--n-depth", "0", 0);
  const std::vector<int64_t> batches = list("--batch", "1", 1);
  if (a.has("--plot")) check_plotter(a.get("--plot"));
  LoadOptions lo = load_options(a);
  auto cpu_be = std::make_shared<CpuBackend>(CpuOptions{threads, std::nullopt});
  if (!lo.backend) lo.backend = cpu_be;
  const double bandwidth_before = measure_bandwidth(*cpu_be);
  const double peak_fp32 = cpu_be->peak(CpuBackend::Probe::Fp32Fma) / 1e9;
  const double peak_bf16 = cpu_be->peak(CpuBackend::Probe::Bf16Dot) / 1e9;
  const double peak_int16 = cpu_be->peak(CpuBackend::Probe::Int16Dot) / 1e9;
  const double peak_int8 = cpu_be->peak(CpuBackend::Probe::Int8Dot) / 1e9;
  const double peak_amx = cpu_be->peak(CpuBackend::Probe::AmxBf16) / 1e9;
  reset_peak_rss();
  const Model m = Model::load(model_dir(a), lo);
  // The compute bound of prompt processing: the peak of the instructions that the MLP's
  // projections (most of the work) go through at this level.
  double peak = peak_fp32;
  const char* peak_name = "fp32 FMA";
  if (!a.has("--reference")) {
    const DType dt = m.weights.layers.empty() ? DType::F32 : m.weights.layers[0].up_proj.dtype;
    const ActivationRounding rounding = cpu::activation_rounding(cpu_be->level());
    const bool block = dt == DType::Q8_0 || dt == DType::Q4_0;
    if (cpu_be->level() == cpu::Isa::AMX && (block || dt == DType::BF16)) {
      // Block weights take two int8 tile products (each twice the bf16 rate) per product.
      peak = peak_amx;
      peak_name = "AMX bf16 tiles";
    } else if (rounding == ActivationRounding::Int8 && block) {
      peak = peak_int8;
      peak_name = "int8 dot";
    } else if (rounding == ActivationRounding::Int16 && block) {
      peak = peak_int16;
      peak_name = "int16 dot";
    } else if (rounding != ActivationRounding::Exact && dt == DType::BF16) {
      peak = peak_bf16;
      peak_name = "bf16 dot";
    }
  }

  // Bytes of weights read per generated token, as held in memory (the embedding contributes
  // one row), and the multiply-adds of the matrices per token.
  const int64_t weight_bytes = m.weights.bytes_per_token();
  const int64_t macs = m.weights.macs_per_token();

  std::vector<int32_t> tokens(static_cast<size_t>(std::max<int64_t>({n_prompt, 1})));
  uint32_t x = 12345;
  auto next_token = [&] {
    x = x * 1664525u + 1013904223u;
    return static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(m.config.vocab_size));
  };
  struct Row {
    std::string test;
    Stats ts;
    double rate;  // GB/s (generation) or GFLOP/s (prompt)
    const char* unit;
    int64_t depth = 0, batch = 1;
    int64_t state_bytes = -1;  // generation: memory of one sequence's state at that depth
  };
  std::vector<Row> rows;
  if (n_prompt > 0) {
    for (auto& t : tokens) t = next_token();
    std::vector<double> tps;
    {
      // As llama-bench does: one untimed run first (the weights' pages, the buffers).
      State s = m.new_state();
      forward(m, s, tokens, false);
    }
    for (int64_t r = 0; r < reps; ++r) {
      State s = m.new_state();
      const double t0 = now();
      forward(m, s, tokens, false);
      tps.push_back(static_cast<double>(n_prompt) / (now() - t0));
    }
    const Stats st = stats(tps);
    // A prompt needs lm_head for its last token only.
    const double flops_per_token =
        2.0 * static_cast<double>(macs - m.weights.lm_head.numel()) +
        2.0 * static_cast<double>(m.weights.lm_head.numel()) / static_cast<double>(n_prompt);
    rows.push_back(
        {"pp" + std::to_string(n_prompt), st, st.mean * flops_per_token / 1e9, "GFLOP/s"});
  }
  if (n_gen > 0) {
    for (int64_t B : batches)
      for (int64_t depth : depths) {
        std::vector<double> tps;
        State base = m.new_state();
        if (depth > 0) {
          std::vector<int32_t> ctx(static_cast<size_t>(depth));
          for (auto& t : ctx) t = next_token();
          forward(m, base, ctx, false);
        }
        std::vector<float> batch_logits(static_cast<size_t>(B * m.config.vocab_size));
        for (int64_t r = -1; r < reps; ++r) {  // r = -1: an untimed warm-up of a few steps
          std::vector<State> s(static_cast<size_t>(B), base);
          std::vector<int32_t> tok(static_cast<size_t>(B));
          for (auto& t : tok) t = next_token();
          // The decode step as the generation loop and the server's scheduler run it: one
          // token per sequence in, logits into buffers kept across steps.
          std::vector<SequenceInput> in(static_cast<size_t>(B));
          for (int64_t b = 0; b < B; ++b)
            in[b] = {&s[b], std::span<const int32_t>(&tok[b], 1),
                     batch_logits.data() + b * m.config.vocab_size, false};
          const double t0 = now();
          const int64_t steps = r < 0 ? std::min<int64_t>(n_gen, 4) : n_gen;
          for (int64_t i = 0; i < steps; ++i) {
            forward_batch(m, std::span<SequenceInput>(in));
            for (auto& t : tok) t = next_token();
          }
          if (r >= 0) tps.push_back(static_cast<double>(n_gen * B) / (now() - t0));
        }
        const Stats st = stats(tps);
        std::string name = "tg" + std::to_string(n_gen);
        if (B > 1) name += " x" + std::to_string(B);
        if (depth > 0) name += " @ d" + std::to_string(depth);
        // Weights are read once per step for the whole batch.
        rows.push_back({name, st,
                        st.mean / static_cast<double>(B) * static_cast<double>(weight_bytes) / 1e9,
                        "GB/s", depth, B, static_cast<int64_t>(base.bytes())});
      }
  }

  // The machine's bandwidth drifts (other tenants of the host): the bound is the better of the
  // probes before and after the tests, so that a row's share of it is not flattered by a slow
  // moment of the probe.
  const int64_t peak_rss = peak_rss_bytes();  // before the probe's buffer
  const double bandwidth_after = n_gen > 0 ? measure_bandwidth(*cpu_be) : 0.0;
  const double bandwidth = std::max(bandwidth_before, bandwidth_after);
  const std::string model_name = std::filesystem::path(m.dir).filename().string();
  const double size_gib = static_cast<double>(weight_bytes) / (1 << 30);
  const double rss_gib = static_cast<double>(peak_rss) / (1 << 30);
  const std::string kernels = a.has("--reference") ? "reference" : cpu::isa_name(cpu_be->level());
  nlohmann::ordered_json j = {{"model", model_name},
                              {"arch", arch_name(m.config.arch)},
                              {"size_bytes", weight_bytes},
                              {"params", m.n_params()},
                              {"dtype", m.storage_dtype()},
                              {"threads", threads},
                              {"kernels", kernels},
                              {"bandwidth_gbs", bandwidth},
                              {"peak_gflops",
                               {{"fp32_fma", peak_fp32},
                                {"bf16_dot", peak_bf16},
                                {"int16_dot", peak_int16},
                                {"int8_dot", peak_int8},
                                {"amx_bf16", peak_amx},
                                {"bound", peak_name}}},
                              {"peak_rss_bytes", peak_rss},
                              {"results", json::array()}};
  for (const auto& r : rows) {
    nlohmann::ordered_json row = {{"test", r.test},
                                  {"tps_mean", r.ts.mean},
                                  {"tps_sd", r.ts.sd},
                                  {r.unit == std::string("GB/s") ? "gbs" : "gflops", r.rate}};
    if (r.state_bytes >= 0) {
      row["depth"] = r.depth;
      row["batch"] = r.batch;
      row["state_bytes"] = r.state_bytes;
    }
    j["results"].push_back(std::move(row));
  }
  if (a.has("--plot")) plot_bench({j}, a.get("--plot"));
  if (fmt == "json") {
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf(
        "| model | arch | size | params | dtype | kernels | threads | test | t/s | achieved | peak "
        "RSS |\n");
    std::printf("| --- | --- | ---: | ---: | --- | --- | ---: | --- | ---: | ---: | ---: |\n");
    for (const auto& r : rows) {
      char achieved[96];
      if (std::string(r.unit) == "GB/s")
        std::snprintf(achieved, sizeof achieved, "%.1f GB/s (%.0f%% of %.1f)", r.rate,
                      100 * r.rate / bandwidth, bandwidth);
      else if (a.has("--reference"))
        std::snprintf(achieved, sizeof achieved, "%.1f GFLOP/s", r.rate);
      else
        std::snprintf(achieved, sizeof achieved, "%.1f GFLOP/s (%.0f%% of %.0f %s)", r.rate,
                      100 * r.rate / peak, peak, peak_name);
      std::printf(
          "| %s | %s | %.2f GiB | %.1fM | %s | %s | %d | %s | %.2f ± %.2f | %s | %.2f GiB |\n",
          model_name.c_str(), arch_name(m.config.arch), size_gib,
          static_cast<double>(m.n_params()) / 1e6, m.storage_dtype().c_str(), kernels.c_str(),
          threads, r.test.c_str(), r.ts.mean, r.ts.sd, achieved, rss_gib);
    }
    std::printf("\nmeasured memory read bandwidth: %.1f GB/s (%d threads", bandwidth, threads);
    if (bandwidth_after > 0)
      std::printf("; %.1f before the tests, %.1f after", bandwidth_before, bandwidth_after);
    std::printf(")\n");
    std::printf("measured compute peak: fp32 FMA %.0f GFLOP/s", peak_fp32);
    if (peak_bf16 > 0) std::printf(", bf16 dot %.0f GFLOP/s", peak_bf16);
    if (peak_int16 > 0) std::printf(", int16 dot %.0f GOP/s", peak_int16);
    if (peak_int8 > 0) std::printf(", int8 dot %.0f GOP/s", peak_int8);
    if (peak_amx > 0) std::printf(", AMX bf16 tiles %.0f GFLOP/s", peak_amx);
    std::printf(" (%d threads)\n", threads);
  }
  return 0;
}

CommandRegistrar synth_cmd({"synth", "write a random-weight checkpoint of a real model shape",
                            &run_synth});
CommandRegistrar bench_cmd({"bench", "measure prompt processing and generation speed", &run_bench});

}  // namespace

}  // namespace qrwkv::app
