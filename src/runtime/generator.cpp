#include "runtime/generator.h"

#include <chrono>
#include <limits>

namespace qrwkv {

Reply::Reply(const Tokenizer& tok, Sampler& sampler, const GenerateOptions& opt)
    : tok_(&tok), sampler_(&sampler), opt_(&opt), decoder_(tok), stops_(opt.stop_strings) {
  if (opt.json) json_.emplace(*opt.json);
}

std::optional<int32_t> Reply::next(std::span<const float> logits) {
  if (done()) return std::nullopt;
  const auto limit = [&] {
    return opt_->n_predict >= 0 && static_cast<int64_t>(tokens_.size()) >= opt_->n_predict;
  };
  if (limit()) {
    end("length");
    return std::nullopt;
  }
  const int32_t next = json_ ? sample_json(logits) : sampler_->sample(logits);
  if (next < 0 || (!opt_->ignore_eos && opt_->eos_ids.count(next) != 0)) {
    end("stop");
    return std::nullopt;
  }
  tokens_.push_back(next);
  sampler_->accept(next);
  // A model's vocabulary is often padded beyond the tokenizer's; such an id has no text.
  if (tok_->is_known(next)) text_ += stops_.push(decoder_.push(next));
  if (stops_.stopped() || (json_ && json_->complete()))
    end("stop");
  else if (limit())
    end("length");
  return next;
}

void Reply::finish(const std::string& reason) {
  if (!done()) end(reason);
}

void Reply::end(const std::string& reason) {
  finish_reason_ = reason;
  if (!stops_.stopped()) {
    text_ += stops_.push(decoder_.flush());
    text_ += stops_.flush();
  }
}

std::string Reply::take_text() {
  std::string out;
  out.swap(text_);
  return out;
}

// Constrained sampling for response_format: a drawn token whose bytes would make the reply an
// impossible JSON prefix is masked out and the draw repeated. Rejections are rare with a model
// that follows the instruction, so a few redraws come first; after them every token of the
// vocabulary is checked once and the invalid ones masked together. Special tokens and
// end-of-generation tokens (which need not be special) never pass: the reply ends when the
// document is complete. Returns -1 when no token can continue the document.
int32_t Reply::sample_json(std::span<const float> logits) {
  const int64_t V = std::min<int64_t>(static_cast<int64_t>(logits.size()), tok_->vocab_size());
  auto valid = [&](int32_t id) {
    if (id < 0 || id >= V || !tok_->is_known(id) || tok_->is_special(id) ||
        opt_->eos_ids.count(id) != 0)
      return false;
    const std::string& bytes = tok_->token_bytes(id);
    if (bytes.empty()) return false;
    JsonPrefixValidator v = *json_;
    return v.push(bytes);
  };
  constexpr float kMasked = -std::numeric_limits<float>::infinity();
  masked_.assign(logits.begin(), logits.end());
  std::vector<float>& l = masked_;
  // Ids beyond the tokenizer's vocabulary have no text.
  for (size_t i = static_cast<size_t>(V); i < l.size(); ++i) l[i] = kMasked;
  int32_t next = -1;
  for (int attempt = 0; attempt < 8; ++attempt) {
    next = sampler_->sample(l);
    if (valid(next)) break;
    if (next >= 0 && static_cast<size_t>(next) < l.size()) l[static_cast<size_t>(next)] = kMasked;
    next = -1;
  }
  if (next < 0) {
    bool any = false;
    for (int32_t id = 0; id < V; ++id) {
      if (l[static_cast<size_t>(id)] == kMasked) continue;
      if (valid(id))
        any = true;
      else
        l[static_cast<size_t>(id)] = kMasked;
    }
    if (!any) return -1;
    next = sampler_->sample(l);
    // Rounding in the draw can land on a masked candidate when few tokens are left; the most
    // likely valid token is then taken.
    if (!valid(next)) {
      next = -1;
      for (int32_t id = 0; id < V; ++id)
        if (l[static_cast<size_t>(id)] != kMasked &&
            (next < 0 || l[static_cast<size_t>(id)] > l[static_cast<size_t>(next)]))
          next = id;
    }
  }
  json_->push(tok_->token_bytes(next));
  return next;
}

std::vector<float> prefill(const Model& m, State& state, std::span<const int32_t> tokens) {
  return forward(m, state, tokens, false);
}

GenerateResult generate(const Model& m, const Tokenizer& tok, State& state,
                        std::vector<float> logits, Sampler& sampler, const GenerateOptions& opt,
                        const std::function<void(std::string_view)>& on_text) {
  const auto t0 = std::chrono::steady_clock::now();
  GenerateResult r;
  Reply reply(tok, sampler, opt);
  auto emit = [&] {
    const std::string s = reply.take_text();
    if (s.empty()) return;
    r.text += s;
    if (on_text) on_text(s);
  };
  for (;;) {
    if (opt.interrupt != nullptr && opt.interrupt->load()) {
      reply.finish("interrupted");
      break;
    }
    const std::optional<int32_t> next = reply.next(logits);
    if (!next) break;
    // Every reply token goes into the state, the last one too: the state then continues the
    // reply exactly (a chat's next turn, --state-out).
    SequenceInput in{&state, std::span<const int32_t>(&*next, 1), logits.data(), false};
    forward_batch(m, std::span<SequenceInput>(&in, 1));
    emit();
    if (reply.done()) break;
  }
  emit();
  r.tokens = reply.tokens();
  r.finish_reason = reply.finish_reason();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace qrwkv
