"""The one place that spawns and stops step processes.

Each step runs in its own session (``start_new_session=True``) so that the whole tree can be
signalled as a group. Output (stdout and stderr merged) is read while the process runs, so no
amount of output can deadlock it, and handed line by line to a callback.

Stopping escalates SIGTERM -> grace period -> SIGKILL, and reaches children that started a
session of their own: before signalling, the tree below the step is collected from ``/proc``.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from flowray.spec.limits import MAX_GRACE_SECONDS

# How long a step's processes get between SIGTERM and SIGKILL when stopped.
DEFAULT_GRACE_SECONDS = 5.0
# How long the reader waits without output before checking whether the step's main process
# exited while a background child still holds the output pipe.
_IDLE_CHECK_SECONDS = 0.25
_READ_SIZE = 1 << 16
# The watchdog never sleeps longer than this at once (a far deadline is reached in steps), so no
# deadline, however far, is a wait the clock functions refuse.
_WATCH_STEP_SECONDS = 3600.0


def _seconds(value: float | None) -> float | None:
    """A timeout or grace as a usable number of seconds: None (no limit) for None, NaN or
    +infinity, 0 for a negative one. Inputs are checked where they come in (flow, options);
    this keeps one bad value that got through from breaking the watchdog."""
    if value is None or value != value or value == float("inf"):
        return None
    return max(float(value), 0.0)


def _grace(value: float) -> float:
    """Seconds to wait between SIGTERM and SIGKILL: at most MAX_GRACE_SECONDS."""
    seconds = _seconds(value)
    return MAX_GRACE_SECONDS if seconds is None else min(seconds, MAX_GRACE_SECONDS)


@dataclass(frozen=True)
class ProcessRequest:
    """What to run. ``env`` is the complete environment; it is left out of the repr."""

    argv: list[str]
    env: dict[str, str] = field(repr=False)
    cwd: str
    timeout: float | None = None  # seconds

    def __post_init__(self) -> None:
        if not self.argv or not self.argv[0]:
            raise ValueError("a process request needs a command")


@dataclass(frozen=True)
class ProcessOutcome:
    exit_code: int | None  # None when the process could not start
    started: float  # time.time()
    ended: float
    timed_out: bool = False
    cancelled: bool = False
    error: str | None = None  # why it could not start
    pgid: int = 0  # the step's process group (its session leader's pid)

    @property
    def duration(self) -> float:
        return self.ended - self.started


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for pid, stat in _proc_files("stat"):
        # Field 4 (ppid) comes after the parenthesised command name, which may hold spaces.
        rest = stat[stat.rfind(b")") + 2 :].split()
        if len(rest) > 1:
            kids.setdefault(int(rest[1]), []).append(pid)
    return kids


def _proc_files(name: str) -> Iterator[tuple[int, bytes]]:
    """``(pid, contents of /proc/<pid>/<name>)`` for every process that can be read."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/{name}", "rb") as fh:
                yield int(entry), fh.read()
        except OSError:
            continue


def process_tree(roots: Iterable[int]) -> set[int]:
    """``roots`` and every live descendant of them (Linux ``/proc``; only roots elsewhere)."""
    kids = _children_map()
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(kids.get(pid, ()))
    return seen


def _signal_tree(pgids: Iterable[int], sig: int) -> bool:
    """Signal each process group and every process below its members; True if any was alive."""
    pgids = list(pgids)
    members = set(pgids)
    alive = False
    for pgid in pgids:
        try:
            os.killpg(pgid, sig)
            alive = True
        except (ProcessLookupError, PermissionError):
            pass
    for pid in process_tree(members) - members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            alive = True
    return alive


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_groups(pgids: Iterable[int], *, grace: float = DEFAULT_GRACE_SECONDS) -> None:
    """SIGTERM the process groups (and descendants that left them), wait ``grace``, SIGKILL."""
    pgids = [g for g in pgids if g > 0 and _group_alive(g)]
    if not pgids:
        return
    # Collect the tree before the leaders die: once they exit, their children are orphaned and
    # no longer found below them.
    tree = process_tree(pgids)
    if not _signal_tree(pgids, signal.SIGTERM):
        return
    for pid in tree - set(pgids):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _grace(grace)
    while time.monotonic() < deadline:
        if not any(_group_alive(g) for g in pgids) and not _any_alive(tree - set(pgids)):
            return
        time.sleep(0.02)
    _signal_tree(pgids, signal.SIGKILL)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _any_alive(pids: Iterable[int]) -> bool:
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != b"Z":
            return True
    return False


class ProcessSupervisor:
    """Tracks every live step process so that a cancel or a timeout can reach it.

    One watchdog thread enforces deadlines for all processes; no thread per step.
    """

    def __init__(self, *, grace: float = DEFAULT_GRACE_SECONDS) -> None:
        self.grace = grace
        self._lock = threading.Lock()
        self._live: dict[int, float | None] = {}  # pgid -> deadline (monotonic)
        self._timed_out: set[int] = set()
        self._cancelled = False
        self._wake = threading.Condition(self._lock)
        self._watchdog: threading.Thread | None = None
        self._stoppers: dict[int, Callable[[], None]] = {}  # containers and such, by token
        self._next_stopper = 0

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def _register(self, pgid: int, timeout: float | None) -> None:
        with self._lock:
            seconds = _seconds(timeout)
            deadline = None if seconds is None else time.monotonic() + seconds
            self._live[pgid] = deadline
            if deadline is not None:
                if self._watchdog is None:
                    self._watchdog = threading.Thread(
                        target=self._watch, name="flowray-watchdog", daemon=True
                    )
                    self._watchdog.start()
                self._wake.notify()

    def _unregister(self, pgid: int) -> bool:
        """Forget ``pgid``; True if its deadline had passed."""
        with self._lock:
            self._live.pop(pgid, None)
            if pgid in self._timed_out:
                self._timed_out.discard(pgid)
                return True
            return False

    def _watch(self) -> None:
        while True:
            expired: list[int] = []
            with self._lock:
                now = time.monotonic()
                nearest: float | None = None
                for pgid, deadline in self._live.items():
                    if deadline is None or pgid in self._timed_out:
                        continue
                    if deadline <= now:
                        expired.append(pgid)
                        self._timed_out.add(pgid)
                    elif nearest is None or deadline < nearest:
                        nearest = deadline
                if not expired:
                    wait = None if nearest is None else min(nearest - now, _WATCH_STEP_SECONDS)
                    self._wake.wait(wait)
                    continue
            for pgid in expired:
                try:
                    threading.Thread(
                        target=stop_groups, args=([pgid],), kwargs={"grace": self.grace},
                        daemon=True,
                    ).start()
                except RuntimeError:  # no thread can be started now: stop it from here
                    stop_groups([pgid], grace=self.grace)

    def mark_cancelled(self) -> list[int]:
        """Refuse new processes from now on; the process groups live now."""
        with self._lock:
            self._cancelled = True
            return list(self._live)

    def add_stopper(self, stop: Callable[[], None]) -> int:
        """Something else a cancel must stop (a container); a token for ``remove_stopper``."""
        with self._lock:
            self._next_stopper += 1
            self._stoppers[self._next_stopper] = stop
            return self._next_stopper

    def remove_stopper(self, token: int) -> None:
        with self._lock:
            self._stoppers.pop(token, None)

    def cancel_all(self) -> None:
        """Stop every live step process tree (SIGTERM, grace, SIGKILL) and every registered
        stopper (containers, the same way); blocks until done."""
        groups = self.mark_cancelled()
        threads = self.start_stoppers()
        stop_groups(groups, grace=self.grace)
        for t in threads:
            t.join()

    def start_stoppers(self) -> list[threading.Thread]:
        """Run every registered stopper, each in a thread (join them to wait)."""
        with self._lock:
            stoppers = list(self._stoppers.values())
        threads = [threading.Thread(target=s, name="flowray-stop", daemon=True)
                   for s in stoppers]
        for t in threads:
            t.start()
        return threads

    def run(self, request: ProcessRequest, on_line: Callable[[str], None]) -> ProcessOutcome:
        """Run ``request`` to the end, calling ``on_line`` for each line of output (no newline)."""
        started = time.time()
        if self._cancelled:
            return ProcessOutcome(None, started, started, cancelled=True)
        try:
            child = _start(request)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if isinstance(exc, FileNotFoundError) and exc.filename == request.cwd:
                what = f"working directory '{request.cwd}' does not exist"
            elif isinstance(exc, (FileNotFoundError, PermissionError)):
                what = f"cannot run '{request.argv[0]}': {reason}"
            else:
                what = f"cannot start '{request.argv[0]}': {reason}"
            return ProcessOutcome(None, started, time.time(), error=what)
        except ValueError:  # a NUL character (from a secret, an input, the event) cannot be passed
            names = sorted(k for k, v in request.env.items() if "\0" in k or "\0" in v)
            where = (f"the environment variable{'s' if len(names) > 1 else ''} "
                     f"{', '.join(names)}" if names else "its command line or directory")
            return ProcessOutcome(None, started, time.time(),
                                  error=f"cannot start '{request.argv[0]}': {where} holds a "
                                        "NUL character, which no process can be given")
        pgid = child.pid
        self._register(pgid, request.timeout)
        if self._cancelled:  # a cancel raced with the start: it must not miss this process
            threading.Thread(target=stop_groups, args=([pgid],),
                             kwargs={"grace": self.grace}, daemon=True).start()
        try:
            if _pump(child, child.fd, on_line):
                # The main process is gone but a background child still holds the step's
                # output: the step ends here, and so do the processes that would go on
                # writing into a pipe nobody reads (those that let go of it live on until
                # the job ends).
                stop_pids(pipe_holders(child.fd), grace=self.grace)
            os.close(child.fd)
            code = child.wait()
        except BaseException:
            stop_groups([pgid], grace=self.grace)
            child.wait()
            raise
        finally:
            timed_out = self._unregister(pgid)
        return ProcessOutcome(
            code,
            started,
            time.time(),
            timed_out=timed_out,
            cancelled=self._cancelled and not timed_out and code != 0,
            pgid=pgid,
        )


class _Child:
    """A started step process: its pid (= its process group) and the read end of its output."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        while self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except InterruptedError:
                continue
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


_WHICH: dict[tuple[str, str], str | None] = {}


def _resolve(program: str, path: str | None) -> str | None:
    """``program`` as an absolute path, searched in the step's own PATH (memoized)."""
    if "/" in program:
        return program
    key = (program, path or "")
    if key not in _WHICH:
        _WHICH[key] = shutil.which(program, path=path or os.defpath)
    return _WHICH[key]


def _start(request: ProcessRequest) -> _Child:
    # posix_spawn (vfork + exec) is the fastest way to start a process, but it cannot change
    # directory; steps that run in the workspace (most) use it, the others go through Popen.
    # Pipes are close-on-exec; dup2 makes the child's copies inheritable.
    exe = _resolve(request.argv[0], request.env.get("PATH"))
    if exe is None:
        raise FileNotFoundError(2, "No such file or directory", request.argv[0])
    if request.cwd == _cwd():
        rfd, wfd = os.pipe()
        try:
            pid = os.posix_spawn(
                exe,
                request.argv,
                request.env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, wfd, 1),
                    (os.POSIX_SPAWN_DUP2, wfd, 2),
                ],
                setsid=True,
            )
        except BaseException:
            os.close(rfd)
            raise
        finally:
            os.close(wfd)
        return _Child(pid, rfd)
    if not os.path.isdir(request.cwd):
        raise FileNotFoundError(2, "No such file or directory", request.cwd)
    proc = subprocess.Popen(
        [exe, *request.argv[1:]],
        executable=exe,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=request.cwd,
        env=request.env,
        start_new_session=True,
        close_fds=True,
    )
    assert proc.stdout is not None
    fd = os.dup(proc.stdout.fileno())
    proc.stdout.close()
    # Popen's own bookkeeping is not needed: the pid is waited for like a spawned one.
    proc.returncode = 0  # keep Popen.__del__ from reaping or warning
    return _Child(proc.pid, fd)


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return ""


def read_done(on_line: Callable[[str], None]) -> Callable[[], None]:
    """What to call after the lines of one read of a step's output were handed to
    ``on_line``: its ``flush`` (the job runner sends them on as one batch), if it has one."""
    flush: Callable[[], None] | None = getattr(on_line, "flush", None)
    return flush if flush is not None else (lambda: None)


# A line longer than this (bytes) is handed on in pieces of this size (UTF-8 characters kept
# whole), so a step that prints without a newline holds at most this much of flowray's memory.
MAX_LINE_BYTES = 1 << 20
# After the step's main process exited, output still coming from a background child that holds
# the pipe is read for at most this long; then the step ends.
_DRAIN_SECONDS = 0.5


def _char_cut(data: bytes | bytearray, limit: int) -> int:
    """Where to cut ``data`` at most ``limit`` bytes in without splitting a UTF-8 character."""
    cut = limit
    for back in range(4):
        if cut - back <= 0:
            break
        if data[cut - back] & 0xC0 != 0x80:  # not a continuation byte: a character starts here
            return cut - back
    return cut


class LineSplitter:
    """Splits a step's output into lines for ``on_line`` (without the newline).

    A line longer than :data:`MAX_LINE_BYTES` is not held whole: its pieces go to
    ``on_line.part`` as they come (each a continuation of the same line) and its last piece to
    ``on_line``, which so learns that the line ended. Without a ``part`` attribute each piece is
    handed to ``on_line`` as a line of its own.
    """

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self.on_line = on_line
        self.part: Callable[[str], None] = getattr(on_line, "part", None) or on_line
        self.pending = bytearray()

    def feed(self, data: bytes) -> None:
        cut = data.rfind(b"\n")
        if cut < 0:
            self.pending += data
            self._spill()
            return
        if self.pending:
            data = bytes(self.pending) + data
            cut += len(self.pending)
            self.pending = bytearray()
        self.pending += data[cut + 1:]
        on_line = self.on_line
        for raw in data[:cut].split(b"\n"):
            if len(raw) > MAX_LINE_BYTES:
                self._long(raw)
            else:
                on_line(raw.decode("utf-8", "replace").removesuffix("\r"))
        self._spill()

    def _spill(self) -> None:
        while len(self.pending) > MAX_LINE_BYTES:
            n = _char_cut(self.pending, MAX_LINE_BYTES)
            self.part(bytes(self.pending[:n]).decode("utf-8", "replace"))
            del self.pending[:n]

    def _long(self, raw: bytes) -> None:
        while len(raw) > MAX_LINE_BYTES:
            n = _char_cut(raw, MAX_LINE_BYTES)
            self.part(raw[:n].decode("utf-8", "replace"))
            raw = raw[n:]
        self.on_line(raw.decode("utf-8", "replace").removesuffix("\r"))

    def close(self) -> None:
        """The output ended: hand on what is left of an unfinished last line."""
        if self.pending:
            rest, self.pending = bytes(self.pending), bytearray()
            self.on_line(rest.decode("utf-8", "replace").removesuffix("\r"))


def _pump(proc: _Child, fd: int, on_line: Callable[[str], None]) -> bool:
    """Read the step's output until its end, or until the main process exited and what a
    background child still writes was drained for :data:`_DRAIN_SECONDS`. True in that case:
    somebody else still holds the pipe."""
    done = read_done(on_line)
    lines = LineSplitter(on_line)
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    main_exited_at: float | None = None
    next_check = time.monotonic() + _IDLE_CHECK_SECONDS
    held = False
    while True:
        ready = poller.poll(_IDLE_CHECK_SECONDS * 1000)
        now = time.monotonic()
        if not ready or now >= next_check:
            # Is the main process gone while the pipe stays open (a background child holds
            # it)? Checked when the pipe is quiet, and now and then while it is busy.
            next_check = now + _IDLE_CHECK_SECONDS
            if main_exited_at is None:
                if proc.poll() is not None:
                    main_exited_at = now
            elif not ready or now - main_exited_at >= _DRAIN_SECONDS:
                held = True
                break
            if not ready:
                continue
        data = os.read(fd, _READ_SIZE)
        if not data:
            break
        lines.feed(data)
        done()
    lines.close()
    done()
    return held


def pipe_holders(fd: int) -> list[int]:
    """The processes (other than this one) that hold the other end of the pipe ``fd``."""
    try:
        link = f"pipe:[{os.fstat(fd).st_ino}]"
    except OSError:
        return []
    me = os.getpid()
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for name in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{name}") == link:
                    found.append(int(entry))
                    break
            except OSError:
                continue
    return found


def stop_pids(pids: Iterable[int], *, grace: float) -> None:
    """SIGTERM ``pids``, wait up to ``grace`` for them to end, SIGKILL what is left."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _grace(grace)
    while time.monotonic() < deadline and _any_alive(pids):
        time.sleep(0.02)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def run_processes(run_id: str, job_key: str | None = None) -> list[int]:
    """Live processes whose environment carries ``FLOWRAY_RUN_ID=<run_id>`` (and, with
    ``job_key``, ``FLOWRAY_JOB_KEY=<job_key>``: one job's, where other jobs of the run go on).

    Every step process gets those variables, and children inherit them: this finds what a step
    left behind even after it left the step's session and its parent died.
    """
    markers = [f"FLOWRAY_RUN_ID={run_id}".encode()]
    if job_key is not None:
        markers.append(f"FLOWRAY_JOB_KEY={job_key}".encode())
    me = os.getpid()
    found = []
    for pid, env in _proc_files("environ"):
        if pid != me:
            entries = env.split(b"\0")
            if all(m in entries for m in markers) and _any_alive([pid]):
                found.append(pid)
    return found


def sweep_run_processes(run_id: str, *, grace: float = DEFAULT_GRACE_SECONDS,
                        job_key: str | None = None) -> int:
    """Stop every process left from run ``run_id`` (or from its job ``job_key``): SIGTERM,
    ``grace``, SIGKILL. Returns count."""
    pids = run_processes(run_id, job_key)
    if pids:
        stop_pids(pids, grace=grace)
    return len(pids)
