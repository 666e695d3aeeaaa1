"""`${{ }}` templates inside strings: finding, rendering, and `if:` conditions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ._errors import ContextValueError, ExprEvalError, ExprSyntaxError
from ._nodes import Expression, Node, Reference
from ._parser import collect_functions, collect_references, parse
from ._values import EvalState, Filtered, to_text, truthy

__all__ = [
    "TemplatePart",
    "evaluate",
    "evaluate_condition",
    "find_templates",
    "functions_called",
    "is_template",
    "references",
    "render",
    "uses_status_function",
]

# Inside `${{ ... }}`: anything but a quote or '}', a whole string literal, or a lone '}'.
_INNER = re.compile(r"(?:[^'}]+|'[^']*'|\}(?!\}))*")


@dataclass(frozen=True)
class TemplatePart:
    """One `${{ ... }}` in a text: `text[start:end]` is the whole template, `source` the stripped
    expression inside, which starts at `text[source_start]` (not compared)."""

    start: int
    end: int
    source: str
    source_start: int = field(default=0, compare=False)


@lru_cache(maxsize=8192)
def _find(text: str) -> tuple[TemplatePart, ...]:
    parts: list[TemplatePart] = []
    pos = 0
    while True:
        start = text.find("${{", pos)
        if start < 0:
            return tuple(parts)
        m = _INNER.match(text, start + 3)
        stop = m.end() if m else start + 3
        if not text.startswith("}}", stop):
            raise ExprSyntaxError("unclosed '${{' (no matching '}}')", text, start)
        inner = text[start + 3 : stop]
        lead = len(inner) - len(inner.lstrip())
        parts.append(TemplatePart(start, stop + 2, inner.strip(), start + 3 + lead))
        pos = stop + 2


def find_templates(text: str) -> list[TemplatePart]:
    """The `${{ }}` spans in `text`, in order. A `}}` inside a quoted string does not close one."""
    return list(_find(text))


def is_template(value: object) -> bool:
    """True for a string containing `${{`."""
    return isinstance(value, str) and "${{" in value


Segments = tuple[str | Expression, ...]


@lru_cache(maxsize=8192)
def _compile(text: str) -> tuple[bool, Segments]:
    """(whole, segments): whole when `text` is one template with only whitespace around it."""
    parts = _find(text)
    if len(parts) == 1:
        part = parts[0]
        if not text[: part.start].strip() and not text[part.end :].strip():
            return True, (parse(part.source),)
    segments: list[str | Expression] = []
    pos = 0
    for part in parts:
        if part.start > pos:
            segments.append(text[pos : part.start])
        segments.append(parse(part.source))
        pos = part.end
    if pos < len(text):
        segments.append(text[pos:])
    return False, tuple(segments)


def _run(node: Node, st: EvalState) -> Any:
    if isinstance(node, Expression):
        st.source = node.source
        node = node.body
    try:
        result = node.run(st)
        if type(result) is not dict and isinstance(result, Mapping):
            result = dict(result)  # a context's own mapping: its values read here, as a dict
    except ContextValueError as exc:
        raise ExprEvalError(str(exc), st.source, 0) from None
    return list(result) if type(result) is Filtered else result


def evaluate(
    node: Node | str,
    contexts: Mapping[str, Any],
    *,
    failed: bool = False,
    cancelled: bool = False,
) -> Any:
    """Evaluate a parsed expression (or the source of one) against `contexts`."""
    if isinstance(node, str):
        node = parse(node)
    return _run(node, EvalState(contexts, failed, cancelled, ""))


_SCALARS = (int, float, bool, type(None))


def _render_text(text: str, st: EvalState) -> Any:
    if "${{" not in text:
        return text
    whole, segments = _compile(text)
    if whole:
        return _run(segments[0], st)  # type: ignore[arg-type]
    out = [s if type(s) is str else to_text(_run(s, st)) for s in segments]  # type: ignore[arg-type]
    return "".join(out)


def _render(value: Any, st: EvalState) -> Any:
    t = type(value)
    if t is str:
        return _render_text(value, st)
    if t in _SCALARS:
        return value
    if t is dict or (t is not list and isinstance(value, Mapping)):
        return {k: _render(v, st) for k, v in value.items()}
    if t is list or isinstance(value, list):
        return [_render(v, st) for v in value]
    if isinstance(value, tuple):
        return tuple(_render(v, st) for v in value)
    if isinstance(value, str):
        return _render_text(value, st)
    return value


def render(
    value: Any,
    contexts: Mapping[str, Any],
    *,
    failed: bool = False,
    cancelled: bool = False,
) -> Any:
    """Render every template in `value` (strings, and inside lists and map values).

    A string that is exactly one template keeps the result's type; otherwise each template's
    result is spliced in as text (see `to_text`).
    """
    return _render(value, EvalState(contexts, failed, cancelled, ""))


@lru_cache(maxsize=4096)
def _condition(source: str) -> tuple[Expression, bool]:
    text = source.strip()
    if text.startswith("${{"):
        parts = _find(text)
        if len(parts) != 1 or parts[0].end != len(text):
            raise ExprSyntaxError(
                "a condition must be one expression, bare or inside a single '${{ }}'",
                source,
                source.find("${{") if len(parts) <= 1 else source.find("${{", parts[0].end),
            )
        node = parse(parts[0].source)
    else:
        node = parse(source)
    return node, not node.uses_status


def evaluate_condition(
    source: str | bool | None,
    contexts: Mapping[str, Any],
    *,
    failed: bool,
    cancelled: bool,
    default: str = "success()",
) -> bool:
    """Evaluate an `if:` value. None (or blank) means `default`; an expression without a status
    function means `success() && (expr)`, as in GitHub Actions."""
    if source is None or (isinstance(source, str) and not source.strip()):
        source = default
    if not isinstance(source, str):  # a YAML boolean or number
        return truthy(source) and not failed and not cancelled
    node, needs_success = _condition(source)
    if needs_success and (failed or cancelled):
        return False
    return truthy(_run(node, EvalState(contexts, failed, cancelled, "")))


def uses_status_function(node: Node) -> bool:
    """True if success(), failure(), always() or cancelled() is called anywhere."""
    if isinstance(node, Expression):
        return node.uses_status
    return not collect_functions(node).isdisjoint({"success", "failure", "always", "cancelled"})


def functions_called(node: Node) -> set[str]:
    """Lower-case names of every function called."""
    return set(node.functions if isinstance(node, Expression) else collect_functions(node))


def references(node: Node) -> list[Reference]:
    """Every context access, in source order (see `Reference`)."""
    if isinstance(node, Expression):
        return list(node.refs)
    out: list[Reference] = []
    collect_references(node, out)
    return out
