#include "text/chat_template.h"

#include <algorithm>
#include <filesystem>

#include "io/error.h"
#include "io/mapped_file.h"

namespace qrwkv {

namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

// Special tokens in tokenizer_config.json are strings or AddedToken objects ({"content": ...}).
bool token_text(const ojson& v, std::string* out) {
  if (v.is_string()) {
    *out = v.get<std::string>();
    return true;
  }
  if (v.is_object()) {
    auto it = v.find("content");
    if (it != v.end() && it->is_string()) {
      *out = it->get<std::string>();
      return true;
    }
  }
  return false;
}

ojson parse_ordered(const std::string& text, const std::string& where) {
  try {
    return ojson::parse(text);
  } catch (const ojson::exception& e) {
    fail(where, std::string("not valid JSON (") + e.what() + ")");
  }
}

}  // namespace

const std::string& ChatTemplate::chatml_source() {
  static const std::string source =
      "{% for message in messages %}"
      "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
      "{% endfor %}"
      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
  return source;
}

ChatTemplate ChatTemplate::from_source(const std::string& source, const std::string& where) {
  ChatTemplate t;
  t.set_template(source, where);
  return t;
}

void ChatTemplate::set_template(const std::string& source, const std::string& where) {
  templates_.clear();
  sources_.clear();
  add_template("default", source, where);
  where_ = where;
}

void ChatTemplate::add_template(const std::string& name, const std::string& source,
                                const std::string& where) {
  templates_.emplace_back(name,
                          std::make_shared<jinja::Template>(source, where + ": chat template"));
  sources_.push_back(source);
}

const std::string& ChatTemplate::source() const {
  for (size_t i = 0; i < templates_.size(); ++i)
    if (templates_[i].first == "default") return sources_[i];
  return sources_.at(0);
}

void ChatTemplate::set_special_token(const std::string& name, const std::string& value) {
  special_tokens_[name] = value;
}

std::vector<std::string> ChatTemplate::names() const {
  std::vector<std::string> out;
  for (const auto& t : templates_) out.push_back(t.first);
  return out;
}

ChatTemplate ChatTemplate::load(const std::string& model_dir) {
  ChatTemplate t;
  const fs::path dir(model_dir);
  std::error_code ec;
  if (fs::is_regular_file(dir, ec)) return load_gguf(model_dir);
  if (!fs::is_directory(dir, ec)) fail(model_dir, "not a directory");

  const fs::path config_path = dir / "tokenizer_config.json";
  ojson config = ojson::object();
  if (fs::exists(config_path, ec)) {
    config = parse_ordered(read_text_file(config_path.string()), config_path.string());
    if (!config.is_object()) fail(config_path.string(), "expected a JSON object");
  }

  // Special tokens that are set become variables; unset (null) ones stay undefined, as
  // transformers' special_tokens_map leaves them out.
  for (const char* name : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                           "cls_token", "mask_token"}) {
    auto it = config.find(name);
    std::string text;
    if (it != config.end() && token_text(*it, &text) && !text.empty())
      t.special_tokens_[name] = text;
  }
  if (auto it = config.find("additional_special_tokens"); it != config.end() && it->is_array()) {
    ojson list = ojson::array();
    for (const auto& v : *it) {
      std::string text;
      if (token_text(v, &text)) list.push_back(text);
    }
    if (!list.empty()) t.special_tokens_["additional_special_tokens"] = list;
  }

  auto add = [&](const std::string& name, const std::string& source, const std::string& where) {
    t.add_template(name, source, where);
  };

  const fs::path jinja_path = dir / "chat_template.jinja";
  if (fs::exists(jinja_path, ec)) {
    // transformers saves the template as its own file and prefers it over the config entry.
    add("default", read_text_file(jinja_path.string()), jinja_path.string());
    t.where_ = jinja_path.string();
    const fs::path extra = dir / "additional_chat_templates";
    if (fs::is_directory(extra, ec)) {
      std::vector<fs::path> files;
      for (const auto& e : fs::directory_iterator(extra, ec))
        if (e.path().extension() == ".jinja") files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) add(f.stem().string(), read_text_file(f.string()), f.string());
    }
  } else if (auto it = config.find("chat_template"); it != config.end() && !it->is_null()) {
    const std::string where = config_path.string();
    t.where_ = where;
    if (it->is_string()) {
      add("default", it->get<std::string>(), where);
    } else if (it->is_array()) {
      for (const auto& entry : *it) {
        if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") ||
            !entry["name"].is_string() || !entry["template"].is_string())
          fail(where, "chat_template list entries must be {\"name\": ..., \"template\": ...}");
        add(entry["name"].get<std::string>(), entry["template"].get<std::string>(),
            where + " (" + entry["name"].get<std::string>() + ")");
      }
    } else {
      fail(where, "chat_template must be a string or a list of named templates");
    }
  } else if (fs::exists(dir / "chat_template.json", ec)) {
    // Processors of multimodal models keep the template in chat_template.json.
    const std::string where = (dir / "chat_template.json").string();
    ojson j = parse_ordered(read_text_file(where), where);
    if (!j.is_object() || !j.contains("chat_template") || !j["chat_template"].is_string())
      fail(where, "expected {\"chat_template\": \"...\"}");
    add("default", j["chat_template"].get<std::string>(), where);
    t.where_ = where;
  }
  if (t.templates_.empty()) {
    add("default", chatml_source(), "built-in ChatML");
    t.where_ = "built-in ChatML";
  }
  return t;
}

std::string ChatTemplate::render(const ojson& request) const {
  if (!request.is_object()) fail("request", "expected a JSON object");
  auto messages = request.find("messages");
  if (messages == request.end() || !messages->is_array())
    fail("request", "\"messages\" must be a list of messages");
  for (const auto& m : *messages)
    if (!m.is_object()) fail("request", "each message must be an object");

  const ojson null_value;
  auto get = [&](const char* key) -> const ojson& {
    auto it = request.find(key);
    return it == request.end() ? null_value : *it;
  };
  const ojson& tools = get("tools");
  bool add_generation_prompt = false;
  if (const ojson& v = get("add_generation_prompt"); !v.is_null()) {
    if (!v.is_boolean()) fail("request", "\"add_generation_prompt\" must be true or false");
    add_generation_prompt = v.get<bool>();
  }
  bool continue_final = false;
  if (const ojson& v = get("continue_final_message"); !v.is_null()) {
    if (!v.is_boolean()) fail("request", "\"continue_final_message\" must be true or false");
    continue_final = v.get<bool>();
  }
  if (continue_final && add_generation_prompt)
    fail("request",
         "continue_final_message and add_generation_prompt are not compatible; use "
         "continue_final_message when the final message is an assistant message to extend");

  // Template choice as transformers makes it among named templates.
  std::shared_ptr<jinja::Template> chosen;
  auto find = [&](const std::string& name) -> std::shared_ptr<jinja::Template> {
    for (const auto& t : templates_)
      if (t.first == name) return t.second;
    return nullptr;
  };
  if (templates_.size() == 1) {
    chosen = templates_[0].second;
  } else {
    if (!tools.is_null()) chosen = find("tool_use");
    if (!chosen) chosen = find("default");
    if (!chosen) fail(where_, "the model has several chat templates and none is named \"default\"");
  }

  ojson vars = ojson::object();
  vars["messages"] = *messages;
  vars["tools"] = tools;
  vars["documents"] = get("documents");
  vars["add_generation_prompt"] = add_generation_prompt;
  for (auto it = special_tokens_.begin(); it != special_tokens_.end(); ++it)
    vars[it.key()] = it.value();
  for (auto it = request.begin(); it != request.end(); ++it) {
    const std::string& key = it.key();
    if (key == "messages" || key == "tools" || key == "documents" ||
        key == "add_generation_prompt" || key == "continue_final_message")
      continue;
    vars[key] = it.value();
  }

  std::string rendered = chosen->render(vars);

  if (continue_final) {
    // transformers cuts the prompt right after the final message's text so generation
    // continues it instead of starting a new turn.
    if (messages->empty()) fail("request", "continue_final_message needs a final message");
    const ojson& content =
        messages->back().contains("content") ? messages->back()["content"] : null_value;
    std::string final_text;
    if (content.is_string()) {
      final_text = content.get<std::string>();
    } else if (content.is_array()) {
      bool found = false;
      for (auto it = content.rbegin(); it != content.rend(); ++it)
        if (it->is_object() && it->contains("text") && (*it)["text"].is_string()) {
          final_text = (*it)["text"].get<std::string>();
          found = true;
          break;
        }
      if (!found) fail("request", "continue_final_message needs a final message with text content");
    } else {
      fail("request", "continue_final_message needs a final message with text content");
    }
    // Python's str.strip() of ASCII whitespace (what message texts contain in practice).
    size_t a = final_text.find_first_not_of(" \t\n\r\f\v");
    size_t b = final_text.find_last_not_of(" \t\n\r\f\v");
    std::string stripped = a == std::string::npos ? "" : final_text.substr(a, b - a + 1);
    size_t pos = rendered.rfind(stripped);
    if (pos == std::string::npos)
      fail("request",
           "continue_final_message is set but the final message does not appear in "
           "the rendered prompt");
    rendered.resize(pos + stripped.size());
  }
  return rendered;
}

}  // namespace qrwkv
