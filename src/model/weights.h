// Weights of a model directory: one model.safetensors, or shards listed by
// model.safetensors.index.json. All files are memory-mapped; tensors are views into them.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "ops/tensor.h"

namespace qrwkv {

class WeightStore {
 public:
  // Opens the checkpoint at `path`: a model directory (safetensors) or a GGUF file, whose
  // tensors are renamed and rearranged into the Hugging Face names and layouts
  // (model/gguf_model.h). Every referenced shard must exist and parse.
  static WeightStore open(const std::string& path);

  bool has(const std::string& name) const { return index_.count(name) != 0; }
  // The tensor `name`, checked against `shape`; throws Error naming the tensor (and the file)
  // when it is missing, has another shape, or is stored in an unsupported dtype.
  Tensor get(const std::string& name, const std::vector<int64_t>& shape) const;
  // Like get(), but the shape is not checked (the caller derives dimensions from it).
  Tensor get_any_shape(const std::string& name) const;

  std::vector<std::string> names() const;
  // The directory or file the weights come from.
  const std::string& dir() const { return dir_; }

  // Total bytes of the mapped checkpoint files.
  size_t file_bytes() const;
  // Reads every page of the checkpoint once, so that the first tokens do not wait on the disk;
  // `progress` receives the fraction done (0..1) now and then.
  void prefetch(const std::function<void(double)>& progress) const;

  // Building a store from another container (GGUF): `file` names the tensor's file in errors;
  // the bytes a tensor points to must stay alive, which keep() ensures for owned ones.
  explicit WeightStore(std::string dir) : dir_(std::move(dir)) {}
  WeightStore() = default;
  void add(Tensor t, const std::string& file);
  void keep(std::shared_ptr<const void> owner) { keep_.push_back(std::move(owner)); }
  void add_mapped(std::shared_ptr<const MappedFile> f);
  // The file's own name of a tensor that is missing, for the error when it is asked for.
  void alias(const std::string& name, const std::string& file_name) { aliases_[name] = file_name; }

 private:
  struct Entry {
    Tensor tensor;
    std::string file;
  };
  std::string dir_;
  std::vector<std::shared_ptr<const void>> keep_;          // files and converted bytes
  std::vector<std::shared_ptr<const MappedFile>> mapped_;  // for file_bytes and prefetch
  std::map<std::string, Entry> index_;
  std::map<std::string, std::string> aliases_;
};

class LayerMix;

// Per-layer tensors of the shared skeleton, named after their Hugging Face names (prefix
// model.layers.{i}.); the sequence mixer's tensors (self_attn.*) belong to its architecture.
struct LayerWeights {
  Tensor input_layernorm;           // [C]
  Tensor post_attention_layernorm;  // [C]
  std::shared_ptr<LayerMix> mix;    // self_attn.*: the architecture's sequence mixer

  // SwiGLU MLP (mlp.*): down(silu(gate(m)) ⊙ up(m)).
  Tensor gate_proj, gate_proj_bias;  // [F, C], [F]
  Tensor up_proj, up_proj_bias;      // [F, C], [F]
  Tensor down_proj, down_proj_bias;  // [C, F], [C]
};

struct ModelWeights {
  Tensor embed_tokens;  // [V, C]
  Tensor norm;          // [C]
  Tensor lm_head;       // [V, C]; a view of the embedding when tie_word_embeddings
  std::vector<LayerWeights> layers;

  // Bytes that prepared weights point into (the backend's prepare step); shared by copies.
  WeightArena owned;

  // Every tensor with its role: the skeleton's and every mixer's.
  std::vector<WeightRef> all();
  std::vector<WeightRef> all() const;  // the same; the tensors must not be changed through it
  // The matrices that --dtype converts (projections of the mixers and the MLP, lm_head).
  std::vector<const Tensor*> projections() const;
  // Bytes of weights read to evaluate one token: every per-layer tensor, the final norm,
  // lm_head and one row of the embedding.
  int64_t bytes_per_token() const;
  // Multiply-adds of the weight matrices per token (projections, MLP, LoRA, lm_head).
  int64_t macs_per_token() const;
};

// Binds every tensor the architecture needs, checking names and shapes against the config;
// dimensions the config leaves to the tensors (QRWKV6's LoRA ranks) are filled into c.
ModelWeights bind_weights(Config& c, const WeightStore& store);

// "[a, b, c]", for error messages.
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace qrwkv
