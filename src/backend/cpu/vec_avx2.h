// The AVX2 vector type of ops/vec.h: 8 float lanes (AVX2 + FMA + F16C). AVX2 has no masked
// 16-bit loads, so partial loads go through a small zeroed buffer; they only serve row tails.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#define QRWKV_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace qrwkv {

struct VecAvx2 {
  using F = __m256;
  static constexpr int W = 8;
  QRWKV_TARGET_AVX2 static inline F zero() { return _mm256_setzero_ps(); }
  QRWKV_TARGET_AVX2 static inline F set1(float v) { return _mm256_set1_ps(v); }
  QRWKV_TARGET_AVX2 static inline F load(const float* p) { return _mm256_loadu_ps(p); }
  QRWKV_TARGET_AVX2 static inline void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  QRWKV_TARGET_AVX2 static inline F load_n(const float* p, int n) {
    float b[8] = {};
    std::memcpy(b, p, static_cast<size_t>(n) * 4);
    return _mm256_loadu_ps(b);
  }
  QRWKV_TARGET_AVX2 static inline void store_n(float* p, F v, int n) {
    float b[8];
    _mm256_storeu_ps(b, v);
    std::memcpy(p, b, static_cast<size_t>(n) * 4);
  }
  QRWKV_TARGET_AVX2 static inline F add(F a, F b) { return _mm256_add_ps(a, b); }
  QRWKV_TARGET_AVX2 static inline F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  QRWKV_TARGET_AVX2 static inline F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  QRWKV_TARGET_AVX2 static inline float reduce(F v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  QRWKV_TARGET_AVX2 static inline F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  QRWKV_TARGET_AVX2 static inline F div(F a, F b) { return _mm256_div_ps(a, b); }
  QRWKV_TARGET_AVX2 static inline F min(F a, F b) { return _mm256_min_ps(a, b); }
  QRWKV_TARGET_AVX2 static inline F max(F a, F b) { return _mm256_max_ps(a, b); }
  QRWKV_TARGET_AVX2 static inline F abs(F a) {
    return _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
  }
  QRWKV_TARGET_AVX2 static inline F copysign(F mag, F sign) {
    const F m = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    return _mm256_or_ps(_mm256_and_ps(mag, m), _mm256_andnot_ps(m, sign));
  }
  QRWKV_TARGET_AVX2 static inline F round(F a) {
    return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // 2^n built in the exponent field: n must be integral in [-126, 127].
  QRWKV_TARGET_AVX2 static inline F ldexp(F r, F n) {
    const __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(r, _mm256_castsi256_ps(e));
  }
  QRWKV_TARGET_AVX2 static inline F select_lt(F a, F b, F x, F y) {
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ));
  }
  QRWKV_TARGET_AVX2 static inline F load_f32(const uint8_t* p) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
  }
  QRWKV_TARGET_AVX2 static inline F load_f32_n(const uint8_t* p, int n) {
    float b[8] = {};
    std::memcpy(b, p, static_cast<size_t>(n) * 4);
    return _mm256_loadu_ps(b);
  }
  QRWKV_TARGET_AVX2 static inline F load_bf16(const uint8_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  QRWKV_TARGET_AVX2 static inline F load_f16(const uint8_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  QRWKV_TARGET_AVX2 static inline F load_bf16_n(const uint8_t* p, int n) {
    uint8_t b[16] = {};
    std::memcpy(b, p, static_cast<size_t>(n) * 2);
    return load_bf16(b);
  }
  QRWKV_TARGET_AVX2 static inline F load_f16_n(const uint8_t* p, int n) {
    uint8_t b[16] = {};
    std::memcpy(b, p, static_cast<size_t>(n) * 2);
    return load_f16(b);
  }
  QRWKV_TARGET_AVX2 static inline __m256i bytes(const uint8_t* p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  QRWKV_TARGET_AVX2 static inline F i8_to_f(const uint8_t* p) {
    return _mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  QRWKV_TARGET_AVX2 static inline F nib_lo_to_f(const uint8_t* p) {
    return _mm256_cvtepi32_ps(
        _mm256_sub_epi32(_mm256_and_si256(bytes(p), _mm256_set1_epi32(15)), _mm256_set1_epi32(8)));
  }
  QRWKV_TARGET_AVX2 static inline F nib_hi_to_f(const uint8_t* p) {
    return _mm256_cvtepi32_ps(
        _mm256_sub_epi32(_mm256_srli_epi32(bytes(p), 4), _mm256_set1_epi32(8)));
  }
  QRWKV_TARGET_AVX2 static inline float f16_scalar(uint16_t h) { return _cvtsh_ss(h); }
  QRWKV_TARGET_AVX2 static inline void prefetch(const void* p) {
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0);
  }
  QRWKV_TARGET_AVX2 static inline void prefetch_far(const void* p) {
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1);
  }
};

}  // namespace qrwkv
