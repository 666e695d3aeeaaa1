"""Typed action inputs: turning what a step gives (often text) into the declared type.

Used twice: by validation for literal values in a flow, and by the executor, before a step
starts, for values that came out of templates. Free of pydantic and yaml.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from flowray.expr import to_text
from flowray.spec.diagnostics import describe
from flowray.spec.types import InputSpecData

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})
INPUT_TYPES = ("string", "integer", "float", "boolean", "array", "object")

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class InputError(ValueError):
    """A value cannot be used for an input; the message names the input."""


def coerce_input(name: str, spec: InputSpecData, value: Any) -> Any:
    """``value`` converted to the type ``spec`` declares; raises :class:`InputError`.

    - ``string``: text as is; numbers and booleans as text (``true``/``false``, ``30``).
    - ``integer``: an int, a float with no fraction, or text such as ``"3"`` or ``"-12"``.
    - ``float``: an int or float, or text such as ``"3.5"``, ``"1e-3"``; returns a float.
    - ``boolean``: true/false, or text (any case) ``true 1 yes on`` / ``false 0 no off``, or 1/0.
    - ``array`` / ``object``: a list / map, or JSON text of one.

    ``None`` means "not given": an error for a required input, else returned as is (defaults
    are the caller's business, as they may be templates that need rendering first).
    """
    kind = spec.get("type") or "string"
    if value is None:
        if spec.get("required"):
            raise InputError(f"input '{name}' is required, got null")
        return None
    if kind == "string":
        return _string(name, value)
    if kind == "integer":
        return _integer(name, value)
    if kind == "float":
        return _float(name, value)
    if kind == "boolean":
        return _boolean(name, value)
    if kind == "array":
        return _json_kind(name, value, list, "an array (a list, or JSON text of one)")
    if kind == "object":
        return _json_kind(name, value, dict, "an object (a map, or JSON text of one)")
    raise InputError(
        f"input '{name}' has an unknown type '{kind}' (types: {', '.join(INPUT_TYPES)})"
    )


def _fail(name: str, expected: str, value: Any) -> InputError:
    return InputError(f"input '{name}' expects {expected}, got {describe(value)}")


def _string(name: str, value: Any) -> str:
    if isinstance(value, str | bool | int | float):
        return to_text(value)
    raise _fail(name, "a string", value)


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise _fail(name, "an integer", value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        try:
            return int(value.strip())
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            raise _fail(name, "an integer of at most 4300 digits", value) from None
    raise _fail(name, "an integer", value)


def _float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise _fail(name, "a number", value)
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # an integer past the largest float
            raise _fail(name, "a number (this one is too large)", value) from None
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value.strip())
    raise _fail(name, "a number", value)


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise _fail(name, "a boolean (true/false, yes/no, on/off, 1/0)", value)


def _json_kind(name: str, value: Any, kind: type, expected: str) -> Any:
    if isinstance(value, kind):
        return value
    if kind is list and isinstance(value, tuple):
        return list(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            raise _fail(name, expected, value) from None
        if isinstance(parsed, kind):
            return parsed
    raise _fail(name, expected, value)
