// Trainable float32 versions of the models qrwkv runs, written on ATen (libtorch) so that
// autograd can differentiate them: the parent transformer (Qwen2 / LLaMA, docs/model.md,
// "Attention") and the QRWKV6 and QRWKV7 students (docs/model.md, "Time mix" and "QRWKV7 time
// mix"). A model is a plain map from
// Hugging Face tensor names to tensors in their Hugging Face shapes, so loading, saving, optimizer
// state and checkpoints all address parameters by the names a checkpoint uses.
//
// Only this header, nets.cpp, train.cpp and the conversion tests include ATen: it is slow to
// compile, and the rest of qrwkv never sees it.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"

namespace qrwkv::convert {

// Hugging Face name -> tensor (float32, on the training device).
using Params = std::map<std::string, at::Tensor>;

struct Net {
  Config config;
  Params params;
  // QRWKV6 only: LoRA ranks Dm (token shift) and Dd (decay).
  int64_t lora_tokenshift = 0;
  int64_t lora_decay = 0;
  std::vector<double> rope_inv_freq;  // transformers only
  DType source_dtype = DType::F32;    // how the loaded checkpoint stored its weights

  const at::Tensor& p(const std::string& name) const;
  // The output projection: lm_head.weight, or the embedding when tied.
  const at::Tensor& lm_head() const;
};

// Loads a model directory (any architecture qrwkv runs) as float32 tensors on `device`.
Net load_net(const std::string& dir, at::Device device = at::kCPU);

// Writes config.json and model.safetensors (tensors converted to `dtype`: F32, BF16 or F16) into
// `dir`, each file atomically. Tied transformers write no lm_head.weight.
void save_net(const Net& net, const std::string& dir, DType dtype);

// The config.json of a net (model_type and the keys qrwkv and Hugging Face read).
json config_json(const Net& net, DType dtype);

// The historical LoRA ranks of QRWKV6 for hidden size C (docs/model.md, "Config").
int64_t default_lora_tokenshift(int64_t C);
int64_t default_lora_decay(int64_t C);

// Stage 0 of the conversion (docs/model.md, "Conversion"): the student is the teacher with every
// attention replaced by a time mix. q/k/v/o (and their biases) are copied, as are embeddings,
// norms, MLPs and the output head (untied by copying when the teacher ties it). New parameters
// start at maa_x = 1, maa_{r,k,v,w,g} = 0, w1 = 0, w2 ~ U(−0.01, 0.01), time_decay[n] = −6 +
// 5·(n/(C−1))^(0.7 + 1.3·ℓ/(L−1)), decay_w1 = 0, decay_w2 ~ U(−0.01, 0.01), gate = 0. The random
// draws come from a generator seeded with `seed`.
Net make_student(const Net& teacher, int64_t lora_tokenshift, int64_t lora_decay, uint64_t seed);

// The choices of a QRWKV7 student (docs/model.md, "QRWKV7 time mix"). Ranks 0: the defaults of
// the rwkv7qwen2 configuration, max(1, round(C^e·m/32))·32 (default_lora7).
struct Qrwkv7Options {
  bool balance_state = false;  // false: classic (k_k, k_a, GroupNorm ln_x); true: balance state
  bool use_rope = true;        // RoPE on r and k with the teacher's rope settings
  int64_t lora_decay = 0, lora_iclr = 0, lora_value = 0, lora_gate = 0;
};
int64_t default_lora7(int64_t C, double e, double m);

// Stage 0 for a QRWKV7 student: q/k/v/o (with biases), embeddings, norms, MLPs and the head are
// copied as for QRWKV6; the new parameters start as the RADLADS code starts them (docs/model.md,
// "Conversion into QRWKV7"): w0[n] = −6.5 + 5·(n/(C−1))^(0.85 + √(ℓ/(L−1))), a0 = 0, v0 = 1,
// the first LoRA matrices 0 and the second ones orthogonal · 0.1, k_k = 0.85, k_a = 1, r_k = 0,
// ln_x weight 1 and bias 0.
Net make_student7(const Net& teacher, const Qrwkv7Options& o, uint64_t seed);

// A freshly initialised Qwen2 transformer (config.arch must be Qwen2): weights ~ N(0, 0.02),
// biases 0, norms 1, as Hugging Face initialises Qwen2 (initializer_range 0.02).
Net make_transformer(const Config& config, uint64_t seed, at::Device device = at::kCPU);

// RMSNorm over the last dimension: w ⊙ x / sqrt(mean(x²) + eps).
at::Tensor rmsnorm(const at::Tensor& x, const at::Tensor& w, double eps);

// The sequence mixer of layer `l` for normalized inputs a [B, T, C] (every sequence starting
// from an empty state): causal softmax attention with RoPE (transformers), the QRWKV6 time mix or
// the QRWKV7 time mix. `v_first` [B, T, C] is QRWKV7's value residual: layer 0 sets it, later
// layers read it (the other mixers ignore it).
at::Tensor attention(const Net& net, int64_t l, const at::Tensor& a);
at::Tensor time_mix(const Net& net, int64_t l, const at::Tensor& a);
at::Tensor time_mix7(const Net& net, int64_t l, const at::Tensor& a, at::Tensor& v_first);
at::Tensor mixer(const Net& net, int64_t l, const at::Tensor& a, at::Tensor& v_first);

// The WKV recurrence S = diag(w) S + k̃ᵀ v, o = q S, for q, k̃, v, log w of shape [B, T, H, N]
// from a zero state, in the chunked form of docs/model.md, "Chunked prefill" (chunks of 16, exact
// element-wise decays inside a chunk, so no exponent is ever positive). Returns o [B, T, H, N].
at::Tensor wkv_chunked(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& log_w);

// The RWKV-7 delta rule S ← diag(w) S + α βᵀ S + k̃ vᵀ, y = Sᵀ r (S key × value, per head;
// QRWKV7 has α = −κ ⊙ a and β = κ) for r, log w, α, β, k̃, v of shape [B, T, H, N] from a zero
// state, in chunks of 16 (docs/model.md, "Chunked delta rule"). Returns y [B, T, H, N].
at::Tensor wkv7_chunked(const at::Tensor& r, const at::Tensor& log_w, const at::Tensor& alpha,
                        const at::Tensor& beta, const at::Tensor& kt, const at::Tensor& v);

// What one layer's mixer saw and produced during a forward pass.
struct LayerIO {
  at::Tensor input;   // the normalized input a [B, T, C]
  at::Tensor output;  // the mixer's output [B, T, C]
};

// The whole model for token ids [B, T] (int64): logits [B, T, V]. When `capture` is given, it
// receives every layer's mixer input and output.
at::Tensor forward(const Net& net, const at::Tensor& tokens,
                   std::vector<LayerIO>* capture = nullptr);

// Losses, each a mean over tokens.
// Cross-entropy of the next token: logits [B, T, V] at positions 0..T−2 against tokens 1..T−1.
at::Tensor next_token_loss(const at::Tensor& logits, const at::Tensor& tokens);
// KL(teacher ‖ student) = Σ_v p_t(v) (log p_t(v) − log p_s(v)) over the full vocabulary, per
// position, averaged over all B·T positions.
at::Tensor kl_loss(const at::Tensor& teacher_logits, const at::Tensor& student_logits);
// Attention-output alignment (stage 1): every layer of the student gets the teacher's normalized
// input; its time mix output is compared with the teacher attention's output as the per-token
// L2 distance / sqrt(C), averaged over tokens; the result is the mean over layers.
// `per_layer` (optional) receives each layer's loss value.
at::Tensor alignment_loss(const Net& student, const std::vector<LayerIO>& teacher_io,
                          std::vector<double>* per_layer = nullptr);

// The names of a layer's time-mix parameters (those trained in stage 1).
std::vector<std::string> time_mix_param_names(const Net& net);

}  // namespace qrwkv::convert
