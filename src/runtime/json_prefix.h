// An incremental check that a byte string is a prefix of a valid JSON document, for constrained
// sampling (`response_format` json_object / json_schema): before a sampled token is accepted,
// a copy of the validator is fed the token's bytes, and a token that would make the output
// impossible to complete as JSON is rejected.
//
// The grammar is RFC 8259 JSON with two restrictions that keep generation bounded and its end
// recognizable: the top-level value must be an object (or an array, when asked), so that the
// closing bracket marks the end; and runs of whitespace outside strings are limited, so that a
// model cannot stall in blank space. Strings must be valid UTF-8 (as the JSON parser of the
// client will require).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace qrwkv {

class JsonPrefixValidator {
 public:
  enum class TopLevel { Object, Array, ObjectOrArray };
  explicit JsonPrefixValidator(TopLevel top = TopLevel::Object, int max_whitespace_run = 16)
      : top_(top), max_ws_(max_whitespace_run) {}

  // Feeds one byte; false (and the validator is then unusable) when the bytes so far can no
  // longer be the start of a valid document.
  bool push(unsigned char c);
  // Feeds several bytes; false as soon as one is refused.
  bool push(std::string_view bytes) {
    for (char c : bytes)
      if (!push(static_cast<unsigned char>(c))) return false;
    return true;
  }
  // The top-level value is complete (only whitespace may follow).
  bool complete() const { return done_; }
  bool failed() const { return failed_; }

 private:
  // What the next byte may be, besides whitespace where JSON allows it.
  enum class Mode : uint8_t {
    Value,           // the start of a value
    ObjectKeyOrEnd,  // after '{': a key or '}'
    ObjectKey,       // after ',' in an object: a key
    Colon,           // after a key
    ObjectCommaOrEnd,
    ArrayValueOrEnd,  // after '[': a value or ']'
    ArrayCommaOrEnd,
    String,        // inside a string
    StringEscape,  // after a backslash
    StringHex,     // inside \uXXXX
    Utf8,          // inside a multi-byte UTF-8 sequence of a string
    Literal,       // inside true / false / null
    Number,
    Done,
  };
  enum class Container : uint8_t { Object, Array };
  enum NumberPart : uint8_t { kSign, kZero, kInt, kDot, kFrac, kExp, kExpSign, kExpDigits };

  bool fail() {
    failed_ = true;
    return false;
  }
  bool start_value(unsigned char c);
  bool after_value();  // a value ended: what may come next depends on the container
  bool end_number_then(unsigned char c);
  bool whitespace(unsigned char c);

  TopLevel top_;
  int max_ws_;
  Mode mode_ = Mode::Value;
  std::vector<Container> stack_;
  bool string_is_key_ = false;
  int hex_left_ = 0;
  int code_unit_ = 0;                // the \uXXXX value being read
  bool low_surrogate_next_ = false;  // a high surrogate was read: a \u low one must follow
  // UTF-8: continuation bytes still expected, and the allowed range of the next one.
  int utf8_left_ = 0;
  unsigned char utf8_lo_ = 0x80, utf8_hi_ = 0xBF;
  const char* literal_ = nullptr;  // the rest of the literal being matched
  NumberPart number_ = kSign;
  int ws_run_ = 0;
  bool done_ = false;
  bool failed_ = false;
};

}  // namespace qrwkv
