// Fuzzes chat session files: any bytes give SessionData or a qrwkv::Error; what parses must
// serialize back to an equivalent session.
#include <cstdint>
#include <string>

#include "io/error.h"
#include "runtime/chat.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const qrwkv::SessionData d =
        qrwkv::parse_session(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
    const qrwkv::SessionData again = qrwkv::parse_session(qrwkv::serialize_session(d), "again");
    if (again.processed != d.processed || again.messages != d.messages) __builtin_trap();
  } catch (const qrwkv::Error&) {
  }
  return 0;
}
