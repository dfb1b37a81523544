// Test utilities for the server: a `qrwkv serve` process on a free loopback port, and a minimal
// HTTP/1.1 client on raw sockets (so that tests can also send garbage, huge bodies, or hang up
// in the middle of a stream).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/cli.h"

namespace qrwkv::test {

// A golden model (QRWKV6 unless named) with the tiny ChatML tokenizer, as one model directory.
inline const std::string& server_chat_model(const std::string& model = "qrwkv6_tiny") {
  static std::map<std::string, std::string> dirs;
  auto it = dirs.find(model);
  if (it != dirs.end()) return it->second;
  namespace fs = std::filesystem;
  const std::string d = temp_dir();
  for (const auto& e : fs::directory_iterator(data_path("models/" + model)))
    fs::copy_file(e.path(), d + "/" + e.path().filename().string());
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(data_path(std::string("tiny_chat/") + f), d + "/" + f);
  return dirs.emplace(model, d).first->second;
}

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A connected loopback socket, closed on destruction.
class Socket {
 public:
  explicit Socket(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      throw std::runtime_error("cannot connect to port " + std::to_string(port));
  }
  ~Socket() { close(); }
  int fd() const { return fd_; }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Sends everything; false when the peer closed the connection.
  bool send_all(const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      const ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  // Appends what arrives within `seconds` to `out`; false at end of stream or on error.
  bool recv_some(std::string& out, double seconds) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(seconds * 1000)) <= 0) return true;
    char buf[65536];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    out.append(buf, static_cast<size_t>(n));
    return true;
  }
  // Reads until the peer closes or `seconds` pass.
  std::string recv_all(double seconds) {
    std::string out;
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < end)
      if (!recv_some(out, 0.2)) break;
    return out;
  }

 private:
  int fd_ = -1;
};

struct HttpResponse {
  int status = 0;
  std::string headers;
  std::string body;  // de-chunked
};

// Decodes a Transfer-Encoding: chunked body.
inline std::string dechunk(const std::string& s) {
  std::string out;
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t eol = s.find("\r\n", pos);
    if (eol == std::string::npos) break;
    const size_t len = std::stoul(s.substr(pos, eol - pos), nullptr, 16);
    if (len == 0) break;
    out += s.substr(eol + 2, len);
    pos = eol + 2 + len + 2;
  }
  return out;
}

inline HttpResponse parse_response(const std::string& raw) {
  HttpResponse r;
  const size_t head_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.1 ", 0) != 0 || head_end == std::string::npos) return r;
  r.status = std::stoi(raw.substr(9, 3));
  r.headers = raw.substr(0, head_end);
  r.body = raw.substr(head_end + 4);
  std::string lower = r.headers;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower.find("transfer-encoding: chunked") != std::string::npos) r.body = dechunk(r.body);
  return r;
}

inline std::string request_text(const std::string& method, const std::string& path,
                                const std::string& body, const std::string& api_key) {
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  if (!api_key.empty()) req += "Authorization: Bearer " + api_key + "\r\n";
  if (method == "POST")
    req +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  return req + "\r\n" + body;
}

// One request on a fresh connection; waits for the whole response (at most `seconds`).
inline HttpResponse http(int port, const std::string& method, const std::string& path,
                         const std::string& body = "", const std::string& api_key = "",
                         double seconds = 60) {
  Socket s(port);
  s.send_all(request_text(method, path, body, api_key));
  return parse_response(s.recv_all(seconds));
}

// The JSON payloads of a Server-Sent Events body ("data: X\n\n" each), [DONE] included as is.
inline std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < body.size()) {
    const size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) {
      out.push_back("<unterminated>" + body.substr(pos));
      break;
    }
    const std::string ev = body.substr(pos, end - pos);
    out.push_back(ev.rfind("data: ", 0) == 0 ? ev.substr(6) : "<malformed>" + ev);
    pos = end + 2;
  }
  return out;
}

// A `qrwkv serve` process on a free loopback port; stopped with SIGTERM on destruction, which
// must end it cleanly (exit status 0).
class ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> extra, const std::string& model = "") {
    log_ = temp_dir() + "/server.log";
    std::vector<std::string> args = {
        QRWKV_BIN, "serve", "-m", model.empty() ? server_chat_model() : model,
        "--port",  "0",     "-t", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < end) {
      const std::string text = read_file(log_);
      const size_t at = text.find("listening on http://127.0.0.1:");
      if (at != std::string::npos && text.find("ready\n") != std::string::npos) {
        port_ = std::stoi(text.substr(at + 30));
        return;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("the server exited early:\n" + text);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    throw std::runtime_error("the server did not start:\n" + read_file(log_));
  }
  ~ServerProcess() {
    if (pid_ > 0) stop();
  }
  int port() const { return port_; }
  int pid() const { return pid_; }
  std::string log() const { return read_file(log_); }
  bool alive() const { return pid_ > 0 && ::kill(pid_, 0) == 0; }
  // Sends SIGTERM and returns the exit status (128+N when killed by signal N, -1 on timeout).
  int stop(double seconds = 30) {
    ::kill(pid_, SIGTERM);
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    int status = 0;
    while (std::chrono::steady_clock::now() < end) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return -1;
  }

 private:
  int pid_ = -1;
  int port_ = 0;
  std::string log_;
};

}  // namespace qrwkv::test
