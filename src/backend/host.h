// What the backends that compute in host memory (the reference and the CPU backend) share:
// activation memory from operator new, results already on the host, the KV cache as host
// vectors, and weights held as vectors in F32 and projections in the dtype of the chosen
// --dtype format, converted once at load.
#pragma once

#include <vector>

#include "backend/backend.h"
#include "ops/threadpool.h"

namespace qrwkv {

// Converts what needs converting (rows split across the pool's threads when one is given).
// With `panels`, projections that a Panel32 layout can hold (BF16, Q8_0 and Q4_0 targets, rows
// of a multiple of 32) are packed so (ops/panel.h), whether or not their dtype changes.
void prepare_host_weights(const std::vector<WeightRef>& weights, WeightFormat format,
                          WeightArena& arena, ThreadPool* pool, bool panels = false);

class HostBackend : public Backend {
 public:
  // Through operator new, so that every allocation of the engine goes one way (and a test can
  // count them all).
  void* alloc(size_t bytes) override;
  void free(void* p) noexcept override;
  void download(float* host, const float* src, int64_t n) override;
  void gather_rows(const float* src, int64_t C, const int64_t* rows, int64_t R,
                   float* dst) override;
  void kv_append(std::vector<float>& k_cache, std::vector<float>& v_cache, const float* k,
                 const float* v, int64_t T, int64_t kv_dim) override;

 protected:
  // A weight vector after prepare_host_weights (F32, aligned).
  static const float* f32(const Tensor& t) { return reinterpret_cast<const float*>(t.data); }
};

}  // namespace qrwkv
