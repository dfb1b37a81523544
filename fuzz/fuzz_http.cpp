// Fuzzes the server's HTTP path end to end: the bytes are sent as they are to a running server
// (the golden QRWKV6 model with the test tokenizer, a prompt limit of 64 tokens, replies of at
// most 16 tokens, a 0.2 s request deadline, one request per connection, 50 ms to send it), and
// the answer is read until the server closes the connection. (The client does not half-close:
// the server takes a half-closed connection for a client that went away, and answers nothing.)
// Whatever the bytes, the server must answer with a well-formed HTTP status line or close the
// connection, never with a 500 (a bad request is the client's: 4xx), its 4xx JSON bodies must be
// OpenAI error objects, and it must stay up (checked with /health every input).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "server/http_server.h"

namespace {

namespace fs = std::filesystem;

int g_port = 0;
std::string exchange(const std::string& bytes);

void start_server() {
  const std::string src = QRWKV_SOURCE_DIR;
  char tmpl[] = "/tmp/qrwkv-fuzz-http-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  for (const auto& e : fs::directory_iterator(src + "/tests/data/models/qrwkv6_tiny"))
    fs::copy_file(e.path(), dir + "/" + e.path().filename().string());
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(src + "/tests/data/tiny_chat/" + f, dir + "/" + f);
  qrwkv::server::ServerOptions o;
  o.model_dir = dir;
  o.port = 0;
  o.n_parallel = 2;
  o.threads = 1;
  o.max_prompt_tokens = 64;
  o.default_max_tokens = 16;
  o.request_timeout_s = 0.2;
  o.read_timeout_s = 0.05;
  o.keep_alive_max_requests = 1;
  o.max_connections = 16;
  o.cache_bytes = size_t{4} << 20;
  auto* server = new qrwkv::server::HttpServer(o);  // lives as long as the process
  g_port = server->start();
  std::thread([server] { server->run(); }).detach();
}

// Sends `bytes` and reads until the server closes the connection (or 10 s pass).
std::string exchange(const std::string& bytes) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(g_port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) __builtin_trap();
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may close early on a bad request
    off += static_cast<size_t>(n);
  }
  std::string out;
  char buf[65536];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 10000) <= 0) break;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// Checks one HTTP/1.1 response (the first in `out`).
void check_response(const std::string& out) {
  if (out.empty()) return;  // closed without an answer (an incomplete request)
  if (out.rfind("HTTP/1.1 ", 0) != 0 || out.size() < 12) __builtin_trap();
  const int status = std::atoi(out.substr(9, 3).c_str());
  if (status < 100 || status > 599 || status == 500) __builtin_trap();
  const size_t head_end = out.find("\r\n\r\n");
  if (head_end == std::string::npos) return;
  const std::string head = out.substr(0, head_end);
  // (A HEAD request's answer has the headers of a body but not the body.)
  if (status >= 400 && status < 500 && head.find("application/json") != std::string::npos &&
      head.find("Transfer-Encoding: chunked") == std::string::npos && out.size() > head_end + 4) {
    const nlohmann::json j = nlohmann::json::parse(out.substr(head_end + 4), nullptr, false);
    if (!j.is_object() || !j.contains("error") || !j["error"]["message"].is_string())
      __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (g_port == 0) start_server();
  check_response(exchange(std::string(reinterpret_cast<const char*>(data), size)));
  const std::string health =
      exchange("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  if (health.rfind("HTTP/1.1 200", 0) != 0 && health.rfind("HTTP/1.1 503", 0) != 0)
    __builtin_trap();
  return 0;
}
