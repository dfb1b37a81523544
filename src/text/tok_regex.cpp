#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/tok_regex.h"

#include <pcre2.h>

#include "io/error.h"

namespace qrwkv::tok {

namespace {

// Rewrites `\s` and `\S` to the White_Space property (see the header for why).
std::string translate(const std::string& pattern) {
  std::string out;
  out.reserve(pattern.size() + 32);
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c != '\\' || i + 1 >= pattern.size()) {
      out += c;
      continue;
    }
    const char n = pattern[++i];
    if (n == 's') {
      out += "\\p{White_Space}";
    } else if (n == 'S') {
      out += "\\P{White_Space}";
    } else {
      out += '\\';
      out += n;
    }
  }
  return out;
}

}  // namespace

Pattern Pattern::literal(std::string text) {
  Pattern p;
  p.literal_ = std::move(text);
  return p;
}

Pattern Pattern::regex(const std::string& pattern, const std::string& where) {
  Pattern p;
  const std::string translated = translate(pattern);
  int code = 0;
  PCRE2_SIZE offset = 0;
  p.code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &code, &offset, nullptr);
  if (p.code_ == nullptr) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(code, buf, sizeof buf);
    fail(where, "invalid regex '" + pattern + "' (" + reinterpret_cast<const char*>(buf) +
                    " at offset " + std::to_string(offset) + ")");
  }
  p.jit_ = pcre2_jit_compile(p.code_, PCRE2_JIT_COMPLETE) == 0;
  // Bound the work of one match so that a pathological pattern fails with an error instead of
  // running for hours; real tokenizer patterns stay far below these limits.
  p.context_ = pcre2_match_context_create(nullptr);
  pcre2_set_match_limit(p.context_, 10000000);
  pcre2_set_heap_limit(p.context_, 1u << 18);  // KiB, i.e. 256 MiB
  return p;
}

Pattern::Pattern(Pattern&& other) noexcept
    : literal_(std::move(other.literal_)),
      code_(other.code_),
      context_(other.context_),
      jit_(other.jit_) {
  other.code_ = nullptr;
  other.context_ = nullptr;
}

Pattern& Pattern::operator=(Pattern&& other) noexcept {
  if (this != &other) {
    pcre2_code_free(code_);
    pcre2_match_context_free(context_);
    literal_ = std::move(other.literal_);
    code_ = other.code_;
    context_ = other.context_;
    jit_ = other.jit_;
    other.code_ = nullptr;
    other.context_ = nullptr;
  }
  return *this;
}

Pattern::~Pattern() {
  pcre2_code_free(code_);
  pcre2_match_context_free(context_);
}

pcre2_real_match_data_8* Pattern::new_match_data() {
  // One pair is enough: only the whole match is used, and PCRE2 still reports it (rc == 0)
  // when a pattern has capture groups.
  return pcre2_match_data_create(1, nullptr);
}

void Pattern::free_match_data(pcre2_real_match_data_8* md) { pcre2_match_data_free(md); }

bool Pattern::search(std::string_view s, size_t start, pcre2_real_match_data_8* md, size_t& begin,
                     size_t& end) const {
  // PCRE2 refuses a null subject even when it is empty.
  const auto subject = reinterpret_cast<PCRE2_SPTR>(s.data() != nullptr ? s.data() : "");
  int rc;
  if (jit_) {
    rc = pcre2_jit_match(code_, subject, s.size(), start, 0, md, context_);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // The JIT's default stack is small; the interpreter keeps its backtracking on the heap.
      rc = pcre2_match(code_, subject, s.size(), start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md,
                       context_);
    }
  } else {
    rc = pcre2_match(code_, subject, s.size(), start, PCRE2_NO_UTF_CHECK, md, context_);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(rc, buf, sizeof buf);
    throw Error(std::string("tokenizer regex failed on the input: ") +
                reinterpret_cast<const char*>(buf));
  }
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
  begin = ov[0];
  end = ov[1];
  // \K in a lookbehind can report a match ending before it starts; treat it as empty.
  if (end < begin) end = begin;
  return true;
}

}  // namespace qrwkv::tok
