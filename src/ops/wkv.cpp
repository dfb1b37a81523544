#include "ops/wkv.h"

#include <immintrin.h>

// GCC 12's AVX-512 headers trip its own -Wuninitialized (see fast_linear.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <cmath>
#include <vector>

namespace qrwkv {

void wkv_recurrent(const WkvHead& h) {
  const int64_t N = h.N;
  for (int64_t t = 0; t < h.T; ++t) {
    const float* q = h.q + t * h.q_stride;
    const float* k = h.k + t * h.k_stride;
    const float* v = h.v + t * h.v_stride;
    const float* lw = h.log_w + t * h.w_stride;
    float* o = h.o + t * h.o_stride;
    for (int64_t i = 0; i < N; ++i) {
      const float w = std::exp(lw[i]);
      float* Si = h.S + i * N;
      for (int64_t j = 0; j < N; ++j) Si[j] = w * Si[j] + k[i] * v[j];
    }
    for (int64_t j = 0; j < N; ++j) o[j] = 0.0f;
    for (int64_t i = 0; i < N; ++i) {
      const float* Si = h.S + i * N;
      for (int64_t j = 0; j < N; ++j) o[j] += q[i] * Si[j];
    }
  }
}

namespace {

#define QRWKV_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

QRWKV_AVX512 void fused_avx512(const WkvHead& h) {
  const int64_t N = h.N;
  for (int64_t t = 0; t < h.T; ++t) {
    const float* q = h.q + t * h.q_stride;
    const float* k = h.k + t * h.k_stride;
    const float* v = h.v + t * h.v_stride;
    const float* lw = h.log_w + t * h.w_stride;
    const float* wt = h.w != nullptr ? h.w + t * h.w_stride : nullptr;
    float* o = h.o + t * h.o_stride;
    for (int64_t j0 = 0; j0 < N; j0 += 64) {
      // Up to 64 value columns at a time: 4 vectors of S's row, 4 accumulators of o.
      const int64_t nv = std::min<int64_t>(4, (N - j0 + 15) / 16);
      __mmask16 m[4];
      __m512 vv[4], acc[4];
      for (int64_t u = 0; u < nv; ++u) {
        const int64_t left = N - j0 - 16 * u;
        m[u] = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
        vv[u] = _mm512_maskz_loadu_ps(m[u], v + j0 + 16 * u);
        acc[u] = _mm512_setzero_ps();
      }
      for (int64_t i = 0; i < N; ++i) {
        const __m512 w = _mm512_set1_ps(wt != nullptr ? wt[i] : std::exp(lw[i]));
        const __m512 ki = _mm512_set1_ps(k[i]), qi = _mm512_set1_ps(q[i]);
        float* Si = h.S + i * N + j0;
        for (int64_t u = 0; u < nv; ++u) {
          __m512 s = _mm512_maskz_loadu_ps(m[u], Si + 16 * u);
          s = _mm512_fmadd_ps(w, s, _mm512_mul_ps(ki, vv[u]));
          _mm512_mask_storeu_ps(Si + 16 * u, m[u], s);
          acc[u] = _mm512_fmadd_ps(qi, s, acc[u]);
        }
      }
      for (int64_t u = 0; u < nv; ++u) _mm512_mask_storeu_ps(o + j0 + 16 * u, m[u], acc[u]);
    }
  }
}

void fused_portable(const WkvHead& h) {
  const int64_t N = h.N;
  for (int64_t t = 0; t < h.T; ++t) {
    const float* q = h.q + t * h.q_stride;
    const float* k = h.k + t * h.k_stride;
    const float* v = h.v + t * h.v_stride;
    const float* lw = h.log_w + t * h.w_stride;
    float* o = h.o + t * h.o_stride;
    const float* wt = h.w != nullptr ? h.w + t * h.w_stride : nullptr;
    for (int64_t j = 0; j < N; ++j) o[j] = 0.0f;
    for (int64_t i = 0; i < N; ++i) {
      const float w = wt != nullptr ? wt[i] : std::exp(lw[i]);
      float* Si = h.S + i * N;
      for (int64_t j = 0; j < N; ++j) {
        Si[j] = w * Si[j] + k[i] * v[j];
        o[j] += q[i] * Si[j];
      }
    }
  }
}

}  // namespace

void wkv_recurrent_fused(const WkvHead& h) {
  static const bool avx512 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
  }();
  if (avx512)
    fused_avx512(h);
  else
    fused_portable(h);
}

void wkv_chunked(const WkvHead& h, int64_t chunk) {
  constexpr int64_t kSub = 16;
  const int64_t N = h.N;
  chunk = std::max<int64_t>(1, chunk);
  // Γ within the chunk, in double: exp(Γ_i − Γ_j) needs the difference of two large sums, which
  // in float32 would lose the small differences between neighbouring tokens.
  std::vector<double> G(static_cast<size_t>(chunk * N));
  std::vector<float> qs(static_cast<size_t>(N)), kscaled(static_cast<size_t>(chunk * N));
  std::vector<float> S0(static_cast<size_t>(N * N));
  std::vector<double> ref(static_cast<size_t>(N), 0.0);
  for (int64_t c0 = 0; c0 < h.T; c0 += chunk) {
    const int64_t B = std::min(chunk, h.T - c0);
    auto row = [&](const float* base, int64_t stride, int64_t i) {
      return base + (c0 + i) * stride;
    };
    for (int64_t i = 0; i < B; ++i) {
      const float* lw = row(h.log_w, h.w_stride, i);
      for (int64_t d = 0; d < N; ++d) G[i * N + d] = (i ? G[(i - 1) * N + d] : 0.0) + lw[d];
    }
    std::copy(h.S, h.S + N * N, S0.begin());

    for (int64_t s0 = 0; s0 < B; s0 += kSub) {
      const int64_t s1 = std::min(B, s0 + kSub);
      for (int64_t d = 0; d < N; ++d) ref[d] = s0 == 0 ? 0.0 : G[(s0 - 1) * N + d];
      // Keys of earlier sub-chunks, scaled to the reference point: exp(Γ_ref − Γ_j) ≤ 1.
      for (int64_t j = 0; j < s0; ++j) {
        const float* k = row(h.k, h.k_stride, j);
        for (int64_t d = 0; d < N; ++d)
          kscaled[j * N + d] = k[d] * std::exp(static_cast<float>(ref[d] - G[j * N + d]));
      }
      for (int64_t i = s0; i < s1; ++i) {
        const float* q = row(h.q, h.q_stride, i);
        float* o = h.o + (c0 + i) * h.o_stride;
        // Inter-chunk part: (q_i ⊙ exp(Γ_i)) S0.
        for (int64_t d = 0; d < N; ++d) qs[d] = q[d] * std::exp(static_cast<float>(G[i * N + d]));
        for (int64_t j = 0; j < N; ++j) o[j] = 0.0f;
        for (int64_t d = 0; d < N; ++d) {
          const float* Sd = &S0[d * N];
          for (int64_t j = 0; j < N; ++j) o[j] += qs[d] * Sd[j];
        }
        // Earlier sub-chunks: q_i scaled by exp(Γ_i − Γ_ref) ≤ 1 against the scaled keys.
        for (int64_t d = 0; d < N; ++d)
          qs[d] = q[d] * std::exp(static_cast<float>(G[i * N + d] - ref[d]));
        for (int64_t j = 0; j < s0; ++j) {
          float a = 0.0f;
          for (int64_t d = 0; d < N; ++d) a += qs[d] * kscaled[j * N + d];
          const float* v = row(h.v, h.v_stride, j);
          for (int64_t e = 0; e < N; ++e) o[e] += a * v[e];
        }
        // The query's own sub-chunk, element by element (diagonal included).
        for (int64_t j = s0; j <= i; ++j) {
          const float* k = row(h.k, h.k_stride, j);
          float a = 0.0f;
          for (int64_t d = 0; d < N; ++d)
            a += q[d] * k[d] * std::exp(static_cast<float>(G[i * N + d] - G[j * N + d]));
          const float* v = row(h.v, h.v_stride, j);
          for (int64_t e = 0; e < N; ++e) o[e] += a * v[e];
        }
      }
    }

    // State after the chunk: S' = diag(exp(Γ_last)) S0 + Σ_j (k_j ⊙ exp(Γ_last − Γ_j))ᵀ v_j.
    const double* last = &G[(B - 1) * N];
    for (int64_t d = 0; d < N; ++d) {
      const float decay = std::exp(static_cast<float>(last[d]));
      float* Sd = h.S + d * N;
      for (int64_t e = 0; e < N; ++e) Sd[e] = decay * S0[d * N + e];
    }
    for (int64_t j = 0; j < B; ++j) {
      const float* k = row(h.k, h.k_stride, j);
      const float* v = row(h.v, h.v_stride, j);
      for (int64_t d = 0; d < N; ++d) {
        const float kd = k[d] * std::exp(static_cast<float>(last[d] - G[j * N + d]));
        float* Sd = h.S + d * N;
        for (int64_t e = 0; e < N; ++e) Sd[e] += kd * v[e];
      }
    }
  }
}

}  // namespace qrwkv
