#pragma once

#include <cstdint>

#include "model/config.h"
#include "model/exec.h"
#include "model/state.h"
#include "model/weights.h"

namespace qrwkv {

// The QRWKV6 time mix (RWKV-6 linear attention in place of Qwen2's softmax attention) for T
// consecutive tokens of one sequence. `a` is the layer's normalized input [T, C]; the result
// [T, C] goes to `out`; `st` (x_prev, S) is read and advanced past the T tokens.
void qrwkv6_time_mix(const Exec& ex, const Config& c, const ModelWeights& mw, const LayerWeights& w,
                     const float* a, int64_t T, LayerState& st, float* out);

}  // namespace qrwkv
