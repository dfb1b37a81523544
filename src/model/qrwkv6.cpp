// The QRWKV6 layer's time mix, written to read like the math (docs: qrwkv6.md §3). This is the
// float32 reference: plain loops, one token after another through the recurrence.
//
// Symbols: C hidden size, H heads, Hkv key/value heads, N head size, G = H/Hkv,
// Dm token-shift LoRA rank, Dd decay LoRA rank.
//
//   d   = x_prev − a
//   z   = tanh((a + d ⊙ maa_x) @ w1)                   # [5·Dm]: slices r, k, v, w, g
//   x_s = a + d ⊙ (maa_s + z_s @ w2[s])                # s ∈ {r, k, v, w, g}
//   r = x_r Wqᵀ + bq ;  k = x_k Wkᵀ + bk ;  v = x_v Wvᵀ + bv ;  g = sigmoid(x_g Wgateᵀ)
//   w = exp(−exp(time_decay + tanh(x_w @ Dw1) @ Dw2))   # per channel, in (0, 1)
//   k, v: [Hkv, N] → repeated G times → [H, N];  k̃ = k ⊙ (1 − w)
//   per head:  S = diag(w) S + k̃ᵀ v   (update first)   o = (r / sqrt(N)) S   (then read)
//   out = (o ⊙ g) Woᵀ ;  x_prev ← a (last token), S carried to the next call
#include "model/qrwkv6.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/ref.h"
#include "ops/wkv.h"

namespace qrwkv {

void qrwkv6_time_mix(const Exec& ex, const Config& c, const ModelWeights& mw, const LayerWeights& w,
                     const float* a, int64_t T, LayerState& st, float* out) {
  const int64_t C = c.hidden_size, H = c.num_heads, N = c.head_dim;
  const int64_t G = c.num_heads / c.num_kv_heads, KVD = c.kv_dim();
  const int64_t Dm = mw.lora_rank_tokenshift, Dd = mw.lora_rank_decay;
  using Vec = std::vector<float>;
  auto vec = [](int64_t n) { return Vec(static_cast<size_t>(n)); };

  // Token shift: d[t] = x_prev[t] − a[t], where x_prev[t] is the previous token's input.
  Vec d = vec(T * C);
  for (int64_t t = 0; t < T; ++t) {
    const float* prev = t == 0 ? st.x_prev.data() : a + (t - 1) * C;
    for (int64_t i = 0; i < C; ++i) d[t * C + i] = prev[i] - a[t * C + i];
  }

  // z = tanh((a + d ⊙ maa_x) @ w1), five slices of Dm.
  Vec xx = vec(T * C), z = vec(T * 5 * Dm);
  for (int64_t j = 0; j < T * C; ++j) xx[j] = a[j] + d[j] * w.time_maa_x[j % C];
  ex.matmul(xx.data(), T, w.time_maa_w1, z.data());
  for (float& v : z) v = std::tanh(v);

  // x_s = a + d ⊙ (maa_s + z_s @ w2[s]) for s = r, k, v, w, g.
  Vec xs[5];
  Vec zs = vec(T * Dm), m = vec(T * C);
  for (int s = 0; s < 5; ++s) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < Dm; ++j) zs[t * Dm + j] = z[t * 5 * Dm + s * Dm + j];
    ex.matmul(zs.data(), T, slice0(w.time_maa_w2, s), m.data());
    xs[s] = vec(T * C);
    for (int64_t j = 0; j < T * C; ++j) xs[s][j] = a[j] + d[j] * (w.time_maa[s][j % C] + m[j]);
  }
  const Vec &x_r = xs[0], &x_k = xs[1], &x_v = xs[2], &x_w = xs[3], &x_g = xs[4];

  // Projections: receptance, key, value (with biases), gate.
  Vec r = vec(T * C), k = vec(T * KVD), v = vec(T * KVD), g = vec(T * C);
  ex.linear(x_r.data(), T, w.q_proj, &w.q_bias, r.data());
  ex.linear(x_k.data(), T, w.k_proj, &w.k_bias, k.data());
  ex.linear(x_v.data(), T, w.v_proj, &w.v_bias, v.data());
  ex.linear(x_g.data(), T, w.gate, nullptr, g.data());
  for (float& x : g) x = ref::sigmoid(x);

  // Decay: log w = −exp(time_decay + tanh(x_w @ Dw1) @ Dw2). 1 − w is computed as
  // −expm1(log w) so that slow decays (w close to 1) keep their precision.
  Vec hd = vec(T * Dd), dd = vec(T * C), decay = vec(T * C), one_minus_decay = vec(T * C);
  Vec log_decay = vec(T * C);
  ex.matmul(x_w.data(), T, w.time_decay_w1, hd.data());
  for (float& x : hd) x = std::tanh(x);
  ex.matmul(hd.data(), T, w.time_decay_w2, dd.data());
  for (int64_t j = 0; j < T * C; ++j) {
    const float log_w = -std::exp(w.time_decay[j % C] + dd[j]);
    decay[j] = std::exp(log_w);
    one_minus_decay[j] = -std::expm1(log_w);
    log_decay[j] = log_w;
  }

  const float scale = 1.0f / std::sqrt(static_cast<float>(N));
  Vec o = vec(T * C);
  if (ex.reference) {
    // The recurrence, one token at a time: update S, then read it with the receptance.
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < H; ++h) {
        const int64_t kvh = h / G;  // q-head h reads kv-head ⌊h/G⌋
        const float* kt = &k[t * KVD + kvh * N];
        const float* vt = &v[t * KVD + kvh * N];
        const float* wt = &decay[t * C + h * N];
        const float* omw = &one_minus_decay[t * C + h * N];
        const float* rt = &r[t * C + h * N];
        float* S = &st.wkv[h * N * N];
        for (int64_t i = 0; i < N; ++i) {
          const float k_tilde = kt[i] * omw[i];
          for (int64_t j = 0; j < N; ++j) S[i * N + j] = wt[i] * S[i * N + j] + k_tilde * vt[j];
        }
        float* ot = &o[t * C + h * N];
        for (int64_t j = 0; j < N; ++j) ot[j] = 0.0f;
        for (int64_t i = 0; i < N; ++i) {
          const float q = rt[i] * scale;
          for (int64_t j = 0; j < N; ++j) ot[j] += q * S[i * N + j];
        }
      }
    }
  } else {
    // The same recurrence through the WKV kernels, heads in parallel. On CPUs the fused
    // recurrent kernel is the fastest form even for prompts (S stays in L1); the chunked form
    // of ops/wkv.h computes the same up to float32 rounding and is kept, tested, for matrix
    // engines.
    Vec q = vec(T * C), kt = vec(T * C), log_w = vec(T * C);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < C; ++j) {
        q[t * C + j] = r[t * C + j] * scale;
        kt[t * C + j] = k[t * KVD + (j / N / G) * N + j % N] * one_minus_decay[t * C + j];
        // Below −200 a decay is exactly 0 in float32 either way; the bound keeps the chunk's
        // cumulative sums finite (−inf − −inf would be NaN).
        log_w[t * C + j] = std::max(log_decay[t * C + j], -200.0f);
      }
    ex.pool->parallel_for(H, 1, [&](int64_t h0, int64_t h1, int) {
      for (int64_t h = h0; h < h1; ++h) {
        const int64_t kvh = h / G;
        WkvHead head{
            &q[h * N], C, &kt[h * N],         C, &v[kvh * N], KVD,          &log_w[h * N], C,
            &o[h * N], C, &st.wkv[h * N * N], N, T,           &decay[h * N]};
        wkv_recurrent_fused(head);
      }
    });
  }

  // Output: (o ⊙ g) Woᵀ.
  for (int64_t j = 0; j < T * C; ++j) o[j] *= g[j];
  ex.linear(o.data(), T, w.o_proj, &w.o_bias, out);

  if (T > 0) st.x_prev.assign(a + (T - 1) * C, a + T * C);
}

}  // namespace qrwkv
