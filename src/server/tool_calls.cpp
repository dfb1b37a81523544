#include "server/tool_calls.h"

#include <random>

namespace qrwkv::server {

namespace {

constexpr std::string_view kOpen = "<tool_call>";
constexpr std::string_view kClose = "</tool_call>";
// Arguments nesting deeper than this are not taken as a call; the JSON parser and serializer
// recurse over what they are given.
constexpr int kMaxDepth = 64;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::string new_call_id() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::string id = "call_";
  for (int i = 0; i < 24; ++i) id += alnum[rng() % 62];
  return id;
}

// The length of the longest suffix of `s` that is a proper prefix of `tag`: text that may
// still turn into the tag.
size_t partial_tag_suffix(std::string_view s, std::string_view tag) {
  for (size_t n = std::min(s.size(), tag.size() - 1); n > 0; --n)
    if (s.substr(s.size() - n) == tag.substr(0, n)) return n;
  return 0;
}

}  // namespace

std::optional<ToolCall> parse_tool_call_body(std::string_view body) {
  body = trim(body);
  bool too_deep = false;
  const ojson j = ojson::parse(
      body.begin(), body.end(),
      [&](int depth, ojson::parse_event_t, ojson&) {
        if (depth > kMaxDepth) too_deep = true;
        return !too_deep;
      },
      false);
  if (too_deep || !j.is_object()) return std::nullopt;
  auto name = j.find("name");
  if (name == j.end() || !name->is_string() || name->get<std::string>().empty())
    return std::nullopt;
  ToolCall c;
  c.id = new_call_id();
  c.name = name->get<std::string>();
  auto args = j.find("arguments");
  if (args == j.end() || args->is_null()) {
    c.arguments = "{}";
  } else if (args->is_object()) {
    c.arguments = dump(*args);
  } else if (args->is_string()) {
    // Some models write the arguments already encoded as a string, as OpenAI sends them.
    const ojson inner = ojson::parse(args->get<std::string>(), nullptr, false);
    if (!inner.is_object()) return std::nullopt;
    c.arguments = args->get<std::string>();
  } else {
    return std::nullopt;
  }
  return c;
}

ParsedReply parse_tool_calls(std::string_view text) {
  ParsedReply r;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t open = text.find(kOpen, pos);
    if (open == std::string_view::npos) break;
    const size_t body = open + kOpen.size();
    const size_t close = text.find(kClose, body);
    if (close == std::string_view::npos) break;  // unclosed: the rest is content
    r.content += text.substr(pos, open - pos);
    if (auto call = parse_tool_call_body(text.substr(body, close - body)))
      r.calls.push_back(std::move(*call));
    else
      r.content += text.substr(open, close + kClose.size() - open);
    pos = close + kClose.size();
  }
  r.content += text.substr(pos);
  return r;
}

ojson chat_message(const std::string& text, bool tools, std::string& finish_reason) {
  ojson m = {{"role", "assistant"}, {"content", text}};
  if (!tools) return m;
  ToolCallStream stream;
  std::vector<ojson> deltas = stream.push(text);
  for (ojson& d : stream.flush()) deltas.push_back(std::move(d));
  if (!stream.saw_calls()) return m;
  std::string content;
  ojson calls = ojson::array();
  for (ojson& d : deltas) {
    if (d.contains("content")) content += d["content"].get<std::string>();
    if (d.contains("tool_calls")) {
      ojson c = std::move(d["tool_calls"][0]);
      c.erase("index");
      calls.push_back(std::move(c));
    }
  }
  m["content"] = trim(content).empty() ? ojson(nullptr) : ojson(std::move(content));
  m["tool_calls"] = std::move(calls);
  if (finish_reason == "stop") finish_reason = "tool_calls";
  return m;
}

void ToolCallStream::emit_content(std::string text, std::vector<ojson>& out) {
  if (after_call_) {
    const size_t first = text.find_first_not_of(" \t\r\n");
    if (first == std::string::npos) return;
    text.erase(0, first);
    after_call_ = false;
  }
  if (!text.empty()) out.push_back({{"content", std::move(text)}});
}

std::vector<ojson> ToolCallStream::push(std::string_view text) {
  std::vector<ojson> out;
  pending_ += text;
  for (;;) {
    if (!in_call_) {
      const size_t open = pending_.find(kOpen);
      if (open != std::string::npos) {
        // The whitespace before a call is held until the call turns out valid.
        std::string before = pending_.substr(0, open);
        const size_t cut = before.find_last_not_of(" \t\r\n") + 1;
        ws_before_ = before.substr(cut);
        before.erase(cut);
        emit_content(std::move(before), out);
        pending_.erase(0, open + kOpen.size());
        in_call_ = true;
        continue;
      }
      // Held back: a possible start of the tag, and trailing whitespace (which a call that
      // follows would drop).
      size_t keep = partial_tag_suffix(pending_, kOpen);
      const size_t last = pending_.find_last_not_of(" \t\r\n", pending_.size() - keep - 1);
      const size_t send = keep == pending_.size() ? 0 : (last == std::string::npos ? 0 : last + 1);
      emit_content(pending_.substr(0, send), out);
      pending_.erase(0, send);
      return out;
    }
    const size_t close = pending_.find(kClose);
    if (close == std::string::npos) return out;
    const std::string body = pending_.substr(0, close);
    pending_.erase(0, close + kClose.size());
    in_call_ = false;
    if (auto call = parse_tool_call_body(body)) {
      ojson c = {{"index", calls_++},
                 {"id", call->id},
                 {"type", "function"},
                 {"function", {{"name", call->name}, {"arguments", call->arguments}}}};
      out.push_back({{"tool_calls", ojson::array({std::move(c)})}});
      after_call_ = true;
    } else {
      emit_content(ws_before_ + std::string(kOpen) + body + std::string(kClose), out);
    }
    ws_before_.clear();
  }
}

std::vector<ojson> ToolCallStream::flush() {
  std::vector<ojson> out;
  std::string rest = in_call_ ? ws_before_ + std::string(kOpen) + pending_ : pending_;
  pending_.clear();
  ws_before_.clear();
  in_call_ = false;
  // With calls sent, trailing whitespace is not content either.
  if (calls_ > 0) rest.erase(rest.find_last_not_of(" \t\r\n") + 1);
  emit_content(std::move(rest), out);
  return out;
}

}  // namespace qrwkv::server
