// Vector types for kernels written once for several instruction sets.
//
// A kernel is a template over a vector type V that provides W float lanes and these static
// operations (backend/cpu/vec_avx2.h and vec_avx512.h define the SIMD ones; VecScalar below is
// the portable one, W = 1):
//
//   F zero(), set1(float), load(const float*), store(float*, F)
//   F load_n(const float*, int n), store_n(float*, F, int n)   first n < W lanes, others zero
//   F add(F, F), mul(F, F), fmadd(a, b, c) = a·b + c, float reduce(F) = Σ lanes
//   F sub(F, F), div(F, F), min(F, F), max(F, F), abs(F), copysign(mag, sign)
//   F round(F) (to the nearest integer, ties to even), ldexp(r, n) = r · 2^n for integral n
//   in [-126, 127], select_lt(a, b, x, y) = a < b ? x : y per lane
//   F load_f32(const uint8_t*), load_bf16(...), load_f16(...)   W weights at any alignment
//   F load_f32_n(const uint8_t*, int n), load_bf16_n(...), load_f16_n(...)
//   F i8_to_f(const uint8_t*)      W int8 as float
//   F nib_lo_to_f(const uint8_t*)  W bytes: (b & 15) − 8;  nib_hi_to_f: (b >> 4) − 8
//   float f16_scalar(uint16_t),  void prefetch(const void*) (into L1),
//   void prefetch_far(const void*) (into L2)
//
// Code over V lives in fragments (*.inl) that are included once per instruction set, inside a
// namespace of that set and with QRWKV_TARGET set to its target attribute: GCC and clang only
// inline intrinsics into functions compiled for their instruction set, and a template cannot
// take its target attribute from a template parameter.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "ops/tensor.h"

namespace qrwkv {

struct VecScalar {
  using F = float;
  static constexpr int W = 1;
  static F zero() { return 0.0f; }
  static F set1(float v) { return v; }
  static F load(const float* p) { return *p; }
  static void store(float* p, F v) { *p = v; }
  static F load_n(const float* p, int n) { return n > 0 ? *p : 0.0f; }
  static void store_n(float* p, F v, int n) {
    if (n > 0) *p = v;
  }
  static F add(F a, F b) { return a + b; }
  static F mul(F a, F b) { return a * b; }
  static F fmadd(F a, F b, F c) { return a * b + c; }
  static float reduce(F v) { return v; }
  static F sub(F a, F b) { return a - b; }
  static F div(F a, F b) { return a / b; }
  static F min(F a, F b) { return a < b ? a : b; }
  static F max(F a, F b) { return a > b ? a : b; }
  static F abs(F a) { return std::fabs(a); }
  static F copysign(F mag, F sign) { return std::copysign(mag, sign); }
  static F round(F a) { return std::nearbyint(a); }
  static F ldexp(F r, F n) { return std::ldexp(r, static_cast<int>(n)); }
  static F select_lt(F a, F b, F x, F y) { return a < b ? x : y; }
  static F load_f32(const uint8_t* p) {
    float v;
    std::memcpy(&v, p, 4);
    return v;
  }
  static F load_f32_n(const uint8_t* p, int n) { return n > 0 ? load_f32(p) : 0.0f; }
  static F load_bf16(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return bf16_to_f32(h);
  }
  static F load_f16(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return f16_to_f32(h);
  }
  static F load_bf16_n(const uint8_t* p, int n) { return n > 0 ? load_bf16(p) : 0.0f; }
  static F load_f16_n(const uint8_t* p, int n) { return n > 0 ? load_f16(p) : 0.0f; }
  static F i8_to_f(const uint8_t* p) { return static_cast<float>(static_cast<int8_t>(*p)); }
  static F nib_lo_to_f(const uint8_t* p) { return static_cast<float>((*p & 15) - 8); }
  static F nib_hi_to_f(const uint8_t* p) { return static_cast<float>((*p >> 4) - 8); }
  static float f16_scalar(uint16_t h) { return f16_to_f32(h); }
  static void prefetch(const void*) {}
  static void prefetch_far(const void*) {}
};

}  // namespace qrwkv
