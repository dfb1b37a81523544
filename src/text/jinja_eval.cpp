// Evaluator of the Jinja engine: statements, expressions, scopes, macros and calls, with
// Python's semantics for the operations on values and jinja2's Undefined behaviour. Filters,
// tests, methods and globals live in their registries (see jinja_evaluator.h).
#include <algorithm>
#include <cmath>

#include "io/error.h"
#include "text/jinja.h"
#include "text/jinja_evaluator.h"
#include "text/jinja_internal.h"
#include "text/jinja_value.h"

namespace qrwkv::jinja::detail {

// Namespaces are the only mutable values, so only they can form reference cycles (a namespace
// stored inside itself); emptying them all at the end frees any such cycle.
Evaluator::~Evaluator() {
  for (auto& weak : namespaces_)
    if (auto d = weak.lock()) d->items.clear();
}

void Evaluator::fail(int line, const std::string& what) const {
  throw Error(program_.name + " line " + std::to_string(line) + ": " + what);
}

void Evaluator::too_many_steps(int line) const {
  fail(line, "template takes too long to render (more than " + std::to_string(limits_.max_steps) +
                 " steps)");
}

void Evaluator::too_large(int line) const {
  fail(line,
       "output is too large (more than " + std::to_string(limits_.max_output_bytes) + " bytes)");
}

void Evaluator::too_many_items(int line) const {
  fail(line, "list is too long (more than " + std::to_string(limits_.max_items) + " items)");
}

void Evaluator::too_deep(int line) const {
  fail(line, "lists and dicts nest too deeply (more than " + std::to_string(kMaxValueNesting) +
                 " levels)");
}

std::string Evaluator::render(const ordered_json& vars) {
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

void Evaluator::install_globals(Scope& g) {
  for (const auto& [name, fn] : globals()) g.set(name, make_func(name, fn));
}

Value make_func(const std::string& name, std::function<Value(Evaluator&, CallArgs&, int line)> fn) {
  Value f;
  f.type = Value::Type::kFunc;
  f.func = std::make_shared<Callable>();
  f.func->name = name;
  f.func->fn = std::move(fn);
  return f;
}

// ---- values ----

void Evaluator::undefined_error(const Value& v, int line) const {
  fail(line, v.s.empty() ? std::string("value is undefined") : v.s);
}

std::vector<Value> Evaluator::iterate(const Value& v, int line) {
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

int64_t Evaluator::length(const Value& v, int line) {
  switch (v.type) {
    case Value::Type::kUndefined:
      return 0;
    case Value::Type::kStr:
      return static_cast<int64_t>(tok::char_count(v.s));
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

Value Evaluator::getattr(const Value& obj, const std::string& name, int line) {
  if (obj.is_undefined()) undefined_error(obj, line);
  if (find_method(obj, name) != nullptr) return bound_method(obj, name);
  if (obj.is_dict())
    if (const Value* v = obj.dict->find(name)) return *v;
  return Value::undefined("'" + describe_object(obj) + "' has no attribute '" + name + "'");
}

std::string Evaluator::describe_object(const Value& obj) {
  if (obj.is_none()) return "None";
  return type_name(obj) + " object";
}

Value Evaluator::getitem(const Value& obj, const Value& key, int line) {
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

Value Evaluator::slice(const Value& obj, const Value& start_v, const Value& stop_v,
                       const Value& step_v, int line) {
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

bool Evaluator::contains(const Value& container, const Value& item, int line) {
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

Value Evaluator::arith(BinOp op, const Value& a, const Value& b, int line) {
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
          if (y < 0) return Value::number(std::pow(static_cast<double>(x), static_cast<double>(y)));
          int64_t result = 1, base = x;
          int64_t e = y;
          while (e > 0) {
            if (e & 1)
              if (__builtin_mul_overflow(result, base, &result)) fail(line, "integer overflow");
            e >>= 1;
            if (e > 0 && __builtin_mul_overflow(base, base, &base)) fail(line, "integer overflow");
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
      for (int64_t k = 0; k < n; ++k) items.insert(items.end(), seq.list->begin(), seq.list->end());
      return Value::make_list(std::move(items), seq.tuple);
    }
  }
  if (op == BinOp::kMod && a.is_str()) return Value::str(percent_format(*this, a.s, b, line));
  fail(line, std::string("unsupported operand type(s) for ") + sym + ": '" + type_name(a) +
                 "' and '" + type_name(b) + "'");
}

bool Evaluator::compare(const std::string& op, const Value& a, const Value& b, int line) {
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

CallArgs Evaluator::eval_args(const Expr& e, size_t first, Scope& scope) {
  CallArgs args;
  for (size_t k = first; k < e.children.size(); ++k)
    args.positional.push_back(eval(*e.children[k], scope));
  for (const auto& kv : e.kwargs) args.keyword.emplace_back(kv.first, eval(*kv.second, scope));
  return args;
}

Value Evaluator::apply_filter(const std::string& name, const Value& operand, CallArgs& args,
                              int line) {
  if (operand.is_str()) tick(line, operand.s.size() / 256);
  auto it = filters().find(name);
  if (it == filters().end()) fail(line, "unknown filter '" + name + "'");
  return it->second(*this, operand, args, line);
}

bool Evaluator::apply_test(const std::string& name, const Value& operand, CallArgs& args,
                           int line) {
  auto it = tests().find(name);
  if (it == tests().end()) fail(line, "unknown test '" + name + "'");
  return it->second(*this, operand, args, line);
}

Value Evaluator::call(const Value& callee, CallArgs& args, int line) {
  if (callee.is_undefined()) undefined_error(callee, line);
  if (!callee.is_func()) fail(line, "'" + type_name(callee) + "' object is not callable");
  tick(line);
  return callee.func->fn(*this, args, line);
}

// Evaluates a filter expression whose innermost operand is `operand` (filter blocks).
Value Evaluator::eval_filter_chain(const Expr& e, const Value& operand, Scope& scope) {
  Value inner = e.children[0] ? eval_filter_chain(*e.children[0], operand, scope) : operand;
  CallArgs args = eval_args(e, 1, scope);
  return apply_filter(e.name, inner, args, e.line);
}

Value Evaluator::eval(const Expr& e, Scope& scope) {
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
        if (find_method(obj, callee.name) != nullptr) {
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

void Evaluator::write(const std::string& s, int line) {
  if (out_->size() + s.size() > limits_.max_output_bytes) check_size(out_->size() + s.size(), line);
  tick(line, s.size() / 256);
  out_->append(s);
}

std::string Evaluator::capture(const Body& body, Scope& scope) {
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

void Evaluator::assign(const std::vector<std::string>& targets, const Value& v, Scope& scope,
                       int line) {
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

Flow Evaluator::exec_body(const Body& body, Scope& scope) {
  for (const auto& s : body) {
    Flow f = exec(*s, scope);
    if (f != Flow::kNormal) return f;
  }
  return Flow::kNormal;
}

Flow Evaluator::exec(const Stmt& s, Scope& scope) {
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
        return ev.invoke(*stmt, a, line, call_scope);
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

Flow Evaluator::exec_for(const Stmt& s, Scope& scope) {
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

Value Evaluator::make_macro(const Stmt& s) {
  Value f;
  f.type = Value::Type::kFunc;
  f.func = std::make_shared<Callable>();
  f.func->name = "macro " + s.name;
  f.func->macro = &s;
  const Stmt* stmt = &s;
  f.func->fn = [stmt](Evaluator& ev, CallArgs& a, int line) {
    return ev.invoke(*stmt, a, line, ev.root_);
  };
  return f;
}

// Runs a macro (or a call block's body as `caller`) with its arguments bound.
Value Evaluator::invoke(const Stmt& s, CallArgs& args, int line, Scope* parent) {
  if (call_depth_ >= limits_.max_call_depth)
    fail(line,
         "macro calls nest too deeply (more than " + std::to_string(limits_.max_call_depth) + ")");
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
      scope.set(s.params[k], Value::undefined("parameter '" + s.params[k] + "' was not provided"));
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
