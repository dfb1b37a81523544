// Python semantics of Jinja values (see jinja_value.cpp).
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "text/jinja_internal.h"
#include "text/tok_utf8.h"

namespace qrwkv::jinja::detail {

// Code-point views of UTF-8 text: Python indexes, slices and measures strings by code point.
std::u32string to_u32(std::string_view s);
std::string to_u8(std::u32string_view s);
void append_u8(std::string& out, char32_t cp);
bool is_ascii(std::string_view s);

bool py_isspace(char32_t c);
char32_t py_upper(char32_t c);
char32_t py_lower(char32_t c);
char32_t py_titlecase(char32_t c);
bool py_iscased(char32_t c);
bool py_isalnum(char32_t c);
bool py_isalpha(char32_t c);
bool py_isdigit(char32_t c);

std::string py_float_repr(double d);
std::string py_repr_str(std::string_view s);
std::string type_name(const Value& v);

bool truthy(const Value& v);
std::string to_str(const Value& v);  // Python str(); Undefined prints as ""
std::string repr(const Value& v);    // Python repr()

// json.dumps options as transformers' tojson filter passes them.
struct JsonStyle {
  bool pretty = false;  // indent given
  std::string indent;
  std::string item_sep = ", ";
  std::string key_sep = ": ";
  bool ensure_ascii = false;
  bool sort_keys = false;
};
struct JsonError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
void to_json(const Value& v, const JsonStyle& style, int level, std::string& out);

bool equals(const Value& a, const Value& b);
// -1/0/1, or nullopt when Python would raise TypeError for '<'.
std::optional<int> order(const Value& a, const Value& b);

// Converts template variables; throws JsonError when nested deeper than kMaxValueNesting.
Value from_json(const ordered_json& j, int depth = 0);

}  // namespace qrwkv::jinja::detail
