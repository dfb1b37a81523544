#include "runtime/logprobs.h"

#include <algorithm>
#include <cmath>

namespace qrwkv {

double log_sum_exp(std::span<const float> z) {
  if (z.empty()) return -INFINITY;
  double mx = z[0];
  for (float v : z) mx = std::max(mx, double{v});
  double s = 0;
  for (float v : z) s += std::exp(double{v} - mx);
  return mx + std::log(s);
}

std::vector<int32_t> top_ids(std::span<const float> z, int k) {
  const size_t n = std::min(z.size(), static_cast<size_t>(std::max(0, k)));
  std::vector<int32_t> best;
  best.reserve(n + 1);
  if (n == 0) return best;
  // Better: higher logit, then lower id. An insertion into a short sorted list: k is small
  // (≤ 20) and most of the vocabulary fails the first comparison with the list's last entry.
  auto better = [&](int32_t a, int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); };
  for (size_t v = 0; v < z.size(); ++v) {
    const auto id = static_cast<int32_t>(v);
    if (best.size() == n && !better(id, best.back())) continue;
    auto at = std::upper_bound(best.begin(), best.end(), id,
                               [&](int32_t a, int32_t b) { return better(a, b); });
    best.insert(at, id);
    if (best.size() > n) best.pop_back();
  }
  return best;
}

TokenLogprob token_logprob(std::span<const float> z, int32_t id, int k) {
  const double lse = log_sum_exp(z);
  TokenLogprob t;
  t.id = id;
  t.logprob = double{z[static_cast<size_t>(id)]} - lse;
  for (int32_t v : top_ids(z, k)) t.top.push_back({v, double{z[static_cast<size_t>(v)]} - lse});
  return t;
}

}  // namespace qrwkv
