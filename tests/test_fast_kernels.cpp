// Every optimized kernel against the float32 reference, on random inputs of odd sizes, for
// every weight dtype and every instruction-set level this machine can run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "io/error.h"
#include "ops/fast.h"
#include "ops/quant.h"
#include "ops/ref.h"

namespace qrwkv {
namespace {

struct OwnedWeights {
  std::vector<uint8_t> bytes;
  Tensor t;
};

bool is_block(DType dt) { return dt == DType::Q8_0 || dt == DType::Q4_0; }

OwnedWeights random_weights(int64_t out, int64_t in, DType dt, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  OwnedWeights w;
  if (is_block(dt)) {
    // Quantized from float32 weights; start one byte in, as below.
    std::vector<float> f(static_cast<size_t>(out * in));
    for (auto& v : f) v = n(rng);
    const Tensor src{"w", DType::F32, {out, in}, reinterpret_cast<const uint8_t*>(f.data())};
    std::vector<uint8_t> q;
    convert_tensor(src, dt, q, nullptr);
    w.bytes.assign(1, 0);
    w.bytes.insert(w.bytes.end(), q.begin(), q.end());
    w.t = Tensor{"w", dt, {out, in}, w.bytes.data() + 1};
    return w;
  }
  w.bytes.resize(static_cast<size_t>(out * in) * dtype_size(dt) + 1);
  // Start one byte in: kernels must not assume aligned weights.
  uint8_t* p = w.bytes.data() + 1;
  for (int64_t i = 0; i < out * in; ++i) {
    const float v = n(rng);
    if (dt == DType::F32) {
      std::memcpy(p + i * 4, &v, 4);
    } else if (dt == DType::BF16) {
      const uint16_t h = f32_to_bf16(v);
      std::memcpy(p + i * 2, &h, 2);
    } else {
      const _Float16 h = static_cast<_Float16>(v);
      std::memcpy(p + i * 2, &h, 2);
    }
  }
  w.t = Tensor{"w", dt, {out, in}, p};
  return w;
}

std::vector<float> random_vec(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

std::string level_and_dtype_name(const ::testing::TestParamInfo<std::tuple<fast::Isa, DType>>& p) {
  return std::string(fast::isa_name(std::get<0>(p.param))) + "_" + dtype_name(std::get<1>(p.param));
}

class FastLinear : public ::testing::TestWithParam<std::tuple<fast::Isa, DType>> {};

// At the AVX512BF16 level, BF16 and block-quantized weights round the activations to bfloat16
// (fast.h); the reference then gets the same rounded activations, and both must agree to
// float32 rounding. Token counts on both sides of kGemmMinTokens exercise the row-dot kernels
// and the packed GEMM, with row counts that leave partial 32-row panels and token tiles.
TEST_P(FastLinear, MatchesReferenceOnOddShapes) {
  const auto [isa, dt] = GetParam();
  if (isa > fast::max_isa()) GTEST_SKIP() << fast::isa_name(isa) << " not supported here";
  const bool rounds_x = isa == fast::Isa::AVX512BF16 && (dt == DType::BF16 || is_block(dt));
  const std::vector<std::tuple<int64_t, int64_t, int64_t>> shapes =
      is_block(dt)
          ? std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1, 1, 32},    {1, 37, 64},
                                                               {3, 5, 96},    {5, 67, 128},
                                                               {9, 131, 32},  {8, 64, 64},
                                                               {23, 18, 224}, {61, 45, 160},
                                                               {150, 13, 64}}
          : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
                {1, 1, 1},   {1, 37, 53},   {3, 5, 16},   {5, 67, 129}, {9, 131, 31},
                {4, 64, 64}, {17, 18, 200}, {29, 70, 45}, {131, 61, 33}};
  for (int threads : {1, 3}) {
    ThreadPool pool(threads);
    for (auto [T, out, in] : shapes) {
      const auto w = random_weights(out, in, dt, static_cast<uint32_t>(out * 7 + in));
      const auto b = random_weights(1, out, DType::F32, 5);
      Tensor bias = b.t;
      bias.shape = {out};
      const auto x = random_vec(T * in, static_cast<uint32_t>(T + in));
      auto x_ref = x;
      if (rounds_x)
        for (auto& v : x_ref) v = bf16_to_f32(f32_to_bf16(v));
      std::vector<float> want(static_cast<size_t>(T * out)), got(want.size(), NAN);
      ref::linear(x_ref.data(), T, w.t, &bias, want.data());
      fast::linear(pool, x.data(), T, w.t, &bias, got.data(), isa);
      for (size_t i = 0; i < want.size(); ++i)
        ASSERT_NEAR(got[i], want[i], 1e-4 * (1 + std::sqrt(double(in))))
            << "T=" << T << " out=" << out << " in=" << in << " i=" << i << " threads=" << threads;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllLevels, FastLinear,
                         ::testing::Combine(::testing::Values(fast::Isa::Portable, fast::Isa::AVX2,
                                                              fast::Isa::AVX512,
                                                              fast::Isa::AVX512BF16),
                                            ::testing::Values(DType::F32, DType::BF16, DType::F16,
                                                              DType::Q8_0, DType::Q4_0)),
                         level_and_dtype_name);

// The bf16 path must round activations exactly like the scalar f32_to_bf16 (nearest even), or
// prefill and decode would disagree with the reference contract above: check against a
// reference in which only the activations differ by one bf16 ulp in a single element.
TEST(FastLinear, Bf16PathSeesEveryActivationElement) {
  if (fast::max_isa() < fast::Isa::AVX512BF16) GTEST_SKIP() << "no AVX512-BF16";
  ThreadPool pool(2);
  const int64_t in = 77, out = 40;
  const auto w = random_weights(out, in, DType::BF16, 11);
  for (int64_t T : {1, 12}) {
    auto x = random_vec(T * in, 3);
    std::vector<float> y0(static_cast<size_t>(T * out)), y1(y0.size());
    fast::linear(pool, x.data(), T, w.t, nullptr, y0.data(), fast::Isa::AVX512BF16);
    x[static_cast<size_t>(T * in - 1)] *= 1.5f;  // the very last element of the last token
    fast::linear(pool, x.data(), T, w.t, nullptr, y1.data(), fast::Isa::AVX512BF16);
    int changed = 0;
    for (int64_t o = 0; o < out; ++o) changed += y0[(T - 1) * out + o] != y1[(T - 1) * out + o];
    EXPECT_GT(changed, out / 2) << "T=" << T;
  }
}

// float32 → float16 against the compiler's own conversion (round to nearest even) over normal,
// subnormal, overflowing and tie values.
TEST(Quant, F16RoundingMatchesCompiler) {
  std::mt19937 rng(1);
  std::uniform_int_distribution<uint32_t> bits;
  std::vector<float> vals{
      0.0f,          -0.0f,         65504.0f,      65519.0f,           65520.0f,          1e-8f,
      2.9802322e-8f, 5.9604645e-8f, 6.1035156e-5f, 1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048};
  for (int i = 0; i < 200000; ++i) {
    uint32_t b = bits(rng);
    // Concentrate on the float16 range (exponents 2^-26 .. 2^17).
    b = (b & 0x807fffffu) | ((101u + (b >> 23) % 44) << 23);
    float f;
    std::memcpy(&f, &b, 4);
    vals.push_back(f);
  }
  for (float f : vals) {
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &h, 2);
    ASSERT_EQ(f32_to_f16(f), want) << f;
  }
}

// Quantization error on Gaussian weights: Q8_0 keeps the relative RMS error below 0.7 %; Q4_0
// below 12 %, and its least-squares scale choice beats the plain max/−8 scale.
TEST(Quant, BlockFormatsRoundTripWithinTheirPrecision) {
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0.0f, 0.02f);
  const int64_t N = 32 * 4096;
  std::vector<float> x(N), y(N);
  for (auto& v : x) v = n(rng);
  auto rel_rms = [&](const std::vector<float>& a) {
    double e = 0, s = 0;
    for (int64_t i = 0; i < N; ++i) {
      e += (a[i] - x[i]) * double(a[i] - x[i]);
      s += x[i] * double(x[i]);
    }
    return std::sqrt(e / s);
  };
  std::vector<BlockQ8_0> q8(N / 32);
  quantize_row_q8_0(x.data(), N, q8.data());
  dequantize_blocks(DType::Q8_0, reinterpret_cast<const uint8_t*>(q8.data()), 0, N / 32, y.data());
  EXPECT_LT(rel_rms(y), 0.007);
  std::vector<BlockQ4_0> q4(N / 32);
  quantize_row_q4_0(x.data(), N, q4.data());
  dequantize_blocks(DType::Q4_0, reinterpret_cast<const uint8_t*>(q4.data()), 0, N / 32, y.data());
  const double err4 = rel_rms(y);
  EXPECT_LT(err4, 0.12);
  // Plain max/−8 scaling, computed here independently.
  std::vector<float> naive(N);
  for (int64_t b = 0; b < N / 32; ++b) {
    float vmax = 0;
    for (int j = 0; j < 32; ++j)
      if (std::fabs(x[b * 32 + j]) > std::fabs(vmax)) vmax = x[b * 32 + j];
    const float d = vmax / -8.0f;
    for (int j = 0; j < 32; ++j)
      naive[b * 32 + j] = d * std::clamp(std::nearbyint(x[b * 32 + j] / d), -8.0f, 7.0f);
  }
  EXPECT_LT(err4, rel_rms(naive));
  // Converting a tensor views the same bytes as the row functions produce.
  const Tensor src{"x", DType::F32, {4096, 32}, reinterpret_cast<const uint8_t*>(x.data())};
  std::vector<uint8_t> storage;
  const Tensor t = convert_tensor(src, DType::Q4_0, storage, nullptr);
  EXPECT_EQ(tensor_bytes(t), 4096 * 18);
  EXPECT_EQ(std::memcmp(t.data, q4.data(), storage.size()), 0);
  // Rows that are not whole blocks are refused by name.
  const Tensor odd{"odd.weight", DType::F32, {2, 48}, reinterpret_cast<const uint8_t*>(x.data())};
  try {
    convert_tensor(odd, DType::Q8_0, storage, nullptr);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("odd.weight"), std::string::npos) << e.what();
  }
}

class FastMatmul : public ::testing::TestWithParam<std::tuple<fast::Isa, DType>> {};

TEST_P(FastMatmul, MatchesReferenceOnOddShapes) {
  const auto [isa, dt] = GetParam();
  if (isa > fast::max_isa()) GTEST_SKIP() << fast::isa_name(isa) << " not supported here";
  ThreadPool pool(2);
  for (auto [T, in, out] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {1, 1, 1},
           {1, 64, 160},
           {3, 37, 19},
           {7, 33, 65},
           {2, 5, 200},
           // From kGemmMinTokens on: the packed GEMM reading M transposed.
           {17, 33, 65},
           {70, 160, 37},
           {129, 64, 7}}) {
    const auto m = random_weights(in, out, dt, static_cast<uint32_t>(in + 3 * out));
    const auto x = random_vec(T * in, 9);
    std::vector<float> want(static_cast<size_t>(T * out)), got(want.size(), NAN);
    ref::matmul(x.data(), T, m.t, want.data());
    fast::matmul(pool, x.data(), T, m.t, got.data(), isa);
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(got[i], want[i], 1e-4 * (1 + std::sqrt(double(in)))) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(AllLevels, FastMatmul,
                         ::testing::Combine(::testing::Values(fast::Isa::Portable, fast::Isa::AVX2,
                                                              fast::Isa::AVX512),
                                            ::testing::Values(DType::F32, DType::BF16, DType::F16)),
                         level_and_dtype_name);

TEST(FastSum, EveryLevelSumsExactly) {
  ThreadPool pool(2);
  std::vector<float> x(100003);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7);
  double want = 0;
  for (float v : x) want += v;
  for (auto isa : {fast::Isa::Portable, fast::Isa::AVX2, fast::Isa::AVX512, fast::Isa::AVX512BF16})
    EXPECT_EQ(fast::sum(pool, x.data(), static_cast<int64_t>(x.size()), isa), want);
}

TEST(ThreadPool, CoversTheRangeOnceInGrains) {
  ThreadPool pool(3);
  for (int64_t n : {0, 1, 5, 16, 17, 100, 1000}) {
    std::vector<int> hits(static_cast<size_t>(n), 0);
    pool.parallel_for(n, 4, [&](int64_t b, int64_t e, int) {
      EXPECT_TRUE(b % 4 == 0);
      for (int64_t i = b; i < e; ++i) ++hits[i];
    });
    for (int h : hits) EXPECT_EQ(h, 1);
  }
  EXPECT_GE(physical_cores(), 1);
}

}  // namespace
}  // namespace qrwkv

#include "ops/wkv.h"

namespace qrwkv {
namespace {

// Chunked WKV against the recurrence with decays from w ≈ 0.9975 down to w ≈ e^-12, where a
// naive factorization overflows float32 within a few tokens.
TEST(Wkv, ChunkedEqualsRecurrentWithExtremeDecays) {
  for (const int64_t N : {16, 24, 64}) {
    const int64_t T = 203;
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f), ld(-6.0f, 2.5f);
    std::vector<float> q(T * N), k(T * N), v(T * N), lw(T * N);
    for (int64_t i = 0; i < T * N; ++i) {
      q[i] = u(rng) / 4;
      v[i] = u(rng);
      lw[i] = -std::exp(ld(rng));
      k[i] = u(rng) * -std::expm1(lw[i]);
    }
    std::vector<float> S_init(N * N);
    for (auto& x : S_init) x = u(rng);
    std::vector<float> o_ref(T * N), S_ref = S_init;
    wkv_recurrent(
        {q.data(), N, k.data(), N, v.data(), N, lw.data(), N, o_ref.data(), N, S_ref.data(), N, T});
    // Chunk sizes, then (-1) the fused recurrence.
    for (int64_t chunk : {1, 7, 16, 64, 128, -1}) {
      std::vector<float> o(T * N, NAN), S = S_init;
      const WkvHead head{q.data(), N,        k.data(), N,        v.data(), N, lw.data(),
                         N,        o.data(), N,        S.data(), N,        T};
      if (chunk > 0)
        wkv_chunked(head, chunk);
      else
        wkv_recurrent_fused(head);
      double max_o = 0, err_o = 0, err_s = 0, max_s = 0;
      for (int64_t i = 0; i < T * N; ++i) {
        ASSERT_TRUE(std::isfinite(o[i])) << "chunk " << chunk;
        max_o = std::max(max_o, std::fabs(double{o_ref[i]}));
        err_o = std::max(err_o, std::fabs(double{o[i]} - o_ref[i]));
      }
      for (int64_t i = 0; i < N * N; ++i) {
        max_s = std::max(max_s, std::fabs(double{S_ref[i]}));
        err_s = std::max(err_s, std::fabs(double{S[i]} - S_ref[i]));
      }
      EXPECT_LT(err_o / max_o, 1e-5) << "chunk " << chunk;
      EXPECT_LT(err_s / max_s, 1e-5) << "chunk " << chunk;
    }
  }
}

}  // namespace
}  // namespace qrwkv
