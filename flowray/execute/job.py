"""Running one job's steps in order on this machine: the single code path for steps.

A dispatcher (the local pool, or a Ray task on a node) hands a :class:`JobRequest` to
:func:`run_job`; the job runner renders templates, builds each step's command and environment,
runs it through the :class:`~flowray.execute.process.ProcessSupervisor` (or a container),
collects outputs and reports events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from flowray import expr
from flowray.execute.contexts import (
    action_context,
    machine_contexts,
    step_context,
)
from flowray.execute.launch import Launch
from flowray.execute.outputs import (
    ADD_MASK,
    MAX_OUTPUT_BYTES,
    OutputError,
    parse_output_file,
    parse_output_line,
)
from flowray.execute.process import ProcessOutcome, ProcessRequest, ProcessSupervisor, stop_groups
from flowray.execute.secrets import MIN_LENGTH, Masker
from flowray.execute.shell import ShellTemplateError, render_script, shell_command
from flowray.execute.step_request import ContainerRun, StepRequest
from flowray.spec.files import local_action_folder, outside_problem
from flowray.spec.shells import ACTION_ADVICE, Trust, has_template
from flowray.spec.types import ActionData, InputSpecData, JobData, StepData
from flowray.status import Status
from flowray.store.fs import os_error_text

if TYPE_CHECKING:  # imported when a step uses the result cache
    from flowray.execute.results import CachedResult, ResultCache

ActionLoader = Callable[[str, "str | None"], ActionData]
# Called before each step of a multi-node job with (step index, a step failed so far): waits
# until every rank of the gang got there; False when the gang is being stopped.
StepGate = Callable[[int, bool], bool]


class JobEvents(Protocol):
    """Where a running job reports progress (called from the job's thread)."""

    def step_started(self, job_key: str, step: StepResult) -> None: ...

    def step_line(self, job_key: str, step: StepResult, line: str) -> None: ...

    def step_lines(self, job_key: str, step: StepResult, lines: list[str]) -> None:
        """Several lines at once (what one read of the step's output held)."""
        ...

    def step_finished(self, job_key: str, step: StepResult) -> None: ...


@dataclass
class StepResult:
    index: int
    key: str  # unique in the job: the step id or its 1-based position
    id: str | None
    name: str
    status: Status = Status.QUEUED
    outcome: Status | None = None  # status before continue-on-error
    exit_code: int | None = None
    started: float | None = None
    ended: float | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    log: str | None = None  # path relative to the run folder
    error: str | None = None
    # run, cmd, script, python, node or docker; "action" while a step's action is not loaded
    kind: str = "run"
    cached: bool = False  # outputs from the action result cache; the action did not run

    def to_record(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "key": self.key,
            "id": self.id,
            "name": self.name,
            "status": self.status.value,
            "outcome": self.outcome.value if self.outcome else None,
            "exit_code": self.exit_code,
            "started": self.started,
            "ended": self.ended,
            "outputs": self.outputs,
            "log": self.log,
            "error": self.error,
            "kind": self.kind,
            "cached": self.cached,
        }


@dataclass(frozen=True)
class StepAction:
    """A step's action, pinned before the run: its folder, its validated action file, and the
    interpreter of its requirements environment (python actions with requirements.txt)."""

    path: str
    data: ActionData
    python: str | None = None
    # The coordinator's cache entry (a PinnedAction), to ship the action to Ray nodes; never
    # sent to a node itself.
    pin: Any = field(default=None, compare=False, repr=False)
    system_site_packages: bool = False  # how ``python``'s environment was made
    # A git action: what the result cache keys it by (repository, commit, folder, file; no
    # credentials), the commit, and owner/repo@tag for messages. None: never cached (local).
    identity: str | None = None
    sha: str = ""
    shown: str = ""


@dataclass
class JobRequest:
    run_id: str
    key: str  # unique in the run: job id, or id.N for matrix cells
    job_id: str
    name: str
    job: JobData
    contexts: dict[str, Any]  # everything but steps/variable/env
    env: dict[str, str] = field(repr=False)  # process environment before flow/job/step env
    # The --env-file values (also in ``env``): a container step gets them, not the rest of env.
    env_file: dict[str, str] = field(default_factory=dict, repr=False)
    flow_env: dict[str, str] = field(default_factory=dict)
    workspace: str = "."
    run_dir: str = "."  # the run record folder; step logs go below it
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    gpus: list[str] | None = None  # pinned GPUs (CUDA_VISIBLE_DEVICES), None: no pinning
    timeout: float | None = None  # seconds for the whole job
    attempt: int = 1
    step_actions: dict[int, StepAction] = field(default_factory=dict)  # by step index
    rank: int | None = None  # a multi-node job: this node's rank in the gang
    # A Ray node other than the coordinator's machine: its own folder (``directory.runner``,
    # with the actions shipped to it below, ``directory.actions``).
    node_dir: str | None = None
    # This node's action result cache folder; None: no result cache (steps always run).
    result_cache: str | None = None
    reuse_results: bool = True  # False (--no-cache): run cached steps, store what they give


@dataclass
class JobResult:
    status: Status
    steps: list[StepResult]
    outputs: dict[str, Any]
    started: float
    ended: float
    error: str | None = None
    artifacts: list[str] = field(default_factory=list)  # relative to the run folder
    reports: dict[str, Any] | None = None  # JUnit counts and cases (masked)
    report_files: list[str] = field(default_factory=list)  # the reports read (not recorded)
    warnings: list[str] = field(default_factory=list)
    node: str = ""  # where it ran, when a dispatcher knows (Ray: host, address and node id)
    lost: bool = False  # the job's node or worker was lost under it: run it again elsewhere
    ranks: list[dict[str, Any]] = field(default_factory=list)  # a multi-node job: each rank


def step_kind(step: StepData) -> str:
    """What a step is, as far as its own keys tell: ``run``, ``docker`` (``docker://``) or
    ``action`` (the action's file says which kind: the runner refines it once loaded)."""
    if step["run"] is not None:
        return "run"
    action = step["action"]
    if isinstance(action, str) and action.startswith("docker://"):
        return "docker"
    return "action"


def step_display_name(step: StepData, index: int) -> str:
    if step["name"]:
        return step["name"]
    if step["id"]:
        return step["id"]
    action = step["action"]
    if isinstance(action, str):
        return action
    if isinstance(action, dict):
        return action["name"]
    first = (step["run"] or "").strip().split("\n", 1)[0]
    return first[:60] or f"step {index + 1}"


def input_env_name(name: str) -> str:
    return "INPUT_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


# What a container step gets of the environment flowray runs in: flowray's own variables (on Ray
# the node's id and address, in a multi-node job the rank variables), not the rest (its PATH,
# HOME, ... would be wrong in the image).
_RANK_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK")


def _passed_in(req: JobRequest) -> dict[str, str]:
    """What a container step gets of the job's base environment: flowray's variables and the
    ``--env-file`` values."""
    env = req.env
    passed = {k: v for k, v in env.items() if k.startswith("FLOWRAY_") or k in _RANK_VARIABLES}
    passed.update(req.env_file)
    return passed


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80] or "_"


class _StepFailed(Exception):
    """A step could not be started; the message is shown as the step's error."""


@dataclass(frozen=True)
class _CacheUse:
    """A step that uses the action result cache: the cache, its entry's key, the action."""

    cache: ResultCache
    key: str
    action: StepAction


class JobRunner:
    def __init__(
        self,
        request: JobRequest,
        *,
        supervisor: ProcessSupervisor,
        events: JobEvents,
        masker: Masker,
        load_action: ActionLoader,
        gate: StepGate | None = None,
    ) -> None:
        self.req = request
        self.gate = gate
        self.supervisor = supervisor
        self.events = events
        self.masker = masker
        self.load_action = load_action
        self.steps_ctx: dict[str, Any] = {}
        self.variable_ctx: dict[str, Any] = {}
        # The machine this job runs on (on a Ray node, the node's facts and folders).
        request.contexts = {
            **request.contexts,
            **machine_contexts(request.env, request.contexts.get("runner"),
                               node_dir=request.node_dir),
        }
        # The step being run, and its action (or the last one run, as DataTorch's docs say).
        self.step_ctx: dict[str, Any] = {}
        self.action_ctx: dict[str, Any] = {}
        self.failed = False
        self.pgids: list[int] = []
        self.output_bytes = 0  # all outputs of the job so far, capped at MAX_OUTPUT_BYTES
        self._step_start_bytes = 0
        self._since: int | None = None  # when the attempt started (artifacts, reports)
        self._report_files: list[str] = []
        self._stdout_overflow = False  # the step's `::name::` lines passed the cap
        self._launch: Launch | None = None  # a python/node step's inputs file, while it runs
        self._outputs_masked = False  # the last step's outputs held a secret (never cached)
        self.cache_warnings: list[str] = []  # the result cache could not be used or written
        job = request.job
        # Output files may hold secrets (a step writes `tok=$TOKEN`; they are masked only when
        # read): private to the user, as is each file (made before its step starts).
        outputs_dir = os.path.join(request.run_dir, "outputs")
        os.makedirs(outputs_dir, mode=0o700, exist_ok=True)
        os.chmod(outputs_dir, 0o700)
        self.log_dir = os.path.join("logs", _safe_name(request.key))
        if request.attempt > 1:
            self.log_dir += f".attempt{request.attempt}"
        if request.rank:  # rank 0 keeps the job's own folder
            self.log_dir += f".rank{request.rank}"
        os.makedirs(os.path.join(request.run_dir, self.log_dir), exist_ok=True)
        self.results = [
            StepResult(
                index=i,
                key=s["id"] or str(i + 1),
                id=s["id"],
                name=self._render_name(s, i),
                kind=step_kind(s),
                log=os.path.join(
                    self.log_dir, f"{i + 1:02d}-{_safe_name(s['id'] or str(i + 1))}.log"
                ),
            )
            for i, s in enumerate(job["steps"])
        ]

    # ------------------------------------------------------------------------- helpers

    def _render_name(self, step: StepData, index: int) -> str:
        name = step_display_name(step, index)
        if step["name"] and "${{" in name:
            try:
                return self.masker.text(expr.to_text(expr.render(name, self.req.contexts)))
            except expr.ExprError:
                return name
        return name

    def _contexts(self, env: Mapping[str, str]) -> dict[str, Any]:
        ctx = dict(self.req.contexts)
        ctx["steps"] = self.steps_ctx
        ctx["variable"] = self.variable_ctx
        ctx["env"] = env
        ctx["step"] = self.step_ctx
        ctx["action"] = self.action_ctx
        return ctx

    def _render_env(self, raw: Mapping[str, str], ctx: Mapping[str, Any]) -> dict[str, str]:
        out = {}
        for k, v in raw.items():
            out[k] = expr.to_text(expr.render(v, ctx)) if "${{" in v else v
        return out

    # ------------------------------------------------------------------------- running

    def run(self) -> JobResult:
        started = time.time()
        if self.req.job["artifacts"] or self.req.job["reports"]:
            from flowray.execute.artifacts import RECORDS_FOLDER, attempt_stamp

            # Files this attempt writes from now on are its artifacts and reports. Stamped in
            # the workspace's .flowray (its file system's clock; globs never look there).
            self._since = attempt_stamp(
                os.path.join(self.req.workspace, RECORDS_FOLDER), self.req.run_dir)
        deadline = None if self.req.timeout is None else time.monotonic() + self.req.timeout
        base_ctx = self._contexts({})
        error: str | None = None
        try:
            flow_env = self._render_env(self.req.flow_env, base_ctx)
            job_env = {
                **flow_env,
                **self._render_env(self.req.job["env"], self._contexts(flow_env)),
            }
        except expr.ExprError as exc:
            error = self.masker.message(f"env: {exc}")
            for r in self.results:
                r.status = Status.SKIPPED
            return JobResult(Status.FAILURE, self.results, {}, started, time.time(), error)
        timed_out = False
        try:
            for i, step in enumerate(self.req.job["steps"]):
                result = self.results[i]
                if self.gate is not None and not self.supervisor.cancelled and \
                        not self.gate(i, self.failed):
                    # The gang is stopping: another rank failed (this one stops), or this one
                    # did (its steps go on by their `if`, without waiting for the others).
                    self.gate = None
                    if not self.failed:
                        self.supervisor.mark_cancelled()
                if self.supervisor.cancelled:
                    result.status = Status.CANCELLED
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    timed_out = True
                    result.status = Status.CANCELLED
                    result.error = "not run: the job timed out"
                    continue
                self._run_step(step, result, job_env, remaining)
                if result.error and "job timed out" in result.error:
                    timed_out = True
        finally:
            # Background processes a step left behind live until the job ends, then stop.
            stop_groups(self.pgids, grace=self.supervisor.grace)
        outputs: dict[str, Any] = {}
        if self.req.job["outputs"]:
            ctx = self._contexts(job_env)
            for name, value in self.req.job["outputs"].items():
                try:
                    outputs[name] = self.masker.data(
                        expr.render(value, ctx, failed=self.failed)
                    )
                except expr.ExprError as exc:
                    error = f"outputs.{name}: {exc}"
                    self.failed = True
        artifacts, reports, warnings = self._leftovers(job_env)
        warnings = [*self.cache_warnings, *warnings]
        if self.supervisor.cancelled:
            status = Status.CANCELLED
        elif self.failed or timed_out:
            status = Status.FAILURE
            if timed_out and error is None:
                error = f"the job timed out after {_minutes(self.req.timeout)}"
        else:
            status = Status.SUCCESS
        masked = self.masker.message
        return JobResult(status, self.results, outputs, started, time.time(),
                         masked(error) if error else None, artifacts=artifacts,
                         reports=reports, report_files=self._report_files,
                         warnings=[masked(w) for w in warnings])

    def _output_file(self, result: StepResult) -> str:
        """The step's ``$FLOWRAY_OUTPUT`` (read here whatever the step's environment says)."""
        name = f"{_safe_name(self.req.key)}.{result.index + 1}"
        return os.path.join(self.req.run_dir, "outputs", name)

    @staticmethod
    def _private_output_file(path: str) -> None:
        """Make the (empty) output file 0600 before the step appends to it, so that what it
        writes there is never readable by other users, whatever the step's umask."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a leftover of an earlier attempt, possibly of another mode
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

    def _directory(self, ctx: Mapping[str, Any], step_dir: str | None = None) -> str:
        """The job's working directory (and a step's below it), templates rendered."""
        cwd = self.req.workspace
        for wd in (self.req.job["working_directory"], step_dir):
            if wd:
                text = expr.to_text(expr.render(wd, ctx)) if "${{" in wd else wd
                cwd = os.path.normpath(os.path.join(cwd, text))
        return cwd

    def _leftovers(
        self, env: dict[str, str]
    ) -> tuple[list[str], dict[str, Any] | None, list[str]]:
        """Artifacts copied into the run folder and JUnit report counts and cases, after the
        steps."""
        job = self.req.job
        if not job["artifacts"] and not job["reports"]:
            return [], None, []
        from flowray.execute.artifacts import collect_artifacts, read_reports

        ctx = self._contexts(env)
        try:
            base = self._directory(ctx)
        except expr.ExprError as exc:
            return [], None, [f"working-directory: {exc}"]
        warnings: list[str] = []
        copied: list[str] = []
        reports = None
        if job["artifacts"]:
            dest_rel = os.path.join("artifacts", _safe_name(self.req.key))
            if self.req.rank:  # other ranks of a multi-node job keep theirs apart
                dest_rel += f".rank{self.req.rank}"
            patterns, problems = self._globs("artifacts", ctx)
            files, more = collect_artifacts(
                base, patterns, os.path.join(self.req.run_dir, dest_rel), since=self._since)
            copied = [os.path.join(dest_rel, f) for f in files]
            warnings += problems + more
        if job["reports"]:
            patterns, problems = self._globs("reports", ctx)
            counts, more = read_reports(base, patterns, since=self._since)
            # Test names, messages and tracebacks are what the tests wrote: a test may print a
            # secret into its failure message. "reports" is one of the record's own fields,
            # which the event bus never masks, so it is masked here.
            reports = counts.to_record(mask=self.masker.message)
            self._report_files = counts.paths
            warnings += problems + more
        return copied, reports, warnings

    def _globs(self, key: str, ctx: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """The job's ``artifacts`` or ``reports`` globs, ``${{ }}`` rendered (a matrix cell's
        own file names); a glob that cannot be rendered is left out with a warning."""
        out: list[str] = []
        problems: list[str] = []
        for glob in self.req.job[key]:  # type: ignore[literal-required]
            try:
                out.append(expr.to_text(expr.render(glob, ctx)) if "${{" in glob else glob)
            except expr.ExprError as exc:
                problems.append(f"{key}: '{glob}': {exc}")
        return out, problems

    def _run_step(
        self, step: StepData, result: StepResult, job_env: dict[str, str], remaining: float | None
    ) -> None:
        env_ctx = job_env
        self.step_ctx = step_context(step, result.key, result.name)
        try:
            step_env = {**job_env, **self._render_env(step["env"], self._contexts(job_env))}
            env_ctx = step_env
            ctx = self._contexts(step_env)
            if step["name"] and "${{" in step["name"]:
                # Names may read earlier steps' outputs: render them now that those exist.
                with contextlib.suppress(expr.ExprError):  # a name never fails a step
                    result.name = self.masker.text(
                        expr.to_text(expr.render(step["name"], ctx))
                    )
                self.step_ctx["name"] = result.name
            should_run = expr.evaluate_condition(
                step["if_"], ctx, failed=self.failed, cancelled=self.supervisor.cancelled
            )
        except expr.ExprError as exc:
            self._finish_without_process(result, step, f"{exc}", ctx=None)
            return
        if not should_run:
            result.status = Status.SKIPPED
            self.steps_ctx[result.key] = {
                "outputs": {},
                "outcome": "skipped",
                "conclusion": "skipped",
            }
            self.events.step_finished(self.req.key, result)
            return
        try:
            use = self._cache_use(step, result.index, ctx, step_env)
        except (_StepFailed, expr.ExprError) as exc:
            self._finish_without_process(result, step, str(exc), ctx=ctx)
            return
        if use is not None and self.req.reuse_results:
            hit = use.cache.get(use.key)
            if hit is not None and self._reuse(step, result, use, hit, ctx):
                return
        try:
            try:
                request, action = self._build(step, result, step_env, ctx, remaining)
            except (_StepFailed, expr.ExprError, ShellTemplateError) as exc:
                self._finish_without_process(result, step, str(exc), ctx=ctx)
                return
            except OSError as exc:  # its script file cannot be written: a full disk
                self._finish_without_process(result, step, os_error_text(exc), ctx=ctx)
                return
            if action is not None:
                result.kind = action["runs"]["using"]
            result.status = Status.RUNNING
            result.started = time.time()
            self.events.step_started(self.req.key, result)
            try:
                outcome = self._execute(request, result)
            except OSError as exc:  # the step's log cannot be opened: a full disk
                now = time.time()
                outcome = ProcessOutcome(None, now, now, error=os_error_text(exc))
        finally:
            if self._launch is not None:  # the step's private inputs file goes
                self._launch.close()
                self._launch = None
        self._collect(step, result, outcome, self._output_file(result), action, env_ctx)
        if use is not None:
            self._store(result, use)

    # ------------------------------------------------------------------------- result cache

    def _cache_use(
        self, step: StepData, index: int, ctx: dict[str, Any], env: Mapping[str, str]
    ) -> _CacheUse | None:
        """The result cache entry this step reads and writes, if it uses the cache: a git
        action (pinned to a commit) whose step or action file says ``cache: true``, in a
        single-node job, with a result cache folder on this node."""
        root = self.req.result_cache
        pinned = self.req.step_actions.get(index)
        if root is None or pinned is None or pinned.identity is None or self.req.rank is not None:
            return None
        wanted = step.get("cache")
        if wanted is None:
            wanted = pinned.data.get("cache", False)
        if not wanted:
            return None
        from flowray.execute.results import ResultCacheError, open_cache

        # The inputs as the action would get them (its defaults may read `action`).
        self.action_ctx = action_context(pinned.data, step["action"], pinned.path)
        inputs, _ = self._action_inputs(step, pinned.data, {**ctx, "action": self.action_ctx})
        material = {
            "format": 1,
            "action": pinned.identity,
            "kind": pinned.data["runs"]["using"],
            "inputs": inputs,
            "env": dict(env),  # what the flow, job and step `env:` give it (not the process env)
        }
        cache = open_cache(root)
        try:
            key = cache.key_for(material)
        except ResultCacheError as exc:
            self._cache_warning(str(exc))
            return None
        return _CacheUse(cache, key, pinned)

    def _reuse(self, step: StepData, result: StepResult, use: _CacheUse, hit: CachedResult,
               ctx: Mapping[str, Any]) -> bool:
        """Finish the step with the outputs ``hit`` holds, without running it; False when they
        do not fit in what is left of the job's outputs allowance (then it runs)."""
        outputs = self.masker.data(hit.outputs)
        size = len(json.dumps(outputs, default=str))
        if self.output_bytes + size > MAX_OUTPUT_BYTES:
            return False
        self.output_bytes += size
        action = use.action
        result.kind = action.data["runs"]["using"]
        result.cached = True
        result.status = Status.RUNNING
        result.started = time.time()
        self.events.step_started(self.req.key, result)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(hit.created))
        line = self.masker.text(
            f"cached: outputs of {action.shown} ({action.sha[:7]}) from run {hit.run_id} "
            f"({when}); the action did not run (--no-cache runs it)")
        with open(os.path.join(self.req.run_dir, result.log or ""), "w",
                  encoding="utf-8") as log:
            log.write(line + "\n")
        self.events.step_lines(self.req.key, result, [line])
        result.outputs = outputs
        self.variable_ctx.update(outputs)
        result.ended = time.time()
        self._conclude(step, result, Status.SUCCESS, ctx)
        self.events.step_finished(self.req.key, result)
        return True

    def _store(self, result: StepResult, use: _CacheUse) -> None:
        """Keep a successful step's outputs for later runs, unless they held a secret."""
        if result.status is not Status.SUCCESS or result.outcome is not Status.SUCCESS \
                or result.error or self._outputs_masked:
            return
        from flowray.execute.results import CachedResult

        problem = use.cache.put(use.key, CachedResult(
            dict(result.outputs), self.req.run_id, time.time(), use.action.shown,
            use.action.sha))
        if problem:
            self._cache_warning(problem)

    def _cache_warning(self, text: str) -> None:
        text = self.masker.text(text)
        if text not in self.cache_warnings:
            self.cache_warnings.append(text)

    def _finish_without_process(
        self, result: StepResult, step: StepData, error: str, *, ctx: Mapping[str, Any] | None
    ) -> None:
        result.started = result.ended = time.time()
        result.error = error
        self._conclude(step, result, Status.FAILURE, ctx)
        self.events.step_started(self.req.key, result)
        self.events.step_finished(self.req.key, result)

    def _conclude(
        self, step: StepData, result: StepResult, outcome: Status, ctx: Mapping[str, Any] | None
    ) -> None:
        result.outcome = outcome
        if result.error:  # messages may quote a value (bad JSON, a wrong input type)
            result.error = self.masker.message(result.error)
        status = outcome
        if outcome is Status.FAILURE and not self.supervisor.cancelled:
            coe = step["continue_on_error"]
            if isinstance(coe, str):
                try:
                    coe = bool(
                        ctx is not None and expr.evaluate_condition(coe, ctx, failed=False,
                                                                    cancelled=False)
                    )
                except expr.ExprError:
                    coe = False
            if coe:
                status = Status.SUCCESS
        if status is Status.FAILURE:
            self.failed = True
        result.status = status
        self.steps_ctx[result.key] = {
            "outputs": result.outputs,
            "outcome": outcome.value,
            "conclusion": status.value,
        }

    def _build(
        self,
        step: StepData,
        result: StepResult,
        env: dict[str, str],
        ctx: dict[str, Any],
        remaining: float | None,
    ) -> tuple[StepRequest, ActionData | None]:
        req = self.req
        run_dir = req.run_dir
        output_file = self._output_file(result)
        self._private_output_file(output_file)
        own = dict(env)  # what flowray gives the step, as opposed to its own environment
        own.update(
            {
                "FLOWRAY": "true",
                "FLOWRAY_RUN_ID": req.run_id,
                "FLOWRAY_JOB_ID": req.job_id,
                "FLOWRAY_JOB_KEY": req.key,
                "FLOWRAY_STEP_ID": result.key,
                "FLOWRAY_WORKSPACE": req.workspace,
                "FLOWRAY_OUTPUT": output_file,
                "FLOWRAY_ACTION_PATH": "",
            }
        )
        cwd = self._directory(ctx, step["working_directory"])
        action: ActionData | None = None
        container: ContainerRun | None = None
        job_container = req.job["container"]
        if step["run"] is not None:
            script_file = os.path.join(
                run_dir, "scripts", f"{_safe_name(req.key)}.{result.index + 1}"
            )
            shell = step["shell"]
            if job_container is not None and shell is None:
                shell = "sh"  # images need not have bash
            argv, posix = shell_command(shell, "", script_file, resolve=job_container is None)
            script, extra = render_script(
                step["run"], ctx, posix=posix, failed=self.failed,
                cancelled=self.supervisor.cancelled, trust=self._trust(),
            )
            argv, posix = shell_command(shell, script, script_file,
                                        resolve=job_container is None)
            if script_file in argv:
                os.makedirs(os.path.dirname(script_file), exist_ok=True)
                with open(script_file, "w") as fh:
                    fh.write(script)
            own.update(extra)
            if job_container is not None:
                from flowray.execute.container import ContainerError, job_container_run

                try:
                    container = job_container_run(job_container, argv, cwd,
                                                  {**_passed_in(req), **own}, req, ctx)
                except (ValueError, ContainerError) as exc:
                    raise _StepFailed(f"container: {exc}") from exc
        else:
            action, argv, action_env, container = self._action_command(
                step, result.index, ctx, own, cwd)
            own.update(action_env)
            if container is not None:
                container.env.update(_passed_in(req))
                container.env.update(own)
        if req.gpus is not None:
            own["CUDA_VISIBLE_DEVICES"] = ",".join(req.gpus)
        proc_env = {**req.env, **own}
        timeout = step["timeout"] * 60 if step["timeout"] is not None else None
        if remaining is not None and (timeout is None or remaining < timeout):
            timeout = remaining
            self._job_deadline_governs = True
        else:
            self._job_deadline_governs = False
        if container is not None:
            container.timeout = timeout
            return container, action
        return ProcessRequest(argv=argv, env=proc_env, cwd=cwd, timeout=timeout), action

    def _trust(self) -> Trust:
        """A matrix or ``variables`` with templates in it is not author-written."""
        strategy = self.req.job["strategy"]
        return Trust(matrix=not has_template(strategy["matrix"] if strategy else None),
                     variables=not has_template(self.req.contexts.get("variables")))

    def _action_command(
        self, step: StepData, index: int, ctx: dict[str, Any], own: dict[str, str], cwd: str
    ) -> tuple[ActionData | None, list[str], dict[str, str], ContainerRun | None]:
        """The step's action: (its data, argv, its env, a ContainerRun for container ones)."""
        ref = step["action"]
        if isinstance(ref, str) and ref.startswith("docker://"):
            from flowray.execute.container import ContainerError, image_step_run

            given = expr.render(step["inputs"], ctx, failed=self.failed) \
                if step["inputs"] else {}
            inputs_env = {input_env_name(k): expr.to_text(v) for k, v in given.items()}
            try:
                run = image_step_run(ref[len("docker://"):], given, cwd, self.req)
            except (ValueError, ContainerError) as exc:
                raise _StepFailed(str(exc)) from exc
            self._no_secret_on_command_line(run, "the step's 'args'/'entrypoint'")
            return None, [], inputs_env, run
        pinned = self.req.step_actions.get(index)
        python = sys.executable
        if pinned is not None:
            path, action = pinned.path, pinned.data
            python = pinned.python or python
        elif isinstance(ref, str) and ref.startswith("./"):
            path = local_action_folder(self.req.workspace, ref)
            outside = outside_problem(self.req.workspace, path)
            if outside is not None:
                raise _StepFailed(f"local action '{ref}' {outside}")
            try:
                action = self.load_action(path, None)
            except Exception as exc:  # the loader's errors carry file:line:col
                raise _StepFailed(str(exc)) from exc
        else:
            raise _StepFailed(f"action {ref!r} was not pinned before the run")
        self.action_ctx = action_context(action, ref, path)
        ctx = {**ctx, "action": self.action_ctx}
        inputs, action_ctx = self._action_inputs(step, action, ctx)
        env: dict[str, str] = {"FLOWRAY_ACTION_PATH": path}
        env.update(action["runs"]["env"])
        for name, value in inputs.items():
            env[input_env_name(name)] = expr.to_text(value)
        runs = action["runs"]
        using = runs["using"]
        def entry(value: str | None) -> str:
            # DataTorch renders the entry file's name too (``main: ${{ input.script }}``).
            text = value or ""
            if "${{" in text:
                text = expr.to_text(expr.render(text, action_ctx))
                if self.masker.text(text) != text:  # it lands on the command line
                    raise _StepFailed(f"action '{action['name']}': the name of its entry file "
                                      "would put a secret on the command line")
            return os.path.join(path, text)

        if using in ("python", "node"):
            # The inputs as one JSON argument, put into the argument vector inside the
            # interpreter from a private file: never on the process's real command line.
            main = entry(runs["main"])
            if not os.path.isfile(main):
                raise _StepFailed(f"action '{action['name']}': main file "
                                  f"'{os.path.relpath(main, path)}' not found")
            self._launch = Launch(using, python if using == "python" else "node", main,
                                  json.dumps(inputs))
            argv = self._launch.argv
            env.update(self._launch.env)
        elif using == "script":
            script = entry(runs["script"])
            named = os.path.relpath(script, path)  # as rendered
            args: list[str] = []
            if not os.path.isfile(script) and " " in named:
                # `script: run.sh --flag`: the file, then its arguments (as DataTorch).
                script, args = _script_words(script, path)
            if not os.path.isfile(script):
                raise _StepFailed(f"action '{action['name']}': script '{named}' not found")
            argv = [script] if os.access(script, os.X_OK) else ["bash", script]
            argv += args
        elif using == "cmd":
            command, extra = render_script(runs["command"] or "", action_ctx, posix=True,
                                           trust=self._trust(), advice=ACTION_ADVICE)
            env.update(extra)
            argv, _ = shell_command(None, command, "")
        elif using == "docker":
            from flowray.execute.container import ContainerError, action_run

            try:
                run = action_run(action, path, action_ctx, cwd, self.req,
                                 key=f"{path}@{pinned.pin.sha if pinned and pinned.pin else ''}")
            except (ValueError, expr.ExprError, ContainerError) as exc:
                raise _StepFailed(f"action '{action['name']}': {exc}") from exc
            self._no_secret_on_command_line(run, f"action '{action['name']}': its 'args'")
            return action, [], env, run
        else:
            raise _StepFailed(
                f"action '{action['name']}' uses '{using}', which this flowray version cannot run"
            )
        return action, argv, env, None

    def _no_secret_on_command_line(self, run: ContainerRun, what: str) -> None:
        """A container's command line is visible to every user of the host (``ps``): a
        secret must reach it through its environment (``INPUT_<NAME>``) instead."""
        words = [*(run.entrypoint or []), *(run.command or [])]
        if self.masker and any(self.masker.text(w) != w for w in words):
            raise _StepFailed(
                f"{what} would put a secret on the container's command line, where every "
                "user of the machine can read it; read it from the environment instead "
                "(each input is also INPUT_<NAME>)")

    def _action_inputs(
        self, step: StepData, action: ActionData, ctx: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The step's inputs, typed, and the contexts of the action file's templates: the
        step's plus its own inputs as ``input``/``inputs``/``variable`` (DataTorch's names).
        Given values come first; defaults are rendered in the order the action declares them
        and see the inputs resolved before them."""
        from flowray.spec.inputs import InputError, coerce_input

        given = expr.render(step["inputs"], ctx, failed=self.failed) if step["inputs"] else {}
        out: dict[str, Any] = {}
        action_ctx = {**ctx, "input": out, "inputs": out, "variable": out}
        declared = action["inputs"]
        for name, spec in declared.items():
            if name in given:
                try:
                    out[name] = coerce_input(name, spec, given[name])
                except InputError as exc:
                    raise _StepFailed(f"action '{action['name']}': {exc}") from exc
        for name, value in given.items():
            if name not in declared:
                out[name] = value  # undeclared: validation warned; pass it on as given
        for name, spec in declared.items():
            if name in given:
                continue
            if spec["default"] is not None:
                try:
                    value = expr.render(spec["default"], action_ctx)
                except expr.ExprError as exc:
                    raise _StepFailed(
                        f"action '{action['name']}': default of input '{name}': {exc}"
                    ) from exc
            elif spec["required"]:
                raise _StepFailed(f"action '{action['name']}': required input '{name}' is missing")
            else:
                # Declared, optional, no value: null, as DataTorch gives it (actions read
                # ``inputs["annotationId"]`` without a KeyError).
                out[name] = None
                continue
            try:
                out[name] = coerce_input(name, spec, value)
            except InputError as exc:
                raise _StepFailed(f"action '{action['name']}': {exc}") from exc
        # In the order the action declares them, then the undeclared ones.
        ordered = {name: out[name] for name in declared if name in out}
        ordered.update((k, v) for k, v in out.items() if k not in ordered)
        action_ctx.update(input=ordered, inputs=ordered, variable=ordered)
        return ordered, action_ctx

    def _execute(self, request: StepRequest, result: StepResult) -> ProcessOutcome:
        key = self.req.key
        masker = self.masker
        events = self.events
        log_path = os.path.join(self.req.run_dir, result.log or "")
        outputs = result.outputs
        overflow = False
        self._step_start_bytes = self.output_bytes

        log_error: list[OSError] = []  # the first write to the log that failed

        def write(text: str, *, flush: bool = False) -> None:
            if not log_error:
                try:
                    log.write(text)
                    if flush:
                        log.flush()
                except OSError as exc:  # a full disk: the step goes on, then fails saying so
                    log_error.append(exc)

        log = open(log_path, "w", encoding="utf-8", errors="replace")  # noqa: SIM115
        try:
            batch: list[str] = []
            long_line = False  # pieces of a line longer than MAX_LINE_BYTES are coming
            held = ""  # the unmasked end of the last piece (it may begin a secret)

            def flush() -> None:
                # The lines of one read of the output go out as one batch of events, and to
                # the log file, so that `flowray logs` shows a running step's output so far.
                if batch:
                    write("", flush=True)
                    lines = batch[:]
                    batch.clear()
                    events.step_lines(key, result, lines)

            def part(piece: str) -> None:
                # A piece of a very long line: into the log file as it comes; the events get
                # the line's beginning once, cut (the reader keeps no more than one piece).
                nonlocal long_line, held
                if not long_line:
                    long_line = True
                    batch.append(_shown(masker.text(piece) if masker else piece))
                text, held = masker.text_part(held + piece) if masker else (piece, "")
                write(text)

            def on_line(line: str) -> None:
                nonlocal overflow, long_line, held
                if long_line:  # the last piece of a long line
                    write((masker.text(held + line) if masker else line) + "\n")
                    long_line, held = False, ""
                    return
                if line.startswith("::"):
                    parsed = parse_output_line(line)
                    if parsed is not None:
                        name, value = parsed
                        if name == ADD_MASK:
                            flush()  # lines before the mask went out as they were
                            if masker.add(str(value)):
                                return
                            line = (f"flowray: warning: ::add-mask:: value of "
                                    f"{len(str(value).strip())} characters is not masked "
                                    f"(values shorter than {MIN_LENGTH} characters never are)")
                            write(line + "\n")
                            batch.append(line)
                            return
                        self.output_bytes += len(line.encode("utf-8", "surrogatepass"))
                        if self.output_bytes > MAX_OUTPUT_BYTES:
                            overflow = True
                        else:
                            outputs[name] = value
                if masker:
                    line = masker.text(line)
                write(line + "\n")
                batch.append(_shown(line))

            on_line.flush = flush  # type: ignore[attr-defined]  # the reader calls it per read
            on_line.part = part  # type: ignore[attr-defined]  # pieces of a too long line

            try:
                if isinstance(request, ContainerRun):
                    from flowray.execute.container import run_container

                    outcome = run_container(request, on_line, self.supervisor)
                else:
                    outcome = self.supervisor.run(request, on_line)
            finally:
                flush()
        finally:
            try:
                log.close()
            except OSError as exc:  # what was left in its buffer could not be written
                if not log_error:
                    log_error.append(exc)
                with contextlib.suppress(OSError):
                    log.close()
        self._stdout_overflow = overflow
        if outcome.pgid:
            self.pgids.append(outcome.pgid)
        if log_error and outcome.error is None:
            outcome = dataclasses.replace(outcome, error=os_error_text(
                log_error[0], f"the step's log {result.log}"))
        return outcome

    def _collect(
        self,
        step: StepData,
        result: StepResult,
        outcome: ProcessOutcome,
        output_file: str,
        action: ActionData | None,
        env: Mapping[str, str],
    ) -> None:
        result.ended = outcome.ended
        result.started = outcome.started
        result.exit_code = outcome.exit_code
        status = Status.SUCCESS if outcome.exit_code == 0 and not result.error else Status.FAILURE
        # Read no more of the file than the job's allowance (and one byte to see it is over).
        allowance = max(MAX_OUTPUT_BYTES - self.output_bytes, 0)
        try:
            with open(output_file, "rb") as fh:
                raw = fh.read(allowance + 1)
        except FileNotFoundError:
            raw = b""
        else:
            os.unlink(output_file)
        self.output_bytes += len(raw)
        text = raw.decode("utf-8", "replace")
        if self._stdout_overflow or self.output_bytes > MAX_OUTPUT_BYTES:
            # This step's outputs do not fit: it fails and they are dropped, so later steps
            # (an `if: always()` cleanup, say) still have the job's remaining allowance.
            result.error = _OUTPUT_CAP_ERROR
            status = Status.FAILURE
            text = ""
            result.outputs.clear()
            self.output_bytes = self._step_start_bytes
        if text:
            try:
                result.outputs.update(parse_output_file(text))
            except OutputError as exc:
                result.error = str(exc)
                status = Status.FAILURE
        if result.outputs and self._secret_names(result):
            status = Status.FAILURE
        if action is not None and action["outputs"] and self._type_outputs(result, action):
            status = Status.FAILURE
        self._outputs_masked = False
        if result.outputs:
            masked = self.masker.data(result.outputs)  # names too (keys): never cached
            self._outputs_masked = masked != result.outputs
            result.outputs = masked
            self.variable_ctx.update(result.outputs)
        if outcome.error:
            result.error = outcome.error
            status = Status.FAILURE
        elif outcome.timed_out:
            status = Status.FAILURE
            if self._job_deadline_governs:
                result.error = f"the job timed out after {_minutes(self.req.timeout)}"
            else:
                result.error = f"timed out after {_minutes((step['timeout'] or 0) * 60)}"
        elif outcome.cancelled or (self.supervisor.cancelled and status is Status.FAILURE):
            status = Status.CANCELLED
        elif status is Status.FAILURE and result.error is None:
            code = outcome.exit_code
            result.error = (
                f"killed by signal {-code}" if code is not None and code < 0
                else f"exited with code {code}"
            )
        ctx = self._contexts(dict(env))
        self._conclude(step, result, status, ctx)
        self.events.step_finished(self.req.key, result)

    def _secret_names(self, result: StepResult) -> bool:
        """Drop the outputs whose name holds a secret or a masked value, and say so in the
        step's error (masked); True if there was one. Output names are identifiers, never
        masked where they are shown (the record, events, `flowray status`, the result cache):
        a secret there is a mistake (``echo "$TOKEN=..."``), so the step fails rather than
        keep an output no one could name."""
        bad = [name for name in result.outputs if self.masker.text(name) != name]
        for name in bad:
            del result.outputs[name]
        if bad and not result.error:
            result.error = self.masker.message(
                f"output '{bad[0]}': its name holds a secret or a masked value (an output's "
                "name is an identifier; its value goes after '=' or '::name::'); the output "
                "is dropped")
        return bool(bad)

    def _type_outputs(self, result: StepResult, action: ActionData) -> bool:
        """Convert outputs to the types the action declares; True if one cannot be."""
        from flowray.spec.inputs import InputError, coerce_input

        for name, spec in action["outputs"].items():
            if name in result.outputs and spec["type"]:
                as_input = InputSpecData(type=spec["type"], required=False, default=None,
                                         description=None)
                try:
                    result.outputs[name] = coerce_input(name, as_input, result.outputs[name])
                except InputError as exc:
                    what = str(exc).removeprefix("input ")
                    result.error = f"action '{action['name']}': output {what}"
                    return True
        return False


# A line of output longer than this (characters) reaches the events (the terminal, `--events`,
# events.jsonl) cut to this length with CUT_MARK; the step's log file keeps it whole.
MAX_SHOWN_LINE = 64 * 1024
CUT_MARK = " [... line cut at {n} characters; the whole line is in the step's log file]"


def _shown(line: str) -> str:
    if len(line) <= MAX_SHOWN_LINE:
        return line
    return line[:MAX_SHOWN_LINE] + CUT_MARK.format(n=MAX_SHOWN_LINE)


_OUTPUT_CAP_ERROR = (
    f"the job's outputs are larger than {MAX_OUTPUT_BYTES // 2**20} MiB ({MAX_OUTPUT_BYTES} "
    "bytes: its steps' ::name:: lines and $FLOWRAY_OUTPUT files together)"
)


def _script_words(script: str, folder: str) -> tuple[str, list[str]]:
    """``<folder>/run.sh --flag x``: the script's path and its arguments."""
    import shlex

    try:
        words = shlex.split(os.path.relpath(script, folder))
    except ValueError:
        return script, []
    return (os.path.join(folder, words[0]), words[1:]) if words else (script, [])


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:g}s"
    return f"{seconds / 60:g} min"


def run_job(
    request: JobRequest,
    *,
    supervisor: ProcessSupervisor,
    events: JobEvents,
    masker: Masker,
    load_action: ActionLoader,
    gate: StepGate | None = None,
) -> JobResult:
    """Run every step of one job, in order, on this machine."""
    return JobRunner(
        request, supervisor=supervisor, events=events, masker=masker, load_action=load_action,
        gate=gate,
    ).run()
