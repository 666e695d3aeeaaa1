"""Steps in containers, through the Docker engine's Python SDK (the only module that imports
``docker``).

A container step is described by a :class:`~flowray.execute.step_request.ContainerRun` (image,
command, the step's own environment, the folders to mount, user, network, GPUs), made from the
step and its job (anything shaped like :class:`ContainerJob`), and run by
:func:`run_container`, which gives the job runner what a process step gives it: each output
line as it comes, the exit code, whether the step timed out or was cancelled. Timeout and
cancel stop the container (SIGTERM, the grace period, SIGKILL: ``docker stop``); the container
is removed whatever happens. Every container carries the label ``flowray.run=<run id>``, so
:func:`remove_run_containers` can remove what a run left (a coordinator killed with SIGKILL).
The engine is asked for when a step is about to use it, never by validation.

Images: ``if-not-present`` (default), ``always`` or ``never`` pulled (``FLOWRAY_PULL``);
Dockerfile actions are built once per action commit and found again by their tag.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from flowray.execute.process import LineSplitter, ProcessOutcome, ProcessSupervisor, read_done
from flowray.execute.step_request import ContainerRun
from flowray.spec.types import ActionData

RUN_LABEL = "flowray.run"
JOB_LABEL = "flowray.job"
PULL_POLICIES = ("if-not-present", "always", "never")
_HELP = ("start one (as root: `dockerd &`, or `sudo systemctl start docker`), or set "
         "DOCKER_HOST to an engine that runs (e.g. unix:///var/run/docker.sock or tcp://host:2375)")


class ContainerError(Exception):
    """A container step could not run; the message says why and what to do."""


class ContainerJob(Protocol):
    """What making a container step reads of its job (``execute.job.JobRequest`` has it)."""

    @property
    def run_id(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def workspace(self) -> str: ...

    @property
    def run_dir(self) -> str: ...

    @property
    def env(self) -> Mapping[str, str]: ...

    @property
    def gpus(self) -> list[str] | None: ...


def pull_policy(env: Mapping[str, str] | None = None) -> str:
    """``FLOWRAY_PULL`` of ``env`` (the step's base environment), else of this process."""
    value = ((env or {}).get("FLOWRAY_PULL") or os.environ.get("FLOWRAY_PULL")
             or "if-not-present").strip().lower()
    if value not in PULL_POLICIES:
        raise ContainerError(f"FLOWRAY_PULL is '{value}'; use one of {', '.join(PULL_POLICIES)}")
    return value


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


_clients: dict[str, Any] = {}
_client_lock = threading.Lock()


def client() -> Any:
    """The engine's client, checked with a ping once per process (and ``DOCKER_HOST``): the
    check a container step makes as it is about to run (validation never asks for an engine).
    ContainerError naming ``DOCKER_HOST`` and how to start an engine when none answers."""
    address = engine_address()
    with _client_lock:
        if address in _clients:
            return _clients[address]
        try:
            import docker
        except ImportError as exc:
            raise ContainerError(
                "container steps need the Docker SDK for Python, which is not installed here: "
                "pip install 'flowray[docker]'") from exc
        try:
            c = docker.from_env(timeout=120)
            c.ping()
        except Exception as exc:
            raise ContainerError(
                f"no Docker engine answers at {address}: {_connect_reason(exc)}; {_HELP}"
            ) from None
        _clients[address] = c
        return c


def ensure_image(image: str, policy: str) -> None:
    c = client()  # first: it explains a missing SDK or engine
    import docker.errors

    if policy != "always":
        try:
            c.images.get(image)
            return
        except docker.errors.ImageNotFound:
            if policy == "never":
                raise ContainerError(
                    f"image '{image}' is not on this Docker engine and FLOWRAY_PULL is 'never': "
                    f"build or load it first (`docker build -t {image} .`, `docker load`)"
                ) from None
        except docker.errors.APIError as exc:
            raise ContainerError(f"image '{image}': {_reason(exc)}") from None
    repo, tag = _split_tag(image)
    try:
        c.images.pull(repo, tag=tag)
    except Exception as exc:
        where = ("cannot be pulled (FLOWRAY_PULL is 'always')" if policy == "always" else
                 "is not on this Docker engine and cannot be pulled")
        raise ContainerError(
            f"image '{image}' {where}: {_reason(exc)}. Check the name and tag, log in to its "
            f"registry (`docker login`), or build it here (`docker build -t {image} .`)"
            + (" and use FLOWRAY_PULL=if-not-present" if policy == "always" else "")) from None


def build_image(context: str, dockerfile: str, key: str, network: str | None = None) -> str:
    """The image of a Dockerfile action: built once per ``key`` (its commit and folder), then
    found again by its tag."""
    c = client()
    import docker.errors

    tag = "flowray-action-" + hashlib.sha256(key.encode()).hexdigest()[:16] + ":built"
    try:
        c.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    try:
        c.images.build(path=context, dockerfile=dockerfile, tag=tag, rm=True,
                       network_mode=network)
    except docker.errors.BuildError as exc:
        tail = [str(x.get("stream", x.get("error", ""))).strip() for x in exc.build_log][-5:]
        raise ContainerError(
            f"building {dockerfile} in {context} failed: {exc.msg}; last lines: "
            f"{' | '.join(t for t in tail if t)}") from None
    except Exception as exc:
        raise ContainerError(f"building {dockerfile} in {context} failed: {_reason(exc)}") from None
    return tag


def run_container(run: ContainerRun, on_line: Callable[[str], None],
                  supervisor: ProcessSupervisor) -> ProcessOutcome:
    """Run ``run`` to its end (stopped after ``run.timeout``), like ``ProcessSupervisor.run``
    runs a process. The engine is asked for first: without one the outcome's error says so."""
    timeout = run.timeout
    started = time.time()
    if supervisor.cancelled:
        return ProcessOutcome(None, started, started, cancelled=True)
    try:
        ensure_image(run.image, run.pull)
        container = _create(run)
    except ContainerError as exc:
        return ProcessOutcome(None, started, time.time(), error=str(exc))
    except Exception as exc:  # the engine went away, or answered what it should not
        return ProcessOutcome(None, started, time.time(),
                              error=f"container for '{run.image}': {_reason(exc)}")
    state = {"timed_out": False, "cancelled": False}
    stopping = threading.Lock()

    def stop(reason: str) -> None:
        state[reason] = True
        with stopping, contextlib.suppress(Exception):  # SIGTERM, the grace period, SIGKILL
            container.stop(timeout=max(1, round(supervisor.grace)))

    token = supervisor.add_stopper(lambda: stop("cancelled"))
    timer = None
    try:
        with stopping:  # a cancel from now on waits for the start, then stops it
            if supervisor.cancelled or state["cancelled"]:
                return ProcessOutcome(None, started, time.time(), cancelled=True)
            try:
                container.start()
            except Exception as exc:
                return ProcessOutcome(None, started, time.time(),
                                      error=f"container for '{run.image}' did not start: "
                                            f"{_reason(exc)}")
        if timeout is not None:
            timer = threading.Timer(max(0.0, timeout), stop, args=("timed_out",))
            timer.daemon = True
            timer.start()
        code = _stream(container, on_line)
    except ContainerError as exc:
        return ProcessOutcome(None, started, time.time(), error=str(exc))
    except Exception as exc:
        return ProcessOutcome(None, started, time.time(),
                              error=f"container for '{run.image}': {_reason(exc)}")
    finally:
        if timer is not None:
            timer.cancel()
        supervisor.remove_stopper(token)
        with contextlib.suppress(Exception):
            container.remove(force=True)
    return ProcessOutcome(code, started, time.time(), timed_out=state["timed_out"],
                          cancelled=state["cancelled"] and not state["timed_out"])


def _create(run: ContainerRun) -> Any:
    c = client()
    import docker.types

    volumes = {host: {"bind": inside, "mode": mode} for host, inside, mode in run.mounts}
    requests = None
    if run.gpus:
        requests = [docker.types.DeviceRequest(driver="nvidia", device_ids=list(run.gpus),
                                               capabilities=[["gpu"]])]
    try:
        return c.containers.create(
            run.image, command=run.command, entrypoint=run.entrypoint, environment=run.env,
            working_dir=run.workdir, volumes=volumes, user=run.user,
            network_mode=run.network, device_requests=requests, labels=run.labels,
            detach=True, stdin_open=False, tty=False,
        )
    except Exception as exc:
        raise ContainerError(f"cannot create a container of '{run.image}': {_reason(exc)}"
                             ) from None


def _stream(container: Any, on_line: Callable[[str], None]) -> int:
    """Every line the container prints (stdout and stderr, as they come), until it ends; its
    exit code.

    A followed log stream may end before the engine handed on the last of the output of a
    container that just exited (seen with Docker 20.10 under load: the tail of a 10 MB output
    missing). So once the container has ended, its log is read again, unfollowed, from the first
    byte not received yet (the log is one ordered sequence of bytes either way).
    """
    done = read_done(on_line)
    lines = LineSplitter(on_line)
    received = 0
    for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
        received += len(chunk)
        lines.feed(chunk)
        done()
    code = int(container.wait().get("StatusCode", -1))
    skip = received
    for chunk in container.logs(stream=True, follow=False, stdout=True, stderr=True):
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        lines.feed(chunk[skip:])
        skip = 0
        done()
    lines.close()
    done()
    return code


# ----------------------------------------------------------------------------- what to run


def _mounts(req: ContainerJob) -> list[tuple[str, str, str]]:
    """The workspace (and the run folder, where it is elsewhere: a Ray node) at the same paths
    inside as outside, so every path flowray gives the step means the same thing there."""
    mounts = [(req.workspace, req.workspace, "rw")]
    run_dir = os.path.abspath(req.run_dir)
    if not (run_dir + os.sep).startswith(os.path.abspath(req.workspace) + os.sep):
        mounts.append((run_dir, run_dir, "rw"))
    return mounts


def _network(req: ContainerJob) -> str | None:
    return (req.env.get("FLOWRAY_DOCKER_NETWORK") or os.environ.get("FLOWRAY_DOCKER_NETWORK")
            or None)


def _base(image: str, req: ContainerJob, cwd: str, env: dict[str, str]) -> ContainerRun:
    container_env = {k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"}
    return ContainerRun(
        image=image, env=container_env, workdir=cwd, mounts=_mounts(req),
        user=f"{os.getuid()}:{os.getgid()}",  # files written in the workspace stay the user's
        network=_network(req),
        gpus=list(req.gpus) if req.gpus else None,
        labels={RUN_LABEL: req.run_id, JOB_LABEL: req.key},
        pull=pull_policy(req.env),
    )


def job_container_run(spec: Any, argv: list[str], cwd: str, env: dict[str, str],
                      req: ContainerJob, ctx: dict[str, Any]) -> ContainerRun:
    """A ``run`` step of a job with ``container:``: the step's command in the job's image."""
    from flowray import expr

    if isinstance(spec, str):
        spec = {"image": spec, "options": None, "env": {}, "volumes": []}
    run = _base(spec["image"], req, cwd, env)
    for name, value in (spec["env"] or {}).items():
        text = value if isinstance(value, str) else expr.to_text(value)
        run.env[name] = expr.to_text(expr.render(text, ctx)) if "${{" in text else text
    for volume in spec["volumes"] or []:
        run.mounts.append(_volume(volume, req.workspace))
    if spec["options"]:
        _apply_options(run, spec["options"], req.workspace, env)
    run.entrypoint, run.command = argv[:1], argv[1:]
    return run


def image_step_run(image: str, given: dict[str, Any], cwd: str, req: ContainerJob
                   ) -> ContainerRun:
    """``action: docker://image``: the image's own entrypoint and command, or ``with:
    {entrypoint, args}``; every input also as ``INPUT_<NAME>``."""
    import shlex

    if not image.strip():
        raise ValueError("'docker://' names no image")
    run = _base(image.strip(), req, cwd, {})
    args = given.get("args")
    if isinstance(args, list):
        run.command = [str(a) for a in args]
    elif args is not None:
        run.command = shlex.split(str(args))
    entrypoint = given.get("entrypoint")
    if entrypoint is not None:
        run.entrypoint = [str(entrypoint)]
    return run


def action_run(action: ActionData, path: str, ctx: dict[str, Any], cwd: str,
               req: ContainerJob, *, key: str) -> ContainerRun:
    """An action with ``runs.using: docker``: its ``image`` (or the image its ``dockerfile``
    builds, once per commit), ``entrypoint`` and templated ``args``."""
    from flowray import expr

    runs = action["runs"]
    built = bool(runs["dockerfile"])
    if runs["dockerfile"]:
        if key.endswith("@"):  # a local action: no commit, so its files name the image
            key += _tree_digest(path)
        image = build_image(path, runs["dockerfile"], key, _network(req))
    else:
        image = (runs["image"] or "").removeprefix("docker://")
    run = _base(image, req, cwd, {})
    if built:
        run.pull = "never"  # built here: no registry has it
    if runs["entrypoint"]:
        run.entrypoint = [runs["entrypoint"]]
    if runs["args"]:
        run.command = [expr.to_text(expr.render(a, ctx)) if "${{" in a else a
                       for a in runs["args"]]
    return run


def _tree_digest(folder: str) -> str:
    """A hash of every file under ``folder`` (names and contents)."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, folder).encode() + b"\0")
            try:
                with open(path, "rb") as fh:
                    h.update(hashlib.sha256(fh.read()).digest())
            except OSError:
                continue
    return h.hexdigest()[:16]


def _volume(text: str, base: str) -> tuple[str, str, str]:
    """``HOST:CONTAINER[:ro|rw]``; a relative HOST is below ``base`` (the workspace), a bare
    name is a named volume."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ValueError(f"volume '{text}' is not HOST:CONTAINER[:ro|rw]")
    host = parts[0]
    if host.startswith((".", "~")) or "/" in host:
        host = os.path.normpath(os.path.join(base, os.path.expanduser(host)))
    return host, parts[1], parts[2] if len(parts) == 3 else "rw"


def _apply_options(run: ContainerRun, options: str, base: str, env: Mapping[str, str]
                   ) -> None:
    """The ``docker run`` options flowray understands in ``container.options``."""
    import shlex

    words = shlex.split(options)
    i = 0
    while i < len(words):
        word = words[i]
        name, eq, inline = word.partition("=")
        if name not in ("--network", "--net", "--user", "-u", "--env", "-e", "--volume", "-v",
                        "--workdir", "-w"):
            raise ValueError(
                f"option '{word}' is not one flowray passes to Docker (it understands "
                f"--network, --user, --env/-e, --volume/-v, --workdir/-w)")
        if eq:
            value = inline
        else:
            if i + 1 >= len(words):
                raise ValueError(f"option '{word}' needs a value")
            i += 1
            value = words[i]
        if name in ("--network", "--net"):
            run.network = value
        elif name in ("--user", "-u"):
            run.user = value
        elif name in ("--env", "-e"):
            k, _, v = value.partition("=")
            run.env[k] = v if _ else env.get(k, os.environ.get(k, ""))
        elif name in ("--volume", "-v"):
            run.mounts.append(_volume(value, base))
        else:
            run.workdir = value
        i += 1


def remove_run_containers(run_id: str) -> int:
    """Remove every container of run ``run_id`` (also running ones); how many there were."""
    try:
        c = client()
        left = c.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"})
    except Exception:
        return 0
    for container in left:
        with contextlib.suppress(Exception):
            container.remove(force=True)
    return len(left)


def _connect_reason(exc: BaseException) -> str:
    text = str(exc)
    for needle, reason in (("FileNotFoundError", "there is no socket there"),
                           ("No such file or directory", "there is no socket there"),
                           ("Connection refused", "connection refused"),
                           ("Permission denied", "permission denied (is this user in the "
                                                 "docker group?)"),
                           ("timed out", "it did not answer in time")):
        if needle in text:
            return reason
    return _reason(exc)


def _split_tag(image: str) -> tuple[str, str | None]:
    if "@" in image:
        return image, None
    name, sep, tag = image.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return image, "latest"


def _reason(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
