// The evaluator of the Jinja engine and the registries it dispatches through, shared by its
// parts: jinja_eval.cpp (statements, expressions, scopes, macros, calls), jinja_filters.cpp
// (filters and tests), jinja_methods.cpp (methods of str and dict, and the str operations the
// filters share), jinja_globals.cpp (global functions) and jinja_args.cpp (argument binding).
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "text/jinja.h"
#include "text/jinja_internal.h"
#include "text/jinja_value.h"

namespace qrwkv::jinja::detail {

// Variables of a template, a macro call or a loop iteration; lookups fall back to the parent.
struct Scope {
  Scope* parent = nullptr;
  std::vector<std::pair<std::string, Value>> vars;

  Value* find(const std::string& name) {
    for (Scope* s = this; s != nullptr; s = s->parent)
      for (auto& kv : s->vars)
        if (kv.first == name) return &kv.second;
    return nullptr;
  }
  void set(const std::string& name, Value v) {
    for (auto& kv : vars)
      if (kv.first == name) {
        kv.second = std::move(v);
        return;
      }
    vars.emplace_back(name, std::move(v));
  }
};

enum class Flow { kNormal, kBreak, kContinue };

// Renders one Program once. Filters, tests, methods and globals receive it to report errors
// with the template's name, to account for their work and to use Python's operations.
class Evaluator {
 public:
  explicit Evaluator(const Program& program) : program_(program), limits_(program.limits) {}
  Evaluator(const Evaluator&) = delete;
  Evaluator& operator=(const Evaluator&) = delete;
  ~Evaluator();

  std::string render(const ordered_json& vars);

  // ---- errors and limits ----

  const Limits& limits() const { return limits_; }

  [[noreturn]] void fail(int line, const std::string& what) const;
  [[noreturn]] void undefined_error(const Value& v, int line) const;

  // Work accounting: every statement, loop iteration and call is a step, and building large
  // strings or lists costs in proportion to their size, so any template finishes or fails fast.
  void tick(int line, size_t n = 1) {
    steps_ += n;
    if (steps_ > limits_.max_steps) too_many_steps(line);
  }
  void check_size(size_t bytes, int line) {
    if (bytes > limits_.max_output_bytes) too_large(line);
    tick(line, bytes / 256);
  }
  void check_items(size_t n, int line) {
    if (n > limits_.max_items) too_many_items(line);
    tick(line, n / 16);
  }
  void check_nest(const Value& v, int line) {
    if (v.nest > kMaxValueNesting) too_deep(line);
  }

  void track_namespace(const std::shared_ptr<Dict>& d) { namespaces_.push_back(d); }

  // ---- Python operations on values ----

  std::vector<Value> iterate(const Value& v, int line);
  int64_t length(const Value& v, int line);
  // obj.name as jinja2 resolves it: the Python attribute first, then the item.
  Value getattr(const Value& obj, const std::string& name, int line);
  // obj[key]: the item first, then (for string keys) the attribute.
  Value getitem(const Value& obj, const Value& key, int line);
  Value slice(const Value& obj, const Value& start_v, const Value& stop_v, const Value& step_v,
              int line);
  bool contains(const Value& container, const Value& item, int line);
  Value arith(BinOp op, const Value& a, const Value& b, int line);
  bool compare(const std::string& op, const Value& a, const Value& b, int line);
  Value call(const Value& callee, CallArgs& args, int line);

  Value apply_filter(const std::string& name, const Value& operand, CallArgs& args, int line);
  bool apply_test(const std::string& name, const Value& operand, CallArgs& args, int line);
  // Calls the method `name` of `obj`, which must have one (see find_method).
  Value call_method(const Value& obj, const std::string& name, CallArgs& args, int line);
  // obj.name as a function value, for a method that is looked up but not called at once.
  Value bound_method(const Value& obj, const std::string& name);

  // How jinja2's messages name an object: "None" or "<type> object".
  static std::string describe_object(const Value& obj);

 private:
  [[noreturn]] void too_many_steps(int line) const;
  [[noreturn]] void too_large(int line) const;
  [[noreturn]] void too_many_items(int line) const;
  [[noreturn]] void too_deep(int line) const;

  void install_globals(Scope& g);

  CallArgs eval_args(const Expr& e, size_t first, Scope& scope);
  Value eval_filter_chain(const Expr& e, const Value& operand, Scope& scope);
  Value eval(const Expr& e, Scope& scope);

  void write(const std::string& s, int line);
  std::string capture(const Body& body, Scope& scope);
  void assign(const std::vector<std::string>& targets, const Value& v, Scope& scope, int line);
  Flow exec_body(const Body& body, Scope& scope);
  Flow exec(const Stmt& s, Scope& scope);
  Flow exec_for(const Stmt& s, Scope& scope);
  Value make_macro(const Stmt& s);
  Value invoke(const Stmt& s, CallArgs& args, int line, Scope* parent);

  const Program& program_;
  const Limits& limits_;
  std::vector<std::weak_ptr<Dict>> namespaces_;
  Scope* root_ = nullptr;
  std::string* out_ = nullptr;
  size_t steps_ = 0;
  int call_depth_ = 0;
  int loop_depth_ = 0;
};

// A function value named `name` (how it prints) that runs `fn`.
Value make_func(const std::string& name, std::function<Value(Evaluator&, CallArgs&, int line)> fn);

// ---- registries ----
// Each filter, test, method and global exists only as its entry in one of these tables; the
// parser, attribute lookup and calls all consult the table, so they cannot disagree.

template <typename Fn>
using Registry = std::unordered_map<std::string, Fn>;

using FilterFn = Value (*)(Evaluator&, const Value& operand, CallArgs&, int line);
using TestFn = bool (*)(Evaluator&, const Value& operand, CallArgs&, int line);
using MethodFn = Value (*)(Evaluator&, const Value& self, CallArgs&, int line);
using GlobalFn = Value (*)(Evaluator&, CallArgs&, int line);

const Registry<FilterFn>& filters();       // jinja_filters.cpp
const Registry<TestFn>& tests();           // jinja_filters.cpp
const Registry<MethodFn>& str_methods();   // jinja_methods.cpp
const Registry<MethodFn>& dict_methods();  // jinja_methods.cpp
const Registry<GlobalFn>& globals();       // jinja_globals.cpp

// The method `name` of `obj`, or null when it has none. Only str and plain dicts have methods:
// a namespace's attributes are its items.
MethodFn find_method(const Value& obj, const std::string& name);

// ---- argument binding (jinja_args.cpp) ----

// Binds positional and keyword arguments to parameter names; missing ones are null.
std::vector<const Value*> bind(Evaluator& ev, CallArgs& args,
                               std::initializer_list<const char*> names, const std::string& fname,
                               int line);
const Value& str_arg(Evaluator& ev, const Value* v, const std::string& fname, int line);
// Whether an optional argument was passed as something other than None.
inline bool given(const Value* v) { return v != nullptr && !v->is_none(); }
int64_t int_arg(Evaluator& ev, const Value* v, int64_t dflt, const std::string& fname, int line);
inline bool bool_arg(const Value* v, bool dflt) { return v == nullptr ? dflt : truthy(*v); }
// A value that must be an integer (bools count, as in Python).
int64_t int_value(Evaluator& ev, const Value& v, int line);

// ---- str operations with Python semantics (jinja_methods.cpp) ----
// The str methods and the filters that mirror them (trim, upper, replace, indent, format, ...)
// share these.

// str.strip(chars) on the chosen sides; `chars` null, None or undefined strips whitespace.
std::string strip_chars(const std::string& s, const Value* chars, bool left, bool right);
std::string str_upper(const std::string& s);
std::string str_lower(const std::string& s);
std::string str_capitalize(const std::string& s);
std::string str_replace(Evaluator& ev, const std::string& s, const std::string& from,
                        const std::string& to, int64_t count, int line);
std::vector<std::string> py_splitlines(const std::string& s, bool keepends);
// Python's printf-style `fmt % args` for the common conversions (s r d i f F e E g G x X o c).
std::string percent_format(Evaluator& ev, const std::string& fmt, const Value& args, int line);

}  // namespace qrwkv::jinja::detail
