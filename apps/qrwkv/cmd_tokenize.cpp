// `qrwkv tokenize` and `qrwkv detokenize`: text to token ids and back with a model directory's
// tokenizer.json (the directory may hold only the tokenizer files).
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "apps/qrwkv/args.h"
#include "apps/qrwkv/command.h"
#include "io/error.h"
#include "io/json.h"
#include "io/mapped_file.h"
#include "text/tokenizer.h"

namespace qrwkv::app {

namespace {

std::string ids_json(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  s += ']';
  return s;
}

int run_tokenize(int argc, char** argv) {
  Args args(
      "tokenize", "-m PATH (--text TEXT | -f FILE | --jsonl FILE) [--count] [--no-special]",
      {{{"-m", "--model"},
        "PATH",
        "model or tokenizer directory holding tokenizer.json, or a GGUF file"},
       {{"--text"}, "TEXT", "text to encode; prints its ids as one JSON array, e.g. [9707,1879]"},
       {{"-f", "--file"}, "FILE", "encode the whole file as one text, like --text"},
       {{"--count"}, "", "print the number of ids instead of the ids"},
       {{"--jsonl"},
        "FILE",
        "JSON lines with a \"text\" field ('-' for stdin); prints one JSON array of ids per "
        "line, in order (blank lines are skipped)"},
       {{"--no-special"},
        "",
        "encode special-token text such as <|im_start|> as plain text (for untrusted "
        "input); by default it becomes the special token"}});
  args.parse(argc, argv);
  const std::string dir = model_dir(args);
  const bool has_text = args.has("--text");
  const bool has_file = args.has("--file");
  const bool has_jsonl = args.has("--jsonl");
  if (int{has_text} + int{has_file} + int{has_jsonl} != 1)
    throw UsageError("give exactly one of --text, -f and --jsonl");
  EncodeOptions options;
  options.parse_special = !args.has("--no-special");
  const bool count = args.has("--count");
  // Prints one encoded text: its ids, or with --count only how many there are (the size of a
  // corpus in tokens, without megabytes of output).
  auto print = [&](const std::vector<int32_t>& ids) {
    if (count)
      std::cout << ids.size() << "\n";
    else
      std::cout << ids_json(ids) << "\n";
  };

  const Tokenizer tokenizer = Tokenizer::from_dir(dir);
  if (has_text || has_file) {
    const std::string text = has_text ? args.get("--text") : read_text_file(args.get("--file"));
    print(tokenizer.encode(text, options));
    return 0;
  }
  const std::string path = args.get("--jsonl");
  std::ifstream file;
  std::istream* in = &std::cin;
  if (path != "-") {
    file.open(path, std::ios::binary);
    if (!file) fail(path, "cannot open file");
    in = &file;
  }
  std::string line;
  size_t line_no = 0;
  while (std::getline(*in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    const json j = parse_json(line, where);
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
      fail(where, "expected an object with a string \"text\" field");
    print(tokenizer.encode(j["text"].get_ref<const std::string&>(), options));
  }
  if (in->bad()) fail(path, "read error");
  std::cout.flush();
  return 0;
}

int run_detokenize(int argc, char** argv) {
  Args args("detokenize", "-m PATH --ids \"ID ID ...\" [--skip-special]",
            {{{"-m", "--model"},
              "PATH",
              "model or tokenizer directory holding tokenizer.json, or a GGUF file"},
             {{"--ids"},
              "IDS",
              "token ids separated by spaces or commas; prints their text exactly, with no "
              "newline added (bytes that are not valid UTF-8 become U+FFFD)"},
             {{"--skip-special"}, "", "leave special tokens out of the text"}});
  args.parse(argc, argv);
  const std::string dir = model_dir(args);
  const std::vector<int32_t> ids = parse_token_list(args.require("--ids"));
  const Tokenizer tokenizer = Tokenizer::from_dir(dir);
  const std::string text = tokenizer.decode(ids, args.has("--skip-special"));
  std::cout.write(text.data(), static_cast<std::streamsize>(text.size()));
  std::cout.flush();
  return 0;
}

CommandRegistrar reg_tokenize({"tokenize", "print the token ids of text (JSON array)",
                               &run_tokenize});
CommandRegistrar reg_detokenize({"detokenize", "print the text of token ids", &run_detokenize});

}  // namespace

}  // namespace qrwkv::app
