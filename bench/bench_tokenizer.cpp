// Encode throughput of the tokenizer (MB/s, one thread) on an English corpus.
//
//   QRWKV_TOKENIZER=DIR QRWKV_CORPUS=FILE bench_tokenizer
//
// DIR defaults to tests/data/tokenizer/qwen2.5 (relative to the repository root, found from this
// file's location at build time). FILE is any large UTF-8 text, e.g. one sentence per line from
// the nlp-corpus npm package; it must be given.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace {

std::string repo_root() {
  std::string here = __FILE__;  // .../bench/bench_tokenizer.cpp
  return here.substr(0, here.rfind("/bench/"));
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

const qrwkv::Tokenizer& tokenizer() {
  static const qrwkv::Tokenizer t = qrwkv::Tokenizer::from_dir(
      env_or("QRWKV_TOKENIZER", repo_root() + "/tests/data/tokenizer/qwen2.5"));
  return t;
}

const std::string& corpus() {
  static const std::string text = [] {
    const std::string path = env_or("QRWKV_CORPUS", "");
    if (path.empty()) {
      std::cerr << "set QRWKV_CORPUS=FILE to the text to encode\n";
      std::exit(2);
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      std::cerr << "cannot read corpus " << path << "\n";
      std::exit(1);
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }();
  return text;
}

std::vector<std::string> lines() {
  std::vector<std::string> out;
  std::istringstream in(corpus());
  std::string line;
  while (std::getline(in, line)) out.push_back(line + "\n");
  return out;
}

// The whole corpus as one string.
void BM_EncodeCorpus(benchmark::State& state) {
  const auto& t = tokenizer();
  const auto& text = corpus();
  std::vector<int32_t> ids;
  for (auto _ : state) {
    ids.clear();
    t.encode_into(text, ids);
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(text.size()));
  state.counters["tokens"] = static_cast<double>(ids.size());
}
BENCHMARK(BM_EncodeCorpus)->Unit(benchmark::kMillisecond)->MinTime(2.0);

// One encode call per line, as a server encoding short requests would.
void BM_EncodeLines(benchmark::State& state) {
  const auto& t = tokenizer();
  static const std::vector<std::string> all = lines();
  size_t bytes = 0;
  for (const auto& l : all) bytes += l.size();
  std::vector<int32_t> ids;
  for (auto _ : state) {
    for (const auto& l : all) {
      ids.clear();
      t.encode_into(l, ids);
      benchmark::DoNotOptimize(ids.data());
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(bytes));
}
BENCHMARK(BM_EncodeLines)->Unit(benchmark::kMillisecond)->MinTime(2.0);

void BM_Decode(benchmark::State& state) {
  const auto& t = tokenizer();
  const std::vector<int32_t> ids = t.encode(corpus());
  for (auto _ : state) {
    std::string text = t.decode(ids);
    benchmark::DoNotOptimize(text.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(corpus().size()));
}
BENCHMARK(BM_Decode)->Unit(benchmark::kMillisecond)->MinTime(1.0);

}  // namespace

BENCHMARK_MAIN();
