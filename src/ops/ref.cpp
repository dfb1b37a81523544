#include "ops/ref.h"

#include <cstring>
#include <vector>

#include "io/error.h"
#include "ops/quant.h"

namespace qrwkv {

float bf16_to_f32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_bf16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;  // ±0
  } else {
    // Subnormal half: normalize the mantissa.
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    bits = sign | (static_cast<uint32_t>(112 - e) << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void load_f32(const Tensor& t, int64_t offset, int64_t n, float* dst) {
  if (n <= 0) return;
  switch (t.dtype) {
    case DType::F32:
      std::memcpy(dst, t.data + offset * 4, static_cast<size_t>(n) * 4);
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, t.data + (offset + i) * 2, 2);
        dst[i] = bf16_to_f32(v);
      }
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, t.data + (offset + i) * 2, 2);
        dst[i] = f16_to_f32(v);
      }
      return;
    case DType::Q8_0:
    case DType::Q4_0: {
      // Dequantize the blocks that cover [offset, offset + n) and keep the requested part.
      const int64_t b0 = offset / kQuantBlock, b1 = (offset + n + kQuantBlock - 1) / kQuantBlock;
      if (offset % kQuantBlock == 0 && n % kQuantBlock == 0) {
        dequantize_blocks(t.dtype, t.data, b0, b1 - b0, dst);
        return;
      }
      std::vector<float> tmp(static_cast<size_t>((b1 - b0) * kQuantBlock));
      dequantize_blocks(t.dtype, t.data, b0, b1 - b0, tmp.data());
      std::memcpy(dst, tmp.data() + (offset - b0 * kQuantBlock), static_cast<size_t>(n) * 4);
      return;
    }
    default:
      fail(t.name, std::string("unsupported dtype ") + dtype_name(t.dtype));
  }
}

std::vector<float> to_f32(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  load_f32(t, 0, t.numel(), out.data());
  return out;
}

namespace ref {

void linear(const float* x, int64_t T, const Tensor& w, const Tensor* bias, float* y) {
  const int64_t out = w.shape[0], in = w.shape[1];
  std::vector<float> row(static_cast<size_t>(in));
  std::vector<float> b(static_cast<size_t>(out), 0.0f);
  if (bias != nullptr && !bias->empty()) load_f32(*bias, 0, out, b.data());
  for (int64_t o = 0; o < out; ++o) {
    load_f32(w, o * in, in, row.data());
    for (int64_t t = 0; t < T; ++t) {
      const float* xt = x + t * in;
      float acc = 0.0f;
      for (int64_t i = 0; i < in; ++i) acc += xt[i] * row[i];
      y[t * out + o] = acc + b[o];
    }
  }
}

void matmul(const float* x, int64_t T, const Tensor& m, float* y) {
  const int64_t in = m.shape[0], out = m.shape[1];
  std::vector<float> row(static_cast<size_t>(out));
  std::memset(y, 0, sizeof(float) * static_cast<size_t>(T * out));
  for (int64_t i = 0; i < in; ++i) {
    load_f32(m, i * out, out, row.data());
    for (int64_t t = 0; t < T; ++t) {
      const float xi = x[t * in + i];
      float* yt = y + t * out;
      for (int64_t j = 0; j < out; ++j) yt[j] += xi * row[j];
    }
  }
}

void rmsnorm(const float* x, int64_t T, int64_t C, const float* w, float eps, float* y) {
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * C;
    double ss = 0.0;
    for (int64_t i = 0; i < C; ++i) ss += static_cast<double>(xt[i]) * xt[i];
    const float inv = 1.0f / std::sqrt(static_cast<float>(ss / C) + eps);
    for (int64_t i = 0; i < C; ++i) y[t * C + i] = w[i] * (xt[i] * inv);
  }
}

}  // namespace ref
}  // namespace qrwkv
