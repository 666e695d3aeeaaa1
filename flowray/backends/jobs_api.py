"""Runs on a Ray cluster through the Ray Jobs API: ``flowray submit`` and the remote
``list``/``status``/``logs``/``cancel`` (``--address http://HEAD:8265``).

A submitted run is a Ray job whose entrypoint is ``python -m flowray run FLOW --address auto``,
run by the head node in a copy of the workspace that Ray ships as the job's ``working_dir``.
Ray jobs that flowray submitted carry the metadata ``{"flowray": "1", "flow": NAME}``.

This module is imported only by the commands that talk to a cluster: it imports ``ray`` (and
the ``ray[default]`` client libraries) inside its functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shlex
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flowray.backends import SUBMISSION_ENV, SUBMITTED_TO_ENV

# Ray's Jobs API statuses.
PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED = (
    "PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED")
TERMINAL = frozenset({STOPPED, SUCCEEDED, FAILED})

METADATA_KEY = "flowray"
# Never shipped: run records and caches of local runs, and the git database.
SHIP_EXCLUDES = (".flowray/", ".git/")
# The dashboard takes uploads up to this size (Ray's DASHBOARD_CLIENT_MAX_SIZE).
UPLOAD_LIMIT = 100 * 1024 * 1024
BUNDLE_PREFIX = ".flowray-submit-"
_PROBE_SECONDS = 5.0
_FOLLOW_POLL_SECONDS = 0.5
# What `python -m flowray` prints where that Python has no flowray: "<python>: No module
# named flowray", a line of its own in the job's log (a step's lines are "job/step | ...").
_NO_FLOWRAY = re.compile(r"^[^|\n]+: No module named '?flowray'?$", re.MULTILINE)
_DASHBOARD_HELP = (
    "flowray talks to the Ray Jobs API of the cluster's dashboard, http://HEAD:8265 (8265 "
    "unless `ray start --dashboard-port` chose another port); start the head with "
    "`ray start --head --dashboard-host 0.0.0.0` so that other machines can reach it"
)


class JobsApiError(Exception):
    """A Jobs API problem; the message says why and what to do. ``code``: the exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class RemoteRun:
    """A Ray job, as flowray shows it."""

    id: str  # the submission id
    flow: str  # the flow's name ("" for a job flowray did not submit)
    status: str  # PENDING RUNNING STOPPED SUCCEEDED FAILED
    started: float | None  # seconds since the epoch
    ended: float | None
    driver_exit_code: int | None
    message: str
    entrypoint: str
    flowray: bool  # submitted by flowray

    @property
    def ended_status(self) -> bool:
        return self.status in TERMINAL

    @property
    def exit_code(self) -> int:
        """What ``flowray submit`` exits with for this (ended) run: the run's own code."""
        if self.status == STOPPED:
            return 130
        code = self.driver_exit_code
        if code is not None:
            return 128 - code if code < 0 else code  # -N: killed by signal N
        return 0 if self.status == SUCCEEDED else 1

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "flow": self.flow, "status": self.status,
                "started": self.started, "ended": self.ended,
                "exit_code": self.exit_code if self.ended_status else None,
                "driver_exit_code": self.driver_exit_code, "message": self.message,
                "entrypoint": self.entrypoint}


def _run_of(details: Any) -> RemoteRun:
    meta = details.metadata or {}
    status = getattr(details.status, "value", details.status)
    return RemoteRun(
        id=details.submission_id or details.job_id or "?",
        flow=str(meta.get("flow", "")),
        status=str(status),
        started=details.start_time / 1000 if details.start_time else None,
        ended=details.end_time / 1000 if details.end_time else None,
        driver_exit_code=getattr(details, "driver_exit_code", None),
        message=details.message or "",
        entrypoint=details.entrypoint or "",
        flowray=meta.get(METADATA_KEY) == "1",
    )


# ----------------------------------------------------------------------------- addresses


def resolve_address(given: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The dashboard URL to use: ``given``, else ``FLOWRAY_ADDRESS`` when it is an
    ``http(s)://`` URL, else ``RAY_API_SERVER_ADDRESS``."""
    env = os.environ if environ is None else environ
    if given:
        return check_address(given, "--address")
    flowray_address = env.get("FLOWRAY_ADDRESS", "").strip()
    if flowray_address.startswith(("http://", "https://")):
        return check_address(flowray_address, "FLOWRAY_ADDRESS")
    api_server = env.get("RAY_API_SERVER_ADDRESS", "").strip()
    if api_server:
        return check_address(api_server, "RAY_API_SERVER_ADDRESS")
    also = (f" (FLOWRAY_ADDRESS is '{flowray_address}', a GCS address for `flowray run`, "
            f"not a dashboard address)" if flowray_address else "")
    raise JobsApiError(
        "`flowray submit` needs the address of the Ray cluster's dashboard: give --address "
        f"http://HEAD:8265, or set FLOWRAY_ADDRESS or RAY_API_SERVER_ADDRESS to it{also}")


def check_address(address: str, what: str) -> str:
    """``address`` if it is a dashboard URL; a clear error for a GCS or Ray Client one."""
    address = address.strip().rstrip("/")
    parts = urlsplit(address)
    if parts.scheme in ("http", "https") and parts.hostname:
        try:
            parts.port  # noqa: B018 - raises for a port that is not a number
        except ValueError:
            raise JobsApiError(f"{what} '{address}' has a port that is not a number") from None
        return address
    bare = address.removeprefix("ray://")
    host = bare.rpartition(":")[0] or bare
    kind = ("a Ray Client address" if address.startswith("ray://")
            else "not an http:// URL but HOST:PORT, the form of a cluster's GCS address")
    raise JobsApiError(
        f"{what} '{address}' is {kind}, which `flowray run --address` takes; the Ray Jobs "
        f"API that `flowray submit` (and list, status, logs, cancel with --address) uses is "
        f"served by the dashboard on the cluster's head: give --address "
        f"http://{host or 'HEAD'}:8265 (8265 unless `ray start --dashboard-port` chose "
        f"another port)")


# ----------------------------------------------------------------------------- the client


def _import_client() -> Any:
    try:
        from flowray.backends.ray.jobs import submission_client_class

        return submission_client_class()
    except ImportError as exc:
        raise JobsApiError(
            "talking to a Ray cluster's Jobs API needs Ray with its client libraries, which "
            f"are not installed here ({exc.name or exc}): pip install 'flowray[ray]' (it "
            "installs ray[default])") from exc


def _token() -> tuple[str, str] | None:
    """(where it came from, the token) where Ray would find one for this process."""
    from flowray.backends.ray.cluster import _token_source

    source = _token_source()
    if source is None:
        return None
    if source == "RAY_AUTH_TOKEN":
        value = os.environ["RAY_AUTH_TOKEN"]
    else:
        path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
        try:
            value = Path(path).read_text(encoding="utf-8")
        except OSError:
            return None
    value = value.strip()
    return (source, value) if value else None


def _probe(address: str) -> None:
    """Fail fast, naming the address, where nothing listens (requests would say less)."""
    parts = urlsplit(address)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=_PROBE_SECONDS).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise JobsApiError(
            f"no Ray dashboard answers at {address} ({reason}). {_DASHBOARD_HELP}") from exc


def _auth_problem(exc: BaseException) -> str | None:
    """'missing' or 'refused' for Ray's AuthenticationError (HTTP 401 / 403)."""
    if type(exc).__name__ != "AuthenticationError":
        return None
    return "refused" if str(exc).startswith("Authentication failed") else "missing"


class JobsApi:
    """The Jobs API of one Ray cluster (a connected ``JobSubmissionClient``)."""

    def __init__(self, client: Any, address: str) -> None:
        self._client = client
        self.address = address

    @classmethod
    def connect(cls, address: str) -> JobsApi:
        """Connect to the dashboard at ``address``, with the cluster's token where it
        wants one (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)."""
        client_class = _import_client()
        _probe(address)
        token = _token()
        # A token given for this is sent at once; the one `ray start` left in ~/.ray only to
        # a cluster that asks for it.
        explicit = bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                        or os.environ.get("RAY_AUTH_MODE", "").lower() == "token")
        sent = token if token and explicit else None
        while True:
            headers = {"Authorization": f"Bearer {sent[1]}"} if sent else None
            try:
                return cls(client_class(address, headers=headers), address)
            except Exception as exc:
                problem = _auth_problem(exc)
                if problem is None:
                    raise JobsApiError(_connect_failure(address, exc)) from exc
                if sent is None and token is not None:
                    sent = token
                    continue
                raise JobsApiError(_auth_failure(address, sent)) from exc

    # ------------------------------------------------------------------------- runs

    def get(self, submission_id: str) -> RemoteRun:
        try:
            return _run_of(self._client.get_job_info(submission_id))
        except Exception as exc:
            raise self._error(exc, submission_id) from exc

    def runs(self, *, everything: bool = False) -> list[RemoteRun]:
        """flowray's runs on the cluster (every Ray job with ``everything``), newest first."""
        try:
            jobs = self._client.list_jobs()
        except Exception as exc:
            raise self._error(exc) from exc
        out = [r for r in map(_run_of, jobs) if everything or r.flowray]
        out.sort(key=lambda r: r.started or 0.0, reverse=True)
        return out

    def find(self, ref: str) -> RemoteRun:
        """A submitted run by submission id, unique prefix, or ``last``."""
        if ref not in ("last", "latest"):
            try:
                return _run_of(self._client.get_job_info(ref))
            except Exception as exc:
                if not _not_found(exc):
                    raise self._error(exc, ref) from exc
        runs = self.runs()
        if ref in ("last", "latest"):
            if not runs:
                raise JobsApiError(f"no flowray runs were submitted to {self.address} yet")
            return runs[0]
        hits = [r for r in runs if r.id.startswith(ref)]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise JobsApiError(
                f"no submitted run '{ref}' at {self.address} (see `flowray list --address "
                f"{self.address}`)")
        raise JobsApiError(f"'{ref}' matches {len(hits)} submitted runs: "
                           f"{', '.join(r.id for r in hits[:5])}")

    def logs(self, submission_id: str) -> str:
        try:
            return str(self._client.get_job_logs(submission_id))
        except Exception as exc:
            raise self._error(exc, submission_id) from exc

    def follow(self, submission_id: str, write: Callable[[str], None]) -> None:
        """Write the run's log as it grows, until the run has ended and all of it is written.
        Ctrl-C and SIGTERM raise KeyboardInterrupt.

        Ray's log stream closes only seconds after the run ends (it polls the log file and
        the run's status once a second each): once the run has ended, the rest of the log is
        read in one request instead. The stream sends the log file from its start, so what
        it wrote is a prefix of the whole log.
        """
        written = 0

        def out(text: str) -> None:
            nonlocal written
            if text:
                written += len(text)
                write(text)

        async def tail() -> None:
            async for chunk in self._client.tail_job_logs(submission_id):
                out(chunk)

        async def ended() -> None:
            while not (await asyncio.to_thread(self.get, submission_id)).ended_status:
                await asyncio.sleep(_FOLLOW_POLL_SECONDS)

        async def main() -> None:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                # (not in the main thread, or no signals here: Ctrl-C still works)
                task = asyncio.current_task()
                if task is not None:
                    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
            streaming = asyncio.create_task(tail())
            ending = asyncio.create_task(ended())
            done, _ = await asyncio.wait({streaming, ending},
                                         return_when=asyncio.FIRST_COMPLETED)
            if streaming in done:
                ending.cancel()
                streaming.result()
                return
            streaming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await streaming
            ending.result()
            out((await asyncio.to_thread(self.logs, submission_id))[written:])

        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
        except (KeyboardInterrupt, JobsApiError):
            raise
        except Exception as exc:
            raise self._error(exc, submission_id) from exc

    def stop(self, submission_id: str) -> bool:
        """Ask Ray to stop the run (SIGTERM to its driver); False if it had ended."""
        try:
            return bool(self._client.stop_job(submission_id))
        except Exception as exc:
            raise self._error(exc, submission_id) from exc

    def wait(self, submission_id: str, timeout: float, poll: float = 0.25) -> RemoteRun:
        """The run once it has ended, or as it is when ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get(submission_id)
            if run.ended_status or time.monotonic() >= deadline:
                return run
            time.sleep(poll)

    # ------------------------------------------------------------------------- submitting

    def submit(self, sub: Submission) -> str:
        """Ship ``sub.workspace`` and start the run; the submission id."""
        entrypoint = [*python_command(sub.python), "-m", "flowray", "run", sub.flow_file,
                      "--address", "auto", *sub.run_args]
        for rel in (sub.flow_file, *sub.needed):
            if not shipped(sub.workspace, rel):
                raise JobsApiError(
                    f"'{rel}' would not be shipped: the workspace's .gitignore or .rayignore "
                    f"(or flowray, for .flowray/ and .git/) leaves it out, and the run needs it")
        bundle_path = None
        if sub.bundle:
            name = f"{BUNDLE_PREFIX}{sub.id.rsplit('-', 1)[-1]}"
            if not shipped(sub.workspace, name):
                raise JobsApiError(
                    f"the workspace's .gitignore or .rayignore leaves out '{name}', the file "
                    f"that carries the run's secrets, env files and event to the cluster: add "
                    f"the line '!/{BUNDLE_PREFIX}*' to it")
            bundle_path = os.path.join(sub.workspace, name)
            _write_private(bundle_path, json.dumps(sub.bundle))
            entrypoint += ["--submit-bundle", name]
        runtime_env = {
            "working_dir": sub.workspace,
            "excludes": list(SHIP_EXCLUDES),
            # Ray SIGKILLs a stopped job's driver after this many seconds: leave flowray the
            # time to stop every step itself (SIGTERM, grace, SIGKILL).
            "env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(stop_wait_seconds(sub.grace)),
                         # so that the run's hints name the submission and this address
                         SUBMISSION_ENV: sub.id, SUBMITTED_TO_ENV: self.address},
        }
        try:
            return str(self._client.submit_job(
                entrypoint=shlex.join(entrypoint), submission_id=sub.id,
                runtime_env=runtime_env,
                metadata={METADATA_KEY: "1", "flow": sub.flow_name, "flow_file": sub.flow_file},
            ))
        except Exception as exc:
            raise JobsApiError(_submit_failure(self.address, sub.workspace, exc)) from exc
        finally:
            if bundle_path:
                with contextlib.suppress(OSError):
                    os.unlink(bundle_path)

    def missing_flowray(self, run: RemoteRun) -> str | None:
        """Why ``run`` failed, with what to do, when it failed because the cluster's Python
        could not import flowray (``python -m flowray`` said "No module named flowray");
        None for any other run. Ray's message for a failed job ends with the end of its log,
        which is read where the message does not have it."""
        if run.status != FAILED or run.driver_exit_code != 1:
            return None
        found = _NO_FLOWRAY.search(run.message)
        if found is None:
            try:
                found = _NO_FLOWRAY.search(self.logs(run.id)[-20_000:])
            except JobsApiError:
                return None
        if found is None:
            return None
        python = _entrypoint_python(run.entrypoint) or "python"
        return (f"the cluster's Python cannot import flowray ({found.group(0).strip()}): "
                f"install flowray on the cluster's Python (pip install 'flowray[ray]' on "
                f"every node, in the Python environment Ray runs there), or give --python "
                f"the command of a Python on the head that has it (this run's: '{python}')")

    # ------------------------------------------------------------------------- errors

    def _error(self, exc: BaseException, submission_id: str | None = None) -> JobsApiError:
        if submission_id and _not_found(exc):
            return JobsApiError(
                f"no submitted run '{submission_id}' at {self.address} (see `flowray list "
                f"--address {self.address}`)")
        if _auth_problem(exc):
            return JobsApiError(_auth_failure(self.address, _token()))
        return JobsApiError(f"the Ray Jobs API at {self.address} failed: {_reason(exc)}")


@dataclass
class Submission:
    """What ``flowray submit`` sends."""

    id: str
    workspace: str  # absolute; shipped as the job's working_dir
    flow_file: str  # relative to the workspace
    flow_name: str
    run_args: Sequence[str]  # options of `flowray run` for the entrypoint
    bundle: dict[str, Any] | None  # secrets, env, event: shipped in a private file
    grace: float
    python: str = "python"  # the cluster's Python that has flowray
    needed: Sequence[str] = ()  # files the run needs (relative): they must be shipped


def python_command(python: str) -> list[str]:
    """``--python``'s value as the words of a command (split as a shell would)."""
    try:
        words = shlex.split(python)
    except ValueError as exc:
        raise JobsApiError(f"--python '{python}' cannot be split like a command line: "
                           f"{exc}") from None
    if not words:
        raise JobsApiError("--python is empty: give the command of the cluster's Python")
    return words


def _entrypoint_python(entrypoint: str) -> str:
    """The Python command of a run's entrypoint (what comes before ``-m flowray``)."""
    try:
        words = shlex.split(entrypoint)
    except ValueError:
        return ""
    for i in range(len(words) - 1):
        if words[i:i + 2] == ["-m", "flowray"]:
            return shlex.join(words[:i])
    return ""


def new_submission_id(flow_name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_]+", "-", flow_name).strip("-")[:40] or "flow"
    return f"flowray-{slug}-{os.urandom(4).hex()}"


def stop_wait_seconds(grace: float) -> int:
    """How long Ray waits for a stopped driver before SIGKILL: flowray's grace, plus time
    to record the run."""
    return math.ceil(grace) + 10


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def shipped(workspace: str, rel: str) -> bool:
    """Whether Ray ships the file ``rel`` of ``workspace`` in the job's working_dir: not left
    out by SHIP_EXCLUDES or by the .gitignore and .rayignore files of its folders."""
    from flowray.backends.ray.jobs import ray_ships

    return ray_ships(workspace, rel, SHIP_EXCLUDES)


def _not_found(exc: BaseException) -> bool:
    text = str(exc)
    return "status code 404" in text or "does not exist" in text


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1].strip() if text else type(exc).__name__


def _auth_failure(address: str, token: tuple[str, str] | None) -> str:
    from flowray.backends.ray.cluster import _TOKEN_HELP

    if token is None:
        return (f"the Ray cluster at {address} requires token authentication and no token "
                f"was found. {_TOKEN_HELP}")
    return (f"the Ray cluster at {address} refused the token from {token[0]} (token "
            f"authentication). {_TOKEN_HELP}")


def _connect_failure(address: str, exc: BaseException) -> str:
    import requests

    if isinstance(exc, requests.exceptions.SSLError):
        return f"cannot make a TLS connection to {address}: {_reason(exc)}"
    if isinstance(exc, (ConnectionError, requests.exceptions.RequestException, ValueError)) \
            or "Version check returned 404" in str(exc):
        return (f"something answers at {address}, but not as a Ray dashboard does (is it the "
                f"cluster's GCS port, 6379, rather than the dashboard's?). {_DASHBOARD_HELP}")
    return f"cannot use the Ray Jobs API at {address}: {_reason(exc)}"


def _submit_failure(address: str, workspace: str, exc: BaseException) -> str:
    text = str(exc)
    if "413" in text or "exceeds the maximum" in text or "too large" in text.lower():
        return (f"the workspace {workspace} is too large to ship to {address} (the Ray "
                f"dashboard takes at most {UPLOAD_LIMIT // (1024 * 1024)} MiB, zipped): list "
                f"big files and folders in .gitignore or .rayignore ({_reason(exc)})")
    if _auth_problem(exc):
        return _auth_failure(address, _token())
    return f"the Ray cluster at {address} did not take the run: {_reason(exc)}"
