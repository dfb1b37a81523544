// Runs the qrwkv binary as a user would and captures what it prints, for end-to-end tests of
// the command line (exit codes, error messages, output files).
#pragma once

#include <string>
#include <vector>

namespace qrwkv::test {

struct CliResult {
  int exit_code = -1;  // the process exit status; 128+N when killed by signal N
  std::string out;     // stdout
  std::string err;     // stderr
};

// Runs `qrwkv args...` without a shell; `stdin_text` is fed to its standard input.
CliResult run_cli(const std::vector<std::string>& args, const std::string& stdin_text = "");

// Path of a file or directory under tests/data.
std::string data_path(const std::string& relative);

// A fresh empty directory under the system temp dir, removed at process exit.
std::string temp_dir();

}  // namespace qrwkv::test
