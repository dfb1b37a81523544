// Lexer and parser of the Jinja engine. The lexer reproduces jinja2's whitespace handling with
// trim_blocks and lstrip_blocks on (as transformers configures it); the parser is a recursive
// descent over the same grammar and operator precedence as jinja2's parser.
#include <algorithm>
#include <cstring>
#include <initializer_list>

#include "io/error.h"
#include "text/jinja_internal.h"
#include "text/tok_utf8.h"

namespace qrwkv::jinja::detail {

namespace {

enum class Tok : uint8_t {
  kText,
  kBlockBegin,
  kBlockEnd,
  kVarBegin,
  kVarEnd,
  kName,
  kString,
  kInt,
  kFloat,
  kOp,
  kEof
};

struct Token {
  Tok type;
  int line;
  std::string text;  // text data, name, operator or decoded string
  int64_t i = 0;
  double f = 0;
};

[[noreturn]] void syntax_error(const std::string& name, int line, const std::string& what) {
  throw Error(name + " line " + std::to_string(line) + ": " + what);
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

using tok::append_utf8;

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class Lexer {
 public:
  Lexer(std::string_view source, const std::string& name) : name_(name) {
    // jinja2 turns every \r\n and \r into \n and drops one trailing newline
    // (keep_trailing_newline is off).
    src_.reserve(source.size());
    for (size_t k = 0; k < source.size(); ++k) {
      if (source[k] == '\r') {
        src_ += '\n';
        if (k + 1 < source.size() && source[k + 1] == '\n') ++k;
      } else {
        src_ += source[k];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Token> run() {
    while (pos_ < src_.size()) {
      size_t k = find_tag_start(pos_);
      if (k == std::string::npos) {
        emit_text(src_.substr(pos_));
        pos_ = src_.size();
        break;
      }
      char kind = src_[k + 1];
      char sign =
          k + 2 < src_.size() && (src_[k + 2] == '-' || src_[k + 2] == '+') ? src_[k + 2] : '\0';
      std::string text = src_.substr(pos_, k - pos_);
      int text_newlines = static_cast<int>(std::count(text.begin(), text.end(), '\n'));
      if (sign == '-') {
        size_t e = text.size();
        while (e > 0 && is_space(text[e - 1])) --e;
        text.resize(e);
      } else if (sign != '+' && kind != '{') {
        lstrip(text);
      }
      emit_text(std::move(text));
      line_ += text_newlines;
      pos_ = k + 2 + (sign ? 1 : 0);
      if (kind == '#') {
        lex_comment();
      } else if (kind == '%' && try_raw()) {
        // handled
      } else {
        lex_tag(kind == '%');
      }
    }
    tokens_.push_back({Tok::kEof, line_, ""});
    return std::move(tokens_);
  }

 private:
  size_t find_tag_start(size_t from) const {
    for (size_t k = src_.find('{', from); k != std::string::npos; k = src_.find('{', k + 1)) {
      if (k + 1 < src_.size() && (src_[k + 1] == '{' || src_[k + 1] == '%' || src_[k + 1] == '#'))
        return k;
    }
    return std::string::npos;
  }

  // lstrip_blocks: whitespace between the start of a line and a block or comment tag goes.
  void lstrip(std::string& text) const {
    size_t nl = text.rfind('\n');
    size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
    if (l_pos == 0 && !line_starting_) return;
    if (l_pos == text.size()) return;
    for (size_t j = l_pos; j < text.size(); ++j)
      if (!is_space(text[j])) return;
    text.resize(l_pos);
  }

  void emit_text(std::string text) {
    if (!text.empty()) tokens_.push_back({Tok::kText, line_, std::move(text)});
  }

  // Consumes the rest of a tag end ("%}" or "#}" already matched at pos_ - 2) per its sign.
  void finish_end(char sign, bool trim) {
    size_t start = pos_;
    if (sign == '-') {
      while (pos_ < src_.size() && is_space(src_[pos_])) ++pos_;
    } else if (sign != '+' && trim && pos_ < src_.size() && src_[pos_] == '\n') {
      ++pos_;
    }
    line_ += static_cast<int>(std::count(src_.begin() + start, src_.begin() + pos_, '\n'));
    // A tag whose end swallowed a newline leaves the next text at the start of a line.
    line_starting_ = pos_ > 0 && src_[pos_ - 1] == '\n' && pos_ > start;
  }

  void lex_comment() {
    size_t e = src_.find("#}", pos_);
    if (e == std::string::npos) syntax_error(name_, line_, "missing end of comment tag");
    char sign = e > pos_ && (src_[e - 1] == '-' || src_[e - 1] == '+') ? src_[e - 1] : '\0';
    line_ += static_cast<int>(std::count(src_.begin() + pos_, src_.begin() + e, '\n'));
    pos_ = e + 2;
    finish_end(sign, true);
  }

  bool starts_with_at(size_t p, const char* s) const {
    size_t n = std::strlen(s);
    return p + n <= src_.size() && src_.compare(p, n, s) == 0;
  }

  // Matches `\s*<word>\s*(-%}|+%}|%})` at p; returns the position after "%}" and the sign.
  bool match_word_tag(size_t p, const char* word, size_t* end, char* sign) const {
    while (p < src_.size() && is_space(src_[p])) ++p;
    if (!starts_with_at(p, word)) return false;
    p += std::strlen(word);
    size_t q = p;
    while (p < src_.size() && is_space(src_[p])) ++p;
    char sg = '\0';
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sg = src_[p++];
    if (!starts_with_at(p, "%}")) return false;
    // "rawx" is not "raw".
    if (q == p - (sg ? 1 : 0) && q < src_.size() &&
        (std::isalnum(static_cast<unsigned char>(src_[q])) || src_[q] == '_'))
      return false;
    *end = p + 2;
    *sign = sg;
    return true;
  }

  bool try_raw() {
    size_t after;
    char sign;
    if (!match_word_tag(pos_, "raw", &after, &sign)) return false;
    line_ += static_cast<int>(std::count(src_.begin() + pos_, src_.begin() + after, '\n'));
    pos_ = after;
    // The raw begin tag takes no trim_blocks newline, only "-%}" whitespace.
    if (sign == '-') {
      while (pos_ < src_.size() && is_space(src_[pos_])) {
        if (src_[pos_] == '\n') ++line_;
        ++pos_;
      }
    }
    for (size_t k = src_.find("{%", pos_); k != std::string::npos; k = src_.find("{%", k + 1)) {
      size_t p = k + 2;
      char inner = '\0';
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) inner = src_[p++];
      size_t end;
      char end_sign;
      if (!match_word_tag(p, "endraw", &end, &end_sign)) continue;
      std::string text = src_.substr(pos_, k - pos_);
      int newlines = static_cast<int>(std::count(text.begin(), text.end(), '\n'));
      if (inner == '-') {
        size_t e = text.size();
        while (e > 0 && is_space(text[e - 1])) --e;
        text.resize(e);
      } else if (inner != '+') {
        lstrip(text);
      }
      emit_text(std::move(text));
      line_ += newlines;
      line_ += static_cast<int>(std::count(src_.begin() + k, src_.begin() + end, '\n'));
      pos_ = end;
      finish_end(end_sign, true);
      return true;
    }
    syntax_error(name_, line_, "missing end of raw directive");
  }

  void lex_tag(bool block) {
    tokens_.push_back({block ? Tok::kBlockBegin : Tok::kVarBegin, line_, ""});
    int balance = 0;
    bool prev_dot = false;
    while (true) {
      if (pos_ >= src_.size())
        syntax_error(
            name_, line_,
            std::string("unexpected end of template, expected '") + (block ? "%}" : "}}") + "'");
      if (balance == 0) {
        const char* close = block ? "%}" : "}}";
        char sign = '\0';
        size_t p = pos_;
        if (src_[p] == '-' || (block && src_[p] == '+')) sign = src_[p++];
        if (starts_with_at(p, close)) {
          tokens_.push_back({block ? Tok::kBlockEnd : Tok::kVarEnd, line_, ""});
          pos_ = p + 2;
          finish_end(sign, block);
          return;
        }
      }
      char c = src_[pos_];
      if (is_space(c)) {
        if (c == '\n') ++line_;
        ++pos_;
        continue;
      }
      bool after_dot = prev_dot;
      prev_dot = false;
      if (std::isdigit(static_cast<unsigned char>(c))) {
        lex_number(after_dot);
        continue;
      }
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t s = pos_;
        while (pos_ < src_.size() &&
               (std::isalnum(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_'))
          ++pos_;
        tokens_.push_back({Tok::kName, line_, src_.substr(s, pos_ - s)});
        continue;
      }
      if (c == '\'' || c == '"') {
        lex_string();
        continue;
      }
      static const char* const kTwo[] = {"//", "**", "==", "!=", ">=", "<="};
      std::string op;
      for (const char* two : kTwo)
        if (starts_with_at(pos_, two)) op = two;
      if (op.empty() && std::strchr("+-/*%~[](){}><=.:|,;", c) != nullptr) op = std::string(1, c);
      if (op.empty()) syntax_error(name_, line_, std::string("unexpected character '") + c + "'");
      if (op == "(" || op == "[" || op == "{") ++balance;
      if (op == ")" || op == "]" || op == "}") {
        if (balance == 0) syntax_error(name_, line_, "unexpected '" + op + "'");
        --balance;
      }
      prev_dot = op == ".";
      pos_ += op.size();
      tokens_.push_back({Tok::kOp, line_, op});
    }
  }

  static std::string digits_without_underscores(const std::string& s) {
    std::string r;
    for (char ch : s)
      if (ch != '_') r += ch;
    return r;
  }

  void lex_number(bool after_dot) {
    size_t s = pos_;
    auto digits = [&](size_t p) {
      // (\d+_)*\d+
      size_t q = p;
      while (q < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[q])) ||
                                 (src_[q] == '_' && q + 1 < src_.size() &&
                                  std::isdigit(static_cast<unsigned char>(src_[q + 1])) && q > p)))
        ++q;
      return q;
    };
    // Radix prefixes.
    if (src_[s] == '0' && s + 1 < src_.size() && std::strchr("bBoOxX", src_[s + 1]) != nullptr) {
      int base = std::tolower(src_[s + 1]) == 'b' ? 2 : std::tolower(src_[s + 1]) == 'o' ? 8 : 16;
      size_t q = s + 2;
      uint64_t v = 0;
      bool any = false;
      while (q < src_.size()) {
        char ch = src_[q];
        if (ch == '_') {
          ++q;
          continue;
        }
        int d = hex_value(ch);
        if (d < 0 || d >= base) break;
        if (v > (uint64_t{1} << 62)) syntax_error(name_, line_, "integer literal too large");
        v = v * base + d;
        any = true;
        ++q;
      }
      if (any) {
        Token t{Tok::kInt, line_, src_.substr(s, q - s)};
        t.i = static_cast<int64_t>(v);
        tokens_.push_back(t);
        pos_ = q;
        return;
      }
    }
    size_t int_end = digits(s);
    size_t q = int_end;
    bool is_float = false;
    if (!after_dot) {
      size_t r = q;
      bool frac = false;
      if (r + 1 < src_.size() && src_[r] == '.' &&
          std::isdigit(static_cast<unsigned char>(src_[r + 1]))) {
        r = digits(r + 1);
        frac = true;
      }
      size_t e = r;
      bool expo = false;
      if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
        size_t t = e + 1;
        if (t < src_.size() && (src_[t] == '+' || src_[t] == '-')) ++t;
        if (t < src_.size() && std::isdigit(static_cast<unsigned char>(src_[t]))) {
          e = digits(t);
          expo = true;
        }
      }
      if (expo) {
        q = e;
        is_float = true;
      } else if (frac) {
        q = r;
        is_float = true;
      }
    }
    std::string text = digits_without_underscores(src_.substr(s, q - s));
    Token t{is_float ? Tok::kFloat : Tok::kInt, line_, text};
    if (is_float) {
      t.f = std::strtod(text.c_str(), nullptr);
    } else {
      if (text.size() > 18) syntax_error(name_, line_, "integer literal too large");
      t.i = std::stoll(text);
    }
    tokens_.push_back(t);
    pos_ = q;
  }

  void lex_string() {
    char quote = src_[pos_];
    int start_line = line_;
    size_t p = pos_ + 1;
    std::string out;
    while (true) {
      if (p >= src_.size()) syntax_error(name_, start_line, "unterminated string literal");
      char c = src_[p];
      if (c == quote) break;
      if (c == '\n') ++line_;
      if (c != '\\') {
        out += c;
        ++p;
        continue;
      }
      if (p + 1 >= src_.size()) syntax_error(name_, start_line, "unterminated string literal");
      char e = src_[p + 1];
      p += 2;
      switch (e) {
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'v':
          out += '\v';
          break;
        case '\n':
          ++line_;
          break;  // a backslash-newline continues the line
        case 'x':
        case 'u':
        case 'U': {
          int n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          uint32_t cp = 0;
          for (int k = 0; k < n; ++k) {
            int d = p < src_.size() ? hex_value(src_[p]) : -1;
            if (d < 0) syntax_error(name_, line_, std::string("truncated \\") + e + " escape");
            cp = cp * 16 + d;
            ++p;
          }
          if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            syntax_error(name_, line_, "illegal Unicode character in string escape");
          append_utf8(out, cp);
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = e - '0';
            for (int k = 0; k < 2 && p < src_.size() && src_[p] >= '0' && src_[p] <= '7'; ++k)
              cp = cp * 8 + (src_[p++] - '0');
            append_utf8(out, cp);
          } else {
            // Python keeps unknown escapes such as "\d" as written.
            out += '\\';
            out += e;
          }
      }
    }
    pos_ = p + 1;
    tokens_.push_back({Tok::kString, start_line, std::move(out)});
  }

  const std::string& name_;
  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  bool line_starting_ = true;
  std::vector<Token> tokens_;
};

// ---- parser ----

bool mentions(const Body& body, const std::string& var);

class Parser {
 public:
  Parser(std::vector<Token> tokens, const std::string& name, const Limits& limits)
      : toks_(std::move(tokens)), name_(name), limits_(limits) {}

  Body parse_all() {
    std::string end;
    Body body = parse_body({}, &end, 0);
    return body;
  }

 private:
  struct Depth {
    Depth(Parser& p, int line) : p_(p) {
      if (++p_.depth_ > p_.limits_.max_nesting)
        p_.fail(line, "template nesting is too deep (more than " +
                          std::to_string(p_.limits_.max_nesting) + " levels)");
    }
    ~Depth() { --p_.depth_; }
    Parser& p_;
  };

  [[noreturn]] void fail(int line, const std::string& what) const {
    syntax_error(name_, line, what);
  }

  const Token& cur() const { return toks_[i_]; }
  const Token& peek(size_t k = 1) const { return toks_[std::min(i_ + k, toks_.size() - 1)]; }
  void next() {
    if (i_ + 1 < toks_.size()) ++i_;
  }
  bool is_op(const char* op) const { return cur().type == Tok::kOp && cur().text == op; }
  bool is_name(const char* n) const { return cur().type == Tok::kName && cur().text == n; }

  std::string describe(const Token& t) const {
    switch (t.type) {
      case Tok::kBlockEnd:
        return "end of statement block";
      case Tok::kVarEnd:
        return "end of print statement";
      case Tok::kEof:
        return "end of template";
      case Tok::kString:
        return "string";
      case Tok::kInt:
      case Tok::kFloat:
        return "number " + t.text;
      default:
        return "'" + t.text + "'";
    }
  }

  void expect_op(const char* op) {
    if (!is_op(op)) fail(cur().line, std::string("expected '") + op + "', got " + describe(cur()));
    next();
  }
  void expect_block_end() {
    if (cur().type != Tok::kBlockEnd) fail(cur().line, "expected '%}', got " + describe(cur()));
    next();
  }
  std::string expect_name() {
    if (cur().type != Tok::kName) fail(cur().line, "expected a name, got " + describe(cur()));
    std::string n = cur().text;
    next();
    return n;
  }

  ExprPtr node(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }
  // Recomputes the subtree height; left-leaning chains ("a + b + c + ...") grow without parser
  // recursion, so the height is what bounds the evaluator's recursion.
  ExprPtr finish(ExprPtr e) {
    int d = 0;
    for (const auto& c : e->children)
      if (c) d = std::max(d, c->depth);
    for (const auto& kv : e->kwargs) d = std::max(d, kv.second->depth);
    e->depth = d + 1;
    if (e->depth > limits_.max_nesting * 4) fail(e->line, "expression is too deeply nested");
    return e;
  }

  // ---- statements ----

  // Parses until a block tag whose name is in `ends` (consumed up to and including that name,
  // stored in *end) or, when ends is empty, until the end of the template.
  Body parse_body(std::initializer_list<const char*> ends, std::string* end, int open_line,
                  const char* what = nullptr) {
    Depth guard(*this, cur().line);
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.type == Tok::kEof) {
        if (ends.size() == 0) return body;
        fail(t.line, std::string("unexpected end of template; the ") + what + " on line " +
                         std::to_string(open_line) + " is not closed");
      }
      if (t.type == Tok::kText) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kText;
        s->line = t.line;
        s->text = t.text;
        body.push_back(std::move(s));
        next();
        continue;
      }
      if (t.type == Tok::kVarBegin) {
        next();
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kPrint;
        s->line = t.line;
        s->expr = parse_tuple(true, false, {});
        if (cur().type != Tok::kVarEnd) fail(cur().line, "expected '}}', got " + describe(cur()));
        next();
        body.push_back(std::move(s));
        continue;
      }
      if (t.type != Tok::kBlockBegin) fail(t.line, "unexpected " + describe(t));
      next();
      if (cur().type != Tok::kName) fail(cur().line, "expected a tag name, got " + describe(cur()));
      const std::string tag = cur().text;
      for (const char* e : ends)
        if (tag == e) {
          next();
          *end = tag;
          return body;
        }
      body.push_back(parse_statement());
    }
  }

  StmtPtr parse_statement() {
    const Token& t = cur();
    const std::string tag = t.text;
    const int line = t.line;
    next();
    auto s = std::make_unique<Stmt>();
    s->line = line;
    std::string end;
    if (tag == "if") {
      s->kind = Stmt::Kind::kIf;
      ExprPtr cond = parse_tuple(false, false, {});
      while (true) {
        expect_block_end();
        Body body = parse_body({"elif", "else", "endif"}, &end, line, "if");
        s->branches.emplace_back(std::move(cond), std::move(body));
        if (end == "elif") {
          cond = parse_tuple(false, false, {});
          continue;
        }
        if (end == "else") {
          expect_block_end();
          Body else_body = parse_body({"endif"}, &end, line, "if");
          s->branches.emplace_back(nullptr, std::move(else_body));
        }
        break;
      }
      expect_block_end();
    } else if (tag == "for") {
      s->kind = Stmt::Kind::kFor;
      s->targets = parse_targets("in");
      if (!is_name("in")) fail(cur().line, "expected 'in', got " + describe(cur()));
      next();
      s->expr = parse_tuple(false, false, {"recursive"});
      if (is_name("if")) {
        next();
        s->filter = parse_expression(true);
      }
      if (is_name("recursive")) fail(cur().line, "recursive loops are not supported");
      expect_block_end();
      s->body = parse_body({"endfor", "else"}, &end, line, "for");
      if (end == "else") {
        expect_block_end();
        s->else_body = parse_body({"endfor"}, &end, line, "for");
      }
      expect_block_end();
    } else if (tag == "set") {
      if (cur().type == Tok::kName && peek().type == Tok::kOp && peek().text == "." &&
          peek(2).type == Tok::kName) {
        s->kind = Stmt::Kind::kSet;
        s->targets.push_back(cur().text);
        s->attr = peek(2).text;
        next();
        next();
        next();
        expect_op("=");
        s->expr = parse_tuple(true, false, {});
        expect_block_end();
      } else {
        s->targets = parse_targets(nullptr);
        if (is_op("=")) {
          next();
          s->kind = Stmt::Kind::kSet;
          s->expr = parse_tuple(true, false, {});
          expect_block_end();
        } else {
          if (s->targets.size() != 1) fail(line, "a block set needs a single name");
          s->kind = Stmt::Kind::kSetBlock;
          if (is_op("|")) s->filter = parse_filter_chain(nullptr);
          expect_block_end();
          s->body = parse_body({"endset"}, &end, line, "set");
          expect_block_end();
        }
      }
    } else if (tag == "macro") {
      s->kind = Stmt::Kind::kMacro;
      s->name = expect_name();
      parse_params(*s);
      expect_block_end();
      s->body = parse_body({"endmacro"}, &end, line, "macro");
      s->uses_caller = mentions(s->body, "caller");
      if (cur().type == Tok::kName) next();  // {% endmacro name %}
      expect_block_end();
    } else if (tag == "call") {
      s->kind = Stmt::Kind::kCallBlock;
      if (is_op("(")) parse_params(*s);
      s->expr = parse_expression(true);
      if (s->expr->kind != Expr::Kind::kCall) fail(line, "expected a call in the call block");
      expect_block_end();
      s->body = parse_body({"endcall"}, &end, line, "call");
      expect_block_end();
    } else if (tag == "filter") {
      s->kind = Stmt::Kind::kFilterBlock;
      s->filter = parse_filter_chain(nullptr, /*leading_pipe=*/false);
      expect_block_end();
      s->body = parse_body({"endfilter"}, &end, line, "filter");
      expect_block_end();
    } else if (tag == "break" || tag == "continue") {
      s->kind = tag == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
      expect_block_end();
    } else if (tag == "generation") {
      s->kind = Stmt::Kind::kScope;
      expect_block_end();
      s->body = parse_body({"endgeneration"}, &end, line, "generation");
      expect_block_end();
    } else {
      static const char* const kEnds[] = {"endif",   "endfor",       "endset", "endmacro",
                                          "endcall", "endfilter",    "elif",   "else",
                                          "endraw",  "endgeneration"};
      for (const char* e : kEnds)
        if (tag == e) fail(line, "unexpected '" + tag + "' tag");
      fail(line, "unknown tag '" + tag + "'");
    }
    return s;
  }

  // Names for a for/set target: "a", "a, b" or "(a, b)".
  std::vector<std::string> parse_targets(const char* end_word) {
    std::vector<std::string> names;
    bool paren = is_op("(");
    if (paren) next();
    while (true) {
      names.push_back(expect_name());
      if (!is_op(",")) break;
      next();
      if ((paren && is_op(")")) || (end_word && is_name(end_word))) break;
    }
    if (paren) expect_op(")");
    return names;
  }

  void parse_params(Stmt& s) {
    expect_op("(");
    while (!is_op(")")) {
      if (!s.params.empty()) expect_op(",");
      if (is_op(")")) break;
      s.params.push_back(expect_name());
      if (is_op("=")) {
        next();
        s.defaults.push_back(parse_expression(true));
      } else {
        s.defaults.push_back(nullptr);
      }
    }
    next();
  }

  // ---- expressions ----

  bool is_tuple_end(std::initializer_list<const char*> extra) const {
    if (cur().type == Tok::kVarEnd || cur().type == Tok::kBlockEnd || cur().type == Tok::kEof)
      return true;
    if (is_op(")")) return true;
    for (const char* e : extra)
      if (is_name(e)) return true;
    return false;
  }

  ExprPtr parse_tuple(bool with_condexpr, bool explicit_parens,
                      std::initializer_list<const char*> extra) {
    int line = cur().line;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end(extra)) break;
      items.push_back(parse_expression(with_condexpr));
      if (is_op(","))
        is_tuple = true;
      else
        break;
    }
    if (!is_tuple) {
      if (items.size() == 1) return std::move(items[0]);
      if (!explicit_parens) fail(cur().line, "expected an expression, got " + describe(cur()));
    }
    auto e = node(Expr::Kind::kTuple, line);
    e->children = std::move(items);
    return finish(std::move(e));
  }

  ExprPtr parse_expression(bool with_condexpr) {
    Depth guard(*this, cur().line);
    if (!with_condexpr) return parse_or();
    ExprPtr e = parse_or();
    while (is_name("if")) {
      int line = cur().line;
      next();
      ExprPtr cond = parse_or();
      ExprPtr other;
      if (is_name("else")) {
        next();
        other = parse_expression(true);
      }
      auto c = node(Expr::Kind::kCond, line);
      c->children.push_back(std::move(cond));
      c->children.push_back(std::move(e));
      c->children.push_back(std::move(other));
      e = finish(std::move(c));
    }
    return e;
  }

  ExprPtr binary(Expr::Kind kind, ExprPtr a, ExprPtr b, int line) {
    auto e = node(kind, line);
    e->children.push_back(std::move(a));
    e->children.push_back(std::move(b));
    return finish(std::move(e));
  }

  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (is_name("or")) {
      int line = cur().line;
      next();
      e = binary(Expr::Kind::kOr, std::move(e), parse_and(), line);
    }
    return e;
  }

  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (is_name("and")) {
      int line = cur().line;
      next();
      e = binary(Expr::Kind::kAnd, std::move(e), parse_not(), line);
    }
    return e;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      Depth guard(*this, cur().line);
      auto e = node(Expr::Kind::kNot, cur().line);
      next();
      e->children.push_back(parse_not());
      return finish(std::move(e));
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    int line = cur().line;
    ExprPtr first = parse_math1();
    std::vector<std::string> ops;
    std::vector<ExprPtr> operands;
    while (true) {
      std::string op;
      if (cur().type == Tok::kOp &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == "<=" ||
           cur().text == ">" || cur().text == ">=")) {
        op = cur().text;
        next();
      } else if (is_name("in")) {
        op = "in";
        next();
      } else if (is_name("not") && peek().type == Tok::kName && peek().text == "in") {
        op = "notin";
        next();
        next();
      } else {
        break;
      }
      ops.push_back(op);
      operands.push_back(parse_math1());
    }
    if (ops.empty()) return first;
    auto e = node(Expr::Kind::kCompare, line);
    e->children.push_back(std::move(first));
    for (auto& o : operands) e->children.push_back(std::move(o));
    e->ops = std::move(ops);
    return finish(std::move(e));
  }

  ExprPtr arith(BinOp op, ExprPtr a, ExprPtr b, int line) {
    auto e = node(Expr::Kind::kBinary, line);
    e->op = op;
    e->children.push_back(std::move(a));
    e->children.push_back(std::move(b));
    return finish(std::move(e));
  }

  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      BinOp op = is_op("+") ? BinOp::kAdd : BinOp::kSub;
      int line = cur().line;
      next();
      e = arith(op, std::move(e), parse_concat(), line);
    }
    return e;
  }

  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (is_op("~")) {
      int line = cur().line;
      next();
      e = arith(BinOp::kConcat, std::move(e), parse_math2(), line);
    }
    return e;
  }

  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      BinOp op = is_op("*")    ? BinOp::kMul
                 : is_op("/")  ? BinOp::kDiv
                 : is_op("//") ? BinOp::kFloorDiv
                               : BinOp::kMod;
      int line = cur().line;
      next();
      e = arith(op, std::move(e), parse_pow(), line);
    }
    return e;
  }

  ExprPtr parse_pow() {
    ExprPtr e = parse_unary(true);
    while (is_op("**")) {
      int line = cur().line;
      next();
      e = arith(BinOp::kPow, std::move(e), parse_unary(true), line);
    }
    return e;
  }

  ExprPtr parse_unary(bool with_filter) {
    Depth guard(*this, cur().line);
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      auto u = node(is_op("-") ? Expr::Kind::kNeg : Expr::Kind::kPos, cur().line);
      next();
      u->children.push_back(parse_unary(false));
      e = finish(std::move(u));
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    int line = t.line;
    switch (t.type) {
      case Tok::kName: {
        auto e = node(Expr::Kind::kConst, line);
        if (t.text == "true" || t.text == "True") {
          e->value = Value::boolean(true);
        } else if (t.text == "false" || t.text == "False") {
          e->value = Value::boolean(false);
        } else if (t.text == "none" || t.text == "None") {
          e->value = Value::none();
        } else {
          e->kind = Expr::Kind::kName;
          e->name = t.text;
        }
        next();
        return finish(std::move(e));
      }
      case Tok::kString: {
        // Adjacent string literals concatenate, as in Python.
        std::string s;
        while (cur().type == Tok::kString) {
          s += cur().text;
          next();
        }
        auto e = node(Expr::Kind::kConst, line);
        e->value = Value::str(std::move(s));
        return finish(std::move(e));
      }
      case Tok::kInt: {
        auto e = node(Expr::Kind::kConst, line);
        e->value = Value::integer(t.i);
        next();
        return finish(std::move(e));
      }
      case Tok::kFloat: {
        auto e = node(Expr::Kind::kConst, line);
        e->value = Value::number(t.f);
        next();
        return finish(std::move(e));
      }
      case Tok::kOp:
        if (t.text == "(") {
          next();
          ExprPtr e = parse_tuple(true, true, {});
          expect_op(")");
          return e;
        }
        if (t.text == "[") {
          next();
          auto e = node(Expr::Kind::kList, line);
          while (!is_op("]")) {
            if (!e->children.empty()) expect_op(",");
            if (is_op("]")) break;
            e->children.push_back(parse_expression(true));
          }
          next();
          return finish(std::move(e));
        }
        if (t.text == "{") {
          next();
          auto e = node(Expr::Kind::kDict, line);
          while (!is_op("}")) {
            if (!e->children.empty()) expect_op(",");
            if (is_op("}")) break;
            e->children.push_back(parse_expression(true));
            expect_op(":");
            e->children.push_back(parse_expression(true));
          }
          next();
          return finish(std::move(e));
        }
        break;
      default:
        break;
    }
    fail(line, "unexpected " + describe(t));
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      if (is_op(".")) {
        int line = cur().line;
        next();
        if (cur().type == Tok::kName) {
          auto g = node(Expr::Kind::kGetattr, line);
          g->name = cur().text;
          next();
          g->children.push_back(std::move(e));
          e = finish(std::move(g));
        } else if (cur().type == Tok::kInt) {
          auto g = node(Expr::Kind::kGetitem, line);
          auto idx = node(Expr::Kind::kConst, line);
          idx->value = Value::integer(cur().i);
          next();
          g->children.push_back(std::move(e));
          g->children.push_back(finish(std::move(idx)));
          e = finish(std::move(g));
        } else {
          fail(line, "expected an attribute name after '.', got " + describe(cur()));
        }
      } else if (is_op("[")) {
        e = parse_subscript(std::move(e));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr obj) {
    int line = cur().line;
    next();  // [
    std::vector<ExprPtr> parts;
    bool is_slice = false;
    // Slice syntax: [start:stop:step], each part optional.
    ExprPtr start, stop, step;
    if (!is_op(":")) start = parse_expression(true);
    if (is_op(":")) {
      is_slice = true;
      next();
      if (!is_op("]") && !is_op(":")) stop = parse_expression(true);
      if (is_op(":")) {
        next();
        if (!is_op("]")) step = parse_expression(true);
      }
    } else if (is_op(",")) {
      // x[a, b] indexes with a tuple.
      auto tup = node(Expr::Kind::kTuple, line);
      tup->children.push_back(std::move(start));
      while (is_op(",")) {
        next();
        if (is_op("]")) break;
        tup->children.push_back(parse_expression(true));
      }
      start = finish(std::move(tup));
    }
    expect_op("]");
    if (is_slice) {
      auto s = node(Expr::Kind::kSlice, line);
      s->children.push_back(std::move(obj));
      s->children.push_back(std::move(start));
      s->children.push_back(std::move(stop));
      s->children.push_back(std::move(step));
      return finish(std::move(s));
    }
    auto g = node(Expr::Kind::kGetitem, line);
    g->children.push_back(std::move(obj));
    g->children.push_back(std::move(start));
    return finish(std::move(g));
  }

  // Parses "(args)" into e's children (after any already there) and kwargs.
  void parse_args_into(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) fail(cur().line, "*args and **kwargs are not supported");
      if (cur().type == Tok::kName && peek().type == Tok::kOp && peek().text == "=") {
        std::string key = cur().text;
        next();
        next();
        e.kwargs.emplace_back(key, parse_expression(true));
      } else {
        if (!e.kwargs.empty()) fail(cur().line, "positional argument follows keyword argument");
        e.children.push_back(parse_expression(true));
      }
    }
    next();
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto c = node(Expr::Kind::kCall, cur().line);
    c->children.push_back(std::move(callee));
    parse_args_into(*c);
    return finish(std::move(c));
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      if (is_op("|")) {
        e = parse_filter_chain(std::move(e), true, /*single=*/true);
      } else if (is_name("is")) {
        e = parse_test(std::move(e));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  // "| name(args) | name2 ..." applied to `operand` (null for filter blocks).
  ExprPtr parse_filter_chain(ExprPtr operand, bool leading_pipe = true, bool single = false) {
    bool first = true;
    while (true) {
      if (leading_pipe || !first) {
        if (!is_op("|")) break;
        next();
      }
      first = false;
      auto f = node(Expr::Kind::kFilter, cur().line);
      f->name = expect_name();
      while (is_op(".") && peek().type == Tok::kName) {
        next();
        f->name += "." + cur().text;
        next();
      }
      f->children.push_back(std::move(operand));
      if (is_op("(")) parse_args_into(*f);
      operand = finish(std::move(f));
      if (single) break;
    }
    return operand;
  }

  ExprPtr parse_test(ExprPtr operand) {
    auto t = node(Expr::Kind::kTest, cur().line);
    next();  // is
    if (is_name("not")) {
      t->negated = true;
      next();
    }
    t->name = expect_name();
    while (is_op(".") && peek().type == Tok::kName) {
      next();
      t->name += "." + cur().text;
      next();
    }
    t->children.push_back(std::move(operand));
    if (is_op("(")) {
      parse_args_into(*t);
    } else if ((cur().type == Tok::kName || cur().type == Tok::kString || cur().type == Tok::kInt ||
                cur().type == Tok::kFloat || is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail(cur().line, "cannot chain multiple tests with 'is'");
      Depth guard(*this, cur().line);
      ExprPtr arg = parse_primary();
      t->children.push_back(parse_postfix(std::move(arg)));
    }
    return finish(std::move(t));
  }

  std::vector<Token> toks_;
  size_t i_ = 0;
  const std::string& name_;
  const Limits& limits_;
  int depth_ = 0;
};

bool mentions(const Expr* e, const std::string& var) {
  if (e == nullptr) return false;
  if (e->kind == Expr::Kind::kName && e->name == var) return true;
  for (const auto& c : e->children)
    if (mentions(c.get(), var)) return true;
  for (const auto& kv : e->kwargs)
    if (mentions(kv.second.get(), var)) return true;
  return false;
}

bool mentions(const Body& body, const std::string& var) {
  for (const auto& s : body) {
    if (mentions(s->expr.get(), var) || mentions(s->filter.get(), var) || mentions(s->body, var) ||
        mentions(s->else_body, var))
      return true;
    for (const auto& br : s->branches)
      if (mentions(br.first.get(), var) || mentions(br.second, var)) return true;
    for (const auto& d : s->defaults)
      if (mentions(d.get(), var)) return true;
  }
  return false;
}

// jinja2 reports unknown filters and tests when it compiles a template, except inside `if`
// statements and inline if-expressions, where the error waits until the branch runs (the
// evaluator reports it then). These walks apply the same rule.
void check_names(const Expr* e, bool soft, const std::string& name) {
  if (e == nullptr) return;
  if (e->kind == Expr::Kind::kCond) soft = true;
  if (!soft && e->kind == Expr::Kind::kFilter && !is_known_filter(e->name))
    syntax_error(name, e->line, "unknown filter '" + e->name + "'");
  if (!soft && e->kind == Expr::Kind::kTest && !is_known_test(e->name))
    syntax_error(name, e->line, "unknown test '" + e->name + "'");
  for (const auto& c : e->children) check_names(c.get(), soft, name);
  for (const auto& kv : e->kwargs) check_names(kv.second.get(), soft, name);
}

void check_names(const Body& body, bool soft, const std::string& name) {
  for (const auto& s : body) {
    switch (s->kind) {
      case Stmt::Kind::kIf:
        for (const auto& br : s->branches) {
          check_names(br.first.get(), true, name);
          check_names(br.second, true, name);
        }
        break;
      case Stmt::Kind::kFor:
        check_names(s->expr.get(), soft, name);
        check_names(s->filter.get(), false, name);
        check_names(s->body, false, name);
        check_names(s->else_body, soft, name);
        break;
      case Stmt::Kind::kCallBlock:
        check_names(s->expr.get(), soft, name);
        for (const auto& d : s->defaults) check_names(d.get(), false, name);
        check_names(s->body, false, name);
        break;
      case Stmt::Kind::kMacro:
        for (const auto& d : s->defaults) check_names(d.get(), false, name);
        check_names(s->body, false, name);
        break;
      case Stmt::Kind::kFilterBlock:
      case Stmt::Kind::kSetBlock:
        check_names(s->filter.get(), false, name);
        check_names(s->body, false, name);
        break;
      case Stmt::Kind::kScope:
        check_names(s->body, false, name);
        break;
      default:
        check_names(s->expr.get(), soft, name);
        break;
    }
  }
}

}  // namespace

std::shared_ptr<Program> parse_template(std::string_view source, const std::string& name,
                                        const Limits& limits) {
  auto program = std::make_shared<Program>();
  program->name = name;
  program->limits = limits;
  Lexer lexer(source, name);
  Parser parser(lexer.run(), name, limits);
  program->body = parser.parse_all();
  check_names(program->body, false, name);
  return program;
}

}  // namespace qrwkv::jinja::detail
