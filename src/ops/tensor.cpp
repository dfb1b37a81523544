#include "ops/tensor.h"

#include <algorithm>
#include <cstring>

#include "io/error.h"
#include "ops/panel.h"
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
  if (t.layout == Layout::Panel32) {
    // Row by row through a buffer: packed tensors are read this way only by tools and tests.
    const int64_t in = t.shape[1];
    std::vector<float> row(static_cast<size_t>(in));
    while (n > 0) {
      const int64_t r = offset / in, c = offset % in, take = std::min(n, in - c);
      load_panel_row(t, r, row.data());
      std::memcpy(dst, row.data() + c, static_cast<size_t>(take) * 4);
      dst += take;
      offset += take;
      n -= take;
    }
    return;
  }
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
    default: {
      if (!is_block_dtype(t.dtype)) break;
      // Whole blocks go straight to dst; a partial first or last block through a buffer.
      const int64_t be = block_elems(t.dtype);
      int64_t b = offset / be;
      int64_t skip = offset % be;
      float tmp[256];
      while (n > 0) {
        const bool whole = skip == 0 && n >= be;
        dequantize_blocks(t.dtype, t.data, b, 1, whole ? dst : tmp);
        const int64_t take = std::min<int64_t>(n, be - skip);
        if (!whole) std::memcpy(dst, tmp + skip, static_cast<size_t>(take) * 4);
        dst += take;
        n -= take;
        skip = 0;
        ++b;
      }
      return;
    }
  }
  fail(t.name, std::string("unsupported dtype ") + dtype_name(t.dtype));
}

std::vector<float> to_f32(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  load_f32(t, 0, t.numel(), out.data());
  return out;
}

}  // namespace qrwkv
