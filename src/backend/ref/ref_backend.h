// The reference backend: every operation as plain float32 loops on the calling thread, written
// to be read next to docs/model.md. Every other backend is tested against it.
#pragma once

#include "backend/host.h"

namespace qrwkv {

class RefBackend final : public HostBackend {
 public:
  // With a rounding other than Exact, linear rounds X as backend.h describes: the functions
  // the CPU backend computes at its rounded levels (kernels.h, activation_rounding), here as
  // plain loops, so that those levels can be checked against the same function.
  explicit RefBackend(ActivationRounding rounding = ActivationRounding::Exact)
      : rounding_(rounding) {}
  std::string name() const override;

  void prepare(const std::vector<WeightRef>& weights, WeightFormat format,
               WeightArena& arena) override;

  void embed(const Tensor& table, const int32_t* ids, int64_t T, float* h) override;
  void rmsnorm(const float* x, int64_t T, int64_t C, const Tensor& w, float eps, float* y) override;
  void linear(const float* x, int64_t T, const Tensor& w, const Tensor& b, float* y) override;
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
  void linear_blocks(const float* x, int64_t T, const Tensor& w, const Tensor& b, float* y);

  ActivationRounding rounding_;
};

}  // namespace qrwkv
