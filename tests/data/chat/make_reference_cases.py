#!/usr/bin/env python3
"""Regenerates jinja_cases.json and model_cases.json with Python jinja2 configured exactly as
transformers' apply_chat_template configures it (ImmutableSandboxedEnvironment with trim_blocks,
lstrip_blocks, loop controls, a generation block, its tojson filter and its globals).

The C++ tests compare the engine against these outputs; they never run Python themselves.
Usage: python3 make_reference_cases.py   (needs only the jinja2 package)
"""
import json
import os
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))


class AssistantTracker(Extension):
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def strftime_now(format):
    return datetime.now().strftime(format)


def make_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                       extensions=[AssistantTracker, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


# (name, template source, variables). Each exercises one engine feature; the expected output is
# whatever jinja2 produces (or an error when jinja2 raises).
SNIPPETS = [
    # whitespace control
    ("ws_trim_blocks", "{% if true %}\nyes\n{% endif %}\nend", {}),
    ("ws_lstrip_blocks", "  {% if true %}\n    x\n  {% endif %}\n", {}),
    ("ws_lstrip_not_for_vars", "  {{ 'v' }}\n  {% if 1 %}a{% endif %}", {}),
    ("ws_dash_left", "a   \n  {{- 'b' }}", {}),
    ("ws_dash_right", "{{ 'a' -}}  \n  b", {}),
    ("ws_dash_block", "x\n  {%- if true -%}\n  y  \n{%- endif -%}\n  z", {}),
    ("ws_plus_disables_lstrip", "  {%+ if true %}x{% endif %}", {}),
    ("ws_plus_disables_trim", "{% if true +%}\nx{% endif %}", {}),
    ("ws_comment_trim", "a\n{# note #}\nb\n  {#- c -#}  \nd", {}),
    ("ws_trailing_newline_dropped", "line\n", {}),
    ("ws_crlf", "a\r\nb\r\n{% if true %}\r\nc{% endif %}", {}),
    ("ws_raw", "{% raw %}{{ not evaluated }}{% endraw %}!", {}),
    ("ws_inline_text_after_tag", "{% for i in [1,2] %}{{ i }} {% endfor %}|", {}),
    ("ws_lstrip_after_text_same_line", "x  {% if true %}y{% endif %}", {}),
    ("ws_tab_lstrip", "\t\t{% if true %}t{% endif %}", {}),
    # literals and printing
    ("lit_strings", r"""{{ 'a\'b' }}|{{ "c\"d" }}|{{ 'tab\tnl\n' }}|{{ 'x' 'y' }}|{{ '\u00e9\x41' }}|{{ '\d' }}""", {}),
    ("lit_numbers", "{{ 1 }}|{{ 1.5 }}|{{ 1e3 }}|{{ 2.0 }}|{{ 0.1 + 0.2 }}|{{ 1_000 }}|{{ 0x1F }}", {}),
    ("lit_floats_repr", "{{ 1e16 }}|{{ 1e15 }}|{{ 0.0001 }}|{{ 0.00001 }}|{{ 123456789.125 }}|{{ -2.5e-7 }}", {}),
    ("lit_consts", "{{ true }}|{{ False }}|{{ none }}|{{ None }}|{{ undefined_thing }}|", {}),
    ("lit_list_print", "{{ [1, 'a', none, true, 2.5, [\"q'\"]] }}", {}),
    ("lit_dict_print", "{{ {'a': 1, 'b': [1, 2], 'c': {'d': none}} }}", {}),
    ("lit_tuple_print", "{{ (1, 2) }}|{{ (1,) }}|{{ () }}|{{ 1, 'x' }}", {}),
    ("lit_unicode_repr", "{{ ['é', 'tab\there', 'new\nline', '\\\\'] }}", {}),
    # operators
    ("op_arith", "{{ 7 + 3 }}|{{ 7 - 10 }}|{{ 7 * 3 }}|{{ 7 / 2 }}|{{ 6 / 3 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ -7 % 3 }}|{{ 2 ** 10 }}|{{ 2 ** -1 }}", {}),
    ("op_float_arith", "{{ 7.5 // 2 }}|{{ -7.5 % 2 }}|{{ 1.5 * 2 }}|{{ 3 - 0.5 }}", {}),
    ("op_concat", "{{ 'a' ~ 1 ~ none ~ true ~ undefined_x }}", {}),
    ("op_str_mul", "{{ 'ab' * 3 }}|{{ [1] * 2 }}|{{ 'x' * 0 }}", {}),
    ("op_list_add", "{{ [1, 2] + [3] }}|{{ 'a' + 'b' }}", {}),
    ("op_compare", "{{ 1 < 2 }}|{{ 2 <= 1 }}|{{ 'a' < 'b' }}|{{ 1 == 1.0 }}|{{ 1 != '1' }}|{{ 1 < 2 < 3 }}|{{ 3 > 2 > 2 }}|{{ true == 1 }}", {}),
    ("op_in", "{{ 'b' in 'abc' }}|{{ 2 in [1, 2] }}|{{ 'k' in {'k': 1} }}|{{ 'z' not in 'abc' }}|{{ 3 not in [1] }}", {}),
    ("op_logic", "{{ 0 or 'x' }}|{{ 'a' and 'b' }}|{{ '' and 'b' }}|{{ not 0 }}|{{ not [1] }}|{{ none or [] or 5 }}", {}),
    ("op_cond", "{{ 'y' if 1 else 'n' }}|{{ 'y' if 0 else 'n' }}|{{ 'y' if 0 }}|{{ 1 if false else 2 if true else 3 }}", {}),
    ("op_precedence", "{{ 1 + 2 * 3 }}|{{ (1 + 2) * 3 }}|{{ -2 ** 2 }}|{{ 2 ** 3 ** 2 }}|{{ not 1 == 2 }}|{{ 1 ~ 2 + 3 }}|{{ -3 | abs }}", {}),
    ("op_unary", "{{ -x }}|{{ +x }}|{{ -1.5 }}", {"x": 4}),
    # subscripts and slices
    ("sub_index", "{{ l[0] }}|{{ l[-1] }}|{{ l[5] }}|{{ d['a'] }}|{{ d.a }}|{{ d.missing }}|{{ s[1] }}|{{ s[-1] }}|{{ l.0 }}", {"l": [1, 2, 3], "d": {"a": "A"}, "s": "héllo"}),
    ("sub_slice", "{{ l[1:] }}|{{ l[:-1] }}|{{ l[::-1] }}|{{ l[::2] }}|{{ l[-2:] }}|{{ l[1:3] }}|{{ l[5:] }}|{{ l[3:0:-1] }}", {"l": [1, 2, 3, 4, 5]}),
    ("sub_str_slice", "{{ s[1:3] }}|{{ s[::-1] }}|{{ s[-3:] }}|{{ s[:0] }}", {"s": "añb€c"}),
    ("sub_attr_vs_item", "{{ d.items is callable }}|{{ d['items'] }}|{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", {"d": {"items": "I", "b": 2}}),
    ("sub_nested_missing", "{{ d.a.b }}|{{ d.x is defined }}|{{ d.a.b is defined }}", {"d": {"a": {}}}),
    # statements
    ("st_if_elif_else", "{% for x in [1, 2, 3] %}{% if x == 1 %}one{% elif x == 2 %}two{% else %}many{% endif %},{% endfor %}", {}),
    ("st_for_loop_vars", "{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}", {}),
    ("st_for_prev_next", "{% for x in [1, 2, 3] %}{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }};{% endfor %}", {}),
    ("st_for_cycle", "{% for x in range(4) %}{{ loop.cycle('a', 'b') }}{% endfor %}", {}),
    ("st_for_if", "{% for x in range(10) if x is odd %}{{ x }}{{ loop.index }}{{ loop.length }},{% endfor %}", {}),
    ("st_for_else", "{% for x in [] %}x{% else %}empty{% endfor %}|{% for x in [1] if false %}x{% else %}none{% endfor %}", {}),
    ("st_for_unpack", "{% for k, v in d.items() %}{{ k }}:{{ v }},{% endfor %}|{% for a, b in [[1, 2], (3, 4)] %}{{ a + b }}{% endfor %}", {"d": {"z": 1, "a": 2}}),
    ("st_for_dict_keys", "{% for k in d %}{{ k }}{% endfor %}", {"d": {"z": 1, "a": 2}}),
    ("st_for_nested_loop", "{% for a in [1, 2] %}{% for b in 'xy' %}{{ loop.index }}{{ b }}{% endfor %}{{ loop.index }};{% endfor %}", {}),
    ("st_break_continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("st_for_else_after_continue", "{% for x in [1, 2] %}{% continue %}{% else %}E{% endfor %}|{% for x in [1, 2] %}{% if x == 2 %}{% break %}{% endif %}{% else %}F{% endfor %}|{% for x in [1] %}{% break %}{% else %}G{% endfor %}", {}),
    ("generator_truthiness", "{{ 'T' if [] | select else 'F' }}{{ 'T' if [] | select | list else 'F' }}{{ 'T' if u | items else 'F' }}{{ [1, 2] | map('string') | join }}", {}),
    ("op_percent_format", "{{ '%s and %r' % ('a', 'b') }}|{{ '%d%%' % 42 }}|{{ '%05.2f|%-4d|%x' % (3.14159, 7, 255) }}|{{ '%(n)s=%(v)d' % {'n': 'x', 'v': 3} }}|{{ '%s - %s' | format(1, [2]) }}|{{ '%s' % none }}|{{ '%.2s' % 'abc' }}", {}),
    ("st_set_scope", "{% set c = 0 %}{% for i in [1, 2] %}{% set c = c + i %}{{ c }}{% endfor %}|{{ c }}", {}),
    ("st_set_if_leaks", "{% if true %}{% set v = 'in' %}{% endif %}{{ v }}", {}),
    ("st_set_tuple", "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = 1, 2 %}{{ t }}", {}),
    ("st_namespace", "{% set ns = namespace(n=0, s='') %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }}|{{ ns.s }}|{{ ns.missing }}", {}),
    ("st_namespace_dict_arg", "{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}", {}),
    ("st_set_block", "{% set x %}hello {{ 'world' }}{% endset %}[{{ x }}]{% set y | upper %}abc{% endset %}{{ y }}", {}),
    ("st_macro", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }}|{{ greet('B', '?') }}|{{ greet(punct='.', name='C') }}|{{ greet() }}", {}),
    ("st_macro_recursive", "{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1)|int }}{% endif %}{% endmacro %}{{ fact(5) }}", {}),
    ("st_macro_sees_globals", "{% macro m() %}{{ g }}{% endmacro %}{{ m() }}", {"g": "G"}),
    ("st_macro_ws", "{% macro m(x) %}\n  <{{ x }}>\n{% endmacro %}\n{{ m(1) }}{{ m(2) }}", {}),
    ("st_call_block", "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold {{ 1 + 1 }}{% endcall %}", {}),
    ("st_call_block_args", "{% macro each(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(x) each([1, 2]) %}[{{ x }}]{% endcall %}", {}),
    ("st_filter_block", "{% filter upper %}abc {{ 'd' }}{% endfilter %}", {}),
    ("st_generation", "a{% generation %}b{{ 1 }}{% endgeneration %}c", {}),
    ("st_comment", "a{# {{ ignored }} {% if %} #}b", {}),
    # tests
    ("test_types", "{{ 1 is number }}{{ 1.5 is number }}{{ true is number }}{{ 's' is number }}|{{ 1 is integer }}{{ true is integer }}{{ 1.0 is integer }}|{{ 1.0 is float }}|{{ true is boolean }}{{ 1 is boolean }}", {}),
    ("test_containers", "{{ {} is mapping }}{{ [] is mapping }}|{{ [] is sequence }}{{ 's' is sequence }}{{ {} is sequence }}{{ 1 is sequence }}|{{ 's' is iterable }}{{ 1 is iterable }}{{ u is iterable }}|{{ 's' is string }}{{ 1 is string }}", {}),
    ("test_defined", "{{ x is defined }}{{ y is defined }}{{ y is undefined }}{{ n is none }}{{ n is defined }}{{ x is not none }}", {"x": 1, "n": None}),
    ("test_values", "{{ true is true }}{{ 1 is true }}{{ false is false }}{{ 0 is false }}|{{ 4 is even }}{{ 3 is odd }}{{ 9 is divisibleby 3 }}{{ 9 is divisibleby(4) }}", {}),
    ("test_compare", "{{ 1 is eq 1 }}{{ 1 is equalto 2 }}{{ 1 is ne 2 }}{{ 1 is lt 2 }}{{ 3 is gt 2 }}{{ 2 is ge 2 }}{{ 2 is le 1 }}{{ 'a' is in 'abc' }}{{ x is sameas none }}", {"x": None}),
    ("test_case", "{{ 'abc' is lower }}{{ 'aBc' is lower }}{{ 'ABC' is upper }}{{ [] is lower }}{{ 'ab1' is lower }}{{ 1 is lower }}{{ none is upper }}", {}),
    ("test_callable", "{{ range is callable }}{{ 1 is callable }}", {}),
    # filters
    ("f_tojson_basic", "{{ d | tojson }}", {"d": {"b": 1, "a": [1, 2.5, None, True, "é\"\\\n\t\u0001"], "c": {}}}),
    ("f_tojson_indent", "{{ d | tojson(indent=2) }}", {"d": {"b": 1, "a": [1, {"x": []}], "c": {"é": "ü"}}}),
    ("f_tojson_options", "{{ d | tojson(ensure_ascii=true) }}|{{ d | tojson(sort_keys=true) }}|{{ d | tojson(separators=(',', ':')) }}", {"d": {"z": "é😀", "a": 1}}),
    ("f_tojson_scalars", "{{ 's' | tojson }}|{{ 1.0 | tojson }}|{{ none | tojson }}|{{ (1, 2) | tojson }}|{{ 1e100 | tojson }}", {}),
    ("f_string_case", "{{ 'hello world' | upper }}|{{ 'HeLLo' | lower }}|{{ 'hello WORLD' | capitalize }}|{{ 'hello-world of (x)y' | title }}|{{ 'éa' | upper }}", {}),
    ("f_trim", "[{{ '  a b \n' | trim }}]|[{{ 'xxaxx' | trim('x') }}]", {}),
    ("f_length", "{{ 'héllo' | length }}|{{ [1, 2] | count }}|{{ {'a': 1} | length }}|{{ u | length }}", {}),
    ("f_join", "{{ [1, 2, 3] | join(', ') }}|{{ 'abc' | join('-') }}|{{ l | join(',', attribute='n') }}|{{ [] | join('x') }}", {"l": [{"n": "a"}, {"n": "b"}]}),
    ("f_first_last", "{{ [1, 2, 3] | first }}|{{ [1, 2, 3] | last }}|{{ 'abc' | first }}|{{ [] | first }}|{{ {'k': 1} | first }}", {}),
    ("f_default", "{{ u | default('d') }}|{{ '' | default('d') }}|{{ '' | default('d', true) }}|{{ none | d('x') }}|{{ none | d('x', boolean=true) }}|{{ u | default }}", {}),
    ("f_replace", "{{ 'aaa' | replace('a', 'b') }}|{{ 'aaa' | replace('a', 'b', 2) }}|{{ 'ab' | replace('', '-') }}", {}),
    ("f_string_int_float", "{{ 1 | string }}|{{ [1] | string }}|{{ '42' | int }}|{{ '4.7' | int }}|{{ 'x' | int }}|{{ 'x' | int(7) }}|{{ 3.9 | int }}|{{ '2.5' | float }}|{{ 'q' | float }}|{{ 3 | float }}|{{ '0x1A' | int(base=16) }}", {}),
    ("f_abs_round", "{{ -3 | abs }}|{{ -2.5 | abs }}|{{ 2.5 | round }}|{{ 3.5 | round }}|{{ 2.567 | round(2) }}|{{ 2.561 | round(1, 'floor') }}|{{ 2.11 | round(1, 'ceil') }}|{{ 7 | round }}", {}),
    ("f_safe_escape", "{{ '<a href=\"x\">&\\'</a>' | safe }}|{{ '<a href=\"x\">&\\'</a>' | escape }}|{{ '<b>' | e }}", {}),
    ("f_items_list", "{{ d | items | list }}|{{ 'ab' | list }}|{{ d | list }}|{{ u | items | list }}", {"d": {"x": 1, "y": [2]}}),
    ("f_select_reject", "{{ [1, 2, 3, 4] | select('odd') | list }}|{{ [1, 2, 3, 4] | reject('odd') | list }}|{{ [0, 1, '', 'a'] | select | list }}|{{ [1, 5, 10] | select('gt', 3) | list }}|{{ ['a', 'b'] | select('in', 'abc') | list }}", {}),
    ("f_selectattr", "{{ m | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(',') }}|{{ m | rejectattr('role', 'eq', 'user') | map(attribute='content') | list }}|{{ m | selectattr('extra') | list | length }}|{{ m | selectattr('extra', 'defined') | list | length }}", {"m": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "extra": 1}, {"role": "user", "content": "c"}]}),
    ("f_map", "{{ ['a', 'b'] | map('upper') | list }}|{{ l | map(attribute='x', default='D') | list }}|{{ l | map(attribute='y.0') | list }}|{{ [1.5, 2.5] | map('round') | list }}|{{ ['1', '2'] | map('int') | sum }}", {"l": [{"x": 1, "y": [7]}, {"y": [8]}]}),
    ("f_unique_sort", "{{ ['b', 'A', 'a', 'c', 'b'] | unique | list }}|{{ ['b', 'A', 'a'] | unique(case_sensitive=true) | list }}|{{ [3, 1, 2] | sort }}|{{ ['b', 'A', 'c'] | sort }}|{{ ['b', 'A', 'c'] | sort(case_sensitive=true) }}|{{ [3, 1, 2] | sort(reverse=true) }}|{{ l | sort(attribute='n') | map(attribute='n') | list }}", {"l": [{"n": 2}, {"n": 1}]}),
    ("f_dictsort", "{{ d | dictsort }}|{{ d | dictsort(reverse=true) }}|{{ d | dictsort(by='value') }}", {"d": {"b": 1, "A": 3, "c": 2}}),
    ("f_reverse", "{{ [1, 2, 3] | reverse | list }}|{{ 'abc' | reverse }}", {}),
    ("f_batch", "{{ [1, 2, 3, 4, 5] | batch(2) | list }}|{{ [1, 2, 3] | batch(2, 'x') | list }}", {}),
    ("f_indent", "[{{ 'a\nb\n\nc' | indent }}]|[{{ 'a\nb' | indent(2, first=true) }}]|[{{ 'a\n\nb\n' | indent(2, blank=true) }}]|[{{ 'a\nb' | indent('> ') }}]", {}),
    ("f_wordcount_center", "{{ 'hello big world' | wordcount }}|[{{ 'ab' | center(7) }}]|[{{ 'abc' | center(6) }}]", {}),
    ("f_min_max_sum", "{{ [3, 1, 2] | min }}|{{ [3, 1, 2] | max }}|{{ ['b', 'A'] | min }}|{{ [1, 2, 3] | sum }}|{{ l | sum(attribute='n') }}|{{ [1.5, 2] | sum(start=10) }}", {"l": [{"n": 2}, {"n": 5}]}),
    ("f_attr", "[{{ d | attr('a') }}]{{ d | attr('keys') is callable }}", {"d": {"a": 1}}),
    # string methods
    ("m_startswith", "{{ s.startswith('he') }}{{ s.startswith(('x', 'h')) }}{{ s.endswith('lo') }}{{ s.endswith('x') }}", {"s": "hello"}),
    ("m_strip", "[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}][{{ 'xxhixx'.strip('x') }}][{{ '\n\nhi\n'.lstrip('\n') }}][{{ 'ab\n\n'.rstrip('\n') }}]", {"s": "  hi there \n"}),
    ("m_split", "{{ 'a,b,,c'.split(',') }}|{{ '  a  b c '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a<t>b<t>c'.split('<t>')[-1] }}|{{ 'a b c'.rsplit(' ', 1) }}|{{ 'x\ny\r\nz'.splitlines() }}", {}),
    ("m_case", "{{ s.upper() }}|{{ s.lower() }}|{{ s.title() }}|{{ s.capitalize() }}|{{ \"they're bill's\".title() }}", {"s": "hELLo wORLD_x"}),
    ("m_find_count", "{{ s.find('l') }}|{{ s.rfind('l') }}|{{ s.find('z') }}|{{ s.count('l') }}|{{ s.replace('l', 'L') }}|{{ s.replace('l', '', 1) }}|{{ 'é€x'.find('x') }}", {"s": "hello"}),
    ("m_join_misc", "{{ ', '.join(['a', 'b']) }}|{{ '12'.isdigit() }}{{ 'a1'.isdigit() }}{{ 'ab'.isalpha() }}{{ ' '.isspace() }}{{ 'AB'.isupper() }}{{ 'ab'.islower() }}", {}),
    ("m_dict", "{{ d.keys() | list }}|{{ d.values() | list }}|{{ d.items() | list }}|{{ d.get('a') }}|{{ d.get('z') }}|{{ d.get('z', 5) }}", {"d": {"a": 1, "b": 2}}),
    # globals
    ("g_range", "{{ range(3) | list }}|{{ range(1, 4) | list }}|{{ range(10, 0, -3) | list }}|{{ range(0) | list }}", {}),
    ("g_dict", "{{ dict(a=1, b='x') }}|{{ dict(a=1).a }}", {}),
    ("g_joiner", "{% set j = joiner('|') %}{% for x in 'abc' %}{{ j() }}{{ x }}{% endfor %}", {}),
    # undefined behaviour
    ("undef_ops", "[{{ u }}][{{ u | upper }}][{{ u ~ 'x' }}][{% for x in u %}{{ x }}{% endfor %}][{{ u | length }}][{{ 'y' if u else 'n' }}][{{ u == u }}][{{ u is none }}]", {}),
    # errors (jinja2 raises; the engine must raise too)
    ("err_raise_exception", "a{{ raise_exception('boom: ' ~ 1) }}", {}),
    ("err_undefined_attr", "{{ missing.attr }}", {}),
    ("err_undefined_call", "{{ missing() }}", {}),
    ("err_undefined_add", "{{ missing + 1 }}", {}),
    ("err_add_types", "{{ 1 + 'a' }}", {}),
    ("err_div_zero", "{{ 1 / 0 }}", {}),
    ("err_unknown_filter", "{{ 1 | nosuchfilter }}", {}),
    ("unknown_filter_in_untaken_branch", "{% if false %}{{ 1 | nosuchfilter }}{% endif %}{{ 2 if true else 3 | nosuch }}ok", {}),
    ("err_unknown_filter_in_taken_branch", "{% if true %}{{ 1 | nosuchfilter }}{% endif %}", {}),
    ("err_unknown_filter_in_loop_in_if", "{% if false %}{% for x in [] %}{{ x | nosuch }}{% endfor %}{% endif %}", {}),
    ("err_unknown_test", "{{ 1 is nosuchtest }}", {}),
    ("err_unclosed_if", "{% if true %}x", {}),
    ("err_unknown_tag", "{% frobnicate %}", {}),
    ("err_bad_expression", "{{ 1 + }}", {}),
    ("err_unclosed_string", "{{ 'abc }}", {}),
    ("err_tojson_undefined", "{{ missing | tojson }}", {}),
    ("err_set_attr_non_namespace", "{% set d = {} %}{% set d.x = 1 %}", {}),
    ("err_macro_too_many_args", "{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", {}),
    ("err_compare_types", "{{ 1 < 'a' }}", {}),
    ("err_call_block_without_caller", "{% macro m() %}x{% endmacro %}{% call m() %}y{% endcall %}", {}),
    ("err_safe_is_a_string", "{{ 7 | safe % 2 }}", {}),
    ("err_indent_none", "{{ none | indent }}", {}),
    ("err_generator_length", "{{ [1] | select | length }}", {}),
    ("err_percent_too_few", "{{ '%s %s' % ('a',) }}", {}),
    ("err_percent_too_many", "{{ '%s' % ('a', 'b') }}", {}),
    ("err_slice_dict", "{{ d[1:] }}", {"d": {"a": 1}}),
    ("err_slice_int", "{{ x[1:] }}", {"x": 5}),
    ("err_slice_undefined", "{{ x[1:] }}", {}),
    ("err_unique_unhashable", "{{ [{'a': 1}] | unique | list }}", {}),
    ("err_unpack", "{% for a, b in [[1, 2, 3]] %}{% endfor %}", {}),
    ("err_list_append", "{% set l = [] %}{{ l.append(1) }}", {}),
]


def render_snippets(env):
    cases = []
    for name, source, variables in SNIPPETS:
        case = {"name": name, "source": source, "vars": variables}
        try:
            case["expected"] = env.from_string(source).render(**variables)
        except Exception as e:  # noqa: BLE001 - any jinja2 failure is an expected error
            case["error"] = f"{type(e).__name__}: {e}"
        cases.append(case)
    return cases


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city, in °C",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "days": {"type": "array", "items": {"type": "integer"}},
                "opts": {"type": "object", "properties": {"metric": {"type": "boolean"},
                                                          "lang": {"type": "string"}}},
            },
            "required": ["city"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}

CONV_BASIC = [
    {"role": "system", "content": "You are terse.  "},
    {"role": "user", "content": "  Hi there!\n"},
    {"role": "assistant", "content": "Hello. How can I help?"},
    {"role": "user", "content": "Say «ça va» in 中文 😀"},
]
CONV_NO_SYSTEM = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3+3?"},
]
CONV_TOOLS = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "abc123xyz", "type": "function",
         "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}}]},
    {"role": "tool", "tool_call_id": "abc123xyz", "content": "{\"temp\": 21.5}"},
    {"role": "assistant", "content": "It is 21.5 °C."},
    {"role": "user", "content": "Thanks"},
]
CONV_TOOLS_STRING_ARGS = [
    {"role": "system", "content": "Use tools."},
    {"role": "user", "content": "Search cats"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "search", "arguments": "{\"q\": \"cats\"}"}},
        {"type": "function", "function": {"name": "search", "arguments": "{\"q\": \"dogs\"}"}}]},
    {"role": "tool", "content": "3 results"},
    {"role": "tool", "content": "5 results"},
    {"role": "assistant", "content": "Found 8."},
]
CONV_THINK = [
    {"role": "user", "content": "Solve x+1=3"},
    {"role": "assistant", "content": "<think>\nSubtract 1.\n</think>\n\nx = 2"},
    {"role": "user", "content": "And x+2=3?"},
]
CONV_MULTIMODAL = [
    {"role": "system", "content": [{"type": "text", "text": "Describe images."}]},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " What is this? "}]},
    {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
    {"role": "user", "content": "Sure?"},
]
CONV_BAD_ORDER = [
    {"role": "user", "content": "a"},
    {"role": "user", "content": "b"},
]
CONV_CONTINUE = [
    {"role": "user", "content": "Write a haiku"},
    {"role": "assistant", "content": "Autumn moonlight - "},
]

LLAMA = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
MISTRAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
GEMMA = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}
DEEPSEEK = {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}
PHI = {"bos_token": "<s>", "eos_token": "<|endoftext|>"}
QWEN = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}

# (name, template file relative to this directory, special tokens, request)
MODEL_CASES = [
    ("llama_basic", "templates/llama3.1.jinja", LLAMA, {"messages": CONV_BASIC, "add_generation_prompt": True}),
    ("llama_no_system_no_prompt", "templates/llama3.1.jinja", LLAMA, {"messages": CONV_NO_SYSTEM}),
    ("llama_tools", "templates/llama3.1.jinja", LLAMA, {"messages": CONV_TOOLS, "tools": [WEATHER_TOOL], "add_generation_prompt": True}),
    ("llama_tools_in_system", "templates/llama3.1.jinja", LLAMA, {"messages": CONV_TOOLS, "tools": [WEATHER_TOOL, SEARCH_TOOL], "tools_in_user_message": False, "date_string": "01 Jan 2025"}),
    ("llama_builtin_tools", "templates/llama3.1.jinja", LLAMA, {"messages": [CONV_TOOLS[0], {"role": "assistant", "tool_calls": [{"function": {"name": "brave_search", "arguments": {"query": "paris"}}}]}], "builtin_tools": ["brave_search", "code_interpreter"]}),
    ("mistral_basic", "templates/mistral.jinja", MISTRAL, {"messages": CONV_BASIC}),
    ("mistral_no_system", "templates/mistral.jinja", MISTRAL, {"messages": CONV_NO_SYSTEM, "add_generation_prompt": True}),
    ("mistral_tools", "templates/mistral.jinja", MISTRAL, {"messages": CONV_TOOLS, "tools": [WEATHER_TOOL, SEARCH_TOOL]}),
    ("mistral_bad_order", "templates/mistral.jinja", MISTRAL, {"messages": CONV_BAD_ORDER}),
    ("gemma_basic", "templates/gemma3.jinja", GEMMA, {"messages": CONV_BASIC, "add_generation_prompt": True}),
    ("gemma_multimodal", "templates/gemma3.jinja", GEMMA, {"messages": CONV_MULTIMODAL, "add_generation_prompt": True}),
    ("gemma_bad_order", "templates/gemma3.jinja", GEMMA, {"messages": CONV_BAD_ORDER}),
    ("deepseek_basic", "templates/deepseek-r1.jinja", DEEPSEEK, {"messages": CONV_BASIC, "add_generation_prompt": True}),
    ("deepseek_think", "templates/deepseek-r1.jinja", DEEPSEEK, {"messages": CONV_THINK, "add_generation_prompt": True}),
    ("deepseek_tools", "templates/deepseek-r1.jinja", DEEPSEEK, {"messages": CONV_TOOLS_STRING_ARGS, "add_generation_prompt": True}),
    ("phi3_basic", "templates/phi3.jinja", PHI, {"messages": CONV_BASIC, "add_generation_prompt": True}),
    ("phi3_no_prompt", "templates/phi3.jinja", PHI, {"messages": CONV_NO_SYSTEM}),
    ("macros_tools", "templates/tool-macros.jinja", QWEN, {"messages": CONV_NO_SYSTEM, "tools": [WEATHER_TOOL, SEARCH_TOOL], "add_generation_prompt": True}),
    ("macros_plain", "templates/tool-macros.jinja", QWEN, {"messages": CONV_BASIC}),
    ("qwen25_basic", "qwen2.5/tokenizer_config.json", QWEN, {"messages": CONV_BASIC, "add_generation_prompt": True}),
    ("qwen25_string_tools", "qwen2.5/tokenizer_config.json", QWEN, {"messages": CONV_TOOLS_STRING_ARGS, "tools": [WEATHER_TOOL, SEARCH_TOOL]}),
    ("qwen3_think", "qwen3/tokenizer_config.json", QWEN, {"messages": CONV_THINK, "add_generation_prompt": True, "enable_thinking": False}),
    ("qwen3_think_history", "qwen3/tokenizer_config.json", QWEN, {"messages": CONV_THINK[:2], "enable_thinking": True}),
    ("qwen3_tools", "qwen3/tokenizer_config.json", QWEN, {"messages": CONV_TOOLS, "tools": [WEATHER_TOOL], "add_generation_prompt": True}),
    ("qwen3_string_tools", "qwen3/tokenizer_config.json", QWEN, {"messages": CONV_TOOLS_STRING_ARGS, "tools": [SEARCH_TOOL]}),
    ("qwen3_reasoning_content", "qwen3/tokenizer_config.json", QWEN, {"messages": [CONV_THINK[0], {"role": "assistant", "content": "x = 2", "reasoning_content": "Subtract."}]}),
    ("qwen3_continue_final", "qwen3/tokenizer_config.json", QWEN, {"messages": CONV_CONTINUE, "continue_final_message": True}),
]


def load_template(path):
    full = os.path.join(HERE, path)
    if path.endswith(".json"):
        with open(full, encoding="utf-8") as f:
            return json.load(f)["chat_template"]
    with open(full, encoding="utf-8") as f:
        return f.read()


def render_model_cases(env):
    cases = []
    for name, path, tokens, request in MODEL_CASES:
        case = {"name": name, "template": path, "special_tokens": tokens, "inputs": request}
        kwargs = {k: v for k, v in request.items()
                  if k not in ("messages", "tools", "documents", "add_generation_prompt",
                               "continue_final_message")}
        try:
            text = env.from_string(load_template(path)).render(
                messages=request["messages"], tools=request.get("tools"),
                documents=request.get("documents"),
                add_generation_prompt=request.get("add_generation_prompt", False),
                **{**tokens, **kwargs})
            if request.get("continue_final_message"):
                final = request["messages"][-1]["content"].strip()
                text = text[: text.rindex(final) + len(final)]
            case["expected"] = text
        except Exception as e:  # noqa: BLE001
            case["error"] = f"{type(e).__name__}: {e}"
        cases.append(case)
    return cases


def main():
    env = make_env()
    with open(os.path.join(HERE, "jinja_cases.json"), "w", encoding="utf-8") as f:
        json.dump({"source": f"jinja2 {jinja2.__version__} as configured by transformers",
                   "cases": render_snippets(env)}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(HERE, "model_cases.json"), "w", encoding="utf-8") as f:
        json.dump({"source": f"jinja2 {jinja2.__version__} as configured by transformers",
                   "cases": render_model_cases(env)}, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
