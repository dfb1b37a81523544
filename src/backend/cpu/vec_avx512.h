// The AVX-512 vector type of ops/vec.h: 16 float lanes, masked loads and stores for tails.
#pragma once

#include <immintrin.h>

#include <cstdint>

// GCC 12's AVX-512 headers build some results from deliberately undefined vectors, which its own
// -Wuninitialized then reports; the warnings are about the headers, not this code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define QRWKV_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

namespace qrwkv {

struct VecAvx512 {
  using F = __m512;
  static constexpr int W = 16;
  QRWKV_TARGET_AVX512 static inline __mmask16 first(int n) {
    return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
  }
  QRWKV_TARGET_AVX512 static inline F zero() { return _mm512_setzero_ps(); }
  QRWKV_TARGET_AVX512 static inline F set1(float v) { return _mm512_set1_ps(v); }
  QRWKV_TARGET_AVX512 static inline F load(const float* p) { return _mm512_loadu_ps(p); }
  QRWKV_TARGET_AVX512 static inline void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  QRWKV_TARGET_AVX512 static inline F load_n(const float* p, int n) {
    return _mm512_maskz_loadu_ps(first(n), p);
  }
  QRWKV_TARGET_AVX512 static inline void store_n(float* p, F v, int n) {
    _mm512_mask_storeu_ps(p, first(n), v);
  }
  QRWKV_TARGET_AVX512 static inline F add(F a, F b) { return _mm512_add_ps(a, b); }
  QRWKV_TARGET_AVX512 static inline F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  QRWKV_TARGET_AVX512 static inline F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  QRWKV_TARGET_AVX512 static inline float reduce(F v) { return _mm512_reduce_add_ps(v); }
  QRWKV_TARGET_AVX512 static inline F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  QRWKV_TARGET_AVX512 static inline F div(F a, F b) { return _mm512_div_ps(a, b); }
  QRWKV_TARGET_AVX512 static inline F min(F a, F b) { return _mm512_min_ps(a, b); }
  QRWKV_TARGET_AVX512 static inline F max(F a, F b) { return _mm512_max_ps(a, b); }
  QRWKV_TARGET_AVX512 static inline F abs(F a) { return _mm512_abs_ps(a); }
  QRWKV_TARGET_AVX512 static inline F copysign(F mag, F sign) {
    const __m512i m = _mm512_set1_epi32(0x7fffffff);
    // Bits of mag where m is set, of sign elsewhere.
    return _mm512_castsi512_ps(
        _mm512_ternarylogic_epi32(m, _mm512_castps_si512(mag), _mm512_castps_si512(sign), 0xca));
  }
  QRWKV_TARGET_AVX512 static inline F round(F a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  QRWKV_TARGET_AVX512 static inline F ldexp(F r, F n) { return _mm512_scalef_ps(r, n); }
  QRWKV_TARGET_AVX512 static inline F select_lt(F a, F b, F x, F y) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x);
  }
  QRWKV_TARGET_AVX512 static inline F widen_bf16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  QRWKV_TARGET_AVX512 static inline F load_f32(const uint8_t* p) { return _mm512_loadu_ps(p); }
  QRWKV_TARGET_AVX512 static inline F load_f32_n(const uint8_t* p, int n) {
    return _mm512_maskz_loadu_ps(first(n), p);
  }
  QRWKV_TARGET_AVX512 static inline F load_bf16(const uint8_t* p) {
    return widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  QRWKV_TARGET_AVX512 static inline F load_f16(const uint8_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  QRWKV_TARGET_AVX512 static inline F load_bf16_n(const uint8_t* p, int n) {
    return widen_bf16(_mm256_maskz_loadu_epi16(first(n), p));
  }
  QRWKV_TARGET_AVX512 static inline F load_f16_n(const uint8_t* p, int n) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(first(n), p));
  }
  QRWKV_TARGET_AVX512 static inline F i8_to_f(const uint8_t* p) {
    return _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  QRWKV_TARGET_AVX512 static inline __m512i bytes(const uint8_t* p) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  QRWKV_TARGET_AVX512 static inline F nib_lo_to_f(const uint8_t* p) {
    return _mm512_cvtepi32_ps(
        _mm512_sub_epi32(_mm512_and_si512(bytes(p), _mm512_set1_epi32(15)), _mm512_set1_epi32(8)));
  }
  QRWKV_TARGET_AVX512 static inline F nib_hi_to_f(const uint8_t* p) {
    return _mm512_cvtepi32_ps(
        _mm512_sub_epi32(_mm512_srli_epi32(bytes(p), 4), _mm512_set1_epi32(8)));
  }
  QRWKV_TARGET_AVX512 static inline float f16_scalar(uint16_t h) { return _cvtsh_ss(h); }
  QRWKV_TARGET_AVX512 static inline void prefetch(const void* p) {
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0);
  }
  QRWKV_TARGET_AVX512 static inline void prefetch_far(const void* p) {
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1);
  }
};

}  // namespace qrwkv
