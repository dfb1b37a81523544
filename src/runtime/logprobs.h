// Log-probabilities of tokens under a row of logits, as the OpenAI `logprobs` fields and the
// evaluation metrics report them: log-softmax of the raw logits (no temperature, penalty or bias),
// computed in double precision.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace qrwkv {

struct TopLogprob {
  int32_t id = 0;
  double logprob = 0;
};

struct TokenLogprob {
  int32_t id = 0;
  double logprob = 0;
  std::vector<TopLogprob> top;  // the k most likely tokens, most likely first
};

// log Σ_v exp(z_v), shifted by the maximum so that it never overflows.
double log_sum_exp(std::span<const float> logits);

// The k most likely ids of a row (highest logit first; equal logits: lower id first).
std::vector<int32_t> top_ids(std::span<const float> logits, int k);

// log softmax(logits)[id], and the k most likely tokens with theirs.
TokenLogprob token_logprob(std::span<const float> logits, int32_t id, int k);

}  // namespace qrwkv
