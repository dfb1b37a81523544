// Errors that reach the user. Every failure caused by outside input (files, flags, requests)
// is reported as a qrwkv::Error whose message is one line naming the thing and the problem.
#pragma once

#include <stdexcept>
#include <string>

namespace qrwkv {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws Error("<where>: <what>"). `where` is usually a file path.
[[noreturn]] void fail(const std::string& where, const std::string& what);

}  // namespace qrwkv
