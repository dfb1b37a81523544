// Y = X Wᵀ for low-precision weights (BF16, Q8_0, Q4_0) with AVX512-BF16 dot products.
//
// Precision contract of this path: activations are rounded to bfloat16 once per call, weights
// are used exactly as stored (a BF16 value, or an integer q times its block's float16 scale),
// and every sum is accumulated in float32. Decode (few tokens) and prefill (many tokens) use
// different kernels that compute this same function, so a prompt evaluated in one call agrees
// with the same prompt evaluated token by token to float32 rounding.
//
// Few tokens (T < kGemmMinTokens): "row-dot" kernels read W in place, row-major. Blocks of 4 rows
// × up to 4 tokens share each load of W and X; BF16 rows use vdpbf16ps (32 multiply-adds per
// instruction) and block formats are expanded to float32 (d · q is exact) and use FMAs. Decode
// is bound by reading W once, which these kernels do with sequential streams.
//
// Many tokens: a packed GEMM. Each thread takes panels of 32 output rows; a panel is expanded
// once into "pair" layout, P[k/2][r] = (W[r][k], W[r][k+1]) as two bf16 in 32 bits, so that one
// vector holds one k-pair of 16 consecutive rows. The micro-kernel keeps TT tokens × 32 rows of
// float32 accumulators in registers and, per k-pair, loads two panel vectors and broadcasts one
// 32-bit activation pair per token:
//
//   acc[t][r] += X[t][k] · W[r][k] + X[t][k+1] · W[r][k+1]      (one vdpbf16ps per 16 rows)
//
// For the block formats the panel holds the integers q (exact in bf16) and each block's 32
// products are summed into a temporary that is scaled once: acc += d[r][block] · Σ q·x.
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
#include "ops/vec.h"

namespace qrwkv::cpu::avx512bf16 {

#define QRWKV_BF16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")))

// The panels hold each block's integers; they are decoded one element per lane.
using V = VecScalar;
#define QRWKV_TARGET
#include "ops/block_decode.inl"
#undef QRWKV_TARGET

namespace {

// The bfloat16 bits of a block's integer q: small integers are exact in bfloat16, so truncating
// the float32 bits loses nothing.
inline uint32_t bf16_bits(float q) {
  uint32_t b;
  std::memcpy(&b, &q, 4);
  return b >> 16;
}

// ---- activations --------------------------------------------------------------------------

// X [T, K] float32 → bf16 rows of stride Kp (K rounded up to 32, zero-padded).
QRWKV_BF16 void round_rows(const float* x, int64_t K, int64_t Kp, int64_t t0, int64_t t1,
                           uint16_t* xb) {
  for (int64_t t = t0; t < t1; ++t) {
    const float* src = x + t * K;
    uint16_t* dst = xb + t * Kp;
    for (int64_t i = 0; i < Kp; i += 16) {
      const __mmask16 m =
          K - i >= 16 ? __mmask16(0xffff) : (K > i ? __mmask16((1u << (K - i)) - 1) : 0);
      const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), reinterpret_cast<const __m256i&>(h));
    }
  }
}

// ---- row-dot kernels (few tokens) ---------------------------------------------------------

template <int RT, int TT>
QRWKV_BF16 void rowdot_bf16(const uint16_t* xb, int64_t xs, const uint16_t* w, int64_t K, float* y,
                            int64_t ys) {
  __m512 acc[RT][TT];
  for (int r = 0; r < RT; ++r)
    for (int t = 0; t < TT; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t i = 0; i < K; i += 32) {
    const __mmask32 m = K - i >= 32 ? ~__mmask32(0) : __mmask32((1u << (K - i)) - 1);
    __m512bh xv[TT];
    for (int t = 0; t < TT; ++t) xv[t] = (__m512bh)_mm512_loadu_si512(xb + t * xs + i);
    for (int r = 0; r < RT; ++r) {
      const uint16_t* p = w + r * K + i;
      // As the float32 row-dot kernels: the next block of rows into L1, further ahead into L2.
      _mm_prefetch(reinterpret_cast<const char*>(p + RT * K), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetchFar, _MM_HINT_T1);
      const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(m, p);
      for (int t = 0; t < TT; ++t) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], xv[t], wv);
    }
  }
  for (int r = 0; r < RT; ++r)
    for (int t = 0; t < TT; ++t) y[t * ys + r] = _mm512_reduce_add_ps(acc[r][t]);
}

template <int RT>
QRWKV_BF16 void rowdot_rows(const Tensor& w, const uint16_t* xb, int64_t xs, int64_t T, int64_t o,
                            float* y, int64_t ys) {
  const int64_t K = w.shape[1], rb = tensor_bytes(w.dtype, K);
  const uint8_t* wr = w.data + o * rb;
  int64_t t = 0;
  auto run = [&]<int TT>() {
    rowdot_bf16<RT, TT>(xb + t * xs, xs, reinterpret_cast<const uint16_t*>(wr), K, y + t * ys + o,
                        ys);
  };
  for (; t + 4 <= T; t += 4) run.template operator()<4>();
  switch (T - t) {
    case 3:
      run.template operator()<3>();
      break;
    case 2:
      run.template operator()<2>();
      break;
    case 1:
      run.template operator()<1>();
      break;
    default:
      break;
  }
}

// ---- packed GEMM (many tokens) ------------------------------------------------------------

// Expands rows [o0, o0 + 32) of W into pair layout (missing rows are zero). For the block
// formats, scales[b·32 + r] receives the scale of block b of row r.
QRWKV_BF16 void pack_panel(const Tensor& w, int64_t o0, uint32_t* panel, float* scales) {
  const int64_t out = w.shape[0], K = w.shape[1], nkp = (K + 1) / 2;
  const int64_t rb = tensor_bytes(w.dtype, K);
  for (int64_t r = 0; r < kPanelRows; ++r) {
    const int64_t o = o0 + r;
    if (o >= out) {
      for (int64_t kp = 0; kp < nkp; ++kp) panel[kp * kPanelRows + r] = 0;
      if (scales != nullptr)
        for (int64_t b = 0; b < K / kQuantBlock; ++b) scales[b * kPanelRows + r] = 0.0f;
      continue;
    }
    const uint8_t* row = w.data + o * rb;
    if (w.dtype == DType::BF16) {
      const auto* h = reinterpret_cast<const uint16_t*>(row);
      for (int64_t kp = 0; kp < K / 2; ++kp) {
        uint32_t v;
        std::memcpy(&v, h + 2 * kp, 4);
        panel[kp * kPanelRows + r] = v;
      }
      if (K % 2 != 0) {
        uint16_t last;
        std::memcpy(&last, h + K - 1, 2);
        panel[(nkp - 1) * kPanelRows + r] = last;
      }
      continue;
    }
    const int64_t bb = tensor_bytes(w.dtype, kQuantBlock);
    for (int64_t b = 0; b < K / kQuantBlock; ++b) {
      const uint8_t* blk = row + b * bb;
      float qf[32];
      scales[b * kPanelRows + r] = w.dtype == DType::Q8_0 ? unpack_block<DType::Q8_0>(blk, qf)
                                                          : unpack_block<DType::Q4_0>(blk, qf);
      for (int j = 0; j < 16; ++j)
        panel[(b * 16 + j) * kPanelRows + r] =
            bf16_bits(qf[2 * j]) | (bf16_bits(qf[2 * j + 1]) << 16);
    }
  }
}

QRWKV_BF16 inline __m512bh bcast_pair(const uint16_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return (__m512bh)_mm512_set1_epi32(v);
}

template <int TT>
QRWKV_BF16 void micro_plain(const uint16_t* xb, int64_t xs, const uint32_t* panel, int64_t nkp,
                            float* y, int64_t ys, __mmask16 m0, __mmask16 m1) {
  __m512 a0[TT], a1[TT];
  for (int t = 0; t < TT; ++t) a0[t] = a1[t] = _mm512_setzero_ps();
  for (int64_t kp = 0; kp < nkp; ++kp) {
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(panel + kp * kPanelRows);
    const __m512bh w1 = (__m512bh)_mm512_loadu_si512(panel + kp * kPanelRows + 16);
    for (int t = 0; t < TT; ++t) {
      const __m512bh xv = bcast_pair(xb + t * xs + 2 * kp);
      a0[t] = _mm512_dpbf16_ps(a0[t], xv, w0);
      a1[t] = _mm512_dpbf16_ps(a1[t], xv, w1);
    }
  }
  for (int t = 0; t < TT; ++t) {
    _mm512_mask_storeu_ps(y + t * ys, m0, a0[t]);
    _mm512_mask_storeu_ps(y + t * ys + 16, m1, a1[t]);
  }
}

template <int TT>
QRWKV_BF16 void micro_blocks(const uint16_t* xb, int64_t xs, const uint32_t* panel,
                             const float* scales, int64_t nb, float* y, int64_t ys, __mmask16 m0,
                             __mmask16 m1) {
  __m512 a0[TT], a1[TT];
  for (int t = 0; t < TT; ++t) a0[t] = a1[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    __m512 s0[TT], s1[TT];
    for (int t = 0; t < TT; ++t) s0[t] = s1[t] = _mm512_setzero_ps();
    const uint32_t* pb = panel + b * 16 * kPanelRows;
    const uint16_t* xbb = xb + b * 32;
    for (int j = 0; j < 16; ++j) {
      const __m512bh w0 = (__m512bh)_mm512_loadu_si512(pb + j * kPanelRows);
      const __m512bh w1 = (__m512bh)_mm512_loadu_si512(pb + j * kPanelRows + 16);
      for (int t = 0; t < TT; ++t) {
        const __m512bh xv = bcast_pair(xbb + t * xs + 2 * j);
        s0[t] = _mm512_dpbf16_ps(s0[t], xv, w0);
        s1[t] = _mm512_dpbf16_ps(s1[t], xv, w1);
      }
    }
    const __m512 d0 = _mm512_loadu_ps(scales + b * kPanelRows);
    const __m512 d1 = _mm512_loadu_ps(scales + b * kPanelRows + 16);
    for (int t = 0; t < TT; ++t) {
      a0[t] = _mm512_fmadd_ps(s0[t], d0, a0[t]);
      a1[t] = _mm512_fmadd_ps(s1[t], d1, a1[t]);
    }
  }
  for (int t = 0; t < TT; ++t) {
    _mm512_mask_storeu_ps(y + t * ys, m0, a0[t]);
    _mm512_mask_storeu_ps(y + t * ys + 16, m1, a1[t]);
  }
}

// Calls f.template operator()<n>() for a run-time n in [1, N].
template <int N, typename F>
QRWKV_BF16 void dispatch_tt(int n, F&& f) {
  if constexpr (N >= 1) {
    if (n == N) {
      f.template operator()<N>();
      return;
    }
    dispatch_tt<N - 1>(n, f);
  }
}

constexpr int kTilePlain = 12;  // 24 accumulators
constexpr int kTileBlocks = 6;  // 12 accumulators + 12 block sums

QRWKV_BF16 void gemm_panels(const Tensor& w, const uint16_t* xb, int64_t Kp, int64_t T, int64_t p0,
                            int64_t p1, float* y) {
  const int64_t out = w.shape[0], K = w.shape[1], nkp = (K + 1) / 2;
  const bool plain = w.dtype == DType::BF16;
  thread_local std::vector<uint32_t> panel;
  thread_local std::vector<float> scales;
  panel.resize(static_cast<size_t>(nkp * kPanelRows));
  if (!plain) scales.resize(static_cast<size_t>(K / kQuantBlock * kPanelRows));
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t o0 = p * kPanelRows, rows = std::min(kPanelRows, out - o0);
    const __mmask16 m0 = rows >= 16 ? __mmask16(0xffff) : __mmask16((1u << rows) - 1);
    const __mmask16 m1 =
        rows >= 32 ? __mmask16(0xffff) : (rows > 16 ? __mmask16((1u << (rows - 16)) - 1) : 0);
    pack_panel(w, o0, panel.data(), plain ? nullptr : scales.data());
    const int tile = plain ? kTilePlain : kTileBlocks;
    for (int64_t t = 0; t < T; t += tile) {
      const int n = static_cast<int>(std::min<int64_t>(tile, T - t));
      const uint16_t* xt = xb + t * Kp;
      float* yt = y + t * out + o0;
      if (plain)
        dispatch_tt<kTilePlain>(
            n, [&]<int TT>() { micro_plain<TT>(xt, Kp, panel.data(), nkp, yt, out, m0, m1); });
      else
        dispatch_tt<kTileBlocks>(n, [&]<int TT>() {
          micro_blocks<TT>(xt, Kp, panel.data(), scales.data(), K / kQuantBlock, yt, out, m0, m1);
        });
    }
  }
}

// ---- packed weights (Panel32, ops/panel.h) ------------------------------------------------
//
// Weights packed at load need no per-call packing: the BF16 panels are the pair layout the
// micro-kernels above read, and decode reads them with the same vectors. Q8_0 and Q4_0 panels
// hold each block's integers as quads (4 consecutive k of one row in 32 bits); this level
// widens them to float32 for decode and to bf16 pairs (per panel, per call) for prefill.

// The masks of a panel's two 16-row halves, for a panel starting at row o0 of out.
inline void panel_masks(int64_t out, int64_t o0, __mmask16& m0, __mmask16& m1) {
  const int64_t rows = std::min(kPanelRows, out - o0);
  m0 = rows >= 16 ? __mmask16(0xffff) : __mmask16((1u << rows) - 1);
  m1 = rows >= 32 ? __mmask16(0xffff) : (rows > 16 ? __mmask16((1u << (rows - 16)) - 1) : 0);
}

// Bytes of a packed panel fetched into L2 ahead of the decode kernels' reads (as kPrefetchFar for
// row-major weights: one core's demand misses alone do not reach the memory's bandwidth).
constexpr int64_t kPanelPrefetch = 16384;

// Decode, BF16 panel: TT tokens × 32 rows. Two k-pairs per step into separate accumulators
// (a single chain of vdpbf16ps would wait on its latency).
template <int TT>
QRWKV_BF16 void decode_bf16(const uint32_t* p, int64_t nkp, const uint16_t* xb, int64_t xs,
                            float* y, int64_t ys, __mmask16 m0, __mmask16 m1) {
  __m512 a0[TT], a1[TT], b0[TT], b1[TT];
  for (int t = 0; t < TT; ++t) a0[t] = a1[t] = b0[t] = b1[t] = _mm512_setzero_ps();
  for (int64_t kp = 0; kp < nkp; kp += 2) {
    const uint32_t* q = p + kp * kPanelRows;
    const char* f = reinterpret_cast<const char*>(q) + kPanelPrefetch;
    for (int l = 0; l < 4; ++l) _mm_prefetch(f + 64 * l, _MM_HINT_T1);
    const __m512bh w0 = (__m512bh)_mm512_load_si512(q), w1 = (__m512bh)_mm512_load_si512(q + 16);
    const __m512bh w2 = (__m512bh)_mm512_load_si512(q + 32);
    const __m512bh w3 = (__m512bh)_mm512_load_si512(q + 48);
    for (int t = 0; t < TT; ++t) {
      const __m512bh x0 = bcast_pair(xb + t * xs + 2 * kp);
      const __m512bh x1 = bcast_pair(xb + t * xs + 2 * kp + 2);
      a0[t] = _mm512_dpbf16_ps(a0[t], x0, w0);
      a1[t] = _mm512_dpbf16_ps(a1[t], x0, w1);
      b0[t] = _mm512_dpbf16_ps(b0[t], x1, w2);
      b1[t] = _mm512_dpbf16_ps(b1[t], x1, w3);
    }
  }
  for (int t = 0; t < TT; ++t) {
    _mm512_mask_storeu_ps(y + t * ys, m0, _mm512_add_ps(a0[t], b0[t]));
    _mm512_mask_storeu_ps(y + t * ys + 16, m1, _mm512_add_ps(a1[t], b1[t]));
  }
}

// The four signed bytes of each 32-bit lane of a quad vector as float32: e[i] holds byte i of
// every lane (16 rows' element 4j + i). Shifting byte i to the top and back sign-extends it.
QRWKV_BF16 inline void quad_to_f32(__m512i v, __m512 e[4]) {
  e[0] = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(v, 24), 24));
  e[1] = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(v, 16), 24));
  e[2] = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(v, 8), 24));
  e[3] = _mm512_cvtepi32_ps(_mm512_srai_epi32(v, 24));
}

// Quads j and j + 4 of a Q4_0 panel word vector, as signed bytes q = n − 8.
QRWKV_BF16 inline void q4_quads(__m512i v, __m512i& lo, __m512i& hi) {
  const __m512i m = _mm512_set1_epi8(15), eight = _mm512_set1_epi8(8);
  lo = _mm512_sub_epi8(_mm512_and_si512(v, m), eight);
  hi = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v, 4), m), eight);
}

// s[h][t] += Σ_i e_h[i] · x[t][k + i] for one quad of both halves (h = 0, 1).
template <int TT>
QRWKV_BF16 inline void fma_quad(__m512i v0, __m512i v1, const float* x, int64_t xs, int64_t k,
                                __m512 (&s0)[TT], __m512 (&s1)[TT]) {
  __m512 e0[4], e1[4];
  quad_to_f32(v0, e0);
  quad_to_f32(v1, e1);
  for (int i = 0; i < 4; ++i)
    for (int t = 0; t < TT; ++t) {
      const __m512 xv = _mm512_set1_ps(x[t * xs + k + i]);
      s0[t] = _mm512_fmadd_ps(e0[i], xv, s0[t]);
      s1[t] = _mm512_fmadd_ps(e1[i], xv, s1[t]);
    }
}

// Decode, Q8_0 / Q4_0 panel with float32 activations (already rounded to bf16): per block, the
// integer products Σ q · x in float32, then scaled by the rows' d.
template <DType DT, int TT>
QRWKV_BF16 void decode_blocks_f32(const uint8_t* p, int64_t nb, const float* x, int64_t xs,
                                  float* y, int64_t ys, __mmask16 m0, __mmask16 m1) {
  constexpr int64_t BB = DT == DType::Q8_0 ? kQ8PanelBlock : kQ4PanelBlock;
  __m512 a0[TT], a1[TT];
  for (int t = 0; t < TT; ++t) a0[t] = a1[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* pb = p + b * BB;
    for (int64_t l = 0; l < BB; l += 64)
      _mm_prefetch(reinterpret_cast<const char*>(pb) + kPanelPrefetch + l, _MM_HINT_T1);
    __m512 s0[TT], s1[TT];
    for (int t = 0; t < TT; ++t) s0[t] = s1[t] = _mm512_setzero_ps();
    const float* xb = x + b * kQuantBlock;
    if constexpr (DT == DType::Q8_0) {
      for (int j = 0; j < 8; ++j) {
        const __m512i v0 = _mm512_load_si512(pb + 64 + 128 * j);
        const __m512i v1 = _mm512_load_si512(pb + 128 + 128 * j);
        fma_quad<TT>(v0, v1, xb, xs, 4 * j, s0, s1);
      }
    } else {
      for (int j = 0; j < 4; ++j) {
        __m512i lo0, hi0, lo1, hi1;
        q4_quads(_mm512_load_si512(pb + 64 + 128 * j), lo0, hi0);
        q4_quads(_mm512_load_si512(pb + 128 + 128 * j), lo1, hi1);
        fma_quad<TT>(lo0, lo1, xb, xs, 4 * j, s0, s1);
        fma_quad<TT>(hi0, hi1, xb, xs, 16 + 4 * j, s0, s1);
      }
    }
    const __m512 d0 = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(pb)));
    const __m512 d1 = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(pb + 32)));
    for (int t = 0; t < TT; ++t) {
      a0[t] = _mm512_fmadd_ps(s0[t], d0, a0[t]);
      a1[t] = _mm512_fmadd_ps(s1[t], d1, a1[t]);
    }
  }
  for (int t = 0; t < TT; ++t) {
    _mm512_mask_storeu_ps(y + t * ys, m0, a0[t]);
    _mm512_mask_storeu_ps(y + t * ys + 16, m1, a1[t]);
  }
}

// The bf16 bits of two float vectors of small integers (exact in bf16) as pairs: lane r holds
// (lo[r], hi[r]).
QRWKV_BF16 inline __m512i pair_bits(__m512 lo, __m512 hi) {
  return _mm512_or_si512(_mm512_srli_epi32(_mm512_castps_si512(lo), 16),
                         _mm512_and_si512(_mm512_castps_si512(hi), _mm512_set1_epi32(-65536)));
}

// A Q8_0 / Q4_0 panel expanded into what micro_blocks reads: pairs[(16b + jp)·32 + r] the bf16
// pair (q[r][32b + 2jp], q[r][32b + 2jp + 1]) and scales[32b + r] = d[r] of block b.
QRWKV_BF16 void expand_blocks(DType dt, const uint8_t* p, int64_t nb, uint32_t* pairs,
                              float* scales) {
  const int64_t BB = dt == DType::Q8_0 ? kQ8PanelBlock : kQ4PanelBlock;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* pb = p + b * BB;
    _mm512_storeu_ps(scales + b * kPanelRows,
                     _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(pb))));
    _mm512_storeu_ps(scales + b * kPanelRows + 16,
                     _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(pb + 32))));
    uint32_t* out = pairs + b * 16 * kPanelRows;
    // Quad jq (elements 4jq .. 4jq + 3) of 16 rows into pairs 2jq and 2jq + 1.
    auto put = [&](int jq, int h, __m512i quad) QRWKV_BF16 {
      __m512 e[4];
      quad_to_f32(quad, e);
      _mm512_storeu_si512(out + (2 * jq) * kPanelRows + 16 * h, pair_bits(e[0], e[1]));
      _mm512_storeu_si512(out + (2 * jq + 1) * kPanelRows + 16 * h, pair_bits(e[2], e[3]));
    };
    for (int h = 0; h < 2; ++h) {
      if (dt == DType::Q8_0) {
        for (int j = 0; j < 8; ++j) put(j, h, _mm512_load_si512(pb + 64 + 128 * j + 64 * h));
      } else {
        for (int j = 0; j < 4; ++j) {
          __m512i lo, hi;
          q4_quads(_mm512_load_si512(pb + 64 + 128 * j + 64 * h), lo, hi);
          put(j, h, lo);
          put(j + 4, h, hi);
        }
      }
    }
  }
}

// Runs f.template operator()<TT>(t, TT) over tokens [0, T) in tiles of up to 4.
template <typename F>
QRWKV_BF16 inline void token_tiles4(int64_t T, F&& f) {
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) f.template operator()<4>(t);
  switch (T - t) {
    case 3:
      f.template operator()<3>(t);
      break;
    case 2:
      f.template operator()<2>(t);
      break;
    case 1:
      f.template operator()<1>(t);
      break;
    default:
      break;
  }
}

QRWKV_BF16 void packed_panels(const Tensor& w, const uint16_t* xb, const float* xr, int64_t T,
                              int64_t p0, int64_t p1, float* y) {
  const int64_t out = w.shape[0], K = w.shape[1], nb = K / kQuantBlock;
  const int64_t pbytes = panel_bytes(w.dtype, K);
  const bool plain = w.dtype == DType::BF16;
  thread_local std::vector<uint32_t> pairs;
  thread_local std::vector<float> scales;
  if (T >= kGemmMinTokens && !plain) {
    pairs.resize(static_cast<size_t>(K / 2 * kPanelRows));
    scales.resize(static_cast<size_t>(nb * kPanelRows));
  }
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t o0 = p * kPanelRows;
    const uint8_t* panel = w.data + p * pbytes;
    __mmask16 m0, m1;
    panel_masks(out, o0, m0, m1);
    if (T < kGemmMinTokens) {
      token_tiles4(T, [&]<int TT>(int64_t t) {
        float* yt = y + t * out + o0;
        if (plain)
          decode_bf16<TT>(reinterpret_cast<const uint32_t*>(panel), K / 2, xb + t * K, K, yt, out,
                          m0, m1);
        else if (w.dtype == DType::Q8_0)
          decode_blocks_f32<DType::Q8_0, TT>(panel, nb, xr + t * K, K, yt, out, m0, m1);
        else
          decode_blocks_f32<DType::Q4_0, TT>(panel, nb, xr + t * K, K, yt, out, m0, m1);
      });
      continue;
    }
    if (!plain) expand_blocks(w.dtype, panel, nb, pairs.data(), scales.data());
    const int tile = plain ? kTilePlain : kTileBlocks;
    for (int64_t t = 0; t < T; t += tile) {
      const int n = static_cast<int>(std::min<int64_t>(tile, T - t));
      const uint16_t* xt = xb + t * K;
      float* yt = y + t * out + o0;
      if (plain)
        dispatch_tt<kTilePlain>(n, [&]<int TT>() {
          micro_plain<TT>(xt, K, reinterpret_cast<const uint32_t*>(panel), K / 2, yt, out, m0, m1);
        });
      else
        dispatch_tt<kTileBlocks>(n, [&]<int TT>() {
          micro_blocks<TT>(xt, K, pairs.data(), scales.data(), nb, yt, out, m0, m1);
        });
    }
  }
}

// The activations of a packed linear at this level: X rounded to bf16 (and, for block weights
// in decode, widened back to float32 for the FMA kernels).
struct PanelAct {
  std::vector<uint16_t> xb;
  std::vector<float> xr;
};

void run_packed(const PanelLinear& l, int64_t p0, int64_t p1) {
  const auto& a = *static_cast<const PanelAct*>(l.act);
  packed_panels(*l.w, a.xb.data(), a.xr.data(), l.T, p0, p1, l.y);
}

}  // namespace

QRWKV_BF16 double probe(int64_t iters) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5f), _mm512_set1_ps(0.25f));
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, a);
  __m512 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return 2.0 * 12 * 32 * static_cast<double>(iters);
}

void prepare_panels(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y,
                    int slot, PanelLinear& l) {
  thread_local PanelAct acts[kPanelSlots];
  PanelAct& a = acts[slot];
  const int64_t K = w.shape[1];  // a multiple of 32 (packable)
  a.xb.resize(static_cast<size_t>(T * K));
  const bool widen = T < kGemmMinTokens && w.dtype != DType::BF16;
  if (widen) a.xr.resize(static_cast<size_t>(T * K));
  uint16_t* xbp = a.xb.data();
  float* xrp = a.xr.data();
  auto round = [&](int64_t t0, int64_t t1, int) {
    round_rows(x, K, K, t0, t1, xbp);
    if (widen)
      for (int64_t i = t0 * K; i < t1 * K; ++i) {
        const uint32_t bits = static_cast<uint32_t>(xbp[i]) << 16;
        std::memcpy(xrp + i, &bits, 4);
      }
  };
  if (T < kGemmMinTokens)
    round(0, T, 0);
  else
    pool.parallel_for(T, 1, round);
  l = PanelLinear{&w, T, y, &a, run_packed};
}

void linear(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y) {
  if (w.dtype != DType::BF16 && w.dtype != DType::Q8_0 && w.dtype != DType::Q4_0)
    fail(w.name, std::string("linear_bf16: unsupported dtype ") + dtype_name(w.dtype));
  const int64_t out = w.shape[0], K = w.shape[1], Kp = (K + 31) / 32 * 32;
  if (w.layout == Layout::Panel32) {
    PanelLinear l;
    prepare_panels(pool, x, T, w, y, 0, l);
    run_panels(pool, panel_count(out), T, [&](int64_t p0, int64_t p1, int) { l.run(l, p0, p1); });
    return;
  }
  thread_local std::vector<uint16_t> xb;
  thread_local std::vector<float> xr;
  xb.resize(static_cast<size_t>(T * Kp));
  uint16_t* xbp = xb.data();
  const bool rowdot = T < kGemmMinTokens;
  const bool widen = rowdot && w.dtype != DType::BF16;
  if (widen) xr.resize(static_cast<size_t>(T * K));
  float* xrp = xr.data();
  pool.parallel_for(T, 1, [&](int64_t t0, int64_t t1, int) {
    round_rows(x, K, Kp, t0, t1, xbp);
    if (widen)
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t i = 0; i < K; ++i) {
          const uint32_t bits = static_cast<uint32_t>(xbp[t * Kp + i]) << 16;
          std::memcpy(xrp + t * K + i, &bits, 4);
        }
  });
  if (rowdot) {
    pool.parallel_for(out, 16, [&](int64_t r0, int64_t r1, int) {
      // Block formats: the float32 row-dot kernels of the AVX-512 level on the rounded
      // activations.
      if (widen) {
        avx512::rowdot(xrp, T, w, r0, r1, y);
        return;
      }
      int64_t o = r0;
      for (; o + 4 <= r1; o += 4) rowdot_rows<4>(w, xbp, Kp, T, o, y, out);
      for (; o < r1; ++o) rowdot_rows<1>(w, xbp, Kp, T, o, y, out);
    });
  } else {
    const int64_t panels = (out + kPanelRows - 1) / kPanelRows;
    pool.parallel_for(panels, 1,
                      [&](int64_t p0, int64_t p1, int) { gemm_panels(w, xbp, Kp, T, p0, p1, y); });
  }
}

}  // namespace qrwkv::cpu::avx512bf16
