// Optimized kernels, checked against the float32 reference kernels in ref.h. The instruction
// set is chosen at run time (AVX-512, AVX2+FMA+F16C, or portable C++), so one binary runs on
// any x86-64 machine; tests force each level the machine supports.
#pragma once

#include <cstdint>

#include "ops/tensor.h"
#include "ops/threadpool.h"

namespace qrwkv::fast {

// AVX512BF16 adds bfloat16 dot products (vdpbf16ps), used for BF16 and block-quantized weights.
enum class Isa { Portable = 0, AVX2 = 1, AVX512 = 2, AVX512BF16 = 3 };

const char* isa_name(Isa isa);
// The highest level this CPU can run.
Isa max_isa();
// The level kernels use by default: max_isa(), except that AVX512BF16 is only chosen on CPUs
// whose bf16 dot products outrun float32 FMAs (AMD Zen 4/5; on Intel Xeons vdpbf16ps runs at
// half the FMA rate). The environment variable QRWKV_ISA (portable, avx2, avx512, avx512bf16)
// overrides the choice, capped at max_isa().
Isa best_isa();

// Y[t, o] = Σ_i X[t, i] · W[o, i] + b[o]   (W [out, in] stored as F32, BF16, F16, Q8_0 or
// Q4_0; b may be empty). Accumulation is in float32.
//
// At the AVX512BF16 level, BF16 and block-quantized weights take the bf16 dot-product path
// (linear_bf16_dot), which rounds X to bfloat16. Everywhere else X is used in float32 and the
// weights are widened exactly to float32: from kGemmMinTokens tokens on (AVX-512) a packed GEMM
// (gemm_f32_avx512), below that row-dot kernels in which output rows are split across the
// pool's threads and blocks of 4 rows × 4 tokens share every load of W and X.
void linear(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, const Tensor* bias,
            float* y, Isa isa = best_isa());

// Whether this CPU can run the AVX512BF16 level.
bool cpu_has_bf16_dot();
// From this many tokens on, linear uses a packed GEMM instead of row-dot kernels.
constexpr int64_t kGemmMinTokens = 16;
// The AVX-512 float32 packed GEMM (fast_gemm.cpp), any weight dtype; no bias. With
// `transposed`, w is M [in, out] (F32, BF16 or F16) and Y = X M.
void gemm_f32_avx512(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y,
                     bool transposed = false);
// Rows [r0, r1) of Y = X Wᵀ for Q8_0/Q4_0 weights with AVX-512 row-dot kernels; Y has stride
// w.shape[0].
void rowdot_blocks_avx512(const float* x, int64_t T, const Tensor& w, int64_t r0, int64_t r1,
                          float* y);
// Y = X Wᵀ for W in BF16, Q8_0 or Q4_0 with X rounded to bfloat16 (fast_bf16.cpp); no bias.
void linear_bf16_dot(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y);

// Y[t, j] = Σ_i X[t, i] · M[i, j]   (M [in, out], as the QRWKV6 LoRA matrices are stored).
// From kGemmMinTokens tokens on (AVX-512) the packed GEMM; otherwise rows of M are streamed once
// per token block and the inner loop is a vector axpy over j.
void matmul(ThreadPool& pool, const float* x, int64_t T, const Tensor& m, float* y,
            Isa isa = best_isa());

// Σ x[i], read with the pool's threads at full vector width: a memory-bandwidth probe.
double sum(ThreadPool& pool, const float* x, int64_t n, Isa isa = best_isa());

}  // namespace qrwkv::fast
