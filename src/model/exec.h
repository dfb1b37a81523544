// How a forward pass runs: the plain float32 reference kernels, or the optimized ones on a
// thread pool. Both compute the same function; tests compare them.
#pragma once

#include <memory>

#include "ops/fast.h"
#include "ops/ref.h"
#include "ops/threadpool.h"

namespace qrwkv {

struct Exec {
  bool reference = false;            // true: ops/ref.h only, single-threaded
  fast::Isa isa = fast::best_isa();  // the instruction-set level of the fast kernels
  std::shared_ptr<ThreadPool> pool;  // shared by copies of a Model

  // Y = X Wᵀ + b
  void linear(const float* x, int64_t T, const Tensor& w, const Tensor* b, float* y) const {
    if (reference || !pool)
      ref::linear(x, T, w, b, y);
    else
      fast::linear(*pool, x, T, w, b, y, isa);
  }

  // Y = X M   (M [in, out])
  void matmul(const float* x, int64_t T, const Tensor& m, float* y) const {
    if (reference || !pool)
      ref::matmul(x, T, m, y);
    else
      fast::matmul(*pool, x, T, m, y, isa);
  }

  // A reference Exec, and a fast one with `threads` threads (0: one per physical core).
  static Exec make_reference() { return Exec{true, fast::Isa::Portable, nullptr}; }
  static Exec make_fast(int threads = 0) {
    return Exec{false, fast::best_isa(),
                std::make_shared<ThreadPool>(threads > 0 ? threads : physical_cores())};
  }
};

}  // namespace qrwkv
