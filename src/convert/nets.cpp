// Trainable transformer and QRWKV6 forward passes on ATen; see nets.h. The equations are those
// of src/model (docs/model.md, "Time mix" and "Attention"), written over whole batches [B, T, C] so
// that autograd can differentiate them.
#include "convert/nets.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "io/error.h"
#include "io/mapped_file.h"
#include "model/rope.h"
#include "model/weights.h"
#include "ops/tensor.h"

namespace qrwkv::convert {

namespace fs = std::filesystem;

namespace {

const char* const kMaaNames[5] = {"time_maa_r", "time_maa_k", "time_maa_v", "time_maa_w",
                                  "time_maa_g"};

std::string layer_prefix(int64_t l) { return "model.layers." + std::to_string(l) + "."; }

at::TensorOptions f32(at::Device device) {
  return at::TensorOptions().dtype(at::kFloat).device(device);
}

// y = x Wᵀ (+ b) for x [..., in], W [out, in].
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor* b) {
  at::Tensor y = at::matmul(x, w.t());
  if (b != nullptr && b->defined()) y = y + *b;
  return y;
}

}  // namespace

const at::Tensor& Net::p(const std::string& name) const {
  auto it = params.find(name);
  if (it == params.end()) fail(name, "tensor missing from the model");
  return it->second;
}

const at::Tensor& Net::lm_head() const {
  auto it = params.find("lm_head.weight");
  return it != params.end() ? it->second : p("model.embed_tokens.weight");
}

int64_t default_lora_tokenshift(int64_t C) { return C < 4096 ? 32 : 64; }
int64_t default_lora_decay(int64_t C) { return C < 4096 ? 64 : 128; }

Net load_net(const std::string& dir, at::Device device) {
  if (!fs::is_directory(dir)) fail(dir, "model directory does not exist");
  Net net;
  net.config = load_config((fs::path(dir) / "config.json").string());
  const WeightStore store = WeightStore::open(dir);
  // bind_weights checks every name and shape the architecture needs.
  bind_weights(net.config, store);
  net.lora_tokenshift = net.config.lora_rank_tokenshift;
  net.lora_decay = net.config.lora_rank_decay;
  net.source_dtype = store.get_any_shape("model.embed_tokens.weight").dtype;
  for (const std::string& name : store.names()) {
    const Tensor t = store.get_any_shape(name);
    const std::vector<float> data = to_f32(t);
    at::Tensor x = at::empty(t.shape, f32(at::kCPU));
    std::copy(data.begin(), data.end(), x.data_ptr<float>());
    net.params[name] = x.to(device);
  }
  if (net.config.arch != Arch::QRWKV6 && (net.config.arch != Arch::QRWKV7 || net.config.use_rope))
    net.rope_inv_freq = rope_inv_freq(net.config.rope, net.config.head_dim);
  return net;
}

json config_json(const Net& net, DType dtype) {
  const Config& c = net.config;
  const char* torch_dtype = dtype == DType::BF16  ? "bfloat16"
                            : dtype == DType::F16 ? "float16"
                                                  : "float32";
  json j;
  auto ids = [](const std::vector<int64_t>& v) -> json {
    if (v.empty()) return nullptr;
    if (v.size() == 1) return v[0];
    return v;
  };
  j["hidden_act"] = "silu";
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_attention_heads"] = c.num_heads;
  j["num_hidden_layers"] = c.num_layers;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["vocab_size"] = c.vocab_size;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["torch_dtype"] = torch_dtype;
  j["bos_token_id"] = c.bos_token_id >= 0 ? json(c.bos_token_id) : json(nullptr);
  j["eos_token_id"] = ids(c.eos_token_ids);
  j["initializer_range"] = 0.02;
  j["use_cache"] = true;
  j["attention_dropout"] = 0.0;
  j["max_position_embeddings"] = c.max_position_embeddings > 0 ? c.max_position_embeddings : 32768;
  if (c.arch == Arch::QRWKV7) {
    // The keys of configuration_rwkv7qwen2.py, every switch written out (its defaults are not
    // the trained variants'); the ranks are those of the tensors.
    auto rank = [&](const char* name) {
      auto it = net.params.find("model.layers.0.self_attn." + std::string(name));
      if (it == net.params.end())
        it = net.params.find("model.layers.1.self_attn." + std::string(name));
      return it == net.params.end() ? json(nullptr) : json(it->second.size(1));
    };
    j["architectures"] = {"RWKV7Qwen2ForCausalLM"};
    j["auto_map"] = {{"AutoConfig", "configuration_rwkv7qwen2.RWKV7Qwen2Config"},
                     {"AutoModelForCausalLM", "modeling_rwkv7qwen2.RWKV7Qwen2ForCausalLM"}};
    j["model_type"] = "rwkv7qwen2";
    j["head_dim"] = c.head_dim;
    j["attention_bias"] = c.qkv_bias;
    j["attention_output_bias"] = c.o_bias;
    j["use_rope"] = c.use_rope;
    j["balance_state"] = c.balance_state;
    j["groupnorm_att"] = c.groupnorm_att;
    j["gate_rank_type"] = c.gate_rank_type;
    j["lora_rank_decay"] = rank("w1");
    j["lora_rank_iclr"] = rank("a1");
    j["lora_rank_value_residual_mix"] = rank("v1");
    j["lora_rank_gate"] = c.gate_rank_type == 2 ? rank("g1") : json(nullptr);
    j["num_attention_layers"] = 0;
    j["use_tokenshift"] = false;
    j["max_window_layers"] = c.num_layers;
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
    j["transformers_version"] = "4.48.0";
  } else if (c.arch == Arch::QRWKV6) {
    // The keys of the published RWKV6Qwen2 configs; rope_theta and sliding_window are unused
    // leftovers of Qwen2 that its Hugging Face code still reads.
    j["architectures"] = {"RWKV6Qwen2ForCausalLM"};
    j["auto_map"] = {{"AutoConfig", "configuration_rwkv6qwen2.RWKV6Qwen2Config"},
                     {"AutoModelForCausalLM", "modeling_rwkv6qwen2.RWKV6Qwen2ForCausalLM"}};
    j["model_type"] = "rwkv6qwen2";
    j["attention_bias"] = c.qkv_bias;
    j["attention_output_bias"] = c.o_bias;
    j["lora_rank_tokenshift"] = net.lora_tokenshift;
    j["lora_rank_decay"] = net.lora_decay;
    j["max_window_layers"] = c.num_layers;
    j["rope_theta"] = c.rope.theta;
    j["sliding_window"] = j["max_position_embeddings"];
    j["use_sliding_window"] = false;
    j["transformers_version"] = "4.43.1";
  } else {
    const bool llama = c.arch == Arch::Llama;
    j["architectures"] = {llama ? "LlamaForCausalLM" : "Qwen2ForCausalLM"};
    j["model_type"] = llama ? "llama" : "qwen2";
    j["head_dim"] = c.head_dim;
    if (llama) {
      j["attention_bias"] = c.qkv_bias;
      j["mlp_bias"] = c.mlp_bias;
    } else {
      j["use_sliding_window"] = false;
      j["sliding_window"] = nullptr;
      j["max_window_layers"] = c.num_layers;
    }
  }
  if (c.arch != Arch::QRWKV6) {
    json rope = {{"rope_theta", c.rope.theta}};
    switch (c.rope.type) {
      case RopeConfig::Type::Default:
        rope["rope_type"] = "default";
        break;
      case RopeConfig::Type::Linear:
        rope["rope_type"] = "linear";
        rope["factor"] = c.rope.factor;
        break;
      case RopeConfig::Type::Llama3:
        rope["rope_type"] = "llama3";
        rope["factor"] = c.rope.factor;
        rope["low_freq_factor"] = c.rope.low_freq_factor;
        rope["high_freq_factor"] = c.rope.high_freq_factor;
        rope["original_max_position_embeddings"] = c.rope.original_max_position_embeddings;
        break;
    }
    // Both spellings: transformers ≥ 5 reads rope_parameters, older versions rope_theta.
    j["rope_parameters"] = rope;
    j["rope_theta"] = c.rope.theta;
  }
  return j;
}

void save_net(const Net& net, const std::string& dir, DType dtype) {
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F16)
    fail(dir, std::string("cannot save weights as ") + dtype_name(dtype) + " (F32, BF16 or F16)");
  fs::create_directories(dir);
  const at::ScalarType st = dtype == DType::BF16  ? at::kBFloat16
                            : dtype == DType::F16 ? at::kHalf
                                                  : at::kFloat;
  std::vector<at::Tensor> keep;  // owns the converted copies until they are written
  std::vector<TensorToWrite> out;
  for (const auto& [name, t] : net.params) {
    if (name == "lm_head.weight" && net.config.tie_word_embeddings) continue;
    keep.push_back(t.detach().to(at::kCPU).to(st).contiguous());
    out.push_back({name, dtype, t.sizes().vec(), keep.back().data_ptr()});
  }
  write_safetensors((fs::path(dir) / "model.safetensors").string(), out, {{"format", "pt"}});
  const std::string cfg = config_json(net, dtype).dump(2) + "\n";
  write_file_atomic((fs::path(dir) / "config.json").string(), cfg.data(), cfg.size());
}

namespace {

// What every student takes from its teacher: the whole teacher (q/k/v/o included) with an
// untied output head, under `arch`.
Net transfer(const Net& teacher, Arch arch) {
  const Config& tc = teacher.config;
  const std::string where = "conversion";
  if (tc.arch == Arch::QRWKV6 || tc.arch == Arch::QRWKV7)
    fail(where, std::string("the teacher is already a converted model (") + arch_name(tc.arch) +
                    "); convert a Qwen2 or LLaMA transformer");
  if (tc.head_dim * tc.num_heads != tc.hidden_size)
    fail(where,
         "the teacher's head_dim * num_attention_heads differs from hidden_size; the time "
         "mix needs whole heads of the hidden state");
  if (tc.mlp_bias) fail(where, "the teacher's MLP has biases, which the students do not have");
  Net s;
  s.config = tc;
  s.config.arch = arch;
  s.config.tie_word_embeddings = false;
  for (const auto& [name, t] : teacher.params) s.params[name] = t.detach().clone();
  if (tc.tie_word_embeddings) s.params["lm_head.weight"] = teacher.lm_head().detach().clone();
  return s;
}

// U(−0.01, 0.01) drawn on the CPU from `gen`, so that the values do not depend on the device.
at::Tensor small_uniform(at::Generator& gen, std::vector<int64_t> shape, at::Device device) {
  at::Tensor x = at::empty(shape, f32(at::kCPU));
  x.uniform_(-0.01, 0.01, gen);
  return x.to(device);
}

// An orthogonal [rows, cols] matrix times `scale` (with gain √(rows/cols) when rows > cols), as
// RWKV-7 initialises the second matrices of its LoRAs; drawn on the CPU from `gen`.
at::Tensor ortho(at::Generator& gen, int64_t rows, int64_t cols, double scale, at::Device device) {
  const bool tall = rows >= cols;
  at::Tensor x =
      at::empty({tall ? rows : cols, tall ? cols : rows}, f32(at::kCPU).dtype(at::kDouble));
  x.normal_(0.0, 1.0, gen);
  auto [q, r] = at::linalg_qr(x);
  // Signs from R's diagonal make the draw uniform over orthogonal matrices.
  q = q * at::sign(at::diagonal(r)).unsqueeze(0);
  if (!tall) q = q.t();
  const double gain = rows > cols ? std::sqrt(static_cast<double>(rows) / cols) : 1.0;
  return (q * (gain * scale)).to(at::kFloat).contiguous().to(device);
}

}  // namespace

Net make_student(const Net& teacher, int64_t lora_tokenshift, int64_t lora_decay, uint64_t seed) {
  if (lora_tokenshift <= 0 || lora_decay <= 0) fail("conversion", "LoRA ranks must be positive");
  Net s = transfer(teacher, Arch::QRWKV6);
  s.config.lora_rank_tokenshift = lora_tokenshift;
  s.config.lora_rank_decay = lora_decay;
  s.lora_tokenshift = lora_tokenshift;
  s.lora_decay = lora_decay;
  const int64_t C = s.config.hidden_size, L = s.config.num_layers;
  const at::Device device = teacher.p("model.embed_tokens.weight").device();
  const auto opt = f32(device);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto uniform = [&](std::vector<int64_t> shape) { return small_uniform(gen, shape, device); };
  for (int64_t l = 0; l < L; ++l) {
    const std::string a = layer_prefix(l) + "self_attn.";
    s.params[a + "time_maa_x"] = at::ones({1, 1, C}, opt);
    for (const char* n : kMaaNames) s.params[a + n] = at::zeros({1, 1, C}, opt);
    s.params[a + "time_maa_w1"] = at::zeros({C, 5 * lora_tokenshift}, opt);
    s.params[a + "time_maa_w2"] = uniform({5, lora_tokenshift, C});
    // A spread of decays per channel: slow channels remember long, fast ones only the last
    // tokens; deeper layers lean towards slower decays (larger exponent).
    at::Tensor n = at::arange(C, at::TensorOptions().dtype(at::kDouble));
    const double expo =
        0.7 + 1.3 * (L > 1 ? static_cast<double>(l) / static_cast<double>(L - 1) : 0.0);
    at::Tensor decay = -6.0 + 5.0 * at::pow(n / static_cast<double>(C > 1 ? C - 1 : 1), expo);
    s.params[a + "time_decay"] = decay.to(at::kFloat).reshape({1, 1, C}).to(device);
    s.params[a + "time_decay_w1"] = at::zeros({C, lora_decay}, opt);
    s.params[a + "time_decay_w2"] = uniform({lora_decay, C});
    s.params[a + "gate.weight"] = at::zeros({C, C}, opt);
  }
  return s;
}

int64_t default_lora7(int64_t C, double e, double m) {
  const double x = std::pow(static_cast<double>(C), e) * m / 32.0;
  return std::max<int64_t>(1, static_cast<int64_t>(std::llround(x))) * 32;
}

Net make_student7(const Net& teacher, const Qrwkv7Options& o, uint64_t seed) {
  Net s = transfer(teacher, Arch::QRWKV7);
  Config& c = s.config;
  const int64_t C = c.hidden_size, L = c.num_layers, H = c.num_heads, N = c.head_dim;
  if (o.use_rope && N % 2 != 0) fail("conversion", "RoPE needs an even head size");
  const int64_t Dw = o.lora_decay > 0 ? o.lora_decay : default_lora7(C, 0.5, 1.8);
  const int64_t Da = o.lora_iclr > 0 ? o.lora_iclr : default_lora7(C, 0.5, 1.8);
  const int64_t Dv = o.lora_value > 0 ? o.lora_value : default_lora7(C, 0.5, 1.3);
  const int64_t Dg = o.lora_gate > 0 ? o.lora_gate : default_lora7(C, 0.8, 0.6);
  c.use_rope = o.use_rope;
  c.balance_state = o.balance_state;
  c.groupnorm_att = !o.balance_state;  // the two combinations that were trained
  c.gate_rank_type = 2;
  c.lora_rank_decay = Dw;
  c.lora_rank_iclr = Da;
  c.lora_rank_value_residual_mix = Dv;
  c.lora_rank_gate = Dg;
  s.rope_inv_freq = o.use_rope ? teacher.rope_inv_freq : std::vector<double>{};
  const at::Device device = teacher.p("model.embed_tokens.weight").device();
  const auto opt = f32(device);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto second = [&](int64_t rank) { return ortho(gen, rank, C, 0.1, device); };
  for (int64_t l = 0; l < L; ++l) {
    const std::string a = layer_prefix(l) + "self_attn.";
    const double depth = L > 1 ? static_cast<double>(l) / static_cast<double>(L - 1) : 0.0;
    // Decay pre-activations −6.5 … −1.5 across the channels (RWKV-7's spread): sigmoid of them
    // gives per-token decays w from 0.9991 (remember long) down to 0.90; deeper layers keep more
    // channels slow (larger exponent).
    at::Tensor n = at::arange(C, at::TensorOptions().dtype(at::kDouble));
    at::Tensor w0 =
        -6.5 + 5.0 * at::pow(n / static_cast<double>(C > 1 ? C - 1 : 1), 0.85 + std::sqrt(depth));
    s.params[a + "w0"] = w0.to(at::kFloat).reshape({1, 1, C}).to(device);
    s.params[a + "w1"] = at::zeros({C, Dw}, opt);
    s.params[a + "w2"] = second(Dw);
    s.params[a + "a0"] = at::zeros({1, 1, C}, opt);  // learning rate 0.5 everywhere
    s.params[a + "a1"] = at::zeros({C, Da}, opt);
    s.params[a + "a2"] = second(Da);
    s.params[a + "v0"] = at::ones({1, 1, C}, opt);  // ν = sigmoid(1) ≈ 0.73 towards v_first
    s.params[a + "v1"] = at::zeros({C, Dv}, opt);
    s.params[a + "v2"] = second(Dv);
    s.params[a + "g1"] = at::zeros({C, Dg}, opt);  // gate sigmoid(0) g2: 0.5 · the sum of g2's rows
    s.params[a + "g2"] = second(Dg);
    s.params[a + "k_k"] = at::full({1, 1, C}, 0.85, opt);
    s.params[a + "k_a"] = at::ones({1, 1, C}, opt);
    s.params[a + "r_k"] = at::zeros({H, N}, opt);  // never used: the time mix has no bonus
    if (c.groupnorm_att) {
      s.params[a + "ln_x.weight"] = at::ones({C}, opt);
      s.params[a + "ln_x.bias"] = at::zeros({C}, opt);
    }
  }
  return s;
}

Net make_transformer(const Config& config, uint64_t seed, at::Device device) {
  if (config.arch != Arch::Qwen2) fail("pretrain", "only Qwen2 transformers are made from scratch");
  Net net;
  net.config = config;
  const Config& c = config;
  const int64_t C = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
  const int64_t QD = c.num_heads * c.head_dim, KVD = c.kv_dim();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto normal = [&](std::vector<int64_t> shape) {
    at::Tensor x = at::empty(shape, f32(at::kCPU));
    x.normal_(0.0, 0.02, gen);
    return x.to(device);
  };
  const auto opt = f32(device);
  net.params["model.embed_tokens.weight"] = normal({V, C});
  net.params["model.norm.weight"] = at::ones({C}, opt);
  if (!c.tie_word_embeddings) net.params["lm_head.weight"] = normal({V, C});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = layer_prefix(l);
    net.params[p + "input_layernorm.weight"] = at::ones({C}, opt);
    net.params[p + "post_attention_layernorm.weight"] = at::ones({C}, opt);
    net.params[p + "self_attn.q_proj.weight"] = normal({QD, C});
    net.params[p + "self_attn.q_proj.bias"] = at::zeros({QD}, opt);
    net.params[p + "self_attn.k_proj.weight"] = normal({KVD, C});
    net.params[p + "self_attn.k_proj.bias"] = at::zeros({KVD}, opt);
    net.params[p + "self_attn.v_proj.weight"] = normal({KVD, C});
    net.params[p + "self_attn.v_proj.bias"] = at::zeros({KVD}, opt);
    net.params[p + "self_attn.o_proj.weight"] = normal({C, QD});
    net.params[p + "mlp.gate_proj.weight"] = normal({F, C});
    net.params[p + "mlp.up_proj.weight"] = normal({F, C});
    net.params[p + "mlp.down_proj.weight"] = normal({C, F});
  }
  net.rope_inv_freq = rope_inv_freq(c.rope, c.head_dim);
  return net;
}

at::Tensor rmsnorm(const at::Tensor& x, const at::Tensor& w, double eps) {
  return w * (x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps));
}

namespace {

const at::Tensor* find(const Net& net, const std::string& name) {
  auto it = net.params.find(name);
  return it == net.params.end() ? nullptr : &it->second;
}

// Rotate-half RoPE on x [B, T, heads, D] for positions 0..T−1; angles in double as the engine.
at::Tensor apply_rope(const at::Tensor& x, const std::vector<double>& inv_freq) {
  const int64_t T = x.size(1), D = x.size(3), half = D / 2;
  at::Tensor pos = at::arange(T, at::TensorOptions().dtype(at::kDouble));
  at::Tensor inv = at::empty({half}, at::TensorOptions().dtype(at::kDouble));
  for (int64_t i = 0; i < half; ++i) inv[i] = inv_freq[static_cast<size_t>(i)];
  at::Tensor angle = at::outer(pos, inv);  // [T, D/2]
  at::Tensor cs = at::cos(angle).to(at::kFloat).to(x.device()).reshape({1, T, 1, half});
  at::Tensor sn = at::sin(angle).to(at::kFloat).to(x.device()).reshape({1, T, 1, half});
  at::Tensor x1 = x.narrow(3, 0, half), x2 = x.narrow(3, half, half);
  return at::cat({x1 * cs - x2 * sn, x2 * cs + x1 * sn}, 3);
}

}  // namespace

at::Tensor attention(const Net& net, int64_t l, const at::Tensor& a) {
  const Config& c = net.config;
  const int64_t B = a.size(0), T = a.size(1), H = c.num_heads, Hkv = c.num_kv_heads, D = c.head_dim;
  const std::string p = layer_prefix(l) + "self_attn.";
  at::Tensor q =
      linear(a, net.p(p + "q_proj.weight"), find(net, p + "q_proj.bias")).view({B, T, H, D});
  at::Tensor k =
      linear(a, net.p(p + "k_proj.weight"), find(net, p + "k_proj.bias")).view({B, T, Hkv, D});
  at::Tensor v =
      linear(a, net.p(p + "v_proj.weight"), find(net, p + "v_proj.bias")).view({B, T, Hkv, D});
  q = apply_rope(q, net.rope_inv_freq);
  k = apply_rope(k, net.rope_inv_freq);
  // q-head h reads kv-head ⌊h/G⌋.
  k = k.repeat_interleave(H / Hkv, 2);
  v = v.repeat_interleave(H / Hkv, 2);
  q = q.transpose(1, 2);  // [B, H, T, D]
  k = k.transpose(1, 2);
  v = v.transpose(1, 2);
  at::Tensor scores =
      at::matmul(q, k.transpose(-1, -2)) * (1.0 / std::sqrt(static_cast<double>(D)));
  at::Tensor future =
      at::ones({T, T}, at::TensorOptions().dtype(at::kBool).device(a.device())).triu(1);
  scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  at::Tensor o = at::matmul(at::softmax(scores, -1), v);  // [B, H, T, D]
  o = o.transpose(1, 2).reshape({B, T, H * D});
  return linear(o, net.p(p + "o_proj.weight"), find(net, p + "o_proj.bias"));
}

at::Tensor wkv_chunked(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& log_w) {
  constexpr int64_t L = 16;
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), N = q.size(3);
  const int64_t NC = (T + L - 1) / L, Tp = NC * L;
  // Padding tokens have q = k = v = 0 and log w = 0 (no decay): they change neither the
  // outputs of the real tokens before them nor anything else.
  auto chunks = [&](const at::Tensor& x) {
    at::Tensor y = Tp == T ? x : at::constant_pad_nd(x, {0, 0, 0, 0, 0, Tp - T});
    return y.view({B, NC, L, H, N}).permute({0, 3, 1, 2, 4});  // [B, H, NC, L, N]
  };
  const at::Tensor qc = chunks(q), kc = chunks(k), vc = chunks(v), lw = chunks(log_w);
  const at::Tensor gamma = lw.cumsum(3);  // Γ_i = Σ_{l≤i} log w_l inside the chunk, ≤ 0

  // Inside a chunk: A[i, j] = Σ_d q_i[d] k_j[d] exp(Γ_i[d] − Γ_j[d]) for j ≤ i. Every exponent
  // kept is ≤ 0; the ones above the diagonal are masked to −inf before exp, so neither value
  // nor gradient can overflow.
  at::Tensor diff = gamma.unsqueeze(4) - gamma.unsqueeze(3);  // [B, H, NC, L(i), L(j), N]
  at::Tensor causal = at::ones({L, L}, at::TensorOptions().dtype(at::kBool).device(q.device()))
                          .tril()
                          .reshape({L, L, 1});
  diff = diff.masked_fill(causal.logical_not(), -std::numeric_limits<float>::infinity());
  at::Tensor A = (qc.unsqueeze(4) * kc.unsqueeze(3) * diff.exp()).sum(-1);  // [B, H, NC, L, L]
  at::Tensor o = at::matmul(A, vc);                                         // [B, H, NC, L, N]

  // Each chunk's contribution to the state it leaves: Σ_j (k_j ⊙ exp(Γ_last − Γ_j))ᵀ v_j.
  const at::Tensor gamma_last = gamma.narrow(3, L - 1, 1);  // [B, H, NC, 1, N]
  at::Tensor U =
      at::matmul((kc * (gamma_last - gamma).exp()).transpose(-1, -2), vc);  // [B,H,NC,N,N]
  at::Tensor chunk_decay = gamma_last.exp().squeeze(3).unsqueeze(-1);       // [B, H, NC, N, 1]

  // The states entering each chunk, carried chunk to chunk: S' = diag(exp(Γ_last)) S + U.
  std::vector<at::Tensor> states;
  states.reserve(static_cast<size_t>(NC));
  at::Tensor S = at::zeros({B, H, N, N}, q.options());
  for (int64_t c = 0; c < NC; ++c) {
    states.push_back(S);
    if (c + 1 < NC) S = chunk_decay.select(2, c) * S + U.select(2, c);
  }
  at::Tensor S0 = at::stack(states, 2);  // [B, H, NC, N, N]
  o = o + at::matmul(qc * gamma.exp(), S0);
  o = o.permute({0, 2, 3, 1, 4}).reshape({B, Tp, H, N});
  return Tp == T ? o : o.narrow(1, 0, T);
}

at::Tensor time_mix(const Net& net, int64_t l, const at::Tensor& a) {
  const Config& c = net.config;
  const int64_t B = a.size(0), T = a.size(1), C = c.hidden_size, H = c.num_heads;
  const int64_t Hkv = c.num_kv_heads, N = c.head_dim, Dm = net.lora_tokenshift;
  const std::string p = layer_prefix(l) + "self_attn.";

  // Token shift: d = x_prev − a with x_prev the previous token's input (zeros before the first).
  at::Tensor prev = at::constant_pad_nd(a, {0, 0, 1, 0}).narrow(1, 0, T);  // [B, T, C]
  at::Tensor d = prev - a;
  // z = tanh((a + d ⊙ maa_x) @ w1): five slices of Dm, in the order r, k, v, w, g.
  at::Tensor z = at::tanh(at::matmul(a + d * net.p(p + "time_maa_x"), net.p(p + "time_maa_w1")));
  z = z.view({B, T, 5, Dm}).permute({2, 0, 1, 3});  // [5, B, T, Dm]
  // time_maa_w2 [5, Dm, C]: slice s maps z_s to a per-channel shift of the mix coefficients.
  at::Tensor m = at::matmul(z, net.p(p + "time_maa_w2").unsqueeze(1));  // [5, B, T, C]
  at::Tensor xs[5];
  for (int s = 0; s < 5; ++s) xs[s] = a + d * (net.p(p + kMaaNames[s]) + m.select(0, s));

  // q_proj is the receptance. r, g: [B, T, C]; k, v: [B, T, Hkv·N].
  at::Tensor r = linear(xs[0], net.p(p + "q_proj.weight"), find(net, p + "q_proj.bias"));
  at::Tensor k = linear(xs[1], net.p(p + "k_proj.weight"), find(net, p + "k_proj.bias"));
  at::Tensor v = linear(xs[2], net.p(p + "v_proj.weight"), find(net, p + "v_proj.bias"));
  at::Tensor g = at::sigmoid(linear(xs[4], net.p(p + "gate.weight"), nullptr));

  // log w = −exp(time_decay + tanh(x_w @ Dw1) @ Dw2), [B, T, C]. A decay below e^−60 wipes the
  // state as thoroughly as any smaller one (the state would have to exceed its new input by
  // 26 orders of magnitude to show the difference); the bound keeps a chunk's cumulative sums
  // within 16 · 60, so that their differences lose little float32 precision.
  at::Tensor dd = at::matmul(at::tanh(at::matmul(xs[3], net.p(p + "time_decay_w1"))),
                             net.p(p + "time_decay_w2"));
  at::Tensor log_w = (-at::exp(net.p(p + "time_decay") + dd)).clamp_min(-60.0);

  // k, v: [Hkv, N] heads repeated G times; k̃ = k ⊙ (1 − w) with 1 − w = −expm1(log w), which
  // keeps slow decays exact.
  const int64_t G = H / Hkv;
  k = k.view({B, T, Hkv, N}).repeat_interleave(G, 2);
  v = v.view({B, T, Hkv, N}).repeat_interleave(G, 2);
  log_w = log_w.view({B, T, H, N});
  at::Tensor kt = k * (-at::expm1(log_w));
  at::Tensor q = r.view({B, T, H, N}) * (1.0 / std::sqrt(static_cast<double>(N)));
  at::Tensor o = wkv_chunked(q, kt, v, log_w).reshape({B, T, C});
  return linear(o * g, net.p(p + "o_proj.weight"), find(net, p + "o_proj.bias"));
}

at::Tensor wkv7_chunked(const at::Tensor& r, const at::Tensor& log_w, const at::Tensor& alpha,
                        const at::Tensor& beta, const at::Tensor& kt, const at::Tensor& v) {
  // Within a chunk, with Γ_t = Σ_{l≤t} log w_l and Γ⁻_t = Γ_t − log w_t, the removal readouts
  // u_t = β_tᵀ S_{t−1} solve a unit lower-triangular system (the WY / UT transform):
  //   u_t − Σ_{j<t} (β_t e^{Γ⁻_t})·(α_j e^{−Γ_j}) u_j = (β_t e^{Γ⁻_t})ᵀ S_0 + Σ_{j<t} (β_t
  //   e^{Γ⁻_t})·(k̃_j e^{−Γ_j}) v_j
  // and then y_t = (r_t e^{Γ_t})ᵀ S_0 + Σ_{j≤t} (r_t e^{Γ_t})·(α_j e^{−Γ_j}) u_j + (…)·(k̃_j
  // e^{−Γ_j}) v_j. QRWKV7's log w > −e^−0.5 > −0.61, so over 16 tokens e^{−Γ} < e^{9.8}: every
  // factor stays far inside float32, and the products (which are the true e^{Γ_t−Γ_j} ≤ 1) keep
  // their relative precision.
  constexpr int64_t L = 16;
  const int64_t B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  const int64_t NC = (T + L - 1) / L, Tp = NC * L;
  // Padding tokens have every input 0 and log w = 0: they change nothing.
  auto chunks = [&](const at::Tensor& x) {
    at::Tensor y = Tp == T ? x : at::constant_pad_nd(x, {0, 0, 0, 0, 0, Tp - T});
    return y.view({B, NC, L, H, N}).permute({0, 3, 1, 2, 4});  // [B, H, NC, L, N]
  };
  const at::Tensor rc = chunks(r), ac = chunks(alpha), bc = chunks(beta), kc = chunks(kt),
                   vc = chunks(v), lw = chunks(log_w);
  const at::Tensor gamma = lw.cumsum(3);
  const at::Tensor inv = (-gamma).exp();
  const at::Tensor A_ = ac * inv, K_ = kc * inv;  // j side
  const at::Tensor Bh = bc * (gamma - lw).exp();  // t side of the readouts
  const at::Tensor Rh = rc * gamma.exp();         // t side of the outputs
  const auto bopt = at::TensorOptions().dtype(at::kBool).device(r.device());
  const at::Tensor incl = at::ones({L, L}, bopt).tril();
  const at::Tensor strict = at::ones({L, L}, bopt).tril(-1);
  const at::Tensor Mab = at::matmul(Bh, A_.transpose(-1, -2)).masked_fill(strict.logical_not(), 0);
  const at::Tensor Mak = at::matmul(Bh, K_.transpose(-1, -2)).masked_fill(strict.logical_not(), 0);
  const at::Tensor Mra = at::matmul(Rh, A_.transpose(-1, -2)).masked_fill(incl.logical_not(), 0);
  const at::Tensor Mrk = at::matmul(Rh, K_.transpose(-1, -2)).masked_fill(incl.logical_not(), 0);
  // U = W S_0 + U0 with [W | U0] = (I − Mab)⁻¹ [B̂ | Mak V].
  const at::Tensor I = at::eye(L, r.options());
  const at::Tensor X = at::linalg_solve_triangular(I - Mab, at::cat({Bh, at::matmul(Mak, vc)}, -1),
                                                   /*upper=*/false, /*left=*/true,
                                                   /*unitriangular=*/true);
  const at::Tensor W = X.narrow(-1, 0, N), U0 = X.narrow(-1, N, N);
  // Outputs: Y = (R̂ + Mra W) S_0 + (Mra U0 + Mrk V).
  const at::Tensor Q = Rh + at::matmul(Mra, W);
  const at::Tensor Y0 = at::matmul(Mra, U0) + at::matmul(Mrk, vc);
  // The state a chunk leaves: S' = (diag(e^{Γ_L}) + Aendᵀ W) S + (Aendᵀ U0 + Kendᵀ V), with
  // Aend = α e^{Γ_L − Γ}, Kend = k̃ e^{Γ_L − Γ}.
  const at::Tensor gl = gamma.narrow(3, L - 1, 1);  // [B, H, NC, 1, N]
  const at::Tensor tail = (gl - gamma).exp();
  const at::Tensor Aend = (ac * tail).transpose(-1, -2), Kend = (kc * tail).transpose(-1, -2);
  const at::Tensor P = at::diag_embed(gl.squeeze(3).exp()) + at::matmul(Aend, W);  // [B,H,NC,N,N]
  const at::Tensor D = at::matmul(Aend, U0) + at::matmul(Kend, vc);
  std::vector<at::Tensor> states;
  states.reserve(static_cast<size_t>(NC));
  at::Tensor S = at::zeros({B, H, N, N}, r.options());
  for (int64_t c = 0; c < NC; ++c) {
    states.push_back(S);
    if (c + 1 < NC) S = at::matmul(P.select(2, c), S) + D.select(2, c);
  }
  at::Tensor y = at::matmul(Q, at::stack(states, 2)) + Y0;  // [B, H, NC, L, N]
  y = y.permute({0, 2, 3, 1, 4}).reshape({B, Tp, H, N});
  return Tp == T ? y : y.narrow(1, 0, T);
}

at::Tensor time_mix7(const Net& net, int64_t l, const at::Tensor& x, at::Tensor& v_first) {
  const Config& c = net.config;
  const int64_t B = x.size(0), T = x.size(1), C = c.hidden_size, H = c.num_heads;
  const int64_t Hkv = c.num_kv_heads, N = c.head_dim, G = H / Hkv;
  const std::string p = layer_prefix(l) + "self_attn.";
  auto lora = [&](const char* a, const char* b) {
    return at::matmul(at::matmul(x, net.p(p + a)), net.p(p + b));
  };
  at::Tensor r = linear(x, net.p(p + "q_proj.weight"), find(net, p + "q_proj.bias"));
  at::Tensor k = linear(x, net.p(p + "k_proj.weight"), find(net, p + "k_proj.bias"));
  at::Tensor v = linear(x, net.p(p + "v_proj.weight"), find(net, p + "v_proj.bias"));
  const at::Tensor d =
      net.p(p + "w0") + at::matmul(at::tanh(at::matmul(x, net.p(p + "w1"))), net.p(p + "w2"));
  const at::Tensor a = at::sigmoid(net.p(p + "a0") + lora("a1", "a2")).view({B, T, H, N});
  const at::Tensor g =
      c.gate_rank_type == 2
          ? at::matmul(at::sigmoid(at::matmul(x, net.p(p + "g1"))), net.p(p + "g2"))
          : at::sigmoid(linear(x, net.p(p + "gate.weight"), nullptr));
  r = r.view({B, T, H, N});
  k = k.view({B, T, Hkv, N});
  if (c.use_rope) {
    r = apply_rope(r, net.rope_inv_freq);
    k = apply_rope(k, net.rope_inv_freq);
  }
  // GQA: q-head h reads kv-head ⌊h/G⌋; from here on everything is C wide.
  k = k.repeat_interleave(G, 2).reshape({B, T, C});
  v = v.view({B, T, Hkv, N}).repeat_interleave(G, 2).reshape({B, T, C});
  if (l == 0) {
    v_first = v;
  } else {
    const at::Tensor nu = at::sigmoid(net.p(p + "v0") + lora("v1", "v2"));
    v = v + (v_first - v) * nu;
  }
  // log w = −e^−0.5 · sigmoid(d) ∈ (−0.607, 0).
  const at::Tensor log_w = (-std::exp(-0.5) * at::sigmoid(d)).view({B, T, H, N});
  at::Tensor kappa, kt;
  const at::Tensor kh = k.view({B, T, H, N});
  if (c.balance_state) {
    kappa = kh;
    kt = kh * (1.0 - log_w.exp() + a);  // k ⊙ (1 − w + a)
  } else {
    kappa = (k * net.p(p + "k_k")).view({B, T, H, N});
    kt = kh * (1.0 + (a - 1.0) * net.p(p + "k_a").view({1, 1, H, N}));
  }
  kappa = kappa / kappa.norm(2, -1, /*keepdim=*/true).clamp_min(1e-12);
  at::Tensor y = wkv7_chunked(r, log_w, -kappa * a, kappa, kt, v.view({B, T, H, N}));
  if (c.groupnorm_att) {
    // Per-head GroupNorm, biased variance, eps N·1e-5, then the affine ln_x.
    const at::Tensor mean = y.mean(-1, /*keepdim=*/true);
    const at::Tensor var = (y - mean).pow(2).mean(-1, /*keepdim=*/true);
    y = ((y - mean) * at::rsqrt(var + static_cast<double>(N) * 1e-5)).reshape({B, T, C});
    y = y * net.p(p + "ln_x.weight") + net.p(p + "ln_x.bias");
  } else {
    y = y.reshape({B, T, C}) * (1.0 / std::sqrt(static_cast<double>(N)));
  }
  return linear(y * g, net.p(p + "o_proj.weight"), find(net, p + "o_proj.bias"));
}

at::Tensor mixer(const Net& net, int64_t l, const at::Tensor& a, at::Tensor& v_first) {
  switch (net.config.arch) {
    case Arch::QRWKV6:
      return time_mix(net, l, a);
    case Arch::QRWKV7:
      return time_mix7(net, l, a, v_first);
    default:
      return attention(net, l, a);
  }
}

at::Tensor forward(const Net& net, const at::Tensor& tokens, std::vector<LayerIO>* capture) {
  const Config& c = net.config;
  const double eps = c.rms_norm_eps;
  at::Tensor h = at::embedding(net.p("model.embed_tokens.weight"), tokens);
  if (capture != nullptr) capture->clear();
  at::Tensor v_first;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = layer_prefix(l);
    at::Tensor a = rmsnorm(h, net.p(p + "input_layernorm.weight"), eps);
    at::Tensor y = mixer(net, l, a, v_first);
    if (capture != nullptr) capture->push_back({a, y});
    h = h + y;
    // SwiGLU MLP: h += down(silu(gate(m)) * up(m)).
    at::Tensor m = rmsnorm(h, net.p(p + "post_attention_layernorm.weight"), eps);
    at::Tensor gate =
        linear(m, net.p(p + "mlp.gate_proj.weight"), find(net, p + "mlp.gate_proj.bias"));
    at::Tensor up = linear(m, net.p(p + "mlp.up_proj.weight"), find(net, p + "mlp.up_proj.bias"));
    h = h + linear(at::silu(gate) * up, net.p(p + "mlp.down_proj.weight"),
                   find(net, p + "mlp.down_proj.bias"));
  }
  return at::matmul(rmsnorm(h, net.p("model.norm.weight"), eps), net.lm_head().t());
}

at::Tensor next_token_loss(const at::Tensor& logits, const at::Tensor& tokens) {
  const int64_t T = logits.size(1), V = logits.size(2);
  at::Tensor logp = at::log_softmax(logits.narrow(1, 0, T - 1).reshape({-1, V}), -1);
  at::Tensor target = tokens.narrow(1, 1, T - 1).reshape({-1, 1});
  return -logp.gather(1, target).mean();
}

at::Tensor kl_loss(const at::Tensor& teacher_logits, const at::Tensor& student_logits) {
  at::Tensor lt = at::log_softmax(teacher_logits, -1), ls = at::log_softmax(student_logits, -1);
  return (lt.exp() * (lt - ls)).sum(-1).mean();
}

at::Tensor alignment_loss(const Net& student, const std::vector<LayerIO>& teacher_io,
                          std::vector<double>* per_layer) {
  const double inv_sqrt_c = 1.0 / std::sqrt(static_cast<double>(student.config.hidden_size));
  at::Tensor total;
  if (per_layer != nullptr) per_layer->clear();
  // QRWKV7's later layers read the values of the student's layer 0 on the teacher's layer-0
  // input, as they would inside the student.
  at::Tensor v_first;
  for (size_t l = 0; l < teacher_io.size(); ++l) {
    at::Tensor y = mixer(student, static_cast<int64_t>(l), teacher_io[l].input.detach(), v_first);
    at::Tensor loss =
        ((y - teacher_io[l].output.detach()).pow(2).sum(-1).sqrt() * inv_sqrt_c).mean();
    if (per_layer != nullptr) per_layer->push_back(loss.item<double>());
    total = total.defined() ? total + loss : loss;
  }
  return total / static_cast<double>(teacher_io.size());
}

std::vector<std::string> time_mix_param_names(const Net& net) {
  std::vector<std::string> out;
  for (const auto& [name, t] : net.params)
    if (name.find(".self_attn.") != std::string::npos) out.push_back(name);
  return out;
}

}  // namespace qrwkv::convert
