// Little helpers of the project's own binary formats (state files, the server's state-cache
// files): a checksum and fixed-size little-endian values appended to or read from a byte string.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace qrwkv {

// 64-bit FNV-1a of n bytes; `h` chains several pieces into one checksum. It detects truncation
// and corruption of files the program wrote itself, not tampering.
inline uint64_t fnv1a(const void* data, size_t n, uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

// Appends the bytes of a trivially copyable value. The formats are little-endian, like every
// host qrwkv supports.
template <typename T>
void put_le(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

// Reads a value written by put_le() at p (unaligned).
template <typename T>
T get_le(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace qrwkv
