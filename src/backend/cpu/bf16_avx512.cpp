// Y = X Wᵀ for BF16 weights with AVX512-BF16 dot products (vdpbf16ps: each float32 lane adds the
// products of a pair of bf16 values).
//
// Precision contract of this path: activations are rounded to bfloat16 once per call, weights
// are used exactly as stored, and every sum is accumulated in float32. Decode (few tokens) and
// prefill (many tokens) use different kernels that compute this same function, so a prompt
// evaluated in one call agrees with the same prompt evaluated token by token to float32
// rounding. (Block-quantized weights at this level: int16_avx512.cpp.)
//
// The weights are read in "pair" layout, P[k/2][r] = (W[r][k], W[r][k+1]) as two bf16 in 32
// bits, in panels of 32 rows, so that one vector holds one k-pair of 16 consecutive rows: the
// Panel32 layout (ops/panel.h) that prepare packs once at load. The kernels keep TT tokens × 32
// rows of float32 accumulators in registers and, per k-pair, load two panel vectors and
// broadcast one 32-bit activation pair per token:
//
//   acc[t][r] += X[t][k] · W[r][k] + X[t][k+1] · W[r][k+1]      (one vdpbf16ps per 16 rows)
//
// Decode (T < kGemmMinTokens) streams each panel once for up to 4 tokens at a time; prefill runs
// tiles of 12 tokens over each panel, which stays in L2.
//
// Row-major weights (not packed by prepare: rows of a length that is not a multiple of 32, or a
// caller's own tensors) go through "row-dot" kernels for few tokens, blocks of 4 rows × up to 4
// tokens sharing each load, and for many tokens through panels packed per call.
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

namespace qrwkv::cpu::avx512bf16 {

#define QRWKV_BF16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")))

namespace {

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

// ---- the pair layout ----------------------------------------------------------------------

// Rows [o0, o0 + 32) of a row-major BF16 W in pair layout, K rounded up to even (missing rows
// and the odd column are zero): the panels of weights prepare did not pack.
QRWKV_BF16 void pack_panel(const Tensor& w, int64_t o0, uint32_t* panel) {
  const int64_t out = w.shape[0], K = w.shape[1], nkp = (K + 1) / 2;
  const int64_t rb = tensor_bytes(w.dtype, K);
  for (int64_t r = 0; r < kPanelRows; ++r) {
    const int64_t o = o0 + r;
    if (o >= out) {
      for (int64_t kp = 0; kp < nkp; ++kp) panel[kp * kPanelRows + r] = 0;
      continue;
    }
    const auto* h = reinterpret_cast<const uint16_t*>(w.data + o * rb);
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
  }
}

QRWKV_BF16 inline __m512bh bcast_pair(const uint16_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return (__m512bh)_mm512_set1_epi32(v);
}

// ---- prefill: tiles of tokens over a panel ------------------------------------------------

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

// The masks of a panel's two 16-row halves, for a panel starting at row o0 of out.
inline void panel_masks(int64_t out, int64_t o0, __mmask16& m0, __mmask16& m1) {
  const int64_t rows = std::min(kPanelRows, out - o0);
  m0 = rows >= 16 ? __mmask16(0xffff) : __mmask16((1u << rows) - 1);
  m1 = rows >= 32 ? __mmask16(0xffff) : (rows > 16 ? __mmask16((1u << (rows - 16)) - 1) : 0);
}

// All T tokens (bf16 rows xs apart) against one panel in pair layout of nkp k-pairs.
QRWKV_BF16 void gemm_panel(const uint16_t* xb, int64_t xs, int64_t T, const uint32_t* panel,
                           int64_t nkp, float* y, int64_t ys, __mmask16 m0, __mmask16 m1) {
  for (int64_t t = 0; t < T; t += kTilePlain) {
    const int n = static_cast<int>(std::min<int64_t>(kTilePlain, T - t));
    dispatch_tt<kTilePlain>(
        n, [&]<int TT>() { micro_plain<TT>(xb + t * xs, xs, panel, nkp, y + t * ys, ys, m0, m1); });
  }
}

// Row-major W, many tokens: each panel packed once per call.
QRWKV_BF16 void gemm_panels(const Tensor& w, const uint16_t* xb, int64_t Kp, int64_t T, int64_t p0,
                            int64_t p1, float* y) {
  const int64_t out = w.shape[0], nkp = (w.shape[1] + 1) / 2;
  thread_local std::vector<uint32_t> panel;
  panel.resize(static_cast<size_t>(nkp * kPanelRows));
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t o0 = p * kPanelRows;
    __mmask16 m0, m1;
    panel_masks(out, o0, m0, m1);
    pack_panel(w, o0, panel.data());
    gemm_panel(xb, Kp, T, panel.data(), nkp, y + o0, out, m0, m1);
  }
}

// ---- decode over packed panels -------------------------------------------------------------

// TT tokens × 32 rows. Two k-pairs per step into separate accumulators (a single chain of
// vdpbf16ps would wait on its latency).
template <int TT>
QRWKV_BF16 void decode_bf16(const uint32_t* p, int64_t nkp, const uint16_t* xb, int64_t xs,
                            float* y, int64_t ys, __mmask16 m0, __mmask16 m1) {
  __m512 a0[TT], a1[TT], b0[TT], b1[TT];
  for (int t = 0; t < TT; ++t) a0[t] = a1[t] = b0[t] = b1[t] = _mm512_setzero_ps();
  const int64_t far = panel_prefetch_bytes();
  for (int64_t kp = 0; kp < nkp; kp += 2) {
    const uint32_t* q = p + kp * kPanelRows;
    if (far != 0)
      for (int l = 0; l < 4; ++l)
        _mm_prefetch(reinterpret_cast<const char*>(q) + far + 64 * l, _MM_HINT_T1);
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

// Panels [p0, p1) of a packed W against all T tokens (bf16 rows K apart).
QRWKV_BF16 void packed_panels(const Tensor& w, const uint16_t* xb, int64_t T, int64_t p0,
                              int64_t p1, float* y) {
  const int64_t out = w.shape[0], K = w.shape[1], pbytes = panel_bytes(DType::BF16, K);
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t o0 = p * kPanelRows;
    const auto* panel = reinterpret_cast<const uint32_t*>(w.data + p * pbytes);
    __mmask16 m0, m1;
    panel_masks(out, o0, m0, m1);
    if (T >= kGemmMinTokens) {
      gemm_panel(xb, K, T, panel, K / 2, y + o0, out, m0, m1);
      continue;
    }
    int64_t t = 0;
    auto run = [&]<int TT>() {
      decode_bf16<TT>(panel, K / 2, xb + t * K, K, y + t * out + o0, out, m0, m1);
    };
    for (; t + 4 <= T; t += 4) run.template operator()<4>();
    if (T > t) dispatch_tt<3>(static_cast<int>(T - t), run);
  }
}

// ---- Y = X M for a packed LoRA matrix, float32 activations -------------------------------------
//
// prepare holds a BF16 LoRA matrix M [in, out] as the packed panels of Mᵀ. The time mix's
// decay and token-shift paths stay exact: the bf16 pairs are widened (a bf16 is the top half of
// its float32) and multiplied with the float32 activations by FMAs, even and odd k apart.
template <int TT>
QRWKV_BF16 void exact_panel(const uint32_t* p, int64_t nkp, const float* x, int64_t xs, float* y,
                            int64_t ys, __mmask16 m0, __mmask16 m1) {
  __m512 a0[TT], a1[TT], b0[TT], b1[TT];
  for (int t = 0; t < TT; ++t) a0[t] = a1[t] = b0[t] = b1[t] = _mm512_setzero_ps();
  const __m512i hi = _mm512_set1_epi32(-65536);
  for (int64_t kp = 0; kp < nkp; ++kp) {
    const __m512i w0 = _mm512_load_si512(p + kp * kPanelRows);
    const __m512i w1 = _mm512_load_si512(p + kp * kPanelRows + 16);
    const __m512 e0 = _mm512_castsi512_ps(_mm512_slli_epi32(w0, 16));
    const __m512 o0 = _mm512_castsi512_ps(_mm512_and_si512(w0, hi));
    const __m512 e1 = _mm512_castsi512_ps(_mm512_slli_epi32(w1, 16));
    const __m512 o1 = _mm512_castsi512_ps(_mm512_and_si512(w1, hi));
    for (int t = 0; t < TT; ++t) {
      const __m512 xe = _mm512_set1_ps(x[t * xs + 2 * kp]);
      const __m512 xo = _mm512_set1_ps(x[t * xs + 2 * kp + 1]);
      a0[t] = _mm512_fmadd_ps(e0, xe, a0[t]);
      b0[t] = _mm512_fmadd_ps(o0, xo, b0[t]);
      a1[t] = _mm512_fmadd_ps(e1, xe, a1[t]);
      b1[t] = _mm512_fmadd_ps(o1, xo, b1[t]);
    }
  }
  for (int t = 0; t < TT; ++t) {
    _mm512_mask_storeu_ps(y + t * ys, m0, _mm512_add_ps(a0[t], b0[t]));
    _mm512_mask_storeu_ps(y + t * ys + 16, m1, _mm512_add_ps(a1[t], b1[t]));
  }
}

QRWKV_BF16 void exact_panels(const Tensor& m, const float* x, int64_t T, int64_t p0, int64_t p1,
                             float* y) {
  const int64_t out = m.shape[0], K = m.shape[1], pbytes = panel_bytes(DType::BF16, K);
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t o0 = p * kPanelRows;
    const auto* panel = reinterpret_cast<const uint32_t*>(m.data + p * pbytes);
    __mmask16 m0, m1;
    panel_masks(out, o0, m0, m1);
    int64_t t = 0;
    auto run = [&]<int TT>() {
      exact_panel<TT>(panel, K / 2, x + t * K, K, y + t * out + o0, out, m0, m1);
    };
    for (; t + 4 <= T; t += 4) run.template operator()<4>();
    if (T > t) dispatch_tt<3>(static_cast<int>(T - t), run);
  }
}

// The activations of a packed linear: X rounded to bf16.
struct PanelAct {
  std::vector<uint16_t> xb;
};

void run_packed(const PanelLinear& l, int64_t p0, int64_t p1) {
  packed_panels(*l.w, static_cast<const PanelAct*>(l.act)->xb.data(), l.T, p0, p1, l.y);
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
  if (w.dtype != DType::BF16 || w.layout != Layout::Panel32)
    fail(w.name,
         std::string("bf16 kernels: not a packed BF16 weight (") + dtype_name(w.dtype) + ")");
  thread_local PanelAct acts[kPanelSlots];
  PanelAct& a = acts[slot];
  const int64_t K = w.shape[1];  // a multiple of 32 (packable)
  a.xb.resize(static_cast<size_t>(T * K));
  uint16_t* xbp = a.xb.data();
  if (T < kGemmMinTokens)
    round_rows(x, K, K, 0, T, xbp);
  else
    pool.parallel_for(T, 1, [&](int64_t t0, int64_t t1, int) { round_rows(x, K, K, t0, t1, xbp); });
  l = PanelLinear{&w, T, y, &a, run_packed};
}

void matmul_packed(ThreadPool& pool, const float* x, int64_t T, int64_t ldx, const Tensor& m,
                   float* y) {
  if (m.dtype != DType::BF16 || m.layout != Layout::Panel32)
    fail(m.name, "matmul_packed: not a packed BF16 matrix");
  const int64_t K = m.shape[1];
  thread_local std::vector<float> xc;  // the rows of X, contiguous
  xc.resize(static_cast<size_t>(T * K));
  for (int64_t t = 0; t < T; ++t)
    std::memcpy(xc.data() + t * K, x + t * ldx, static_cast<size_t>(K) * sizeof(float));
  const float* xp = xc.data();
  run_panels(pool, panel_count(m.shape[0]), T, tensor_bytes(m),
             [&](int64_t p0, int64_t p1, int) { exact_panels(m, xp, T, p0, p1, y); });
}

void linear(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y) {
  if (w.dtype != DType::BF16)
    fail(w.name, std::string("linear_bf16: unsupported dtype ") + dtype_name(w.dtype));
  const int64_t out = w.shape[0], K = w.shape[1], Kp = (K + 31) / 32 * 32;
  if (w.layout == Layout::Panel32) {
    PanelLinear l;
    prepare_panels(pool, x, T, w, y, 0, l);
    run_panels(pool, panel_count(out), T, tensor_bytes(w),
               [&](int64_t p0, int64_t p1, int) { l.run(l, p0, p1); });
    return;
  }
  thread_local std::vector<uint16_t> xb;
  xb.resize(static_cast<size_t>(T * Kp));
  uint16_t* xbp = xb.data();
  pool.parallel_for(T, 1, [&](int64_t t0, int64_t t1, int) { round_rows(x, K, Kp, t0, t1, xbp); });
  if (T < kGemmMinTokens) {
    pool.parallel_for(out, 16, [&](int64_t r0, int64_t r1, int) {
      int64_t o = r0;
      for (; o + 4 <= r1; o += 4) rowdot_rows<4>(w, xbp, Kp, T, o, y, out);
      for (; o < r1; ++o) rowdot_rows<1>(w, xbp, Kp, T, o, y, out);
    });
  } else {
    pool.parallel_for(panel_count(out), 1,
                      [&](int64_t p0, int64_t p1, int) { gemm_panels(w, xbp, Kp, T, p0, p1, y); });
  }
}

}  // namespace qrwkv::cpu::avx512bf16
