// The layer skeleton shared by every architecture (Qwen2's pre-norm residual layers):
//
//   h = Embed[token]
//   per layer:  a = RMSNorm(h) ; h += Mix(a) ; m = RMSNorm(h) ; h += down(silu(gate(m)) ⊙ up(m))
//   logits = RMSNorm(h) @ lm_headᵀ
//
// Mix is the architecture's sequence mixer (qrwkv6.cpp: the RWKV-6 time mix; transformer.cpp:
// softmax attention). Every step is a Backend call on buffers of the model's workspace.
#include "model/model.h"

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <set>

#include "io/error.h"
#include "model/gguf_model.h"

namespace qrwkv {

// What forward passes reuse: the activation buffers and the host-side index vectors, kept at
// their largest size; and the lock that serializes passes of one model.
struct Model::Runner {
  explicit Runner(std::shared_ptr<Backend> b) : backend(std::move(b)), ws(*backend) {}
  std::shared_ptr<Backend> backend;  // declared before ws, so it outlives it
  std::mutex mu;
  Workspace ws;
  std::vector<int64_t> offset;    // first row of each sequence in the stacked activations
  std::vector<int32_t> ids;       // every token of the batch, stacked
  std::vector<int64_t> rows;      // rows whose logits were asked for
  std::vector<MixSequence> seqs;  // the sequences of a layer's mixer call
};

struct ForwardAccess {
  static Model::Runner& runner(const Model& m) { return *m.runner_; }
  static uint64_t fingerprint(const Model& m) { return m.fingerprint_; }
};

Model::Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

Model Model::load(const std::string& dir, const LoadOptions& options) {
  namespace fs = std::filesystem;
  Model m;
  m.dir = dir;
  if (is_gguf_file(dir)) {
    GgufModel g = open_gguf_model(dir);
    m.config = std::move(g.config);
    m.store = std::move(g.store);
  } else {
    if (!fs::is_directory(dir)) fail(dir, "model directory or GGUF file does not exist");
    m.config = load_config((fs::path(dir) / "config.json").string());
    m.store = WeightStore::open(dir);
  }
  m.weights = bind_weights(m.config, m.store);
  m.format = options.format;
  if (options.ubatch < 0) fail(dir, "the micro-batch size must be positive");
  m.ubatch = options.ubatch > 0 ? options.ubatch : kDefaultUbatch;
  m.runner_ = std::make_unique<Runner>(options.backend ? options.backend
                                                       : make_cpu_backend(options.threads));
  m.backend().prepare(m.weights.all(), options.format, m.weights.owned);
  m.fingerprint_ = model_fingerprint(m.config);
  return m;
}

int64_t Model::n_params() const {
  int64_t n = 0;
  for (const auto& name : store.names()) n += store.get_any_shape(name).numel();
  return n;
}

std::string Model::storage_dtype() const {
  std::set<std::string> kinds;
  if (format != WeightFormat::Stored) {
    for (const Tensor* t : weights.projections()) kinds.insert(dtype_name(t->dtype));
  } else {
    for (const auto& name : store.names())
      kinds.insert(dtype_name(store.get_any_shape(name).dtype));
  }
  std::string out;
  for (const auto& k : kinds) out += (out.empty() ? "" : "+") + k;
  return out;
}

Backend& Model::backend() const { return *runner_->backend; }

size_t Model::state_bytes() const { return new_state().bytes(); }

size_t Model::kv_bytes_per_token() const { return arch().state_bytes_per_token(config); }

namespace {

// Every check of a batch, before any state advances.
void check_batch(const Model& m, std::span<const SequenceInput> batch) {
  const int64_t V = m.config.vocab_size;
  for (size_t b = 0; b < batch.size(); ++b) {
    const SequenceInput& s = batch[b];
    if (s.state == nullptr) fail("", "a sequence in the batch has no state");
    for (size_t e = 0; e < b; ++e)
      if (batch[e].state == s.state) fail("", "the same state appears twice in one batch");
    check_state_matches(*s.state, m.config, ForwardAccess::fingerprint(m), "state");
    for (int32_t t : s.tokens)
      if (t < 0 || t >= V)
        fail("", "token id " + std::to_string(t) + " is out of range (vocabulary size " +
                     std::to_string(V) + ")");
    if (s.tokens.empty() && s.logits != nullptr && !s.all_logits)
      fail("", "last-token logits requested for an empty sequence");
  }
}

// One pass over a checked batch of at most ubatch tokens.
void forward_micro(const Model& m, std::span<SequenceInput> batch) {
  const Config& c = m.config;
  const ModelWeights& w = m.weights;
  Backend& be = m.backend();
  auto& run = ForwardAccess::runner(m);
  const int64_t C = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
  std::lock_guard<std::mutex> lock(run.mu);

  // Where each sequence's tokens sit in the stacked [Ttot, C] activations.
  run.offset.clear();
  run.ids.clear();
  for (const SequenceInput& s : batch) {
    run.offset.push_back(static_cast<int64_t>(run.ids.size()));
    run.ids.insert(run.ids.end(), s.tokens.begin(), s.tokens.end());
  }
  const int64_t Ttot = static_cast<int64_t>(run.ids.size());
  if (Ttot == 0) return;

  Workspace& ws = run.ws;
  ws.reset();
  float* h = ws.take(Ttot * C);
  float* a = ws.take(Ttot * C);
  float* mix = ws.take(Ttot * C);
  // What flows from layer to layer besides h (QRWKV7's v_first), if the architecture has it.
  const int64_t across_width = m.arch().across_width(c);
  float* across = across_width > 0 ? ws.take(Ttot * across_width) : nullptr;
  be.embed(w.embed_tokens, run.ids.data(), Ttot, h);

  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = w.layers[static_cast<size_t>(l)];

    // h += Mix(RMSNorm(h)), each sequence against its own state.
    be.rmsnorm(h, Ttot, C, lw.input_layernorm, c.rms_norm_eps, a);
    run.seqs.clear();
    for (size_t b = 0; b < batch.size(); ++b) {
      const int64_t T = static_cast<int64_t>(batch[b].tokens.size());
      if (T == 0) continue;
      State& st = *batch[b].state;
      run.seqs.push_back({run.offset[b], T, st.n_tokens, &st.layers[static_cast<size_t>(l)]});
    }
    lw.mix->forward(be, ws, a, Ttot, run.seqs, across, mix);
    be.add(h, mix, Ttot * C);

    // SwiGLU MLP: h += down(silu(gate(m)) ⊙ up(m)), m = RMSNorm(h).
    ScopedBuffers mlp(ws);
    float* gate = mlp.take(Ttot * F);
    float* up = mlp.take(Ttot * F);
    be.rmsnorm(h, Ttot, C, lw.post_attention_layernorm, c.rms_norm_eps, a);
    const LinearArgs gate_up[] = {{a, Ttot, &lw.gate_proj, &lw.gate_proj_bias, gate},
                                  {a, Ttot, &lw.up_proj, &lw.up_proj_bias, up}};
    be.linears(gate_up);
    be.swiglu(gate, up, Ttot * F);
    be.linear(gate, Ttot, lw.down_proj, lw.down_proj_bias, mix);
    be.add(h, mix, Ttot * C);
  }

  // Logits only for the rows that were asked for.
  run.rows.clear();
  for (size_t b = 0; b < batch.size(); ++b) {
    const int64_t T = static_cast<int64_t>(batch[b].tokens.size());
    if (batch[b].logits == nullptr || T == 0) continue;
    for (int64_t t = batch[b].all_logits ? 0 : T - 1; t < T; ++t)
      run.rows.push_back(run.offset[b] + t);
  }
  const int64_t R = static_cast<int64_t>(run.rows.size());
  if (R > 0) {
    float* x = ws.take(R * C);
    float* logits = ws.take(R * V);
    be.gather_rows(h, C, run.rows.data(), R, x);
    be.rmsnorm(x, R, C, w.norm, c.rms_norm_eps, x);
    be.linear(x, R, w.lm_head, Tensor{}, logits);
    int64_t r = 0;
    for (auto& s : batch) {
      const int64_t T = static_cast<int64_t>(s.tokens.size());
      if (s.logits == nullptr || T == 0) continue;
      const int64_t n = s.all_logits ? T : 1;
      be.download(s.logits, logits + r * V, n * V);
      r += n;
    }
  }
  for (auto& s : batch) s.state->n_tokens += static_cast<int64_t>(s.tokens.size());
}

}  // namespace

void forward_batch(const Model& m, std::span<SequenceInput> batch) {
  check_batch(m, batch);
  int64_t total = 0;
  for (const SequenceInput& s : batch) total += static_cast<int64_t>(s.tokens.size());
  const int64_t ub = m.ubatch;
  if (ub <= 0 || total <= ub) {
    forward_micro(m, batch);
    return;
  }
  // Micro-batches of at most ub tokens: each sequence's tokens in order, its state carried from
  // one micro-batch to the next, so that the activations (and the memory they take) are those of
  // ub tokens whatever the prompt's length. The logits of a sequence land where one pass would
  // put them: all rows at their offsets, or the last row with the sequence's last micro-batch.
  const int64_t V = m.config.vocab_size;
  std::vector<int64_t> fed(batch.size(), 0);
  std::vector<SequenceInput> part;
  part.reserve(batch.size());
  for (int64_t done = 0; done < total;) {
    part.clear();
    int64_t budget = ub;
    for (size_t b = 0; b < batch.size() && budget > 0; ++b) {
      const SequenceInput& s = batch[b];
      const int64_t T = static_cast<int64_t>(s.tokens.size()), n = std::min(T - fed[b], budget);
      if (n <= 0) continue;
      SequenceInput in{s.state,
                       s.tokens.subspan(static_cast<size_t>(fed[b]), static_cast<size_t>(n)),
                       nullptr, s.all_logits};
      if (s.logits != nullptr) {
        if (s.all_logits)
          in.logits = s.logits + fed[b] * V;
        else if (fed[b] + n == T)
          in.logits = s.logits;
      }
      part.push_back(in);
      fed[b] += n;
      budget -= n;
    }
    forward_micro(m, part);
    done += ub - budget;
  }
}

std::vector<float> forward(const Model& m, State& state, std::span<const int32_t> tokens,
                           bool all_logits) {
  const int64_t rows = all_logits ? static_cast<int64_t>(tokens.size()) : 1;
  std::vector<float> logits(static_cast<size_t>(rows * m.config.vocab_size));
  SequenceInput in{&state, tokens, logits.data(), all_logits};
  forward_batch(m, std::span<SequenceInput>(&in, 1));
  return logits;
}

std::vector<int32_t> generate_greedy(const Model& m, State& state, std::span<const int32_t> prompt,
                                     int64_t n) {
  std::vector<int32_t> out;
  if (n <= 0) return out;
  std::vector<float> logits = forward(m, state, prompt, false);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t next =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(next);
    if (i + 1 < n) {
      SequenceInput in{&state, std::span<const int32_t>(&next, 1), logits.data(), false};
      forward_batch(m, std::span<SequenceInput>(&in, 1));
    }
  }
  return out;
}

}  // namespace qrwkv
