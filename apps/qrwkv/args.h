// A small command-line flag parser shared by all subcommands. Flags follow llama.cpp names
// where they exist (-m/--model, -n/--n-predict, -t/--threads, ...). Unknown flags, missing
// values and malformed numbers throw UsageError, which main() reports with the usage text.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/error.h"
#include "model/model.h"

namespace qrwkv::app {

struct UsageError : Error {
  using Error::Error;
};

// Thrown by Args::parse for -h/--help; main() prints the usage and exits 0.
struct HelpRequested {
  std::string usage;
};

struct Flag {
  std::vector<std::string> names;  // e.g. {"-m", "--model"}; the last is the canonical name
  std::string value;               // placeholder of the value ("DIR"); empty for a switch
  std::string help;
};

class Args {
 public:
  Args(std::string command, std::string synopsis, std::vector<Flag> flags);

  // Parses argv[1..argc) (argv[0] is the subcommand). Positional arguments are refused.
  void parse(int argc, char** argv);

  bool has(const std::string& name) const;
  // The value of a flag (the last one when given several times).
  std::string get(const std::string& name, const std::string& fallback = "") const;
  // Every value of a repeatable flag, in order.
  std::vector<std::string> get_all(const std::string& name) const;
  // Requires the flag to be present; throws UsageError naming it otherwise.
  std::string require(const std::string& name) const;
  int64_t get_int(const std::string& name, int64_t fallback) const;
  double get_double(const std::string& name, double fallback) const;

  std::string usage() const;

 private:
  const Flag* lookup(const std::string& name) const;
  std::string command_;
  std::string synopsis_;
  std::vector<Flag> flags_;
  std::map<std::string, std::vector<std::string>> values_;  // canonical name -> values
};

// --dtype, shared by every command that loads a model: how the projections are held in memory.
Flag dtype_flag();
// -ub/--ubatch, read by load_options.
Flag ubatch_flag();
// The --dtype value (WeightFormat::Stored when absent); UsageError for an unknown name.
WeightFormat weight_format(const Args& a);

// How a command loads its model: --dtype, -t/--threads (0: one per physical core) and, where the
// command has it, --reference (the float32 reference backend). UsageError for bad values.
LoadOptions load_options(const Args& a);

// The model directory of a command: -m/--model when given, else $QRWKV_MODEL, else the demo
// model that ships in the source tree (models/qrwkv6-demo), so that `qrwkv run -p ...` works
// out of the box. UsageError when none of them names an existing model directory.
std::string model_dir(const Args& a);

// Parses a list of token ids separated by spaces and/or commas ("1 2, 3").
std::vector<int32_t> parse_token_list(const std::string& text);

}  // namespace qrwkv::app
