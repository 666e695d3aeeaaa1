"""The run record (``record.json``) folded from the event stream, and the observer that
writes it.

The record is what the events say, nothing more: :class:`RecordFolder` applies each event
to a plain dict of the shape :mod:`flowray.runtime.record` describes (that module, with
pydantic, is for readers; writing stays cheap). :class:`RecordWriter` is one observer of the
stream with its own thread: it rewrites the record at most every 0.5 s while the run goes on
(less often for large runs, so that writing takes at most 5% of the time) and once more at
``run.finished``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from flowray.runtime.events import (
    Event,
    JobFinished,
    JobQueued,
    JobRetrying,
    JobStarted,
    RunFinished,
    RunStarted,
    StepFinished,
    StepStarted,
    Subscription,
)
from flowray.store.fs import disk_full, os_error_text
from flowray.store.records import RECORD_FILE, RECORD_SCHEMA, RESERVE_FILE, write_json_atomic

# The record is rewritten at most this often while a run goes on (and always at the end).
_RECORD_INTERVAL = 0.5
# ... or less often for large runs: writing it may take at most this share of the time.
_RECORD_SHARE = 0.05


def _job_entry(event: JobQueued) -> dict[str, Any]:
    return {
        "key": event.job, "id": event.id, "name": event.name, "matrix": event.matrix,
        "needs": list(event.needs), "status": "queued", "started": None, "ended": None,
        "attempts": 0, "lost_attempts": 0, "node": "", "outputs": {}, "error": None,
        "steps": [], "artifacts": [], "reports": None, "warnings": [], "ranks": [],
        "previous_attempts": [],
    }


def _step_entry(event: StepStarted | StepFinished) -> dict[str, Any]:
    entry = {
        "index": event.step, "key": event.key, "id": event.id, "name": event.name,
        "status": "running", "outcome": None, "exit_code": None, "started": event.started,
        "ended": None, "outputs": {}, "log": event.log, "error": None, "kind": event.kind,
    }
    if isinstance(event, StepFinished):
        entry.update(status=event.status, outcome=event.outcome, exit_code=event.exit_code,
                     ended=event.ended, outputs=event.outputs, error=event.error,
                     cached=event.cached)
    return entry


class RecordFolder:
    """Folds events into the record dict, in ``seq`` order."""

    def __init__(self) -> None:
        self.record: dict[str, Any] = {"schema": RECORD_SCHEMA, "jobs": {}}
        self.finished = False

    def apply(self, event: Event) -> None:
        rec = self.record
        jobs: dict[str, dict[str, Any]] = rec["jobs"]
        if isinstance(event, StepStarted | StepFinished):
            job = jobs.get(event.job)
            if job is None or event.rank or event.attempt != job["attempts"]:
                return  # another rank's steps, or an attempt the record has closed
            steps: list[dict[str, Any]] = job["steps"]
            entry = _step_entry(event)
            if event.step < len(steps):
                steps[event.step] = entry
            else:
                while len(steps) < event.step:  # steps skipped without events
                    steps.append({"index": len(steps), "key": str(len(steps) + 1),
                                  "id": None, "name": "", "status": "queued",
                                  "outcome": None, "exit_code": None, "started": None,
                                  "ended": None, "outputs": {}, "log": None, "error": None,
                                  "kind": "run"})
                steps.append(entry)
        elif isinstance(event, JobStarted):
            job = jobs.get(event.job)
            if job is not None and not _terminal(job["status"]):
                job["status"] = "running"
                job["attempts"] = event.attempt
                job["node"] = event.node
                job["steps"] = []
                if job["started"] is None:
                    job["started"] = event.started
        elif isinstance(event, JobQueued):
            jobs[event.job] = _job_entry(event)
        elif isinstance(event, JobRetrying):
            job = jobs.get(event.job)
            if job is not None:
                job["previous_attempts"].append({
                    "attempt": event.attempt, "status": event.status, "error": event.error,
                    "node": event.node, "started": event.started, "ended": event.ended,
                    "steps": event.steps, "ranks": event.ranks,
                })
                job["status"] = "queued"
                job["attempts"] = event.attempt
                job["lost_attempts"] = event.lost_attempts
                job["steps"] = []
        elif isinstance(event, JobFinished):
            job = jobs.get(event.job)
            if job is not None:
                job.update(
                    status=event.status, started=job["started"] or event.started,
                    ended=event.ended, attempts=event.attempt,
                    lost_attempts=event.lost_attempts, node=event.node or job["node"],
                    outputs=event.outputs, error=event.error, steps=event.steps,
                    artifacts=event.artifacts, reports=event.reports,
                    warnings=event.warnings, ranks=event.ranks,
                )
        elif isinstance(event, RunStarted):
            jobs_before = rec.pop("jobs")
            rec.update({
                "id": event.run, "flow": {"name": event.flow, "file": event.file},
                "workspace": event.workspace, "pid": event.pid, "host": event.host,
                "status": "running", "exit_code": None, "started": event.started,
                "ended": None, "inputs": event.inputs, "actions": event.actions,
                "cancel_reason": None, "error": None, "trigger": event.trigger,
                "backend": event.backend, "run_number": event.run_number or None,
            })
            rec["jobs"] = jobs_before
        elif isinstance(event, RunFinished):
            rec.update(status=event.status, exit_code=event.exit_code, ended=event.ended,
                       cancel_reason=event.cancel_reason)
            self.finished = True


def _terminal(status: str) -> bool:
    return status not in ("queued", "running")


class RecordWriter:
    """The observer that keeps ``record.json`` up to date; :meth:`join` waits for the final
    record (written when ``run.finished`` arrives)."""

    def __init__(self, subscription: Subscription, run_dir: str, *,
                 file_error: Callable[[], str | None] = lambda: None) -> None:
        self.path = os.path.join(run_dir, RECORD_FILE)
        self.folder = RecordFolder()
        self.error: str | None = None
        self._file_error = file_error  # why events.jsonl could not be written, if it could not
        self._full = False  # a write failed on a full disk
        self._reserve = _make_reserve(run_dir)
        self._sub = subscription
        self._every = _RECORD_INTERVAL
        self._thread = threading.Thread(target=self._loop, name="flowray-record", daemon=True)
        self._thread.start()

    @property
    def record(self) -> dict[str, Any]:
        return self.folder.record

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        sub, folder = self._sub, self.folder
        saved = time.monotonic()
        dirty = False
        try:
            while True:
                wait = max(0.0, saved + self._every - time.monotonic()) if dirty else None
                event = sub.get(wait)
                if event is not None:
                    folder.apply(event)
                    dirty = True
                    if isinstance(event, RunStarted):
                        self._write()  # readers find the run at once
                        saved, dirty = time.monotonic(), False
                    if folder.finished:
                        break
                    if time.monotonic() - saved < self._every:
                        continue
                elif sub.done:
                    break
                if dirty:
                    began = time.monotonic()
                    self._write()
                    saved, dirty = time.monotonic(), False
                    self._every = max(_RECORD_INTERVAL, (saved - began) / _RECORD_SHARE)
        finally:
            sub.close()
        if "id" in folder.record:
            events_error = self._file_error()
            if self._full or (events_error is not None and "the disk is full" in events_error):
                # The run's own files could not be kept: it failed, whatever its jobs did.
                rec = folder.record
                rec["error"] = rec.get("error") or self.error or events_error
                if rec.get("status") == "success":
                    rec["status"], rec["exit_code"] = "failure", 1
            self._write()
            if self.error is None:
                self.error = events_error
        self._free_reserve()

    def _write(self) -> None:
        for _ in range(2):
            try:
                write_json_atomic(self.path, self.folder.record)
                return
            except OSError as exc:  # a full disk: the run goes on; the error is kept
                self.error = os_error_text(exc, f"the run record {self.path}")
                if not disk_full(exc):
                    return
                self._full = True
                if not self._free_reserve():
                    return
                # The room kept aside is free now: the record, at least, is written.

    def _free_reserve(self) -> bool:
        """Remove the room kept aside for the record; False if there was none."""
        path, self._reserve = self._reserve, None
        if path is None:
            return False
        with contextlib.suppress(OSError):
            os.unlink(path)
        return True


_RESERVE_BYTES = 256 * 1024


def _make_reserve(run_dir: str) -> str | None:
    path = os.path.join(run_dir, RESERVE_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError:
        return None
    try:
        try:
            os.posix_fallocate(fd, 0, _RESERVE_BYTES)
        except OSError as exc:
            if disk_full(exc):
                raise
            os.write(fd, bytes(_RESERVE_BYTES))  # a file system without fallocate
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        return None
    os.close(fd)
    return path
