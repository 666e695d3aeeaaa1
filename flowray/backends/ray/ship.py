"""Shipping a run's files to the Ray nodes through the object store, and artifacts back.

The coordinator packs the workspace (the flow's folder: its local actions, scripts and data,
less ``.flowray/`` and ``.git/``) and each git action the run uses (pinned and fetched once,
by the coordinator) and puts them in Ray's object store once per run (:func:`prepare`). A job
that lands on the coordinator's own node uses the coordinator's paths; a job on another node
fetches what it needs from the object store the first time the node needs it
(:func:`localize`): the workspace once per run and node, each action once per commit and node,
kept in the node's action cache. Nodes need no git access and no shared filesystem.

On such a node the job's run folder is node-local: its logs are written by the coordinator
from the live events, and its artifacts come back with the task's result
(:func:`pack_files`, :func:`unpack_files`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from flowray.execute.job import JobRequest, StepAction
from flowray.store.fs import ArchiveTooLarge, TreeError, pack, remove_tree, unpack

# Folders of the workspace that never travel: run records and the repository's history.
SKIPPED = (".flowray", ".git")
DEFAULT_LIMIT_MB = 512
_READY = ".flowray-ready"


class ShipError(Exception):
    """The run's files cannot be shipped; the message says why and what to do."""


@dataclass
class ShippedAction:
    ref: Any  # ObjectRef of ActionCache.pack bytes
    venv: bool  # the coordinator made a requirements environment for it
    system_site_packages: bool


@dataclass
class Shipment:
    """What a node needs to run the run's jobs where the coordinator's paths do not exist."""

    home: str  # the coordinator's Ray node id: jobs there use the coordinator's paths
    run_id: str
    workspace: str  # the coordinator's workspace path
    workspace_ref: Any  # ObjectRef of the workspace tar (None: the workspace is shared)
    workspace_key: str  # content hash of the tar
    actions: dict[str, ShippedAction] = field(default_factory=dict)  # by coordinator path
    env: dict[str, str] = field(default_factory=dict, repr=False)  # --env-file values


def ship_limit() -> int:
    """Bytes of workspace flowray ships at most (``FLOWRAY_SHIP_LIMIT_MB``)."""
    text = os.environ.get("FLOWRAY_SHIP_LIMIT_MB", "")
    try:
        mb = float(text) if text else DEFAULT_LIMIT_MB
    except ValueError:
        mb = DEFAULT_LIMIT_MB
    if not 0 <= mb <= 2**30:  # NaN, infinity and nonsense too: the default
        mb = DEFAULT_LIMIT_MB
    return int(mb * 2**20)


def shared_workspace() -> bool:
    """``FLOWRAY_SHARED_WORKSPACE=1``: every node sees the workspace at the same path."""
    return os.environ.get("FLOWRAY_SHARED_WORKSPACE", "").lower() in ("1", "true", "yes")


def pack_workspace(workspace: str, limit: int) -> bytes:
    """A tar of ``workspace`` without ``.flowray/`` and ``.git/``; ShipError over ``limit``.
    Every folder travels, empty ones too (a step may expect them)."""
    try:
        return pack(workspace, skip=SKIPPED, limit=limit)
    except ArchiveTooLarge:
        raise ShipError(
            f"the workspace {workspace} holds more than {limit / 2**20:g} MiB, which "
            f"flowray ships to every Ray node through the object store: keep data out of "
            f"the flow's folder (or in .git/ or .flowray/), raise FLOWRAY_SHIP_LIMIT_MB, "
            f"or set FLOWRAY_SHARED_WORKSPACE=1 when every node sees {workspace} "
            f"(a shared filesystem)") from None
    except OSError as exc:
        raise ShipError(f"cannot pack {exc.filename or workspace} to ship it to the Ray nodes: "
                        f"{exc.strerror or exc}") from None


def prepare(*, run_id: str, home: str, workspace: str, env: dict[str, str],
            step_actions: dict[str, dict[int, StepAction]]) -> Shipment:
    """Pack the workspace and the run's git actions and put them in the object store."""
    import ray

    from flowray.actions import ActionCache, ActionError

    ref: Any = None
    key = ""
    if not shared_workspace():
        data = pack_workspace(workspace, ship_limit())
        key = hashlib.sha256(data).hexdigest()[:16]
        ref = ray.put(data)
    shipment = Shipment(home=home, run_id=run_id, workspace=workspace, workspace_ref=ref,
                        workspace_key=key, env=dict(env))
    caches: dict[str, ActionCache] = {}
    for steps in step_actions.values():
        for action in steps.values():
            if action.path in shipment.actions or action.pin is None:
                continue
            pin = action.pin
            root = _cache_root(pin.entry_dir)
            cache = caches.setdefault(root, ActionCache(root))
            try:
                packed = cache.pack(pin)
            except ActionError as exc:
                raise ShipError(f"cannot ship an action to the Ray nodes: {exc}") from None
            shipment.actions[action.path] = ShippedAction(
                ref=ray.put(packed), venv=action.python is not None,
                system_site_packages=action.system_site_packages)
    return shipment


def _cache_root(entry_dir: str) -> str:
    """The action cache an entry (``<root>/entries/<repo>/<sha>``) belongs to."""
    return os.path.dirname(os.path.dirname(os.path.dirname(entry_dir)))


# ----------------------------------------------------------------------------- node side


def node_dir(node_id: str) -> str:
    """Where a node keeps what was shipped to it (``FLOWRAY_NODE_DIR``)."""
    base = os.environ.get("FLOWRAY_NODE_DIR") or os.path.join(
        tempfile.gettempdir(), f"flowray-node-{os.getuid()}")
    return os.path.join(base, node_id[:16])


def _private_dir(path: str) -> None:
    """Make ``path`` (and missing parents) readable by this user only, and refuse one that
    another user owns (someone could have made it first, in a shared /tmp)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_uid != os.getuid():
        raise ShipError(f"{path} belongs to another user (uid {st.st_uid}); set "
                        f"FLOWRAY_NODE_DIR to a folder of your own on the nodes")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def localize(request: JobRequest, shipment: Shipment, node_id: str) -> JobRequest:
    """The request as this node (not the coordinator's) runs it: the workspace and actions
    shipped here, a node-local run folder, and this node's own environment."""
    import ray

    from flowray.actions import ActionCache, ensure_venv
    from flowray.actions.lock import locked

    base = node_dir(node_id)
    if not os.environ.get("FLOWRAY_NODE_DIR"):
        _private_dir(os.path.dirname(base))  # the default, in a shared /tmp
    _private_dir(base)
    workspace = shipment.workspace
    if shipment.workspace_ref is not None:
        workspace = os.path.join(base, "workspaces", f"{shipment.run_id}-{shipment.workspace_key}")
        if not os.path.exists(os.path.join(workspace, _READY)):
            os.makedirs(os.path.dirname(workspace), exist_ok=True)
            with locked(workspace + ".lock"):
                if not os.path.exists(os.path.join(workspace, _READY)):
                    _unpack_into(ray.get(shipment.workspace_ref), workspace)
    cache: ActionCache | None = None
    actions: dict[int, StepAction] = {}
    for index, action in request.step_actions.items():
        shipped = shipment.actions.get(action.path)
        if shipped is None:
            actions[index] = _moved(action, shipment.workspace, workspace)
            continue
        done = _UNPACKED.get((shipment.run_id, action.path))
        if done is None:  # once per worker, run and action
            if cache is None:
                cache = ActionCache(os.path.join(base, "actions"))
            pin = cache.unpack(ray.get(shipped.ref))
            python = ensure_venv(pin, python=sys.executable,
                                 system_site_packages=shipped.system_site_packages) \
                if shipped.venv else None
            done = _UNPACKED[(shipment.run_id, action.path)] = (pin.path, python)
            while len(_UNPACKED) > 256:
                del _UNPACKED[next(iter(_UNPACKED))]
        actions[index] = dataclasses.replace(action, path=done[0], python=done[1], pin=None)
    run_dir = os.path.join(base, "runs", shipment.run_id)
    os.makedirs(run_dir, exist_ok=True)
    env = {**os.environ, **shipment.env}
    for name in [n for n in env if n.startswith("RAY_") or n == "CUDA_VISIBLE_DEVICES"]:
        del env[name]  # the Ray worker's own settings, not the node's environment
    contexts = request.contexts
    run_ctx = contexts.get("run")
    if isinstance(run_ctx, dict):  # ${{ run.workspace }} is the copy here
        contexts = {**contexts, "run": {**run_ctx, "workspace": workspace}}
    # Outputs may name this node's files: each node keeps its own action results.
    results = os.path.join(base, "results") if request.result_cache is not None else None
    return dataclasses.replace(request, workspace=workspace, run_dir=run_dir, env=env,
                               contexts=contexts,
                               step_actions=actions, result_cache=results, node_dir=base)


# (run id, the action's coordinator path) -> (its path here, its requirements Python)
_UNPACKED: dict[tuple[str, str], tuple[str, str | None]] = {}


def rebase(path: str, old: str, new: str) -> str:
    """``path`` below folder ``old`` moved below ``new`` (other paths unchanged)."""
    if path == old or path.startswith(old + os.sep):
        return new + path[len(old):]
    return path


def _moved(action: StepAction, old: str, new: str) -> StepAction:
    return dataclasses.replace(action, path=rebase(action.path, old, new), pin=None)


def _unpack_into(data: bytes, dest: str) -> None:
    """Extract a workspace tar into ``dest`` (built aside, renamed into place, marked last)."""
    tmp = f"{dest}.tmp.{os.getpid()}"
    remove_tree(tmp)
    remove_tree(dest)
    try:
        os.makedirs(tmp)
        _extract(data, tmp)
        os.rename(tmp, dest)
    except BaseException:
        remove_tree(tmp)
        raise
    with open(os.path.join(dest, _READY), "w"):
        pass


def _extract(data: bytes, dest: str, *, replace: bool = False) -> None:
    try:
        unpack(data, dest, times=True, replace=replace)
    except TreeError as exc:
        raise ShipError(f"refusing the shipped files: {exc}") from None


def pack_files(run_dir: str, paths: list[str]) -> bytes:
    """The files at ``paths`` (relative to ``run_dir``) as a tar, for the coordinator; those
    that are gone are left out."""
    return pack(run_dir, [p for p in paths if os.path.isfile(os.path.join(run_dir, p))])


def unpack_files(data: bytes, run_dir: str) -> None:
    """Artifacts from a node into the run folder (a file already there is replaced)."""
    if data:
        _extract(data, run_dir, replace=True)


def remove_run(node_id: str, run_id: str) -> None:
    """Remove the run's workspace copy and run folder from this node (the run has ended)."""
    base = node_dir(node_id)
    remove_tree(os.path.join(base, "runs", run_id))
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(os.path.join(base, "workspaces")):
            path = os.path.join(base, "workspaces", name)
            if not name.startswith(f"{run_id}-"):
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                remove_tree(path)
            else:
                with contextlib.suppress(OSError):
                    os.remove(path)
