// QRWKV7 (config.json model_type "rwkv7qwen2", RAD-RWKV7): a Qwen2 transformer whose softmax
// attention is replaced, in every layer, by a simplified RWKV-7 time mix (docs/model.md).
//
// Symbols: C hidden size, H heads, Hkv key/value heads, N head size (C = H·N), Dw, Da, Dv, Dg
// the LoRA ranks (decay, in-context learning rate, value residual, gate). Per layer, for the
// normalized input x of T tokens at positions p (no token shift):
//
//   r = x Wqᵀ + bq ;  k = x Wkᵀ + bk ;  v = x Wvᵀ + bv          k, v: Hkv heads
//   d = tanh(x w1) w2 ;  a = (x a1) a2 ;  ν = (x v1) v2  (layers > 0)
//   g = sigmoid(x g1) g2   (gate_rank_type 2)   or   sigmoid(x Wgateᵀ)   (type 1)
//   use_rope: r (H heads) and k (Hkv heads) rotated at p, before the GQA repeat
//   y = WKV7(r, k, v, w0 + d, a0 + a, v0 + ν, v_first)        backend/wkv7.h: the delta rule,
//                                                               then GroupNorm or · N^-½
//   out = (y ⊙ g) Woᵀ (+ bo)
//
// v_first, the values of layer 0 (heads expanded), flows to every later layer at the same
// position within a forward pass: it is the per-token buffer the architecture asks the layer
// loop for. The state per layer is S [H, N, N] (key × value); RoPE positions are the state's
// token count. Two trained variants, read from the config and checked against the tensors:
// classic (k_k and k_a, per-head GroupNorm ln_x) and balance state (κ from k alone, no
// GroupNorm, output · N^-½).
#include <cmath>

#include "backend/wkv7.h"
#include "io/error.h"
#include "model/architecture.h"
#include "model/config_keys.h"
#include "model/rope.h"
#include "model/weights.h"

namespace qrwkv {

namespace {

struct TimeMix7 final : LayerMix {
  int64_t C = 0, H = 0, Hkv = 0, N = 0, Dw = 0, Da = 0, Dv = 0, Dg = 0;
  bool first = false;                                   // layer 0: produces v_first
  std::shared_ptr<const std::vector<double>> inv_freq;  // null without RoPE

  // self_attn.*; q_proj is the receptance.
  Tensor q_proj, q_bias;  // [C, C], [C]
  Tensor k_proj, k_bias;  // [Hkv·N, C], [Hkv·N]
  Tensor v_proj, v_bias;  // [Hkv·N, C], [Hkv·N]
  Tensor o_proj, o_bias;  // [C, C], [C] (attention_output_bias)
  Tensor w0, a0, v0;      // [1, 1, C] each (v0 unused in layer 0)
  Tensor w1, w2;          // [C, Dw], [Dw, C]   (x @ w1 @ w2)
  Tensor a1, a2;          // [C, Da], [Da, C]
  Tensor v1, v2;          // [C, Dv], [Dv, C]   (layers > 0)
  Tensor g1, g2;          // [C, Dg], [Dg, C]   (gate_rank_type 2)
  Tensor gate;            // [C, C]             (gate_rank_type 1)
  Tensor k_k, k_a;        // [1, 1, C] each, classic variant; empty for balance state
  Tensor ln_w, ln_b;      // ln_x.weight / .bias [C], groupnorm_att; empty otherwise

  void weights(std::vector<WeightRef>& out) override {
    for (Tensor* t : {&q_proj, &k_proj, &v_proj, &o_proj, &gate})
      if (!t->empty()) out.push_back({WeightRole::Projection, t});
    for (Tensor* t : {&q_bias, &k_bias, &v_bias, &o_bias, &w0, &a0, &v0, &k_k, &k_a, &ln_w, &ln_b})
      if (!t->empty()) out.push_back({WeightRole::Vector, t});
    for (Tensor* t : {&w1, &w2, &a1, &a2, &v1, &v2, &g1, &g2})
      if (!t->empty()) out.push_back({WeightRole::LoraMatrix, t});
  }

  void forward(Backend& be, Workspace& ws, const float* x, int64_t T,
               std::span<const MixSequence> seqs, float* across, float* out) const override {
    const int64_t KVD = Hkv * N;
    ScopedBuffers buf(ws);
    float* r = buf.take(T * C);
    float* k = buf.take(T * KVD);
    float* v = buf.take(T * KVD);
    float* g = buf.take(T * C);
    const bool full_gate = !gate.empty();
    const Tensor none;
    const LinearArgs rkv[] = {{x, T, &q_proj, &q_bias, r},
                              {x, T, &k_proj, &k_bias, k},
                              {x, T, &v_proj, &v_bias, v},
                              {x, T, &gate, &none, g}};
    be.linears(std::span<const LinearArgs>(rkv, full_gate ? 4 : 3));

    // The LoRAs: decay, learning rate, value residual (not in layer 0) and the gate.
    float* low = buf.take(T * std::max({Dw, Da, Dv, Dg}));
    float* d = buf.take(T * C);
    float* a = buf.take(T * C);
    be.matmul(x, T, C, w1, low);
    be.tanh(low, T * Dw);
    be.matmul(low, T, Dw, w2, d);
    be.matmul(x, T, C, a1, low);
    be.matmul(low, T, Da, a2, a);
    float* nu = nullptr;
    if (!first) {
      nu = buf.take(T * C);
      be.matmul(x, T, C, v1, low);
      be.matmul(low, T, Dv, v2, nu);
    }
    if (!full_gate) {
      be.matmul(x, T, C, g1, low);
      be.sigmoid(low, T * Dg);
      be.matmul(low, T, Dg, g2, g);
    }

    float* y = buf.take(T * C);
    for (const MixSequence& s : seqs) {
      const int64_t rc = s.row * C, rk = s.row * KVD;
      if (inv_freq) {
        be.rope(r + rc, s.T, H, N, s.pos0, inv_freq->data());
        be.rope(k + rk, s.T, Hkv, N, s.pos0, inv_freq->data());
      }
      be.wkv7(Wkv7Args{r + rc,
                       k + rk,
                       v + rk,
                       d + rc,
                       a + rc,
                       nu != nullptr ? nu + rc : nullptr,
                       &w0,
                       &a0,
                       &v0,
                       &k_k,
                       &k_a,
                       &ln_w,
                       &ln_b,
                       across + rc,
                       s.T,
                       H,
                       Hkv,
                       N,
                       s.state->wkv.data(),
                       y + rc});
    }
    if (full_gate)
      be.gate(y, g, T * C);  // y ⊙ sigmoid(x Wgateᵀ)
    else
      be.mul(y, g, T * C);
    be.linear(y, T, o_proj, o_bias, out);
  }
};

// config.json switches that the released configs write as 0/1 as well as false/true.
bool get_switch(const json& j, const char* key, bool fallback, const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (it->is_boolean()) return it->get<bool>();
  if (it->is_number_integer() && (it->get<int64_t>() == 0 || it->get<int64_t>() == 1))
    return it->get<int64_t>() == 1;
  fail(where, std::string("'") + key + "' must be true, false, 0 or 1");
}

// The second dimension of a first-layer LoRA matrix [C, rank].
int64_t rank_of(const WeightStore& s, const std::string& name, int64_t C) {
  const Tensor t = s.get_any_shape(name);
  if (t.shape.size() != 2 || t.shape[0] != C || t.shape[1] == 0)
    fail(s.dir(), "tensor '" + name + "' has shape " + shape_str(t.shape) + ", expected [" +
                      std::to_string(C) + ", rank]");
  return t.shape[1];
}

class Qrwkv7 final : public Architecture {
 public:
  Arch id() const override { return Arch::QRWKV7; }
  const char* model_type() const override { return "rwkv7qwen2"; }
  bool recurrent() const override { return true; }

  void parse_config(const json& j, Config& c, const std::string& where) const override {
    if (c.head_dim * c.num_heads != c.hidden_size)
      fail(where, "rwkv7qwen2 needs head_dim * num_attention_heads == hidden_size");
    if (c.head_dim > kWkv7MaxHead)
      fail(where, "head_dim " + std::to_string(c.head_dim) + " is above the largest supported (" +
                      std::to_string(kWkv7MaxHead) + ")");
    c.qkv_bias = get_bool_or(j, "attention_bias", true, where);
    c.o_bias = get_bool_or(j, "attention_output_bias", false, where);
    c.use_rope = get_switch(j, "use_rope", false, where);
    c.balance_state = get_switch(j, "balance_state", true, where);
    c.groupnorm_att = get_switch(j, "groupnorm_att", false, where);
    const int64_t gate_type = get_dim_or(j, "gate_rank_type", 2, where);
    if (gate_type != 1 && gate_type != 2) fail(where, "'gate_rank_type' must be 1 or 2");
    c.gate_rank_type = static_cast<int>(gate_type);
    const auto nal = j.find("num_attention_layers");
    if (nal != j.end() && !nal->is_null() && !nal->is_number_integer())
      fail(where, "'num_attention_layers' must be an integer");
    if (nal != j.end() && nal->is_number_integer() && nal->get<int64_t>() != 0)
      fail(where,
           "'num_attention_layers' is not 0: models that keep softmax attention in their last "
           "layers are not supported");
    if (c.use_rope) {
      c.rope = parse_rope(j, where);
      if (c.head_dim % 2 != 0) fail(where, "head_dim must be even for rotary embeddings");
    }
  }

  std::vector<std::shared_ptr<LayerMix>> bind(Config& c, const WeightStore& s) const override {
    const int64_t C = c.hidden_size, KVD = c.kv_dim();
    const std::string p0 = "model.layers.0.self_attn.";
    // Ranks from the tensors (they always agree with the config's, when it gives them).
    const int64_t Dw = rank_of(s, p0 + "w1", C), Da = rank_of(s, p0 + "a1", C);
    // Layer 0 carries v1 too (unused); a one-layer model may not.
    const std::string v1 = s.has(p0 + "v1") ? p0 + "v1" : "model.layers.1.self_attn.v1";
    const int64_t Dv = c.num_layers > 1 || s.has(v1) ? rank_of(s, v1, C) : 0;
    const int64_t Dg = c.gate_rank_type == 2 ? rank_of(s, p0 + "g1", C) : 0;
    c.lora_rank_decay = Dw;
    c.lora_rank_iclr = Da;
    c.lora_rank_value_residual_mix = Dv;
    c.lora_rank_gate = Dg;
    // The variant the config names must be the one the weights were trained as.
    if (s.has(p0 + "ln_x.weight") != c.groupnorm_att)
      fail(s.dir(), std::string("config.json says groupnorm_att is ") +
                        (c.groupnorm_att ? "true" : "false") + " but the checkpoint " +
                        (c.groupnorm_att ? "has no" : "has") + " self_attn.ln_x weights");
    if (!c.balance_state && !s.has(p0 + "k_k"))
      fail(s.dir(), "config.json says balance_state is false but the checkpoint has no k_k");
    auto inv = c.use_rope
                   ? std::make_shared<const std::vector<double>>(rope_inv_freq(c.rope, c.head_dim))
                   : nullptr;

    std::vector<std::shared_ptr<LayerMix>> layers;
    for (int64_t i = 0; i < c.num_layers; ++i) {
      const std::string a = "model.layers." + std::to_string(i) + ".self_attn.";
      auto m = std::make_shared<TimeMix7>();
      m->C = C;
      m->H = c.num_heads;
      m->Hkv = c.num_kv_heads;
      m->N = c.head_dim;
      m->Dw = Dw;
      m->Da = Da;
      m->Dv = Dv;
      m->Dg = Dg;
      m->first = i == 0;
      m->inv_freq = inv;
      m->q_proj = s.get(a + "q_proj.weight", {C, C});
      m->k_proj = s.get(a + "k_proj.weight", {KVD, C});
      m->v_proj = s.get(a + "v_proj.weight", {KVD, C});
      m->o_proj = s.get(a + "o_proj.weight", {C, C});
      if (c.qkv_bias) {
        m->q_bias = s.get(a + "q_proj.bias", {C});
        m->k_bias = s.get(a + "k_proj.bias", {KVD});
        m->v_bias = s.get(a + "v_proj.bias", {KVD});
      }
      if (c.o_bias) m->o_bias = s.get(a + "o_proj.bias", {C});
      m->w0 = s.get(a + "w0", {1, 1, C});
      m->a0 = s.get(a + "a0", {1, 1, C});
      m->w1 = s.get(a + "w1", {C, Dw});
      m->w2 = s.get(a + "w2", {Dw, C});
      m->a1 = s.get(a + "a1", {C, Da});
      m->a2 = s.get(a + "a2", {Da, C});
      if (i > 0) {  // layer 0's v0/v1/v2 exist but are never used
        m->v0 = s.get(a + "v0", {1, 1, C});
        m->v1 = s.get(a + "v1", {C, Dv});
        m->v2 = s.get(a + "v2", {Dv, C});
      }
      if (c.gate_rank_type == 2) {
        m->g1 = s.get(a + "g1", {C, Dg});
        m->g2 = s.get(a + "g2", {Dg, C});
      } else {
        m->gate = s.get(a + "gate.weight", {C, C});
      }
      if (!c.balance_state) {
        m->k_k = s.get(a + "k_k", {1, 1, C});
        m->k_a = s.get(a + "k_a", {1, 1, C});
      }
      if (c.groupnorm_att) {
        m->ln_w = s.get(a + "ln_x.weight", {C});
        m->ln_b = s.get(a + "ln_x.bias", {C});
      }
      layers.push_back(std::move(m));
    }
    return layers;
  }

  int64_t across_width(const Config& c) const override { return c.hidden_size; }

  void init_layer_state(const Config& c, LayerState& l) const override {
    const size_t N = static_cast<size_t>(c.head_dim);
    l.x_prev.clear();
    l.wkv.assign(static_cast<size_t>(c.num_heads) * N * N, 0.0f);
    l.k_cache.clear();
    l.v_cache.clear();
  }

  bool layer_state_ok(const Config& c, const LayerState& l, int64_t) const override {
    const size_t N = static_cast<size_t>(c.head_dim);
    return l.x_prev.empty() && l.wkv.size() == static_cast<size_t>(c.num_heads) * N * N &&
           l.k_cache.empty() && l.v_cache.empty();
  }

  size_t state_bytes_per_token(const Config&) const override { return 0; }
  bool truncate(const Config&, State&, int64_t) const override { return false; }
};

}  // namespace

const Architecture& qrwkv7_architecture() {
  static const Qrwkv7 a;
  return a;
}

}  // namespace qrwkv
