// The packed float32 GEMM of the AVX-512 level: Y = X Wᵀ (or Y = X M for a matrix stored
// transposed) for every weight dtype (F32, BF16, F16, Q8_0, Q4_0).
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
// Few tokens go to the row-dot kernels instead (kernels_generic.inl).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cpu/kernels.h"
#include "backend/cpu/vec_avx512.h"
#include "io/error.h"

namespace qrwkv::cpu::avx512 {

using V = VecAvx512;
#define QRWKV_TARGET QRWKV_TARGET_AVX512
#include "ops/block_decode.inl"

namespace {

constexpr int kTile = 64;      // tokens per X tile (4 vectors)
constexpr int kGroupRows = 6;  // output rows per micro-kernel call

// ---- packed GEMM --------------------------------------------------------------------------

// XT tile `tile` ([K][64]) from X rows 64·tile .. (rows ldx floats apart; tokens past T are
// zero).
QRWKV_TARGET void transpose_tile(const float* x, int64_t T, int64_t K, int64_t ldx, int64_t tile,
                                 float* xt) {
  const __m512i idx =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(static_cast<int>(ldx)));
  for (int v = 0; v < kTile / 16; ++v) {
    const int64_t t0 = tile * kTile + v * 16;
    const int64_t n = std::clamp<int64_t>(T - t0, 0, 16);
    const __mmask16 m = n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1);
    const float* src = x + std::min(t0, T - 1) * ldx;
    for (int64_t k = 0; k < K; ++k) {
      const __m512 g = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, src + k, 4);
      _mm512_storeu_ps(xt + k * kTile + v * 16, g);
    }
  }
}

// acc[r][·] = YT[r][·] (+)= Σ_k W[r][k] · XT[k][·] over one chunk of k, for the 6 rows of a
// packed group (w[k·6 + r]); YT rows are 64 floats.
template <int NV>
QRWKV_TARGET __attribute__((noinline)) void micro(const float* xt, const float* w, int64_t kn,
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

QRWKV_TARGET void micro_nv(int nv, const float* xt, const float* w, int64_t kn, float* yt,
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
QRWKV_TARGET inline void transpose16(__m512 r[16]) {
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
QRWKV_TARGET inline __m512 widen16(DType dt, const uint8_t* row, int64_t K, int64_t k) {
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
      __m512 wv[2];
      const uint8_t* blk = row + k / 32 * tensor_bytes(dt, 32);
      if (dt == DType::Q8_0)
        dequant_block<DType::Q8_0>(blk, wv);
      else
        dequant_block<DType::Q4_0>(blk, wv);
      return wv[k % 32 / 16];
    }
  }
}

// Rows [o, o + n) (n ≤ 6) of W widened and interleaved as dst[k·6 + r]; missing rows are zero.
// Sixteen k at a time: the rows are loaded as the first 6 rows of a 16 × 16 block, transposed,
// and each k's 6 values written with one masked store.
QRWKV_TARGET void pack_group(const Tensor& w, int64_t o, int64_t n, float* dst) {
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
QRWKV_TARGET void pack_group_t(const Tensor& m, int64_t o, int64_t n, float* dst) {
  const int64_t K = m.shape[0], out = m.shape[1], rb = tensor_bytes(m.dtype, out);
  const __mmask16 keep = __mmask16((1u << n) - 1);
  for (int64_t k = 0; k < K; ++k)
    _mm512_mask_storeu_ps(dst + k * kGroupRows, __mmask16((1u << kGroupRows) - 1),
                          _mm512_maskz_mov_ps(keep, widen16(m.dtype, m.data + k * rb, out, o)));
}

QRWKV_TARGET void gemm_rows(const Tensor& w, bool transposed, const float* xt, int64_t T,
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

}  // namespace

void gemm(ThreadPool& pool, const float* x, int64_t T, int64_t ldx, const Tensor& w,
          bool transposed, float* y) {
  if (transposed && w.dtype != DType::F32 && w.dtype != DType::BF16 && w.dtype != DType::F16)
    fail(w.name, std::string("gemm: transposed ") + dtype_name(w.dtype) + " weights");
  const int64_t out = w.shape[transposed ? 1 : 0], K = w.shape[transposed ? 0 : 1];
  const int64_t ntiles = (T + kTile - 1) / kTile;
  thread_local std::vector<float> xt;
  xt.resize(static_cast<size_t>(ntiles * K * kTile));
  float* xtp = xt.data();
  pool.parallel_for(ntiles, 1, [&](int64_t a, int64_t b, int) {
    for (int64_t tile = a; tile < b; ++tile)
      transpose_tile(x, T, K, ldx, tile, xtp + tile * K * kTile);
  });
  // Whole 6-row groups per thread.
  pool.parallel_for(out, kGroupRows, [&](int64_t r0, int64_t r1, int) {
    gemm_rows(w, transposed, xtp, T, r0, r1, y);
  });
}

}  // namespace qrwkv::cpu::avx512
