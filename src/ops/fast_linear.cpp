// Blocked, multithreaded Y = X Wᵀ + b for float32 activations and F32/BF16/F16 weights.
//
// Each thread owns a range of output rows. For a block of RT rows and TT tokens the kernel keeps
// RT·TT vector accumulators; every step loads RT weight vectors (converted to float32) and TT
// activation vectors and issues RT·TT fused multiply-adds, so each weight byte read from memory
// serves TT tokens. Decode (T = 1) is bound by reading W once; prefill by the FMA throughput.
#include <immintrin.h>

// GCC 12's AVX-512 headers build some results from deliberately undefined vectors, which its own
// -Wuninitialized then reports; the warnings are about the headers, not this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "io/error.h"
#include "ops/fast.h"

namespace qrwkv::fast {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Portable:
      return "portable";
    case Isa::AVX2:
      return "avx2";
    case Isa::AVX512:
      return "avx512";
    case Isa::AVX512BF16:
      return "avx512bf16";
  }
  return "?";
}

Isa max_isa() {
  static const Isa isa = [] {
    __builtin_cpu_init();
    if (cpu_has_bf16_dot()) return Isa::AVX512BF16;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
      return Isa::AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::AVX2;
    return Isa::Portable;
  }();
  return isa;
}

Isa best_isa() {
  static const Isa isa = [] {
    if (const char* env = std::getenv("QRWKV_ISA")) {
      for (Isa i : {Isa::Portable, Isa::AVX2, Isa::AVX512, Isa::AVX512BF16})
        if (std::strcmp(env, isa_name(i)) == 0) return std::min(i, max_isa());
      fail("QRWKV_ISA", std::string("unknown instruction-set level '") + env +
                            "' (portable, avx2, avx512, avx512bf16)");
    }
    if (max_isa() == Isa::AVX512BF16 && !__builtin_cpu_is("amd")) return Isa::AVX512;
    return max_isa();
  }();
  return isa;
}

namespace {

// ---- portable ---------------------------------------------------------------------------

void rows_portable(const float* x, int64_t T, const Tensor& w, int64_t r0, int64_t r1, float* y,
                   int64_t out) {
  const int64_t in = w.shape[1];
  std::vector<float> row(static_cast<size_t>(in));
  for (int64_t o = r0; o < r1; ++o) {
    load_f32(w, o * in, in, row.data());
    for (int64_t t = 0; t < T; ++t) {
      const float* xt = x + t * in;
      float acc = 0.0f;
      for (int64_t i = 0; i < in; ++i) acc += xt[i] * row[i];
      y[t * out + o] = acc;
    }
  }
}

// ---- AVX-512 ------------------------------------------------------------------------------

#define QRWKV_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

QRWKV_AVX512 inline __m512 load16(const uint8_t* p, DType dt, __mmask16 m) {
  switch (dt) {
    case DType::BF16: {
      const __m256i h = _mm256_maskz_loadu_epi16(m, p);
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case DType::F16:
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
    default:
      return _mm512_maskz_loadu_ps(m, p);
  }
}

template <int RT, int TT>
QRWKV_AVX512 void block_avx512(const float* x, int64_t in, const uint8_t* w, size_t row_bytes,
                               size_t esize, DType dt, float* y, int64_t out) {
  __m512 acc[RT][TT];
  for (int r = 0; r < RT; ++r)
    for (int t = 0; t < TT; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t i = 0; i < in; i += 16) {
    const __mmask16 m = in - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (in - i)) - 1);
    __m512 xv[TT];
    for (int t = 0; t < TT; ++t) xv[t] = _mm512_maskz_loadu_ps(m, x + t * in + i);
    for (int r = 0; r < RT; ++r) {
      const uint8_t* p = w + r * row_bytes + i * esize;
      // The next block of rows follows these in memory: fetch it ahead of the demand misses.
      _mm_prefetch(reinterpret_cast<const char*>(p + RT * row_bytes), _MM_HINT_T0);
      const __m512 wv = load16(p, dt, m);
      for (int t = 0; t < TT; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < RT; ++r)
    for (int t = 0; t < TT; ++t) y[t * out + r] = _mm512_reduce_add_ps(acc[r][t]);
}

QRWKV_AVX512 void rows_avx512(const float* x, int64_t T, const Tensor& w, int64_t r0, int64_t r1,
                              float* y, int64_t out) {
  const int64_t in = w.shape[1];
  const size_t es = dtype_size(w.dtype), rb = static_cast<size_t>(in) * es;
  int64_t o = r0;
  for (; o + 4 <= r1; o += 4) {
    int64_t t = 0;
    for (; t + 4 <= T; t += 4)
      block_avx512<4, 4>(x + t * in, in, w.data + o * rb, rb, es, w.dtype, y + t * out + o, out);
    for (; t < T; ++t)
      block_avx512<4, 1>(x + t * in, in, w.data + o * rb, rb, es, w.dtype, y + t * out + o, out);
  }
  for (; o < r1; ++o) {
    int64_t t = 0;
    for (; t + 4 <= T; t += 4)
      block_avx512<1, 4>(x + t * in, in, w.data + o * rb, rb, es, w.dtype, y + t * out + o, out);
    for (; t < T; ++t)
      block_avx512<1, 1>(x + t * in, in, w.data + o * rb, rb, es, w.dtype, y + t * out + o, out);
  }
}

// ---- AVX2 ---------------------------------------------------------------------------------

#define QRWKV_AVX2 __attribute__((target("avx2,fma,f16c")))

QRWKV_AVX2 inline __m256 load8(const uint8_t* p, DType dt) {
  switch (dt) {
    case DType::BF16: {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    case DType::F16:
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    default:
      return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
  }
}

QRWKV_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <int RT, int TT>
QRWKV_AVX2 void block_avx2(const float* x, int64_t in, const Tensor& w, int64_t o, size_t row_bytes,
                           size_t esize, float* y, int64_t out) {
  __m256 acc[RT][TT];
  for (int r = 0; r < RT; ++r)
    for (int t = 0; t < TT; ++t) acc[r][t] = _mm256_setzero_ps();
  const uint8_t* wp = w.data + o * row_bytes;
  const int64_t in8 = in / 8 * 8;
  for (int64_t i = 0; i < in8; i += 8) {
    __m256 xv[TT];
    for (int t = 0; t < TT; ++t) xv[t] = _mm256_loadu_ps(x + t * in + i);
    for (int r = 0; r < RT; ++r) {
      const __m256 wv = load8(wp + r * row_bytes + i * esize, w.dtype);
      for (int t = 0; t < TT; ++t) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  float tail[8];
  for (int r = 0; r < RT; ++r) {
    if (in8 < in) load_f32(w, (o + r) * in + in8, in - in8, tail);
    for (int t = 0; t < TT; ++t) {
      float s = hsum8(acc[r][t]);
      for (int64_t i = in8; i < in; ++i) s += x[t * in + i] * tail[i - in8];
      y[t * out + r] = s;
    }
  }
}

QRWKV_AVX2 void rows_avx2(const float* x, int64_t T, const Tensor& w, int64_t r0, int64_t r1,
                          float* y, int64_t out) {
  const int64_t in = w.shape[1];
  const size_t es = dtype_size(w.dtype), rb = static_cast<size_t>(in) * es;
  int64_t o = r0;
  for (; o + 4 <= r1; o += 4) {
    int64_t t = 0;
    for (; t + 4 <= T; t += 4) block_avx2<4, 4>(x + t * in, in, w, o, rb, es, y + t * out + o, out);
    for (; t < T; ++t) block_avx2<4, 1>(x + t * in, in, w, o, rb, es, y + t * out + o, out);
  }
  for (; o < r1; ++o) {
    int64_t t = 0;
    for (; t + 4 <= T; t += 4) block_avx2<1, 4>(x + t * in, in, w, o, rb, es, y + t * out + o, out);
    for (; t < T; ++t) block_avx2<1, 1>(x + t * in, in, w, o, rb, es, y + t * out + o, out);
  }
}

template <typename Axpy>
void matmul_rows(const float* x, int64_t T, const Tensor& m, int64_t t0, int64_t t1, float* y,
                 Axpy axpy) {
  const int64_t in = m.shape[0], out = m.shape[1];
  std::vector<float> row(static_cast<size_t>(out));
  std::fill(y + t0 * out, y + t1 * out, 0.0f);
  for (int64_t i = 0; i < in; ++i) {
    load_f32(m, i * out, out, row.data());
    for (int64_t t = t0; t < t1; ++t) axpy(x[t * in + i], row.data(), y + t * out, out);
  }
}

void axpy_portable(float a, const float* x, float* y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
}

QRWKV_AVX2 void axpy_avx2(float a, const float* x, float* y, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm256_storeu_ps(y + j, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j)));
  for (; j < n; ++j) y[j] += a * x[j];
}

QRWKV_AVX512 void axpy_avx512(float a, const float* x, float* y, int64_t n) {
  const __m512 av = _mm512_set1_ps(a);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - j)) - 1);
    _mm512_mask_storeu_ps(
        y + j, m,
        _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, x + j), _mm512_maskz_loadu_ps(m, y + j)));
  }
}

QRWKV_AVX512 double sum_avx512(const float* x, int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_loadu_ps(x + i));
    a1 = _mm512_add_ps(a1, _mm512_loadu_ps(x + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_loadu_ps(x + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_loadu_ps(x + i + 48));
  }
  double s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  for (; i < n; ++i) s += x[i];
  return s;
}

QRWKV_AVX2 double sum_avx2(const float* x, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(x + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(x + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(x + i + 24));
  }
  double s = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < n; ++i) s += x[i];
  return s;
}

}  // namespace

void matmul(ThreadPool& pool, const float* x, int64_t T, const Tensor& m, float* y, Isa isa) {
  isa = std::min(isa, max_isa());
  if (isa >= Isa::AVX512 && T >= kGemmMinTokens &&
      (m.dtype == DType::F32 || m.dtype == DType::BF16 || m.dtype == DType::F16)) {
    gemm_f32_avx512(pool, x, T, m, y, true);
    return;
  }
  pool.parallel_for(T, 1, [&](int64_t t0, int64_t t1, int) {
    switch (isa) {
      case Isa::AVX512BF16:
      case Isa::AVX512:
        matmul_rows(x, T, m, t0, t1, y, axpy_avx512);
        break;
      case Isa::AVX2:
        matmul_rows(x, T, m, t0, t1, y, axpy_avx2);
        break;
      default:
        matmul_rows(x, T, m, t0, t1, y, axpy_portable);
    }
  });
}

double sum(ThreadPool& pool, const float* x, int64_t n, Isa isa) {
  isa = std::min(isa, max_isa());
  std::vector<double> partial(static_cast<size_t>(pool.size()), 0.0);
  pool.parallel_for(n, 4096, [&](int64_t b, int64_t e, int t) {
    double s = 0;
    if (isa >= Isa::AVX512)
      s = sum_avx512(x + b, e - b);
    else if (isa == Isa::AVX2)
      s = sum_avx2(x + b, e - b);
    else
      for (int64_t i = b; i < e; ++i) s += x[i];
    partial[static_cast<size_t>(t)] += s;
  });
  double s = 0;
  for (double p : partial) s += p;
  return s;
}

namespace {

void rows_f32(Isa isa, const float* x, int64_t T, const Tensor& w, int64_t r0, int64_t r1, float* y,
              int64_t out) {
  switch (isa) {
    case Isa::AVX512BF16:
    case Isa::AVX512:
      rows_avx512(x, T, w, r0, r1, y, out);
      break;
    case Isa::AVX2:
      rows_avx2(x, T, w, r0, r1, y, out);
      break;
    default:
      rows_portable(x, T, w, r0, r1, y, out);
  }
}

// Block-quantized weights below the AVX512BF16 level: rows are dequantized to float32 in
// groups of 16 and multiplied with the float32 kernels.
void rows_dequant(Isa isa, const float* x, int64_t T, const Tensor& w, int64_t r0, int64_t r1,
                  float* y, int64_t out) {
  const int64_t in = w.shape[1];
  std::vector<float> buf(static_cast<size_t>(16 * in));
  for (int64_t o = r0; o < r1; o += 16) {
    const int64_t n = std::min<int64_t>(16, r1 - o);
    load_f32(w, o * in, n * in, buf.data());
    const Tensor f{w.name, DType::F32, {n, in}, reinterpret_cast<const uint8_t*>(buf.data())};
    rows_f32(isa, x, T, f, 0, n, y + o, out);
  }
}

}  // namespace

void linear(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, const Tensor* bias,
            float* y, Isa isa) {
  const bool block = w.dtype == DType::Q8_0 || w.dtype == DType::Q4_0;
  if (w.dtype != DType::F32 && w.dtype != DType::BF16 && w.dtype != DType::F16 && !block)
    fail(w.name, std::string("unsupported dtype ") + dtype_name(w.dtype));
  isa = std::min(isa, max_isa());
  const int64_t out = w.shape[0];
  if (isa == Isa::AVX512BF16 && (w.dtype == DType::BF16 || block)) {
    linear_bf16_dot(pool, x, T, w, y);
  } else if (isa >= Isa::AVX512 && T >= kGemmMinTokens) {
    gemm_f32_avx512(pool, x, T, w, y);
  } else {
    // Rows in multiples of 16 per thread keep the 4-row blocks whole.
    pool.parallel_for(out, 16, [&](int64_t r0, int64_t r1, int) {
      if (block && isa >= Isa::AVX512)
        rowdot_blocks_avx512(x, T, w, r0, r1, y);
      else if (block)
        rows_dequant(isa, x, T, w, r0, r1, y, out);
      else
        rows_f32(isa, x, T, w, r0, r1, y, out);
    });
  }
  if (bias != nullptr && !bias->empty()) {
    std::vector<float> b(static_cast<size_t>(out));
    load_f32(*bias, 0, out, b.data());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < out; ++o) y[t * out + o] += b[o];
  }
}

}  // namespace qrwkv::fast
