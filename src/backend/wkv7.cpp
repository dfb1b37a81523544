#include "backend/wkv7.h"

#include <algorithm>
#include <cmath>

namespace qrwkv {

namespace {
float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
// Prepared vectors are F32 in host memory for the host backends.
const float* f32(const Tensor* t) {
  return t->empty() ? nullptr : reinterpret_cast<const float*>(t->data);
}
}  // namespace

void wkv7_reference(const Wkv7Args& p, int64_t h0, int64_t h1) {
  const int64_t N = p.N, C = p.H * N, KVD = p.Hkv * N, G = p.H / p.Hkv;
  const float* w0 = f32(p.w0);
  const float* a0 = f32(p.a0);
  const float* v0 = p.nu != nullptr ? f32(p.v0) : nullptr;
  const float* kk = f32(p.k_k);
  const float* ka = f32(p.k_a);
  const float* lnw = f32(p.ln_w);
  const float* lnb = f32(p.ln_b);
  const float decay_scale = std::exp(-0.5f);
  const float eps = static_cast<float>(N) * 1e-5f;
  const float out_scale = 1.0f / std::sqrt(static_cast<float>(N));
  // Per-head scratch on the stack: no allocation per call (a decode step calls this per layer).
  float w[kWkv7MaxHead], a[kWkv7MaxHead], kap[kWkv7MaxHead], kt[kWkv7MaxHead], v[kWkv7MaxHead],
      sa[kWkv7MaxHead], y[kWkv7MaxHead];
  for (int64_t t = 0; t < p.T; ++t) {
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t c0 = h * N, kv0 = (h / G) * N;
      const float* r = p.r + t * C + c0;
      const float* k = p.k + t * KVD + kv0;
      const float* vin = p.v + t * KVD + kv0;
      float* vf = p.v_first + t * C + c0;
      double norm2 = 0;
      for (int64_t i = 0; i < N; ++i) {
        const int64_t c = c0 + i;
        w[i] = std::exp(-decay_scale * sigmoid(w0[c] + p.d[t * C + c]));
        a[i] = sigmoid(a0[c] + p.a[t * C + c]);
        if (v0 == nullptr) {
          v[i] = vin[i];
          vf[i] = v[i];
        } else {
          const float nu = sigmoid(v0[c] + p.nu[t * C + c]);
          v[i] = vin[i] + (vf[i] - vin[i]) * nu;
        }
        kap[i] = kk != nullptr ? k[i] * kk[c] : k[i];
        norm2 += double{kap[i]} * kap[i];
        kt[i] = ka != nullptr ? k[i] * (1.0f + (a[i] - 1.0f) * ka[c]) : k[i] * (1.0f - w[i] + a[i]);
      }
      const float inv = 1.0f / std::max(static_cast<float>(std::sqrt(norm2)), 1e-12f);
      for (int64_t i = 0; i < N; ++i) kap[i] *= inv;
      float* S = p.S + h * N * N;
      // κᵀ S of the state before this token, then the update, then y = Sᵀ r.
      std::fill_n(sa, N, 0.0f);
      for (int64_t i = 0; i < N; ++i)
        for (int64_t j = 0; j < N; ++j) sa[j] += kap[i] * S[i * N + j];
      std::fill_n(y, N, 0.0f);
      for (int64_t i = 0; i < N; ++i) {
        const float ka_i = kap[i] * a[i];
        for (int64_t j = 0; j < N; ++j) {
          float& s = S[i * N + j];
          s = w[i] * s - ka_i * sa[j] + kt[i] * v[j];
          y[j] += s * r[i];
        }
      }
      float* out = p.y + t * C + c0;
      if (lnw != nullptr) {
        double mean = 0, var = 0;
        for (int64_t j = 0; j < N; ++j) mean += y[j];
        mean /= static_cast<double>(N);
        for (int64_t j = 0; j < N; ++j) var += (y[j] - mean) * (y[j] - mean);
        var /= static_cast<double>(N);
        const double rstd = 1.0 / std::sqrt(var + eps);
        for (int64_t j = 0; j < N; ++j)
          out[j] = static_cast<float>((y[j] - mean) * rstd) * lnw[c0 + j] + lnb[c0 + j];
      } else {
        for (int64_t j = 0; j < N; ++j) out[j] = y[j] * out_scale;
      }
    }
  }
}

}  // namespace qrwkv
