// The OpenAI-compatible request bodies the server accepts, parsed and validated into plain
// structs. Everything here is a pure function of the body text (no model, no sockets), so the
// parsers can be fuzzed and unit-tested on their own. Any problem with a body becomes an
// ApiError carrying the HTTP status and the OpenAI error object fields.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/json_prefix.h"
#include "runtime/sampler.h"

namespace qrwkv::server {

using ojson = nlohmann::ordered_json;

// An error reported to a client as {"error": {"message", "type", "param", "code"}}.
struct ApiError : std::runtime_error {
  ApiError(int status_, std::string type_, std::string code_, const std::string& message,
           std::string param_ = "")
      : std::runtime_error(message),
        status(status_),
        type(std::move(type_)),
        code(std::move(code_)),
        param(std::move(param_)) {}
  int status;
  std::string type;   // "invalid_request_error", "authentication_error", "server_error", ...
  std::string code;   // machine-readable: "invalid_json", "invalid_type", "model_not_found", ...
  std::string param;  // the offending field, when there is one
};

// 400 invalid_request_error naming the field.
[[noreturn]] void bad_request(const std::string& param, const std::string& message,
                              const std::string& code = "invalid_value");

// The JSON body of an error response.
ojson error_body(const ApiError& e);

// What validation needs to know about the running server.
struct RequestLimits {
  int max_n = 1;                    // choices per request (the parallel slots)
  int max_prompts = 256;            // prompts per completion request
  int64_t vocab_size = 0;           // token ids must be below this
  int64_t default_max_tokens = -1;  // when the request gives none; -1 = until a stop
};

// The generation settings common to chat and text completions.
struct GenParams {
  int64_t max_tokens = -1;  // -1: until an end-of-generation token or stop string
  int n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool ignore_eos = false;
  std::vector<std::string> stop;
  SamplerParams sampling;
  bool has_seed = false;  // false: the server draws a random seed
  // response_format json_object / json_schema: the reply is constrained to a JSON document
  // whose top level is this.
  std::optional<JsonPrefixValidator::TopLevel> json;
  // Log-probabilities of the reply's tokens with this many most likely alternatives each
  // (chat: logprobs + top_logprobs; completions: logprobs); -1: none.
  int logprobs = -1;
};

struct ChatRequest {
  std::string model;  // empty when the request names none
  // The chat template's input: messages (content parts joined into text), tools, tool_choice,
  // chat_template_kwargs merged in, and add_generation_prompt = true.
  ojson template_input;
  GenParams gen;
  // The request offers tools (and tool_choice is not "none"): tool calls in the reply are
  // parsed into message.tool_calls.
  bool tools = false;
};

// One prompt of a completion request: text, or token ids.
struct PromptInput {
  bool has_ids = false;      // the prompt was given as token ids
  std::string text;          // when !has_ids
  std::vector<int32_t> ids;  // when has_ids
};

struct CompletionRequest {
  std::string model;
  // A request may carry several prompts (a batch); each gets n choices, numbered
  // prompt_index * n + choice_index as OpenAI does.
  std::vector<PromptInput> prompts;
  // The reply starts with the prompt; with logprobs, the prompt's tokens get theirs too (the
  // first one null), which is how harnesses score a continuation (max_tokens 0 or 1).
  bool echo = false;
  GenParams gen;
};

// Parses a JSON body (objects only, nesting limited); malformed text is a 400 invalid_json.
ojson parse_body(std::string_view body);

ChatRequest parse_chat_request(std::string_view body, const RequestLimits& limits);
CompletionRequest parse_completion_request(std::string_view body, const RequestLimits& limits);

// POST /apply-template: {messages, tools?, add_generation_prompt?, chat_template_kwargs?}.
ojson parse_template_request(std::string_view body);
// POST /tokenize: {content (or prompt), add_special_tokens?, with_pieces?}.
struct TokenizeRequest {
  std::string content;
  bool add_special = false;  // prepend the BOS token where the tokenizer adds one
  bool with_pieces = false;
};
TokenizeRequest parse_tokenize_request(std::string_view body);
// POST /detokenize: {tokens: [ids]}.
std::vector<int32_t> parse_detokenize_request(std::string_view body, int64_t vocab_size);

// Serializes a response; invalid UTF-8 (never produced by the server) would be replaced
// rather than throw.
std::string dump(const ojson& j);

}  // namespace qrwkv::server
