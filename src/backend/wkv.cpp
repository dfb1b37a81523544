#include "backend/wkv.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace qrwkv {

void wkv_recurrent(const WkvHead& h) {
  const int64_t N = h.N;
  for (int64_t t = 0; t < h.T; ++t) {
    const float* r = h.r + t * h.r_stride;
    const float* k = h.k + t * h.k_stride;
    const float* v = h.v + t * h.v_stride;
    const float* w = h.w + t * h.w_stride;
    const float* omw = h.one_minus_w + t * h.w_stride;
    float* o = h.o + t * h.o_stride;
    for (int64_t i = 0; i < N; ++i) {
      const float k_tilde = k[i] * omw[i];
      float* Si = h.S + i * N;
      for (int64_t j = 0; j < N; ++j) Si[j] = w[i] * Si[j] + k_tilde * v[j];
    }
    for (int64_t j = 0; j < N; ++j) o[j] = 0.0f;
    for (int64_t i = 0; i < N; ++i) {
      const float q = r[i] * h.scale;
      const float* Si = h.S + i * N;
      for (int64_t j = 0; j < N; ++j) o[j] += q * Si[j];
    }
  }
}

void wkv_chunked(const WkvHead& h, int64_t chunk) {
  constexpr int64_t kSub = 16;
  const int64_t N = h.N;
  chunk = std::max<int64_t>(1, chunk);
  // Γ within the chunk, in double: exp(Γ_i − Γ_j) needs the difference of two large sums, which
  // in float32 would lose the small differences between neighbouring tokens.
  std::vector<double> G(static_cast<size_t>(chunk * N));
  std::vector<float> qs(static_cast<size_t>(N)), kscaled(static_cast<size_t>(chunk * N));
  std::vector<float> q(static_cast<size_t>(chunk * N)), kt(static_cast<size_t>(chunk * N));
  std::vector<float> S0(static_cast<size_t>(N * N));
  std::vector<double> ref(static_cast<size_t>(N), 0.0);
  for (int64_t c0 = 0; c0 < h.T; c0 += chunk) {
    const int64_t B = std::min(chunk, h.T - c0);
    for (int64_t i = 0; i < B; ++i) {
      const int64_t t = c0 + i;
      const float* r = h.r + t * h.r_stride;
      const float* k = h.k + t * h.k_stride;
      const float* omw = h.one_minus_w + t * h.w_stride;
      const float* lw = h.log_w + t * h.w_stride;
      for (int64_t d = 0; d < N; ++d) {
        q[i * N + d] = r[d] * h.scale;
        kt[i * N + d] = k[d] * omw[d];
        G[i * N + d] = (i ? G[(i - 1) * N + d] : 0.0) + std::max(lw[d], -200.0f);
      }
    }
    auto vrow = [&](int64_t j) { return h.v + (c0 + j) * h.v_stride; };
    std::copy(h.S, h.S + N * N, S0.begin());

    for (int64_t s0 = 0; s0 < B; s0 += kSub) {
      const int64_t s1 = std::min(B, s0 + kSub);
      for (int64_t d = 0; d < N; ++d) ref[d] = s0 == 0 ? 0.0 : G[(s0 - 1) * N + d];
      // Keys of earlier sub-chunks, scaled to the reference point: exp(Γ_ref − Γ_j) ≤ 1.
      for (int64_t j = 0; j < s0; ++j)
        for (int64_t d = 0; d < N; ++d)
          kscaled[j * N + d] = kt[j * N + d] * std::exp(static_cast<float>(ref[d] - G[j * N + d]));
      for (int64_t i = s0; i < s1; ++i) {
        const float* qi = &q[i * N];
        float* o = h.o + (c0 + i) * h.o_stride;
        // Inter-chunk part: (q_i ⊙ exp(Γ_i)) S0.
        for (int64_t d = 0; d < N; ++d) qs[d] = qi[d] * std::exp(static_cast<float>(G[i * N + d]));
        for (int64_t j = 0; j < N; ++j) o[j] = 0.0f;
        for (int64_t d = 0; d < N; ++d) {
          const float* Sd = &S0[d * N];
          for (int64_t j = 0; j < N; ++j) o[j] += qs[d] * Sd[j];
        }
        // Earlier sub-chunks: q_i scaled by exp(Γ_i − Γ_ref) ≤ 1 against the scaled keys.
        for (int64_t d = 0; d < N; ++d)
          qs[d] = qi[d] * std::exp(static_cast<float>(G[i * N + d] - ref[d]));
        for (int64_t j = 0; j < s0; ++j) {
          float a = 0.0f;
          for (int64_t d = 0; d < N; ++d) a += qs[d] * kscaled[j * N + d];
          const float* v = vrow(j);
          for (int64_t e = 0; e < N; ++e) o[e] += a * v[e];
        }
        // The query's own sub-chunk, element by element (diagonal included).
        for (int64_t j = s0; j <= i; ++j) {
          float a = 0.0f;
          for (int64_t d = 0; d < N; ++d)
            a += qi[d] * kt[j * N + d] * std::exp(static_cast<float>(G[i * N + d] - G[j * N + d]));
          const float* v = vrow(j);
          for (int64_t e = 0; e < N; ++e) o[e] += a * v[e];
        }
      }
    }

    // State after the chunk: S' = diag(exp(Γ_last)) S0 + Σ_j (k̃_j ⊙ exp(Γ_last − Γ_j))ᵀ v_j.
    const double* last = &G[(B - 1) * N];
    for (int64_t d = 0; d < N; ++d) {
      const float decay = std::exp(static_cast<float>(last[d]));
      float* Sd = h.S + d * N;
      for (int64_t e = 0; e < N; ++e) Sd[e] = decay * S0[d * N + e];
    }
    for (int64_t j = 0; j < B; ++j) {
      const float* v = vrow(j);
      for (int64_t d = 0; d < N; ++d) {
        const float kd = kt[j * N + d] * std::exp(static_cast<float>(last[d] - G[j * N + d]));
        float* Sd = h.S + d * N;
        for (int64_t e = 0; e < N; ++e) Sd[e] += kd * v[e];
      }
    }
  }
}

}  // namespace qrwkv
