"""Tests for the `${{ }}` expression language (flowray.expr)."""

from __future__ import annotations

import contextlib
import math
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowray.expr import (
    KNOWN_FUNCTIONS,
    And,
    Call,
    Compare,
    ContextAccess,
    ExprError,
    ExprEvalError,
    ExprSyntaxError,
    Filter,
    Index,
    Literal,
    Not,
    Or,
    Property,
    Reference,
    TemplatePart,
    evaluate,
    evaluate_condition,
    find_templates,
    functions_called,
    is_template,
    parse,
    references,
    render,
    to_text,
    truthy,
    uses_status_function,
)

CTX: dict[str, Any] = {
    "steps": {
        "a": {"outputs": {"n": 30, "s": "hello", "f": 2.5, "flag": True, "none": None}},
        "b": {"outputs": {"n": 7, "list": [1, 2, 3]}},
        "my-step": {"outputs": {"x": "dash"}},
    },
    "matrix": {"os": "Linux", "py": "3.11", "gpu": 0, "n": 2},
    "env": {"HOME": "/root", "EMPTY": ""},
    "inputs": {"names": ["Ann", "Bob"], "cfg": {"lr": 0.1, "epochs": 3}},
    "event": {
        "items": [
            {"name": "x", "tags": ["a", "b"]},
            {"name": "y", "tags": ["c"]},
            {"other": 1},
        ],
        "map": {"k1": {"v": 1}, "k2": {"v": 2}},
    },
}


def ev(source: str, contexts: dict[str, Any] | None = None, **kw: bool) -> Any:
    return evaluate(parse(source), CTX if contexts is None else contexts, **kw)


def syntax_error(source: str) -> str:
    with pytest.raises(ExprSyntaxError) as info:
        parse(source)
    return info.value.message


def eval_error(source: str, contexts: dict[str, Any] | None = None) -> str:
    with pytest.raises(ExprEvalError) as info:
        ev(source, contexts)
    return info.value.message


# --- literals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("null", None),
        ("true", True),
        ("false", False),
        ("0", 0),
        ("42", 42),
        ("-7", -7),
        ("1.5", 1.5),
        ("-1.5", -1.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        ("0xff", 255),
        ("0XFF", 255),
        ("-0x10", -16),
        ("0o17", 15),
        ("'abc'", "abc"),
        ("''", ""),
        ("'it''s'", "it's"),
        ("''''", "'"),
        ("'a}}b'", "a}}b"),
        ("Infinity", math.inf),
    ],
)
def test_literals(source: str, expected: Any) -> None:
    result = ev(source)
    assert result == expected
    assert type(result) is type(expected)


def test_nan_literal() -> None:
    assert math.isnan(ev("NaN"))


def test_literal_types_are_kept() -> None:
    assert type(ev("42")) is int
    assert type(ev("1e3")) is float
    assert ev("0x" + "f" * 20) == float(int("f" * 20, 16))


# --- property access, index, filters -------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("steps.a.outputs.n", 30),
        ("steps['a'].outputs['n']", 30),
        ("steps['a']['outputs'].s", "hello"),
        ("steps.my-step.outputs.x", "dash"),
        ("steps.A.OUTPUTS.N", 30),  # names are matched ignoring case
        ("STEPS.a.outputs.n", 30),
        ("steps.b.outputs.list[0]", 1),
        ("steps.b.outputs.list[2]", 3),
        ("steps.b.outputs.list[1.9]", 2),  # floored
        ("steps.b.outputs.list['1']", 2),  # text index becomes a number
        ("steps.b.outputs.list[3]", None),
        ("steps.b.outputs.list[-1]", None),
        ("steps.b.outputs.list.length", None),
        ("steps.missing.outputs.n", None),
        ("steps.a.outputs.none", None),
        ("steps.a.outputs.s.length", None),
        ("matrix[matrix.os == 'linux' && 'os' || 'py']", "Linux"),
        ("inputs.cfg[format('{0}', 'lr')]", 0.1),
        ("(steps.a).outputs.n", 30),
        ("fromJSON('{\"a\": [5, 6]}').a[1]", 6),
        ("'abc'.length", None),
    ],
)
def test_access(source: str, expected: Any) -> None:
    assert ev(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("event.items.*.name", ["x", "y"]),  # items without the key are dropped
        ("event.items[*].name", ["x", "y"]),
        ("event.items.*.tags", [["a", "b"], ["c"]]),
        ("event.items.*.tags.*", ["a", "b", "c"]),
        ("event.items.*.tags[0]", ["a", "c"]),
        ("event.map.*.v", [1, 2]),
        ("event.map.*", [{"v": 1}, {"v": 2}]),
        ("inputs.names.*", ["Ann", "Bob"]),
        ("steps.*.outputs.n", [30, 7]),
        ("matrix.os.*", []),
        ("steps.nothing.*", []),
        ("event.items.*.missing", []),
    ],
)
def test_filters(source: str, expected: Any) -> None:
    result = ev(source)
    assert result == expected
    assert type(result) is list


def test_filter_result_in_functions() -> None:
    assert ev("contains(event.items.*.name, 'Y')") is True
    assert ev("join(steps.*.outputs.n, '+')") == "30+7"
    assert ev("toJSON(event.map.*.v)") == "[\n  1,\n  2\n]"


def test_unknown_context() -> None:
    assert eval_error("foo.bar") == "unknown context 'foo' at position 0 in 'foo.bar'"
    assert (
        eval_error("1 == step.a")
        == "unknown context 'step' (did you mean 'steps'?) at position 5 in '1 == step.a'"
    )


def test_unknown_context_not_evaluated_when_short_circuited() -> None:
    assert ev("false && foo.bar") is False
    assert ev("true || foo.bar") is True


# --- operators and precedence --------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # ! binds tighter than comparisons
        ("!false == true", True),
        ("!0 < 2", True),
        # comparisons bind tighter than equality: (1 < 2) == true
        ("1 < 2 == true", True),
        ("2 > 1 != false", True),
        # equality binds tighter than &&, && tighter than ||
        ("true || false && false", True),
        ("(true || false) && false", False),
        ("false && true || true", True),
        ("1 == 1 && 2 == 2", True),
        ("1 == 2 || 3 == 3", True),
        # left associativity
        ("1 == 1 == true", True),
        ("3 > 2 > 1", False),  # (3 > 2) > 1 -> true > 1 -> 1 > 1
        ("!!'x'", True),
        ("!(1 == 1)", False),
        ("((((1))))", 1),
        ("steps.a.outputs.n == 30 && matrix.n >= 2", True),
    ],
)
def test_precedence(source: str, expected: Any) -> None:
    assert ev(source) == expected


def test_tree_shape() -> None:
    a, b, c = ContextAccess("a"), ContextAccess("b"), ContextAccess("c")
    assert parse("a || b && c").body == Or(a, And(b, c))
    assert parse("a && b || c").body == Or(And(a, b), c)
    assert parse("!a == b").body == Compare("==", Not(a), b)
    assert parse("a == b < c").body == Compare("==", a, Compare("<", b, c))
    assert parse("a.b[0].*").body == Filter(Index(Property(a, "b"), Literal(0)))
    assert parse("a[*]").body == Filter(a)
    assert parse("Contains(a, 'x')").body == Call("contains", (a, Literal("x")))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # && / || return operand values and short-circuit
        ("'a' && 'b'", "b"),
        ("'' && 'b'", ""),
        ("0 && 'b'", 0),
        ("null && 'b'", None),
        ("'a' || 'b'", "a"),
        ("'' || 'b'", "b"),
        ("null || 0", 0),
        ("steps.a.outputs.none || 'default'", "default"),
        ("matrix.gpu || 1", 1),
        ("env.EMPTY || env.HOME", "/root"),
        ("false || fromJSON('[1]')", [1]),
        ("true && fromJSON('{\"a\":1}')", {"a": 1}),
        # short circuit: the right side (which would fail) is not evaluated
        ("false && fromJSON('not json')", False),
        ("'x' || fromJSON('not json')", "x"),
    ],
)
def test_logical_operators(source: str, expected: Any) -> None:
    assert ev(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("!null", True),
        ("!false", True),
        ("!0", True),
        ("!-0", True),
        ("!0.0", True),
        ("!NaN", True),
        ("!''", True),
        ("!'false'", False),
        ("!'0'", False),
        ("!' '", False),
        ("!1", False),
        ("!-1", False),
        ("!Infinity", False),
        ("!fromJSON('[]')", False),
        ("!fromJSON('{}')", False),
        ("!true", False),
    ],
)
def test_not_and_truthiness(source: str, expected: bool) -> None:
    assert ev(source) is expected


def test_truthy_function() -> None:
    values: list[Any] = [None, False, 0, -0.0, math.nan, "", [], {}, "0", 2]
    assert [truthy(v) for v in values] == [
        False, False, False, False, False, False, True, True, True, True,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # same kinds
        ("1 == 1", True),
        ("1 == 1.0", True),
        ("1 != 2", True),
        ("'abc' == 'ABC'", True),
        ("'abc' != 'ABC'", False),
        ("'abc' == 'abd'", False),
        ("null == null", True),
        ("true == true", True),
        ("true == false", False),
        ("NaN == NaN", False),
        ("NaN != NaN", True),
        # differing kinds convert to numbers
        ("1 == '1'", True),
        ("'1' == 1", True),
        ("1 == '1.0'", True),
        ("1 == ' 1 '", True),
        ("0 == ''", True),
        ("255 == '0xff'", True),
        ("1 == 'one'", False),
        ("null == 0", True),
        ("0 == null", True),
        ("null == ''", True),
        ("null == false", True),
        ("null == 'null'", False),
        ("true == 1", True),
        ("true == '1'", True),
        ("false == 0", True),
        ("false == ''", True),
        ("true == 'true'", False),  # 'true' is NaN as a number
        ("2 == true", False),
        # lists and maps are equal only to themselves
        ("fromJSON('[]') == fromJSON('[]')", False),
        ("inputs.names == inputs.names", True),
        ("inputs.cfg == inputs.cfg", True),
        ("inputs.cfg == 'x'", False),
        ("inputs.names == 0", False),
        ("inputs.names != 0", True),
        ("fromJSON('{}') == null", False),
        ("matrix.py == '3.11'", True),
        ("matrix.py == 3.11", True),
        ("matrix.os == 'linux'", True),
        ("steps.a.outputs.n == '30'", True),
    ],
)
def test_equality(source: str, expected: bool) -> None:
    assert ev(source) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 < 2", True),
        ("2 < 1", False),
        ("1 <= 1", True),
        ("2 <= 1", False),
        ("2 > 1", True),
        ("1 > 1", False),
        ("1 >= 1", True),
        ("0 >= 1", False),
        ("-1 < 0", True),
        ("'a' < 'b'", True),
        ("'a' < 'B'", True),  # case-insensitive
        ("'B' > 'a'", True),
        ("'abc' <= 'ABC'", True),
        ("'abc' >= 'ABC'", True),
        ("'10' < '9'", True),  # both text: compared as text
        ("'10' < 9", False),  # kinds differ: compared as numbers
        ("10 > '9'", True),
        ("true > false", True),
        ("false < true", True),
        ("true > 0", True),
        ("null < 1", True),
        ("null >= 0", True),
        ("null <= null", True),
        ("null < null", False),
        ("NaN < 1", False),
        ("NaN >= NaN", False),
        ("1 < 'abc'", False),
        ("1 >= 'abc'", False),
        ("inputs.names < 1", False),
        ("inputs.names >= inputs.names", True),
        ("inputs.names > inputs.names", False),
        ("matrix.n >= 2", True),
        ("Infinity > 1e300", True),
    ],
)
def test_comparison(source: str, expected: bool) -> None:
    assert ev(source) is expected


# --- functions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("contains('Hello World', 'WORLD')", True),
        ("contains('Hello', 'x')", False),
        ("contains('abc', '')", True),
        ("contains(inputs.names, 'ann')", True),  # array: loose, case-insensitive equality
        ("contains(inputs.names, 'An')", False),  # no substring matching on array items
        ("contains(steps.b.outputs.list, '2')", True),
        ("contains(steps.b.outputs.list, 4)", False),
        ("contains(fromJSON('[null]'), 0)", True),
        ("contains(123, 2)", True),  # both become text
        ("contains(true, 'RU')", True),
        ("contains(null, '')", True),
        ("CONTAINS('ab', 'B')", True),
        ("startsWith('Hello', 'he')", True),
        ("startsWith('Hello', 'lo')", False),
        ("startswith(30, 3)", True),
        ("endsWith('Hello', 'LO')", True),
        ("endsWith('Hello', 'he')", False),
        ("EndsWith(null, '')", True),
    ],
)
def test_string_functions(source: str, expected: bool) -> None:
    assert ev(source) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("format('{0} {1}', 'a', 'b')", "a b"),
        ("format('{1}{0}{1}', 'a', 'b')", "bab"),
        ("format('plain')", "plain"),
        ("format('{{0}} is {0}', 1)", "{0} is 1"),
        ("format('{{{0}}}', 'x')", "{x}"),
        ("format('}}{{')", "}{"),
        ("format('{0}|{1}|{2}|{3}|{4}', null, true, 1.0, 2.5, fromJSON('[1]'))", "|true|1|2.5|[1]"),
        ("format(steps.a.outputs.s, 1)", "hello"),
        ("format('n={0}', steps.a.outputs.n)", "n=30"),
        ("join(inputs.names)", "Ann,Bob"),
        ("join(inputs.names, ', ')", "Ann, Bob"),
        ("join(steps.b.outputs.list, 0)", "10203"),
        ("join(fromJSON('[null, true, 1.5]'), '-')", "-true-1.5"),
        ("join('abc', '-')", "abc"),
        ("join(fromJSON('[]'))", ""),
        ("toJSON(1)", "1"),
        ("toJSON(1.0)", "1"),
        ("toJSON('a')", '"a"'),
        ("toJSON(null)", "null"),
        ("toJSON(true)", "true"),
        ("toJSON(inputs.cfg)", '{\n  "lr": 0.1,\n  "epochs": 3\n}'),
        ("toJSON(fromJSON('[]'))", "[]"),
        ("fromJSON('30')", 30),
        ("fromJSON('\"x\"')", "x"),
        ("fromJSON('true')", True),
        ("fromJSON('null')", None),
        ("fromJSON(' {\"a\": [1, 2.5]} ')", {"a": [1, 2.5]}),
        ("fromJSON(30)", 30),
        ("fromJSON(toJSON(inputs.cfg)) == inputs.cfg", False),  # a new object
        ("fromJSON(toJSON(inputs.cfg)).epochs", 3),
    ],
)
def test_value_functions(source: str, expected: Any) -> None:
    result = ev(source)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("failed", "cancelled", "expected"),
    [
        (False, False, [True, False, True, False]),
        (True, False, [False, True, True, False]),
        (False, True, [False, False, True, True]),
        (True, True, [False, True, True, True]),
    ],
)
def test_status_functions(failed: bool, cancelled: bool, expected: list[bool]) -> None:
    result = [
        ev(f"{name}()", failed=failed, cancelled=cancelled)
        for name in ("success", "failure", "always", "cancelled")
    ]
    assert result == expected


def test_known_functions() -> None:
    assert {
        "contains", "startswith", "endswith", "format", "join", "tojson", "fromjson",
        "success", "failure", "always", "cancelled",
    } == KNOWN_FUNCTIONS  # fmt: skip


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "fromJSON('{a')",
            "fromJSON() got invalid JSON '{a': Expecting property name enclosed in double quotes "
            "at line 1 column 2 at position 0 in \"fromJSON('{a')\"",
        ),
        (
            "fromJSON('')",
            "fromJSON() got invalid JSON '': Expecting value at line 1 column 1 "
            "at position 0 in \"fromJSON('')\"",
        ),
        (
            "1 == fromJSON(steps.a.outputs.s)",
            "fromJSON() got invalid JSON 'hello': Expecting value at line 1 column 1 "
            "at position 5 in '1 == fromJSON(steps.a.outputs.s)'",
        ),
    ],
)
def test_eval_error_messages(source: str, message: str) -> None:
    assert eval_error(source) == message


def test_format_errors_at_evaluation() -> None:
    ctx = {"x": {"f": "{0} {1}", "g": "{a}", "h": "x{", "i": "x}"}}
    assert eval_error("format(x.f, 1)", ctx) == (
        "format string '{0} {1}' names an argument past the 1 given after it (the first "
        "is '{0}') at position 0 in 'format(x.f, 1)'"
    )
    assert eval_error("format(x.g)", ctx) == (
        "format string '{a}' has a placeholder that is not a number (use '{0}', '{1}', ...) "
        "at position 0 in 'format(x.g)'"
    )
    assert eval_error("format(x.h)", ctx) == (
        "format string 'x{' has an unmatched '{' at position 0 in 'format(x.h)'"
    )
    assert eval_error("format(x.i)", ctx) == (
        "format string 'x}' has an unmatched '}' at position 0 in 'format(x.i)'"
    )


def test_deep_json_is_an_eval_error() -> None:
    with pytest.raises(ExprEvalError):
        ev("fromJSON(env.x)", {"env": {"x": "[" * 100_000 + "]" * 100_000}})


# --- syntax errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "empty expression at position 0 in ''"),
        ("   ", "empty expression at position 0 in '   '"),
        ("steps.", "expected a property name after '.' at position 6 in 'steps.'"),
        (
            "steps.1",
            "expected a property name after '.' but found number 1 at position 6 in 'steps.1'",
        ),
        ("a == (1))", "unexpected ')' at position 8 in 'a == (1))'"),
        (")", "unexpected ')' at position 0 in ')'"),
        ("a b", "unexpected 'b' at position 2 in 'a b'"),
        ("a 'b'", "unexpected string 'b' at position 2 in \"a 'b'\""),
        ("1 2", "unexpected number 2 at position 2 in '1 2'"),
        ("a ==", "expected a value after '==' at position 4 in 'a =='"),
        ("a && )", "expected a value after '&&' but found ')' at position 5 in 'a && )'"),
        ("!", "expected a value after '!' at position 1 in '!'"),
        ("(a", "expected ')' at position 2 in '(a'"),
        ("(a b)", "expected ')' but found 'b' at position 3 in '(a b)'"),
        ("a[", "expected a value after '[' at position 2 in 'a['"),
        ("a[0", "expected ']' at position 3 in 'a[0'"),
        ("a[0 1]", "expected ']' but found number 1 at position 4 in 'a[0 1]'"),
        ("a = 1", "unexpected character '=' (did you mean '=='?) at position 2 in 'a = 1'"),
        ("a & b", "unexpected character '&' (did you mean '&&'?) at position 2 in 'a & b'"),
        ("a | b", "unexpected character '|' (did you mean '||'?) at position 2 in 'a | b'"),
        (
            'a == "x"',
            "unexpected character '\"' (strings use single quotes) at position 5 in 'a == \"x\"'",
        ),
        ("a + 1", "unexpected character '+' at position 2 in 'a + 1'"),
        ("${{ a }}", "unexpected character '$' at position 0 in '${{ a }}'"),
        ("'abc", "unterminated string literal at position 0 in \"'abc\""),
        ("a == 'it''s", "unterminated string literal at position 9 in \"a == 'it''s\""),
        ("1abc", "invalid number '1abc' at position 0 in '1abc'"),
        ("0x", "invalid number '0x' at position 0 in '0x'"),
        ("1.2.3", "invalid number '1.2.3' at position 0 in '1.2.3'"),
        ("a * b", "unexpected '*' at position 2 in 'a * b'"),
        ("*", "unexpected '*' at position 0 in '*'"),
        ("a..b", "expected a property name after '.' but found '.' at position 2 in 'a..b'"),
        ("a.b(1)", "unexpected '(' at position 3 in 'a.b(1)'"),
        ("true(1)", "unexpected '(' at position 4 in 'true(1)'"),
        ("lenght(x)", "unknown function 'lenght' at position 0 in 'lenght(x)'"),
        (
            "1 == conatins(a, 'b')",
            "unknown function 'conatins' (did you mean 'contains'?) at position 5 "
            "in \"1 == conatins(a, 'b')\"",
        ),
        (
            "startwith(a, 'b')",
            "unknown function 'startwith' (did you mean 'startsWith'?)"
            " at position 0 in \"startwith(a, 'b')\"",
        ),
        (
            "tojsn(a)",
            "unknown function 'tojsn' (did you mean 'toJSON'?) at position 0 in 'tojsn(a)'",
        ),
        (
            "contains(a)",
            "contains() takes exactly 2 arguments (1 given) at position 0 in 'contains(a)'",
        ),
        (
            "contains(a, b, c)",
            "contains() takes exactly 2 arguments (3 given) at position 0 in 'contains(a, b, c)'",
        ),
        (
            "a && STARTSWITH()",
            "startsWith() takes exactly 2 arguments (0 given) at position 5 in 'a && STARTSWITH()'",
        ),
        ("format()", "format() takes at least 1 argument (0 given) at position 0 in 'format()'"),
        ("join()", "join() takes 1 or 2 arguments (0 given) at position 0 in 'join()'"),
        (
            "join(a, b, c)",
            "join() takes 1 or 2 arguments (3 given) at position 0 in 'join(a, b, c)'",
        ),
        ("toJSON()", "toJSON() takes exactly 1 argument (0 given) at position 0 in 'toJSON()'"),
        ("success(1)", "success() takes no arguments (1 given) at position 0 in 'success(1)'"),
        ("always(true)", "always() takes no arguments (1 given) at position 0 in 'always(true)'"),
        (
            "contains(a b)",
            "expected ',' or ')' in the call to contains() but found 'b'"
            " at position 11 in 'contains(a b)'",
        ),
        ("contains(a,", "expected a value after ',' at position 11 in 'contains(a,'"),
        (
            "contains(a,)",
            "expected a value after ',' but found ')' at position 11 in 'contains(a,)'",
        ),
        ("format(", "expected a value after '(' at position 7 in 'format('"),
        (
            "format('{0} {1}', 1)",
            "format string '{0} {1}' names an argument past the 1 given after it (the "
            "first is '{0}') at position 7 in \"format('{0} {1}', 1)\"",
        ),
        (
            "format('{x}')",
            "format string '{x}' has a placeholder that is not a number (use '{0}', '{1}', "
            "...) at position 7 in \"format('{x}')\"",
        ),
        (
            "format('{0', 1)",
            "format string '{0' has an unmatched '{' "
            "at position 7 in \"format('{0', 1)\"",
        ),
        (
            "format('a}b')",
            "format string 'a}b' has an unmatched '}' "
            "at position 7 in \"format('a}b')\"",
        ),
        (
            "(" * 55 + "1" + ")" * 55,
            "expression is nested too deeply (more than 50 levels) at position 50 in "
            f"'{'(' * 55}1{')' * 55}'",
        ),
    ],
)  # fmt: skip
def test_syntax_error_messages(source: str, message: str) -> None:
    assert syntax_error(source) == message


def test_deep_chain_is_a_syntax_error() -> None:
    source = "a" + ".b" * 150
    with pytest.raises(ExprSyntaxError) as info:
        parse(source)
    assert info.value.reason == "expression is nested too deeply (more than 100 levels)"
    many = " == ".join(["1"] * 200)
    with pytest.raises(ExprSyntaxError):
        parse(many)


def test_error_attributes_and_long_source() -> None:
    source = "a == 1 && " * 30 + ")"
    with pytest.raises(ExprSyntaxError) as info:
        parse(source)
    err = info.value
    assert isinstance(err, ExprError)
    assert err.reason == "expected a value after '&&' but found ')'"
    assert (err.source, err.offset) == (source, 300)
    assert str(err) == err.message
    assert err.message == (
        "expected a value after '&&' but found ')' at position 300 in ...'" + source[201:301] + "'"
    )


def test_errors_pickle() -> None:
    with pytest.raises(ExprSyntaxError) as info:
        parse("a ==")
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is ExprSyntaxError
    assert (copy.message, copy.source, copy.offset) == (
        info.value.message,
        "a ==",
        4,
    )


# --- analysis ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("steps.a.outputs.n", [Reference("steps", ("a", "outputs", "n"))]),
        ("steps['a'].outputs['n']", [Reference("steps", ("a", "outputs", "n"))]),
        ("matrix", [Reference("matrix", ())]),
        ("matrix.list[0]", [Reference("matrix", ("list", 0))]),
        ("matrix.list[1.0]", [Reference("matrix", ("list", 1))]),
        ("steps[matrix.id].outputs.x", [Reference("steps", (None,)), Reference("matrix", ("id",))]),
        ("steps.*.outputs.x", [Reference("steps", (None,))]),
        ("steps.a[*].b", [Reference("steps", ("a", None))]),
        (
            "needs.build.outputs.v == inputs.v && env.X",
            [
                Reference("needs", ("build", "outputs", "v")),
                Reference("inputs", ("v",)),
                Reference("env", ("X",)),
            ],
        ),
        ("format('{0}', variable.k)", [Reference("variable", ("k",))]),
        ("fromJSON(env.J).a.b", [Reference("env", ("J",))]),
        (
            "a.b[c.d[e]].f",
            [Reference("a", ("b", None)), Reference("c", ("d", None)), Reference("e", ())],
        ),
        ("'steps.a' == null", []),
        ("success()", []),
    ],
)
def test_references(source: str, expected: list[Reference]) -> None:
    assert references(parse(source)) == expected


def test_reference_offsets() -> None:
    refs = references(parse("1 == steps.a.outputs.n || env.X"))
    assert [r.offset for r in refs] == [5, 26]


def test_references_on_subtree() -> None:
    node = parse("a.b || c").body
    assert isinstance(node, Or)
    assert references(node.left) == [Reference("a", ("b",))]


def test_functions_called_and_status() -> None:
    node = parse("Success() && contains(format('{0}', a), toJSON(b))")
    assert functions_called(node) == {"success", "contains", "format", "tojson"}
    assert uses_status_function(node) is True
    assert uses_status_function(parse("contains(a, 'success()')")) is False
    assert uses_status_function(parse("!cancelled()")) is True
    assert uses_status_function(parse("always() || a").body) is True
    assert functions_called(parse("a.b")) == set()


def test_parse_is_cached() -> None:
    assert parse("a.b == 1") is parse("a.b == 1")


# --- templates -----------------------------------------------------------------------------


def test_find_templates() -> None:
    text = "a ${{ x.y }} b ${{'}}' }}${{1}}"
    assert find_templates(text) == [
        TemplatePart(2, 12, "x.y"),
        TemplatePart(15, 25, "'}}'"),
        TemplatePart(25, 31, "1"),
    ]
    parts = find_templates(text)
    assert [text[p.start : p.end] for p in parts] == ["${{ x.y }}", "${{'}}' }}", "${{1}}"]
    assert [p.source_start for p in parts] == [6, 18, 28]
    assert find_templates("no templates { } }} $ {{") == []
    assert find_templates("${{ 'it''s }}' }}") == [TemplatePart(0, 17, "'it''s }}'")]
    assert find_templates("${{ a }}}") == [TemplatePart(0, 8, "a")]
    assert find_templates("${{}}") == [TemplatePart(0, 5, "")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${{ a", "unclosed '${{' (no matching '}}') at position 0 in '${{ a'"),
        (
            "x ${{ a }} ${{ b }",
            "unclosed '${{' (no matching '}}') at position 11 in 'x ${{ a }} ${{ b }'",
        ),
        ("${{ '}} }}", "unclosed '${{' (no matching '}}') at position 0 in \"${{ '}} }}\""),
    ],
)  # fmt: skip
def test_find_templates_unclosed(text: str, message: str) -> None:
    with pytest.raises(ExprSyntaxError) as info:
        find_templates(text)
    assert info.value.message == message


def test_is_template() -> None:
    assert is_template("${{ a }}") is True
    assert is_template("x ${{") is True
    assert is_template("${ a }") is False
    assert is_template(["${{ a }}"]) is False
    assert is_template(None) is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${{ steps.a.outputs.n }}", 30),
        ("  ${{ steps.a.outputs.n }}\n", 30),
        ("${{steps.a.outputs.f}}", 2.5),
        ("${{ steps.a.outputs.flag }}", True),
        ("${{ steps.a.outputs.none }}", None),
        ("${{ inputs.names }}", ["Ann", "Bob"]),
        ("${{ inputs.cfg }}", {"lr": 0.1, "epochs": 3}),
        ("${{ event.items.*.name }}", ["x", "y"]),
        ("${{ '}}' }}", "}}"),
        ("plain", "plain"),
        ("", ""),
    ],
)
def test_render_whole_value_keeps_type(value: str, expected: Any) -> None:
    result = render(value, CTX)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("n=${{ steps.a.outputs.n }}", "n=30"),
        ("${{ steps.a.outputs.n }}${{ steps.b.outputs.n }}", "307"),
        ("[${{ null }}]", "[]"),
        ("${{ true }} ${{ false }}", "true false"),
        ("${{ 1.0 }} ${{ 2.5 }} ${{ -0 }} ${{ 1e3 }} ${{ 0.1 }}", "1 2.5 0 1000 0.1"),
        ("${{ 1e20 }}|${{ NaN }}", "1E+20|NaN"),
        ("${{ Infinity }} ${{ -1e400 }}", "Infinity -Infinity"),
        ("x=${{ inputs.names }}", 'x=["Ann","Bob"]'),
        ("x=${{ inputs.cfg }}", 'x={"lr":0.1,"epochs":3}'),
        ("x=${{ fromJSON('[1.0, \"é\"]') }}", 'x=[1,"é"]'),
        ("echo '${{ steps.a.outputs.s }}'", "echo 'hello'"),
        ("${{ 'a' }} }} ${{", None),
    ],
)
def test_render_embedded_text(value: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ExprSyntaxError):
            render(value, CTX)
        return
    assert render(value, CTX) == expected


def test_render_recurses_into_lists_and_dict_values() -> None:
    value = {
        "n": "${{ steps.a.outputs.n }}",
        "${{ keys.are.kept }}": [
            "${{ matrix.os }}", "v${{ matrix.py }}", 5, None, {"x": "${{ true }}"},
        ],
        "t": ("${{ 1 }}",),
    }  # fmt: skip
    assert render(value, CTX) == {
        "n": 30,
        "${{ keys.are.kept }}": ["Linux", "v3.11", 5, None, {"x": True}],
        "t": (1,),
    }


def test_render_status_functions_and_errors() -> None:
    assert render("${{ failure() }}", CTX, failed=True) is True
    assert render("${{ cancelled() }}", CTX, cancelled=True) is True
    with pytest.raises(ExprEvalError) as info:
        render("x ${{ nope.a }}", CTX)
    assert info.value.message == "unknown context 'nope' at position 0 in 'nope.a'"
    with pytest.raises(ExprSyntaxError) as info2:
        render("x ${{ a == }}", CTX)
    assert info2.value.message == "expected a value after '==' at position 4 in 'a =='"
    with pytest.raises(ExprSyntaxError) as info3:
        render("${{ }}", CTX)
    assert info3.value.message == "empty expression at position 0 in ''"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (30, "30"),
        (-4, "-4"),
        (30.0, "30"),
        (-0.0, "0"),
        (2.5, "2.5"),
        (0.1 + 0.2, "0.3"),
        (1 / 3, "0.333333333333333"),
        (1e15, "1E+15"),
        (123456789012345.0, "123456789012345"),
        (1.5e-7, "1.5E-07"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        (math.nan, "NaN"),
        ("text", "text"),
        ([1, "a", None, True, 2.0], '[1,"a",null,true,2]'),
        ({"a": [1], "b": {"c": 1.5}}, '{"a":[1],"b":{"c":1.5}}'),
        ((1, 2), "[1,2]"),
        ({1: "x"}, '{"1":"x"}'),
    ],
)
def test_to_text(value: Any, expected: str) -> None:
    assert to_text(value) == expected


# --- conditions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "failed", "cancelled", "expected"),
    [
        (None, False, False, True),
        (None, True, False, False),
        (None, False, True, False),
        ("", False, False, True),
        ("", True, False, False),
        ("matrix.os == 'linux'", False, False, True),
        ("matrix.os == 'linux'", True, False, False),  # wrapped: success() && (...)
        ("${{ matrix.os == 'linux' }}", True, False, False),
        ("  ${{ matrix.os == 'mac' }} ", False, False, False),
        ("always()", True, True, True),
        ("always() && matrix.n == 3", True, False, False),
        ("failure()", True, False, True),
        ("failure()", False, False, False),
        ("${{ failure() || cancelled() }}", False, True, True),
        ("!cancelled()", True, False, True),
        ("success() || matrix.n == 2", True, False, True),
        ("steps.a.outputs.s", False, False, True),  # truthy text
        ("steps.a.outputs.none", False, False, False),
        ("matrix.gpu", False, False, False),
        ("'false'", False, False, True),  # non-empty text is true
        (True, False, False, True),
        (True, True, False, False),
        (False, False, False, False),
        # a failing status short-circuits before the expression would fail
        ("fromJSON('bad')", True, False, False),
    ],
)
def test_evaluate_condition(
    source: str | bool | None, failed: bool, cancelled: bool, expected: bool
) -> None:
    result = evaluate_condition(source, CTX, failed=failed, cancelled=cancelled)
    assert result is expected


def test_evaluate_condition_default() -> None:
    # jobs may use a different default, e.g. "all needs succeeded" already folded into failed
    assert evaluate_condition(None, CTX, failed=True, cancelled=False, default="always()") is True
    assert evaluate_condition(None, CTX, failed=True, cancelled=False, default="failure()") is True
    assert evaluate_condition(None, CTX, failed=False, cancelled=False, default="false") is False


def test_evaluate_condition_errors() -> None:
    with pytest.raises(ExprSyntaxError) as info:
        evaluate_condition("${{ a }} == b", CTX, failed=False, cancelled=False)
    assert info.value.message == (
        "a condition must be one expression, bare or inside a single '${{ }}' "
        "at position 0 in '${{ a }} == b'"
    )
    with pytest.raises(ExprSyntaxError) as info2:
        evaluate_condition("${{ a }} && ${{ b }}", CTX, failed=False, cancelled=False)
    assert info2.value.offset == 12
    with pytest.raises(ExprEvalError) as info3:
        evaluate_condition("foo == 1", CTX, failed=False, cancelled=False)
    assert info3.value.message == "unknown context 'foo' at position 0 in 'foo == 1'"


def test_evaluate_accepts_source_text_and_subtrees() -> None:
    assert evaluate("1 == 1", {}) is True
    node = parse("steps.a.outputs.n == 30").body
    assert evaluate(node, CTX) is True


# --- properties ----------------------------------------------------------------------------

_EXPR_ALPHABET = st.sampled_from(
    [
        *"()[]!.<>=&|',*-+$ {}0123456789abexfnul_",
        "true", "null", "NaN", "0x", "1e", "==", "&&", "||", "steps", "contains(", "format(",
        "fromJSON(", "success()", "'{0}'", "'", "''", "\n", "é", "${{", "}}",
    ]
)  # fmt: skip
_EXPR_TEXT = st.one_of(st.text(max_size=60), st.lists(_EXPR_ALPHABET, max_size=40).map("".join))


@settings(max_examples=1500, deadline=None)
@given(_EXPR_TEXT)
def test_parse_only_raises_syntax_errors(text: str) -> None:
    try:
        node = parse(text)
    except ExprSyntaxError as e:
        assert 0 <= e.offset <= len(text)
        return
    # whatever parses must evaluate with only ExprEvalError
    contexts = {"a": {"b": [1, "x", None]}, "steps": {}, "b": 1, "e": "", "f": None}
    with contextlib.suppress(ExprEvalError):
        evaluate(node, contexts)


@settings(max_examples=1500, deadline=None)
@given(_EXPR_TEXT)
def test_find_templates_only_raises_syntax_errors(text: str) -> None:
    try:
        parts = find_templates(text)
    except ExprSyntaxError as e:
        assert text[e.offset : e.offset + 3] == "${{"
        return
    last = 0
    for part in parts:
        assert part.start >= last
        assert text[part.start : part.start + 3] == "${{"
        assert text[part.end - 2 : part.end] == "}}"
        assert text[part.source_start : part.source_start + len(part.source)] == part.source
        last = part.end


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=5),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=3), children, max_size=3)
        ),
        max_leaves=10,
    )
)
def test_to_json_round_trip(value: Any) -> None:
    assert evaluate(parse("fromJSON(toJSON(x.v))"), {"x": {"v": value}}) == value
    rendered = render("${{ x.v }}!", {"x": {"v": value}})
    assert rendered == to_text(value) + "!"
