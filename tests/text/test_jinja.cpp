// Jinja engine: every feature snippet in tests/data/chat/jinja_cases.json (outputs produced by
// Python jinja2 configured like transformers, see make_reference_cases.py), plus error messages,
// line numbers and resource limits.
#include <gtest/gtest.h>

#include <string>

#include "io/error.h"
#include "io/mapped_file.h"
#include "tests/cli.h"
#include "text/jinja.h"

namespace qrwkv {
namespace {

using jinja::ordered_json;
using jinja::Template;

std::string render(const std::string& source, const ordered_json& vars = ordered_json::object(),
                   jinja::Limits limits = {}) {
  Template t(source, "chat template", limits);
  return t.render(vars);
}

// Returns the error message of rendering `source`, or "" when it renders.
std::string render_error(const std::string& source,
                         const ordered_json& vars = ordered_json::object(),
                         jinja::Limits limits = {}) {
  try {
    render(source, vars, limits);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(JinjaReference, AllSnippetsMatchPythonJinja2) {
  const ordered_json doc =
      ordered_json::parse(read_text_file(test::data_path("chat/jinja_cases.json")));
  int checked = 0;
  for (const auto& c : doc["cases"]) {
    const std::string name = c["name"].get<std::string>();
    SCOPED_TRACE(name);
    const std::string source = c["source"].get<std::string>();
    if (c.contains("expected")) {
      std::string got;
      try {
        got = render(source, c["vars"]);
      } catch (const Error& e) {
        ADD_FAILURE() << name << " threw: " << e.what();
        continue;
      }
      EXPECT_EQ(got, c["expected"].get<std::string>()) << name << "\n" << source;
    } else {
      EXPECT_NE(render_error(source, c["vars"]), "")
          << name << " should fail like jinja2: " << c["error"].get<std::string>();
    }
    ++checked;
  }
  EXPECT_GT(checked, 100);
}

TEST(JinjaErrors, SyntaxErrorsNameTheLine) {
  EXPECT_EQ(render_error("a\nb\n{{ x | nosuchfilter }}"),
            "chat template line 3: unknown filter 'nosuchfilter'");
  EXPECT_EQ(render_error("\n\n\n{% if x is frob %}{% endif %}"),
            "chat template line 4: unknown test 'frob'");
  EXPECT_EQ(render_error("{% for x in y %}\n\n{% endif %}"),
            "chat template line 3: unexpected 'endif' tag");
  EXPECT_EQ(render_error("\n{% if x %}\nabc"),
            "chat template line 3: unexpected end of template; the if on line 2 is not closed");
  EXPECT_EQ(render_error("{% frob %}"), "chat template line 1: unknown tag 'frob'");
  EXPECT_EQ(render_error("\n{{ 1 + }}"), "chat template line 2: unexpected end of print statement");
  EXPECT_EQ(render_error("{{ 'abc }}"), "chat template line 1: unterminated string literal");
  EXPECT_EQ(render_error("{# never closed"), "chat template line 1: missing end of comment tag");
  EXPECT_EQ(render_error("{{ a $ b }}"), "chat template line 1: unexpected character '$'");
  EXPECT_EQ(render_error("{{ (1 }}"), "chat template line 1: unexpected '}'");
}

TEST(JinjaErrors, RuntimeErrorsNameTheLine) {
  EXPECT_EQ(render_error("x\n{{ raise_exception('Roles must alternate') }}"),
            "chat template line 2: Roles must alternate");
  EXPECT_EQ(render_error("\n\n{{ foo.bar }}"), "chat template line 3: 'foo' is undefined");
  EXPECT_EQ(render_error("{% set d = {} %}\n{{ d.a.b }}"),
            "chat template line 2: 'dict object' has no attribute 'a'");
  EXPECT_EQ(render_error("{{ 1 + 'a' }}"),
            "chat template line 1: unsupported operand type(s) for +: 'int' and 'str'");
  EXPECT_EQ(render_error("{{ 'a' + 1 }}"),
            "chat template line 1: can only concatenate str (not \"int\") to str");
  EXPECT_EQ(render_error("{{ 1 // 0 }}"),
            "chat template line 1: integer division or modulo by zero");
  EXPECT_EQ(render_error("{{ x | tojson }}"),
            "chat template line 1: Object of type Undefined is not JSON serializable");
  EXPECT_EQ(render_error("{% set d = {} %}{% set d.x = 1 %}"),
            "chat template line 1: cannot assign attribute on non-namespace object");
  EXPECT_EQ(render_error("{{ [].append(1) }}"),
            "chat template line 1: 'list object' has no attribute 'append'");
  EXPECT_EQ(render_error("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}"),
            "chat template line 1: macro 'm' takes not more than 1 argument(s)");
  EXPECT_EQ(render_error("{% break %}"), "chat template line 1: 'break' outside of a loop");
}

TEST(JinjaErrors, TemplateNameIsThePrefix) {
  try {
    Template t("{{ x | bad }}", "models/m/tokenizer_config.json: chat template");
    FAIL() << "should not parse";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "models/m/tokenizer_config.json: chat template line 1: unknown filter "
                 "'bad'");
  }
}

TEST(JinjaLimits, HugeRangeFailsFast) {
  std::string err = render_error("{% for i in range(10**9) %}x{% endfor %}");
  EXPECT_NE(err.find("list is too long"), std::string::npos) << err;
}

TEST(JinjaLimits, LoopStepsAreBounded) {
  jinja::Limits limits;
  limits.max_steps = 100000;
  std::string err = render_error(
      "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}", {}, limits);
  EXPECT_NE(err.find("too long to render"), std::string::npos) << err;
}

TEST(JinjaLimits, OutputSizeIsBounded) {
  jinja::Limits limits;
  limits.max_output_bytes = 1000;
  EXPECT_NE(render_error("{{ 'x' * 5000 }}", {}, limits).find("output is too large"),
            std::string::npos);
  EXPECT_NE(render_error("{% for i in range(600) %}ab{% endfor %}", {}, limits)
                .find("output is too large"),
            std::string::npos);
}

TEST(JinjaLimits, DeepNestingIsAnErrorNotACrash) {
  std::string deep_parens = "{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}";
  EXPECT_NE(render_error(deep_parens).find("nesting is too deep"), std::string::npos);
  std::string deep_ifs;
  for (int i = 0; i < 500; ++i) deep_ifs += "{% if true %}";
  EXPECT_NE(render_error(deep_ifs).find("nesting is too deep"), std::string::npos);
  std::string long_chain = "{{ 1";
  for (int i = 0; i < 5000; ++i) long_chain += " + 1";
  long_chain += " }}";
  EXPECT_NE(render_error(long_chain).find("too deeply nested"), std::string::npos);
  std::string filters = "{{ 'a'";
  for (int i = 0; i < 5000; ++i) filters += "|upper";
  filters += " }}";
  EXPECT_NE(render_error(filters).find("too deeply nested"), std::string::npos);
}

TEST(JinjaLimits, MacroRecursionIsBounded) {
  std::string err = render_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_NE(err.find("macro calls nest too deeply"), std::string::npos) << err;
}

TEST(JinjaLimits, ValueNestingIsBounded) {
  std::string err = render_error(
      "{% set ns = namespace(x=[]) %}{% for i in range(2000) %}{% set ns.x = [ns.x] %}"
      "{% endfor %}");
  EXPECT_NE(err.find("nest too deeply"), std::string::npos) << err;
  std::string deep_json = std::string(1000, '[') + std::string(1000, ']');
  ordered_json vars = {{"x", ordered_json::parse(deep_json)}};
  EXPECT_NE(render_error("{{ x }}", vars).find("too deeply"), std::string::npos);
}

TEST(JinjaValues, SelfReferencingNamespaceIsHarmless) {
  // A namespace stored in itself forms a reference cycle; the engine must neither loop nor leak.
  EXPECT_EQ(render("{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns.me.me.a }}"
                   "{{ [ns] == [ns] }}"),
            "1True");
}

TEST(JinjaValues, TojsonKeepsInputKeyOrderAndUnicode) {
  ordered_json vars = ordered_json::parse(R"({"d": {"zeta": "é", "alpha": [1, 2.0, null]}})");
  EXPECT_EQ(render("{{ d | tojson }}", vars), R"({"zeta": "é", "alpha": [1, 2.0, null]})");
  EXPECT_EQ(render("{{ d | tojson(indent=2) }}", vars),
            "{\n  \"zeta\": \"é\",\n  \"alpha\": [\n    1,\n    2.0,\n    null\n  ]\n}");
}

// Python's json.dumps(ensure_ascii=True) escapes everything outside printable ASCII, DEL included:
// json.dumps("a\x7f\u00e9\U0001F600") == '"a\\u007f\\u00e9\\ud83d\\ude00"'.
TEST(JinjaValues, TojsonEnsureAsciiEscapesDelAndNonAscii) {
  ordered_json vars = ordered_json::parse(R"({"s": "a\u007f\u00e9\ud83d\ude00"})");
  EXPECT_EQ(render("{{ s | tojson(ensure_ascii=True) }}", vars), R"("a\u007f\u00e9\ud83d\ude00")");
  EXPECT_EQ(render("{{ s | tojson }}", vars), "\"a\x7f\u00e9\U0001F600\"");
}

TEST(JinjaValues, StrftimeNowUsesTheCurrentDate) {
  std::string year = render("{{ strftime_now('%Y') }}");
  ASSERT_EQ(year.size(), 4u);
  EXPECT_GE(std::stoi(year), 2024);
}

TEST(JinjaValues, VariablesComeFromJson) {
  ordered_json vars = ordered_json::parse(
      R"({"s": "x", "i": 3, "f": 0.5, "b": true, "n": null, "l": [1], "big": 18446744073709551615})");
  EXPECT_EQ(render("{{ s }}{{ i }}{{ f }}{{ b }}{{ n }}{{ l }}{{ big > 0 }}", vars),
            "x30.5TrueNone[1]True");
}

}  // namespace
}  // namespace qrwkv
