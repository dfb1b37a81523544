// `qrwkv train-tokenizer`: trains a byte-level BPE tokenizer on text files and writes a
// tokenizer directory (tokenizer.json, tokenizer_config.json, generation_config.json).
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "apps/qrwkv/args.h"
#include "apps/qrwkv/command.h"
#include "io/error.h"
#include "text/bpe_trainer.h"

namespace qrwkv::app {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run_train_tokenizer(int argc, char** argv) {
  Args args("train-tokenizer",
            "--data FILE [--data FILE ...] --vocab-size N -o DIR [--min-frequency N] "
            "[--special TOKEN ...]",
            {{{"--data"},
              "FILE",
              "training text (repeatable): .txt with documents separated by blank lines, or "
              ".jsonl with a \"text\" field per line"},
             {{"--vocab-size"},
              "N",
              "size of the whole vocabulary: special tokens + 256 byte tokens + merges"},
             {{"-o", "--output"},
              "DIR",
              "output directory for tokenizer.json, tokenizer_config.json and "
              "generation_config.json (created if missing)"},
             {{"--min-frequency"}, "N", "merge only pairs seen at least N times (default 2)"},
             {{"--special"},
              "TOKEN",
              "special token (repeatable, ids 0, 1, ... in order); default <|endoftext|> "
              "<|im_start|> <|im_end|>"},
             {{"-q", "--quiet"}, "", "print nothing but errors"}});
  args.parse(argc, argv);
  const std::vector<std::string> files = args.get_all("--data");
  if (files.empty()) throw UsageError("missing required option --data");
  const std::string vocab_text = args.require("--vocab-size");
  const std::string out_dir = args.require("--output");
  const bool quiet = args.has("--quiet");

  BpeTrainerOptions options;
  options.vocab_size = args.get_int("--vocab-size", 0);
  const int64_t min_frequency = args.get_int("--min-frequency", 2);
  if (min_frequency < 0) throw UsageError("--min-frequency must not be negative");
  options.min_frequency = static_cast<uint64_t>(min_frequency);
  if (args.has("--special")) options.special_tokens = args.get_all("--special");
  const int64_t minimum = 256 + static_cast<int64_t>(options.special_tokens.size());
  if (options.vocab_size < minimum)
    throw UsageError("--vocab-size " + vocab_text + " is below " + std::to_string(minimum) +
                     " (256 byte tokens + " + std::to_string(options.special_tokens.size()) +
                     " special tokens)");
  std::unique_ptr<BpeTrainer> trainer;
  try {
    trainer = std::make_unique<BpeTrainer>(options);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  // Every input is checked before the (long) reading starts, so that a typo fails at once.
  for (const auto& f : files) {
    if (!std::ifstream(f, std::ios::binary))
      throw UsageError("cannot read --data file '" + f + "'");
  }

  const auto t0 = std::chrono::steady_clock::now();
  size_t n_docs = 0;
  for (const auto& f : files) {
    for (const auto& doc : read_training_documents(f)) {
      trainer->add_text(doc);
      ++n_docs;
    }
  }
  if (trainer->total_words() == 0) fail(files.front(), "no text to train on");
  const double t_count = seconds_since(t0);
  if (!quiet)
    std::fprintf(stderr, "%zu documents, %llu words (%zu unique) in %.2f s\n", n_docs,
                 static_cast<unsigned long long>(trainer->total_words()), trainer->unique_words(),
                 t_count);

  const auto t1 = std::chrono::steady_clock::now();
  const BpeModel model = trainer->train();
  const double t_train = seconds_since(t1);
  write_bpe_tokenizer_dir(model, out_dir);
  const size_t vocab = model.special_tokens.size() + model.tokens.size();
  if (!quiet) {
    std::fprintf(stderr, "%zu merges in %.2f s; vocabulary %zu", model.merges.size(), t_train,
                 vocab);
    if (static_cast<int64_t>(vocab) < options.vocab_size)
      std::fprintf(stderr, " (no pair left with at least %llu occurrences)",
                   static_cast<unsigned long long>(options.min_frequency));
    std::fprintf(stderr, "\nwrote %s (total %.2f s)\n", out_dir.c_str(), seconds_since(t0));
  }
  return 0;
}

CommandRegistrar reg_train_tokenizer({"train-tokenizer",
                                      "train a byte-level BPE tokenizer on text files",
                                      &run_train_tokenizer});

}  // namespace

}  // namespace qrwkv::app
