#include "apps/qrwkv/args.h"

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <sstream>

namespace qrwkv::app {

Args::Args(std::string command, std::string synopsis, std::vector<Flag> flags)
    : command_(std::move(command)), synopsis_(std::move(synopsis)), flags_(std::move(flags)) {
  flags_.push_back({{"-h", "--help"}, "", "show this help and exit"});
}

const Flag* Args::lookup(const std::string& name) const {
  for (const auto& f : flags_)
    for (const auto& n : f.names)
      if (n == name) return &f;
  return nullptr;
}

void Args::parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string inline_value;
    bool has_inline = false;
    if (arg.rfind("--", 0) == 0) {
      auto eq = arg.find('=');
      if (eq != std::string::npos) {
        inline_value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
        has_inline = true;
      }
    }
    const Flag* f = lookup(arg);
    if (f == nullptr) {
      if (arg.empty() || arg[0] != '-') throw UsageError("unexpected argument '" + arg + "'");
      throw UsageError("unknown option '" + arg + "'");
    }
    const std::string& canonical = f->names.back();
    if (canonical == "--help") throw HelpRequested{usage()};
    if (f->value.empty()) {
      if (has_inline) throw UsageError("option '" + arg + "' takes no value");
      values_[canonical].push_back("");
      continue;
    }
    if (has_inline) {
      values_[canonical].push_back(inline_value);
    } else {
      if (i + 1 >= argc) throw UsageError("option '" + arg + "' needs a value (" + f->value + ")");
      values_[canonical].push_back(argv[++i]);
    }
  }
}

bool Args::has(const std::string& name) const {
  const Flag* f = lookup(name);
  return f != nullptr && values_.count(f->names.back()) != 0;
}

std::string Args::get(const std::string& name, const std::string& fallback) const {
  const Flag* f = lookup(name);
  if (f == nullptr) return fallback;
  auto it = values_.find(f->names.back());
  return it == values_.end() ? fallback : it->second.back();
}

std::vector<std::string> Args::get_all(const std::string& name) const {
  const Flag* f = lookup(name);
  if (f == nullptr) return {};
  auto it = values_.find(f->names.back());
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

std::string Args::require(const std::string& name) const {
  if (!has(name)) throw UsageError("missing required option " + name);
  return get(name);
}

int64_t Args::get_int(const std::string& name, int64_t fallback) const {
  if (!has(name)) return fallback;
  const std::string s = get(name);
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno == ERANGE)
    throw UsageError("option " + name + " expects an integer, got '" + s + "'");
  return v;
}

double Args::get_double(const std::string& name, double fallback) const {
  if (!has(name)) return fallback;
  const std::string s = get(name);
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || errno == ERANGE)
    throw UsageError("option " + name + " expects a number, got '" + s + "'");
  return v;
}

std::string Args::usage() const {
  std::ostringstream out;
  out << "usage: qrwkv " << command_ << " " << synopsis_ << "\n\noptions:\n";
  for (const auto& f : flags_) {
    std::string names;
    for (const auto& n : f.names) names += (names.empty() ? "" : ", ") + n;
    if (!f.value.empty()) names += " " + f.value;
    out << "  " << names;
    if (names.size() < 28)
      out << std::string(28 - names.size(), ' ');
    else
      out << "\n" << std::string(30, ' ');
    out << f.help << "\n";
  }
  return out.str();
}

std::vector<int32_t> parse_token_list(const std::string& text) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    if (c == ' ' || c == ',' || c == '\t' || c == '\n' || c == '\r') {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && text[j] >= '0' && text[j] <= '9') ++j;
    if (j == i || (j < text.size() && text[j] != ' ' && text[j] != ',' && text[j] != '\t' &&
                   text[j] != '\n' && text[j] != '\r'))
      throw UsageError(
          "token list must be non-negative integers separated by spaces or commas, got '" + text +
          "'");
    const std::string num = text.substr(i, j - i);
    if (num.size() > 10 || std::stoll(num) > std::numeric_limits<int32_t>::max())
      throw UsageError("token id " + num + " is out of range");
    ids.push_back(static_cast<int32_t>(std::stoll(num)));
    i = j;
  }
  return ids;
}

Flag dtype_flag() {
  return {{"--dtype"},
          "TYPE",
          "weights in memory: f32, bf16, f16, q8_0, q4_0 (MLP in 4 bits, the rest in q8_0), "
          "q4_0_pure (all 4 bits), q4_k, q5_k, q6_k or llama.cpp's mixes q4_k_m, q5_k_m; "
          "converted at load time (default: as stored)"};
}

WeightFormat weight_format(const Args& a) {
  try {
    return parse_weight_format(a.get("--dtype"));
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
}

Flag ubatch_flag() {
  return {{"-ub", "--ubatch"},
          "N",
          "tokens per forward pass: longer prompts run in micro-batches of N, the state carried "
          "between them, so that their memory does not grow with their length (default 512)"};
}

LoadOptions load_options(const Args& a) {
  LoadOptions o;
  o.format = weight_format(a);
  o.ubatch = a.get_int("--ubatch", 0);
  if (a.has("--ubatch") && o.ubatch < 1) throw UsageError("--ubatch must be at least 1");
  const int64_t threads = a.get_int("--threads", 0);
  if (threads < 0) throw UsageError("-t must be positive");
  o.threads = static_cast<int>(threads);
  if (a.has("--reference")) o.backend = make_reference_backend();
  return o;
}

std::string model_dir(const Args& a) {
  if (a.has("--model")) return a.get("--model");
  std::string dir;
  const char* env = std::getenv("QRWKV_MODEL");
  if (env != nullptr && *env != '\0') {
    dir = env;
  } else {
#ifdef QRWKV_DEFAULT_MODEL
    dir = QRWKV_DEFAULT_MODEL;
#endif
  }
  if (dir.empty() || !(std::filesystem::exists(std::filesystem::path(dir) / "config.json") ||
                       std::filesystem::is_regular_file(dir)))
    throw UsageError(
        "no model given: pass a model with -m PATH (a Hugging Face layout directory with "
        "config.json, safetensors weights and tokenizer.json, or a GGUF file)" +
        (dir.empty() ? std::string() : "; the default model " + dir + " does not exist"));
  return dir;
}

}  // namespace qrwkv::app
