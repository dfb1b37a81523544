// Every optimized kernel against the float32 reference, on random inputs of odd sizes, for
// every weight dtype and every instruction-set level this machine can run.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "ops/fast.h"
#include "ops/ref.h"

namespace qrwkv {
namespace {

struct OwnedWeights {
  std::vector<uint8_t> bytes;
  Tensor t;
};

OwnedWeights random_weights(int64_t out, int64_t in, DType dt, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  OwnedWeights w;
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

TEST_P(FastLinear, MatchesReferenceOnOddShapes) {
  const auto [isa, dt] = GetParam();
  if (isa > fast::best_isa()) GTEST_SKIP() << fast::isa_name(isa) << " not supported here";
  for (int threads : {1, 3}) {
    ThreadPool pool(threads);
    for (auto [T, out, in] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1, 1, 1},
                                                                                {1, 37, 53},
                                                                                {3, 5, 16},
                                                                                {5, 67, 129},
                                                                                {9, 131, 31},
                                                                                {4, 64, 64},
                                                                                {17, 18, 200}}) {
      const auto w = random_weights(out, in, dt, static_cast<uint32_t>(out * 7 + in));
      const auto b = random_weights(1, out, DType::F32, 5);
      Tensor bias = b.t;
      bias.shape = {out};
      const auto x = random_vec(T * in, static_cast<uint32_t>(T + in));
      std::vector<float> want(static_cast<size_t>(T * out)), got(want.size(), NAN);
      ref::linear(x.data(), T, w.t, &bias, want.data());
      fast::linear(pool, x.data(), T, w.t, &bias, got.data(), isa);
      for (size_t i = 0; i < want.size(); ++i)
        ASSERT_NEAR(got[i], want[i], 1e-4 * (1 + std::sqrt(double(in))))
            << "T=" << T << " out=" << out << " in=" << in << " i=" << i << " threads=" << threads;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllLevels, FastLinear,
                         ::testing::Combine(::testing::Values(fast::Isa::Portable, fast::Isa::AVX2,
                                                              fast::Isa::AVX512),
                                            ::testing::Values(DType::F32, DType::BF16, DType::F16)),
                         level_and_dtype_name);

class FastMatmul : public ::testing::TestWithParam<std::tuple<fast::Isa, DType>> {};

TEST_P(FastMatmul, MatchesReferenceOnOddShapes) {
  const auto [isa, dt] = GetParam();
  if (isa > fast::best_isa()) GTEST_SKIP() << fast::isa_name(isa) << " not supported here";
  ThreadPool pool(2);
  for (auto [T, in, out] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {1, 1, 1}, {1, 64, 160}, {3, 37, 19}, {7, 33, 65}, {2, 5, 200}}) {
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
  for (auto isa : {fast::Isa::Portable, fast::Isa::AVX2, fast::Isa::AVX512})
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
