// Global functions of the Jinja engine: jinja2's that templates use (range, dict, namespace,
// joiner) and the two transformers adds (raise_exception, strftime_now). Each is one entry of
// globals().
#include <cstdint>
#include <ctime>

#include "text/jinja_evaluator.h"
#include "text/jinja_value.h"

namespace qrwkv::jinja::detail {

namespace {

Value g_range(Evaluator& ev, CallArgs& args, int line) {
  if (!args.keyword.empty()) ev.fail(line, "range() takes no keyword arguments");
  std::vector<int64_t> n;
  for (const auto& v : args.positional) n.push_back(int_value(ev, v, line));
  int64_t start = 0, stop = 0, step = 1;
  if (n.size() == 1) {
    stop = n[0];
  } else if (n.size() == 2 || n.size() == 3) {
    start = n[0];
    stop = n[1];
    if (n.size() == 3) step = n[2];
  } else {
    ev.fail(line, "range() expects 1 to 3 arguments");
  }
  if (step == 0) ev.fail(line, "range() arg 3 must not be zero");
  // Count first, in floating point, so huge ranges fail before allocating.
  long double count = step > 0 ? (static_cast<long double>(stop) - start) / step
                               : (static_cast<long double>(start) - stop) / -step;
  if (count > static_cast<long double>(ev.limits().max_items)) ev.check_items(SIZE_MAX, line);
  List items;
  if (step > 0)
    for (int64_t k = start; k < stop; k += step) {
      items.push_back(Value::integer(k));
      if (k > INT64_MAX - step) break;
    }
  else
    for (int64_t k = start; k > stop; k += step) {
      items.push_back(Value::integer(k));
      if (k < INT64_MIN - step) break;
    }
  ev.check_items(items.size(), line);
  return Value::make_list(std::move(items));
}

Value g_namespace(Evaluator& ev, CallArgs& args, int line) {
  auto d = std::make_shared<Dict>();
  d->is_namespace = true;
  for (const auto& v : args.positional) {
    if (!v.is_dict()) ev.fail(line, "namespace() positional arguments must be mappings");
    for (const auto& kv : v.dict->items) d->set(kv.first, kv.second);
  }
  for (const auto& kv : args.keyword) d->set(kv.first, kv.second);
  ev.track_namespace(d);
  Value v = Value::make_dict(std::move(d));
  ev.check_nest(v, line);
  return v;
}

Value g_dict(Evaluator& ev, CallArgs& args, int line) {
  auto d = std::make_shared<Dict>();
  for (const auto& v : args.positional) {
    if (!v.is_dict()) ev.fail(line, "dict() positional argument must be a mapping");
    for (const auto& kv : v.dict->items) d->set(kv.first, kv.second);
  }
  for (const auto& kv : args.keyword) d->set(kv.first, kv.second);
  Value v = Value::make_dict(std::move(d));
  ev.check_nest(v, line);
  return v;
}

Value g_raise(Evaluator& ev, CallArgs& args, int line) {
  std::string msg = args.positional.empty() ? "" : to_str(args.positional[0]);
  ev.fail(line, msg);
}

Value g_strftime_now(Evaluator& ev, CallArgs& args, int line) {
  auto a = bind(ev, args, {"format"}, "strftime_now", line);
  const std::string& fmt = str_arg(ev, a[0], "strftime_now", line).s;
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  std::string out(256 + fmt.size() * 8, '\0');
  size_t n = std::strftime(out.data(), out.size(), fmt.c_str(), &tm);
  out.resize(n);
  return Value::str(std::move(out));
}

// joiner(sep) returns a function that gives "" on its first call and `sep` on every later one.
Value g_joiner(Evaluator& ev, CallArgs& args, int line) {
  auto a = bind(ev, args, {"sep"}, "joiner", line);
  std::string sep = a[0] ? to_str(*a[0]) : ", ";
  auto used = std::make_shared<bool>(false);
  return make_func("joiner", [sep, used](Evaluator&, CallArgs&, int) {
    if (!*used) {
      *used = true;
      return Value::str("");
    }
    return Value::str(sep);
  });
}

}  // namespace

const Registry<GlobalFn>& globals() {
  static const Registry<GlobalFn> table = {
      {"range", g_range},           {"namespace", g_namespace},       {"dict", g_dict},
      {"raise_exception", g_raise}, {"strftime_now", g_strftime_now}, {"joiner", g_joiner},
  };
  return table;
}

}  // namespace qrwkv::jinja::detail
