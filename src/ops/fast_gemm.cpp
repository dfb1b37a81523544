// Y = X Wᵀ at the AVX-512 level in float32, for every weight dtype (F32, BF16, F16, Q8_0, Q4_0).
//
// Weights are widened to float32 exactly (bf16 and f16 values are exact in float32, and so is
// d · q for the block formats, see quant.h), so this path computes the reference function up
// to the order of float32 additions.
//
// Many tokens (T ≥ kGemmMinTokens): a packed GEMM. X is transposed once per call into tiles of
// 64 tokens, XT[tile][k][j] = X[64·tile + j][k], so that one vector holds one input feature of
// 16 consecutive tokens. Each thread takes a range of output rows, widens a panel of them to
// float32 (row-major, sized to stay in L2 together with one X tile) and runs the micro-kernel
// over every (6-row group, token tile) pair:
//
//   acc[r][t..t+15] += W[r][k] · XT[k][t..t+15]      (6 rows × 4 vectors = 24 accumulators)
//
// per k: 4 vector loads of X, 6 broadcasts of W, 24 FMAs. The accumulators hold Yᵀ, so they are
// written back with scatters, once per micro-kernel call.
//
// Few tokens: the row-dot kernels of fast_linear.cpp (and here, for the block formats) read W in
// place, 4 rows × up to 4 tokens per block.
#include <immintrin.h>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <cstring>
#include <vector>

#include "io/error.h"
#include "ops/fast.h"
#include "ops/quant.h"

namespace qrwkv::fast {

namespace {

#define QRWKV_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

constexpr int kTile = 64;      // tokens per X tile (4 vectors)
constexpr int kGroupRows = 6;  // output rows per micro-kernel call

// ---- widening weights ---------------------------------------------------------------------

// 32 weights of one quantized block as two float32 vectors (d · q, exact).
QRWKV_AVX512 inline void block_f32(DType dt, const uint8_t* blk, __m512& w0, __m512& w1) {
  uint16_t dh;
  std::memcpy(&dh, blk, 2);
  const __m512 d = _mm512_set1_ps(_cvtsh_ss(dh));
  if (dt == DType::Q8_0) {
    const __m128i* q = reinterpret_cast<const __m128i*>(blk + 2);
    w0 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q))));
    w1 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q + 1))));
  } else {
    const __m512i v =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2)));
    const __m512i eight = _mm512_set1_epi32(8);
    const __m512i lo = _mm512_sub_epi32(_mm512_and_si512(v, _mm512_set1_epi32(15)), eight);
    const __m512i hi = _mm512_sub_epi32(_mm512_srli_epi32(v, 4), eight);
    w0 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(lo));
    w1 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(hi));
  }
}

// ---- packed GEMM --------------------------------------------------------------------------

// XT tile `tile` ([K][64]) from X rows 64·tile .. (tokens past T are zero).
QRWKV_AVX512 void transpose_tile(const float* x, int64_t T, int64_t K, int64_t tile, float* xt) {
  const __m512i idx =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(static_cast<int>(K)));
  for (int v = 0; v < kTile / 16; ++v) {
    const int64_t t0 = tile * kTile + v * 16;
    const int64_t n = std::clamp<int64_t>(T - t0, 0, 16);
    const __mmask16 m = n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
    const float* src = x + std::min(t0, T - 1) * K;
    for (int64_t k = 0; k < K; ++k) {
      const __m512 g = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, src + k, 4);
      _mm512_storeu_ps(xt + k * kTile + v * 16, g);
    }
  }
}

// acc[r][·] = YT[r][·] (+)= Σ_k W[r][k] · XT[k][·] over one chunk of k, for the 6 rows of a
// packed group (w[k·6 + r]); YT rows are 64 floats.
template <int NV>
QRWKV_AVX512 __attribute__((noinline)) void micro(const float* xt, const float* w, int64_t kn,
                                                  float* yt, bool accumulate) {
  constexpr int RT = kGroupRows;
  __m512 acc[RT][NV];
  for (int r = 0; r < RT; ++r)
    for (int v = 0; v < NV; ++v)
      acc[r][v] = accumulate ? _mm512_loadu_ps(yt + r * kTile + 16 * v) : _mm512_setzero_ps();
  for (int64_t k = 0; k < kn; ++k) {
    __m512 xv[NV];
    for (int v = 0; v < NV; ++v) xv[v] = _mm512_loadu_ps(xt + k * kTile + 16 * v);
    for (int r = 0; r < RT; ++r) {
      const __m512 b = _mm512_set1_ps(w[k * RT + r]);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(b, xv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < RT; ++r)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(yt + r * kTile + 16 * v, acc[r][v]);
}

QRWKV_AVX512 void micro_nv(int nv, const float* xt, const float* w, int64_t kn, float* yt,
                           bool accumulate) {
  switch (nv) {
    case 4:
      micro<4>(xt, w, kn, yt, accumulate);
      break;
    case 3:
      micro<3>(xt, w, kn, yt, accumulate);
      break;
    case 2:
      micro<2>(xt, w, kn, yt, accumulate);
      break;
    default:
      micro<1>(xt, w, kn, yt, accumulate);
  }
}

// In-register transpose of a 16 × 16 block: on return r[i] holds what was column i.
QRWKV_AVX512 inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4q + c], c = 0..3: within each 128-bit lane L, column 4L + c of rows 4q .. 4q + 3.
  for (int q = 0; q < 4; ++q) {
    u[4 * q + 0] = _mm512_shuffle_ps(t[4 * q], t[4 * q + 2], 0x44);
    u[4 * q + 1] = _mm512_shuffle_ps(t[4 * q], t[4 * q + 2], 0xee);
    u[4 * q + 2] = _mm512_shuffle_ps(t[4 * q + 1], t[4 * q + 3], 0x44);
    u[4 * q + 3] = _mm512_shuffle_ps(t[4 * q + 1], t[4 * q + 3], 0xee);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
    const __m512 v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xdd);
    const __m512 v2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
    const __m512 v3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xdd);
    r[c] = _mm512_shuffle_f32x4(v0, v2, 0x88);
    r[8 + c] = _mm512_shuffle_f32x4(v0, v2, 0xdd);
    r[4 + c] = _mm512_shuffle_f32x4(v1, v3, 0x88);
    r[12 + c] = _mm512_shuffle_f32x4(v1, v3, 0xdd);
  }
}

// Chunks of k small enough that a chunk of one X tile (kChunk × 64 floats) stays in L1 while
// every row group of the panel passes over it; partial sums wait in a transposed tile YT.
constexpr int64_t kChunk = 128;

// Elements [k, k + 16) of a row of K elements stored as dt, as float32 (lanes past the row's
// end are zero).
QRWKV_AVX512 inline __m512 widen16(DType dt, const uint8_t* row, int64_t K, int64_t k) {
  const __mmask16 m = K - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (K - k)) - 1);
  switch (dt) {
    case DType::F32:
      return _mm512_maskz_loadu_ps(m, row + 4 * k);
    case DType::BF16:
      return _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, row + 2 * k)), 16));
    case DType::F16:
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row + 2 * k));
    default: {
      // Block formats: K is a multiple of 32, so k is at the start or the middle of a block.
      __m512 w0, w1;
      block_f32(dt, row + k / 32 * (dt == DType::Q8_0 ? 34 : 18), w0, w1);
      return k % 32 == 0 ? w0 : w1;
    }
  }
}

// Rows [o, o + n) (n ≤ 6) of W widened and interleaved as dst[k·6 + r]; missing rows are zero.
// Sixteen k at a time: the rows are loaded as the first 6 rows of a 16 × 16 block, transposed,
// and each k's 6 values written with one masked store.
QRWKV_AVX512 void pack_group(const Tensor& w, int64_t o, int64_t n, float* dst) {
  const int64_t K = w.shape[1], rb = tensor_bytes(w.dtype, K);
  const uint8_t* rows = w.data + o * rb;
  for (int64_t k = 0; k < K; k += 16) {
    __m512 blk[16];
    for (int r = 0; r < 16; ++r)
      blk[r] = r < n ? widen16(w.dtype, rows + r * rb, K, k) : _mm512_setzero_ps();
    transpose16(blk);
    const int64_t nk = std::min<int64_t>(16, K - k);
    for (int64_t j = 0; j < nk; ++j)
      _mm512_mask_storeu_ps(dst + (k + j) * kGroupRows, __mmask16((1u << kGroupRows) - 1), blk[j]);
  }
}

// The same for a matrix stored transposed, M [K, out] (M[k][o] = W[o][k]): each k's 6 values
// are consecutive in M already.
QRWKV_AVX512 void pack_group_t(const Tensor& m, int64_t o, int64_t n, float* dst) {
  const int64_t K = m.shape[0], out = m.shape[1], rb = tensor_bytes(m.dtype, out);
  const __mmask16 keep = __mmask16((1u << n) - 1);
  for (int64_t k = 0; k < K; ++k)
    _mm512_mask_storeu_ps(dst + k * kGroupRows, __mmask16((1u << kGroupRows) - 1),
                          _mm512_maskz_mov_ps(keep, widen16(m.dtype, m.data + k * rb, out, o)));
}

QRWKV_AVX512 void gemm_rows(const Tensor& w, bool transposed, const float* xt, int64_t T,
                            int64_t r0, int64_t r1, float* y) {
  const int64_t out = w.shape[transposed ? 1 : 0], K = w.shape[transposed ? 0 : 1];
  const int64_t ntiles = (T + kTile - 1) / kTile;
  // A panel of widened rows stays in L2 (about 512 KiB).
  const int64_t panel_rows = std::clamp<int64_t>((512 * 1024 / (K * 4)) / kGroupRows * kGroupRows,
                                                 kGroupRows, 16 * kGroupRows);
  thread_local std::vector<float> panel, ytile;
  panel.resize(static_cast<size_t>(panel_rows * K));
  // Rounded up to whole 16-row blocks for the transposing write-back.
  ytile.resize(static_cast<size_t>((panel_rows + 15) / 16 * 16 * kTile));
  for (int64_t p0 = r0; p0 < r1; p0 += panel_rows) {
    const int64_t np = std::min(panel_rows, r1 - p0);
    for (int64_t g = 0; g < np; g += kGroupRows) {
      const int64_t n = std::min<int64_t>(kGroupRows, np - g);
      if (transposed)
        pack_group_t(w, p0 + g, n, panel.data() + g * K);
      else
        pack_group(w, p0 + g, n, panel.data() + g * K);
    }
    for (int64_t tile = 0; tile < ntiles; ++tile) {
      const int64_t t0 = tile * kTile, nt = std::min<int64_t>(kTile, T - t0);
      const int nv = static_cast<int>((nt + 15) / 16);
      const float* xtile = xt + tile * K * kTile;
      for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
        const int64_t kn = std::min(kChunk, K - k0);
        for (int64_t g = 0; g < np; g += kGroupRows)
          micro_nv(nv, xtile + k0 * kTile, panel.data() + g * K + k0 * kGroupRows, kn,
                   ytile.data() + g * kTile, k0 > 0);
      }
      // YT [rows][tokens] → Y [tokens][out], in 16 × 16 blocks.
      for (int64_t rb = 0; rb < np; rb += 16) {
        const int64_t nr = std::min<int64_t>(16, np - rb);
        const __mmask16 m = nr >= 16 ? __mmask16(0xffff) : __mmask16((1u << nr) - 1);
        for (int64_t jb = 0; jb < nt; jb += 16) {
          __m512 blk[16];
          for (int i = 0; i < 16; ++i)
            blk[i] = _mm512_loadu_ps(ytile.data() + (rb + i) * kTile + jb);
          transpose16(blk);
          for (int64_t j = 0; j < std::min<int64_t>(16, nt - jb); ++j)
            _mm512_mask_storeu_ps(y + (t0 + jb + j) * out + p0 + rb, m, blk[j]);
        }
      }
    }
  }
}

// ---- row-dot kernels for the block formats (few tokens) -----------------------------------

template <int RT, int TT>
QRWKV_AVX512 void rowdot_blocks(DType dt, const float* x, int64_t K, const uint8_t* w,
                                int64_t row_bytes, float* y, int64_t ys) {
  const int64_t bb = tensor_bytes(dt, kQuantBlock), nb = K / kQuantBlock;
  __m512 acc[RT][TT];
  for (int r = 0; r < RT; ++r)
    for (int t = 0; t < TT; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    __m512 x0[TT], x1[TT];
    for (int t = 0; t < TT; ++t) {
      x0[t] = _mm512_loadu_ps(x + t * K + b * 32);
      x1[t] = _mm512_loadu_ps(x + t * K + b * 32 + 16);
    }
    for (int r = 0; r < RT; ++r) {
      const uint8_t* blk = w + r * row_bytes + b * bb;
      // The next group of rows follows these in memory: fetch its bytes at the same position
      // now, so that decode streams W at memory speed rather than at the speed of demand misses.
      _mm_prefetch(reinterpret_cast<const char*>(blk + RT * row_bytes), _MM_HINT_T0);
      __m512 w0, w1;
      block_f32(dt, blk, w0, w1);
      for (int t = 0; t < TT; ++t) {
        acc[r][t] = _mm512_fmadd_ps(w0, x0[t], acc[r][t]);
        acc[r][t] = _mm512_fmadd_ps(w1, x1[t], acc[r][t]);
      }
    }
  }
  for (int r = 0; r < RT; ++r)
    for (int t = 0; t < TT; ++t) y[t * ys + r] = _mm512_reduce_add_ps(acc[r][t]);
}

template <int RT>
QRWKV_AVX512 void rowdot_tokens(const Tensor& w, const float* x, int64_t T, int64_t o, float* y) {
  const int64_t out = w.shape[0], K = w.shape[1], rb = tensor_bytes(w.dtype, K);
  const uint8_t* wr = w.data + o * rb;
  int64_t t = 0;
  for (; t + 4 <= T; t += 4)
    rowdot_blocks<RT, 4>(w.dtype, x + t * K, K, wr, rb, y + t * out + o, out);
  switch (T - t) {
    case 3:
      rowdot_blocks<RT, 3>(w.dtype, x + t * K, K, wr, rb, y + t * out + o, out);
      break;
    case 2:
      rowdot_blocks<RT, 2>(w.dtype, x + t * K, K, wr, rb, y + t * out + o, out);
      break;
    case 1:
      rowdot_blocks<RT, 1>(w.dtype, x + t * K, K, wr, rb, y + t * out + o, out);
      break;
    default:
      break;
  }
}

}  // namespace

void gemm_f32_avx512(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y,
                     bool transposed) {
  if (transposed && w.dtype != DType::F32 && w.dtype != DType::BF16 && w.dtype != DType::F16)
    fail(w.name, std::string("gemm_f32_avx512: transposed ") + dtype_name(w.dtype) + " weights");
  const int64_t out = w.shape[transposed ? 1 : 0], K = w.shape[transposed ? 0 : 1];
  const int64_t ntiles = (T + kTile - 1) / kTile;
  thread_local std::vector<float> xt;
  xt.resize(static_cast<size_t>(ntiles * K * kTile));
  float* xtp = xt.data();
  pool.parallel_for(ntiles, 1, [&](int64_t a, int64_t b, int) {
    for (int64_t tile = a; tile < b; ++tile) transpose_tile(x, T, K, tile, xtp + tile * K * kTile);
  });
  // Whole 6-row groups per thread.
  pool.parallel_for(out, kGroupRows, [&](int64_t r0, int64_t r1, int) {
    gemm_rows(w, transposed, xtp, T, r0, r1, y);
  });
}

void rowdot_blocks_avx512(const float* x, int64_t T, const Tensor& w, int64_t r0, int64_t r1,
                          float* y) {
  int64_t o = r0;
  for (; o + 4 <= r1; o += 4) rowdot_tokens<4>(w, x, T, o, y);
  for (; o < r1; ++o) rowdot_tokens<1>(w, x, T, o, y);
}

}  // namespace qrwkv::fast
