// State as a value: split evaluation, save/load/continue, copies, refusal of foreign or damaged
// states, and batches of independent sequences.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include "io/error.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "tests/cli.h"

namespace qrwkv {
namespace {

using ::testing::HasSubstr;

std::vector<int32_t> test_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::vector<int32_t> t;
  uint32_t x = seed;
  for (int64_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    t.push_back(static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(vocab)));
  }
  return t;
}

double max_abs_diff(const std::vector<float>& a, const float* b, size_t n) {
  double d = 0;
  for (size_t i = 0; i < n; ++i) d = std::max(d, std::fabs(double{a[i]} - b[i]));
  return d;
}

class StateTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    model_ = std::make_unique<Model>(
        Model::load(test::data_path("models/" + GetParam()), test::float32_load()));
  }
  std::unique_ptr<Model> model_;
};

// Processing [0, k) then [k, T) from the returned state gives the logits of [0, T) at once.
TEST_P(StateTest, SplitEvaluationEqualsWhole) {
  const int64_t T = 60, V = model_->config.vocab_size;
  const auto tokens = test_tokens(T, V, 7);
  State whole = model_->new_state();
  const auto all = forward(*model_, whole, tokens);
  for (int64_t k : {1, 2, 17, 31, 59}) {
    State st = model_->new_state();
    const auto first = forward(*model_, st, std::span<const int32_t>(tokens.data(), k));
    const auto rest = forward(*model_, st, std::span<const int32_t>(&tokens[k], T - k));
    EXPECT_LT(max_abs_diff(first, all.data(), first.size()), 1e-4) << "split at " << k;
    EXPECT_LT(max_abs_diff(rest, &all[k * V], rest.size()), 1e-4) << "split at " << k;
    EXPECT_EQ(st.n_tokens, T);
  }
  // Token by token as in decoding.
  State st = model_->new_state();
  for (int64_t t = 0; t < T; ++t) {
    const auto one = forward(*model_, st, std::span<const int32_t>(&tokens[t], 1));
    EXPECT_LT(max_abs_diff(one, &all[t * V], V), 1e-4) << "token " << t;
  }
}

TEST_P(StateTest, SaveLoadContinueGivesSameLogits) {
  const int64_t V = model_->config.vocab_size;
  const auto tokens = test_tokens(40, V, 11);
  const std::span<const int32_t> head(tokens.data(), 25), tail(&tokens[25], 15);
  State a = model_->new_state();
  forward(*model_, a, head, false);
  const std::string path = test::temp_dir() + "/s.state";
  save_state(a, path);
  State b = load_state(path);
  check_state_matches(b, model_->config, path);
  EXPECT_EQ(b.n_tokens, 25);
  const auto la = forward(*model_, a, tail), lb = forward(*model_, b, tail);
  EXPECT_EQ(la, lb);  // bit-identical: the state was restored exactly
}

TEST_P(StateTest, CopiesAreIndependentForks) {
  const int64_t V = model_->config.vocab_size;
  const auto tokens = test_tokens(20, V, 3);
  State a = model_->new_state();
  forward(*model_, a, tokens, false);
  State fork = a;  // a plain copy forks the sequence
  const std::vector<int32_t> x = {1, 2, 3}, y = {4, 5, 6};
  const auto a1 = forward(*model_, a, x);
  forward(*model_, fork, y);  // advancing the fork must not touch `a`'s history
  State again = fork;
  again = a;  // assignment copies too
  State fresh = model_->new_state();
  forward(*model_, fresh, tokens, false);
  EXPECT_EQ(forward(*model_, fresh, x), a1);
}

TEST_P(StateTest, BatchOfIndependentSequencesEqualsOneByOne) {
  const int64_t V = model_->config.vocab_size;
  const auto t1 = test_tokens(13, V, 1), t2 = test_tokens(1, V, 2), t3 = test_tokens(29, V, 3);
  // Sequence 2 continues from a non-empty state; sequence 3 asks only for its last logits.
  State s1 = model_->new_state(), s2 = model_->new_state(), s3 = model_->new_state();
  const auto pre = test_tokens(9, V, 4);
  forward(*model_, s2, pre, false);
  State r1 = s1, r2 = s2, r3 = s3;
  const auto e1 = forward(*model_, r1, t1), e2 = forward(*model_, r2, t2),
             e3 = forward(*model_, r3, t3, false);

  std::vector<float> l1(t1.size() * V), l2(t2.size() * V), l3(V);
  std::vector<SequenceInput> batch = {
      {&s1, t1, l1.data(), true}, {&s2, t2, l2.data(), true}, {&s3, t3, l3.data(), false}};
  forward_batch(*model_, batch);
  // The batch's projections run over all 43 rows at once (the packed GEMMs from
  // kGemmMinTokens rows on) where each sequence alone takes the row-dot kernels: float32 sums in
  // another order, held to the tolerance of SplitEvaluationEqualsWhole.
  EXPECT_LT(max_abs_diff(e1, l1.data(), l1.size()), 1e-4);
  EXPECT_LT(max_abs_diff(e2, l2.data(), l2.size()), 1e-4);
  EXPECT_LT(max_abs_diff(e3, l3.data(), l3.size()), 1e-4);
  EXPECT_EQ(s2.n_tokens, 10);
  EXPECT_EQ(s3.n_tokens, 29);
  // And the states continue identically.
  const std::vector<int32_t> next = {7};
  EXPECT_LT(max_abs_diff(forward(*model_, s3, next), forward(*model_, r3, next).data(), V), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Models, StateTest,
                         ::testing::Values("qrwkv6_tiny", "qrwkv6_tiny_bf16", "qwen2_tiny",
                                           "llama_tiny"));

TEST(State, QrwkvStateHasFixedSize) {
  const Model m = Model::load(test::data_path("models/qrwkv6_tiny"));
  State s = m.new_state();
  const size_t before = s.bytes();
  // Per layer: x_prev (C) + H·N·N floats.
  EXPECT_EQ(before, size_t{3} * (64 + 4 * 16 * 16) * sizeof(float));
  forward(m, s, test_tokens(100, 1000, 5), false);
  EXPECT_EQ(s.bytes(), before);
  const Model q = Model::load(test::data_path("models/qwen2_tiny"));
  State k = q.new_state();
  forward(q, k, test_tokens(100, 1000, 5), false);
  EXPECT_EQ(k.bytes(), 100 * q.kv_bytes_per_token());
}

TEST(State, LoadingIntoAnotherModelIsRefused) {
  const Model rwkv = Model::load(test::data_path("models/qrwkv6_tiny"));
  const Model qwen = Model::load(test::data_path("models/qwen2_tiny"));
  State s = rwkv.new_state();
  forward(rwkv, s, std::vector<int32_t>{1, 2, 3}, false);
  const std::string path = test::temp_dir() + "/rwkv.state";
  save_state(s, path);
  State loaded = load_state(path);
  try {
    check_state_matches(loaded, qwen.config, path);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path));
    EXPECT_THAT(e.what(), HasSubstr("different model (rwkv6qwen2 L=3 C=64 H=4 Hkv=2 N=16)"));
    EXPECT_THAT(e.what(), HasSubstr("(qwen2 L=3 C=64 H=4 Hkv=2 N=16)"));
  }
  // forward() checks too.
  EXPECT_THROW(forward(qwen, loaded, std::vector<int32_t>{1}), Error);
}

TEST(State, DamagedFilesAreRefused) {
  const Model m = Model::load(test::data_path("models/qrwkv6_tiny"));
  State s = m.new_state();
  forward(m, s, std::vector<int32_t>{1, 2, 3}, false);
  const std::string bytes = serialize_state(s);
  auto expect = [&](const std::string& b, const std::string& msg) {
    try {
      deserialize_state(b, "s.state");
      ADD_FAILURE() << "no error for: " << msg;
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("s.state"));
      EXPECT_THAT(e.what(), HasSubstr(msg));
    }
  };
  for (size_t cut : {bytes.size() - 1, bytes.size() - 9, bytes.size() / 2, size_t{40}, size_t{12}})
    expect(bytes.substr(0, cut), "truncated");
  expect(bytes.substr(0, 5), "bad magic");
  expect("", "bad magic");
  std::string flipped = bytes;
  flipped[bytes.size() / 2] ^= 0x40;
  expect(flipped, "checksum mismatch");
  std::string version = bytes;
  version[8] = 9;
  expect(version, "version 9 is not supported");
  expect(bytes + "x", "corrupt state file");
  EXPECT_NO_THROW(deserialize_state(bytes, "s.state"));
  // The same through the file API.
  const std::string path = test::temp_dir() + "/cut.state";
  const std::string cut = bytes.substr(0, bytes.size() - 100);
  write_file_atomic(path, cut.data(), cut.size());
  EXPECT_THROW(load_state(path), Error);
}

TEST(State, SaveIsAtomicAndReplacesOldFile) {
  const Model m = Model::load(test::data_path("models/qrwkv6_tiny"));
  State s = m.new_state();
  const std::string dir = test::temp_dir();
  const std::string path = dir + "/s.state";
  save_state(s, path);
  forward(m, s, std::vector<int32_t>{4, 5}, false);
  save_state(s, path);
  EXPECT_EQ(load_state(path).n_tokens, 2);
  // No temporary files are left behind.
  int files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++files;
  EXPECT_EQ(files, 1);
  // A failed save leaves the existing file untouched.
  EXPECT_THROW(save_state(s, dir + "/missing-dir/s.state"), Error);
  EXPECT_EQ(load_state(path).n_tokens, 2);
}

TEST(State, OutOfRangeTokensAreRefused) {
  const Model m = Model::load(test::data_path("models/qrwkv6_tiny"));
  State s = m.new_state();
  try {
    forward(m, s, std::vector<int32_t>{1, 1000});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("token id 1000 is out of range (vocabulary size 1000)"));
  }
  EXPECT_EQ(s.n_tokens, 0);  // nothing was consumed
}

}  // namespace
}  // namespace qrwkv

namespace qrwkv {
namespace {

// A 512-token prefill (chunked WKV on the fast path) agrees with token-by-token evaluation in
// logits and final state, on the golden sequence whose decays reach w ≈ 6e-4.
// Several threads using one model (as library users and the server's threads may): the model
// serializes its passes, and each thread's results equal the same work done alone.
TEST(State, ConcurrentForwardCallsGiveTheSequentialResults) {
  for (const char* name : {"qrwkv6_tiny", "qwen2_tiny"}) {
    const Model m =
        Model::load(test::data_path(std::string("models/") + name), test::float32_load(2));
    const int64_t V = m.config.vocab_size;
    std::vector<std::vector<float>> want(4), got(4);
    for (size_t i = 0; i < 4; ++i) {
      State st = m.new_state();
      want[i] = forward(m, st, test_tokens(30, V, static_cast<uint32_t>(i)));
    }
    std::vector<std::thread> threads;
    for (size_t i = 0; i < 4; ++i)
      threads.emplace_back([&, i] {
        for (int rep = 0; rep < 5; ++rep) {
          State st = m.new_state();
          got[i] = forward(m, st, test_tokens(30, V, static_cast<uint32_t>(i)));
        }
      });
    for (auto& t : threads) t.join();
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(got[i], want[i]) << name << " thread " << i;
  }
}

TEST(State, ChunkedPrefillEqualsTokenByToken) {
  Model m = Model::load(test::data_path("models/qrwkv6_tiny"));
  SafetensorsFile e(test::data_path("models/qrwkv6_tiny.expected.safetensors"));
  const TensorInfo* t = e.find("long_input_ids");
  ASSERT_NE(t, nullptr);
  std::vector<int32_t> ids(512);
  std::memcpy(ids.data(), e.data(*t), ids.size() * 4);
  State whole = m.new_state(), steps = m.new_state();
  const auto lw = forward(m, whole, ids, false);
  std::vector<float> ls;
  for (int32_t id : ids) ls = forward(m, steps, std::span<const int32_t>(&id, 1), false);
  double max_l = 0;
  for (float x : lw) max_l = std::max(max_l, std::fabs(double{x}));
  EXPECT_LT(max_abs_diff(ls, lw.data(), lw.size()) / max_l, 1e-5);
  for (size_t l = 0; l < whole.layers.size(); ++l) {
    const auto& a = whole.layers[l].wkv;
    double max_s = 0;
    for (float x : a) max_s = std::max(max_s, std::fabs(double{x}));
    EXPECT_LT(max_abs_diff(steps.layers[l].wkv, a.data(), a.size()) / max_s, 1e-5) << "layer " << l;
    const auto& x = whole.layers[l].x_prev;
    double max_x = 0;
    for (float v : x) max_x = std::max(max_x, std::fabs(double{v}));
    EXPECT_LT(max_abs_diff(steps.layers[l].x_prev, x.data(), x.size()) / max_x, 1e-5)
        << "layer " << l;
  }
}

}  // namespace
}  // namespace qrwkv
