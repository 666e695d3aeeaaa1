"""The built-in functions: contains, startsWith, endsWith, format, join, toJSON, fromJSON and
the status functions success, failure, always, cancelled."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._errors import ExprEvalError
from ._values import ARRAY, EvalState, kind, loose_equal, to_json, to_text

__all__ = [
    "FUNCTIONS",
    "KNOWN_FUNCTIONS",
    "STATUS_FUNCTIONS",
    "FormatError",
    "FunctionSpec",
    "arity_problem",
    "format_text",
]

Impl = Callable[[EvalState, list[Any], int], Any]


class FormatError(ValueError):
    """A format() string that cannot be used; the argument is the reason."""


@dataclass(frozen=True)
class FunctionSpec:
    name: str  # as documented, e.g. 'startsWith'
    min_args: int
    max_args: int | None  # None: no limit
    impl: Impl


def arity_problem(spec: FunctionSpec, given: int) -> str | None:
    """The message for a call with `given` arguments, or None when the count is right."""
    lo, hi = spec.min_args, spec.max_args
    if hi is None:
        if given >= lo:
            return None
        plural = "" if lo == 1 else "s"
        return f"{spec.name}() takes at least {lo} argument{plural} ({given} given)"
    if lo <= given <= hi:
        return None
    if lo == hi:
        if lo == 0:
            return f"{spec.name}() takes no arguments ({given} given)"
        plural = "" if lo == 1 else "s"
        return f"{spec.name}() takes exactly {lo} argument{plural} ({given} given)"
    joiner = "or" if hi == lo + 1 else "to"
    return f"{spec.name}() takes {lo} {joiner} {hi} arguments ({given} given)"


def format_text(fmt: str, args: list[Any]) -> str:
    """GitHub's format(): `{N}` is argument N as text, `{{` and `}}` are literal braces."""
    out: list[str] = []
    i = 0
    n = len(fmt)
    while i < n:
        lb = fmt.find("{", i)
        rb = fmt.find("}", i)
        if lb < 0 and rb < 0:
            out.append(fmt[i:])
            break
        j = rb if lb < 0 or (0 <= rb < lb) else lb
        out.append(fmt[i:j])
        if fmt.startswith("{{", j):
            out.append("{")
            i = j + 2
        elif fmt.startswith("}}", j):
            out.append("}")
            i = j + 2
        elif fmt[j] == "}":
            raise FormatError(f"format string {fmt!r} has an unmatched '}}'")
        else:
            close = fmt.find("}", j)
            if close < 0:
                raise FormatError(f"format string {fmt!r} has an unmatched '{{'")
            index = fmt[j + 1 : close]
            if not (index.isascii() and index.isdigit()):
                raise FormatError(
                    f"format string {fmt!r} has a placeholder that is not a number "
                    f"(use '{{0}}', '{{1}}', ...)"
                )
            k = int(index) if len(index) < 10 else len(args)
            if k >= len(args):
                given = len(args)
                raise FormatError(
                    f"format string {fmt!r} names an argument past the {given} given "
                    f"after it (the first is '{{0}}')"
                )
            out.append(to_text(args[k]))
            i = close + 1
    return "".join(out)


def _text(value: Any) -> str:
    return value if type(value) is str else to_text(value)


def _contains(st: EvalState, args: list[Any], offset: int) -> bool:
    search, item = args
    if kind(search) == ARRAY:
        return any(loose_equal(x, item) for x in search)
    return _text(item).upper() in _text(search).upper()


def _starts_with(st: EvalState, args: list[Any], offset: int) -> bool:
    return _text(args[0]).upper().startswith(_text(args[1]).upper())


def _ends_with(st: EvalState, args: list[Any], offset: int) -> bool:
    return _text(args[0]).upper().endswith(_text(args[1]).upper())


def _format(st: EvalState, args: list[Any], offset: int) -> str:
    try:
        return format_text(_text(args[0]), args[1:])
    except FormatError as e:
        raise ExprEvalError(str(e), st.source, offset) from None


def _join(st: EvalState, args: list[Any], offset: int) -> str:
    sep = _text(args[1]) if len(args) > 1 else ","
    if kind(args[0]) == ARRAY:
        return sep.join(_text(x) for x in args[0])
    return _text(args[0])


def _to_json(st: EvalState, args: list[Any], offset: int) -> str:
    try:
        return to_json(args[0], indent=2)
    except (ValueError, RecursionError) as e:
        raise ExprEvalError(f"toJSON() cannot convert the value: {e}", st.source, offset) from None


def _from_json(st: EvalState, args: list[Any], offset: int) -> Any:
    text = _text(args[0])
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise ExprEvalError(
            f"fromJSON() got invalid JSON {shown!r}: {e.msg} at line {e.lineno} column {e.colno}",
            st.source,
            offset,
        ) from None
    except (ValueError, RecursionError) as e:
        raise ExprEvalError(f"fromJSON() cannot read the JSON: {e}", st.source, offset) from None


def _success(st: EvalState, args: list[Any], offset: int) -> bool:
    return not st.failed and not st.cancelled


def _failure(st: EvalState, args: list[Any], offset: int) -> bool:
    return st.failed


def _always(st: EvalState, args: list[Any], offset: int) -> bool:
    return True


def _cancelled(st: EvalState, args: list[Any], offset: int) -> bool:
    return st.cancelled


FUNCTIONS: dict[str, FunctionSpec] = {
    spec.name.lower(): spec
    for spec in (
        FunctionSpec("contains", 2, 2, _contains),
        FunctionSpec("startsWith", 2, 2, _starts_with),
        FunctionSpec("endsWith", 2, 2, _ends_with),
        FunctionSpec("format", 1, None, _format),
        FunctionSpec("join", 1, 2, _join),
        FunctionSpec("toJSON", 1, 1, _to_json),
        FunctionSpec("fromJSON", 1, 1, _from_json),
        FunctionSpec("success", 0, 0, _success),
        FunctionSpec("failure", 0, 0, _failure),
        FunctionSpec("always", 0, 0, _always),
        FunctionSpec("cancelled", 0, 0, _cancelled),
    )
}

KNOWN_FUNCTIONS: frozenset[str] = frozenset(FUNCTIONS)
STATUS_FUNCTIONS: frozenset[str] = frozenset({"success", "failure", "always", "cancelled"})
