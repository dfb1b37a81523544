// The parent transformers (config.json model_type "qwen2" and "llama"): the layer skeleton of
// model.cpp with softmax attention over a KV cache as the sequence mixer (docs/model.md). The
// two differ only in switches: Qwen2 always has q/k/v biases and no o_proj bias; LLaMA has
// `attention_bias` (q/k/v/o) and `mlp_bias`. Per layer, for T tokens a [T, C] at positions
// pos0 .. pos0 + T − 1:
//
//   q = a Wqᵀ + bq ;  k = a Wkᵀ + bk ;  v = a Wvᵀ + bv
//   q, k ← RoPE(q, pos), RoPE(k, pos)   rotate-half: (x1, x2) → (x1 cos − x2 sin, x2 cos + x1 sin)
//   K, V ← K, V with k, v appended      (the state: the cache of every token seen)
//   per head h (kv-head ⌊h/G⌋):  o = softmax(q Kᵀ / sqrt(D) over positions ≤ pos) V
//   out = o Woᵀ + bo
#include <cmath>
#include <memory>

#include "io/error.h"
#include "model/architecture.h"
#include "model/config_keys.h"
#include "model/rope.h"
#include "model/weights.h"

namespace qrwkv {

RopeConfig parse_rope(const json& j, const std::string& where) {
  RopeConfig r;
  json params = json::object();
  if (auto it = j.find("rope_parameters"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) fail(where, "config key 'rope_parameters' must be an object");
    params = *it;
  } else {
    if (auto s = j.find("rope_scaling"); s != j.end() && !s->is_null()) {
      if (!s->is_object()) fail(where, "config key 'rope_scaling' must be an object or null");
      params = *s;
    }
    if (auto t = j.find("rope_theta"); t != j.end()) params["rope_theta"] = *t;
  }
  r.theta = get_number_or(params, "rope_theta", 10000.0, where);
  if (r.theta <= 0) fail(where, "rope_theta must be positive");
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    if (auto it = params.find(key); it != params.end() && it->is_string()) {
      type = it->get<std::string>();
      break;
    }
  }
  if (type == "default") {
    r.type = RopeConfig::Type::Default;
  } else if (type == "linear") {
    r.type = RopeConfig::Type::Linear;
    r.factor = get_number_or(params, "factor", 1.0, where);
  } else if (type == "llama3") {
    r.type = RopeConfig::Type::Llama3;
    r.factor = get_number_or(params, "factor", 8.0, where);
    r.low_freq_factor = get_number_or(params, "low_freq_factor", 1.0, where);
    r.high_freq_factor = get_number_or(params, "high_freq_factor", 4.0, where);
    r.original_max_position_embeddings =
        get_dim_or(params, "original_max_position_embeddings", 8192, where);
    if (r.high_freq_factor <= r.low_freq_factor)
      fail(where, "llama3 rope scaling needs high_freq_factor > low_freq_factor");
  } else {
    fail(where, "unsupported rope type '" + type + "' (supported: default, linear, llama3)");
  }
  if (r.factor <= 0) fail(where, "rope scaling factor must be positive");
  return r;
}

std::vector<double> rope_inv_freq(const RopeConfig& rope, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  std::vector<double> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv[i] = 1.0 / std::pow(rope.theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
  if (rope.type == RopeConfig::Type::Linear) {
    for (double& f : inv) f /= rope.factor;
  } else if (rope.type == RopeConfig::Type::Llama3) {
    // LLaMA 3.1: keep high frequencies, divide low ones by `factor`, blend in between.
    const double old_ctx = static_cast<double>(rope.original_max_position_embeddings);
    const double low_wavelen = old_ctx / rope.low_freq_factor;
    const double high_wavelen = old_ctx / rope.high_freq_factor;
    for (double& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f /= rope.factor;
      } else {
        const double smooth = (old_ctx / wavelen - rope.low_freq_factor) /
                              (rope.high_freq_factor - rope.low_freq_factor);
        f = (1.0 - smooth) * f / rope.factor + smooth * f;
      }
    }
  }
  if (!rope.freq_factors.empty()) {
    if (static_cast<int64_t>(rope.freq_factors.size()) != half)
      fail("rope_freqs", "has " + std::to_string(rope.freq_factors.size()) +
                             " factors, expected head_dim / 2 = " + std::to_string(half));
    for (int64_t i = 0; i < half; ++i) inv[i] /= rope.freq_factors[i];
  }
  return inv;
}

namespace {

struct Attention final : LayerMix {
  int64_t H = 0, Hkv = 0, D = 0;
  std::shared_ptr<const std::vector<double>> inv_freq;  // [D/2], shared by the layers

  // self_attn.*
  Tensor q_proj, q_bias;  // [H·D, C], [H·D]
  Tensor k_proj, k_bias;  // [Hkv·D, C], [Hkv·D]
  Tensor v_proj, v_bias;  // [Hkv·D, C], [Hkv·D]
  Tensor o_proj, o_bias;  // [C, H·D], [C]

  void weights(std::vector<WeightRef>& out) override {
    for (Tensor* t : {&q_proj, &k_proj, &v_proj, &o_proj})
      out.push_back({WeightRole::Projection, t});
    for (Tensor* t : {&q_bias, &k_bias, &v_bias, &o_bias}) out.push_back({WeightRole::Vector, t});
  }

  void forward(Backend& be, Workspace& ws, const float* a, int64_t T,
               std::span<const MixSequence> seqs, float*, float* out) const override {
    const int64_t QD = H * D, KVD = Hkv * D;
    ScopedBuffers buf(ws);
    float* q = buf.take(T * QD);
    float* k = buf.take(T * KVD);
    float* v = buf.take(T * KVD);
    const LinearArgs qkv[] = {
        {a, T, &q_proj, &q_bias, q}, {a, T, &k_proj, &k_bias, k}, {a, T, &v_proj, &v_bias, v}};
    be.linears(qkv);
    float* o = buf.take(T * QD);
    // Positions, the KV cache and attention are each sequence's own.
    for (const MixSequence& s : seqs) {
      float* qs = q + s.row * QD;
      float* ks = k + s.row * KVD;
      const float* vs = v + s.row * KVD;
      LayerState& st = *s.state;
      be.rope(qs, s.T, H, D, s.pos0, inv_freq->data());
      be.rope(ks, s.T, Hkv, D, s.pos0, inv_freq->data());
      be.kv_append(st.k_cache, st.v_cache, ks, vs, s.T, KVD);
      be.attention(AttentionArgs{qs, st.k_cache.data(), st.v_cache.data(), s.T, s.pos0, H, Hkv, D,
                                 o + s.row * QD});
    }
    be.linear(o, T, o_proj, o_bias, out);
  }
};

// Qwen2 and LLaMA: one class, the model_type and its bias switches as data.
class Transformer final : public Architecture {
 public:
  Transformer(Arch id, const char* model_type) : id_(id), model_type_(model_type) {}
  Arch id() const override { return id_; }
  const char* model_type() const override { return model_type_; }
  bool recurrent() const override { return false; }

  void parse_config(const json& j, Config& c, const std::string& where) const override {
    if (id_ == Arch::Qwen2) {
      c.qkv_bias = true;  // Qwen2 always has q/k/v biases and none on o_proj.
    } else {
      c.qkv_bias = c.o_bias = get_bool_or(j, "attention_bias", false, where);
      c.mlp_bias = get_bool_or(j, "mlp_bias", false, where);
    }
    c.rope = parse_rope(j, where);
    if (c.head_dim % 2 != 0) fail(where, "head_dim must be even for rotary embeddings");
  }

  std::vector<std::shared_ptr<LayerMix>> bind(Config& c, const WeightStore& s) const override {
    const int64_t C = c.hidden_size, QD = c.num_heads * c.head_dim, KVD = c.kv_dim();
    auto inv = std::make_shared<const std::vector<double>>(rope_inv_freq(c.rope, c.head_dim));
    std::vector<std::shared_ptr<LayerMix>> layers;
    for (int64_t i = 0; i < c.num_layers; ++i) {
      const std::string a = "model.layers." + std::to_string(i) + ".self_attn.";
      auto m = std::make_shared<Attention>();
      m->H = c.num_heads;
      m->Hkv = c.num_kv_heads;
      m->D = c.head_dim;
      m->inv_freq = inv;
      m->q_proj = s.get(a + "q_proj.weight", {QD, C});
      m->k_proj = s.get(a + "k_proj.weight", {KVD, C});
      m->v_proj = s.get(a + "v_proj.weight", {KVD, C});
      m->o_proj = s.get(a + "o_proj.weight", {C, QD});
      if (c.qkv_bias) {
        m->q_bias = s.get(a + "q_proj.bias", {QD});
        m->k_bias = s.get(a + "k_proj.bias", {KVD});
        m->v_bias = s.get(a + "v_proj.bias", {KVD});
      }
      if (c.o_bias) m->o_bias = s.get(a + "o_proj.bias", {C});
      layers.push_back(std::move(m));
    }
    return layers;
  }

  void init_layer_state(const Config&, LayerState& l) const override {
    l.x_prev.clear();
    l.wkv.clear();
    l.k_cache.clear();
    l.v_cache.clear();
  }

  bool layer_state_ok(const Config& c, const LayerState& l, int64_t n_tokens) const override {
    const size_t kv = static_cast<size_t>(n_tokens * c.kv_dim());
    return l.x_prev.empty() && l.wkv.empty() && l.k_cache.size() == kv && l.v_cache.size() == kv;
  }

  size_t state_bytes_per_token(const Config& c) const override {
    return static_cast<size_t>(2 * c.num_layers * c.kv_dim()) * sizeof(float);
  }

  bool truncate(const Config& c, State& s, int64_t n) const override {
    const size_t keep = static_cast<size_t>(n * c.kv_dim());
    for (auto& l : s.layers) {
      l.k_cache.resize(keep);
      l.v_cache.resize(keep);
    }
    return true;
  }

 private:
  Arch id_;
  const char* model_type_;
};

}  // namespace

const Architecture& qwen2_architecture() {
  static const Transformer a(Arch::Qwen2, "qwen2");
  return a;
}

const Architecture& llama_architecture() {
  static const Transformer a(Arch::Llama, "llama");
  return a;
}

}  // namespace qrwkv
