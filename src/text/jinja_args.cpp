// Binding of call arguments for the filters, tests, methods and globals, with Python's error
// messages for missing, extra and mistyped arguments.
#include <string>
#include <vector>

#include "text/jinja_evaluator.h"
#include "text/jinja_value.h"

namespace qrwkv::jinja::detail {

std::vector<const Value*> bind(Evaluator& ev, CallArgs& args,
                               std::initializer_list<const char*> names, const std::string& fname,
                               int line) {
  std::vector<const Value*> out(names.size(), nullptr);
  if (args.positional.size() > names.size())
    ev.fail(line, fname + "() takes at most " + std::to_string(names.size()) + " argument(s)");
  for (size_t k = 0; k < args.positional.size(); ++k) out[k] = &args.positional[k];
  for (auto& kv : args.keyword) {
    size_t idx = 0;
    bool found = false;
    for (const char* n : names) {
      if (kv.first == n) {
        found = true;
        break;
      }
      ++idx;
    }
    if (!found) ev.fail(line, fname + "() got an unexpected keyword argument '" + kv.first + "'");
    out[idx] = &kv.second;
  }
  return out;
}

const Value& str_arg(Evaluator& ev, const Value* v, const std::string& fname, int line) {
  if (v == nullptr) ev.fail(line, fname + "() missing a required argument");
  if (v->is_undefined()) ev.undefined_error(*v, line);
  if (!v->is_str()) ev.fail(line, fname + "() expects a string, got " + type_name(*v));
  return *v;
}

int64_t int_arg(Evaluator& ev, const Value* v, int64_t dflt, const std::string& fname, int line) {
  if (!given(v)) return dflt;
  if (v->is_undefined()) ev.undefined_error(*v, line);
  if (!v->is_integral()) ev.fail(line, fname + "() expects an integer, got " + type_name(*v));
  return v->as_int();
}

int64_t int_value(Evaluator& ev, const Value& v, int line) {
  if (v.is_undefined()) ev.undefined_error(v, line);
  if (!v.is_integral()) ev.fail(line, "expected an integer, got " + type_name(v));
  return v.as_int();
}

}  // namespace qrwkv::jinja::detail
