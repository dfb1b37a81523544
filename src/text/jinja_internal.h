// Internals of the Jinja engine shared by the parser (jinja_parse.cpp) and the evaluator
// (jinja_evaluator.h and its files): the runtime Value, the syntax tree and the parse entry
// point.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja.h"

namespace qrwkv::jinja::detail {

struct Value;
struct Dict;
struct Callable;
class Evaluator;

using List = std::vector<Value>;

// A runtime value with Python-like semantics. Lists and dicts are shared by reference as in
// Python; only namespaces are ever mutated (the sandbox is immutable).
struct Value {
  enum class Type : uint8_t { kUndefined, kNone, kBool, kInt, kFloat, kStr, kList, kDict, kFunc };
  Type type = Type::kUndefined;
  bool tuple = false;  // a kList that came from a tuple (prints as "(a, b)")
  // Height of nested lists and dicts below this value; bounded so that comparisons, printing
  // and destruction of values built up in loops cannot overflow the stack.
  uint32_t nest = 0;
  // A kList standing for a Python generator or iterator (what map, select, batch, ... return
  // in jinja2): always true in a test and without a length.
  bool lazy = false;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;  // kStr: the text; kUndefined: the message used when it is misused
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;
  std::shared_ptr<Callable> func;

  static Value undefined(std::string hint) {
    Value v;
    v.s = std::move(hint);
    return v;
  }
  static Value none() {
    Value v;
    v.type = Type::kNone;
    return v;
  }
  static Value boolean(bool x) {
    Value v;
    v.type = Type::kBool;
    v.b = x;
    return v;
  }
  static Value integer(int64_t x) {
    Value v;
    v.type = Type::kInt;
    v.i = x;
    return v;
  }
  static Value number(double x) {
    Value v;
    v.type = Type::kFloat;
    v.f = x;
    return v;
  }
  static Value str(std::string x) {
    Value v;
    v.type = Type::kStr;
    v.s = std::move(x);
    return v;
  }
  static Value make_list(List items, bool is_tuple = false) {
    Value v;
    v.type = Type::kList;
    v.tuple = is_tuple;
    for (const auto& e : items) v.nest = std::max(v.nest, e.nest + 1);
    v.list = std::make_shared<List>(std::move(items));
    return v;
  }
  static Value make_dict(std::shared_ptr<Dict> d);

  bool is_undefined() const { return type == Type::kUndefined; }
  bool is_none() const { return type == Type::kNone; }
  bool is_str() const { return type == Type::kStr; }
  bool is_list() const { return type == Type::kList; }
  bool is_dict() const { return type == Type::kDict; }
  bool is_func() const { return type == Type::kFunc; }
  // Python numbers include bool.
  bool is_number() const {
    return type == Type::kInt || type == Type::kFloat || type == Type::kBool;
  }
  bool is_integral() const { return type == Type::kInt || type == Type::kBool; }
  int64_t as_int() const { return type == Type::kBool ? (b ? 1 : 0) : i; }
  double as_double() const { return type == Type::kFloat ? f : static_cast<double>(as_int()); }
};

// An insertion-ordered mapping with string keys (JSON objects keep their key order, which
// tojson must reproduce). Namespaces are dicts that allow attribute assignment.
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  bool is_namespace = false;

  const Value* find(const std::string& key) const {
    for (const auto& kv : items)
      if (kv.first == key) return &kv.second;
    return nullptr;
  }
  void set(const std::string& key, Value v) {
    for (auto& kv : items)
      if (kv.first == key) {
        kv.second = std::move(v);
        return;
      }
    items.emplace_back(key, std::move(v));
  }
};

inline Value Value::make_dict(std::shared_ptr<Dict> d) {
  Value v;
  v.type = Type::kDict;
  for (const auto& kv : d->items) v.nest = std::max(v.nest, kv.second.nest + 1);
  v.dict = std::move(d);
  return v;
}

// Deepest nesting of lists and dicts a value may have.
constexpr uint32_t kMaxValueNesting = 512;

// Arguments of a call as written: positional then keyword.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

struct Stmt;

struct Callable {
  std::string name;
  const Stmt* macro = nullptr;  // the definition, for macros
  std::function<Value(Evaluator&, CallArgs&, int line)> fn;
};

// ---- syntax tree ----

struct Expr;
struct Stmt;
using ExprPtr = std::unique_ptr<Expr>;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

enum class BinOp : uint8_t { kAdd, kSub, kMul, kDiv, kFloorDiv, kMod, kPow, kConcat };

struct Expr {
  enum class Kind : uint8_t {
    kConst,
    kName,
    kList,
    kTuple,
    kDict,     // children alternate key, value
    kGetattr,  // children[0].name
    kGetitem,  // children[0][children[1]]
    kSlice,    // children[0][children[1]:children[2]:children[3]] (null parts allowed)
    kCall,     // children[0](children[1..], kwargs)
    kFilter,   // name(children[0], children[1..], kwargs); children[0] null in filter blocks
    kTest,     // children[0] is name(children[1..]); `negated` for "is not"
    kNot,
    kNeg,
    kPos,
    kBinary,   // children[0] op children[1]
    kCompare,  // children[0] ops[0] children[1] ops[1] children[2] ...
    kAnd,
    kOr,
    kCond,  // children[1] if children[0] else children[2] (children[2] may be null)
  };
  Kind kind;
  int line = 0;
  int depth = 1;  // height of this subtree, bounded so evaluation cannot overflow the stack
  BinOp op = BinOp::kAdd;
  bool negated = false;
  std::string name;
  Value value;
  std::vector<ExprPtr> children;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;
};

struct Stmt {
  enum class Kind : uint8_t {
    kText,
    kPrint,
    kIf,           // branches: (condition or null for else, body)
    kFor,          // targets in expr [if filter]: body [else else_body]
    kSet,          // targets = expr, or target.attr = expr when attr is set
    kSetBlock,     // targets[0] = rendered body
    kMacro,        // name(params = defaults): body
    kCallBlock,    // expr (a call) with `caller` rendering body; params are caller's
    kFilterBlock,  // expr is a filter chain applied to the rendered body
    kBreak,
    kContinue,
    kScope,  // body rendered in place (generation blocks, with)
  };
  Kind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;
  std::vector<std::pair<ExprPtr, Body>> branches;
  std::vector<std::string> targets;
  std::string attr;
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // one per param, null where none
  Body body;
  Body else_body;
  bool uses_caller = false;  // kMacro: the body mentions `caller`
};

struct Program {
  std::string name;
  Limits limits;
  Body body;
};

// Whether a filter or test of this name exists (unknown ones are syntax errors, as in jinja2).
bool is_known_filter(const std::string& name);
bool is_known_test(const std::string& name);

// Parses a template; throws qrwkv::Error "<name> line N: ...".
std::shared_ptr<Program> parse_template(std::string_view source, const std::string& name,
                                        const Limits& limits);

}  // namespace qrwkv::jinja::detail
