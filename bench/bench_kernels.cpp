// Micro-benchmarks of the CPU backend's kernels on the shapes of a Qwen2.5-0.5B-sized layer:
// decode (T = 1, bound by reading the weights) and prefill blocks (bound by FMA throughput).
// Counters: bytes of weights read per second (decode) and FLOP/s.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/wkv.h"
#include "backend/wkv7.h"
#include "ops/quant.h"

namespace {

using namespace qrwkv;

// Random weights of one shape in a given storage dtype (BF16, Q8_0 or Q4_0).
struct Weights {
  std::vector<uint16_t> data;
  std::vector<uint8_t> quant;
  Tensor t;
  Weights(int64_t out, int64_t in, DType dt) : data(static_cast<size_t>(out * in)) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-0.05f, 0.05f);
    for (auto& x : data) x = f32_to_bf16(u(rng));
    t = Tensor{"w", DType::BF16, {out, in}, reinterpret_cast<const uint8_t*>(data.data())};
    if (dt != DType::BF16) t = convert_tensor(t, dt, quant, nullptr);
  }
};

// Args: T, out, in, instruction-set level, dtype (0 BF16, 1 Q8_0, 2 Q4_0).
void BM_Linear(benchmark::State& state) {
  const int64_t T = state.range(0), out = state.range(1), in = state.range(2);
  const auto isa = static_cast<cpu::Isa>(state.range(3));
  const DType dt = state.range(4) == 0   ? DType::BF16
                   : state.range(4) == 1 ? DType::Q8_0
                                         : DType::Q4_0;
  if (isa > cpu::max_isa()) {
    state.SkipWithError("instruction set not supported here");
    return;
  }
  CpuBackend be(CpuOptions{physical_cores(), isa});
  Weights w(out, in, dt);
  std::vector<float> x(static_cast<size_t>(T * in), 0.5f), y(static_cast<size_t>(T * out));
  for (auto _ : state) {
    be.linear(x.data(), T, w.t, Tensor{}, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * T * out * in, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["weight_B/s"] = benchmark::Counter(static_cast<double>(tensor_bytes(w.t)),
                                                    benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(cpu::isa_name(isa)) + " " + dtype_name(dt));
}

void LinearArgs(benchmark::internal::Benchmark* b) {
  for (int isa : {2, 3, 4})
    for (int dt : {0, 1, 2}) {
      for (int64_t T : {1, 4, 16, 64, 512}) {
        b->Args({T, 4864, 896, isa, dt});  // MLP up/gate
        b->Args({T, 896, 4864, isa, dt});  // MLP down
      }
      // lm_head: larger than the last-level cache, so decode reads it from memory.
      b->Args({1, 151936, 896, isa, dt});
    }
}
BENCHMARK(BM_Linear)->Apply(LinearArgs)->UseRealTime();

// Decode as a model does it: every projection of L layers of the Qwen2.5-0.5B QRWKV6 shapes (r,
// k, v, o, g, MLP up, gate, down) once per iteration with T tokens, the weights far larger than
// any cache, so that each call streams from memory and starts cold as in a real decode step.
// Args: instruction-set level, dtype (0 BF16, 1 Q8_0, 2 Q4_0), T. Counter weight_B/s against
// the bandwidth probe of the same backend (bandwidth_B/s, measured once per run).
void BM_DecodeLayers(benchmark::State& state) {
  const auto isa = static_cast<cpu::Isa>(state.range(0));
  const DType dt = state.range(1) == 0   ? DType::BF16
                   : state.range(1) == 1 ? DType::Q8_0
                                         : DType::Q4_0;
  const int64_t T = state.range(2);
  if (isa > cpu::max_isa()) {
    state.SkipWithError("instruction set not supported here");
    return;
  }
  constexpr int64_t kLayers = 12;
  const int64_t shapes[][2] = {{896, 896}, {128, 896},  {128, 896},  {896, 896},
                               {896, 896}, {4864, 896}, {4864, 896}, {896, 4864}};
  CpuBackend be(CpuOptions{physical_cores(), isa});
  std::vector<std::unique_ptr<Weights>> ws;
  int64_t bytes = 0;
  for (int64_t l = 0; l < kLayers; ++l)
    for (const auto& s : shapes) {
      ws.push_back(std::make_unique<Weights>(s[0], s[1], dt));
      bytes += tensor_bytes(ws.back()->t);
    }
  std::vector<float> x(static_cast<size_t>(T * 4864), 0.5f), y(static_cast<size_t>(T * 4864));
  for (auto _ : state) {
    for (const auto& w : ws) be.linear(x.data(), T, w->t, Tensor{}, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["weight_B/s"] =
      benchmark::Counter(static_cast<double>(bytes), benchmark::Counter::kIsIterationInvariantRate);
  static double bandwidth = 0;
  if (bandwidth == 0) {
    std::vector<float> big(size_t(1) << 27, 1.0f);  // 512 MiB
    double best = 0;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      benchmark::DoNotOptimize(be.sum(big.data(), static_cast<int64_t>(big.size())));
      const double dt_s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::max(best, big.size() * 4.0 / dt_s);
    }
    bandwidth = best;
  }
  state.counters["bandwidth_B/s"] = bandwidth;
  state.SetLabel(std::string(cpu::isa_name(isa)) + " " + dtype_name(dt));
}
BENCHMARK(BM_DecodeLayers)
    ->ArgsProduct({{2, 3, 4}, {0, 1, 2}, {1}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_Wkv(benchmark::State& state) {
  const int64_t T = state.range(0), N = 64;
  const int64_t form = state.range(1);
  std::vector<float> r(T * N, 0.08f), k(T * N, 0.2f), v(T * N, 0.3f), o(T * N);
  std::vector<float> lw(T * N, -0.1f), w(T * N, 0.905f), omw(T * N, 0.095f), S(N * N, 0.0f);
  const cpu::Kernels& kernels = cpu::kernels_for(cpu::default_isa());
  for (auto _ : state) {
    const WkvHead h{r.data(),  N, k.data(), N, v.data(), N, w.data(), omw.data(),
                    lw.data(), N, o.data(), N, S.data(), N, T,        0.125f};
    if (form == 0)
      wkv_recurrent(h);
    else if (form == 1)
      wkv_chunked(h);
    else
      kernels.wkv_head(h);
    benchmark::DoNotOptimize(o.data());
  }
  state.SetItemsProcessed(state.iterations() * T);
  state.SetLabel(form == 0 ? "recurrent" : form == 1 ? "chunked" : "fused");
}
BENCHMARK(BM_Wkv)->Args({512, 0})->Args({512, 1})->Args({512, 2});

// The QRWKV7 delta rule of one head (N 64, the head size of Qwen2.5) over T tokens: the plain
// recurrence, the chunked form and the recurrence on the level's vector kernels, as the CPU
// backend runs it.
void BM_Wkv7(benchmark::State& state) {
  const int64_t T = state.range(0), N = 64;
  const int64_t form = state.range(1);
  std::vector<float> r(T * N, 0.08f), k(T * N, 0.2f), v(T * N, 0.3f), d(T * N, 0.1f),
      a(T * N, -0.5f), nu(T * N, 0.2f), vf(T * N, 0.1f), y(T * N), S(N * N, 0.0f), ones(N, 1.0f),
      zeros(N, 0.0f);
  auto vec = [](std::vector<float>& x) {
    return Tensor{"v",
                  DType::F32,
                  {static_cast<int64_t>(x.size())},
                  reinterpret_cast<const uint8_t*>(x.data())};
  };
  const Tensor w0 = vec(zeros), a0 = vec(zeros), v0 = vec(ones), k_k = vec(ones), k_a = vec(ones),
               ln_w = vec(ones), ln_b = vec(zeros);
  const Wkv7Args p{r.data(), k.data(), v.data(), d.data(), a.data(), nu.data(), &w0,
                   &a0,      &v0,      &k_k,     &k_a,     &ln_w,    &ln_b,     vf.data(),
                   T,        1,        1,        N,        S.data(), y.data()};
  const cpu::Kernels& kernels = cpu::kernels_for(cpu::default_isa());
  Wkv7Token x;
  float yh[kWkv7MaxHead];
  for (auto _ : state) {
    if (form == 0) {
      wkv7_reference(p, 0, 1);
    } else if (form == 1) {
      wkv7_chunked(p, 0, 1);
    } else {
      for (int64_t t = 0; t < T; ++t) {
        kernels.wkv7_token(p, t, 0, x);
        kernels.wkv7_step(p.S, N, x, p.r + t * N, yh);
        wkv7_output(p, t, 0, yh);
      }
    }
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * T);
  state.SetLabel(form == 0 ? "recurrent" : form == 1 ? "chunked" : "vector");
}
BENCHMARK(BM_Wkv7)->Args({512, 0})->Args({512, 1})->Args({512, 2});

}  // namespace

BENCHMARK_MAIN();
