// AVX-512 decoders of the k-quant super-blocks (Q4_K, Q5_K, Q6_K; layouts and formulas in
// ops/ggml_blocks.cpp), sixteen values per vector. They compute what the scalar decoders
// compute, operation for operation (products and differences rounded on their own, no fused
// multiply-add), so the values are bit for bit the reference's. The CPU backend decodes rows of
// these formats with them before its float32 row kernels.
#include <immintrin.h>

#include <cstring>

#include "backend/cpu/kernels.h"
#include "ops/quant.h"

namespace qrwkv::cpu::avx512kq {

#define QRWKV_KQ __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

namespace {

// 16 bytes at p as 16 int32 lanes.
QRWKV_KQ inline __m512i bytes16(const uint8_t* p) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Each decoder hands its 256 values to `out(e, v)`, 16 at a time (v holds elements e .. e + 15
// of the super-block): a store for dequant_rows, multiply-adds with the activations for rowdot.

// (d · sc) · q − (dmin · m), each rounded on its own.
QRWKV_KQ inline __m512 affine(__m512i q, __m512 dsc, __m512 dm) {
  return _mm512_sub_ps(_mm512_mul_ps(dsc, _mm512_cvtepi32_ps(q)), dm);
}

// Q4_K (kFive false) and Q5_K (kFive true: 32 bytes of fifth bits before the nibbles); the
// layouts are ops/ggml_blocks.cpp's.
template <bool kFive, typename Out>
QRWKV_KQ inline void q45_k(const uint8_t* b, Out& out) {
  const uint8_t* qh = b + 16;
  const uint8_t* q = kFive ? b + 48 : b + 16;
  const __m512i lo = _mm512_set1_epi32(0xF), one = _mm512_set1_epi32(1);
  for (int i = 0; i < 4; ++i, q += 32) {
    float s0, m0, s1, m1;
    k_sub_block(b, 2 * i, s0, m0);
    k_sub_block(b, 2 * i + 1, s1, m1);
    const __m512 d0 = _mm512_set1_ps(s0), n0 = _mm512_set1_ps(m0);
    const __m512 d1 = _mm512_set1_ps(s1), n1 = _mm512_set1_ps(m1);
    for (int h = 0; h < 2; ++h) {
      const __m512i v = bytes16(q + 16 * h);
      __m512i q0 = _mm512_and_si512(v, lo), q1 = _mm512_srli_epi32(v, 4);
      if constexpr (kFive) {
        // Bit 2i of qh[l] is the fifth bit of element l, bit 2i + 1 that of element l + 32.
        const __m512i hb = bytes16(qh + 16 * h);
        q0 = _mm512_add_epi32(
            q0, _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hb, 2 * i), one), 4));
        q1 = _mm512_add_epi32(
            q1, _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hb, 2 * i + 1), one), 4));
      }
      out(64 * i + 16 * h, affine(q0, d0, n0));
      out(64 * i + 32 + 16 * h, affine(q1, d1, n1));
    }
  }
}

template <typename Out>
QRWKV_KQ inline void q6_k(const uint8_t* b, Out& out) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = f16_at(b + 208);
  const __m512i lo = _mm512_set1_epi32(0xF), three = _mm512_set1_epi32(3),
                off = _mm512_set1_epi32(32);
  for (int h = 0; h < 2; ++h, ql += 64, qh += 32, sc += 8) {
    for (int c = 0; c < 2; ++c) {  // l in [16c, 16c + 16): sub-blocks c, c + 2, c + 4, c + 6
      const __m512i a = bytes16(ql + 16 * c), a2 = bytes16(ql + 32 + 16 * c);
      const __m512i hb = bytes16(qh + 16 * c);
      const __m512i q1 =
          _mm512_sub_epi32(_mm512_or_si512(_mm512_and_si512(a, lo),
                                           _mm512_slli_epi32(_mm512_and_si512(hb, three), 4)),
                           off);
      const __m512i q2 = _mm512_sub_epi32(
          _mm512_or_si512(_mm512_and_si512(a2, lo),
                          _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hb, 2), three), 4)),
          off);
      const __m512i q3 = _mm512_sub_epi32(
          _mm512_or_si512(_mm512_srli_epi32(a, 4),
                          _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hb, 4), three), 4)),
          off);
      const __m512i q4 = _mm512_sub_epi32(
          _mm512_or_si512(_mm512_srli_epi32(a2, 4),
                          _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hb, 6), three), 4)),
          off);
      const __m512i qs[4] = {q1, q2, q3, q4};
      for (int k = 0; k < 4; ++k) {
        const __m512 dsc = _mm512_set1_ps(d * static_cast<float>(sc[c + 2 * k]));
        out(128 * h + 32 * k + 16 * c, _mm512_mul_ps(dsc, _mm512_cvtepi32_ps(qs[k])));
      }
    }
  }
}

template <DType DT, typename Out>
QRWKV_KQ inline void decode(const uint8_t* b, Out& out) {
  if constexpr (DT == DType::Q6_K)
    q6_k(b, out);
  else
    q45_k<DT == DType::Q5_K>(b, out);
}

// Stores the values (dequant_rows).
struct Store {
  float* y;
  QRWKV_KQ void operator()(int e, __m512 v) const { _mm512_storeu_ps(y + e, v); }
};

// Multiplies the values into NT tokens' accumulators (rowdot).
template <int NT>
struct Dot {
  const float* x;  // token 0's activations of this super-block; token j's K floats further
  int64_t K;
  __m512* acc;
  QRWKV_KQ void operator()(int e, __m512 v) const {
    for (int j = 0; j < NT; ++j)
      acc[j] = _mm512_fmadd_ps(v, _mm512_loadu_ps(x + j * K + e), acc[j]);
  }
};

// Rows [r0, r1) of Y = X Wᵀ for NT tokens starting at t0: each super-block decoded once into
// registers and multiplied into every token's accumulators.
template <DType DT, int NT>
QRWKV_KQ void dot_rows(const float* x, int64_t t0, const Tensor& w, int64_t r0, int64_t r1,
                       float* y) {
  const int64_t out = w.shape[0], K = w.shape[1], nb = K / 256, bb = block_bytes(DT), rb = nb * bb;
  for (int64_t o = r0; o < r1; ++o) {
    __m512 acc[NT];
    for (int j = 0; j < NT; ++j) acc[j] = _mm512_setzero_ps();
    const uint8_t* row = w.data + o * rb;
    for (int64_t b = 0; b < nb; ++b) {
      Dot<NT> sink{x + t0 * K + 256 * b, K, acc};
      decode<DT>(row + b * bb, sink);
    }
    for (int j = 0; j < NT; ++j) y[(t0 + j) * out + o] = _mm512_reduce_add_ps(acc[j]);
  }
}

template <DType DT>
QRWKV_KQ void dequant_dt(const uint8_t* blocks, int64_t nb, float* out) {
  for (int64_t b = 0; b < nb; ++b) {
    Store sink{out + 256 * b};
    decode<DT>(blocks + b * block_bytes(DT), sink);
  }
}

template <DType DT>
QRWKV_KQ void rowdot_dt(const float* x, int64_t T, const Tensor& w, int64_t r0, int64_t r1,
                        float* y) {
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) dot_rows<DT, 4>(x, t, w, r0, r1, y);
  for (; t < T; ++t) dot_rows<DT, 1>(x, t, w, r0, r1, y);
}

}  // namespace

QRWKV_KQ void dequant_rows(DType dt, const uint8_t* blocks, int64_t nb, float* out) {
  switch (dt) {
    case DType::Q4_K:
      return dequant_dt<DType::Q4_K>(blocks, nb, out);
    case DType::Q5_K:
      return dequant_dt<DType::Q5_K>(blocks, nb, out);
    case DType::Q6_K:
      return dequant_dt<DType::Q6_K>(blocks, nb, out);
    default:
      return dequantize_blocks(dt, blocks, 0, nb, out);
  }
}

QRWKV_KQ bool rowdot(const float* x, int64_t T, const Tensor& w, int64_t r0, int64_t r1, float* y) {
  switch (w.dtype) {
    case DType::Q4_K:
      rowdot_dt<DType::Q4_K>(x, T, w, r0, r1, y);
      return true;
    case DType::Q5_K:
      rowdot_dt<DType::Q5_K>(x, T, w, r0, r1, y);
      return true;
    case DType::Q6_K:
      rowdot_dt<DType::Q6_K>(x, T, w, r0, r1, y);
      return true;
    default:
      return false;
  }
}

}  // namespace qrwkv::cpu::avx512kq
