#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

namespace qrwkv {

namespace {
// Windows up to this size get their memory when the sampler is made; larger ones (a request may
// ask for any) grow as tokens come.
constexpr size_t kReservedWindow = 4096;
}  // namespace

Sampler::Sampler(SamplerParams params) : params_(std::move(params)), rng_(params_.seed) {
  // The history holds up to twice the window before the older half is dropped at once.
  if (window() <= kReservedWindow) history_.reserve(2 * window() + 1);
}

size_t Sampler::window() const {
  // -1 means the whole history.
  return params_.repeat_last_n < 0 ? SIZE_MAX / 4 : static_cast<size_t>(params_.repeat_last_n);
}

std::span<const int32_t> Sampler::recent() const {
  const size_t n = std::min(history_.size(), window());
  return std::span<const int32_t>(history_.data() + (history_.size() - n), n);
}

void Sampler::accept(int32_t token) {
  history_.push_back(token);
  // Keep what the penalties can look at, dropping old tokens in batches of a window so that each
  // accepted token costs O(1) on average.
  if (history_.size() > 2 * window())
    history_.erase(history_.begin(), history_.end() - static_cast<std::ptrdiff_t>(window()));
}

void Sampler::apply_penalties(std::vector<Candidate>& c, std::span<const int32_t> recent,
                              const SamplerParams& p) {
  if (recent.empty()) return;
  if (p.repeat_penalty == 1.0f && p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f) return;
  std::unordered_map<int32_t, int> count;
  for (int32_t t : recent) ++count[t];
  for (auto& x : c) {
    auto it = count.find(x.id);
    if (it == count.end()) continue;
    if (p.repeat_penalty != 1.0f)
      x.logit = x.logit > 0 ? x.logit / p.repeat_penalty : x.logit * p.repeat_penalty;
    x.logit -= static_cast<float>(it->second) * p.frequency_penalty + p.presence_penalty;
  }
}

void Sampler::top_k(std::vector<Candidate>& c, int32_t k) {
  auto by_logit = [](const Candidate& a, const Candidate& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  };
  if (k > 0 && static_cast<size_t>(k) < c.size()) {
    std::partial_sort(c.begin(), c.begin() + k, c.end(), by_logit);
    c.resize(static_cast<size_t>(k));
  } else {
    std::sort(c.begin(), c.end(), by_logit);
  }
}

void Sampler::softmax(std::vector<Candidate>& c, float temperature) {
  if (c.empty()) return;
  float max_logit = -INFINITY;
  for (const auto& x : c) max_logit = std::max(max_logit, x.logit);
  double sum = 0;
  for (auto& x : c) {
    x.p = std::exp((x.logit - max_logit) / temperature);
    sum += x.p;
  }
  for (auto& x : c) x.p = static_cast<float>(x.p / sum);
}

void Sampler::top_p(std::vector<Candidate>& c, float p) {
  if (p >= 1.0f || c.empty()) return;
  double mass = 0;
  size_t keep = c.size();
  for (size_t i = 0; i < c.size(); ++i) {
    mass += c[i].p;
    if (mass >= p) {
      keep = i + 1;
      break;
    }
  }
  c.resize(keep);
}

void Sampler::min_p(std::vector<Candidate>& c, float p) {
  if (p <= 0.0f || c.empty()) return;
  float p_max = 0;
  for (const auto& x : c) p_max = std::max(p_max, x.p);
  const float threshold = p * p_max;
  std::erase_if(c, [&](const Candidate& x) { return x.p < threshold; });
}

int32_t Sampler::sample(std::span<const float> logits) {
  // The candidate list keeps its memory from one call to the next.
  std::vector<Candidate>& c = candidates_;
  c.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) c[i] = {static_cast<int32_t>(i), logits[i], 0.0f};
  for (const auto& [id, bias] : params_.logit_bias)
    if (id >= 0 && static_cast<size_t>(id) < c.size()) c[id].logit += bias;
  apply_penalties(c, recent(), params_);

  if (params_.temperature <= 0.0f) {
    const auto best =
        std::max_element(c.begin(), c.end(), [](const Candidate& a, const Candidate& b) {
          return a.logit < b.logit;  // max_element keeps the first (lowest id) of equal maxima
        });
    return best->id;
  }
  top_k(c, params_.top_k);
  // top-p and min-p judge the distribution before temperature, as llama.cpp's chain does
  // (its temperature stage comes last).
  softmax(c, 1.0f);
  top_p(c, params_.top_p);
  min_p(c, params_.min_p);
  softmax(c, params_.temperature);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  double r = u(rng_), acc = 0;
  for (const auto& x : c) {
    acc += x.p;
    if (r < acc) return x.id;
  }
  return c.back().id;
}

}  // namespace qrwkv
