// Python semantics of template values: str(), repr(), float formatting, json.dumps as the
// transformers tojson filter calls it, truthiness, equality, ordering and Unicode helpers.
#include "text/jinja_value.h"

#include <utf8proc.h>

#include <charconv>
#include <cmath>
#include <cstdio>

namespace qrwkv::jinja::detail {

std::u32string to_u32(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  size_t k = 0;
  while (k < s.size()) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + k),
                                          static_cast<utf8proc_ssize_t>(s.size() - k), &cp);
    if (n <= 0) {
      // Invalid UTF-8 (only possible in template text): one replacement character per byte.
      out += U'\uFFFD';
      ++k;
      continue;
    }
    out += static_cast<char32_t>(cp);
    k += static_cast<size_t>(n);
  }
  return out;
}

void append_u8(std::string& out, char32_t cp) {
  utf8proc_uint8_t buf[4];
  utf8proc_ssize_t n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
  out.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

std::string to_u8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_u8(out, c);
  return out;
}

bool is_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

bool py_isspace(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
  if (c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
      c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000)
    return true;
  return false;
}

char32_t py_upper(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
  return static_cast<char32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(c)));
}

char32_t py_lower(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  return static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
}

char32_t py_titlecase(char32_t c) {
  if (c < 0x80) return py_upper(c);
  return static_cast<char32_t>(utf8proc_totitle(static_cast<utf8proc_int32_t>(c)));
}

bool py_iscased(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}

bool py_isalnum(char32_t c) {
  if (c < 0x80) return std::isalnum(static_cast<int>(c)) != 0;
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
         (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}

bool py_isalpha(char32_t c) {
  if (c < 0x80) return std::isalpha(static_cast<int>(c)) != 0;
  auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
}

bool py_isdigit(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_ND;
}

static bool py_isprintable(char32_t c) {
  if (c < 0x80) return c >= 0x20 && c < 0x7F;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS:
      return false;
    default:
      return true;
  }
}

std::string py_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  // Shortest round-trip digits, then laid out the way Python's repr() does: positional for
  // exponents in [-4, 16), scientific with at least two exponent digits otherwise.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  size_t epos = sci.find('e');
  std::string mant = sci.substr(0, epos);
  int exp = std::stoi(sci.substr(epos + 1));
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {
    if (exp >= 0) {
      if (digits.size() <= static_cast<size_t>(exp) + 1) {
        out += digits + std::string(exp + 1 - digits.size(), '0') + ".0";
      } else {
        out += digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
      }
    } else {
      out += "0." + std::string(-exp - 1, '0') + digits;
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char e[16];
    std::snprintf(e, sizeof(e), "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    out += e;
  }
  return out;
}

std::string type_name(const Value& v) {
  switch (v.type) {
    case Value::Type::kUndefined:
      return "Undefined";
    case Value::Type::kNone:
      return "NoneType";
    case Value::Type::kBool:
      return "bool";
    case Value::Type::kInt:
      return "int";
    case Value::Type::kFloat:
      return "float";
    case Value::Type::kStr:
      return "str";
    case Value::Type::kList:
      return v.tuple ? "tuple" : "list";
    case Value::Type::kDict:
      return v.dict->is_namespace ? "Namespace" : "dict";
    case Value::Type::kFunc:
      return "function";
  }
  return "object";
}

bool truthy(const Value& v) {
  switch (v.type) {
    case Value::Type::kUndefined:
    case Value::Type::kNone:
      return false;
    case Value::Type::kBool:
      return v.b;
    case Value::Type::kInt:
      return v.i != 0;
    case Value::Type::kFloat:
      return v.f != 0;
    case Value::Type::kStr:
      return !v.s.empty();
    case Value::Type::kList:
      return v.lazy || !v.list->empty();
    case Value::Type::kDict:
      return v.dict->is_namespace || !v.dict->items.empty();
    case Value::Type::kFunc:
      return true;
  }
  return false;
}

std::string py_repr_str(std::string_view s) {
  bool has_single = s.find('\'') != std::string_view::npos;
  bool has_double = s.find('"') != std::string_view::npos;
  char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t c : to_u32(s)) {
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (!py_isprintable(c) && c != ' ') {
      char buf[16];
      if (c < 0x100)
        std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned>(c));
      else if (c < 0x10000)
        std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
      else
        std::snprintf(buf, sizeof(buf), "\\U%08x", static_cast<unsigned>(c));
      out += buf;
    } else {
      append_u8(out, c);
    }
  }
  out += quote;
  return out;
}

static void repr_into(const Value& v, std::string& out, int depth);

static void str_into(const Value& v, std::string& out, int depth) {
  switch (v.type) {
    case Value::Type::kUndefined:
      return;
    case Value::Type::kStr:
      out += v.s;
      return;
    default:
      repr_into(v, out, depth);
  }
}

static void repr_into(const Value& v, std::string& out, int depth) {
  if (depth > 200) {
    out += "...";
    return;
  }
  switch (v.type) {
    case Value::Type::kUndefined:
      out += "Undefined";
      return;
    case Value::Type::kNone:
      out += "None";
      return;
    case Value::Type::kBool:
      out += v.b ? "True" : "False";
      return;
    case Value::Type::kInt:
      out += std::to_string(v.i);
      return;
    case Value::Type::kFloat:
      out += py_float_repr(v.f);
      return;
    case Value::Type::kStr:
      out += py_repr_str(v.s);
      return;
    case Value::Type::kList: {
      if (v.lazy) {
        out += "<generator object>";
        return;
      }
      out += v.tuple ? '(' : '[';
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += ", ";
        repr_into((*v.list)[k], out, depth + 1);
      }
      if (v.tuple && v.list->size() == 1) out += ',';
      out += v.tuple ? ')' : ']';
      return;
    }
    case Value::Type::kDict: {
      if (v.dict->is_namespace) out += "<Namespace ";
      out += '{';
      bool first = true;
      for (const auto& kv : v.dict->items) {
        if (!first) out += ", ";
        first = false;
        out += py_repr_str(kv.first);
        out += ": ";
        repr_into(kv.second, out, depth + 1);
      }
      out += '}';
      if (v.dict->is_namespace) out += '>';
      return;
    }
    case Value::Type::kFunc:
      out += "<function " + v.func->name + ">";
      return;
  }
}

std::string to_str(const Value& v) {
  if (v.type == Value::Type::kStr) return v.s;
  std::string out;
  str_into(v, out, 0);
  return out;
}

std::string repr(const Value& v) {
  std::string out;
  repr_into(v, out, 0);
  return out;
}

// Appends the two-character JSON escape of `c` when it has one (as Python's json writes them);
// returns false otherwise.
static bool short_escape(char32_t c, std::string& out) {
  switch (c) {
    case '"':
      out += "\\\"";
      return true;
    case '\\':
      out += "\\\\";
      return true;
    case '\n':
      out += "\\n";
      return true;
    case '\r':
      out += "\\r";
      return true;
    case '\t':
      out += "\\t";
      return true;
    case '\b':
      out += "\\b";
      return true;
    case '\f':
      out += "\\f";
      return true;
    default:
      return false;
  }
}

static void json_string(std::string_view s, bool ensure_ascii, std::string& out) {
  out += '"';
  auto esc = [&](unsigned cp) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "\\u%04x", cp);
    out += buf;
  };
  if (!ensure_ascii) {
    for (unsigned char c : s) {
      if (short_escape(c, out)) continue;
      if (c < 0x20)
        esc(c);
      else
        out += static_cast<char>(c);
    }
  } else {
    for (char32_t c : to_u32(s)) {
      if (short_escape(c, out)) continue;
      if (c < 0x20 || (c >= 0x7F && c < 0x10000)) {
        esc(c);
      } else if (c >= 0x10000) {
        const unsigned v = c - 0x10000;
        esc(0xD800 + (v >> 10));
        esc(0xDC00 + (v & 0x3FF));
      } else {
        out += static_cast<char>(c);  // printable ASCII
      }
    }
  }
  out += '"';
}

void to_json(const Value& v, const JsonStyle& style, int level, std::string& out) {
  if (level > 500) throw JsonError("nesting too deep for tojson");
  auto newline = [&](int lvl) {
    out += '\n';
    for (int k = 0; k < lvl; ++k) out += style.indent;
  };
  switch (v.type) {
    case Value::Type::kNone:
      out += "null";
      return;
    case Value::Type::kBool:
      out += v.b ? "true" : "false";
      return;
    case Value::Type::kInt:
      out += std::to_string(v.i);
      return;
    case Value::Type::kFloat:
      if (std::isnan(v.f))
        out += "NaN";
      else if (std::isinf(v.f))
        out += v.f < 0 ? "-Infinity" : "Infinity";
      else
        out += py_float_repr(v.f);
      return;
    case Value::Type::kStr:
      json_string(v.s, style.ensure_ascii, out);
      return;
    case Value::Type::kList: {
      if (v.lazy) throw JsonError("Object of type generator is not JSON serializable");
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += style.item_sep;
        if (style.pretty) newline(level + 1);
        to_json((*v.list)[k], style, level + 1, out);
      }
      if (style.pretty) newline(level);
      out += ']';
      return;
    }
    case Value::Type::kDict: {
      if (v.dict->is_namespace)
        throw JsonError("Object of type Namespace is not JSON serializable");
      if (v.dict->items.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : v.dict->items) items.push_back(&kv);
      if (style.sort_keys)
        std::stable_sort(items.begin(), items.end(),
                         [](auto* a, auto* b) { return a->first < b->first; });
      out += '{';
      bool first = true;
      for (const auto* kv : items) {
        if (!first) out += style.item_sep;
        first = false;
        if (style.pretty) newline(level + 1);
        json_string(kv->first, style.ensure_ascii, out);
        out += style.key_sep;
        to_json(kv->second, style, level + 1, out);
      }
      if (style.pretty) newline(level);
      out += '}';
      return;
    }
    case Value::Type::kUndefined:
    case Value::Type::kFunc:
      throw JsonError("Object of type " + type_name(v) + " is not JSON serializable");
  }
}

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.type != b.type) return false;
  switch (a.type) {
    case Value::Type::kUndefined:
    case Value::Type::kNone:
      return true;
    case Value::Type::kStr:
      return a.s == b.s;
    case Value::Type::kList: {
      if (a.tuple != b.tuple || a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k)
        if (!equals((*a.list)[k], (*b.list)[k])) return false;
      return true;
    }
    case Value::Type::kDict: {
      if (a.dict->is_namespace || b.dict->is_namespace) return a.dict == b.dict;
      if (a.dict->items.size() != b.dict->items.size()) return false;
      for (const auto& kv : a.dict->items) {
        const Value* other = b.dict->find(kv.first);
        if (other == nullptr || !equals(kv.second, *other)) return false;
      }
      return true;
    }
    case Value::Type::kFunc:
      return a.func == b.func;
    default:
      return false;
  }
}

std::optional<int> order(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral())
      return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int() ? 1 : 0;
    double x = a.as_double(), y = b.as_double();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_str() && b.is_str()) {
    int c = a.s.compare(b.s);
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_list() && b.is_list() && a.tuple == b.tuple) {
    size_t n = std::min(a.list->size(), b.list->size());
    for (size_t k = 0; k < n; ++k) {
      if (equals((*a.list)[k], (*b.list)[k])) continue;
      return order((*a.list)[k], (*b.list)[k]);
    }
    return a.list->size() < b.list->size() ? -1 : a.list->size() > b.list->size() ? 1 : 0;
  }
  return std::nullopt;
}

Value from_json(const ordered_json& j, int depth) {
  if (depth > static_cast<int>(kMaxValueNesting))
    throw JsonError("input nests lists and objects too deeply");
  switch (j.type()) {
    case ordered_json::value_t::null:
      return Value::none();
    case ordered_json::value_t::boolean:
      return Value::boolean(j.get<bool>());
    case ordered_json::value_t::number_integer:
      return Value::integer(j.get<int64_t>());
    case ordered_json::value_t::number_unsigned: {
      uint64_t u = j.get<uint64_t>();
      if (u <= static_cast<uint64_t>(INT64_MAX)) return Value::integer(static_cast<int64_t>(u));
      return Value::number(static_cast<double>(u));
    }
    case ordered_json::value_t::number_float:
      return Value::number(j.get<double>());
    case ordered_json::value_t::string:
      return Value::str(j.get<std::string>());
    case ordered_json::value_t::array: {
      List items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e, depth + 1));
      return Value::make_list(std::move(items));
    }
    case ordered_json::value_t::object: {
      auto d = std::make_shared<Dict>();
      d->items.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it)
        d->items.emplace_back(it.key(), from_json(it.value(), depth + 1));
      return Value::make_dict(std::move(d));
    }
    default:
      return Value::none();
  }
}

}  // namespace qrwkv::jinja::detail
