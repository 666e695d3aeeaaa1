"""Value semantics of GitHub Actions expressions: kinds, truthiness, coercion, text."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

NULL, BOOL, NUM, STR, ARRAY, OBJECT = range(6)

_INF = math.inf
_NAN = math.nan
_MAX_EXACT = 2**53

_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_BASED = re.compile(r"([+-]?)0(?:([xX])([0-9a-fA-F]+)|[oO]([0-7]+))", re.ASCII)
_SPECIAL = {"Infinity": _INF, "+Infinity": _INF, "-Infinity": -_INF, "NaN": _NAN}


class Filtered(list[Any]):
    """The list made by a `*` filter: `.name` and `[key]` on it map over its items."""

    __slots__ = ()


class EvalState:
    """Everything an evaluation needs besides the tree."""

    __slots__ = ("cancelled", "contexts", "failed", "source")

    def __init__(
        self, contexts: Mapping[str, Any], failed: bool, cancelled: bool, source: str
    ) -> None:
        self.contexts = contexts
        self.failed = failed
        self.cancelled = cancelled
        self.source = source


def kind(value: Any) -> int:
    if value is None:
        return NULL
    t = type(value)
    if t is str:
        return STR
    if t is bool:
        return BOOL
    if t is int or t is float:
        return NUM
    if t is dict:
        return OBJECT
    if t is list or t is Filtered:
        return ARRAY
    if isinstance(value, str):
        return STR
    if isinstance(value, (int, float)):
        return NUM
    if isinstance(value, (list, tuple)):
        return ARRAY
    return OBJECT


def truthy(value: Any) -> bool:
    """GitHub truthiness: null, false, 0, -0, NaN and '' are false; everything else is true."""
    if value is None:
        return False
    if value is True or value is False:
        return value
    if isinstance(value, (int, float)):
        return value == value and value != 0
    if isinstance(value, str):
        return value != ""
    return True


def int_value(digits: str, base: int, negative: bool) -> int | float:
    """An integer from `digits`, as a float when too big for a double to hold exactly."""
    n = int(digits, base)
    if n.bit_length() > 1023:
        result: int | float = _INF
    elif n > _MAX_EXACT:
        result = float(n)
    else:
        result = n
    return -result if negative else result


def parse_number(text: str) -> int | float:
    """Convert a string to a number the way GitHub does ('' is 0, junk is NaN)."""
    s = text.strip()
    if not s:
        return 0
    if _DECIMAL.fullmatch(s):
        return float(s)
    m = _BASED.fullmatch(s)
    if m:
        if m.group(2):
            return int_value(m.group(3), 16, m.group(1) == "-")
        return int_value(m.group(4), 8, m.group(1) == "-")
    return _SPECIAL.get(s, _NAN)


def to_number(value: Any) -> int | float:
    k = kind(value)
    if k == NUM:
        return value  # type: ignore[no-any-return]
    if k == NULL:
        return 0
    if k == BOOL:
        return 1 if value else 0
    if k == STR:
        return parse_number(value)
    return _NAN


def format_number(x: float) -> str:
    """Numbers as GitHub prints them: integers without '.0', at most 15 significant digits."""
    if x != x:
        return "NaN"
    if x == _INF:
        return "Infinity"
    if x == -_INF:
        return "-Infinity"
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return format(x, ".15g").replace("e", "E")


def plain(value: Any) -> Any:
    """A JSON-ready copy: tuples as lists, keys as text, integral floats as ints."""
    k = kind(value)
    if k == NUM:
        if isinstance(value, float) and abs(value) < _MAX_EXACT and value.is_integer():
            return int(value)
        return value
    if k == ARRAY:
        return [plain(v) for v in value]
    if k == OBJECT and isinstance(value, Mapping):
        return {(k2 if isinstance(k2, str) else to_text(k2)): plain(v) for k2, v in value.items()}
    return value


def to_json(value: Any, indent: int | None = None) -> str:
    separators = (",", ": ") if indent is not None else (",", ":")
    return json.dumps(
        plain(value), indent=indent, separators=separators, ensure_ascii=False, default=str
    )


def to_text(value: Any) -> str:
    """The text a value becomes when spliced into a string.

    null is '', booleans are 'true'/'false', numbers print like GitHub (30, not 30.0),
    lists and maps are compact JSON.
    """
    if value is None:
        return ""
    t = type(value)
    if t is str:
        return value  # type: ignore[no-any-return]
    if t is bool:
        return "true" if value else "false"
    if t is int:
        return str(value)
    if t is float:
        return format_number(value)
    k = kind(value)
    if k == STR:
        return str(value)
    if k == NUM:
        return format_number(float(value)) if isinstance(value, float) else str(int(value))
    if k == ARRAY or isinstance(value, Mapping):
        return to_json(value)
    return str(value)


def _coerce(a: Any, b: Any) -> tuple[int, Any, int, Any]:
    """GitHub's CoerceTypes: make two values comparable (both numbers when kinds differ)."""
    ka = kind(a)
    kb = kind(b)
    while ka != kb:
        if ka == NUM and kb == STR:
            b, kb = parse_number(b), NUM
        elif ka == STR and kb == NUM:
            a, ka = parse_number(a), NUM
        elif ka in (BOOL, NULL):
            a, ka = to_number(a), NUM
        elif kb in (BOOL, NULL):
            b, kb = to_number(b), NUM
        else:
            break
    return ka, a, kb, b


def loose_equal(a: Any, b: Any) -> bool:
    """`==`: numbers when kinds differ, strings case-insensitive, lists/maps by identity."""
    t = type(a)
    if t is type(b):  # fast paths for the common same-type cases
        if t is int or t is float or t is bool:
            return bool(a == b)
        if t is str:
            return bool(a == b or a.upper() == b.upper())
    ka, a, kb, b = _coerce(a, b)
    if ka != kb:
        return False
    if ka == NUM:
        return bool(a == b)  # NaN is never equal
    if ka == STR:
        return bool(a == b or a.upper() == b.upper())
    if ka == NULL:
        return True
    if ka == BOOL:
        return bool(a == b)
    return a is b


def greater(a: Any, b: Any) -> bool:
    """`>` after coercion: numbers, strings (case-insensitive) and booleans are ordered."""
    ka, a, kb, b = _coerce(a, b)
    if ka != kb:
        return False
    if ka == NUM:
        return bool(a > b)
    if ka == STR:
        return bool(a.upper() > b.upper())
    if ka == BOOL:
        return bool(a and not b)
    return False


def less(a: Any, b: Any) -> bool:
    return greater(b, a)


def greater_equal(a: Any, b: Any) -> bool:
    return loose_equal(a, b) or greater(a, b)


def less_equal(a: Any, b: Any) -> bool:
    return loose_equal(a, b) or greater(b, a)


def lookup(obj: Mapping[Any, Any], key: str) -> tuple[bool, Any]:
    """A key of a map, exact first and then ignoring case (GitHub contexts are case-insensitive)."""
    if key in obj:
        return True, obj[key]
    folded = key.lower()
    for k, v in obj.items():
        if isinstance(k, str) and k.lower() == folded:
            return True, v
    return False, None


def get_item(obj: Any, key: Any) -> tuple[bool, Any]:
    """`obj[key]`: a map key (as text) or a list index (as a number, floored); (found, value)."""
    if isinstance(obj, Mapping):
        return lookup(obj, key if type(key) is str else to_text(key))
    if isinstance(obj, (list, tuple)):
        n = to_number(key)
        if n != n or n < 0 or n == _INF:
            return False, None
        i = int(n)
        if i < len(obj):
            return True, obj[i]
    return False, None
