"""Shared fixtures: the CLI run in-process, in a fresh workspace, and flow-writing helpers;
and the session's check that the tests left nothing behind (see :func:`pytest_sessionfinish`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from gitfixtures import Forge

from flowray.cli import main


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    def assert_success(self) -> Outcome:
        assert self.exit_code == 0, repr(self)
        return self

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __repr__(self) -> str:
        return (f"Outcome(exit_code={self.exit_code})\n--- stdout ---\n{self.stdout}"
                f"\n--- stderr ---\n{self.stderr}")


class Workspace:
    """A temporary workspace folder with helpers to write flows and actions and run the CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, rel: str, text: str, *, executable: bool = False) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        if executable:
            path.chmod(0o755)
        return path

    def flow(self, text: str, name: str = "flow.yaml") -> str:
        self.write(name, text)
        return name

    def action(self, rel: str, action_yaml: str, **files: str) -> None:
        self.write(f"{rel}/action-datatorch.yaml", action_yaml)
        for fname, body in files.items():
            self.write(f"{rel}/{fname.replace('__', '.')}", body)

    def cli(self, *args: str) -> Outcome:
        runner = CliRunner()
        res = runner.invoke(main, list(args), catch_exceptions=False)
        return Outcome(res.exit_code, res.stdout, res.stderr)

    def run(self, flow: str, *args: str) -> Outcome:
        return self.cli("run", flow, *args)

    def record(self, ref: str = "last") -> Any:
        out = self.cli("status", ref, "--json")
        assert out.exit_code == 0, out
        return out.json()


@pytest.fixture
def forge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Forge:
    """A folder of real git repositories served as the action base (``file://``), with an
    empty action cache of the test's own."""
    root = tmp_path / "forge" / "repos"
    root.mkdir(parents=True)
    monkeypatch.setenv("FLOWRAY_ACTIONS_BASE", f"file://{root}")
    monkeypatch.setenv("FLOWRAY_CACHE_DIR", str(tmp_path / "action-cache"))
    monkeypatch.delenv("FLOWRAY_OFFLINE", raising=False)
    return Forge(root)


@pytest.fixture
def admin(served: Any) -> Iterator[Any]:
    """An httpx client of the module's ``served`` service (tests/servicefixtures.serving)
    with its admin token."""
    with served.client() as client:
        yield client


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    root = tmp_path / "ws"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("FLOWRAY_RETRY_BACKOFF", "0.05")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("FLOWRAY_GPUS", raising=False)
    yield Workspace(root)


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def pids_with_env(assignment: str) -> list[int]:
    """The processes whose environment holds ``NAME=value`` (``assignment``)."""
    marker = assignment.encode()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                out.append(int(entry.name))
        except OSError:
            continue
    return out


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 now (held together while chosen)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _holds_below(pid: int, folder: str) -> bool:
    """Whether process ``pid`` works in, or has a file open below, ``folder``."""
    prefix = folder.rstrip("/") + "/"
    try:
        if (os.readlink(f"/proc/{pid}/cwd") + "/").startswith(prefix):
            return True
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix):
                    return True
    except OSError:
        pass
    return False


def processes_of(folder: str, assignment: str, *, but: int | None = None) -> list[int]:
    """The live processes that carry ``NAME=value`` (``assignment``) in their environment,
    or work in or hold a file below ``folder``, and every process below those; not ``but``
    (nor its ancestors). The environment alone misses some: a process that renames itself
    (Ray's, through setproctitle) may overwrite it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and process_alive(int(entry.name)):
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    skip = set()
    pid = but
    while pid:  # `but` and its ancestors
        skip.add(pid)
        pid = parents.get(pid, 0)
    roots = {p for p in pids_with_env(assignment) if p in parents}
    roots |= {p for p in parents if p not in skip and _holds_below(p, folder)}
    found = set(roots - skip)
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and child not in skip:
                found.add(child)
                todo.append(child)
    return sorted(found)


def kill_processes(folder: str, assignment: str, *, but: int | None = None) -> list[int]:
    """SIGKILL :func:`processes_of` ``folder`` and ``assignment``, round after round (one
    may start while the others are killed), until none is left; the ones killed."""
    killed: list[int] = []
    for _ in range(5):
        pids = processes_of(folder, assignment, but=but)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        killed += pids
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(process_alive(p) for p in pids):
            time.sleep(0.05)
    return killed


def wait_for(path: Path, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear")


def env_without_color() -> dict[str, str]:
    env = dict(os.environ)
    env["NO_COLOR"] = "1"
    return env


# ----------------------------------------------------------------------------- leftovers
#
# What the tests' processes make outside a tmp_path goes below one folder of the session's,
# removed when it ends: Ray's session folders and the address file of `--address auto`
# (RAY_TMPDIR; /tmp/ray otherwise), what flowray ships to Ray nodes (FLOWRAY_NODE_DIR;
# /tmp/flowray-node-UID otherwise), the Ray heads of test_submit, the temporary files of every
# process the tests start (TMPDIR; this process keeps /tmp, where pytest's tmp_path lives), and
# flowray's own folder and git action cache (FLOWRAY_RUNNER_DIR, FLOWRAY_CACHE_DIR;
# ~/.cache/flowray otherwise: the tests never write to the real home).
# Every process the tests start inherits SESSION_MARK=<that folder>, so the ones still alive at
# the end are found by it (or by their files below it). Docker containers and images carry the
# session's label (containerfixtures).

SESSION_MARK = "FLOWRAY_TEST_SESSION"
_TMP = "/tmp"
# Names in /tmp (and in /tmp/ray and /tmp/flowray-node-UID) of what this suite's tests and the
# Ray and flowray processes they start would make, were they not pointed at the session folder.
_OURS = ("ray", "flowray-node-", "frs-", "frn-", "pymp-")
_session: dict[str, Any] = {}


def _tmp_entries() -> set[str]:
    out: set[str] = set()
    with contextlib.suppress(OSError):
        for name in os.listdir(_TMP):
            out.add(name)
            if name == "ray" or name.startswith("flowray-node-"):
                with contextlib.suppress(OSError):
                    out.update(f"{name}/{sub}" for sub in os.listdir(os.path.join(_TMP, name)))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _in_use(path: str) -> bool:
    """Whether a live process names ``path`` on its command line (then it is not a leftover
    of this session, whose processes are gone by then, but another's, still running)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and process_alive(int(entry.name)) \
                and path in _cmdline(int(entry.name)):
            return True
    return False


def _note_other_sessions() -> None:
    """Remember the pytest processes that run beside this session (not it, not what it
    started, not what started it): /tmp entries cannot be told apart from theirs."""
    now = time.monotonic()
    if now - _session.get("looked", 0.0) < 1.0:
        return
    _session["looked"] = now
    mine = {os.getpid(), *processes_of("/nonexistent/", f"{SESSION_MARK}={_session['folder']}")}
    pid = os.getppid()
    while pid > 1:  # the ancestors: a `timeout` or shell that started this pytest
        mine.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in mine \
                and "pytest" in _cmdline(int(entry.name)) and process_alive(int(entry.name)):
            _session["others"].add(int(entry.name))


def pytest_sessionstart(session: pytest.Session) -> None:
    tempfile.gettempdir()  # this process's stays /tmp: TMPDIR below is for the processes
    # A short path: Ray's unix sockets live below it (at most 107 characters).
    folder = tempfile.mkdtemp(prefix="frt-", dir=_TMP)
    names = (SESSION_MARK, "RAY_TMPDIR", "FLOWRAY_NODE_DIR", "TMPDIR", "FLOWRAY_RUNNER_DIR",
             "FLOWRAY_CACHE_DIR")
    _session.update(folder=folder, saved={n: os.environ.get(n) for n in names},
                    tmp=_tmp_entries(), others=set())
    os.environ.update({SESSION_MARK: folder, "RAY_TMPDIR": folder, "TMPDIR": folder,
                       "FLOWRAY_NODE_DIR": os.path.join(folder, "flowray-nodes"),
                       # flowray's folder and git action cache, not the user's ~/.cache/flowray
                       "FLOWRAY_RUNNER_DIR": os.path.join(folder, "flowray-runner"),
                       "FLOWRAY_CACHE_DIR": os.path.join(folder, "flowray-actions")})
    _note_other_sessions()


def pytest_runtest_teardown(item: pytest.Item) -> None:
    if "folder" in _session:
        _note_other_sessions()


def _stop_processes(folder: str) -> list[str]:
    """The session's processes still alive (after a few seconds' grace), SIGKILLed."""
    def alive() -> list[int]:
        return processes_of(folder, f"{SESSION_MARK}={folder}", but=os.getpid())

    deadline = time.monotonic() + 10
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [f"process {pid}: {_cmdline(pid)[:200]}" for pid in alive()]
    kill_processes(folder, f"{SESSION_MARK}={folder}", but=os.getpid())
    return left


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session for what its tests left behind: processes they started (Ray's
    included; killed), Docker containers (removed), and entries of /tmp made since the session
    began that look like this suite's (compared with what /tmp held then; left as they are).
    An entry named by a live process belongs to someone else; while other pytest sessions ran
    beside this one, the new entries are only listed, as they may be theirs. The session's
    folder (Ray's session folders in it) and Docker images are removed in any case."""
    if "folder" not in _session:
        return
    _note_other_sessions()
    folder = _session.pop("folder")
    problems: list[str] = []
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        # a test left this process connected to a Ray: a leftover, and Ray's threads are
        # better stopped here than torn down with the interpreter
        problems.append("this pytest process was still connected to a Ray cluster")
        with contextlib.suppress(Exception):
            ray.shutdown()
    problems += _stop_processes(folder)
    containers = sys.modules.get("containerfixtures")
    if containers is not None:
        try:
            problems += containers.remove_session_objects()
        except Exception as exc:
            problems.append(f"the session's Docker containers and images (label "
                            f"{containers.LABEL}={containers.SESSION}) could not be "
                            f"removed: {exc}")
    # multiprocessing's folder of this process goes when it exits, after this hook
    own = sys.modules["multiprocessing"].current_process()._config.get("tempdir") \
        if "multiprocessing" in sys.modules else None
    new = [os.path.join(_TMP, name) for name in sorted(_tmp_entries() - _session["tmp"])
           if name.startswith(_OURS)]
    new = [path for path in new if path != own and not _in_use(path)]
    others = sorted(_session["others"])
    if not others:
        problems += new
    shutil.rmtree(folder, ignore_errors=True)
    for name, value in _session["saved"].items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def say(lines: list[str], red: bool) -> None:
        if reporter is None:
            print("\n".join(lines), file=sys.stderr)
            return
        reporter.write_sep("=", lines[0], red=red, yellow=not red)
        for line in lines[1:]:
            reporter.write_line(line)

    if problems:
        say(["left behind by the tests (processes now killed, Docker objects removed; /tmp "
             "entries left as they are)", *(f"  {p}" for p in problems)], red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if others and new:
        say([f"new in {_TMP}, maybe another test session's (pytest pids "
             f"{', '.join(map(str, others[:5]))} ran beside this one)",
             *(f"  {p}" for p in new)], red=False)
