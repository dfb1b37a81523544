// Chat templates: the transformers golden cases, real-model templates checked against Python
// jinja2 (model_cases.json), model directory loading rules and the `qrwkv template` command.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "io/error.h"
#include "io/mapped_file.h"
#include "tests/cli.h"
#include "text/chat_template.h"

namespace qrwkv {
namespace {

using ojson = nlohmann::ordered_json;
using test::data_path;
using test::run_cli;

ojson load(const std::string& rel) { return ojson::parse(read_text_file(data_path(rel))); }

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

TEST(ChatTemplateGolden, MatchesTransformers) {
  const ojson doc = load("chat/cases.json");
  std::map<std::string, std::string> dirs = {{"qwen25", "chat/qwen2.5"}, {"qwen3", "chat/qwen3"}};
  int n = 0;
  for (const auto& c : doc["cases"]) {
    const std::string name = c["template"].get<std::string>() + "/" + c["name"].get<std::string>();
    SCOPED_TRACE(name);
    ChatTemplate t = ChatTemplate::load(data_path(dirs.at(c["template"].get<std::string>())));
    EXPECT_EQ(t.render(c["inputs"]), c["expected"].get<std::string>()) << name;
    ++n;
  }
  EXPECT_EQ(n, 5);
}

TEST(ChatTemplateGolden, CliMatchesTransformers) {
  const ojson doc = load("chat/cases.json");
  std::map<std::string, std::string> dirs = {{"qwen25", "chat/qwen2.5"}, {"qwen3", "chat/qwen3"}};
  const std::string tmp = test::temp_dir();
  for (const auto& c : doc["cases"]) {
    const std::string req = tmp + "/request.json";
    write_file(req, c["inputs"].dump());
    auto r = run_cli(
        {"template", "-m", data_path(dirs.at(c["template"].get<std::string>())), "--request", req});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, c["expected"].get<std::string>());
  }
}

TEST(ChatTemplateModels, RealTemplatesMatchPythonJinja2) {
  const ojson doc = load("chat/model_cases.json");
  int n = 0;
  for (const auto& c : doc["cases"]) {
    const std::string name = c["name"].get<std::string>();
    SCOPED_TRACE(name);
    const std::string path = c["template"].get<std::string>();
    std::string source;
    if (path.size() > 5 && path.substr(path.size() - 5) == ".json")
      source = load("chat/" + path)["chat_template"].get<std::string>();
    else
      source = read_text_file(data_path("chat/" + path));
    ChatTemplate t = ChatTemplate::from_source(source, path);
    for (auto it = c["special_tokens"].begin(); it != c["special_tokens"].end(); ++it)
      t.set_special_token(it.key(), it.value().get<std::string>());
    if (c.contains("expected")) {
      try {
        EXPECT_EQ(t.render(c["inputs"]), c["expected"].get<std::string>()) << name;
      } catch (const Error& e) {
        ADD_FAILURE() << name << " threw " << e.what();
      }
    } else {
      EXPECT_THROW(t.render(c["inputs"]), Error)
          << name << " should fail like jinja2: " << c["error"].get<std::string>();
    }
    ++n;
  }
  EXPECT_GE(n, 25);
}

TEST(ChatTemplateModels, RaiseExceptionMessageReachesTheUser) {
  ChatTemplate t = ChatTemplate::from_source(
      read_text_file(data_path("chat/templates/gemma3.jinja")), "gemma3.jinja");
  ojson req = ojson::parse(R"({"messages": [{"role": "user", "content": "a"},
                                            {"role": "user", "content": "b"}]})");
  try {
    t.render(req);
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "gemma3.jinja: chat template line 15: Conversation roles must alternate "
                 "user/assistant/user/assistant/...");
  }
}

class ModelDir : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::temp_dir(); }
  std::string dir_;
  ojson hello_ = ojson::parse(R"({"messages": [{"role": "user", "content": "Hi"}]})");
};

TEST_F(ModelDir, JinjaFileWinsOverConfig) {
  write_file(dir_ + "/tokenizer_config.json",
             R"({"chat_template": "config", "bos_token": {"content": "<s>", "lstrip": false},
                 "eos_token": "</s>", "unk_token": null})");
  write_file(dir_ + "/chat_template.jinja",
             "{{ bos_token }}file{{ eos_token }}[{{ unk_token }}]\n");
  EXPECT_EQ(ChatTemplate::load(dir_).render(hello_), "<s>file</s>[]");
}

TEST_F(ModelDir, NamedTemplatesChooseToolUseWithTools) {
  write_file(dir_ + "/tokenizer_config.json",
             R"({"chat_template": [{"name": "default", "template": "plain"},
                                   {"name": "tool_use", "template": "tools={{ tools|length }}"}]})");
  ChatTemplate t = ChatTemplate::load(dir_);
  EXPECT_EQ(t.render(hello_), "plain");
  ojson with_tools = hello_;
  with_tools["tools"] = ojson::array({ojson::object()});
  EXPECT_EQ(t.render(with_tools), "tools=1");
}

TEST_F(ModelDir, NoTemplateFallsBackToChatML) {
  write_file(dir_ + "/tokenizer_config.json", R"({"eos_token": "</s>"})");
  ojson req = hello_;
  req["add_generation_prompt"] = true;
  EXPECT_EQ(ChatTemplate::load(dir_).render(req),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST_F(ModelDir, DefaultVariables) {
  // tools and documents are None (defined), not undefined, as transformers passes them.
  write_file(dir_ + "/chat_template.jinja",
             "{{ tools is none }}{{ documents is none }}{{ add_generation_prompt }}"
             "{{ bos_token is defined }}{{ extra }}");
  ojson req = hello_;
  req["extra"] = "!";
  EXPECT_EQ(ChatTemplate::load(dir_).render(req), "TrueTrueFalseFalse!");
}

TEST_F(ModelDir, ContinueFinalMessage) {
  write_file(dir_ + "/tokenizer_config.json", "{}");
  ojson req = ojson::parse(R"({"messages": [{"role": "user", "content": "Hi"},
      {"role": "assistant", "content": "Once upon "}], "continue_final_message": true})");
  EXPECT_EQ(ChatTemplate::load(dir_).render(req),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nOnce upon");
  req["add_generation_prompt"] = true;
  EXPECT_THROW(ChatTemplate::load(dir_).render(req), Error);
}

TEST_F(ModelDir, BadConfigIsAnErrorNamingTheFile) {
  write_file(dir_ + "/tokenizer_config.json", "{not json");
  try {
    ChatTemplate::load(dir_);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer_config.json: not valid JSON"),
              std::string::npos)
        << e.what();
  }
  write_file(dir_ + "/tokenizer_config.json", R"({"chat_template": "{% if %}"})");
  try {
    ChatTemplate::load(dir_);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer_config.json: chat template line 1: "),
              std::string::npos)
        << e.what();
  }
}

// ---- command line ----

class TemplateCli : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::temp_dir(); }
  std::string request(const std::string& json) {
    const std::string path = dir_ + "/req" + std::to_string(n_++) + ".json";
    write_file(path, json);
    return path;
  }
  std::string dir_;
  int n_ = 0;
};

TEST_F(TemplateCli, ToolsAndExtraKwargsPassThrough) {
  const std::string req = request(R"({
    "messages": [{"role": "user", "content": "Weather?"}],
    "tools": [{"type": "function", "function": {"name": "w", "parameters": {"b": 1, "a": "é"}}}],
    "add_generation_prompt": true, "enable_thinking": false})");
  auto r = run_cli({"template", "-m", data_path("chat/qwen3"), "--request", req});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the "
            "user query.\n\nYou are provided with function signatures within <tools></tools> XML "
            "tags:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"w\", "
            "\"parameters\": {\"b\": 1, \"a\": \"é\"}}}\n</tools>\n\nFor each function call, "
            "return a json object with function name and arguments within <tool_call></tool_call> "
            "XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
            "<args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\nWeather?<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\n");
  EXPECT_EQ(r.err, "");
}

TEST_F(TemplateCli, TemplateOverride) {
  const std::string tpl = dir_ + "/t.jinja";
  write_file(tpl,
             "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}"
             "{{ eos_token }}{{ flag }}\n");
  auto r = run_cli({"template", "-m", data_path("chat/qwen2.5"), "--request",
                    request(R"({"messages": [{"role": "user", "content": "x"}], "flag": 7})"),
                    "--template", tpl});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[user:x]<|im_end|>7");
}

TEST_F(TemplateCli, BadFlagsPrintUsage) {
  auto r = run_cli({"template", "--bogus"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown option '--bogus'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("usage: qrwkv template"), std::string::npos) << r.err;
  auto missing = run_cli({"template", "-m", data_path("chat/qwen3")});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("--request"), std::string::npos) << missing.err;
}

TEST_F(TemplateCli, MissingFilesAreErrors) {
  const std::string req = dir_ + "/nope.json";
  auto r = run_cli({"template", "-m", data_path("chat/qwen3"), "--request", req});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("error: "), std::string::npos);
  EXPECT_NE(r.err.find("nope.json"), std::string::npos) << r.err;
  auto r2 = run_cli(
      {"template", "-m", dir_ + "/no-such-model", "--request", request(R"({"messages": []})")});
  EXPECT_EQ(r2.exit_code, 1);
  EXPECT_NE(r2.err.find("no-such-model"), std::string::npos) << r2.err;
}

TEST_F(TemplateCli, BadRequestIsAnError) {
  auto r = run_cli({"template", "-m", data_path("chat/qwen3"), "--request", request("{oops")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not valid JSON"), std::string::npos) << r.err;
  auto r2 = run_cli(
      {"template", "-m", data_path("chat/qwen3"), "--request", request(R"({"messages": "hi"})")});
  EXPECT_EQ(r2.exit_code, 1);
  EXPECT_NE(r2.err.find("\"messages\" must be a list"), std::string::npos) << r2.err;
}

TEST_F(TemplateCli, TemplateErrorsGiveTheLine) {
  const std::string tpl = dir_ + "/bad.jinja";
  write_file(tpl, "line one\n{% for m in messages %}\n{{ m | nosuch }}\n{% endfor %}");
  auto r = run_cli({"template", "-m", data_path("chat/qwen3"), "--request",
                    request(R"({"messages": []})"), "--template", tpl});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "error: " + tpl + ": chat template line 3: unknown filter 'nosuch'\n");
  const std::string tpl2 = dir_ + "/raise.jinja";
  write_file(tpl2, "\n\n{{ raise_exception('no system role') }}");
  auto r2 = run_cli({"template", "-m", data_path("chat/qwen3"), "--request",
                     request(R"({"messages": []})"), "--template", tpl2});
  EXPECT_EQ(r2.exit_code, 1);
  EXPECT_EQ(r2.err, "error: " + tpl2 + ": chat template line 3: no system role\n");
}

}  // namespace
}  // namespace qrwkv
