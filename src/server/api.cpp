#include "server/api.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace qrwkv::server {

namespace {

// Deeper bodies are refused while parsing: nothing the API defines nests this deep, and the
// template engine and the serializer recurse over the values they are given.
constexpr int kMaxDepth = 64;
constexpr size_t kMaxStops = 16;
constexpr int64_t kMaxTopLogprobs = 20;

std::string type_name(const ojson& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

[[noreturn]] void wrong_type(const std::string& param, const ojson& v, const char* expected) {
  bad_request(param, "'" + param + "' must be " + expected + ", got " + type_name(v),
              "invalid_type");
}

const ojson* field(const ojson& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

double get_number(const ojson& body, const char* name, double fallback, double lo, double hi) {
  const ojson* v = field(body, name);
  if (v == nullptr) return fallback;
  if (!v->is_number()) wrong_type(name, *v, "a number");
  const double d = v->get<double>();
  if (!(d >= lo && d <= hi))
    bad_request(name, std::string("'") + name + "' must be between " + std::to_string(lo) +
                          " and " + std::to_string(hi));
  return d;
}

int64_t get_int(const ojson& body, const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const ojson* v = field(body, name);
  if (v == nullptr) return fallback;
  if (!v->is_number_integer()) wrong_type(name, *v, "an integer");
  // Unsigned values above INT64_MAX read back as negative; compare them as unsigned first.
  if (v->is_number_unsigned() &&
      v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    bad_request(name, std::string("'") + name + "' is out of range");
  const int64_t i = v->get<int64_t>();
  if (i < lo || i > hi)
    bad_request(name, std::string("'") + name + "' must be between " + std::to_string(lo) +
                          " and " + std::to_string(hi));
  return i;
}

bool get_bool(const ojson& body, const char* name, bool fallback) {
  const ojson* v = field(body, name);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) wrong_type(name, *v, "a boolean");
  return v->get<bool>();
}

std::string get_model(const ojson& body) {
  const ojson* v = field(body, "model");
  if (v == nullptr) return "";
  if (!v->is_string()) wrong_type("model", *v, "a string");
  return v->get<std::string>();
}

GenParams parse_gen(const ojson& body, const RequestLimits& limits) {
  GenParams g;
  g.max_tokens = limits.default_max_tokens;
  const int64_t kNoLimit = std::numeric_limits<int32_t>::max();
  g.max_tokens = get_int(body, "max_tokens", g.max_tokens, 0, kNoLimit);
  g.max_tokens = get_int(body, "max_completion_tokens", g.max_tokens, 0, kNoLimit);
  g.n = static_cast<int>(get_int(body, "n", 1, 1, std::max(1, limits.max_n)));
  g.stream = get_bool(body, "stream", false);
  if (const ojson* so = field(body, "stream_options")) {
    if (!so->is_object()) wrong_type("stream_options", *so, "an object");
    g.include_usage = get_bool(*so, "include_usage", false);
  }
  g.ignore_eos = get_bool(body, "ignore_eos", false);
  if (const ojson* s = field(body, "stop")) {
    if (s->is_string()) {
      g.stop.push_back(s->get<std::string>());
    } else if (s->is_array()) {
      if (s->size() > kMaxStops)
        bad_request("stop", "at most " + std::to_string(kMaxStops) + " stop strings");
      for (const auto& e : *s) {
        if (!e.is_string()) wrong_type("stop", e, "a string or an array of strings");
        g.stop.push_back(e.get<std::string>());
      }
    } else {
      wrong_type("stop", *s, "a string or an array of strings");
    }
    for (const auto& s2 : g.stop)
      if (s2.empty()) bad_request("stop", "stop strings must not be empty");
  }

  SamplerParams& p = g.sampling;
  p.temperature = static_cast<float>(get_number(body, "temperature", p.temperature, 0, 100));
  p.top_p = static_cast<float>(get_number(body, "top_p", p.top_p, 0, 1));
  if (p.top_p <= 0) bad_request("top_p", "'top_p' must be greater than 0");
  p.top_k = static_cast<int32_t>(get_int(body, "top_k", p.top_k, 0, kNoLimit));
  p.min_p = static_cast<float>(get_number(body, "min_p", p.min_p, 0, 1));
  p.presence_penalty =
      static_cast<float>(get_number(body, "presence_penalty", p.presence_penalty, -2, 2));
  p.frequency_penalty =
      static_cast<float>(get_number(body, "frequency_penalty", p.frequency_penalty, -2, 2));
  p.repeat_penalty =
      static_cast<float>(get_number(body, "repeat_penalty", p.repeat_penalty, 1e-3, 100));
  p.repeat_last_n =
      static_cast<int32_t>(get_int(body, "repeat_last_n", p.repeat_last_n, -1, kNoLimit));
  if (const ojson* v = field(body, "seed")) {
    if (!v->is_number_integer()) wrong_type("seed", *v, "an integer");
    p.seed =
        v->is_number_unsigned() ? v->get<uint64_t>() : static_cast<uint64_t>(v->get<int64_t>());
    g.has_seed = true;
  }
  if (const ojson* lb = field(body, "logit_bias")) {
    if (!lb->is_object()) wrong_type("logit_bias", *lb, "an object");
    for (auto it = lb->begin(); it != lb->end(); ++it) {
      const std::string& key = it.key();
      size_t used = 0;
      long long id = -1;
      try {
        id = std::stoll(key, &used);
      } catch (const std::logic_error&) {
        used = 0;
      }
      if (used != key.size() || key.empty() || id < 0 || id >= limits.vocab_size)
        bad_request("logit_bias", "logit_bias key '" + key + "' is not a token id of this model");
      if (!it->is_number()) wrong_type("logit_bias", *it, "a number");
      const double b = it->get<double>();
      if (!(b >= -100 && b <= 100))
        bad_request("logit_bias", "logit_bias values must be between -100 and 100");
      p.logit_bias[static_cast<int32_t>(id)] = static_cast<float>(b);
    }
  }
  if (const ojson* rf = field(body, "response_format")) {
    if (!rf->is_object()) wrong_type("response_format", *rf, "an object");
    const ojson* t = field(*rf, "type");
    if (t == nullptr || !t->is_string())
      bad_request("response_format", "'response_format.type' must be a string", "invalid_type");
    const std::string type = t->get<std::string>();
    if (type == "json_object") {
      g.json = JsonPrefixValidator::TopLevel::Object;
    } else if (type == "json_schema") {
      // Only the top-level type of the schema is enforced; the output is always syntactically
      // valid JSON.
      const ojson* js = field(*rf, "json_schema");
      if (js != nullptr && !js->is_object())
        wrong_type("response_format.json_schema", *js, "an object");
      const ojson* schema = js != nullptr ? field(*js, "schema") : nullptr;
      if (schema != nullptr && !schema->is_object() && !schema->is_boolean())
        wrong_type("response_format.json_schema.schema", *schema, "an object");
      const ojson* st = schema != nullptr && schema->is_object() ? field(*schema, "type") : nullptr;
      if (st == nullptr) {
        g.json = JsonPrefixValidator::TopLevel::ObjectOrArray;
      } else if (st->is_string() && st->get<std::string>() == "object") {
        g.json = JsonPrefixValidator::TopLevel::Object;
      } else if (st->is_string() && st->get<std::string>() == "array") {
        g.json = JsonPrefixValidator::TopLevel::Array;
      } else {
        bad_request("response_format",
                    "the schema's top-level type must be \"object\" or \"array\"",
                    "unsupported_parameter");
      }
    } else if (type != "text") {
      bad_request("response_format", "unknown response_format type '" + type +
                                         "' (expected text, json_object or json_schema)");
    }
  }
  return g;
}

// Joins the text parts of a content array; other part types cannot be served by a text model.
std::string content_text(const ojson& content, const std::string& param) {
  std::string out;
  for (const auto& part : content) {
    if (!part.is_object()) wrong_type(param, part, "an object (a content part)");
    const ojson* type = field(part, "type");
    if (type == nullptr || !type->is_string() || type->get<std::string>() != "text")
      bad_request(param, "only text content parts are supported", "unsupported_content");
    const ojson* text = field(part, "text");
    if (text == nullptr || !text->is_string())
      bad_request(param, "a text content part needs a string 'text'", "invalid_type");
    out += text->get<std::string>();
  }
  return out;
}

// An assistant message's tool_calls as chat templates expect them. OpenAI clients send each
// call's arguments as a JSON string, while the templates of Hugging Face models iterate over
// or serialize them as a mapping (Qwen2.5 writes `arguments | tojson`); like vLLM and
// llama.cpp, arguments that parse as a JSON object are passed as that object.
ojson normalize_tool_calls(const ojson& calls, const std::string& param) {
  if (!calls.is_array()) wrong_type(param, calls, "an array");
  ojson out = ojson::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    const std::string p = param + "[" + std::to_string(i) + "]";
    const ojson& c = calls[i];
    if (!c.is_object()) wrong_type(p, c, "an object");
    const ojson* fn = field(c, "function");
    if (fn == nullptr || !fn->is_object())
      bad_request(p + ".function", "each tool call needs a 'function' object", "invalid_type");
    const ojson* name = field(*fn, "name");
    if (name == nullptr || !name->is_string())
      bad_request(p + ".function.name", "each tool call needs a string function name",
                  "invalid_type");
    ojson copy = c;
    if (const ojson* args = field(*fn, "arguments")) {
      if (args->is_string()) {
        const std::string& text = args->get_ref<const std::string&>();
        bool too_deep = false;
        ojson parsed = ojson::parse(
            text.begin(), text.end(),
            [&](int depth, ojson::parse_event_t, ojson&) {
              if (depth > kMaxDepth) too_deep = true;
              return !too_deep;
            },
            false);
        if (!too_deep && parsed.is_object()) copy["function"]["arguments"] = std::move(parsed);
      } else if (!args->is_object()) {
        wrong_type(p + ".function.arguments", *args, "a string or an object");
      }
    }
    out.push_back(std::move(copy));
  }
  return out;
}

ojson parse_messages(const ojson& body) {
  const ojson* msgs = field(body, "messages");
  if (msgs == nullptr)
    bad_request("messages", "'messages' is required", "missing_required_parameter");
  if (!msgs->is_array()) wrong_type("messages", *msgs, "an array");
  if (msgs->empty()) bad_request("messages", "'messages' must not be empty");
  ojson out = ojson::array();
  for (size_t i = 0; i < msgs->size(); ++i) {
    const ojson& m = (*msgs)[i];
    const std::string param = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) wrong_type(param, m, "an object");
    const ojson* role = field(m, "role");
    if (role == nullptr || !role->is_string())
      bad_request(param + ".role", "each message needs a string 'role'", "invalid_type");
    std::string r = role->get<std::string>();
    if (r != "system" && r != "user" && r != "assistant" && r != "tool" && r != "developer")
      bad_request(param + ".role", "unknown role '" + r + "'");
    ojson copy = m;
    // Templates know system messages; "developer" is OpenAI's newer name for the same thing.
    if (r == "developer") copy["role"] = "system";
    auto c = m.find("content");
    if (c != m.end()) {
      if (c->is_array()) {
        copy["content"] = content_text(*c, param + ".content");
      } else if (!c->is_string() && !c->is_null()) {
        wrong_type(param + ".content", *c, "a string, an array of content parts or null");
      }
    } else if (r != "assistant") {
      bad_request(param + ".content", "'content' is required for role '" + r + "'",
                  "missing_required_parameter");
    }
    if (const ojson* calls = field(m, "tool_calls")) {
      if (r != "assistant")
        bad_request(param + ".tool_calls", "only assistant messages carry tool_calls");
      copy["tool_calls"] = normalize_tool_calls(*calls, param + ".tool_calls");
    }
    if (const ojson* id = field(m, "tool_call_id"); id != nullptr && !id->is_string())
      wrong_type(param + ".tool_call_id", *id, "a string");
    out.push_back(std::move(copy));
  }
  return out;
}

void add_template_extras(const ojson& body, ojson& input) {
  if (const ojson* tools = field(body, "tools")) {
    if (!tools->is_array()) wrong_type("tools", *tools, "an array");
    input["tools"] = *tools;
  }
  if (const ojson* tc = field(body, "tool_choice")) {
    if (!tc->is_string() && !tc->is_object())
      wrong_type("tool_choice", *tc, "a string or an object");
    input["tool_choice"] = *tc;
  }
  if (const ojson* kw = field(body, "chat_template_kwargs")) {
    if (!kw->is_object()) wrong_type("chat_template_kwargs", *kw, "an object");
    for (auto it = kw->begin(); it != kw->end(); ++it)
      if (it.key() != "messages") input[it.key()] = *it;
  }
}

int32_t token_id(const ojson& v, const std::string& param, int64_t vocab_size) {
  if (!v.is_number_integer()) wrong_type(param, v, "an integer token id");
  const bool neg = v.is_number_integer() && !v.is_number_unsigned() && v.get<int64_t>() < 0;
  if (neg || v.get<uint64_t>() >= static_cast<uint64_t>(vocab_size))
    bad_request(param, "token id " + v.dump() + " is outside the vocabulary (size " +
                           std::to_string(vocab_size) + ")");
  return v.get<int32_t>();
}

}  // namespace

void bad_request(const std::string& param, const std::string& message, const std::string& code) {
  throw ApiError(400, "invalid_request_error", code, message, param);
}

ojson error_body(const ApiError& e) {
  ojson err = {{"message", e.what()}, {"type", e.type}};
  err["param"] = e.param.empty() ? ojson(nullptr) : ojson(e.param);
  err["code"] = e.code.empty() ? ojson(nullptr) : ojson(e.code);
  return {{"error", std::move(err)}};
}

ojson parse_body(std::string_view body) {
  ojson j;
  try {
    j = ojson::parse(body.begin(), body.end(), [](int depth, ojson::parse_event_t, ojson&) {
      if (depth > kMaxDepth)
        throw ApiError(
            400, "invalid_request_error", "invalid_json",
            "the request body nests deeper than " + std::to_string(kMaxDepth) + " levels");
      return true;
    });
  } catch (const ojson::exception& e) {
    throw ApiError(400, "invalid_request_error", "invalid_json",
                   std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!j.is_object())
    throw ApiError(400, "invalid_request_error", "invalid_json",
                   "the request body must be a JSON object, got " + type_name(j));
  return j;
}

ChatRequest parse_chat_request(std::string_view body, const RequestLimits& limits) {
  const ojson j = parse_body(body);
  ChatRequest r;
  r.model = get_model(j);
  r.template_input = ojson::object();
  add_template_extras(j, r.template_input);
  r.template_input["messages"] = parse_messages(j);
  r.template_input["add_generation_prompt"] = true;
  r.gen = parse_gen(j, limits);
  // Chat: logprobs is a switch and top_logprobs the number of alternatives.
  const int64_t top = get_int(j, "top_logprobs", -1, 0, kMaxTopLogprobs);
  if (get_bool(j, "logprobs", false))
    r.gen.logprobs = static_cast<int>(std::max<int64_t>(top, 0));
  else if (top >= 0)
    bad_request("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  const ojson* tools = field(j, "tools");
  const ojson* choice = field(j, "tool_choice");
  r.tools = tools != nullptr && !tools->empty() &&
            !(choice != nullptr && choice->is_string() && choice->get<std::string>() == "none");
  return r;
}

CompletionRequest parse_completion_request(std::string_view body, const RequestLimits& limits) {
  const ojson j = parse_body(body);
  CompletionRequest r;
  r.model = get_model(j);
  const ojson* p = field(j, "prompt");
  if (p == nullptr) bad_request("prompt", "'prompt' is required", "missing_required_parameter");
  // A prompt is a string or a list of token ids; a list of those is a batch of prompts.
  std::vector<const ojson*> list;
  if (p->is_array() && !p->empty() && (p->front().is_string() || p->front().is_array())) {
    if (p->size() > static_cast<size_t>(limits.max_prompts))
      bad_request("prompt",
                  "at most " + std::to_string(limits.max_prompts) + " prompts per request");
    for (const auto& e : *p) list.push_back(&e);
  } else {
    list.push_back(p);
  }
  for (const ojson* one : list) {
    PromptInput in;
    if (one->is_string()) {
      in.text = one->get<std::string>();
      if (in.text.empty()) bad_request("prompt", "'prompt' must not be empty");
    } else if (one->is_array()) {
      if (one->empty()) bad_request("prompt", "'prompt' must not be empty");
      in.has_ids = true;
      for (const auto& v : *one) in.ids.push_back(token_id(v, "prompt", limits.vocab_size));
    } else {
      wrong_type("prompt", *one, "a string or an array of token ids");
    }
    r.prompts.push_back(std::move(in));
  }
  r.echo = get_bool(j, "echo", false);
  r.gen = parse_gen(j, limits);
  // The legacy API's logprobs is the number of alternatives (OpenAI allows up to 5, vLLM 20).
  if (const ojson* lp = field(j, "logprobs")) {
    if (lp->is_boolean()) {
      if (lp->get<bool>()) r.gen.logprobs = 0;
    } else {
      r.gen.logprobs = static_cast<int>(get_int(j, "logprobs", -1, 0, kMaxTopLogprobs));
    }
  }
  if (r.gen.stream && r.prompts.size() > 1)
    bad_request("prompt", "a streamed completion takes one prompt", "unsupported_parameter");
  return r;
}

ojson parse_template_request(std::string_view body) {
  const ojson j = parse_body(body);
  ojson input = ojson::object();
  add_template_extras(j, input);
  input["messages"] = parse_messages(j);
  input["add_generation_prompt"] = get_bool(j, "add_generation_prompt", true);
  return input;
}

TokenizeRequest parse_tokenize_request(std::string_view body) {
  const ojson j = parse_body(body);
  TokenizeRequest r;
  // llama.cpp names the text "content", vLLM (and lm-eval's remote tokenizer) "prompt".
  const char* key =
      field(j, "content") == nullptr && field(j, "prompt") != nullptr ? "prompt" : "content";
  const ojson* c = field(j, key);
  if (c == nullptr) bad_request("content", "'content' is required", "missing_required_parameter");
  if (!c->is_string()) wrong_type(key, *c, "a string");
  r.content = c->get<std::string>();
  r.add_special = get_bool(j, "add_special_tokens", get_bool(j, "add_special", false));
  r.with_pieces = get_bool(j, "with_pieces", false);
  return r;
}

std::vector<int32_t> parse_detokenize_request(std::string_view body, int64_t vocab_size) {
  const ojson j = parse_body(body);
  const ojson* t = field(j, "tokens");
  if (t == nullptr) bad_request("tokens", "'tokens' is required", "missing_required_parameter");
  if (!t->is_array()) wrong_type("tokens", *t, "an array of token ids");
  std::vector<int32_t> ids;
  for (const auto& v : *t) ids.push_back(token_id(v, "tokens", vocab_size));
  return ids;
}

std::string dump(const ojson& j) { return j.dump(-1, ' ', false, ojson::error_handler_t::replace); }

}  // namespace qrwkv::server
