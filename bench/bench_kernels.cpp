// Micro-benchmarks of the CPU backend's kernels on the shapes of a Qwen2.5-0.5B-sized layer:
// decode (T = 1, bound by reading the weights) and prefill blocks (bound by FMA throughput).
// Counters: bytes of weights read per second (decode) and FLOP/s.
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/wkv.h"
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

}  // namespace

BENCHMARK_MAIN();
