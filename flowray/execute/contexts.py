"""The template contexts that describe the machine a job runs on (DataTorch's ``agent``,
``runner``, ``machine``, ``python`` and ``directory``) and the step and action being run.

They are built where the job runs: on a Ray node they are the node's own facts and folders, not
the coordinator's. The folders are real: ``<runner>`` is flowray's folder on this machine
(``$FLOWRAY_RUNNER_DIR``, else ``$XDG_CACHE_HOME/flowray``, else ``~/.cache/flowray``; on a Ray
node other than the coordinator's, the node's folder, ``$FLOWRAY_NODE_DIR/<node>``), with
``logs/`` and ``temp/`` below it; ``actions`` is the git action cache (on such a node, the actions
shipped to it). A folder is made when a template first reads it (:class:`Folders`), not before:
a flow that never reads one runs without a writable home.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any

from flowray import expr
from flowray.spec.types import ActionData, StepData
from flowray.store.fs import os_error_text
from flowray.store.places import cache_home, default_actions_dir

_IMPLEMENTATIONS = {"cpython": "CPython", "pypy": "PyPy", "graalpy": "GraalVM",
                    "ironpython": "IronPython", "jython": "Jython"}


def runner_dir() -> str:
    """flowray's folder on this machine (DataTorch's runner/agent directory)."""
    explicit = os.environ.get("FLOWRAY_RUNNER_DIR")
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    return cache_home()


def _actions_dir() -> str:
    # Not flowray.actions.config's default_cache_dir: importing the actions package (the
    # cache, references, configuration: 10 modules) for one path cost every run its import.
    explicit = os.environ.get("FLOWRAY_CACHE_DIR")
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    return default_actions_dir()


class Folders(Mapping[str, Any]):
    """A context whose values under ``folders`` are folders made when first read (by a
    template, ``toJSON``, ``.*``, ...), so that a run that never reads one does not need it.

    A folder that cannot be made fails the expression reading it, naming the folder and the
    reason (:class:`flowray.expr.ContextValueError`). ``values`` stay as given (``raw``);
    the object pickles (a Ray job request carries it) and compares equal to its values."""

    __slots__ = ("_made", "_name", "folders", "raw")

    def __init__(self, name: str, values: Mapping[str, Any], folders: Iterable[str]) -> None:
        self._name = name
        self.raw = dict(values)
        self.folders = frozenset(folders)
        self._made: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        value = self.raw[key]
        if key in self.folders and key not in self._made:
            try:
                os.makedirs(value, exist_ok=True)
            except OSError as exc:
                raise expr.ContextValueError(f"{self._name}.{key}: " + os_error_text(
                    exc, value, doing="make the folder")) from None
            self._made.add(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __eq__(self, other: object) -> bool:  # without making a folder
        if isinstance(other, Mapping):
            return self.raw == dict(given(other).items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # as a dict's

    def __repr__(self) -> str:
        return f"Folders({self._name!r}, {self.raw!r})"

    def __getstate__(self) -> tuple[str, dict[str, Any], frozenset[str]]:
        return self._name, self.raw, self.folders

    def __setstate__(self, state: tuple[str, dict[str, Any], frozenset[str]]) -> None:
        self._name, self.raw, self.folders = state
        self._made = set()


def given(value: Any) -> Any:
    """A context's values as given, without making its folders (a :class:`Folders`'s
    ``raw``; anything else as it is)."""
    return value.raw if isinstance(value, Folders) else value


@lru_cache(maxsize=8)
def _machine(node_id: str, home: str, actions: str) -> tuple[dict[str, Any], dict[str, Any],
                                                              dict[str, Any]]:
    """The facts and folder paths (not made here) of this machine."""
    uname = os.uname()
    directories = {
        "runner": home,
        "agent": home,
        "actions": actions,
        "logs": os.path.join(home, "logs"),
        "temp": os.path.join(home, "temp"),
    }
    runner = {
        "id": node_id or uname.nodename,
        "directory": home,
        "name": uname.nodename,
        "os": uname.sysname,
        "arch": uname.machine,
        "version": uname.version,
        "temp": os.environ.get("TMPDIR") or "/tmp",
        "cpus": os.cpu_count() or 1,
    }
    python = {
        "version": sys.version.split()[0],
        "implementation": _IMPLEMENTATIONS.get(sys.implementation.name,
                                               sys.implementation.name),
        "executable": sys.executable,
    }
    return runner, python, directories


def machine_contexts(env: Mapping[str, str], runner: Mapping[str, Any] | None = None, *,
                     node_dir: str | None = None) -> dict[str, Any]:
    """``runner``/``agent``/``machine``, ``python`` and ``directory`` of this machine.

    ``runner``: the run's own runner context (its ``gpus`` is the run's, kept); ``env``: the
    job's process environment (on a Ray node it names the node, ``FLOWRAY_NODE_ID``);
    ``node_dir``: on a Ray node other than the coordinator's machine, the node's own folder
    (the actions shipped to it are below it, in ``actions``)."""
    if node_dir is not None:
        home, actions = node_dir, os.path.join(node_dir, "actions")
    else:
        home, actions = runner_dir(), _actions_dir()
    facts, python, directories = _machine(env.get("FLOWRAY_NODE_ID", ""), home, actions)
    merged = {**given(runner or {}), **facts}
    return {
        "runner": Folders("runner", merged, ("directory",)),
        "agent": Folders("agent", merged, ("directory",)),
        "machine": Folders("machine", merged, ("directory",)),
        "python": dict(python),
        "directory": Folders("directory", directories, directories),
    }


def step_context(step: StepData, key: str, name: str) -> dict[str, Any]:
    """``step``: the step's id (its position when it has none, as ``FLOWRAY_STEP_ID``) and
    its name."""
    return {"id": step["id"] or key, "name": name}


def action_tag(ref: Any) -> str | None:
    """The tag a step's action names: ``owner/repo@tag`` or ``{tag: ...}``; ``latest`` when a
    git action names none (as DataTorch); None for a local or container action."""
    if isinstance(ref, dict):
        tag = ref.get("tag")
        return tag if isinstance(tag, str) else "latest"
    if not isinstance(ref, str) or ref.startswith(("./", "docker://")):
        return None
    _, at, tag = ref.partition("@")
    return tag if at and tag else "latest"


def action_context(action: ActionData, ref: Any, path: str) -> dict[str, Any]:
    """``action``: the step's action (its file's name and description, the tag the step asked
    for, and the folder it runs from)."""
    tag = action_tag(ref)
    return {
        "name": action["name"],
        "version": tag,
        "tag": tag,
        "directory": path,
        "description": action["description"] or "",
    }
