"""The service's runs: queued in the database by a trigger, started through
``flowray.start`` (the one way to start a run) when their concurrency group has room, their
events copied into the database as they happen, ended once.

One loop per service process (:meth:`RunManager.loop`) starts queued runs, fires schedules,
passes on cancel requests made through other processes and keeps this process's heartbeat.
A queued run is claimed with a compare-and-set, so that with several processes on one
database each run starts once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from flowray.service.flows import decode_files, flow_data, write_workspace
from flowray.service.store import TERMINAL, NewRun, Store

if TYPE_CHECKING:
    from flowray.backends.local import Slots
    from flowray.runtime.api import Run
    from flowray.runtime.metrics import Metrics
    from flowray.service.secretbox import SecretBox

log = logging.getLogger("flowray.service")
T = TypeVar("T")

# What of the service's own environment the steps of its runs start from: the machine's
# basics, never its credentials (a PGPASSWORD, FLOWRAY_TOKEN, cloud keys in a unit's
# EnvironmentFile): steps are written by admins but their logs are read by viewers.
# `flowray serve --pass-env NAME` adds names.
PASSED_ENV = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR",
    "HOSTNAME", "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX",
    "CONDA_DEFAULT_ENV", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
    "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "DOCKER_HOST", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR",
})
PASSED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "FLOWRAY_", "RAY_")
HELD_WORDS = ("TOKEN", "PASSWORD", "SECRET", "KEY", "CREDENTIAL")  # never passed by prefix
HELD_ENV = frozenset({"FLOWRAY_DB", "FLOWRAY_SERVER"})


def step_environment(environ: Mapping[str, str], passed: Collection[str] = ()
                     ) -> dict[str, str]:
    """The part of ``environ`` a run's steps get (see PASSED_ENV); ``passed``: more names."""
    def basic(name: str) -> bool:
        return (name in PASSED_ENV or (name.startswith(PASSED_PREFIXES)
                and name not in HELD_ENV and not any(w in name.upper() for w in HELD_WORDS)))

    return {name: value for name, value in environ.items() if name in passed or basic(name)}


EVENT_BATCH_SECONDS = 0.05  # how long events wait to be written together
LOOP_SECONDS = 0.25  # the loop's pace when nothing wakes it
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 60.0  # an instance silent this long is taken for dead
LATE_FIRE_SECONDS = 60.0  # a fire this late still runs while the service is up


class TriggerError(ValueError):
    """A run that cannot be queued: an unknown flow, bad inputs. ``status`` is the HTTP
    status the API answers with."""

    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Options:
    data_dir: str
    backend: str | None = None  # None: this machine; else a Ray address
    keep_runs: int | None = None
    keep_days: float | None = None
    drain: float = 30.0
    max_runs: int = 32  # runs this process runs at once; the rest wait in the queue
    pass_env: tuple[str, ...] = ()  # names of the service's environment its steps also get


@dataclass
class Live:
    run: Run | None = None
    cancel: str | None = None  # a cancel asked for before the runtime's Run existed
    done: threading.Event = field(default_factory=threading.Event)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class RunManager:
    def __init__(self, store: Store, box: SecretBox, metrics: Metrics, options: Options
                 ) -> None:
        self.store = store
        self.box = box
        self.metrics = metrics
        self.options = options
        self.instance = store.register_instance()
        self._healthy_since: float | None = time.time()
        self._closed = threading.Event()  # the manager stopped: no more heartbeats
        self._last_settle = 0.0
        self._next_due: float | None = None  # the next schedule fire of any flow
        threading.Thread(target=self.heartbeats, name="flowray-service-heartbeat",
                         daemon=True).start()
        self.live: dict[str, Live] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.draining = False
        # Who waits for a run's next events (its event streams): run id -> callbacks.
        self._watchers: dict[str, set[Callable[[], None]]] = {}
        self._parsed: dict[tuple[str, int], dict[str, Any]] = {}  # (flow, version) -> data
        # This machine's CPUs and GPUs, shared by the runs of this process (on Ray, the
        # cluster shares its own).
        self.slots: Slots | None = None
        if options.backend is None:
            from flowray.backends.local import Slots, detect_gpus

            self.slots = Slots(float(os.cpu_count() or 1), detect_gpus())
            metrics.track_gpu_slots(len(self.slots.gpus))

    # ------------------------------------------------------------------ triggering

    def load_flow(self, name: str, version: int | None = None
                  ) -> tuple[int, dict[str, Any]]:
        """(version, data) of flow ``name`` (its current version by default); parsed once
        per version."""

        if version is None:
            version = self.store.flow_version(name)
            if version is None:
                raise TriggerError(f"no flow named '{name}' (push it first)", status=404)
        cached = self._parsed.get((name, version))
        if cached is not None:
            return version, cached
        flow = self.store.get_flow(name, version, versions=False)
        if flow is None:
            raise TriggerError(f"no flow named '{name}' (push it first)", status=404)
        data = flow_data(flow["text"], flow["path"])
        self.remember_flow(name, int(flow["version"]), data)
        return int(flow["version"]), data

    def remember_flow(self, name: str, version: int, data: dict[str, Any]) -> None:
        """A version read (just pushed, or read for a run): its runs need not read it
        again."""
        if len(self._parsed) > 4096:
            self._parsed.clear()
        self._parsed[(name, version)] = data

    def wake(self) -> None:
        """Look at the queue and the schedules now (a flow was pushed)."""
        self._wake.set()

    def _new_run(self, name: str, *, trigger: str, inputs: Mapping[str, Any] | None,
                 event: Mapping[str, Any] | None, version: int | None = None,
                 idempotency_key: str | None = None, rerun_of: str | None = None,
                 reuse: dict[str, Any] | None = None,
                 variables: Mapping[str, str] | None = None) -> tuple[NewRun, Any]:
        """A run of flow ``name`` to queue, with its inputs typed and its concurrency group
        evaluated; (the run, the flow's concurrency policy or None)."""
        from flowray import expr
        from flowray.runtime.api import coerce_run_inputs
        from flowray.runtime.errors import RunInputError
        from flowray.spec.triggers import concurrency

        # While draining runs are still queued (kept in the database, started by the next
        # process): a webhook delivery is not lost to a restart.
        version, data = self.load_flow(name, version)
        try:
            coerced = coerce_run_inputs(data, dict(inputs or {}))
        except RunInputError as exc:
            raise TriggerError(exc.message) from None
        group, group_max = None, 1
        policy = concurrency(data)
        if policy is not None:
            if variables is None:
                variables = self.store.variable_values()
            contexts = {"inputs": coerced, "input": coerced, "event": dict(event or {}),
                        "variables": {**variables, **(data.get("variables") or {})},
                        "flow": {"name": name}}
            try:
                group = str(expr.render(policy.group, contexts))[:400]
            except expr.ExprError as exc:
                raise TriggerError(f"concurrency.group: {exc}") from None
            if "\0" in group:
                raise TriggerError("concurrency.group: the group's name holds a NUL character")
            group_max = policy.max
        return NewRun(flow=name, version=version, trigger=trigger, inputs=coerced,
                      event=dict(event or {}), group=group, group_max=group_max,
                      idempotency_key=idempotency_key, rerun_of=rerun_of, reuse=reuse), policy

    def trigger(self, name: str, *, trigger: str, inputs: Mapping[str, Any] | None = None,
                event: Mapping[str, Any] | None = None, idempotency_key: str | None = None,
                delivery: str | None = None, rerun_of: str | None = None,
                reuse: dict[str, Any] | None = None, version: int | None = None
                ) -> tuple[str, bool]:
        """Queue a run of flow ``name``; (its id, whether it is new)."""
        from flowray.store.records import new_run_id

        new, policy = self._new_run(name, trigger=trigger, inputs=inputs, event=event,
                                    version=version, idempotency_key=idempotency_key,
                                    rerun_of=rerun_of, reuse=reuse)
        run_id, created = self.store.queue_run(new_run_id(), new, delivery=delivery)
        if created:
            self._queued(run_id, new, policy)
        return run_id, created

    def _queued(self, run_id: str, new: NewRun, policy: Any) -> None:
        """A run was queued: cancel its group's others if the flow says so, and wake the
        loop to start it."""
        if policy is not None and policy.cancel_in_progress and new.group is not None:
            others = [r for r in self.store.running_in_group_ids(new.group) if r != run_id]
            for other in others:
                self.cancel(other, reason=f"cancelled by run {run_id} in concurrency "
                                          f"group '{new.group}'")
        self._wake.set()

    def rerun(self, row: Any, *, failed: bool, jobs: list[str],
              record: Mapping[str, Any] | None) -> str:
        """A new run of the same flow version, inputs and event that runs again the failed
        jobs (``failed``) or the named job keys (``jobs``, matrix cells such as ``train.3``)
        and the jobs after them, and takes the outputs of every other job that succeeded."""
        if row.status not in TERMINAL:
            raise TriggerError(f"run {row.id} has not ended; cancel it or wait for it",
                               status=409)
        if not record:
            raise TriggerError(f"run {row.id} never ran ({row.status} before it started: "
                               f"{row.reason}); start the flow again instead", status=409)
        if failed == bool(jobs):
            raise TriggerError('give either {"failed": true} or {"jobs": [...]}')
        recorded: dict[str, Any] = record.get("jobs") or {}
        if failed:
            again = {k for k, j in recorded.items()
                     if j.get("status") in ("failure", "cancelled")}
            if not again:
                raise TriggerError(f"run {row.id} has no failed or cancelled job", status=409)
        else:
            unknown = [k for k in jobs if k not in recorded]
            if unknown:
                raise TriggerError(f"run {row.id} has no job '{unknown[0]}' (its jobs: "
                                   f"{', '.join(sorted(recorded)[:20])})")
            again = set(jobs)
        again |= _after(recorded, again)
        reuse = {k: {"run": row.id, "outputs": j.get("outputs") or {}}
                 for k, j in recorded.items()
                 if k not in again and j.get("status") == "success"}
        run_id, _ = self.trigger(row.flow, trigger=row.trigger, inputs=json.loads(row.inputs),
                                 event=json.loads(row.event), rerun_of=row.id, reuse=reuse,
                                 version=row.version)
        return run_id

    # ------------------------------------------------------------------ the loop

    def loop(self) -> None:
        """Until :meth:`stop`: start queued runs, fire schedules, pass on cancels."""
        with contextlib.suppress(Exception):  # the database may be away: set when it is back
            for flow, fire_at in self.store.next_fires().items():
                self.metrics.schedule_next_fire(flow, fire_at)
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # the database went away: say so, and try again
                from flowray.service.db import first_line, is_unavailable

                if not is_unavailable(exc):
                    log.exception("the service's loop failed")
                else:
                    log.warning("the database is not answering: %s", first_line(exc))
                self._stop.wait(1.0)
            # Until the next pass, or the next schedule fire if it comes sooner (fires start
            # on time, not up to a pass late).
            wait = LOOP_SECONDS
            if self._next_due is not None:
                wait = min(wait, max(0.0, self._next_due - time.time()))
            self._wake.wait(wait)
            self._wake.clear()

    def heartbeats(self) -> None:
        """Until the manager is closed (after its drain): say every few seconds that this
        process is alive, so that no other process takes its runs for lost, through a
        drain and through a database outage alike."""
        while not self._closed.wait(HEARTBEAT_SECONDS if self._healthy_since else 1.0):
            try:
                self.store.heartbeat(self.instance)
            except Exception as exc:
                from flowray.service.db import is_unavailable

                if not is_unavailable(exc):
                    log.exception("heartbeat")
                self._healthy_since = None
                continue
            if self._healthy_since is None:
                self._healthy_since = time.time()

    def tick(self) -> None:
        now = time.time()
        if now - self._last_settle > HEARTBEAT_SECONDS:
            self._last_settle = now
            self.settle_orphans()
        self.metrics.queued_runs(self.store.count_runs("queued"))
        for run_id in self.store.cancel_requests(self.instance):
            self.cancel(run_id, reason="cancelled")
        if not self.draining:
            self.fire_schedules(now)
            self.start_queued()
            self._next_due = self.store.next_due()

    def settle_orphans(self) -> list[str]:
        """Runs left ``running`` by a service process that is gone: ``failure``. A process
        is gone when it was on this machine and its pid is not; or when its heartbeat is
        older than STALE_SECONDS, judged only by a process whose own heartbeats have gone
        through for that long (after a database outage, everyone gets time to say so)."""
        healthy = self._healthy_since is not None and \
            time.time() - self._healthy_since > STALE_SECONDS
        dead = [i for i in self.store.dead_instances(stale=STALE_SECONDS if healthy else None)
                if i != self.instance]
        ownerless = [r for r in self.store.ownerless_runs() if r not in self.live] \
            if healthy or dead else []
        reason = "the flowray service running this run stopped before it ended"
        ids = self.store.settle_orphans(dead, reason, runs=ownerless)
        for run_id in ids:
            self._ended_outside(run_id, "failure", 1, reason)
        return ids

    def start_queued(self) -> None:
        full: set[str] = set()
        if len(self.live) >= self.options.max_runs:
            return
        for row in self.store.queued_runs():
            if len(self.live) >= self.options.max_runs:
                break
            if row.group_name in full:
                continue
            # The claim checks the group's room itself (queued_runs left out full groups,
            # but a run of the group may have started since).
            if not self.store.claim_run(row.id, self.instance, group=row.group_name,
                                        group_max=row.group_max):
                if row.group_name is not None:
                    full.add(row.group_name)
                continue  # another process took it (or a run of its group)
            live = Live()
            with self._lock:
                self.live[row.id] = live
            threading.Thread(target=self._run, args=(row, live),
                             name=f"flowray-service-{row.id}", daemon=True).start()

    def fire_schedules(self, now: float) -> None:
        """Claim every due fire (one compare-and-set each, in one transaction) and queue a
        run for each fire this process won (in one transaction)."""
        from flowray.service.schedule import missed_fire, next_fire
        from flowray.store.records import new_run_id

        due = self.store.due_schedules(now)
        if not due:
            return
        current = datetime.fromtimestamp(now, timezone.utc)
        moves = [(row, next_fire(row.cron, row.timezone, current).timestamp()) for row in due]
        won = self.store.claim_fires([(row.flow, row.idx, row.next_fire, new)
                                      for row, new in moves])
        variables = self.store.variable_values()
        batch: list[tuple[str, NewRun, Any]] = []
        for row, new in moves:
            if (row.flow, row.idx) not in won:
                continue  # another process fired it
            fire: float | None = row.next_fire
            if now - row.next_fire > LATE_FIRE_SECONDS:  # missed while the service was down
                last = datetime.fromtimestamp(row.next_fire - 1e-3, timezone.utc)
                missed = missed_fire(row.cron, row.timezone, last=last, now=current,
                                     catchup_seconds=row.catchup)
                fire = missed.timestamp() if missed is not None else None
            if fire is None:
                log.info("schedule %s of flow %s: fires missed while the service was down "
                         "are older than its catch-up window; next fire %s", row.cron,
                         row.flow, _iso(new))
                continue
            try:
                run, policy = self._new_run(
                    row.flow, trigger="schedule", inputs=None, version=row.version,
                    event={"scheduled_time": _iso(fire), "cron": row.cron},
                    variables=variables)
            except TriggerError as exc:
                log.warning("schedule %s of flow %s could not start a run: %s", row.cron,
                            row.flow, exc)
                continue
            batch.append((new_run_id(), run, policy))
        self.store.queue_runs([(run_id, run) for run_id, run, _ in batch])
        for run_id, run, policy in batch:
            self._queued(run_id, run, policy)
        for row, new in moves:
            if (row.flow, row.idx) in won:
                self.metrics.schedule_next_fire(row.flow, new)

    # ------------------------------------------------------------------ one run

    def workspace(self, run_id: str) -> str:
        return os.path.join(self.options.data_dir, "workspaces", run_id)

    def _run(self, row: Any, live: Live) -> None:
        """Start run ``row`` with ``flowray.start`` and copy its events until it ends."""
        from flowray.runtime.errors import StartError
        from flowray.spec.diagnostics import FlowError

        try:
            try:
                run = self._start(row)
            except (StartError, FlowError, OSError, ValueError) as exc:
                self._end_unstarted(row.id, "failure", 1,
                                    f"the run could not start: {_start_error_text(exc)}")
                return
            except Exception as exc:  # a bug, or the database went away: the run must not stay
                from flowray.service.db import is_unavailable

                if is_unavailable(exc):  # it goes back to the queue, to start when it is back
                    shutil.rmtree(self.workspace(row.id), ignore_errors=True)
                    _patiently(lambda: self.store.requeue(row.id, self.instance))
                    return
                log.exception("run %s could not start", row.id)
                self._end_unstarted(row.id, "failure", 1,
                                    f"internal error in flowray: {exc!r}")
                return
            with self._lock:  # a cancel made meanwhile is seen here, or sees the run
                live.run = run
                pending = live.cancel
            if pending is not None:
                run.cancel(reason=pending)
            self._pump(row, run)
        finally:
            live.done.set()
            self._forget(row.id)
            self._wake.set()  # room for a queued run

    def _start(self, row: Any) -> Run:
        import flowray

        flow = self.store.get_flow(row.flow, row.version, versions=False)
        if flow is None:
            raise ValueError(f"flow '{row.flow}' version {row.version} is no longer kept")
        folder = self.workspace(row.id)
        flow_file = write_workspace(folder, path=flow["path"], text=flow["text"],
                                    files=decode_files(flow["files"]),
                                    executable=flow["executable"])
        secret_values = {name: self.box.open(name, blob)
                         for name, blob in self.store.secret_blobs()}
        reuse = json.loads(row.reuse) if row.reuse else None
        return flowray.start(
            flow_file, workdir=folder, inputs=json.loads(row.inputs),
            event=json.loads(row.event), secrets=secret_values,
            variables=self.store.variable_values(), backend=self.options.backend,
            trigger=row.trigger, run_id=row.id, reuse=reuse, slots=self.slots,
            base_env=step_environment(os.environ, self.options.pass_env))

    def _pump(self, row: Any, run: Run) -> None:
        """Copy the run's events to the database in small batches, feed the metrics, and
        end the run's row with its record."""
        pending: list[dict[str, Any]] = []
        last_write = time.monotonic()
        sub = run.events()
        final: dict[str, Any] | None = None
        while True:
            event = sub.get(timeout=EVENT_BATCH_SECONDS)
            if event is not None:
                data = event.to_dict()
                pending.append(data)
                if data["type"] != "step.log":
                    self.metrics.observe(event, flow=row.flow)
                if data["type"] == "run.finished":
                    final = data
            ended = event is None and sub.done
            if pending and (ended or final is not None or len(pending) >= 500
                            or time.monotonic() - last_write >= EVENT_BATCH_SECONDS):
                self._write_events(row.id, pending)
                pending = []
                last_write = time.monotonic()
            if ended:
                break
        record = run.wait_record()
        status = final["status"] if final else (record or {}).get("status", "failure")
        exit_code = final.get("exit_code") if final else run.exit_code
        _patiently(lambda: self.store.finish_run(
            row.id, status=status, exit_code=exit_code, reason=_reason(record or {}, status),
            record=record, only_from=("running",), owner=self.instance))
        self._notify(row.id)
        try:
            self._after_end(row, status, record or {})
        except Exception:  # flow triggers and retention wait for the next run's end
            log.exception("after run %s ended", row.id)

    def _write_events(self, run_id: str, events: list[dict[str, Any]]) -> None:
        """Write events, trying again while the database is away (they are not lost). The
        run's own events win over stand-ins written for it by a process that took it for
        lost (they hold the same numbers)."""
        from sqlalchemy.exc import IntegrityError

        def write() -> None:
            try:
                self.store.add_events(run_id, events)
            except IntegrityError:
                self.store.drop_events(run_id, from_seq=events[0]["seq"])
                self.store.add_events(run_id, events)

        _patiently(write)
        self._notify(run_id)

    def _notify(self, run_id: str) -> None:
        with self._lock:
            watchers = list(self._watchers.get(run_id, ()))
        for wake in watchers:
            wake()

    def watch(self, run_id: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` (from any thread) whenever this process writes events of run
        ``run_id``; returns the function that stops it. Runs of other processes are not
        seen: their readers look again every second."""
        with self._lock:
            self._watchers.setdefault(run_id, set()).add(wake)

        def stop() -> None:
            with self._lock:
                found = self._watchers.get(run_id)
                if found is not None:
                    found.discard(wake)
                    if not found:
                        del self._watchers[run_id]
        return stop

    def _end_unstarted(self, run_id: str, status: str, exit_code: int, reason: str) -> None:
        """End a run the runtime refused to start."""
        if _patiently(lambda: self.store.finish_run(run_id, status=status,
                                                    exit_code=exit_code, reason=reason)):
            self._ended_outside(run_id, status, exit_code, reason)

    def _ended_outside(self, run_id: str, status: str, exit_code: int, reason: str) -> None:
        """What follows the end of a run whose row was ended outside the runtime (refused
        at start, cancelled while queued, lost with its process): the events that end its
        stream, its count, its followers (flow triggers) and retention."""
        self._finish_events(run_id, status, exit_code, reason)
        row = self.store.get_run(run_id)
        if row is not None:
            self.metrics.run_ended_unstarted(flow=row.flow, trigger=row.trigger, status=status)
            self._after_end(row, status, {})

    def _finish_events(self, run_id: str, status: str, exit_code: int, reason: str) -> None:
        """A ``run.finished`` for a run that ended outside the runtime, so that every event
        stream ends (after ``run.started`` when the run had none)."""
        seq = self.store.last_seq(run_id)
        now = _iso(time.time())
        events: list[dict[str, Any]] = []
        if seq == 0:
            row = self.store.get_run(run_id)
            seq += 1
            events.append({"seq": seq, "time": now, "run": run_id, "type": "run.started",
                           "flow": row.flow if row else "", "trigger": row.trigger if row else "",
                           "inputs": json.loads(row.inputs) if row else {}})
        events.append({"seq": seq + 1, "time": now, "run": run_id, "type": "run.finished",
                       "status": status, "exit_code": exit_code, "reason": reason})
        with contextlib.suppress(Exception):  # a race with the runtime's own events
            self._write_events(run_id, events)

    def _after_end(self, row: Any, status: str, record: Mapping[str, Any]) -> None:
        """Flow triggers of the flows waiting for this one, then retention."""
        outputs: dict[str, Any] = {}
        jobs = record.get("jobs")
        for job in jobs.values() if isinstance(jobs, dict) else ():
            if isinstance(job, dict) and isinstance(job.get("outputs"), dict):
                outputs.update(job["outputs"])
        for name, upstream in self.store.flow_trigger_edges().items():
            for flow, statuses in upstream:
                if flow == row.flow and status in statuses:
                    try:
                        self.trigger(name, trigger="flow", event={
                            "flow": row.flow, "run": row.id, "status": status,
                            "outputs": outputs})
                    except TriggerError as exc:
                        log.warning("flow trigger of %s after %s: %s", name, row.flow, exc)
        self.retain(row.flow)

    def retain(self, flow: str) -> None:
        keep, days = self.options.keep_runs, self.options.keep_days
        if keep is None and days is None:
            return
        before = time.time() - days * 86400 if days is not None else None
        old = self.store.old_runs(flow, keep=keep, before=before)
        if old:
            self.store.delete_runs(old)
            for run_id in old:
                shutil.rmtree(self.workspace(run_id), ignore_errors=True)

    def _forget(self, run_id: str) -> None:
        with self._lock:
            self.live.pop(run_id, None)

    # ------------------------------------------------------------------ cancel, stop

    def cancel(self, run_id: str, *, reason: str = "cancelled") -> str | None:
        """Cancel a run; its status after the request (None: no such run)."""
        row = self.store.get_run(run_id)
        if row is None:
            return None
        if row.status in TERMINAL:
            return str(row.status)
        if row.status == "queued":
            if self.store.finish_run(run_id, status="cancelled", exit_code=130, reason=reason,
                                     only_from=("queued",)):
                self._ended_outside(run_id, "cancelled", 130, reason)
                return "cancelled"
            row = self.store.get_run(run_id)  # it started meanwhile
        with self._lock:
            live = self.live.get(run_id)
            started = live.run if live is not None else None
            if live is not None and started is None:
                live.cancel = reason  # _run passes it on once the run exists
        if started is not None:
            started.cancel(reason=reason)
        elif row is not None and row.status == "running":
            self.store.request_cancel([run_id])  # its process passes it on
        return "running"

    def stop(self, *, drain: float | None = None) -> None:
        """Take no new work; let running runs end for ``drain`` seconds, then cancel them
        and wait for them to end."""
        self.draining = True
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + (self.options.drain if drain is None else drain)
        while time.monotonic() < deadline:
            with self._lock:
                lives = list(self.live.values())
            if not lives:
                break
            lives[0].done.wait(min(0.5, max(0.0, deadline - time.monotonic())))
        with self._lock:
            left = dict(self.live)
        for run_id in left:
            self.cancel(run_id, reason="the flowray service stopped (its drain time passed)")
        for live in left.values():
            live.done.wait(60)
        self._closed.set()
        with contextlib.suppress(Exception):
            self.store.remove_instance(self.instance)


def _reason(record: Mapping[str, Any], status: str) -> str | None:
    """Why a run did not succeed, in a line: the record's error, or its cancel reason."""
    if status == "cancelled" and record.get("cancel_reason"):
        return str(record["cancel_reason"])
    error = record.get("error")
    return str(error) if error else None


def _patiently(write: Callable[[], T]) -> T:
    """Do a database write (its result), trying again while the database is not answering:
    what a run reported while the database was away is written when it is back, not lost."""
    from flowray.service.db import is_unavailable

    delay = 0.2
    while True:
        try:
            return write()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            log.warning("the database is not answering; writing again in %.1fs", delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _start_error_text(exc: BaseException) -> str:
    from flowray.spec.diagnostics import FlowError

    if isinstance(exc, FlowError):
        return "; ".join(d.format() for d in exc.diagnostics[:5])
    if isinstance(exc, OSError):
        from flowray.store.fs import os_error_text

        return os_error_text(exc)
    return str(exc)


def _after(recorded: Mapping[str, Any], keys: set[str]) -> set[str]:
    """The jobs that need any of ``keys`` (by job id), directly or not: they run again too."""
    ids = {k.split(".", 1)[0] for k in keys}
    out: set[str] = set()
    grew = True
    while grew:
        grew = False
        for key, job in recorded.items():
            needs = job.get("needs") or []
            if key not in out and key not in keys and any(n in ids for n in needs):
                out.add(key)
                ids.add(key.split(".", 1)[0])
                grew = True
    return out
