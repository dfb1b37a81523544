// The element-wise stages of the model as plain loops over a range of rows (or of values), shared
// by the backends that compute in host memory: the reference backend runs each over the whole
// range on one thread, the CPU backend splits the range across its threads. Both therefore
// compute exactly the same values (the tests check it anyway). Formulas: backend/backend.h.
#pragma once

#include <cmath>
#include <cstdint>

#include "ops/tensor.h"

namespace qrwkv::elementwise {

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float silu(float x) { return x * sigmoid(x); }

// Rows [t0, t1) of the T-row operations; values [b, e) of the flat ones.
void embed(const Tensor& table, const int32_t* ids, int64_t t0, int64_t t1, float* h);
void rmsnorm(const float* x, int64_t t0, int64_t t1, int64_t C, const float* w, float eps,
             float* y);
void add(float* h, const float* x, int64_t b, int64_t e);
void swiglu(float* g, const float* u, int64_t b, int64_t e);
void tanh(float* x, int64_t b, int64_t e);
void gate(float* o, const float* g, int64_t b, int64_t e);
void sigmoid(float* x, int64_t b, int64_t e);
void mul(float* o, const float* g, int64_t b, int64_t e);
// d[t] = prev[t] − a[t] (prev[0] = x_prev, prev[t] = a[t−1]) and xx[t] = a[t] + d[t] ⊙ maa_x;
// x_prev itself is not changed here.
void token_shift(const float* a, int64_t t0, int64_t t1, int64_t C, const float* x_prev,
                 const float* maa_x, float* d, float* xx);
void lerp(const float* a, const float* d, const float* m, int64_t ldm, const float* maa, int64_t t0,
          int64_t t1, int64_t C, float* x);
void decay(const float* dd, const float* time_decay, int64_t t0, int64_t t1, int64_t C, float* w,
           float* one_minus_w, float* log_w);
void rope(float* x, int64_t t0, int64_t t1, int64_t n_heads, int64_t D, int64_t pos0,
          const double* inv_freq);

}  // namespace qrwkv::elementwise
