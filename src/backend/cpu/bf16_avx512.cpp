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

constexpr int64_t kPanelRows = 32;

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

void linear(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y) {
  if (w.dtype != DType::BF16 && w.dtype != DType::Q8_0 && w.dtype != DType::Q4_0)
    fail(w.name, std::string("linear_bf16: unsupported dtype ") + dtype_name(w.dtype));
  const int64_t out = w.shape[0], K = w.shape[1], Kp = (K + 31) / 32 * 32;
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
