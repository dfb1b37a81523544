// Y = X Wᵀ for block-quantized weights (Q8_0, Q4_0) with int8 activations and AVX512-VNNI
// integer dot products: vpdpbusd adds, in each int32 lane, four products of an unsigned byte and
// a signed byte.
//
// Precision contract of this path (ActivationRounding::Int8, backend.h): each token's X is
// quantized per block of 32 (quantize_act_int8: q_x ∈ [-127, 127], a float32 scale d_x), each
// block's dot product Σ q_w · q_x is exact in int32, and
//
//   y[t][o] = Σ_b float(Σ_j q_w · q_x) · (d_w[o][b] · d_x[t][b])      summed in float32.
//
// Decode and prefill use different kernels for this same function, so that a prompt evaluated
// in one call agrees with the same prompt token by token to float32 rounding.
//
// vpdpbusd wants one side unsigned. The kernels make it so without changing the integers:
//  - Row-dot (few tokens, W read in place): Q8_0 multiplies |q_x| (unsigned) by q_w · sign(q_x)
//    (vpsignb); Q4_0's stored nibbles n = q_w + 8 are already unsigned, and the sum starts at
//    −8 · s_x (s_x = Σ q_x), so that Σ n · q_x − 8 · s_x = Σ q_w · q_x.
//  - Packed GEMM (many tokens): each thread expands panels of 32 output rows into "quad" layout,
//    P[k/4][r] = the four unsigned bytes u = q_w + off of row r at k .. k+3 (off = 128 for Q8_0,
//    8 for Q4_0), so that one vector holds a k-quad of 16 rows. Per block and token the int32
//    accumulators start at −off · s_x; per k-quad the micro-kernel loads two panel vectors and
//    broadcasts four activation bytes per token:
//
//      acc[t][r] += Σ_{i<4} u[r][k+i] · q_x[t][k+i]                 (one vpdpbusd per 16 rows)
//
//    and after each block of 32 it adds float(acc) · (d_w · d_x) to the float32 sums.
//
// A Q8_0 weight of −128 (which quantize_row_q8_0 never writes) would wrap in vpsignb; such
// blocks are outside the format's range [-127, 127].
#include <immintrin.h>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <cstring>
#include <vector>

#include "backend/cpu/kernels.h"
#include "io/error.h"
#include "ops/panel.h"
#include "ops/quant.h"

namespace qrwkv::cpu::avx512vnni {

#define QRWKV_VNNI \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

namespace {

// The quantized activations of one call: token t's integers at q + t·K, its block scales and
// integer sums at d, s + t·nb.
struct Act {
  int8_t* q;
  float* d;
  int32_t* s;
  int64_t K, nb;
};

// quantize_act_int8 for tokens [t0, t1), vectorized to the same float32 operations (so the same
// integers and scales): the maximum is exact, x · (127 / a) is one rounded product, and
// vcvtps2dq rounds to nearest even as the scalar form does.
// v clamped to [-127, 127] and rounded to the nearest integer (even on ties).
QRWKV_VNNI inline __m512i to_int(__m512 v) {
  return _mm512_cvtps_epi32(
      _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f)));
}

QRWKV_VNNI void quantize_rows(const float* x, int64_t t0, int64_t t1, const Act& a) {
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t b = 0; b < a.nb; ++b) {
      const float* xb = x + t * a.K + b * kQuantBlock;
      const __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
      const __m512 id = _mm512_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
      const __m512i i0 = to_int(_mm512_mul_ps(v0, id)), i1 = to_int(_mm512_mul_ps(v1, id));
      int8_t* qb = a.q + t * a.K + b * kQuantBlock;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qb), _mm512_cvtepi32_epi8(i0));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qb + 16), _mm512_cvtepi32_epi8(i1));
      a.d[t * a.nb + b] = amax / 127.0f;
      a.s[t * a.nb + b] = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
    }
}

// ---- row-dot kernels (few tokens) ---------------------------------------------------------

// The 32 weights of a Q4_0 block as unsigned bytes n = q + 8, element e in byte e.
QRWKV_VNNI inline __m256i q4_nibbles(const uint8_t* p) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i m = _mm_set1_epi8(15);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m), _mm_and_si128(b, m));
}

// An RT × TT block of Y: rows w[0 .. RT) (rb bytes apart) against tokens [t0, t0 + TT), with
// 8-lane float32 accumulators per (row, token) reduced at the end.
template <int RT, int TT, DType DT>
QRWKV_VNNI void dot_block(const Act& a, int64_t t0, const uint8_t* w, int64_t rb, float* y,
                          int64_t ldy) {
  const int64_t bb = tensor_bytes(DT, kQuantBlock);
  __m256 acc[RT][TT];
  for (int r = 0; r < RT; ++r)
    for (int t = 0; t < TT; ++t) acc[r][t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < a.nb; ++b) {
    __m256i xq[TT], xs[TT];  // q_x, and Q8_0: |q_x|; Q4_0: the start −8 · s_x in lane 0
    float dx[TT];
    for (int t = 0; t < TT; ++t) {
      const int64_t tb = (t0 + t) * a.nb + b;
      xq[t] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + (t0 + t) * a.K + b * 32));
      if constexpr (DT == DType::Q8_0)
        xs[t] = _mm256_abs_epi8(xq[t]);
      else
        xs[t] = _mm256_maskz_set1_epi32(1, -8 * a.s[tb]);
      dx[t] = a.d[tb];
    }
    for (int r = 0; r < RT; ++r) {
      const uint8_t* blk = w + r * rb + b * bb;
      // The next block of rows follows these in memory: fetch its bytes at the same position
      // now, and those kPrefetchFar ahead into L2, so that decode streams W at memory speed.
      _mm_prefetch(reinterpret_cast<const char*>(blk + RT * rb), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchFar), _MM_HINT_T1);
      uint16_t dh;
      std::memcpy(&dh, blk, 2);
      const float dw = _cvtsh_ss(dh);
      if constexpr (DT == DType::Q8_0) {
        const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
        for (int t = 0; t < TT; ++t) {
          const __m256i sum =
              _mm256_dpbusd_epi32(_mm256_setzero_si256(), xs[t], _mm256_sign_epi8(wq, xq[t]));
          acc[r][t] =
              _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(dw * dx[t]), acc[r][t]);
        }
      } else {
        const __m256i wn = q4_nibbles(blk + 2);
        for (int t = 0; t < TT; ++t) {
          const __m256i sum = _mm256_dpbusd_epi32(xs[t], wn, xq[t]);
          acc[r][t] =
              _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(dw * dx[t]), acc[r][t]);
        }
      }
    }
  }
  for (int r = 0; r < RT; ++r)
    for (int t = 0; t < TT; ++t) {
      const __m256 v = acc[r][t];
      const __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
      const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
      y[t * ldy + r] = _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
    }
}

// All T tokens against RT rows at wr: blocks of 4 tokens, then the rest.
template <int RT, DType DT>
QRWKV_VNNI void dot_tokens(const Act& a, int64_t T, const uint8_t* wr, int64_t rb, float* y,
                           int64_t ldy) {
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) dot_block<RT, 4, DT>(a, t, wr, rb, y + t * ldy, ldy);
  switch (T - t) {
    case 3:
      dot_block<RT, 3, DT>(a, t, wr, rb, y + t * ldy, ldy);
      break;
    case 2:
      dot_block<RT, 2, DT>(a, t, wr, rb, y + t * ldy, ldy);
      break;
    case 1:
      dot_block<RT, 1, DT>(a, t, wr, rb, y + t * ldy, ldy);
      break;
    default:
      break;
  }
}

template <DType DT>
QRWKV_VNNI void rowdot(const Act& a, int64_t T, const Tensor& w, int64_t r0, int64_t r1, float* y) {
  const int64_t out = w.shape[0], rb = tensor_bytes(DT, a.K);
  int64_t o = r0;
  for (; o + 4 <= r1; o += 4) dot_tokens<4, DT>(a, T, w.data + o * rb, rb, y + o, out);
  for (; o < r1; ++o) dot_tokens<1, DT>(a, T, w.data + o * rb, rb, y + o, out);
}

// ---- packed GEMM (many tokens) ------------------------------------------------------------

// Rows [o0, o0 + 32) of W in quad layout with the offset bytes u (missing rows are zero, with
// zero scales), and scales[b·32 + r] = d_w of block b of row r.
QRWKV_VNNI void pack_panel(const Tensor& w, int64_t o0, uint32_t* panel, float* scales) {
  const int64_t out = w.shape[0], K = w.shape[1], nb = K / kQuantBlock;
  const int64_t rb = tensor_bytes(w.dtype, K), bb = tensor_bytes(w.dtype, kQuantBlock);
  for (int64_t r = 0; r < kPanelRows; ++r) {
    const int64_t o = o0 + r;
    if (o >= out) {
      for (int64_t i = 0; i < nb * 8; ++i) panel[i * kPanelRows + r] = 0;
      for (int64_t b = 0; b < nb; ++b) scales[b * kPanelRows + r] = 0.0f;
      continue;
    }
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = w.data + o * rb + b * bb;
      uint16_t dh;
      std::memcpy(&dh, blk, 2);
      scales[b * kPanelRows + r] = _cvtsh_ss(dh);
      alignas(32) uint8_t u[32];
      if (w.dtype == DType::Q8_0) {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
        _mm256_store_si256(reinterpret_cast<__m256i*>(u),
                           _mm256_xor_si256(q, _mm256_set1_epi8(static_cast<char>(0x80))));
      } else {
        _mm256_store_si256(reinterpret_cast<__m256i*>(u), q4_nibbles(blk + 2));
      }
      for (int j = 0; j < 8; ++j) std::memcpy(&panel[(b * 8 + j) * kPanelRows + r], u + 4 * j, 4);
    }
  }
}

template <int TT>
QRWKV_VNNI void micro(const Act& a, int64_t t0, const uint32_t* panel, const float* scales,
                      int32_t off, float* y, int64_t ys, __mmask16 m0, __mmask16 m1) {
  __m512 a0[TT], a1[TT];
  for (int t = 0; t < TT; ++t) a0[t] = a1[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < a.nb; ++b) {
    __m512i i0[TT], i1[TT];
    for (int t = 0; t < TT; ++t) i0[t] = i1[t] = _mm512_set1_epi32(-off * a.s[(t0 + t) * a.nb + b]);
    const uint32_t* pb = panel + b * 8 * kPanelRows;
    const int8_t* xb = a.q + t0 * a.K + b * kQuantBlock;
    for (int j = 0; j < 8; ++j) {
      const __m512i w0 = _mm512_loadu_si512(pb + j * kPanelRows);
      const __m512i w1 = _mm512_loadu_si512(pb + j * kPanelRows + 16);
      for (int t = 0; t < TT; ++t) {
        int32_t quad;
        std::memcpy(&quad, xb + t * a.K + 4 * j, 4);
        const __m512i xv = _mm512_set1_epi32(quad);
        i0[t] = _mm512_dpbusd_epi32(i0[t], w0, xv);
        i1[t] = _mm512_dpbusd_epi32(i1[t], w1, xv);
      }
    }
    const __m512 d0 = _mm512_loadu_ps(scales + b * kPanelRows);
    const __m512 d1 = _mm512_loadu_ps(scales + b * kPanelRows + 16);
    for (int t = 0; t < TT; ++t) {
      const __m512 dx = _mm512_set1_ps(a.d[(t0 + t) * a.nb + b]);
      a0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0[t]), _mm512_mul_ps(d0, dx), a0[t]);
      a1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1[t]), _mm512_mul_ps(d1, dx), a1[t]);
    }
  }
  for (int t = 0; t < TT; ++t) {
    _mm512_mask_storeu_ps(y + t * ys, m0, a0[t]);
    _mm512_mask_storeu_ps(y + t * ys + 16, m1, a1[t]);
  }
}

// Calls f.template operator()<n>() for a run-time n in [1, N].
template <int N, typename F>
QRWKV_VNNI void dispatch_tt(int n, F&& f) {
  if constexpr (N >= 1) {
    if (n == N) {
      f.template operator()<N>();
      return;
    }
    dispatch_tt<N - 1>(n, f);
  }
}

constexpr int kTile = 6;  // tokens per micro-kernel call: 24 accumulators

QRWKV_VNNI void gemm_panels(const Tensor& w, const Act& a, int64_t T, int64_t p0, int64_t p1,
                            float* y) {
  const int64_t out = w.shape[0];
  const int32_t off = w.dtype == DType::Q8_0 ? 128 : 8;
  thread_local std::vector<uint32_t> panel;
  thread_local std::vector<float> scales;
  panel.resize(static_cast<size_t>(a.nb * 8 * kPanelRows));
  scales.resize(static_cast<size_t>(a.nb * kPanelRows));
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t o0 = p * kPanelRows, rows = std::min(kPanelRows, out - o0);
    const __mmask16 m0 = rows >= 16 ? __mmask16(0xffff) : __mmask16((1u << rows) - 1);
    const __mmask16 m1 =
        rows >= 32 ? __mmask16(0xffff) : (rows > 16 ? __mmask16((1u << (rows - 16)) - 1) : 0);
    pack_panel(w, o0, panel.data(), scales.data());
    for (int64_t t = 0; t < T; t += kTile) {
      const int n = static_cast<int>(std::min<int64_t>(kTile, T - t));
      dispatch_tt<kTile>(n, [&]<int TT>() {
        micro<TT>(a, t, panel.data(), scales.data(), off, y + t * out + o0, out, m0, m1);
      });
    }
  }
}

// ---- packed weights (Panel32, ops/panel.h) ------------------------------------------------
//
// Q8_0 panels hold signed quads, Q4_0 panels unsigned nibble quads (n = q + 8), so one 64-byte
// load is a quad of 16 rows. The same contract as above; the unsigned side of vpdpbusd is:
//  - decode, Q8_0: |q_x| against q_w · sign(q_x), as the row-dot kernels;
//  - prefill, Q8_0: the activation bytes u_x = q_x + 128 (q_x xor 0x80) against the signed
//    weights, the int32 sums starting at −128 · Σ_k q_w (per row and block, summed once per
//    panel and call);
//  - Q4_0 (both): the nibbles against q_x, the sums starting at −8 · s_x.

inline void panel_masks(int64_t out, int64_t o0, __mmask16& m0, __mmask16& m1) {
  const int64_t rows = std::min(kPanelRows, out - o0);
  m0 = rows >= 16 ? __mmask16(0xffff) : __mmask16((1u << rows) - 1);
  m1 = rows >= 32 ? __mmask16(0xffff) : (rows > 16 ? __mmask16((1u << (rows - 16)) - 1) : 0);
}

QRWKV_VNNI inline __m512i bcast_quad(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// The nibble quads j (low) and j + 4 (high) of a Q4_0 panel word vector, unsigned.
QRWKV_VNNI inline void nibbles(__m512i v, __m512i& lo, __m512i& hi) {
  const __m512i m = _mm512_set1_epi8(15);
  lo = _mm512_and_si512(v, m);
  hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m);
}

// Tokens [t0, t0 + TT) against one panel, TT ≤ 4 (decode and small batches).
template <DType DT, int TT>
QRWKV_VNNI void decode_panel(const Act& a, int64_t t0, const uint8_t* p, float* y, int64_t ys,
                             __mmask16 m0, __mmask16 m1) {
  constexpr int64_t BB = DT == DType::Q8_0 ? kQ8PanelBlock : kQ4PanelBlock;
  __m512 a0[TT], a1[TT];
  for (int t = 0; t < TT; ++t) a0[t] = a1[t] = _mm512_setzero_ps();
  const int64_t far = panel_prefetch_bytes();
  for (int64_t b = 0; b < a.nb; ++b) {
    const uint8_t* pb = p + b * BB;
    if (far != 0)
      for (int64_t l = 0; l < BB; l += 64)
        _mm_prefetch(reinterpret_cast<const char*>(pb) + far + l, _MM_HINT_T1);
    __m512i i0[TT], i1[TT];
    const int8_t* xq = a.q + t0 * a.K + b * kQuantBlock;
    for (int t = 0; t < TT; ++t) {
      if constexpr (DT == DType::Q8_0)
        i0[t] = _mm512_setzero_si512();
      else
        i0[t] = _mm512_set1_epi32(-8 * a.s[(t0 + t) * a.nb + b]);
      i1[t] = i0[t];
    }
    if constexpr (DT == DType::Q8_0) {
      for (int j = 0; j < 8; ++j) {
        const __m512i w0 = _mm512_load_si512(pb + 64 + 128 * j);
        const __m512i w1 = _mm512_load_si512(pb + 128 + 128 * j);
        for (int t = 0; t < TT; ++t) {
          // |q_x| against q_w negated where q_x < 0 (AVX-512 has no vpsignb).
          const __m512i xv = bcast_quad(xq + t * a.K + 4 * j), xa = _mm512_abs_epi8(xv);
          const __mmask64 neg = _mm512_movepi8_mask(xv);
          const __m512i z = _mm512_setzero_si512();
          i0[t] = _mm512_dpbusd_epi32(i0[t], xa, _mm512_mask_sub_epi8(w0, neg, z, w0));
          i1[t] = _mm512_dpbusd_epi32(i1[t], xa, _mm512_mask_sub_epi8(w1, neg, z, w1));
        }
      }
    } else {
      for (int j = 0; j < 4; ++j) {
        __m512i lo0, hi0, lo1, hi1;
        nibbles(_mm512_load_si512(pb + 64 + 128 * j), lo0, hi0);
        nibbles(_mm512_load_si512(pb + 128 + 128 * j), lo1, hi1);
        for (int t = 0; t < TT; ++t) {
          const __m512i xl = bcast_quad(xq + t * a.K + 4 * j);
          const __m512i xh = bcast_quad(xq + t * a.K + 16 + 4 * j);
          i0[t] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(i0[t], lo0, xl), hi0, xh);
          i1[t] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(i1[t], lo1, xl), hi1, xh);
        }
      }
    }
    const __m512 d0 = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(pb)));
    const __m512 d1 = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(pb + 32)));
    for (int t = 0; t < TT; ++t) {
      const __m512 dx = _mm512_set1_ps(a.d[(t0 + t) * a.nb + b]);
      a0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0[t]), _mm512_mul_ps(d0, dx), a0[t]);
      a1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1[t]), _mm512_mul_ps(d1, dx), a1[t]);
    }
  }
  for (int t = 0; t < TT; ++t) {
    _mm512_mask_storeu_ps(y + t * ys, m0, a0[t]);
    _mm512_mask_storeu_ps(y + t * ys + 16, m1, a1[t]);
  }
}

// −128 · Σ_k q_w of every row and block of a Q8_0 panel: corr[32b + r].
QRWKV_VNNI void q8_corrections(const uint8_t* p, int64_t nb, int32_t* corr) {
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* pb = p + b * kQ8PanelBlock;
    __m512i s0 = _mm512_setzero_si512(), s1 = s0;
    for (int j = 0; j < 8; ++j) {
      s0 = _mm512_dpbusd_epi32(s0, ones, _mm512_load_si512(pb + 64 + 128 * j));
      s1 = _mm512_dpbusd_epi32(s1, ones, _mm512_load_si512(pb + 128 + 128 * j));
    }
    _mm512_storeu_si512(corr + b * kPanelRows,
                        _mm512_slli_epi32(_mm512_sub_epi32(_mm512_setzero_si512(), s0), 7));
    _mm512_storeu_si512(corr + b * kPanelRows + 16,
                        _mm512_slli_epi32(_mm512_sub_epi32(_mm512_setzero_si512(), s1), 7));
  }
}

// Tokens [t0, t0 + TT) against one panel, TT ≤ kTile (prefill).
template <DType DT, int TT>
QRWKV_VNNI void micro_panel(const Act& a, int64_t t0, const uint8_t* p, const int32_t* corr,
                            float* y, int64_t ys, __mmask16 m0, __mmask16 m1) {
  constexpr int64_t BB = DT == DType::Q8_0 ? kQ8PanelBlock : kQ4PanelBlock;
  __m512 a0[TT], a1[TT];
  for (int t = 0; t < TT; ++t) a0[t] = a1[t] = _mm512_setzero_ps();
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t b = 0; b < a.nb; ++b) {
    const uint8_t* pb = p + b * BB;
    const int8_t* xq = a.q + t0 * a.K + b * kQuantBlock;
    __m512i i0[TT], i1[TT];
    if constexpr (DT == DType::Q8_0) {
      const __m512i c0 = _mm512_loadu_si512(corr + b * kPanelRows);
      const __m512i c1 = _mm512_loadu_si512(corr + b * kPanelRows + 16);
      for (int t = 0; t < TT; ++t) {
        i0[t] = c0;
        i1[t] = c1;
      }
      for (int j = 0; j < 8; ++j) {
        const __m512i w0 = _mm512_load_si512(pb + 64 + 128 * j);
        const __m512i w1 = _mm512_load_si512(pb + 128 + 128 * j);
        for (int t = 0; t < TT; ++t) {
          const __m512i xu = _mm512_xor_si512(bcast_quad(xq + t * a.K + 4 * j), flip);
          i0[t] = _mm512_dpbusd_epi32(i0[t], xu, w0);
          i1[t] = _mm512_dpbusd_epi32(i1[t], xu, w1);
        }
      }
    } else {
      for (int t = 0; t < TT; ++t) i0[t] = i1[t] = _mm512_set1_epi32(-8 * a.s[(t0 + t) * a.nb + b]);
      for (int j = 0; j < 4; ++j) {
        __m512i lo0, hi0, lo1, hi1;
        nibbles(_mm512_load_si512(pb + 64 + 128 * j), lo0, hi0);
        nibbles(_mm512_load_si512(pb + 128 + 128 * j), lo1, hi1);
        for (int t = 0; t < TT; ++t) {
          const __m512i xl = bcast_quad(xq + t * a.K + 4 * j);
          const __m512i xh = bcast_quad(xq + t * a.K + 16 + 4 * j);
          i0[t] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(i0[t], lo0, xl), hi0, xh);
          i1[t] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(i1[t], lo1, xl), hi1, xh);
        }
      }
    }
    const __m512 d0 = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(pb)));
    const __m512 d1 = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(pb + 32)));
    for (int t = 0; t < TT; ++t) {
      const __m512 dx = _mm512_set1_ps(a.d[(t0 + t) * a.nb + b]);
      a0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0[t]), _mm512_mul_ps(d0, dx), a0[t]);
      a1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1[t]), _mm512_mul_ps(d1, dx), a1[t]);
    }
  }
  for (int t = 0; t < TT; ++t) {
    _mm512_mask_storeu_ps(y + t * ys, m0, a0[t]);
    _mm512_mask_storeu_ps(y + t * ys + 16, m1, a1[t]);
  }
}

template <DType DT>
QRWKV_VNNI void packed_panels(const Tensor& w, const Act& a, int64_t T, int64_t p0, int64_t p1,
                              float* y) {
  const int64_t out = w.shape[0], pbytes = panel_bytes(DT, a.K);
  thread_local std::vector<int32_t> corr;
  if (DT == DType::Q8_0 && T >= kGemmMinTokens) corr.resize(static_cast<size_t>(a.nb * kPanelRows));
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t o0 = p * kPanelRows;
    const uint8_t* panel = w.data + p * pbytes;
    __mmask16 m0, m1;
    panel_masks(out, o0, m0, m1);
    if (T < kGemmMinTokens) {
      int64_t t = 0;
      for (; t + 4 <= T; t += 4) decode_panel<DT, 4>(a, t, panel, y + t * out + o0, out, m0, m1);
      if (T - t > 0)
        dispatch_tt<3>(static_cast<int>(T - t), [&]<int TT>() {
          decode_panel<DT, TT>(a, t, panel, y + t * out + o0, out, m0, m1);
        });
      continue;
    }
    if (DT == DType::Q8_0) q8_corrections(panel, a.nb, corr.data());
    for (int64_t t = 0; t < T; t += kTile) {
      const int n = static_cast<int>(std::min<int64_t>(kTile, T - t));
      dispatch_tt<kTile>(n, [&]<int TT>() {
        micro_panel<DT, TT>(a, t, panel, corr.data(), y + t * out + o0, out, m0, m1);
      });
    }
  }
}

}  // namespace

QRWKV_VNNI double probe(int64_t iters) {
  __m512i acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_epi32(i);
  // b alternates +2 and -2, so every dot product is zero and the sums never overflow (an int
  // overflow in the reduction below would be undefined behaviour).
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi16(int16_t(0xFE02u));
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
  __m512i s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_epi32(s, acc[i]);
  volatile int sink = _mm512_reduce_add_epi32(s);
  (void)sink;
  return 2.0 * 12 * 64 * static_cast<double>(iters);
}

// The activations of a packed linear at this level, quantized per block (Act views them).
struct PanelAct {
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<int32_t> s;
  Act a;
};

void run_packed(const PanelLinear& l, int64_t p0, int64_t p1) {
  const Act& a = static_cast<const PanelAct*>(l.act)->a;
  if (l.w->dtype == DType::Q8_0)
    packed_panels<DType::Q8_0>(*l.w, a, l.T, p0, p1, l.y);
  else
    packed_panels<DType::Q4_0>(*l.w, a, l.T, p0, p1, l.y);
}

void prepare_panels(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y,
                    int slot, PanelLinear& l) {
  if (w.dtype != DType::Q8_0 && w.dtype != DType::Q4_0)
    fail(w.name, std::string("linear_int8: unsupported dtype ") + dtype_name(w.dtype));
  thread_local PanelAct acts[kPanelSlots];
  PanelAct& p = acts[slot];
  const int64_t K = w.shape[1], nb = K / kQuantBlock;
  p.q.resize(static_cast<size_t>(T * K));
  p.d.resize(static_cast<size_t>(T * nb));
  p.s.resize(static_cast<size_t>(T * nb));
  p.a = Act{p.q.data(), p.d.data(), p.s.data(), K, nb};
  const Act& a = p.a;
  if (T < kGemmMinTokens)
    quantize_rows(x, 0, T, a);
  else
    pool.parallel_for(T, 1, [&](int64_t t0, int64_t t1, int) { quantize_rows(x, t0, t1, a); });
  l = PanelLinear{&w, T, y, &p, run_packed};
}

void linear(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y) {
  if (w.dtype != DType::Q8_0 && w.dtype != DType::Q4_0)
    fail(w.name, std::string("linear_int8: unsupported dtype ") + dtype_name(w.dtype));
  const int64_t out = w.shape[0], K = w.shape[1], nb = K / kQuantBlock;
  if (w.layout == Layout::Panel32) {
    PanelLinear l;
    prepare_panels(pool, x, T, w, y, 0, l);
    run_panels(pool, panel_count(out), T, tensor_bytes(w),
               [&](int64_t p0, int64_t p1, int) { l.run(l, p0, p1); });
    return;
  }
  thread_local std::vector<int8_t> q;
  thread_local std::vector<float> d;
  thread_local std::vector<int32_t> s;
  q.resize(static_cast<size_t>(T * K));
  d.resize(static_cast<size_t>(T * nb));
  s.resize(static_cast<size_t>(T * nb));
  const Act a{q.data(), d.data(), s.data(), K, nb};
  if (T < kGemmMinTokens)
    quantize_rows(x, 0, T, a);
  else
    pool.parallel_for(T, 1, [&](int64_t t0, int64_t t1, int) { quantize_rows(x, t0, t1, a); });
  if (T < kGemmMinTokens) {
    // Rows in multiples of 16 per thread keep the 4-row blocks whole.
    pool.parallel_for(out, 16, [&](int64_t r0, int64_t r1, int) {
      if (w.dtype == DType::Q8_0)
        rowdot<DType::Q8_0>(a, T, w, r0, r1, y);
      else
        rowdot<DType::Q4_0>(a, T, w, r0, r1, y);
    });
  } else {
    const int64_t panels = (out + kPanelRows - 1) / kPanelRows;
    pool.parallel_for(panels, 1,
                      [&](int64_t p0, int64_t p1, int) { gemm_panels(w, a, T, p0, p1, y); });
  }
}

}  // namespace qrwkv::cpu::avx512vnni
