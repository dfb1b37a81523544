#include "backend/wkv7.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace qrwkv {

namespace {
float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
// Prepared vectors are F32 in host memory for the host backends.
const float* f32(const Tensor* t) {
  return t->empty() ? nullptr : reinterpret_cast<const float*>(t->data);
}
}  // namespace

void wkv7_token(const Wkv7Args& p, int64_t t, int64_t h, Wkv7Token& x) {
  const int64_t N = p.N, C = p.H * N, KVD = p.Hkv * N, G = p.H / p.Hkv;
  const float* w0 = f32(p.w0);
  const float* a0 = f32(p.a0);
  const float* v0 = p.nu != nullptr ? f32(p.v0) : nullptr;
  const float* kk = f32(p.k_k);
  const float* kka = f32(p.k_a);
  const float decay_scale = std::exp(-0.5f);
  const int64_t c0 = h * N, kv0 = (h / G) * N;
  const float* k = p.k + t * KVD + kv0;
  const float* vin = p.v + t * KVD + kv0;
  float* vf = p.v_first + t * C + c0;
  double norm2 = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t c = c0 + i;
    x.log_w[i] = -decay_scale * sigmoid(w0[c] + p.d[t * C + c]);
    x.w[i] = std::exp(x.log_w[i]);
    const float a = sigmoid(a0[c] + p.a[t * C + c]);
    if (v0 == nullptr) {
      x.v[i] = vin[i];
      vf[i] = x.v[i];
    } else {
      const float nu = sigmoid(v0[c] + p.nu[t * C + c]);
      x.v[i] = vin[i] + (vf[i] - vin[i]) * nu;
    }
    x.kap[i] = kk != nullptr ? k[i] * kk[c] : k[i];
    norm2 += double{x.kap[i]} * x.kap[i];
    x.kt[i] = kka != nullptr ? k[i] * (1.0f + (a - 1.0f) * kka[c]) : k[i] * (1.0f - x.w[i] + a);
    x.ka[i] = a;  // times κ below, once κ is normalized
  }
  const float inv = 1.0f / std::max(static_cast<float>(std::sqrt(norm2)), 1e-12f);
  for (int64_t i = 0; i < N; ++i) {
    x.kap[i] *= inv;
    x.ka[i] *= x.kap[i];
  }
}

void wkv7_output(const Wkv7Args& p, int64_t t, int64_t h, const float* y) {
  const int64_t N = p.N, C = p.H * N, c0 = h * N;
  const float* lnw = f32(p.ln_w);
  const float* lnb = f32(p.ln_b);
  float* out = p.y + t * C + c0;
  if (lnw != nullptr) {
    double mean = 0, var = 0;
    for (int64_t j = 0; j < N; ++j) mean += y[j];
    mean /= static_cast<double>(N);
    for (int64_t j = 0; j < N; ++j) var += (y[j] - mean) * (y[j] - mean);
    var /= static_cast<double>(N);
    const double rstd = 1.0 / std::sqrt(var + static_cast<double>(static_cast<float>(N) * 1e-5f));
    for (int64_t j = 0; j < N; ++j)
      out[j] = static_cast<float>((y[j] - mean) * rstd) * lnw[c0 + j] + lnb[c0 + j];
  } else {
    const float out_scale = 1.0f / std::sqrt(static_cast<float>(N));
    for (int64_t j = 0; j < N; ++j) out[j] = y[j] * out_scale;
  }
}

void wkv7_step_reference(float* S, int64_t N, const Wkv7Token& x, const float* r, float* y) {
  float sa[kWkv7MaxHead];
  std::fill_n(sa, N, 0.0f);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < N; ++j) sa[j] += x.kap[i] * S[i * N + j];
  std::fill_n(y, N, 0.0f);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < N; ++j) {
      float& s = S[i * N + j];
      s = x.w[i] * s - x.ka[i] * sa[j] + x.kt[i] * x.v[j];
      y[j] += s * r[i];
    }
}

void wkv7_reference(const Wkv7Args& p, int64_t h0, int64_t h1) {
  const int64_t N = p.N, C = p.H * N;
  // Scratch on the stack: no allocation per call (a decode step calls this per layer).
  Wkv7Token x;
  float y[kWkv7MaxHead];
  for (int64_t t = 0; t < p.T; ++t)
    for (int64_t h = h0; h < h1; ++h) {
      wkv7_token(p, t, h, x);
      wkv7_step_reference(p.S + h * N * N, N, x, p.r + t * C + h * N, y);
      wkv7_output(p, t, h, y);
    }
}

void wkv7_chunked(const Wkv7Args& p, int64_t h0, int64_t h1) {
  constexpr int64_t L = kWkv7Chunk;
  const int64_t N = p.N, C = p.H * N;
  // Per chunk: the token values, the cumulative log-decays and the factored rows (≈ 6·16·N
  // floats, plus u and y): on the heap once per call, not per chunk.
  std::vector<Wkv7Token> tok(L);
  std::vector<float> gamma(L * N), bh(L * N), rh(L * N), aj(L * N), kj(L * N), u(L * N), y(L * N),
      mab(L * L), mak(L * L), mra(L * L), mrk(L * L);
  for (int64_t h = h0; h < h1; ++h) {
    float* S = p.S + h * N * N;
    for (int64_t t0 = 0; t0 < p.T; t0 += L) {
      const int64_t n = std::min(L, p.T - t0);
      for (int64_t t = 0; t < n; ++t) {
        wkv7_token(p, t0 + t, h, tok[t]);
        const Wkv7Token& x = tok[t];
        const float* r = p.r + (t0 + t) * C + h * N;
        for (int64_t i = 0; i < N; ++i) {
          const float before = t > 0 ? gamma[(t - 1) * N + i] : 0.0f;
          const float g = before + x.log_w[i];
          gamma[t * N + i] = g;
          bh[t * N + i] = x.kap[i] * std::exp(before);
          rh[t * N + i] = r[i] * std::exp(g);
          const float inv = std::exp(-g);
          aj[t * N + i] = x.ka[i] * inv;
          kj[t * N + i] = x.kt[i] * inv;
        }
      }
      auto dot = [&](const float* a, const float* b) {
        float s = 0;
        for (int64_t i = 0; i < N; ++i) s += a[i] * b[i];
        return s;
      };
      for (int64_t t = 0; t < n; ++t)
        for (int64_t j = 0; j <= t; ++j) {
          mra[t * L + j] = dot(rh.data() + t * N, aj.data() + j * N);
          mrk[t * L + j] = dot(rh.data() + t * N, kj.data() + j * N);
          if (j < t) {
            mab[t * L + j] = dot(bh.data() + t * N, aj.data() + j * N);
            mak[t * L + j] = dot(bh.data() + t * N, kj.data() + j * N);
          }
        }
      // u_t and y_t row by row: the S0 terms (one pass over S0 for each), then the chunk's own.
      std::fill(u.begin(), u.end(), 0.0f);
      std::fill(y.begin(), y.end(), 0.0f);
      for (int64_t i = 0; i < N; ++i) {
        const float* Si = S + i * N;
        for (int64_t t = 0; t < n; ++t) {
          const float b = bh[t * N + i], r = rh[t * N + i];
          float* ut = u.data() + t * N;
          float* yt = y.data() + t * N;
          for (int64_t j = 0; j < N; ++j) {
            ut[j] += b * Si[j];
            yt[j] += r * Si[j];
          }
        }
      }
      for (int64_t t = 0; t < n; ++t) {
        float* ut = u.data() + t * N;
        for (int64_t j = 0; j < t; ++j) {
          const float ab = mab[t * L + j], ak = mak[t * L + j];
          const float* uj = u.data() + j * N;
          const float* vj = tok[j].v;
          for (int64_t c = 0; c < N; ++c) ut[c] += -ab * uj[c] + ak * vj[c];
        }
      }
      for (int64_t t = 0; t < n; ++t) {
        float* yt = y.data() + t * N;
        for (int64_t j = 0; j <= t; ++j) {
          const float ra = mra[t * L + j], rk = mrk[t * L + j];
          const float* uj = u.data() + j * N;
          const float* vj = tok[j].v;
          for (int64_t c = 0; c < N; ++c) yt[c] += -ra * uj[c] + rk * vj[c];
        }
        wkv7_output(p, t0 + t, h, yt);
      }
      // S' = diag(e^{Γ_L}) S0 − Σ_j ((κa)_j e^{Γ_L−Γ_j}) u_jᵀ + (k̃_j e^{Γ_L−Γ_j}) v_jᵀ.
      const float* gl = gamma.data() + (n - 1) * N;
      for (int64_t i = 0; i < N; ++i) {
        float* Si = S + i * N;
        const float di = std::exp(gl[i]);
        for (int64_t c = 0; c < N; ++c) Si[c] *= di;
        for (int64_t j = 0; j < n; ++j) {
          const float tail = std::exp(gl[i] - gamma[j * N + i]);
          const float a = tok[j].ka[i] * tail, k = tok[j].kt[i] * tail;
          const float* uj = u.data() + j * N;
          const float* vj = tok[j].v;
          for (int64_t c = 0; c < N; ++c) Si[c] += -a * uj[c] + k * vj[c];
        }
      }
    }
  }
}

}  // namespace qrwkv
