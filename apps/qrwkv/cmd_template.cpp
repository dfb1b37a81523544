// qrwkv template: renders a chat request with the model's chat template and prints the prompt
// exactly as transformers' apply_chat_template(..., tokenize=False) would produce it.
#include <cstdio>
#include <string>

#include "apps/qrwkv/args.h"
#include "apps/qrwkv/command.h"
#include "io/error.h"
#include "io/mapped_file.h"
#include "text/chat_template.h"

namespace {

int run_template(int argc, char** argv) {
  using qrwkv::app::Args;
  Args args("template", "-m PATH --request FILE.json [--template FILE]",
            {
                {{"-m", "--model"},
                 "PATH",
                 "model directory (tokenizer_config.json is enough) or GGUF file"},
                {{"--request"},
                 "FILE",
                 "JSON object with \"messages\", optional \"tools\", \"add_generation_prompt\" "
                 "and extra template variables"},
                {{"--template"}, "FILE", "use this Jinja chat template instead of the model's"},
            });
  args.parse(argc, argv);
  const std::string dir = model_dir(args);
  const std::string request_path = args.require("--request");

  qrwkv::ChatTemplate chat = qrwkv::ChatTemplate::load(dir);
  if (args.has("--template")) {
    const std::string path = args.get("--template");
    chat.set_template(qrwkv::read_text_file(path), path);
  }

  const std::string text = qrwkv::read_text_file(request_path);
  nlohmann::ordered_json request;
  try {
    request = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::ordered_json::exception& e) {
    qrwkv::fail(request_path, std::string("not valid JSON (") + e.what() + ")");
  }
  std::string prompt;
  try {
    prompt = chat.render(request);
  } catch (const qrwkv::Error& e) {
    const std::string msg = e.what();
    // Problems with the request itself are reported against its file name.
    if (msg.rfind("request: ", 0) == 0) qrwkv::fail(request_path, msg.substr(9));
    throw;
  }
  std::fwrite(prompt.data(), 1, prompt.size(), stdout);
  std::fflush(stdout);
  return 0;
}

qrwkv::app::CommandRegistrar reg({"template", "render a chat request with the model's template",
                                  &run_template});

}  // namespace
