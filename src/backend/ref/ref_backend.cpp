#include "backend/ref/ref_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/elementwise.h"
#include "backend/wkv.h"
#include "backend/wkv7.h"
#include "io/error.h"
#include "ops/panel.h"
#include "ops/quant.h"

namespace qrwkv {

namespace {

// Scratch that grows (doubling) to the largest size asked for and is then reused: one per
// thread, so that models sharing this backend may run on several threads; `slot` tells
// simultaneous ones apart.
float* scratch(int64_t n, int slot = 0) {
  thread_local std::vector<float> buf[2];
  std::vector<float>& b = buf[slot];
  if (b.size() < static_cast<size_t>(n)) b.resize(std::max(static_cast<size_t>(n), 2 * b.size()));
  return b.data();
}

// Block blk of row o of a Q8_0 or Q4_0 weight: its integers q[0..32) and its scale.
float block_of(const Tensor& w, int64_t o, int64_t blk, int32_t* q) {
  const int64_t in = w.shape[1];
  if (w.layout == Layout::Panel32) {
    // ops/panel.h: the block's scales, then words (j, r) of four bytes.
    const bool q8 = w.dtype == DType::Q8_0;
    const int64_t r = o % kPanelRows;
    const uint8_t* pb = w.data + o / kPanelRows * panel_bytes(w.dtype, in) +
                        blk * (q8 ? kQ8PanelBlock : kQ4PanelBlock);
    for (int j = 0; j < (q8 ? 8 : 4); ++j)
      for (int i = 0; i < 4; ++i) {
        const uint8_t v = pb[64 + 4 * (kPanelRows * j + r) + i];
        if (q8) {
          q[4 * j + i] = static_cast<int8_t>(v);
        } else {
          q[4 * j + i] = (v & 15) - 8;
          q[16 + 4 * j + i] = (v >> 4) - 8;
        }
      }
    uint16_t dbits;
    std::memcpy(&dbits, pb + 2 * r, 2);
    return f16_to_f32(dbits);
  }
  const int64_t row_bytes = tensor_bytes(w.dtype, in), block_bytes = row_bytes / (in / 32);
  const uint8_t* wb = w.data + o * row_bytes + blk * block_bytes;
  uint16_t dbits;
  std::memcpy(&dbits, wb, 2);
  for (int j = 0; j < 32; ++j)
    q[j] = w.dtype == DType::Q8_0 ? static_cast<int8_t>(wb[2 + j])
                                  : ((j < 16 ? wb[2 + j] : wb[2 + j - 16] >> 4) & 15) - 8;
  return f16_to_f32(dbits);
}

}  // namespace

std::shared_ptr<Backend> make_reference_backend(ActivationRounding rounding) {
  return std::make_shared<RefBackend>(rounding);
}

std::string RefBackend::name() const {
  switch (rounding_) {
    case ActivationRounding::Int16:
      return "reference (bf16 / int16 activations)";
    case ActivationRounding::Int8:
      return "reference (bf16 / int8 activations)";
    default:
      return "reference";
  }
}

void RefBackend::prepare(const std::vector<WeightRef>& weights, WeightFormat format,
                         WeightArena& arena) {
  prepare_host_weights(weights, format, arena, nullptr);
}

void RefBackend::embed(const Tensor& table, const int32_t* ids, int64_t T, float* h) {
  elementwise::embed(table, ids, 0, T, h);
}

void RefBackend::rmsnorm(const float* x, int64_t T, int64_t C, const Tensor& w, float eps,
                         float* y) {
  elementwise::rmsnorm(x, 0, T, C, f32(w), eps, y);
}

void RefBackend::linear(const float* x, int64_t T, const Tensor& w, const Tensor& b, float* y) {
  const int64_t out = w.shape[0], in = w.shape[1];
  const bool block = w.dtype == DType::Q8_0 || w.dtype == DType::Q4_0;
  if (rounding_ != ActivationRounding::Exact && block) return linear_blocks(x, T, w, b, y);
  if (rounding_ != ActivationRounding::Exact && w.dtype == DType::BF16) {
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

// Y = X Wᵀ + b with X quantized per block (quantize_act_int16 or quantize_act_int8, by the
// rounding) and W's blocks as stored:
//   y[t][o] = Σ_b (d_w[o][b] · d_x[t][b]) · Σ_j q_w[o][32b + j] · q_x[t][32b + j]
// with each block's integer dot product exact and the blocks summed in order.
void RefBackend::linear_blocks(const float* x, int64_t T, const Tensor& w, const Tensor& b,
                               float* y) {
  const int64_t out = w.shape[0], in = w.shape[1], nb = in / kQuantBlock;
  std::vector<int32_t> qx(static_cast<size_t>(T * in));
  std::vector<float> dx(static_cast<size_t>(T * nb));
  std::vector<int32_t> sx(static_cast<size_t>(T * nb));
  if (rounding_ == ActivationRounding::Int16) {
    std::vector<int16_t> q(static_cast<size_t>(in));
    for (int64_t t = 0; t < T; ++t) {
      quantize_act_int16(x + t * in, in, q.data(), &dx[t * nb], &sx[t * nb]);
      std::copy(q.begin(), q.end(), qx.begin() + t * in);
    }
  } else {
    std::vector<int8_t> q(static_cast<size_t>(in));
    for (int64_t t = 0; t < T; ++t) {
      quantize_act_int8(x + t * in, in, q.data(), &dx[t * nb], &sx[t * nb]);
      std::copy(q.begin(), q.end(), qx.begin() + t * in);
    }
  }
  std::vector<float> row(static_cast<size_t>(in));
  for (int64_t o = 0; o < out; ++o) {
    const float bias = b.empty() ? 0.0f : f32(b)[o];
    for (int64_t t = 0; t < T; ++t) {
      float acc = 0.0f;
      for (int64_t blk = 0; blk < nb; ++blk) {
        // The block's integers and scale, whatever the layout: row o's weights are d · q.
        int32_t qw[32];
        const float dw = block_of(w, o, blk, qw);
        const int32_t* xq = &qx[t * in + blk * kQuantBlock];
        int32_t dot = 0;
        for (int j = 0; j < 32; ++j) dot += qw[j] * xq[j];
        acc += static_cast<float>(dot) * (dw * dx[t * nb + blk]);
      }
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

void RefBackend::add(float* h, const float* x, int64_t n) { elementwise::add(h, x, 0, n); }

void RefBackend::swiglu(float* g, const float* u, int64_t n) { elementwise::swiglu(g, u, 0, n); }

void RefBackend::token_shift(const float* a, int64_t T, int64_t C, float* x_prev,
                             const Tensor& maa_x, float* d, float* xx) {
  elementwise::token_shift(a, 0, T, C, x_prev, f32(maa_x), d, xx);
  if (T > 0) std::copy_n(a + (T - 1) * C, C, x_prev);
}

void RefBackend::tanh(float* x, int64_t n) { elementwise::tanh(x, 0, n); }

void RefBackend::lerp(const float* a, const float* d, const float* m, int64_t ldm,
                      const Tensor& maa, int64_t T, int64_t C, float* x) {
  elementwise::lerp(a, d, m, ldm, f32(maa), 0, T, C, x);
}

void RefBackend::decay(const float* dd, const Tensor& time_decay, int64_t T, int64_t C, float* w,
                       float* one_minus_w, float* log_w) {
  elementwise::decay(dd, f32(time_decay), 0, T, C, w, one_minus_w, log_w);
}

void RefBackend::gate(float* o, const float* g, int64_t n) { elementwise::gate(o, g, 0, n); }

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

void RefBackend::sigmoid(float* x, int64_t n) { elementwise::sigmoid(x, 0, n); }

void RefBackend::mul(float* o, const float* g, int64_t n) { elementwise::mul(o, g, 0, n); }

void RefBackend::wkv7(const Wkv7Args& a) { wkv7_reference(a, 0, a.H); }

void RefBackend::rope(float* x, int64_t T, int64_t n_heads, int64_t D, int64_t pos0,
                      const double* inv_freq) {
  elementwise::rope(x, 0, T, n_heads, D, pos0, inv_freq);
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
