// Token sampling: a chain of logit transforms followed by a draw, with llama.cpp's defaults and
// order. Applied to the logits of one position:
//
//   1. logit bias          l[i] += bias[i]
//   2. penalties over the last `repeat_last_n` tokens (each distinct token once):
//        repetition        l > 0 ? l / repeat_penalty : l · repeat_penalty
//        presence          l −= presence_penalty            (token seen at least once)
//        frequency         l −= frequency_penalty · count
//   3. temperature ≤ 0: greedy, return argmax (ties: the lowest id)
//   4. top-k               keep the k largest (k ≤ 0: all)
//   5. top-p               keep the smallest prefix (by probability) whose mass reaches p
//   6. min-p               keep tokens with p ≥ min_p · p_max
//   7. temperature         softmax(l / T) over what is left, then draw with the seeded RNG
#pragma once

#include <cstdint>
#include <map>
#include <random>
#include <span>
#include <vector>

namespace qrwkv {

struct SamplerParams {
  float temperature = 0.8f;
  int32_t top_k = 40;
  float top_p = 0.95f;
  float min_p = 0.05f;
  float repeat_penalty = 1.0f;  // 1 = off
  int32_t repeat_last_n = 64;   // window of the penalties; 0 = off, -1 = whole history
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::map<int32_t, float> logit_bias;
  uint64_t seed = 0;  // callers draw a random seed when the user gives none
};

// One candidate token: id, logit and (after softmax) probability.
struct Candidate {
  int32_t id;
  float logit;
  float p;
};

class Sampler {
 public:
  explicit Sampler(SamplerParams params);

  // Picks the next token from `logits` [V]. Does not record it: call accept() for every token
  // that enters the context (prompt tokens too, so that penalties see them).
  int32_t sample(std::span<const float> logits);
  void accept(int32_t token);
  void reset_history() { history_.clear(); }

  const SamplerParams& params() const { return params_; }

  // The chain's steps, exposed for tests. Each keeps `c` sorted by decreasing logit after
  // top_k; top_p and min_p expect probabilities filled in by softmax().
  static void apply_penalties(std::vector<Candidate>& c, std::span<const int32_t> recent,
                              const SamplerParams& p);
  static void top_k(std::vector<Candidate>& c, int32_t k);
  static void softmax(std::vector<Candidate>& c, float temperature);
  static void top_p(std::vector<Candidate>& c, float p);
  static void min_p(std::vector<Candidate>& c, float p);

 private:
  SamplerParams params_;
  std::mt19937_64 rng_;
  size_t window() const;                    // repeat_last_n as a count
  std::span<const int32_t> recent() const;  // the last window() accepted tokens
  std::vector<int32_t> history_;            // accepted tokens, at least the last window()
  std::vector<Candidate> candidates_;
};

}  // namespace qrwkv
