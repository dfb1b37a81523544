// The sampler chain on hand-built logits: each step's boundaries and renormalization.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "runtime/sampler.h"
#include "runtime/stop.h"

namespace qrwkv {
namespace {

std::vector<Candidate> from_probs(std::vector<float> p) {
  std::vector<Candidate> c;
  for (size_t i = 0; i < p.size(); ++i)
    c.push_back({static_cast<int32_t>(i), std::log(p[i]), p[i]});
  return c;
}

std::vector<int32_t> ids(const std::vector<Candidate>& c) {
  std::vector<int32_t> out;
  for (const auto& x : c) out.push_back(x.id);
  return out;
}

SamplerParams plain(float temperature) {
  SamplerParams p;
  p.temperature = temperature;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  return p;
}

TEST(Sampler, GreedyIsArgmaxWithLowestIdOnTies) {
  Sampler s(plain(0.0f));
  EXPECT_EQ(s.sample(std::vector<float>{0.1f, 3.0f, -1.0f, 2.9f}), 1);
  EXPECT_EQ(s.sample(std::vector<float>{1.0f, 5.0f, 5.0f}), 1);
}

TEST(Sampler, TopKKeepsTheKLargestInOrder) {
  std::vector<Candidate> c = {{0, 1, 0}, {1, 5, 0}, {2, 3, 0}, {3, 4, 0}, {4, 2, 0}};
  Sampler::top_k(c, 2);
  EXPECT_EQ(ids(c), (std::vector<int32_t>{1, 3}));
  std::vector<Candidate> all = {{0, 1, 0}, {1, 5, 0}, {2, 3, 0}};
  Sampler::top_k(all, 0);  // off: everything, sorted
  EXPECT_EQ(ids(all), (std::vector<int32_t>{1, 2, 0}));
}

TEST(Sampler, SoftmaxWithTemperature) {
  std::vector<Candidate> c = {{0, 0.0f, 0}, {1, std::log(2.0f), 0}, {2, std::log(3.0f), 0}};
  Sampler::softmax(c, 1.0f);
  EXPECT_NEAR(c[0].p, 1.0 / 6, 1e-6);
  EXPECT_NEAR(c[1].p, 2.0 / 6, 1e-6);
  EXPECT_NEAR(c[2].p, 3.0 / 6, 1e-6);
  Sampler::softmax(c, 2.0f);  // exp(l/2) = 1, √2, √3
  const double z = 1 + std::sqrt(2.0) + std::sqrt(3.0);
  EXPECT_NEAR(c[0].p, 1 / z, 1e-6);
  EXPECT_NEAR(c[2].p, std::sqrt(3.0) / z, 1e-6);
}

TEST(Sampler, TopPKeepsSmallestPrefixReachingP) {
  auto run = [](float p) {
    auto c = from_probs({0.5f, 0.3f, 0.15f, 0.05f});
    Sampler::top_p(c, p);
    return c.size();
  };
  EXPECT_EQ(run(0.5f), 1u);  // 0.5 reaches 0.5
  EXPECT_EQ(run(0.51f), 2u);
  EXPECT_EQ(run(0.8f), 2u);  // 0.5 + 0.3
  EXPECT_EQ(run(0.81f), 3u);
  EXPECT_EQ(run(0.99f), 4u);
  EXPECT_EQ(run(1.0f), 4u);
}

TEST(Sampler, MinPIsRelativeToTheMostLikely) {
  auto run = [](float p) {
    auto c = from_probs({0.5f, 0.3f, 0.15f, 0.05f});
    Sampler::min_p(c, p);
    return ids(c);
  };
  EXPECT_EQ(run(0.3f), (std::vector<int32_t>{0, 1, 2}));  // threshold 0.15 keeps 0.15
  EXPECT_EQ(run(0.31f), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(run(0.0f), (std::vector<int32_t>{0, 1, 2, 3}));
}

TEST(Sampler, PenaltiesCountEachTokenInTheWindow) {
  std::vector<Candidate> c = {{0, 2.0f, 0}, {1, -2.0f, 0}, {2, 1.0f, 0}};
  SamplerParams p;
  p.repeat_penalty = 2.0f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  const std::vector<int32_t> recent = {0, 1, 0};
  Sampler::apply_penalties(c, recent, p);
  EXPECT_FLOAT_EQ(c[0].logit, 2.0f / 2 - 0.5f - 2 * 0.25f);   // positive: divided; seen twice
  EXPECT_FLOAT_EQ(c[1].logit, -2.0f * 2 - 0.5f - 1 * 0.25f);  // negative: multiplied; seen once
  EXPECT_FLOAT_EQ(c[2].logit, 1.0f);                          // not seen
}

TEST(Sampler, RepeatWindowOnlySeesLastN) {
  SamplerParams p = plain(0.0f);
  p.repeat_penalty = 100.0f;
  p.repeat_last_n = 2;
  Sampler s(p);
  for (int32_t t : {0, 2, 2}) s.accept(t);  // token 0 fell out of the 2-token window
  EXPECT_EQ(s.sample(std::vector<float>{3.0f, 1.0f, 2.9f}), 0);
  s.accept(0);  // now in the window: penalized to 0.03, token 2 (2.9 / 100) too
  EXPECT_EQ(s.sample(std::vector<float>{3.0f, 1.0f, 2.9f}), 1);
}

// The window stays the last N tokens however many come (the history drops old tokens in
// batches), and a window as large as a request may ask for costs nothing up front.
TEST(Sampler, RepeatWindowSlidesOverLongHistories) {
  SamplerParams p = plain(0.0f);
  p.repeat_penalty = 100.0f;
  p.repeat_last_n = 3;
  Sampler s(p);
  for (int i = 0; i < 1000; ++i) s.accept(1);
  for (int32_t t : {2, 2, 2}) s.accept(t);  // token 1 just left the window
  EXPECT_EQ(s.sample(std::vector<float>{0.5f, 3.0f, 2.9f}), 1);
  s.accept(1);
  EXPECT_EQ(s.sample(std::vector<float>{0.5f, 3.0f, 2.9f}), 0);
  p.repeat_last_n = 2147483647;
  Sampler huge(p);
  huge.accept(1);
  EXPECT_EQ(huge.sample(std::vector<float>{0.5f, 3.0f, 2.9f}), 2);
}

TEST(Sampler, LogitBiasAppliesBeforeGreedy) {
  SamplerParams p = plain(0.0f);
  p.logit_bias[2] = 10.0f;
  Sampler s(p);
  EXPECT_EQ(s.sample(std::vector<float>{1.0f, 2.0f, -5.0f}), 2);
}

TEST(Sampler, DrawsFollowTheDistributionAndTheSeed) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplerParams p = plain(1.0f);
  p.seed = 42;
  Sampler a(p), b(p);
  std::map<int32_t, int> count;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const int32_t x = a.sample(logits);
    EXPECT_EQ(x, b.sample(logits));  // same seed, same draws
    ++count[x];
  }
  EXPECT_NEAR(count[0] / double(n), 0.5, 0.02);
  EXPECT_NEAR(count[1] / double(n), 0.3, 0.02);
  EXPECT_NEAR(count[2] / double(n), 0.2, 0.02);
  // With top-k 1 only the best token can come out, whatever the draw.
  p.top_k = 1;
  Sampler c(p);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(c.sample(logits), 0);
}

TEST(StopStrings, NeverEmitsAStopStringSplitAcrossPieces) {
  StopStrings s({"</s>", "STOP"});
  std::string out;
  out += s.push("Hello <");
  EXPECT_EQ(out, "Hello ");  // "<" might start "</s>"
  out += s.push("/s");
  EXPECT_EQ(out, "Hello ");
  out += s.push(">tail");
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(out + s.flush(), "Hello ");
  EXPECT_EQ(s.push("more"), "");
}

TEST(StopStrings, ReleasesTextThatCannotStartAStop) {
  StopStrings s({"</s>"});
  EXPECT_EQ(s.push("a<b"), "a<b");
  EXPECT_EQ(s.push("x</"), "x");
  EXPECT_FALSE(s.stopped());
  EXPECT_EQ(s.flush(), "</");
}

TEST(StopStrings, EarliestStopWinsAndMultibyteIsKept) {
  StopStrings s({"world", "é!"});
  EXPECT_EQ(s.push("caf"), "caf");
  EXPECT_EQ(s.push("é"), "");         // could begin "é!"
  EXPECT_EQ(s.push("!! world"), "");  // "é!" comes before "world"
  EXPECT_TRUE(s.stopped());
  StopStrings t({"world", "lo"});
  EXPECT_EQ(t.push("hello world"), "hel");
}

}  // namespace
}  // namespace qrwkv
