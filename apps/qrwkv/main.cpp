// qrwkv: one binary, many subcommands (see command.h). Errors from outside input are reported
// as one line on stderr with a non-zero exit status; usage errors print the usage (exit 2).
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>

#include "apps/qrwkv/args.h"
#include "apps/qrwkv/command.h"

namespace qrwkv::app {

namespace {
std::vector<Command>& registry() {
  static std::vector<Command> r;
  return r;
}
}  // namespace

const std::vector<Command>& commands() { return registry(); }

CommandRegistrar::CommandRegistrar(Command c) { registry().push_back(std::move(c)); }

}  // namespace qrwkv::app

namespace {

void print_overview(std::FILE* out) {
  std::fprintf(out, "usage: qrwkv <command> [options]\n\ncommands:\n");
  for (const auto& c : qrwkv::app::commands())
    std::fprintf(out, "  %-16s %s\n", c.name.c_str(), c.summary.c_str());
  std::fprintf(out, "\nRun 'qrwkv <command> --help' for the options of a command.\n");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace qrwkv::app;
  if (argc < 2) {
    print_overview(stderr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "-h" || name == "--help" || name == "help") {
    print_overview(stdout);
    return 0;
  }
  for (const auto& c : commands()) {
    if (c.name != name) continue;
    try {
      return c.run(argc - 1, argv + 1);
    } catch (const HelpRequested& h) {
      std::cout << h.usage;
      return 0;
    } catch (const UsageError& e) {
      std::cerr << "error: " << e.what() << "\n\n";
      // Re-running with --help is the simplest way to reach the command's usage text.
      char help[] = "--help";
      char* help_argv[] = {argv[1], help, nullptr};
      try {
        c.run(2, help_argv);
      } catch (const HelpRequested& h) {
        std::cerr << h.usage;
      }
      return 2;
    } catch (const std::exception& e) {
      std::cerr << "error: " << e.what() << "\n";
      return 1;
    }
  }
  std::fprintf(stderr, "error: unknown command '%s'\n\n", name.c_str());
  print_overview(stderr);
  return 2;
}
