"""Reading flow and action files: parse with positions, validate, check, or raise FlowError."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection
from typing import Any, cast

from pydantic import ValidationError

from flowray.expr import ExprError
from flowray.spec.diagnostics import (
    Diagnostic,
    FlowError,
    LoadedFlow,
    describe,
    format_path,
    sort_diagnostics,
)
from flowray.spec.envnames import env_problem
from flowray.spec.files import ACTION_FILES, MAX_FILE_BYTES, find_action_file
from flowray.spec.inputs import INPUT_TYPES, InputError, coerce_input
from flowray.spec.model_errors import (
    ACTION_SHAPES,
    FLOW_SHAPES,
    python_name_keys,
    validation_diagnostics,
)
from flowray.spec.models import Action, Flow
from flowray.spec.shells import ACTION_ADVICE, script_problems
from flowray.spec.types import ActionData, FlowData, InputSpecData
from flowray.spec.validate import (
    FlowChecker,
    GitActionLoader,
    action_template_problems,
    git_refs_in,
)
from flowray.spec.yamlpos import Parsed, Positions, YamlError, offset_col, parse_json, parse_yaml

EXTENSIONS = (".yml", ".yaml", ".json")


def _extension_problem(file: str, what: str) -> Diagnostic | None:
    ext = os.path.splitext(file)[1]
    if ext.lower() in EXTENSIONS:
        return None
    got = f"'{ext}'" if ext else "no extension"
    return Diagnostic(file, 0, 0, "", f"{what} must end in .yml, .yaml or .json (got {got})")


def _read(file: str) -> tuple[bytes, Parsed]:
    """The bytes of ``file`` and its data with positions; raises FlowError."""
    try:
        with open(file, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)  # no more than that is ever read
    except FileNotFoundError:
        raise FlowError([Diagnostic(file, 0, 0, "", "file not found")]) from None
    except IsADirectoryError:
        raise FlowError([Diagnostic(file, 0, 0, "", "is a folder, not a file")]) from None
    except PermissionError:
        raise FlowError([Diagnostic(file, 0, 0, "", "permission denied")]) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise FlowError([Diagnostic(file, 0, 0, "", f"cannot read the file: {reason}")]) from None
    except ValueError:  # a NUL character in the path
        raise FlowError([Diagnostic(file.replace("\0", "\\0"), 0, 0, "",
                                    "not a valid file name (it holds a NUL character)")]) from None
    if len(raw) > MAX_FILE_BYTES:
        message = (f"the file is too large (more than {MAX_FILE_BYTES // 2**20} MiB; "
                   "flow and action files are limited to that size)")
        raise FlowError([Diagnostic(file, 0, 0, "", message)])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = offset_col(before.decode("utf-8", "replace"))
        message = f"the file is not UTF-8 text (byte {raw[exc.start]:#04x} cannot be decoded)"
        raise FlowError([Diagnostic(file, line, col, "", message)]) from None
    try:
        if os.path.splitext(file)[1].lower() == ".json":
            return raw, parse_json(text, file)
        return raw, parse_yaml(text, file)
    except YamlError as exc:
        raise FlowError([exc.diagnostic]) from None


def read_document(file: str) -> Parsed:
    """A flow or action file's data with the positions of its keys and values; raises
    FlowError when it cannot be read or parsed."""
    return _read(file)[1]


def _not_a_map(file: str, parsed: Parsed, what: str, keys: str) -> Diagnostic:
    if parsed.data is None:
        return Diagnostic(file, 0, 0, "", f"the file is empty ({what} needs {keys})")
    line, col = parsed.positions.value(())
    return Diagnostic(
        file, line, col, "", f"{what} must be a map with {keys}, got {describe(parsed.data)}"
    )


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return None


def load_flow(
    path: str | os.PathLike[str],
    *,
    workspace: str | None = None,
    git_action: GitActionLoader | None = None,
    variables: Collection[str] = (),
) -> LoadedFlow:
    """Read, validate and check a flow file; raises :class:`FlowError` with every problem.

    Local actions (``./path``) are resolved against ``workspace`` (default: the current
    directory) and their action files validated too. The returned warnings (undeclared inputs)
    do not stop a run.
    """
    file = os.fspath(path)
    problem = _extension_problem(file, "flow files")
    if problem is not None:
        raise FlowError([problem])
    raw, parsed = _read(file)
    data = parsed.data
    if not isinstance(data, dict):
        raise FlowError([_not_a_map(file, parsed, "a flow", "'name' and 'jobs'")])
    positions = parsed.positions
    if git_action is not None:
        # one round of parallel resolves, not one a step
        git_action.prefetch(git_refs_in(data, workspace or _cwd()))
    diagnostics = [*parsed.problems, *python_name_keys(data, FLOW_SHAPES, positions, file)]
    model: Flow | None = None
    try:
        model = Flow.model_validate(data)
    except ValidationError as exc:
        diagnostics += validation_diagnostics(exc, data, positions, file, FLOW_SHAPES)
    cwd = _cwd()
    checker = FlowChecker(
        data,
        positions,
        file,
        workspace=workspace or cwd or ".",
        display_root=cwd,
        load_action=lambda folder, shown: _load_action(folder, shown, None),
        git_action=git_action,
        variables=variables,
    )
    diagnostics += checker.check()
    # The flow file's own problems first, then those of the action files it uses.
    diagnostics.sort(key=lambda d: d.file != file)
    if model is None or any(d.severity == "error" for d in diagnostics):
        raise FlowError(diagnostics)
    return LoadedFlow(
        path=file,
        data=cast(FlowData, model.model_dump()),
        warnings=sort_diagnostics(diagnostics),
        source_sha256=hashlib.sha256(raw).hexdigest(),
    )


def load_action(
    path: str | os.PathLike[str], *, file: str | None = None, shown: str | None = None
) -> ActionData:
    """Read and validate the action in folder ``path``: its ``action-datatorch.yaml`` (or
    ``.yml``), or ``file`` when given. Raises :class:`FlowError` located in the action file,
    named under ``shown`` (default: the folder) in messages."""
    folder = os.fspath(path)
    action, diagnostics = _load_action(folder, shown or folder, file)
    if action is None:
        raise FlowError(diagnostics)
    return action


def _load_action(
    folder: str, shown: str, file: str | None
) -> tuple[ActionData | None, list[Diagnostic]]:
    """The validated action in ``folder`` (None when invalid) and the problems found; files are
    named in diagnostics under ``shown`` (the folder as the user would write it)."""
    if not os.path.isdir(folder):
        return None, [Diagnostic(shown, 0, 0, "", "action folder not found")]
    found = find_action_file(folder, file)
    if found is None:
        wanted = f"'{file}'" if file else f"{ACTION_FILES[0]} (or {ACTION_FILES[1]})"
        return None, [Diagnostic(shown, 0, 0, "", f"no action file {wanted} in this folder")]
    action_file = os.path.join(shown, found)
    problem = _extension_problem(action_file, "action files")
    if problem is not None:
        return None, [problem]
    try:
        _, parsed = _read(os.path.join(folder, found))
    except FlowError as exc:
        return None, [_rename(d, action_file) for d in exc.diagnostics]
    data = parsed.data
    if not isinstance(data, dict):
        return None, [_not_a_map(action_file, parsed, "an action", "'name' and 'runs'")]
    positions = parsed.positions
    diagnostics = [_rename(d, action_file) for d in parsed.problems]
    diagnostics += python_name_keys(data, ACTION_SHAPES, positions, action_file)
    model: Action | None = None
    try:
        model = Action.model_validate(data)
    except ValidationError as exc:
        diagnostics += validation_diagnostics(exc, data, positions, action_file, ACTION_SHAPES)
    diagnostics += _check_action(data, positions, action_file, folder, shown)
    if model is None or any(d.severity == "error" for d in diagnostics):
        return None, sort_diagnostics(diagnostics)
    return cast(ActionData, model.model_dump()), sort_diagnostics(diagnostics)


def _rename(d: Diagnostic, file: str) -> Diagnostic:
    return Diagnostic(file, d.line, d.col, d.path, d.message, d.severity)


def _check_action(
    data: dict[str, Any], positions: Positions, file: str, folder: str, shown: str
) -> list[Diagnostic]:
    """What the model cannot see: defaults of the wrong type, entry files that are missing."""
    out: list[Diagnostic] = []

    def report(path: tuple[str, ...], message: str) -> None:
        line, col = positions.key(path)
        out.append(Diagnostic(file, line, col, format_path(path), message))

    inputs = data.get("inputs")
    if isinstance(inputs, dict):
        for name, spec in inputs.items():
            if not isinstance(spec, dict) or spec.get("default") is None:
                continue
            kind = spec.get("type", "string")
            default = spec["default"]
            if kind not in INPUT_TYPES or (isinstance(default, str) and "${{" in default):
                continue
            as_input: InputSpecData = {
                "type": kind, "required": False, "default": None, "description": None
            }
            try:
                coerce_input(name, as_input, default)
            except InputError as exc:
                report(("inputs", name, "default"), f"bad default: {exc}")
    for path, message in action_template_problems(data):
        line, col = positions.value(path)
        out.append(Diagnostic(file, line, col, format_path(path), message))
    runs = data.get("runs")
    if isinstance(runs, dict) and isinstance(runs.get("env"), dict):
        for key, value in runs["env"].items():
            problem = env_problem(key, value)
            if problem:
                report(("runs", "env", key), problem)
    if isinstance(runs, dict):
        entry = {"python": "main", "node": "main", "script": "script"}.get(str(runs.get("using")))
        target = runs.get(entry) if entry else None
        if (
            entry
            and isinstance(target, str)
            and target
            and "${{" not in target
            and not os.path.isfile(os.path.join(folder, target))
            # `script: run.sh --flag`: the file is the first word
            and not (entry == "script" and os.path.isfile(os.path.join(folder, target.split()[0])))
        ):
            report(("runs", entry), f"'{target}' not found in the action folder {shown}")
        command = runs.get("command")
        if runs.get("using") == "cmd" and isinstance(command, str) and "${{" in command:
            try:
                problems = script_problems(command, advice=ACTION_ADVICE)
            except ExprError:
                problems = []  # the template's own error is reported when the step runs
            for problem in problems:
                line, col = positions.value(("runs", "command"))
                out.append(Diagnostic(file, line, col, "runs.command", problem))
    return out
