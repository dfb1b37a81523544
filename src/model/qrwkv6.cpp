// QRWKV6 (config.json model_type "rwkv6qwen2"): a Qwen2 transformer whose softmax attention is
// replaced, in every layer, by RWKV-6 linear attention, the "time mix" (docs/model.md).
//
// Symbols: C hidden size, H heads, Hkv key/value heads, N head size (C = H·N), G = H/Hkv,
// Dm token-shift LoRA rank, Dd decay LoRA rank. Per layer, for T tokens a [T, C]:
//
//   d   = x_prev − a                                    (token shift: the previous token's input)
//   z   = tanh((a + d ⊙ maa_x) @ w1)                   # [5·Dm]: slices r, k, v, w, g
//   x_s = a + d ⊙ (maa_s + z_s @ w2[s])                # s ∈ {r, k, v, w, g}
//   r = x_r Wqᵀ + bq ;  k = x_k Wkᵀ + bk ;  v = x_v Wvᵀ + bv ;  g = x_g Wgateᵀ
//   log w = −exp(time_decay + tanh(x_w @ Dw1) @ Dw2)    # per channel, w ∈ (0, 1)
//   k, v: [Hkv, N] → repeated G times → [H, N];  k̃ = k ⊙ (1 − w)
//   per head:  S = diag(w) S + k̃ᵀ v   (update first)   o = (r / sqrt(N)) S   (then read)
//   out = (o ⊙ sigmoid(g)) Woᵀ ;  x_prev ← a (last token), S carried to the next call
//
// The state per layer is x_prev [C] and S [H, N, N]; its size does not depend on the tokens seen.
#include <cmath>

#include "io/error.h"
#include "model/architecture.h"
#include "model/config_keys.h"
#include "model/weights.h"

namespace qrwkv {

namespace {

enum Slice { R, K, Vv, Wd, Gt };  // the five token-shift slices, in the order of time_maa_w1

struct TimeMix final : LayerMix {
  int64_t C = 0, H = 0, Hkv = 0, N = 0, Dm = 0, Dd = 0;

  // self_attn.*; q_proj is the receptance.
  Tensor q_proj, q_bias;  // [H·N, C], [H·N]
  Tensor k_proj, k_bias;  // [Hkv·N, C], [Hkv·N]
  Tensor v_proj, v_bias;  // [Hkv·N, C], [Hkv·N]
  Tensor o_proj, o_bias;  // [C, H·N], [C]
  Tensor gate;            // [C, C], no bias
  Tensor time_maa_x;      // [1, 1, C]
  Tensor time_maa[5];     // time_maa_{r,k,v,w,g}: [1, 1, C] each
  Tensor time_maa_w1;     // [C, 5·Dm]   (x @ w1)
  Tensor time_maa_w2[5];  // time_maa_w2 [5, Dm, C], one [Dm, C] view per slice
  Tensor time_decay;      // [1, 1, C]
  Tensor time_decay_w1;   // [C, Dd]
  Tensor time_decay_w2;   // [Dd, C]

  void weights(std::vector<WeightRef>& out) override {
    for (Tensor* t : {&q_proj, &k_proj, &v_proj, &o_proj, &gate})
      out.push_back({WeightRole::Projection, t});
    for (Tensor* t : {&q_bias, &k_bias, &v_bias, &o_bias, &time_maa_x, &time_decay})
      out.push_back({WeightRole::Vector, t});
    for (Tensor& t : time_maa) out.push_back({WeightRole::Vector, &t});
    for (Tensor& t : time_maa_w2) out.push_back({WeightRole::LoraMatrix, &t});
    for (Tensor* t : {&time_maa_w1, &time_decay_w1, &time_decay_w2})
      out.push_back({WeightRole::LoraMatrix, t});
  }

  void forward(Backend& be, Workspace& ws, const float* a, int64_t T,
               std::span<const MixSequence> seqs, float*, float* out) const override {
    const int64_t KVD = Hkv * N;
    ScopedBuffers buf(ws);

    // Token shift, per sequence: d = x_prev − a, xx = a + d ⊙ maa_x (x_prev becomes the
    // sequence's last a).
    float* d = buf.take(T * C);
    float* xx = buf.take(T * C);
    for (const MixSequence& s : seqs)
      be.token_shift(a + s.row * C, s.T, C, s.state->x_prev.data(), time_maa_x, d + s.row * C,
                     xx + s.row * C);

    // z = tanh(xx @ w1), then x_s = a + d ⊙ (maa_s + z_s @ w2[s]) for the five slices.
    float* z = buf.take(T * 5 * Dm);
    be.matmul(xx, T, C, time_maa_w1, z);
    be.tanh(z, T * 5 * Dm);
    float* x[5];
    float* m = buf.take(T * C);
    for (int s = 0; s < 5; ++s) {
      x[s] = buf.take(T * C);
      be.matmul(z + s * Dm, T, 5 * Dm, time_maa_w2[s], m);
      be.lerp(a, d, m, C, time_maa[s], T, C, x[s]);
    }

    // Receptance, key, value (with biases) and gate.
    float* r = buf.take(T * C);
    float* k = buf.take(T * KVD);
    float* v = buf.take(T * KVD);
    float* g = buf.take(T * C);
    const Tensor none;
    const LinearArgs rkvg[] = {{x[R], T, &q_proj, &q_bias, r},
                               {x[K], T, &k_proj, &k_bias, k},
                               {x[Vv], T, &v_proj, &v_bias, v},
                               {x[Gt], T, &gate, &none, g}};
    be.linears(rkvg);

    // Decay: log w = −exp(time_decay + tanh(x_w @ Dw1) @ Dw2), with w and 1 − w from it.
    float* hd = buf.take(T * Dd);
    float* dd = buf.take(T * C);
    be.matmul(x[Wd], T, C, time_decay_w1, hd);
    be.tanh(hd, T * Dd);
    be.matmul(hd, T, Dd, time_decay_w2, dd);
    float* w = buf.take(T * C);
    float* omw = buf.take(T * C);
    float* log_w = buf.take(T * C);
    be.decay(dd, time_decay, T, C, w, omw, log_w);

    // The recurrence of each sequence over every head, then the gated output projection.
    float* o = buf.take(T * C);
    const float scale = 1.0f / std::sqrt(static_cast<float>(N));
    for (const MixSequence& s : seqs) {
      const int64_t rc = s.row * C, rk = s.row * KVD;
      be.wkv(WkvArgs{r + rc, k + rk, v + rk, w + rc, omw + rc, log_w + rc, s.T, H, Hkv, N, scale,
                     s.state->wkv.data(), o + rc});
    }
    be.gate(o, g, T * C);
    be.linear(o, T, o_proj, o_bias, out);
  }
};

class Qrwkv6 final : public Architecture {
 public:
  Arch id() const override { return Arch::QRWKV6; }
  const char* model_type() const override { return "rwkv6qwen2"; }
  bool recurrent() const override { return true; }

  void parse_config(const json& j, Config& c, const std::string& where) const override {
    // The time mix reads whole heads of the hidden state: no separate head_dim is possible.
    if (c.head_dim * c.num_heads != c.hidden_size)
      fail(where, "rwkv6qwen2 needs head_dim * num_attention_heads == hidden_size");
    c.qkv_bias = get_bool_or(j, "attention_bias", true, where);
    c.o_bias = get_bool_or(j, "attention_output_bias", false, where);
    c.lora_rank_tokenshift = get_dim_or(j, "lora_rank_tokenshift", 0, where);
    c.lora_rank_decay = get_dim_or(j, "lora_rank_decay", 0, where);
  }

  std::vector<std::shared_ptr<LayerMix>> bind(Config& c, const WeightStore& s) const override {
    const int64_t C = c.hidden_size, KVD = c.kv_dim();
    // LoRA ranks come from the config when present, else from the first layer's tensors.
    const std::string p0 = "model.layers.0.self_attn.";
    if (c.lora_rank_tokenshift == 0) {
      const Tensor w1 = s.get_any_shape(p0 + "time_maa_w1");
      if (w1.shape.size() != 2 || w1.shape[1] % 5 != 0 || w1.shape[1] == 0)
        fail(s.dir(), "tensor '" + w1.name + "' has shape " + shape_str(w1.shape) + ", expected [" +
                          std::to_string(C) + ", 5*rank]");
      c.lora_rank_tokenshift = w1.shape[1] / 5;
    }
    if (c.lora_rank_decay == 0) {
      const Tensor d1 = s.get_any_shape(p0 + "time_decay_w1");
      if (d1.shape.size() != 2 || d1.shape[1] == 0)
        fail(s.dir(), "tensor '" + d1.name + "' has shape " + shape_str(d1.shape) + ", expected [" +
                          std::to_string(C) + ", rank]");
      c.lora_rank_decay = d1.shape[1];
    }
    const int64_t Dm = c.lora_rank_tokenshift, Dd = c.lora_rank_decay;

    std::vector<std::shared_ptr<LayerMix>> layers;
    for (int64_t i = 0; i < c.num_layers; ++i) {
      const std::string a = "model.layers." + std::to_string(i) + ".self_attn.";
      auto m = std::make_shared<TimeMix>();
      m->C = C;
      m->H = c.num_heads;
      m->Hkv = c.num_kv_heads;
      m->N = c.head_dim;
      m->Dm = Dm;
      m->Dd = Dd;
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
      m->gate = s.get(a + "gate.weight", {C, C});
      m->time_maa_x = s.get(a + "time_maa_x", {1, 1, C});
      const char* maa[5] = {"time_maa_r", "time_maa_k", "time_maa_v", "time_maa_w", "time_maa_g"};
      for (int k = 0; k < 5; ++k) m->time_maa[k] = s.get(a + maa[k], {1, 1, C});
      m->time_maa_w1 = s.get(a + "time_maa_w1", {C, 5 * Dm});
      const Tensor w2 = s.get(a + "time_maa_w2", {5, Dm, C});
      for (int k = 0; k < 5; ++k) m->time_maa_w2[k] = slice0(w2, k);
      m->time_decay = s.get(a + "time_decay", {1, 1, C});
      m->time_decay_w1 = s.get(a + "time_decay_w1", {C, Dd});
      m->time_decay_w2 = s.get(a + "time_decay_w2", {Dd, C});
      layers.push_back(std::move(m));
    }
    return layers;
  }

  void init_layer_state(const Config& c, LayerState& l) const override {
    const size_t N = static_cast<size_t>(c.head_dim);
    l.x_prev.assign(static_cast<size_t>(c.hidden_size), 0.0f);
    l.wkv.assign(static_cast<size_t>(c.num_heads) * N * N, 0.0f);
  }

  bool layer_state_ok(const Config& c, const LayerState& l, int64_t) const override {
    const size_t N = static_cast<size_t>(c.head_dim);
    return l.x_prev.size() == static_cast<size_t>(c.hidden_size) &&
           l.wkv.size() == static_cast<size_t>(c.num_heads) * N * N && l.k_cache.empty() &&
           l.v_cache.empty();
  }

  size_t state_bytes_per_token(const Config&) const override { return 0; }
  bool truncate(const Config&, State&, int64_t) const override { return false; }
};

}  // namespace

const Architecture& qrwkv6_architecture() {
  static const Qrwkv6 a;
  return a;
}

}  // namespace qrwkv
