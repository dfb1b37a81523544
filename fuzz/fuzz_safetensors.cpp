// Fuzzes the safetensors header parser: any byte string must either parse into a header whose
// tensors all lie inside the buffer, or throw qrwkv::Error. Nothing else is acceptable.
#include <cstdint>
#include <cstdlib>

#include "io/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const qrwkv::SafetensorsHeader h = qrwkv::parse_safetensors(data, size, "fuzz");
    for (const auto& [name, t] : h.tensors) {
      if (h.data_offset + t.end > size || t.begin > t.end) std::abort();
      // Touch the first and last byte: ASan reports any out-of-bounds access.
      if (t.end > t.begin) {
        volatile uint8_t a = data[h.data_offset + t.begin];
        volatile uint8_t b = data[h.data_offset + t.end - 1];
        (void)a;
        (void)b;
      }
    }
  } catch (const qrwkv::Error&) {
  }
  return 0;
}
