"""Which secrets a flow reads (``${{ secrets.NAME }}``), and those a run was not given.

A secret that is not given reads as null (empty text), so a step that needs it would run and
fail in a way that does not name it; the run is refused before anything starts instead. Uses in
an ``if:`` (or ``continue-on-error``) test the secret and are never reported, nor are uses with
a fallback (``secrets.X || ''``: an operand of ``||`` that is not the last); uses in a job or
step that has an ``if:`` are warnings (the condition may skip them); every other use is an error.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from flowray.expr import (
    ContextAccess,
    ExprError,
    Index,
    Node,
    Or,
    Property,
    find_templates,
    parse,
    references,
)
from flowray.spec.diagnostics import Diagnostic, FlowError, KeyPath, format_path

# Flow-level keys that are not rendered by a run.
_NOT_RENDERED = ("name", "description", "variables", "triggers", "jobs")


@dataclass(frozen=True)
class SecretUse:
    """One ``secrets.NAME`` read: where (a key path), and whether an ``if:`` guards it."""

    name: str
    path: KeyPath
    guarded: bool


def _names_in(source: str, *, condition: bool) -> list[str]:
    """The secret names an expression (``condition``) or a text with templates reads."""
    try:
        text = source.strip()
        if condition and not text.startswith("${{"):
            sources = [source]
        elif "${{" in source:
            sources = [part.source for part in find_templates(source)]
        else:
            return []
        out = []
        for src in sources:
            tree = parse(src)
            optional = _with_fallback(tree)
            for ref in references(tree):
                first = ref.path[0] if ref.path else None
                if ref.context.lower() == "secrets" and isinstance(first, str) \
                        and ref.offset not in optional:
                    out.append(first)
        return out
    except (ExprError, RecursionError):
        return []  # reported by validation


def _with_fallback(tree: Node) -> set[int]:
    """Where (the offsets of their context names) the accesses that have a fallback start:
    each operand of an ``||`` chain but the last (``secrets.X || ''``, ``secrets.A ||
    secrets.B || 'x'``) is optional by the flow's own words, so not reported."""
    out: set[int] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Or):
            operands: list[Node] = []
            chain: list[Node] = [node]
            while chain:  # the chain's operands, left to right, whatever its parentheses
                cur = chain.pop()
                if isinstance(cur, Or):
                    chain += [cur.right, cur.left]
                else:
                    operands.append(cur)
            for operand in operands[:-1]:
                target = operand
                while isinstance(target, (Property, Index)):
                    target = target.target
                if isinstance(target, ContextAccess):
                    out.add(target.offset)
            stack += operands
        else:
            stack += node.children()
    return out


def _in_value(value: Any, path: KeyPath, guarded: bool) -> Iterator[SecretUse]:
    if isinstance(value, str):
        if "secrets" in value.lower():
            for name in _names_in(value, condition=False):
                yield SecretUse(name, path, guarded)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _in_value(item, (*path, key), guarded)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _in_value(item, (*path, i), guarded)


def secret_uses(flow: Mapping[str, Any], *, jobs: Collection[str] | None = None,
                raw: bool = True) -> Iterator[SecretUse]:
    """Every ``secrets.NAME`` read outside a condition, in a flow document (``raw``: as
    written, else as validated, whose keys are ``if_`` and ``continue_on_error``); of the
    jobs ``jobs`` only when given."""
    conditions = ("if", "continue-on-error") if raw else ("if_", "continue_on_error")
    for key, value in flow.items():
        if key not in _NOT_RENDERED:
            yield from _in_value(value, (key,), False)
    all_jobs = flow.get("jobs")
    for job_id, job in all_jobs.items() if isinstance(all_jobs, dict) else ():
        if not isinstance(job, dict) or (jobs is not None and job_id not in jobs):
            continue
        job_guarded = bool(job.get(conditions[0]))
        for key, value in job.items():
            if key not in (*conditions, "steps"):
                yield from _in_value(value, ("jobs", job_id, key), job_guarded)
        steps = job.get("steps")
        for i, step in enumerate(steps if isinstance(steps, list) else ()):
            if not isinstance(step, dict):
                continue
            guarded = job_guarded or bool(step.get(conditions[0]))
            for key, value in step.items():
                if key not in conditions:
                    yield from _in_value(value, ("jobs", job_id, "steps", i, key), guarded)


def missing_secrets(flow_file: str, flow: Mapping[str, Any], given: Collection[str], *,
                    jobs: Collection[str] | None = None) -> list[tuple[str, Diagnostic]]:
    """The name and a diagnostic for each read of a secret that is not in ``given`` (names
    compare ignoring case, as templates read them): an error, or a warning where an ``if:``
    guards it. ``flow`` is the validated flow; ``flow_file`` is read again (only when a
    secret is missing) for the positions."""
    have = {g.lower() for g in given}
    if all(u.name.lower() in have for u in secret_uses(flow, jobs=jobs, raw=False)):
        return []
    from flowray.spec.loader import read_document

    try:
        parsed = read_document(flow_file)
    except FlowError:  # the file went away since it was validated: no positions
        parsed = None
    raw = parsed.data if parsed is not None and isinstance(parsed.data, dict) else None
    out: list[tuple[str, Diagnostic]] = []
    if raw is None:
        for use in secret_uses(flow, jobs=jobs, raw=False):
            if use.name.lower() not in have:
                out.append((use.name, _diagnostic(flow_file, 0, 0, use)))
        return out
    assert parsed is not None
    for use in secret_uses(raw, jobs=jobs, raw=True):
        if use.name.lower() not in have:
            line, col = parsed.positions.value(use.path)
            out.append((use.name, _diagnostic(flow_file, line, col, use)))
    return out


def _diagnostic(file: str, line: int, col: int, use: SecretUse) -> Diagnostic:
    if use.guarded:
        return Diagnostic(file, line, col, format_path(use.path),
                          f"secret '{use.name}' is not given (it reads as empty; the 'if' "
                          "of its step or job may skip this)", "warning")
    return Diagnostic(file, line, col, format_path(use.path),
                      f"secret '{use.name}' is not given")
