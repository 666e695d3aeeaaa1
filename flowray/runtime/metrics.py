"""Prometheus metrics of runs, folded from their event streams (SPEC "Metrics").

The one module that imports ``prometheus_client`` (an import-linter contract); it is imported
only by what serves metrics (``flowray serve``, ``flowray run --metrics-port``), never by
``import flowray`` or a plain ``flowray run``.

:class:`Metrics` is an observer of the event stream like the record writer: :meth:`Metrics.watch`
feeds it a run's events from a thread of its own (a slow observer never slows the run), and
:meth:`Metrics.observe` folds each event into counters, histograms and gauges. What the event
stream cannot tell (the service's queue of runs, webhook deliveries, schedules, a cluster's GPU
slots) the service sets through the other methods.

Every metric is declared in :class:`Metrics.__init__`, with what its labels may hold. No label
holds a run id, a job key or anything else without bound: ``flow`` is a flow's name,
``trigger``, ``status``, ``kind``, ``result``, ``resource`` and ``state`` come from short fixed
lists.
"""

from __future__ import annotations

import calendar
import contextlib
import errno
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

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
)

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from flowray.runtime.api import Run

# The results a webhook delivery may have (SPEC "Metrics"): a closed list, so that the label
# stays bounded whatever a caller passes.
# SPEC's five, and bad_request: a delivery whose body is not a JSON object or whose trigger's
# `if` cannot be evaluated on it (a bounded label all the same).
WEBHOOK_RESULTS = ("accepted", "duplicate", "bad_signature", "filtered", "too_large",
                   "bad_request")
# Step kinds that come from an action file (``runs.using``): the steps the action result cache
# may answer. ``run`` is a script in the flow itself.
ACTION_KINDS = frozenset({"cmd", "script", "python", "node", "docker"})

# Seconds. Steps take from milliseconds (a cached action) to hours (training); runs and jobs
# from seconds to a day.
_STEP_BUCKETS = (0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400,
                 43200, 86400)
_RUN_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 43200,
                86400, 172800)
# A job waits for a free CPU or GPU slot: from nothing to hours on a busy cluster.
_QUEUE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200,
                  14400)


class MetricsServerError(Exception):
    """The metrics cannot be served on ``host``:``port`` (in use, not allowed, not a port)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot serve metrics on {host}:{port}: {reason}")
        self.host = host
        self.port = port
        self.reason = reason


def _epoch(text: str) -> float:
    """Seconds since the epoch of an event's ``time`` (``2026-12-03T10:00:00.123Z``)."""
    try:
        whole = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return time.time()  # not an event's time: now is the best guess there is
    frac = text[19:].rstrip("Z")
    try:
        return whole + (float(frac) if frac.startswith(".") else 0.0)
    except ValueError:
        return float(whole)


def _number(value: Any) -> float | None:
    """A time or count from an event field, None when it holds none."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


@dataclass
class _Job:
    """A job of a live run, as far as the metrics need it."""

    job_id: str
    needs: tuple[str, ...]
    gpus: float  # GPUs the job holds while it runs (all its nodes together)
    state: str = "queued"  # queued | running | done
    ready: float = 0.0  # when it was queued (or queued again after a failed attempt)
    attempt_started: float | None = None
    held: float = 0.0  # GPUs counted busy in the tracked slots for this attempt


@dataclass
class _Run:
    """What a live run's later events need from its earlier ones; dropped at run.finished."""

    flow: str
    trigger: str
    started: float
    jobs: dict[str, _Job] = field(default_factory=dict)
    cells: dict[str, int] = field(default_factory=dict)  # job id -> cells not finished
    needs_done: dict[str, float] = field(default_factory=dict)  # job id -> last cell's end
    steps: dict[tuple[str, int, int | None], str] = field(default_factory=dict)  # started


class _Shown:
    """A collector that shows the metrics of another registry (see :class:`Metrics`). It
    describes none, so the registry it joins checks no names against them."""

    def __init__(self, inner: CollectorRegistry) -> None:
        self._inner = inner

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._inner.collect()


class Metrics:
    """Every flowray metric in one registry, fed by run events and by the service.

    Thread-safe: several runs' watchers call :meth:`observe` at once. Per-run state lives only
    while the run does (until its ``run.finished``, or :meth:`forget`).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from flowray import __version__

        # Its own registry by default: the process-wide one of prometheus_client would also
        # carry the Python process collectors (not flowray_ names) and clash between two
        # Metrics of one process (tests, a service and a run).
        self.registry = registry if registry is not None else CollectorRegistry()
        # The counters sit in a registry of their own, shown through the main one: SPEC names
        # a counter and a gauge of one stem (flowray_runs_total and flowray_runs; jobs too),
        # which prometheus_client's registry refuses as one OpenMetrics family name. The
        # classic text format that render() and serve_metrics() give has no such clash.
        counters = CollectorRegistry()
        self.registry.register(_Shown(counters))
        c, r = counters, self.registry
        # ---- counters
        # flow: the flow's name; trigger: cli api manual schedule webhook flow; status: the
        # run's final status (success failure cancelled).
        self._runs_total = Counter("flowray_runs_total", "Runs that ended.",
                                  ("flow", "trigger", "status"), registry=c)
        # flow; status: the job's final status (success failure cancelled skipped).
        self._jobs_total = Counter("flowray_jobs_total", "Jobs (matrix cells) that ended.",
                                  ("flow", "status"), registry=c)
        # kind: run cmd script python node docker (action: one that never loaded); status: the
        # step's final status. Each node of a multi-node job counts its own steps.
        self._steps_total = Counter("flowray_steps_total", "Steps that ended.",
                                   ("kind", "status"), registry=c)
        # flow: a stored flow's name (callers pass no name a request made up); result: one of
        # WEBHOOK_RESULTS.
        self._webhook_deliveries_total = Counter(
            "flowray_webhook_deliveries_total", "Webhook deliveries by what became of them.",
            ("flow", "result"), registry=c)
        # result: hit (the outputs came from the action result cache) or miss (an action step
        # that ran).
        self._action_cache_requests_total = Counter(
            "flowray_action_cache_requests_total",
            "Action steps by whether the action result cache answered them.",
            ("result",), registry=c)
        # flow. GPUs held x seconds, summed over every attempt of every job.
        self._gpu_seconds_total = Counter("flowray_gpu_seconds_total",
                                         "GPU-seconds held by jobs (GPUs x seconds).",
                                         ("flow",), registry=c)
        # ---- histograms
        # flow
        self._run_duration_seconds = Histogram("flowray_run_duration_seconds",
                                      "How long runs took, start to end.", ("flow",),
                                      buckets=_RUN_BUCKETS, registry=r)
        # flow. First start to end of a job, its retries included.
        self._job_duration_seconds = Histogram("flowray_job_duration_seconds",
                                      "How long jobs took, first start to end.", ("flow",),
                                      buckets=_RUN_BUCKETS, registry=r)
        # kind (as flowray_steps_total)
        self._step_duration_seconds = Histogram("flowray_step_duration_seconds",
                                       "How long steps took.", ("kind",),
                                       buckets=_STEP_BUCKETS, registry=r)
        # resource: gpu (the job asks for GPUs) or cpu. From the moment a job could run (queued,
        # and every job it needs ended) to its start: the wait for a free slot.
        self._job_queue_wait_seconds = Histogram("flowray_job_queue_wait_seconds",
                                        "How long jobs that could run waited for a slot.",
                                        ("resource",), buckets=_QUEUE_BUCKETS, registry=r)
        # ---- gauges
        # state: queued (waiting in the service for a slot or a concurrency group) | running
        self._runs = Gauge("flowray_runs", "Runs now, by state.", ("state",), registry=r)
        # state: queued | running
        self._jobs = Gauge("flowray_jobs", "Jobs of live runs now, by state.", ("state",),
                          registry=r)
        # state: free | busy
        self._gpu_slots = Gauge("flowray_gpu_slots", "GPU slots now, by state.",
                                     ("state",), registry=r)
        # flow: a flow with a schedule trigger
        self._schedule_next_fire_timestamp_seconds = Gauge(
            "flowray_schedule_next_fire_timestamp_seconds",
            "When the flow's schedule fires next (seconds since the epoch).", ("flow",),
            registry=r)
        # version: flowray's version; the value is always 1
        self._build_info = Gauge("flowray_build_info", "flowray's version (always 1).",
                                ("version",), registry=r)

        self._build_info.labels(version=__version__).set(1)
        # The fixed label values exist from the start, at 0: a query or an alert on them has
        # a series before the first run.
        for state in ("queued", "running"):
            self._runs.labels(state=state).set(0)
            self._jobs.labels(state=state).set(0)
        for result in ("hit", "miss"):
            self._action_cache_requests_total.labels(result=result)
        for resource in ("cpu", "gpu"):
            self._job_queue_wait_seconds.labels(resource=resource)

        self._lock = threading.Lock()
        self._live: dict[str, _Run] = {}
        self._gpu_total: int | None = None  # set by track_gpu_slots
        self._gpus_busy = 0.0

    # ------------------------------------------------------------------------- events

    def observe(self, event: Event, *, flow: str) -> None:
        """Fold one event of a run of ``flow`` into the metrics. Events of a run must come in
        order, from its ``run.started`` (what :meth:`watch` does); events of a run whose
        ``run.started`` was not seen are left out, so the gauges never go below zero."""
        with self._lock:
            if isinstance(event, RunStarted):
                self._run_started(event, flow)
                return
            run = self._live.get(event.run)
            if run is None:
                return
            if isinstance(event, JobQueued):
                self._job_queued(run, event)
            elif isinstance(event, JobStarted):
                self._job_started(run, event)
            elif isinstance(event, StepStarted):
                run.steps[(event.job, event.step, event.rank)] = event.kind
            elif isinstance(event, StepFinished):
                self._step_finished(run, event)
            elif isinstance(event, JobRetrying):
                self._job_retrying(run, event)
            elif isinstance(event, JobFinished):
                self._job_finished(run, event)
            elif isinstance(event, RunFinished):
                self._run_finished(run, event)

    def _run_started(self, event: RunStarted, flow: str) -> None:
        if event.run in self._live:
            return  # seen already (a second watcher of the same run)
        started = _number(event.started) or _epoch(event.time)
        self._live[event.run] = _Run(flow=flow, trigger=event.trigger or "manual",
                                     started=started)
        self._runs.labels(state="running").inc()

    def _job_queued(self, run: _Run, event: JobQueued) -> None:
        if event.job in run.jobs:
            return
        resources: Mapping[str, Any] = event.resources or {}
        per_node = _number(resources.get("gpus")) or 0.0
        nodes = _number(resources.get("nodes")) or 1.0
        run.jobs[event.job] = _Job(job_id=event.id or event.job,
                                   needs=tuple(str(n) for n in event.needs),
                                   gpus=per_node * nodes, ready=_epoch(event.time))
        run.cells[event.id or event.job] = run.cells.get(event.id or event.job, 0) + 1
        self._jobs.labels(state="queued").inc()

    def _job_started(self, run: _Run, event: JobStarted) -> None:
        job = run.jobs.get(event.job)
        if job is None or job.state != "queued":
            return
        started = _number(event.started) or _epoch(event.time)
        if event.gpus and not job.gpus:  # a backend that knows better than the request
            job.gpus = float(len(event.gpus))
        # It could run once queued and once every job it needs had ended; the rest of the
        # wait was for a slot.
        ready = max([job.ready, *(run.needs_done.get(n, 0.0) for n in job.needs)])
        self._job_queue_wait_seconds.labels(resource="gpu" if job.gpus else "cpu").observe(
            max(0.0, started - ready))
        job.state = "running"
        job.attempt_started = started
        self._jobs.labels(state="queued").dec()
        self._jobs.labels(state="running").inc()
        if self._gpu_total is not None and job.gpus:
            job.held = job.gpus
            self._gpus_busy += job.held
            self._set_gpu_slots()

    def _step_finished(self, run: _Run, event: StepFinished) -> None:
        started_kind = run.steps.pop((event.job, event.step, event.rank), None)
        kind = event.kind or started_kind or "run"
        self._steps_total.labels(kind=kind, status=event.status or "failure").inc()
        began, ended = _number(event.started), _number(event.ended)
        if began is not None and ended is not None:
            self._step_duration_seconds.labels(kind=kind).observe(max(0.0, ended - began))
        if event.cached:
            self._action_cache_requests_total.labels(result="hit").inc()
        elif started_kind is not None and kind in ACTION_KINDS:
            # An action step that started and ran its action. (The event does not say whether
            # the step asked for the cache at all: see docs/operations.md.)
            self._action_cache_requests_total.labels(result="miss").inc()

    def _end_attempt(self, run: _Run, job: _Job, ended: float) -> None:
        """A running attempt of ``job`` ended at ``ended``: its GPU-seconds, its slots."""
        if job.attempt_started is not None and job.gpus:
            self._gpu_seconds_total.labels(flow=run.flow).inc(
                job.gpus * max(0.0, ended - job.attempt_started))
        job.attempt_started = None
        if job.held:
            self._gpus_busy = max(0.0, self._gpus_busy - job.held)
            job.held = 0.0
            self._set_gpu_slots()

    def _job_retrying(self, run: _Run, event: JobRetrying) -> None:
        job = run.jobs.get(event.job)
        if job is None or job.state != "running":
            return
        ended = _number(event.ended) or _epoch(event.time)
        self._end_attempt(run, job, ended)
        job.state = "queued"
        job.ready = ended + max(0.0, _number(event.delay) or 0.0)  # the back-off is no wait
        self._jobs.labels(state="running").dec()
        self._jobs.labels(state="queued").inc()

    def _job_finished(self, run: _Run, event: JobFinished) -> None:
        job = run.jobs.get(event.job)
        if job is None or job.state == "done":
            return
        ended = _number(event.ended) or _epoch(event.time)
        if job.state == "running":
            self._end_attempt(run, job, ended)
        self._jobs.labels(state=job.state).dec()
        job.state = "done"
        self._jobs_total.labels(flow=run.flow, status=event.status or "failure").inc()
        began = _number(event.started)
        if began is not None:
            self._job_duration_seconds.labels(flow=run.flow).observe(max(0.0, ended - began))
        left = run.cells.get(job.job_id, 1) - 1
        run.cells[job.job_id] = left
        if left <= 0:
            run.needs_done[job.job_id] = max(ended, run.needs_done.get(job.job_id, 0.0))

    def _run_finished(self, run: _Run, event: RunFinished) -> None:
        self._runs_total.labels(flow=run.flow, trigger=run.trigger,
                               status=event.status or "failure").inc()
        ended = _number(event.ended) or _epoch(event.time)
        self._run_duration_seconds.labels(flow=run.flow).observe(max(0.0, ended - run.started))
        self._drop(event.run)

    def _drop(self, run_id: str) -> None:
        """(Holding the lock.) Forget a run: what it still counted in the gauges goes."""
        run = self._live.pop(run_id, None)
        if run is None:
            return
        for job in run.jobs.values():
            if job.state != "done":
                self._jobs.labels(state=job.state).dec()
                if job.held:
                    self._gpus_busy = max(0.0, self._gpus_busy - job.held)
                    self._set_gpu_slots()
        self._runs.labels(state="running").dec()

    def forget(self, run_id: str) -> None:
        """Stop following a run whose ``run.finished`` will not come (its watcher was given
        up): its running run and its jobs leave the gauges; it counts in no total."""
        with self._lock:
            self._drop(run_id)

    def watch(self, run: Run, *, flow: str) -> threading.Thread:
        """A daemon thread feeding :meth:`observe` with ``run``'s events (without the log
        lines), from its first to its ``run.finished``; started, and returned for joining."""
        sub = run.events(skip=("step.log",))

        def feed() -> None:
            for event in sub:
                self.observe(event, flow=flow)

        thread = threading.Thread(target=feed, name=f"flowray-metrics-{run.id}", daemon=True)
        thread.start()
        return thread

    # ------------------------------------------------------------------------- the service

    def queued_runs(self, count: int) -> None:
        """How many runs wait in the service's queue now (read from its database, which all
        its processes share)."""
        self._runs.labels(state="queued").set(count)

    def queued_run(self, delta: int) -> None:
        """Runs waiting in the service for a slot or their concurrency group: +1 when one
        starts waiting, -1 when it leaves the queue (started or cancelled)."""
        self._runs.labels(state="queued").inc(delta)

    def run_ended_unstarted(self, *, flow: str, trigger: str, status: str) -> None:
        """A run of the service that ended without running (cancelled while queued, refused
        at start): counted in ``flowray_runs_total`` like the runs whose events were seen."""
        self._runs_total.labels(flow=flow, trigger=trigger, status=status).inc()

    def webhook_delivery(self, flow: str, result: str) -> None:
        """One webhook delivery to the stored flow ``flow``; ``result`` is one of
        :data:`WEBHOOK_RESULTS` (anything else is a ValueError: the label stays bounded)."""
        if result not in WEBHOOK_RESULTS:
            raise ValueError(f"webhook result {result!r} is not one of "
                             f"{', '.join(WEBHOOK_RESULTS)}")
        self._webhook_deliveries_total.labels(flow=flow, result=result).inc()

    def schedule_next_fire(self, flow: str, timestamp: float | None) -> None:
        """When ``flow``'s schedule fires next (seconds since the epoch); None: the flow has
        no schedule (any more), and its series goes."""
        if timestamp is None:
            with contextlib.suppress(KeyError):  # it had none
                self._schedule_next_fire_timestamp_seconds.remove(flow)
            return
        self._schedule_next_fire_timestamp_seconds.labels(flow=flow).set(timestamp)

    def gpu_slots(self, *, free: int, busy: int) -> None:
        """The GPU slots of where runs execute (a Ray cluster's, as the service learns
        them); stops :meth:`track_gpu_slots`."""
        with self._lock:
            self._gpu_total = None
            self._gpu_slots.labels(state="free").set(free)
            self._gpu_slots.labels(state="busy").set(busy)

    def track_gpu_slots(self, total: int) -> None:
        """The GPU slots are this machine's ``total`` GPUs, busy as the jobs of the runs
        watched here hold them (a local backend, where nothing else uses them)."""
        with self._lock:
            self._gpu_total = total
            self._set_gpu_slots()

    def _set_gpu_slots(self) -> None:
        if self._gpu_total is None:
            return
        busy = min(float(self._gpu_total), self._gpus_busy)
        self._gpu_slots.labels(state="free").set(self._gpu_total - busy)
        self._gpu_slots.labels(state="busy").set(busy)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type, for ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def serve_metrics(metrics: Metrics, port: int, *, host: str = "127.0.0.1"
                  ) -> Callable[[], None]:
    """Serve ``metrics`` over HTTP on ``host``:``port`` (``GET`` of any path gives
    :meth:`Metrics.render`), from daemon threads; returns the function that stops it (and
    may be called again). Raises :class:`MetricsServerError` when the port is no port or
    cannot be bound.

    Not prometheus_client's own server: it answers a scraper that accepts OpenMetrics (as
    Prometheus does) in that format, where flowray_runs_total and flowray_runs would be two
    families of one name; this one always answers in the classic text format."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise MetricsServerError(host, port, "the port must be a number from 1 to 65535")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, content_type = metrics.render()
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every few seconds is nothing to report

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    try:
        server = Server((host, port), Handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            reason = "the port is in use"
        elif exc.errno == errno.EACCES:
            reason = "permission denied (ports below 1024 need privileges)"
        else:
            reason = exc.strerror or str(exc)
        raise MetricsServerError(host, port, reason) from exc
    thread = threading.Thread(target=server.serve_forever, name=f"flowray-metrics-{port}",
                              daemon=True)
    thread.start()
    stopped = threading.Lock()
    done: list[bool] = []

    def stop() -> None:
        with stopped:
            if done:
                return
            done.append(True)
            server.shutdown()
            server.server_close()
            thread.join()

    return stop
