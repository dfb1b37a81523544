// Model configuration, filled from a Hugging Face config.json. One struct for every supported
// architecture: the differences between QRWKV6, Qwen2 and LLaMA are switches, not subclasses.
// The keys every architecture shares are read here; each architecture's file reads its own
// (model/architecture.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/json.h"

namespace qrwkv {

// The architectures, by the numbers that state files store (never renumber).
enum class Arch : uint32_t {
  QRWKV6 = 0,  // model_type "rwkv6qwen2": Qwen2 with RWKV-6 linear attention
  Qwen2 = 1,   // model_type "qwen2"
  Llama = 2,   // model_type "llama"
  QRWKV7 = 3,  // model_type "rwkv7qwen2": Qwen2 with an RWKV-7 time mix
};
constexpr uint32_t kArchCount = 4;

const char* arch_name(Arch a);  // the model_type string

struct RopeConfig {
  enum class Type { Default, Linear, Llama3 };
  Type type = Type::Default;
  double theta = 10000.0;
  double factor = 1.0;                              // linear, llama3
  double low_freq_factor = 1.0;                     // llama3
  double high_freq_factor = 4.0;                    // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
  // Per-frequency divisors after the scaling above (a GGUF file's rope_freqs.weight, in which
  // llama.cpp's converter stores the llama3 scaling): inv_freq[i] /= freq_factors[i].
  std::vector<double> freq_factors;
};

struct Config {
  Arch arch = Arch::QRWKV6;
  int64_t hidden_size = 0;        // C
  int64_t num_layers = 0;         // L
  int64_t num_heads = 0;          // H
  int64_t num_kv_heads = 0;       // Hkv
  int64_t head_dim = 0;           // N (QRWKV6) or D (attention): C/H unless config says
  int64_t intermediate_size = 0;  // F
  int64_t vocab_size = 0;         // V
  float rms_norm_eps = 1e-6f;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // q/k/v projections have biases (Qwen2, QRWKV6)
  bool o_bias = false;    // o_proj has a bias
  bool mlp_bias = false;  // gate/up/down have biases (LLaMA option)
  RopeConfig rope;        // transformers, and QRWKV7 with use_rope: QRWKV6 has no positions
  int64_t max_position_embeddings = 0;
  // QRWKV6 LoRA ranks: Dm (token shift) and Dd (decay); 0 in config.json = take them from the
  // tensor shapes, which binding the weights does.
  int64_t lora_rank_tokenshift = 0;
  int64_t lora_rank_decay = 0;
  // QRWKV7 (model/qrwkv7.cpp): its switches, as config.json names them, and the ranks of the
  // in-context learning rate, value residual and gate LoRAs (the decay's is lora_rank_decay),
  // always taken from the tensors.
  bool use_rope = false;       // RoPE on r and k
  bool balance_state = true;   // κ = normalize(k), k̃ = k ⊙ (1 − w + a); else k_k and k_a
  bool groupnorm_att = false;  // per-head GroupNorm ln_x on the output; else · N^-½
  int gate_rank_type = 2;      // 2: LoRA gate g1/g2; 1: a full gate Linear
  int64_t lora_rank_iclr = 0;
  int64_t lora_rank_value_residual_mix = 0;
  int64_t lora_rank_gate = 0;
  std::vector<int64_t> eos_token_ids;
  int64_t bos_token_id = -1;  // -1: none
  std::string torch_dtype;    // as declared, informative only

  int64_t kv_dim() const { return num_kv_heads * head_dim; }
};

// Parses config.json contents; errors name `where` (the file) and the offending key.
Config parse_config(const json& j, const std::string& where);
Config load_config(const std::string& path);

}  // namespace qrwkv
