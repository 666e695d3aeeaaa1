"""The node side of Ray dispatch: one job's steps, run by the same job runner as locally.

A job is one Ray task (:func:`run_on_node`). On the node it pins the GPUs Ray gave it through
``CUDA_VISIBLE_DEVICES``, runs :func:`~flowray.execute.job.run_job` with a local
:class:`~flowray.execute.process.ProcessSupervisor`, and while the job runs sends its events
(steps started and finished, log lines, masks added) in batches to the run's
:class:`EventHub` actor, which the coordinator polls. The hub's answer to each batch says
whether the job was cancelled: the node then stops its step processes itself (SIGTERM, grace,
SIGKILL), which ``ray.cancel`` alone cannot do for a task blocked on a subprocess.

The task returns the job's result with the events not sent yet (:class:`NodeReturn`): a job
shorter than one batch interval never talks to the hub at all.
"""

from __future__ import annotations

import copy
import functools
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from flowray.backends.ray.ship import Shipment, localize, pack_files, rebase, remove_run
from flowray.execute.job import JobRequest, JobResult, StepResult, run_job
from flowray.execute.process import ProcessSupervisor, sweep_run_processes
from flowray.execute.secrets import Masker
from flowray.spec.types import ActionData
from flowray.status import Status
from flowray.store.fs import os_error_text

# A batch of events goes to the hub this often while a job runs, or sooner once this many
# lines are waiting; with nothing to send the node still asks every _CANCEL_POLL_SECONDS
# whether the job was cancelled.
FLUSH_SECONDS = 0.1
FLUSH_LINES = 200
_CANCEL_POLL_SECONDS = 0.5
# The hub answering "unavailable" (rather than dead) this long in a row: the job stops.
HUB_UNAVAILABLE_LIMIT = 30.0
# A step that prints faster than the hub takes its lines waits (its pipe fills and it blocks)
# once this many are queued, so a node never holds an unbounded backlog.
_MAX_QUEUED_LINES = 20_000

# Events, as plain tuples (cheap to pickle):
#   ("node", NodeInfo, [gpu ids]) the task started on a node (again, after Ray retried it)
#   ("start", StepResult)          a step started (a copy as it was then)
#   ("line", step index, text)     a line of a step's output, secrets masked
#   ("finish", StepResult)         a step ended
#   ("mask", value)                a step added a secret value (``::add-mask::``)
Event = tuple[Any, ...]
HubItem = tuple[int, list[Event]]  # (token, events)


@dataclass(frozen=True)
class NodeInfo:
    node_id: str  # Ray's node id (hex)
    ip: str
    hostname: str

    def __str__(self) -> str:
        return f"{self.hostname} ({self.ip}, node {self.node_id[:8]})"


@dataclass(frozen=True)
class GangSpec:
    """This task's place in a multi-node job (``resources.nodes``)."""

    gang: int  # the gang's id in the run (its hub key)
    rank: int
    ips: list[str]  # the nodes' addresses, by rank
    port: int  # MASTER_PORT: free on rank 0's node when the gang was placed

    def env(self) -> dict[str, str]:
        return {
            "FLOWRAY_NODE_RANK": str(self.rank),
            "FLOWRAY_NUM_NODES": str(len(self.ips)),
            "FLOWRAY_NODE_IPS": ",".join(self.ips),
            # torch.distributed's env:// rendezvous (torchrun --node-rank sets its own)
            "MASTER_ADDR": self.ips[0],
            "MASTER_PORT": str(self.port),
            "NODE_RANK": str(self.rank),
        }


@dataclass
class RunStatic:
    """What every job of a run shares, put in the object store once rather than sent with each
    job (an actor handle and object references are costly to send, an environment large)."""

    hub: Any  # the run's EventHub actor handle
    grace: float
    # [the coordinator's environment, in the object store]: jobs on its node start from it;
    # fetched only there (it may hold credentials other nodes have no use for).
    env: list[Any] = field(repr=False)
    contexts: dict[str, Any] = field(repr=False)  # the contexts alike for every job
    shipment: Shipment | None = None  # the run's files, for nodes other than the coordinator's


@dataclass
class NodeSpec:
    """What a node needs besides the job request; one per submitted task."""

    token: int  # this submission's id, unique in the run
    gpus: int | None  # resources.gpus (None and 0 both: no GPU visible on a cluster)
    actions: dict[str, ActionData] = field(default_factory=dict)  # local actions, validated
    masks: list[str] = field(default_factory=list, repr=False)  # secrets added while running
    gang: GangSpec | None = None


@dataclass
class NodeReturn:
    """What a job's task returns: its result, after the events the hub was not sent."""

    result: JobResult
    events: list[Event]
    pushed: bool  # earlier batches went to the hub: deliver those first
    files: bytes = b""  # a node other than the coordinator's: the job's artifacts (a tar)


# The hub is one detached actor per coordinator node, shared by the runs coordinated there:
# starting an actor costs a worker process (most of a second of CPU on a small machine), once
# per run otherwise. It lives on the coordinators' node and nowhere else (issue 16): losing any
# other node must not lose the runs' events and cancel flags with it.
HUB_NAMESPACE = "flowray"
HUB_NAME = "flowray-events-v1"  # the protocol's version: a newer flowray uses its own hub


@dataclass
class _RunBox:
    items: list[HubItem] = field(default_factory=list)
    cancel_all: bool = False
    cancelled: set[int] = field(default_factory=set)
    gangs: dict[int, list[int]] = field(default_factory=dict)  # gang -> step each rank reached
    stopped_gangs: set[int] = field(default_factory=set)


@ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)
class EventHub:
    """The runs' mailbox: running jobs push event batches, each run's coordinator drains its
    own. It also holds each run's cancel flags (returned to the nodes with every push) and
    the step each rank of a multi-node job has reached."""

    def __init__(self) -> None:
        self._runs: dict[str, _RunBox] = {}

    # Async methods: the actor runs them one after another on its event loop (none awaits),
    # without a thread per caller.
    async def open(self, run: str) -> None:
        self._runs.setdefault(run, _RunBox())

    async def close(self, run: str) -> None:
        self._runs.pop(run, None)

    async def push(self, run: str, token: int, events: list[Event]) -> bool:
        """Take a batch (maybe empty: a poll); True if the job should stop (also when its run
        is gone: its coordinator ended)."""
        box = self._runs.get(run)
        if box is None:
            return True
        if events:
            box.items.append((token, events))
        return box.cancel_all or token in box.cancelled

    async def drain(self, run: str) -> list[HubItem] | None:
        """Everything pushed for ``run`` since the last drain, in order (None: no such run)."""
        box = self._runs.get(run)
        if box is None:
            return None
        items, box.items = box.items, []
        return items

    async def arrive(self, run: str, gang: int, rank: int, size: int, step: int, failed: bool
                     ) -> bool | None:
        """Rank ``rank`` of a gang of ``size`` is before step ``step``: True when every rank
        got there, False when the gang is being stopped (a rank failed), None: wait."""
        box = self._runs.get(run)
        if box is None:
            return False
        at = box.gangs.setdefault(gang, [-1] * size)
        at[rank] = max(at[rank], step)
        if failed:
            box.stopped_gangs.add(gang)
        if gang in box.stopped_gangs or box.cancel_all:
            return False
        return min(at) >= step or None

    async def stop_gang(self, run: str, gang: int) -> None:
        box = self._runs.get(run)
        if box is not None:
            box.stopped_gangs.add(gang)

    async def cancel(self, run: str, token: int | None) -> None:
        """Stop one submission (``token``) or, with ``None``, every job of the run."""
        box = self._runs.get(run)
        if box is None:
            return
        if token is None:
            box.cancel_all = True
        else:
            box.cancelled.add(token)


def hub_options(home: str) -> dict[str, Any]:
    """The actor options of node ``home``'s hub: pinned there (a hard node affinity) and asking
    for no resource at all, so a head started with ``--num-cpus 0`` (or 0 of anything) holds
    it. A soft affinity, or the CPU an actor asks for by default, let Ray put it on a worker
    node, whose loss then failed every run on the cluster."""
    return {
        "name": f"{HUB_NAME}@{home}", "namespace": HUB_NAMESPACE, "lifetime": "detached",
        "get_if_exists": True, "num_cpus": 0, "num_gpus": 0, "resources": {},
        "scheduling_strategy": NodeAffinitySchedulingStrategy(home, soft=False),
    }


def event_hub(home: str) -> Any:
    """The hub of the runs coordinated on node ``home`` (this process's node), started there
    when there is none yet."""
    return EventHub.options(**hub_options(home)).remote()  # type: ignore[attr-defined]


class _Flusher:
    """One thread per worker process that sends the batches of the jobs running in it (a
    thread per job would cost more than a short job's steps)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._active: list[NodeEvents] = []
        self._thread: threading.Thread | None = None

    def register(self, events: NodeEvents) -> None:
        with self._lock:
            self._active.append(events)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="flowray-events",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def unregister(self, events: NodeEvents) -> None:
        with self._lock:
            if events in self._active:
                self._active.remove(events)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while True:
            with self._lock:
                active = list(self._active)
            now = time.monotonic()
            wait = _CANCEL_POLL_SECONDS
            for events in active:
                due = events.due(now)
                if due <= now:
                    events.send_due()
                    due = events.due(time.monotonic())
                wait = min(wait, max(0.0, due - time.monotonic()))
            self._wake.wait(wait)
            self._wake.clear()


_FLUSHER = _Flusher()


class NodeEvents:
    """The node's :class:`~flowray.execute.job.JobEvents`: batches events to the hub.

    The worker's flusher thread sends them every ``FLUSH_SECONDS`` (or ``FLUSH_LINES`` lines),
    polls the cancel flag, and calls ``on_cancel`` once when it is set or the hub is gone.
    """

    def __init__(self, hub: Any, run: str, token: int, on_cancel: Callable[[], None]) -> None:
        self._hub = hub
        self._run = run
        self._token = token
        self._on_cancel = on_cancel
        self._cond = threading.Condition()
        self._sending = threading.Lock()  # held while a batch is on its way
        self._buffer: list[Event] = []
        self._lines = 0
        self._first_at = 0.0  # monotonic time the oldest waiting event was added
        self._last_push = time.monotonic()
        self._closed = False
        self._cancel_seen = False
        self._unavailable_since = 0.0  # the hub has answered "unavailable" since then
        self.pushed = False  # a batch went to the hub
        _FLUSHER.register(self)

    def add(self, event: Event) -> None:
        with self._cond:
            if not self._buffer:
                self._first_at = time.monotonic()
            self._buffer.append(event)
            if event[0] == "line":
                self._lines += 1
                if self._lines >= FLUSH_LINES:
                    _FLUSHER.wake()
                while self._lines >= _MAX_QUEUED_LINES and not self._closed:
                    self._cond.wait(1.0)

    def step_started(self, job_key: str, step: StepResult) -> None:
        self.add(("start", _snapshot(step)))

    def step_line(self, job_key: str, step: StepResult, line: str) -> None:
        self.add(("line", step.index, line))

    def step_lines(self, job_key: str, step: StepResult, lines: list[str]) -> None:
        for line in lines:
            self.add(("line", step.index, line))

    def step_finished(self, job_key: str, step: StepResult) -> None:
        self.add(("finish", _snapshot(step)))

    def due(self, now: float) -> float:
        """When the next batch (or, with nothing to send, the next cancel poll) is due."""
        with self._cond:
            if self._closed:
                return now + _CANCEL_POLL_SECONDS
            if self._buffer:
                return now if self._lines >= FLUSH_LINES else self._first_at + FLUSH_SECONDS
            return self._last_push + _CANCEL_POLL_SECONDS

    def send_due(self) -> None:
        """Send what waits (the flusher thread)."""
        with self._sending:
            with self._cond:
                if self._closed:
                    return
                batch, self._buffer, self._lines = self._buffer, [], 0
                self._cond.notify_all()  # steps waiting for room in the buffer
            self._push(batch)

    def _push(self, events: list[Event]) -> None:
        try:
            stop = bool(ray.get(self._hub.push.remote(self._run, self._token, events)))
            self._unavailable_since = 0.0
        except ray.exceptions.ActorUnavailableError:
            # Not dead: maybe a passing fault. The batch goes again with the next one (unless
            # this was the last); the job stops only if it lasts.
            now = time.monotonic()
            self._unavailable_since = self._unavailable_since or now
            stop = now - self._unavailable_since >= HUB_UNAVAILABLE_LIMIT
            with self._cond:
                if events and not self._closed and not stop:
                    if not self._buffer:
                        self._first_at = now
                    self._buffer[:0] = events
                    self._lines += sum(1 for e in events if e[0] == "line")
                    events = []
        except Exception:  # the hub is gone: so is the coordinator; stop the job
            stop = True
        self._last_push = time.monotonic()
        self.pushed = self.pushed or bool(events)
        if stop and not self._cancel_seen:
            self._cancel_seen = True
            self._on_cancel()

    def close(self) -> list[Event]:
        """Stop sending; the events not sent yet (after any batch on its way arrived)."""
        _FLUSHER.unregister(self)
        with self._sending, self._cond:
            self._closed = True
            self._cond.notify_all()
            batch, self._buffer, self._lines = self._buffer, [], 0
        return batch

    def flush(self) -> None:
        """Send what is left now (after :meth:`close`, when there is no result to carry it)."""
        batch = self.close()
        if batch:
            self._push(batch)


class _NodeMasker(Masker):
    """A masker that also tells the coordinator about values steps add (``::add-mask::``)."""

    def __init__(self, values: list[str], events: NodeEvents) -> None:
        self._events: NodeEvents | None = None
        super().__init__(values)
        self._events = events

    def add(self, value: str) -> bool:
        if not super().add(value):
            return False
        if self._events is not None and value.strip("\r\n"):
            self._events.add(("mask", value))
        return True


def _snapshot(step: StepResult) -> StepResult:
    snap = copy.copy(step)
    snap.outputs = dict(step.outputs)
    return snap


@functools.cache
def _node_info() -> NodeInfo:
    """This worker's node (a worker never moves)."""
    ctx = ray.get_runtime_context()
    return NodeInfo(node_id=ctx.get_node_id(), ip=ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
                    hostname=os.uname().nodename)


# Each worker keeps the RunStatic of the last few runs it served: it is fetched and decoded (an
# actor handle, object references) once per worker and run, not once per job.
_RUNS: dict[str, RunStatic] = {}
_RUNS_KEPT = 4


def _run_static(key: str, refs: list[Any]) -> RunStatic:
    run = _RUNS.get(key)
    if run is None:
        run = ray.get(refs[0])
        _RUNS[key] = run
        while len(_RUNS) > _RUNS_KEPT:
            del _RUNS[next(iter(_RUNS))]
    return run


def _run_on_node(key: str, static: list[Any], packed: bytes) -> bytes:
    """A job's task. ``static``: [the run's RunStatic, in the object store] (in a list, so Ray
    does not fetch it for every task); ``packed``: (JobRequest, NodeSpec), pickled by the
    dispatcher."""
    started = time.time()
    run = _run_static(key, static)
    request: JobRequest
    spec: NodeSpec
    request, spec = pickle.loads(packed)
    node = _node_info()
    grace = run.grace
    shipment = run.shipment
    remote = shipment is not None and node.node_id != shipment.home
    if not remote and not request.env:
        request.env = _run_env(key, run)
    request.contexts = {**run.contexts, **request.contexts}
    supervisor = ProcessSupervisor(grace=grace)

    def on_cancel() -> None:
        threading.Thread(target=supervisor.cancel_all, name="flowray-cancel",
                         daemon=True).start()

    events = NodeEvents(run.hub, request.run_id, spec.token, on_cancel)
    try:
        return _run_job_here(run, request, spec, node, events, supervisor, started, remote)
    finally:
        _FLUSHER.unregister(events)  # whatever happened, the flusher forgets the job


_ENVS: dict[str, dict[str, str]] = {}


def _run_env(key: str, run: RunStatic) -> dict[str, str]:
    env = _ENVS.get(key)
    if env is None:
        env = _ENVS[key] = ray.get(run.env[0])
        while len(_ENVS) > _RUNS_KEPT:
            del _ENVS[next(iter(_ENVS))]
    return env


def _run_job_here(run: RunStatic, request: JobRequest, spec: NodeSpec, node: NodeInfo,
                  events: NodeEvents, supervisor: ProcessSupervisor, started: float,
                  remote: bool) -> bytes:
    grace = run.grace
    shipment = run.shipment
    # Whatever this Ray version does with CUDA_VISIBLE_DEVICES, the steps see exactly the GPUs
    # Ray gave the task: none for gpus: 0, and none when gpus is unset either, since such a
    # task holds no GPU on a node that other jobs' GPUs share (issue 4: set for every job).
    ids = ray.get_runtime_context().get_accelerator_ids().get("GPU", []) if spec.gpus else []
    events.add(("node", node, [str(i) for i in ids]))
    if remote:
        assert shipment is not None
        try:
            request = localize(request, shipment, node.node_id)
        except Exception as exc:  # a full disk, an action that will not unpack, ...
            result = JobResult(Status.FAILURE, [], {}, started, time.time(),
                               f"cannot set the job up on {node}: {exc}")
            return _packed_return(NodeReturn(result, events.close(), events.pushed))
        # The coordinator's paths, where a step names them, mean the copies here.
        spec.actions = {rebase(p, shipment.workspace, request.workspace): a
                        for p, a in spec.actions.items()}
    request.gpus = [str(i) for i in ids]
    request.env = {**request.env, "FLOWRAY_NODE_ID": node.node_id, "FLOWRAY_NODE_IP": node.ip}
    gate = None
    if spec.gang is not None:
        request.env.update(spec.gang.env())
        request.rank = spec.gang.rank
        gate = _gang_gate(run.hub, request.run_id, spec.gang, supervisor)
    masker = _NodeMasker([*request.secrets.values(), *spec.masks], events)
    from flowray.plan.actions import ActionTable

    try:
        result = run_job(request, supervisor=supervisor, events=events, masker=masker,
                         load_action=ActionTable(spec.actions), gate=gate)
    except OSError as exc:  # the job's log folder cannot be made there: a full disk
        result = JobResult(Status.FAILURE, [], {}, started, time.time(),
                           f"on {node}: {os_error_text(exc)}")
    except Exception as exc:  # a bug must fail the job, not lose it
        result = JobResult(Status.FAILURE, [], {}, started, time.time(),
                           f"internal error in flowray on {node}: {exc!r}")
    except BaseException:
        # KeyboardInterrupt from ray.cancel: the supervisor stopped the running step and the
        # job runner the others; stop what they left, and report what happened so far.
        supervisor.mark_cancelled()
        sweep_run_processes(request.run_id, grace=grace, job_key=request.key)
        events.flush()
        raise
    if supervisor.cancelled:
        # What the steps left behind would otherwise live until the run's sweep.
        sweep_run_processes(request.run_id, grace=grace, job_key=request.key)
    files = pack_files(request.run_dir, result.artifacts) if remote and result.artifacts else b""
    return _packed_return(NodeReturn(result, events.close(), events.pushed, files))


def _packed_return(value: NodeReturn) -> bytes:
    """The task's result, pickled by the standard library (faster than Ray's serializer for
    plain data); the dispatcher unpickles it."""
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


# How often a rank waiting for the others asks the hub whether they all got there.
_GATE_POLL_SECONDS = 0.02


def _gang_gate(hub: Any, run: str, gang: GangSpec, supervisor: ProcessSupervisor
               ) -> Callable[[int, bool], bool]:
    """Every step of a multi-node job starts once every rank finished the one before."""
    size = len(gang.ips)

    def gate(step: int, failed: bool) -> bool:
        while not supervisor.cancelled:
            try:
                go = ray.get(hub.arrive.remote(run, gang.gang, gang.rank, size, step, failed))
            except Exception:  # the hub is gone: so is the coordinator
                return False
            if go is not None:
                return bool(go)
            time.sleep(_GATE_POLL_SECONDS)
        return False

    return gate


def _free_port() -> int:
    """A TCP port free on this node now (MASTER_PORT of a gang whose rank 0 is here)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


free_port = ray.remote(num_cpus=0, max_retries=0)(_free_port)




# Ray does not retry a job's task: a task lost with its node or worker fails, and the
# coordinator runs the job again as a new, numbered attempt (its logs and record kept apart).
run_on_node = ray.remote(max_retries=0, retry_exceptions=False)(_run_on_node)


def _sweep_node(run_id: str, grace: float, containers: bool) -> int:
    """After the run: stop what its steps left on this node (and its containers, when the run
    had container steps), remove its shipped files."""
    left = sweep_run_processes(run_id, grace=grace)
    remove_run(ray.get_runtime_context().get_node_id(), run_id)
    if containers or "flowray.execute.container" in sys.modules:
        from flowray.execute.container import remove_run_containers

        left += remove_run_containers(run_id)
    return left


sweep_node = ray.remote(num_cpus=0, max_retries=0)(_sweep_node)
