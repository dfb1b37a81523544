// Fuzzes the GGUF parser: any byte string must either parse into a header whose tensors all
// lie inside the buffer, or throw qrwkv::Error. Nothing else is acceptable.
#include <cstdint>
#include <cstdlib>

#include "io/error.h"
#include "io/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const qrwkv::GgufHeader h = qrwkv::parse_gguf(data, size, "fuzz");
    for (const auto& t : h.tensors) {
      if (h.data_offset + t.offset + t.bytes > size) std::abort();
      if (t.bytes > 0) {
        // Touch the first and last byte: ASan reports any out-of-bounds access.
        volatile uint8_t a = data[h.data_offset + t.offset];
        volatile uint8_t b = data[h.data_offset + t.offset + t.bytes - 1];
        (void)a;
        (void)b;
      }
    }
  } catch (const qrwkv::Error&) {
  }
  return 0;
}
