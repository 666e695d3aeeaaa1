"""Running a flow's jobs on Ray: the connection (an embedded local Ray, or a running cluster).

``flowray run FLOW --ray`` starts a local Ray for the run and stops it at the end;
``--address ADDR`` (or ``FLOWRAY_ADDRESS``) joins a running cluster. Either way the jobs go to
:class:`~flowray.backends.ray.dispatcher.RayDispatcher`, and their steps run on the nodes with
the same job runner as ``flowray run`` without Ray.

``ray`` is imported inside :meth:`RayCluster.connect` only: commands that need no cluster never
pay for it, and the token-authentication mode is set before Ray reads it.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowray.backends.ray.resources import task_shape, unfit

if TYPE_CHECKING:
    from flowray.backends import RunEvents
    from flowray.backends.ray.dispatcher import RayDispatcher
    from flowray.execute.job import ActionLoader, StepAction
    from flowray.execute.secrets import Masker
    from flowray.plan.plan import JobPlan

# How long connecting may take to find out whether the cluster wants a token.
_PROBE_SECONDS = 5.0
_TOKEN_HELP = (
    "Give flowray the cluster's token: set RAY_AUTH_TOKEN to it (or RAY_AUTH_TOKEN_PATH to a "
    "file that holds it), or put it in ~/.ray/auth_token; `ray get-auth-token` on the head "
    "node prints it"
)


class RayConnectError(Exception):
    """Ray could not be started or reached; the message says why and what to do."""


# This process's connection to Ray, shared by the runs it starts (the service, a notebook):
# Ray allows one per process. ``owned``: flowray made it, and leaves it with the last run.
_CONNECTION_LOCK = threading.Lock()
_CONNECTION: dict[str, Any] = {"users": 0, "target": None, "owned": False}


class RayCluster:
    """The Ray this run uses; :meth:`close` disconnects (and stops an embedded Ray) when no
    other run of this process uses it."""

    def __init__(self, *, address: str | None, nodes: list[dict[str, Any]]) -> None:
        self.address = address  # None: the embedded local Ray
        self._nodes = [n for n in nodes if n.get("Alive")]
        self._dispatcher: RayDispatcher | None = None
        self._run_id = ""

    # ------------------------------------------------------------------------- connecting

    @classmethod
    def connect(cls, address: str | None, *, cpus: float | None = None,
                gpus: list[str] | None = None) -> RayCluster:
        """Join the cluster at ``address``, or start an embedded Ray (``address`` None).

        ``cpus`` and ``gpus`` (ids) size the embedded Ray; Ray's own detection otherwise.
        Several runs of one process share its connection: a second run for the same target
        joins it; one for another target is refused (Ray allows one connection a process);
        a connection the caller made with ``ray.init`` is used as it is, and never closed.
        """
        with _CONNECTION_LOCK:
            if _CONNECTION["users"] or ("ray" in sys.modules and _ray_connected()):
                return cls._join(address)
            cluster = cls._connect(address, cpus=cpus, gpus=gpus)
            _CONNECTION.update(users=1, target=address, owned=True)
            return cluster

    @classmethod
    def _join(cls, address: str | None) -> RayCluster:
        import ray

        if _CONNECTION["users"] == 0:  # the caller's own ray.init
            _CONNECTION.update(users=1, target=address, owned=False)
        elif _CONNECTION["owned"] and _CONNECTION["target"] != address:
            where = _CONNECTION["target"] or "an embedded Ray"
            raise RayConnectError(
                f"this process is connected to {where} for another run; Ray allows one "
                f"connection a process: run this one in another process (or wait)")
        else:
            _CONNECTION["users"] += 1
        return cls(address=address, nodes=ray.nodes())  # type: ignore[no-untyped-call]

    @classmethod
    def _connect(cls, address: str | None, *, cpus: float | None,
                 gpus: list[str] | None) -> RayCluster:
        if address is None:
            return cls._start_embedded(cpus, gpus)
        address = address.strip()
        if address.startswith(("http://", "https://")):
            raise RayConnectError(
                f"--address '{address}' is a dashboard (Jobs API) address; `flowray run` "
                f"needs the cluster's GCS address HOST:PORT (port 6379 unless `ray start "
                f"--port` chose another) or a Ray Client address ray://HOST:10001")
        if os.environ.get("RAY_AUTH_MODE") is None and (
                os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
            _use_token_auth()  # a token given for this: use it
        ray = _import_ray()
        if address != "auto":
            _probe(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except Exception as exc:
            raise RayConnectError(_connect_failure(address, exc)) from exc
        return cls(address=address, nodes=ray.nodes())

    @classmethod
    def _start_embedded(cls, cpus: float | None, gpus: list[str] | None) -> RayCluster:
        ray = _import_ray()
        kwargs: dict[str, Any] = {}
        if cpus is not None:
            kwargs["num_cpus"] = int(cpus) if float(cpus).is_integer() else cpus
        saved = os.environ.get("CUDA_VISIBLE_DEVICES")
        if gpus is not None:
            kwargs["num_gpus"] = len(gpus)
            if gpus:
                # Ray hands tasks the ids it found in CUDA_VISIBLE_DEVICES when it started.
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        # Ray warns that the cluster it starts uses token authentication; for a Ray that
        # lives as long as the run, that is noise.
        auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
        level = auth_log.level
        auth_log.setLevel(logging.ERROR)
        try:
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False, **kwargs)
        except Exception as exc:
            raise RayConnectError(f"cannot start a local Ray: {_reason(exc)}") from exc
        finally:
            auth_log.setLevel(level)
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved
        return cls(address=None, nodes=ray.nodes())

    # ------------------------------------------------------------------------- facts

    def _total(self, name: str) -> float:
        return sum(float(n["Resources"].get(name, 0.0)) for n in self._nodes)

    @property
    def gpus(self) -> int:
        return int(self._total("GPU"))

    def summary(self) -> str:
        where = "embedded Ray" if self.address is None else f"Ray cluster {self.address}"
        n = len(self._nodes)
        return (f"{where}: {n} node{'s' if n != 1 else ''}, {self._total('CPU'):g} CPUs, "
                f"{self._total('GPU'):g} GPUs")

    def unfit(self, jobs: Iterable[JobPlan]) -> list[str]:
        """Why each job that no node can ever run cannot (empty when all can)."""
        resources = [{k: float(v) for k, v in n["Resources"].items()} for n in self._nodes]
        out = []
        for job in jobs:
            why = unfit(job.key, task_shape(job.data["resources"]), resources)
            if why:
                out.append(why)
        return out

    # ------------------------------------------------------------------------- running

    @property
    def hosts(self) -> int:
        """How many hosts the cluster's nodes are on (now)."""
        return len({n.get("NodeManagerAddress") for n in self._nodes})

    def dispatcher(self, *, events: RunEvents, run_id: str, run_dir: str, masker: Masker,
                   grace: float, workspace: str, env: dict[str, str],
                   base_env: dict[str, str], contexts: dict[str, Any],
                   step_actions: dict[str, dict[int, StepAction]],
                   load_action: ActionLoader) -> RayDispatcher:
        """The run's dispatcher. ``env``: the --env-file values (shipped to other nodes);
        ``base_env`` and ``contexts``: what every job's request shares."""
        import ray

        from flowray.backends.ray.dispatcher import RayDispatcher
        from flowray.backends.ray.ship import ShipError, prepare

        self._run_id = run_id
        home = ray.get_runtime_context().get_node_id()
        shipment = None
        ship_error = None
        if self.address is not None or any(n.get("NodeID") != home for n in self._nodes):
            # Other nodes (now, or joining later on a cluster that scales): they get the
            # workspace and the actions through the object store.
            try:
                shipment = prepare(run_id=run_id, home=home, workspace=workspace, env=env,
                                   step_actions=step_actions)
            except ShipError as exc:
                ship_error = str(exc)
        self._dispatcher = RayDispatcher(
            events=events, masker=masker, load_action=load_action, grace=grace,
            run_dir=run_dir, run_id=run_id, shipment=shipment, ship_error=ship_error,
            env=base_env, contexts=contexts,
        )
        return self._dispatcher

    def close(self) -> None:
        """After the run: stop what a lost task left on other nodes, then leave Ray."""
        import ray

        try:
            if self._dispatcher is not None:
                self._dispatcher.close()
                self._dispatcher.sweep_nodes(self._run_id)
        finally:
            with _CONNECTION_LOCK:
                _CONNECTION["users"] = max(0, _CONNECTION["users"] - 1)
                last = _CONNECTION["users"] == 0
                if last and _CONNECTION["owned"]:
                    ray.shutdown()
                if last:
                    _CONNECTION.update(target=None, owned=False)


# ----------------------------------------------------------------------------- connecting


def _ray_connected() -> bool:
    import ray

    return bool(ray.is_initialized())


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayConnectError(
            "--ray and --address need Ray, which is not installed here: "
            "pip install 'flowray[ray]'") from exc
    return ray


def _use_token_auth() -> None:
    """Token authentication for this process (Ray reads the mode once, when imported)."""
    os.environ["RAY_AUTH_MODE"] = "token"
    if "ray" in sys.modules:
        try:
            from ray._raylet import Config  # type: ignore[attr-defined]

            Config.initialize("")
        except Exception:
            pass


def _token_source() -> str | None:
    """Where Ray would find a token for this process, or None."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return f"RAY_AUTH_TOKEN_PATH ({path})" if os.path.isfile(path) else None
    default = Path.home() / ".ray" / "auth_token"
    return "~/.ray/auth_token" if default.is_file() else None


def _canonical(address: str) -> str:
    """``address`` as Ray will dial it (it replaces 127.0.0.1 with this machine's address)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(address) or address
    except Exception:
        return address


def _probe(address: str) -> None:
    """Fail fast, with a clear reason, where ``ray.init`` would retry for 20 s or more."""
    client = address.startswith("ray://")
    target = address.removeprefix("ray://") if client else _canonical(address)
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise RayConnectError(
            f"--address '{address}' is not HOST:PORT (a Ray cluster's GCS address, e.g. "
            f"10.0.0.5:6379) or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_PROBE_SECONDS).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise RayConnectError(f"no Ray cluster answers at {address}: {reason}") from exc
    if client:
        return
    if not _refuses_us(target):
        return
    source = _token_source()
    mode = os.environ.get("RAY_AUTH_MODE")
    if source and mode is None:
        # The cluster wants a token and this machine has one (`ray start` writes it there).
        _use_token_auth()
        if not _refuses_us(target):
            return
        mode = "token"
    if mode is not None and mode.lower() != "token":
        raise RayConnectError(
            f"the Ray cluster at {address} requires token authentication, and RAY_AUTH_MODE "
            f"is '{mode}': set RAY_AUTH_MODE=token. {_TOKEN_HELP}")
    if source:
        raise RayConnectError(
            f"the Ray cluster at {address} refused the token from {source} (token "
            f"authentication). {_TOKEN_HELP}")
    raise RayConnectError(
        f"the Ray cluster at {address} requires token authentication and no token was found. "
        f"{_TOKEN_HELP}")


def _refuses_us(gcs_address: str) -> bool:
    """True if the GCS at ``gcs_address`` rejects this process's credentials."""
    verdict: list[bool] = []

    def ask() -> None:
        try:
            from ray._raylet import GcsClient  # type: ignore[attr-defined]

            GcsClient(address=gcs_address)
        except Exception as exc:
            verdict.append(type(exc).__name__ == "AuthenticationError")
        else:
            verdict.append(False)

    # The client retries for a long time when the port is not a GCS: let ray.init say why.
    thread = threading.Thread(target=ask, name="flowray-ray-probe", daemon=True)
    thread.start()
    thread.join(_PROBE_SECONDS)
    return bool(verdict and verdict[0])


def _connect_failure(address: str, exc: BaseException) -> str:
    text = f"{exc} {exc.__cause__ or ''}"
    if "InvalidAuthToken" in text or "AuthenticationError" in text or \
            type(exc).__name__ == "AuthenticationError":
        return (f"the Ray cluster at {address} requires token authentication, and this "
                f"process has no valid token. {_TOKEN_HELP}")
    return f"cannot connect to the Ray cluster at {address}: {_reason(exc)}"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
