// Softmax attention of the parent transformers (Qwen2, LLaMA), float32 reference:
//
//   q = a Wqᵀ + bq ;  k = a Wkᵀ + bk ;  v = a Wvᵀ + bv       (biases: Qwen2 only)
//   q, k ← RoPE(q, pos), RoPE(k, pos)   rotate-half: (x1, x2) → (x1 cos − x2 sin, x2 cos + x1 sin)
//   per head h (kv-head ⌊h/G⌋):  o = softmax(q Kᵀ / sqrt(D) over positions ≤ pos) V
//   out = o Woᵀ
#include "model/transformer.h"

#include <algorithm>
#include <cmath>

#include "ops/ref.h"

namespace qrwkv {

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
  return inv;
}

namespace {

// Rotates one head vector x[D] in place for position `pos`.
void apply_rope(float* x, int64_t D, int64_t pos, const std::vector<double>& inv_freq) {
  const int64_t half = D / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double angle = static_cast<double>(pos) * inv_freq[i];
    const float cs = static_cast<float>(std::cos(angle)), sn = static_cast<float>(std::sin(angle));
    const float x1 = x[i], x2 = x[i + half];
    x[i] = x1 * cs - x2 * sn;
    x[i + half] = x2 * cs + x1 * sn;
  }
}

}  // namespace

void attention(const Exec& ex, const Config& c, const LayerWeights& w,
               const std::vector<double>& inv_freq, const float* a, int64_t T, int64_t pos0,
               LayerState& st, float* out) {
  const int64_t H = c.num_heads, Hkv = c.num_kv_heads, D = c.head_dim;
  const int64_t G = H / Hkv, QD = H * D, KVD = c.kv_dim();
  std::vector<float> q(static_cast<size_t>(T * QD)), k(static_cast<size_t>(T * KVD)),
      v(static_cast<size_t>(T * KVD));
  ex.linear(a, T, w.q_proj, &w.q_bias, q.data());
  ex.linear(a, T, w.k_proj, &w.k_bias, k.data());
  ex.linear(a, T, w.v_proj, &w.v_bias, v.data());
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) apply_rope(&q[t * QD + h * D], D, pos0 + t, inv_freq);
    for (int64_t h = 0; h < Hkv; ++h) apply_rope(&k[t * KVD + h * D], D, pos0 + t, inv_freq);
  }
  st.k_cache.insert(st.k_cache.end(), k.begin(), k.end());
  st.v_cache.insert(st.v_cache.end(), v.begin(), v.end());

  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::vector<float> o(static_cast<size_t>(T * QD)), p(static_cast<size_t>(pos0 + T));
  for (int64_t t = 0; t < T; ++t) {
    const int64_t n_ctx = pos0 + t + 1;  // causal: positions 0 .. pos0 + t
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / G;
      const float* qh = &q[t * QD + h * D];
      float max_score = -INFINITY;
      for (int64_t j = 0; j < n_ctx; ++j) {
        const float* kj = &st.k_cache[j * KVD + kvh * D];
        float s = 0.0f;
        for (int64_t i = 0; i < D; ++i) s += qh[i] * kj[i];
        p[j] = s * scale;
        max_score = std::max(max_score, p[j]);
      }
      double sum = 0.0;
      for (int64_t j = 0; j < n_ctx; ++j) {
        p[j] = std::exp(p[j] - max_score);
        sum += p[j];
      }
      float* oh = &o[t * QD + h * D];
      for (int64_t j = 0; j < n_ctx; ++j) {
        const float pj = static_cast<float>(p[j] / sum);
        const float* vj = &st.v_cache[j * KVD + kvh * D];
        for (int64_t i = 0; i < D; ++i) oh[i] += pj * vj[i];
      }
    }
  }
  ex.linear(o.data(), T, w.o_proj, &w.o_bias, out);
}

}  // namespace qrwkv
