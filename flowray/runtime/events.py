"""One typed stream of a run's events, fanned out to observers that never slow the run.

Every event of a run gets the next ``seq`` (from 1, no gaps) and is appended to the run's
``events.jsonl`` as one JSON line; then it is offered to each :class:`Subscription`. A
subscription holds a bounded queue: an observer that falls behind (its queue full) is not
waited for; it stops taking live events and catches up from the file, from the ``seq`` it got
to, and then takes live events again. So a slow observer (a terminal on a slow pipe, a
database) never slows the run, and never loses an event.

Events are plain classes with slots (a step printing 100,000 lines a second makes as many);
:meth:`Event.to_dict` gives the JSON object of SPEC "Events".
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from json.encoder import encode_basestring_ascii as _json_str
from typing import IO, Any, ClassVar, TypeVar

from flowray.store.fs import os_error_text

EVENTS_FILE = "events.jsonl"
_DECODER = json.JSONDecoder()
_READ_CHUNK = 1 << 20  # bytes a reader catching up from the file takes at a time
# Live events an observer may have waiting before it reads from the file instead.
DEFAULT_QUEUE = 10_000
# How long an observer may take to see an event (it sleeps this long before it waits to be
# woken, so a step printing 100,000 lines a second wakes it every few hundred lines).
DEFAULT_LATENCY = 0.005
# A step.log event is written to the file at once, but the file is flushed at most this often
# for them (every other event flushes it), so that a chatty step costs no write call a line.
_LOG_FLUSH_SECONDS = 0.2


_NEW_DICT: Any = object()  # a field's default: a new {} for each event
_NEW_LIST: Any = object()  # ... a new []
_BASE = ("seq", "time", "run")


class _EventType(type):
    """Makes each event class: slots from its annotated fields, their defaults, and
    ``NAMES``, without generating code (a dataclass per event type cost ~1 ms of every
    start-up each)."""

    def __new__(mcs, name: str, bases: tuple[type, ...], ns: dict[str, Any]) -> _EventType:
        own = [n for n, t in ns.get("__annotations__", {}).items()
               if not str(t).startswith("ClassVar") and n not in _BASE]
        defaults = {n: ns.pop(n) for n in own if n in ns}
        ns["__slots__"] = tuple(own) if bases else _BASE
        cls = super().__new__(mcs, name, bases, ns)
        inherited: tuple[str, ...] = getattr(cls, "NAMES", ())
        cls.NAMES = (*inherited, *own)  # type: ignore[attr-defined]
        cls._DEFAULTS = {**getattr(cls, "_DEFAULTS", {}), **defaults}  # type: ignore[attr-defined]
        return cls


class Event(metaclass=_EventType):
    """What every event has: its place in the run's stream and when it happened."""

    TYPE: ClassVar[str] = ""
    NAMES: ClassVar[tuple[str, ...]] = ()  # the fields after seq, time, run
    _DEFAULTS: ClassVar[dict[str, Any]] = {}

    seq: int
    time: str  # ISO 8601, UTC, milliseconds
    run: str

    def __init__(self, seq: int, time: str, run: str, *args: Any, **values: Any) -> None:
        self.seq = seq
        self.time = time
        self.run = run
        names = self.NAMES
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes {len(names)} fields, not {len(args)}")
        for name, value in zip(names, args, strict=False):
            setattr(self, name, value)
        for name in names[len(args):]:
            if name in values:
                value = values.pop(name)
            else:
                value = self._DEFAULTS[name]
                if value is _NEW_DICT:
                    value = {}
                elif value is _NEW_LIST:
                    value = []
            setattr(self, name, value)
        if values:
            raise TypeError(f"{type(self).__name__} has no field {next(iter(values))!r}")

    @property
    def type(self) -> str:
        return self.TYPE

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq, "time": self.time, "run": self.run,
                               "type": self.TYPE}
        for name in self.NAMES:
            out[name] = getattr(self, name)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str, separators=(",", ":"))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({fields})"


class RunStarted(Event):
    TYPE = "run.started"
    flow: str = ""
    file: str = ""
    trigger: str = "manual"
    inputs: dict[str, Any] = _NEW_DICT  # secrets masked
    workspace: str = ""
    backend: str = "local"  # local, ray (embedded) or the Ray address
    hosts: int = 1  # how many hosts jobs may land on
    pid: int = 0
    host: str = ""
    actions: dict[str, str] = _NEW_DICT  # git action -> commit
    started: float = 0.0
    run_number: int = 0  # the flow's run number in the workspace (run.runNumber)


class JobQueued(Event):
    TYPE = "job.queued"
    job: str = ""  # the key: the job id, or id.N for a matrix cell
    id: str = ""
    name: str = ""
    matrix: dict[str, Any] | None = None
    needs: list[str] = _NEW_LIST
    resources: dict[str, Any] = _NEW_DICT


class JobStarted(Event):
    TYPE = "job.started"
    job: str = ""
    node: str = ""
    host: str = ""
    attempt: int = 1
    gpus: list[str] | None = None
    started: float = 0.0


class StepStarted(Event):
    TYPE = "step.started"
    job: str = ""
    step: int = 0  # index in the job
    name: str = ""
    kind: str = "run"  # run cmd script python node docker (action: not loaded)
    key: str = ""  # the step's id, or its 1-based position
    id: str | None = None
    attempt: int = 1
    rank: int | None = None  # a multi-node job: the node's rank
    log: str | None = None  # the log file, relative to the run folder
    started: float | None = None


class StepLog(Event):
    TYPE = "step.log"
    job: str = ""
    step: int = 0
    stream: str = "stdout"
    line: str = ""  # masked
    rank: int | None = None

    def __init__(self, seq: int, time: str, run: str, job: str = "", step: int = 0,
                 stream: str = "stdout", line: str = "", rank: int | None = None) -> None:
        # Written out: a step may print 100,000 lines a second.
        self.seq = seq
        self.time = time
        self.run = run
        self.job = job
        self.step = step
        self.stream = stream
        self.line = line
        self.rank = rank


class StepFinished(Event):
    TYPE = "step.finished"
    job: str = ""
    step: int = 0
    status: str = ""
    exit_code: int | None = None
    outputs: dict[str, Any] = _NEW_DICT
    key: str = ""
    id: str | None = None
    name: str = ""
    kind: str = "run"
    outcome: str | None = None  # the status before continue-on-error
    error: str | None = None
    log: str | None = None
    started: float | None = None
    ended: float | None = None
    attempt: int = 1
    rank: int | None = None
    cached: bool = False  # outputs from the action result cache: the action did not run


class JobRetrying(Event):
    """An attempt of a job ended and the job runs again: after a failure (``retries``) or
    because its node was lost (status ``lost``)."""

    TYPE = "job.retrying"
    job: str = ""
    attempt: int = 1  # the attempt that ended
    status: str = ""  # failure or lost
    error: str | None = None
    node: str = ""
    delay: float = 0.0  # seconds before the next attempt
    retries: int = 0  # the job's `retries`
    lost_attempts: int = 0  # attempts lost with their node so far (this one included)
    started: float | None = None
    ended: float | None = None
    steps: list[dict[str, Any]] = _NEW_LIST
    ranks: list[dict[str, Any]] = _NEW_LIST


class JobFinished(Event):
    TYPE = "job.finished"
    job: str = ""
    status: str = ""
    attempt: int = 0
    outputs: dict[str, Any] = _NEW_DICT
    reports: dict[str, Any] | None = None
    name: str = ""
    error: str | None = None
    node: str = ""
    started: float | None = None
    ended: float | None = None
    artifacts: list[str] = _NEW_LIST
    warnings: list[str] = _NEW_LIST
    ranks: list[dict[str, Any]] = _NEW_LIST
    steps: list[dict[str, Any]] = _NEW_LIST
    lost_attempts: int = 0


class RunNotice(Event):
    """Something the run wants a person to know that is no status change (a job waiting for
    nodes, a log that cannot be written)."""

    TYPE = "run.notice"
    message: str = ""
    job: str | None = None


class RunFinished(Event):
    TYPE = "run.finished"
    status: str = ""
    exit_code: int = 0
    cancel_reason: str | None = None
    ended: float = 0.0


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (RunStarted, JobQueued, JobStarted, StepStarted, StepLog, StepFinished,
                JobRetrying, JobFinished, RunNotice, RunFinished)
}

E = TypeVar("E", bound=Event)


def event_from_dict(data: dict[str, Any]) -> Event:
    """The event a JSON object (a line of ``events.jsonl``) holds; unknown keys are left out,
    so a reader keeps working when a newer flowray adds fields."""
    cls = EVENT_TYPES.get(str(data.get("type")))
    if cls is None:
        raise ValueError(f"unknown event type {data.get('type')!r}")
    kwargs = {k: data[k] for k in cls.NAMES if k in data}
    return cls(seq=int(data["seq"]), time=str(data["time"]), run=str(data["run"]), **kwargs)


class _Clock:
    """ISO 8601 UTC times with milliseconds, made once per millisecond (a chatty step emits
    many events in one)."""

    __slots__ = ("_ms", "_text")

    def __init__(self) -> None:
        self._ms = -1
        self._text = ""

    def now(self) -> str:
        ms = int(time.time() * 1000)
        if ms != self._ms:
            secs, milli = divmod(ms, 1000)
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + \
                f".{milli:03d}Z"
            self._ms = ms
        return self._text


class EventBus:
    """Numbers a run's events, appends them to ``events.jsonl`` and offers them to observers.

    ``mask`` is applied to the fields of every event but ``step.log`` (whose lines the step
    runner masks as it reads them), so no secret reaches the file or an observer.
    """

    def __init__(self, run_id: str, run_dir: str, *,
                 mask: Callable[[Any], Any] | None = None) -> None:
        self.run_id = run_id
        self.path = os.path.join(run_dir, EVENTS_FILE)
        self._mask = mask
        self._lock = threading.Lock()
        self._seq = 0
        self._subs: list[Subscription] = []
        self._closed = False
        self._flushed = time.monotonic()
        self._clock = _Clock()
        self._run_json = _json_str(run_id)
        self._job_json: dict[str, str] = {}
        self.file_error: str | None = None
        self._fh: IO[str] | None
        try:
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            self._fh = None
            self.file_error = os_error_text(exc, self.path)

    @property
    def last_seq(self) -> int:
        return self._seq

    def emit(self, cls: type[E], **values: Any) -> E | None:
        """Make, record and offer one event; None once the bus is closed. (``step.log``
        events go through :meth:`emit_logs`.)"""
        if self._mask is not None:
            values = self._mask(values)
        with self._lock:
            if self._closed:
                return None
            self._seq += 1
            event = cls(seq=self._seq, time=self._clock.now(), run=self.run_id, **values)
            fh = self._fh
            if fh is not None:
                try:
                    fh.write(event.to_json() + "\n")
                    fh.flush()
                    self._flushed = time.monotonic()
                except (OSError, ValueError) as exc:
                    self._file_failed(exc)
            for sub in self._subs:
                sub._offer(event)
        return event

    def emit_logs(self, job: str, step: int, lines: list[str],
                  rank: int | None = None) -> None:
        """One ``step.log`` event for each of ``lines`` (what one read of a step's output
        held): one lock, one time and one write for all of them, since a step may print
        100,000 lines a second. The lines are masked already (by the step runner)."""
        if not lines:
            return
        with self._lock:
            if self._closed:
                return
            now = self._clock.now()
            run = self.run_id
            first = self._seq + 1
            self._seq += len(lines)
            made = [StepLog(seq, now, run, job, step, "stdout", line, rank)
                    for seq, line in enumerate(lines, first)]
            fh = self._fh
            if fh is not None:
                job_json = self._job_json.get(job)
                if job_json is None:
                    job_json = self._job_json[job] = _json_str(job)
                head = f'"time":"{now}","run":{self._run_json},"type":"step.log",' \
                       f'"job":{job_json},"step":{step},"stream":"stdout","line":'
                tail = f',"rank":{"null" if rank is None else rank}}}\n'
                try:
                    fh.write("".join(
                        f'{{"seq":{seq},{head}{_json_str(line)}{tail}'
                        for seq, line in enumerate(lines, first)))
                    mono = time.monotonic()
                    if mono - self._flushed > _LOG_FLUSH_SECONDS:
                        fh.flush()
                        self._flushed = mono
                except (OSError, ValueError) as exc:
                    self._file_failed(exc)
            for sub in self._subs:
                sub._offer_many(made)

    def _file_failed(self, exc: Exception) -> None:
        """(Holding the lock.) The file cannot be written (a full disk): observers are then
        never let fall behind (they would have nothing to catch up from)."""
        self.file_error = os_error_text(exc, self.path) if isinstance(exc, OSError) else \
            f"cannot write {self.path}: {exc}"
        if self._fh is not None:
            with contextlib.suppress(OSError, ValueError):
                self._fh.close()
        self._fh = None
        for sub in self._subs:
            sub._unbounded()

    def subscribe(self, *, after: int = 0, maxsize: int = DEFAULT_QUEUE,
                  skip: Iterable[str] = (), latency: float = DEFAULT_LATENCY
                  ) -> Subscription:
        """An observer's view of the stream: every event with ``seq > after``, in order
        (less the types in ``skip``, which it is never handed). ``latency``: how long the
        observer may take to see an event, so that it wakes once for many events of a chatty
        step rather than once for each."""
        with self._lock:
            sub = Subscription(self, after=after, maxsize=maxsize, behind=after < self._seq,
                               skip=skip, latency=latency)
            if self.file_error is not None and after < self._seq:
                raise RuntimeError(f"the events before now are lost: {self.file_error}")
            self._subs.append(sub)
            if self._closed:
                sub._end()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def close(self) -> None:
        """No more events; subscriptions end once they delivered what was emitted."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._fh is not None:
                try:
                    self._fh.close()
                except OSError as exc:
                    self.file_error = os_error_text(exc, self.path)
                self._fh = None
            for sub in self._subs:
                sub._end()

    def _flush_locked(self) -> None:
        if self._fh is not None:
            try:
                self._fh.flush()
                self._flushed = time.monotonic()
            except (OSError, ValueError) as exc:
                self._file_failed(exc)


class Subscription:
    """Events in ``seq`` order for one observer; iterate, or call :meth:`get`.

    Iteration ends after the run's last event (``run.finished``) was delivered.
    """

    def __init__(self, bus: EventBus, *, after: int, maxsize: int, behind: bool,
                 skip: Iterable[str] = (), latency: float = DEFAULT_LATENCY) -> None:
        self._bus = bus
        self._latency = latency
        self._max = max(1, maxsize)
        self._skip = frozenset(skip)
        self._queue: deque[Event] = deque()  # appended by the bus, popped by the observer
        self._cond = threading.Condition(threading.Lock())
        self._waiting = False  # the observer waits on _cond: the bus must notify it
        self._next = after + 1  # the seq this observer wants next
        self._read_upto = 0  # the last seq read from the file
        self._behind = behind  # reading from the file, not the queue
        self._ended = False  # the bus is closed: nothing new will come
        self._file: IO[bytes] | None = None
        self._partial = b""
        self._pending: deque[Event] = deque()  # read from the file, not delivered yet
        # How many times this observer fell behind and read from the file (joining a run
        # that already emitted events counts as once).
        self.caught_up = 1 if behind else 0

    # ------------------------------------------------------------------ bus side (its lock)

    def _offer(self, event: Event) -> None:
        # No lock on the way in: deque appends and pops are atomic, and the observer says
        # when it waits (it sets _waiting before it looks at the queue a last time).
        if self._behind or event.TYPE in self._skip:
            return
        if len(self._queue) >= self._max:
            self._behind = True
            self.caught_up += 1
        else:
            self._queue.append(event)
        if self._waiting:
            with self._cond:
                self._cond.notify_all()

    def _offer_many(self, events: list[StepLog]) -> None:
        if self._behind or StepLog.TYPE in self._skip:
            return
        room = self._max - len(self._queue)
        if room >= len(events):
            self._queue.extend(events)
        else:
            self._queue.extend(events[:max(0, room)])
            self._behind = True
            self.caught_up += 1
        if self._waiting:
            with self._cond:
                self._cond.notify_all()

    def _end(self) -> None:
        self._ended = True
        with self._cond:
            self._cond.notify_all()

    def _unbounded(self) -> None:
        self._max = 1 << 62

    # ------------------------------------------------------------------ observer side

    @property
    def next_seq(self) -> int:
        return self._next

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event; None when ``timeout`` passed first or the stream ended (see
        :attr:`done`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        queue = self._queue
        while True:
            if self._pending:
                return self._take(self._pending.popleft())
            while queue:
                event = queue.popleft()
                if event.seq >= self._next:
                    return self._take(event)
            if self._behind:
                self._catch_up()
                continue
            ended = self._ended
            if queue:
                continue
            if ended:
                return None
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return None
            if self._latency > 0 and (wait is None or wait > self._latency):
                time.sleep(self._latency)
                if queue or self._behind or self._ended:
                    continue
            with self._cond:
                self._waiting = True
                # Looked at again after saying so: the bus notifies from now on.
                if not (queue or self._behind or self._ended):
                    self._cond.wait(wait)
                self._waiting = False

    @property
    def done(self) -> bool:
        """The stream ended and every event was delivered."""
        with self._cond:
            return (self._ended and not self._queue and not self._pending
                    and not self._behind)

    def _take(self, event: Event) -> Event:
        self._next = event.seq + 1
        return event

    def _read_file(self) -> bool:
        """Read the next chunk of the file into ``_pending``; False at its end."""
        if self._file is None:
            self._file = open(self._bus.path, "rb")  # noqa: SIM115
        data = self._file.read(_READ_CHUNK)  # a chunk: a reader far behind holds no more
        if not data:
            return False
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]  # an incomplete last line waits for the rest
        skip = self._skip
        decode = _DECODER.decode
        for line in data[:cut].decode("utf-8", "replace").splitlines():
            if not line:
                continue
            record = decode(line)
            seq = int(record.get("seq", 0))
            if seq <= self._read_upto:
                continue
            self._read_upto = seq
            if seq >= self._next and record.get("type") not in skip:
                self._pending.append(event_from_dict(record))
        return True

    def _catch_up(self) -> None:
        """Read what the queue dropped from the file; back to live events at its end."""
        while self._read_file():
            if self._pending:
                return
        bus = self._bus
        with bus._lock:  # no event is emitted while this looks at the end of the file
            bus._flush_locked()
            while self._read_file():
                if self._pending:
                    return
            with self._cond:
                self._queue.clear()
                if bus._seq >= self._next:
                    self._next = bus._seq + 1  # what is left was all skipped
                self._behind = False
                if self._ended and self._file is not None:
                    self._file.close()
                    self._file = None

    def close(self) -> None:
        self._bus.unsubscribe(self)
        if self._file is not None:
            self._file.close()
            self._file = None

    def __iter__(self) -> Iterator[Event]:
        try:
            while True:
                event = self.get()
                if event is None:
                    return
                yield event
        finally:
            self.close()


def read_events(run_dir: str, *, after: int = 0) -> Iterator[Event]:
    """The events of a run, as its ``events.jsonl`` holds them now; a line that is not an
    event (damaged, or of a type this flowray does not know) is left out."""
    try:
        fh = open(os.path.join(run_dir, EVENTS_FILE), "rb")  # noqa: SIM115
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            if not line.endswith(b"\n"):
                return  # being written
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or int(record.get("seq", 0)) <= after:
                    continue
                event = event_from_dict(record)
            except (ValueError, TypeError, KeyError, RecursionError):
                continue  # a damaged line (a disk that filled up mid-line): not an event
            yield event
