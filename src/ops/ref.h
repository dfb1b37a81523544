// Plain float32 reference kernels. They favour clarity over speed and are the ground truth that
// every optimized kernel is tested against.
#pragma once

#include <cmath>
#include <cstdint>

#include "ops/tensor.h"

namespace qrwkv::ref {

// Y[t, o] = Σ_i X[t, i] · W[o, i] + b[o]   (torch Linear: W is [out, in]; bias may be empty)
void linear(const float* x, int64_t T, const Tensor& w, const Tensor* bias, float* y);

// Y[t, j] = Σ_i X[t, i] · M[i, j]          (a plain matrix product: M is [in, out])
void matmul(const float* x, int64_t T, const Tensor& m, float* y);

// Y[t] = w ⊙ X[t] / sqrt(mean(X[t]²) + eps)
void rmsnorm(const float* x, int64_t T, int64_t C, const float* w, float eps, float* y);

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float silu(float x) { return x * sigmoid(x); }

}  // namespace qrwkv::ref
