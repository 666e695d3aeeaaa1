"""Pydantic validation errors turned into :class:`Diagnostic` s a person can act on.

A pydantic ``loc`` mixes keys of the document with the names of union members (``'str'``,
``'ActionRef'``, ``'function-after[...]'``) and uses field names where a key was renamed before
validation (``timeout`` for ``timeout-minutes``). Each ``loc`` is therefore walked against the
raw document: elements that lead somewhere in the data are keys, the first that does not is a
union member. The errors of one union are folded into one message, unless the value plainly
meant one member (a map given for ``str | ActionRef``), whose own errors are then reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from flowray.spec.diagnostics import Diagnostic, KeyPath, describe, did_you_mean, format_path
from flowray.spec.models import (
    Action,
    ActionRef,
    Branding,
    ContainerSpec,
    EnvSpec,
    Flow,
    InputSpec,
    Job,
    OutputSpec,
    Resources,
    Runs,
    Step,
    Strategy,
)
from flowray.spec.yamlpos import Positions

# Where each model sits in a document: '*' is any map key, '#' any list index.
Shape = tuple[tuple[str, ...], type[BaseModel]]
FLOW_SHAPES: tuple[Shape, ...] = (
    ((), Flow),
    (("jobs", "*"), Job),
    (("jobs", "*", "steps", "#"), Step),
    (("jobs", "*", "steps", "#", "action"), ActionRef),
    (("jobs", "*", "resources"), Resources),
    (("jobs", "*", "strategy"), Strategy),
    (("jobs", "*", "container"), ContainerSpec),
)
ACTION_SHAPES: tuple[Shape, ...] = (
    ((), Action),
    (("inputs", "*"), InputSpec),
    (("outputs", "*"), OutputSpec),
    (("runs",), Runs),
    (("env", "*"), EnvSpec),
    (("branding",), Branding),
)

# Keys a model's "before" validator renames, and the field each becomes.
_EXTRA_KEYS: dict[type[BaseModel], tuple[str, ...]] = {
    Step: ("inputs", "timeout-minutes"),
    Job: ("timeout-minutes",),
}
_RENAMED = {"timeout": "timeout-minutes", "with": "inputs"}

# Keys of neighbouring tools (GitHub Actions and act, GitLab CI, Drone/Woodpecker, Azure
# Pipelines, Buildkite) -> (the tool, flowray's key for the same thing or None, what to do).
_GHA = "GitHub Actions"
_NO_PERMISSIONS = "steps run with the rights of the user that runs flowray"
_FOREIGN_KEYS: dict[type[BaseModel], dict[str, tuple[str, str | None, str]]] = {
    Flow: {
        "on": (_GHA, "triggers", ""),
        "run-name": (_GHA, None, "a run is named by the flow's 'name' and its run id"),
        "timeout-minutes": (_GHA, None, "set it on a job or a step"),
        "defaults": (_GHA, None, "set 'shell' on each step, 'working-directory' on a job or "
                                 "step"),
        "permissions": (_GHA, None, _NO_PERMISSIONS),
        "stages": ("GitLab CI", None, "jobs run in parallel unless 'needs' orders them"),
        "trigger": ("Azure Pipelines", "triggers", ""),
    },
    Job: {
        "runs-on": (_GHA, None, "a job runs where its 'resources' (cpus, gpus, memory, "
                                "accelerator, labels) fit, on this machine or on Ray"),
        "with": (_GHA, None, "'with' (or 'inputs') gives an action its inputs and belongs to "
                             "a step with 'action'; a job's environment is 'env'"),
        "uses": (_GHA, None, "there are no reusable flows: a step runs an action with "
                             "'action'"),
        "services": (_GHA, None, "start a service in a step (e.g. `docker run -d`)"),
        "environment": (_GHA, None, "set values with 'env'"),
        "permissions": (_GHA, None, _NO_PERMISSIONS),
        "concurrency": (_GHA, None, "it belongs at the top level of the flow, beside "
                                    "'triggers'"),
        "defaults": (_GHA, None, "set 'shell' on each step, 'working-directory' on the job"),
        "depends_on": ("Drone/Woodpecker", "needs", ""),
        "dependsOn": ("Azure Pipelines", "needs", ""),
        "image": ("GitLab CI", "container", ""),
        "script": ("GitLab CI", None, "a job has 'steps', each with 'run'"),
        "stage": ("GitLab CI", None, "order jobs with 'needs'"),
        "variables": ("GitLab CI", "env", ""),
        "matrix": ("GitLab CI", None, "a matrix goes under 'strategy' (strategy.matrix)"),
    },
    Step: {
        "uses": (_GHA, "action", ""),
        "script": ("Azure Pipelines", "run", ""),
        "bash": ("Azure Pipelines", "run", ""),
        "commands": ("Drone/Woodpecker", "run", ""),
        "command": ("Buildkite", "run", ""),
        "needs": ("GitLab CI", None, "'needs' orders jobs; a job's steps run in order"),
        "runs-on": (_GHA, None, "a job runs where its 'resources' fit"),
        "strategy": (_GHA, None, "'strategy' (a matrix) belongs to a job"),
    },
}


def foreign_key_message(model: type[BaseModel], key: str) -> str | None:
    """The message for ``key``, a key another tool uses where flowray has ``model``: its
    flowray equivalent (``did you mean``), or what to do instead; None for other keys."""
    found = _FOREIGN_KEYS.get(model, {}).get(key)
    if found is None:
        return None
    tool, ours, instead = found
    if ours is not None:
        return f"unknown key '{key}' (did you mean '{ours}'? '{key}' is a key of {tool}; " \
               f"flowray's is '{ours}')"
    return f"unknown key '{key}' (a key of {tool}): {instead}"


_TYPE_NOUNS = {
    "string_type": "a string",
    "bool_type": "a boolean",
    "int_type": "an integer",
    "float_type": "a number",
    "dict_type": "a map",
    "model_type": "a map",
    "model_attributes_type": "a map",
    "list_type": "a list",
    "none_required": "null",
}
_ID_RULE = "ids start with a letter or '_' and hold only letters, digits, '-' and '_'"


def allowed_keys(model: type[BaseModel]) -> list[str]:
    """The keys a document may use for ``model``: field aliases (or names), and renamed keys."""
    keys = [f.alias or name for name, f in model.model_fields.items()]
    return keys + list(_EXTRA_KEYS.get(model, ()))


def model_at(path: Sequence[str | int], shapes: Sequence[Shape]) -> type[BaseModel] | None:
    """The model that the object at ``path`` is validated as, if any."""
    for pattern, model in shapes:
        if len(pattern) != len(path):
            continue
        if all(_part_matches(p, x) for p, x in zip(pattern, path, strict=True)):
            return model
    return None


def _part_matches(pattern: str, part: str | int) -> bool:
    if pattern == "*":
        return isinstance(part, str)
    if pattern == "#":
        return isinstance(part, int)
    return pattern == part


def iter_objects(
    data: Any, shapes: Sequence[Shape], path: KeyPath = ()
) -> Iterator[tuple[KeyPath, dict[str, Any], type[BaseModel]]]:
    """Every map in ``data`` that stands where ``shapes`` puts a model."""
    if isinstance(data, dict):
        model = model_at(path, shapes)
        if model is not None:
            yield path, data, model
        for key, value in data.items():
            if _could_hold_model((*path, key), shapes):
                yield from iter_objects(value, shapes, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            if _could_hold_model((*path, i), shapes):
                yield from iter_objects(value, shapes, (*path, i))


def _could_hold_model(path: KeyPath, shapes: Sequence[Shape]) -> bool:
    return any(
        len(pattern) >= len(path)
        and all(_part_matches(p, x) for p, x in zip(pattern, path, strict=False))
        for pattern, _ in shapes
    )


def python_name_keys(
    data: Any, shapes: Sequence[Shape], positions: Positions, file: str
) -> list[Diagnostic]:
    """Errors for Python field names used as keys (``continue_on_error``): pydantic takes them
    (``populate_by_name``, for code that builds models), a file must not."""
    out = []
    for path, obj, model in iter_objects(data, shapes):
        renamed = _EXTRA_KEYS.get(model, ())
        for name, info in model.model_fields.items():
            if info.alias and info.alias != name and name in obj and name not in renamed:
                key_path = (*path, name)
                line, col = positions.key(key_path)
                out.append(
                    Diagnostic(
                        file, line, col, format_path(key_path),
                        f"unknown key '{name}' (did you mean '{info.alias}'?)",
                    )
                )
    return out


# ----------------------------------------------------------------------------- conversion


class _Converter:
    def __init__(
        self, data: Any, positions: Positions, file: str, shapes: Sequence[Shape]
    ) -> None:
        self.data = data
        self.positions = positions
        self.file = file
        self.shapes = shapes
        self.out: list[Diagnostic] = []

    def value_at(self, path: KeyPath) -> Any:
        cur = self.data
        for part in path:
            cur = cur[part]
        return cur

    def resolve(
        self, loc: tuple[Any, ...], kind: str
    ) -> tuple[KeyPath, tuple[Any, ...], str | None, bool]:
        """(path in the data, loc left from the first union member on, missing key, key error)."""
        cur = self.data
        path: list[str | int] = []
        for i, el in enumerate(loc):
            if el == "[key]":
                return tuple(path), (), None, True
            if isinstance(cur, dict) and isinstance(el, str):
                key = el if el in cur else _RENAMED.get(el)
                if key is not None and key in cur:
                    path.append(key)
                    cur = cur[key]
                    continue
                if kind == "missing" and i == len(loc) - 1:
                    return tuple(path), (), el, False
                return tuple(path), loc[i:], None, False
            if (
                isinstance(cur, list)
                and isinstance(el, int)
                and not isinstance(el, bool)
                and 0 <= el < len(cur)
            ):
                path.append(el)
                cur = cur[el]
                continue
            return tuple(path), loc[i:], None, False
        return tuple(path), (), None, False

    def add(self, path: KeyPath, message: str, *, at_key: bool = True) -> None:
        line, col = self.positions.key(path) if at_key else self.positions.value(path)
        self.out.append(Diagnostic(self.file, line, col, format_path(path), message))

    def convert(self, errors: Sequence[dict[str, Any]]) -> None:
        unions: dict[KeyPath, list[tuple[Any, tuple[Any, ...], dict[str, Any]]]] = {}
        for err in errors:
            loc = tuple(err.get("loc", ()))
            path, rest, missing, is_key = self.resolve(loc, str(err.get("type", "")))
            if rest:
                unions.setdefault(path, []).append((rest[0], rest[1:], err))
            elif missing is not None:
                self.add(path, f"missing required key '{missing}'")
            else:
                self.plain(path, err, is_key=is_key)
        for path, members in unions.items():
            self.union(path, members)

    def union(
        self, path: KeyPath, members: list[tuple[Any, tuple[Any, ...], dict[str, Any]]]
    ) -> None:
        by_tag: dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]] = {}
        for tag, rest, err in members:
            by_tag.setdefault(str(tag), []).append((rest, err))
        for errs in by_tag.values():
            if not any(not rest and err.get("type") in _TYPE_NOUNS for rest, err in errs):
                # The value has the type of this member, which failed for another reason.
                self.convert([{**err, "loc": (*path, *rest)} for rest, err in errs])
                return
        value = self.value_at(path)
        nouns: list[str] = []
        for errs in by_tag.values():
            for _, err in errs:
                noun = _TYPE_NOUNS.get(str(err.get("type")))
                if noun and noun not in nouns:
                    nouns.append(noun)
        self.add(path, f"{self.expected(path, nouns)}, got {describe(value)}")

    def expected(self, path: KeyPath, nouns: list[str]) -> str:
        parent = model_at(path[:-1], self.shapes) if path else None
        field = path[-1] if path else None
        if parent is Step and field == "action":
            return (
                "expected an action ('./path', 'owner/repo@tag' or 'docker://image') "
                "or a map with name/tag/git/file"
            )
        if parent is Job and field == "container":
            return "expected an image name or a map with image/options/env/volumes"
        if parent is Job and field == "needs":
            return "expected a job id or a list of job ids"
        if parent is Job and field in ("artifacts", "reports"):
            return "expected a path (glob) or a list of them"
        if len(path) >= 2 and path[-2] == "env":
            return "expected a string, a number or a boolean"
        if not nouns:
            return "expected another kind of value"
        if len(nouns) == 1:
            return f"expected {nouns[0]}"
        return f"expected {', '.join(nouns[:-1])} or {nouns[-1]}"

    def plain(self, path: KeyPath, err: dict[str, Any], *, is_key: bool) -> None:
        kind = str(err.get("type", ""))
        ctx: dict[str, Any] = err.get("ctx") or {}
        value = err.get("input")
        got = describe(value)
        if is_key:
            self.add(path, self.key_message(path, kind, err))
            return
        if kind == "extra_forbidden":
            model = model_at(path[:-1], self.shapes)
            key = str(path[-1]) if path else ""
            foreign = foreign_key_message(model, key) if model is not None else None
            if foreign is not None:
                self.add(path, foreign)
                return
            hint = did_you_mean(key, allowed_keys(model)) if model is not None else ""
            self.add(path, f"unknown key '{key}'{hint}")
            return
        if kind in _TYPE_NOUNS:
            noun = "true or false" if kind == "bool_type" else _TYPE_NOUNS[kind]
            self.add(path, f"{self.expected(path, [noun])}, got {got}")
            return
        message: str
        if kind in ("int_from_float", "int_parsing"):
            message = f"expected an integer, got {got}"
        elif kind in ("float_parsing", "finite_number"):
            message = f"expected a finite number, got {got}"
        elif kind == "greater_than":
            message = f"must be greater than {_num(ctx.get('gt'))}, got {got}"
        elif kind == "greater_than_equal":
            message = f"must be at least {_num(ctx.get('ge'))}, got {got}"
        elif kind == "less_than":
            message = f"must be less than {_num(ctx.get('lt'))}, got {got}"
        elif kind == "less_than_equal":
            message = f"must be at most {_num(ctx.get('le'))}, got {got}"
        elif kind == "string_too_short":
            message = "must not be empty"
        elif kind == "too_short":
            message = self.too_short(path, ctx)
        elif kind == "string_pattern_mismatch":
            what = "step id" if path and path[-1] == "id" else "value"
            message = f"invalid {what} {got}: {_ID_RULE}"
        elif kind == "literal_error":
            choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
            hint = did_you_mean(value, choices) if isinstance(value, str) else ""
            message = f"expected one of {', '.join(choices)}, got {got}{hint}"
        elif kind in ("value_error", "assertion_error"):
            error = ctx.get("error")
            message = str(error) if error is not None else _lower_first(str(err.get("msg", "")))
        else:
            message = _lower_first(str(err.get("msg", "invalid value")))
        self.add(path, message)

    def too_short(self, path: KeyPath, ctx: dict[str, Any]) -> str:
        field = path[-1] if path else None
        if field == "jobs" and len(path) == 1:
            return "a flow needs at least one job"
        if field == "steps":
            return "a job needs at least one step"
        n = ctx.get("min_length", 1)
        return f"must have at least {n} item{'s' if n != 1 else ''}"

    def key_message(self, path: KeyPath, kind: str, err: dict[str, Any]) -> str:
        key = path[-1] if path else ""
        if kind == "string_pattern_mismatch" and len(path) == 2 and path[0] == "jobs":
            return f"invalid job id {describe(key)}: {_ID_RULE}"
        return f"invalid key {describe(key)}: {_lower_first(str(err.get('msg', '')))}"


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def validation_diagnostics(
    exc: ValidationError,
    data: Any,
    positions: Positions,
    file: str,
    shapes: Sequence[Shape],
) -> list[Diagnostic]:
    """Every error of ``exc`` as a located diagnostic in flow syntax."""
    converter = _Converter(data, positions, file, shapes)
    converter.convert(list(exc.errors(include_url=False)))  # type: ignore[arg-type]
    return converter.out
