// `qrwkv pretrain` and `qrwkv convert` run in a second binary, qrwkv-train, next to this one.
// Linking libtorch into qrwkv would add about a second of dynamic loading to every command,
// including the interactive ones, so the training commands are forwarded with exec: the user
// sees one program, and only training pays for libtorch.
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "apps/qrwkv/command.h"

namespace qrwkv::app {

namespace {

#ifdef QRWKV_HAS_TRAIN_BINARY
// The directory of the running executable, from /proc/self/exe (argv[0] may be a bare name
// found through PATH).
std::string own_directory() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string path(buf, static_cast<size_t>(n));
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}
#endif

int forward_to_train_binary(int argc, char** argv) {
#ifdef QRWKV_HAS_TRAIN_BINARY
  const std::string exe = own_directory() + "/qrwkv-train";
  std::vector<char*> args;
  args.push_back(const_cast<char*>(exe.c_str()));
  for (int i = 0; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  ::execv(exe.c_str(), args.data());
  throw std::runtime_error("cannot run " + exe + ": " + std::strerror(errno) +
                           " (it is built with qrwkv when the conversion component is on)");
#else
  throw std::runtime_error(std::string("'") + argv[0] +
                           "' needs the conversion component, which this build of qrwkv does not "
                           "have: install libtorch (scripts/setup does) and configure with "
                           "-DQRWKV_CONVERT=ON");
#endif
}

const CommandRegistrar pretrain_registrar({"pretrain",
                                           "train a small Qwen2 transformer from scratch on text",
                                           forward_to_train_binary});
const CommandRegistrar convert_registrar({"convert",
                                          "distill a Qwen2/LLaMA teacher into a QRWKV6 model",
                                          forward_to_train_binary});

}  // namespace

}  // namespace qrwkv::app
