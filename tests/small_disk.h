// A directory on a tmpfs of a given size: a disk that fills up, where a write beyond its size
// fails with ENOSPC as on a full disk. Mounting needs the privilege to (root in the test
// containers); where it is missing, available() is false and the caller skips.
#pragma once

#include <sys/mount.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "tests/cli.h"

namespace qrwkv::test {

class SmallDisk {
 public:
  explicit SmallDisk(size_t bytes) : dir_(temp_dir() + "/disk") {
    std::filesystem::create_directories(dir_);
    const std::string opts = "size=" + std::to_string(bytes);
    mounted_ = ::mount("tmpfs", dir_.c_str(), "tmpfs", 0, opts.c_str()) == 0;
    if (!mounted_) why_ = std::strerror(errno);
  }
  ~SmallDisk() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;

  bool available() const { return mounted_; }
  const std::string& why() const { return why_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  // Files left in the directory (a temporary file left behind would show here).
  size_t files() const {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir_)) ++n;
    return n;
  }

 private:
  std::string dir_;
  bool mounted_ = false;
  std::string why_;
};

inline std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

}  // namespace qrwkv::test
