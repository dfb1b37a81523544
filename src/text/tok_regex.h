// Patterns of tokenizer.json (Split pre-tokenizer, Replace normalizer) run with PCRE2.
//
// The reference compiles these patterns with Oniguruma, whose `\s` is the Unicode White_Space
// property; PCRE2's `\s` under UCP also matches U+180E, so `\s`/`\S` are rewritten to
// `\p{White_Space}`/`\P{White_Space}` (valid inside and outside character classes). `^` and `$`
// match at line boundaries, as they always do in Oniguruma's Ruby syntax. The rest of
// the syntax used by real tokenizers (`\p{L}`, `\p{N}`, `(?i:...)`, `(?!...)`, `{1,3}`) means the
// same in both engines.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

struct pcre2_real_code_8;
struct pcre2_real_match_data_8;
struct pcre2_real_match_context_8;

namespace qrwkv::tok {

// A matching pattern: a regex, or a literal string (tokenizer.json's {"String": ...}).
class Pattern {
 public:
  Pattern() = default;
  static Pattern literal(std::string text);
  // Throws Error("<where>: invalid regex '<pattern>' (<reason>)").
  static Pattern regex(const std::string& pattern, const std::string& where);
  Pattern(Pattern&& other) noexcept;
  Pattern& operator=(Pattern&& other) noexcept;
  Pattern(const Pattern&) = delete;
  Pattern& operator=(const Pattern&) = delete;
  ~Pattern();

  // Calls on_match(begin, end) for each match in `s` (valid UTF-8), left to right, with the
  // reference's rules for empty matches (none right after the previous match). `md` is scratch
  // space from new_match_data(), owned by the caller so that matching allocates nothing.
  template <class F>
  void find_iter(std::string_view s, pcre2_real_match_data_8* md, F&& on_match) const;

  bool is_literal() const { return code_ == nullptr; }

  static pcre2_real_match_data_8* new_match_data();
  static void free_match_data(pcre2_real_match_data_8* md);

 private:
  // First match at or after `start`; false when there is none.
  bool search(std::string_view s, size_t start, pcre2_real_match_data_8* md, size_t& begin,
              size_t& end) const;

  std::string literal_;
  pcre2_real_code_8* code_ = nullptr;
  pcre2_real_match_context_8* context_ = nullptr;
  bool jit_ = false;
};

template <class F>
void Pattern::find_iter(std::string_view s, pcre2_real_match_data_8* md, F&& on_match) const {
  if (code_ == nullptr) {
    if (literal_.empty()) return;
    size_t pos = 0;
    while ((pos = s.find(literal_, pos)) != std::string_view::npos) {
      on_match(pos, pos + literal_.size());
      pos += literal_.size();
    }
    return;
  }
  size_t last_end = 0;
  size_t last_match_end = std::string_view::npos;
  while (last_end <= s.size()) {
    size_t b, e;
    if (!search(s, last_end, md, b, e)) return;
    if (b < last_end) b = last_end;
    if (e < b) e = b;
    if (b == e && last_match_end == e) {
      // An empty match right after the previous match is skipped by moving one character on.
      if (last_end >= s.size()) return;
      const auto c = static_cast<unsigned char>(s[last_end]);
      last_end += c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
      continue;
    }
    last_end = e;
    last_match_end = e;
    on_match(b, e);
  }
}

}  // namespace qrwkv::tok
