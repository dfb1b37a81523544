// Quantization into llama.cpp's block formats as its quantizer does it without an importance
// matrix, so that a file qrwkv writes holds the bytes llama-quantize would write for the same
// float32 values (tests compare them with files llama-quantize made). The algorithms:
//
//   Q8_0   d = max|x| / 127, q = round-half-away(x / d), d stored as f16.
//   Q4_0   m = the element of largest magnitude (the first one), d = m / −8,
//          n = min(15, trunc(x / d + 8.5)).
//   Q4_1, Q5_0, Q5_1  the same with an offset (min) or 32 levels.
//   Q4_K, Q5_K  per sub-block of 32: a weighted least-squares fit of scale and min over a few
//          candidate ranges (fit_scale_min), then the 8 scales and mins quantized to 6 bits
//          against the largest, and the values requantized against the stored scales.
//   Q6_K   per sub-block of 16: a symmetric fit searching 19 ranges around nmax = 32
//          (fit_symmetric), 8-bit scales against the largest, values requantized.
//
// As in the decoders, every operation is rounded on its own in the order written (compiled
// without floating-point contraction).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "io/error.h"
#include "ops/quant.h"

namespace qrwkv {

namespace {

constexpr float kGroupEps = 1e-15f;

// Round to nearest, ties to even, for |v| < 2^22: the float32 addition of 1.5 · 2^23.
int nearest_int(float v) {
  const float t = v + 12582912.0f;
  int32_t i;
  std::memcpy(&i, &t, 4);
  return (i & 0x007fffff) - 0x00400000;
}

void put_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

void q8_0(const float* x, uint8_t* b) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_f16(b, d);
  for (int j = 0; j < 32; ++j)
    b[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(x[j] * id)));
}

// The element of largest magnitude (the first of equals).
float signed_max(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; ++j)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  return max;
}

void q4_0(const float* x, uint8_t* b) {
  const float d = signed_max(x, 32) / -8;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_f16(b, d);
  for (int j = 0; j < 16; ++j) {
    const int n0 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
    const int n1 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 8.5f)));
    b[2 + j] = static_cast<uint8_t>(n0 | (n1 << 4));
  }
}

void q4_1(const float* x, uint8_t* b) {
  float min = x[0], max = x[0];
  for (int j = 1; j < 32; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
  const float d = (max - min) / 15;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_f16(b, d);
  put_f16(b + 2, min);
  for (int j = 0; j < 16; ++j) {
    const int n0 = std::min(15, static_cast<int>(static_cast<int8_t>((x[j] - min) * id + 0.5f)));
    const int n1 =
        std::min(15, static_cast<int>(static_cast<int8_t>((x[j + 16] - min) * id + 0.5f)));
    b[4 + j] = static_cast<uint8_t>(n0 | (n1 << 4));
  }
}

void q5_0(const float* x, uint8_t* b) {
  const float d = signed_max(x, 32) / -16;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_f16(b, d);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const int n0 = std::min(31, static_cast<int>(static_cast<int8_t>(x[j] * id + 16.5f)));
    const int n1 = std::min(31, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 16.5f)));
    b[6 + j] = static_cast<uint8_t>((n0 & 0xF) | ((n1 & 0xF) << 4));
    qh |= static_cast<uint32_t>((n0 & 0x10) >> 4) << j;
    qh |= static_cast<uint32_t>((n1 & 0x10) >> 4) << (j + 16);
  }
  std::memcpy(b + 2, &qh, 4);
}

void q5_1(const float* x, uint8_t* b) {
  float min = x[0], max = x[0];
  for (int j = 1; j < 32; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
  const float d = (max - min) / 31;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_f16(b, d);
  put_f16(b + 2, min);
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    const int n0 = static_cast<uint8_t>((x[j] - min) * id + 0.5f);
    const int n1 = static_cast<uint8_t>((x[j + 16] - min) * id + 0.5f);
    b[8 + j] = static_cast<uint8_t>((n0 & 0xF) | ((n1 & 0xF) << 4));
    qh |= static_cast<uint32_t>((n0 & 0x10) >> 4) << j;
    qh |= static_cast<uint32_t>((n1 & 0x10) >> 4) << (j + 16);
  }
  std::memcpy(b + 4, &qh, 4);
}

// Asymmetric fit of n values x with weights w to scale · L + min, L ∈ [0, nmax], min ≤ 0: the
// plain range first, then nstep + 1 candidate ranges (rmin + rdelta · is + nmax levels over the
// span), each solved by weighted least squares for scale and min, keeping the one of least
// weighted error (absolute with use_mad, squared otherwise). Returns the scale; *neg_min = −min.
float fit_scale_min(int n, int nmax, const float* x, const float* w, uint8_t* L, float* neg_min,
                    float rmin, float rdelta, int nstep, bool use_mad) {
  float min = x[0], max = x[0];
  float sum_w = w[0], sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    std::fill(L, L + n, 0);
    *neg_min = -min;
    return 0.0f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<uint8_t>(std::clamp(nearest_int(iscale * (x[i] - min)), 0, nmax));
    float diff = scale * L[i] + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best += w[i] * diff;
  }
  uint8_t aux[32];
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest_int(iscale * (x[i] - min)), 0, nmax);
      aux[i] = static_cast<uint8_t>(l);
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float s = (sum_w * sum_xl - sum_x * sum_l) / D;
      float m = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (m > 0) {
        m = 0;
        s = sum_xl / sum_l2;
      }
      float err = 0;
      for (int i = 0; i < n; ++i) {
        float diff = s * aux[i] + m - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        err += w[i] * diff;
      }
      if (err < best) {
        std::copy(aux, aux + n, L);
        best = err;
        scale = s;
        min = m;
      }
    }
  }
  *neg_min = -min;
  return scale;
}

// Symmetric fit of n values to scale · l, l ∈ [−nmax, nmax − 1], weighted by x² (Q6_K's choice):
// the range −nmax / (largest-magnitude element), then 18 neighbouring ranges, keeping the one
// whose least-squares scale explains the most. L gets l + nmax.
float fit_symmetric(int n, int nmax, const float* x, int8_t* L) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  if (amax < kGroupEps) {
    std::fill(L, L + n, 0);
    return 0.0f;
  }
  float iscale = static_cast<float>(-nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i)
        L[i] = static_cast<int8_t>(nmax + std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// The 6-bit scales and mins of Q4_K / Q5_K into their 12 bytes (the inverse of the decoder's
// k_scale_min).
void pack_scale_min(const uint8_t* ls, const uint8_t* lm, uint8_t* s12) {
  std::memset(s12, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      s12[j] = ls[j];
      s12[j + 4] = lm[j];
    } else {
      s12[j + 4] = static_cast<uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      s12[j - 4] |= static_cast<uint8_t>((ls[j] >> 4) << 6);
      s12[j] |= static_cast<uint8_t>((lm[j] >> 4) << 6);
    }
  }
}
// Q4_K (nmax 15) and Q5_K (nmax 31): d, dmin, 12 scale bytes at b; the levels into L[256].
void k_scales_and_levels(const float* x, int nmax, float rmin, int nstep, uint8_t* b, uint8_t* L) {
  float scales[8], mins[8], w[32];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) w[l] = av + std::fabs(x[32 * j + l]);
    scales[j] =
        fit_scale_min(32, nmax, x + 32 * j, w, L + 32 * j, &mins[j], rmin, 0.1f, nstep, false);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  uint8_t ls[8], lm[8];
  for (int j = 0; j < 8; ++j) {
    ls[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_scale * scales[j])));
    lm[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_min * mins[j])));
  }
  put_f16(b, max_scale / 63.f);
  put_f16(b + 2, max_min / 63.f);
  pack_scale_min(ls, lm, b + 4);
  for (int j = 0; j < 8; ++j) {
    float d, dm;
    k_sub_block(b, j, d, dm);
    if (d == 0.0f) continue;
    for (int i = 0; i < 32; ++i)
      L[32 * j + i] =
          static_cast<uint8_t>(std::clamp(nearest_int((x[32 * j + i] + dm) / d), 0, nmax));
  }
}

void q4_k(const float* x, uint8_t* b) {
  uint8_t L[256];
  k_scales_and_levels(x, 15, -1.0f, 20, b, L);
  uint8_t* q = b + 16;
  for (int j = 0; j < 256; j += 64, q += 32)
    for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
}

void q5_k(const float* x, uint8_t* b) {
  uint8_t L[256];
  k_scales_and_levels(x, 31, -0.5f, 15, b, L);
  uint8_t* qh = b + 16;
  uint8_t* ql = b + 48;
  std::memset(qh, 0, 32);
  uint8_t m1 = 1, m2 = 2;
  for (int n = 0; n < 256; n += 64, ql += 32) {
    for (int j = 0; j < 32; ++j) {
      int l1 = L[n + j], l2 = L[n + j + 32];
      if (l1 > 15) {
        l1 -= 16;
        qh[j] |= m1;
      }
      if (l2 > 15) {
        l2 -= 16;
        qh[j] |= m2;
      }
      ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
    }
    m1 = static_cast<uint8_t>(m1 << 2);
    m2 = static_cast<uint8_t>(m2 << 2);
  }
}

void q6_k(const float* x, uint8_t* b) {
  int8_t L[256];
  float scales[16];
  float max_scale = 0, max_abs = 0;
  for (int ib = 0; ib < 16; ++ib) {
    scales[ib] = fit_symmetric(16, 32, x + 16 * ib, L + 16 * ib);
    if (std::fabs(scales[ib]) > max_abs) {
      max_abs = std::fabs(scales[ib]);
      max_scale = scales[ib];
    }
  }
  std::memset(b, 0, 210);
  if (max_abs < kGroupEps) return;  // all zero, d = 0
  const float iscale = -128.f / max_scale;
  put_f16(b + 208, 1 / iscale);
  auto* sc = reinterpret_cast<int8_t*>(b + 192);
  for (int ib = 0; ib < 16; ++ib)
    sc[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
  const float d_all = f16_at(b + 208);
  for (int j = 0; j < 16; ++j) {
    const float d = d_all * sc[j];
    if (d == 0.0f) continue;
    for (int i = 0; i < 16; ++i)
      L[16 * j + i] = static_cast<int8_t>(std::clamp(nearest_int(x[16 * j + i] / d), -32, 31) + 32);
  }
  uint8_t* ql = b;
  uint8_t* qh = b + 128;
  for (int j = 0; j < 256; j += 128, ql += 64, qh += 32)
    for (int l = 0; l < 32; ++l) {
      const int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
      ql[l] = static_cast<uint8_t>((q1 & 0xF) | ((q3 & 0xF) << 4));
      ql[l + 32] = static_cast<uint8_t>((q2 & 0xF) | ((q4 & 0xF) << 4));
      qh[l] =
          static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
    }
}

}  // namespace

DType mixed_type(QuantMix mix, MatrixKind kind, int64_t layer, int64_t n_layers, int64_t cols) {
  DType base = DType::Q8_0;
  switch (mix) {
    case QuantMix::Q8_0:
      base = DType::Q8_0;
      break;
    case QuantMix::Q4_0:
      base = DType::Q4_0;
      break;
    case QuantMix::Q4_K_M:
    case QuantMix::Q4_K:
      base = DType::Q4_K;
      break;
    case QuantMix::Q5_K_M:
    case QuantMix::Q5_K:
      base = DType::Q5_K;
      break;
    case QuantMix::Q6_K:
      base = DType::Q6_K;
      break;
  }
  DType t = base;
  const bool m = mix == QuantMix::Q4_K_M || mix == QuantMix::Q5_K_M;
  auto more_bits = [&](int64_t i, int64_t n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
  };
  if (kind == MatrixKind::Output) {
    if (cols % block_elems(base) != 0)
      t = DType::Q8_0;
    else if (base != DType::Q8_0)
      t = DType::Q6_K;
  } else if (m && (kind == MatrixKind::FfnDown || kind == MatrixKind::AttentionV) &&
             more_bits(layer, n_layers)) {
    t = DType::Q6_K;
  }
  if (cols % block_elems(t) != 0) {
    if (t == DType::Q4_K)
      t = DType::Q5_0;
    else if (t == DType::Q5_K)
      t = DType::Q5_1;
    else if (t == DType::Q6_K)
      t = DType::Q8_0;
    if (cols % block_elems(t) != 0) t = DType::F16;
  }
  return t;
}

namespace {

// The quantizer of one block of dt, or null.
using BlockQuantizer = void (*)(const float*, uint8_t*);
BlockQuantizer quantizer(DType dt) {
  switch (dt) {
    case DType::Q8_0:
      return q8_0;
    case DType::Q4_0:
      return q4_0;
    case DType::Q4_1:
      return q4_1;
    case DType::Q5_0:
      return q5_0;
    case DType::Q5_1:
      return q5_1;
    case DType::Q4_K:
      return q4_k;
    case DType::Q5_K:
      return q5_k;
    case DType::Q6_K:
      return q6_k;
    default:
      return nullptr;
  }
}

}  // namespace

bool ggml_quantizable(DType dt) { return quantizer(dt) != nullptr; }

void quantize_ggml(DType dt, const float* x, int64_t n, uint8_t* out) {
  const BlockQuantizer f = quantizer(dt);
  if (f == nullptr) fail("", std::string("quantize_ggml: no quantizer for ") + dtype_name(dt));
  const int64_t be = block_elems(dt), bb = block_bytes(dt);
  if (n % be != 0)
    fail("", std::string("quantize_ggml: ") + std::to_string(n) + " values are not whole " +
                 dtype_name(dt) + " blocks");
  for (int64_t b = 0; b < n / be; ++b) f(x + b * be, out + b * bb);
}

}  // namespace qrwkv
