// A loaded model (config, memory-mapped weights prepared by a backend) and its forward pass.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/architecture.h"
#include "model/config.h"
#include "model/state.h"
#include "model/weights.h"

namespace qrwkv {

struct LoadOptions {
  // How the projections are held in memory (--dtype); Stored keeps the checkpoint's dtype.
  WeightFormat format = WeightFormat::Stored;
  // The backend that prepares the weights and runs the model; null: a CPU backend with
  // `threads` threads (0: one per physical core).
  std::shared_ptr<Backend> backend;
  int threads = 0;
  // Tokens per forward pass (Model::ubatch): 0 takes the default.
  int64_t ubatch = 0;
};

// Tokens per micro-batch unless set: llama.cpp's default (-ub 512).
constexpr int64_t kDefaultUbatch = 512;

class Model {
 public:
  // Loads config.json and the safetensors weights of a model directory and has the backend
  // prepare them.
  static Model load(const std::string& dir, const LoadOptions& options = {});

  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  std::string dir;
  Config config;
  WeightStore store;
  ModelWeights weights;
  WeightFormat format = WeightFormat::Stored;
  // The most tokens one pass evaluates: longer batches (a long prompt) run in micro-batches of
  // this many tokens, the state carried between them, so that the activation buffers, and the
  // memory a prompt takes beyond the state or KV cache, do not grow with its length.
  int64_t ubatch = kDefaultUbatch;

  const Architecture& arch() const { return architecture(config.arch); }
  Backend& backend() const;

  State new_state() const { return qrwkv::new_state(config); }
  // Parameters counted once (a tied lm_head is not counted twice).
  int64_t n_params() const;
  // The storage dtypes of the weights, e.g. "BF16" or "F32+BF16"; after a conversion, the
  // dtypes of the projections in memory, e.g. "Q4_0+Q8_0".
  std::string storage_dtype() const;
  // Per-sequence memory: the fixed QRWKV6 state, or the KV cache per token of a transformer.
  size_t state_bytes() const;
  size_t kv_bytes_per_token() const;

 private:
  Model();
  struct Runner;
  friend struct ForwardAccess;
  std::unique_ptr<Runner> runner_;  // the backend, the workspace and the lock of forward passes
  uint64_t fingerprint_ = 0;        // model_fingerprint(config)
};

// One sequence of a batch: tokens to feed, the state they continue (advanced in place), and
// where its logits go.
struct SequenceInput {
  State* state = nullptr;
  std::span<const int32_t> tokens;
  // Output (host memory): [T, V] when all_logits, else [V] for the last token only; may be null.
  float* logits = nullptr;
  bool all_logits = true;
};

// Evaluates a batch of independent sequences, each with its own state. The token-wise parts
// (projections, MLP, lm_head) run over all tokens of the batch at once, in micro-batches of at
// most Model::ubatch tokens; the sequence mixing (time mix or attention) runs per sequence
// against its own state. Every check (states, token ids) is made before any state advances.
// Calls from several threads are serialized per micro-batch. A batch of a shape seen before
// allocates no memory (a batch longer than ubatch allocates its list of micro-batches).
void forward_batch(const Model& m, std::span<SequenceInput> batch);

// One sequence; returns logits [T, V] (all positions) or [V] (last position).
std::vector<float> forward(const Model& m, State& state, std::span<const int32_t> tokens,
                           bool all_logits = true);

// Greedy (argmax) continuation: feeds `prompt`, then n tokens chosen by argmax; returns the
// generated ids (no stop tokens).
std::vector<int32_t> generate_greedy(const Model& m, State& state, std::span<const int32_t> prompt,
                                     int64_t n);

}  // namespace qrwkv
