// Helpers shared by the test files: one-line error expectations and the golden references
// (NAME.expected.safetensors) with their relative logit error.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "io/error.h"
#include "io/safetensors.h"

namespace qrwkv::test {

// Expects `f` to throw qrwkv::Error whose message contains every one of `parts` and is one line.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    for (const auto& p : parts) EXPECT_THAT(e.what(), ::testing::HasSubstr(p));
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "error is not one line";
  }
}

// The tensors of a golden reference file.
struct Expected {
  explicit Expected(const std::string& path) : file(path) {}
  SafetensorsFile file;

  bool has(const std::string& name) const { return file.find(name) != nullptr; }
  std::vector<int64_t> shape(const std::string& name) const { return file.find(name)->shape; }
  template <typename T>
  std::vector<T> get(const std::string& name) const {
    const TensorInfo* t = file.find(name);
    EXPECT_NE(t, nullptr) << name;
    if (t == nullptr) return {};
    std::vector<T> out(static_cast<size_t>(t->numel()));
    EXPECT_EQ(dtype_size(t->dtype), sizeof(T)) << name;
    std::memcpy(out.data(), file.data(*t), out.size() * sizeof(T));
    return out;
  }
};

// Largest |Δ| / max|expected| over the positions of a [T, V] block.
inline double max_rel_error(const float* got, const float* want, int64_t T, int64_t V) {
  double worst = 0;
  for (int64_t t = 0; t < T; ++t) {
    double max_abs = 0, max_diff = 0;
    for (int64_t v = 0; v < V; ++v) {
      max_abs = std::max(max_abs, std::fabs(static_cast<double>(want[t * V + v])));
      max_diff =
          std::max(max_diff, std::fabs(static_cast<double>(got[t * V + v]) - want[t * V + v]));
    }
    worst = std::max(worst, max_diff / max_abs);
  }
  return worst;
}

}  // namespace qrwkv::test
