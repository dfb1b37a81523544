// How the backends that compute in host memory hold weights: vectors as F32 and projections in
// the dtype of the chosen --dtype format, converted once at load.
#pragma once

#include <vector>

#include "backend/backend.h"
#include "ops/threadpool.h"

namespace qrwkv {

// Converts what needs converting (rows split across the pool's threads when one is given).
void prepare_host_weights(const std::vector<WeightRef>& weights, WeightFormat format,
                          WeightArena& arena, ThreadPool* pool);

}  // namespace qrwkv
