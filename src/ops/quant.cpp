#include "ops/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "io/error.h"
#include "ops/vec.h"

namespace qrwkv {

uint16_t f32_to_f16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);   // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to ±inf
  if (abs >= 0x38800000u) {
    // Normal half: rebias the exponent and round the 13 dropped mantissa bits to nearest even.
    uint32_t h = (abs - 0x38000000u) >> 13;
    const uint32_t rest = abs & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  if (abs < 0x33000000u) return static_cast<uint16_t>(sign);  // below half the smallest subnormal
  // Subnormal half: the value in units of 2^-24, rounded to nearest even.
  const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
  const int shift = 126 - static_cast<int>(abs >> 23);  // 14..24
  uint32_t h = mant >> shift;
  const uint32_t rest = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
  if (rest > half || (rest == half && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

namespace {

// Round to nearest even for |v| < 2^22 by the float32 addition of 1.5 · 2^23, without a libm
// call (nearbyint is not inlined on baseline x86-64; IEEE arithmetic forbids folding the two
// additions away). Larger values are clamped first: the integers of the formats are small.
inline float round_even(float v) {
  constexpr float kMagic = 12582912.0f;
  v = std::clamp(v, -4194304.0f, 4194304.0f);
  return (v + kMagic) - kMagic;
}

}  // namespace

void quantize_act_int8(const float* x, int64_t n, int8_t* q, float* d, int32_t* s) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float* xb = x + b * kQuantBlock;
    int8_t* qb = q + b * kQuantBlock;
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int32_t sum = 0;
    for (int j = 0; j < 32; ++j) {
      qb[j] = static_cast<int8_t>(std::clamp(round_even(xb[j] * id), -127.0f, 127.0f));
      sum += qb[j];
    }
    d[b] = amax / 127.0f;
    s[b] = sum;
  }
}

void quantize_act_int16(const float* x, int64_t n, int16_t* q, float* d, int32_t* s) {
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float* xb = x + b * kQuantBlock;
    int16_t* qb = q + b * kQuantBlock;
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float id = amax != 0.0f ? 32767.0f / amax : 0.0f;
    int32_t sum = 0;
    for (int j = 0; j < 32; ++j) {
      qb[j] = static_cast<int16_t>(std::clamp(round_even(xb[j] * id), -32767.0f, 32767.0f));
      sum += qb[j];
    }
    d[b] = amax / 32767.0f;
    s[b] = sum;
  }
}

void quantize_row_q8_0(const float* x, int64_t n, BlockQ8_0* out) {
  // llama.cpp's quantizer, so that a model converted here holds the bytes of llama.cpp's Q8_0
  // file of the same weights.
  quantize_ggml(DType::Q8_0, x, n, reinterpret_cast<uint8_t*>(out));
}

namespace {

// Sum of 32 floats as 8 independent lanes, so that the compiler can vectorize the loops that
// feed it (a single running sum would pin the order of the additions).
inline float sum32(const float* v) {
  float lane[8] = {};
  for (int j = 0; j < 32; ++j) lane[j % 8] += v[j];
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

// Squared error of the block x[0..32) stored with scale d (integers n − 8 clamped to [-8, 7]);
// n receives the nibbles.
__attribute__((always_inline)) inline float q4_error(const float* x, float d, int* n) {
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  float e2[32];
  for (int j = 0; j < 32; ++j) {
    const float q = std::clamp(round_even(x[j] * id), -8.0f, 7.0f);
    n[j] = static_cast<int>(q) + 8;
    const float e = x[j] - d * q;
    e2[j] = e * e;
  }
  return sum32(e2);
}

}  // namespace

// Compiled for several instruction sets (the best is picked when the program starts): choosing
// scales for every block of a large model is a noticeable part of its load time.
__attribute__((target_clones("avx512f", "avx2", "default"))) void quantize_row_q4_0(
    const float* x, int64_t n, BlockQ4_0* out) {
  // Candidate ranges map the element of largest magnitude onto a level near the end of [-8, 7];
  // each candidate is refined once by least squares (d = Σ x q / Σ q²) and the scale with the
  // smallest squared error is kept.
  static constexpr float kLevels[] = {-8.0f, -7.0f, 7.0f};
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float* xb = x + b * kQuantBlock;
    float vmax = 0.0f;
    for (int j = 0; j < 32; ++j)
      if (std::fabs(xb[j]) > std::fabs(vmax)) vmax = xb[j];
    int best_n[32], cand_n[32];
    uint16_t best_d = 0;
    float best_err = q4_error(xb, 0.0f, best_n);
    for (float level : kLevels) {
      const float d0 = f16_to_f32(f32_to_f16(vmax / level));
      if (d0 == 0.0f) continue;
      q4_error(xb, d0, cand_n);
      float xq[32], qq[32];
      for (int j = 0; j < 32; ++j) {
        const float q = static_cast<float>(cand_n[j] - 8);
        xq[j] = xb[j] * q;
        qq[j] = q * q;
      }
      const float sxq = sum32(xq), sqq = sum32(qq);
      for (const float d : {d0, sqq > 0.0f ? sxq / sqq : d0}) {
        const uint16_t dh = f32_to_f16(d);
        const float err = q4_error(xb, f16_to_f32(dh), cand_n);
        if (err < best_err) {
          best_err = err;
          best_d = dh;
          std::copy(cand_n, cand_n + 32, best_n);
        }
      }
    }
    out[b].d = best_d;
    for (int j = 0; j < 16; ++j)
      out[b].q[j] = static_cast<uint8_t>(best_n[j] | (best_n[j + 16] << 4));
  }
}

namespace {
using V = VecScalar;
#define QRWKV_TARGET
#include "ops/block_decode.inl"
#undef QRWKV_TARGET
}  // namespace

void dequantize_blocks(DType dt, const uint8_t* blocks, int64_t b0, int64_t nb, float* out) {
  if (dt != DType::Q8_0 && dt != DType::Q4_0)
    return dequantize_ggml_blocks(dt, blocks, b0, nb, out);
  const int64_t bytes = tensor_bytes(dt, kQuantBlock);
  for (int64_t b = b0; b < b0 + nb; ++b, out += kQuantBlock) {
    if (dt == DType::Q8_0)
      dequant_block<DType::Q8_0>(blocks + b * bytes, out);
    else if (dt == DType::Q4_0)
      dequant_block<DType::Q4_0>(blocks + b * bytes, out);
    else
      fail("", std::string("dequantize_blocks: not a block format: ") + dtype_name(dt));
  }
}

void q5_0_to_q8_0(const uint8_t* q5, int64_t nb, uint8_t* q8) {
  for (int64_t b = 0; b < nb; ++b, q5 += 22, q8 += 34) {
    std::memcpy(q8, q5, 2);  // d
    uint32_t qh;
    std::memcpy(&qh, q5 + 2, 4);
    for (int j = 0; j < 16; ++j) {
      const int n0 = (q5[6 + j] & 0xF) | static_cast<int>(((qh >> j) & 1) << 4);
      const int n1 = (q5[6 + j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1) << 4);
      q8[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(n0 - 16));
      q8[2 + j + 16] = static_cast<uint8_t>(static_cast<int8_t>(n1 - 16));
    }
  }
}

bool quantizable(const Tensor& t) { return t.shape.size() == 2 && t.shape[1] % kQuantBlock == 0; }

void convert_row(const Tensor& src, int64_t r, DType target, float* scratch, uint8_t* dst) {
  const int64_t cols = src.shape[1];
  if (src.layout == Layout::RowMajor) {
    const uint8_t* row = src.data + r * tensor_bytes(src.dtype, cols);
    if (src.dtype == target) {
      std::memcpy(dst, row, static_cast<size_t>(tensor_bytes(target, cols)));
      return;
    }
    if (held_as_q8_0(src.dtype) && target == DType::Q8_0) {
      to_q8_0(src.dtype, row, cols / 32, dst);  // the same values
      return;
    }
  }
  load_f32(src, r * cols, cols, scratch);
  switch (target) {
    case DType::Q8_0:
      quantize_row_q8_0(scratch, cols, reinterpret_cast<BlockQ8_0*>(dst));
      break;
    case DType::Q4_0:
      quantize_row_q4_0(scratch, cols, reinterpret_cast<BlockQ4_0*>(dst));
      break;
    case DType::F32:
      std::memcpy(dst, scratch, static_cast<size_t>(cols) * 4);
      break;
    case DType::BF16:
    case DType::F16:
      for (int64_t i = 0; i < cols; ++i) {
        const uint16_t h = target == DType::BF16 ? f32_to_bf16(scratch[i]) : f32_to_f16(scratch[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      break;
    default:
      quantize_ggml(target, scratch, cols, dst);  // llama.cpp's quantizers
  }
}

Tensor convert_tensor(const Tensor& src, DType target, std::vector<uint8_t>& storage,
                      ThreadPool* pool) {
  if (src.shape.size() != 2) fail(src.name, "only 2-D tensors are converted");
  const bool block = is_block_dtype(target);
  if (block && src.shape[1] % block_elems(target) != 0)
    fail(src.name, "row length " + std::to_string(src.shape[1]) + " is not a multiple of " +
                       std::to_string(block_elems(target)) + ", so " + dtype_name(target) +
                       " cannot store it");
  if (block && target != DType::Q8_0 && target != DType::Q4_0 && !ggml_quantizable(target))
    fail(src.name, std::string("cannot convert to ") + dtype_name(target));
  if (!block && target != DType::F32 && target != DType::BF16 && target != DType::F16)
    fail(src.name, std::string("cannot convert to ") + dtype_name(target));
  const int64_t rows = src.shape[0], cols = src.shape[1];
  const int64_t row_bytes = tensor_bytes(target, cols);
  storage.assign(static_cast<size_t>(rows * row_bytes), 0);
  auto convert_rows = [&](int64_t r0, int64_t r1, int) {
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = r0; r < r1; ++r)
      convert_row(src, r, target, row.data(), storage.data() + r * row_bytes);
  };
  if (pool != nullptr)
    pool->parallel_for(rows, 1, convert_rows);
  else
    convert_rows(0, rows, 0);
  Tensor t = src;
  t.dtype = target;
  t.data = storage.data();
  return t;
}

}  // namespace qrwkv
