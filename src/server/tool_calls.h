// Tool calls in model output, in the Hermes format that Qwen2.5 and many other chat models are
// trained on: each call is a block
//
//   <tool_call>
//   {"name": "get_weather", "arguments": {"city": "Paris"}}
//   </tool_call>
//
// in the reply text. When a request offers tools, the blocks become OpenAI
// `message.tool_calls` entries ({id, type: "function", function: {name, arguments}}, with
// arguments as a JSON string) and the text outside them stays `content`. A block whose body is
// not a JSON object with a string "name" is not a call: it stays in the content as it was
// written, so that nothing the model wrote is lost.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/api.h"

namespace qrwkv::server {

struct ToolCall {
  std::string id;  // "call_…", unique per call
  std::string name;
  std::string arguments;  // JSON text of an object
};

// Parses the body of one block (the text between the tags); nullopt when it is not a call.
std::optional<ToolCall> parse_tool_call_body(std::string_view body);

struct ParsedReply {
  std::string content;  // the text outside the calls (the whole text when there are none)
  std::vector<ToolCall> calls;
};
ParsedReply parse_tool_calls(std::string_view text);

// The `message` of a non-streamed chat choice for a reply `text`. With `tools`, calls are parsed
// out of it as ToolCallStream does (so that both forms agree); when there are any, `content` is
// the text outside them without the whitespace around the calls (null when nothing is left)
// and `finish_reason` "stop" becomes "tool_calls".
ojson chat_message(const std::string& text, bool tools, std::string& finish_reason);

// The streaming form: turns the pieces of a reply, as they arrive, into the `delta` objects of
// chat.completion.chunk events ({"content": …} or {"tool_calls": [{index, id, type,
// function}]}). Text that may be the start of a `<tool_call>` tag is held back until it is
// known not to be, and a call is sent whole once its closing tag arrives. The whitespace
// around a call separates it from the text and is dropped.
class ToolCallStream {
 public:
  std::vector<ojson> push(std::string_view text);
  // The end of the reply: what is still held back is content (an unclosed call included).
  std::vector<ojson> flush();
  // Whether any call was sent, which makes the finish reason "tool_calls".
  bool saw_calls() const { return calls_ > 0; }

 private:
  void emit_content(std::string text, std::vector<ojson>& out);
  bool in_call_ = false;
  bool after_call_ = false;  // whitespace right after a call is dropped
  std::string pending_;
  std::string ws_before_;  // whitespace before the open call: content if it is no call
  int calls_ = 0;
};

}  // namespace qrwkv::server
