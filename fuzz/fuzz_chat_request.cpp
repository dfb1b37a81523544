// Fuzzes the server's request-body parsers: any bytes give a parsed request or an ApiError with
// a 4xx status and an error body that serializes; nothing else may escape, and what parses
// respects the limits it was given.
#include <cstdint>
#include <string_view>

#include "server/api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qrwkv::server;
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  RequestLimits limits;
  limits.max_n = 4;
  limits.vocab_size = 1000;
  limits.default_max_tokens = 64;
  auto check_error = [](const ApiError& e) {
    if (e.status < 400 || e.status >= 500) __builtin_trap();
    if (dump(error_body(e)).empty()) __builtin_trap();
  };
  try {
    const ChatRequest r = parse_chat_request(body, limits);
    if (r.gen.n < 1 || r.gen.n > limits.max_n) __builtin_trap();
    if (!r.template_input["messages"].is_array() || r.template_input["messages"].empty())
      __builtin_trap();
    for (const auto& [id, bias] : r.gen.sampling.logit_bias)
      if (id < 0 || id >= limits.vocab_size) __builtin_trap();
    (void)dump(r.template_input);
  } catch (const ApiError& e) {
    check_error(e);
  }
  try {
    const CompletionRequest r = parse_completion_request(body, limits);
    for (int32_t id : r.prompt_ids)
      if (id < 0 || id >= limits.vocab_size) __builtin_trap();
    if (!r.has_ids && r.prompt_text.empty()) __builtin_trap();
  } catch (const ApiError& e) {
    check_error(e);
  }
  try {
    (void)dump(parse_template_request(body));
  } catch (const ApiError& e) {
    check_error(e);
  }
  try {
    (void)parse_tokenize_request(body);
  } catch (const ApiError& e) {
    check_error(e);
  }
  try {
    for (int32_t id : parse_detokenize_request(body, limits.vocab_size))
      if (id < 0 || id >= limits.vocab_size) __builtin_trap();
  } catch (const ApiError& e) {
    check_error(e);
  }
  return 0;
}
