// Methods of str and dict that chat templates call, with Python's semantics, and the str
// operations (strip, case mapping, replace, splitlines, printf-style formatting) that the
// filters mirroring them share. Each method is one entry of its receiver's registry.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>

#include "text/jinja_evaluator.h"
#include "text/jinja_value.h"

namespace qrwkv::jinja::detail {

// ---- str operations (Python semantics) ----

std::string strip_chars(const std::string& s, const Value* chars, bool left, bool right) {
  std::u32string u = to_u32(s);
  std::u32string set;
  bool ws = !given(chars) || chars->is_undefined();
  if (!ws) set = to_u32(chars->s);
  auto strip_it = [&](char32_t c) {
    return ws ? py_isspace(c) : set.find(c) != std::u32string::npos;
  };
  size_t a = 0, b = u.size();
  if (left)
    while (a < b && strip_it(u[a])) ++a;
  if (right)
    while (b > a && strip_it(u[b - 1])) --b;
  return to_u8(u.substr(a, b - a));
}

std::string str_upper(const std::string& s) {
  if (is_ascii(s)) {
    std::string r = s;
    for (char& c : r)
      if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
    return r;
  }
  std::u32string u = to_u32(s);
  for (char32_t& c : u) c = py_upper(c);
  return to_u8(u);
}

std::string str_lower(const std::string& s) {
  if (is_ascii(s)) {
    std::string r = s;
    for (char& c : r)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    return r;
  }
  std::u32string u = to_u32(s);
  for (char32_t& c : u) c = py_lower(c);
  return to_u8(u);
}

std::string str_capitalize(const std::string& s) {
  std::u32string u = to_u32(s);
  for (size_t k = 0; k < u.size(); ++k) u[k] = k == 0 ? py_titlecase(u[k]) : py_lower(u[k]);
  return to_u8(u);
}

std::string str_replace(Evaluator& ev, const std::string& s, const std::string& from,
                        const std::string& to, int64_t count, int line) {
  std::string out;
  int64_t done = 0;
  if (from.empty()) {
    // Python inserts `to` around every character.
    std::u32string u = to_u32(s);
    for (size_t k = 0; k <= u.size(); ++k) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      if (k < u.size()) append_u8(out, u[k]);
      ev.check_size(out.size(), line);
    }
    return out;
  }
  size_t pos = 0;
  while (true) {
    size_t hit = (count >= 0 && done >= count) ? std::string::npos : s.find(from, pos);
    if (hit == std::string::npos) {
      out.append(s, pos, std::string::npos);
      break;
    }
    out.append(s, pos, hit - pos);
    out += to;
    ++done;
    pos = hit + from.size();
    ev.check_size(out.size(), line);
  }
  ev.check_size(out.size(), line);
  return out;
}

std::vector<std::string> py_splitlines(const std::string& s, bool keepends) {
  std::vector<std::string> lines;
  std::u32string u = to_u32(s);
  size_t start = 0, k = 0;
  while (k < u.size()) {
    char32_t c = u[k];
    bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D ||
               c == 0x1E || c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!brk) {
      ++k;
      continue;
    }
    size_t end = k;
    ++k;
    if (c == '\r' && k < u.size() && u[k] == '\n') ++k;
    lines.push_back(to_u8(u.substr(start, (keepends ? k : end) - start)));
    start = k;
  }
  if (start < u.size()) lines.push_back(to_u8(u.substr(start)));
  return lines;
}

std::string percent_format(Evaluator& ev, const std::string& fmt, const Value& args, int line) {
  std::vector<Value> positional;
  const Dict* mapping = nullptr;
  if (args.is_list() && args.tuple)
    positional = *args.list;
  else if (args.is_dict() && !args.dict->is_namespace)
    mapping = args.dict.get();
  else
    positional.push_back(args);
  size_t next = 0;
  bool used_mapping = false;
  std::string out;
  for (size_t k = 0; k < fmt.size(); ++k) {
    if (fmt[k] != '%') {
      out += fmt[k];
      continue;
    }
    if (++k >= fmt.size()) ev.fail(line, "incomplete format");
    const Value* value = nullptr;
    if (fmt[k] == '(') {
      size_t close = fmt.find(')', k);
      if (close == std::string::npos) ev.fail(line, "incomplete format key");
      if (mapping == nullptr) ev.fail(line, "format requires a mapping");
      const Value* v = mapping->find(fmt.substr(k + 1, close - k - 1));
      if (v == nullptr) ev.fail(line, "KeyError: '" + fmt.substr(k + 1, close - k - 1) + "'");
      value = v;
      used_mapping = true;
      k = close + 1;
    }
    std::string flags;
    while (k < fmt.size() && std::strchr("-+ #0", fmt[k]) != nullptr) flags += fmt[k++];
    int width = 0, precision = -1;
    while (k < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[k])) && width < 10000)
      width = width * 10 + (fmt[k++] - '0');
    if (k < fmt.size() && fmt[k] == '.') {
      precision = 0;
      ++k;
      while (k < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[k])) && precision < 1000)
        precision = precision * 10 + (fmt[k++] - '0');
    }
    if (k >= fmt.size()) ev.fail(line, "incomplete format");
    char conv = fmt[k];
    if (conv == '%') {
      out += '%';
      continue;
    }
    if (value == nullptr) {
      if (mapping != nullptr) {
        value = &args;  // a mapping formats as itself
        used_mapping = true;
      } else {
        if (next >= positional.size()) ev.fail(line, "not enough arguments for format string");
        value = &positional[next++];
      }
    }
    std::string piece;
    if (conv == 's' || conv == 'r' || conv == 'a') {
      piece = conv == 's' ? to_str(*value) : repr(*value);
      if (precision >= 0) piece = to_u8(to_u32(piece).substr(0, static_cast<size_t>(precision)));
    } else if (std::strchr("diouxXeEfFgGc", conv) != nullptr) {
      if (!value->is_number())
        ev.fail(line, std::string("%") + conv + " format: a real number is required, not " +
                          type_name(*value));
      std::string spec = "%" + flags;
      if (precision >= 0) spec += "." + std::to_string(precision);
      char buf[512];
      if (conv == 'c') {
        append_u8(piece, static_cast<char32_t>(value->as_int()));
      } else if (std::strchr("diouxX", conv) != nullptr) {
        int64_t n = value->is_integral() ? value->as_int() : static_cast<int64_t>(value->f);
        spec += std::string("ll") + (conv == 'i' || conv == 'u' ? 'd' : conv);
        std::snprintf(buf, sizeof(buf), spec.c_str(), static_cast<long long>(n));
        piece = buf;
      } else {
        spec += conv;
        std::snprintf(buf, sizeof(buf), spec.c_str(), value->as_double());
        piece = buf;
      }
    } else {
      ev.fail(line, std::string("unsupported format character '") + conv + "'");
    }
    size_t len = tok::char_count(piece);
    if (static_cast<size_t>(width) > len) {
      std::string pad(static_cast<size_t>(width) - len,
                      flags.find('0') != std::string::npos &&
                              flags.find('-') == std::string::npos && conv != 's' && conv != 'r'
                          ? '0'
                          : ' ');
      if (flags.find('-') != std::string::npos) {
        piece += pad;
      } else if (pad[0] == '0' && !piece.empty() && (piece[0] == '-' || piece[0] == '+')) {
        piece = piece.substr(0, 1) + pad + piece.substr(1);
      } else {
        piece = pad + piece;
      }
    }
    out += piece;
    ev.check_size(out.size(), line);
  }
  if (mapping == nullptr && next < positional.size())
    ev.fail(line, "not all arguments converted during string formatting");
  (void)used_mapping;
  return out;
}

namespace {

// Python's str.title(): a cased letter after a cased letter is lowered, others are titled.
std::string str_title_py(const std::string& s) {
  std::u32string u = to_u32(s);
  bool prev_cased = false;
  for (char32_t& c : u) {
    bool cased = py_iscased(c);
    if (cased) c = prev_cased ? py_lower(c) : py_titlecase(c);
    prev_cased = cased;
  }
  return to_u8(u);
}

std::vector<std::string> str_split(const std::string& s, const Value* sep, int64_t maxsplit,
                                   Evaluator& ev, int line) {
  std::vector<std::string> parts;
  if (!given(sep)) {
    // Runs of whitespace separate; leading and trailing whitespace is ignored.
    std::u32string u = to_u32(s);
    size_t k = 0;
    while (true) {
      while (k < u.size() && py_isspace(u[k])) ++k;
      if (k >= u.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) >= maxsplit) {
        size_t e = u.size();
        while (e > k && py_isspace(u[e - 1])) --e;
        parts.push_back(to_u8(u.substr(k, e - k)));
        break;
      }
      size_t j = k;
      while (j < u.size() && !py_isspace(u[j])) ++j;
      parts.push_back(to_u8(u.substr(k, j - k)));
      k = j;
    }
    return parts;
  }
  const std::string& d = str_arg(ev, sep, "split", line).s;
  if (d.empty()) ev.fail(line, "empty separator");
  size_t pos = 0;
  while (true) {
    size_t hit = (maxsplit >= 0 && static_cast<int64_t>(parts.size()) >= maxsplit)
                     ? std::string::npos
                     : s.find(d, pos);
    if (hit == std::string::npos) {
      parts.push_back(s.substr(pos));
      break;
    }
    parts.push_back(s.substr(pos, hit - pos));
    pos = hit + d.size();
    ev.check_items(parts.size(), line);
  }
  return parts;
}

Value str_list(const std::vector<std::string>& parts) {
  List items;
  items.reserve(parts.size());
  for (const auto& p : parts) items.push_back(Value::str(p));
  return Value::make_list(std::move(items));
}

int64_t cp_find(const std::string& s, const std::string& sub, bool reverse) {
  size_t hit = reverse ? s.rfind(sub) : s.find(sub);
  if (hit == std::string::npos) return -1;
  return static_cast<int64_t>(tok::char_count(std::string_view(s).substr(0, hit)));
}

// ---- methods of str ----
// Each accepts only the parameters it binds (find and friends take no start and end).

// The prefix may be a tuple of alternatives.
Value affix_test(Evaluator& ev, const std::string& s, CallArgs& args, int line,
                 const std::string& name, bool at_start) {
  auto a = bind(ev, args, {"prefix"}, name, line);
  if (a[0] == nullptr) ev.fail(line, name + "() takes at least 1 argument");
  std::vector<std::string> options;
  if (a[0]->is_list() && a[0]->tuple) {
    for (const auto& v : *a[0]->list) options.push_back(str_arg(ev, &v, name, line).s);
  } else {
    options.push_back(str_arg(ev, a[0], name, line).s);
  }
  for (const auto& o : options) {
    if (o.size() > s.size()) continue;
    if (at_start ? s.compare(0, o.size(), o) == 0
                 : s.compare(s.size() - o.size(), o.size(), o) == 0)
      return Value::boolean(true);
  }
  return Value::boolean(false);
}

Value s_startswith(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  return affix_test(ev, self.s, args, line, "startswith", true);
}
Value s_endswith(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  return affix_test(ev, self.s, args, line, "endswith", false);
}

Value strip_method(Evaluator& ev, const std::string& s, CallArgs& args, int line,
                   const std::string& name, bool left, bool right) {
  auto a = bind(ev, args, {"chars"}, name, line);
  if (given(a[0])) str_arg(ev, a[0], name, line);
  return Value::str(strip_chars(s, a[0], left, right));
}

Value s_strip(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  return strip_method(ev, self.s, args, line, "strip", true, true);
}
Value s_lstrip(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  return strip_method(ev, self.s, args, line, "lstrip", true, false);
}
Value s_rstrip(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  return strip_method(ev, self.s, args, line, "rstrip", false, true);
}

Value split_method(Evaluator& ev, const std::string& s, CallArgs& args, int line,
                   const std::string& name, bool from_right) {
  auto a = bind(ev, args, {"sep", "maxsplit"}, name, line);
  int64_t maxsplit = int_arg(ev, a[1], -1, name, line);
  if (from_right && maxsplit >= 0) {
    // rsplit with a limit splits from the right: reverse, split, reverse back.
    std::u32string u = to_u32(s);
    std::reverse(u.begin(), u.end());
    Value rsep;
    const Value* sep = a[0];
    if (given(sep)) {
      std::u32string su = to_u32(str_arg(ev, sep, name, line).s);
      std::reverse(su.begin(), su.end());
      rsep = Value::str(to_u8(su));
      sep = &rsep;
    }
    std::vector<std::string> parts = str_split(to_u8(u), sep, maxsplit, ev, line);
    std::reverse(parts.begin(), parts.end());
    for (auto& p : parts) {
      std::u32string pu = to_u32(p);
      std::reverse(pu.begin(), pu.end());
      p = to_u8(pu);
    }
    return str_list(parts);
  }
  return str_list(str_split(s, a[0], maxsplit, ev, line));
}

Value s_split(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  return split_method(ev, self.s, args, line, "split", false);
}
Value s_rsplit(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  return split_method(ev, self.s, args, line, "rsplit", true);
}

Value s_splitlines(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  auto a = bind(ev, args, {"keepends"}, "splitlines", line);
  return str_list(py_splitlines(self.s, bool_arg(a[0], false)));
}

Value s_replace(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  auto a = bind(ev, args, {"old", "new", "count"}, "replace", line);
  return Value::str(str_replace(ev, self.s, str_arg(ev, a[0], "replace", line).s,
                                str_arg(ev, a[1], "replace", line).s,
                                int_arg(ev, a[2], -1, "replace", line), line));
}

Value s_upper(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  bind(ev, args, {}, "upper", line);
  return Value::str(str_upper(self.s));
}
Value s_lower(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  bind(ev, args, {}, "lower", line);
  return Value::str(str_lower(self.s));
}
Value s_title(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  bind(ev, args, {}, "title", line);
  return Value::str(str_title_py(self.s));
}
Value s_capitalize(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  bind(ev, args, {}, "capitalize", line);
  return Value::str(str_capitalize(self.s));
}
Value s_swapcase(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  bind(ev, args, {}, "swapcase", line);
  std::u32string u = to_u32(self.s);
  for (char32_t& c : u) c = py_upper(c) != c ? py_upper(c) : py_lower(c);
  return Value::str(to_u8(u));
}

const std::string& sub_arg(Evaluator& ev, CallArgs& args, int line, const std::string& name) {
  auto a = bind(ev, args, {"sub"}, name, line);
  return str_arg(ev, a[0], name, line).s;
}

Value s_find(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  const std::string& sub = sub_arg(ev, args, line, "find");
  return Value::integer(cp_find(self.s, sub, false));
}
Value s_rfind(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  const std::string& sub = sub_arg(ev, args, line, "rfind");
  return Value::integer(cp_find(self.s, sub, true));
}
Value s_index(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  const std::string& sub = sub_arg(ev, args, line, "index");
  int64_t r = cp_find(self.s, sub, false);
  if (r < 0) ev.fail(line, "substring not found");
  return Value::integer(r);
}
Value s_count(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  const std::string& s = self.s;
  const std::string& sub = sub_arg(ev, args, line, "count");
  if (sub.empty()) return Value::integer(static_cast<int64_t>(tok::char_count(s)) + 1);
  int64_t n = 0;
  for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
  return Value::integer(n);
}

Value s_join(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  auto a = bind(ev, args, {"iterable"}, "join", line);
  if (a[0] == nullptr) ev.fail(line, "join() takes exactly one argument");
  std::string out;
  bool first = true;
  for (const auto& v : ev.iterate(*a[0], line)) {
    if (!v.is_str())
      ev.fail(line, "sequence item: expected str instance, " + type_name(v) + " found");
    if (!first) out += self.s;
    first = false;
    out += v.s;
    ev.check_size(out.size(), line);
  }
  return Value::str(std::move(out));
}

// isdigit, isalpha, isalnum, isspace: non-empty and every character of the class.
Value class_test(Evaluator& ev, const std::string& s, CallArgs& args, int line,
                 const std::string& name, bool (*in_class)(char32_t)) {
  bind(ev, args, {}, name, line);
  std::u32string u = to_u32(s);
  if (u.empty()) return Value::boolean(false);
  for (char32_t c : u)
    if (!in_class(c)) return Value::boolean(false);
  return Value::boolean(true);
}

Value s_isdigit(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  return class_test(ev, self.s, args, line, "isdigit", py_isdigit);
}
Value s_isalpha(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  return class_test(ev, self.s, args, line, "isalpha", py_isalpha);
}
Value s_isalnum(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  return class_test(ev, self.s, args, line, "isalnum", py_isalnum);
}
Value s_isspace(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  return class_test(ev, self.s, args, line, "isspace", py_isspace);
}

// isupper, islower: some cased character, and all of them in that case.
Value case_test(Evaluator& ev, const std::string& s, CallArgs& args, int line,
                const std::string& name, bool upper) {
  bind(ev, args, {}, name, line);
  std::u32string u = to_u32(s);
  bool any = false;
  for (char32_t c : u) {
    if (!py_iscased(c)) continue;
    any = true;
    if (upper ? py_upper(c) != c : py_lower(c) != c) return Value::boolean(false);
  }
  return Value::boolean(any);
}

Value s_isupper(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  return case_test(ev, self.s, args, line, "isupper", true);
}
Value s_islower(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  return case_test(ev, self.s, args, line, "islower", false);
}

// str.format is not implemented, but the attribute exists as in Python, so that `is defined`
// and `is callable` answer as they would there; only calling it is an error.
Value s_format(Evaluator& ev, const Value&, CallArgs&, int line) {
  ev.fail(line, "str.format() is not supported");
}

// ---- methods of dict ----

Value d_items(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  bind(ev, args, {}, "items", line);
  List items;
  for (const auto& kv : self.dict->items)
    items.push_back(Value::make_list({Value::str(kv.first), kv.second}, true));
  return Value::make_list(std::move(items));
}

Value d_keys(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  bind(ev, args, {}, "keys", line);
  List items;
  for (const auto& kv : self.dict->items) items.push_back(Value::str(kv.first));
  return Value::make_list(std::move(items));
}

Value d_values(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  bind(ev, args, {}, "values", line);
  List items;
  for (const auto& kv : self.dict->items) items.push_back(kv.second);
  return Value::make_list(std::move(items));
}

Value d_get(Evaluator& ev, const Value& self, CallArgs& args, int line) {
  auto a = bind(ev, args, {"key", "default"}, "get", line);
  if (a[0] == nullptr) ev.fail(line, "get() missing a required argument");
  if (a[0]->is_str())
    if (const Value* v = self.dict->find(a[0]->s)) return *v;
  return a[1] ? *a[1] : Value::none();
}

}  // namespace

const Registry<MethodFn>& str_methods() {
  static const Registry<MethodFn> table = {
      {"startswith", s_startswith},
      {"endswith", s_endswith},
      {"strip", s_strip},
      {"lstrip", s_lstrip},
      {"rstrip", s_rstrip},
      {"split", s_split},
      {"rsplit", s_rsplit},
      {"splitlines", s_splitlines},
      {"replace", s_replace},
      {"upper", s_upper},
      {"lower", s_lower},
      {"title", s_title},
      {"capitalize", s_capitalize},
      {"swapcase", s_swapcase},
      {"find", s_find},
      {"rfind", s_rfind},
      {"index", s_index},
      {"count", s_count},
      {"join", s_join},
      {"isdigit", s_isdigit},
      {"isalpha", s_isalpha},
      {"isalnum", s_isalnum},
      {"isspace", s_isspace},
      {"isupper", s_isupper},
      {"islower", s_islower},
      {"format", s_format},
  };
  return table;
}

const Registry<MethodFn>& dict_methods() {
  static const Registry<MethodFn> table = {
      {"items", d_items},
      {"keys", d_keys},
      {"values", d_values},
      {"get", d_get},
  };
  return table;
}

MethodFn find_method(const Value& obj, const std::string& name) {
  const Registry<MethodFn>* table = nullptr;
  if (obj.is_str())
    table = &str_methods();
  else if (obj.is_dict() && !obj.dict->is_namespace)
    table = &dict_methods();
  if (table == nullptr) return nullptr;
  auto it = table->find(name);
  return it == table->end() ? nullptr : it->second;
}

Value Evaluator::call_method(const Value& obj, const std::string& name, CallArgs& args, int line) {
  MethodFn method = find_method(obj, name);
  if (method == nullptr) fail(line, "'" + type_name(obj) + "' object has no method '" + name + "'");
  // Every str method reads its whole receiver.
  if (obj.is_str()) tick(line, obj.s.size() / 256);
  return method(*this, obj, args, line);
}

Value Evaluator::bound_method(const Value& obj, const std::string& name) {
  return make_func(type_name(obj) + "." + name,
                   [obj, name](Evaluator& ev, CallArgs& args, int line) {
                     return ev.call_method(obj, name, args, line);
                   });
}

}  // namespace qrwkv::jinja::detail
