#include "tests/cli.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include "backend/cpu/cpu_backend.h"

namespace qrwkv::test {

namespace {

std::string drain(int fd) {
  std::string s;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    s.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return s;
}

struct TempDirs {
  std::vector<std::string> dirs;
  ~TempDirs() {
    for (const auto& d : dirs) {
      std::error_code ec;
      std::filesystem::remove_all(d, ec);
    }
  }
};

}  // namespace

CliResult run_cli(const std::vector<std::string>& args, const std::string& stdin_text) {
  Process p(args);
  // Input is written while output is read, so neither pipe can fill up and stall the child.
  std::thread writer([&] {
    p.write(stdin_text);
    p.close_input();
  });
  CliResult r = p.finish(/*close_stdin=*/false);
  writer.join();
  return r;
}

Process::Process(const std::vector<std::string>& args) {
  ::signal(SIGPIPE, SIG_IGN);
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) || ::pipe2(out_pipe, O_CLOEXEC) || ::pipe2(err_pipe, O_CLOEXEC))
    throw std::runtime_error("pipe failed");
  std::vector<std::string> full = {QRWKV_BIN};
  full.insert(full.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : full) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::dup2(in_pipe[0], 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  in_ = in_pipe[1];
  out_ = out_pipe[0];
  err_ = err_pipe[0];
}

Process::~Process() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  close_input();
  for (int fd : {out_, err_})
    if (fd >= 0) ::close(fd);
}

void Process::write(const std::string& text) {
  size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(in_, text.data() + off, text.size() - off);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
}

void Process::signal(int sig) { ::kill(pid_, sig); }

bool Process::wait_for_output(const std::string& text, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (out_text_.find(text) == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{out_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(out_, buf, sizeof buf);
    if (n <= 0) return out_text_.find(text) != std::string::npos;
    out_text_.append(buf, static_cast<size_t>(n));
  }
  return true;
}

void Process::close_input() {
  const int fd = in_.exchange(-1);
  if (fd >= 0) ::close(fd);
}

CliResult Process::finish(bool close_stdin) {
  if (close_stdin) close_input();
  CliResult r;
  std::thread err_reader([&] { r.err = drain(err_); });
  r.out = out_text_ + drain(out_);
  err_reader.join();
  out_ = err_ = -1;
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

std::string data_path(const std::string& relative) {
  return std::string(QRWKV_TEST_DATA) + "/" + relative;
}

std::string temp_dir() {
  static TempDirs dirs;
  std::string tmpl = (std::filesystem::temp_directory_path() / "qrwkv-test-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dirs.dirs.push_back(tmpl);
  return tmpl;
}

LoadOptions float32_load(int threads) {
  LoadOptions o;
  o.backend = std::make_shared<CpuBackend>(CpuOptions{threads, cpu::float32_isa()});
  return o;
}

std::vector<NamedBackend> every_backend(int threads) {
  std::vector<NamedBackend> out = {{"reference", make_reference_backend(), std::nullopt}};
  for (cpu::Isa isa : cpu::kAllIsas)
    if (isa <= cpu::max_isa())
      out.push_back({std::string("cpu ") + cpu::isa_name(isa),
                     std::make_shared<CpuBackend>(CpuOptions{threads, isa}), isa});
  return out;
}

}  // namespace qrwkv::test
