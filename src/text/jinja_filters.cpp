// Filters and tests of the Jinja engine, as jinja2 defines them (with the Python semantics of
// their operands); each is one entry of the filters() or tests() registry.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "text/jinja_evaluator.h"
#include "text/jinja_value.h"

namespace qrwkv::jinja::detail {

namespace {

// ---- filters ----

// jinja2's title filter: words start after whitespace, '-', '(', '{', '[' or '<'.
std::string str_title_jinja(const std::string& s) {
  std::u32string u = to_u32(s);
  bool start = true;
  for (char32_t& c : u) {
    bool boundary = py_isspace(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
    if (boundary) {
      start = true;
      continue;
    }
    c = start ? py_upper(c) : py_lower(c);
    start = false;
  }
  return to_u8(u);
}

Value generator(Value list) {
  list.lazy = true;
  return list;
}

// Attribute paths as jinja2's make_attrgetter reads them: "a.b.0".
Value get_path(Evaluator& ev, const Value& item, const Value& attr, int line) {
  if (attr.is_integral()) return ev.getitem(item, attr, line);
  std::string path = to_str(attr);
  Value cur = item;
  size_t pos = 0;
  while (true) {
    size_t dot = path.find('.', pos);
    std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    if (numeric && part.size() < 18)
      cur = ev.getitem(cur, Value::integer(std::stoll(part)), line);
    else
      cur = ev.getitem(cur, Value::str(part), line);
    if (dot == std::string::npos) break;
    pos = dot + 1;
  }
  return cur;
}

Value sort_key(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_str()) return Value::str(str_lower(v.s));
  return v;
}

Value f_tojson(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  auto a = bind(ev, args, {"ensure_ascii", "indent", "separators", "sort_keys"}, "tojson", line);
  JsonStyle style;
  style.ensure_ascii = bool_arg(a[0], false);
  style.sort_keys = bool_arg(a[3], false);
  if (given(a[1])) {
    style.pretty = true;
    style.item_sep = ",";
    if (a[1]->is_integral()) {
      int64_t n = a[1]->as_int();
      if (n > 64) n = 64;
      style.indent = std::string(static_cast<size_t>(std::max<int64_t>(0, n)), ' ');
    } else if (a[1]->is_str()) {
      style.indent = a[1]->s;
    } else {
      ev.fail(line, "tojson indent must be an integer or a string");
    }
  }
  if (given(a[2])) {
    if (!a[2]->is_list() || a[2]->list->size() != 2 || !(*a[2]->list)[0].is_str() ||
        !(*a[2]->list)[1].is_str())
      ev.fail(line, "tojson separators must be a pair of strings");
    style.item_sep = (*a[2]->list)[0].s;
    style.key_sep = (*a[2]->list)[1].s;
  }
  std::string out;
  try {
    to_json(v, style, 0, out);
  } catch (const JsonError& e) {
    ev.fail(line, e.what());
  }
  ev.check_size(out.size(), line);
  return Value::str(std::move(out));
}

Value f_trim(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  auto a = bind(ev, args, {"chars"}, "trim", line);
  return Value::str(strip_chars(to_str(v), a[0], true, true));
}

Value f_length(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  bind(ev, args, {}, "length", line);
  return Value::integer(ev.length(v, line));
}

Value f_join(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  auto a = bind(ev, args, {"d", "attribute"}, "join", line);
  std::string sep = a[0] ? to_str(*a[0]) : "";
  std::string out;
  bool first = true;
  for (const auto& item : ev.iterate(v, line)) {
    if (!first) out += sep;
    first = false;
    out += to_str(a[1] ? get_path(ev, item, *a[1], line) : item);
    ev.check_size(out.size(), line);
  }
  return Value::str(std::move(out));
}

Value f_upper(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  bind(ev, args, {}, "upper", line);
  return Value::str(str_upper(to_str(v)));
}
Value f_lower(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  bind(ev, args, {}, "lower", line);
  return Value::str(str_lower(to_str(v)));
}
Value f_capitalize(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  bind(ev, args, {}, "capitalize", line);
  return Value::str(str_capitalize(to_str(v)));
}
Value f_title(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  bind(ev, args, {}, "title", line);
  return Value::str(str_title_jinja(to_str(v)));
}

Value f_items(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  bind(ev, args, {}, "items", line);
  if (v.is_undefined()) return generator(Value::make_list({}));
  if (!v.is_dict() || v.dict->is_namespace) ev.fail(line, "can only get item pairs from a mapping");
  CallArgs none;
  return generator(ev.call_method(v, "items", none, line));
}

Value f_list(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  bind(ev, args, {}, "list", line);
  return Value::make_list(ev.iterate(v, line));
}

Value f_first(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  bind(ev, args, {}, "first", line);
  auto items = ev.iterate(v, line);
  if (items.empty()) return Value::undefined("No first item, sequence was empty.");
  return items.front();
}

Value f_last(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  bind(ev, args, {}, "last", line);
  auto items = ev.iterate(v, line);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items.back();
}

Value f_default(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  auto a = bind(ev, args, {"default_value", "boolean"}, "default", line);
  if (v.is_undefined() || (bool_arg(a[1], false) && !truthy(v)))
    return a[0] ? *a[0] : Value::str("");
  return v;
}

Value f_replace(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  auto a = bind(ev, args, {"old", "new", "count"}, "replace", line);
  if (a[0] == nullptr || a[1] == nullptr) ev.fail(line, "replace() needs old and new");
  return Value::str(str_replace(ev, to_str(v), to_str(*a[0]), to_str(*a[1]),
                                int_arg(ev, a[2], -1, "replace", line), line));
}

Value f_string(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  bind(ev, args, {}, "string", line);
  return Value::str(to_str(v));
}

std::optional<double> parse_py_float(const std::string& text) {
  std::string t = strip_chars(text, nullptr, true, true);
  std::string clean;
  for (char c : t)
    if (c != '_') clean += c;
  std::string low = str_lower(clean);
  std::string body = low;
  bool neg = false;
  if (!body.empty() && (body[0] == '+' || body[0] == '-')) {
    neg = body[0] == '-';
    body = body.substr(1);
  }
  if (body == "inf" || body == "infinity") return neg ? -INFINITY : INFINITY;
  if (body == "nan") return NAN;
  if (clean.empty()) return std::nullopt;
  char* end = nullptr;
  double d = std::strtod(clean.c_str(), &end);
  if (end != clean.c_str() + clean.size()) return std::nullopt;
  if (low.find('x') != std::string::npos) return std::nullopt;  // strtod accepts hex
  return d;
}

Value f_int(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  auto a = bind(ev, args, {"default", "base"}, "int", line);
  Value dflt = a[0] ? *a[0] : Value::integer(0);
  int64_t base = int_arg(ev, a[1], 10, "int", line);
  if (v.is_integral()) return Value::integer(v.as_int());
  if (v.type == Value::Type::kFloat) {
    if (!std::isfinite(v.f) || std::fabs(v.f) > 9.2e18) return dflt;
    return Value::integer(static_cast<int64_t>(v.f));
  }
  if (v.is_str()) {
    std::string t = strip_chars(v.s, nullptr, true, true);
    std::string clean;
    for (char c : t)
      if (c != '_') clean += c;
    if (!clean.empty() && base >= 2 && base <= 36) {
      errno = 0;
      char* end = nullptr;
      long long r = std::strtoll(clean.c_str(), &end, static_cast<int>(base));
      if (end == clean.c_str() + clean.size() && errno == 0) return Value::integer(r);
    }
    if (auto d = parse_py_float(v.s)) {
      if (std::isfinite(*d) && std::fabs(*d) < 9.2e18)
        return Value::integer(static_cast<int64_t>(*d));
    }
  }
  return dflt;
}

Value f_float(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  auto a = bind(ev, args, {"default"}, "float", line);
  Value dflt = a[0] ? *a[0] : Value::number(0.0);
  if (v.is_number()) return Value::number(v.as_double());
  if (v.is_str())
    if (auto d = parse_py_float(v.s)) return Value::number(*d);
  return dflt;
}

Value f_abs(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  bind(ev, args, {}, "abs", line);
  if (v.type == Value::Type::kFloat) return Value::number(std::fabs(v.f));
  if (v.is_integral()) {
    if (v.as_int() == INT64_MIN) ev.fail(line, "integer overflow");
    return Value::integer(std::llabs(v.as_int()));
  }
  if (v.is_undefined()) ev.undefined_error(v, line);
  ev.fail(line, "bad operand type for abs(): '" + type_name(v) + "'");
}

Value f_round(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  auto a = bind(ev, args, {"precision", "method"}, "round", line);
  int64_t precision = int_arg(ev, a[0], 0, "round", line);
  std::string method = a[1] ? to_str(*a[1]) : "common";
  if (v.is_undefined()) ev.undefined_error(v, line);
  if (!v.is_number()) ev.fail(line, "round() needs a number, got " + type_name(v));
  if (precision > 300) precision = 300;
  if (precision < -300) precision = -300;
  if (v.is_integral() && method == "common") {
    // Python's round() of an int stays an int.
    if (precision >= 0) return Value::integer(v.as_int());
    double scale = std::pow(10.0, static_cast<double>(-precision));
    return Value::integer(static_cast<int64_t>(std::nearbyint(v.as_double() / scale) * scale));
  }
  double x = v.as_double();
  double scale = std::pow(10.0, static_cast<double>(precision));
  double r;
  if (method == "common")
    r = std::nearbyint(x * scale) / scale;  // Python's round() ties to even
  else if (method == "ceil")
    r = std::ceil(x * scale) / scale;
  else if (method == "floor")
    r = std::floor(x * scale) / scale;
  else
    ev.fail(line, "method must be common, ceil or floor");
  return Value::number(r);
}

Value f_safe(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  bind(ev, args, {}, "safe", line);
  return Value::str(to_str(v));  // Markup is a str
}

Value f_escape(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  bind(ev, args, {}, "escape", line);
  std::string out;
  for (char c : to_str(v)) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  ev.check_size(out.size(), line);
  return Value::str(std::move(out));
}

// select/reject/selectattr/rejectattr share jinja2's prepare_select_or_reject.
Value select_impl(Evaluator& ev, const Value& v, CallArgs& args, int line, bool by_attr,
                  bool keep) {
  std::vector<Value> items = ev.iterate(v, line);
  size_t k = 0;
  Value attr;
  if (by_attr) {
    if (args.positional.empty()) ev.fail(line, "missing parameter for attribute name");
    attr = args.positional[0];
    k = 1;
  }
  std::string test;
  CallArgs test_args;
  if (k < args.positional.size()) {
    test = to_str(args.positional[k]);
    test_args.positional.assign(args.positional.begin() + static_cast<long>(k) + 1,
                                args.positional.end());
    test_args.keyword = args.keyword;
  }
  List out;
  for (const auto& item : items) {
    Value x = by_attr ? get_path(ev, item, attr, line) : item;
    bool r;
    if (test.empty()) {
      r = truthy(x);
    } else {
      CallArgs ta = test_args;
      r = ev.apply_test(test, x, ta, line);
    }
    if (r == keep) out.push_back(item);
  }
  return generator(Value::make_list(std::move(out)));
}

Value f_select(Evaluator& ev, const Value& v, CallArgs& a, int line) {
  return select_impl(ev, v, a, line, false, true);
}
Value f_reject(Evaluator& ev, const Value& v, CallArgs& a, int line) {
  return select_impl(ev, v, a, line, false, false);
}
Value f_selectattr(Evaluator& ev, const Value& v, CallArgs& a, int line) {
  return select_impl(ev, v, a, line, true, true);
}
Value f_rejectattr(Evaluator& ev, const Value& v, CallArgs& a, int line) {
  return select_impl(ev, v, a, line, true, false);
}

Value f_map(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  std::vector<Value> items = ev.iterate(v, line);
  List out;
  const Value* attribute = nullptr;
  const Value* dflt = nullptr;
  for (auto& kv : args.keyword) {
    if (kv.first == "attribute") attribute = &kv.second;
    if (kv.first == "default") dflt = &kv.second;
  }
  if (attribute != nullptr) {
    for (const auto& item : items) {
      Value x = get_path(ev, item, *attribute, line);
      if (x.is_undefined() && dflt != nullptr) x = *dflt;
      out.push_back(std::move(x));
    }
    return generator(Value::make_list(std::move(out)));
  }
  if (args.positional.empty()) ev.fail(line, "map requires a filter argument");
  std::string filter = to_str(args.positional[0]);
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const auto& item : items) {
    CallArgs a = rest;
    out.push_back(ev.apply_filter(filter, item, a, line));
  }
  return generator(Value::make_list(std::move(out)));
}

Value f_unique(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  auto a = bind(ev, args, {"case_sensitive", "attribute"}, "unique", line);
  bool cs = bool_arg(a[0], false);
  List out;
  std::vector<Value> seen;
  for (const auto& item : ev.iterate(v, line)) {
    Value key = sort_key(a[1] ? get_path(ev, item, *a[1], line) : item, cs);
    // jinja2 collects seen values in a Python set.
    if ((key.is_list() && !key.tuple) || key.is_dict())
      ev.fail(line, "unhashable type: '" + type_name(key) + "'");
    bool dup = false;
    for (const auto& s : seen)
      if (equals(s, key)) {
        dup = true;
        break;
      }
    ev.tick(line, seen.size() / 64);
    if (dup) continue;
    seen.push_back(key);
    out.push_back(item);
  }
  return generator(Value::make_list(std::move(out)));
}

void sort_values(Evaluator& ev, std::vector<std::pair<Value, Value>>& keyed, bool reverse,
                 int line) {
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    std::optional<int> c = reverse ? order(y.first, x.first) : order(x.first, y.first);
    if (!c)
      ev.fail(line, "'<' not supported between instances of '" + type_name(x.first) + "' and '" +
                        type_name(y.first) + "'");
    return *c < 0;
  });
}

Value f_sort(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  auto a = bind(ev, args, {"reverse", "case_sensitive", "attribute"}, "sort", line);
  bool cs = bool_arg(a[1], false);
  std::vector<std::pair<Value, Value>> keyed;
  for (const auto& item : ev.iterate(v, line))
    keyed.emplace_back(sort_key(a[2] ? get_path(ev, item, *a[2], line) : item, cs), item);
  sort_values(ev, keyed, bool_arg(a[0], false), line);
  List out;
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return Value::make_list(std::move(out));
}

Value f_dictsort(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  auto a = bind(ev, args, {"case_sensitive", "by", "reverse"}, "dictsort", line);
  if (!v.is_dict() || v.dict->is_namespace) ev.fail(line, "dictsort expects a mapping");
  bool cs = bool_arg(a[0], false);
  bool by_value = a[1] != nullptr && to_str(*a[1]) == "value";
  std::vector<std::pair<Value, Value>> keyed;
  for (const auto& kv : v.dict->items) {
    Value pair = Value::make_list({Value::str(kv.first), kv.second}, true);
    keyed.emplace_back(sort_key(by_value ? kv.second : Value::str(kv.first), cs), pair);
  }
  sort_values(ev, keyed, bool_arg(a[2], false), line);
  List out;
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return Value::make_list(std::move(out));
}

Value f_reverse(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  bind(ev, args, {}, "reverse", line);
  if (v.is_str()) {
    std::u32string u = to_u32(v.s);
    std::reverse(u.begin(), u.end());
    return Value::str(to_u8(u));
  }
  std::vector<Value> items = ev.iterate(v, line);
  std::reverse(items.begin(), items.end());
  return generator(Value::make_list(std::move(items)));
}

Value f_batch(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  auto a = bind(ev, args, {"linecount", "fill_with"}, "batch", line);
  int64_t n = int_arg(ev, a[0], 1, "batch", line);
  if (n <= 0) ev.fail(line, "batch size must be positive");
  List out, cur;
  for (const auto& item : ev.iterate(v, line)) {
    cur.push_back(item);
    if (static_cast<int64_t>(cur.size()) == n) {
      out.push_back(Value::make_list(std::move(cur)));
      cur.clear();
    }
  }
  if (!cur.empty()) {
    if (a[1] != nullptr)
      while (static_cast<int64_t>(cur.size()) < n) cur.push_back(*a[1]);
    out.push_back(Value::make_list(std::move(cur)));
  }
  return generator(Value::make_list(std::move(out)));
}

Value f_indent(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  auto a = bind(ev, args, {"width", "first", "blank"}, "indent", line);
  std::string indention;
  if (a[0] != nullptr && a[0]->is_str()) {
    indention = a[0]->s;
  } else {
    int64_t w = int_arg(ev, a[0], 4, "indent", line);
    if (w > 4096) ev.fail(line, "indent width is too large");
    indention = std::string(static_cast<size_t>(std::max<int64_t>(0, w)), ' ');
  }
  bool first = bool_arg(a[1], false), blank = bool_arg(a[2], false);
  if (v.is_undefined()) ev.undefined_error(v, line);
  if (!v.is_str())
    ev.fail(line, "unsupported operand type(s) for +=: '" + type_name(v) + "' and 'str'");
  // jinja2 appends a newline before splitlines() so a trailing newline survives as a line.
  std::vector<std::string> lines = py_splitlines(to_str(v) + "\n", false);
  std::string rv;
  if (blank) {
    for (size_t k = 0; k < lines.size(); ++k) {
      if (k) rv += "\n" + indention;
      rv += lines[k];
      ev.check_size(rv.size(), line);
    }
  } else if (!lines.empty()) {
    rv = lines[0];
    for (size_t k = 1; k < lines.size(); ++k) {
      rv += "\n";
      if (!lines[k].empty()) rv += indention;
      rv += lines[k];
      ev.check_size(rv.size(), line);
    }
  }
  if (first) rv = indention + rv;
  return Value::str(std::move(rv));
}

Value f_wordcount(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  bind(ev, args, {}, "wordcount", line);
  int64_t n = 0;
  bool in_word = false;
  for (char32_t c : to_u32(to_str(v))) {
    bool w = py_isalnum(c) || c == '_';
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value::integer(n);
}

Value f_center(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  auto a = bind(ev, args, {"width"}, "center", line);
  int64_t width = int_arg(ev, a[0], 80, "center", line);
  std::string s = to_str(v);
  int64_t len = static_cast<int64_t>(tok::char_count(s));
  if (width <= len) return Value::str(s);
  ev.check_size(static_cast<size_t>(width), line);
  int64_t marg = width - len;
  int64_t left = marg / 2 + (marg & width & 1);
  return Value::str(std::string(static_cast<size_t>(left), ' ') + s +
                    std::string(static_cast<size_t>(marg - left), ' '));
}

Value minmax(Evaluator& ev, const Value& v, CallArgs& args, int line, bool want_max) {
  auto a = bind(ev, args, {"case_sensitive", "attribute"}, want_max ? "max" : "min", line);
  bool cs = bool_arg(a[0], false);
  std::vector<Value> items = ev.iterate(v, line);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  size_t best = 0;
  Value best_key = sort_key(a[1] ? get_path(ev, items[0], *a[1], line) : items[0], cs);
  for (size_t k = 1; k < items.size(); ++k) {
    Value key = sort_key(a[1] ? get_path(ev, items[k], *a[1], line) : items[k], cs);
    std::optional<int> c = order(key, best_key);
    if (!c) ev.fail(line, "values cannot be compared");
    if (want_max ? *c > 0 : *c < 0) {
      best = k;
      best_key = key;
    }
  }
  return items[best];
}

Value f_min(Evaluator& ev, const Value& v, CallArgs& a, int line) {
  return minmax(ev, v, a, line, false);
}
Value f_max(Evaluator& ev, const Value& v, CallArgs& a, int line) {
  return minmax(ev, v, a, line, true);
}

Value f_sum(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  auto a = bind(ev, args, {"attribute", "start"}, "sum", line);
  Value total = a[1] ? *a[1] : Value::integer(0);
  for (const auto& item : ev.iterate(v, line))
    total = ev.arith(BinOp::kAdd, total, a[0] ? get_path(ev, item, *a[0], line) : item, line);
  return total;
}

Value f_attr(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  auto a = bind(ev, args, {"name"}, "attr", line);
  // Only Python attributes, never items: a dict's keys are not its attributes.
  const std::string& name = str_arg(ev, a[0], "attr", line).s;
  if (v.is_undefined()) ev.undefined_error(v, line);
  if (find_method(v, name) != nullptr) return ev.bound_method(v, name);
  if (v.is_dict() && v.dict->is_namespace)
    if (const Value* x = v.dict->find(name)) return *x;
  return Value::undefined("'" + Evaluator::describe_object(v) + "' has no attribute '" + name +
                          "'");
}

Value f_format(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  if (!args.keyword.empty() && !args.positional.empty())
    ev.fail(line, "can't handle positional and keyword arguments at the same time");
  Value a;
  if (!args.keyword.empty()) {
    auto d = std::make_shared<Dict>();
    for (const auto& kv : args.keyword) d->set(kv.first, kv.second);
    a = Value::make_dict(std::move(d));
  } else {
    a = Value::make_list(args.positional, true);
  }
  return Value::str(percent_format(ev, to_str(v), a, line));
}

Value f_count_items(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  return f_length(ev, v, args, line);
}

// ---- tests ----

bool t_defined(Evaluator&, const Value& v, CallArgs&, int) { return !v.is_undefined(); }
bool t_undefined(Evaluator&, const Value& v, CallArgs&, int) { return v.is_undefined(); }
bool t_none(Evaluator&, const Value& v, CallArgs&, int) { return v.is_none(); }
bool t_string(Evaluator&, const Value& v, CallArgs&, int) { return v.is_str(); }
bool t_mapping(Evaluator&, const Value& v, CallArgs&, int) {
  return v.is_dict() && !v.dict->is_namespace;
}
bool t_sequence(Evaluator&, const Value& v, CallArgs&, int) {
  return v.is_str() || v.is_list() || (v.is_dict() && !v.dict->is_namespace);
}
bool t_iterable(Evaluator&, const Value& v, CallArgs&, int) {
  return v.is_str() || v.is_list() || (v.is_dict() && !v.dict->is_namespace) || v.is_undefined();
}
bool t_number(Evaluator&, const Value& v, CallArgs&, int) { return v.is_number(); }
bool t_integer(Evaluator&, const Value& v, CallArgs&, int) { return v.type == Value::Type::kInt; }
bool t_float(Evaluator&, const Value& v, CallArgs&, int) { return v.type == Value::Type::kFloat; }
bool t_boolean(Evaluator&, const Value& v, CallArgs&, int) { return v.type == Value::Type::kBool; }
bool t_true(Evaluator&, const Value& v, CallArgs&, int) {
  return v.type == Value::Type::kBool && v.b;
}
bool t_false(Evaluator&, const Value& v, CallArgs&, int) {
  return v.type == Value::Type::kBool && !v.b;
}
bool t_callable(Evaluator&, const Value& v, CallArgs&, int) { return v.is_func(); }

bool t_even(Evaluator& ev, const Value& v, CallArgs&, int line) {
  return int_value(ev, v, line) % 2 == 0;
}
bool t_odd(Evaluator& ev, const Value& v, CallArgs&, int line) {
  return int_value(ev, v, line) % 2 != 0;
}
bool t_divisibleby(Evaluator& ev, const Value& v, CallArgs& args, int line) {
  auto a = bind(ev, args, {"num"}, "divisibleby", line);
  if (a[0] == nullptr) ev.fail(line, "divisibleby needs an argument");
  int64_t d = int_value(ev, *a[0], line);
  if (d == 0) ev.fail(line, "integer division or modulo by zero");
  return int_value(ev, v, line) % d == 0;
}

const Value& other_arg(Evaluator& ev, CallArgs& args, int line) {
  if (args.positional.size() != 1 || !args.keyword.empty())
    ev.fail(line, "test expects exactly one argument");
  return args.positional[0];
}

bool t_eq(Evaluator& ev, const Value& v, CallArgs& a, int line) {
  return equals(v, other_arg(ev, a, line));
}
bool t_ne(Evaluator& ev, const Value& v, CallArgs& a, int line) {
  return !equals(v, other_arg(ev, a, line));
}
bool t_lt(Evaluator& ev, const Value& v, CallArgs& a, int line) {
  return ev.compare("<", v, other_arg(ev, a, line), line);
}
bool t_le(Evaluator& ev, const Value& v, CallArgs& a, int line) {
  return ev.compare("<=", v, other_arg(ev, a, line), line);
}
bool t_gt(Evaluator& ev, const Value& v, CallArgs& a, int line) {
  return ev.compare(">", v, other_arg(ev, a, line), line);
}
bool t_ge(Evaluator& ev, const Value& v, CallArgs& a, int line) {
  return ev.compare(">=", v, other_arg(ev, a, line), line);
}
bool t_in(Evaluator& ev, const Value& v, CallArgs& a, int line) {
  return ev.contains(other_arg(ev, a, line), v, line);
}
bool t_sameas(Evaluator& ev, const Value& v, CallArgs& a, int line) {
  const Value& o = other_arg(ev, a, line);
  if (v.type != o.type) return false;
  switch (v.type) {
    case Value::Type::kNone:
    case Value::Type::kUndefined:
      return true;
    case Value::Type::kBool:
      return v.b == o.b;
    case Value::Type::kInt:
      return v.i == o.i && v.i >= -5 && v.i <= 256;  // CPython small ints
    case Value::Type::kList:
      return v.list == o.list;
    case Value::Type::kDict:
      return v.dict == o.dict;
    case Value::Type::kFunc:
      return v.func == o.func;
    default:
      return false;
  }
}
// str(value).islower() / .isupper(): some cased character, and all of them in that case.
bool case_test(const Value& v, bool upper) {
  bool any = false;
  for (char32_t c : to_u32(to_str(v))) {
    if (!py_iscased(c)) continue;
    any = true;
    if (upper ? py_upper(c) != c : py_lower(c) != c) return false;
  }
  return any;
}
bool t_lower(Evaluator&, const Value& v, CallArgs&, int) { return case_test(v, false); }
bool t_upper(Evaluator&, const Value& v, CallArgs&, int) { return case_test(v, true); }
bool t_escaped(Evaluator&, const Value&, CallArgs&, int) { return false; }

}  // namespace

const Registry<FilterFn>& filters() {
  static const Registry<FilterFn> table = {
      {"tojson", f_tojson},
      {"trim", f_trim},
      {"length", f_length},
      {"count", f_count_items},
      {"join", f_join},
      {"upper", f_upper},
      {"lower", f_lower},
      {"capitalize", f_capitalize},
      {"title", f_title},
      {"items", f_items},
      {"list", f_list},
      {"first", f_first},
      {"last", f_last},
      {"default", f_default},
      {"d", f_default},
      {"replace", f_replace},
      {"string", f_string},
      {"int", f_int},
      {"float", f_float},
      {"abs", f_abs},
      {"round", f_round},
      {"safe", f_safe},
      {"escape", f_escape},
      {"e", f_escape},
      {"forceescape", f_escape},
      {"select", f_select},
      {"reject", f_reject},
      {"selectattr", f_selectattr},
      {"rejectattr", f_rejectattr},
      {"map", f_map},
      {"unique", f_unique},
      {"sort", f_sort},
      {"dictsort", f_dictsort},
      {"reverse", f_reverse},
      {"batch", f_batch},
      {"indent", f_indent},
      {"wordcount", f_wordcount},
      {"center", f_center},
      {"min", f_min},
      {"max", f_max},
      {"sum", f_sum},
      {"attr", f_attr},
      {"format", f_format},
  };
  return table;
}

const Registry<TestFn>& tests() {
  static const Registry<TestFn> table = {
      {"defined", t_defined},
      {"undefined", t_undefined},
      {"none", t_none},
      {"string", t_string},
      {"mapping", t_mapping},
      {"sequence", t_sequence},
      {"iterable", t_iterable},
      {"number", t_number},
      {"integer", t_integer},
      {"float", t_float},
      {"boolean", t_boolean},
      {"true", t_true},
      {"false", t_false},
      {"callable", t_callable},
      {"even", t_even},
      {"odd", t_odd},
      {"divisibleby", t_divisibleby},
      {"eq", t_eq},
      {"equalto", t_eq},
      {"==", t_eq},
      {"ne", t_ne},
      {"!=", t_ne},
      {"lt", t_lt},
      {"lessthan", t_lt},
      {"<", t_lt},
      {"le", t_le},
      {"<=", t_le},
      {"gt", t_gt},
      {"greaterthan", t_gt},
      {">", t_gt},
      {"ge", t_ge},
      {">=", t_ge},
      {"in", t_in},
      {"sameas", t_sameas},
      {"lower", t_lower},
      {"upper", t_upper},
      {"escaped", t_escaped},
  };
  return table;
}

bool is_known_filter(const std::string& name) { return filters().count(name) != 0; }
bool is_known_test(const std::string& name) { return tests().count(name) != 0; }

}  // namespace qrwkv::jinja::detail
