"""Problems found in a flow or action file, and the exception that carries them.

Deliberately free of pydantic and yaml: the CLI and the executor format and catch these without
paying for the validation machinery.
"""

from __future__ import annotations

import difflib
import json as _json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from flowray.spec.types import FlowData

Severity = Literal["error", "warning"]
PathPart = str | int
KeyPath = tuple[PathPart, ...]

_RED = "\x1b[31m"
_YELLOW = "\x1b[33m"
_BOLD = "\x1b[1m"
_RESET = "\x1b[0m"
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Diagnostic:
    """One problem, located in a file.

    ``line``/``col`` are 1-based and point at the offending key (or value); both are 0 when the
    problem has no place in the file (a missing file, a wrong extension). ``path`` is the key path
    in flow syntax (``jobs.train.steps[2].action``), ``""`` for the whole document.
    """

    file: str
    line: int
    col: int
    path: str
    message: str
    severity: Severity = "error"

    def format(self, *, color: bool = False) -> str:
        """The diagnostic as one line, compiler style.

        ``FILE:LINE:COL: PATH: MESSAGE``, where ``LINE:COL:`` is left out when the position is
        unknown (0) and ``PATH:`` when the problem concerns the whole document. A warning has
        ``warning: `` before the path. With ``color``, the location is bold and an ``error: ``
        (red) or ``warning: `` (yellow) label stands before the path, for terminals.
        """
        where = f"{self.file}:{self.line}:{self.col}:" if self.line > 0 else f"{self.file}:"
        label = ""
        if color:
            where = f"{_BOLD}{where}{_RESET}"
            tint = _RED if self.severity == "error" else _YELLOW
            label = f"{tint}{self.severity}:{_RESET} "
        elif self.severity == "warning":
            label = "warning: "
        path = f"{self.path}: " if self.path else ""
        return f"{where} {label}{path}{self.message}"

    def __str__(self) -> str:
        return self.format()


def sort_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Unique diagnostics grouped by file (in order of first appearance), then by position."""
    unique = list(dict.fromkeys(diagnostics))
    order: dict[str, int] = {}
    for d in unique:
        order.setdefault(d.file, len(order))
    return sorted(unique, key=lambda d: (order[d.file], d.line, d.col))


class FlowError(Exception):
    """A flow or action file is invalid.

    ``diagnostics`` holds every problem found (errors, and the warnings found alongside them),
    grouped by file and sorted by line and column; ``str()`` is all of them formatted, one a line.
    """

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics: list[Diagnostic] = sort_diagnostics(diagnostics)
        super().__init__("\n".join(d.format() for d in self.diagnostics))

    @property
    def errors(self) -> list[Diagnostic]:
        """The diagnostics of severity ``error``."""
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        """The diagnostics of severity ``warning``."""
        return [d for d in self.diagnostics if d.severity == "warning"]

    def format(self, *, color: bool = False) -> str:
        """All diagnostics, one a line (see :meth:`Diagnostic.format`)."""
        return "\n".join(d.format(color=color) for d in self.diagnostics)

    def __reduce__(self) -> tuple[type[FlowError], tuple[list[Diagnostic]]]:
        return (type(self), (self.diagnostics,))


@dataclass(frozen=True)
class LoadedFlow:
    """A validated flow: ``data`` is ``Flow.model_dump()``, ``warnings`` what did not stop it."""

    path: str
    data: FlowData
    warnings: list[Diagnostic] = field(default_factory=list)
    source_sha256: str = ""


def format_path(path: Sequence[PathPart]) -> str:
    """``('jobs', 'a', 'steps', 2, 'with')`` as ``jobs.a.steps[2].with``.

    Keys that are not plain names are written in brackets: ``env["A.B"]``.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            escaped = _json.dumps(part, ensure_ascii=False)[1:-1]  # control characters too
            out += f'["{escaped}"]'
    return out


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The one of ``choices`` closest to ``word`` (ignoring case if need be), or None."""
    options = [c for c in choices if c]
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in options}
        close = [lowered[m] for m in difflib.get_close_matches(word.lower(), list(lowered), n=1)]
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or ``""``."""
    near = closest(word, choices)
    return f" (did you mean '{near}'?)" if near is not None else ""


def describe(value: object, *, limit: int = 40, json: bool = False) -> str:
    """A short rendering of a YAML value for messages: ``'text'``, ``3``, ``true``, ``a list``.

    ``json``: in JSON's words (``an array``, ``an object``; a string that needs quoting in
    JSON's quotes), for messages about JSON files."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > 64:
        return "a very large integer" if value.bit_length() > 10_000 else repr(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        text = value if len(value) <= limit else value[: limit - 3] + "..."
        if "'" in text or not text.isprintable():  # a newline, a NUL...
            return _json.dumps(text) if json else repr(text)
        return f"'{text}'"
    if isinstance(value, list):
        return "an array" if json else "a list"
    if isinstance(value, dict):
        return "an object" if json else "a map"
    return type(value).__name__
