"""Exceptions raised by the expression language."""

from __future__ import annotations

__all__ = ["ContextValueError", "ExprError", "ExprEvalError", "ExprSyntaxError"]

_MAX_SHOWN = 120
_WINDOW = 100


def _show(source: str, offset: int) -> str:
    """Quote `source` for a message, cutting a window around `offset` when it is long."""
    if len(source) <= _MAX_SHOWN:
        return repr(source)
    start = max(0, min(offset - _WINDOW // 2, len(source) - _WINDOW))
    end = start + _WINDOW
    prefix = "..." if start > 0 else ""
    suffix = "..." if end < len(source) else ""
    return f"{prefix}{source[start:end]!r}{suffix}"


class ExprError(Exception):
    """An error in a `${{ }}` expression.

    `reason` is the bare problem ("unexpected ')'"), `source` the expression (or template text)
    and `offset` the 0-based character offset in `source` where the problem is. `message` (also
    `str(error)`) is the full text: "<reason> at position <offset> in '<source>'".
    """

    def __init__(self, reason: str, source: str = "", offset: int = 0) -> None:
        self.reason = reason
        self.source = source
        self.offset = offset
        self.message = f"{reason} at position {offset} in {_show(source, offset)}"
        super().__init__(self.message)

    def __reduce__(self) -> tuple[type[ExprError], tuple[str, str, int]]:
        return (type(self), (self.reason, self.source, self.offset))


class ExprSyntaxError(ExprError):
    """The text is not a valid expression or template (found before anything is evaluated)."""


class ExprEvalError(ExprError):
    """A valid expression failed while being evaluated (unknown context, bad JSON, ...)."""


class ContextValueError(Exception):
    """Raised by a context's own mapping when a value cannot be produced as it is read (a
    folder that cannot be made); the expression reading it fails with this message
    (an :class:`ExprEvalError`)."""
