// Fuzzes config.json parsing (JSON text -> Config): any input must give a Config or a
// qrwkv::Error, never a crash, hang or other exception.
#include <cstdint>
#include <string_view>

#include "io/error.h"
#include "io/json.h"
#include "model/config.h"
#include "model/rope.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const qrwkv::json j =
        qrwkv::parse_json(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    const qrwkv::Config c = qrwkv::parse_config(j, "fuzz");
    if (c.arch != qrwkv::Arch::QRWKV6 && c.head_dim <= 4096)
      qrwkv::rope_inv_freq(c.rope, c.head_dim);
  } catch (const qrwkv::Error&) {
  }
  return 0;
}
