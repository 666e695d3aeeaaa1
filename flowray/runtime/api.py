"""Starting and watching runs from Python: the one way in for the CLI, the service and notebooks.

:func:`prepare` loads and checks a flow and builds its plan (what ``--dry-run`` shows);
:func:`start` does that and starts the run on a backend, returning a :class:`Run` at once.
Nothing here prints or exits: problems are exceptions that carry data
(:class:`~flowray.spec.FlowError` with diagnostics, :class:`RunInputError` naming the input,
:class:`StartError` for arguments and backends), and progress is the run's event stream.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flowray.runtime.errors import PlanInvalid, RunInputError, SecretsMissing, StartError
from flowray.spec.diagnostics import Diagnostic, FlowError
from flowray.status import Status

if TYPE_CHECKING:
    from flowray.backends.local import Slots
    from flowray.execute.job import StepAction
    from flowray.plan.flowcache import CachedFlow
    from flowray.plan.plan import Plan
    from flowray.runtime.coordinator import Coordinator
    from flowray.runtime.events import Subscription
    from flowray.runtime.record import RunRecord
    from flowray.runtime.recorder import RecordWriter


def _workspace(workdir: str | os.PathLike[str]) -> str:
    workspace = os.path.abspath(os.fspath(workdir))
    if not os.path.isdir(workspace):
        raise StartError(f"the workspace '{os.fspath(workdir)}' is not a directory")
    return workspace


def _flow_file(flow: str | os.PathLike[str], workspace: str) -> str:
    """A flow given as YAML text is kept in the workspace's ``.flowray/flows/`` (by its
    hash), so that diagnostics and the record can name a file."""
    text = os.fspath(flow)
    if "\n" not in text and not text.lstrip().startswith("{"):
        return text
    folder = os.path.join(workspace, ".flowray", "flows")
    os.makedirs(folder, exist_ok=True)
    # surrogatepass: text that is not valid Unicode is kept as the loader's "not UTF-8" error
    raw = text.encode("utf-8", "surrogatepass")
    path = os.path.join(folder, hashlib.sha256(raw).hexdigest()[:16] + ".yaml")
    if not os.path.exists(path):
        from flowray.store.fs import write_bytes_atomic

        write_bytes_atomic(path, raw)
    return path


def validate(flow: str | os.PathLike[str], *, workdir: str | os.PathLike[str] = ".",
             offline: bool | None = None, variables: Collection[str] = ()) -> list[Diagnostic]:
    """Every error and warning of a flow (a path, or YAML text), as ``flowray validate``
    finds them; an empty list for a clean flow. Git actions are fetched (or read from the
    action cache) so that their inputs are checked too. ``variables``: names of
    ``variables.NAME`` given from outside the flow (see :func:`start`)."""
    from flowray.plan.pins import LazyGitActions
    from flowray.spec import load_flow

    workspace = _workspace(workdir)
    path = _flow_file(flow, workspace)
    pinner = lazy_pinner(workspace, offline, path)
    try:
        loaded = load_flow(path, workspace=workspace, git_action=LazyGitActions(pinner),
                           variables=variables)
    except FlowError as exc:
        return list(exc.diagnostics)
    return list(loaded.warnings)


def lazy_pinner(workspace: str, offline: bool | None, flow: str | None = None,
                on_event: Callable[[str], None] | None = None) -> Callable[[], Any]:
    """A function returning the run's one ActionPinner, made on first use (it imports the
    actions package, which flows without git actions never need). ``offline``: True or False
    overrides the configuration; None keeps it."""
    made: list[Any] = []

    def get() -> Any:
        if not made:
            from flowray.actions import ActionError, load_config
            from flowray.plan.pins import ActionPinner

            try:
                config = load_config(workspace, offline=offline)
            except ActionError as exc:
                raise StartError(str(exc)) from exc
            made.append(ActionPinner(config, on_event=on_event or (lambda line: None),
                                     flow=flow))
        return made[0]

    return get


@dataclass
class Prepared:
    """A flow loaded, checked and planned: what :func:`start` runs."""

    flow_path: str  # as given (or the file YAML text was kept in)
    workspace: str
    cached: CachedFlow
    plan: Plan
    inputs: dict[str, Any]
    pinner: Callable[[], Any]
    warnings: list[str] = field(default_factory=list)
    use_cache: bool = True  # False: validated again, and cached action results not reused

    @property
    def flow(self) -> Mapping[str, Any]:
        return self.cached.data

    def describe(self) -> list[str]:
        return [f"flow {self.flow['name']}: {len(self.plan.jobs)} job(s)",
                *self.plan.describe()]


def prepare(flow: str | os.PathLike[str], *, workdir: str | os.PathLike[str] = ".",
            inputs: Mapping[str, Any] | None = None, jobs: Sequence[str] = (),
            matrix: Mapping[str, str] | None = None, offline: bool | None = None,
            use_cache: bool = True,
            on_action_event: Callable[[str], None] | None = None,
            variables: Collection[str] = ()) -> Prepared:
    """Load and check ``flow`` and plan it; raises :class:`FlowError` (an invalid flow,
    :class:`PlanInvalid` for an unknown job or matrix filter, :class:`RunInputError` for a
    missing or ill-typed input)."""
    from flowray.plan.flowcache import load_flow_cached as load_flow
    from flowray.plan.graph import CycleError
    from flowray.plan.plan import PlanError, build_plan

    workspace = _workspace(workdir)
    path = _flow_file(flow, workspace)
    pinner = lazy_pinner(workspace, offline, path, on_action_event)
    cached = load_flow(path, workspace, use_cache=use_cache, pinner=pinner,
                       variables=variables)
    try:
        plan = build_plan(cached.data, matrix_filter=dict(matrix or {}), only_jobs=list(jobs))
    except (PlanError, CycleError) as exc:
        raise PlanInvalid(path, str(exc)) from exc
    run_inputs = coerce_run_inputs(cached.data, dict(inputs or {}), path)
    return Prepared(flow_path=path, workspace=workspace, cached=cached, plan=plan,
                    inputs=run_inputs, pinner=pinner, warnings=list(cached.warnings),
                    use_cache=use_cache)


MAX_INPUT_DEPTH = 100  # lists and maps inside an input (a record must stay readable)


def _depth(value: Any, limit: int = MAX_INPUT_DEPTH + 1) -> int:
    """How deep lists and maps nest in ``value`` (counting stops past ``limit``)."""
    depth, level = 0, [value]
    while level and depth <= limit:
        nxt: list[Any] = []
        for v in level:
            if isinstance(v, Mapping):
                nxt.extend(v.values())
            elif isinstance(v, list | tuple):
                nxt.extend(v)
        if not nxt:
            break
        depth += 1
        level = nxt
    return depth


def coerce_run_inputs(flow: Mapping[str, Any], given: dict[str, Any], flow_file: str = ""
                      ) -> dict[str, Any]:
    """Apply the types and defaults that ``triggers.manual`` declares (its ``inputs``, and
    DataTorch's ``form``, a JSON Schema), if any; when it declares some, an input it does not
    declare is refused (a misspelt name would otherwise be ignored)."""
    from flowray.spec.triggers import manual_inputs

    for name, given_value in given.items():
        try:  # a run's inputs are kept in its record, and read by templates as JSON values
            json.dumps(given_value)
            if _depth(given_value) > MAX_INPUT_DEPTH:
                raise RunInputError(str(name), f"input '{name}' is nested more than "
                                    f"{MAX_INPUT_DEPTH} levels deep", reason="type",
                                    flow_file=flow_file)
        except (TypeError, ValueError, RecursionError):
            raise RunInputError(str(name), f"input '{name}' is not a JSON value (text, a number "
                                "of at most 4300 digits, true/false, null, or lists and maps "
                                "of them)", reason="type", flow_file=flow_file) from None
    declared = manual_inputs(flow)
    if not declared:
        return dict(given)
    from flowray.spec.inputs import InputError, coerce_input

    unknown = [name for name in given if name not in declared]
    if unknown:
        from flowray.spec.diagnostics import did_you_mean

        name = unknown[0]
        hint = did_you_mean(name, [str(d) for d in declared])
        raise RunInputError(name, f"input '{name}' is not declared by this flow{hint} "
                            f"(declared by triggers.manual: {', '.join(declared)})",
                            reason="unknown", flow_file=flow_file)
    out: dict[str, Any] = {}
    for name, full in declared.items():
        if name in given:
            value: Any = given[name]
        elif full["default"] is not None:
            value = full["default"]
        elif full["required"]:
            raise RunInputError(name, f"input '{name}' is required by this flow",
                                reason="required", flow_file=flow_file)
        else:
            continue
        try:
            out[name] = coerce_input(name, full, value)  # type: ignore[arg-type]
        except InputError as exc:
            raise RunInputError(name, str(exc), reason="type", flow_file=flow_file) from exc
    return out


def check_secrets(prepared: Prepared, secrets: Collection[str]) -> list[Diagnostic]:
    """The reads of secrets not in ``secrets`` (names) by the jobs the run would run: raises
    :class:`SecretsMissing` where one is read outside an ``if:``-guarded job or step, and
    returns warnings for the guarded ones (the condition may skip them)."""
    from flowray.spec.secret_refs import missing_secrets

    found = missing_secrets(prepared.flow_path, prepared.flow, secrets,
                            jobs={j.job_id for j in prepared.plan.jobs})
    names = [name for name, d in found if d.severity == "error"]
    if names:
        raise SecretsMissing(list(dict.fromkeys(names)), [d for _, d in found])
    return [d for _, d in found]


def _step_actions(prepared: Prepared) -> dict[str, dict[int, StepAction]]:
    """Each job's pinned git actions by step index, with requirements environments made."""
    cached, pinner = prepared.cached, prepared.pinner
    if not cached.git:
        return {}
    from flowray.actions import ActionError, ensure_venv
    from flowray.execute.job import StepAction
    from flowray.plan.plan import is_git_action

    pythons: dict[str, str | None] = {}
    out: dict[str, dict[int, StepAction]] = {}
    for job_id, job in cached.data["jobs"].items():
        for i, step in enumerate(job["steps"]):
            if step["action"] is None or not is_git_action(step["action"]):
                continue
            g = cached.git.get(pinner().key_of(step["action"]))
            if g is None:
                continue
            if g.key not in pythons:
                pythons[g.key] = None
                if g.data["runs"]["using"] == "python":
                    try:
                        pythons[g.key] = ensure_venv(
                            pinner().pins[g.key], python=sys.executable,
                            system_site_packages=pinner().config.system_site_packages,
                        )
                    except ActionError as exc:
                        raise StartError(str(exc)) from exc
            pin = pinner().pins[g.key]
            out.setdefault(job_id, {})[i] = StepAction(
                g.path, g.data, pythons[g.key], pin=pin,
                system_site_packages=pinner().config.system_site_packages,
                identity=pin.identity, sha=g.sha, shown=g.display)
    return out


def check_run_numbers(cpus: Any, grace: Any, gpus: Any
                      ) -> tuple[float | None, float | None, list[str] | None]:
    """``cpus``, ``grace`` and ``gpus`` of a run as checked values; raises StartError naming
    the first that is not a finite number in range (or a list of GPU ids)."""
    from flowray.spec.limits import (
        MAX_CPUS,
        MAX_GPUS,
        MAX_GRACE_SECONDS,
        gpu_ids_problem,
        number_problem,
    )

    if cpus is not None:
        problem = number_problem(cpus, low=0, high=MAX_CPUS, low_open=True)
        if problem:
            raise StartError(f"cpus {problem}")
    if grace is not None:
        problem = number_problem(grace, low=0, high=MAX_GRACE_SECONDS)
        if problem:
            raise StartError(f"grace {problem}")
    ids: list[str] | None = None
    if gpus is not None:
        if isinstance(gpus, str):
            gpus = [g.strip() for g in gpus.split(",") if g.strip()]
        if not isinstance(gpus, Sequence) or not all(isinstance(g, str) for g in gpus):
            raise StartError(f"gpus must be a list of GPU ids (text, such as ['0', '1']), got "
                             f"{type(gpus).__name__}")
        if len(gpus) > MAX_GPUS:
            raise StartError(f"gpus names {len(gpus)} GPUs, more than the limit of {MAX_GPUS}")
        bad = next((g for g in gpus if not g or "," in g or "\0" in g or g != g.strip()), None)
        if bad is not None:
            raise StartError(f"gpus: {bad!r} is not a GPU id")
        problem = gpu_ids_problem(gpus)
        if problem:
            raise StartError(f"gpus: {problem}")
        ids = list(gpus)
    return (None if cpus is None else float(cpus), None if grace is None else float(grace),
            ids)


def local_gpus(prepared: Prepared, gpus: Sequence[str] | None) -> list[str]:
    """The GPU ids the local pool hands out; refuses jobs this machine cannot run."""
    from flowray.backends.local import detect_gpus, multi_node_refusal

    try:
        ids = list(gpus) if gpus is not None else detect_gpus()
    except ValueError as exc:  # FLOWRAY_GPUS that names no GPUs, or too many
        raise StartError(str(exc)) from None
    for j in prepared.plan.jobs:
        if j.data["resources"]["nodes"] > 1:
            raise StartError(multi_node_refusal(j.key, j.data["resources"]))
        want = j.data["resources"]["gpus"]
        if want and want > len(ids):
            raise StartError(
                f"job '{j.key}' needs {want} GPU{'s' if want > 1 else ''}; this machine has "
                f"{len(ids)} (set --gpus or FLOWRAY_GPUS to name them)")
    return ids


_LIVE: set[Run] = set()  # runs of this process that have not ended
_LIVE_LOCK = threading.Lock()
_AT_EXIT = False


def _stop_live_runs() -> None:
    """At interpreter exit: a run nobody waited for must not leave its steps running (they
    would outlive the process, and the record would say ``running`` for ever)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for run in live:
        run.cancel(reason="the Python process that started the run exited")
    for run in live:
        run.wait_record(timeout=run.grace + 30)


class Run:
    """A run that was started: watch its events, wait for it, cancel it.

    ``events()`` may be called by several readers at once, at any time: each gets every event
    from the first (or after ``after``), in order, and a slow reader never slows the run.
    """

    def __init__(self, coordinator: Coordinator, *, writer: RecordWriter,
                 cleanup: Callable[[], None], summary: str, warnings: list[str]) -> None:
        from flowray.runtime.control import ControlChannel

        self._coordinator = coordinator
        self._writer = writer
        self._cleanup = cleanup
        self.id: str = coordinator.run_id
        self.run_dir: str = coordinator.run_dir
        self.workspace: str = coordinator.opts.workspace
        self.summary = summary  # where it runs, in words ("Ray cluster ...: 3 nodes, ...")
        self.warnings = warnings  # the flow's warnings, formatted
        self._status = Status.RUNNING
        self._exit_code: int | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        try:
            self._control: ControlChannel | None = ControlChannel(
                self.run_dir, lambda reason: self.cancel(reason=reason))
        except OSError:
            self._control = None  # no FIFOs here: `flowray cancel` says it cannot reach it
        from flowray.runtime.watchdog import Watchdog

        # Should this process die before the run ends, the watchdog stops the run's steps and
        # marks its record failed.
        self._watchdog = Watchdog(self.run_dir, self.id, coordinator.opts.grace)
        # run.started (and so the first record.json) only once the channel is there, so that
        # a `flowray cancel` that finds the run always finds its channel.
        coordinator.start_events()
        global _AT_EXIT
        with _LIVE_LOCK:
            _LIVE.add(self)
            if not _AT_EXIT:
                import atexit

                atexit.register(_stop_live_runs)
                _AT_EXIT = True
        self._thread = threading.Thread(target=self._main, name=f"flowray-run-{self.id}",
                                        daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            result = self._coordinator.run()
            self._status, self._exit_code = result.status, result.exit_code
        except BaseException as exc:  # a bug: the run must still end, and say so
            self._error = exc
            self._status, self._exit_code = Status.FAILURE, 1
            with contextlib.suppress(Exception):
                self._coordinator.fail_run(f"internal error in flowray: {exc!r}")
        finally:
            try:
                self._cleanup()
            finally:
                self._coordinator.bus.close()
                self._writer.join()
                if self._writer.record.get("status") == "failure" and \
                        self._status is Status.SUCCESS:  # its files could not be written
                    self._status, self._exit_code = Status.FAILURE, 1
                # Only once the final record is written: a reader that finds the channel
                # gone while the record says running takes the run for lost.
                if self._control is not None:
                    self._control.close()
                self._watchdog.done()
                self._done.set()
                with _LIVE_LOCK:
                    _LIVE.discard(self)

    # ------------------------------------------------------------------------- watching

    @property
    def status(self) -> Status:
        """``running`` until the run ended, then its final status."""
        return self._status if self._done.is_set() else Status.RUNNING

    @property
    def exit_code(self) -> int | None:
        """What ``flowray run`` exits with (0, 1 or 130); None while it runs."""
        return self._exit_code if self._done.is_set() else None

    @property
    def grace(self) -> float:
        """Seconds between SIGTERM and SIGKILL when the run's steps are stopped."""
        return self._coordinator.opts.grace

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def events(self, *, after: int = 0, maxsize: int | None = None,
               skip: Sequence[str] = ()) -> Subscription:
        """The run's events with ``seq > after``, live; iteration ends after
        ``run.finished``. ``skip``: event types this reader does not want (``step.log``
        for a reader of statuses only)."""
        from flowray.runtime.events import DEFAULT_QUEUE

        return self._coordinator.bus.subscribe(
            after=after, maxsize=DEFAULT_QUEUE if maxsize is None else maxsize, skip=skip)

    def wait_record(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The final record as a plain dict (None if ``timeout`` passed first)."""
        if timeout is not None:
            if timeout != timeout:
                raise ValueError("timeout must be a number of seconds or None, got nan")
            if timeout == float("inf"):
                timeout = None
        if not self._done.wait(timeout):
            return None
        if self._error is not None and not isinstance(self._error, Exception):
            raise self._error  # KeyboardInterrupt, SystemExit
        return self._writer.record

    def wait(self, timeout: float | None = None) -> RunRecord:
        """Wait for the run to end; its record. Raises ``TimeoutError`` if ``timeout``
        passed first (the run goes on)."""
        record = self.wait_record(timeout)
        if record is None:
            raise TimeoutError(f"run {self.id} is still running after {timeout:g}s")
        from flowray.runtime.record import RunRecord

        return RunRecord.model_validate(record)

    @property
    def record_error(self) -> str | None:
        """Why the record could not be written (a full disk), if it could not."""
        return self._writer.error or self._coordinator.bus.file_error

    def cancel(self, grace: float | None = None, *, reason: str = "cancelled") -> None:
        """Stop the run: every step gets SIGTERM, then SIGKILL after ``grace`` seconds (the
        run's own grace when None). Returns at once; :meth:`wait` for the end. Raises
        ValueError when ``grace`` is not a number of seconds from 0 to 3600."""
        if grace is not None:
            from flowray.spec.limits import MAX_GRACE_SECONDS, number_problem

            problem = number_problem(grace, low=0, high=MAX_GRACE_SECONDS)
            if problem:
                raise ValueError(f"grace {problem}")
        self._coordinator.cancel(reason, grace=grace)

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.status.value}>"

    def __iter__(self) -> Iterator[Any]:
        return iter(self.events())


def _type_name(value: object) -> str:
    return type(value).__name__


def _check_text_map(what: str, value: object) -> None:
    """``secrets`` and ``env`` map names to text (the values are not shown: they may be
    secret)."""
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise StartError(f"{what} must be a map from names to text, got {_type_name(value)}")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise StartError(f"{what} must map names to text, got {_type_name(k)} -> "
                             f"{_type_name(v)}")


def start(flow: str | os.PathLike[str], *, inputs: Mapping[str, Any] | None = None,
          secrets: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None,
          workdir: str | os.PathLike[str] = ".", backend: str | None = None,
          jobs: Sequence[str] | None = None, fail_fast: bool = False,
          matrix: Mapping[str, str] | None = None, event: Mapping[str, Any] | None = None,
          grace: float | None = None, offline: bool | None = None, use_cache: bool = True,
          cpus: float | None = None, gpus: Sequence[str] | None = None,
          trigger: str = "api", prepared: Prepared | None = None,
          on_action_event: Callable[[str], None] | None = None,
          variables: Mapping[str, str] | None = None, run_id: str | None = None,
          reuse: Mapping[str, Mapping[str, Any]] | None = None,
          slots: Slots | None = None, base_env: Mapping[str, str] | None = None) -> Run:
    """Start a run of ``flow`` (a path, or YAML text) and return it at once.

    ``backend``: None or ``"local"`` (this machine's CPUs and GPUs), ``"ray"`` (a local Ray
    started for the run), or a Ray address (``HOST:PORT``, ``ray://HOST:PORT``).
    ``inputs`` are typed by the flow's ``triggers.manual.inputs``; ``secrets`` are masked in
    every event, log and record; ``env`` is added to every step's environment. ``jobs`` and
    ``matrix`` pick what runs (a job and the jobs it needs; cells whose values match).
    ``cpus``/``gpus`` size the local pool (or the embedded Ray). ``variables`` are read as
    ``variables.NAME`` beside the flow's own (which win): the service's, written by its admins
    and as trusted as the flow. ``run_id`` names the run (one from ``new_run_id``; the service
    gives the id it acknowledged); a new one by default. ``reuse`` (a rerun): job key ->
    ``{"run": id, "outputs": {...}}``, jobs that end ``success`` with those outputs without
    running again. ``slots``: this machine's CPUs and GPUs shared with other runs (the
    service's runs, so that two never get the same GPU); the run's own by default.
    ``base_env``: the environment steps start from instead of this process's (``env`` is
    added to it).

    Raises :class:`~flowray.spec.FlowError` (an invalid flow, with its diagnostics),
    :class:`RunInputError`, :class:`SecretsMissing` (a secret the flow reads is not in
    ``secrets``; see :func:`check_secrets`) and :class:`StartError` before anything runs.
    """
    from flowray.execute.process import DEFAULT_GRACE_SECONDS
    from flowray.plan.actions import ActionTable
    from flowray.runtime.coordinator import Coordinator, RunOptions
    from flowray.runtime.recorder import RecordWriter
    from flowray.spec.envnames import env_problem
    from flowray.store.records import new_run_id, runs_dir

    cpus, grace, gpus = check_run_numbers(cpus, grace, gpus)
    _check_text_map("secrets", secrets)
    _check_text_map("env", env)
    _check_text_map("variables", variables)
    _check_text_map("base_env", base_env)
    if run_id is not None:
        from flowray.store.records import run_id_problem

        problem = run_id_problem(run_id)
        if problem:
            raise StartError(problem)
    if inputs is not None and (not isinstance(inputs, Mapping)
                               or not all(isinstance(k, str) for k in inputs)):
        raise StartError(f"inputs must be a map from names to values, got "
                         f"{_type_name(inputs)}")
    for name, value in (env or {}).items():
        problem = env_problem(name, value)
        if problem:
            raise StartError(f"env: {problem}")
    try:  # the event is kept in the record and read by templates as a JSON value
        json.dumps(dict(event or {}))
    except (TypeError, ValueError, RecursionError):
        raise StartError("event must be a JSON value: a map of text, numbers (of at most 4300 "
                         "digits), true/false, null, lists and maps") from None
    if prepared is None:
        prepared = prepare(flow, workdir=workdir, inputs=inputs, jobs=jobs or (),
                           matrix=matrix, offline=offline, use_cache=use_cache,
                           on_action_event=on_action_event, variables=list(variables or {}))
    secret_warnings = check_secrets(prepared, list(secrets or {}))
    workspace = prepared.workspace
    on_ray = backend not in (None, "local")
    if slots is not None and not on_ray:
        gpu_ids: list[str] | None = local_gpus(prepared, slots.gpus)
        cpus = slots.total_cpus
    else:
        gpu_ids = None if on_ray else local_gpus(prepared, gpus)
    options = RunOptions(
        workspace=workspace,
        flow_path=os.path.relpath(os.path.abspath(prepared.flow_path), workspace),
        inputs=prepared.inputs, secrets=dict(secrets or {}), env=dict(env or {}),
        event=dict(event or {}), fail_fast=fail_fast,
        grace=grace if grace is not None else DEFAULT_GRACE_SECONDS,
        step_actions=_step_actions(prepared),
        action_commits={g.display: g.sha for g in prepared.cached.git.values()},
        trigger=trigger, backend="local" if not on_ray else str(backend),
        # Only git actions are cached: without them there is nothing to keep.
        result_cache=os.path.join(prepared.pinner().config.cache_dir, "results")
        if prepared.cached.git else None,
        reuse_results=prepared.use_cache,
        variables=dict(variables or {}),
        reuse={k: dict(v) for k, v in (reuse or {}).items()},
        base_env=dict(base_env) if base_env is not None else None,
    )
    actions = ActionTable(prepared.cached.actions)
    hold = contextlib.ExitStack()
    if prepared.cached.git:  # keep `flowray actions prune` away from what this run uses
        pinner = prepared.pinner
        hold.enter_context(pinner().cache.hold(
            [pinner().pins[key] for key in prepared.cached.git]))
    cluster: Any = None
    pools: list[Any] = []
    try:
        if on_ray:
            cluster = _connect(backend, cpus, gpus, prepared)
            options.hosts = cluster.hosts
            summary = cluster.summary()

            def factory(c: Coordinator) -> Any:
                return cluster.dispatcher(
                    events=c, run_id=c.run_id, run_dir=c.run_dir, masker=c.masker,
                    grace=c.opts.grace, workspace=c.opts.workspace, env=c.opts.env,
                    base_env=c.base_env, contexts=c.static_contexts,
                    step_actions=c.opts.step_actions, load_action=actions)
        else:
            from flowray.backends.local import LocalPool

            total = cpus if cpus is not None else float(os.cpu_count() or 1)
            summary = f"this machine: {total:g} CPUs, {len(gpu_ids or [])} GPUs"

            def factory(c: Coordinator) -> Any:
                pool = LocalPool(cpus=total, gpus=gpu_ids or [], events=c, masker=c.masker,
                                 load_action=actions, grace=c.opts.grace, slots=slots,
                                 wake=c.wake)
                pools.append(pool)
                return pool

        if run_id is None:
            run_id = new_run_id()
        elif os.path.exists(os.path.join(runs_dir(workspace), run_id)):
            raise StartError(f"a run with id {run_id} already exists in {workspace}")
        try:
            coordinator = Coordinator(
                prepared.plan, dataclasses.replace(options, run_id=run_id),
                dispatcher_factory=factory,
                gpu_count=cluster.gpus if cluster is not None else len(gpu_ids or []),
            )
        except (StartError, KeyboardInterrupt):
            _forget_run(workspace, run_id)
            raise
        except OSError as exc:  # the run's files (a full disk, a folder that is a file)
            _forget_run(workspace, run_id)
            from flowray.store.fs import os_error_text

            if exc.filename is None:  # a connection, not a file: the backend's
                raise StartError(f"cannot start the run on {summary}: "
                                 f"{os_error_text(exc)}") from exc
            raise StartError(f"cannot start the run: {os_error_text(exc)}") from exc
        except Exception as exc:  # the backend could not take the run (Ray, mostly)
            _forget_run(workspace, run_id)
            raise StartError(f"cannot start the run on {summary}: "
                             f"{type(exc).__name__}: {exc}") from exc
        bus = coordinator.bus
        writer = RecordWriter(bus.subscribe(skip=("step.log",)), coordinator.run_dir,
                              file_error=lambda: bus.file_error)
    except BaseException:
        hold.close()
        if cluster is not None:
            cluster.close()
        raise

    def cleanup() -> None:
        try:
            hold.close()
        finally:
            for pool in pools:
                pool.close()
            if cluster is not None:
                cluster.close()

    return Run(coordinator, writer=writer, cleanup=cleanup, summary=summary,
               warnings=[*prepared.warnings, *(d.format() for d in secret_warnings)])


def _forget_run(workspace: str, run_id: str) -> None:
    """Remove the folder of a run that could not start (nothing ran; nothing to keep)."""
    import shutil

    from flowray.store.records import runs_dir

    shutil.rmtree(os.path.join(runs_dir(workspace), run_id), ignore_errors=True)


def _connect(address: str | None, cpus: float | None, gpus: Sequence[str] | None,
             prepared: Prepared) -> Any:
    """The Ray of backend "ray" (embedded) or an address, with every job checked against it."""
    from flowray.backends.ray.cluster import RayCluster, RayConnectError

    where = None if address == "ray" else address
    if where and (cpus is not None or gpus is not None):
        raise StartError("--cpus and --gpus size the local Ray of --ray; the cluster at "
                         "--address (or FLOWRAY_ADDRESS) has its own")
    try:
        cluster = RayCluster.connect(where, cpus=cpus,
                                     gpus=list(gpus) if gpus is not None else None)
    except RayConnectError as exc:
        raise StartError(str(exc)) from exc
    problems = cluster.unfit(prepared.plan.jobs)
    if problems:
        cluster.close()
        raise StartError("\n".join(problems))
    return cluster
