// A Jinja2 template engine for chat templates. It follows Python jinja2 as configured by
// transformers' apply_chat_template: an ImmutableSandboxedEnvironment with trim_blocks and
// lstrip_blocks on, the loop-controls extension (break/continue), a `{% generation %}` block,
// a tojson filter that keeps non-ASCII characters, and the raise_exception and strftime_now
// globals. Values follow Python semantics (str() of lists and dicts, float repr, integer and
// true division, code-point string indexing), because templates are written against them.
//
// Every failure (syntax, unknown filter, undefined value misuse, raise_exception, limits) is a
// qrwkv::Error whose message is "<name> line <N>: <problem>".
#pragma once

#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace qrwkv::jinja {

using ordered_json = nlohmann::ordered_json;

// Bounds that keep hostile templates from exhausting memory, time or the stack.
struct Limits {
  size_t max_output_bytes = size_t{256} << 20;  // rendered text, also any single string value
  size_t max_steps = 200'000'000;               // statements executed plus loop iterations
  size_t max_items = 50'000'000;                // elements of one list (range(), repetition)
  int max_nesting = 96;                         // syntactic nesting of blocks and expressions
  int max_call_depth = 64;                      // macro calls in progress at once
};

namespace detail {
struct Program;
}

class Template {
 public:
  // Parses `source`; `name` prefixes error messages (e.g. "model/tokenizer_config.json: chat
  // template"). Throws qrwkv::Error on a syntax error.
  explicit Template(std::string_view source, std::string name = "chat template",
                    Limits limits = {});
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with the keys of `variables` (a JSON object) as template variables.
  std::string render(const ordered_json& variables) const;

  const std::string& name() const;

 private:
  std::shared_ptr<const detail::Program> program_;
};

}  // namespace qrwkv::jinja
