// Runs the qrwkv binary as a user would and captures what it prints, for end-to-end tests of
// the command line (exit codes, error messages, output files).
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/cpu/features.h"
#include "model/model.h"

namespace qrwkv::test {

struct CliResult {
  int exit_code = -1;  // the process exit status; 128+N when killed by signal N
  std::string out;     // stdout
  std::string err;     // stderr
};

// Runs `qrwkv args...` without a shell; `stdin_text` is fed to its standard input.
CliResult run_cli(const std::vector<std::string>& args, const std::string& stdin_text = "");

// A running qrwkv process whose standard input is written piece by piece, for interactive
// commands (and signals, such as Ctrl-C's SIGINT).
class Process {
 public:
  explicit Process(const std::vector<std::string>& args);
  ~Process();
  void write(const std::string& text);
  void close_input();
  void signal(int sig);
  // Reads stdout until it contains `text` or `seconds` pass; returns whether it appeared.
  bool wait_for_output(const std::string& text, double seconds);
  // Closes stdin (unless told not to: another thread is still writing it), waits for the exit
  // and collects the rest of the output.
  CliResult finish(bool close_stdin = true);

 private:
  int pid_ = -1;
  std::atomic<int> in_{-1};
  int out_ = -1, err_ = -1;
  std::string out_text_;
};

// Path of a file or directory under tests/data.
std::string data_path(const std::string& relative);

// A fresh empty directory under the system temp dir, removed at process exit.
std::string temp_dir();

// Loads on a CPU backend at the best level that computes in float32 (cpu::float32_isa()), for
// tests of model logic whose tolerances are below what bf16 activations would round away (on a
// CPU whose default level is AVX512BF16); that level has its own tests.
LoadOptions float32_load(int threads = 0);

// The reference backend, then the CPU backend at every level this machine runs (`threads`
// threads each): what the tests that run on every backend iterate over.
struct NamedBackend {
  std::string name;  // "reference", "cpu avx2", ...
  std::shared_ptr<Backend> backend;
  std::optional<cpu::Isa> level;  // unset for the reference
};
std::vector<NamedBackend> every_backend(int threads = 2);

}  // namespace qrwkv::test
