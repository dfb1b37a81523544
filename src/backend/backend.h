// The seam between the model and its kernels. Model code (src/model) describes a forward pass as
// a sequence of Backend calls on buffers it takes from a Workspace; it never computes on
// activations itself and never asks which backend it runs on. A backend decides how weights are
// held (prepare), where activations live (alloc) and how each operation is computed.
//
// Two backends exist (docs/architecture.md):
//   RefBackend  plain float32 loops on one thread: the reference every other backend is tested
//               against, kept forever (backend/ref).
//   CpuBackend  a thread pool and a table of kernels chosen once from the CPU's features
//               (backend/cpu).
//
// Conventions. Activations are float32, row-major: a [T, C] buffer holds T tokens of C values.
// Weights are Tensors after prepare(): projections ("linear", W [out, in]) in the dtype the
// backend chose, LoRA matrices ("matmul", M [in, out]) as stored, and every vector (norm
// weights, biases, mix coefficients) as F32. Operations may be given overlapping input and
// output only where they say so.
//
// What a device backend (e.g. CUDA) implements, without changes to model code:
//   - alloc/free return device memory; every float* the model passes to an operation comes from
//     them (through Workspace), except where a parameter says "host".
//   - prepare() uploads each weight (and may repack it) and returns a Tensor whose `data` is a
//     device pointer; the host view may be dropped.
//   - download() copies results (logits) to host memory.
//   - State stays a host value (it is copied, saved, forked and cached by the runtime). The
//     operations that read or advance a state (wkv, token_shift, kv_append, attention) receive
//     host pointers to it; a device backend copies the layer's state in and out around them,
//     or keeps a device mirror keyed by the State's buffers and invalidated on copy.
//   - Operations run in call order; a device backend may queue them on one stream, but must
//     finish before download() returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ops/tensor.h"

namespace qrwkv {

// How a weight is used, which decides how prepare() may store it.
enum class WeightRole {
  Vector,         // norm weights, biases, per-channel coefficients: held as F32
  Embedding,      // token embeddings [V, C]: rows are gathered, kept as stored
  Projection,     // linear W [out, in] of the sequence mixer and the lm_head: --dtype applies
  MlpProjection,  // linear W [out, in] of the MLP: --dtype applies (q4_0 puts only these in 4 bits)
  LoraMatrix,     // matmul M [in, out] (QRWKV6's LoRA matrices): values kept as stored (a
                  // backend may hold them transposed or packed)
};

// A weight of the model: its role and the tensor, which prepare() may replace.
struct WeightRef {
  WeightRole role;
  Tensor* tensor;
};

// How --dtype stores the projection matrices in memory. Q4_0 puts only the MLP matrices (about
// 80% of a layer's weights) in Q4_0 and keeps the attention / time-mix projections and lm_head
// in Q8_0: 4-bit errors in the time-mix projections compound through the recurrent state, and
// on the QRWKV6 test model the mean KL divergence from the stored model drops from 0.47
// (Q4_0_PURE, every projection in Q4_0) to 0.008, against 0.007 for Q8_0 (`qrwkv kl`).
//
// The k-quant formats quantize as llama-quantize does (ops/quant.h, quantize_ggml), the untied
// embedding included: Q4_K, Q5_K and Q6_K put every matrix in that type but lm_head in Q6_K;
// Q4_K_M and Q5_K_M are llama-quantize's mixes (also the MLP down projection and attention's v
// of some layers in Q6_K); rows that are not whole 256-blocks fall back to Q5_0 / Q5_1 / Q8_0
// (mixed_type).
enum class WeightFormat {
  Stored,
  F32,
  BF16,
  F16,
  Q8_0,
  Q4_0,
  Q4_0_PURE,
  Q4_K,
  Q5_K,
  Q6_K,
  Q4_K_M,
  Q5_K_M
};

// "f32", "bf16", "f16", "q8_0", "q4_0", "q4_0_pure", "q4_k", "q5_k", "q6_k", "q4_k_m",
// "q5_k_m" (or "" for Stored); throws on others.
WeightFormat parse_weight_format(const std::string& name);
const char* weight_format_name(WeightFormat f);

// Memory that prepared weights point into; shared by copies of the weights.
using WeightArena = std::vector<std::shared_ptr<const void>>;

// One projection Y = X Wᵀ + b of a group (Backend::linears).
struct LinearArgs {
  const float* x;  // [T, in]
  int64_t T;
  const Tensor* w;  // [out, in]
  const Tensor* b;  // [out] or empty
  float* y;         // [T, out]
};

// The inputs of the WKV operation: T tokens of one sequence, all heads (docs/model.md).
struct WkvArgs {
  const float* r;            // [T, H·N] receptance
  const float* k;            // [T, Hkv·N]; q-head h reads kv-head ⌊h / (H/Hkv)⌋
  const float* v;            // [T, Hkv·N]
  const float* w;            // [T, H·N] decay in (0, 1]
  const float* one_minus_w;  // [T, H·N] 1 − w
  const float* log_w;        // [T, H·N] log w
  int64_t T, H, Hkv, N;
  float scale;  // r is read as r · scale
  float* S;     // host: the state's [H, N, N] matrices, advanced past the T tokens
  float* o;     // [T, H·N]
};

// The inputs of the RWKV-7 time mix's per-token work and recurrence, T tokens of one sequence,
// all heads (model/qrwkv7.cpp, backend/wkv7.h). The LoRA outputs come without their base vectors,
// which the operation adds.
struct Wkv7Args {
  const float* r;      // [T, H·N] receptance (RoPE applied when the model has it)
  const float* k;      // [T, Hkv·N] (RoPE applied); q-head h reads kv-head ⌊h / (H/Hkv)⌋
  const float* v;      // [T, Hkv·N]
  const float* d;      // [T, H·N] tanh(x w1) w2: decay pre-activation less w0
  const float* a;      // [T, H·N] (x a1) a2: in-context learning rate pre-activation less a0
  const float* nu;     // [T, H·N] (x v1) v2: value-residual mix less v0; null in layer 0
  const Tensor* w0;    // [C] (vectors: F32)
  const Tensor* a0;    // [C]
  const Tensor* v0;    // [C]; unused in layer 0
  const Tensor* k_k;   // [C]; empty: the balance-state variant (κ from k alone)
  const Tensor* k_a;   // [C]; empty with k_k
  const Tensor* ln_w;  // [C] per-head GroupNorm weight; empty: the output is scaled by N^-½
  const Tensor* ln_b;  // [C]
  float* v_first;      // [T, H·N]: written by layer 0 (its values, heads expanded), read after
  int64_t T, H, Hkv, N;
  float* S;  // host: the state's [H, N, N] matrices (key × value), advanced past the T tokens
  float* y;  // [T, H·N]
};

// The inputs of causal attention over a KV cache: T new tokens at positions pos0 .. pos0+T−1,
// whose keys and values are already in the cache.
struct AttentionArgs {
  const float* q;        // [T, H·D], RoPE applied
  const float* k_cache;  // host: [pos0 + T, Hkv·D], RoPE applied to the keys
  const float* v_cache;  // host: [pos0 + T, Hkv·D]
  int64_t T, pos0, H, Hkv, D;
  float* o;  // [T, H·D]
};

class Backend {
 public:
  virtual ~Backend() = default;

  // E.g. "reference" or "cpu avx512 (2 threads)".
  virtual std::string name() const = 0;

  // ---- memory ---------------------------------------------------------------------------
  // Buffers for activations, aligned to 64 bytes. Workspace (below) is the usual client.
  virtual void* alloc(size_t bytes) = 0;
  virtual void free(void* p) noexcept = 0;
  // Copies n floats from a buffer of this backend to host memory.
  virtual void download(float* host, const float* src, int64_t n) = 0;

  // ---- weights --------------------------------------------------------------------------
  // Brings every weight into the form this backend computes with: vectors to F32, projections
  // to `format`, and whatever repacking or upload the backend wants. Called once, at load.
  // New bytes go to `arena`.
  virtual void prepare(const std::vector<WeightRef>& weights, WeightFormat format,
                       WeightArena& arena) = 0;

  // ---- the layer skeleton -----------------------------------------------------------------
  // h[t] = table[ids[t]] for t < T (ids in host memory).
  virtual void embed(const Tensor& table, const int32_t* ids, int64_t T, float* h) = 0;
  // y[t] = w ⊙ x[t] / sqrt(mean(x[t]²) + eps) for T rows of C; y may be x.
  virtual void rmsnorm(const float* x, int64_t T, int64_t C, const Tensor& w, float eps,
                       float* y) = 0;
  // Y = X Wᵀ + b   (X [T, in], W [out, in], b [out] or empty; Y [T, out])
  virtual void linear(const float* x, int64_t T, const Tensor& w, const Tensor& b, float* y) = 0;
  // Several independent projections (no y overlaps another's x or y), e.g. the receptance,
  // key, value and gate of a layer from their inputs: a backend may compute them together, as
  // the CPU backend does in one parallel region. The same results as linear on each.
  virtual void linears(std::span<const LinearArgs> group) {
    for (const LinearArgs& l : group) linear(l.x, l.T, *l.w, *l.b, l.y);
  }
  // Y = X M        (X [T, in] with rows ldx floats apart, M [in, out], Y [T, out])
  virtual void matmul(const float* x, int64_t T, int64_t ldx, const Tensor& m, float* y) = 0;
  // h += x  (n values)
  virtual void add(float* h, const float* x, int64_t n) = 0;
  // g = silu(g) ⊙ u  (n values)
  virtual void swiglu(float* g, const float* u, int64_t n) = 0;
  // dst[i] = src[rows[i]] for R rows of C values (rows in host memory).
  virtual void gather_rows(const float* src, int64_t C, const int64_t* rows, int64_t R,
                           float* dst) = 0;

  // ---- the QRWKV6 time mix (docs/model.md, "Time mix") ----------------------------------
  // Token shift: d[t] = prev[t] − a[t] with prev[0] = x_prev (host: the state's last input,
  // replaced by a[T−1]) and prev[t] = a[t−1]; xx[t] = a[t] + d[t] ⊙ maa_x.
  virtual void token_shift(const float* a, int64_t T, int64_t C, float* x_prev, const Tensor& maa_x,
                           float* d, float* xx) = 0;
  // x ← tanh(x)  (n values)
  virtual void tanh(float* x, int64_t n) = 0;
  // x[t] = a[t] + d[t] ⊙ (maa + m[t])  for T rows of C; m has rows ldm apart.
  virtual void lerp(const float* a, const float* d, const float* m, int64_t ldm, const Tensor& maa,
                    int64_t T, int64_t C, float* x) = 0;
  // log w = −exp(time_decay + dd), w = exp(log w), 1 − w = −expm1(log w), for T rows of C.
  virtual void decay(const float* dd, const Tensor& time_decay, int64_t T, int64_t C, float* w,
                     float* one_minus_w, float* log_w) = 0;
  // o ← o ⊙ sigmoid(g)  (n values)
  virtual void gate(float* o, const float* g, int64_t n) = 0;
  // The WKV recurrence over all heads (backend/wkv.h).
  virtual void wkv(const WkvArgs& a) = 0;

  // ---- the QRWKV7 time mix (model/qrwkv7.cpp) -------------------------------------------
  // x ← sigmoid(x)  (n values)
  virtual void sigmoid(float* x, int64_t n) = 0;
  // o ← o ⊙ g  (n values)
  virtual void mul(float* o, const float* g, int64_t n) = 0;
  // Decay, learning rate, value residual, normalized key, the delta-rule recurrence and the
  // output normalization, for every head (backend/wkv7.h).
  virtual void wkv7(const Wkv7Args& a) = 0;

  // ---- softmax attention (docs/model.md, "Attention") -----------------------------------
  // Rotates T rows of n_heads heads of D in place: pair (i, i + D/2) of the head at position
  // pos0 + t by the angle (pos0 + t) · inv_freq[i] (host, D/2 values).
  virtual void rope(float* x, int64_t T, int64_t n_heads, int64_t D, int64_t pos0,
                    const double* inv_freq) = 0;
  // Appends T rows of keys and values ([T, kv_dim] each) to a host KV cache.
  virtual void kv_append(std::vector<float>& k_cache, std::vector<float>& v_cache, const float* k,
                         const float* v, int64_t T, int64_t kv_dim) = 0;
  // o[t, h] = softmax(q[t, h] · K[0 .. pos0+t]ᵀ / sqrt(D)) V   (kv-head ⌊h / (H/Hkv)⌋)
  virtual void attention(const AttentionArgs& a) = 0;
};

// What linear does to its activations X before the products, by weight dtype (docs/model.md,
// "Weight formats and precision"):
//   Exact  nothing: float32 X for every dtype
//   Int16  for BF16 weights X rounded to bfloat16 (nearest even); for Q8_0 and Q4_0 weights X
//          quantized to int16 per block of 32 (quantize_act_int16, ops/quant.h), each block's
//          integer dot product exact and scaled by both scales
//   Int8   as Int16, but Q8_0 and Q4_0 weights see X quantized to int8 per block
//          (quantize_act_int8)
// F32 and F16 weights always see float32 activations.
enum class ActivationRounding { Exact, Int16, Int8 };

// A reference backend computing linear with the given activation rounding, and a CPU backend
// with `threads` threads (0: one per physical core) at the instruction-set level QRWKV_ISA
// names, else the default for this CPU (backend/cpu/features.h).
std::shared_ptr<Backend> make_reference_backend(
    ActivationRounding rounding = ActivationRounding::Exact);
std::shared_ptr<Backend> make_cpu_backend(int threads = 0);

// Activation buffers for forward passes, taken from a backend's alloc(): a bump allocator whose
// memory is kept from one pass to the next, so that a pass of a shape already seen allocates
// nothing (like llama2.c's RunState, but sized from the first pass instead of in advance).
//
// A pass calls reset() and then take()s what it needs; mark()/release() give scoped buffers
// back within a pass (each layer's temporaries reuse the same memory). When a pass outgrows
// the memory, more is allocated on the spot without moving what was taken; the next reset()
// replaces the pieces with one allocation of the largest total seen, with some headroom.
class Workspace {
 public:
  explicit Workspace(Backend& backend) : backend_(&backend) {}
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  void reset();
  float* take(int64_t n);  // n floats, 64-byte aligned, contents undefined

  struct Mark {
    size_t block, used, total;
  };
  Mark mark() const { return {current_, used_, total_}; }
  void release(const Mark& m);

 private:
  struct Block {
    void* p;
    size_t bytes;
  };
  Backend* backend_;
  std::vector<Block> blocks_;
  size_t current_ = 0;  // block being filled
  size_t used_ = 0;     // bytes used in it
  size_t total_ = 0;    // bytes taken in this pass, over all blocks (with alignment)
  size_t peak_ = 0;     // largest total_ of this pass
};

// Takes buffers from a workspace and gives them back at the end of the scope.
class ScopedBuffers {
 public:
  explicit ScopedBuffers(Workspace& ws) : ws_(ws), mark_(ws.mark()) {}
  ~ScopedBuffers() { ws_.release(mark_); }
  ScopedBuffers(const ScopedBuffers&) = delete;
  ScopedBuffers& operator=(const ScopedBuffers&) = delete;
  float* take(int64_t n) { return ws_.take(n); }

 private:
  Workspace& ws_;
  Workspace::Mark mark_;
};

}  // namespace qrwkv
