#include "runtime/loader.h"

#include <chrono>
#include <filesystem>

#include "io/error.h"
#include "io/json.h"
#include "io/mapped_file.h"

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

LoadedModel load_model(const std::string& dir, const LoadModelOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  Model m = Model::load(dir, o.model);
  if (m.store.file_bytes() > o.prefetch_above_bytes)
    m.store.prefetch(o.progress ? o.progress : [](double) {});
  Tokenizer tok = Tokenizer::from_dir(dir);
  if (tok.vocab_size() > m.config.vocab_size)
    fail(dir, "the tokenizer has " + std::to_string(tok.vocab_size()) + " ids but the model only " +
                  std::to_string(m.config.vocab_size));
  std::optional<ChatTemplate> tmpl;
  if (o.chat_template) {
    tmpl = ChatTemplate::load(dir);
    if (!o.chat_template_file.empty())
      tmpl->set_template(read_text_file(o.chat_template_file), o.chat_template_file);
  }
  std::set<int32_t> eos = end_of_generation_ids(dir, m.config, tok);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {std::move(m), std::move(tok), std::move(tmpl), std::move(eos), s};
}

}  // namespace qrwkv
