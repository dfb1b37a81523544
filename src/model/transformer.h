#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/exec.h"
#include "model/state.h"
#include "model/weights.h"

namespace qrwkv {

// Rotary inverse frequencies inv_freq[i] for i < D/2, with the config's scaling applied.
std::vector<double> rope_inv_freq(const RopeConfig& rope, int64_t head_dim);

// Softmax attention (Qwen2 / LLaMA) for T consecutive tokens of one sequence whose first token
// is at position st.n_tokens... The caller passes that position as `pos0`. `a` is the normalized
// input [T, C]; the result [T, C] goes to `out`; K and V are appended to the cache in `st`.
void attention(const Exec& ex, const Config& c, const LayerWeights& w,
               const std::vector<double>& inv_freq, const float* a, int64_t T, int64_t pos0,
               LayerState& st, float* out);

}  // namespace qrwkv
