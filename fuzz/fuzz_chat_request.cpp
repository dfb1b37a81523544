// Fuzzes the server's request-body parsers: any bytes give a parsed request or an ApiError with
// a 4xx status and an error body that serializes; nothing else may escape, and what parses
// respects the limits it was given. The same bytes also go through the parsers of model output
// (tool calls, whole and streamed in pieces) and the JSON prefix validator of response_format,
// whose "complete" must agree with the JSON parser.
#include <cstdint>
#include <string_view>

#include "runtime/json_prefix.h"
#include "server/api.h"
#include "server/tool_calls.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qrwkv;
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
    if (r.prompts.empty() || r.prompts.size() > static_cast<size_t>(limits.max_prompts))
      __builtin_trap();
    for (const PromptInput& p : r.prompts) {
      for (int32_t id : p.ids)
        if (id < 0 || id >= limits.vocab_size) __builtin_trap();
      if (!p.has_ids && p.text.empty()) __builtin_trap();
    }
    if (r.gen.logprobs < -1 || r.gen.logprobs > 20) __builtin_trap();
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
  // Model output: tool calls have a name and object arguments, and the streamed form finds
  // the same calls as the whole reply.
  const std::string text(body);
  std::string finish = "stop";
  const ojson message = chat_message(text, true, finish);
  size_t whole_calls = 0;
  if (message.contains("tool_calls")) {
    for (const auto& c : message["tool_calls"]) {
      if (c["function"]["name"].get<std::string>().empty()) __builtin_trap();
      if (!ojson::parse(c["function"]["arguments"].get<std::string>()).is_object())
        __builtin_trap();
    }
    whole_calls = message["tool_calls"].size();
    if (finish != "tool_calls") __builtin_trap();
  }
  ToolCallStream stream;
  size_t streamed_calls = 0;
  const size_t piece = 1 + (size % 7);
  for (size_t i = 0; i <= text.size(); i += piece) {
    auto deltas =
        i < text.size() ? stream.push(std::string_view(text).substr(i, piece)) : stream.flush();
    for (const auto& d : deltas) streamed_calls += d.contains("tool_calls");
  }
  if (streamed_calls != whole_calls) __builtin_trap();
  (void)parse_tool_calls(text);
  // The validator's "complete" means the JSON parser accepts the document.
  for (auto top : {JsonPrefixValidator::TopLevel::Object, JsonPrefixValidator::TopLevel::Array,
                   JsonPrefixValidator::TopLevel::ObjectOrArray}) {
    JsonPrefixValidator v(top);
    if (v.push(body) && v.complete() && ojson::parse(body, nullptr, false).is_discarded())
      __builtin_trap();
  }
  return 0;
}
