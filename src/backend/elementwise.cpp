#include "backend/elementwise.h"

namespace qrwkv::elementwise {

void embed(const Tensor& table, const int32_t* ids, int64_t t0, int64_t t1, float* h) {
  const int64_t C = table.cols();
  for (int64_t t = t0; t < t1; ++t) load_f32(table, int64_t{ids[t]} * C, C, h + t * C);
}

void rmsnorm(const float* x, int64_t t0, int64_t t1, int64_t C, const float* w, float eps,
             float* y) {
  for (int64_t t = t0; t < t1; ++t) {
    const float* xt = x + t * C;
    double ss = 0.0;
    for (int64_t i = 0; i < C; ++i) ss += static_cast<double>(xt[i]) * xt[i];
    const float inv = 1.0f / std::sqrt(static_cast<float>(ss / C) + eps);
    for (int64_t i = 0; i < C; ++i) y[t * C + i] = w[i] * (xt[i] * inv);
  }
}

void add(float* h, const float* x, int64_t b, int64_t e) {
  for (int64_t j = b; j < e; ++j) h[j] += x[j];
}

void swiglu(float* g, const float* u, int64_t b, int64_t e) {
  for (int64_t j = b; j < e; ++j) g[j] = silu(g[j]) * u[j];
}

void tanh(float* x, int64_t b, int64_t e) {
  for (int64_t j = b; j < e; ++j) x[j] = std::tanh(x[j]);
}

void gate(float* o, const float* g, int64_t b, int64_t e) {
  for (int64_t j = b; j < e; ++j) o[j] *= sigmoid(g[j]);
}

void sigmoid(float* x, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; ++i) x[i] = sigmoid(x[i]);
}

void mul(float* o, const float* g, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; ++i) o[i] *= g[i];
}

void token_shift(const float* a, int64_t t0, int64_t t1, int64_t C, const float* x_prev,
                 const float* maa_x, float* d, float* xx) {
  for (int64_t t = t0; t < t1; ++t) {
    const float* prev = t == 0 ? x_prev : a + (t - 1) * C;
    for (int64_t i = 0; i < C; ++i) {
      d[t * C + i] = prev[i] - a[t * C + i];
      xx[t * C + i] = a[t * C + i] + d[t * C + i] * maa_x[i];
    }
  }
}

void lerp(const float* a, const float* d, const float* m, int64_t ldm, const float* maa, int64_t t0,
          int64_t t1, int64_t C, float* x) {
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t i = 0; i < C; ++i)
      x[t * C + i] = a[t * C + i] + d[t * C + i] * (maa[i] + m[t * ldm + i]);
}

void decay(const float* dd, const float* time_decay, int64_t t0, int64_t t1, int64_t C, float* w,
           float* one_minus_w, float* log_w) {
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t i = 0; i < C; ++i) {
      const int64_t j = t * C + i;
      const float lw = -std::exp(time_decay[i] + dd[j]);
      w[j] = std::exp(lw);
      one_minus_w[j] = -std::expm1(lw);  // 1 − w without cancellation (docs/model.md)
      log_w[j] = lw;
    }
}

void rope(float* x, int64_t t0, int64_t t1, int64_t n_heads, int64_t D, int64_t pos0,
          const double* inv_freq) {
  const int64_t half = D / 2;
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t h = 0; h < n_heads; ++h) {
      float* xh = x + (t * n_heads + h) * D;
      for (int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(pos0 + t) * inv_freq[i];
        const float cs = static_cast<float>(std::cos(angle));
        const float sn = static_cast<float>(std::sin(angle));
        const float x1 = xh[i], x2 = xh[i + half];
        xh[i] = x1 * cs - x2 * sn;
        xh[i + half] = x2 * cs + x1 * sn;
      }
    }
}

}  // namespace qrwkv::elementwise
