// The registry of architectures: one line per architecture file.
#include <array>

#include "io/error.h"
#include "model/architecture.h"

namespace qrwkv {

namespace {

// Indexed by Arch value.
const std::array<const Architecture*, kArchCount>& registry() {
  static const std::array<const Architecture*, kArchCount> all = {
      &qrwkv6_architecture(),
      &qwen2_architecture(),
      &llama_architecture(),
      &qrwkv7_architecture(),
  };
  return all;
}

}  // namespace

std::vector<const Architecture*> architectures() { return {registry().begin(), registry().end()}; }

const Architecture& architecture(Arch a) {
  const auto i = static_cast<uint32_t>(a);
  if (i >= kArchCount) fail("", "unknown architecture number " + std::to_string(i));
  return *registry()[i];
}

const Architecture* find_architecture(const std::string& model_type) {
  for (const Architecture* x : registry())
    if (model_type == x->model_type()) return x;
  return nullptr;
}

}  // namespace qrwkv
