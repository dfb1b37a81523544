// Micro-batches (Model::ubatch, -ub): a batch longer than ubatch tokens runs as several passes
// with the states carried between them. Every split gives the logits of one pass: exactly on
// the reference backend (the same operations in the same order per token), to float32 rounding
// on the CPU backend, whose matrix kernels choose their blocking (and so their order of sums) by
// the number of rows: 1e-5 of the largest logit here, 1e-4 asked as for the other comparisons
// of two float32 paths (test_formats.cpp).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "io/error.h"
#include "model/model.h"
#include "tests/cli.h"
#include "tests/expect.h"

namespace qrwkv {
namespace {

std::vector<int32_t> ids(int n, int salt, int V) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back((i * 37 + salt * 11 + 5) % V);
  return out;
}

// Two sequences in one batch (37 and 20 tokens; all logits for the first, the last row for the
// second), from states that already hold a few tokens: [first's logits..., second's logits].
std::vector<float> run(const Model& m) {
  const int V = static_cast<int>(m.config.vocab_size);
  State s1 = m.new_state(), s2 = m.new_state();
  forward(m, s1, ids(3, 1, V), false);
  forward(m, s2, ids(5, 2, V), false);
  const std::vector<int32_t> a = ids(37, 3, V), b = ids(20, 4, V);
  std::vector<float> out(static_cast<size_t>((37 + 1) * V));
  SequenceInput batch[] = {{&s1, a, out.data(), true}, {&s2, b, out.data() + 37 * V, false}};
  forward_batch(m, batch);
  // The states continue alike: one more token each.
  const std::vector<float> n1 = forward(m, s1, ids(1, 5, V), false);
  const std::vector<float> n2 = forward(m, s2, ids(1, 6, V), false);
  out.insert(out.end(), n1.begin(), n1.end());
  out.insert(out.end(), n2.begin(), n2.end());
  return out;
}

class Microbatch : public ::testing::TestWithParam<const char*> {};
INSTANTIATE_TEST_SUITE_P(Models, Microbatch,
                         ::testing::Values("qrwkv6_tiny", "qrwkv7_tiny", "qwen2_tiny",
                                           "llama_tiny"));

TEST_P(Microbatch, EverySplitGivesTheLogitsOfOnePass) {
  const std::string dir = test::data_path(std::string("models/") + GetParam());
  for (const bool reference : {true, false}) {
    LoadOptions o = reference ? LoadOptions{WeightFormat::Stored, make_reference_backend(), 1}
                              : test::float32_load(2);
    o.ubatch = 1000;  // the whole batch in one pass
    const Model whole = Model::load(dir, o);
    ASSERT_EQ(whole.ubatch, 1000);
    const std::vector<float> want = run(whole);
    const int64_t V = whole.config.vocab_size, rows = static_cast<int64_t>(want.size()) / V;
    for (const int64_t ub : {1, 2, 5, 16, 36, 37, 38, 56, 57}) {
      SCOPED_TRACE((reference ? "reference ub=" : "cpu ub=") + std::to_string(ub));
      o.ubatch = ub;
      const Model split = Model::load(dir, o);
      const std::vector<float> got = run(split);
      ASSERT_EQ(got.size(), want.size());
      if (reference)
        EXPECT_EQ(got, want);
      else
        EXPECT_LT(test::max_rel_error(got.data(), want.data(), rows, V), 1e-4);
    }
  }
}

TEST(MicrobatchChecks, ABadBatchFailsBeforeAnyStateAdvances) {
  LoadOptions o = test::float32_load(1);
  o.ubatch = 4;
  const Model m = Model::load(test::data_path("models/qrwkv6_tiny"), o);
  const int V = static_cast<int>(m.config.vocab_size);
  State s1 = m.new_state(), s2 = m.new_state();
  std::vector<int32_t> good = ids(10, 1, V), bad = ids(10, 2, V);
  bad.back() = V;  // out of range, in the second sequence's last micro-batch
  SequenceInput batch[] = {{&s1, good, nullptr, true}, {&s2, bad, nullptr, true}};
  EXPECT_THROW(forward_batch(m, batch), Error);
  EXPECT_EQ(s1.n_tokens, 0);
  EXPECT_EQ(s2.n_tokens, 0);
  o.ubatch = -1;
  EXPECT_THROW(Model::load(test::data_path("models/qrwkv6_tiny"), o), Error);
}

}  // namespace
}  // namespace qrwkv
