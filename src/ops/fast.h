// Optimized kernels, checked against the float32 reference kernels in ref.h. The instruction
// set is chosen at run time (AVX-512, AVX2+FMA+F16C, or portable C++), so one binary runs on
// any x86-64 machine; tests force each level the machine supports.
#pragma once

#include <cstdint>

#include "ops/tensor.h"
#include "ops/threadpool.h"

namespace qrwkv::fast {

enum class Isa { Portable = 0, AVX2 = 1, AVX512 = 2 };

const char* isa_name(Isa isa);
// The best level this CPU supports.
Isa best_isa();

// Y[t, o] = Σ_i X[t, i] · W[o, i] + b[o]   (W [out, in] stored as F32, BF16 or F16; b may be
// empty). Output rows are split across the pool's threads; within a thread, blocks of 4 rows ×
// 4 tokens share every load of W and X. Accumulation is in float32.
void linear(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, const Tensor* bias,
            float* y, Isa isa = best_isa());

// Y[t, j] = Σ_i X[t, i] · M[i, j]   (M [in, out], as the QRWKV6 LoRA matrices are stored).
// Rows of M are streamed once per token block; the inner loop is a vector axpy over j.
void matmul(ThreadPool& pool, const float* x, int64_t T, const Tensor& m, float* y,
            Isa isa = best_isa());

// Σ x[i], read with the pool's threads at full vector width: a memory-bandwidth probe.
double sum(ThreadPool& pool, const float* x, int64_t n, Isa isa = best_isa());

}  // namespace qrwkv::fast
