// Evaluator of the Jinja engine: statements, expressions, filters, tests, globals and the
// methods of str and dict that chat templates call, with jinja2's Undefined behaviour.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <unordered_map>

#include "io/error.h"
#include "text/jinja.h"
#include "text/jinja_internal.h"
#include "text/jinja_value.h"

namespace qrwkv::jinja::detail {

namespace {

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

using FilterFn = Value (*)(Evaluator&, const Value&, CallArgs&, int);
using TestFn = bool (*)(Evaluator&, const Value&, CallArgs&, int);

const std::unordered_map<std::string, FilterFn>& filters();
const std::unordered_map<std::string, TestFn>& tests();

}  // namespace

class Evaluator {
 public:
  explicit Evaluator(const Program& program) : program_(program), limits_(program.limits) {}
  Evaluator(const Evaluator&) = delete;
  Evaluator& operator=(const Evaluator&) = delete;
  // Namespaces are the only mutable values, so only they can form reference cycles (a
  // namespace stored inside itself); emptying them all at the end frees any such cycle.
  ~Evaluator() {
    for (auto& weak : namespaces_)
      if (auto d = weak.lock()) d->items.clear();
  }

  void track_namespace(const std::shared_ptr<Dict>& d) { namespaces_.push_back(d); }

  void check_nest(const Value& v, int line) {
    if (v.nest > kMaxValueNesting)
      fail(line, "lists and dicts nest too deeply (more than " + std::to_string(kMaxValueNesting) +
                     " levels)");
  }

  [[noreturn]] void fail(int line, const std::string& what) const {
    throw Error(program_.name + " line " + std::to_string(line) + ": " + what);
  }

  // Work accounting: every statement, loop iteration and call is a step, and building large
  // strings or lists costs in proportion to their size, so any template finishes or fails fast.
  void tick(int line, size_t n = 1) {
    steps_ += n;
    if (steps_ > limits_.max_steps)
      fail(line, "template takes too long to render (more than " +
                     std::to_string(limits_.max_steps) + " steps)");
  }
  void check_size(size_t bytes, int line) {
    if (bytes > limits_.max_output_bytes)
      fail(line, "output is too large (more than " + std::to_string(limits_.max_output_bytes) +
                     " bytes)");
    tick(line, bytes / 256);
  }
  void check_items(size_t n, int line) {
    if (n > limits_.max_items)
      fail(line, "list is too long (more than " + std::to_string(limits_.max_items) + " items)");
    tick(line, n / 16);
  }

  std::string render(const ordered_json& vars) {
    Scope globals;
    install_globals(globals);
    if (vars.is_object()) {
      try {
        for (auto it = vars.begin(); it != vars.end(); ++it)
          globals.set(it.key(), from_json(it.value()));
      } catch (const JsonError& e) {
        throw Error(program_.name + ": " + e.what());
      }
    }
    root_ = &globals;
    std::string out;
    out_ = &out;
    Flow f = exec_body(program_.body, globals);
    (void)f;
    return out;
  }

  // ---- values ----

  [[noreturn]] void undefined_error(const Value& v, int line) const {
    fail(line, v.s.empty() ? std::string("value is undefined") : v.s);
  }

  std::vector<Value> iterate(const Value& v, int line) {
    // Copying a sequence costs in proportion to its size.
    if (v.is_list()) tick(line, v.list->size() / 16);
    if (v.is_str()) tick(line, v.s.size() / 16);
    switch (v.type) {
      case Value::Type::kUndefined:
        return {};
      case Value::Type::kList:
        return *v.list;
      case Value::Type::kDict: {
        if (v.dict->is_namespace) fail(line, "'Namespace' object is not iterable");
        std::vector<Value> keys;
        for (const auto& kv : v.dict->items) keys.push_back(Value::str(kv.first));
        return keys;
      }
      case Value::Type::kStr: {
        std::vector<Value> chars;
        for (char32_t c : to_u32(v.s)) {
          std::string s;
          append_u8(s, c);
          chars.push_back(Value::str(std::move(s)));
        }
        return chars;
      }
      default:
        fail(line, "'" + type_name(v) + "' object is not iterable");
    }
  }

  int64_t length(const Value& v, int line) {
    switch (v.type) {
      case Value::Type::kUndefined:
        return 0;
      case Value::Type::kStr:
        return static_cast<int64_t>(u8_length(v.s));
      case Value::Type::kList:
        if (v.lazy) fail(line, "object of type 'generator' has no len()");
        return static_cast<int64_t>(v.list->size());
      case Value::Type::kDict:
        if (!v.dict->is_namespace) return static_cast<int64_t>(v.dict->items.size());
        [[fallthrough]];
      default:
        fail(line, "object of type '" + type_name(v) + "' has no len()");
    }
  }

  static bool is_dict_method(const std::string& name) {
    return name == "items" || name == "keys" || name == "values" || name == "get";
  }
  static bool is_str_method(const std::string& name) {
    static const char* const kNames[] = {
        "startswith", "endswith", "strip",   "lstrip",   "rstrip",  "split",      "rsplit",
        "splitlines", "replace",  "upper",   "lower",    "title",   "capitalize", "find",
        "rfind",      "index",    "count",   "join",     "isdigit", "isalpha",    "isalnum",
        "isspace",    "isupper",  "islower", "swapcase", "format"};
    for (const char* n : kNames)
      if (name == n) return true;
    return false;
  }

  Value bound_method(const Value& obj, const std::string& name) {
    Value f;
    f.type = Value::Type::kFunc;
    f.func = std::make_shared<Callable>();
    f.func->name = type_name(obj) + "." + name;
    f.func->fn = [obj, name](Evaluator& ev, CallArgs& args, int line) {
      return ev.call_method(obj, name, args, line);
    };
    return f;
  }

  // obj.name as jinja2 resolves it: the Python attribute first, then the item.
  Value getattr(const Value& obj, const std::string& name, int line) {
    switch (obj.type) {
      case Value::Type::kUndefined:
        undefined_error(obj, line);
      case Value::Type::kDict:
        if (!obj.dict->is_namespace && is_dict_method(name)) return bound_method(obj, name);
        if (const Value* v = obj.dict->find(name)) return *v;
        break;
      case Value::Type::kStr:
        if (is_str_method(name)) return bound_method(obj, name);
        break;
      default:
        break;
    }
    return Value::undefined("'" + describe_object(obj) + "' has no attribute '" + name + "'");
  }

  static std::string describe_object(const Value& obj) {
    if (obj.is_none()) return "None";
    return type_name(obj) + " object";
  }

  // obj[key]: the item first, then (for string keys) the attribute.
  Value getitem(const Value& obj, const Value& key, int line) {
    if (obj.is_undefined()) undefined_error(obj, line);
    if (obj.is_str()) tick(line, obj.s.size() / 256);
    if (obj.is_dict() && key.is_str()) {
      if (const Value* v = obj.dict->find(key.s)) return *v;
      return getattr(obj, key.s, line);
    }
    if ((obj.is_list() || obj.is_str()) && key.is_integral()) {
      int64_t idx = key.as_int();
      if (obj.is_list()) {
        int64_t n = static_cast<int64_t>(obj.list->size());
        if (idx < 0) idx += n;
        if (idx >= 0 && idx < n) return (*obj.list)[static_cast<size_t>(idx)];
      } else {
        std::u32string u = to_u32(obj.s);
        int64_t n = static_cast<int64_t>(u.size());
        if (idx < 0) idx += n;
        if (idx >= 0 && idx < n) {
          std::string s;
          append_u8(s, u[static_cast<size_t>(idx)]);
          return Value::str(std::move(s));
        }
      }
      return Value::undefined("'" + describe_object(obj) + "' has no element " +
                              std::to_string(key.as_int()));
    }
    if (key.is_str()) return getattr(obj, key.s, line);
    return Value::undefined("'" + describe_object(obj) + "' has no element " + repr(key));
  }

  Value slice(const Value& obj, const Value& start_v, const Value& stop_v, const Value& step_v,
              int line) {
    if (obj.is_undefined()) undefined_error(obj, line);
    auto as_index = [&](const Value& v, const char* what) -> std::optional<int64_t> {
      if (v.is_undefined() || v.is_none()) return std::nullopt;
      if (!v.is_integral()) fail(line, std::string("slice ") + what + " must be an integer");
      return v.as_int();
    };
    std::optional<int64_t> start = as_index(start_v, "start"), stop = as_index(stop_v, "stop"),
                           step_o = as_index(step_v, "step");
    int64_t step = step_o.value_or(1);
    if (obj.is_str()) tick(line, obj.s.size() / 256);
    if (obj.is_list()) tick(line, obj.list->size() / 16);
    if (step == 0) fail(line, "slice step cannot be zero");
    std::u32string u;
    int64_t n;
    if (obj.is_list()) {
      n = static_cast<int64_t>(obj.list->size());
    } else if (obj.is_str()) {
      u = to_u32(obj.s);
      n = static_cast<int64_t>(u.size());
    } else if (obj.is_dict()) {
      // jinja2 slices with a plain Python subscript, which fails for everything else.
      fail(line, "unhashable type: 'slice'");
    } else {
      fail(line, "'" + type_name(obj) + "' object is not subscriptable");
    }
    // CPython's PySlice_AdjustIndices.
    auto adjust = [&](std::optional<int64_t> v, int64_t dflt) {
      if (!v) return dflt;
      int64_t x = *v;
      if (x < 0) {
        x += n;
        if (x < 0) x = step < 0 ? -1 : 0;
      } else if (x >= n) {
        x = step < 0 ? n - 1 : n;
      }
      return x;
    };
    int64_t lo = adjust(start, step < 0 ? n - 1 : 0);
    int64_t hi = adjust(stop, step < 0 ? -1 : n);
    std::vector<int64_t> idx;
    if (step > 0)
      for (int64_t k = lo; k < hi; k += step) idx.push_back(k);
    else
      for (int64_t k = lo; k > hi; k += step) idx.push_back(k);
    if (obj.is_list()) {
      List items;
      items.reserve(idx.size());
      for (int64_t k : idx) items.push_back((*obj.list)[static_cast<size_t>(k)]);
      return Value::make_list(std::move(items), obj.tuple);
    }
    std::u32string r;
    for (int64_t k : idx) r += u[static_cast<size_t>(k)];
    return Value::str(to_u8(r));
  }

  bool contains(const Value& container, const Value& item, int line) {
    if (container.is_str()) tick(line, (container.s.size() + item.s.size()) / 256);
    if (container.is_list()) tick(line, container.list->size() / 16);
    switch (container.type) {
      case Value::Type::kUndefined:
        return false;
      case Value::Type::kStr:
        if (!item.is_str())
          fail(line, "'in <string>' requires string as left operand, not " + type_name(item));
        return container.s.find(item.s) != std::string::npos;
      case Value::Type::kList:
        for (const auto& e : *container.list)
          if (equals(e, item)) return true;
        return false;
      case Value::Type::kDict:
        if (container.dict->is_namespace) break;
        return item.is_str() && container.dict->find(item.s) != nullptr;
      default:
        break;
    }
    fail(line, "argument of type '" + type_name(container) + "' is not iterable");
  }

  // ---- arithmetic ----

  Value arith(BinOp op, const Value& a, const Value& b, int line) {
    if (op == BinOp::kConcat) {
      std::string s = to_str(a);
      std::string t = to_str(b);
      check_size(s.size() + t.size(), line);
      return Value::str(s + t);
    }
    if (a.is_undefined()) undefined_error(a, line);
    if (b.is_undefined()) undefined_error(b, line);
    const char* sym = "+";
    switch (op) {
      case BinOp::kAdd:
        sym = "+";
        break;
      case BinOp::kSub:
        sym = "-";
        break;
      case BinOp::kMul:
        sym = "*";
        break;
      case BinOp::kDiv:
        sym = "/";
        break;
      case BinOp::kFloorDiv:
        sym = "//";
        break;
      case BinOp::kMod:
        sym = "%";
        break;
      case BinOp::kPow:
        sym = "**";
        break;
      default:
        break;
    }
    if (a.is_number() && b.is_number()) {
      if (a.is_integral() && b.is_integral()) {
        int64_t x = a.as_int(), y = b.as_int(), r = 0;
        switch (op) {
          case BinOp::kAdd:
            if (__builtin_add_overflow(x, y, &r)) fail(line, "integer overflow");
            return Value::integer(r);
          case BinOp::kSub:
            if (__builtin_sub_overflow(x, y, &r)) fail(line, "integer overflow");
            return Value::integer(r);
          case BinOp::kMul:
            if (__builtin_mul_overflow(x, y, &r)) fail(line, "integer overflow");
            return Value::integer(r);
          case BinOp::kDiv:
            if (y == 0) fail(line, "division by zero");
            return Value::number(static_cast<double>(x) / static_cast<double>(y));
          case BinOp::kFloorDiv:
          case BinOp::kMod: {
            if (y == 0) fail(line, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) fail(line, "integer overflow");
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) {
              --q;
              m += y;
            }
            return Value::integer(op == BinOp::kFloorDiv ? q : m);
          }
          case BinOp::kPow: {
            if (y < 0)
              return Value::number(std::pow(static_cast<double>(x), static_cast<double>(y)));
            int64_t result = 1, base = x;
            int64_t e = y;
            while (e > 0) {
              if (e & 1)
                if (__builtin_mul_overflow(result, base, &result)) fail(line, "integer overflow");
              e >>= 1;
              if (e > 0 && __builtin_mul_overflow(base, base, &base))
                fail(line, "integer overflow");
            }
            return Value::integer(result);
          }
          default:
            break;
        }
      }
      double x = a.as_double(), y = b.as_double();
      switch (op) {
        case BinOp::kAdd:
          return Value::number(x + y);
        case BinOp::kSub:
          return Value::number(x - y);
        case BinOp::kMul:
          return Value::number(x * y);
        case BinOp::kDiv:
          if (y == 0) fail(line, "float division by zero");
          return Value::number(x / y);
        case BinOp::kFloorDiv:
        case BinOp::kMod: {
          if (y == 0) fail(line, "float modulo");
          double m = std::fmod(x, y);
          if (m != 0 && ((m < 0) != (y < 0))) m += y;
          if (op == BinOp::kMod) return Value::number(m);
          // CPython's float floor division: exact quotient of (x - mod) / y, then floored.
          double div = (x - m) / y;
          double fl = std::floor(div);
          if (div - fl > 0.5) fl += 1;
          return Value::number(fl);
        }
        case BinOp::kPow:
          return Value::number(std::pow(x, y));
        default:
          break;
      }
    }
    if (op == BinOp::kAdd) {
      if (a.is_str() && b.is_str()) {
        check_size(a.s.size() + b.s.size(), line);
        return Value::str(a.s + b.s);
      }
      if (a.is_list() && b.is_list() && a.tuple == b.tuple) {
        check_items(a.list->size() + b.list->size(), line);
        List items = *a.list;
        items.insert(items.end(), b.list->begin(), b.list->end());
        return Value::make_list(std::move(items), a.tuple);
      }
      if (a.is_str()) fail(line, "can only concatenate str (not \"" + type_name(b) + "\") to str");
    }
    if (op == BinOp::kMul && (a.is_str() || a.is_list() || b.is_str() || b.is_list())) {
      const Value& seq = (a.is_str() || a.is_list()) ? a : b;
      const Value& count = (a.is_str() || a.is_list()) ? b : a;
      if (count.is_integral()) {
        int64_t n = std::max<int64_t>(0, count.as_int());
        if (seq.is_str()) {
          if (n > 0 && seq.s.size() > limits_.max_output_bytes / static_cast<size_t>(n))
            check_size(limits_.max_output_bytes + 1, line);
          check_size(seq.s.size() * static_cast<size_t>(n), line);
          std::string r;
          r.reserve(seq.s.size() * static_cast<size_t>(n));
          for (int64_t k = 0; k < n; ++k) r += seq.s;
          return Value::str(std::move(r));
        }
        if (n > 0 && seq.list->size() > limits_.max_items / static_cast<size_t>(n))
          check_items(limits_.max_items + 1, line);
        check_items(seq.list->size() * static_cast<size_t>(n), line);
        List items;
        for (int64_t k = 0; k < n; ++k)
          items.insert(items.end(), seq.list->begin(), seq.list->end());
        return Value::make_list(std::move(items), seq.tuple);
      }
    }
    if (op == BinOp::kMod && a.is_str()) return Value::str(percent_format(a.s, b, line));
    fail(line, std::string("unsupported operand type(s) for ") + sym + ": '" + type_name(a) +
                   "' and '" + type_name(b) + "'");
  }

  bool compare(const std::string& op, const Value& a, const Value& b, int line) {
    if (op == "==") return equals(a, b);
    if (op == "!=") return !equals(a, b);
    if (op == "in") return contains(b, a, line);
    if (op == "notin") return !contains(b, a, line);
    if (a.is_undefined()) undefined_error(a, line);
    if (b.is_undefined()) undefined_error(b, line);
    std::optional<int> c = order(a, b);
    if (!c)
      fail(line, "'" + op + "' not supported between instances of '" + type_name(a) + "' and '" +
                     type_name(b) + "'");
    if (op == "<") return *c < 0;
    if (op == "<=") return *c <= 0;
    if (op == ">") return *c > 0;
    return *c >= 0;
  }

  // ---- expressions ----

  CallArgs eval_args(const Expr& e, size_t first, Scope& scope) {
    CallArgs args;
    for (size_t k = first; k < e.children.size(); ++k)
      args.positional.push_back(eval(*e.children[k], scope));
    for (const auto& kv : e.kwargs) args.keyword.emplace_back(kv.first, eval(*kv.second, scope));
    return args;
  }

  Value apply_filter(const std::string& name, const Value& operand, CallArgs& args, int line) {
    if (operand.is_str()) tick(line, operand.s.size() / 256);
    auto it = filters().find(name);
    if (it == filters().end()) fail(line, "unknown filter '" + name + "'");
    return it->second(*this, operand, args, line);
  }

  bool apply_test(const std::string& name, const Value& operand, CallArgs& args, int line) {
    auto it = tests().find(name);
    if (it == tests().end()) fail(line, "unknown test '" + name + "'");
    return it->second(*this, operand, args, line);
  }

  Value call(const Value& callee, CallArgs& args, int line) {
    if (callee.is_undefined()) undefined_error(callee, line);
    if (!callee.is_func()) fail(line, "'" + type_name(callee) + "' object is not callable");
    tick(line);
    return callee.func->fn(*this, args, line);
  }

  // Evaluates a filter expression whose innermost operand is `operand` (filter blocks).
  Value eval_filter_chain(const Expr& e, const Value& operand, Scope& scope) {
    Value inner = e.children[0] ? eval_filter_chain(*e.children[0], operand, scope) : operand;
    CallArgs args = eval_args(e, 1, scope);
    return apply_filter(e.name, inner, args, e.line);
  }

  Value eval(const Expr& e, Scope& scope) {
    switch (e.kind) {
      case Expr::Kind::kConst:
        return e.value;
      case Expr::Kind::kName: {
        if (Value* v = scope.find(e.name)) return *v;
        return Value::undefined("'" + e.name + "' is undefined");
      }
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        List items;
        items.reserve(e.children.size());
        for (const auto& c : e.children) items.push_back(eval(*c, scope));
        Value v = Value::make_list(std::move(items), e.kind == Expr::Kind::kTuple);
        check_nest(v, e.line);
        return v;
      }
      case Expr::Kind::kDict: {
        auto d = std::make_shared<Dict>();
        for (size_t k = 0; k + 1 < e.children.size(); k += 2) {
          Value key = eval(*e.children[k], scope);
          if (!key.is_str()) fail(e.line, "dictionary keys must be strings, not " + type_name(key));
          d->set(key.s, eval(*e.children[k + 1], scope));
        }
        Value v = Value::make_dict(std::move(d));
        check_nest(v, e.line);
        return v;
      }
      case Expr::Kind::kGetattr:
        return getattr(eval(*e.children[0], scope), e.name, e.line);
      case Expr::Kind::kGetitem:
        return getitem(eval(*e.children[0], scope), eval(*e.children[1], scope), e.line);
      case Expr::Kind::kSlice: {
        Value obj = eval(*e.children[0], scope);
        Value parts[3];
        for (int k = 0; k < 3; ++k)
          if (e.children[k + 1]) parts[k] = eval(*e.children[k + 1], scope);
        return slice(obj, parts[0], parts[1], parts[2], e.line);
      }
      case Expr::Kind::kCall: {
        const Expr& callee = *e.children[0];
        if (callee.kind == Expr::Kind::kGetattr) {
          // Method calls skip creating a bound-method object.
          Value obj = eval(*callee.children[0], scope);
          if ((obj.is_str() && is_str_method(callee.name)) ||
              (obj.is_dict() && !obj.dict->is_namespace && is_dict_method(callee.name))) {
            CallArgs args = eval_args(e, 1, scope);
            tick(e.line);
            return call_method(obj, callee.name, args, e.line);
          }
          Value f = getattr(obj, callee.name, callee.line);
          CallArgs args = eval_args(e, 1, scope);
          return call(f, args, e.line);
        }
        Value f = eval(callee, scope);
        CallArgs args = eval_args(e, 1, scope);
        return call(f, args, e.line);
      }
      case Expr::Kind::kFilter: {
        Value operand = eval(*e.children[0], scope);
        CallArgs args = eval_args(e, 1, scope);
        return apply_filter(e.name, operand, args, e.line);
      }
      case Expr::Kind::kTest: {
        Value operand = eval(*e.children[0], scope);
        CallArgs args = eval_args(e, 1, scope);
        bool r = apply_test(e.name, operand, args, e.line);
        return Value::boolean(e.negated ? !r : r);
      }
      case Expr::Kind::kNot:
        return Value::boolean(!truthy(eval(*e.children[0], scope)));
      case Expr::Kind::kNeg:
      case Expr::Kind::kPos: {
        Value v = eval(*e.children[0], scope);
        if (v.is_undefined()) undefined_error(v, e.line);
        if (!v.is_number())
          fail(e.line, std::string("bad operand type for unary ") +
                           (e.kind == Expr::Kind::kNeg ? "-" : "+") + ": '" + type_name(v) + "'");
        if (e.kind == Expr::Kind::kPos)
          return v.type == Value::Type::kFloat ? v : Value::integer(v.as_int());
        if (v.type == Value::Type::kFloat) return Value::number(-v.f);
        if (v.as_int() == INT64_MIN) fail(e.line, "integer overflow");
        return Value::integer(-v.as_int());
      }
      case Expr::Kind::kBinary:
        return arith(e.op, eval(*e.children[0], scope), eval(*e.children[1], scope), e.line);
      case Expr::Kind::kCompare: {
        Value left = eval(*e.children[0], scope);
        for (size_t k = 0; k < e.ops.size(); ++k) {
          Value right = eval(*e.children[k + 1], scope);
          if (!compare(e.ops[k], left, right, e.line)) return Value::boolean(false);
          left = std::move(right);
        }
        return Value::boolean(true);
      }
      case Expr::Kind::kAnd: {
        Value a = eval(*e.children[0], scope);
        if (!truthy(a)) return a;
        return eval(*e.children[1], scope);
      }
      case Expr::Kind::kOr: {
        Value a = eval(*e.children[0], scope);
        if (truthy(a)) return a;
        return eval(*e.children[1], scope);
      }
      case Expr::Kind::kCond: {
        if (truthy(eval(*e.children[0], scope))) return eval(*e.children[1], scope);
        if (e.children[2]) return eval(*e.children[2], scope);
        return Value::undefined("the inline if-expression on line " + std::to_string(e.line) +
                                " evaluated to false and no else section was defined");
      }
    }
    fail(e.line, "unsupported expression");
  }

  // ---- statements ----

  void write(const std::string& s, int line) {
    if (out_->size() + s.size() > limits_.max_output_bytes)
      check_size(out_->size() + s.size(), line);
    tick(line, s.size() / 256);
    out_->append(s);
  }

  std::string capture(const Body& body, Scope& scope) {
    std::string buf;
    std::string* saved = out_;
    out_ = &buf;
    try {
      exec_body(body, scope);
    } catch (...) {
      out_ = saved;
      throw;
    }
    out_ = saved;
    return buf;
  }

  void assign(const std::vector<std::string>& targets, const Value& v, Scope& scope, int line) {
    if (targets.size() == 1) {
      scope.set(targets[0], v);
      return;
    }
    if (!v.is_list() && !v.is_str() && !v.is_dict())
      fail(line, "cannot unpack non-iterable " + type_name(v) + " object");
    std::vector<Value> items = iterate(v, line);
    if (items.size() != targets.size())
      fail(line, "cannot unpack " + std::to_string(items.size()) + " values into " +
                     std::to_string(targets.size()) + " names");
    for (size_t k = 0; k < targets.size(); ++k) scope.set(targets[k], items[k]);
  }

  Flow exec_body(const Body& body, Scope& scope) {
    for (const auto& s : body) {
      Flow f = exec(*s, scope);
      if (f != Flow::kNormal) return f;
    }
    return Flow::kNormal;
  }

  Flow exec(const Stmt& s, Scope& scope) {
    tick(s.line);
    switch (s.kind) {
      case Stmt::Kind::kText:
        write(s.text, s.line);
        return Flow::kNormal;
      case Stmt::Kind::kPrint:
        write(to_str(eval(*s.expr, scope)), s.line);
        return Flow::kNormal;
      case Stmt::Kind::kIf:
        for (const auto& br : s.branches)
          if (!br.first || truthy(eval(*br.first, scope))) return exec_body(br.second, scope);
        return Flow::kNormal;
      case Stmt::Kind::kFor:
        return exec_for(s, scope);
      case Stmt::Kind::kSet: {
        Value v = eval(*s.expr, scope);
        if (!s.attr.empty()) {
          Value* target = scope.find(s.targets[0]);
          if (target == nullptr || !target->is_dict() || !target->dict->is_namespace)
            fail(s.line, "cannot assign attribute on non-namespace object");
          check_nest(v, s.line);
          target->dict->set(s.attr, std::move(v));
        } else {
          assign(s.targets, v, scope, s.line);
        }
        return Flow::kNormal;
      }
      case Stmt::Kind::kSetBlock: {
        Value v = Value::str(capture(s.body, scope));
        if (s.filter) v = eval_filter_chain(*s.filter, v, scope);
        scope.set(s.targets[0], std::move(v));
        return Flow::kNormal;
      }
      case Stmt::Kind::kMacro:
        scope.set(s.name, make_macro(s));
        return Flow::kNormal;
      case Stmt::Kind::kCallBlock: {
        const Expr& call_expr = *s.expr;
        Value f = eval(*call_expr.children[0], scope);
        CallArgs args = eval_args(call_expr, 1, scope);
        Value caller;
        caller.type = Value::Type::kFunc;
        caller.func = std::make_shared<Callable>();
        caller.func->name = "caller";
        const Stmt* stmt = &s;
        Scope* call_scope = &scope;
        caller.func->fn = [stmt, call_scope](Evaluator& ev, CallArgs& a, int line) {
          return ev.invoke(*stmt, a, line, call_scope, Value());
        };
        if (f.is_undefined()) undefined_error(f, s.line);
        if (!f.is_func() || f.func->macro == nullptr) fail(s.line, "the call block needs a macro");
        if (!f.func->macro->uses_caller)
          fail(s.line, "macro '" + f.func->macro->name + "' does not use caller()");
        args.keyword.emplace_back("caller", caller);
        write(to_str(call(f, args, s.line)), s.line);
        return Flow::kNormal;
      }
      case Stmt::Kind::kFilterBlock: {
        Value body = Value::str(capture(s.body, scope));
        write(to_str(eval_filter_chain(*s.filter, body, scope)), s.line);
        return Flow::kNormal;
      }
      case Stmt::Kind::kBreak:
        if (loop_depth_ == 0) fail(s.line, "'break' outside of a loop");
        return Flow::kBreak;
      case Stmt::Kind::kContinue:
        if (loop_depth_ == 0) fail(s.line, "'continue' outside of a loop");
        return Flow::kContinue;
      case Stmt::Kind::kScope:
        return exec_body(s.body, scope);
    }
    return Flow::kNormal;
  }

  Flow exec_for(const Stmt& s, Scope& scope) {
    Value seq = eval(*s.expr, scope);
    std::vector<Value> items = iterate(seq, s.line);
    if (s.filter) {
      std::vector<Value> kept;
      for (auto& item : items) {
        tick(s.line);
        Scope probe{&scope, {}};
        assign(s.targets, item, probe, s.line);
        if (truthy(eval(*s.filter, probe))) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    // jinja2 runs the else block unless some iteration reached the end of the body (an
    // iteration cut short by break or continue does not count).
    bool completed = false;
    if (items.empty()) return exec_body(s.else_body, scope);
    const int64_t n = static_cast<int64_t>(items.size());
    ++loop_depth_;
    bool exited = false;
    struct Exit {
      int& d;
      bool& done;
      ~Exit() {
        if (!done) --d;
      }
    } exit{loop_depth_, exited};
    for (int64_t k = 0; k < n; ++k) {
      tick(s.line);
      Scope iter{&scope, {}};
      assign(s.targets, items[static_cast<size_t>(k)], iter, s.line);
      auto loop = std::make_shared<Dict>();
      loop->items.reserve(12);
      loop->items.emplace_back("index", Value::integer(k + 1));
      loop->items.emplace_back("index0", Value::integer(k));
      loop->items.emplace_back("revindex", Value::integer(n - k));
      loop->items.emplace_back("revindex0", Value::integer(n - k - 1));
      loop->items.emplace_back("first", Value::boolean(k == 0));
      loop->items.emplace_back("last", Value::boolean(k == n - 1));
      loop->items.emplace_back("length", Value::integer(n));
      loop->items.emplace_back("depth", Value::integer(1));
      loop->items.emplace_back("depth0", Value::integer(0));
      loop->items.emplace_back("previtem", k > 0 ? items[static_cast<size_t>(k - 1)]
                                                 : Value::undefined("there is no previous item"));
      loop->items.emplace_back("nextitem", k + 1 < n ? items[static_cast<size_t>(k + 1)]
                                                     : Value::undefined("there is no next item"));
      Value cycle;
      cycle.type = Value::Type::kFunc;
      cycle.func = std::make_shared<Callable>();
      cycle.func->name = "loop.cycle";
      cycle.func->fn = [k](Evaluator& ev, CallArgs& a, int line) {
        if (a.positional.empty()) ev.fail(line, "no items for cycling given");
        return a.positional[static_cast<size_t>(k) % a.positional.size()];
      };
      loop->items.emplace_back("cycle", cycle);
      iter.set("loop", Value::make_dict(std::move(loop)));
      Flow f = exec_body(s.body, iter);
      if (f == Flow::kBreak) break;
      if (f == Flow::kNormal) completed = true;
    }
    --loop_depth_;
    exited = true;
    if (!completed && !s.else_body.empty()) return exec_body(s.else_body, scope);
    return Flow::kNormal;
  }

  Value make_macro(const Stmt& s) {
    Value f;
    f.type = Value::Type::kFunc;
    f.func = std::make_shared<Callable>();
    f.func->name = "macro " + s.name;
    f.func->macro = &s;
    const Stmt* stmt = &s;
    f.func->fn = [stmt](Evaluator& ev, CallArgs& a, int line) {
      return ev.invoke(*stmt, a, line, ev.root_, Value());
    };
    return f;
  }

  // Runs a macro (or a call block's body as `caller`) with its arguments bound.
  Value invoke(const Stmt& s, CallArgs& args, int line, Scope* parent, const Value&) {
    if (call_depth_ >= limits_.max_call_depth)
      fail(line, "macro calls nest too deeply (more than " +
                     std::to_string(limits_.max_call_depth) + ")");
    ++call_depth_;
    struct Exit {
      int& d;
      ~Exit() { --d; }
    } exit{call_depth_};
    const std::string what = s.kind == Stmt::Kind::kMacro ? "macro '" + s.name + "'" : "caller";
    Scope scope{parent, {}};
    if (args.positional.size() > s.params.size())
      fail(line, what + " takes not more than " + std::to_string(s.params.size()) + " argument(s)");
    std::vector<bool> bound(s.params.size(), false);
    for (size_t k = 0; k < args.positional.size(); ++k) {
      scope.set(s.params[k], args.positional[k]);
      bound[k] = true;
    }
    for (auto& kv : args.keyword) {
      if (kv.first == "caller") {
        scope.set("caller", kv.second);
        continue;
      }
      auto it = std::find(s.params.begin(), s.params.end(), kv.first);
      if (it == s.params.end()) fail(line, what + " takes no keyword argument '" + kv.first + "'");
      size_t idx = static_cast<size_t>(it - s.params.begin());
      if (bound[idx]) fail(line, what + " got multiple values for argument '" + kv.first + "'");
      scope.set(kv.first, kv.second);
      bound[idx] = true;
    }
    for (size_t k = 0; k < s.params.size(); ++k) {
      if (bound[k]) continue;
      if (s.defaults[k])
        scope.set(s.params[k], eval(*s.defaults[k], scope));
      else
        scope.set(s.params[k],
                  Value::undefined("parameter '" + s.params[k] + "' was not provided"));
    }
    int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    std::string text;
    try {
      text = capture(s.body, scope);
    } catch (...) {
      loop_depth_ = saved_loop_depth;
      throw;
    }
    loop_depth_ = saved_loop_depth;
    return Value::str(std::move(text));
  }

  std::string percent_format(const std::string& fmt, const Value& args, int line);

  // ---- methods of str and dict ----

  Value call_method(const Value& obj, const std::string& name, CallArgs& args, int line);

  void install_globals(Scope& g);

  const Program& program_;
  const Limits& limits_;
  std::vector<std::weak_ptr<Dict>> namespaces_;
  Scope* root_ = nullptr;
  std::string* out_ = nullptr;
  size_t steps_ = 0;
  int call_depth_ = 0;
  int loop_depth_ = 0;
};

namespace {

// ---- argument binding ----

// Binds positional and keyword arguments to parameter names; missing ones are null.
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

bool given(const Value* v) { return v != nullptr && !v->is_none(); }

int64_t int_arg(Evaluator& ev, const Value* v, int64_t dflt, const std::string& fname, int line) {
  if (!given(v)) return dflt;
  if (v->is_undefined()) ev.undefined_error(*v, line);
  if (!v->is_integral()) ev.fail(line, fname + "() expects an integer, got " + type_name(*v));
  return v->as_int();
}

bool bool_arg(const Value* v, bool dflt) { return v == nullptr ? dflt : truthy(*v); }

// ---- string helpers (Python semantics) ----

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

Value str_list(const std::vector<std::string>& parts) {
  List items;
  items.reserve(parts.size());
  for (const auto& p : parts) items.push_back(Value::str(p));
  return Value::make_list(std::move(items));
}

int64_t cp_find(const std::string& s, const std::string& sub, bool reverse) {
  size_t hit = reverse ? s.rfind(sub) : s.find(sub);
  if (hit == std::string::npos) return -1;
  return static_cast<int64_t>(u8_length(std::string_view(s).substr(0, hit)));
}

}  // namespace

// Python's printf-style `str % args` for the common conversions (s r d i f F e E g G x X o c).
std::string Evaluator::percent_format(const std::string& fmt, const Value& args, int line) {
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
    if (++k >= fmt.size()) fail(line, "incomplete format");
    const Value* value = nullptr;
    if (fmt[k] == '(') {
      size_t close = fmt.find(')', k);
      if (close == std::string::npos) fail(line, "incomplete format key");
      if (mapping == nullptr) fail(line, "format requires a mapping");
      const Value* v = mapping->find(fmt.substr(k + 1, close - k - 1));
      if (v == nullptr) fail(line, "KeyError: '" + fmt.substr(k + 1, close - k - 1) + "'");
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
    if (k >= fmt.size()) fail(line, "incomplete format");
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
        if (next >= positional.size()) fail(line, "not enough arguments for format string");
        value = &positional[next++];
      }
    }
    std::string piece;
    if (conv == 's' || conv == 'r' || conv == 'a') {
      piece = conv == 's' ? to_str(*value) : repr(*value);
      if (precision >= 0) piece = to_u8(to_u32(piece).substr(0, static_cast<size_t>(precision)));
    } else if (std::strchr("diouxXeEfFgGc", conv) != nullptr) {
      if (!value->is_number())
        fail(line, std::string("%") + conv + " format: a real number is required, not " +
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
      fail(line, std::string("unsupported format character '") + conv + "'");
    }
    size_t len = u8_length(piece);
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
    check_size(out.size(), line);
  }
  if (mapping == nullptr && next < positional.size())
    fail(line, "not all arguments converted during string formatting");
  (void)used_mapping;
  return out;
}

Value Evaluator::call_method(const Value& obj, const std::string& name, CallArgs& args, int line) {
  if (obj.is_dict()) {
    const Dict& d = *obj.dict;
    if (name == "items" || name == "keys" || name == "values") {
      bind(*this, args, {}, name, line);
      List items;
      for (const auto& kv : d.items) {
        if (name == "items")
          items.push_back(Value::make_list({Value::str(kv.first), kv.second}, true));
        else if (name == "keys")
          items.push_back(Value::str(kv.first));
        else
          items.push_back(kv.second);
      }
      return Value::make_list(std::move(items));
    }
    if (name == "get") {
      auto a = bind(*this, args, {"key", "default"}, name, line);
      if (a[0] == nullptr) fail(line, "get() missing a required argument");
      if (a[0]->is_str())
        if (const Value* v = d.find(a[0]->s)) return *v;
      return a[1] ? *a[1] : Value::none();
    }
  }
  if (!obj.is_str()) fail(line, "'" + type_name(obj) + "' object has no method '" + name + "'");
  const std::string& s = obj.s;
  tick(line, s.size() / 256);
  if (name == "startswith" || name == "endswith") {
    auto a = bind(*this, args, {"prefix"}, name, line);
    if (a[0] == nullptr) fail(line, name + "() takes at least 1 argument");
    std::vector<std::string> options;
    if (a[0]->is_list() && a[0]->tuple) {
      for (const auto& v : *a[0]->list) options.push_back(str_arg(*this, &v, name, line).s);
    } else {
      options.push_back(str_arg(*this, a[0], name, line).s);
    }
    for (const auto& o : options) {
      if (o.size() > s.size()) continue;
      if (name == "startswith" ? s.compare(0, o.size(), o) == 0
                               : s.compare(s.size() - o.size(), o.size(), o) == 0)
        return Value::boolean(true);
    }
    return Value::boolean(false);
  }
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    auto a = bind(*this, args, {"chars"}, name, line);
    if (given(a[0])) str_arg(*this, a[0], name, line);
    return Value::str(strip_chars(s, a[0], name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") {
    auto a = bind(*this, args, {"sep", "maxsplit"}, name, line);
    int64_t maxsplit = int_arg(*this, a[1], -1, name, line);
    if (name == "rsplit" && maxsplit >= 0) {
      // rsplit with a limit splits from the right: reverse, split, reverse back.
      std::u32string u = to_u32(s);
      std::reverse(u.begin(), u.end());
      Value rsep;
      const Value* sep = a[0];
      if (given(sep)) {
        std::u32string su = to_u32(str_arg(*this, sep, name, line).s);
        std::reverse(su.begin(), su.end());
        rsep = Value::str(to_u8(su));
        sep = &rsep;
      }
      std::vector<std::string> parts = str_split(to_u8(u), sep, maxsplit, *this, line);
      std::reverse(parts.begin(), parts.end());
      for (auto& p : parts) {
        std::u32string pu = to_u32(p);
        std::reverse(pu.begin(), pu.end());
        p = to_u8(pu);
      }
      return str_list(parts);
    }
    return str_list(str_split(s, a[0], maxsplit, *this, line));
  }
  if (name == "splitlines") {
    auto a = bind(*this, args, {"keepends"}, name, line);
    return str_list(py_splitlines(s, bool_arg(a[0], false)));
  }
  if (name == "replace") {
    auto a = bind(*this, args, {"old", "new", "count"}, name, line);
    return Value::str(str_replace(*this, s, str_arg(*this, a[0], name, line).s,
                                  str_arg(*this, a[1], name, line).s,
                                  int_arg(*this, a[2], -1, name, line), line));
  }
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize" ||
      name == "swapcase") {
    bind(*this, args, {}, name, line);
    if (name == "upper") return Value::str(str_upper(s));
    if (name == "lower") return Value::str(str_lower(s));
    if (name == "title") return Value::str(str_title_py(s));
    if (name == "capitalize") return Value::str(str_capitalize(s));
    std::u32string u = to_u32(s);
    for (char32_t& c : u) c = py_upper(c) != c ? py_upper(c) : py_lower(c);
    return Value::str(to_u8(u));
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "count") {
    auto a = bind(*this, args, {"sub"}, name, line);
    const std::string& sub = str_arg(*this, a[0], name, line).s;
    if (name == "count") {
      if (sub.empty()) return Value::integer(static_cast<int64_t>(u8_length(s)) + 1);
      int64_t n = 0;
      for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      return Value::integer(n);
    }
    int64_t r = cp_find(s, sub, name == "rfind");
    if (name == "index" && r < 0) fail(line, "substring not found");
    return Value::integer(r);
  }
  if (name == "join") {
    auto a = bind(*this, args, {"iterable"}, name, line);
    if (a[0] == nullptr) fail(line, "join() takes exactly one argument");
    std::string out;
    bool first = true;
    for (const auto& v : iterate(*a[0], line)) {
      if (!v.is_str())
        fail(line, "sequence item: expected str instance, " + type_name(v) + " found");
      if (!first) out += s;
      first = false;
      out += v.s;
      check_size(out.size(), line);
    }
    return Value::str(std::move(out));
  }
  if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" ||
      name == "isupper" || name == "islower") {
    bind(*this, args, {}, name, line);
    std::u32string u = to_u32(s);
    if (name == "isupper" || name == "islower") {
      bool any = false;
      for (char32_t c : u) {
        if (!py_iscased(c)) continue;
        any = true;
        if (name == "isupper" ? py_upper(c) != c : py_lower(c) != c) return Value::boolean(false);
      }
      return Value::boolean(any);
    }
    if (u.empty()) return Value::boolean(false);
    for (char32_t c : u) {
      bool ok = name == "isdigit"   ? py_isdigit(c)
                : name == "isalpha" ? py_isalpha(c)
                : name == "isalnum" ? py_isalnum(c)
                                    : py_isspace(c);
      if (!ok) return Value::boolean(false);
    }
    return Value::boolean(true);
  }
  fail(line, "str." + name + "() is not supported");
}

namespace {

// ---- filters ----

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
  int64_t len = static_cast<int64_t>(u8_length(s));
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
  if ((v.is_dict() && !v.dict->is_namespace && Evaluator::is_dict_method(name)) ||
      (v.is_str() && Evaluator::is_str_method(name)))
    return ev.bound_method(v, name);
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
  return Value::str(ev.percent_format(to_str(v), a, line));
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

int64_t int_value(Evaluator& ev, const Value& v, int line) {
  if (v.is_undefined()) ev.undefined_error(v, line);
  if (!v.is_integral()) ev.fail(line, "expected an integer, got " + type_name(v));
  return v.as_int();
}

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

const std::unordered_map<std::string, FilterFn>& filters() {
  static const std::unordered_map<std::string, FilterFn> table = {
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

const std::unordered_map<std::string, TestFn>& tests() {
  static const std::unordered_map<std::string, TestFn> table = {
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

// ---- globals ----

Value make_func(const std::string& name, std::function<Value(Evaluator&, CallArgs&, int line)> fn) {
  Value f;
  f.type = Value::Type::kFunc;
  f.func = std::make_shared<Callable>();
  f.func->name = name;
  f.func->fn = std::move(fn);
  return f;
}

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
  if (count > static_cast<long double>(ev.limits_.max_items)) ev.check_items(SIZE_MAX, line);
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

}  // namespace

void Evaluator::install_globals(Scope& g) {
  g.set("range", make_func("range", g_range));
  g.set("namespace", make_func("namespace", g_namespace));
  g.set("dict", make_func("dict", g_dict));
  g.set("raise_exception", make_func("raise_exception", g_raise));
  g.set("strftime_now", make_func("strftime_now", g_strftime_now));
  g.set("joiner", make_func("joiner", [](Evaluator& ev, CallArgs& args, int line) {
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
        }));
}

bool is_known_filter(const std::string& name) { return filters().count(name) != 0; }
bool is_known_test(const std::string& name) { return tests().count(name) != 0; }

}  // namespace qrwkv::jinja::detail

namespace qrwkv::jinja {

Template::Template(std::string_view source, std::string name, Limits limits)
    : program_(detail::parse_template(source, name, limits)) {}

Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const ordered_json& variables) const {
  detail::Evaluator ev(*program_);
  return ev.render(variables);
}

const std::string& Template::name() const { return program_->name; }

}  // namespace qrwkv::jinja
