// Fuzzes state-file parsing: any bytes must give a State or a qrwkv::Error; a parsed state is
// then checked against a small model config, which must also fail cleanly or accept it.
#include <cstdint>
#include <string>

#include "io/error.h"
#include "model/config.h"
#include "model/state.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const qrwkv::Config config = [] {
    qrwkv::Config c;
    c.arch = qrwkv::Arch::QRWKV6;
    c.hidden_size = 8;
    c.num_layers = 2;
    c.num_heads = 2;
    c.num_kv_heads = 1;
    c.head_dim = 4;
    return c;
  }();
  try {
    const qrwkv::State s =
        qrwkv::deserialize_state(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
    qrwkv::check_state_matches(s, config, "fuzz");
    // A state that passes must serialize back to the same bytes.
    if (qrwkv::serialize_state(s) != std::string(reinterpret_cast<const char*>(data), size))
      __builtin_trap();
  } catch (const qrwkv::Error&) {
  }
  return 0;
}
