// Y = X Wᵀ for block-quantized weights (Q8_0, Q4_0) with int16 activations and AVX512-VNNI's
// vpdpwssd, which adds to each int32 lane the two products of its pairs of signed 16-bit values:
// the function of the AVX512BF16 level for block weights (ActivationRounding::Int16, backend.h).
//
// Precision contract: each token's X is quantized per block of 32 (quantize_act_int16: q_x ∈
// [-32767, 32767], a float32 scale d_x, each element within d_x / 2 of x), each block's integer
// dot product Σ q_w · q_x is exact in int32, and
//
//   y[t][o] = Σ_b float(Σ_j q_w · q_x) · (d_w[o][b] · d_x[t][b])      summed in float32,
//
// the reference's linear_blocks. Decode and prefill run different kernels for this function.
//
// Weights are read from their Panel32 layout (ops/panel.h): a 64-byte load is one quad (four
// consecutive k) of 16 rows, as signed bytes (Q8_0) or as nibbles n = q + 8 (Q4_0). vpdpwssd
// wants 16-bit pairs: the words of a quad vector hold the bytes (e0, e1) and (e2, e3), so
// shifting each word left by 8 and back (arithmetically) leaves the pairs (e0, e2), and shifting
// right by 8 leaves (e1, e3). The activations are stored with each quad in the order
// (x0, x2, x1, x3), so that the first 32 bits of a quad pair with (e0, e2) and the next with
// (e1, e3):
//
//   acc[r] += e0·x0 + e2·x2 (one vpdpwssd)  +  e1·x1 + e3·x3 (another)       16 rows at a time
//
// For Q4_0 the nibbles are unsigned (0 .. 15) and the sums start at −8 · s_x (s_x = Σ q_x),
// since Σ (n − 8) · q_x = Σ n · q_x − 8 · s_x.
//
// Decode (few tokens) shifts the quads in registers; prefill expands each panel once per call
// into its pair vectors (2 KiB per block of 32 rows), reused by every token.
//
// Weights that were not packed at load are packed per call into a scratch panel.
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

namespace qrwkv::cpu::avx512int16 {

#define QRWKV_I16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

namespace {

// The quantized activations of one call: token t's integers at q + t·K (each quad in the order
// x0, x2, x1, x3), its block scales and integer sums at d, s + t·nb.
struct Act {
  int16_t* q;
  float* d;
  int32_t* s;
  int64_t K, nb;
};

// quantize_act_int16 for tokens [t0, t1), vectorized to the same float32 operations (the same
// integers and scales), then each quad reordered.
QRWKV_I16 void quantize_rows(const float* x, int64_t t0, int64_t t1, const Act& a) {
  const __m512i order = _mm512_set_epi16(31, 29, 30, 28, 27, 25, 26, 24, 23, 21, 22, 20, 19, 17, 18,
                                         16, 15, 13, 14, 12, 11, 9, 10, 8, 7, 5, 6, 4, 3, 1, 2, 0);
  const __m512 lo = _mm512_set1_ps(-32767.0f), hi = _mm512_set1_ps(32767.0f);
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t b = 0; b < a.nb; ++b) {
      const float* xb = x + t * a.K + b * kQuantBlock;
      const __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
      const __m512 id = _mm512_set1_ps(amax != 0.0f ? 32767.0f / amax : 0.0f);
      const __m512i i0 =
          _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v0, id), lo), hi));
      const __m512i i1 =
          _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v1, id), lo), hi));
      const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi32_epi16(i0)),
                                           _mm512_cvtepi32_epi16(i1), 1);
      _mm512_storeu_si512(a.q + t * a.K + b * kQuantBlock, _mm512_permutexvar_epi16(order, w));
      a.d[t * a.nb + b] = amax / 32767.0f;
      a.s[t * a.nb + b] = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
    }
}

QRWKV_I16 inline __m512i bcast32(const int16_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

inline void panel_masks(int64_t out, int64_t o0, __mmask16& m0, __mmask16& m1) {
  const int64_t rows = std::min(kPanelRows, out - o0);
  m0 = rows >= 16 ? __mmask16(0xffff) : __mmask16((1u << rows) - 1);
  m1 = rows >= 32 ? __mmask16(0xffff) : (rows > 16 ? __mmask16((1u << (rows - 16)) - 1) : 0);
}

// The pair vectors of one quad vector: A holds (e0, e2), B holds (e1, e3) in every lane, as
// signed 16-bit values (Q8_0) or unsigned nibble values (Q4_0, from a nibble-byte vector).
QRWKV_I16 inline void pairs_signed(__m512i v, __m512i& A, __m512i& B) {
  A = _mm512_srai_epi16(_mm512_slli_epi16(v, 8), 8);
  B = _mm512_srai_epi16(v, 8);
}
QRWKV_I16 inline void pairs_unsigned(__m512i v, __m512i& A, __m512i& B) {
  A = _mm512_and_si512(v, _mm512_set1_epi16(0x00ff));
  B = _mm512_srli_epi16(v, 8);
}
// The nibble quads j (low) and j + 4 (high) of a Q4_0 panel word vector, one per byte.
QRWKV_I16 inline void nibbles(__m512i v, __m512i& lo, __m512i& hi) {
  const __m512i m = _mm512_set1_epi8(15);
  lo = _mm512_and_si512(v, m);
  hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m);
}

// acc[t] += A·(quad q of token t, first pair) + B·(its second pair).
template <int TT>
QRWKV_I16 inline void dot_quad(const int16_t* xq, int64_t xs, int q, __m512i A, __m512i B,
                               __m512i (&acc)[TT]) {
  for (int t = 0; t < TT; ++t)
    acc[t] = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(acc[t], A, bcast32(xq + t * xs + 4 * q)), B,
                                 bcast32(xq + t * xs + 4 * q + 2));
}

// Tokens [t0, t0 + TT) against one panel, TT ≤ 4 (decode and small batches).
template <DType DT, int TT>
QRWKV_I16 void decode_panel(const Act& a, int64_t t0, const uint8_t* p, float* y, int64_t ys,
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
    const int16_t* xq = a.q + t0 * a.K + b * kQuantBlock;
    __m512i i0[TT], i1[TT];
    for (int t = 0; t < TT; ++t)
      i0[t] = i1[t] = DT == DType::Q8_0 ? _mm512_setzero_si512()
                                        : _mm512_set1_epi32(-8 * a.s[(t0 + t) * a.nb + b]);
    if constexpr (DT == DType::Q8_0) {
      for (int j = 0; j < 8; ++j) {
        __m512i A0, B0, A1, B1;
        pairs_signed(_mm512_load_si512(pb + 64 + 128 * j), A0, B0);
        pairs_signed(_mm512_load_si512(pb + 128 + 128 * j), A1, B1);
        dot_quad<TT>(xq, a.K, j, A0, B0, i0);
        dot_quad<TT>(xq, a.K, j, A1, B1, i1);
      }
    } else {
      for (int j = 0; j < 4; ++j) {
        __m512i lo0, hi0, lo1, hi1, A, B;
        nibbles(_mm512_load_si512(pb + 64 + 128 * j), lo0, hi0);
        nibbles(_mm512_load_si512(pb + 128 + 128 * j), lo1, hi1);
        pairs_unsigned(lo0, A, B);
        dot_quad<TT>(xq, a.K, j, A, B, i0);
        pairs_unsigned(hi0, A, B);
        dot_quad<TT>(xq, a.K, j + 4, A, B, i0);
        pairs_unsigned(lo1, A, B);
        dot_quad<TT>(xq, a.K, j, A, B, i1);
        pairs_unsigned(hi1, A, B);
        dot_quad<TT>(xq, a.K, j + 4, A, B, i1);
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

// A panel's pair vectors for prefill: for block b, quad q (elements 4q .. 4q + 3) and half h,
// the vectors A and B at e[((8b + q)·2 + h)·2 + {0, 1}], and the rows' scales as float32 at
// scales[32b + r].
QRWKV_I16 void expand_panel(DType dt, const uint8_t* p, int64_t nb, __m512i* e, float* scales) {
  const int64_t BB = dt == DType::Q8_0 ? kQ8PanelBlock : kQ4PanelBlock;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* pb = p + b * BB;
    _mm512_storeu_ps(scales + b * kPanelRows,
                     _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(pb))));
    _mm512_storeu_ps(scales + b * kPanelRows + 16,
                     _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(pb + 32))));
    __m512i* eb = e + b * 32;
    for (int h = 0; h < 2; ++h) {
      if (dt == DType::Q8_0) {
        for (int j = 0; j < 8; ++j)
          pairs_signed(_mm512_load_si512(pb + 64 + 128 * j + 64 * h), eb[(2 * j + h) * 2],
                       eb[(2 * j + h) * 2 + 1]);
      } else {
        for (int j = 0; j < 4; ++j) {
          __m512i lo, hi;
          nibbles(_mm512_load_si512(pb + 64 + 128 * j + 64 * h), lo, hi);
          pairs_unsigned(lo, eb[(2 * j + h) * 2], eb[(2 * j + h) * 2 + 1]);
          pairs_unsigned(hi, eb[(2 * (j + 4) + h) * 2], eb[(2 * (j + 4) + h) * 2 + 1]);
        }
      }
    }
  }
}

// Tokens [t0, t0 + TT) against one expanded panel, TT ≤ kTile (prefill).
template <int TT>
QRWKV_I16 void micro(const Act& a, int64_t t0, bool q4, const __m512i* e, const float* scales,
                     float* y, int64_t ys, __mmask16 m0, __mmask16 m1) {
  __m512 a0[TT], a1[TT];
  for (int t = 0; t < TT; ++t) a0[t] = a1[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < a.nb; ++b) {
    const int16_t* xq = a.q + t0 * a.K + b * kQuantBlock;
    __m512i i0[TT], i1[TT];
    for (int t = 0; t < TT; ++t)
      i0[t] = i1[t] =
          q4 ? _mm512_set1_epi32(-8 * a.s[(t0 + t) * a.nb + b]) : _mm512_setzero_si512();
    const __m512i* eb = e + b * 32;
    for (int q = 0; q < 8; ++q) {
      const __m512i A0 = eb[4 * q], B0 = eb[4 * q + 1], A1 = eb[4 * q + 2], B1 = eb[4 * q + 3];
      for (int t = 0; t < TT; ++t) {
        const __m512i xa = bcast32(xq + t * a.K + 4 * q), xb = bcast32(xq + t * a.K + 4 * q + 2);
        i0[t] = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(i0[t], A0, xa), B0, xb);
        i1[t] = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(i1[t], A1, xa), B1, xb);
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
QRWKV_I16 void dispatch_tt(int n, F&& f) {
  if constexpr (N >= 1) {
    if (n == N) {
      f.template operator()<N>();
      return;
    }
    dispatch_tt<N - 1>(n, f);
  }
}

constexpr int kTile = 6;  // tokens per prefill micro-kernel call: 24 accumulators

QRWKV_I16 void panels(const Tensor& w, const Act& a, int64_t T, int64_t p0, int64_t p1, float* y) {
  const int64_t out = w.shape[0], pbytes = panel_bytes(w.dtype, a.K);
  const bool q8 = w.dtype == DType::Q8_0;
  // The expanded panel (64-byte vectors) and its scales, kept per thread across calls.
  thread_local std::shared_ptr<uint8_t> e_bytes;
  thread_local int64_t e_blocks = 0;
  thread_local std::vector<float> scales;
  if (T >= kGemmMinTokens && a.nb > e_blocks) {
    e_bytes = alloc_weight_bytes(static_cast<size_t>(a.nb * 32 * 64));
    e_blocks = a.nb;
  }
  __m512i* e = reinterpret_cast<__m512i*>(e_bytes.get());
  if (T >= kGemmMinTokens) scales.resize(static_cast<size_t>(a.nb * kPanelRows));
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t o0 = p * kPanelRows;
    const uint8_t* panel = w.data + p * pbytes;
    __mmask16 m0, m1;
    panel_masks(out, o0, m0, m1);
    if (T < kGemmMinTokens) {
      int64_t t = 0;
      auto run = [&]<int TT>() {
        if (q8)
          decode_panel<DType::Q8_0, TT>(a, t, panel, y + t * out + o0, out, m0, m1);
        else
          decode_panel<DType::Q4_0, TT>(a, t, panel, y + t * out + o0, out, m0, m1);
      };
      for (; t + 4 <= T; t += 4) run.template operator()<4>();
      if (T > t) dispatch_tt<3>(static_cast<int>(T - t), run);
      continue;
    }
    expand_panel(w.dtype, panel, a.nb, e, scales.data());
    for (int64_t t = 0; t < T; t += kTile) {
      const int n = static_cast<int>(std::min<int64_t>(kTile, T - t));
      dispatch_tt<kTile>(n, [&]<int TT>() {
        micro<TT>(a, t, !q8, e, scales.data(), y + t * out + o0, out, m0, m1);
      });
    }
  }
}

// The activations of one projection, quantized (Act views them).
struct PanelAct {
  std::vector<int16_t> q;
  std::vector<float> d;
  std::vector<int32_t> s;
  Act a;
};

void run_packed(const PanelLinear& l, int64_t p0, int64_t p1) {
  panels(*l.w, static_cast<const PanelAct*>(l.act)->a, l.T, p0, p1, l.y);
}

}  // namespace

QRWKV_I16 double probe(int64_t iters) {
  __m512i acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_epi32(i);
  // b pairs +2 with -2, so every dot product is zero and the sums never overflow (an int
  // overflow in the reduction below would be undefined behaviour).
  const __m512i a = _mm512_set1_epi16(3), b = _mm512_set1_epi32(int32_t(0xFFFE0002u));
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpwssd_epi32(acc[i], a, b);
  __m512i s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_epi32(s, acc[i]);
  volatile int sink = _mm512_reduce_add_epi32(s);
  (void)sink;
  return 2.0 * 12 * 32 * static_cast<double>(iters);
}

void prepare_panels(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y,
                    int slot, PanelLinear& l) {
  if ((w.dtype != DType::Q8_0 && w.dtype != DType::Q4_0) || w.layout != Layout::Panel32)
    fail(w.name,
         std::string("int16 kernels: not a packed block weight (") + dtype_name(w.dtype) + ")");
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
    fail(w.name, std::string("linear_int16: unsupported dtype ") + dtype_name(w.dtype));
  Tensor packed = w;
  if (w.layout != Layout::Panel32) {
    // Not prepared by the backend (a caller's own weights): packed here, per call.
    thread_local std::shared_ptr<uint8_t> scratch;
    thread_local size_t scratch_bytes = 0;
    const size_t need =
        static_cast<size_t>(panel_count(w.shape[0]) * panel_bytes(w.dtype, w.shape[1]));
    if (need > scratch_bytes) {
      scratch = alloc_weight_bytes(need);
      scratch_bytes = need;
    }
    packed = pack_panels_into(w, w.dtype, scratch.get(), &pool);
  }
  PanelLinear l;
  prepare_panels(pool, x, T, packed, y, 0, l);
  run_panels(pool, panel_count(w.shape[0]), T, tensor_bytes(w),
             [&](int64_t p0, int64_t p1, int) { l.run(l, p0, p1); });
}

}  // namespace qrwkv::cpu::avx512int16
