// What an architecture is to the rest of the engine. Every architecture shares the layer
// skeleton of model.cpp (embedding, pre-norm residual layers with a SwiGLU MLP, final norm,
// lm_head) and differs in its sequence mixer, the part of a layer that mixes information across
// tokens: RWKV-6 linear attention for QRWKV6 (qrwkv6.cpp), softmax attention over a KV cache for
// Qwen2 and LLaMA (transformer.cpp).
//
// One file per architecture holds all it knows: the config.json keys it reads (switches of the
// one Config struct), its tensor names and shapes, its state layout, and its mixer as a sequence
// of Backend calls. Adding an architecture means adding such a file, an Arch value, and one line
// in architectures.cpp (docs/architecture.md).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/json.h"
#include "model/config.h"
#include "model/state.h"

namespace qrwkv {

class WeightStore;

// One sequence of a batch as a mixer sees it: rows [row, row + T) of the stacked activations
// (T ≥ 1), tokens at positions pos0 .. pos0 + T − 1 of that sequence, and its layer state.
struct MixSequence {
  int64_t row = 0, T = 0, pos0 = 0;
  LayerState* state = nullptr;
};

// The sequence mixer of one layer: its weights and its forward pass.
class LayerMix {
 public:
  virtual ~LayerMix() = default;
  // Every tensor of the mixer with its role (for prepare, formats and sizes).
  virtual void weights(std::vector<WeightRef>& out) = 0;
  // out[Ttot, C] = Mix(a[Ttot, C]) for a batch of sequences whose rows are stacked (seqs cover
  // [0, Ttot) in order), each reading and advancing its own layer state. Token-wise work (the
  // projections) runs over all Ttot rows at once, so that a batched decode step reads each
  // weight once; only what crosses tokens (token shift, recurrence, attention) runs per
  // sequence. a and out are backend buffers; temporaries come from ws and are given back
  // before returning. `across` is the architecture's per-token buffer [Ttot, across_width]
  // that every layer of one forward pass sees (QRWKV7's v_first), null when it has none.
  virtual void forward(Backend& be, Workspace& ws, const float* a, int64_t Ttot,
                       std::span<const MixSequence> seqs, float* across, float* out) const = 0;
};

class Architecture {
 public:
  virtual ~Architecture() = default;
  virtual Arch id() const = 0;
  virtual const char* model_type() const = 0;  // config.json "model_type"
  // A fixed-size state (no positions, no KV cache): a recurrent model.
  virtual bool recurrent() const = 0;

  // Reads the config.json keys of this architecture into c (the keys every architecture shares
  // are read already) and checks what the shapes must satisfy. Errors name `where`.
  virtual void parse_config(const json& j, Config& c, const std::string& where) const = 0;
  // Binds every layer's mixer from the checkpoint, checking names and shapes; dimensions the
  // config leaves open (QRWKV6's LoRA ranks) are read from the tensors into c.
  virtual std::vector<std::shared_ptr<LayerMix>> bind(Config& c, const WeightStore& s) const = 0;

  // Floats per token of the buffer that flows from layer to layer within a forward pass
  // (LayerMix::forward's `across`); 0: none.
  virtual int64_t across_width(const Config&) const { return 0; }

  // A layer's state for a sequence with no tokens yet.
  virtual void init_layer_state(const Config& c, LayerState& l) const = 0;
  // Whether a layer's state has the sizes this architecture gives it after n_tokens tokens.
  virtual bool layer_state_ok(const Config& c, const LayerState& l, int64_t n_tokens) const = 0;
  // Bytes the state of one sequence grows by per token (a KV cache); 0 for recurrent models.
  virtual size_t state_bytes_per_token(const Config& c) const = 0;
  // Cuts a state back to its first n tokens; false if this architecture's state cannot be cut
  // (a recurrent state only goes forward).
  virtual bool truncate(const Config& c, State& s, int64_t n) const = 0;
};

// The architecture of a config (every Arch value has one).
const Architecture& architecture(Arch a);
// The architecture of a config.json model_type, or null.
const Architecture* find_architecture(const std::string& model_type);
// Every architecture, for error messages that list them.
std::vector<const Architecture*> architectures();

// The registered architectures (defined in their files).
const Architecture& qrwkv6_architecture();
const Architecture& qwen2_architecture();
const Architecture& llama_architecture();
const Architecture& qrwkv7_architecture();

}  // namespace qrwkv
