"""coerce_input: typed action inputs, as validation and the executor use them."""

from __future__ import annotations

from typing import Any

import pytest

from flowray.spec import InputError, coerce_input
from flowray.spec.types import InputSpecData


def spec(kind: str, *, required: bool = False) -> InputSpecData:
    return {"type": kind, "required": required, "default": None, "description": None}


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("string", "abc", "abc"),
        ("string", "", ""),
        ("string", 3, "3"),
        ("string", 2.5, "2.5"),
        ("string", 30.0, "30"),
        ("string", True, "true"),
        ("string", False, "false"),
        ("integer", 3, 3),
        ("integer", "3", 3),
        ("integer", " -12 ", -12),
        ("integer", "+7", 7),
        ("integer", 4.0, 4),
        ("float", 2, 2.0),
        ("float", 2.5, 2.5),
        ("float", "3.5", 3.5),
        ("float", "1e-3", 0.001),
        ("float", "-.5", -0.5),
        ("float", "7", 7.0),
        ("boolean", True, True),
        ("boolean", False, False),
        ("boolean", "false", False),
        ("boolean", "False", False),
        ("boolean", "FALSE", False),
        ("boolean", "0", False),
        ("boolean", "no", False),
        ("boolean", "off", False),
        ("boolean", "true", True),
        ("boolean", "True", True),
        ("boolean", "1", True),
        ("boolean", "yes", True),
        ("boolean", "on", True),
        ("boolean", 0, False),
        ("boolean", 1, True),
        ("array", [1, "a"], [1, "a"]),
        ("array", "[1, 2]", [1, 2]),
        ("array", "[]", []),
        ("object", {"a": 1}, {"a": 1}),
        ("object", '{"a": [1]}', {"a": [1]}),
    ],
)
def test_coerce_ok(kind: str, value: Any, expected: Any) -> None:
    result = coerce_input("x", spec(kind), value)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("integer", "abc", "input 'b' expects an integer, got 'abc'"),
        ("integer", "3.5", "input 'b' expects an integer, got '3.5'"),
        ("integer", 3.5, "input 'b' expects an integer, got 3.5"),
        ("integer", True, "input 'b' expects an integer, got true"),
        ("integer", "", "input 'b' expects an integer, got ''"),
        ("integer", [1], "input 'b' expects an integer, got a list"),
        ("float", "abc", "input 'b' expects a number, got 'abc'"),
        ("float", "nan", "input 'b' expects a number, got 'nan'"),
        ("float", False, "input 'b' expects a number, got false"),
        ("float", {"a": 1}, "input 'b' expects a number, got a map"),
        (
            "boolean",
            "maybe",
            "input 'b' expects a boolean (true/false, yes/no, on/off, 1/0), got 'maybe'",
        ),
        ("boolean", 2, "input 'b' expects a boolean (true/false, yes/no, on/off, 1/0), got 2"),
        ("string", [1], "input 'b' expects a string, got a list"),
        ("string", {"a": 1}, "input 'b' expects a string, got a map"),
        ("array", "abc", "input 'b' expects an array (a list, or JSON text of one), got 'abc'"),
        ("array", '{"a": 1}', "input 'b' expects an array (a list, or JSON text of one), "
                              "got '{\"a\": 1}'"),
        ("array", 3, "input 'b' expects an array (a list, or JSON text of one), got 3"),
        ("object", "[1]", "input 'b' expects an object (a map, or JSON text of one), got '[1]'"),
        ("object", [1], "input 'b' expects an object (a map, or JSON text of one), got a list"),
        ("matrix", 1, "input 'b' has an unknown type 'matrix' "
                      "(types: string, integer, float, boolean, array, object)"),
    ],
)
def test_coerce_errors(kind: str, value: Any, message: str) -> None:
    with pytest.raises(InputError) as info:
        coerce_input("b", spec(kind), value)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_none_means_not_given() -> None:
    assert coerce_input("a", spec("integer"), None) is None
    with pytest.raises(InputError) as info:
        coerce_input("a", spec("integer", required=True), None)
    assert str(info.value) == "input 'a' is required, got null"


def test_long_values_are_cut_in_messages() -> None:
    with pytest.raises(InputError) as info:
        coerce_input("n", spec("integer"), "x" * 100)
    assert str(info.value) == f"input 'n' expects an integer, got '{'x' * 37}...'"
