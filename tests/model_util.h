// Helpers that build altered copies of the test checkpoints (renamed, reshaped, re-typed or
// sharded tensors; edited config.json) for the loader's error and format tests.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "io/json.h"
#include "io/safetensors.h"

namespace qrwkv::test {

struct OwnedTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::string bytes;
};

// All tensors of a safetensors file, in file order of their names.
std::vector<OwnedTensor> read_tensors(const std::string& path);
void write_tensors(const std::string& path, const std::vector<OwnedTensor>& tensors);

// Copies the model directory `src` (a directory name under tests/data/models) into a fresh
// temporary directory, applying the edits; returns the new directory.
std::string altered_model(const std::string& src, const std::function<void(json&)>& edit_config,
                          const std::function<void(std::vector<OwnedTensor>&)>& edit_tensors);

}  // namespace qrwkv::test
