// Rotary position embeddings of the transformer architectures (transformer.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/json.h"
#include "model/config.h"

namespace qrwkv {

// Rope settings live either in `rope_parameters` (transformers >= 5) or in top-level
// `rope_theta` + `rope_scaling` (older checkpoints such as the published Qwen2.5).
RopeConfig parse_rope(const json& j, const std::string& where);

// Rotary inverse frequencies inv_freq[i] for i < D/2, with the config's scaling applied.
std::vector<double> rope_inv_freq(const RopeConfig& rope, int64_t head_dim);

}  // namespace qrwkv
