"""The coordinator: turns a plan into job runs, in ``needs`` order, on a dispatcher.

It owns the run's statuses, evaluates job ``if`` conditions and ``needs`` outputs, applies
``fail-fast``, ``max-parallel`` and ``retries``, and stops everything on cancel. It reports
everything that happens as typed events on the run's :class:`~flowray.runtime.events.EventBus`
(the record, the terminal and every other observer read those); it prints nothing. Where jobs
run is the dispatcher's business (:mod:`flowray.backends.local` runs them in threads on this
machine, :mod:`flowray.backends.ray` as Ray tasks); dispatchers report back through the
coordinator's :class:`~flowray.backends.RunEvents` methods.
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
from typing import Any

from flowray import expr
from flowray.backends import Dispatcher
from flowray.execute.contexts import machine_contexts
from flowray.execute.job import (
    JobRequest,
    JobResult,
    StepAction,
    StepResult,
    step_display_name,
)
from flowray.execute.process import DEFAULT_GRACE_SECONDS, sweep_run_processes
from flowray.execute.secrets import MIN_LENGTH, Masker
from flowray.plan.plan import JobPlan, Plan
from flowray.runtime.events import (
    EventBus,
    JobFinished,
    JobQueued,
    JobRetrying,
    JobStarted,
    RunFinished,
    RunNotice,
    RunStarted,
    StepFinished,
    StepStarted,
)
from flowray.status import Status
from flowray.store.records import new_run_id, next_run_number, runs_dir

# Seconds before retry n (1-based) of a failed job: base * 2**(n-1), at most _RETRY_MAX; the
# base is FLOWRAY_RETRY_BACKOFF (default 1 s).
_RETRY_MAX = 60.0
# A job whose node (or Ray worker) was lost under it runs again, at most this many times
# (FLOWRAY_LOST_RETRIES); these attempts do not count against its `retries`.
_LOST_RETRIES = 3
# With nothing else to do, the loop looks at the clock this often (delayed retries).
_IDLE_WAIT = 2.0


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
    trigger: str = "manual"  # what started the run (run.started's trigger)
    backend: str = "local"  # local, ray, or the Ray address
    hosts: int = 1  # how many hosts the backend's jobs may land on
    # The action result cache folder of this machine (Ray nodes use their own); None: off.
    result_cache: str | None = None
    reuse_results: bool = True  # False (--no-cache): cached steps run (and refresh the cache)
    # variables.NAME given from outside the flow (the service's); the flow's own win.
    variables: dict[str, str] = field(default_factory=dict, repr=False)
    # Jobs a rerun does not run again: job key -> {"run": the run it comes from, "outputs"}.
    # Each ends `success` with those outputs, without running, when its needs have ended.
    reuse: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The environment steps start from (before env:, secrets and flowray's own variables);
    # None: this process's. The service gives a filtered one (not its credentials).
    base_env: dict[str, str] | None = field(default=None, repr=False)


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


@dataclass
class RunResult:
    run_id: str
    status: Status
    exit_code: int
    run_dir: str


def _lost_retries() -> int:
    text = os.environ.get("FLOWRAY_LOST_RETRIES", "")
    return int(text) if text.isascii() and text.isdigit() and len(text) < 6 else _LOST_RETRIES


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


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""


# Keys whose names in flowray's validated data differ from the file's.
_WRITTEN = {"if_": "if", "continue_on_error": "continue-on-error",
            "working_directory": "working-directory", "fail_fast": "fail-fast",
            "max_parallel": "max-parallel", "schema_": "$schema"}


def flow_as_written(value: Any) -> Any:
    """The validated flow with the file's key names and without the keys left unset (null,
    empty): DataTorch's ``run.config``."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if item is None or item == {} or item == []:
                continue
            out[_WRITTEN.get(key, key)] = flow_as_written(item)
        return out
    if isinstance(value, list):
        return [flow_as_written(v) for v in value]
    return value


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
        bus: EventBus | None = None,
        gpu_count: int = 0,
    ) -> None:
        self.plan = plan
        self.flow = plan.flow
        self.opts = options
        self.run_id = options.run_id or new_run_id()
        self.run_dir = os.path.join(runs_dir(options.workspace), self.run_id)
        self.masker = Masker(options.secrets.values())
        # Secrets too short to mask (masking `o` would mask every `o`): the run says so.
        self._unmasked = sorted(name for name, value in options.secrets.items()
                                if 0 < len(value.strip()) < MIN_LENGTH)
        os.makedirs(self.run_dir, exist_ok=True)
        self.bus = bus if bus is not None else EventBus(self.run_id, self.run_dir,
                                                        mask=self.masker.event_fields)
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
        # Artifacts and reports collected so far: (kind, path) -> (job key, start, end), to tell
        # a job that another one running at the same time collected the same file.
        self._collected: dict[tuple[str, str], tuple[str, float, float]] = {}
        self._cancel_requested = False
        self._interrupted = False
        self._cancel_reason = ""
        self.started = time.time()
        self.gpu_count = gpu_count
        self.base_env = {**(os.environ if options.base_env is None else options.base_env),
                         **options.env}
        name = self.flow["name"]
        self.run_number = next_run_number(options.workspace, name)
        number = self.run_number.number
        self._static = {
            "variables": {**options.variables, **self.flow["variables"]},
            "inputs": options.inputs,
            "input": options.inputs,  # DataTorch's name for a flow's trigger inputs
            "event": options.event,
            "secrets": options.secrets,
            "run": {"id": self.run_id, "workspace": options.workspace,
                    "name": f"{name} #{number}", "config": flow_as_written(self.flow),
                    "runNumber": number, "trigger": options.trigger},
            "flow": {"name": name, "file": options.flow_path},
            # DataTorch's name for the flow; flows are known by their name here.
            "pipeline": {"id": name, "name": name, "projectId": self.flow.get("project"),
                         "creatorId": _user(), "lastRunNumber": number},
            # This machine's facts and folders; a job's own are those of where it runs.
            **machine_contexts(os.environ, runner_context(gpu_count)),
        }
        self.dispatcher = dispatcher_factory(self)

    # ------------------------------------------------------------------------- public

    @property
    def static_contexts(self) -> dict[str, Any]:
        """The contexts every job's request shares (the same objects in each)."""
        return self._static

    def cancel(self, reason: str = "cancelled", *, interrupt: bool = True,
               grace: float | None = None) -> None:
        """Ask the run to stop (safe to call from a signal handler).

        ``interrupt``: the user stopped the run (it ends ``cancelled``); otherwise flowray
        stopped it because of a failure (``--fail-fast``) and it ends ``failure``. ``grace``:
        seconds between SIGTERM and SIGKILL, if not the run's own.
        """
        if grace is not None and not self._cancel_requested:
            self.opts.grace = grace
            if hasattr(self.dispatcher, "grace"):
                self.dispatcher.grace = grace
        with self._cond:
            if self._cancel_requested:
                return
            self._cancel_requested = True
            self._interrupted = interrupt
            self._cancel_reason = reason
            self._cond.notify_all()

    def start_events(self) -> None:
        """Emit ``run.started`` and each job's ``job.queued`` (before :meth:`run`, so that a
        caller sees them in order whatever thread runs the loop)."""
        opts = self.opts
        self.bus.emit(
            RunStarted, flow=str(self.flow["name"]), file=opts.flow_path, trigger=opts.trigger,
            inputs=opts.inputs, workspace=opts.workspace, backend=opts.backend,
            hosts=opts.hosts, pid=os.getpid(), host=socket.gethostname(),
            actions=opts.action_commits, started=self.started,
            run_number=self.run_number.number,
        )
        if self.run_number.notice is not None:
            self.bus.emit(RunNotice, message=self.run_number.notice)
        for name in self._unmasked:
            self.bus.emit(RunNotice, message=f"secret '{name}' is shorter than {MIN_LENGTH} "
                          "characters, so it is not masked in logs and outputs")
        for key, state in self.states.items():
            p = state.plan
            self.bus.emit(JobQueued, job=key, id=p.job_id, name=p.name, matrix=p.matrix,
                          needs=list(p.needs), resources=dict(p.data["resources"]))

    def run(self) -> RunResult:
        """Run every job to its end (the caller's thread); then ``run.finished``."""
        if self.bus.last_seq == 0:
            self.start_events()
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
        self.bus.emit(RunFinished, status=status.value, exit_code=exit_code,
                      cancel_reason=self._cancel_reason or None, ended=time.time())
        return RunResult(self.run_id, status, exit_code, self.run_dir)

    def fail_run(self, error: str) -> None:
        """The loop itself failed (a bug): end every job and the run, so that observers see
        an end."""
        for state in self.states.values():
            if not state.status.is_terminal():
                state.status = Status.FAILURE
                self.bus.emit(JobFinished, job=state.plan.key, status="failure",
                              attempt=state.attempts, name=state.plan.name,
                              error=self.masker.text(error), started=state.started,
                              ended=time.time())
        self.bus.emit(RunFinished, status="failure", exit_code=1,
                      cancel_reason=self.masker.text(error), ended=time.time())

    # ------------------------------------------------------------------------- RunEvents
    # What dispatchers and job runners report, from any thread, as events.

    def _split(self, job_key: str) -> tuple[str, int | None]:
        """A rank of a multi-node job reports as ``key[rank]``."""
        if job_key.endswith("]") and job_key not in self.states:
            key, _, rank = job_key[:-1].rpartition("[")
            if key in self.states and rank.isdigit():
                return key, int(rank)
        return job_key, None

    def _attempt(self, key: str) -> int:
        state = self.states.get(key)
        return state.attempts if state is not None else 1

    def job_started(self, job_key: str, *, node: str, host: str = "",
                    gpus: list[str] | None = None) -> None:
        key, rank = self._split(job_key)
        if rank:
            return  # a multi-node job starts with its rank 0
        self.bus.emit(JobStarted, job=key, node=node, host=host, attempt=self._attempt(key),
                      gpus=gpus, started=time.time())

    def step_started(self, job_key: str, step: StepResult) -> None:
        key, rank = self._split(job_key)
        self.bus.emit(StepStarted, job=key, step=step.index, name=step.name, kind=step.kind,
                      key=step.key, id=step.id, attempt=self._attempt(key), rank=rank,
                      log=step.log, started=step.started)

    def step_lines(self, job_key: str, step: StepResult, lines: list[str]) -> None:
        key, rank = self._split(job_key)
        self.bus.emit_logs(key, step.index, lines, rank)

    def step_line(self, job_key: str, step: StepResult, line: str) -> None:
        self.step_lines(job_key, step, [line])

    def step_finished(self, job_key: str, step: StepResult) -> None:
        key, rank = self._split(job_key)
        self.bus.emit(
            StepFinished, job=key, step=step.index, status=step.status.value,
            exit_code=step.exit_code, outputs=step.outputs, key=step.key, id=step.id,
            name=step.name, kind=step.kind, cached=step.cached,
            outcome=step.outcome.value if step.outcome else None, error=step.error,
            log=step.log, started=step.started, ended=step.ended,
            attempt=self._attempt(key), rank=rank,
        )

    def notice(self, text: str, job_key: str | None = None) -> None:
        self.bus.emit(RunNotice, message=text, job=job_key)

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

    def wake(self) -> None:
        """Look again at the jobs waiting for room (room was freed elsewhere: another run
        sharing this machine's slots ended a job)."""
        with self._cond:
            self._cond.notify_all()

    def _wait_time(self) -> float:
        if self._delayed:
            return max(0.0, self._delayed[0][0] - time.monotonic())
        return _IDLE_WAIT

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
            if state.status is Status.QUEUED and state.plan.key in self.opts.reuse:
                self._reuse(state)
                continue
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
                # Stamped before the job can start: a job that fails at once may post its
                # result before try_start returns, and its end must not precede its start.
                was_started = state.started
                if state.started is None:
                    state.started = time.time()
                if not self.dispatcher.try_start(
                    plan, functools.partial(self._request, state),
                    functools.partial(self._post, plan.key),
                ):
                    state.attempts -= 1
                    state.started = was_started
                    break
                queue.popleft()
                state.status = Status.RUNNING
                self._running_per_group[plan.job_id] = (
                    self._running_per_group.get(plan.job_id, 0) + 1
                )

    def _reuse(self, state: JobState) -> None:
        """End a job with the outputs of the run a rerun comes from, without running it."""
        kept = self.opts.reuse[state.plan.key]
        outputs = kept.get("outputs")
        state.outputs = dict(outputs) if isinstance(outputs, dict) else {}
        state.warnings.append(f"not run again: its outputs are those of run {kept.get('run')}")
        state.steps = [
            StepResult(index=i, key=s["id"] or str(i + 1), id=s["id"],
                       name=step_display_name(s, i), status=Status.SKIPPED)
            for i, s in enumerate(state.plan.data["steps"])
        ]
        state.started = time.time()
        self._set_terminal(state, Status.SUCCESS, None)

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
            env_file=self.opts.env,
            flow_env=self.flow["env"],
            workspace=self.opts.workspace,
            run_dir=self.run_dir,
            secrets=self.opts.secrets,
            gpus=gpus,
            timeout=None if timeout is None else timeout * 60,
            attempt=state.attempts,
            step_actions=self.opts.step_actions.get(plan.job_id, {}),
            result_cache=self.opts.result_cache,
            reuse_results=self.opts.reuse_results,
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
            return
        if (result.status is Status.FAILURE and state.attempts - state.lost <= retries
                and not self._cancel_requested):
            base = _retry_backoff()
            tries = state.attempts - state.lost
            delay = min(_RETRY_MAX, base * 2 ** (tries - 1))
            self._again(state, result, delay=delay, lost=False)
            return
        state.steps = result.steps
        state.outputs = result.outputs
        state.node = result.node
        state.artifacts = result.artifacts
        state.reports = result.reports
        state.warnings = result.warnings + self._shared_files(key, result)
        state.ranks = result.ranks
        state.started = state.started or result.started
        # The job's start and end both by this process's clock: the result's times are the
        # worker's (on Ray another machine's, whose clock may differ).
        self._set_terminal(state, result.status, result.error, ended=time.time())
        if result.status is Status.FAILURE and not plan.data["continue_on_error"]:
            strategy = plan.data["strategy"]
            if strategy and strategy["fail_fast"] and len(self.plan.groups[plan.job_id]) > 1:
                self._fail_fast_group(plan)
            if self.opts.fail_fast:
                self.cancel(f"job {plan.key} failed and --fail-fast is set", interrupt=False)

    def _shared_files(self, key: str, result: JobResult) -> list[str]:
        """Warnings for artifacts and reports of ``result`` that a job running at the same time
        collected too: matrix cells share the workspace; files only the cell names are its own."""
        warnings: list[str] = []
        # artifacts/<key>[.rank<r>]/<path>; reports by their path
        found = [("artifacts", p.split("/", 2)[2]) for p in result.artifacts if p.count("/") >= 2]
        found += [("reports", p) for p in result.report_files]
        for kind, path in found:
            other = self._collected.get((kind, path))
            if other is not None and other[0] != key and other[1] < result.ended and \
                    result.started < other[2]:
                warnings.append(
                    f"{kind}: '{path}' was also collected by job {other[0]}, which ran at the "
                    f"same time: jobs share the workspace (name such files after the matrix "
                    f"cell, e.g. out-${{{{ matrix.n }}}}.xml, and the globs too)")
            self._collected[(kind, path)] = (key, result.started, result.ended)
        return warnings

    def _again(self, state: JobState, result: JobResult, *, delay: float, lost: bool) -> None:
        """Queue the job for another attempt; the one that ended goes to its history."""
        attempt = {
            "attempt": state.attempts,
            "status": "lost" if lost else result.status.value,
            "error": self.masker.text(result.error) if result.error else None,
            "node": result.node,
            "started": result.started,
            "ended": result.ended,
            "steps": [s.to_record() for s in result.steps],
            "ranks": result.ranks,
        }
        state.history.append(attempt)
        self.bus.emit(JobRetrying, job=state.plan.key, delay=delay,
                      retries=state.plan.data["retries"], lost_attempts=state.lost, **attempt)
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
        plan = state.plan
        self.bus.emit(
            JobFinished, job=plan.key, status=status.value, attempt=state.attempts,
            outputs=state.outputs, reports=state.reports, name=plan.name, error=state.error,
            node=state.node, started=state.started, ended=state.ended,
            artifacts=state.artifacts, warnings=state.warnings, ranks=state.ranks,
            steps=[s.to_record() for s in state.steps], lost_attempts=state.lost,
        )

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
