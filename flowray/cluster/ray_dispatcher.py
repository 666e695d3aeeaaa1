"""The Ray dispatcher: each job (each matrix cell) one Ray task with the job's resources.

The coordinator calls :meth:`RayDispatcher.try_start` from its loop; the task is submitted and
the call returns at once. Tasks are admitted while the sum of what the run's tasks take fits
the cluster's resources, so jobs beyond that wait in the coordinator's queues (where
``max-parallel``, fail-fast and cancel reach them) rather than in Ray's.

A collector thread polls the run's :class:`~flowray.cluster.ray_node.EventHub` while jobs
run, so step events and log lines reach the console as they happen, and hands each finished
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
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import IO, Any

import ray
import ray.exceptions
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from flowray.cluster.ray_node import (
    Event,
    EventHub,
    HubItem,
    NodeInfo,
    NodeReturn,
    NodeSpec,
    run_on_node,
    sweep_node,
)
from flowray.cluster.ray_resources import TaskShape, fits, task_shape, unfit
from flowray.cluster.ship import Shipment, unpack_files
from flowray.console import Console
from flowray.execute.job import ActionLoader, JobRequest, JobResult, StepAction, StepResult
from flowray.execute.secrets import Masker
from flowray.plan.plan import JobPlan
from flowray.spec.types import ActionData
from flowray.status import Status

# While jobs run, the collector asks the hub for their events this often.
_POLL_SECONDS = 0.1
# How often try_start may ask Ray for the cluster's resources when a job does not fit.
_REFRESH_SECONDS = 1.0
# Stopping: after the cancel flag, nodes get the grace period and this much more to stop
# their steps and report; then ray.cancel (KeyboardInterrupt in the task), then force.
_STOP_SLACK = 5.0
# A task that has not reported starting this long after a cancel is cancelled in Ray's queue.
_STARTED_WITHIN = 1.0


@dataclass
class _Submitted:
    token: int
    plan: JobPlan
    needs: dict[str, float]
    done: Callable[[JobResult], None]
    ref: Any = None  # the task's ObjectRef
    started: float = 0.0  # time.time() when the first event came from the node
    label: str = ""  # the console's job prefix
    node: NodeInfo | None = None
    steps: dict[int, StepResult] = field(default_factory=dict)  # latest copy of each
    remote: bool = False  # on a node other than the coordinator's: logs are written here
    logs: dict[int, IO[str]] = field(default_factory=dict)  # open step logs (remote jobs)


class RayDispatcher:
    """Implements the coordinator's ``Dispatcher`` protocol on a connected Ray cluster."""

    def __init__(
        self,
        *,
        console: Console,
        masker: Masker,
        load_action: ActionLoader,
        grace: float,
        prefix_nodes: bool = False,
        run_dir: str = ".",
        shipment: Shipment | None = None,
        ship_error: str | None = None,
    ) -> None:
        self.console = console
        self.run_dir = run_dir
        self.shipment = shipment
        self.ship_error = ship_error  # the run's files could not be shipped: no job starts
        self.masker = masker
        self.load_action = load_action
        self.grace = grace
        self.prefix_nodes = prefix_nodes  # several hosts: show each job's host in its prefix
        self._lock = threading.Condition()
        self._jobs: dict[int, _Submitted] = {}
        self._by_key: dict[str, int] = {}
        self._nodes: dict[str, NodeInfo] = {}  # job key -> the node of its latest attempt
        self._ended: list[tuple[int, NodeReturn | BaseException]] = []  # tasks, as they end
        self._polls: list[tuple[int, list[HubItem] | BaseException]] = []  # hub polls back
        self._tokens = itertools.count(1)
        self._shapes: dict[str, TaskShape] = {}
        self._actions: dict[str, dict[str, ActionData]] = {}
        self._sendable: dict[str, dict[int, StepAction]] = {}
        self._masks: list[str] = []
        self._capacity: dict[str, float] = {}
        self._used: dict[str, float] = {}
        self._node_resources: list[dict[str, float]] = []
        self._refreshed = 0.0
        self._cancelled = False
        self._closed = False
        self._refresh()
        self._hub: Any = EventHub.options(  # type: ignore[attr-defined]
            scheduling_strategy=NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=True),
        ).remote()
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
        needs = shape.needs()
        why_not: str | None = None
        with self._lock:
            if self._cancelled or self._closed:
                return False
            if not fits(needs, self._free()):
                if time.monotonic() - self._refreshed < _REFRESH_SECONDS:
                    return False
                self._refresh()
                why_not = unfit(plan.key, shape, self._node_resources)
                if why_not is None and not fits(needs, self._free()):
                    return False
            if why_not is None:
                for name, amount in needs.items():
                    self._used[name] = self._used.get(name, 0.0) + amount
                sub = _Submitted(next(self._tokens), plan, needs, done, label=plan.key)
                self._jobs[sub.token] = sub
                self._by_key[plan.key] = sub.token
                self._lock.notify_all()  # the collector polls the hub while jobs run
        if why_not is not None:
            # The nodes that could run it are gone (the check before the run saw one).
            now = time.time()
            done(JobResult(Status.FAILURE, [], {}, now, now, why_not))
            return True
        request = request_for(None)
        request.step_actions = self._sendable_actions(plan.job_id, request.step_actions)
        spec = NodeSpec(hub=self._hub, token=sub.token, grace=self.grace, gpus=shape.gpus,
                        actions=self._local_actions(plan, request), masks=list(self._masks),
                        shipment=self.shipment)
        ref = run_on_node.options(name=f"flowray {plan.key}", **shape.options()).remote(
            request, spec)
        sub.ref = ref
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
            ray.get(self._hub.cancel.remote(None), timeout=10)
        self._stop(subs)

    def cancel_job(self, key: str) -> None:
        with self._lock:
            sub = self._jobs.get(self._by_key.get(key, 0))
        if sub is None:
            return
        self._hub.cancel.remote(sub.token)
        threading.Thread(target=self._stop, args=([sub],), name="flowray-cancel-job",
                         daemon=True).start()

    # ------------------------------------------------------------------------- more API

    def node_of(self, key: str) -> str:
        """The node job ``key`` ran on (its latest attempt), or "" before it started."""
        node = self._nodes.get(key)
        return str(node) if node else ""

    def nodes_used(self) -> list[NodeInfo]:
        return list({n.node_id: n for n in self._nodes.values()}.values())

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
            ray.kill(self._hub)

    # ------------------------------------------------------------------------- internals

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
            known = {}
            for step in plan.data["steps"]:
                ref = step["action"]
                if isinstance(ref, str) and ref.startswith("./"):
                    path = os.path.normpath(os.path.join(request.workspace, ref))
                    # A broken action: the node reports the same error at the step.
                    with contextlib.suppress(Exception):
                        known[path] = self.load_action(path, None)
            self._actions[plan.job_id] = known
        return known

    def _sendable_actions(self, job_id: str, actions: dict[int, StepAction]
                          ) -> dict[int, StepAction]:
        """The job's git actions without their cache entries (which hold repository URLs
        that may carry credentials): nodes get what the shipment says instead."""
        sendable = self._sendable.get(job_id)
        if sendable is None:
            sendable = self._sendable[job_id] = {
                i: dataclasses.replace(a, pin=None) for i, a in actions.items()}
        return sendable

    def _task_ended(self, token: int, fut: Future[Any]) -> None:
        """A task's future completed (in a Ray thread): hand it to the collector."""
        outcome: NodeReturn | BaseException
        try:
            outcome = fut.result()
        except BaseException as exc:  # the task raised, or the future was cancelled
            outcome = exc
        with self._lock:
            self._ended.append((token, outcome))
            self._lock.notify_all()

    def _drained(self, generation: int, fut: Future[Any]) -> None:
        """A poll of the hub came back (in a Ray thread): hand it to the collector."""
        try:
            items: list[HubItem] | BaseException = fut.result()
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
                    if not self._closed:
                        self._hub_lost(items)
                    return
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
                self._hub.drain.remote().future().add_done_callback(
                    functools.partial(self._drained, polled))

    def _end(self, token: int, outcome: NodeReturn | BaseException) -> None:
        sub = self._jobs.get(token)
        if sub is None:
            return
        if isinstance(outcome, NodeReturn):
            if outcome.files:
                try:
                    unpack_files(outcome.files, self.run_dir)
                except Exception as exc:
                    outcome.result.warnings.append(
                        f"the job's artifacts could not be copied back from its node: {exc}")
            self._deliver(token, outcome.events, outcome.result)
        else:
            self._finish(token, self._failure(sub, outcome))

    def _hub_lost(self, exc: BaseException) -> None:
        with self._lock:
            subs = list(self._jobs.values())
        for sub in subs:
            self._finish(sub.token, self._lost_result(
                sub, f"the run's event hub (a Ray actor) was lost: {_reason(exc)}"))

    def _deliver(self, token: int, events: list[Event], result: JobResult | None) -> None:
        sub = self._jobs.get(token)
        if sub is None:
            return  # a job already reported (its task lost, then retried by Ray)
        console = self.console
        for event in events:
            kind = event[0]
            if kind == "line":
                step = sub.steps.get(event[1])
                if step is not None:
                    console.step_line(sub.label, step, event[2])
                    if sub.remote:
                        self._log_line(sub, event[1], event[2])
            elif kind == "start":
                sub.steps[event[1].index] = event[1]
                console.step_started(sub.label, event[1])
                if sub.remote:
                    self._open_log(sub, event[1])
            elif kind == "finish":
                sub.steps[event[1].index] = event[1]
                console.step_finished(sub.label, event[1])
                if sub.remote:
                    self._close_logs(sub)
            elif kind == "node":
                self._on_node(sub, event[1])
            elif kind == "mask":
                self.masker.add(event[1])
                self._masks.append(event[1])
        if result is not None:
            self._finish(token, result)

    def _on_node(self, sub: _Submitted, node: NodeInfo) -> None:
        sub.node = node
        sub.remote = self.shipment is not None and node.node_id != self.shipment.home
        sub.started = sub.started or time.time()
        self._nodes[sub.plan.key] = node
        if self.prefix_nodes:
            sub.label = f"{sub.plan.key}@{node.hostname}"

    # Logs of jobs on other nodes: the node's copies stay there; the run's are written here,
    # from the same lines the console shows, so a lost node loses none of them.

    def _open_log(self, sub: _Submitted, step: StepResult) -> None:
        self._close_logs(sub)
        if not step.log:
            return
        path = os.path.join(self.run_dir, step.log)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            sub.logs[step.index] = open(path, "w", encoding="utf-8", errors="replace")  # noqa: SIM115
        except OSError as exc:
            self.console.info(f"! job {sub.plan.key}: cannot write the log {path}: {exc}")

    def _log_line(self, sub: _Submitted, index: int, line: str) -> None:
        fh = sub.logs.get(index)
        if fh is not None:
            try:
                fh.write(line + "\n")
            except OSError:
                sub.logs.pop(index, None)

    @staticmethod
    def _close_logs(sub: _Submitted) -> None:
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
                step = StepResult(index=i, key=key, id=data["id"], name=data["name"] or key,
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
            ).remote(run_id, self.grace)
            for node in self.nodes_used() if node.node_id != here and node.node_id in alive
        ]
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=self.grace + _STOP_SLACK)


def _ray_cancel(ref: Any, *, force: bool) -> None:
    if ref is None:
        return
    with contextlib.suppress(Exception):  # already finished, or its owner is gone
        ray.cancel(ref, force=force)


def _reason(exc: BaseException) -> str:
    """The last line of an error's text (a task error's text ends its traceback)."""
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
