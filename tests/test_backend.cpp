// The backends against each other: every operation of the CPU backend, at every instruction-set
// level this machine can run (so every entry of its kernel table), against the reference
// backend on random inputs of odd sizes and every weight dtype. Element-wise stages must agree
// exactly (they compute the same scalar expressions), except those with exp or tanh (within a
// few ulp); matrix products and the WKV recurrence to float32 rounding of sums in another order.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>

#include "backend/cpu/cpu_backend.h"
#include "backend/ref/ref_backend.h"
#include "backend/wkv.h"
#include "backend/wkv7.h"
#include "io/error.h"
#include "ops/panel.h"
#include "ops/quant.h"

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

Tensor f32_tensor(const std::vector<float>& v, std::vector<int64_t> shape) {
  return Tensor{"v", DType::F32, std::move(shape), reinterpret_cast<const uint8_t*>(v.data())};
}

// Largest |a − b| relative to the largest |b|.
double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0, d = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    m = std::max(m, std::fabs(double{b[i]}));
    d = std::max(d, std::fabs(double{a[i]} - b[i]));
  }
  return m > 0 ? d / m : d;
}

// Checks Y = X Wᵀ + b (T tokens, out rows, in columns) computed two ways with the same rounding
// of X, to float32 rounding of sums taken in different orders: each side's sum of `in` products
// (plus the bias, plus two roundings of an integer block's scale product) is within
// (in + 3)·u·S of the exact sum of its terms, S = Σ |terms| + |b| and u = 2⁻²⁴; S is bounded by
// Σ_i |w_i| (|x_i| + m_i / 127) + |b| with m_i the largest |x| of element i's block of 32 (a
// rounded activation is within m_i / 127 of x_i in every rounding the levels use).
template <typename Context>
void expect_linear_near(const std::vector<float>& got, const std::vector<float>& want,
                        const Tensor& w, const std::vector<float>& x, const std::vector<float>& bv,
                        int64_t T, Context context) {
  const int64_t out = w.shape[0], in = w.shape[1];
  // |x_i| + m_i / 127 per token and element.
  std::vector<double> xa(x.size());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i0 = 0; i0 < in; i0 += 32) {
      double m = 0;
      for (int64_t i = i0; i < std::min(in, i0 + 32); ++i)
        m = std::max(m, std::fabs(double{x[t * in + i]}));
      for (int64_t i = i0; i < std::min(in, i0 + 32); ++i)
        xa[t * in + i] = std::fabs(double{x[t * in + i]}) + m / 127;
    }
  std::vector<float> row(static_cast<size_t>(in));
  for (int64_t o = 0; o < out; ++o) {
    load_f32(w, o * in, in, row.data());
    for (int64_t t = 0; t < T; ++t) {
      double S = bv.empty() ? 0.0 : std::fabs(double{bv[o]});
      for (int64_t i = 0; i < in; ++i) S += std::fabs(double{row[i]}) * xa[t * in + i];
      const double tol = 2.0 * double(in + 3) * 0x1p-24 * S;
      const size_t k = static_cast<size_t>(t * out + o);
      ASSERT_NEAR(got[k], want[k], tol) << context() << " t=" << t << " o=" << o;
    }
  }
}

std::string level_name(const ::testing::TestParamInfo<cpu::Isa>& p) {
  return cpu::isa_name(p.param);
}

class CpuBackendLevel : public ::testing::TestWithParam<cpu::Isa> {
 protected:
  void SetUp() override {
    if (GetParam() > cpu::max_isa())
      GTEST_SKIP() << cpu::isa_name(GetParam()) << " not supported here";
  }
  CpuBackend cpu(int threads) const { return CpuBackend(CpuOptions{threads, GetParam()}); }
  RefBackend ref;
};

// The table holds what its level promises: a packed GEMM from AVX512 on, bf16 dot products
// from AVX512BF16 on, int8 dot products at AVX512VNNI, and every other entry everywhere.
TEST_P(CpuBackendLevel, TableHasTheLevelsEntries) {
  const cpu::Kernels& k = cpu::kernels_for(GetParam());
  EXPECT_EQ(k.level, GetParam());
  EXPECT_NE(k.rowdot, nullptr);
  EXPECT_NE(k.matmul_rows, nullptr);
  EXPECT_NE(k.matmul_cols, nullptr);
  EXPECT_NE(k.wkv_head, nullptr);
  EXPECT_NE(k.sum, nullptr);
  EXPECT_EQ(k.gemm != nullptr, GetParam() >= cpu::Isa::AVX512);
  EXPECT_EQ(k.linear_bf16 != nullptr, GetParam() >= cpu::Isa::AVX512BF16);
  EXPECT_EQ(k.prepare_bf16 != nullptr, GetParam() >= cpu::Isa::AVX512BF16);
  EXPECT_EQ(k.panels, GetParam() >= cpu::Isa::AVX512BF16);
  EXPECT_EQ(k.linear_blocks != nullptr, GetParam() >= cpu::Isa::AVX512BF16);
  EXPECT_EQ(k.prepare_blocks != nullptr, GetParam() >= cpu::Isa::AVX512BF16);
  EXPECT_EQ(k.int8_probe != nullptr, GetParam() >= cpu::Isa::AVX512VNNI);
  EXPECT_EQ(cpu(2).level(), GetParam());
}

// Y = X Wᵀ + b for every weight dtype, against the reference computing the level's function
// (backend.h, ActivationRounding): at AVX512BF16 and AMX BF16 weights see bf16-rounded
// activations and block-quantized weights int16 activations, at AVX512VNNI block weights see
// int8 activations; both sides round X identically and differ only in the order of float32
// operations (expect_linear_near). Token counts on both sides of kGemmMinTokens exercise the
// row-dot kernels and the packed GEMMs, with row counts that leave partial row blocks, panels
// and token tiles. Each weight is used as given (row-major) and as the backend's prepare step
// holds it (packed into panels from AVX512BF16 on, where its rows are a multiple of 32 long).
TEST_P(CpuBackendLevel, LinearMatchesReferenceForEveryDtype) {
  RefBackend rounded_ref(cpu::activation_rounding(GetParam()));
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::Q8_0, DType::Q4_0}) {
    SCOPED_TRACE(dtype_name(dt));
    const std::vector<std::tuple<int64_t, int64_t, int64_t>> shapes =
        is_block(dt)
            ? std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1, 1, 32},    {1, 37, 64},
                                                                 {3, 5, 96},    {5, 67, 128},
                                                                 {9, 131, 32},  {8, 64, 64},
                                                                 {23, 18, 224}, {61, 45, 160},
                                                                 {150, 13, 64}, {40, 70, 4864}}
            : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
                  {1, 1, 1},     {1, 37, 53}, {3, 5, 16},    {5, 67, 129},
                  {9, 131, 31},  {4, 64, 64}, {17, 18, 200}, {29, 70, 45},
                  {131, 61, 33}, {2, 40, 96}, {37, 33, 64}};
    for (int threads : {1, 3})
      for (bool prepared : {false, true}) {
        CpuBackend be = cpu(threads);
        for (auto [T, out, in] : shapes) {
          const auto w = random_weights(out, in, dt, static_cast<uint32_t>(out * 7 + in));
          const auto bv = random_vec(out, 5);
          const Tensor bias = f32_tensor(bv, {out});
          const auto x = random_vec(T * in, static_cast<uint32_t>(T + in));
          std::vector<float> want(static_cast<size_t>(T * out)), got(want.size(), NAN);
          rounded_ref.linear(x.data(), T, w.t, bias, want.data());
          Tensor wt = w.t;
          WeightArena arena;
          if (prepared) {
            be.prepare({{WeightRole::Projection, &wt}}, WeightFormat::Stored, arena);
            const bool packs = GetParam() >= cpu::Isa::AVX512BF16 && dt != DType::F32 &&
                               dt != DType::F16 && in % 32 == 0;
            ASSERT_EQ(wt.layout == Layout::Panel32, packs);
          }
          be.linear(x.data(), T, wt, bias, got.data());
          expect_linear_near(got, want, w.t, x, bv, T, [&] {
            return testing::Message() << "T=" << T << " out=" << out << " in=" << in
                                      << " threads=" << threads << " prepared=" << prepared;
          });
          if (HasFatalFailure()) return;
        }
      }
  }
}

// The AMX kernels with their tile instructions carried out in C++ (amx.cpp, Emulated): the
// tiling, the panel addresses, the split of int16 activations into bytes and the per-block
// scaling against the reference's Int16 function, on any machine with the AVX512BF16 level
// (the hardware kernels run in the level tests above where the CPU has AMX). Shapes leave
// partial token blocks and panels; block weights are given packed and row-major.
TEST(AmxEmulated, LinearMatchesTheReferenceFunction) {
  if (cpu::max_isa() < cpu::Isa::AVX512BF16) GTEST_SKIP() << "needs AVX512-BF16 and VNNI";
  RefBackend ref(ActivationRounding::Int16);
  ThreadPool pool(2);
  for (DType dt : {DType::BF16, DType::Q8_0, DType::Q4_0}) {
    SCOPED_TRACE(dtype_name(dt));
    for (auto [T, out, in] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
             {32, 32, 32}, {33, 45, 64}, {47, 70, 96}, {64, 64, 160}, {70, 33, 32}}) {
      const auto w = random_weights(out, in, dt, static_cast<uint32_t>(out + 3 * in));
      const auto x = random_vec(T * in, static_cast<uint32_t>(T * 5 + in));
      std::vector<float> want(static_cast<size_t>(T * out));
      ref.linear(x.data(), T, w.t, Tensor{}, want.data());
      std::shared_ptr<uint8_t> keep;
      const Tensor packed = pack_panels(w.t, dt, keep, &pool);
      for (const Tensor* wt : {&packed, &w.t}) {
        if (dt == DType::BF16 && wt == &w.t) continue;  // row-major BF16 is not the tiles' work
        std::vector<float> got(want.size(), NAN);
        if (dt == DType::BF16)
          cpu::amx::emulated::linear_bf16(pool, x.data(), T, *wt, got.data());
        else
          cpu::amx::emulated::linear_blocks(pool, x.data(), T, *wt, got.data());
        expect_linear_near(got, want, w.t, x, {}, T, [&] {
          return testing::Message() << "T=" << T << " out=" << out << " in=" << in
                                    << (wt == &packed ? " packed" : " row-major");
        });
        if (HasFatalFailure()) return;
      }
    }
  }
}

// A group of projections (Backend::linears) gives exactly what linear gives for each: packed
// weights of several dtypes and row counts sharing one parallel region, a row-major one among
// them, biases, token counts on both sides of kGemmMinTokens.
TEST_P(CpuBackendLevel, LinearsEqualLinearOnEach) {
  CpuBackend be = cpu(2);
  for (int64_t T : {int64_t{1}, int64_t{3}, cpu::kGemmMinTokens + 5}) {
    SCOPED_TRACE(T);
    const std::vector<std::tuple<int64_t, int64_t, DType>> shapes = {{70, 64, DType::BF16},
                                                                     {33, 64, DType::Q8_0},
                                                                     {5, 96, DType::Q4_0},
                                                                     {40, 45, DType::BF16},
                                                                     {64, 128, DType::Q8_0}};
    std::vector<OwnedWeights> ws;
    std::vector<Tensor> wt, bias;
    std::vector<std::vector<float>> xs, bvs, want, got;
    WeightArena arena;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const auto [out, in, dt] = shapes[i];
      ws.push_back(random_weights(out, in, dt, static_cast<uint32_t>(17 + i)));
      xs.push_back(random_vec(T * in, static_cast<uint32_t>(40 + i)));
      bvs.push_back(random_vec(out, static_cast<uint32_t>(60 + i)));
      want.emplace_back(static_cast<size_t>(T * out));
      got.emplace_back(static_cast<size_t>(T * out), NAN);
    }
    for (size_t i = 0; i < shapes.size(); ++i) {
      wt.push_back(ws[i].t);
      bias.push_back(i % 2 == 0 ? f32_tensor(bvs[i], {std::get<0>(shapes[i])}) : Tensor{});
    }
    std::vector<WeightRef> refs;
    for (Tensor& t : wt) refs.push_back({WeightRole::Projection, &t});
    be.prepare(refs, WeightFormat::Stored, arena);
    std::vector<LinearArgs> group;
    for (size_t i = 0; i < shapes.size(); ++i) {
      be.linear(xs[i].data(), T, wt[i], bias[i], want[i].data());
      group.push_back({xs[i].data(), T, &wt[i], &bias[i], got[i].data()});
    }
    be.linears(group);
    for (size_t i = 0; i < shapes.size(); ++i) EXPECT_EQ(got[i], want[i]) << "projection " << i;
  }
}

// Y = X M for the LoRA matrices (stored F32, BF16 or F16), with X rows further apart than M's
// input size as the QRWKV6 time mix reads its five slices.
TEST_P(CpuBackendLevel, MatmulMatchesReferenceWithStridedRows) {
  CpuBackend be = cpu(2);
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    SCOPED_TRACE(dtype_name(dt));
    for (auto [T, in, out] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
             {1, 1, 1},
             {1, 64, 160},
             {3, 37, 19},
             {7, 33, 65},
             {2, 5, 200},
             {17, 33, 65},
             // From kGemmMinTokens on: the packed GEMM reading M transposed.
             {cpu::kGemmMinTokens, 33, 65},
             {70, 160, 37},
             {129, 64, 7},
             // Row counts of a multiple of 32: held packed (transposed) by prepare from
             // AVX512BF16 on, with float32 activations still.
             {1, 32, 160},
             {3, 64, 45},
             {40, 96, 33}}) {
      for (int64_t pad : {0, 3})
        for (bool prepared : {false, true}) {
          const int64_t ldx = in + pad;
          const auto m = random_weights(in, out, dt, static_cast<uint32_t>(in + 3 * out));
          const auto x = random_vec(T * ldx, 9);
          std::vector<float> want(static_cast<size_t>(T * out)), got(want.size(), NAN);
          ref.matmul(x.data(), T, ldx, m.t, want.data());
          Tensor mt = m.t;
          WeightArena arena;
          if (prepared) be.prepare({{WeightRole::LoraMatrix, &mt}}, WeightFormat::Stored, arena);
          EXPECT_EQ(mt.layout == Layout::Panel32, prepared && GetParam() >= cpu::Isa::AVX512BF16 &&
                                                      dt == DType::BF16 && in % 32 == 0);
          be.matmul(x.data(), T, ldx, mt, got.data());
          for (size_t i = 0; i < want.size(); ++i)
            ASSERT_NEAR(got[i], want[i], 1e-4 * (1 + std::sqrt(double(in))))
                << "T=" << T << " in=" << in << " out=" << out << " ldx=" << ldx << " i=" << i
                << " prepared=" << prepared;
        }
    }
  }
}

// The element-wise stages, small (one thread) and large (split across the pool): exactly the
// reference's values.
TEST_P(CpuBackendLevel, ElementwiseStagesEqualReferenceExactly) {
  CpuBackend be = cpu(3);
  for (const int64_t T : {1, 3, 300}) {
    const int64_t C = 136, n = T * C;
    SCOPED_TRACE("T=" + std::to_string(T));
    const auto a = random_vec(n, 1), d0 = random_vec(n, 2), m = random_vec(T * (C + 1), 3);
    const auto wv = random_vec(C, 4), prev = random_vec(C, 5);
    const Tensor w = f32_tensor(wv, {C});
    auto both = [&](auto op) {
      std::vector<float> x(static_cast<size_t>(n)), y(x.size());
      op(static_cast<Backend&>(ref), x);
      op(static_cast<Backend&>(be), y);
      EXPECT_EQ(x, y);
    };
    both([&](Backend& b, std::vector<float>& y) { b.rmsnorm(a.data(), T, C, w, 1e-6f, y.data()); });
    both([&](Backend& b, std::vector<float>& y) {
      y = a;
      b.add(y.data(), d0.data(), n);
    });
    both([&](Backend& b, std::vector<float>& y) {
      b.lerp(a.data(), d0.data(), m.data(), C + 1, w, T, C, y.data());
    });
    both([&](Backend& b, std::vector<float>& y) {
      std::vector<float> x_prev = prev, xx(static_cast<size_t>(n));
      b.token_shift(a.data(), T, C, x_prev.data(), w, y.data(), xx.data());
      y.insert(y.end(), xx.begin(), xx.end());
      y.insert(y.end(), x_prev.begin(), x_prev.end());
      EXPECT_EQ(x_prev, std::vector<float>(a.end() - C, a.end()));  // the last token's input
    });
    both([&](Backend& b, std::vector<float>& y) {
      std::vector<float> w1(static_cast<size_t>(n)), omw(w1.size()), lw(w1.size());
      b.decay(d0.data(), w, T, C, w1.data(), omw.data(), lw.data());
      for (int64_t i = 0; i < n; ++i) y[i] = w1[i] + 3 * omw[i] + 5 * lw[i];
    });
    both([&](Backend& b, std::vector<float>& y) {
      y = a;
      std::vector<double> inv(C / 2);
      for (size_t i = 0; i < inv.size(); ++i) inv[i] = std::pow(1e4, -2.0 * double(i) / C);
      b.rope(y.data(), T, 2, C / 2, 1000, inv.data());
    });
    both([&](Backend& b, std::vector<float>& y) {
      const auto table = random_weights(50, C, DType::BF16, 8);
      std::vector<int32_t> ids(static_cast<size_t>(T));
      for (int64_t t = 0; t < T; ++t) ids[t] = static_cast<int32_t>((t * 7) % 50);
      b.embed(table.t, ids.data(), T, y.data());
    });
    both([&](Backend& b, std::vector<float>& y) {
      y = a;
      b.sigmoid(y.data(), n);
      for (size_t i = 0; i < y.size(); ++i) EXPECT_FLOAT_EQ(y[i], 1.0f / (1.0f + std::exp(-a[i])));
    });
    both([&](Backend& b, std::vector<float>& y) {
      y = a;
      b.mul(y.data(), d0.data(), n);
    });
    both([&](Backend& b, std::vector<float>& y) {
      std::vector<int64_t> rows;
      for (int64_t t = T - 1; t >= 0; t -= 2) rows.push_back(t);
      b.gather_rows(a.data(), C, rows.data(), static_cast<int64_t>(rows.size()), y.data());
    });
  }
}

// The QRWKV7 time mix on every head, both variants, with GQA and a value residual, small (one
// thread) and large: the CPU backend splits the heads across threads and runs the state's update
// and its per-token values in the level's vector kernels (polynomial exp, fused multiply-adds,
// sums in another order), so it equals the reference to float32 rounding; v_first (layer 0's
// values, copied) exactly.
TEST_P(CpuBackendLevel, Wkv7EqualsReferenceToRounding) {
  CpuBackend be = cpu(3);
  RefBackend ref;
  for (const int64_t T : {1, 3, 300}) {
    const int64_t C = 136, n = T * C;  // 8 heads of 17: an odd head size
    SCOPED_TRACE("T=" + std::to_string(T));
    const auto a = random_vec(n, 1), d0 = random_vec(n, 2), m = random_vec(T * (C + 1), 3);
    auto near = [&](auto op) {
      std::vector<float> x(static_cast<size_t>(n)), y(x.size());
      op(static_cast<Backend&>(ref), x);
      op(static_cast<Backend&>(be), y);
      ASSERT_EQ(x.size(), y.size());
      EXPECT_LT(rel_diff(y, x), 2e-6);
      // v_first (the last n values) comes from the shared per-token code: exactly equal.
      EXPECT_TRUE(std::equal(x.end() - n, x.end(), y.end() - n));
    };
    for (const bool classic : {true, false}) {
      const int64_t H = 8, Hkv = 2, N = C / H;
      const auto k = random_vec(T * Hkv * N, 11), v = random_vec(T * Hkv * N, 12);
      const auto vf0 = random_vec(n, 13), nu = random_vec(n, 14), S0 = random_vec(H * N * N, 15);
      // Tensors view their vectors: the vectors live as long as they do.
      const auto w0v = random_vec(C, 16), a0v = random_vec(C, 17), v0v = random_vec(C, 18);
      const Tensor w0 = f32_tensor(w0v, {C}), a0 = f32_tensor(a0v, {C});
      const Tensor v0 = f32_tensor(v0v, {C}), none;
      const auto kk = random_vec(C, 19), ka = random_vec(C, 20), lw = random_vec(C, 21),
                 lb = random_vec(C, 22);
      const Tensor k_k = f32_tensor(kk, {C}), k_a = f32_tensor(ka, {C});
      const Tensor ln_w = f32_tensor(lw, {C}), ln_b = f32_tensor(lb, {C});
      for (const bool layer0 : {true, false})
        near([&](Backend& b, std::vector<float>& y) {
          std::vector<float> vf = vf0, S = S0;
          b.wkv7(Wkv7Args{a.data(),
                          k.data(),
                          v.data(),
                          d0.data(),
                          m.data(),
                          layer0 ? nullptr : nu.data(),
                          &w0,
                          &a0,
                          &v0,
                          classic ? &k_k : &none,
                          classic ? &k_a : &none,
                          classic ? &ln_w : &none,
                          classic ? &ln_b : &none,
                          vf.data(),
                          T,
                          H,
                          Hkv,
                          N,
                          S.data(),
                          y.data()});
          y.insert(y.end(), S.begin(), S.end());
          y.insert(y.end(), vf.begin(), vf.end());
        });
    }
  }
}

// swiglu, gate and tanh use a polynomial exp and tanh (kernels_generic.inl) at every level: each
// result within 8 ulp of the C library's (relative to the result; absolute 2⁻³⁰ near zero),
// on random inputs and on the edges of the polynomials' ranges and of float32's exp.
TEST_P(CpuBackendLevel, TranscendentalStagesAreWithinAFewUlp) {
  CpuBackend be = cpu(3);
  std::vector<float> x = random_vec(5000, 7), u = random_vec(5000, 8);
  for (float& v : x) v *= 4;
  for (float v :
       {0.0f,   -0.0f, 1e-7f,  -1e-7f, 0.6249f, 0.625f, -0.625f, 0.6251f, 9.0f,    -9.0f, 20.0f,
        -20.0f, 44.0f, -44.0f, 87.5f,  -87.5f,  88.5f,  -88.5f,  100.0f,  -100.0f, 3e4f,  -3e4f}) {
    x.push_back(v);
    u.push_back(1.5f);
  }
  const int64_t n = static_cast<int64_t>(x.size());
  auto check = [&](const char* what, auto op) {
    std::vector<float> want = x, got = x;
    op(static_cast<Backend&>(ref), want);
    op(static_cast<Backend&>(be), got);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_LE(std::fabs(double{got[i]} - want[i]),
                std::max(8 * 0x1p-24 * std::fabs(double{want[i]}), 0x1p-30))
          << what << "(" << x[i] << "): " << got[i] << " vs " << want[i];
  };
  check("swiglu", [&](Backend& b, std::vector<float>& y) { b.swiglu(y.data(), u.data(), n); });
  check("gate", [&](Backend& b, std::vector<float>& y) { b.gate(y.data(), u.data(), n); });
  check("tanh", [&](Backend& b, std::vector<float>& y) { b.tanh(y.data(), n); });
}

// The WKV recurrence over all heads with grouped keys and values (H = 4, Hkv = 2), head sizes
// that leave partial vectors, and a non-zero starting state.
TEST_P(CpuBackendLevel, WkvMatchesReference) {
  CpuBackend be = cpu(2);
  for (const int64_t N : {8, 24, 64}) {
    for (const int64_t T : {1, 37}) {
      const int64_t H = 4, Hkv = 2, C = H * N, KVD = Hkv * N;
      std::mt19937 rng(static_cast<uint32_t>(N + T));
      std::uniform_real_distribution<float> u(-1.0f, 1.0f), ld(-6.0f, 2.5f);
      std::vector<float> r(T * C), k(T * KVD), v(T * KVD), w(T * C), omw(T * C), lw(T * C);
      for (auto& x : r) x = u(rng);
      for (auto& x : k) x = u(rng);
      for (auto& x : v) x = u(rng);
      for (int64_t i = 0; i < T * C; ++i) {
        lw[i] = -std::exp(ld(rng));
        w[i] = std::exp(lw[i]);
        omw[i] = -std::expm1(lw[i]);
      }
      std::vector<float> S0(H * N * N);
      for (auto& x : S0) x = u(rng);
      std::vector<float> S_ref = S0, S = S0, o_ref(T * C), o(T * C, NAN);
      const float scale = 1.0f / std::sqrt(float(N));
      ref.wkv({r.data(), k.data(), v.data(), w.data(), omw.data(), lw.data(), T, H, Hkv, N, scale,
               S_ref.data(), o_ref.data()});
      be.wkv({r.data(), k.data(), v.data(), w.data(), omw.data(), lw.data(), T, H, Hkv, N, scale,
              S.data(), o.data()});
      EXPECT_LT(rel_diff(o, o_ref), 1e-5) << "N=" << N << " T=" << T;
      EXPECT_LT(rel_diff(S, S_ref), 1e-5) << "N=" << N << " T=" << T;
      // One lane: the reference's sums in the reference's order.
      if (GetParam() == cpu::Isa::Portable) {
        EXPECT_EQ(o, o_ref);
        EXPECT_EQ(S, S_ref);
      }
    }
  }
}

// Causal attention over a cache longer than one block of the CPU backend's running softmax,
// for tokens at the start of a sequence and far into it.
TEST_P(CpuBackendLevel, AttentionMatchesReference) {
  CpuBackend be = cpu(3);
  // Groups of 2, of Qwen2.5-0.5B's 7 and of 9 (more than one work item per kv head), head sizes
  // with and without a partial vector.
  for (const auto& [H, Hkv, D, pos0, T] : std::vector<std::array<int64_t, 5>>{{4, 2, 16, 0, 5},
                                                                              {4, 2, 16, 600, 3},
                                                                              {4, 2, 16, 0, 300},
                                                                              {14, 2, 64, 0, 37},
                                                                              {14, 2, 64, 130, 2},
                                                                              {9, 1, 20, 3, 140}}) {
    const int64_t n = pos0 + T;
    const auto kc = random_vec(n * Hkv * D, 1), vc = random_vec(n * Hkv * D, 2);
    auto q = random_vec(T * H * D, 3);
    for (auto& x : q) x *= 3;  // peaked distributions
    std::vector<float> want(T * H * D), got(want.size(), NAN);
    ref.attention({q.data(), kc.data(), vc.data(), T, pos0, H, Hkv, D, want.data()});
    be.attention({q.data(), kc.data(), vc.data(), T, pos0, H, Hkv, D, got.data()});
    EXPECT_LT(rel_diff(got, want), 1e-5)
        << "H=" << H << " D=" << D << " pos0=" << pos0 << " T=" << T;
  }
}

TEST_P(CpuBackendLevel, SumIsExact) {
  CpuBackend be = cpu(2);
  std::vector<float> x(100003);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7);
  double want = 0;
  for (float v : x) want += v;
  EXPECT_EQ(be.sum(x.data(), static_cast<int64_t>(x.size())), want);
}

INSTANTIATE_TEST_SUITE_P(AllLevels, CpuBackendLevel, ::testing::ValuesIn(cpu::kAllIsas),
                         level_name);

// The bf16 path must round activations exactly like the scalar f32_to_bf16 (nearest even), or
// prefill and decode would disagree with the reference contract above: check against a
// reference in which only the activations differ by one bf16 ulp in a single element.
TEST(CpuBackendBf16, SeesEveryActivationElement) {
  if (cpu::max_isa() < cpu::Isa::AVX512BF16) GTEST_SKIP() << "no AVX512-BF16";
  CpuBackend be(CpuOptions{2, cpu::Isa::AVX512BF16});
  const int64_t in = 77, out = 40;
  const auto w = random_weights(out, in, DType::BF16, 11);
  for (int64_t T : {1, 12}) {
    auto x = random_vec(T * in, 3);
    std::vector<float> y0(static_cast<size_t>(T * out)), y1(y0.size());
    be.linear(x.data(), T, w.t, Tensor{}, y0.data());
    x[static_cast<size_t>(T * in - 1)] *= 1.5f;  // the very last element of the last token
    be.linear(x.data(), T, w.t, Tensor{}, y1.data());
    int changed = 0;
    for (int64_t o = 0; o < out; ++o) changed += y0[(T - 1) * out + o] != y1[(T - 1) * out + o];
    EXPECT_GT(changed, out / 2) << "T=" << T;
  }
}

// QRWKV_ISA names a level; an unknown name is refused by name.
TEST(CpuFeatures, LevelsParseAndDefaultIsRunnable) {
  for (cpu::Isa i : cpu::kAllIsas) EXPECT_EQ(cpu::parse_isa(cpu::isa_name(i)), i);
  EXPECT_FALSE(cpu::parse_isa("avx9").has_value());
  EXPECT_LE(cpu::default_isa(), cpu::max_isa());
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

// Several threads calling one pool: their jobs run one at a time, each completely.
TEST(ThreadPool, ConcurrentCallersAreSerialized) {
  ThreadPool pool(2);
  std::atomic<int> inside{0}, worst{0};
  std::vector<std::thread> callers;
  std::atomic<int64_t> total{0};
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 200; ++rep)
        pool.parallel_for(64, 1, [&](int64_t b, int64_t e, int) {
          const int now = ++inside;
          int w = worst.load();
          while (now > w && !worst.compare_exchange_weak(w, now)) {
          }
          total += e - b;
          --inside;
        });
    });
  for (auto& t : callers) t.join();
  EXPECT_EQ(total.load(), 4 * 200 * 64);
  EXPECT_LE(worst.load(), pool.size());  // never more ranges at once than one job has
}

// A job that calls parallel_for on its own pool runs the inner range on its own thread instead
// of waiting for itself.
TEST(ThreadPool, NestedCallRunsInline) {
  ThreadPool pool(3);
  std::atomic<int64_t> total{0};
  pool.parallel_for(6, 1, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i)
      pool.parallel_for(10, 1, [&](int64_t b2, int64_t e2, int t) {
        EXPECT_EQ(t, 0);
        total += e2 - b2;
      });
  });
  EXPECT_EQ(total.load(), 60);
}

// Chunked WKV against the recurrence with decays from w ≈ 0.9975 down to w ≈ e^-12, where a
// naive factorization overflows float32 within a few tokens; and the CPU backend's fused
// recurrence (every level) against the same.
TEST(Wkv, ChunkedAndFusedEqualRecurrentWithExtremeDecays) {
  for (const int64_t N : {16, 24, 64}) {
    const int64_t T = 203;
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f), ld(-6.0f, 2.5f);
    std::vector<float> r(T * N), k(T * N), v(T * N), w(T * N), omw(T * N), lw(T * N);
    for (int64_t i = 0; i < T * N; ++i) {
      r[i] = u(rng);
      v[i] = u(rng);
      k[i] = u(rng);
      lw[i] = -std::exp(ld(rng));
      w[i] = std::exp(lw[i]);
      omw[i] = -std::expm1(lw[i]);
    }
    std::vector<float> S_init(N * N);
    for (auto& x : S_init) x = u(rng);
    auto head = [&](std::vector<float>& o, std::vector<float>& S) {
      return WkvHead{r.data(),  N, k.data(), N, v.data(), N, w.data(), omw.data(),
                     lw.data(), N, o.data(), N, S.data(), N, T,        0.25f};
    };
    std::vector<float> o_ref(T * N), S_ref = S_init;
    wkv_recurrent(head(o_ref, S_ref));
    auto check = [&](const std::vector<float>& o, const std::vector<float>& S,
                     const std::string& what) {
      for (float x : o) ASSERT_TRUE(std::isfinite(x)) << what;
      EXPECT_LT(rel_diff(o, o_ref), 1e-5) << what << " N=" << N;
      EXPECT_LT(rel_diff(S, S_ref), 1e-5) << what << " N=" << N;
    };
    for (int64_t chunk : {1, 7, 16, 64, 128}) {
      std::vector<float> o(T * N, NAN), S = S_init;
      wkv_chunked(head(o, S), chunk);
      check(o, S, "chunk " + std::to_string(chunk));
    }
    for (cpu::Isa isa : cpu::kAllIsas) {
      if (isa > cpu::max_isa()) continue;
      std::vector<float> o(T * N, NAN), S = S_init;
      cpu::kernels_for(isa).wkv_head(head(o, S));
      check(o, S, std::string("fused ") + cpu::isa_name(isa));
    }
  }
}

// The chunked delta rule and every level's vector kernel against the recurrence on 333 tokens
// (partial last chunk) from a random state, in QRWKV7's extremes: one head at the fastest decay
// (w = e^−0.607 on every channel, where e^{−Γ} reaches e^{9.7} within a chunk) with in-context
// learning rates a ≈ 1 (the removal takes out almost all that κ reads), one with decays spread
// over the whole range and random rates; both variants; head sizes up to 128.
TEST(Wkv7, ChunkedAndVectorEqualRecurrenceInTheExtremes) {
  for (const int64_t N : {16, 17, 64, 128})
    for (const bool classic : {true, false}) {
      const int64_t T = 333, H = 2, Hkv = 1, C = H * N, KVD = Hkv * N;
      SCOPED_TRACE("N=" + std::to_string(N) + (classic ? " classic" : " balance"));
      std::mt19937 rng(static_cast<uint32_t>(N));
      std::uniform_real_distribution<float> u(-1.0f, 1.0f), wide(-12.0f, 12.0f);
      std::vector<float> r(T * C), k(T * KVD), v(T * KVD), d(T * C), a(T * C), nu(T * C), vf(T * C);
      for (auto* x : {&r, &k, &v, &nu, &vf})
        for (float& e : *x) e = u(rng);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t c = 0; c < C; ++c) {
          const bool fast = c < N;  // head 0
          d[t * C + c] = fast ? 40.0f : wide(rng);
          a[t * C + c] = fast ? 16.0f : wide(rng);
        }
      std::vector<float> zero(C, 0.0f), kk(C), ka(C), lw(C), lb(C);
      for (int64_t c = 0; c < C; ++c) {
        kk[c] = 0.5f + u(rng);
        ka[c] = 1.0f + 0.5f * u(rng);
        lw[c] = 1.0f + 0.3f * u(rng);
        lb[c] = 0.1f * u(rng);
      }
      const Tensor w0 = f32_tensor(zero, {C}), a0 = f32_tensor(zero, {C}),
                   v0 = f32_tensor(zero, {C}), none;
      const Tensor k_k = f32_tensor(kk, {C}), k_a = f32_tensor(ka, {C});
      const Tensor ln_w = f32_tensor(lw, {C}), ln_b = f32_tensor(lb, {C});
      std::vector<float> S_init(H * N * N);
      for (float& x : S_init) x = u(rng);
      auto args = [&](std::vector<float>& S, std::vector<float>& y) {
        return Wkv7Args{r.data(),
                        k.data(),
                        v.data(),
                        d.data(),
                        a.data(),
                        nu.data(),
                        &w0,
                        &a0,
                        &v0,
                        classic ? &k_k : &none,
                        classic ? &k_a : &none,
                        classic ? &ln_w : &none,
                        classic ? &ln_b : &none,
                        vf.data(),
                        T,
                        H,
                        Hkv,
                        N,
                        S.data(),
                        y.data()};
      };
      std::vector<float> y_ref(T * C), S_ref = S_init;
      wkv7_reference(args(S_ref, y_ref), 0, H);
      auto check = [&](const std::vector<float>& y, const std::vector<float>& S,
                       const std::string& what) {
        for (float x : y) ASSERT_TRUE(std::isfinite(x)) << what;
        EXPECT_LT(rel_diff(y, y_ref), 1e-5) << what;
        EXPECT_LT(rel_diff(S, S_ref), 1e-5) << what;
      };
      {
        std::vector<float> y(T * C, NAN), S = S_init;
        wkv7_chunked(args(S, y), 0, H);
        check(y, S, "chunked");
      }
      for (cpu::Isa isa : cpu::kAllIsas) {
        if (isa > cpu::max_isa()) continue;
        std::vector<float> y(T * C, NAN), S = S_init;
        const Wkv7Args p = args(S, y);
        Wkv7Token x;
        float yh[kWkv7MaxHead];
        for (int64_t t = 0; t < T; ++t)
          for (int64_t h = 0; h < H; ++h) {
            cpu::kernels_for(isa).wkv7_token(p, t, h, x);
            cpu::kernels_for(isa).wkv7_step(p.S + h * N * N, N, x, p.r + t * C + h * N, yh);
            wkv7_output(p, t, h, yh);
          }
        check(y, S, std::string("vector ") + cpu::isa_name(isa));
      }
    }
}

}  // namespace
}  // namespace qrwkv
