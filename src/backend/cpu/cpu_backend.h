// The CPU backend: a thread pool and one table of kernels (kernels.h) chosen from the CPU's
// features when the backend is made. Element-wise stages compute exactly what the reference
// does (the same scalar expressions), split across threads when they are large enough to pay
// for it; those with exp or tanh (swiglu, gate, tanh), the matrix products, attention and the
// WKV recurrence use the table.
#pragma once

#include <memory>
#include <optional>

#include "backend/cpu/kernels.h"
#include "backend/host.h"
#include "ops/threadpool.h"

namespace qrwkv {

struct CpuOptions {
  int threads = 0;                // 0: one per physical core
  std::optional<cpu::Isa> level;  // unset: cpu::default_isa() (QRWKV_ISA, else the best)
};

class CpuBackend final : public HostBackend {
 public:
  explicit CpuBackend(const CpuOptions& options = {});

  std::string name() const override;
  cpu::Isa level() const { return kernels_->level; }
  int threads() const { return pool_->size(); }
  // Σ x[i] read with every thread at full vector width: the bandwidth probe of `qrwkv bench`.
  double sum(const float* x, int64_t n);
  // The multiply-add rate of a matrix path with every thread (operations per second, best of
  // three runs of about 50 ms), or 0 where this level has no such path.
  enum class Probe { Fp32Fma, Bf16Dot, Int16Dot, Int8Dot, AmxBf16 };
  double peak(Probe which);

  void prepare(const std::vector<WeightRef>& weights, WeightFormat format,
               WeightArena& arena) override;

  void embed(const Tensor& table, const int32_t* ids, int64_t T, float* h) override;
  void rmsnorm(const float* x, int64_t T, int64_t C, const Tensor& w, float eps, float* y) override;
  void linear(const float* x, int64_t T, const Tensor& w, const Tensor& b, float* y) override;
  // Projections with packed weights share one parallel region over all their panels.
  void linears(std::span<const LinearArgs> group) override;
  void matmul(const float* x, int64_t T, int64_t ldx, const Tensor& m, float* y) override;
  void add(float* h, const float* x, int64_t n) override;
  void swiglu(float* g, const float* u, int64_t n) override;

  void token_shift(const float* a, int64_t T, int64_t C, float* x_prev, const Tensor& maa_x,
                   float* d, float* xx) override;
  void tanh(float* x, int64_t n) override;
  void lerp(const float* a, const float* d, const float* m, int64_t ldm, const Tensor& maa,
            int64_t T, int64_t C, float* x) override;
  void decay(const float* dd, const Tensor& time_decay, int64_t T, int64_t C, float* w,
             float* one_minus_w, float* log_w) override;
  void gate(float* o, const float* g, int64_t n) override;
  void wkv(const WkvArgs& a) override;
  void sigmoid(float* x, int64_t n) override;
  void mul(float* o, const float* g, int64_t n) override;
  void wkv7(const Wkv7Args& a) override;

  void rope(float* x, int64_t T, int64_t n_heads, int64_t D, int64_t pos0,
            const double* inv_freq) override;
  void attention(const AttentionArgs& a) override;

 private:
  // Runs fn over [0, n) in ranges of whole grains: on the pool when n · cost_per_item is
  // large enough to pay for waking it, else on the calling thread.
  void parallel(int64_t n, int64_t grain, int64_t cost_per_item, ThreadPool::Job fn);
  // linear without the bias, for weights of any layout.
  void product(const float* x, int64_t T, const Tensor& w, float* y);
  void add_bias(float* y, int64_t T, const Tensor& b);
  // The panel kernels' preparation for a packed w, or null where none applies.
  using PreparePanels = void (*)(ThreadPool&, const float*, int64_t, const Tensor&, float*, int,
                                 cpu::PanelLinear&);
  PreparePanels panel_prepare(const Tensor& w) const;

  std::unique_ptr<ThreadPool> pool_;
  const cpu::Kernels* kernels_;
};

}  // namespace qrwkv
