#include "runtime/generator.h"

#include <chrono>
#include <filesystem>

#include "io/json.h"
#include "runtime/stop.h"

namespace qrwkv {

std::set<int32_t> end_of_generation_ids(const std::string& model_dir, const Config& config,
                                        const Tokenizer& tokenizer) {
  std::set<int32_t> ids;
  for (int64_t id : config.eos_token_ids) ids.insert(static_cast<int32_t>(id));
  const std::string gen = (std::filesystem::path(model_dir) / "generation_config.json").string();
  if (std::filesystem::exists(gen)) {
    const json j = load_json_file(gen);
    if (auto it = j.find("eos_token_id"); it != j.end()) {
      if (it->is_number_integer()) ids.insert(it->get<int32_t>());
      if (it->is_array())
        for (const auto& v : *it)
          if (v.is_number_integer()) ids.insert(v.get<int32_t>());
    }
  }
  if (auto eos = tokenizer.eos_id()) ids.insert(*eos);
  // ChatML models end a turn with <|im_end|>; base configs often list only <|endoftext|>.
  for (const char* t : {"<|im_end|>", "<|endoftext|>"})
    if (auto id = tokenizer.token_to_id(t)) ids.insert(*id);
  return ids;
}

std::vector<float> prefill(const Model& m, State& state, std::span<const int32_t> tokens) {
  return forward(m, state, tokens, false);
}

GenerateResult generate(const Model& m, const Tokenizer& tok, State& state,
                        std::vector<float> logits, Sampler& sampler, const GenerateOptions& opt,
                        const std::function<void(std::string_view)>& on_text) {
  const auto t0 = std::chrono::steady_clock::now();
  GenerateResult r;
  TokenStreamDecoder decoder(tok);
  StopStrings stops(opt.stop_strings);
  auto emit = [&](const std::string& s) {
    if (s.empty()) return;
    r.text += s;
    if (on_text) on_text(s);
  };
  r.finish_reason = "length";
  while (opt.n_predict < 0 || static_cast<int64_t>(r.tokens.size()) < opt.n_predict) {
    if (opt.interrupt != nullptr && opt.interrupt->load()) {
      r.finish_reason = "interrupted";
      break;
    }
    const int32_t next = sampler.sample(logits);
    if (!opt.ignore_eos && opt.eos_ids.count(next) != 0) {
      r.finish_reason = "stop";
      break;
    }
    r.tokens.push_back(next);
    sampler.accept(next);
    logits = forward(m, state, std::span<const int32_t>(&next, 1), false);
    emit(stops.push(decoder.push(next)));
    if (stops.stopped()) {
      r.finish_reason = "stop";
      break;
    }
  }
  if (!stops.stopped()) {
    emit(stops.push(decoder.flush()));
    emit(stops.flush());
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace qrwkv
