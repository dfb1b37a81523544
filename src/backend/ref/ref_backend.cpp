#include "backend/ref/ref_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>

#include "backend/host_weights.h"
#include "backend/wkv.h"
#include "io/error.h"

namespace qrwkv {

namespace {

// A weight vector prepared as F32.
const float* f32(const Tensor& t) { return reinterpret_cast<const float*>(t.data); }

// Scratch that grows (doubling) to the largest size asked for and is then reused: one per
// thread, so that models sharing this backend may run on several threads; `slot` tells
// simultaneous ones apart.
float* scratch(int64_t n, int slot = 0) {
  thread_local std::vector<float> buf[2];
  std::vector<float>& b = buf[slot];
  if (b.size() < static_cast<size_t>(n)) b.resize(std::max(static_cast<size_t>(n), 2 * b.size()));
  return b.data();
}

}  // namespace

std::shared_ptr<Backend> make_reference_backend(bool bf16_activations) {
  return std::make_shared<RefBackend>(bf16_activations);
}

// Through operator new, so that every allocation of the engine goes one way (and a test can
// count them all).
void* RefBackend::alloc(size_t bytes) { return ::operator new (bytes, std::align_val_t{64}); }

void RefBackend::free(void* p) noexcept { ::operator delete (p, std::align_val_t{64}); }

void RefBackend::download(float* host, const float* src, int64_t n) {
  if (n > 0) std::memcpy(host, src, static_cast<size_t>(n) * sizeof(float));
}

void RefBackend::prepare(const std::vector<WeightRef>& weights, WeightFormat format,
                         WeightArena& arena) {
  prepare_host_weights(weights, format, arena, nullptr);
}

void RefBackend::embed(const Tensor& table, const int32_t* ids, int64_t T, float* h) {
  const int64_t C = table.cols();
  for (int64_t t = 0; t < T; ++t) load_f32(table, int64_t{ids[t]} * C, C, h + t * C);
}

void RefBackend::rmsnorm(const float* x, int64_t T, int64_t C, const Tensor& w, float eps,
                         float* y) {
  const float* g = f32(w);
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * C;
    double ss = 0.0;
    for (int64_t i = 0; i < C; ++i) ss += static_cast<double>(xt[i]) * xt[i];
    const float inv = 1.0f / std::sqrt(static_cast<float>(ss / C) + eps);
    for (int64_t i = 0; i < C; ++i) y[t * C + i] = g[i] * (xt[i] * inv);
  }
}

void RefBackend::linear(const float* x, int64_t T, const Tensor& w, const Tensor& b, float* y) {
  const int64_t out = w.shape[0], in = w.shape[1];
  if (bf16_activations_ &&
      (w.dtype == DType::BF16 || w.dtype == DType::Q8_0 || w.dtype == DType::Q4_0)) {
    float* xr = scratch(T * in, 1);
    for (int64_t i = 0; i < T * in; ++i) xr[i] = bf16_to_f32(f32_to_bf16(x[i]));
    x = xr;
  }
  float* row = scratch(in);
  for (int64_t o = 0; o < out; ++o) {
    load_f32(w, o * in, in, row);
    const float bias = b.empty() ? 0.0f : f32(b)[o];
    for (int64_t t = 0; t < T; ++t) {
      const float* xt = x + t * in;
      float acc = 0.0f;
      for (int64_t i = 0; i < in; ++i) acc += xt[i] * row[i];
      y[t * out + o] = acc + bias;
    }
  }
}

void RefBackend::matmul(const float* x, int64_t T, int64_t ldx, const Tensor& m, float* y) {
  const int64_t in = m.shape[0], out = m.shape[1];
  float* row = scratch(out);
  std::fill(y, y + T * out, 0.0f);
  for (int64_t i = 0; i < in; ++i) {
    load_f32(m, i * out, out, row);
    for (int64_t t = 0; t < T; ++t) {
      const float xi = x[t * ldx + i];
      float* yt = y + t * out;
      for (int64_t j = 0; j < out; ++j) yt[j] += xi * row[j];
    }
  }
}

void RefBackend::add(float* h, const float* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) h[j] += x[j];
}

void RefBackend::swiglu(float* g, const float* u, int64_t n) {
  for (int64_t j = 0; j < n; ++j) g[j] = silu(g[j]) * u[j];
}

void RefBackend::gather_rows(const float* src, int64_t C, const int64_t* rows, int64_t R,
                             float* dst) {
  for (int64_t r = 0; r < R; ++r) std::copy_n(src + rows[r] * C, C, dst + r * C);
}

void RefBackend::token_shift(const float* a, int64_t T, int64_t C, float* x_prev,
                             const Tensor& maa_x, float* d, float* xx) {
  const float* mx = f32(maa_x);
  for (int64_t t = 0; t < T; ++t) {
    const float* prev = t == 0 ? x_prev : a + (t - 1) * C;
    for (int64_t i = 0; i < C; ++i) {
      d[t * C + i] = prev[i] - a[t * C + i];
      xx[t * C + i] = a[t * C + i] + d[t * C + i] * mx[i];
    }
  }
  if (T > 0) std::copy_n(a + (T - 1) * C, C, x_prev);
}

void RefBackend::tanh(float* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) x[j] = std::tanh(x[j]);
}

void RefBackend::lerp(const float* a, const float* d, const float* m, int64_t ldm,
                      const Tensor& maa, int64_t T, int64_t C, float* x) {
  const float* mu = f32(maa);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < C; ++i)
      x[t * C + i] = a[t * C + i] + d[t * C + i] * (mu[i] + m[t * ldm + i]);
}

void RefBackend::decay(const float* dd, const Tensor& time_decay, int64_t T, int64_t C, float* w,
                       float* one_minus_w, float* log_w) {
  const float* td = f32(time_decay);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < C; ++i) {
      const int64_t j = t * C + i;
      const float lw = -std::exp(td[i] + dd[j]);
      w[j] = std::exp(lw);
      one_minus_w[j] = -std::expm1(lw);
      log_w[j] = lw;
    }
}

void RefBackend::gate(float* o, const float* g, int64_t n) {
  for (int64_t j = 0; j < n; ++j) o[j] *= sigmoid(g[j]);
}

void RefBackend::wkv(const WkvArgs& a) {
  const int64_t C = a.H * a.N, KVD = a.Hkv * a.N, G = a.H / a.Hkv;
  for (int64_t h = 0; h < a.H; ++h) {
    const int64_t kvh = h / G;  // q-head h reads kv-head ⌊h/G⌋
    const int64_t c = h * a.N;
    wkv_recurrent(WkvHead{a.r + c, C, a.k + kvh * a.N, KVD, a.v + kvh * a.N, KVD, a.w + c,
                          a.one_minus_w + c, a.log_w + c, C, a.o + c, C, a.S + h * a.N * a.N, a.N,
                          a.T, a.scale});
  }
}

void RefBackend::rope(float* x, int64_t T, int64_t n_heads, int64_t D, int64_t pos0,
                      const double* inv_freq) {
  const int64_t half = D / 2;
  for (int64_t t = 0; t < T; ++t)
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

void RefBackend::kv_append(std::vector<float>& k_cache, std::vector<float>& v_cache, const float* k,
                           const float* v, int64_t T, int64_t kv_dim) {
  k_cache.insert(k_cache.end(), k, k + T * kv_dim);
  v_cache.insert(v_cache.end(), v, v + T * kv_dim);
}

void RefBackend::attention(const AttentionArgs& a) {
  const int64_t QD = a.H * a.D, KVD = a.Hkv * a.D, G = a.H / a.Hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(a.D));
  float* p = scratch(a.pos0 + a.T);
  for (int64_t t = 0; t < a.T; ++t) {
    const int64_t n_ctx = a.pos0 + t + 1;  // causal: positions 0 .. pos0 + t
    for (int64_t h = 0; h < a.H; ++h) {
      const int64_t kvh = h / G;
      const float* qh = a.q + t * QD + h * a.D;
      float max_score = -INFINITY;
      for (int64_t j = 0; j < n_ctx; ++j) {
        const float* kj = a.k_cache + j * KVD + kvh * a.D;
        float s = 0.0f;
        for (int64_t i = 0; i < a.D; ++i) s += qh[i] * kj[i];
        p[j] = s * scale;
        max_score = std::max(max_score, p[j]);
      }
      double sum = 0.0;
      for (int64_t j = 0; j < n_ctx; ++j) {
        p[j] = std::exp(p[j] - max_score);
        sum += p[j];
      }
      float* oh = a.o + t * QD + h * a.D;
      std::fill(oh, oh + a.D, 0.0f);
      for (int64_t j = 0; j < n_ctx; ++j) {
        const float pj = static_cast<float>(p[j] / sum);
        const float* vj = a.v_cache + j * KVD + kvh * a.D;
        for (int64_t i = 0; i < a.D; ++i) oh[i] += pj * vj[i];
      }
    }
  }
}

}  // namespace qrwkv
