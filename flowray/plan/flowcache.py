"""A cache of validated flows, so a run of an unchanged flow skips YAML parsing and pydantic.

:func:`load_flow_cached` wraps the one flow loader, ``flowray.spec.load_flow``. The key covers
the flow file's bytes, the workspace, flowray's version and the validation code itself; an entry
also lists the local action files validation read, with their size and mtime, and holds those
actions' validated data, and the commits its git actions were pinned to. Any change to one of
them makes the entry stale. Entries live in ``<workspace>/.flowray/cache/flows/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flowray.spec.files import MAX_FILE_BYTES, action_file
from flowray.spec.fingerprint import code_fingerprint
from flowray.spec.types import ActionData, FlowData
from flowray.store.fs import write_json_atomic

if TYPE_CHECKING:  # the actions package is imported only when a flow has git actions
    from flowray.plan.pins import ActionPinner, GitAction


@dataclass
class CachedFlow:
    data: FlowData
    warnings: list[str]
    actions: dict[str, ActionData] = field(default_factory=dict)  # local action folder -> data
    hit: bool = False
    git: dict[str, GitAction] = field(default_factory=dict)  # ref key -> pinned git action


def _stat_key(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size]


def local_action_dirs(flow: FlowData, workspace: str) -> list[str]:
    """The folders of the local actions (``./path``) a validated flow uses, each once."""
    out = []
    for job in flow["jobs"].values():
        for step in job["steps"]:
            ref = step["action"]
            if isinstance(ref, str) and ref.startswith("./"):
                path = os.path.normpath(os.path.join(workspace, ref))
                if path not in out:
                    out.append(path)
    return out


def load_flow_cached(
    path: str,
    workspace: str,
    *,
    use_cache: bool = True,
    pinner: Callable[[], ActionPinner] | None = None,
    variables: Collection[str] = (),
) -> CachedFlow:
    """The validated flow at ``path``, from the cache or by ``flowray.spec.load_flow``; raises
    ``flowray.spec.FlowError`` when it is invalid.

    Git actions are pinned on every call (``pinner`` makes the run's pinner, only when the flow
    has some): an entry is reused only while each of its tags still points at the commit it
    was validated with. ``variables``: names known beside the flow's own (the service's).
    """
    pins: list[ActionPinner] = []

    def get_pinner() -> ActionPinner:
        if not pins:
            if pinner is None:
                from flowray.actions import load_config
                from flowray.plan.pins import ActionPinner

                pins.append(ActionPinner(load_config(workspace)))
            else:
                pins.append(pinner())
        return pins[0]

    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except (OSError, ValueError):  # ValueError: a NUL in the path
        raw = None
    if raw is not None and len(raw) > MAX_FILE_BYTES:
        raw = None  # too large: the loader says so
    entry_path = None
    if raw is not None and use_cache:
        key = hashlib.sha256(
            b"\0".join([raw, os.path.abspath(workspace).encode(), code_fingerprint().encode(),
                       "\n".join(sorted(variables)).encode()])
        ).hexdigest()[:32]
        entry_path = os.path.join(workspace, ".flowray", "cache", "flows", f"{key}.json")
        cached = _read_entry(entry_path, get_pinner)
        if cached is not None:
            return cached
    from flowray.plan.pins import LazyGitActions
    from flowray.plan.plan import git_refs_of
    from flowray.spec import load_action, load_flow

    loaded = load_flow(path, workspace=workspace, git_action=LazyGitActions(get_pinner),
                       variables=variables)
    warnings = [w.format() for w in loaded.warnings]
    actions: dict[str, ActionData] = {}
    deps: dict[str, list[int] | None] = {}
    for folder in local_action_dirs(loaded.data, workspace):
        file = action_file(folder)
        deps[file] = _stat_key(file)
        actions[folder] = load_action(folder)
    written = git_refs_of(loaded.data)
    git = {}
    if written:
        active = get_pinner()
        keys = {active.key_of(w) for w in written}
        git = {k: g for k, g in active.loaded.items() if k in keys}
    result = CachedFlow(loaded.data, warnings, actions, git=git)
    if entry_path is not None:
        _write_entry(entry_path, result, deps)
    return result


def _read_entry(path: str, get_pinner: Callable[[], ActionPinner]) -> CachedFlow | None:
    try:
        with open(path, encoding="utf-8") as fh:
            entry = json.load(fh)
        for dep, stamp in entry["deps"].items():
            if _stat_key(dep) != stamp:
                return None
        flow = CachedFlow(entry["flow"], entry["warnings"], entry["actions"], hit=True)
        git_shas: dict[str, str] = entry["git_shas"]
        written: list[Any] = entry["git_refs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if written:
        from flowray.actions import ActionError

        pinner = get_pinner()
        try:
            pinned = pinner.resolve(written)
        except ActionError:
            return None  # validating again reports it where the flow uses it
        if {k: p.sha for k, p in pinned.items()} != git_shas:
            return None  # a tag moved (or the configuration changed): validate again
        for w in written:
            key = next(iter(pinner.resolve([w])))
            if pinner.load(w, pinned[key])[0] is None:
                return None
        flow.git = dict(pinner.loaded)
    return flow


def _write_entry(path: str, flow: CachedFlow, deps: dict[str, Any]) -> None:
    entry = {
        "flow": flow.data,
        "warnings": flow.warnings,
        "actions": flow.actions,
        "deps": deps,
        "git_refs": [g.written for g in flow.git.values()],
        "git_shas": {k: g.sha for k, g in flow.git.items()},
    }
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs speed
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_json_atomic(path, entry)
