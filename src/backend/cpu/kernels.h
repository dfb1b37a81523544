// The CPU backend's table of kernels. One table is built per instruction-set level; each entry
// holds the best implementation at or below that level, so that forcing a level (QRWKV_ISA, or
// a test) changes every entry at once.
#pragma once

#include <algorithm>
#include <cstdint>

#include "backend/backend.h"
#include "backend/cpu/features.h"
#include "backend/wkv.h"
#include "backend/wkv7.h"
#include "ops/tensor.h"
#include "ops/threadpool.h"

namespace qrwkv::cpu {

// From this many tokens on, linear and matmul use a packed GEMM (where the table has one)
// instead of the row-dot kernels. Below it, the row-dot kernels (which read W in place and use
// each loaded block of rows for every token) beat packing panels for so few tokens: a batched
// decode step of 16 sequences of the 0.5B QRWKV6 ran at 72 t/s through the GEMM and 100 t/s
// through the row-dot kernels (Q8_0, Zen 4, 2 threads); at 32 the two are even.
constexpr int64_t kGemmMinTokens = 32;

// Decode streams each weight matrix once. One core keeps only a few dozen cache-line misses in
// flight, which at the memory's latency caps it near half of its share of the bandwidth; so the
// row-dot kernels, besides fetching the next block of rows into L1, ask for the bytes this far
// ahead into L2 (+25-30% decode speed on Zen 4, one or two threads).
constexpr int64_t kPrefetchFar = 16384;

// A projection with a packed (Panel32) weight whose activations have been converted for the
// level's panel kernels (Kernels::prepare_bf16 / prepare_int8): run(l, p0, p1) computes the
// outputs of panels [p0, p1), so several projections can share one parallel region.
struct PanelLinear {
  const Tensor* w = nullptr;
  int64_t T = 0;
  float* y = nullptr;
  const void* act = nullptr;  // the converted activations (the level's own form)
  void (*run)(const PanelLinear& l, int64_t p0, int64_t p1) = nullptr;
};
// Projections prepared at once (the most a Backend::linears group uses: r, k, v and g).
constexpr int kPanelSlots = 4;

// How far ahead of its reads (in bytes) a decode kernel over packed panels asks for them in L2,
// or 0 for no software prefetch. Each thread streams its panels sequentially, from memory in
// huge pages: on AMD Zen 5 the hardware prefetchers keep up alone and the extra instructions cost
// 8-10% of decode speed (bf16, q8_0 and q4_0, 0.5B shapes, 2 threads, A/B in one process); on
// Intel, whose L2 streamer stops at each 4 KiB boundary, the row-major kernels gained 25-40%
// from prefetching 16 KiB ahead, which the panel kernels keep there.
int64_t panel_prefetch_bytes();

struct Kernels {
  Isa level = Isa::Portable;

  // Whether prepare packs projections into the Panel32 layout (ops/panel.h) for linear_bf16 and
  // linear_int8, which read both layouts (from AVX512BF16 on). The levels below keep weights
  // row-major, as checkpoints store them.
  bool panels = false;

  // Rows [r0, r1) of Y = X Wᵀ: Y[t, r] = Σ_i X[t, i] W[r, i] for X [T, in] and W [out, in] in
  // any dtype (F32, BF16, F16, Q8_0, Q4_0), Y [T, out]. Weights are widened exactly to float32,
  // sums are float32. Blocks of rows × tokens share every load of W and X; decode (T = 1) is
  // bound by streaming W once, which these kernels do with prefetches one block of rows ahead
  // (into L1) and kPrefetchFar bytes ahead (into L2).
  void (*rowdot)(const float* x, int64_t T, const Tensor& w, int64_t r0, int64_t r1,
                 float* y) = nullptr;

  // Decodes nb blocks of a row of any block format into float32, the reference's values bit for
  // bit (ops/quant.h dequantize_blocks; vectorized for the k-quants from AVX512 on): the
  // CPU backend's path for the GGUF formats that have no kernels of their own.
  void (*dequant_row)(DType dt, const uint8_t* blocks, int64_t nb, float* out) = nullptr;
  // Rows [r0, r1) of Y = X Wᵀ ([T, out]) for W in a k-quant format, each super-block decoded
  // once into registers for up to 4 tokens (few tokens: no float32 copy of the rows); false for
  // formats it does not decode. Null below AVX512.
  bool (*rowdot_kquant)(const float* x, int64_t T, const Tensor& w, int64_t r0, int64_t r1,
                        float* y) = nullptr;

  // Tokens [t0, t1) of Y = X M: Y[t, j] = Σ_i X[t, i] M[i, j] for X rows ldx apart and
  // M [in, out] in F32, BF16 or F16: rows of M are streamed once per token block and the inner
  // loop is a vector axpy over j.
  void (*matmul_rows)(const float* x, int64_t ldx, const Tensor& m, int64_t t0, int64_t t1,
                      float* y) = nullptr;
  // Columns [j0, j1) of the same product for all T tokens (few tokens: the threads split M's
  // columns, so that each reads only its part of M).
  void (*matmul_cols)(const float* x, int64_t T, int64_t ldx, const Tensor& m, int64_t j0,
                      int64_t j1, float* y) = nullptr;

  // The WKV recurrence of one head (backend/wkv.h) with each row of S updated and read in one
  // pass (o += q_i · S_i right after S_i is updated, rows being independent), vectorized over the
  // value channels: S stays in L1 and each element costs two fused multiply-adds.
  void (*wkv_head)(const WkvHead& h) = nullptr;

  // One token of the RWKV-7 delta rule on one head's S [N, N] (backend/wkv7.h,
  // wkv7_step_reference), vectorized over the value channels in blocks of up to four vectors:
  // sa = κᵀ S for the block, then each row updated and read (y += r_i · S_i) in one pass.
  void (*wkv7_step)(float* S, int64_t N, const Wkv7Token& x, const float* r, float* y) = nullptr;
  // Its per-token channel values (wkv7_token of backend/wkv7.h) with the vectorized exp and
  // sigmoid below: the same formulas to a few ulp.
  void (*wkv7_token)(const Wkv7Args& a, int64_t t, int64_t h, Wkv7Token& x) = nullptr;

  // Work items [i0, i1) of causal attention (backend.h): items are (token, kv head, chunk of
  // kAttentionGroup of its query heads), attention_items(a) of them, ordered so that equal ranges
  // hold about equal work; the heads of a chunk share each key and value row.
  void (*attention)(const AttentionArgs& a, int64_t i0, int64_t i1) = nullptr;

  // Element-wise stages with a transcendental function, over elements [b, e), vectorized with
  // a polynomial exp and tanh (a few ulp from the C library's): swiglu g ← silu(g) · u, gate
  // o ← o · σ(g), tanh x ← tanh(x).
  void (*swiglu)(float* g, const float* u, int64_t b, int64_t e) = nullptr;
  void (*gate)(float* o, const float* g, int64_t b, int64_t e) = nullptr;
  void (*tanh)(float* x, int64_t b, int64_t e) = nullptr;

  // Compute probes of `qrwkv bench`: `iters` rounds of multiply-adds into 12 independent vector
  // accumulators with the instructions of a matrix path, returning the operations done (two
  // per multiply-add): float32 FMAs (the float32 GEMM; every level), vdpbf16ps (the bf16 path;
  // null below AVX512BF16) and vpdpbusd (the int8 path; null below AVX512VNNI).
  double (*fma_probe)(int64_t iters) = nullptr;
  double (*bf16_probe)(int64_t iters) = nullptr;
  double (*int8_probe)(int64_t iters) = nullptr;
  // vpdpwssd, the int16 path of block weights (null below AVX512BF16).
  double (*int16_probe)(int64_t iters) = nullptr;
  // tdpbf16ps on four accumulator tiles (the AMX level's matrix engine; null below AMX).
  double (*amx_probe)(int64_t iters) = nullptr;

  // Σ x[i] at full vector width: the memory-bandwidth probe of `qrwkv bench`.
  double (*sum)(const float* x, int64_t n) = nullptr;

  // Y = X Wᵀ (or Y = X M with `transposed`, M [in, out]) through a packed, cache-blocked
  // float32 GEMM, for T ≥ kGemmMinTokens; X rows ldx apart. Null below AVX512.
  void (*gemm)(ThreadPool& pool, const float* x, int64_t T, int64_t ldx, const Tensor& w,
               bool transposed, float* y) = nullptr;

  // Y = X M for a LoRA matrix that prepare packed (the Panel32 BF16 panels of Mᵀ, shape
  // [out, in]), X rows ldx apart, float32 activations and products (the exact function).
  // Null below AVX512BF16.
  void (*matmul_packed)(ThreadPool& pool, const float* x, int64_t T, int64_t ldx, const Tensor& m,
                        float* y) = nullptr;

  // Y = X Wᵀ for W in BF16 with X rounded to bf16 once per call and bf16 dot products
  // (bf16_avx512.cpp); no bias. Null below AVX512BF16.
  void (*linear_bf16)(ThreadPool& pool, const float* x, int64_t T, const Tensor& w,
                      float* y) = nullptr;
  // For a packed BF16 W: converts X as linear_bf16 does into the buffers of `slot` (<
  // kPanelSlots; kept until the next prepare of that slot on this thread) and fills l.
  void (*prepare_bf16)(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y,
                       int slot, PanelLinear& l) = nullptr;

  // Y = X Wᵀ for W in Q8_0 or Q4_0 with X quantized per block of 32 once per call and integer
  // dot products, no bias: int16 activations and vpdpwssd at AVX512BF16 (int16_avx512.cpp),
  // int8 activations and vpdpbusd at AVX512VNNI (int8_vnni.cpp). Null below AVX512BF16.
  void (*linear_blocks)(ThreadPool& pool, const float* x, int64_t T, const Tensor& w,
                        float* y) = nullptr;
  // The same preparation as prepare_bf16, for a packed Q8_0 or Q4_0 W.
  void (*prepare_blocks)(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y,
                         int slot, PanelLinear& l) = nullptr;
};

// Runs fn over the panels [0, n) of packed weights of `bytes` bytes in all. Decode (T <
// kGemmMinTokens) is bound by memory: panels go out in chunks (about eight per thread, of at
// least 32 KiB) to whichever thread is free (ThreadPool::parallel_chunks), so that a thread slowed
// by its memory channel or a neighbour does not hold the other at the barrier; and work below
// 128 KiB of weights per token (a LoRA matrix) stays on the calling thread, which reads it in
// less time than waking the pool costs. Prefill splits the panels evenly (equal work per panel).
inline void run_panels(ThreadPool& pool, int64_t n, int64_t T, int64_t bytes, ThreadPool::Job fn) {
  constexpr int64_t kSerialBytes = 128 * 1024, kMinChunkBytes = 32 * 1024;
  if (bytes * T < kSerialBytes) {
    fn(0, n, 0);
  } else if (T < kGemmMinTokens) {
    const int64_t per_panel = std::max<int64_t>(1, bytes / std::max<int64_t>(1, n));
    const int64_t chunk =
        std::max({int64_t{1}, n / (8 * pool.size()), (kMinChunkBytes + per_panel - 1) / per_panel});
    pool.parallel_chunks(n, chunk, fn);
  } else {
    pool.parallel_for(n, 1, fn);
  }
}

// What linear does to activations at `level` (backend.h): Exact below AVX512BF16, Int16 there
// and at AMX, Int8 at AVX512VNNI. RefBackend(activation_rounding(l)) computes the level's
// function.
ActivationRounding activation_rounding(Isa level);

// The table for `level` (capped at max_isa()).
const Kernels& kernels_for(Isa level);

// Per-level parts of the table (kernels_*.cpp).
namespace portable {
void fill(Kernels& k);
}
// Query heads per work item of Kernels::attention, and the items of a call.
constexpr int64_t kAttentionGroup = 8;
inline int64_t attention_items(const AttentionArgs& a) {
  return a.T * a.Hkv * ((a.H / a.Hkv + kAttentionGroup - 1) / kAttentionGroup);
}

namespace avx2 {
void fill(Kernels& k);
}
namespace avx512 {
void fill(Kernels& k);
// Rows [r0, r1) of Y = X Wᵀ at the AVX-512 level (the bf16 path uses it for block weights).
void rowdot(const float* x, int64_t T, const Tensor& w, int64_t r0, int64_t r1, float* y);
void gemm(ThreadPool& pool, const float* x, int64_t T, int64_t ldx, const Tensor& w,
          bool transposed, float* y);
}  // namespace avx512
namespace avx512bf16 {
void linear(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y);
void matmul_packed(ThreadPool& pool, const float* x, int64_t T, int64_t ldx, const Tensor& m,
                   float* y);
void prepare_panels(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y,
                    int slot, PanelLinear& l);
double probe(int64_t iters);
}  // namespace avx512bf16
namespace avx512kq {
void dequant_rows(DType dt, const uint8_t* blocks, int64_t nb, float* out);
bool rowdot(const float* x, int64_t T, const Tensor& w, int64_t r0, int64_t r1, float* y);
}  // namespace avx512kq
namespace avx512int16 {
void linear(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y);
double probe(int64_t iters);
void prepare_panels(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y,
                    int slot, PanelLinear& l);
}  // namespace avx512int16
namespace amx {
// Asks Linux for the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM); false where refused.
bool request_permission();
void linear_bf16(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y);
void prepare_bf16(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y, int slot,
                  PanelLinear& l);
void linear_blocks(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y);
void prepare_blocks(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y,
                    int slot, PanelLinear& l);
double probe(int64_t iters);
// The same kernels with the tile instructions carried out in C++ (amx.cpp): for the tests, on
// any CPU with the AVX512BF16 level.
namespace emulated {
void linear_bf16(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y);
void linear_blocks(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y);
}  // namespace emulated
}  // namespace amx
namespace avx512vnni {
void linear(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y);
void prepare_panels(ThreadPool& pool, const float* x, int64_t T, const Tensor& w, float* y,
                    int slot, PanelLinear& l);
double probe(int64_t iters);
}  // namespace avx512vnni

}  // namespace qrwkv::cpu
