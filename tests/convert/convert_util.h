// Helpers shared by the conversion tests.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "io/json.h"
#include "tests/cli.h"

namespace qrwkv::test {

// The training text of the conversion tests.
inline const std::string kText = data_path("convert/brown_slice.txt");

// `qrwkv pretrain` of a one-layer Qwen2 of width 32 on kText for `tokens` tokens, into `out`.
inline std::vector<std::string> tiny_pretrain(const std::string& out, const std::string& tokens) {
  return {"pretrain",
          "--tokenizer",
          test::data_path("tiny_chat"),
          "--data",
          kText,
          "-o",
          out,
          "--hidden",
          "32",
          "--layers",
          "1",
          "--heads",
          "2",
          "--kv-heads",
          "1",
          "--intermediate",
          "64",
          "--seq-len",
          "32",
          "--batch",
          "4",
          "--tokens",
          tokens,
          "--lr",
          "3e-3",
          "--quiet"};
}

// A teacher directory: a golden transformer with the 1000-id test tokenizer beside it.
inline std::string teacher_dir(const std::string& model = "qwen2_tiny") {
  namespace fs = std::filesystem;
  const std::string dir = temp_dir();
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(data_path("models/" + model + "/" + f), fs::path(dir) / f);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(data_path(std::string("tiny_chat/") + f), fs::path(dir) / f);
  return dir;
}

// The student flags of a small conversion into `arch` (rwkv6qwen2 or rwkv7qwen2), all ranks 8.
inline std::vector<std::string> student_flags(const std::string& arch) {
  if (arch == "rwkv7qwen2")
    return {"--arch",       "rwkv7qwen2", "--lora-decay", "8", "--lora-iclr", "8",
            "--lora-value", "8",          "--lora-gate",  "8"};
  return {"--lora-tokenshift", "8", "--lora-decay", "8"};
}

// The records of a train_log.jsonl; a line that does not parse becomes a discarded value.
inline std::vector<json> read_log(const std::string& path) {
  std::vector<json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(json::parse(line, nullptr, /*allow_exceptions=*/false));
  return out;
}

}  // namespace qrwkv::test
