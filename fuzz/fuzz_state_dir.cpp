// Fuzzes the files of the server's state directory (`qrwkv serve --state-dir`): any bytes in a
// file there, as they are or with a valid outer checksum appended, must be indexed and looked up
// without crashing; a file that serves a lookup must hold a state that fits the model.
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "io/bytes.h"
#include "model/state.h"
#include "server/state_cache.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fs = std::filesystem;
  static const qrwkv::Config config = [] {
    qrwkv::Config c;
    c.arch = qrwkv::Arch::QRWKV6;
    c.hidden_size = 8;
    c.num_layers = 2;
    c.num_heads = 2;
    c.num_kv_heads = 1;
    c.head_dim = 4;
    c.vocab_size = 16;
    return c;
  }();
  static const std::string dir =
      (fs::temp_directory_path() / ("qrwkv-fuzz-state-dir-" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  std::ofstream(dir + "/a.qrwkvstate", std::ios::binary) << bytes;
  std::string summed = bytes;
  const uint64_t h = qrwkv::fnv1a(bytes.data(), bytes.size());
  summed.append(reinterpret_cast<const char*>(&h), sizeof h);
  std::ofstream(dir + "/b.qrwkvstate", std::ios::binary) << summed;

  // The key the files claim, so that the fuzzer can reach the checks past it.
  uint64_t key = 0;
  if (size >= 20) std::memcpy(&key, data + 12, sizeof key);
  qrwkv::server::StateCache cache(config, 1 << 20, {dir, 1 << 20, key});
  // A prompt made of the file's tokens (when it has any) and one more.
  std::vector<int32_t> prompt;
  uint64_t n = 0;
  if (size >= 36) std::memcpy(&n, data + 20, sizeof n);
  for (uint64_t i = 0; i < n && 36 + 4 * (i + 1) <= size && i < 4096; ++i) {
    int32_t t;
    std::memcpy(&t, data + 36 + 4 * i, sizeof t);
    prompt.push_back(t);
  }
  prompt.push_back(1);
  if (auto hit = cache.lookup(prompt)) {
    qrwkv::check_state_matches(hit->state, config, "fuzz");
    if (hit->n_tokens > prompt.size()) __builtin_trap();
  }
  return 0;
}
