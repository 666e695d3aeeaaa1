"""Pushing a flow: validate it as ``flowray validate`` would (with its local actions beside
it), check that its flow triggers form no cycle with the flows already kept, and work out
what the service keeps of it (trigger kinds, schedules with their first fire).

Run workspaces are made here too: a fresh folder holding the flow and its local actions.
"""

from __future__ import annotations

import base64
import binascii
import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from flowray.spec.diagnostics import Diagnostic

MAX_FILES = 1000
MAX_FILES_BYTES = 16 * 1024 * 1024
FLOW_FILE_NAME = "flow.yaml"  # a pushed flow's file in its run workspace, unless it is JSON


class PushError(Exception):
    """A pushed flow that is not kept: the diagnostics (file:line:col) say why."""

    def __init__(self, message: str, diagnostics: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.diagnostics = diagnostics


class BadFiles(ValueError):
    """Local action files that cannot be written to a workspace (their names or contents)."""


@dataclass
class Pushed:
    """What the service keeps of a valid flow."""

    name: str
    path: str
    text: str
    files: dict[str, str]
    executable: list[str]
    triggers: list[str]
    flow_triggers: list[tuple[str, list[str]]]
    schedules: list[tuple[str, str, float, float]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # the flow, read


def diagnostic_dict(d: Diagnostic, *, root: str, shown: str) -> dict[str, Any]:
    """A diagnostic for the API: its file named as the client pushed it (never the server's
    temporary folder)."""
    file = d.file
    if os.path.isabs(file):
        rel = os.path.relpath(file, root)
        file = shown if rel in (FLOW_FILE_NAME, "flow.json") else rel
    # messages may name the action folders of the temporary workspace: relative names there
    message = d.message.replace(root.rstrip(os.sep) + os.sep, "")
    return {"file": file, "line": d.line, "col": d.col, "path": d.path, "message": message,
            "severity": d.severity}


def safe_relpath(path: str) -> str:
    """``path`` as a relative POSIX path inside a workspace; BadFiles otherwise."""
    if not isinstance(path, str) or not path or "\0" in path or "\\" in path:
        raise BadFiles(f"files: {path!r:.100} is not a relative path")
    norm = posixpath.normpath(path)
    if norm.startswith(("/", "../")) or norm in ("..", ".") or norm.startswith(".flowray"):
        raise BadFiles(f"files: {path!r:.100} is outside the flow's folder")
    return norm


def decode_files(files: Mapping[str, Any]) -> dict[str, bytes]:
    """The local action files of a push (base64 in JSON), checked."""
    if len(files) > MAX_FILES:
        raise BadFiles(f"files: {len(files)} files, more than the limit of {MAX_FILES}")
    out: dict[str, bytes] = {}
    total = 0
    for path, content in files.items():
        rel = safe_relpath(path)
        if not isinstance(content, str):
            raise BadFiles(f"files: the content of {path!r:.100} must be base64 text")
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise BadFiles(f"files: the content of {path!r:.100} is not base64") from None
        total += len(data)
        if total > MAX_FILES_BYTES:
            raise BadFiles(f"files: more than {MAX_FILES_BYTES // (1024 * 1024)} MiB in all")
        out[rel] = data
    return out


def write_workspace(folder: str, *, path: str, text: str, files: Mapping[str, bytes],
                    executable: Collection[str] = ()) -> str:
    """Fill ``folder`` with a flow and its local action files (those in ``executable``
    made runnable); the flow file's path. :class:`BadFiles` when they cannot be written
    (one file's path is another's folder, a name too long)."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    name = "flow.json" if path.endswith(".json") else FLOW_FILE_NAME
    for rel, data in files.items():
        if rel in (FLOW_FILE_NAME, "flow.json"):
            raise BadFiles(f"files: {rel!r} is the flow's own file in the run's folder")
        target = os.path.join(folder, rel)
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as fh:
                fh.write(data)
            if rel in executable:
                os.chmod(target, 0o755)
        except OSError as exc:
            from flowray.store.fs import os_error_text

            raise BadFiles(f"files: {rel!r:.100} cannot be written: "
                           f"{os_error_text(exc)}") from None
    flow_file = os.path.join(folder, name)
    with open(flow_file, "w", encoding="utf-8", errors="surrogatepass") as fh:
        fh.write(text)
    return flow_file


def flow_data(text: str, path: str = FLOW_FILE_NAME) -> dict[str, Any]:
    """A stored flow's data, read as validation read it: flowray's YAML reader (YAML 1.2's
    core schema, where ``yes`` stays text), or JSON for a ``.json`` file."""
    from flowray.spec.yamlpos import YamlError, parse_json, parse_yaml

    try:
        parsed = parse_json(text, path) if path.endswith(".json") else parse_yaml(text, path)
    except YamlError:
        return {}
    return parsed.data if isinstance(parsed.data, dict) else {}


def diagnose(text: str, *, path: str, variables: list[str],
             files: Mapping[str, bytes] | None = None, executable: Collection[str] = ()
             ) -> list[dict[str, Any]]:
    """The diagnostics of a flow's text as ``flowray validate`` gives them, with its local
    action ``files`` beside it in a temporary folder (removed after), for the API."""
    from flowray.runtime.api import validate

    folder = tempfile.mkdtemp(prefix="flowray-validate-")
    try:
        flow_file = write_workspace(folder, path=path, text=text, files=files or {},
                                    executable=executable)
        found = validate(flow_file, workdir=folder, variables=variables)
        out = [diagnostic_dict(d, root=folder, shown=path) for d in found]
        for d in out:  # the temporary folder is nobody's business: paths as pushed
            d["message"] = d["message"].replace(folder + os.sep, "").replace(folder, ".")
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_flow(name: str, *, path: str, text: str, files: Mapping[str, str],
               variables: list[str], edges: Mapping[str, list[tuple[str, list[str]]]],
               executable: Collection[str] = (), now: float | None = None) -> Pushed:
    """Validate a pushed flow; :class:`PushError` with its diagnostics when it is not
    valid, or names itself differently, or its flow triggers close a cycle."""
    from flowray.spec import triggers as spec_triggers

    decoded = decode_files(files)
    unknown = sorted(set(executable) - set(files))
    if unknown:
        raise BadFiles(f"executable: {unknown[0]!r:.100} is not one of the files pushed")
    diags = diagnose(text, path=path, variables=variables, files=decoded,
                     executable=executable)
    errors = [d for d in diags if d["severity"] == "error"]
    if errors:
        raise PushError(f"{path}: {len(errors)} error(s); the flow was not stored", diags)
    data = flow_data(text, path)
    written = data.get("name")
    if written != name:
        raise PushError(f"{path}: the flow is named {written!r}, not {name!r}", [
            {"file": path, "line": 1, "col": 1, "path": "name", "severity": "error",
             "message": f"the flow's name is {written!r} but it was pushed as {name!r} "
                        f"(push it as {written!r}, or rename it)"}])
    flow_triggers = [(f.name, list(f.statuses)) for f in spec_triggers.flow_triggers(data)]
    graph = {k: [f for f, _ in v] for k, v in edges.items() if k != name}
    graph[name] = [f for f, _ in flow_triggers]
    # edges point from a flow to the flows whose end starts it
    cycle = spec_triggers.trigger_cycle(graph)
    if cycle and name in cycle[:-1]:  # told from the flow being pushed
        at = cycle.index(name)
        cycle = cycle[at:-1] + cycle[:at] + [name]
    if cycle:
        raise PushError(f"{path}: its flow triggers form a cycle", [
            {"file": path, **_position(text, path), "path": "triggers.flow",
             "severity": "error",
             "message": "flow triggers would form a cycle: " + " <- ".join(cycle)
                        + " (a run of each would start the next for ever)"}])
    kinds = spec_triggers.trigger_kinds(data)
    automatic = [k for k in kinds if k in ("schedule", "webhook", "flow")]
    if automatic:
        from flowray.spec.triggers import manual_inputs

        for input_name, spec in manual_inputs(data).items():
            if spec["required"] and spec["default"] is None:
                where = _position(text, path, ("triggers", "manual", "inputs", input_name))
                diags.append({
                    "file": path, **where,
                    "path": f"triggers.manual.inputs.{input_name}", "severity": "warning",
                    "message": f"input '{input_name}' is required and has no default, so the "
                               f"{' and '.join(automatic)} trigger(s) cannot start this flow "
                               "(they give no inputs): give it a default"})
    now = time.time() if now is None else now
    schedules = []
    from datetime import datetime, timezone

    from flowray.service.schedule import next_fire

    start = datetime.fromtimestamp(now, timezone.utc)
    for s in spec_triggers.schedules(data):
        fire = next_fire(s.cron, s.timezone, start).timestamp()
        schedules.append((s.cron, s.timezone, s.catchup_seconds, fire))
    return Pushed(name=name, path=path, text=text, files=dict(files),
                  executable=sorted(executable), triggers=kinds,
                  flow_triggers=flow_triggers, schedules=schedules,
                  warnings=[d for d in diags if d["severity"] != "error"], data=data)


def _position(text: str, path: str, key: tuple[str, ...] = ("triggers", "flow")
              ) -> dict[str, int]:
    """Where ``key`` is written in the flow (1:1 when it cannot be found)."""
    from flowray.spec.yamlpos import YamlError, parse_yaml

    try:
        line, col = parse_yaml(text, path).positions.key(key)
    except (YamlError, KeyError, ValueError):
        line, col = 1, 1
    return {"line": line, "col": col}
