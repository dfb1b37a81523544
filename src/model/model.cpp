// The reference forward pass shared by every architecture (Qwen2 pre-norm skeleton):
//
//   h = Embed[token]
//   per layer:  a = RMSNorm(h) ; h += Mix(a) ; m = RMSNorm(h) ; h += down(silu(gate(m)) * up(m))
//   logits = RMSNorm(h) @ lm_headᵀ
//
// Mix is the QRWKV6 time mix (qrwkv6.cpp) or softmax attention (transformer.cpp).
#include "model/model.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "io/error.h"
#include "model/qrwkv6.h"
#include "model/transformer.h"
#include "ops/ref.h"

namespace qrwkv {

Model Model::load(const std::string& dir, WeightFormat format, int threads) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) fail(dir, "model directory does not exist");
  Model m;
  m.dir = dir;
  m.config = load_config((fs::path(dir) / "config.json").string());
  m.store = WeightStore::open(dir);
  m.weights = bind_weights(m.config, m.store);
  m.format = format;
  if (format != WeightFormat::Stored) {
    ThreadPool pool(threads > 0 ? threads : physical_cores());
    convert_weights(m.weights, format, &pool);
  }
  if (m.config.arch != Arch::QRWKV6)
    m.rope_inv_freq = qrwkv::rope_inv_freq(m.config.rope, m.config.head_dim);
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

size_t Model::state_bytes() const { return new_state().bytes(); }

size_t Model::kv_bytes_per_token() const {
  if (config.arch == Arch::QRWKV6) return 0;
  return static_cast<size_t>(2 * config.num_layers * config.kv_dim()) * sizeof(float);
}

namespace {

void check_tokens(const Model& m, std::span<const int32_t> tokens) {
  for (int32_t t : tokens)
    if (t < 0 || t >= m.config.vocab_size)
      fail("", "token id " + std::to_string(t) + " is out of range (vocabulary size " +
                   std::to_string(m.config.vocab_size) + ")");
}

}  // namespace

void forward_batch(const Model& m, std::span<SequenceInput> batch) {
  const Config& c = m.config;
  const ModelWeights& w = m.weights;
  const int64_t C = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;

  // Where each sequence's tokens sit in the stacked [Ttot, C] activations.
  std::vector<int64_t> offset;
  int64_t Ttot = 0;
  std::set<const State*> seen;
  for (const auto& s : batch) {
    if (s.state == nullptr) fail("", "a sequence in the batch has no state");
    if (!seen.insert(s.state).second) fail("", "the same state appears twice in one batch");
    check_state_matches(*s.state, c, "state");
    check_tokens(m, s.tokens);
    if (s.tokens.empty() && s.logits != nullptr && !s.all_logits)
      fail("", "last-token logits requested for an empty sequence");
    offset.push_back(Ttot);
    Ttot += static_cast<int64_t>(s.tokens.size());
  }
  if (Ttot == 0) return;

  std::vector<float> h(static_cast<size_t>(Ttot * C));
  for (size_t b = 0; b < batch.size(); ++b)
    for (size_t t = 0; t < batch[b].tokens.size(); ++t)
      load_f32(w.embed_tokens, int64_t{batch[b].tokens[t]} * C, C, &h[(offset[b] + t) * C]);

  std::vector<float> a(h.size()), mix(h.size());
  std::vector<float> gate(static_cast<size_t>(Ttot * F)), up(gate.size());
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = w.layers[l];

    ref::rmsnorm(h.data(), Ttot, C, lw.input_layernorm.data(), c.rms_norm_eps, a.data());
    for (size_t b = 0; b < batch.size(); ++b) {
      const int64_t T = static_cast<int64_t>(batch[b].tokens.size());
      if (T == 0) continue;
      const float* ab = &a[offset[b] * C];
      float* ob = &mix[offset[b] * C];
      LayerState& st = batch[b].state->layers[l];
      if (c.arch == Arch::QRWKV6)
        qrwkv6_time_mix(m.exec, c, w, lw, ab, T, st, ob);
      else
        attention(m.exec, c, lw, m.rope_inv_freq, ab, T, batch[b].state->n_tokens, st, ob);
    }
    for (size_t j = 0; j < h.size(); ++j) h[j] += mix[j];

    // SwiGLU MLP: h += down(silu(gate(m)) * up(m)).
    ref::rmsnorm(h.data(), Ttot, C, lw.post_attention_layernorm.data(), c.rms_norm_eps, a.data());
    m.exec.linear(a.data(), Ttot, lw.gate_proj, &lw.gate_proj_bias, gate.data());
    m.exec.linear(a.data(), Ttot, lw.up_proj, &lw.up_proj_bias, up.data());
    for (size_t j = 0; j < gate.size(); ++j) gate[j] = ref::silu(gate[j]) * up[j];
    m.exec.linear(gate.data(), Ttot, lw.down_proj, &lw.down_proj_bias, mix.data());
    for (size_t j = 0; j < h.size(); ++j) h[j] += mix[j];
  }

  // Logits only for the rows that were asked for.
  std::vector<int64_t> rows;
  for (size_t b = 0; b < batch.size(); ++b) {
    const int64_t T = static_cast<int64_t>(batch[b].tokens.size());
    if (batch[b].logits == nullptr || T == 0) continue;
    for (int64_t t = batch[b].all_logits ? 0 : T - 1; t < T; ++t) rows.push_back(offset[b] + t);
  }
  std::vector<float> x(rows.size() * C), xn(rows.size() * C), logits(rows.size() * V);
  for (size_t r = 0; r < rows.size(); ++r) std::copy_n(&h[rows[r] * C], C, &x[r * C]);
  const int64_t R = static_cast<int64_t>(rows.size());
  ref::rmsnorm(x.data(), R, C, w.norm.data(), c.rms_norm_eps, xn.data());
  m.exec.linear(xn.data(), R, w.lm_head, nullptr, logits.data());
  size_t r = 0;
  for (auto& s : batch) {
    const int64_t T = static_cast<int64_t>(s.tokens.size());
    if (s.logits != nullptr && T > 0) {
      const int64_t n = s.all_logits ? T : 1;
      std::copy_n(&logits[r * V], n * V, s.logits);
      r += static_cast<size_t>(n);
    }
    s.state->n_tokens += T;
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
    if (i + 1 < n) logits = forward(m, state, std::span<const int32_t>(&next, 1), false);
  }
  return out;
}

}  // namespace qrwkv
