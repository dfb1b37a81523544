#include "runtime/json_prefix.h"

namespace qrwkv {

namespace {

// Nesting beyond this is refused: the server's own parser refuses deeper documents, and no
// sensible reply needs them.
constexpr size_t kMaxDepth = 64;

bool is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_hex(unsigned char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
int hex_value(unsigned char c) {
  if (is_digit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return c - 'A' + 10;
}

}  // namespace

bool JsonPrefixValidator::whitespace(unsigned char) {
  if (++ws_run_ > max_ws_) return fail();
  return true;
}

bool JsonPrefixValidator::after_value() {
  if (stack_.empty()) {
    mode_ = Mode::Done;
    done_ = true;
  } else {
    mode_ = stack_.back() == Container::Object ? Mode::ObjectCommaOrEnd : Mode::ArrayCommaOrEnd;
  }
  return true;
}

bool JsonPrefixValidator::start_value(unsigned char c) {
  if (stack_.empty()) {
    // The top level is a container, so that its closing bracket ends the document.
    const bool object_ok = top_ != TopLevel::Array;
    const bool array_ok = top_ != TopLevel::Object;
    if (!((c == '{' && object_ok) || (c == '[' && array_ok))) return fail();
  }
  switch (c) {
    case '{':
    case '[':
      if (stack_.size() >= kMaxDepth) return fail();
      stack_.push_back(c == '{' ? Container::Object : Container::Array);
      mode_ = c == '{' ? Mode::ObjectKeyOrEnd : Mode::ArrayValueOrEnd;
      return true;
    case '"':
      string_is_key_ = false;
      mode_ = Mode::String;
      return true;
    case 't':
      literal_ = "rue";
      mode_ = Mode::Literal;
      return true;
    case 'f':
      literal_ = "alse";
      mode_ = Mode::Literal;
      return true;
    case 'n':
      literal_ = "ull";
      mode_ = Mode::Literal;
      return true;
    case '-':
      number_ = kSign;
      mode_ = Mode::Number;
      return true;
    default:
      if (!is_digit(c)) return fail();
      number_ = c == '0' ? kZero : kInt;
      mode_ = Mode::Number;
      return true;
  }
}

bool JsonPrefixValidator::end_number_then(unsigned char c) {
  if (number_ != kZero && number_ != kInt && number_ != kFrac && number_ != kExpDigits)
    return fail();
  after_value();
  return push(c);
}

bool JsonPrefixValidator::push(unsigned char c) {
  if (failed_) return false;
  const bool ws = is_ws(c);
  if (!ws) ws_run_ = 0;
  switch (mode_) {
    case Mode::String:
      if (low_surrogate_next_ && c != '\\') return fail();
      if (c == '"') {
        if (string_is_key_) {
          mode_ = Mode::Colon;
          return true;
        }
        return after_value();
      }
      if (c == '\\') {
        mode_ = Mode::StringEscape;
        return true;
      }
      if (c < 0x20) return fail();  // control characters must be escaped
      if (c < 0x80) return true;
      // The lead byte of a multi-byte UTF-8 sequence, with the range its next byte must be in
      // (which excludes overlong forms, surrogates and code points beyond U+10FFFF).
      utf8_lo_ = 0x80;
      utf8_hi_ = 0xBF;
      if (c >= 0xC2 && c <= 0xDF) {
        utf8_left_ = 1;
      } else if (c >= 0xE0 && c <= 0xEF) {
        utf8_left_ = 2;
        if (c == 0xE0) utf8_lo_ = 0xA0;
        if (c == 0xED) utf8_hi_ = 0x9F;
      } else if (c >= 0xF0 && c <= 0xF4) {
        utf8_left_ = 3;
        if (c == 0xF0) utf8_lo_ = 0x90;
        if (c == 0xF4) utf8_hi_ = 0x8F;
      } else {
        return fail();
      }
      mode_ = Mode::Utf8;
      return true;
    case Mode::Utf8:
      if (c < utf8_lo_ || c > utf8_hi_) return fail();
      utf8_lo_ = 0x80;
      utf8_hi_ = 0xBF;
      if (--utf8_left_ == 0) mode_ = Mode::String;
      return true;
    case Mode::StringEscape:
      if (low_surrogate_next_ && c != 'u') return fail();
      if (c == 'u') {
        mode_ = Mode::StringHex;
        hex_left_ = 4;
        code_unit_ = 0;
        return true;
      }
      switch (c) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
          mode_ = Mode::String;
          return true;
        default:
          return fail();
      }
    case Mode::StringHex: {
      if (!is_hex(c)) return fail();
      code_unit_ = code_unit_ * 16 + hex_value(c);
      if (--hex_left_ > 0) return true;
      mode_ = Mode::String;
      // UTF-16 surrogates must come in pairs, high then low.
      const bool high = code_unit_ >= 0xD800 && code_unit_ <= 0xDBFF;
      const bool low = code_unit_ >= 0xDC00 && code_unit_ <= 0xDFFF;
      if (low_surrogate_next_) {
        low_surrogate_next_ = false;
        return low ? true : fail();
      }
      if (low) return fail();
      low_surrogate_next_ = high;
      return true;
    }
    case Mode::Literal:
      if (c != static_cast<unsigned char>(*literal_)) return fail();
      if (*++literal_ == '\0') return after_value();
      return true;
    case Mode::Number:
      switch (number_) {
        case kSign:
          if (!is_digit(c)) return fail();
          number_ = c == '0' ? kZero : kInt;
          return true;
        case kZero:
        case kInt:
          if (number_ == kInt && is_digit(c)) return true;
          if (c == '.') {
            number_ = kDot;
            return true;
          }
          if (c == 'e' || c == 'E') {
            number_ = kExp;
            return true;
          }
          return end_number_then(c);
        case kDot:
          if (!is_digit(c)) return fail();
          number_ = kFrac;
          return true;
        case kFrac:
          if (is_digit(c)) return true;
          if (c == 'e' || c == 'E') {
            number_ = kExp;
            return true;
          }
          return end_number_then(c);
        case kExp:
          if (c == '+' || c == '-') {
            number_ = kExpSign;
            return true;
          }
          if (!is_digit(c)) return fail();
          number_ = kExpDigits;
          return true;
        case kExpSign:
          if (!is_digit(c)) return fail();
          number_ = kExpDigits;
          return true;
        case kExpDigits:
          if (is_digit(c)) return true;
          return end_number_then(c);
      }
      return fail();
    case Mode::Done:
      return ws ? whitespace(c) : fail();
    case Mode::Value:
      if (ws) return whitespace(c);
      return start_value(c);
    case Mode::ArrayValueOrEnd:
      if (ws) return whitespace(c);
      if (c == ']') {
        stack_.pop_back();
        return after_value();
      }
      return start_value(c);
    case Mode::ObjectKeyOrEnd:
    case Mode::ObjectKey:
      if (ws) return whitespace(c);
      if (c == '}' && mode_ == Mode::ObjectKeyOrEnd) {
        stack_.pop_back();
        return after_value();
      }
      if (c != '"') return fail();
      string_is_key_ = true;
      mode_ = Mode::String;
      return true;
    case Mode::Colon:
      if (ws) return whitespace(c);
      if (c != ':') return fail();
      mode_ = Mode::Value;
      return true;
    case Mode::ObjectCommaOrEnd:
    case Mode::ArrayCommaOrEnd: {
      if (ws) return whitespace(c);
      const bool object = mode_ == Mode::ObjectCommaOrEnd;
      if (c == ',') {
        mode_ = object ? Mode::ObjectKey : Mode::Value;
        return true;
      }
      if (c == (object ? '}' : ']')) {
        stack_.pop_back();
        return after_value();
      }
      return fail();
    }
  }
  return fail();
}

}  // namespace qrwkv
