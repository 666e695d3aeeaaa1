"""The terminal view of a run: an observer of its events.

Each step line is prefixed by ``job/step`` (``job@host/step`` when jobs run on several hosts,
``job[rank]/step`` for the ranks of a multi-node job), colored on a terminal; jobs' ends,
retries and the run's summary follow. ``--events`` prints the events themselves instead.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from flowray.cli.display import one_line, output_line
from flowray.runtime.events import (
    Event,
    JobFinished,
    JobQueued,
    JobRetrying,
    JobStarted,
    RunFinished,
    RunNotice,
    RunStarted,
    StepFinished,
    StepLog,
    StepStarted,
)

_COLORS = ("36", "35", "34", "33", "32", "96", "95", "94", "93", "92")
_STATUS_MARK = {
    "success": ("✓", "32"),
    "failure": ("✗", "31"),
    "cancelled": ("⊘", "33"),
    "skipped": ("-", "90"),
}


class Console:
    """Thread-safe printer of a run's events; ``quiet`` drops step output but keeps failures
    and the summary."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False,
                 color: bool | None = None, heartbeat: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 logs_hint: str | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.quiet = quiet
        isatty = getattr(self.stream, "isatty", None)
        self.color = bool(isatty and isatty()) if color is None else color
        # A step silent for `heartbeat` seconds gets a "still running" line (see tick).
        self.heartbeat = heartbeat if heartbeat and not quiet else None
        self._clock = clock
        self._running: dict[tuple[str, int | None, int], list[float]] = {}  # [start, last]
        self._next_tick = 0.0
        self.logs_hint = logs_hint  # the command that shows the logs (default: flowray logs ID)
        # Re-entrant: a signal handler (Ctrl-C) may print while the main thread is writing.
        self._lock = threading.RLock()
        self._job_color: dict[str, str] = {}
        self._names: dict[str, str] = {}
        self._retries: dict[str, int] = {}
        self._hosts: dict[str, str] = {}
        self._several_hosts = False
        self._started = 0.0
        self._counts: dict[str, int] = {}
        self._keys: dict[tuple[str, int | None, int], str] = {}  # each step's key
        self._labels: dict[str, str] = {}  # "job/step" as printed (control characters escaped)

    # ------------------------------------------------------------------------- printing

    def _paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def _prefix(self, job: str, rank: int | None, step_key: str) -> str:
        shown = job
        if rank is not None:
            shown = f"{job}[{rank}]"
        elif self._several_hosts and job in self._hosts:
            shown = f"{job}@{self._hosts[job]}"
        raw = f"{shown}/{step_key}"
        label = self._labels.get(raw)
        if label is None:  # once per step, not once per line of its output
            label = self._labels[raw] = one_line(raw)
        if not self.color:
            return label
        code = self._job_color.get(job)
        if code is None:
            code = self._job_color[job] = _COLORS[len(self._job_color) % len(_COLORS)]
        return self._paint(label, code)

    def write(self, text: str) -> None:
        """Write (not flushed: :meth:`flush` when no event waits, so a chatty step costs
        no system call a line)."""
        with self._lock:
            self.stream.write(text)

    def flush(self) -> None:
        with self._lock:
            self.stream.flush()

    def info(self, text: str) -> None:
        self.write(text + "\n")

    def error(self, text: str) -> None:
        """A message about the run itself (not a step's output): always to stderr."""
        with self._lock:
            sys.stderr.write(self._paint(text, "31") + "\n")
            sys.stderr.flush()

    # ------------------------------------------------------------------------- events

    def tick(self) -> None:
        """Say that a step is alive when it printed nothing for ``heartbeat`` seconds
        (``job/step … still running after 1m30s``), then again every ``heartbeat`` seconds
        while it stays silent. Cheap enough to call after every event."""
        if self.heartbeat is None or not self._running:
            return
        now = self._clock()
        if now < self._next_tick:
            return
        self._next_tick = now + min(1.0, self.heartbeat)
        for (job, rank, step), times in list(self._running.items()):
            if now - times[1] >= self.heartbeat:
                times[1] = now
                key = self._keys.get((job, rank, step), str(step + 1))
                said = f"… still running after {_elapsed(now - times[0])}"
                self.write(f"{self._prefix(job, rank, key)} {self._paint(said, '90')}\n")

    def show(self, event: Event) -> None:
        """Print what ``event`` means to a person (many events print nothing)."""
        if self.heartbeat is not None:
            self._track(event)
        if isinstance(event, StepLog):
            if not self.quiet:
                self.write(f"{self._prefix(event.job, event.rank, self._step_key(event))}"
                           f" | {output_line(event.line, keep_color=self.color)}\n")
        elif isinstance(event, StepStarted):
            self._keys[(event.job, event.rank, event.step)] = event.key
            if not self.quiet:
                self.write(f"{self._prefix(event.job, event.rank, event.key)} "
                           f"{self._paint('▶ ' + one_line(event.name), '1')}\n")
        elif isinstance(event, StepFinished):
            self._step_finished(event)
        elif isinstance(event, JobQueued):
            self._names[event.job] = event.name
            self._retries[event.job] = 0
        elif isinstance(event, JobStarted):
            if event.host:
                self._hosts[event.job] = event.host
        elif isinstance(event, JobRetrying):
            self._retrying(event)
        elif isinstance(event, JobFinished):
            self._job_finished(event)
        elif isinstance(event, RunNotice):
            where = f"job {event.job}: " if event.job else ""
            self.info(one_line(f"! {where}{event.message}"))
        elif isinstance(event, RunStarted):
            self._several_hosts = event.hosts > 1
            self._started = event.started
        elif isinstance(event, RunFinished):
            took = event.ended - self._started if self._started else 0.0
            parts = ", ".join(f"{n} {s}" for s, n in sorted(self._counts.items()))
            self.info(f"run {event.run} {event.status} in {took:.2f}s ({parts}); "
                      f"logs: {self.logs_hint or 'flowray logs ' + event.run}")

    def _track(self, event: Event) -> None:
        """Keep when each running step started and last printed (for :meth:`tick`)."""
        if isinstance(event, StepLog):
            times = self._running.get((event.job, event.rank, event.step))
            if times is not None:
                times[1] = self._clock()
        elif isinstance(event, StepStarted):
            now = self._clock()
            self._running[(event.job, event.rank, event.step)] = [now, now]
        elif isinstance(event, StepFinished):
            self._running.pop((event.job, event.rank, event.step), None)
        elif isinstance(event, JobFinished | JobRetrying):
            for k in [k for k in self._running if k[0] == event.job]:
                del self._running[k]

    def _step_key(self, event: StepLog) -> str:
        return self._keys.get((event.job, event.rank, event.step), str(event.step + 1))

    def _step_finished(self, event: StepFinished) -> None:
        self._keys[(event.job, event.rank, event.step)] = event.key
        if event.status == "success" and event.outcome != "failure":
            return
        if self.quiet and event.status != "failure":
            return
        mark, code = _STATUS_MARK.get(event.status, ("?", "0"))
        what = event.status
        if event.outcome == "failure" and event.status == "success":
            what = "failed (continue-on-error)"
        detail = f": {one_line(event.error)}" if event.error else ""
        self.write(f"{self._prefix(event.job, event.rank, event.key)} "
                   f"{self._paint(f'{mark} {what}{detail}', code)}\n")

    def _retrying(self, event: JobRetrying) -> None:
        key = one_line(event.job)
        if event.status == "lost":
            self.info(one_line(f"↻ job {key}: {event.error}; running it again "
                               f"(attempt {event.attempt + 1})"))
            return
        retries = event.retries
        lost = event.lost_attempts
        tries = event.attempt - lost
        self.info(
            f"↻ job {key} failed (attempt {event.attempt}, try {tries} of {retries + 1}); "
            f"retrying in {event.delay:g}s"
            if lost else
            f"↻ job {key} failed (attempt {event.attempt} of {retries + 1}); "
            f"retrying in {event.delay:g}s"
        )

    def _job_finished(self, event: JobFinished) -> None:
        self._counts[event.status] = self._counts.get(event.status, 0) + 1
        for w in event.warnings:
            self.info(one_line(f"! job {event.job}: {w}"))
        if event.status == "skipped" and not event.error:
            return
        if self.quiet and event.status != "failure":
            return
        name = event.name or event.job
        label = one_line(event.job if name == event.job else f"{event.job} ({name})")
        if event.reports:
            from flowray.execute.artifacts import ReportCounts

            counts = ReportCounts.from_record(event.reports)
            label += f" [tests: {counts.summary()}]"
        seconds = (event.ended - event.started) if event.started and event.ended else 0.0
        mark, code = _STATUS_MARK.get(event.status, ("?", "0"))
        detail = f": {one_line(event.error)}" if event.error else ""
        self.write(self._paint(f"{mark} job {label} {event.status} in {seconds:.2f}s{detail}",
                               code) + "\n")


def _elapsed(seconds: float) -> str:
    """``45s``, ``2m05s``, ``1h02m``."""
    n = int(seconds)
    if n < 60:
        return f"{n}s"
    if n < 3600:
        return f"{n // 60}m{n % 60:02d}s"
    return f"{n // 3600}h{n % 3600 // 60:02d}m"
