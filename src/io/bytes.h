// The byte-level helpers of the project's own binary formats (state files, session files, the
// server's state-cache files): a checksum, little-endian values and arrays appended to a byte
// string, and a bounds-checked reader for them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io/error.h"

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

// Appends the bytes of n trivially copyable values.
template <typename T>
void put_array(std::string& out, const T* v, size_t n) {
  if (n > 0) out.append(reinterpret_cast<const char*>(v), n * sizeof(T));
}

// Reads a value written by put_le() at p (unaligned).
template <typename T>
T get_le(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Reads values and arrays written by put_le()/put_array() from the front of a byte string.
// Reading past the end throws Error "<where>: truncated <kind> (ends inside <what>)".
class ByteReader {
 public:
  ByteReader(std::string_view bytes, std::string where, std::string kind)
      : bytes_(bytes), where_(std::move(where)), kind_(std::move(kind)) {}

  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    const T v = get_le<T>(bytes_.data() + pos_);
    pos_ += sizeof(T);
    return v;
  }
  // n values into dst (resized); n is checked against what is left before anything is
  // allocated, so a corrupt count cannot ask for more memory than the input holds.
  template <typename T>
  void array(std::vector<T>& dst, uint64_t n, const char* what) {
    if (n > left() / sizeof(T)) truncated(what);
    dst.resize(static_cast<size_t>(n));
    if (n > 0) std::memcpy(dst.data(), bytes_.data() + pos_, static_cast<size_t>(n) * sizeof(T));
    pos_ += static_cast<size_t>(n) * sizeof(T);
  }
  std::string_view bytes(uint64_t n, const char* what) {
    need(n, what);
    const std::string_view v = bytes_.substr(pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return v;
  }
  size_t pos() const { return pos_; }
  size_t left() const { return bytes_.size() - pos_; }
  [[noreturn]] void truncated(const char* what) const {
    fail(where_, "truncated " + kind_ + " (ends inside " + what + ")");
  }

 private:
  void need(uint64_t n, const char* what) const {
    if (n > left()) truncated(what);
  }
  std::string_view bytes_;
  std::string where_, kind_;
  size_t pos_ = 0;
};

}  // namespace qrwkv
