// Weights of a model directory: one model.safetensors, or shards listed by
// model.safetensors.index.json. All files are memory-mapped; tensors are views into them.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"
#include "ops/tensor.h"
#include "ops/threadpool.h"

namespace qrwkv {

class WeightStore {
 public:
  // Opens the checkpoint in `dir`; every referenced shard must exist and parse.
  static WeightStore open(const std::string& dir);

  bool has(const std::string& name) const { return index_.count(name) != 0; }
  // The tensor `name`, checked against `shape`; throws Error naming the tensor (and the file)
  // when it is missing, has another shape, or is stored in an unsupported dtype.
  Tensor get(const std::string& name, const std::vector<int64_t>& shape) const;
  // Like get(), but the shape is not checked (the caller derives dimensions from it).
  Tensor get_any_shape(const std::string& name) const;

  std::vector<std::string> names() const;
  const std::string& dir() const { return dir_; }

  // Total bytes of the mapped checkpoint files.
  size_t file_bytes() const;
  // Reads every page of the checkpoint once, so that the first tokens do not wait on the disk;
  // `progress` receives the fraction done (0..1) now and then.
  void prefetch(const std::function<void(double)>& progress) const;

 private:
  struct Entry {
    const SafetensorsFile* file;
    const TensorInfo* info;
  };
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry> index_;
};

// Per-layer tensors, named after their Hugging Face names (prefix model.layers.{i}.).
// Which fields are filled depends on Config::arch; the others stay empty.
struct LayerWeights {
  std::vector<float> input_layernorm;           // [C]
  std::vector<float> post_attention_layernorm;  // [C]

  // Projections shared by attention and the QRWKV6 time mix (q_proj is the receptance there).
  Tensor q_proj, q_bias;  // [H·N, C], [H·N]
  Tensor k_proj, k_bias;  // [Hkv·N, C], [Hkv·N]
  Tensor v_proj, v_bias;  // [Hkv·N, C], [Hkv·N]
  Tensor o_proj, o_bias;  // [C, H·N], [C]

  // QRWKV6 time mix (self_attn.*).
  std::vector<float> time_maa_x;   // [1,1,C]
  std::vector<float> time_maa[5];  // r, k, v, w, g: [1,1,C] each
  Tensor time_maa_w1;              // [C, 5·Dm] (x @ w1)
  Tensor time_maa_w2;              // [5, Dm, C]
  std::vector<float> time_decay;   // [1,1,C]
  Tensor time_decay_w1;            // [C, Dd]
  Tensor time_decay_w2;            // [Dd, C]
  Tensor gate;                     // [C, C], no bias

  // SwiGLU MLP.
  Tensor gate_proj, gate_proj_bias;  // [F, C], [F]
  Tensor up_proj, up_proj_bias;      // [F, C], [F]
  Tensor down_proj, down_proj_bias;  // [C, F], [C]
};

struct ModelWeights {
  Tensor embed_tokens;      // [V, C]
  std::vector<float> norm;  // [C]
  Tensor lm_head;           // [V, C]; the embedding when tie_word_embeddings
  std::vector<LayerWeights> layers;
  int64_t lora_rank_tokenshift = 0;  // Dm, from time_maa_w1's shape
  int64_t lora_rank_decay = 0;       // Dd, from time_decay_w1's shape

  // Bytes of converted weights (convert_weights); the tensors above may point into them.
  // Shared, so copies of a model share one set.
  std::vector<std::shared_ptr<const std::vector<uint8_t>>> owned;

  // The projection matrices every token multiplies with (the ones --dtype converts): attention
  // or time-mix projections, MLP, and lm_head.
  std::vector<Tensor*> projections();
  std::vector<const Tensor*> projections() const;
  // Bytes of weights read to evaluate one token: every per-layer tensor, the final norm,
  // lm_head and one row of the embedding.
  int64_t bytes_per_token() const;
};

// How --dtype stores the projection matrices in memory. Q4_0 puts only the MLP matrices (about
// 80% of a layer's weights) in Q4_0 and keeps the attention / time-mix projections and lm_head
// in Q8_0: 4-bit errors in the time-mix projections compound through the recurrent state, and
// on the QRWKV6 test model the mean KL divergence from the stored model drops from 0.47
// (Q4_0_PURE, every projection in Q4_0) to 0.008, against 0.007 for Q8_0 (`qrwkv kl`).
enum class WeightFormat { Stored, F32, BF16, F16, Q8_0, Q4_0, Q4_0_PURE };

// "f32", "bf16", "f16", "q8_0", "q4_0", "q4_0_pure" (or "" for Stored); throws on others.
WeightFormat parse_weight_format(const std::string& name);
const char* weight_format_name(WeightFormat f);

// Converts the projections to `format` (rows split across the pool's threads). Matrices whose
// rows are not whole 32-element blocks stay as stored under the block formats.
void convert_weights(ModelWeights& w, WeightFormat format, ThreadPool* pool);

// Binds every tensor the architecture needs, checking names and shapes against the config.
ModelWeights bind_weights(const Config& c, const WeightStore& store);

}  // namespace qrwkv
