// Prefill on Intel AMX tiles (Sapphire Rapids and later): the AMX level's Y = X Wᵀ for packed
// weights of many tokens. The level computes the function of AVX512BF16 (ActivationRounding::
// Int16): BF16 weights with bf16-rounded activations, Q8_0 / Q4_0 weights with activations
// quantized to int16 per block; few tokens (decode) go to that level's kernels, whose work is
// bound by memory, not by multiply-adds.
//
// A tile is up to 16 rows of 64 bytes; eight of them (tmm0-7), shaped by a configuration that
// each thread loads before its first tile instruction.
//
// BF16: tdpbf16ps C[m][n] += Σ_k A[m][2k]·B[k][2n] + A[m][2k+1]·B[k][2n+1] for A a tile of 16
// tokens × 32 bf16 activations (rows K·2 bytes apart, straight from the rounded X) and B 16
// k-pairs × 16 rows, which is 16 consecutive words of a Panel32 BF16 panel (rows 128 bytes
// apart: ops/panel.h). Each step of 32 k loads 2 A and 2 B tiles and issues 4 products into
// C tiles of 32 tokens × 32 rows (tmm0-3: tokens 0-15 / 16-31 × rows 0-15 / 16-31), which are
// stored straight into Y.
//
// Q8_0 / Q4_0: the int16 activations of a block of 32 are split exactly into bytes, q = 256·h + l
// (h = q >> 8 signed, l = q & 255 unsigned), and the block's integer dot product is
//   Σ q_w·q_x = 256 · Σ q_w·h + Σ q_w·l       (tdpbssd, then tdpbusd: exact in int32)
// with A tiles of 16 tokens × 32 bytes and B one block's 8 quads × 16 rows of the panel (Q4_0
// panels are first widened to signed bytes, once per panel and call). Each block's int32 tiles
// go to memory and are scaled there by d_w · d_x and added in float32, in block order, as the
// reference does.
//
// The kernels are written once over an "ops" type: Hw issues the tile instructions, Emulated
// carries them out in plain C++ after the Intel SDM's definitions. The emulated kernels run on
// any machine, so that the tests check the tiling, the layouts and the scaling everywhere; on a
// machine with AMX the tests run the hardware kernels too.
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

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
#include "ops/tensor.h"

namespace qrwkv::cpu::amx {

#define QRWKV_AMX                                                                                 \
  __attribute__((target(                                                                          \
      "amx-tile,amx-bf16,amx-int8,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni,avx2," \
      "fma,f16c")))
#define QRWKV_AVX                                                             \
  __attribute__((                                                             \
      target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni,avx2," \
             "fma,f16c")))

bool request_permission() {
  // Linux hands out the tile data state only on request (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
  // without it the first tile instruction faults.
  constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
}

namespace {

// The 64-byte operand of LDTILECFG (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG reads 64 bytes");

// Tiles 0-3 accumulate, 4-5 hold activations, 6-7 weights, in both kernels.
TileConfig bf16_config() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) {
    c.rows[t] = 16;
    c.colsb[t] = 64;
  }
  return c;
}
TileConfig int8_config() {
  TileConfig c;
  for (int t = 0; t < 4; ++t) {
    c.rows[t] = 16;
    c.colsb[t] = 64;  // 16 × 16 int32
  }
  for (int t = 4; t < 6; ++t) {
    c.rows[t] = 16;
    c.colsb[t] = 32;  // 16 tokens × one block of 32 bytes
  }
  for (int t = 6; t < 8; ++t) {
    c.rows[t] = 8;
    c.colsb[t] = 64;  // 8 quads × 16 rows
  }
  return c;
}

// ---- the hardware tile instructions ---------------------------------------------------------
//
// The intrinsics are inline assembly that names its tile by a literal number and tells the
// compiler nothing about memory: the barriers make sure that what a tile load reads has been
// stored, and that what a tile store wrote is read again.
#define QRWKV_BARRIER() __asm__ volatile("" ::: "memory")
#define QRWKV_TILE_CASES(F) F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7)

struct Hw {
  QRWKV_AMX static void config(const TileConfig& c) { _tile_loadconfig(&c); }
  QRWKV_AMX static void release() { _tile_release(); }
  template <int T>
  QRWKV_AMX static void zero() {
#define QRWKV_Z(n) \
  if constexpr (T == n) _tile_zero(n);
    QRWKV_TILE_CASES(QRWKV_Z)
#undef QRWKV_Z
  }
  template <int T>
  QRWKV_AMX static void load(const void* p, int64_t stride) {
    QRWKV_BARRIER();
#define QRWKV_L(n) \
  if constexpr (T == n) _tile_loadd(n, p, stride);
    QRWKV_TILE_CASES(QRWKV_L)
#undef QRWKV_L
  }
  template <int T>
  QRWKV_AMX static void store(void* p, int64_t stride) {
#define QRWKV_S(n) \
  if constexpr (T == n) _tile_stored(n, p, stride);
    QRWKV_TILE_CASES(QRWKV_S)
#undef QRWKV_S
    QRWKV_BARRIER();
  }
  // C += A·B for the pairings the kernels use (C 0-3, A 4-5, B 6-7).
#define QRWKV_DP_CASES(F) \
  F(0, 4, 6) F(1, 4, 7) F(2, 5, 6) F(3, 5, 7) F(0, 5, 6) F(1, 5, 7) F(2, 4, 6) F(3, 4, 7)
  template <int C, int A, int B>
  QRWKV_AMX static void dpbf16() {
#define QRWKV_D(c, a, b) \
  if constexpr (C == c && A == a && B == b) _tile_dpbf16ps(c, a, b);
    QRWKV_DP_CASES(QRWKV_D)
#undef QRWKV_D
  }
  template <int C, int A, int B>
  QRWKV_AMX static void dpbssd() {
#define QRWKV_D(c, a, b) \
  if constexpr (C == c && A == a && B == b) _tile_dpbssd(c, a, b);
    QRWKV_DP_CASES(QRWKV_D)
#undef QRWKV_D
  }
  template <int C, int A, int B>
  QRWKV_AMX static void dpbusd() {
#define QRWKV_D(c, a, b) \
  if constexpr (C == c && A == a && B == b) _tile_dpbusd(c, a, b);
    QRWKV_DP_CASES(QRWKV_D)
#undef QRWKV_D
  }
};

// ---- the same instructions in plain C++ (Intel SDM, "TILELOADD", "TDPBF16PS", "TDPB[SU]D") --

struct Emulated {
  struct Tile {
    int rows = 0, colsb = 0;
    uint8_t b[16][64] = {};
  };
  static Tile* tiles() {
    thread_local Tile t[8];
    return t;
  }
  static void config(const TileConfig& c) {
    for (int i = 0; i < 8; ++i) {
      tiles()[i] = Tile{};
      tiles()[i].rows = c.rows[i];
      tiles()[i].colsb = c.colsb[i];
    }
  }
  static void release() {
    for (int i = 0; i < 8; ++i) tiles()[i] = Tile{};
  }
  template <int T>
  static void zero() {
    std::memset(tiles()[T].b, 0, sizeof tiles()[T].b);
  }
  // Rows past the configured ones and bytes past colsb read as zero.
  template <int T>
  static void load(const void* p, int64_t stride) {
    Tile& t = tiles()[T];
    std::memset(t.b, 0, sizeof t.b);
    for (int r = 0; r < t.rows; ++r)
      std::memcpy(t.b[r], static_cast<const uint8_t*>(p) + r * stride,
                  static_cast<size_t>(t.colsb));
  }
  template <int T>
  static void store(void* p, int64_t stride) {
    const Tile& t = tiles()[T];
    for (int r = 0; r < t.rows; ++r)
      std::memcpy(static_cast<uint8_t*>(p) + r * stride, t.b[r], static_cast<size_t>(t.colsb));
  }
  static float f32(const Tile& t, int r, int c) {
    float v;
    std::memcpy(&v, &t.b[r][4 * c], 4);
    return v;
  }
  static float bf(const Tile& t, int r, int e) {
    uint16_t h;
    std::memcpy(&h, &t.b[r][2 * e], 2);
    return bf16_to_f32(h);
  }
  template <int C, int A, int B>
  static void dpbf16() {
    Tile &c = tiles()[C], &a = tiles()[A], &b = tiles()[B];
    for (int m = 0; m < c.rows; ++m)
      for (int n = 0; n < c.colsb / 4; ++n) {
        float acc = f32(c, m, n);
        for (int k = 0; k < a.colsb / 4; ++k) {
          acc += bf(a, m, 2 * k) * bf(b, k, 2 * n);
          acc += bf(a, m, 2 * k + 1) * bf(b, k, 2 * n + 1);
        }
        std::memcpy(&c.b[m][4 * n], &acc, 4);
      }
  }
  template <bool ASigned, int C, int A, int B>
  static void dot_bytes() {
    Tile &c = tiles()[C], &a = tiles()[A], &b = tiles()[B];
    for (int m = 0; m < c.rows; ++m)
      for (int n = 0; n < c.colsb / 4; ++n) {
        int32_t acc;
        std::memcpy(&acc, &c.b[m][4 * n], 4);
        for (int k = 0; k < a.colsb / 4; ++k)
          for (int i = 0; i < 4; ++i) {
            const int32_t av = ASigned ? int32_t{static_cast<int8_t>(a.b[m][4 * k + i])}
                                       : int32_t{a.b[m][4 * k + i]};
            acc += av * static_cast<int8_t>(b.b[k][4 * n + i]);
          }
        std::memcpy(&c.b[m][4 * n], &acc, 4);
      }
  }
  template <int C, int A, int B>
  static void dpbssd() {
    dot_bytes<true, C, A, B>();
  }
  template <int C, int A, int B>
  static void dpbusd() {
    dot_bytes<false, C, A, B>();
  }
};

// ---- BF16 weights ------------------------------------------------------------------------------

// Panels [p0, p1) of a packed BF16 W against T tokens of bf16 activations xb (rows K apart,
// readable up to T rounded up to 32 tokens).
template <class Ops>
QRWKV_AVX void bf16_panels(const Tensor& w, const uint16_t* xb, int64_t T, int64_t p0, int64_t p1,
                           float* y) {
  const int64_t out = w.shape[0], K = w.shape[1], pbytes = panel_bytes(DType::BF16, K);
  const int64_t xs = K * 2;  // bytes between activation rows
  alignas(64) float part[4][16][16];
  Ops::config(bf16_config());
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t o0 = p * kPanelRows, rows = std::min(kPanelRows, out - o0);
    const uint8_t* panel = w.data + p * pbytes;
    for (int64_t t0 = 0; t0 < T; t0 += 32) {
      Ops::template zero<0>();
      Ops::template zero<1>();
      Ops::template zero<2>();
      Ops::template zero<3>();
      const uint16_t* x0 = xb + t0 * K;
      for (int64_t k = 0; k < K; k += 32) {
        Ops::template load<6>(panel + k / 2 * 128, 128);
        Ops::template load<7>(panel + k / 2 * 128 + 64, 128);
        Ops::template load<4>(x0 + k, xs);
        Ops::template load<5>(x0 + 16 * K + k, xs);
        Ops::template dpbf16<0, 4, 6>();
        Ops::template dpbf16<1, 4, 7>();
        Ops::template dpbf16<2, 5, 6>();
        Ops::template dpbf16<3, 5, 7>();
      }
      float* yt = y + t0 * out + o0;
      if (T - t0 >= 32 && rows == 32) {
        Ops::template store<0>(yt, out * 4);
        Ops::template store<1>(yt + 16, out * 4);
        Ops::template store<2>(yt + 16 * out, out * 4);
        Ops::template store<3>(yt + 16 * out + 16, out * 4);
        continue;
      }
      // A partial block: through a buffer, then the valid tokens and rows.
      Ops::template store<0>(part[0], 64);
      Ops::template store<1>(part[1], 64);
      Ops::template store<2>(part[2], 64);
      Ops::template store<3>(part[3], 64);
      for (int64_t t = 0; t < std::min<int64_t>(32, T - t0); ++t)
        for (int64_t r = 0; r < rows; ++r)
          yt[t * out + r] = part[(t >= 16 ? 2 : 0) + (r >= 16 ? 1 : 0)][t % 16][r % 16];
    }
  }
  Ops::release();
}

// ---- Q8_0 / Q4_0 weights with int16 activations
// --------------------------------------------------

// The activations of a block path call: for token t and element k, the bytes of its int16
// integer q = 256·h + l (h signed, l unsigned) at h[t·K + k] and l[t·K + k], natural order,
// rows up to T rounded up to 16 readable; block scales d[t·nb + b].
struct SplitAct {
  const int8_t* h;
  const uint8_t* l;
  const float* d;
  int64_t K, nb;
};

// A Q4_0 panel's blocks with the nibbles widened to signed bytes n − 8, in the quad layout of a
// Q8_0 panel (so the B tiles of both come from the same addresses).
QRWKV_AVX void widen_q4(const uint8_t* p, int64_t nb, uint8_t* q8) {
  const __m512i m = _mm512_set1_epi8(15), eight = _mm512_set1_epi8(8);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* pb = p + b * kQ4PanelBlock;
    uint8_t* qb = q8 + b * kQ8PanelBlock;
    std::memcpy(qb, pb, 64);  // the scales
    for (int j = 0; j < 4; ++j)
      for (int h = 0; h < 2; ++h) {
        const __m512i v = _mm512_load_si512(pb + 64 + 128 * j + 64 * h);
        const __m512i lo = _mm512_sub_epi8(_mm512_and_si512(v, m), eight);
        const __m512i hi = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v, 4), m), eight);
        _mm512_store_si512(qb + 64 + 128 * j + 64 * h, lo);
        _mm512_store_si512(qb + 64 + 128 * (j + 4) + 64 * h, hi);
      }
  }
}

// acc[t][r] += float(256·hi[t][r] + lo[t][r]) · (d_w[r] · d_x[t]) for 16 tokens × 32 rows.
QRWKV_AVX void scale_block(const int32_t (*c)[16][16], const uint8_t* pb, const float* dx,
                           int64_t nb, float (*acc)[32]) {
  const __m512 d0 = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(pb)));
  const __m512 d1 = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(pb + 32)));
  for (int t = 0; t < 16; ++t) {
    const __m512 x = _mm512_set1_ps(dx[t * nb]);
    const __m512i v0 = _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(c[0][t]), 8),
                                        _mm512_load_si512(c[2][t]));
    const __m512i v1 = _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(c[1][t]), 8),
                                        _mm512_load_si512(c[3][t]));
    _mm512_store_ps(acc[t], _mm512_fmadd_ps(_mm512_cvtepi32_ps(v0), _mm512_mul_ps(d0, x),
                                            _mm512_load_ps(acc[t])));
    _mm512_store_ps(acc[t] + 16, _mm512_fmadd_ps(_mm512_cvtepi32_ps(v1), _mm512_mul_ps(d1, x),
                                                 _mm512_load_ps(acc[t] + 16)));
  }
}

template <class Ops>
QRWKV_AVX void block_panels(const Tensor& w, const SplitAct& a, int64_t T, int64_t p0, int64_t p1,
                            float* y) {
  const int64_t out = w.shape[0], pbytes = panel_bytes(w.dtype, a.K);
  const bool q4 = w.dtype == DType::Q4_0;
  alignas(64) int32_t c[4][16][16];
  alignas(64) float acc[16][32];
  thread_local std::shared_ptr<uint8_t> widened;
  thread_local int64_t widened_blocks = 0;
  if (q4 && a.nb > widened_blocks) {
    widened = alloc_weight_bytes(static_cast<size_t>(a.nb * kQ8PanelBlock));
    widened_blocks = a.nb;
  }
  Ops::config(int8_config());
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t o0 = p * kPanelRows, rows = std::min(kPanelRows, out - o0);
    const uint8_t* panel = w.data + p * pbytes;
    if (q4) {
      widen_q4(panel, a.nb, widened.get());
      panel = widened.get();
    }
    for (int64_t t0 = 0; t0 < T; t0 += 16) {
      std::memset(acc, 0, sizeof acc);
      for (int64_t b = 0; b < a.nb; ++b) {
        const uint8_t* pb = panel + b * kQ8PanelBlock;
        const int64_t xo = t0 * a.K + b * kQuantBlock;
        Ops::template zero<0>();
        Ops::template zero<1>();
        Ops::template zero<2>();
        Ops::template zero<3>();
        Ops::template load<4>(a.h + xo, a.K);
        Ops::template load<5>(a.l + xo, a.K);
        Ops::template load<6>(pb + 64, 128);
        Ops::template load<7>(pb + 128, 128);
        Ops::template dpbssd<0, 4, 6>();
        Ops::template dpbssd<1, 4, 7>();
        Ops::template dpbusd<2, 5, 6>();
        Ops::template dpbusd<3, 5, 7>();
        Ops::template store<0>(c[0], 64);
        Ops::template store<1>(c[1], 64);
        Ops::template store<2>(c[2], 64);
        Ops::template store<3>(c[3], 64);
        scale_block(c, pb, a.d + t0 * a.nb + b, a.nb, acc);
      }
      for (int64_t t = 0; t < std::min<int64_t>(16, T - t0); ++t)
        std::memcpy(y + (t0 + t) * out + o0, acc[t], static_cast<size_t>(rows) * 4);
    }
  }
  Ops::release();
}

// ---- activations --------------------------------------------------------------------------------

// X rounded to bf16, rows [t0, t1) of K; rows up to the padded count are zero.
QRWKV_AVX void round_rows(const float* x, int64_t K, int64_t t0, int64_t t1, uint16_t* xb) {
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t i = 0; i < K; i += 16) {
      const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(x + t * K + i));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(xb + t * K + i),
                          reinterpret_cast<const __m256i&>(h));
    }
}

// quantize_act_int16 of rows [t0, t1), each integer split into its bytes.
void split_rows(const float* x, int64_t K, int64_t t0, int64_t t1, int8_t* h, uint8_t* l,
                float* d) {
  const int64_t nb = K / kQuantBlock;
  int16_t q[kQuantBlock];
  int32_t s;
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t b = 0; b < nb; ++b) {
      quantize_act_int16(x + t * K + b * kQuantBlock, kQuantBlock, q, d + t * nb + b, &s);
      for (int j = 0; j < 32; ++j) {
        h[t * K + b * 32 + j] = static_cast<int8_t>(q[j] >> 8);
        l[t * K + b * 32 + j] = static_cast<uint8_t>(q[j] & 255);
      }
    }
}

struct Bf16Act {
  std::vector<uint16_t> xb;
};
struct BlockAct {
  std::vector<int8_t> h;
  std::vector<uint8_t> l;
  std::vector<float> d;
  SplitAct a;
};

template <class Ops>
void run_bf16(const PanelLinear& l, int64_t p0, int64_t p1) {
  bf16_panels<Ops>(*l.w, static_cast<const Bf16Act*>(l.act)->xb.data(), l.T, p0, p1, l.y);
}
template <class Ops>
void run_blocks(const PanelLinear& l, int64_t p0, int64_t p1) {
  block_panels<Ops>(*l.w, static_cast<const BlockAct*>(l.act)->a, l.T, p0, p1, l.y);
}

template <class Ops>
void prepare_bf16_with(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y,
                       int slot, PanelLinear& l) {
  if (T < kGemmMinTokens) return avx512bf16::prepare_panels(pool, x, T, w, y, slot, l);
  if (w.dtype != DType::BF16 || w.layout != Layout::Panel32)
    fail(w.name, "amx: not a packed BF16 weight");
  thread_local Bf16Act acts[kPanelSlots];
  Bf16Act& a = acts[slot];
  const int64_t K = w.shape[1], Tp = (T + 31) / 32 * 32;
  a.xb.assign(static_cast<size_t>(Tp * K), 0);
  uint16_t* xb = a.xb.data();
  pool.parallel_for(T, 1, [&](int64_t t0, int64_t t1, int) { round_rows(x, K, t0, t1, xb); });
  l = PanelLinear{&w, T, y, &a, run_bf16<Ops>};
}

template <class Ops>
void prepare_blocks_with(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y,
                         int slot, PanelLinear& l) {
  if (T < kGemmMinTokens) return avx512int16::prepare_panels(pool, x, T, w, y, slot, l);
  if ((w.dtype != DType::Q8_0 && w.dtype != DType::Q4_0) || w.layout != Layout::Panel32)
    fail(w.name, "amx: not a packed block weight");
  thread_local BlockAct acts[kPanelSlots];
  BlockAct& a = acts[slot];
  const int64_t K = w.shape[1], nb = K / kQuantBlock, Tp = (T + 15) / 16 * 16;
  a.h.assign(static_cast<size_t>(Tp * K), 0);
  a.l.assign(static_cast<size_t>(Tp * K), 0);
  a.d.assign(static_cast<size_t>(Tp * nb), 0.0f);
  int8_t* h = a.h.data();
  uint8_t* lo = a.l.data();
  float* d = a.d.data();
  pool.parallel_for(T, 1, [&](int64_t t0, int64_t t1, int) { split_rows(x, K, t0, t1, h, lo, d); });
  a.a = SplitAct{h, lo, d, K, nb};
  l = PanelLinear{&w, T, y, &a, run_blocks<Ops>};
}

template <class Ops>
void linear_bf16_with(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y) {
  if (w.layout != Layout::Panel32 || T < kGemmMinTokens)
    return avx512bf16::linear(pool, x, T, w, y);
  PanelLinear l;
  prepare_bf16_with<Ops>(pool, x, T, w, y, 0, l);
  run_panels(pool, panel_count(w.shape[0]), T, tensor_bytes(w),
             [&](int64_t p0, int64_t p1, int) { l.run(l, p0, p1); });
}

template <class Ops>
void linear_blocks_with(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y) {
  if (T < kGemmMinTokens) return avx512int16::linear(pool, x, T, w, y);
  Tensor packed = w;
  if (w.layout != Layout::Panel32) {
    // Not prepared by the backend: packed here, per call.
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
  prepare_blocks_with<Ops>(pool, x, T, packed, y, 0, l);
  run_panels(pool, panel_count(w.shape[0]), T, tensor_bytes(w),
             [&](int64_t p0, int64_t p1, int) { l.run(l, p0, p1); });
}

}  // namespace

QRWKV_AMX double probe(int64_t iters) {
  // tdpbf16ps on four accumulator tiles with the operands in the other four: 16 · 16 · 32
  // multiply-adds each.
  Hw::config(bf16_config());
  alignas(64) uint16_t ones[16][32];
  for (auto& r : ones)
    for (auto& v : r) v = f32_to_bf16(1.0f / 1024);
  Hw::load<4>(ones, 64);
  Hw::load<5>(ones, 64);
  Hw::load<6>(ones, 64);
  Hw::load<7>(ones, 64);
  Hw::zero<0>();
  Hw::zero<1>();
  Hw::zero<2>();
  Hw::zero<3>();
  for (int64_t i = 0; i < iters; ++i) {
    Hw::dpbf16<0, 4, 6>();
    Hw::dpbf16<1, 4, 7>();
    Hw::dpbf16<2, 5, 6>();
    Hw::dpbf16<3, 5, 7>();
  }
  alignas(64) float out[16][16];
  Hw::store<0>(out, 64);
  volatile float sink = out[0][0];
  (void)sink;
  Hw::release();
  return 2.0 * 4 * 16 * 16 * 32 * static_cast<double>(iters);
}

void prepare_bf16(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y, int slot,
                  PanelLinear& l) {
  prepare_bf16_with<Hw>(pool, x, T, w, y, slot, l);
}
void prepare_blocks(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y,
                    int slot, PanelLinear& l) {
  prepare_blocks_with<Hw>(pool, x, T, w, y, slot, l);
}
void linear_bf16(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y) {
  linear_bf16_with<Hw>(pool, x, T, w, y);
}
void linear_blocks(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y) {
  linear_blocks_with<Hw>(pool, x, T, w, y);
}

namespace emulated {
void linear_bf16(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y) {
  linear_bf16_with<Emulated>(pool, x, T, w, y);
}
void linear_blocks(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y) {
  linear_blocks_with<Emulated>(pool, x, T, w, y);
}
}  // namespace emulated

}  // namespace qrwkv::cpu::amx
