#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "backend/elementwise.h"
#include "backend/wkv7.h"
#include "io/error.h"
#include "ops/panel.h"
#include "ops/quant.h"

namespace qrwkv {

namespace {

// Work below this many (roughly scalar-operation-sized) units runs on the calling thread:
// waking the pool costs about a microsecond, which small element-wise stages of a decode step
// would not repay.
constexpr int64_t kParallelWork = 1 << 15;

bool computable(DType dt) {
  return dt == DType::F32 || dt == DType::BF16 || dt == DType::F16 || is_block_dtype(dt);
}

// Formats that have no kernels of their own (the GGUF block formats besides Q8_0 and Q4_0):
// rows [r0, r1) of Y = X Wᵀ from the rows dequantized, 16 at a time, into float32 and the
// float32 row-dot kernel; Y is [T, out]. Exactly the reference function of the stored weights.
void rowdot_dequantized(const cpu::Kernels& k, const float* x, int64_t T, const Tensor& w,
                        int64_t r0, int64_t r1, float* y) {
  constexpr int64_t kRows = 16;
  const int64_t out = w.shape[0], K = w.shape[1], rb = tensor_bytes(w.dtype, K);
  thread_local std::vector<float> rows, ys;
  rows.resize(static_cast<size_t>(kRows * K));
  ys.resize(static_cast<size_t>(kRows * T));
  for (int64_t o = r0; o < r1; o += kRows) {
    const int64_t n = std::min(kRows, r1 - o);
    k.dequant_row(w.dtype, w.data + o * rb, n * K / block_elems(w.dtype), rows.data());
    Tensor f;
    f.name = w.name;
    f.dtype = DType::F32;
    f.shape = {n, K};
    f.data = reinterpret_cast<const uint8_t*>(rows.data());
    k.rowdot(x, T, f, 0, n, ys.data());
    for (int64_t t = 0; t < T; ++t)
      std::copy(ys.data() + t * n, ys.data() + (t + 1) * n, y + t * out + o);
  }
}

}  // namespace

std::shared_ptr<Backend> make_cpu_backend(int threads) {
  return std::make_shared<CpuBackend>(CpuOptions{threads, std::nullopt});
}

CpuBackend::CpuBackend(const CpuOptions& options)
    : pool_(std::make_unique<ThreadPool>(options.threads > 0 ? options.threads : physical_cores())),
      kernels_(&cpu::kernels_for(options.level.value_or(cpu::default_isa()))) {}

std::string CpuBackend::name() const {
  return std::string("cpu ") + cpu::isa_name(level()) + " (" + std::to_string(threads()) +
         (threads() == 1 ? " thread)" : " threads)");
}

void CpuBackend::parallel(int64_t n, int64_t grain, int64_t cost_per_item, ThreadPool::Job fn) {
  if (n * cost_per_item < kParallelWork)
    fn(0, n, 0);
  else
    pool_->parallel_for(n, grain, fn);
}

double CpuBackend::sum(const float* x, int64_t n) {
  std::vector<double> partial(static_cast<size_t>(pool_->size()), 0.0);
  pool_->parallel_for(n, 4096, [&](int64_t b, int64_t e, int t) {
    partial[static_cast<size_t>(t)] += kernels_->sum(x + b, e - b);
  });
  double s = 0;
  for (double p : partial) s += p;
  return s;
}

double CpuBackend::peak(Probe which) {
  double (*probe)(int64_t) = which == Probe::Fp32Fma    ? kernels_->fma_probe
                             : which == Probe::Bf16Dot  ? kernels_->bf16_probe
                             : which == Probe::Int16Dot ? kernels_->int16_probe
                             : which == Probe::Int8Dot  ? kernels_->int8_probe
                                                        : kernels_->amx_probe;
  if (probe == nullptr) return 0.0;
  // About 50 ms per run: a tile product does 512 times the work of a vector one.
  const int64_t kIters = which == Probe::AmxBf16 ? int64_t{1} << 16 : int64_t{1} << 24;
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<double> ops(static_cast<size_t>(pool_->size()), 0.0);
    const auto t0 = std::chrono::steady_clock::now();
    pool_->parallel_for(pool_->size(), 1, [&](int64_t b, int64_t e, int t) {
      for (int64_t i = b; i < e; ++i) ops[static_cast<size_t>(t)] += probe(kIters);
    });
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double total = 0;
    for (double o : ops) total += o;
    best = std::max(best, total / dt);
  }
  return best;
}

void CpuBackend::prepare(const std::vector<WeightRef>& weights, WeightFormat format,
                         WeightArena& arena) {
  prepare_host_weights(weights, format, arena, pool_.get(), kernels_->panels);
}

void CpuBackend::embed(const Tensor& table, const int32_t* ids, int64_t T, float* h) {
  parallel(T, 1, table.cols(),
           [&](int64_t t0, int64_t t1, int) { elementwise::embed(table, ids, t0, t1, h); });
}

void CpuBackend::rmsnorm(const float* x, int64_t T, int64_t C, const Tensor& w, float eps,
                         float* y) {
  parallel(T, 1, 2 * C, [&](int64_t t0, int64_t t1, int) {
    elementwise::rmsnorm(x, t0, t1, C, f32(w), eps, y);
  });
}

CpuBackend::PreparePanels CpuBackend::panel_prepare(const Tensor& w) const {
  if (w.layout != Layout::Panel32) return nullptr;
  const bool block = w.dtype == DType::Q8_0 || w.dtype == DType::Q4_0;
  return block                    ? kernels_->prepare_blocks
         : w.dtype == DType::BF16 ? kernels_->prepare_bf16
                                  : nullptr;
}

void CpuBackend::product(const float* x, int64_t T, const Tensor& w, float* y) {
  if (!computable(w.dtype)) fail(w.name, std::string("unsupported dtype ") + dtype_name(w.dtype));
  const cpu::Kernels& k = *kernels_;
  const int64_t out = w.shape[0];
  const bool block = w.dtype == DType::Q8_0 || w.dtype == DType::Q4_0;
  if (w.layout == Layout::Panel32 && panel_prepare(w) == nullptr)
    fail(w.name, std::string("packed weights at the ") + cpu::isa_name(k.level) + " level");
  if (is_block_dtype(w.dtype) && !block) {
    // Few tokens: decoded in registers; more: rows decoded once into float32 for all tokens.
    constexpr int64_t kFusedMaxTokens = 8;
    pool_->parallel_for(out, 16, [&](int64_t r0, int64_t r1, int) {
      if (T > kFusedMaxTokens || k.rowdot_kquant == nullptr || !k.rowdot_kquant(x, T, w, r0, r1, y))
        rowdot_dequantized(k, x, T, w, r0, r1, y);
    });
  } else if (k.linear_blocks != nullptr && block) {
    k.linear_blocks(*pool_, x, T, w, y);
  } else if (k.linear_bf16 != nullptr && w.dtype == DType::BF16) {
    k.linear_bf16(*pool_, x, T, w, y);
  } else if (k.gemm != nullptr && T >= cpu::kGemmMinTokens) {
    k.gemm(*pool_, x, T, w.shape[1], w, false, y);
  } else {
    // Rows in multiples of 16 per thread keep the kernels' 4-row blocks whole.
    pool_->parallel_for(out, 16,
                        [&](int64_t r0, int64_t r1, int) { k.rowdot(x, T, w, r0, r1, y); });
  }
}

void CpuBackend::add_bias(float* y, int64_t T, const Tensor& b) {
  if (b.empty()) return;
  const int64_t out = b.numel();
  const float* bias = f32(b);
  parallel(T, 1, out, [&](int64_t t0, int64_t t1, int) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t o = 0; o < out; ++o) y[t * out + o] += bias[o];
  });
}

void CpuBackend::linear(const float* x, int64_t T, const Tensor& w, const Tensor& b, float* y) {
  product(x, T, w, y);
  add_bias(y, T, b);
}

void CpuBackend::linears(std::span<const LinearArgs> group) {
  // Packed weights (up to kPanelSlots of them): activations converted for each, then one
  // region over the panels of all, numbered one weight after the other.
  cpu::PanelLinear packed[cpu::kPanelSlots];
  int64_t first[cpu::kPanelSlots + 1] = {0};
  int n = 0;
  int64_t T = 0, bytes = 0;
  for (const LinearArgs& l : group) {
    const PreparePanels prep = panel_prepare(*l.w);
    if (prep != nullptr && n < cpu::kPanelSlots && (n == 0 || l.T == T)) {
      T = l.T;
      prep(*pool_, l.x, l.T, *l.w, l.y, n, packed[n]);
      first[n + 1] = first[n] + panel_count(l.w->shape[0]);
      bytes += tensor_bytes(*l.w);
      ++n;
    } else {
      product(l.x, l.T, *l.w, l.y);
    }
  }
  if (n > 0)
    cpu::run_panels(*pool_, first[n], T, bytes, [&](int64_t p0, int64_t p1, int) {
      for (int i = 0; i < n && p0 < p1; ++i) {
        const int64_t b = std::max(p0, first[i]), e = std::min(p1, first[i + 1]);
        if (b < e) packed[i].run(packed[i], b - first[i], e - first[i]);
      }
    });
  for (const LinearArgs& l : group) add_bias(l.y, l.T, *l.b);
}

void CpuBackend::matmul(const float* x, int64_t T, int64_t ldx, const Tensor& m, float* y) {
  const cpu::Kernels& k = *kernels_;
  if (m.layout == Layout::Panel32) {
    if (k.matmul_packed == nullptr)
      fail(m.name, std::string("packed matrix at the ") + cpu::isa_name(k.level) + " level");
    k.matmul_packed(*pool_, x, T, ldx, m, y);
    return;
  }
  const bool elem = m.dtype == DType::F32 || m.dtype == DType::BF16 || m.dtype == DType::F16;
  if (k.gemm != nullptr && T >= cpu::kGemmMinTokens && elem) {
    k.gemm(*pool_, x, T, ldx, m, true, y);
    return;
  }
  const int64_t in = m.shape[0], out = m.shape[1];
  if (T < cpu::kGemmMinTokens) {
    // Columns in multiples of 16 (whole vectors at every level).
    parallel(out, 16, T * in,
             [&](int64_t j0, int64_t j1, int) { k.matmul_cols(x, T, ldx, m, j0, j1, y); });
    return;
  }
  pool_->parallel_for(T, 1,
                      [&](int64_t t0, int64_t t1, int) { k.matmul_rows(x, ldx, m, t0, t1, y); });
}

void CpuBackend::add(float* h, const float* x, int64_t n) {
  parallel(n, 4096, 1, [&](int64_t b, int64_t e, int) { elementwise::add(h, x, b, e); });
}

void CpuBackend::swiglu(float* g, const float* u, int64_t n) {
  parallel(n, 4096, 4, [&](int64_t b, int64_t e, int) { kernels_->swiglu(g, u, b, e); });
}

void CpuBackend::token_shift(const float* a, int64_t T, int64_t C, float* x_prev,
                             const Tensor& maa_x, float* d, float* xx) {
  parallel(T, 1, 2 * C, [&](int64_t t0, int64_t t1, int) {
    elementwise::token_shift(a, t0, t1, C, x_prev, f32(maa_x), d, xx);
  });
  if (T > 0) std::memcpy(x_prev, a + (T - 1) * C, C * sizeof(float));
}

void CpuBackend::tanh(float* x, int64_t n) {
  parallel(n, 4096, 4, [&](int64_t b, int64_t e, int) { kernels_->tanh(x, b, e); });
}

void CpuBackend::lerp(const float* a, const float* d, const float* m, int64_t ldm,
                      const Tensor& maa, int64_t T, int64_t C, float* x) {
  parallel(T, 1, C, [&](int64_t t0, int64_t t1, int) {
    elementwise::lerp(a, d, m, ldm, f32(maa), t0, t1, C, x);
  });
}

void CpuBackend::decay(const float* dd, const Tensor& time_decay, int64_t T, int64_t C, float* w,
                       float* one_minus_w, float* log_w) {
  parallel(T, 1, 48 * C, [&](int64_t t0, int64_t t1, int) {
    elementwise::decay(dd, f32(time_decay), t0, t1, C, w, one_minus_w, log_w);
  });
}

void CpuBackend::gate(float* o, const float* g, int64_t n) {
  parallel(n, 4096, 4, [&](int64_t b, int64_t e, int) { kernels_->gate(o, g, b, e); });
}

void CpuBackend::wkv(const WkvArgs& a) {
  const int64_t C = a.H * a.N, KVD = a.Hkv * a.N, G = a.H / a.Hkv;
  const cpu::Kernels& k = *kernels_;
  // Heads are independent: one range of heads per thread, S of a head stays in that core's L1.
  pool_->parallel_for(a.H, 1, [&](int64_t h0, int64_t h1, int) {
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t kvh = h / G;
      const int64_t c = h * a.N;
      k.wkv_head(WkvHead{a.r + c, C, a.k + kvh * a.N, KVD, a.v + kvh * a.N, KVD, a.w + c,
                         a.one_minus_w + c, a.log_w + c, C, a.o + c, C, a.S + h * a.N * a.N, a.N,
                         a.T, a.scale});
    }
  });
}

void CpuBackend::sigmoid(float* x, int64_t n) {
  parallel(n, 4096, 4, [&](int64_t b, int64_t e, int) { elementwise::sigmoid(x, b, e); });
}

void CpuBackend::mul(float* o, const float* g, int64_t n) {
  parallel(n, 4096, 1, [&](int64_t b, int64_t e, int) { elementwise::mul(o, g, b, e); });
}

// Heads are independent (their channels of v_first included): one range of heads per thread,
// S of a head in that core's cache; each token's channel values and the state's update and read
// in the level's vector kernels, the output normalization in plain C++.
void CpuBackend::wkv7(const Wkv7Args& a) {
  const cpu::Kernels& k = *kernels_;
  const int64_t N = a.N, C = a.H * N;
  pool_->parallel_for(a.H, 1, [&](int64_t h0, int64_t h1, int) {
    Wkv7Token x;
    float y[kWkv7MaxHead];
    for (int64_t t = 0; t < a.T; ++t)
      for (int64_t h = h0; h < h1; ++h) {
        k.wkv7_token(a, t, h, x);
        k.wkv7_step(a.S + h * N * N, N, x, a.r + t * C + h * N, y);
        wkv7_output(a, t, h, y);
      }
  });
}

void CpuBackend::rope(float* x, int64_t T, int64_t n_heads, int64_t D, int64_t pos0,
                      const double* inv_freq) {
  parallel(T, 1, 16 * n_heads * D, [&](int64_t t0, int64_t t1, int) {
    elementwise::rope(x, t0, t1, n_heads, D, pos0, inv_freq);
  });
}

void CpuBackend::attention(const AttentionArgs& a) {
  const cpu::Kernels& k = *kernels_;
  pool_->parallel_for(cpu::attention_items(a), 1,
                      [&](int64_t i0, int64_t i1, int) { k.attention(a, i0, i1); });
}

}  // namespace qrwkv
