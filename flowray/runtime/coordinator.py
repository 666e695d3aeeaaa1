"""The coordinator: turns a plan into job runs, in ``needs`` order, on a dispatcher.

It owns the run's statuses and record, evaluates job ``if`` conditions and ``needs`` outputs,
applies ``fail-fast``, ``max-parallel`` and ``retries``, and stops everything on cancel. Where
jobs run is the dispatcher's business (:mod:`flowray.backends.local` runs them in threads on
this machine).
"""

from __future__ import annotations

import functools
import heapq
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from flowray import expr
from flowray.cli.view import Console
from flowray.execute.job import (
    JobRequest,
    JobResult,
    StepAction,
    StepResult,
    step_display_name,
)
from flowray.execute.process import DEFAULT_GRACE_SECONDS, sweep_run_processes
from flowray.execute.secrets import Masker
from flowray.plan.plan import JobPlan, Plan
from flowray.status import Status
from flowray.store.records import new_run_id, runs_dir, write_json_atomic

# Seconds before retry n (1-based) of a failed job: base * 2**(n-1), at most _RETRY_MAX; the
# base is FLOWRAY_RETRY_BACKOFF (default 1 s).
_RETRY_MAX = 60.0
# A job whose node (or Ray worker) was lost under it runs again, at most this many times
# (FLOWRAY_LOST_RETRIES); these attempts do not count against its `retries`.
_LOST_RETRIES = 3
# The record is rewritten at most this often while a run goes on (and always at the end).
_RECORD_INTERVAL = 0.5
# ... or less often for large runs: writing the record may take at most this share of the time
# (a 10,000-job record takes ~0.1 s to build, mask and write).
_RECORD_SHARE = 0.05


class Dispatcher(Protocol):
    """Runs jobs somewhere; calls ``done`` (from any thread) when a job ends."""

    def try_start(self, plan: JobPlan, request_for: Callable[[list[str] | None], JobRequest],
                  done: Callable[[JobResult], None]) -> bool: ...

    def cancel(self) -> None: ...

    def cancel_job(self, key: str) -> None: ...


@dataclass
class RunOptions:
    workspace: str
    flow_path: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    env: dict[str, str] = field(default_factory=dict, repr=False)  # from --env-file
    event: dict[str, Any] = field(default_factory=dict)
    fail_fast: bool = False  # stop the whole run at the first failed job
    grace: float = DEFAULT_GRACE_SECONDS  # SIGTERM -> SIGKILL delay when stopping steps
    # Pinned (git) actions of each job's steps: job id -> step index -> action.
    step_actions: dict[str, dict[int, StepAction]] = field(default_factory=dict)
    # The commit each git action ran at ("owner/repo@tag" -> sha), kept in the record.
    action_commits: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None


@dataclass
class JobState:
    plan: JobPlan
    status: Status = Status.QUEUED
    started: float | None = None
    ended: float | None = None
    attempts: int = 0
    lost: int = 0  # attempts lost with their node
    steps: list[StepResult] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    not_before: float = 0.0  # monotonic time before which a retry must not start
    node: str = ""
    artifacts: list[str] = field(default_factory=list)
    reports: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    ranks: list[dict[str, Any]] = field(default_factory=list)  # a multi-node job's nodes

    def to_record(self) -> dict[str, Any]:
        p = self.plan
        return {
            "key": p.key,
            "id": p.job_id,
            "name": p.name,
            "matrix": p.matrix,
            "needs": list(p.needs),
            "status": self.status.value,
            "started": self.started,
            "ended": self.ended,
            "attempts": self.attempts,
            "lost_attempts": self.lost,
            "node": self.node,
            "outputs": self.outputs,
            "error": self.error,
            "steps": [s.to_record() for s in self.steps],
            "artifacts": self.artifacts,
            "reports": self.reports,
            "warnings": self.warnings,
            "ranks": self.ranks,
            "previous_attempts": self.history,
        }


@dataclass
class RunResult:
    run_id: str
    status: Status
    exit_code: int
    record: dict[str, Any]
    run_dir: str


def _lost_retries() -> int:
    text = os.environ.get("FLOWRAY_LOST_RETRIES", "")
    return int(text) if text.isdigit() else _LOST_RETRIES


def _retry_backoff() -> float:
    text = os.environ.get("FLOWRAY_RETRY_BACKOFF", "1")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    return value if value >= 0 else 1.0


def runner_context(gpus: int) -> dict[str, Any]:
    # os.uname() instead of platform/socket/tempfile: those imports cost start-up time.
    uname = os.uname()
    return {
        "os": uname.sysname,
        "arch": uname.machine,
        "name": uname.nodename,
        "temp": os.environ.get("TMPDIR") or "/tmp",
        "cpus": os.cpu_count() or 1,
        "gpus": gpus,
    }


def _condition_node(source: str) -> expr.Node:
    parts = expr.find_templates(source)
    if len(parts) == 1 and source.strip() == source[parts[0].start : parts[0].end].strip():
        return expr.parse(parts[0].source)
    return expr.parse(source)


class Coordinator:
    def __init__(
        self,
        plan: Plan,
        options: RunOptions,
        *,
        dispatcher_factory: Callable[[Coordinator], Dispatcher],
        console: Console,
        gpu_count: int = 0,
    ) -> None:
        self.plan = plan
        self.flow = plan.flow
        self.opts = options
        self.console = console
        self.run_id = options.run_id or new_run_id()
        self.run_dir = os.path.join(runs_dir(options.workspace), self.run_id)
        self.masker = Masker(options.secrets.values())
        self.states = {j.key: JobState(j) for j in plan.jobs}
        # Incremental scheduling state, so each pass costs what changed, not the whole flow.
        self._open = len(self.states)
        self._waiting: dict[str, int] = {}
        self._dependents: dict[str, list[str]] = {}
        self._eligible: deque[str] = deque()
        self._ready: dict[tuple[str, float, int, int], deque[str]] = {}
        self._delayed: list[tuple[float, str]] = []
        self._running_per_group: dict[str, int] = {}
        for job in plan.jobs:
            cells = [c.key for n in job.needs for c in plan.groups.get(n, [])]
            self._waiting[job.key] = len(cells)
            for cell in cells:
                self._dependents.setdefault(cell, []).append(job.key)
            if not cells:
                self._eligible.append(job.key)
        self._cond = threading.Condition()
        self._finished: list[tuple[str, JobResult]] = []
        self._cancel_requested = False
        self._interrupted = False
        self._cancel_reason = ""
        self._record_saved = 0.0
        self._record_every = _RECORD_INTERVAL
        self.started = time.time()
        self.gpu_count = gpu_count
        self.base_env = {**os.environ, **options.env}
        self._static = {
            "variables": self.flow["variables"],
            "inputs": options.inputs,
            "event": options.event,
            "secrets": options.secrets,
            "run": {"id": self.run_id, "workspace": options.workspace},
            "flow": {"name": self.flow["name"], "file": options.flow_path},
            "runner": runner_context(gpu_count),
        }
        self._static["machine"] = self._static["runner"]
        self.dispatcher = dispatcher_factory(self)

    # ------------------------------------------------------------------------- public

    @property
    def static_contexts(self) -> dict[str, Any]:
        """The contexts every job's request shares (the same objects in each)."""
        return self._static

    def cancel(self, reason: str = "cancelled", *, interrupt: bool = True) -> None:
        """Ask the run to stop (safe to call from a signal handler).

        ``interrupt``: the user stopped the run (it ends ``cancelled``); otherwise flowray
        stopped it because of a failure (``--fail-fast``) and it ends ``failure``.
        """
        with self._cond:
            if self._cancel_requested:
                return
            self._cancel_requested = True
            self._interrupted = interrupt
            self._cancel_reason = reason
            self._cond.notify_all()

    def run(self) -> RunResult:
        os.makedirs(self.run_dir, exist_ok=True)
        self._save_record(force=True)
        try:
            self._loop()
        finally:
            # Nothing a step started outlives the run, even processes that left its session.
            sweep_run_processes(self.run_id, grace=self.opts.grace)
            if "flowray.execute.container" in sys.modules:  # container steps ran here
                from flowray.execute.container import remove_run_containers

                remove_run_containers(self.run_id)
        status = self._run_status()
        exit_code = {Status.SUCCESS: 0, Status.CANCELLED: 130}.get(status, 1)
        record = self._save_record(force=True, status=status, exit_code=exit_code)
        return RunResult(self.run_id, status, exit_code, record, self.run_dir)

    # ------------------------------------------------------------------------- loop

    def _loop(self) -> None:
        cancelling = False
        while True:
            with self._cond:
                finished, self._finished = self._finished, []
                cancel_now = self._cancel_requested and not cancelling
            for key, result in finished:
                self._job_done(key, result)
            if cancel_now:
                cancelling = True
                self._cancel_all()
            if not cancelling:
                self._schedule()
            if self._open == 0:
                return
            with self._cond:
                if not self._finished and (self._cancel_requested == cancelling):
                    self._cond.wait(self._wait_time())
            self._save_record()

    def _wait_time(self) -> float:
        if self._delayed:
            return max(0.0, self._delayed[0][0] - time.monotonic())
        return _RECORD_INTERVAL * 4

    def _cancel_all(self) -> None:
        for state in self.states.values():
            if state.status is Status.QUEUED:
                self._set_terminal(state, Status.CANCELLED, "the run was cancelled")
        # Stopping takes up to the grace period: do it aside so finished jobs are still seen.
        threading.Thread(target=self.dispatcher.cancel, name="flowray-cancel",
                         daemon=True).start()

    @staticmethod
    def _shape(plan: JobPlan) -> tuple[str, float, int, int]:
        """Jobs of one shape wait in one queue: if its head cannot start, none of them can."""
        strategy = plan.data["strategy"]
        group = plan.job_id if strategy and strategy["max_parallel"] is not None else ""
        res = plan.data["resources"]
        return group, res["cpus"], res["gpus"] or 0, res["nodes"]

    def _schedule(self) -> None:
        # Jobs whose needs just ended: evaluate their `if` once, then queue them to start.
        while self._eligible:
            state = self.states[self._eligible.popleft()]
            if state.status is Status.QUEUED and self._should_run(state):
                self._ready.setdefault(self._shape(state.plan), deque()).append(state.plan.key)
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, key = heapq.heappop(self._delayed)
            self._ready.setdefault(self._shape(self.states[key].plan), deque()).append(key)
        for queue in self._ready.values():
            while queue:
                state = self.states[queue[0]]
                if state.status is not Status.QUEUED:
                    queue.popleft()  # cancelled while it waited
                    continue
                plan = state.plan
                strategy = plan.data["strategy"]
                limit = strategy["max_parallel"] if strategy else None
                if limit is not None and self._running_per_group.get(plan.job_id, 0) >= limit:
                    break
                state.attempts += 1  # the request the dispatcher builds names this attempt
                if not self.dispatcher.try_start(
                    plan, functools.partial(self._request, state),
                    functools.partial(self._post, plan.key),
                ):
                    state.attempts -= 1
                    break
                queue.popleft()
                state.status = Status.RUNNING
                if state.started is None:
                    state.started = time.time()
                self._running_per_group[plan.job_id] = (
                    self._running_per_group.get(plan.job_id, 0) + 1
                )
                self._save_record()

    def _post(self, key: str, result: JobResult) -> None:
        with self._cond:
            self._finished.append((key, result))
            self._cond.notify_all()

    # ------------------------------------------------------------------------- jobs

    def _needs_context(self, plan: JobPlan) -> dict[str, Any]:
        ctx: dict[str, Any] = {}
        for need in plan.needs:
            cells = [self.states[c.key] for c in self.plan.groups.get(need, [])]
            outputs: dict[str, Any] = {}
            for cell in cells:
                outputs.update(cell.outputs)
            result = "success"
            for cell in cells:
                if cell.status is not Status.SUCCESS:
                    result = cell.status.value
                    break
            ctx[need] = {"outputs": outputs, "result": result}
        return ctx

    def _contexts(self, state: JobState) -> dict[str, Any]:
        plan = state.plan
        ctx = dict(self._static)
        ctx["matrix"] = plan.matrix or {}
        ctx["needs"] = self._needs_context(plan)
        ctx["job"] = {"id": plan.job_id, "key": plan.key, "name": plan.name,
                      "status": "running", "attempt": state.attempts}
        return ctx

    def _ancestors_failed(self, plan: JobPlan) -> bool:
        seen: set[str] = set()
        todo = list(plan.needs)
        while todo:
            job_id = todo.pop()
            if job_id in seen:
                continue
            seen.add(job_id)
            for cell in self.plan.groups.get(job_id, []):
                st = self.states[cell.key]
                if st.status is Status.FAILURE and not cell.data["continue_on_error"]:
                    return True
                todo.extend(cell.needs)
        return False

    def _should_run(self, state: JobState) -> bool:
        """Evaluate the job's ``if``; marks it skipped (or failed, on a bad expression)."""
        needs = [self.states[c.key] for n in state.plan.needs
                 for c in self.plan.groups.get(n, [])]
        source = state.plan.data["if_"]
        # A failed job with continue-on-error does not hold back the jobs that need it.
        needs_ok = all(
            n.status is Status.SUCCESS
            or (n.status is Status.FAILURE and n.plan.data["continue_on_error"])
            for n in needs
        )
        try:
            default = source is None or not expr.uses_status_function(_condition_node(source))
            if default and not needs_ok:
                self._set_terminal(state, Status.SKIPPED, None)
                return False
            ok = expr.evaluate_condition(
                source, self._contexts(state),
                failed=self._ancestors_failed(state.plan), cancelled=self._cancel_requested,
            )
        except expr.ExprError as exc:
            self._set_terminal(state, Status.FAILURE, f"if: {exc}")
            return False
        if not ok:
            self._set_terminal(state, Status.SKIPPED, None)
        return ok

    def _request(self, state: JobState, gpus: list[str] | None) -> JobRequest:
        plan = state.plan
        timeout = plan.data["timeout"]
        return JobRequest(
            run_id=self.run_id,
            key=plan.key,
            job_id=plan.job_id,
            name=plan.name,
            job=plan.data,
            contexts=self._contexts(state),
            env=self.base_env,
            flow_env=self.flow["env"],
            workspace=self.opts.workspace,
            run_dir=self.run_dir,
            secrets=self.opts.secrets,
            gpus=gpus,
            timeout=None if timeout is None else timeout * 60,
            attempt=state.attempts,
            step_actions=self.opts.step_actions.get(plan.job_id, {}),
        )

    def _job_done(self, key: str, result: JobResult) -> None:
        state = self.states[key]
        plan = state.plan
        if state.status.is_terminal():
            return
        retries = plan.data["retries"]
        if result.lost and not self._cancel_requested and state.lost < _lost_retries():
            state.lost += 1
            self._again(state, result, delay=0.0, lost=True)
            self.console.info(
                f"↻ job {plan.key}: {result.error}; running it again "
                f"(attempt {state.attempts + 1})"
            )
            return
        if (result.status is Status.FAILURE and state.attempts - state.lost <= retries
                and not self._cancel_requested):
            base = _retry_backoff()
            tries = state.attempts - state.lost
            delay = min(_RETRY_MAX, base * 2 ** (tries - 1))
            self._again(state, result, delay=delay, lost=False)
            self.console.info(
                f"↻ job {plan.key} failed (attempt {state.attempts}, try {tries} of "
                f"{retries + 1}); retrying in {delay:g}s"
                if state.lost else
                f"↻ job {plan.key} failed (attempt {state.attempts} of {retries + 1}); "
                f"retrying in {delay:g}s"
            )
            return
        state.steps = result.steps
        state.outputs = result.outputs
        state.node = result.node
        state.artifacts = result.artifacts
        state.reports = result.reports
        state.warnings = result.warnings
        state.ranks = result.ranks
        for w in result.warnings:
            self.console.info(f"! job {plan.key}: {w}")
        state.started = state.started or result.started
        self._set_terminal(state, result.status, result.error, ended=result.ended)
        if result.status is Status.FAILURE and not plan.data["continue_on_error"]:
            strategy = plan.data["strategy"]
            if strategy and strategy["fail_fast"] and len(self.plan.groups[plan.job_id]) > 1:
                self._fail_fast_group(plan)
            if self.opts.fail_fast:
                self.cancel(f"job {plan.key} failed and --fail-fast is set", interrupt=False)

    def _again(self, state: JobState, result: JobResult, *, delay: float, lost: bool) -> None:
        """Queue the job for another attempt; the one that ended goes to its history."""
        state.history.append({
            "attempt": state.attempts,
            "status": "lost" if lost else result.status.value,
            "error": result.error,
            "node": result.node,
            "started": result.started,
            "ended": result.ended,
            "steps": [s.to_record() for s in result.steps],
            "ranks": result.ranks,
        })
        state.status = Status.QUEUED
        state.not_before = time.monotonic() + delay
        self._running_per_group[state.plan.job_id] -= 1
        heapq.heappush(self._delayed, (state.not_before, state.plan.key))

    def _fail_fast_group(self, plan: JobPlan) -> None:
        for cell in self.plan.groups[plan.job_id]:
            st = self.states[cell.key]
            if st.status is Status.QUEUED:
                self._set_terminal(st, Status.CANCELLED, f"fail-fast: {plan.key} failed")
            elif st.status is Status.RUNNING:
                self.dispatcher.cancel_job(cell.key)

    def _set_terminal(self, state: JobState, status: Status, error: str | None,
                      ended: float | None = None) -> None:
        if state.status.is_terminal():
            return
        if state.status is Status.RUNNING:
            self._running_per_group[state.plan.job_id] -= 1
        self._open -= 1
        for dependent in self._dependents.get(state.plan.key, ()):
            self._waiting[dependent] -= 1
            if self._waiting[dependent] == 0:
                self._eligible.append(dependent)
        state.status = status
        state.error = self.masker.text(error) if error else None
        state.ended = ended or time.time()
        if status is Status.SKIPPED or (status is Status.CANCELLED and not state.steps):
            state.steps = [
                StepResult(index=i, key=s["id"] or str(i + 1), id=s["id"],
                           name=step_display_name(s, i), status=status)
                for i, s in enumerate(state.plan.data["steps"])
            ]
        seconds = (state.ended - state.started) if state.started else 0.0
        plan = state.plan
        label = plan.key if plan.name == plan.key else f"{plan.key} ({plan.name})"
        if state.reports:
            from flowray.execute.artifacts import ReportCounts

            counts = ReportCounts(**{k: v for k, v in state.reports.items() if k != "passed"})
            label += f" [tests: {counts.summary()}]"
        if status is not Status.SKIPPED or error:
            self.console.job_finished(plan.key, label, status, seconds, state.error)
        self._save_record()

    # ------------------------------------------------------------------------- record

    def _run_status(self) -> Status:
        statuses = list(self.states.values())
        if self._interrupted and any(s.status is Status.CANCELLED for s in statuses):
            return Status.CANCELLED
        for s in statuses:
            if s.status is Status.FAILURE and not s.plan.data["continue_on_error"]:
                return Status.FAILURE
            if s.status is Status.CANCELLED:
                return Status.FAILURE
        return Status.SUCCESS

    def record(self, *, status: Status | None = None, exit_code: int | None = None
               ) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "id": self.run_id,
            "flow": {"name": self.flow["name"], "file": self.opts.flow_path},
            "workspace": self.opts.workspace,
            "pid": os.getpid(),  # `flowray cancel RUN` signals it
            "host": socket.gethostname(),
            "status": (status or Status.RUNNING).value,
            "exit_code": exit_code,
            "started": self.started,
            "ended": time.time() if status else None,
            "inputs": self.opts.inputs,
            "actions": self.opts.action_commits,
            "cancel_reason": self._cancel_reason or None,
            "jobs": {k: s.to_record() for k, s in self.states.items()},
        }
        return dict(self.masker.data(rec))

    def _save_record(self, *, force: bool = False, status: Status | None = None,
                     exit_code: int | None = None) -> dict[str, Any]:
        now = time.monotonic()
        if not force and now - self._record_saved < self._record_every:
            return {}
        rec = self.record(status=status, exit_code=exit_code)
        write_json_atomic(os.path.join(self.run_dir, "record.json"), rec)
        self._record_saved = time.monotonic()
        took = self._record_saved - now
        self._record_every = max(_RECORD_INTERVAL, took / _RECORD_SHARE)
        return rec
