// Chat templates: turns a conversation into the prompt text exactly as transformers'
// apply_chat_template(..., tokenize=False) does, using the model's Jinja template.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja.h"

namespace qrwkv {

class ChatTemplate {
 public:
  // Loads the template of the model in `model_dir` the way transformers does: a
  // chat_template.jinja file wins over tokenizer_config.json's "chat_template" (a string or a
  // list of {name, template}); bos/eos/unk/pad tokens come from tokenizer_config.json. A model
  // without any template gets a plain ChatML template. Throws Error naming the file.
  static ChatTemplate load(const std::string& model_dir);
  // The template of a GGUF file (tokenizer.chat_template, or the named ones listed by
  // tokenizer.chat_templates), with the special tokens its token ids name; ChatML without one.
  // load() of a file path comes here.
  static ChatTemplate load_gguf(const std::string& path);

  // A template from text; `where` names its origin in error messages.
  static ChatTemplate from_source(const std::string& source, const std::string& where);

  // The template used when a model has none (ChatML, as transformers' old default).
  static const std::string& chatml_source();

  // Replaces the model's template(s) with `source` (e.g. from --template FILE).
  void set_template(const std::string& source, const std::string& where);

  // Special-token variables (bos_token, eos_token, ...) passed to every render.
  void set_special_token(const std::string& name, const std::string& value);

  // Renders `request`, an object with "messages" and optionally "tools", "documents",
  // "add_generation_prompt", "continue_final_message" and any other keyword, which becomes a
  // template variable (e.g. "enable_thinking"). Throws Error on template or request errors.
  std::string render(const nlohmann::ordered_json& request) const;

  // Names of the templates (a single template is called "default").
  std::vector<std::string> names() const;
  // The text of the template used for requests without tools ("default", or the only one).
  const std::string& source() const;

 private:
  void add_template(const std::string& name, const std::string& source, const std::string& where);
  std::vector<std::string> sources_;  // the text of each of templates_
  std::vector<std::pair<std::string, std::shared_ptr<jinja::Template>>> templates_;
  nlohmann::ordered_json special_tokens_ = nlohmann::ordered_json::object();
  std::string where_;
};

}  // namespace qrwkv
