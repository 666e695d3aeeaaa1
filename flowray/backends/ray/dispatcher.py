"""The Ray dispatcher: each job (each matrix cell) one Ray task with the job's resources.

The coordinator calls :meth:`RayDispatcher.try_start` from its loop; the task is submitted and
the call returns at once. Tasks are admitted while the sum of what the run's tasks take fits
the cluster's resources, so jobs beyond that wait in the coordinator's queues (where
``max-parallel``, fail-fast and cancel reach them) rather than in Ray's.

A collector thread polls the run's :class:`~flowray.backends.ray.node.EventHub` while jobs
run, so step events and log lines reach the run's observers as they happen, and hands each finished
task's result (with its last events, in order after those the hub had) to the coordinator. A
task that raised instead (cancelled while queued, its worker or node lost beyond Ray's
retries) becomes a job result here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import os
import pickle
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import IO, Any

import ray
import ray.exceptions
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from flowray.backends import RunEvents
from flowray.backends.ray.node import (
    Event,
    GangSpec,
    HubItem,
    NodeInfo,
    NodeReturn,
    NodeSpec,
    RunStatic,
    event_hub,
    free_port,
    run_on_node,
    sweep_node,
)
from flowray.backends.ray.resources import TaskShape, describe, fits, task_shape, unfit
from flowray.backends.ray.ship import Shipment, unpack_files
from flowray.execute.job import (
    ActionLoader,
    JobRequest,
    JobResult,
    StepAction,
    StepResult,
    step_display_name,
)
from flowray.execute.secrets import Masker
from flowray.plan.plan import JobPlan
from flowray.spec.files import local_action_folder, outside_problem
from flowray.spec.types import ActionData
from flowray.status import Status

# While jobs run, the collector asks the hub for their events this often.
_POLL_SECONDS = 0.1
# How often try_start may ask Ray for the cluster's resources when a job does not fit.
_REFRESH_SECONDS = 1.0
# Stopping: after the cancel flag, nodes get the grace period and this much more to stop
# their steps and report; then ray.cancel (KeyboardInterrupt in the task), then force.
_STOP_SLACK = 5.0
_NOT_SHARED = object()
# A task that has not reported starting this long after a cancel is cancelled in Ray's queue.
_STARTED_WITHIN = 1.0
# A multi-node job waiting for its nodes: how often it looks for a cancel, and after how long
# a notice says it waits.
_GANG_POLL_SECONDS = 0.25
_GANG_WAIT_NOTE = 10.0
# A job handed to Ray that no node has taken yet: a notice says what it waits for after
# _WAIT_NOTE seconds and again every _WAIT_NOTE_EVERY; past its timeout it fails. Checked
# every _WAIT_CHECK_SECONDS.
_WAIT_NOTE = 10.0
_WAIT_NOTE_EVERY = 300.0
_WAIT_CHECK_SECONDS = 1.0
# A job lost with its node is reported once Ray has marked the node dead (at most this long
# after its task failed): until then Ray may place the next attempt there, or fetch the run's
# objects from it (and such a fetch waits out Ray's pull timeout, 10 s).
_NODE_DEATH_WAIT = 60.0
_NODE_DEATH_POLL = 0.5
# The hub answering "unavailable" (rather than dead) this long in a row counts as lost.
_HUB_UNAVAILABLE_LIMIT = 30.0


@dataclass
class _Gang:
    """A multi-node job: a STRICT_SPREAD placement group, one task per rank."""

    id: int
    plan: JobPlan
    shape: TaskShape
    needs: dict[str, float]  # every rank's resources together
    done: Callable[[JobResult], None]
    tokens: list[int] = field(default_factory=list)  # each rank's submission, by rank
    results: dict[int, JobResult] = field(default_factory=dict)
    pg: Any = None
    stopping: bool = False  # a rank failed or was lost: the others are being stopped
    cancelled: bool = False


@dataclass
class _Submitted:
    token: int
    plan: JobPlan
    needs: dict[str, float]
    done: Callable[[JobResult], None]
    ref: Any = None  # the task's ObjectRef
    started: float = 0.0  # time.time() when the first event came from the node
    label: str = ""  # what it reports as: the job's key, key[rank] for a rank
    node: NodeInfo | None = None
    steps: dict[int, StepResult] = field(default_factory=dict)  # latest copy of each
    remote: bool = False  # on a node other than the coordinator's: logs are written here
    cancelled: bool = False  # this dispatcher asked it to stop
    name: str = ""
    logs: dict[int, IO[str]] = field(default_factory=dict)  # open step logs (remote jobs)
    submitted: float = 0.0  # time.monotonic() it was handed to Ray (not for gang ranks)
    timeout: float | None = None  # the job's timeout (s): also how long it waits for a node
    noted: float = 0.0  # time.monotonic() of the last notice that it waits for a node


class RayDispatcher:
    """Implements the coordinator's ``Dispatcher`` protocol on a connected Ray cluster."""

    def __init__(
        self,
        *,
        events: RunEvents,
        masker: Masker,
        load_action: ActionLoader,
        grace: float,
        run_dir: str = ".",
        run_id: str = "",
        shipment: Shipment | None = None,
        ship_error: str | None = None,
        env: dict[str, str] | None = None,
        contexts: dict[str, Any] | None = None,
    ) -> None:
        self.events = events
        self.run_dir = run_dir
        self.shipment = shipment
        self.ship_error = ship_error  # the run's files could not be shipped: no job starts
        self.masker = masker
        self.load_action = load_action
        self.grace = grace
        self._lock = threading.Condition()
        self._jobs: dict[int, _Submitted] = {}
        self._by_key: dict[str, int] = {}
        self._seen: dict[str, NodeInfo] = {}  # every node a task started on, by id
        self._log_lock = threading.Lock()  # logs are written by the collector and by close()
        self._ended: list[tuple[int, NodeReturn | BaseException]] = []  # tasks, as they end
        self._polls: list[tuple[int, list[HubItem] | BaseException]] = []  # hub polls back
        self._tokens = itertools.count(1)
        self._gangs: dict[str, _Gang] = {}  # multi-node jobs by key, until they end
        self._shapes: dict[str, TaskShape] = {}
        self._actions: dict[str, dict[str, ActionData]] = {}
        self._sendable_actions: dict[str, dict[int, StepAction]] = {}
        self._containers = False  # a job with container steps was started
        self._tasks: dict[str, Any] = {}  # run_on_node with each job id's options
        self._masks: list[str] = []
        self._capacity: dict[str, float] = {}
        self._used: dict[str, float] = {}
        self._node_resources: list[dict[str, float]] = []
        self._refreshed = 0.0
        self._cancelled = False
        self._closed = False
        self._lost_keys: set[str] = set()  # jobs an attempt of which was lost with its node
        self._next_wait_check = 0.0
        self._hub_unavailable_since: float | None = None
        self._refresh()
        self.run_id = run_id
        self._hub: Any = event_hub(ray.get_runtime_context().get_node_id())
        ray.get(self._hub.open.remote(run_id))
        # The environment and contexts the coordinator gives every job (the same objects).
        self._static_env = env if env is not None else {}
        self._static_contexts = contexts if contexts is not None else {}
        self._run = [ray.put(RunStatic(hub=self._hub, grace=grace,
                                       env=[ray.put(self._static_env)],
                                       contexts=self._static_contexts, shipment=shipment))]
        self._run_key = f"{run_id}.{os.getpid()}.{id(self)}"
        self._collector = threading.Thread(target=self._collect, name="flowray-ray-events",
                                           daemon=True)
        self._collector.start()

    # ------------------------------------------------------------------------- protocol

    def try_start(
        self,
        plan: JobPlan,
        request_for: Callable[[list[str] | None], JobRequest],
        done: Callable[[JobResult], None],
    ) -> bool:
        if self.ship_error is not None:
            now = time.time()
            done(JobResult(Status.FAILURE, [], {}, now, now, self.ship_error))
            return True
        shape = self._shapes.get(plan.job_id)
        if shape is None:
            shape = self._shapes[plan.job_id] = task_shape(plan.data["resources"])
        if shape.nodes > 1:
            return self._try_start_gang(plan, shape, request_for, done)
        needs = shape.needs()
        with self._lock:
            got = self._reserve(plan, shape, needs)
            if got is True:
                sub = _Submitted(next(self._tokens), plan, needs, done, label=plan.key,
                                 name=plan.key)
                self._jobs[sub.token] = sub
                self._by_key[plan.key] = sub.token
                self._lock.notify_all()  # the collector polls the hub while jobs run
        if got is not True:
            return self._refused(got, done)
        request = request_for(None)
        spec = NodeSpec(token=sub.token, gpus=shape.gpus,
                        actions=self._local_actions(plan, request), masks=list(self._masks))
        task = self._tasks.get(plan.job_id)
        if task is None:  # one set of options per job id (matrix cells share it)
            task = self._tasks[plan.job_id] = run_on_node.options(
                name=f"flowray {plan.job_id}", **shape.options())
        ref = task.remote(self._run_key, self._run,
                          _packed(self._sendable(plan.job_id, request), spec))
        sub.ref = ref
        sub.submitted, sub.timeout = time.monotonic(), request.timeout
        ref.future().add_done_callback(functools.partial(self._task_ended, sub.token))
        return True

    def cancel(self) -> None:
        """Stop every job on every node: SIGTERM, grace, SIGKILL (blocks until done)."""
        with self._lock:
            self._cancelled = True
            subs = list(self._jobs.values())
        if not subs:
            return
        # If the hub is gone the nodes stop on their own, and ray.cancel does the rest.
        with contextlib.suppress(Exception):
            ray.get(self._hub.cancel.remote(self.run_id, None), timeout=10)
        self._stop(subs)

    def cancel_job(self, key: str) -> None:
        with self._lock:
            gang = self._gangs.get(key)
            if gang is not None:
                gang.cancelled = True
                subs = [self._jobs[t] for t in gang.tokens if t in self._jobs]
            else:
                sub = self._jobs.get(self._by_key.get(key, 0))
                subs = [sub] if sub is not None else []
        if not subs:
            return
        for sub in subs:
            sub.cancelled = True
            self._hub.cancel.remote(self.run_id, sub.token)
        threading.Thread(target=self._stop, args=(subs,), name="flowray-cancel-job",
                         daemon=True).start()

    # ------------------------------------------------------------------------- more API

    def nodes_used(self) -> list[NodeInfo]:
        """Every node a task of the run started on (all ranks, all attempts)."""
        return list(self._seen.values())

    def close(self) -> None:
        """Stop the collector and the hub; jobs still in flight are reported failed."""
        with self._lock:
            self._closed = True
            left = list(self._jobs.values())
        for sub in left:
            self._finish(sub.token, self._lost_result(sub, "the run ended before the job did"))
        with self._lock:
            self._lock.notify_all()
        self._collector.join(timeout=5)
        with contextlib.suppress(Exception):
            self._hub.close.remote(self.run_id)

    # ------------------------------------------------------------------------- internals

    def _reserve(self, plan: JobPlan, shape: TaskShape, needs: dict[str, float]) -> bool | str:
        """(Holding the lock.) Take ``needs`` from the free resources: True when taken, False
        when they do not fit now, or why no live node can run the job any more."""
        if self._cancelled or self._closed:
            return False
        if not fits(needs, self._free()):
            if time.monotonic() - self._refreshed < _REFRESH_SECONDS:
                return False
            self._refresh()
            why_not = unfit(plan.key, shape, self._node_resources)
            if why_not is not None and plan.key not in self._lost_keys:
                return why_not
            # A job lost with its node that no live node can hold now goes to Ray all the
            # same, to wait there for a node that can (one replacing the lost node) until its
            # timeout (_check_waits).
            if why_not is None and not fits(needs, self._free()):
                return False
        for name, amount in needs.items():
            self._used[name] = self._used.get(name, 0.0) + amount
        return True

    @staticmethod
    def _refused(got: bool | str, done: Callable[[JobResult], None]) -> bool:
        """``try_start``'s answer when nothing was reserved: wait, or fail the job (the nodes
        that could run it are gone; the check before the run saw one)."""
        if got is False:
            return False
        now = time.time()
        done(JobResult(Status.FAILURE, [], {}, now, now, str(got)))
        return True

    def _free(self) -> dict[str, float]:
        return {k: v - self._used.get(k, 0.0) for k, v in self._capacity.items()}

    def _refresh(self) -> None:
        self._refreshed = time.monotonic()
        self._capacity = {k: float(v) for k, v in ray.cluster_resources().items()}  # type: ignore[no-untyped-call]
        self._node_resources = [
            {k: float(v) for k, v in n["Resources"].items()}
            for n in ray.nodes()  # type: ignore[no-untyped-call]
            if n.get("Alive")
        ]

    def _local_actions(self, plan: JobPlan, request: JobRequest) -> dict[str, ActionData]:
        """The job's local actions, validated here once per job id, so nodes need not."""
        known = self._actions.get(plan.job_id)
        if known is None:
            self._containers = self._containers or _has_containers(plan, request)
            known = {}
            for step in plan.data["steps"]:
                ref = step["action"]
                if isinstance(ref, str) and ref.startswith("./"):
                    path = local_action_folder(request.workspace, ref)
                    if outside_problem(request.workspace, path) is not None:
                        continue  # never read; the node refuses the step
                    # A broken action: the node reports the same error at the step.
                    with contextlib.suppress(Exception):
                        known[path] = self.load_action(path, None)
            self._actions[plan.job_id] = known
        return known

    def _sendable(self, job_id: str, request: JobRequest) -> JobRequest:
        """The request as it travels: the environment and the contexts every job shares
        come from the run's :class:`RunStatic`, and git actions without their cache entries
        (which hold repository URLs that may carry credentials; nodes get what the shipment
        says instead)."""
        if request.env is self._static_env:
            request.env = {}
        shared = self._static_contexts
        request.contexts = {k: v for k, v in request.contexts.items()
                            if shared.get(k, _NOT_SHARED) is not v}
        actions = self._sendable_actions.get(job_id)
        if actions is None:
            actions = self._sendable_actions[job_id] = {
                i: dataclasses.replace(a, pin=None) for i, a in request.step_actions.items()}
        request.step_actions = actions
        return request

    def _task_ended(self, token: int, fut: Future[Any]) -> None:
        """A task's future completed (in a Ray thread): hand it to the collector."""
        outcome: NodeReturn | BaseException
        try:
            outcome = pickle.loads(fut.result())
        except BaseException as exc:  # the task raised, or the future was cancelled
            outcome = exc
        if isinstance(outcome, NodeReturn) and outcome.files:
            # Artifacts from another node: unpacked aside, so no job's output waits for them.
            threading.Thread(target=self._unpack_then_end, args=(token, outcome),
                             name="flowray-artifacts", daemon=True).start()
            return
        with self._lock:
            self._ended.append((token, outcome))
            self._lock.notify_all()

    def _unpack_then_end(self, token: int, outcome: NodeReturn) -> None:
        try:
            unpack_files(outcome.files, self.run_dir)
        except Exception as exc:
            outcome.result.warnings.append(
                f"the job's artifacts could not be copied back from its node: {exc}")
        outcome.files = b""
        with self._lock:
            self._ended.append((token, outcome))
            self._lock.notify_all()

    def _drained(self, generation: int, fut: Future[Any]) -> None:
        """A poll of the hub came back (in a Ray thread): hand it to the collector."""
        try:
            items: list[HubItem] | BaseException | None = fut.result()
            if items is None:  # the hub no longer knows the run (it was restarted)
                items = RuntimeError("the hub lost this run's events")
        except BaseException as exc:
            items = exc
        with self._lock:
            self._polls.append((generation, items))
            self._lock.notify_all()

    def _collect(self) -> None:
        """Deliver hub batches and ended tasks in order; never waits on Ray itself.

        The hub is polled every ``_POLL_SECONDS`` while jobs run, one poll at a time. A task
        that sent batches to the hub sent them before it returned, so its end is held back
        until a poll started after it was seen has been delivered.
        """
        polled = 0  # polls started
        delivered = 0  # the latest poll delivered
        polling = False  # a poll is on its way
        next_poll = 0.0
        held: list[tuple[int, int, NodeReturn | BaseException]] = []  # (poll needed, ...)
        while True:
            with self._lock:
                while not (self._ended or self._polls or self._closed):
                    if polling or not (self._jobs or held):
                        wait = None
                    else:
                        wait = next_poll - time.monotonic()
                        if wait <= 0:
                            break
                    self._lock.wait(wait)
                if self._closed and not self._jobs:
                    return
                ended, self._ended = self._ended, []
                polls, self._polls = self._polls, []
            for generation, items in polls:
                polling = False
                if isinstance(items, BaseException):
                    if self._hub_unavailable(items):
                        continue  # the next poll asks again
                    if not self._closed:
                        self._hub_lost(items)
                    return
                self._hub_unavailable_since = None
                delivered = generation
                for token, events in items:
                    self._deliver(token, events, None)
            for token, outcome in ended:
                if isinstance(outcome, NodeReturn) and not outcome.pushed:
                    self._end(token, outcome)
                else:
                    held.append((polled + 1, token, outcome))
            while held and held[0][0] <= delivered:
                _, token, outcome = held.pop(0)
                self._end(token, outcome)
            if not polling and (held or (self._jobs and time.monotonic() >= next_poll)):
                polled += 1
                polling = True
                next_poll = time.monotonic() + _POLL_SECONDS
                self._hub.drain.remote(self.run_id).future().add_done_callback(
                    functools.partial(self._drained, polled))
            if self._jobs and time.monotonic() >= self._next_wait_check:
                self._check_waits()

    def _end(self, token: int, outcome: NodeReturn | BaseException) -> None:
        sub = self._jobs.get(token)
        if sub is None:
            return
        if isinstance(outcome, NodeReturn):
            self._deliver(token, outcome.events, outcome.result)
        else:
            result = self._failure(sub, outcome)
            if result.lost and sub.node is not None and isinstance(
                    outcome, ray.exceptions.NodeDiedError | ray.exceptions.LocalRayletDiedError):
                threading.Thread(target=self._finish_when_dead, args=(sub, result),
                                 name="flowray-lost-node", daemon=True).start()
            else:
                self._finish(token, result)

    def _finish_when_dead(self, sub: _Submitted, result: JobResult) -> None:
        """Report a job lost with its node once Ray has marked the node dead (or after
        ``_NODE_DEATH_WAIT``), so that its next attempt goes to, and fetches from, live nodes."""
        node_id = sub.node.node_id if sub.node is not None else ""
        deadline = time.monotonic() + _NODE_DEATH_WAIT
        while time.monotonic() < deadline and not (self._cancelled or self._closed
                                                   or sub.cancelled):
            try:
                nodes = ray.nodes()  # type: ignore[no-untyped-call]
            except Exception:
                break
            if not any(n["NodeID"] == node_id and n.get("Alive") for n in nodes):
                break
            time.sleep(_NODE_DEATH_POLL)
        self._finish(sub.token, result)

    def _hub_unavailable(self, exc: BaseException) -> bool:
        """Whether a failed poll may be a passing fault: Ray says the hub is unavailable (not
        dead), for less than ``_HUB_UNAVAILABLE_LIMIT`` in a row."""
        if not isinstance(exc, ray.exceptions.ActorUnavailableError) or self._closed:
            return False
        now = time.monotonic()
        if self._hub_unavailable_since is None:
            self._hub_unavailable_since = now
        return now - self._hub_unavailable_since < _HUB_UNAVAILABLE_LIMIT

    def _check_waits(self) -> None:
        """Jobs handed to Ray that no node has taken yet (its nodes busy with other runs, or
        the nodes that could hold them lost): a notice says what each waits for, after
        ``_WAIT_NOTE`` seconds and then every ``_WAIT_NOTE_EVERY``; one that waited longer than
        its timeout fails, saying what it waited for. No job waits silently."""
        now = time.monotonic()
        self._next_wait_check = now + _WAIT_CHECK_SECONDS
        with self._lock:
            waiting = [s for s in self._jobs.values()
                       if s.submitted and not s.started and not s.cancelled]
        for sub in waiting:
            waited = now - sub.submitted
            over = sub.timeout is not None and waited >= sub.timeout
            if not over and (waited < _WAIT_NOTE or now - sub.noted < _WAIT_NOTE_EVERY):
                continue
            sub.noted = now
            what = self._waits_for(sub)
            if sub.timeout is None:
                self.events.notice(f"has waited {waited:.0f}s {what}; it has no timeout, so it "
                                   f"waits on (cancel the run to stop it)", sub.plan.key)
            elif not over:
                self.events.notice(f"has waited {waited:.0f}s {what}; it fails if none takes "
                                   f"it within its timeout ({sub.timeout / 60:g} min)",
                                   sub.plan.key)
            else:
                sub.cancelled = True
                with contextlib.suppress(Exception):
                    self._hub.cancel.remote(self.run_id, sub.token)
                _ray_cancel(sub.ref, force=False)
                self._finish(sub.token, self._lost_result(
                    sub, f"no Ray node took the job within its timeout "
                         f"({sub.timeout / 60:g} min): it waited {what}"))

    def _waits_for(self, sub: _Submitted) -> str:
        """What job ``sub`` waits for, in words, and why no node has taken it."""
        shape = self._shapes[sub.plan.job_id]
        with self._lock:
            self._refresh()
            nodes = list(self._node_resources)
        state = ("no live node has that much" if unfit(sub.plan.key, shape, nodes)
                 else "the live nodes that have that much are busy")
        return f"for a Ray node with {describe(shape.needs())} free ({state})"

    def _hub_lost(self, exc: BaseException) -> None:
        why = f"the run's event hub (a Ray actor) was lost: {_reason(exc)}"
        with self._lock:
            self.ship_error = self.ship_error or why  # nothing could collect later jobs
            subs = list(self._jobs.values())
        for sub in subs:
            self._finish(sub.token, self._lost_result(sub, why))

    def _deliver(self, token: int, events: list[Event], result: JobResult | None) -> None:
        sub = self._jobs.get(token)
        if sub is None:
            return  # a job already reported (its task lost, then retried by Ray)
        sink = self.events
        logged = False
        for event in events:
            kind = event[0]
            if kind == "line":
                step = sub.steps.get(event[1])
                if step is not None:
                    sink.step_line(sub.label, step, event[2])
                    if sub.remote:
                        self._log_line(sub, event[1], event[2])
                        logged = True
            elif kind == "start":
                sub.steps[event[1].index] = event[1]
                sink.step_started(sub.label, event[1])
                if sub.remote:
                    self._open_log(sub, event[1])
            elif kind == "finish":
                sub.steps[event[1].index] = event[1]
                sink.step_finished(sub.label, event[1])
                if sub.remote:
                    self._close_logs(sub)
            elif kind == "node":
                self._on_node(sub, event[1], event[2] if len(event) > 2 else None)
            elif kind == "mask":
                self.masker.add(event[1])
                self._masks.append(event[1])
        if logged:
            self._flush_logs(sub)  # `flowray logs` shows a running step's output so far
        if result is not None:
            self._finish(token, result)

    def _on_node(self, sub: _Submitted, node: NodeInfo, gpus: list[str] | None) -> None:
        sub.node = node
        sub.remote = self.shipment is not None and node.node_id != self.shipment.home
        sub.started = sub.started or time.time()
        self._seen[node.node_id] = node
        self.events.job_started(sub.label, node=str(node), host=node.hostname, gpus=gpus)

    # Logs of jobs on other nodes: the node's copies stay there; the run's are written here,
    # from the same lines the observers get, so a lost node loses none of them.

    def _open_log(self, sub: _Submitted, step: StepResult) -> None:
        self._close_logs(sub)
        root = os.path.realpath(self.run_dir)
        path = os.path.realpath(os.path.join(root, step.log or ""))
        if not step.log or not path.startswith(root + os.sep):
            return  # a log path from the node that is not below the run folder
        with self._log_lock:
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                sub.logs[step.index] = open(path, "w", encoding="utf-8", errors="replace")  # noqa: SIM115
            except OSError as exc:
                self.events.notice(f"cannot write the log {path}: {exc}", sub.plan.key)

    def _log_line(self, sub: _Submitted, index: int, line: str) -> None:
        with self._log_lock:
            fh = sub.logs.get(index)
            if fh is not None:
                try:
                    fh.write(line + "\n")
                except (OSError, ValueError):  # full disk, or closed by close()
                    sub.logs.pop(index, None)

    def _flush_logs(self, sub: _Submitted) -> None:
        with self._log_lock:
            for fh in sub.logs.values():
                with contextlib.suppress(OSError, ValueError):
                    fh.flush()

    def _close_logs(self, sub: _Submitted) -> None:
        with self._log_lock:
            for fh in sub.logs.values():
                with contextlib.suppress(OSError):
                    fh.close()
            sub.logs.clear()

    def _finish(self, token: int, result: JobResult) -> None:
        with self._lock:
            sub = self._jobs.pop(token, None)
            if sub is None:
                return
            for name, amount in sub.needs.items():
                self._used[name] -= amount
            if self._by_key.get(sub.plan.key) == token:
                del self._by_key[sub.plan.key]
            if result.lost:
                self._lost_keys.add(sub.plan.key)
            self._lock.notify_all()
        self._close_logs(sub)
        if sub.node is not None and not result.node:
            result.node = str(sub.node)
        sub.done(result)

    def _failure(self, sub: _Submitted, exc: BaseException) -> JobResult:
        if isinstance(exc, ray.exceptions.TaskCancelledError):
            return self._lost_result(sub, None, status=Status.CANCELLED)
        where = f" on {sub.node}" if sub.node else ""
        errors = ray.exceptions
        if isinstance(exc, errors.OutOfMemoryError):
            why = f"Ray's memory monitor killed the job's task{where} (the node ran out of memory)"
        elif isinstance(exc, errors.RayTaskError) and isinstance(
                exc.cause, KeyboardInterrupt | SystemExit) and not (
                self._cancelled or sub.cancelled):
            # Stopped by nobody here: Ray stopped the worker (its node going down).
            why = f"the Ray worker running the job was stopped{where}"
            result = self._lost_result(sub, why)
            result.lost = True
            return result
        elif isinstance(exc, errors.RayTaskError):
            why = f"internal error in flowray{where}: {_reason(exc.cause or exc)}"
        elif isinstance(exc, errors.NodeDiedError | errors.LocalRayletDiedError):
            why = f"the node running the job died{where}"
        elif isinstance(exc, errors.WorkerCrashedError):
            why = f"the Ray worker running the job died{where}"
        elif isinstance(exc, errors.ObjectLostError | errors.RaySystemError):
            why = f"the job's result was lost{where}: {type(exc).__name__}: {_reason(exc)}"
        else:
            why = f"the job's Ray task failed{where}: {type(exc).__name__}: {_reason(exc)}"
            return self._lost_result(sub, why)
        result = self._lost_result(sub, why)
        # The node, its raylet or the worker went away under the job, or Ray's memory monitor
        # killed it: not the steps' doing, so the job runs again (not counted as a retry).
        result.lost = not isinstance(exc, errors.RayTaskError)
        return result

    def _lost_result(self, sub: _Submitted, error: str | None,
                     status: Status = Status.FAILURE) -> JobResult:
        """A result for a job whose task ended without one: the steps as last seen."""
        now = time.time()
        steps = []
        for i, data in enumerate(sub.plan.data["steps"]):
            step = sub.steps.get(i)
            if step is None:
                key = data["id"] or str(i + 1)
                step = StepResult(index=i, key=key, id=data["id"],
                                  name=step_display_name(data, i),
                                  status=Status.CANCELLED if status is Status.CANCELLED
                                  else Status.SKIPPED)
            elif not step.status.is_terminal():
                step.status = status
                step.ended = now
                if error:
                    step.error = error
            steps.append(step)
        return JobResult(status, steps, {}, sub.started or now, now, error)

    def _stop(self, subs: list[_Submitted]) -> None:
        """Stop tasks whose nodes were told to, escalating for those that do not end.

        A task that started reports so within a batch interval and then sees the cancel flag;
        one that has not by then is taken to be queued in Ray and cancelled there.
        """
        if self._wait_gone(subs, _STARTED_WITHIN):
            return
        for sub in subs:
            if not sub.started:
                _ray_cancel(sub.ref, force=False)
        if self._wait_gone(subs, self.grace + _STOP_SLACK):
            return
        for force in (False, True):  # KeyboardInterrupt in the task, then its worker killed
            for sub in subs:
                if sub.token in self._jobs:
                    _ray_cancel(sub.ref, force=force)
            if self._wait_gone(subs, self.grace + _STOP_SLACK if not force else _STOP_SLACK):
                return

    # ------------------------------------------------------------------------- gangs

    def _try_start_gang(
        self,
        plan: JobPlan,
        shape: TaskShape,
        request_for: Callable[[list[str] | None], JobRequest],
        done: Callable[[JobResult], None],
    ) -> bool:
        """Admit a multi-node job; a thread places its gang and starts its ranks."""
        needs = {name: amount * shape.nodes for name, amount in shape.needs().items()}
        with self._lock:
            got = self._reserve(plan, shape, needs)
            if got is True:
                gang = _Gang(next(self._tokens), plan, shape, needs, done)
                self._gangs[plan.key] = gang
        if got is not True:
            return self._refused(got, done)
        request = self._sendable(plan.job_id, request_for(None))
        threading.Thread(target=self._launch_gang, args=(gang, request),
                         name=f"flowray-gang-{plan.key}", daemon=True).start()
        return True

    def _gang_stopped(self, gang: _Gang) -> bool:
        return gang.cancelled or self._cancelled or self._closed

    def _launch_gang(self, gang: _Gang, request: JobRequest) -> None:
        from ray.util.placement_group import placement_group, placement_group_table
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        plan, size = gang.plan, gang.shape.nodes
        started = time.time()
        try:
            bundle = gang.shape.needs()
            gang.pg = pg = placement_group([dict(bundle) for _ in range(size)],
                                           strategy="STRICT_SPREAD", name=f"flowray {plan.key}")
            ready = pg.ready()
            told = False
            while not ray.wait([ready], timeout=_GANG_POLL_SECONDS)[0]:
                if self._gang_stopped(gang):
                    self._gang_end(gang, JobResult(Status.CANCELLED, [], {}, started,
                                                   time.time(), "cancelled before its nodes "
                                                   "were free"))
                    return
                if request.timeout is not None and time.time() - started > request.timeout:
                    raise TimeoutError(f"they were not free at once within the job's timeout "
                                       f"({request.timeout / 60:g} min)")
                if not told and time.time() - started > _GANG_WAIT_NOTE:
                    told = True
                    self.events.notice(f"waits for {size} nodes at once "
                                       f"(resources.nodes; a STRICT_SPREAD placement group)",
                                       plan.key)
            ray.get(ready)
            to_node = placement_group_table(pg)["bundles_to_node_id"]
            ips = {n["NodeID"]: n["NodeManagerAddress"]
                   for n in ray.nodes()}  # type: ignore[no-untyped-call]
            rank_ips = [ips[to_node[rank]] for rank in range(size)]
            port = int(ray.get(free_port.options(
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    pg, placement_group_bundle_index=0)).remote(), timeout=60))
        except Exception as exc:
            self._gang_end(gang, JobResult(
                Status.FAILURE, [], {}, started, time.time(),
                f"cannot place the job's {size} nodes: {type(exc).__name__}: {_reason(exc)}"))
            return
        with self._lock:
            if self._gang_stopped(gang):
                subs = []
            else:
                subs = [_Submitted(next(self._tokens), plan, {},
                                   functools.partial(self._rank_done, gang, rank),
                                   label=f"{plan.key}[{rank}]", name=f"{plan.key}[{rank}]")
                        for rank in range(size)]
                for sub in subs:
                    self._jobs[sub.token] = sub
                    gang.tokens.append(sub.token)
                self._lock.notify_all()
        if not subs:
            self._gang_end(gang, JobResult(Status.CANCELLED, [], {}, started, time.time(),
                                           "cancelled before it started"))
            return
        options = gang.shape.options()
        for rank, sub in enumerate(subs):
            try:
                spec = NodeSpec(token=sub.token, gpus=gang.shape.gpus,
                                actions=self._local_actions(plan, request),
                                masks=list(self._masks),
                                gang=GangSpec(gang.id, rank, rank_ips, port))
                ref = run_on_node.options(
                    name=f"flowray {plan.key} rank {rank}",
                    scheduling_strategy=PlacementGroupSchedulingStrategy(
                        pg, placement_group_bundle_index=rank),
                    **options,
                ).remote(self._run_key, self._run, _packed(request, spec))
            except Exception as exc:  # the rank could not be submitted: the gang stops
                self._finish(sub.token, self._lost_result(
                    sub, f"cannot submit rank {rank}: {type(exc).__name__}: {_reason(exc)}"))
                continue
            sub.ref = ref
            ref.future().add_done_callback(functools.partial(self._task_ended, sub.token))

    def _rank_done(self, gang: _Gang, rank: int, result: JobResult) -> None:
        """One rank ended: a failed or lost one stops the others; the last one ends the job."""
        with self._lock:
            gang.results[rank] = result
            stop = not gang.stopping and (result.lost or result.status is not Status.SUCCESS)
            if stop:
                gang.stopping = True
            others = [self._jobs[t] for t in gang.tokens if t in self._jobs]
            complete = len(gang.results) == gang.shape.nodes
            if stop:
                for sub in others:
                    sub.cancelled = True
        if stop and others:
            with contextlib.suppress(Exception):
                self._hub.stop_gang.remote(self.run_id, gang.id)
                for sub in others:
                    self._hub.cancel.remote(self.run_id, sub.token)
            threading.Thread(target=self._stop, args=(others,), name="flowray-gang-stop",
                             daemon=True).start()
        if complete:
            self._gang_end(gang, _gang_result(gang))

    def _gang_end(self, gang: _Gang, result: JobResult) -> None:
        with self._lock:
            if self._gangs.get(gang.plan.key) is gang:
                del self._gangs[gang.plan.key]
            for name, amount in gang.needs.items():
                self._used[name] -= amount
            self._lock.notify_all()
        if gang.pg is not None:
            from ray.util.placement_group import remove_placement_group

            with contextlib.suppress(Exception):
                remove_placement_group(gang.pg)
        gang.done(result)

    def _wait_gone(self, subs: list[_Submitted], timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: all(s.token not in self._jobs for s in subs),
                                       timeout=timeout)

    def sweep_nodes(self, run_id: str) -> None:
        """Stop what the run left on the nodes its jobs ran on, other than this machine.

        As without Ray, a process a step leaves behind (a double-forked daemon, say) lives
        until the run ends; the coordinator's own sweep covers this machine.
        """
        here = ray.get_runtime_context().get_node_id()
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}  # type: ignore[no-untyped-call]
        refs = [
            sweep_node.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
            ).remote(run_id, self.grace, self._containers)
            for node in self.nodes_used() if node.node_id != here and node.node_id in alive
        ]
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=self.grace + _STOP_SLACK)


def _has_containers(plan: JobPlan, request: JobRequest) -> bool:
    """Whether the job may run container steps (then the nodes look for leftovers)."""
    if plan.data["container"] is not None:
        return True
    for step in plan.data["steps"]:
        ref = step["action"]
        if isinstance(ref, str) and ref.startswith(("docker://", "./")):
            return True  # a local action may be a docker one: look rather than load it
    return any(a.data["runs"]["using"] == "docker" for a in request.step_actions.values())


def _packed(request: JobRequest, spec: NodeSpec) -> bytes:
    """A task's own arguments, pickled here by the standard library (plain data: several times
    faster than Ray's general-purpose serializer, and it is on the coordinator's path)."""
    return pickle.dumps((request, spec), protocol=pickle.HIGHEST_PROTOCOL)


def _gang_result(gang: _Gang) -> JobResult:
    """The job's result from its ranks': rank 0's steps and outputs, every rank's status."""
    results = [gang.results[rank] for rank in range(gang.shape.nodes)]
    first = results[0]
    ranks = [{"rank": rank, "node": r.node, "status": r.status.value, "error": r.error,
              "steps": [s.to_record() for s in r.steps]} for rank, r in enumerate(results)]
    lost = [(rank, r) for rank, r in enumerate(results) if r.lost]
    failed = [(rank, r) for rank, r in enumerate(results) if r.status is Status.FAILURE]
    error: str | None = None
    if lost or failed:
        status = Status.FAILURE
        rank, r = (lost or failed)[0]
        why = r.error or next((f"step '{s.name}': {s.error or s.status.value}"
                               for s in r.steps if s.status is Status.FAILURE), "failed")
        error = f"rank {rank} (of {len(results)}) on {r.node or 'its node'}: {why}"
    elif any(r.status is Status.CANCELLED for r in results):
        status = Status.CANCELLED
        error = next((r.error for r in results if r.error), None)
    else:
        status = Status.SUCCESS
    warnings = [f"rank {rank}: {w}" if rank else w
                for rank, r in enumerate(results) for w in r.warnings]
    return JobResult(status, first.steps, first.outputs, min(r.started for r in results),
                     max(r.ended for r in results), error, artifacts=first.artifacts,
                     reports=first.reports, warnings=warnings, node=first.node,
                     lost=bool(lost), ranks=ranks)


def _ray_cancel(ref: Any, *, force: bool) -> None:
    if ref is None:
        return
    with contextlib.suppress(Exception):  # already finished, or its owner is gone
        ray.cancel(ref, force=force)


def _reason(exc: BaseException) -> str:
    """The last line of an error's text (a task error's text ends its traceback)."""
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
