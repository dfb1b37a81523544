// Fuzzes the Jinja chat-template engine: arbitrary template text is parsed and rendered with a
// fixed small conversation. Any input must render or throw qrwkv::Error; crashes, hangs, stack
// overflows and runaway memory are bugs. Tight limits keep every input fast.
#include <cstdint>
#include <string_view>

#include "io/error.h"
#include "text/jinja.h"

namespace {

const qrwkv::jinja::ordered_json& variables() {
  static const auto vars = qrwkv::jinja::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": "Hi «there» 😀"},
      {"role": "assistant", "content": "<think>\nhm\n</think>\n\nHello", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": {"a": [1, 2.5, null]}}}]},
      {"role": "tool", "content": "{\"ok\": true}"}
    ],
    "tools": [{"type": "function", "function": {"name": "f", "description": "d",
               "parameters": {"type": "object", "properties": {"a": {"type": "array"}}}}}],
    "documents": null,
    "add_generation_prompt": true,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "enable_thinking": false
  })");
  return vars;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qrwkv::jinja::Limits limits;
  limits.max_output_bytes = 1 << 20;
  limits.max_steps = 200'000;
  limits.max_items = 100'000;
  try {
    qrwkv::jinja::Template t(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz",
                             limits);
    t.render(variables());
  } catch (const qrwkv::Error&) {
  }
  return 0;
}
