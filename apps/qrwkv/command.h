// The qrwkv binary is one program with subcommands. Each subcommand lives in its own
// cmd_<name>.cpp and registers itself with a static CommandRegistrar, so adding a command never
// touches the others.
#pragma once

#include <string>
#include <vector>

namespace qrwkv::app {

struct Command {
  std::string name;
  std::string summary;
  // argv[0] is the subcommand name; returns the process exit code.
  int (*run)(int argc, char** argv);
};

const std::vector<Command>& commands();

struct CommandRegistrar {
  explicit CommandRegistrar(Command c);
};

}  // namespace qrwkv::app
